"""The event loop the gateway's processes run on: uvloop where it is installed.

asyncio's own loop runs its scheduling, selector and socket transports in
Python: for a small call that is about a sixth of all the instructions the
process spends (``BENCHMARKS.md``). uvloop does the same work in C on
libuv, and grpc.aio, aiohttp and the sandbox's gRPC server run on it
unchanged. ``EVENT_LOOP=asyncio`` keeps the standard loop (a platform
without uvloop gets it anyway under ``auto``).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

KINDS = ("auto", "uvloop", "asyncio")


class LoopUnavailable(RuntimeError):
    """EVENT_LOOP=uvloop on a machine without uvloop."""


def factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``kind``; None is asyncio's default loop."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise LoopUnavailable("EVENT_LOOP=uvloop, but uvloop is not installed "
                                  "(pip install uvloop, or EVENT_LOOP=asyncio)") from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], kind: str) -> T:
    """``asyncio.run(main)`` on the loop ``kind`` names."""
    try:
        make = factory(kind)
    except LoopUnavailable:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=make) as runner:
        return runner.run(main)


def name(loop: asyncio.AbstractEventLoop) -> str:
    """What the start-up line calls the running loop."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
