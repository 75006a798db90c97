"""Protecting Cuebot: coalesced reads, the micro-cache, the cap on calls, the circuit breaker.

Every test runs a gateway over real loopback sockets in front of a real gRPC
server (``RecordingCuebot``) that counts the calls it gets, can hold them
until the test lets go (``hold``), answer slowly or refuse. Nothing in
``protect.py`` and its parts is replaced. Where a test waits, it waits for
an observable event (a call reaching Cuebot, a counter in ``/metrics``), not
for a time.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import grpc
import orjson
import pytest
from aiohttp.test_utils import TestClient
from opencue_proto import job_pb2, show_pb2

from gateway.admission import Admission
from gateway.errors import GatewayError
from gateway.protect import Reads
from gateway.readcache import ReadCache
from scrape import scrape, value
from support import Reply, RecordingCuebot, auth_headers

GET_JOBS = "/job.JobInterface/GetJobs"
GET_SHOWS = "/show.ShowInterface/GetShows"
KILL = "/job.JobInterface/Kill"
SET_ACTIVE = "/show.ShowInterface/SetActive"
JOBS_BODY = b'{"r":{"shows":["testing"],"includeFinished":true}}'
COALESCED = "opencue_gateway_coalesced_requests_total"

GatewayFactory = Callable[..., Awaitable[TestClient]]


def jobs_reply(*names: str) -> bytes:
    return job_pb2.JobGetJobsResponse(jobs=job_pb2.JobSeq(
        jobs=[job_pb2.Job(id=f"id-{n}", name=n) for n in names])).SerializeToString()


def envelope(body: bytes) -> dict[str, Any]:
    data = orjson.loads(body)
    assert list(data) == ["error", "code", "message", "details"], data
    return data


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for ``cond`` (an observable event), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def until_metric(gw: TestClient, name: str, at_least: float, **labels: str) -> None:
    deadline = time.monotonic() + 10
    while value(await scrape(gw), name, **labels) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} never reached {at_least}")
        await asyncio.sleep(0.01)


async def post(gw: TestClient, path: str, body: bytes = b"{}",
               **headers: str) -> tuple[int, Any, bytes]:
    """Status, headers (case-insensitive) and body of one POST."""
    resp = await gw.post(path, data=body, headers=headers)
    return resp.status, resp.headers, await resp.read()


# ---------------------------------------------------------------------------
# coalescing
# ---------------------------------------------------------------------------
async def test_identical_reads_in_flight_share_one_call(gateway: TestClient,
                                                        cuebot: RecordingCuebot) -> None:
    """20 identical GetJobs while one is at Cuebot: one call, 20 identical replies.

    The bodies spell the same request differently (key order, snake_case):
    the key is the message's bytes after our decoding, not the JSON text.
    Each request keeps its own id.
    """
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a", "b"), hold=hold)
    spellings = [JOBS_BODY, b'{"r":{"include_finished":true,"shows":["testing"]}}',
                 b'{ "r" : { "includeFinished" : true , "shows" : [ "testing" ] } }']
    first = asyncio.ensure_future(post(gateway, GET_JOBS, JOBS_BODY, **{"X-Request-Id": "r0"}))
    await until(lambda: cuebot.count(GET_JOBS) == 1, "the first call at Cuebot")
    rest = [asyncio.ensure_future(post(gateway, GET_JOBS, spellings[i % 3],
                                       **{"X-Request-Id": f"r{i}"})) for i in range(1, 20)]
    await until_metric(gateway, COALESCED, 19, route=GET_JOBS)
    hold.set()
    answers = await asyncio.gather(first, *rest)
    assert cuebot.count(GET_JOBS) == 1
    assert {status for status, _, _ in answers} == {200}
    bodies = {body for _, _, body in answers}
    assert len(bodies) == 1
    assert [j["name"] for j in orjson.loads(bodies.pop())["jobs"]["jobs"]] == ["a", "b"]
    assert [h["X-Request-Id"] for _, h, _ in answers] == [f"r{i}" for i in range(20)]
    assert cuebot.calls[0].metadata["x-request-id"] == "r0"


async def test_reads_differing_in_message_or_metadata_are_not_shared(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    """Another message or another Grpc-Metadata-* header is another question.

    The request id and the caller's name only label a call: two callers
    asking the same thing share it.
    """
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a"), hold=hold)
    gw = await make_gateway(authorized=False)
    alice, bob = auth_headers("alice"), auth_headers("bob")
    sends = [
        post(gw, GET_JOBS, JOBS_BODY, **alice),
        post(gw, GET_JOBS, JOBS_BODY, **bob, **{"X-Request-Id": "other-id"}),   # shared
        post(gw, GET_JOBS, b'{"r":{"shows":["other"]}}', **alice),              # own call
        post(gw, GET_JOBS, JOBS_BODY, **alice, **{"Grpc-Metadata-Studio": "spi"}),  # own
        post(gw, GET_JOBS, JOBS_BODY, **alice, **{"Grpc-Metadata-Studio": "abc"}),  # own
    ]
    tasks = []
    for send in sends:
        tasks.append(asyncio.ensure_future(send))
        await asyncio.sleep(0)  # in order, so that the first call is the one shared
    await until(lambda: cuebot.count(GET_JOBS) == 4, "four calls at Cuebot")
    await until_metric(gw, COALESCED, 1, route=GET_JOBS)
    hold.set()
    assert [a[0] for a in await asyncio.gather(*tasks)] == [200] * 5
    assert cuebot.count(GET_JOBS) == 4
    users = sorted(c.metadata["x-opencue-user"] for c in cuebot.calls)
    assert users == ["alice"] * 4  # bob's read rode on alice's call


async def test_writes_are_never_shared(gateway: TestClient, cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    cuebot.reply(KILL, hold=hold)
    body = b'{"job":{"id":"j1"},"username":"u","reason":"r"}'
    tasks = [asyncio.ensure_future(post(gateway, KILL, body)) for _ in range(3)]
    await until(lambda: cuebot.count(KILL) == 3, "three Kill calls")
    hold.set()
    assert [a[0] for a in await asyncio.gather(*tasks)] == [200] * 3


async def test_coalescing_can_be_turned_off(make_gateway: GatewayFactory,
                                            cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a"), hold=hold)
    gw = await make_gateway(coalesce_reads=False)
    tasks = [asyncio.ensure_future(post(gw, GET_JOBS, JOBS_BODY)) for _ in range(5)]
    await until(lambda: cuebot.count(GET_JOBS) == 5, "five calls")
    hold.set()
    assert [a[0] for a in await asyncio.gather(*tasks)] == [200] * 5
    assert value(await scrape(gw), COALESCED) == 0


async def test_a_read_after_a_write_never_joins_a_call_sent_before_it(
        gateway: TestClient, cuebot: RecordingCuebot) -> None:
    """Read-your-writes: a client that wrote, then reads, gets an answer from after its write."""
    holds = [asyncio.Event(), asyncio.Event()]
    served = []

    def jobs(call: Any) -> Reply:
        n = len(served)
        served.append(n)
        return Reply(jobs_reply("before-kill" if n == 0 else "after-kill"), hold=holds[n])

    cuebot.replies[GET_JOBS] = jobs
    early = asyncio.ensure_future(post(gateway, GET_JOBS, JOBS_BODY))
    await until(lambda: cuebot.count(GET_JOBS) == 1, "the early read at Cuebot")
    status, _, _ = await post(gateway, KILL, b'{"job":{"id":"j1"}}')
    assert status == 200
    late = asyncio.ensure_future(post(gateway, GET_JOBS, JOBS_BODY))
    await until(lambda: cuebot.count(GET_JOBS) == 2, "the late read at Cuebot: its own call")
    for hold in holds:
        hold.set()
    (s1, _, b1), (s2, _, b2) = await asyncio.gather(early, late)
    assert (s1, s2) == (200, 200)
    assert orjson.loads(b1)["jobs"]["jobs"][0]["name"] == "before-kill"
    assert orjson.loads(b2)["jobs"]["jobs"][0]["name"] == "after-kill"


async def test_errors_are_shared_like_replies(gateway: TestClient,
                                              cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, code=grpc.StatusCode.NOT_FOUND, message="no such show: testing",
                 hold=hold)
    tasks = [asyncio.ensure_future(post(gateway, GET_JOBS, JOBS_BODY)) for _ in range(5)]
    await until_metric(gateway, COALESCED, 4, route=GET_JOBS)
    hold.set()
    answers = await asyncio.gather(*tasks)
    assert cuebot.count(GET_JOBS) == 1
    for status, _, body in answers:
        assert status == 404
        data = envelope(body)
        assert data["code"] == 5 and data["message"] == "no such show: testing"


async def test_each_waiter_keeps_its_own_deadline(gateway: TestClient,
                                                  cuebot: RecordingCuebot) -> None:
    """A waiter with a short Grpc-Timeout gives up alone; the call goes on for the others."""
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a"), hold=hold)
    patient = asyncio.ensure_future(post(gateway, GET_JOBS, JOBS_BODY))
    await until(lambda: cuebot.count(GET_JOBS) == 1, "the call at Cuebot")
    status, _, body = await post(gateway, GET_JOBS, JOBS_BODY, **{"Grpc-Timeout": "100m"})
    assert status == 504
    assert envelope(body)["code"] == 4
    assert not patient.done() and cuebot.cancelled == []
    hold.set()
    status, _, body = await patient
    assert status == 200 and orjson.loads(body)["jobs"]["jobs"][0]["name"] == "a"
    assert cuebot.count(GET_JOBS) == 1 and cuebot.cancelled == []


async def test_a_client_leaving_does_not_cancel_the_shared_call(
        gateway: TestClient, cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a"), hold=hold)
    leaver = asyncio.ensure_future(post(gateway, GET_JOBS, JOBS_BODY))
    await until(lambda: cuebot.count(GET_JOBS) == 1, "the call at Cuebot")
    stayer = asyncio.ensure_future(post(gateway, GET_JOBS, JOBS_BODY))
    await until_metric(gateway, COALESCED, 1, route=GET_JOBS)
    leaver.cancel()  # the client hangs up: aiohttp cancels its handler
    await until_metric(gateway, "opencue_gateway_requests_total", 1, status="499")
    hold.set()
    status, _, _ = await stayer
    assert status == 200
    assert cuebot.count(GET_JOBS) == 1 and cuebot.cancelled == []


async def test_the_last_client_leaving_cancels_the_call(gateway: TestClient,
                                                        cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a"), hold=hold)
    tasks = [asyncio.ensure_future(post(gateway, GET_JOBS, JOBS_BODY)) for _ in range(3)]
    await until_metric(gateway, COALESCED, 2, route=GET_JOBS)
    await until(lambda: cuebot.count(GET_JOBS) == 1, "the call at Cuebot")
    for task in tasks:
        task.cancel()
    await until(lambda: len(cuebot.cancelled) == 1, "Cuebot to see the call cancelled")
    hold.set()
    # the next read is a new call, not the abandoned one
    status, _, _ = await post(gateway, GET_JOBS, JOBS_BODY)
    assert status == 200 and cuebot.count(GET_JOBS) == 2


async def test_resource_routes_are_coalesced_too(gateway: TestClient,
                                                 cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    active = "/show.ShowInterface/GetActiveShows"
    cuebot.reply(active, show_pb2.ShowGetActiveShowsResponse(shows=show_pb2.ShowSeq(
        shows=[show_pb2.Show(id="s1", name="testing")])), hold=hold)
    tasks = [asyncio.ensure_future(gateway.get("/api/show")) for _ in range(4)]
    await until_metric(gateway, COALESCED, 3, route=active)
    hold.set()
    replies = await asyncio.gather(*tasks)
    assert [r.status for r in replies] == [200] * 4
    assert cuebot.count(active) == 1


def test_which_methods_are_reads() -> None:
    reads = Reads()
    for path in ("/job.JobInterface/GetJobs", "/show.ShowInterface/FindShow",
                 "/job.JobInterface/IsJobPending", "/x.Y/List", "/x.Y/ListThings",
                 "/job.FrameInterface/GetWhatDependsOnThis"):
        assert reads(path), path
    for path in (KILL, SET_ACTIVE, "/job.JobInterface/LaunchSpecAndWait", "/x.Y/Getaway",
                 "/x.Y/Issue", "/x.Y/Finder", "/host.HostInterface/RebootWhenIdle"):
        assert not reads(path), path
    custom = Reads(("job.JobInterface/Eat*", "!job.JobInterface/GetJob", "/x.Y/*"))
    assert custom("/job.JobInterface/EatFrames")
    assert not custom("/job.JobInterface/GetJob")
    assert custom("/job.JobInterface/GetJobs")
    assert custom("/x.Y/DoIt")


async def test_coalesce_methods_setting(make_gateway: GatewayFactory,
                                        cuebot: RecordingCuebot) -> None:
    """'!pattern' makes a Get* a write: not shared, and it empties the cache."""
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a"), hold=hold)
    gw = await make_gateway(coalesce_methods=("!job.JobInterface/GetJobs",))
    tasks = [asyncio.ensure_future(post(gw, GET_JOBS, JOBS_BODY)) for _ in range(3)]
    await until(lambda: cuebot.count(GET_JOBS) == 3, "three calls")
    hold.set()
    assert [a[0] for a in await asyncio.gather(*tasks)] == [200] * 3


# ---------------------------------------------------------------------------
# micro-cache
# ---------------------------------------------------------------------------
SHOWS = show_pb2.ShowGetShowsResponse(shows=show_pb2.ShowSeq(
    shows=[show_pb2.Show(id="s1", name="testing")]))


async def test_micro_cache_serves_fresh_replies_and_says_so(make_gateway: GatewayFactory,
                                                            cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, SHOWS)
    gw = await make_gateway(read_cache_ms=60_000)
    s1, h1, b1 = await post(gw, GET_SHOWS)
    s2, h2, b2 = await post(gw, GET_SHOWS)
    assert (s1, s2) == (200, 200) and b1 == b2
    assert cuebot.count(GET_SHOWS) == 1
    assert h1["X-Cache"] == "miss" and "Age" not in h1
    assert h2["X-Cache"] == "hit" and int(h2["Age"]) >= 0
    found = await scrape(gw)
    assert value(found, "opencue_gateway_read_cache_hits_total", route=GET_SHOWS) == 1
    # another question is another entry
    await post(gw, GET_SHOWS, b'{"x": 1}')  # unknown keys are ignored: the same message
    assert cuebot.count(GET_SHOWS) == 1
    await post(gw, GET_SHOWS, b"{}", **{"Grpc-Metadata-Studio": "spi"})
    assert cuebot.count(GET_SHOWS) == 2


async def test_every_write_empties_the_micro_cache(make_gateway: GatewayFactory,
                                                   cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, SHOWS)
    gw = await make_gateway(read_cache_ms=60_000)
    await post(gw, GET_SHOWS)
    await post(gw, GET_SHOWS)
    assert cuebot.count(GET_SHOWS) == 1
    status, headers, _ = await post(gw, SET_ACTIVE, b'{"show":{"id":"s1"},"value":false}')
    assert status == 200 and "X-Cache" not in headers
    _, headers, _ = await post(gw, GET_SHOWS)
    assert headers["X-Cache"] == "miss" and cuebot.count(GET_SHOWS) == 2
    # a write that fails empties it too: it may have changed something
    cuebot.reply(SET_ACTIVE, code=grpc.StatusCode.INTERNAL, message="boom")
    assert (await post(gw, SET_ACTIVE, b"{}"))[0] == 500
    await post(gw, GET_SHOWS)
    assert cuebot.count(GET_SHOWS) == 3


async def test_a_read_sent_before_a_write_is_not_cached_after_it(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    cuebot.reply(GET_SHOWS, SHOWS, hold=hold)
    gw = await make_gateway(read_cache_ms=60_000)
    early = asyncio.ensure_future(post(gw, GET_SHOWS))
    await until(lambda: cuebot.count(GET_SHOWS) == 1, "the read at Cuebot")
    assert (await post(gw, SET_ACTIVE, b"{}"))[0] == 200
    hold.set()
    assert (await early)[0] == 200
    _, headers, _ = await post(gw, GET_SHOWS)
    assert headers["X-Cache"] == "miss" and cuebot.count(GET_SHOWS) == 2


async def test_micro_cache_entries_expire(make_gateway: GatewayFactory,
                                          cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, SHOWS)
    gw = await make_gateway(read_cache_ms=150)
    await post(gw, GET_SHOWS)
    await asyncio.sleep(0.3)
    _, headers, _ = await post(gw, GET_SHOWS)
    assert headers["X-Cache"] == "miss" and cuebot.count(GET_SHOWS) == 2


async def test_micro_cache_keeps_no_errors_and_nothing_over_its_size(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    big = show_pb2.ShowGetShowsResponse(shows=show_pb2.ShowSeq(
        shows=[show_pb2.Show(id=f"s{i}", name="x" * 100) for i in range(50)]))
    cuebot.reply(GET_SHOWS, big)
    cuebot.reply(GET_JOBS, code=grpc.StatusCode.NOT_FOUND, message="gone")
    gw = await make_gateway(read_cache_ms=60_000, read_cache_max_bytes=1024)
    for _ in range(2):
        assert (await post(gw, GET_SHOWS))[0] == 200
        assert (await post(gw, GET_JOBS, JOBS_BODY))[0] == 404
    assert cuebot.count(GET_SHOWS) == 2 and cuebot.count(GET_JOBS) == 2


def test_read_cache_bound_and_expiry() -> None:
    cache = ReadCache(ttl=1.0, max_bytes=3 * 1000)
    for i in range(5):
        cache.put(("k", i), b"x" * 700, 700, now=float(i) / 10)
    assert cache.bytes <= 3000 and len(cache) == 3
    assert cache.get(("k", 0), now=0.5) is None        # evicted, oldest first
    reply, age = cache.get(("k", 4), now=0.5)
    assert reply == b"x" * 700 and age == pytest.approx(0.1)
    assert cache.get(("k", 4), now=1.41) is None       # expired
    assert len(cache) == 0 and cache.bytes == 0
    cache.put("big", b"x" * 5000, 5000, now=0)          # larger than the whole cache
    assert len(cache) == 0


# ---------------------------------------------------------------------------
# the cap on calls in flight
# ---------------------------------------------------------------------------
async def test_in_flight_calls_never_exceed_the_cap(make_gateway: GatewayFactory,
                                                    cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a"), hold=hold)
    gw = await make_gateway(backend_max_in_flight=3)
    tasks = [asyncio.ensure_future(post(gw, GET_JOBS, b'{"r":{"shows":["s%d"]}}' % i))
             for i in range(12)]
    await until_metric(gw, "opencue_gateway_backend_calls_queued", 9)
    await until(lambda: cuebot.in_flight == 3, "three calls at Cuebot")
    assert cuebot.count(GET_JOBS) == 3
    assert value(await scrape(gw), "opencue_gateway_backend_calls_in_flight") == 3
    hold.set()
    assert [a[0] for a in await asyncio.gather(*tasks)] == [200] * 12
    assert cuebot.count(GET_JOBS) == 12 and cuebot.max_in_flight == 3
    found = await scrape(gw)
    assert value(found, "opencue_gateway_backend_calls_in_flight") == 0
    assert value(found, "opencue_gateway_backend_calls_queued") == 0


async def test_full_queue_is_a_503_that_never_reaches_cuebot(make_gateway: GatewayFactory,
                                                              cuebot: RecordingCuebot) -> None:
    hold = asyncio.Event()
    cuebot.reply(KILL, hold=hold)
    gw = await make_gateway(backend_max_in_flight=1, backend_max_queue=1)
    held = asyncio.ensure_future(post(gw, KILL, b'{"job":{"id":"1"}}'))
    await until(lambda: cuebot.count(KILL) == 1, "the first call at Cuebot")
    queued = asyncio.ensure_future(post(gw, KILL, b'{"job":{"id":"2"}}'))
    await until_metric(gw, "opencue_gateway_backend_calls_queued", 1)
    status, headers, body = await post(gw, KILL, b'{"job":{"id":"3"}}')
    assert status == 503 and int(headers["Retry-After"]) >= 1
    data = envelope(body)
    assert data["code"] == 14 and "BACKEND_MAX_QUEUE" in data["message"]
    hold.set()
    assert [(await t)[0] for t in (held, queued)] == [200, 200]
    assert [c.request for c in cuebot.calls] == [
        job_pb2.JobKillRequest(job=job_pb2.Job(id=i)).SerializeToString() for i in "12"]
    found = await scrape(gw)
    assert value(found, "opencue_gateway_backend_queue_rejections_total", reason="full") == 1


async def test_deadline_passing_in_the_queue_is_a_503(make_gateway: GatewayFactory,
                                                      cuebot: RecordingCuebot) -> None:
    """Never sent, so not Cuebot's deadline (504): busy, retry (503, code 14)."""
    hold = asyncio.Event()
    cuebot.reply(KILL, hold=hold)
    gw = await make_gateway(backend_max_in_flight=1)
    held = asyncio.ensure_future(post(gw, KILL, b'{"job":{"id":"1"}}'))
    await until(lambda: cuebot.count(KILL) == 1, "the first call at Cuebot")
    for path, body in ((KILL, b'{"job":{"id":"2"}}'), (GET_JOBS, JOBS_BODY)):
        status, headers, reply = await post(gw, path, body, **{"Grpc-Timeout": "100m"})
        assert status == 503 and "Retry-After" in headers, reply
        data = envelope(reply)
        assert data["code"] == 14 and "deadline" in data["message"]
    hold.set()
    assert (await held)[0] == 200
    assert cuebot.count(KILL) == 1 and cuebot.count(GET_JOBS) == 0


