#!/usr/bin/env python3
"""What protecting Cuebot buys, measured in one run against a real gRPC backend.

The gateway runs as its own process (``python -m gateway``); Cuebot is a
``RecordingCuebot`` (``tests/support.py``) in this process, on a loopback
port, that counts the calls it gets and how many are in flight at once, and
can answer slowly. "Down" is either nothing listening on its port (refused:
Cuebot's process is gone) or a Cuebot that takes calls and answers none
(stalled: a wedged JVM or database; each call meets its deadline). Each
figure is printed next to the same measurement with the protection turned
off, in the same run: absolute times mean little on a shared machine.

1. coalescing: 50 identical concurrent GetJobs against a backend that takes
   300 ms; Cuebot's call count and the distinct reply bodies the 50 clients got;
2. circuit breaker: 32 clients each polling every 500 ms while Cuebot is
   down, then while it comes back: how many requests waited a deadline, the
   refusals' p50/p99 once the circuit is open (as the clients saw them, and
   as the gateway's access log timed them, joined by request id), and the
   time from Cuebot listening (answering) again to the first 200, as a
   multiple of BREAKER_COOLDOWN;
3. the cap: 64 distinct concurrent GetJobs against a 100 ms backend with
   BACKEND_MAX_IN_FLIGHT=8; the most calls Cuebot had at once.

    python scripts/bench_protect.py [--down 20] [--stalled 10] [--cooldown 2]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiohttp  # noqa: E402
from opencue_proto import job_pb2  # noqa: E402

from support import SECRET, RecordingCuebot, auth_headers, free_port  # noqa: E402

GET_JOBS = "/job.JobInterface/GetJobs"
GET_SHOWS = "/show.ShowInterface/GetShows"
BODY = b'{"r":{"shows":["testing"],"includeFinished":true}}'
GRPC_TIMEOUT = 1.0  # seconds: a stalled Cuebot holds each unprotected call this long
UP_FOR = 3.0        # seconds of polling a live Cuebot before it goes down


def jobs_reply(n: int) -> bytes:
    return job_pb2.JobGetJobsResponse(jobs=job_pb2.JobSeq(jobs=[
        job_pb2.Job(id=f"id-{i}", name=f"testing-sh{i:03d}-user_job", show="testing")
        for i in range(n)])).SerializeToString()


class Gateway:
    """``python -m gateway``, its JSON log in a file: a pipe the benchmark must drain would
    make the gateway wait on its own access log whenever this process is busy."""

    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.port = free_port()
        full = {**os.environ, "PYTHONPATH": str(ROOT), "JWT_SECRET": SECRET,
                "LOG_FORMAT": "json", **env}
        self.log = tempfile.NamedTemporaryFile(prefix="bench-protect-", suffix=".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=full, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def durations(self) -> dict[str, float]:
        """Seconds the gateway spent on each request, by request id (its access log)."""
        out = {}
        with open(self.log.name, "rb") as f:
            for line in f:
                if b'"duration_ms"' in line:
                    entry = json.loads(line)
                    out[entry["request_id"]] = entry["duration_ms"] / 1000
        return out

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                try:
                    async with s.get(self.url + "/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if self.proc.poll() is not None:
                    raise SystemExit(f"the gateway exited ({self.proc.returncode})")
                await asyncio.sleep(0.05)
        raise SystemExit("the gateway did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.log.close()


async def start_gateway(port: int, **env: str) -> Gateway:
    gw = Gateway(port, {"CUEBOT_ENDPOINT": f"127.0.0.1:{port}", "RATE_LIMIT_RPS": "0",
                        "GRPC_TIMEOUT": str(GRPC_TIMEOUT), **env})
    await gw.ready()
    return gw


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 headers=auth_headers("bench"))


# ---------------------------------------------------------------------------
# 1. coalescing
# ---------------------------------------------------------------------------
async def coalescing(coalesce: bool) -> tuple[int, int, int, float]:
    """(Cuebot calls, distinct bodies, 200s, wall time / backend time) for 50 identical reads."""
    cuebot = await RecordingCuebot().start()
    cuebot.reply(GET_JOBS, jobs_reply(200), delay=0.3)
    gw = await start_gateway(cuebot.port, COALESCE_READS=str(coalesce).lower())
    try:
        async with session() as s:
            async def one() -> tuple[int, bytes]:
                async with s.post(gw.url + GET_JOBS, data=BODY) as r:
                    return r.status, await r.read()

            await one()  # a warm connection pool and channel
            before = cuebot.count(GET_JOBS)
            t0 = time.perf_counter()
            answers = await asyncio.gather(*(one() for _ in range(50)))
            wall = time.perf_counter() - t0
        calls = cuebot.count(GET_JOBS) - before
        return (calls, len({b for _, b in answers}), sum(st == 200 for st, _ in answers),
                wall / 0.3)
    finally:
        await asyncio.to_thread(gw.stop)
        await cuebot.stop()


# ---------------------------------------------------------------------------
# 2. Cuebot down, then back
# ---------------------------------------------------------------------------
@dataclass
class Outage:
    # request ids -> seconds seen by the client
    served: dict[str, float] = field(default_factory=dict)    # 200s before the outage
    refusals: dict[str, float] = field(default_factory=dict)  # by the open circuit
    all_down: dict[str, float] = field(default_factory=dict)  # every failure while down
    first_ok: float | None = None                             # after Cuebot is back
    requests: int = 0
    gateway: dict[str, float] = field(default_factory=dict)   # seconds in the gateway, by id

    def inside(self, ids: dict[str, float]) -> list[float]:
        """The gateway's own time for these requests (its access log)."""
        return [self.gateway[i] for i in ids if i in self.gateway]


