"""/healthz, /readyz and graceful shutdown, against real backends and the real process."""
from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import grpc
import pytest

from support import GatewayProcess, RecordingCuebot, auth_headers, dead_endpoint

HEALTH = "/grpc.health.v1.Health/Check"


async def test_healthz_needs_nothing(make_gateway: Any) -> None:
    gw = await make_gateway(authorized=False)
    resp = await gw.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    assert (await gw.head("/healthz")).status == 200


async def test_readyz_reports_descriptors_and_cuebot(make_gateway: Any,
                                                     cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False)
    resp = await gw.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "ready"
    from gateway.app import STATE

    table = gw.app[STATE].table
    assert body["descriptors"]["version"] == table.version
    assert body["descriptors"]["methods"] == len(table.routes)
    assert body["cuebot"] == {**body["cuebot"], "endpoint": cuebot.endpoint, "reachable": True}
    assert cuebot.paths() == [HEALTH]


async def test_readyz_is_503_when_cuebot_is_down(make_gateway: Any) -> None:
    with dead_endpoint() as endpoint:
        gw = await make_gateway(authorized=False, cuebot_endpoint=endpoint)
        start = time.monotonic()
        resp = await gw.get("/readyz")
        body = await resp.json()
    assert resp.status == 503 and body["status"] == "unavailable"
    assert body["cuebot"]["reachable"] is False and "UNAVAILABLE" in body["cuebot"]["detail"]
    assert time.monotonic() - start < 3.5


@pytest.mark.parametrize("reply, ready", [
    ({"data": b"\x08\x01"}, True),                          # SERVING
    ({"data": b"\x08\x02"}, False),                         # NOT_SERVING
    ({"code": grpc.StatusCode.UNIMPLEMENTED}, True),        # Cuebot: no health service
    ({"code": grpc.StatusCode.INTERNAL}, True),             # answered: alive
    ({"code": grpc.StatusCode.UNAVAILABLE}, False),
])
async def test_readiness_follows_the_health_answer(make_gateway: Any, cuebot: RecordingCuebot,
                                                   reply: dict[str, Any], ready: bool) -> None:
    cuebot.reply(HEALTH, **reply)
    gw = await make_gateway(authorized=False)
    resp = await gw.get("/readyz")
    assert resp.status == (200 if ready else 503), await resp.text()


async def test_readyz_says_what_unimplemented_means(make_gateway: Any,
                                                    cuebot: RecordingCuebot) -> None:
    """Cuebot (and the sandbox) serve no health service: reachable, and /readyz says so."""
    cuebot.reply(HEALTH, code=grpc.StatusCode.UNIMPLEMENTED)
    gw = await make_gateway(authorized=False)
    body = await (await gw.get("/readyz")).json()
    assert body["status"] == "ready"
    assert body["cuebot"]["detail"] == ("Cuebot reachable; it has no health service "
                                        "(its answer: UNIMPLEMENTED)")


async def test_an_unreachable_cuebot_is_one_warning_at_start_up() -> None:
    """The gateway still starts and serves; the log says why every RPC will be 503."""
    with dead_endpoint() as endpoint:
        gw = GatewayProcess(env={"CUEBOT_ENDPOINT": endpoint})
        try:
            await asyncio.to_thread(gw.wait_ready)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{gw.url}/healthz") as resp:
                    assert resp.status == 200
                async with http.get(f"{gw.url}/readyz") as resp:
                    assert resp.status == 503
            deadline = time.monotonic() + 10
            while "is not reachable" not in gw.output and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output
    warnings = [ln for ln in gw.output.splitlines() if "is not reachable" in ln]
    assert len(warnings) == 1, gw.output
    assert " WARNING " in warnings[0] and f"Cuebot at {endpoint} is not reachable" in warnings[0]
    assert "CUEBOT_ENDPOINT" in warnings[0]


async def test_a_reachable_cuebot_gets_no_warning(cuebot: RecordingCuebot) -> None:
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint})
    try:
        await asyncio.to_thread(gw.wait_ready)
        deadline = time.monotonic() + 10
        while f"Cuebot at {cuebot.endpoint}: connected" not in gw.output:
            assert time.monotonic() < deadline, gw.output
            await asyncio.sleep(0.05)
    finally:
        assert await asyncio.to_thread(gw.stop) == 0, gw.output
    assert "WARNING" not in gw.output, gw.output
    assert cuebot.calls == []  # connecting sent Cuebot no request


async def test_probes_are_cached_and_shared(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    cuebot.reply(HEALTH, b"", delay=0.3)
    gw = await make_gateway(authorized=False)
    replies = await asyncio.gather(*(gw.get("/readyz") for _ in range(10)))
    assert all(r.status == 200 for r in replies)
    assert (await gw.get("/readyz")).status == 200
    assert cuebot.paths() == [HEALTH]  # ten concurrent probes and one more: one check
    await asyncio.sleep(1.6)
    await gw.get("/readyz")
    assert cuebot.paths() == [HEALTH, HEALTH]


async def test_graceful_shutdown_finishes_requests_in_flight(cuebot: RecordingCuebot) -> None:
    cuebot.reply("/show.ShowInterface/GetShows", b"", delay=1.5)
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "SHUTDOWN_GRACE": "10"})
    await asyncio.to_thread(gw.wait_ready)
    async with aiohttp.ClientSession() as http:
        slow = asyncio.ensure_future(http.post(f"{gw.url}/show.ShowInterface/GetShows",
                                               headers=auth_headers()))
        await asyncio.sleep(0.5)
        gw.proc.send_signal(signal.SIGTERM)
        resp = await slow
        assert resp.status == 200 and await resp.read() == b'{"shows":null}'
        await asyncio.sleep(0.3)
        with pytest.raises(aiohttp.ClientConnectionError):  # no longer accepting
            async with http.get(f"{gw.url}/healthz") as late:
                await late.read()
    # already told to stop: wait for it (a second SIGTERM is not a graceful shutdown)
    code = await asyncio.to_thread(gw.proc.wait, 15)
    gw.stop()
    assert code == 0, gw.output
    assert "shutting down" in gw.output and "Traceback" not in gw.output


async def test_shutdown_grace_bounds_the_wait(cuebot: RecordingCuebot) -> None:
    cuebot.reply("/show.ShowInterface/GetShows", b"", delay=20)
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "SHUTDOWN_GRACE": "1"})
    await asyncio.to_thread(gw.wait_ready)
    async with aiohttp.ClientSession() as http:
        stuck = asyncio.ensure_future(http.post(f"{gw.url}/show.ShowInterface/GetShows",
                                                headers=auth_headers()))
        await asyncio.sleep(0.5)
        start = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(gw.proc.wait, 15)
        assert time.monotonic() - start < 5
        with pytest.raises(aiohttp.ClientError):
            resp = await stuck
            await resp.read()
    assert code == 0
    gw.stop()
    assert "Traceback" not in gw.output
