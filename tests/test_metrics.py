"""``GET /metrics`` after real requests: scraped over HTTP, parsed, values checked.

Every test drives a real gateway (loopback HTTP, a ``RecordingCuebot`` gRPC
server behind it) and reads the exposition text as Prometheus would. The
multiprocess tests run real gateway processes sharing one
``PROMETHEUS_MULTIPROC_DIR``, as a supervisor's workers do.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from opencue_proto import job_pb2, show_pb2
from prometheus_client import multiprocess

from gateway.app import STATE
from gateway.metrics import UNMATCHED, Metrics
from scrape import label_values, samples, scrape, value
from support import (ROOT, GatewayProcess, RecordingCuebot, auth_headers, free_port,
                     raw_request, token)

GET_SHOWS = "/show.ShowInterface/GetShows"
FIND_SHOW = "/show.ShowInterface/FindShow"
GET_FRAME = "/job.FrameInterface/GetFrame"
REQ = "opencue_gateway_requests_total"


def _shows(n: int) -> show_pb2.ShowGetShowsResponse:
    return show_pb2.ShowGetShowsResponse(shows=show_pb2.ShowSeq(shows=[
        show_pb2.Show(id=f"id-{i}", name=f"show{i}") for i in range(n)]))


# ---------------------------------------------------------------------------
# requests by route, status and code
# ---------------------------------------------------------------------------
async def test_requests_by_route_status_and_grpc_code(make_gateway: Any,
                                                      cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, _shows(3))
    cuebot.reply(FIND_SHOW, code=grpc.StatusCode.NOT_FOUND, message="no such show")
    cuebot.reply("/job.JobInterface/GetJob",
                 job_pb2.JobGetJobResponse(job=job_pb2.Job(id="j1", name="a-job")))
    gw = await make_gateway()
    assert (await gw.post(GET_SHOWS, data=b"{}")).status == 200
    assert (await gw.post(GET_SHOWS, data=b"{}")).status == 200
    assert (await gw.post(FIND_SHOW, data=b'{"name": "x"}')).status == 404
    assert (await gw.post(GET_FRAME, data=b"{}")).status == 200
    assert (await gw.post("/frame.FrameInterface/GetFrame", data=b"{}")).status == 200  # alias
    assert (await gw.get("/api/job/j1")).status == 200
    assert (await gw.get("/api/job/j2")).status == 200
    assert (await gw.post("/no.Such/Method-7f3a")).status == 404
    assert (await gw.get("/garbage/7f3a/xyz")).status == 404
    assert (await gw.get("/api/nothing-7f3a")).status == 404
    assert (await gw.post("/api/show")).status == 405
    assert (await gw.get(GET_SHOWS)).status == 405

    found = await scrape(gw)
    assert value(found, REQ, route=GET_SHOWS, method="POST", status="200", grpc_code="OK") == 2
    assert value(found, REQ, route=FIND_SHOW, status="404", grpc_code="NOT_FOUND") == 1
    assert value(found, REQ, route=GET_FRAME, method="POST", status="200") == 2
    assert value(found, REQ, route="/api/job/{job_id}", method="GET", status="200",
                 grpc_code="OK") == 2
    assert value(found, REQ, route=UNMATCHED, status="404", grpc_code="NOT_FOUND") == 3
    assert value(found, REQ, route=UNMATCHED, status="405", grpc_code="UNIMPLEMENTED") == 1
    assert value(found, REQ, route=GET_SHOWS, method="GET", status="405") == 1
    routes = label_values(found, "route")
    assert not any("7f3a" in r or "frame.Frame" in r for r in routes), routes
    assert routes == {GET_SHOWS, FIND_SHOW, GET_FRAME, "/api/job/{job_id}", UNMATCHED,
                      "/job.JobInterface/GetJob"}  # the last: the /api operation's call

    # one Cuebot call per RPC request, and the /api operation's own
    backend = "opencue_gateway_backend_duration_seconds_count"
    assert value(found, backend, route=GET_SHOWS, grpc_code="OK") == 2
    assert value(found, backend, route=FIND_SHOW, grpc_code="NOT_FOUND") == 1
    assert value(found, backend, route="/job.JobInterface/GetJob", grpc_code="OK") == 2
    assert value(found, backend, route=UNMATCHED) == 0
    assert value(found, "opencue_gateway_request_duration_seconds_count", route=GET_SHOWS) == 3


async def test_latency_histograms_measure_the_backend_and_the_request(
        make_gateway: Any, cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, _shows(1), delay=0.3)
    gw = await make_gateway()
    assert (await gw.post(GET_SHOWS)).status == 200
    found = await scrape(gw)
    backend = "opencue_gateway_backend_duration_seconds"
    whole = "opencue_gateway_request_duration_seconds"
    b_sum = value(found, f"{backend}_sum", route=GET_SHOWS)
    w_sum = value(found, f"{whole}_sum", route=GET_SHOWS)
    assert 0.3 <= b_sum < 2.0
    assert b_sum <= w_sum < b_sum + 1.0
    for name in (backend, whole):
        assert value(found, f"{name}_bucket", route=GET_SHOWS, le="0.25") == 0
        assert value(found, f"{name}_bucket", route=GET_SHOWS, le="+Inf") == 1


async def test_request_and_response_bytes(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, _shows(2))  # a reply well below GZIP_MIN_BYTES: sent as it is
    gw = await make_gateway()
    bodies = [b"{}", b'{"unknown": "ignored", "x": 1}']
    received = 0
    for body in bodies:
        resp = await gw.post(GET_SHOWS, data=body)
        received += len(await resp.read())
    found = await scrape(gw)
    assert value(found, "opencue_gateway_request_size_bytes_sum", route=GET_SHOWS) \
        == sum(map(len, bodies))
    assert value(found, "opencue_gateway_response_size_bytes_sum", route=GET_SHOWS) == received
    assert value(found, "opencue_gateway_response_size_bytes_count", route=GET_SHOWS) == 2
    assert value(found, "opencue_gateway_request_size_bytes_bucket", route=GET_SHOWS,
                 le="64.0") == 2


async def test_in_flight_counts_requests_being_served(make_gateway: Any,
                                                      cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, delay=1.0)
    gw = await make_gateway()
    slow = asyncio.ensure_future(gw.post(GET_SHOWS))
    for _ in range(100):
        if cuebot.calls:
            break
        await asyncio.sleep(0.02)
    during = await scrape(gw)
    assert value(during, "opencue_gateway_requests_in_flight") == 2  # the slow one + this scrape
    assert (await slow).status == 200
    after = await scrape(gw)
    assert value(after, "opencue_gateway_requests_in_flight") == 1


# ---------------------------------------------------------------------------
# the endpoint itself
# ---------------------------------------------------------------------------
async def test_metrics_is_open_unlimited_and_prometheus_text(make_gateway: Any) -> None:
    gw = await make_gateway(authorized=False, rate_limit_rps=1, rate_limit_burst=1)
    for _ in range(5):
        resp = await gw.get("/metrics")
        assert resp.status == 200
        assert "X-RateLimit-Limit" not in resp.headers
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    text = await resp.text()
    found = samples(text)
    assert value(found, REQ, route="/metrics", method="GET", status="200") == 4  # this one: not yet
    assert "# TYPE opencue_gateway_requests_total counter" in text

    resp = await gw.get("/metrics", headers={
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).endswith("# EOF\n")


async def test_each_app_has_its_own_registry(make_gateway: Any) -> None:
    a = await make_gateway()
    b = await make_gateway()
    for _ in range(3):
        await a.post("/no.Such/Method")
    assert value(await scrape(a), REQ, route=UNMATCHED) == 3
    assert value(await scrape(b), REQ, route=UNMATCHED) == 0


# ---------------------------------------------------------------------------
# refusals: credentials and rate limits
# ---------------------------------------------------------------------------
async def test_auth_failures_by_reason(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False)
    tries = [
        (None, 401, "missing"),
        ("Basic dXNlcjpwdw==", 401, "scheme"),
        ("Bearer not-a-jwt", 401, "malformed"),
        (f"Bearer {token(secret='another-secret-0123456789abcdef0123')}", 403, "signature"),
        (f"Bearer {token(lifetime=-3600)}", 403, "expired"),
        (f"Bearer {token(lifetime=-3600)}", 403, "expired"),
        (f"Bearer {token()}", 200, None),
    ]
    for header, status, _ in tries:
        resp = await gw.post(GET_SHOWS, headers={"Authorization": header} if header else None)
        assert resp.status == status
    found = await scrape(gw)
    name = "opencue_gateway_auth_failures_total"
    assert {s.labels["reason"]: s.value for s in found if s.name == name} == \
        {"missing": 1, "scheme": 1, "malformed": 1, "signature": 1, "expired": 2}
    assert value(found, REQ, route=GET_SHOWS, status="401", grpc_code="UNAUTHENTICATED") == 3
    assert value(found, REQ, route=GET_SHOWS, status="403", grpc_code="PERMISSION_DENIED") == 3
    assert len(cuebot.calls) == 1


async def test_rate_limit_rejections_by_reason(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(rate_limit_rps=1, rate_limit_burst=2)
    statuses = [(await gw.post(GET_SHOWS)).status for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    found = await scrape(gw)
    name = "opencue_gateway_rate_limit_rejections_total"
    assert value(found, name, reason="limit") == 3
    assert value(found, name, reason="redis_closed") == 0  # present, at zero
    assert any(s.name == name and s.labels == {"reason": "redis_closed"} for s in found)
    assert value(found, REQ, route=GET_SHOWS, status="429", grpc_code="RESOURCE_EXHAUSTED") == 3


async def test_redis_down_closed_and_open_are_counted(make_gateway: Any,
                                                      cuebot: RecordingCuebot) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    closed = await make_gateway(rate_limit_rps=5, rate_limit_redis_url=dead,
                                rate_limit_fail="closed")
    assert (await closed.post(GET_SHOWS)).status == 503
    found = await scrape(closed)
    assert value(found, "opencue_gateway_rate_limit_rejections_total", reason="redis_closed") == 1
    assert value(found, "opencue_gateway_rate_limit_redis_failures_total") == 1
    assert value(found, REQ, route=GET_SHOWS, status="503", grpc_code="UNAVAILABLE") == 1

    opened = await make_gateway(rate_limit_rps=5, rate_limit_redis_url=dead)
    for _ in range(3):
        assert (await opened.post(GET_SHOWS)).status == 200
    limiter = opened.app[STATE].limiter
    failures = value(await scrape(opened), "opencue_gateway_rate_limit_redis_failures_total")
    assert failures == limiter.redis_failures >= 1


# ---------------------------------------------------------------------------
# descriptors and reloads (the hooks the reload work calls)
# ---------------------------------------------------------------------------
async def test_descriptor_info_and_reload_hooks(make_gateway: Any) -> None:
    gw = await make_gateway()
    state = gw.app[STATE]
    table = state.table
    found = await scrape(gw)
    info = [s for s in found if s.name == "opencue_gateway_descriptors_info"]
    assert [(s.labels, s.value) for s in info] == [
        ({"version": table.version, "source": table.descriptors.source}, 1.0)]
    assert value(found, "opencue_gateway_descriptor_services") == len(table.services) > 10
    assert value(found, "opencue_gateway_descriptor_methods") == len(table.routes) > 100
    reloads = "opencue_gateway_descriptor_reloads_total"
    assert {s.labels["outcome"]: s.value for s in found if s.name == reloads} == \
        {"ok": 0, "failed": 0, "unchanged": 0}

    state.metrics.record_reload("ok")
    state.metrics.record_reload("unchanged")
    state.metrics.record_reload("unchanged")
    state.metrics.set_descriptors("v2", "reflection from cuebot:8443", 3, 17)
    with pytest.raises(ValueError, match="ok, failed, unchanged"):
        state.metrics.record_reload("maybe")
    found = await scrape(gw)
    info = [s for s in found if s.name == "opencue_gateway_descriptors_info"]
    assert [(s.labels, s.value) for s in info] == [
        ({"version": "v2", "source": "reflection from cuebot:8443"}, 1.0)]
    assert value(found, "opencue_gateway_descriptor_services") == 3
    assert value(found, "opencue_gateway_descriptor_methods") == 17
    assert {s.labels["outcome"]: s.value for s in found if s.name == reloads} == \
        {"ok": 1, "failed": 0, "unchanged": 2}


def test_multiprocess_dir_must_be_the_environment_s() -> None:
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir="/nonexistent/for-this-test")


def test_a_bad_multiprocess_dir_stops_start_up(tmp_path: Path) -> None:
    from support import run_gateway

    missing = tmp_path / "not-there"
    proc = run_gateway("--port", "0", env={"PROMETHEUS_MULTIPROC_DIR": str(missing)})
    assert proc.returncode == 1
    assert f"PROMETHEUS_MULTIPROC_DIR {missing}: not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------
# workers: several processes, one PROMETHEUS_MULTIPROC_DIR, one sum
# ---------------------------------------------------------------------------
# A worker that imported prometheus_client before its supervisor set the
# variable (a fork after import): its counts must still reach the files.
LATE_WORKER = r"""
import os, sys
import gateway.metrics as m
import prometheus_client.values as v
assert not v.ValueClass._multiprocess, "the variable was meant to come late"
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
metrics = m.Metrics.for_process()
for _ in range(4):
    metrics.observe_request("/show.ShowInterface/GetShows", "POST", 200, "OK", 0.01, 2, 10)
