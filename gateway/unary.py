"""Unary calls to Cuebot made on grpc's Cython channel, beneath grpc.aio's call objects.

Awaiting ``grpc.aio``'s multicallable makes, per call, a ``Metadata`` object
(after a ``typing.Sequence`` check), a Python ``UnaryUnaryCall`` registered in
the channel's weak set, an asyncio task to run it, a contextlib-managed debug
log call and the task's wake-up: about 600 bytecodes and a loop turn around
the one coroutine that does the work, ``_AioCall.unary_unary``. Cuebot's small
replies are most of the gateway's traffic, and this was about 8% of the
instructions of each (``scripts/bench_instructions.py --concurrency 16``).
``UnaryCall`` awaits that coroutine in the request's own task instead, on a
registered method handle (made once per method, so gRPC does not look the
path up per call), and keeps grpc.aio's contract: the reply's bytes, or
``grpc.aio.AioRpcError`` built as grpc.aio builds it, or ``CancelledError``
with the call cancelled in gRPC's core when the request is cancelled.

What it gives up: grpc.aio's interceptors (the gateway installs none), the
census context of grpc's observability plugin (``BACKEND_CALLS=aio`` keeps
both), and the channel's list of calls in flight, which ``close()`` cancels:
a direct call still running when its channel closes ends at its deadline.
The gateway closes its channel only at clean-up, after aiohttp has ended
every handler (a request cancelled so cancels its call, as above). The names it uses are grpc's own internals, so ``support``
checks each of them before the first call and the gateway falls back to
grpc.aio's calls, saying so at start-up, when this grpcio lacks one.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import grpc

# the cancellation text grpc.aio gives a call cancelled by its caller
_CANCELLED = "Locally cancelled by application!"
_CALL_NAMES = ("unary_unary", "is_ok", "is_locally_cancelled", "done", "cancel",
               "_initial_metadata", "_status")


def _rpc_error_factory() -> Any:
    from grpc.aio import _call

    return _call._create_rpc_error  # noqa: SLF001 - see the module's docstring


def support(channel: grpc.aio.Channel) -> str | None:
    """Why direct calls cannot be made on ``channel`` with this grpcio, or None if they can."""
    try:
        from grpc._cython import cygrpc

        core = channel._channel  # type: ignore[attr-defined]  # noqa: SLF001
        _rpc_error_factory()
    except (ImportError, AttributeError) as e:
        return f"grpcio {grpc.__version__} lacks {e}"
    if not isinstance(core, cygrpc.AioChannel):
        return f"grpcio {grpc.__version__}: the channel is not an AioChannel"
    for name in ("call", "get_registered_call_handle"):
        if not hasattr(core, name):
            return f"grpcio {grpc.__version__}: AioChannel has no {name}"
    for name in _CALL_NAMES:
        if not hasattr(cygrpc._AioCall, name):  # noqa: SLF001
            return f"grpcio {grpc.__version__}: _AioCall has no {name}"
    return None


def choose(kind: str, channel: grpc.aio.Channel) -> tuple[bool, str]:
    """Whether to call directly for ``BACKEND_CALLS=kind``, and what to say about it.

    ``direct`` on a grpcio that cannot is a start-up error (ValueError), as
    ``EVENT_LOOP=uvloop`` without uvloop is; ``auto`` falls back.
    """
    if kind == "aio":
        return False, "grpc.aio (BACKEND_CALLS=aio)"
    why = support(channel)
    if why is None:
        return True, f"direct (grpcio {grpc.__version__})"
    if kind == "direct":
        raise ValueError(f"BACKEND_CALLS=direct: {why}")
    return False, f"grpc.aio ({why})"


class UnaryCall:
    """``await call(request, timeout=..., metadata=...)``: Cuebot's reply bytes to ``path``."""

    __slots__ = ("_core", "_method", "_handle", "_error")

    def __init__(self, channel: grpc.aio.Channel, path: str) -> None:
        self._core = channel._channel  # type: ignore[attr-defined]  # noqa: SLF001
        self._method = path.encode()
        self._handle = self._core.get_registered_call_handle(self._method)
        self._error = _rpc_error_factory()

    async def __call__(self, request: bytes, *, timeout: float | None = None,
                       metadata: Sequence[tuple[str, str]] = ()) -> bytes:
        call = self._core.call(self._method,
                               None if timeout is None else time.time() + timeout,
                               None, None, self._handle)
        try:
            reply = await call.unary_unary(request, tuple(metadata), None)
        except asyncio.CancelledError:
            if not call.done():  # the request was cancelled: so is the call, in gRPC's core
                call.cancel(_CANCELLED)
            raise
        if call.is_ok():
            return reply  # type: ignore[no-any-return]
        if call.is_locally_cancelled():
            raise asyncio.CancelledError()
        raise self._error(call._initial_metadata, call._status)  # noqa: SLF001
