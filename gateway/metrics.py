"""Prometheus metrics: what the gateway counts, and ``GET /metrics`` to read them.

One ``Metrics`` object per app, with its own ``CollectorRegistry``: the tests
build many apps in one process, and a process-global registry would mix their
counts (and refuse the second registration of a name).

Label values are bounded by construction: ``route`` is a canonical RPC path,
an ``/api`` route template, an open path or ``unmatched`` (never the raw path
of an unknown URL), ``method`` is one of a fixed set, reasons and outcomes are
short fixed words. A client cannot grow the number of series.

Several worker processes behind one port (a supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` for them) each see a share of the requests, so a
scrape must add up all of them: in that mode every value lives in
prometheus_client's per-process files in that directory and ``/metrics``
answers with ``MultiProcessCollector``'s sum over them. The variable is
prometheus_client's own contract with whoever starts the workers (the library
reads it too), not a gateway setting, so it is not in ``config.OPTIONS``.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from .tally import Level, Tally

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "opencue_gateway"
UNMATCHED = "unmatched"

# A request's whole life and its Cuebot call; GRPC_TIMEOUT defaults to 30 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# 64 B to 1 GiB (MAX_RESPONSE_BYTES' default), by factors of four.
SIZE_BUCKETS = tuple(float(64 * 4**k) for k in range(13))

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RELOAD_OUTCOMES = ("ok", "failed", "unchanged")
RATE_LIMIT_REASONS = ("limit", "redis_closed")
CUT_REASONS = ("header_timeout", "body_timeout", "client_limit", "send_timeout")
QUEUE_REJECTION_REASONS = ("full", "deadline")
BREAKER_STATES = ("closed", "open", "half_open")
JWKS_OUTCOMES = ("ok", "unchanged", "failed")


class _LiveOnly:
    """The multiprocess collector's view, without superseded descriptor versions.

    A label set cannot be removed from the per-process files, so a replaced
    descriptor version is set to 0 there and left out here.
    """

    def __init__(self, inner: MultiProcessCollector, info_name: str) -> None:
        self._inner = inner
        self._info = info_name

    def collect(self) -> Iterable[Metric]:
        for metric in self._inner.collect():
            if metric.name == self._info:
                metric.samples = [s for s in metric.samples if s.value != 0]
            yield metric


def _use_multiprocess_values() -> None:
    """Make new metric values file-backed, even if prometheus_client was imported first.

    prometheus_client picks its value class once, at import, from the
    environment. A worker forked from a parent that imported it before the
    supervisor set ``PROMETHEUS_MULTIPROC_DIR`` would otherwise count in
    memory only, invisible to the other workers' scrapes.
    """
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


class Metrics:
    """Every metric of one gateway app; the request path calls the methods below."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        """Per-app metrics; with ``multiprocess_dir``, this process's share of the workers'.

        ``multiprocess_dir`` must be this process's ``PROMETHEUS_MULTIPROC_DIR``:
        prometheus_client writes where that variable points.
        """
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            if os.environ.get(MULTIPROC_ENV) != multiprocess_dir:
                raise ValueError(f"multiprocess metrics need {MULTIPROC_ENV}={multiprocess_dir} "
                                 "in this process's environment")
            if not os.path.isdir(multiprocess_dir):
                raise ValueError(f"{MULTIPROC_ENV} {multiprocess_dir}: not a directory")
            _use_multiprocess_values()
        own = None if multiprocess_dir is not None else CollectorRegistry(auto_describe=True)
        p = PREFIX

        # The request path's series: in one process, counted by tally.Tally
        # (cheap to update, built when scraped); with worker processes, as
        # prometheus_client objects whose values live in the shared files.
        help_ = {
            "requests": "HTTP requests answered, by route, method, status and gRPC code "
                        "(status 499 / CANCELLED: the client went away first)",
            "request_seconds": "whole request, first byte in to last byte out",
            "backend_seconds": "each Cuebot call, by route and gRPC status",
            "request_bytes": "request body bytes",
            "response_bytes": "reply body bytes as sent (after gzip)",
            "in_flight": "requests being served now (a scrape counts itself)",
        }
        if own is not None:
            tally = Tally(p, LATENCY_BUCKETS, SIZE_BUCKETS, help_, HTTP_METHODS)
            own.register(tally)
            self.in_flight: Gauge | Level = tally.in_flight
            self.observe_request = tally.observe_request  # type: ignore[method-assign]
            self.observe_backend = tally.observe_backend  # type: ignore[method-assign]
        else:  # registry None: the values go to the shared files, read by the collector
            self.requests = Counter(
                f"{p}_requests", help_["requests"], ("route", "method", "status", "grpc_code"),
                registry=None)
            self.request_seconds = Histogram(
                f"{p}_request_duration_seconds", help_["request_seconds"], ("route",),
                buckets=LATENCY_BUCKETS, registry=None)
            self.backend_seconds = Histogram(
                f"{p}_backend_duration_seconds", help_["backend_seconds"],
                ("route", "grpc_code"), buckets=LATENCY_BUCKETS, registry=None)
            self.request_bytes = Histogram(
                f"{p}_request_size_bytes", help_["request_bytes"], ("route",),
                buckets=SIZE_BUCKETS, registry=None)
            self.response_bytes = Histogram(
                f"{p}_response_size_bytes", help_["response_bytes"], ("route",),
                buckets=SIZE_BUCKETS, registry=None)
            self.in_flight = Gauge(f"{p}_requests_in_flight", help_["in_flight"],
                                   multiprocess_mode="livesum", registry=None)
        self.auth_failures = Counter(
            f"{p}_auth_failures", "refused credentials, by reason", ("reason",), registry=own)
        self.rate_limited = Counter(
            f"{p}_rate_limit_rejections", "requests refused by the rate limiter: limit "
            "(429) or redis_closed (503, Redis down with RATE_LIMIT_FAIL=closed)",
            ("reason",), registry=own)
        self.redis_failures = Counter(
            f"{p}_rate_limit_redis_failures", "failed Redis calls of the rate limiter",
            registry=own)
        self.connections_cut = Counter(
            f"{p}_connections_cut", "connections the gateway ended early: header_timeout, "
            "body_timeout (slow clients, 408), client_limit (MAX_CONNECTIONS_PER_CLIENT, 429), "
            "send_timeout (a streamed reply's client stopped reading, SEND_TIMEOUT)",
            ("reason",), registry=own)
        self.authz_denials = Counter(
            f"{p}_authz_denials", "calls refused by AUTHZ_POLICY (403), by method "
            "(package.Service/Method)", ("method",), registry=own)
        self.audit_failures = Counter(
            f"{p}_audit_write_failures", "audit lines that could not be written", registry=own)
        self.jwks_refreshes = Counter(
            f"{p}_jwks_refreshes", "fetches of JWT_JWKS after start-up, by outcome: ok (new "
            "keys), unchanged, failed (the last good keys kept)", ("outcome",), registry=own)
        self.jwks_keys = Gauge(
            f"{p}_jwks_keys", "usable keys of JWT_JWKS", registry=own,
            multiprocess_mode="livemax")
        self.reloads = Counter(
            f"{p}_descriptor_reloads", "descriptor reloads, by outcome", ("outcome",),
            registry=own)
        self.descriptors = Gauge(
            f"{p}_descriptors_info", "the descriptors being served (always 1)",
            ("version", "source"), registry=own, multiprocess_mode="livemax")
        self.services = Gauge(
            f"{p}_descriptor_services", "services exposed", registry=own,
            multiprocess_mode="livemax")
        self.methods = Gauge(
            f"{p}_descriptor_methods", "RPC methods exposed", registry=own,
            multiprocess_mode="livemax")
        # protecting Cuebot (protect.py and the modules it drives)
        self.coalesced_requests = Counter(
            f"{p}_coalesced_requests", "reads that waited for an identical call already in "
            "flight instead of making their own, by route", ("route",), registry=own)
        self.read_cache_hits = Counter(
            f"{p}_read_cache_hits", "reads answered from the micro-cache (READ_CACHE_MS), "
            "by route", ("route",), registry=own)
        self.backend_in_flight = Gauge(
            f"{p}_backend_calls_in_flight", "calls at Cuebot now (at most "
            "BACKEND_MAX_IN_FLIGHT per process)", registry=own, multiprocess_mode="livesum")
        self.backend_queued = Gauge(
            f"{p}_backend_calls_queued", "calls waiting for a slot under BACKEND_MAX_IN_FLIGHT",
            registry=own, multiprocess_mode="livesum")
        self.queue_rejections = Counter(
            f"{p}_backend_queue_rejections", "calls refused (503) before reaching Cuebot: "
            "full (BACKEND_MAX_QUEUE) or deadline (it passed in the queue)", ("reason",),
            registry=own)
        self.breaker_state = Gauge(
            f"{p}_breaker_state", "the circuit to Cuebot: 1 for the state it is in "
            "(with workers, how many are in it)", ("state",), registry=own,
            multiprocess_mode="livesum")
        self.breaker_rejections = Counter(
            f"{p}_breaker_rejections", "calls refused at once (503) because the circuit to "
            "Cuebot was open", registry=own)
        for reason in QUEUE_REJECTION_REASONS:
            self.queue_rejections.labels(reason)
        for outcome in RELOAD_OUTCOMES:
            self.reloads.labels(outcome)
        for reason in RATE_LIMIT_REASONS:
            self.rate_limited.labels(reason)
        for reason in CUT_REASONS:
            self.connections_cut.labels(reason)
        for outcome in JWKS_OUTCOMES:
            self.jwks_refreshes.labels(outcome)
        self._descriptor_labels: tuple[str, str] | None = None
        self._request_children: dict[tuple[str, str, int, str], tuple] = {}
        self._backend_children: dict[tuple[str, str], Histogram] = {}
        self._coalesced_children: dict[str, Counter] = {}
        self._cache_hit_children: dict[str, Counter] = {}

        if multiprocess_dir is None:
            assert own is not None
            self.registry = own
        else:
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(_LiveOnly(MultiProcessCollector(None, multiprocess_dir),
                                             f"{p}_descriptors_info"))

    @classmethod
    def for_process(cls) -> "Metrics":
        """Per-app metrics, or shared-file ones when a supervisor set up workers."""
        return cls(os.environ.get(MULTIPROC_ENV) or None)

    # -- the request path ------------------------------------------------
    # With worker processes (one process: tally.Tally's methods instead).
    # ``labels()`` validates and looks its arguments up under a lock on every
    # call; the label sets are few and fixed (see the module docstring), so
    # each request resolves its children once, from a dict, and then only
    # counts. The dicts are bounded by those label sets.
    def observe_request(self, route: str, method: str, status: int, grpc_code: str,
                        seconds: float, bytes_in: int, bytes_out: int) -> None:
        if method not in HTTP_METHODS:
            method = "other"  # any token is a method to HTTP: keep the keys bounded
        key = (route, method, status, grpc_code)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(route, method, str(status), grpc_code),
                *self._route_children(route))
        total, duration, size_in, size_out = children
        total.inc()
        duration.observe(seconds)
        size_in.observe(bytes_in)
        size_out.observe(bytes_out)

    def _route_children(self, route: str) -> tuple[Histogram, Histogram, Histogram]:
        return (self.request_seconds.labels(route), self.request_bytes.labels(route),
                self.response_bytes.labels(route))

    def observe_backend(self, route: str, grpc_code: str, seconds: float) -> None:
        key = (route, grpc_code)
        child = self._backend_children.get(key)
        if child is None:
            child = self._backend_children[key] = self.backend_seconds.labels(route, grpc_code)
        child.observe(seconds)

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def connection_cut(self, reason: str) -> None:
        self.connections_cut.labels(reason).inc()

    def rate_limit_rejection(self, reason: str) -> None:
        self.rate_limited.labels(reason).inc()

    def redis_failure(self) -> None:
        self.redis_failures.inc()

    def authz_denial(self, method: str) -> None:
        self.authz_denials.labels(method).inc()

    def audit_failure(self) -> None:
        self.audit_failures.inc()

    def jwks_refresh(self, outcome: str, keys: int) -> None:
        if outcome not in JWKS_OUTCOMES:
            raise ValueError(f"JWKS outcome must be one of {', '.join(JWKS_OUTCOMES)}")
        self.jwks_refreshes.labels(outcome).inc()
        self.jwks_keys.set(keys)

    # -- protecting Cuebot --------------------------------------------------
    def coalesced(self, route: str) -> None:
        child = self._coalesced_children.get(route)
        if child is None:
            child = self._coalesced_children[route] = self.coalesced_requests.labels(route)
        child.inc()

    def read_cache_hit(self, route: str) -> None:
        child = self._cache_hit_children.get(route)
        if child is None:
            child = self._cache_hit_children[route] = self.read_cache_hits.labels(route)
        child.inc()

    def backend_slots(self, in_flight: int, queued: int) -> None:
        self.backend_in_flight.set(in_flight)
        self.backend_queued.set(queued)

    def watch_slots(self, in_flight: Callable[[], float],
                    queued: Callable[[], float]) -> Callable[[int, int], None] | None:
        """How the cap's slots reach the gauges: read at scrape time when possible.

        Every call takes and frees a slot; setting two gauges each time was a
        measurable share of a small request. One process's registry can ask
        for the values when scraped; with worker processes the values must be
        in the shared files, so they are set on every change (the returned
        reporter; None when nothing needs reporting).
        """
        if self.multiprocess_dir is not None:
            return self.backend_slots
        self.backend_in_flight.set_function(in_flight)
        self.backend_queued.set_function(queued)
        return None

    def queue_rejection(self, reason: str) -> None:
        self.queue_rejections.labels(reason).inc()

    def breaker_moved(self, old: str | None, new: str) -> None:
        """The circuit went from ``old`` (None: just made) to ``new``."""
        for state in BREAKER_STATES:
            self.breaker_state.labels(state).set(1 if state == new else 0)

    def breaker_rejection(self) -> None:
        self.breaker_rejections.inc()

    # -- descriptors ------------------------------------------------------
    def record_reload(self, outcome: str) -> None:
        """Count one reload: ``ok`` (new table in), ``failed`` or ``unchanged``."""
        if outcome not in RELOAD_OUTCOMES:
            raise ValueError(f"reload outcome must be one of {', '.join(RELOAD_OUTCOMES)}, "
                             f"got {outcome!r}")
        self.reloads.labels(outcome).inc()

    def set_descriptors(self, version: str, source: str, services: int, methods: int) -> None:
        """The descriptors now served; replaces what the previous call said."""
        labels = (str(version), str(source))
        old = self._descriptor_labels
        if old is not None and old != labels:
            self.descriptors.labels(*old).set(0)
            if self.multiprocess_dir is None:
                self.descriptors.remove(*old)
        self.descriptors.labels(*labels).set(1)
        self._descriptor_labels = labels
        self.services.set(services)
        self.methods.set(methods)

    # -- exposition -------------------------------------------------------
    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics if the scraper asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        body, content_type = self.exposition(request.headers.get("Accept"))
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp
