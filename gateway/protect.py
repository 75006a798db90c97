"""Protecting Cuebot from its clients: every backend call of the gateway passes here.

In the order a call meets them:

1. a write (anything not a read, see ``Reads``) goes straight to 3; when it
   ends, however it ends, the count of completed writes (``writes.py``, shared
   by ``--workers`` processes) moves on and the read cache is emptied, so no
   later read can be answered from before it;
2. a read is answered from the micro-cache (``readcache.py``) if it holds a
   fresh reply, else it joins an identical call in flight (``coalesce.py``),
   else it starts one that later identical reads may join;
3. the circuit breaker (``breaker.py``) refuses at once while Cuebot is down;
4. the cap (``admission.py``) holds the call in a bounded queue while
   ``BACKEND_MAX_IN_FLIGHT`` calls are at Cuebot;
5. ``Route.call``: the call itself, timed for the metrics; its status is the
   breaker's evidence.

A read shared by several requests is made with the whole ``GRPC_TIMEOUT``,
the longest deadline any of them can have; each request stops waiting at
its own deadline (504, or 503 if the call was still queued).
"""
from __future__ import annotations

import asyncio
import re
import time
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Awaitable, Mapping, NamedTuple, Sequence

import grpc

from . import errors
from .admission import Admission
from .breaker import Breaker
from .coalesce import Coalescer, Flight, WaitExpired, key
from .errors import GatewayError
from .readcache import ReadCache
from .writes import Writes

if TYPE_CHECKING:
    from .backend import Backend
    from .config import Config
    from .metrics import Metrics
    from .routes import Route

# OpenCue's reads: GetJobs, FindShow, IsJobPending, ... (not "Issue", "Getaway")
_READ_NAME = re.compile(r"(Get|Find|Is|List)([A-Z0-9_]|\Z)")


class Reads:
    """Which methods are reads: Get*/Find*/Is*/List*, plus and minus ``COALESCE_METHODS``.

    Decided once per method path and remembered; a later pattern wins over
    an earlier one, ``!pattern`` makes a method a write.
    """

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self._patterns = tuple((p.startswith("!"), p.lstrip("!").lstrip("/")) for p in patterns)
        self._known: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        known = self._known.get(path)
        if known is None:
            known = self._known[path] = self._decide(path)
        return known

    def _decide(self, path: str) -> bool:
        name = path.lstrip("/")
        read = bool(_READ_NAME.match(name.rpartition("/")[2]))
        for negated, pattern in self._patterns:
            if fnmatchcase(name, pattern):
                read = not negated
        return read


class Answer(NamedTuple):
    """Cuebot's reply, and the headers that say where it came from (micro-cache).

    A tuple: one is made per request.
    """

    reply: bytes
    headers: Mapping[str, str] | None = None