metrics.set_descriptors("old-version", "late worker", 1, 1)
metrics.set_descriptors("new-version", "late worker", 1, 1)
metrics.record_reload("ok")
"""


async def _get_json(session: aiohttp.ClientSession, url: str) -> int:
    async with session.post(url, data=b"{}", headers=auth_headers()) as resp:
        await resp.read()
        return resp.status


async def _scrape_url(session: aiohttp.ClientSession, base: str) -> list[Any]:
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        return samples(await resp.text())


async def test_workers_metrics_are_summed_over_processes(tmp_path: Path,
                                                         cuebot: RecordingCuebot) -> None:
    mpdir = tmp_path / "prom"
    mpdir.mkdir()
    cuebot.reply(GET_SHOWS, _shows(2))
    cuebot.reply("/show.ShowInterface/GetActiveShows", delay=30)  # held in flight
    env = {"CUEBOT_ENDPOINT": cuebot.endpoint, "PROMETHEUS_MULTIPROC_DIR": str(mpdir),
           "RATE_LIMIT_RPS": "0"}
    a, b = GatewayProcess(env=env), GatewayProcess(env=env)
    late = subprocess.run([sys.executable, "-c", LATE_WORKER, str(mpdir)], cwd=ROOT,
                          env={k: v for k, v in {**os.environ, "PYTHONPATH": str(ROOT)}.items()
                               if k != "PROMETHEUS_MULTIPROC_DIR"},
                          capture_output=True, text=True, timeout=60)
    assert late.returncode == 0, late.stderr
    try:
        for gw in (a, b):
            await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as session:
            assert [await _get_json(session, a.url + GET_SHOWS) for _ in range(3)] == [200] * 3
            assert [await _get_json(session, b.url + GET_SHOWS) for _ in range(2)] == [200] * 2
            stuck = asyncio.ensure_future(
                _get_json(session, b.url + "/show.ShowInterface/GetActiveShows"))
            for _ in range(200):
                if "/show.ShowInterface/GetActiveShows" in cuebot.paths():
                    break
                await asyncio.sleep(0.02)

            found = await _scrape_url(session, a.url)
            assert value(found, REQ, route=GET_SHOWS, status="200", grpc_code="OK") == 3 + 2 + 4
            assert value(found, "opencue_gateway_backend_duration_seconds_count",
                         route=GET_SHOWS) == 5
            assert value(found, "opencue_gateway_requests_in_flight") == 2  # b's + this scrape
            versions = {s.labels["version"] for s in found
                        if s.name == "opencue_gateway_descriptors_info"}
            assert len(versions) == 2 and "new-version" in versions  # "old-version" replaced
            assert value(found, "opencue_gateway_descriptor_reloads_total", outcome="ok") == 1
            same = await _scrape_url(session, b.url)
            assert value(same, REQ, route=GET_SHOWS) == 9
            # b counts its scrape out just after sending it: wait for that
            # before killing b, or b's file keeps it in flight for good
            for _ in range(200):
                found = await _scrape_url(session, a.url)
                if value(found, "opencue_gateway_requests_in_flight") == 2:
                    break
                await asyncio.sleep(0.01)

            # b dies with a request in flight; the supervisor marks it dead
            b.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(b.proc.wait, 10)
            stuck.cancel()
            with contextlib.suppress(BaseException):
                await stuck
            found = await _scrape_url(session, a.url)
            assert value(found, "opencue_gateway_requests_in_flight") == 2  # stale until marked
            multiprocess.mark_process_dead(b.proc.pid, str(mpdir))
            found = await _scrape_url(session, a.url)
            assert value(found, "opencue_gateway_requests_in_flight") == 1
            assert value(found, REQ, route=GET_SHOWS, status="200") == 9  # b's counts stay
    finally:
        for gw in (a, b):
            await asyncio.to_thread(gw.stop)


async def test_without_the_variable_a_process_counts_alone(cuebot: RecordingCuebot) -> None:
    env = {"CUEBOT_ENDPOINT": cuebot.endpoint, "PROMETHEUS_MULTIPROC_DIR": None}
    a, b = GatewayProcess(env=env), GatewayProcess(env=env)
    try:
        for gw in (a, b):
            await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as session:
            await _get_json(session, a.url + GET_SHOWS)
            assert value(await _scrape_url(session, a.url), REQ, route=GET_SHOWS) == 1
            assert value(await _scrape_url(session, b.url), REQ, route=GET_SHOWS) == 0
    finally:
        for gw in (a, b):
            await asyncio.to_thread(gw.stop)


async def test_every_route_of_its_own_is_its_label(make_gateway: Any,
                                                   cuebot: RecordingCuebot) -> None:
    gw = await make_gateway()
    await gw.get("/healthz")
    await gw.get("/readyz")
    await gw.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    await gw.get("/openapi.json")
    await gw.get("/api/show/")          # a near miss the /api catch-all serves
    status, _, _ = await raw_request(gw.port, "GET", "//api/nothing-7f3a")
    assert status == 404
    found = await scrape(gw)
    assert {s.labels["route"] for s in found if s.name == REQ} == {
        "/healthz", "/readyz", "/admin/reload", "/openapi.json", UNMATCHED}
    assert value(found, REQ, route="/admin/reload", status="401") == 1
    assert value(found, REQ, route=UNMATCHED) == 2


def test_tally_exposes_what_prometheus_client_objects_would() -> None:
    """The one-process counting (tally.Tally) renders exactly the client library's series."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    from gateway.metrics import HTTP_METHODS, LATENCY_BUCKETS, SIZE_BUCKETS
    from gateway.tally import Tally

    help_ = {k: f"help of {k}" for k in ("requests", "request_seconds", "backend_seconds",
                                         "request_bytes", "response_bytes", "in_flight")}
    tally_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    tally = Tally("t", LATENCY_BUCKETS, SIZE_BUCKETS, help_, HTTP_METHODS)
    tally_reg.register(tally)
    requests = Counter("t_requests", help_["requests"], ("route", "method", "status",
                                                          "grpc_code"), registry=ref_reg)
    seconds = Histogram("t_request_duration_seconds", help_["request_seconds"], ("route",),
                        buckets=LATENCY_BUCKETS, registry=ref_reg)
    backend = Histogram("t_backend_duration_seconds", help_["backend_seconds"],
                        ("route", "grpc_code"), buckets=LATENCY_BUCKETS, registry=ref_reg)
    size_in = Histogram("t_request_size_bytes", help_["request_bytes"], ("route",),
                        buckets=SIZE_BUCKETS, registry=ref_reg)
    size_out = Histogram("t_response_size_bytes", help_["response_bytes"], ("route",),
                         buckets=SIZE_BUCKETS, registry=ref_reg)
    in_flight = Gauge("t_requests_in_flight", help_["in_flight"], registry=ref_reg)
    cases = [("/a", "POST", 200, "OK", 0.0004, 2, 64), ("/a", "POST", 200, "OK", 0.001, 64, 65),
             ("/a", "BREW", 404, "NOT_FOUND", 0.07, 0, 1 << 30), ("/b", "GET", 200, "OK", 99.0,
                                                                  1 << 31, 0),
             ("/a", "POST", 200, "OK", 2.5, 1000, 4096)]
    for route, method, status, code, s, i, o in cases:
        tally.observe_request(route, method, status, code, s, i, o)
        tally.observe_backend(route, code, s / 2)
        requests.labels(route, method if method in HTTP_METHODS else "other", str(status),
                        code).inc()
        seconds.labels(route).observe(s)
        size_in.labels(route).observe(i)
        size_out.labels(route).observe(o)
        backend.labels(route, code).observe(s / 2)
    tally.in_flight.inc(), tally.in_flight.inc(), tally.in_flight.dec()
    in_flight.inc(), in_flight.inc(), in_flight.dec()

    def lines(reg: CollectorRegistry) -> list[str]:
        return sorted(ln for ln in generate_latest(reg).decode().splitlines()
                      if "_created" not in ln)

    assert lines(tally_reg) == lines(ref_reg)
