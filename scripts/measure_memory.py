#!/usr/bin/env python3
"""Resident memory of a gateway process at rest and under load: the figures behind
the Kubernetes manifests' resource requests and limits (deploy/kubernetes/).

Starts the sandbox Cuebot (``python -m gateway.sandbox``) and one gateway process in
front of it, reads the gateway's RSS from /proc once it is up, then drives it with
concurrent clients for a while — small replies (GetShows), job listings (GetJobs) and
a large one (GetFrames of a job of FRAMES frames, several MB of JSON) — sampling RSS,
and prints RSS at rest, RSS at the end of the load and the peak (VmHWM), in MiB.

    python scripts/measure_memory.py [--seconds 20] [--clients 32] [--frames 5000]

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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "measure-memory-secret-0123456789abcdef"


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])  # kB
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


async def _load(url: str, seconds: float, clients: int, frames: int, pid: int) -> int:
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

        await asyncio.gather(*(client(i) for i in range(clients)))
        return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--frames", type=int, default=5000)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    sandbox, endpoint = _start([sys.executable, "-m", "gateway.sandbox", "--port", "0",
                                "--no-dispatch"], r"listening on (\S+:\d+)", env)
    gw_env = {**env, "JWT_SECRET": SECRET, "CUEBOT_ENDPOINT": endpoint, "RATE_LIMIT_RPS": "0",
              "LOG_LEVEL": "warning", "REST_HOST": "127.0.0.1", "REST_PORT": "0"}
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "--log-level", "info"],
                               cwd=ROOT, env=gw_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert gateway.stdout is not None
        port = None
        for line in gateway.stdout:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "gateway did not start"
        time.sleep(2)
        rest = _status(gateway.pid)
        done = asyncio.run(_load(f"http://127.0.0.1:{port}", args.seconds, args.clients,
                                 args.frames, gateway.pid))
        loaded = _status(gateway.pid)
        mib = lambda kb: kb / 1024  # noqa: E731
        print(f"gateway RSS at rest: {mib(rest['VmRSS']):.0f} MiB")
        print(f"under load ({args.clients} clients, {args.seconds:g} s, {done} requests, "
              f"GetFrames of {args.frames} frames among them): RSS {mib(loaded['VmRSS']):.0f} "
              f"MiB at the end, peak {mib(loaded['VmHWM']):.0f} MiB")
    finally:
        gateway.terminate()
        sandbox.terminate()
        gateway.wait(30)
        sandbox.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