class Protector:
    """The gateway's one way to call Cuebot (see the module's docstring)."""

    def __init__(self, cfg: "Config", backend: "Backend", metrics: "Metrics") -> None:
        self.timeout = cfg.grpc_timeout
        self.max_recv_mb = backend.max_recv_mb
        self.metrics = metrics
        self.reads = Reads(cfg.coalesce_methods)
        self.writes = Writes.for_process()  # completed writes: this process's, or the workers'
        self._cached_in = self.writes.count()  # the write count the cache's entries belong to
        self.breaker = Breaker(cfg.breaker_failures, cfg.breaker_cooldown, backend.target,
                               connected=backend.connected, on_change=metrics.breaker_moved,
                               on_refuse=metrics.breaker_rejection)
        metrics.breaker_moved(None, self.breaker.state)
        self.admission = admission = Admission(cfg.backend_max_in_flight,
                                               cfg.backend_max_queue,
                                               refused=metrics.queue_rejection)
        admission.report = metrics.watch_slots(lambda: admission.in_flight,
                                               lambda: admission.queued)
        self.flights = Coalescer() if cfg.coalesce_reads else None
        self.cache = (ReadCache(cfg.read_cache_ms / 1000, cfg.read_cache_max_bytes)
                      if cfg.read_cache_ms else None)

    def call(self, route: "Route", data: bytes, timeout: float,
             metadata: Sequence[tuple[str, str]]) -> Awaitable[bytes | Answer]:
        """Cuebot's reply to ``data`` for ``route`` (with headers saying where it came
        from, as an ``Answer``, when it may not be Cuebot's own), or the GatewayError
        to answer instead.

        Without coalescing and the micro-cache, every call is its own and
        writes need no bookkeeping: the call itself, no coroutine around it.
        """
        if self.flights is None and self.cache is None:
            return self._direct(route, data, timeout, metadata)
        return self._call(route, data, timeout, metadata)

    async def _call(self, route: "Route", data: bytes, timeout: float,
                    metadata: Sequence[tuple[str, str]]) -> Answer:
        if not self.reads(route.path):
            try:
                return Answer(await self._direct(route, data, timeout, metadata))
            finally:
                self._written()
        k = key(route.path, data, metadata)
        generation = self.writes.count()
        cache = self.cache
        if cache is not None:
            if generation != self._cached_in:  # a write completed (maybe in another worker)
                cache.clear()
                self._cached_in = generation
            hit = cache.get(k, time.monotonic())
            if hit is not None:
                self.metrics.read_cache_hit(route.path)
                return Answer(hit[0], {"X-Cache": "hit", "Age": str(int(hit[1]))})
        if self.flights is None:
            reply = await self._direct(route, data, timeout, metadata)
            self._keep(k, reply, generation)
            return Answer(reply, _MISS)
        return await self._shared(route, data, timeout, metadata, k, generation)

    # -- reads in common ------------------------------------------------------
    async def _shared(self, route: "Route", data: bytes, timeout: float,
                      metadata: Sequence[tuple[str, str]], k: tuple, generation: int) -> Answer:
        flights = self.flights
        assert flights is not None
        now = asyncio.get_running_loop().time()
        deadline = now + timeout
        flight = flights.joinable(k, generation)
        if flight is None:
            probe = self.breaker.admit()
            flight = flights.start(k, generation, now + self.timeout,
                                   lambda f: self._fly(f, route, data, metadata, probe),
                                   alone=probe)
        else:
            self.metrics.coalesced(route.path)
        try:
            outcome = await flights.wait(flight, deadline)
        except WaitExpired as e:
            if e.sent:
                raise errors.deadline_exceeded() from None
            raise self.admission.expired() from None
        if isinstance(outcome, bytes):
            return Answer(outcome, None if self.cache is None else _MISS)
        if isinstance(outcome, grpc.aio.AioRpcError):
            raise errors.from_rpc_error(outcome, self.max_recv_mb) from None
        raise outcome.again() from None

    async def _fly(self, flight: Flight, route: "Route", data: bytes,
                   metadata: Sequence[tuple[str, str]], probe: bool
                   ) -> bytes | grpc.aio.AioRpcError | GatewayError:
        """The shared call: its answer, or its failure as a value (every waiter raises it)."""
        loop = asyncio.get_running_loop()
        deadline = flight.deadline
        try:
            await self.admission.acquire(deadline)
        except GatewayError as e:
            self.breaker.abandon(probe)
            return e
        except BaseException:
            self.breaker.abandon(probe)
            raise
        flight.sent = True
        try:
            reply = await self._send(route, data, deadline - loop.time(), metadata, probe, True)
        except grpc.aio.AioRpcError as e:
            return e
        finally:
            self.admission.release()
        self._keep(flight.key, reply, flight.generation)
        return reply

    def _keep(self, k: tuple, reply: bytes, generation: int) -> None:
        """Into the micro-cache, unless a write completed since the call was sent."""
        cache = self.cache
        if cache is None or generation != self.writes.count():
            return
        if generation != self._cached_in:
            cache.clear()
            self._cached_in = generation
        cache.put(k, reply, len(reply) + len(k[1]), time.monotonic())

    def _written(self) -> None:
        self.writes.wrote()
        if self.cache is not None:
            self.cache.clear()

    # -- one request, one call ------------------------------------------------
    async def _direct(self, route: "Route", data: bytes, timeout: float,
                      metadata: Sequence[tuple[str, str]]) -> bytes:
        """One request's own call: the breaker's word, a slot, then ``_send``."""
        probe = self.breaker.admit()
        whole_deadline = timeout >= self.timeout
        admission = self.admission
        if not admission.take():  # no free slot at once: wait in line
            deadline = asyncio.get_running_loop().time() + timeout
            try:
                await admission.acquire(deadline)
            except BaseException:
                self.breaker.abandon(probe)
                raise
            timeout = deadline - asyncio.get_running_loop().time()
        try:
            return await self._send(route, data, timeout, metadata, probe, whole_deadline)
        except grpc.aio.AioRpcError as e:
            raise errors.from_rpc_error(e, self.max_recv_mb) from None
        finally:
            admission.release()

    async def _send(self, route: "Route", data: bytes, timeout: float,
                    metadata: Sequence[tuple[str, str]], probe: bool,
                    whole_deadline: bool) -> bytes:
        """The call itself: timed, and its status told to the breaker."""
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            try:
                reply = await route.call(data, timeout=max(timeout, 0.001), metadata=metadata)
            except grpc.aio.AioRpcError as e:
                status = e.code()
                code = errors.status_name(status)
                self.breaker.answered(status, probe, whole_deadline, e.details() or "")
                raise
            except BaseException as e:
                if isinstance(e, asyncio.CancelledError):
                    code = "CANCELLED"
                self.breaker.abandon(probe)
                raise
            code = "OK"
            self.breaker.succeeded(probe)
            return reply
        finally:
            self.metrics.observe_backend(route.path, code, time.perf_counter() - started)

    # -- reporting ------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        """For /readyz: the circuit, and the calls at Cuebot and waiting for it."""
        return {"circuit": self.breaker.snapshot(),
                "calls": {"inFlight": self.admission.in_flight,
                          "queued": self.admission.queued,
                          "maxInFlight": self.admission.limit,
                          "maxQueued": self.admission.queue}}


_MISS = {"X-Cache": "miss"}