async def test_admission_is_first_come_first_served() -> None:
    gate = Admission(limit=1, queue=10)
    loop = asyncio.get_running_loop()
    await gate.acquire(loop.time() + 5)
    order: list[int] = []

    async def take(i: int) -> None:
        await gate.acquire(loop.time() + 5)
        order.append(i)
        gate.release()

    tasks = [asyncio.ensure_future(take(i)) for i in range(5)]
    await until(lambda: gate.queued == 5, "five waiting")
    tasks[2].cancel()  # one leaves the queue: its place is not lost to the others
    await asyncio.sleep(0)
    gate.release()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 1, 3, 4]
    assert gate.in_flight == 0 and gate.queued == 0
    with pytest.raises(GatewayError) as info:
        full = Admission(limit=1, queue=0)
        await full.acquire(loop.time() + 5)
        await full.acquire(loop.time() + 5)
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"


# ---------------------------------------------------------------------------
# the circuit breaker
# ---------------------------------------------------------------------------
async def _open_circuit(gw: TestClient, cuebot: RecordingCuebot, failures: int) -> None:
    cuebot.reply(GET_SHOWS, code=grpc.StatusCode.UNAVAILABLE, message="cuebot restarting")
    for _ in range(failures):
        status, _, body = await post(gw, GET_SHOWS)
        assert status == 503 and envelope(body)["message"] == "cuebot restarting"
    assert cuebot.count(GET_SHOWS) == failures