async def outage(mode: str, breaker: bool, down_for: float, cooldown: float,
                 clients: int = 32, period: float = 0.5) -> Outage:
    port = free_port()
    cuebot = await RecordingCuebot().start(port=port)
    cuebot.reply(GET_SHOWS, b"")
    gw = await start_gateway(port, BREAKER_FAILURES="5" if breaker else "0",
                             BREAKER_COOLDOWN=str(cooldown))
    result = Outage()
    listening_at: list[float] = []
    stop, down = asyncio.Event(), asyncio.Event()
    stall = asyncio.Event()
    ids = itertools.count()
    try:
        async with session() as s:
            async with s.post(gw.url + GET_SHOWS, data=b"{}") as r:
                assert r.status == 200, await r.text()

            async def client(phase: float) -> None:
                await asyncio.sleep(phase)
                tick = time.perf_counter()
                while not stop.is_set():
                    # each client polls, as CueWeb does: one request per period, and
                    # after a slow one the next at once, not a burst to catch up
                    tick = max(tick + period, time.perf_counter())
                    await asyncio.sleep(tick - time.perf_counter())
                    rid = f"bench-{next(ids)}"
                    t0 = time.perf_counter()
                    async with s.post(gw.url + GET_SHOWS, data=b"{}",
                                      headers={"X-Request-Id": rid}) as r:
                        body = await r.read()
                        status = r.status
                    t1 = time.perf_counter()
                    if not down.is_set():
                        if status == 200 and t0 > warm:
                            result.served[rid] = t1 - t0
                        continue
                    result.requests += 1
                    if status == 200:
                        if listening_at and t0 >= listening_at[0] and result.first_ok is None:
                            result.first_ok = t1 - listening_at[0]
                            stop.set()
                        continue
                    if not listening_at:
                        result.all_down[rid] = t1 - t0
                        if b"circuit" in body:
                            result.refusals[rid] = t1 - t0

            warm = time.perf_counter() + 0.5  # connections opened, caches warm
            tasks = [asyncio.ensure_future(client(period * i / clients))
                     for i in range(clients)]
            await asyncio.sleep(UP_FOR)  # the same clients, Cuebot up: the reference
            if mode == "stalled":
                cuebot.reply(GET_SHOWS, b"", hold=stall)
            else:
                await cuebot.stop()
            down.set()
            down_at = time.perf_counter()
            await asyncio.sleep(max(0.0, down_for - (time.perf_counter() - down_at)))
            if mode == "stalled":
                back = cuebot
                cuebot.reply(GET_SHOWS, b"")
                stall.set()
            else:
                back = RecordingCuebot(replies=cuebot.replies)
                await back.start(port=port)
            listening_at.append(time.perf_counter())
            try:
                await asyncio.wait_for(stop.wait(), 180)
            except asyncio.TimeoutError:
                stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            stall.set()
            await back.stop()
    finally:
        await asyncio.to_thread(gw.stop)
        result.gateway = gw.durations()
        gw.close()
    return result


def waited(r: "Outage") -> int:
    return sum(1 for t in r.all_down.values() if t >= GRPC_TIMEOUT / 2)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def pair(values: "list[float] | dict[str, float]") -> str:
    """p50/p99 in ms, or - when there is nothing to measure."""
    if not values:
        return "-"
    return f"{ms(pct(values, 50))}/{ms(pct(values, 99))}"


