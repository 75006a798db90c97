"""SIGTERM: the process exits within SHUTDOWN_GRACE + 1 s, whatever is in flight.

Real gateway processes in front of a recording Cuebot that holds a call for
30 s. The time bounds asserted are the behaviour itself: "exits within the
grace plus one second" (aiohttp alone took twice the grace), and a drain
that has nothing left to wait for does not wait out the grace.
"""
from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import pytest

from support import GatewayProcess, RecordingCuebot, auth_headers

HELD = "/show.ShowInterface/GetShows"        # the backend answers after 30 s
QUICK = "/show.ShowInterface/FindShow"       # the backend answers after 1 s


@pytest.fixture
async def slow_cuebot() -> Any:
    cuebot = await RecordingCuebot().start()
    cuebot.reply(HELD, b"", delay=30)
    cuebot.reply(QUICK, b"", delay=1.0)
    yield cuebot
    await cuebot.stop()


async def _call(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None] | str:
    try:
        async with session.post(url, data=b"{}", headers=auth_headers()) as resp:
            await resp.read()
            return resp.status, resp.headers.get("Connection")
    except aiohttp.ClientError as e:
        return type(e).__name__


async def _until_called(cuebot: RecordingCuebot, path: str) -> None:
    for _ in range(500):
        if path in cuebot.paths():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never reached the backend")


async def _exit_after_sigterm(gw: GatewayProcess) -> tuple[int, float]:
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(gw.proc.wait, 60)
    return code, time.monotonic() - started


def _env(cuebot: RecordingCuebot, **settings: float) -> dict[str, str]:
    """A gateway process's environment: ``cuebot`` as Cuebot, and these settings."""
    return {"CUEBOT_ENDPOINT": cuebot.endpoint, **{k: str(v) for k, v in settings.items()}}


@pytest.mark.parametrize("workers", [1, 2])
async def test_exits_within_grace_plus_one_second_cutting_what_is_left(
        slow_cuebot: RecordingCuebot, workers: int) -> None:
    grace = 2.0
    gw = GatewayProcess("--workers", str(workers),
                        env=_env(slow_cuebot, SHUTDOWN_GRACE=grace))
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as session:
            held = asyncio.ensure_future(_call(session, gw.url + HELD))
            await _until_called(slow_cuebot, HELD)
            code, took = await _exit_after_sigterm(gw)
            assert await held == "ServerDisconnectedError"  # cut, not answered after the exit
    finally:
        gw.stop()
    assert code == 0, gw.output
    assert took < grace + 1.0, f"exited {took:.2f} s after SIGTERM with SHUTDOWN_GRACE={grace}"
    assert "is over; cutting 1 connection" in gw.output
    assert "Traceback" not in gw.output


async def test_requests_finishing_within_the_grace_are_answered_and_the_exit_follows(
        slow_cuebot: RecordingCuebot) -> None:
    grace = 20.0
    gw = GatewayProcess(env=_env(slow_cuebot, SHUTDOWN_GRACE=grace))
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as session:
            quick = asyncio.ensure_future(_call(session, gw.url + QUICK))
            await _until_called(slow_cuebot, QUICK)
            code, took = await _exit_after_sigterm(gw)
            assert await quick == (200, "close")  # answered, told not to come back
    finally:
        gw.stop()
    assert code == 0, gw.output
    assert took < grace / 2  # nothing left to wait for: no waiting out the grace


async def test_readyz_is_503_while_the_listener_still_accepts(
        slow_cuebot: RecordingCuebot) -> None:
    """SHUTDOWN_DELAY: new connections are still served, /readyz says 503, then it closes."""
    grace, delay = 4.0, 2.0
    gw = GatewayProcess(env=_env(slow_cuebot, SHUTDOWN_GRACE=grace, SHUTDOWN_DELAY=delay))
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.url + "/readyz") as resp:
                assert resp.status == 200
            held = asyncio.ensure_future(_call(session, gw.url + HELD))
            await _until_called(slow_cuebot, HELD)
            started = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as fresh:  # a new connection, still accepted
                async with fresh.get(gw.url + "/readyz") as resp:
                    ready = await resp.json()
                    assert resp.status == 503 and ready["status"] == "shutting down"
                    assert resp.headers["Connection"] == "close"
                assert await _call(fresh, gw.url + QUICK) == (200, "close")
            await asyncio.sleep(max(0.0, delay + 0.5 - (time.monotonic() - started)))
            async with aiohttp.ClientSession() as late:  # past the delay: refused
                with pytest.raises(aiohttp.ClientConnectorError):
                    await late.get(gw.url + "/healthz")
            code = await asyncio.to_thread(gw.proc.wait, 60)
            took = time.monotonic() - started
            assert await held == "ServerDisconnectedError"
    finally:
        gw.stop()
    assert code == 0, gw.output
    assert took < grace + 1.0


async def test_a_second_signal_cuts_at_once(slow_cuebot: RecordingCuebot) -> None:
    grace = 60.0
    gw = GatewayProcess(env=_env(slow_cuebot, SHUTDOWN_GRACE=grace))
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as session:
            held = asyncio.ensure_future(_call(session, gw.url + HELD))
            await _until_called(slow_cuebot, HELD)
            started = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            gw.proc.send_signal(signal.SIGINT)
            code = await asyncio.to_thread(gw.proc.wait, 60)
            took = time.monotonic() - started
            assert await held == "ServerDisconnectedError"
    finally:
        gw.stop()
    assert code == 0, gw.output
    assert took < 10.0  # nowhere near the 60 s grace
    assert "asked again; cutting 1 connection" in gw.output


def test_delay_longer_than_the_grace_is_a_bad_setting() -> None:
    from support import run_gateway

    result = run_gateway("--shutdown-grace", "5", "--shutdown-delay", "10")
    assert result.returncode == 2
    assert "SHUTDOWN_DELAY (10 s) is part of SHUTDOWN_GRACE (5 s)" in result.stderr