async def test_circuit_opens_after_consecutive_failures(make_gateway: GatewayFactory,
                                                        cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(breaker_failures=3, breaker_cooldown=60)
    await _open_circuit(gw, cuebot, 3)
    for path in (GET_SHOWS, GET_JOBS, KILL):  # every call, reads and writes
        status, headers, body = await post(gw, path)
        assert status == 503
        data = envelope(body)
        assert data["code"] == 14
        assert f"Cuebot at {cuebot.endpoint} is unavailable" in data["message"]
        assert "3 consecutive failures" in data["message"]
        assert "cuebot restarting" in data["message"] and "next try in" in data["message"]
        assert 59 <= int(headers["Retry-After"]) <= 60
    assert len(cuebot.calls) == 3  # none of them reached Cuebot
    found = await scrape(gw)
    assert value(found, "opencue_gateway_breaker_state", state="open") == 1
    assert value(found, "opencue_gateway_breaker_state", state="closed") == 0
    assert value(found, "opencue_gateway_breaker_rejections_total") == 3
    resp = await gw.get("/readyz")
    ready = await resp.json()
    assert resp.status == 503 and ready["status"] == "unavailable"
    circuit = ready["cuebot"]["circuit"]
    assert circuit["state"] == "open" and circuit["consecutiveFailures"] == 3
    assert "cuebot restarting" in circuit["lastFailure"] and circuit["nextTryInSeconds"] > 50


async def test_half_open_lets_one_probe_through(make_gateway: GatewayFactory,
                                                cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(breaker_failures=2, breaker_cooldown=1.0)
    await _open_circuit(gw, cuebot, 2)
    assert (await post(gw, GET_SHOWS))[0] == 503 and cuebot.count(GET_SHOWS) == 2
    await asyncio.sleep(1.1)  # the cooldown passes
    hold = asyncio.Event()
    cuebot.reply(GET_SHOWS, SHOWS, hold=hold)
    probe = asyncio.ensure_future(post(gw, GET_SHOWS))
    await until(lambda: cuebot.count(GET_SHOWS) == 3, "the probe at Cuebot")
    status, _, body = await post(gw, GET_JOBS, JOBS_BODY)  # refused while the probe is out
    assert status == 503 and "probe" in envelope(body)["message"]
    assert cuebot.count(GET_JOBS) == 0
    # nor does an identical read wait with the probe: Cuebot may be stalled
    status, headers, body = await post(gw, GET_SHOWS)
    assert status == 503 and "probe" in envelope(body)["message"]
    assert headers["Retry-After"] == "1" and cuebot.count(GET_SHOWS) == 3
    found = await scrape(gw)
    assert value(found, "opencue_gateway_breaker_state", state="half_open") == 1
    hold.set()
    assert (await probe)[0] == 200
    assert (await post(gw, GET_JOBS, JOBS_BODY))[0] == 200  # closed again
    assert value(await scrape(gw), "opencue_gateway_breaker_state", state="closed") == 1
    resp = await gw.get("/readyz")
    assert resp.status == 200 and (await resp.json())["cuebot"]["circuit"]["state"] == "closed"


async def test_failed_probe_opens_the_circuit_again(make_gateway: GatewayFactory,
                                                    cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(breaker_failures=2, breaker_cooldown=0.2)
    await _open_circuit(gw, cuebot, 2)
    await asyncio.sleep(0.3)
    status, _, body = await post(gw, GET_SHOWS)  # the probe: Cuebot still refuses
    assert status == 503 and envelope(body)["message"] == "cuebot restarting"
    assert cuebot.count(GET_SHOWS) == 3
    status, _, body = await post(gw, GET_SHOWS)
    assert status == 503 and "next try in" in envelope(body)["message"]
    assert cuebot.count(GET_SHOWS) == 3


async def test_answers_that_are_not_outages_keep_the_circuit_closed(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    """NOT_FOUND, INTERNAL… are Cuebot answering; a client's own short deadline proves nothing."""
    gw = await make_gateway(breaker_failures=2, grpc_timeout=5.0)
    cuebot.reply(GET_SHOWS, code=grpc.StatusCode.NOT_FOUND, message="nope")
    cuebot.reply(GET_JOBS, code=grpc.StatusCode.INTERNAL, message="boom")
    cuebot.reply(KILL, delay=0.5)
    for _ in range(3):
        assert (await post(gw, GET_SHOWS))[0] == 404
        assert (await post(gw, GET_JOBS, JOBS_BODY))[0] == 500
        assert (await post(gw, KILL, b"{}", **{"Grpc-Timeout": "20m"}))[0] == 504
    assert cuebot.count(GET_SHOWS) == 3 and cuebot.count(KILL) == 3
    assert value(await scrape(gw), "opencue_gateway_breaker_state", state="closed") == 1


async def test_whole_deadline_timeouts_open_the_circuit(make_gateway: GatewayFactory,
                                                        cuebot: RecordingCuebot) -> None:
    """A Cuebot that hangs: after BREAKER_FAILURES deadlines, refused without waiting one more."""
    cuebot.reply(GET_SHOWS, delay=5)
    gw = await make_gateway(breaker_failures=2, grpc_timeout=0.2, breaker_cooldown=60)
    for _ in range(2):
        status, _, body = await post(gw, GET_SHOWS)
        assert status == 504 and envelope(body)["code"] == 4
    status, _, body = await post(gw, GET_SHOWS)
    assert status == 503 and "DEADLINE_EXCEEDED" in envelope(body)["message"]
    assert cuebot.count(GET_SHOWS) == 2


async def test_breaker_can_be_turned_off(make_gateway: GatewayFactory,
                                         cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(breaker_failures=0)
    await _open_circuit(gw, cuebot, 8)
    resp = await gw.get("/readyz")
    assert (await resp.json())["cuebot"]["circuit"]["state"] == "disabled"


async def test_first_success_within_one_cooldown_of_cuebot_returning(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    """Cuebot goes away long enough for gRPC's reconnect back-off to grow past the cooldown.

    Once it listens again, the gateway answers 200 within one cooldown:
    the channel keeps retrying often enough, and a circuit that opened on
    a lost connection probes as soon as the channel is connected again.
    """
    cooldown = 1.5
    cuebot.reply(GET_SHOWS, SHOWS)
    gw = await make_gateway(breaker_failures=3, breaker_cooldown=cooldown)
    assert (await post(gw, GET_SHOWS))[0] == 200
    port = cuebot.port
    await cuebot.stop()
    down_until = time.monotonic() + 2 * cooldown
    refused = 0
    while time.monotonic() < down_until:
        status, _, body = await post(gw, GET_SHOWS)
        assert status == 503 and envelope(body)["code"] == 14
        refused += "circuit" in envelope(body)["message"]
        await asyncio.sleep(0.05)
    assert refused > 0
    back = RecordingCuebot(replies=cuebot.replies)
    await back.start(port=port)
    listening = time.monotonic()
    try:
        while True:
            status, _, _ = await post(gw, GET_SHOWS)
            if status == 200:
                break
            assert time.monotonic() - listening < 3 * cooldown, "never recovered"
            await asyncio.sleep(0.02)
        recovered = time.monotonic() - listening
        assert recovered <= cooldown, f"first 200 after {recovered:.2f} s"
    finally:
        await back.stop()


async def test_a_probe_whose_client_leaves_hands_over_to_the_next_call(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(breaker_failures=2, breaker_cooldown=0.2)
    await _open_circuit(gw, cuebot, 2)
    await asyncio.sleep(0.3)
    hold = asyncio.Event()
    cuebot.reply(GET_SHOWS, SHOWS, hold=hold)
    probe = asyncio.ensure_future(post(gw, GET_SHOWS))
    await until(lambda: cuebot.count(GET_SHOWS) == 3, "the probe at Cuebot")
    probe.cancel()
    await until(lambda: len(cuebot.cancelled) == 1, "the probe cancelled")
    hold.set()
    status, _, _ = await post(gw, GET_SHOWS)  # the next probe, at once: no new cooldown
    assert status == 200 and cuebot.count(GET_SHOWS) == 4


async def test_ready_again_once_the_cooldown_is_over(make_gateway: GatewayFactory,
                                                     cuebot: RecordingCuebot) -> None:
    """/readyz must not wait for traffic that a load balancer sends only to ready replicas."""
    gw = await make_gateway(breaker_failures=2, breaker_cooldown=1.0)
    await _open_circuit(gw, cuebot, 2)
    assert (await gw.get("/readyz")).status == 503
    await asyncio.sleep(1.1)
    resp = await gw.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["cuebot"]["circuit"]["state"] == "open"  # no call has probed yet
    assert body["cuebot"]["calls"] == {"inFlight": 0, "queued": 0, "maxInFlight": 256,
                                       "maxQueued": 1024}


@pytest.mark.parametrize("env, message", [
    ({"COALESCE_METHODS": "GetJobs"}, "COALESCE_METHODS"),
    ({"COALESCE_READS": "maybe"}, "COALESCE_READS"),
    ({"READ_CACHE_MS": "-1"}, "READ_CACHE_MS"),
    ({"READ_CACHE_MAX_BYTES": "0"}, "READ_CACHE_MAX_BYTES"),
    ({"BACKEND_MAX_IN_FLIGHT": "0"}, "BACKEND_MAX_IN_FLIGHT"),
    ({"BACKEND_MAX_QUEUE": "lots"}, "BACKEND_MAX_QUEUE"),
    ({"BREAKER_FAILURES": "-2"}, "BREAKER_FAILURES"),
    ({"BREAKER_COOLDOWN": "0"}, "BREAKER_COOLDOWN"),
])
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    from gateway.config import ConfigError, load

    with pytest.raises(ConfigError, match=message):
        load([], env)


def test_settings_parse() -> None:
    from gateway.config import load

    cfg = load(["--breaker-cooldown", "500ms", "--coalesce-reads", "false"],
               {"COALESCE_METHODS": "job.JobInterface/*Stats, !x.Y/GetAndReset",
                "READ_CACHE_MS": "250", "READ_CACHE_MAX_BYTES": "8MiB",
                "BACKEND_MAX_IN_FLIGHT": "32", "BACKEND_MAX_QUEUE": "0",
                "BREAKER_FAILURES": "3"})
    assert cfg.breaker_cooldown == 0.5 and cfg.coalesce_reads is False
    assert cfg.coalesce_methods == ("job.JobInterface/*Stats", "!x.Y/GetAndReset")
    assert (cfg.read_cache_ms, cfg.read_cache_max_bytes) == (250, 8 * 1024 * 1024)
    assert (cfg.backend_max_in_flight, cfg.backend_max_queue, cfg.breaker_failures) == (32, 0, 3)


# ---------------------------------------------------------------------------
# read-your-writes across the workers of one host
# ---------------------------------------------------------------------------
def test_workers_share_one_count_of_writes(tmp_path: Any) -> None:
    from gateway import writes

    path = str(tmp_path / "writes")
    writes.create(path)
    a, b, alone = writes.Writes(path), writes.Writes(path), writes.Writes()
    assert (a.count(), b.count(), a.shared, alone.shared) == (0, 0, True, False)
    a.wrote()
    b.wrote()
    alone.wrote()
    assert (a.count(), b.count(), alone.count()) == (2, 2, 1)
    a.close()
    b.close()


async def test_a_write_through_one_worker_is_seen_by_reads_in_another(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gateways sharing the supervisor's count, as ``--workers`` processes do.

    A client's write lands on one, its next read (a new connection) on the other:
    that read neither joins a call the other sent before the write nor takes
    its cached reply.
    """
    from gateway import writes

    path = str(tmp_path / "writes")
    writes.create(path)
    monkeypatch.setenv(writes.ENV, path)
    first = await make_gateway(read_cache_ms=60_000)
    second = await make_gateway(read_cache_ms=60_000)
    cuebot.reply(GET_SHOWS, SHOWS)
    await post(second, GET_SHOWS)
    assert (await post(second, GET_SHOWS))[1]["X-Cache"] == "hit"
    hold = asyncio.Event()
    cuebot.reply(GET_JOBS, jobs_reply("a"), hold=hold)
    early = asyncio.ensure_future(post(second, GET_JOBS, JOBS_BODY))
    await until(lambda: cuebot.count(GET_JOBS) == 1, "the early read at Cuebot")

    assert (await post(first, KILL, b'{"job":{"id":"j1"}}'))[0] == 200

    late = asyncio.ensure_future(post(second, GET_JOBS, JOBS_BODY))
    await until(lambda: cuebot.count(GET_JOBS) == 2, "the late read's own call")
    hold.set()
    assert [(await t)[0] for t in (early, late)] == [200, 200]
    _, headers, _ = await post(second, GET_SHOWS)
    assert headers["X-Cache"] == "miss" and cuebot.count(GET_SHOWS) == 2
