#!/usr/bin/env python3
"""Resident memory of a gateway process at rest and under load: the figures behind
the Kubernetes manifests' resource requests and limits (deploy/kubernetes/).

Starts the sandbox Cuebot (``python -m gateway.sandbox``) and a gateway in front of it
(``--workers N``), reads the RSS of the gateway's whole process tree (supervisor,
workers, the processes converting large messages) from /proc once it is up, then
drives it with concurrent clients for a while — small replies (GetShows), job
listings (GetJobs) and a large one (GetFrames of a job of FRAMES frames, several MB of
JSON) — sampling the tree's RSS, and prints it at rest, at the end of the load, the
highest sampled sum and the sum of each process's own peak (VmHWM), in MiB.

    python scripts/measure_memory.py [--workers 2] [--seconds 20] [--clients 32] [--frames 5000]

The numbers depend on the machine and the Python build; they are for sizing, not for
claims of speed.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "measure-memory-secret-0123456789abcdef"


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the conversion processes it starts, --workers' children)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            out.extend(_tree(int(child)))
    return out


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) in kB, summed over the process tree."""
    out = {"VmRSS": 0, "VmHWM": 0, "processes": 0}
    for p in _tree(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        out["processes"] += 1
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] += int(value.split()[0])
    return out


def _start(cmd: list[str], pattern: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        m = re.search(pattern, line)
        if m:
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"did not start: {' '.join(cmd)}")


def _spec(frames: int) -> str:
    return ("<?xml version='1.0'?><!DOCTYPE spec PUBLIC 'SPI Cue  Specification Language' "
            "'http://localhost:8080/spcue/dtd/cjsl-1.15.dtd'><spec><show>testing</show>"
            "<shot>mem</shot><user>mem</user><job name='big'><layers><layer name='render' "
            f"type='Render'><cmd>echo hi</cmd><range>1-{frames}</range><chunk>1</chunk>"
            "</layer></layers></job></spec>")


async def _load(url: str, seconds: float, clients: int, frames: int,
                pid: int) -> tuple[int, dict[str, int]]:
    import aiohttp

    from gateway.auth import mint

    headers = {"Authorization": f"Bearer {mint(SECRET, 'measure', 3600)}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{url}/job.JobInterface/LaunchSpec",
                             json={"spec": _spec(frames)}) as resp:
            assert resp.status == 200, await resp.text()
        calls = [
            ("/show.ShowInterface/GetShows", {}),
            ("/job.JobInterface/GetJobs", {"r": {"include_finished": True}}),
            ("/job.FrameInterface/GetFrames",
             {"job": "testing-mem-mem_big", "r": {"page": 1, "limit": frames}}),
        ]
        done = 0
        stop = time.monotonic() + seconds

        async def client(i: int) -> None:
            nonlocal done
            n = i
            while time.monotonic() < stop:
                path, body = calls[n % len(calls)]
                n += 1
                async with http.post(url + path, json=body) as resp:
                    await resp.read()
                    done += 1

        async def sample() -> dict[str, int]:
            peak = {"VmRSS": 0, "VmHWM": 0, "processes": 0}
            while time.monotonic() < stop:
                now = _status(pid)
                peak = {k: max(peak[k], now[k]) for k in peak}
                await asyncio.sleep(0.5)
            return peak

        *_, peak = await asyncio.gather(*(client(i) for i in range(clients)), sample())
        return done, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1, help="the gateway's --workers")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    sandbox, endpoint = _start([sys.executable, "-m", "gateway.sandbox", "--port", "0",
                                "--no-dispatch"], r"listening on (\S+:\d+)", env)
    gw_env = {**env, "JWT_SECRET": SECRET, "CUEBOT_ENDPOINT": endpoint, "RATE_LIMIT_RPS": "0",
              "LOG_LEVEL": "warning", "REST_HOST": "127.0.0.1", "REST_PORT": "0"}
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "--log-level", "info",
                                "--workers", str(args.workers)],
                               cwd=ROOT, env=gw_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert gateway.stdout is not None
        port = None
        up = r"listening on http://127\.0\.0\.1:(\d+)" + (
            f" with {args.workers} workers" if args.workers > 1 else "")
        for line in gateway.stdout:
            m = re.search(up, line)
            if m:
                port = int(m.group(1))
                break
        assert port, "gateway did not start"
        # keep reading its log (access lines), or a full pipe would stall it
        threading.Thread(target=lambda: [None for _ in gateway.stdout], daemon=True).start()
        time.sleep(3)
        rest = _status(gateway.pid)
        done, peak = asyncio.run(_load(f"http://127.0.0.1:{port}", args.seconds, args.clients,
                                       args.frames, gateway.pid))
        loaded = _status(gateway.pid)
        mib = lambda kb: kb / 1024  # noqa: E731
        print(f"gateway (--workers {args.workers}) RSS at rest: {mib(rest['VmRSS']):.0f} MiB "
              f"in {rest['processes']} processes")
        print(f"under load ({args.clients} clients, {args.seconds:g} s, {done} requests, "
              f"GetFrames of {args.frames} frames among them): RSS {mib(loaded['VmRSS']):.0f} "
              f"MiB at the end in {loaded['processes']} processes; highest sampled sum "
              f"{mib(peak['VmRSS']):.0f} MiB; sum of each process's own peak "
              f"{mib(loaded['VmHWM']):.0f} MiB")
    finally:
        gateway.terminate()
        sandbox.terminate()
        gateway.wait(30)
        sandbox.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