def pct(values: "list[float] | dict[str, float]", p: float) -> float:
    if isinstance(values, dict):
        values = list(values.values())
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# ---------------------------------------------------------------------------
# 3. the cap
# ---------------------------------------------------------------------------
async def capped(cap: int | None) -> tuple[int, int]:
    """(most calls at Cuebot at once, 200s) for 64 distinct concurrent reads."""
    cuebot = await RecordingCuebot().start()
    cuebot.reply(GET_JOBS, jobs_reply(10), delay=0.1)
    env = {"BACKEND_MAX_IN_FLIGHT": str(cap)} if cap else {}
    gw = await start_gateway(cuebot.port, **env)
    try:
        async with session() as s:
            async def one(i: int) -> int:
                body = b'{"r":{"shows":["show%d"]}}' % i
                async with s.post(gw.url + GET_JOBS, data=body) as r:
                    await r.read()
                    return r.status

            statuses = await asyncio.gather(*(one(i) for i in range(64)))
        return cuebot.max_in_flight, sum(st == 200 for st in statuses)
    finally:
        await asyncio.to_thread(gw.stop)
        await cuebot.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--down", type=float, default=20.0,
                    help="seconds Cuebot stays down refusing connections (long enough for "
                         "gRPC's reconnect back-off to grow)")
    ap.add_argument("--stalled", type=float, default=10.0,
                    help="seconds Cuebot stays up answering nothing (each call meets its "
                         "deadline)")
    ap.add_argument("--cooldown", type=float, default=2.0, help="BREAKER_COOLDOWN")
    args = ap.parse_args()

    print("1. 50 identical concurrent GetJobs, backend answers in 300 ms")
    print(f"{'coalescing':<12}{'Cuebot calls':>14}{'distinct bodies':>17}{'200s':>6}"
          f"{'wall / 300 ms':>15}")
    for on in (True, False):
        calls, bodies, ok, wall = await coalescing(on)
        print(f"{'on' if on else 'off':<12}{calls:>14}{bodies:>17}{ok:>6}{wall:>15.2f}")

    print(f"\n2. Cuebot down under 32 clients each polling every 500 ms, then back "
          f"(refused {args.down:g} s, stalled {args.stalled:g} s; GRPC_TIMEOUT {GRPC_TIMEOUT:g} s, "
          f"BREAKER_COOLDOWN {args.cooldown:g} s)")
    print(f"{'down as':<9}{'breaker':<8}{'asks':>6}{'circuit':>8}{'waited':>7}"
          f"{'up p50/p99':>12}{'circuit p50/p99':>16}{'in gw: up':>11}{'circuit':>12}"
          f"{'first 200':>11}")
    rows: dict[tuple[str, bool], Outage] = {}
    for mode in ("refused", "stalled"):
        for breaker in (True, False):
            r = rows[(mode, breaker)] = await outage(
                mode, breaker, args.down if mode == "refused" else args.stalled, args.cooldown)
            first = f"{r.first_ok / args.cooldown:.2f} cd" if r.first_ok is not None else "-"
            print(f"{mode:<9}{'on' if breaker else 'off':<8}{r.requests:>6}{len(r.refusals):>8}"
                  f"{waited(r):>7}{pair(r.served):>12}{pair(r.refusals):>16}"
                  f"{pair(r.inside(r.served)):>11}{pair(r.inside(r.refusals)):>12}{first:>11}")
    print("(asks: requests while Cuebot was down; circuit: of them, refused by the open circuit;\n"
          " waited: of them, answered after half GRPC_TIMEOUT or more. Latencies in ms, p50/p99,\n"
          " as the clients saw them and, 'in gw', as the gateway's access log timed them;\n"
          " up: 200s from a live, instant Cuebot, the same clients just before the outage.\n"
          " first 200: from Cuebot listening (answering) again, in BREAKER_COOLDOWNs)")
    for mode in ("refused", "stalled"):
        on, off = rows[(mode, True)], rows[(mode, False)]
        up, refused = on.inside(on.served), on.inside(on.refusals)
        print(f"  {mode}: in the gateway, a circuit refusal / a 200 from a live Cuebot: p50 "
              f"{pct(refused, 50) / pct(up, 50):.2f}, p99 {pct(refused, 99) / pct(up, 99):.2f}; "
              f"requests answered while down, breaker on / off {on.requests / off.requests:.1f}")
        if on.first_ok and off.first_ok:
            print(f"  {mode}: time to first 200, breaker off / on = "
                  f"{off.first_ok / on.first_ok:.1f}")

    print("\n3. 64 distinct concurrent GetJobs, backend answers in 100 ms")
    print(f"{'BACKEND_MAX_IN_FLIGHT':<24}{'most at Cuebot at once':>24}{'200s':>6}")
    for cap in (8, None):
        most, ok = await capped(cap)
        print(f"{(str(cap) if cap else '256 (default)'):<24}{most:>24}{ok:>6}")


if __name__ == "__main__":
    asyncio.run(main())
