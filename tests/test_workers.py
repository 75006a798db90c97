"""--workers: several processes on one port, supervised."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import aiohttp

from support import GatewayProcess, RecordingCuebot, auth_headers, run_gateway

GET_SHOWS = "/show.ShowInterface/GetShows"


def _pids(output: str) -> dict[int, int]:
    """worker index -> pid, from the supervisor's latest "started" lines."""
    return {int(i): int(p) for i, p in re.findall(r"worker (\d+) started \(pid (\d+)\)", output)}


def _ready(gw: GatewayProcess, workers: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while f"with {workers} workers" not in gw.output:
        if gw.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(gw.output)
        time.sleep(0.05)


async def _burst(url: str, n: int) -> list[int]:
    # a fresh connection per request, so the kernel spreads them over the workers
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, headers=auth_headers()) as http:
        async def one() -> int:
            async with http.post(url, data=b"{}") as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_workers_share_one_port_and_stop_cleanly(cuebot: RecordingCuebot) -> None:
    gw = GatewayProcess("--workers", "2", env={"CUEBOT_ENDPOINT": cuebot.endpoint,
                                               "RATE_LIMIT_RPS": "0"})
    try:
        await asyncio.to_thread(_ready, gw, 2)
        statuses = await _burst(f"{gw.url}{GET_SHOWS}", 60)
        assert statuses == [200] * 60
        await asyncio.sleep(0.3)
        served = {w: gw.output.count(f"gateway.access[{w}]: POST {GET_SHOWS} 200")
                  for w in ("w0", "w1")}
        assert sum(served.values()) == 60 and all(served.values()), served
        pids = _pids(gw.output)
        assert len(pids) == 2
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert "Traceback" not in gw.output


async def test_a_dead_worker_is_replaced(cuebot: RecordingCuebot) -> None:
    gw = GatewayProcess("--workers", "2", env={"CUEBOT_ENDPOINT": cuebot.endpoint,
                                               "RATE_LIMIT_RPS": "0"})
    try:
        await asyncio.to_thread(_ready, gw, 2)
        victim = _pids(gw.output)[1]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while _pids(gw.output).get(1) == victim or gw.output.count("gateway[w1]: listening") < 2:
            assert time.monotonic() < deadline, gw.output
            await asyncio.sleep(0.1)
        assert "worker 1 (pid %d) exited with code -9; restarting" % victim in gw.output
        assert await _burst(f"{gw.url}{GET_SHOWS}", 30) == [200] * 30
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output


async def test_sighup_reloads_every_worker(cuebot: RecordingCuebot) -> None:
    gw = GatewayProcess("--workers", "2", env={"CUEBOT_ENDPOINT": cuebot.endpoint})
    try:
        await asyncio.to_thread(_ready, gw, 2)
        gw.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while gw.output.count("reload (SIGHUP): descriptors unchanged") < 2:
            assert time.monotonic() < deadline, gw.output
            await asyncio.sleep(0.1)
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0


async def test_admin_reload_reaches_every_worker(cuebot: RecordingCuebot) -> None:
    gw = GatewayProcess("--workers", "2", env={"CUEBOT_ENDPOINT": cuebot.endpoint})
    try:
        await asyncio.to_thread(_ready, gw, 2)
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            async with http.post(f"{gw.url}/admin/reload") as resp:
                assert (await resp.json())["allWorkers"] is True
        deadline = time.monotonic() + 15
        while gw.output.count("reload (SIGHUP): descriptors unchanged") < 2:
            assert time.monotonic() < deadline, gw.output
            await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(gw.stop)


def test_worker_start_up_failure_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.binpb"
    bad.write_bytes(b"junk")
    result = run_gateway("--workers", "2", "--descriptor-set", str(bad))
    assert result.returncode == 1, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if "opencue-gateway: error:" in ln]
    assert len(lines) == 1 and str(bad) in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_sandbox_with_workers_prints_a_token() -> None:
    gw = GatewayProcess("--sandbox", "--no-dispatch", "--workers", "2")
    try:
        _ready(gw, 2)
        deadline = time.monotonic() + 10
        while "export TOKEN=" not in gw.output:
            assert time.monotonic() < deadline, gw.output
            time.sleep(0.05)
        token = gw.output.split("export TOKEN=", 1)[1].split()[0]
        import urllib.request

        req = urllib.request.Request(f"{gw.url}{GET_SHOWS}", data=b"{}",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert b'"name":"testing"' in r.read()
    finally:
        assert gw.stop() == 0, gw.output
