"""``/healthz`` (the process is alive) and ``/readyz`` (it can serve), for orchestrators.

Readiness asks Cuebot something cheap: ``grpc.health.v1.Health/Check``.
Cuebot registers no health service, so its answer is UNIMPLEMENTED — which
still proves a live server at the other end of a working channel (TLS
handshake included), and ``/readyz`` says it in those words; a backend
that does serve health may say NOT_SERVING.
Only "no answer" (UNAVAILABLE, DEADLINE_EXCEEDED) makes the gateway unready,
or an open circuit (``breaker.py``) while it refuses every call.
The result is cached briefly and shared by concurrent probes, so a busy
load balancer cannot turn probes into load on Cuebot.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import orjson
from aiohttp import web

from .state import STATE

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("gateway.health")

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SERVING, _NOT_SERVING = 1, 2
_NO_ANSWER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED)


@dataclass(frozen=True)
class Probe:
    reachable: bool
    detail: str          # what Cuebot answered, or why it did not
    checked_at: float    # epoch seconds


def _health_status(reply: bytes) -> int:
    """Field 1 (enum ServingStatus) of grpc.health.v1.HealthCheckResponse, without its proto."""
    if len(reply) >= 2 and reply[0] == 0x08:
        return reply[1] & 0x7F
    return 0


class Readiness:
    """Whether Cuebot answers, asked at most once per ``ttl`` seconds."""

    def __init__(self, backend: "Backend", ttl: float = 1.5, timeout: float = 2.0) -> None:
        self._call = backend.channel.unary_unary(HEALTH_CHECK, request_serializer=None,
                                                 response_deserializer=None)
        self.ttl = ttl
        self.timeout = timeout
        self._cached: Probe | None = None
        self._cached_at = 0.0
        self._inflight: asyncio.Future[Probe] | None = None

    async def probe(self) -> Probe:
        now = time.monotonic()
        if self._cached is not None and now - self._cached_at < self.ttl:
            return self._cached
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._ask())
            self._inflight.add_done_callback(self._store)
        return await asyncio.shield(self._inflight)

    def _store(self, fut: "asyncio.Future[Probe]") -> None:
        self._inflight = None
        if not fut.cancelled() and fut.exception() is None:
            self._cached, self._cached_at = fut.result(), time.monotonic()

    async def _ask(self) -> Probe:
        try:
            reply = await self._call(b"", timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code in _NO_ANSWER:
                return Probe(False, f"{code.name}: {e.details() or 'no answer'}", time.time())
            if code == grpc.StatusCode.UNIMPLEMENTED:  # Cuebot, and the sandbox
                return Probe(True, "Cuebot reachable; it has no health service "
                                   "(its answer: UNIMPLEMENTED)", time.time())
            return Probe(True, f"Cuebot reachable; its health check answered {code.name}",
                         time.time())
        status = _health_status(reply)
        if status == _NOT_SERVING:
            return Probe(False, "health check: NOT_SERVING", time.time())
        return Probe(True, "health check: SERVING" if status == _SERVING
                     else "Cuebot reachable; its health check answered OK", time.time())


async def connected(channel: grpc.aio.Channel, timeout: float) -> bool:
    """Whether the channel reaches READY (TCP, TLS, HTTP/2) within ``timeout``; no RPC is sent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            return False
        left = deadline - loop.time()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), left)
        except asyncio.TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)
    return True


async def report_at_start(backend: "Backend", readiness: Readiness,
                          timeout: float = 5.0) -> None:
    """One line at start-up on whether Cuebot can be reached; the gateway serves either way.

    A mistyped CUEBOT_ENDPOINT otherwise shows only as every RPC answering
    503; the warning says so before the first request does. Connecting sends
    Cuebot no request; only when that fails does the probe ask, for the reason.
    """
    try:
        if await connected(backend.channel, timeout):
            log.info("Cuebot at %s: connected", backend.target)
            return
        probe = await readiness.probe()
    except (grpc.RpcError, grpc.aio.UsageError, RuntimeError) as e:  # closed under it: stopping
        log.debug("start-up check of Cuebot ended: %s", e)
        return
    detail = probe.detail if not probe.reachable else "no connection within %g s" % timeout
    log.warning("Cuebot at %s is not reachable (%s); serving anyway: RPCs answer 503 and "
                "/readyz 503 until it answers. Check CUEBOT_ENDPOINT.", backend.target, detail)


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def healthz(_request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


async def readyz(request: web.Request) -> web.Response:

    state = request.app[STATE]
    table = state.table
    reloader = state.reloader
    descriptors = {
        "version": table.version, "source": table.descriptors.source,
        "services": len(table.services), "methods": len(table.routes),
        "loadedAt": _iso(reloader.loaded_at) if reloader else None,
        "lastReload": reloader.last.as_json() if reloader and reloader.last else None,
    }
    if state.draining:
        return _json({"status": "shutting down", "descriptors": descriptors,
                      "cuebot": {"endpoint": state.backend.target}}, 503)
    probe = await state.readiness.probe()
    cuebot = {"endpoint": state.backend.target, "reachable": probe.reachable,
              "detail": probe.detail, "checkedAt": _iso(probe.checked_at)}
    ready = probe.reachable
    if state.protect is not None:
        cuebot.update(state.protect.snapshot())
        # refusing every call while the circuit cools down; once a probe may go, ready
        # again, or a load balancer would send no request that could close it
        ready = ready and not state.protect.breaker.refusing()
    body = {"status": "ready" if ready else "unavailable", "descriptors": descriptors,
            "cuebot": cuebot}
    return _json(body, 200 if ready else 503)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
