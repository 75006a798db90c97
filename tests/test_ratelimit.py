"""Token-bucket limits: through a real gateway, in one process and across two on Redis.

Accuracy is measured as an admitted rate over a few seconds of saturating
load, (admitted - burst) / elapsed, which must be within 10 % of the
configured rate. The shared-limit tests run a real ``redis-server`` on a
free loopback port; without the binary they are skipped, unless
``REQUIRE_REDIS=1`` (CI) makes that a failure.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.ratelimit import LocalBuckets, RateLimiter, client_address, parse_networks
from support import GatewayProcess, RecordingCuebot, auth_headers, free_port

GET_SHOWS = "/show.ShowInterface/GetShows"


# ---------------------------------------------------------------------------
# through the gateway
# ---------------------------------------------------------------------------
async def test_burst_then_429_with_retry_after(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(rate_limit_rps=2, rate_limit_burst=3)
    statuses = []
    for _ in range(5):
        resp = await gw.post(GET_SHOWS)
        statuses.append(resp.status)
        last = resp, await resp.json()
    assert statuses == [200, 200, 200, 429, 429]
    resp, body = last
    assert body["code"] == 8 and set(body) == {"error", "code", "message", "details"}
    assert "rate limit" in body["message"]
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    assert len(cuebot.calls) == 3  # refused requests never reach Cuebot


async def test_headers_on_every_reply(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(rate_limit_rps=100)
    replies = [
        await gw.post(GET_SHOWS),                               # 200
        await gw.post(GET_SHOWS, data=b"{not json"),            # 400
        await gw.post("/no.Such/Method"),                       # 404
        await gw.get(GET_SHOWS),                                # 405
        await gw.get("/api/nothing-here"),                      # 404 under /api
        await gw.post(GET_SHOWS, headers={"Authorization": "Bearer nope"}),   # 401
    ]
    assert [r.status for r in replies] == [200, 400, 404, 405, 404, 401]
    remaining = []
    for r in replies:
        assert r.headers["X-RateLimit-Limit"] == "100"
        remaining.append(int(r.headers["X-RateLimit-Remaining"]))
        reset = int(r.headers["X-RateLimit-Reset"])
        assert time.time() - 1 <= reset <= time.time() + 2
    # the five token holders spend one bucket; the bad token spends its address's
    assert remaining[:5] == sorted(remaining[:5], reverse=True) and remaining[4] < 100
    assert remaining[5] == 99


async def test_open_paths_are_not_limited(make_gateway: Any) -> None:
    gw = await make_gateway(rate_limit_rps=1, rate_limit_burst=1)
    for _ in range(3):
        resp = await gw.get("/openapi.json")
        assert resp.status == 200 and "X-RateLimit-Limit" not in resp.headers


async def test_clients_have_their_own_buckets(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False, rate_limit_rps=1, rate_limit_burst=2)
    alice, bob = auth_headers("alice"), auth_headers("bob")
    assert [(await gw.post(GET_SHOWS, headers=alice)).status for _ in range(3)] == [200, 200, 429]
    assert [(await gw.post(GET_SHOWS, headers=bob)).status for _ in range(3)] == [200, 200, 429]


async def test_key_can_combine_subject_and_address(make_gateway: Any) -> None:
    """CueWeb signs every user with sub "user-id": keying on sub+address separates hosts."""
    gw = await make_gateway(authorized=False, rate_limit_rps=1, rate_limit_burst=1,
                            rate_limit_key="sub+address", trusted_proxies=("127.0.0.1/32",))
    cueweb = auth_headers("user-id")
    one = {**cueweb, "X-Forwarded-For": "10.0.0.1"}
    two = {**cueweb, "X-Forwarded-For": "10.0.0.2"}
    assert (await gw.post(GET_SHOWS, headers=one)).status == 200
    assert (await gw.post(GET_SHOWS, headers=one)).status == 429
    assert (await gw.post(GET_SHOWS, headers=two)).status == 200


async def test_refused_tokens_spend_the_address_bucket(make_gateway: Any,
                                                       cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False, rate_limit_rps=1, rate_limit_burst=3)
    bad = {"Authorization": "Bearer guess"}
    assert [(await gw.post(GET_SHOWS, headers=bad)).status for _ in range(4)] == \
        [401, 401, 401, 429]
    assert cuebot.calls == []


async def test_method_costs(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(rate_limit_rps=1, rate_limit_burst=5,
                            rate_limit_costs=(("job.JobInterface/GetJobs", 4.0),))
    assert (await gw.post("/job.JobInterface/GetJobs")).status == 200   # 5 -> 1
    assert (await gw.post("/job.JobInterface/GetJobs")).status == 429   # needs 4
    assert (await gw.post(GET_SHOWS)).status == 200                     # 1 -> 0
    # the documented spelling of a service costs what the real one does
    gw2 = await make_gateway(rate_limit_rps=1, rate_limit_burst=4,
                             rate_limit_costs=(("job.FrameInterface/*", 4.0),))
    assert (await gw2.post("/frame.FrameInterface/GetFrame")).status == 200
    assert (await gw2.post("/job.FrameInterface/GetFrame")).status == 429


async def _hammer(urls: list[str], seconds: float, headers: dict[str, str],
                  workers: int = 8) -> tuple[int, int, float]:
    """Saturating load for ``seconds``: (admitted, refused, elapsed).

    Each gateway first serves one request of another client (its first call connects to
    Redis and Cuebot): a cold start on a busy machine would otherwise stall the first
    fraction of a second, while the bucket, already full, lets its refill go to waste.
    That request reaches Cuebot too: ``len(urls)`` calls more than ``admitted``.

    A refused worker waits 5 ms before it asks again: the load still saturates the limit
    (hundreds of asks a second against tens of tokens), without starving the gateway of the
    CPU it shares with this client on a busy machine. The callers give the bucket a burst of
    a whole second's refill, so a scheduling stall shorter than that wastes no refill either.
    """
    counts = {200: 0, 429: 0}
    async with aiohttp.ClientSession() as warm:
        for url in urls:
            async with warm.post(url, data=b"{}", headers=auth_headers("warm-up")) as resp:
                assert resp.status == 200, await resp.text()
    async with aiohttp.ClientSession(headers=headers) as http:
        start = time.monotonic()
        deadline = start + seconds

        async def worker(i: int) -> None:
            n = i
            while time.monotonic() < deadline:
                async with http.post(urls[n % len(urls)], data=b"{}") as resp:
                    await resp.read()
                    counts[resp.status] = counts.get(resp.status, 0) + 1
                if resp.status == 429:
                    await asyncio.sleep(0.005)
                n += 1

        await asyncio.gather(*(worker(i) for i in range(workers)))
        elapsed = time.monotonic() - start
    assert set(counts) == {200, 429}, counts
    return counts[200], counts[429], elapsed


def _assert_rate(admitted: int, refused: int, elapsed: float, rps: float, burst: float) -> None:
    rate = (admitted - burst) / elapsed
    assert refused > admitted, "the load did not saturate the limit"
    assert abs(rate - rps) <= 0.1 * rps, (admitted, refused, elapsed, rate)


async def test_admitted_rate_single_process(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    rps, burst = 40.0, 40.0
    # coalescing off: concurrent identical reads would share calls, and Cuebot's count of
    # calls is what shows that every admitted request, and no refused one, reached it
    gw: TestClient = await make_gateway(rate_limit_rps=rps, rate_limit_burst=burst,
                                        coalesce_reads=False)
    url = str(gw.make_url(GET_SHOWS))
    admitted, refused, elapsed = await _hammer([url], 3.0, auth_headers())
    _assert_rate(admitted, refused, elapsed, rps, burst)
    assert len(cuebot.calls) == admitted + 1  # and the warm-up


# ---------------------------------------------------------------------------
# the bucket store itself
# ---------------------------------------------------------------------------
async def test_local_bucket_refills_at_the_rate() -> None:
    buckets = LocalBuckets(rate=10, burst=2)
    assert [(buckets.take("c", 1)).allowed for _ in range(3)] == [True, True, False]
    refused = buckets.take("c", 1)
    assert 0 < refused.retry_after <= 0.1
    await asyncio.sleep(0.12)
    ok = buckets.take("c", 1)
    assert ok.allowed and ok.remaining < 1


async def test_idle_buckets_are_evicted() -> None:
    buckets = LocalBuckets(rate=100, burst=1)      # full again after 10 ms
    for i in range(1000):
        buckets.take(f"client-{i}", 1)
    await asyncio.sleep(0.05)
    buckets.take("newcomer", 1)
    assert len(buckets) == 1


async def test_busy_clients_are_capped() -> None:
    buckets = LocalBuckets(rate=0.001, burst=1, max_clients=50)   # never idle
    for i in range(10_000):
        buckets.take(f"client-{i}", 1)
    assert len(buckets) <= 50


def test_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = parse_networks(["10.0.0.0/8", "::1"])
    assert client_address("203.0.113.9", "1.2.3.4", trusted) == "203.0.113.9"  # untrusted peer
    assert client_address("10.1.1.1", "1.2.3.4", trusted) == "1.2.3.4"
    assert client_address("10.1.1.1", "1.2.3.4, 10.2.2.2", trusted) == "1.2.3.4"
    assert client_address("10.1.1.1", "6.6.6.6, 1.2.3.4", trusted) == "1.2.3.4"  # spoofed head
    assert client_address("10.1.1.1", "garbage", trusted) == "10.1.1.1"
    assert client_address("10.1.1.1", "10.3.3.3", trusted) == "10.3.3.3"
    assert client_address("::1", "2001:db8::1", trusted) == "2001:db8::1"
    assert client_address("10.1.1.1", None, trusted) == "10.1.1.1"
    assert client_address("10.1.1.1", "1.2.3.4", ()) == "10.1.1.1"


# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("REQUIRE_REDIS"):
            pytest.fail("redis-server is required (REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server not installed (Debian: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    import socket

                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


async def test_redis_bucket_is_shared_and_atomic(redis_url: str) -> None:
    a = RateLimiter(rate=1, burst=10, redis_url=redis_url)
    b = RateLimiter(rate=1, burst=10, redis_url=redis_url)
    try:
        decisions = await asyncio.gather(*(lim.check("shared-client") for lim in [a, b] * 10))
        assert sum(d.allowed for d in decisions) == 10
        assert a.redis_failures == b.redis_failures == 0
        assert (await a.check("other-client")).allowed
    finally:
        await a.close()
        await b.close()


async def test_redis_keys_expire_when_idle(redis_url: str) -> None:
    import redis.asyncio as aioredis

    lim = RateLimiter(rate=100, burst=1, redis_url=redis_url)
    client = aioredis.from_url(redis_url)
    try:
        await lim.check("short-lived")
        key = lim.redis.key("short-lived")
        ttl = await client.pttl(key)
        assert 0 < ttl <= 1100
    finally:
        await client.aclose()
        await lim.close()


async def test_two_gateway_processes_share_the_limit(redis_url: str,
                                                     cuebot: RecordingCuebot) -> None:
    rps, burst = 30.0, 30.0
    env = {"CUEBOT_ENDPOINT": cuebot.endpoint, "RATE_LIMIT_RPS": str(rps),
           "RATE_LIMIT_BURST": str(burst), "RATE_LIMIT_REDIS_URL": redis_url,
           "COALESCE_READS": "false"}  # one call per admitted request, as counted below
    gws = [GatewayProcess(env=env), GatewayProcess(env=env)]
    try:
        for gw in gws:
            await asyncio.to_thread(gw.wait_ready)
        urls = [f"{gw.url}{GET_SHOWS}" for gw in gws]
        admitted, refused, elapsed = await _hammer(urls, 3.0, auth_headers("shared"))
    finally:
        for gw in gws:
            await asyncio.to_thread(gw.stop)
    _assert_rate(admitted, refused, elapsed, rps, burst)
    assert len(cuebot.calls) == admitted + len(gws)  # and the warm-ups
    assert all("shared in Redis" in gw.output for gw in gws)
    assert not any("pw" in gw.output or redis_url in gw.output for gw in gws)


async def test_unreachable_redis_fails_open_with_own_buckets(
        make_gateway: Any, cuebot: RecordingCuebot, caplog: pytest.LogCaptureFixture) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    gw = await make_gateway(rate_limit_rps=2, rate_limit_burst=2, rate_limit_redis_url=dead)
    statuses = [(await gw.post(GET_SHOWS)).status for _ in range(3)]
    assert statuses == [200, 200, 429]  # still limited, by this process's buckets
    from gateway.app import STATE

    assert gw.app[STATE].limiter.redis_failures >= 1
    assert any("Redis unreachable" in r.getMessage() for r in caplog.records)


async def test_unreachable_redis_fails_closed_when_asked(make_gateway: Any,
                                                         cuebot: RecordingCuebot) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    gw = await make_gateway(rate_limit_rps=2, rate_limit_redis_url=dead, rate_limit_fail="closed")
    resp = await gw.post(GET_SHOWS)
    assert resp.status == 503
    body = await resp.json()
    assert body["code"] == 14 and "RATE_LIMIT_FAIL=closed" in body["message"]
    assert cuebot.calls == []


async def test_redis_outage_does_not_stall_requests(make_gateway: Any,
                                                    cuebot: RecordingCuebot) -> None:
    """A black-holed Redis costs one short timeout, then is skipped for a while."""
    import socket

    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(0)  # accepts the TCP handshake, never answers
    try:
        url = f"redis://127.0.0.1:{sink.getsockname()[1]}/0"
        gw = await make_gateway(rate_limit_rps=1000, rate_limit_redis_url=url)
        start = time.monotonic()
        for _ in range(20):
            assert (await gw.post(GET_SHOWS)).status == 200
        assert time.monotonic() - start < 3.0
    finally:
        sink.close()


async def test_workers_share_the_limit_through_redis(redis_url: str,
                                                     cuebot: RecordingCuebot) -> None:
    rps, burst = 30.0, 30.0
    gw = GatewayProcess("--workers", "2", env={
        "CUEBOT_ENDPOINT": cuebot.endpoint, "RATE_LIMIT_RPS": str(rps),
        "RATE_LIMIT_BURST": str(burst), "RATE_LIMIT_REDIS_URL": redis_url})
    try:
        deadline = time.monotonic() + 60
        while "with 2 workers" not in gw.output:
            assert gw.proc.poll() is None and time.monotonic() < deadline, gw.output
            await asyncio.sleep(0.05)
        admitted, refused, elapsed = await _hammer([f"{gw.url}{GET_SHOWS}"], 3.0,
                                                   auth_headers("workers"), workers=16)
    finally:
        await asyncio.to_thread(gw.stop)
    _assert_rate(admitted, refused, elapsed, rps, burst)
    assert "rate limits are per worker" not in gw.output
