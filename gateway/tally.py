"""The per-request series, counted in plain Python and turned into metrics when scraped.

Every request updates a counter, three histograms and a gauge, and every
Cuebot call a fourth histogram. prometheus_client's objects take a lock and
validate their arguments on each update; measured with callgrind, that was a
twentieth of all the instructions a small request costs. Here an update is a
dict look-up, a ``bisect`` and two additions (the event loop is the only
writer, so no lock), and the same series, with the same names, help, labels
and buckets, are built from these numbers only when ``/metrics`` is read.

For one process only: with worker processes the values must live in
prometheus_client's shared files, and ``metrics.Metrics`` keeps its
prometheus_client objects for them.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Iterator, Sequence

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.utils import floatToGoString


class Level:
    """A gauge the request path moves (``inc``/``dec``), read when scraped."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class _Histograms:
    """One histogram metric: per label set, a count per bucket (+Inf last) and the sum."""

    __slots__ = ("name", "doc", "labels", "bounds", "_le", "series")

    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 bounds: Sequence[float]) -> None:
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.bounds = tuple(bounds)
        self._le = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        self.series: dict[tuple[str, ...], list[float]] = {}

    def new(self, key: tuple[str, ...]) -> list[float]:
        s = self.series[key] = [0] * (len(self.bounds) + 1) + [0.0]
        return s

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, s in self.series.items():
            total, buckets = 0, []
            for le, n in zip(self._le, s):
                total += n
                buckets.append((le, total))
            fam.add_metric(list(key), buckets, s[-1])
        return fam


class Tally:
    """The request path's series; a prometheus_client collector."""

    def __init__(self, prefix: str, latency: Sequence[float], sizes: Sequence[float],
                 help_: dict[str, str], methods: frozenset[str]) -> None:
        self._prefix = prefix
        self._methods = methods  # HTTP methods with a label of their own; others: "other"
        self._help = help_
        self._lat = tuple(latency)
        self._sizes = tuple(sizes)
        self.in_flight = Level()
        # (route, method, status, code) as the request path names it -> [count, the
        # route's histograms, the requests counter's labels]
        self._lines: dict[tuple[str, str, int, str], list] = {}
        self.request_seconds = _Histograms(f"{prefix}_request_duration_seconds",
                                           help_["request_seconds"], ("route",), latency)
        self.request_bytes = _Histograms(f"{prefix}_request_size_bytes",
                                         help_["request_bytes"], ("route",), sizes)
        self.response_bytes = _Histograms(f"{prefix}_response_size_bytes",
                                          help_["response_bytes"], ("route",), sizes)
        self.backend_seconds = _Histograms(f"{prefix}_backend_duration_seconds",
                                           help_["backend_seconds"], ("route", "grpc_code"),
                                           latency)
        # route -> (seconds, bytes in, bytes out) series, found with one look-up
        self._routes: dict[str, tuple[list[float], list[float], list[float]]] = {}

    # -- the request path ---------------------------------------------------
    def observe_request(self, route: str, method: str, status: int, grpc_code: str,
                        seconds: float, bytes_in: int, bytes_out: int) -> None:
        if method not in self._methods:
            method = "other"  # any token is a method to HTTP: keep the keys bounded
        key = (route, method, status, grpc_code)
        line = self._lines.get(key)
        if line is None:
            line = self._line(key)
        line[0] += 1
        s, i, o = line[1]
        s[bisect_left(self._lat, seconds)] += 1
        s[-1] += seconds
        i[bisect_left(self._sizes, bytes_in)] += 1
        i[-1] += bytes_in
        o[bisect_left(self._sizes, bytes_out)] += 1
        o[-1] += bytes_out

    def requests(self) -> dict[tuple[str, str, str, str], int]:
        """The requests counter: count per label set."""
        return {labels: count for count, _series, labels in self._lines.values()}

    def _line(self, key: tuple[str, str, int, str]) -> list:
        """A request key's count and its route's three histograms, made on first use.

        One look-up per request: the count is kept here and read, summed per
        label set, when the requests counter is scraped.
        """
        route, method, status, grpc_code = key
        series = self._routes.get(route)
        if series is None:
            k = (route,)
            series = self._routes[route] = (self.request_seconds.new(k),
                                             self.request_bytes.new(k),
                                             self.response_bytes.new(k))
        line = self._lines[key] = [0, series, (route, method, str(status), grpc_code)]
        return line

    def observe_backend(self, route: str, grpc_code: str, seconds: float) -> None:
        hist = self.backend_seconds
        key = (route, grpc_code)
        s = hist.series.get(key)
        if s is None:
            s = hist.new(key)
        s[bisect_left(self._lat, seconds)] += 1
        s[-1] += seconds

    # -- scraping -----------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        p = self._prefix
        requests = CounterMetricFamily(f"{p}_requests", self._help["requests"],
                                       labels=["route", "method", "status", "grpc_code"])
        for labels, n in self.requests().items():
            requests.add_metric(list(labels), n)
        yield requests
        yield self.request_seconds.family()
        yield self.backend_seconds.family()
        yield self.request_bytes.family()
        yield self.response_bytes.family()
        yield GaugeMetricFamily(f"{p}_requests_in_flight", self._help["in_flight"],
                                value=self.in_flight.value)
