"""Graceful shutdown that ends within SHUTDOWN_GRACE, whatever is in flight.

aiohttp's own ``cleanup(shutdown_timeout)`` waits up to the timeout for
handlers, then cancels them and waits up to the timeout again, so a request
stuck on Cuebot kept the process alive for twice SHUTDOWN_GRACE: with
Kubernetes' default 30 s termination period and the 30 s grace that was our
default, the pod was SIGKILLed first (the default is 25 s now). Here, from
the signal on, one clock:

1. ``/readyz`` answers 503 and every reply carries ``Connection: close``;
2. for ``SHUTDOWN_DELAY`` seconds (default 0) the listener still accepts and
   serves, so a load balancer polling ``/readyz`` sees the gateway leave
   before its connections are refused;
3. the listener closes, idle connections close, requests in flight may
   finish until SHUTDOWN_GRACE has passed since the signal;
4. what is still running then is cut (its client's connection closed, its
   Cuebot call cancelled), the app is cleaned up within half a second, and
   the process exits. A second SIGTERM or SIGINT skips to step 4.

A watchdog thread ends the process at SHUTDOWN_GRACE + 0.9 s if the event
loop itself is stuck, so "within the grace plus one second" holds regardless.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import GatewayState
    from .server import GatewayRunner

log = logging.getLogger("gateway")

CLEANUP_BUDGET = 0.6   # seconds after the grace for closing connections and the backend
WATCHDOG_MARGIN = 0.9  # seconds after the grace at which the process ends regardless
class _Watchdog:
    """Ends the process at SHUTDOWN_GRACE + WATCHDOG_MARGIN after the signal, whatever runs.

    Armed only in a gateway process of its own (``enable_watchdog``): after the
    drain, the interpreter still joins worker threads (a reload compiling in
    one, say) and finalizes; none of that may outlast the promise.
    """

    enabled = False
    drained = False

    def arm(self, grace: float) -> None:
        if not self.enabled:
            return
        timer = threading.Timer(grace + WATCHDOG_MARGIN, self._end)
        timer.daemon = True
        timer.start()

    def _end(self) -> None:
        if not self.drained:
            log.error("shutdown did not finish within SHUTDOWN_GRACE + %g s; exiting now",
                      WATCHDOG_MARGIN)
        logging.shutdown()
        os._exit(0 if self.drained else 1)


WATCHDOG = _Watchdog()


def enable_watchdog() -> None:
    """For ``main()``: this process exits within the grace, even past the event loop."""
    WATCHDOG.enabled = True


def _busy(runner: "GatewayRunner") -> list[asyncio.Task[None]]:
    """The connections' tasks still running (serving a request, or waiting for one)."""
    server = runner.server
    if server is None:
        return []
    tasks = []
    for conn in server.connections:
        task = getattr(conn, "_task_handler", None)
        if task is not None and not task.done():
            tasks.append(task)
    return tasks


async def _until(deadline: float, hurry: asyncio.Event,
                 tasks: list[asyncio.Task[None]] | None = None) -> None:
    """Until ``tasks`` are done (or, without tasks, the clock) by ``deadline``; or ``hurry``."""
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(hurry.wait())
    pending = {t for t in tasks or () if not t.done()}
    try:
        while not hurry.is_set() and (pending or not tasks):
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.wait([*pending, waiter], timeout=left,
                               return_when=asyncio.FIRST_COMPLETED)
            pending = {t for t in pending if not t.done()}
    finally:
        waiter.cancel()


async def drain(runner: "GatewayRunner", state: "GatewayState", grace: float, delay: float,
                hurry: asyncio.Event) -> None:
    """Steps 1 to 4 above; returns when the process may exit."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + grace
    WATCHDOG.arm(grace)
    state.draining = True  # /readyz says 503; replies close their connections (app.context)
    if delay > 0:
        log.info("shutting down: /readyz answers 503; still accepting for %g s, then "
                 "in-flight requests have until %g s after the signal", delay, grace)
        await _until(min(deadline, started + delay), hurry)
    for site in list(runner.sites):
        await site.stop()
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle connections close; busy ones after their reply
    busy = _busy(runner)
    log.info("shutting down: no new connections; %d connection(s) busy, up to %.1f s left",
             len(busy), max(0.0, deadline - loop.time()))
    while busy and not hurry.is_set() and loop.time() < deadline:
        await _until(deadline, hurry, busy)
        busy = _busy(runner)
    if busy:
        log.warning("shutdown: %s; cutting %d connection(s) still busy",
                    "asked again" if hurry.is_set() else
                    f"SHUTDOWN_GRACE ({grace:g} s) is over", len(busy))
        for conn in list(runner.server.connections if runner.server else ()):
            conn.force_close()
        await asyncio.wait(busy, timeout=CLEANUP_BUDGET / 2)
    runner.quick_shutdown()
    try:
        await asyncio.wait_for(runner.cleanup(),
                               max(0.1, deadline + CLEANUP_BUDGET - loop.time()))
    except asyncio.TimeoutError:
        log.warning("shutdown: closing the backend took too long; exiting anyway")
    WATCHDOG.drained = True
