#!/usr/bin/env python3
"""The gateway end to end under load, against a floor, as ratios measured in one run.

Three HTTP servers front one canned gRPC backend (its own process; replies
are pre-serialized bytes, so it costs next to nothing):

  ours    ``python -m gateway`` with auth, rate limits (a limit far above the
          load, so every request spends and none is refused), metrics and the
          access log (info level, to a file) all on;
  floor   a bare aiohttp handler making the same raw ``grpc.aio`` call (bytes,
          timeout, metadata of the same shape) and returning the reply bytes:
          the same libraries doing nothing else, as they come (asyncio's
          loop; ``--uvloop-floor`` adds the same floor on uvloop, for context);
  before  optional (``--compare DIR``): the gateway from another checkout,
          e.g. a worktree of the previous commit, configured as ``ours``.

``wrk`` (Debian: ``apt-get install wrk``) drives them in interleaved rounds.
CPU is read from ``/proc/<pid>/stat`` of each server and its child processes
(utime + stime), memory from ``/proc/<pid>/status``. Printed:

  - CPU per small request (``show.ShowInterface/GetShows``), ours / floor, at
    concurrency 1 and 16 (median of the rounds' ratios);
  - small-call p50/p99 alone and while 2 clients fetch 10,000 frames
    (``job.JobInterface/GetFrames``, 6.4 MB of JSON), and their ratio;
  - 10,000-frame throughput (requests/s; ratio to ``before`` when given);
  - RSS at rest, under small-call load, peak while serving 10,000 frames,
    and after large replies (immediately and once settled, up to a minute);
    the peak also split between the serving process and its children (the
    conversion processes), as the median of the rounds.

    python scripts/bench_e2e.py [--rounds 3] [--seconds 4] [--compare DIR] [--uvloop-floor]
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
SECRET = "bench-e2e-secret-0123456789abcdef0123"
SMALL = "/show.ShowInterface/GetShows"
LARGE = "/job.JobInterface/GetFrames"
TICK = os.sysconf("SC_CLK_TCK")
METADATA = (("x-request-id", "0123456789abcdef" * 2), ("x-opencue-user", "bench"))


def vector(name: str) -> bytes:
    p = VECTORS / name
    return p.read_bytes() if p.exists() else gzip.decompress((VECTORS / f"{name}.gz").read_bytes())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# the roles this script plays in its child processes
# ---------------------------------------------------------------------------
def serve_backend(port: int) -> None:
    """Canned Cuebot: every method answers pre-serialized bytes."""
    import grpc

    replies = {SMALL: vector("show1.binpb"), LARGE: vector("frames10k.binpb")}

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            data = replies.get(details.method, b"")

            async def unary(request: bytes, context: object) -> bytes:
                return data

            return grpc.unary_unary_rpc_method_handler(unary)

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_send_message_length", -1)])
        server.add_generic_rpc_handlers((Handler(),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def serve_floor(port: int, backend: str, on_uvloop: bool = False) -> None:
    """The floor: aiohttp + grpc.aio, the same raw call, nothing else.

    The same call as the gateway's: raw bytes, a timeout, and metadata of the
    same shape (a 32-hex-digit request id, a user name). On asyncio's loop,
    as the libraries come; ``on_uvloop`` (``--uvloop-floor``) for context.
    """
    import grpc
    from aiohttp import web

    async def main() -> None:
        channel = grpc.aio.insecure_channel(
            backend, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        calls: dict[str, object] = {}

        async def handle(request: web.Request) -> web.Response:
            call = calls.get(request.path)
            if call is None:
                call = calls[request.path] = channel.unary_unary(request.path)
            body = await request.read()
            reply = await call(body, timeout=30, metadata=METADATA)  # type: ignore[operator]
            return web.Response(body=reply, content_type="application/json")

        app = web.Application()
        app.router.add_route("POST", "/{path:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("listening on", port, flush=True)
        await asyncio.Event().wait()

    if on_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# ---------------------------------------------------------------------------
# measuring processes
# ---------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def status_mb(pid: int, key: str = "VmRSS") -> float:
    """``key`` of /proc/<pid>/status (kB) of that one process, in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """``key`` of /proc/<pid>/status (kB) summed over the process tree, in MB."""
    return sum(status_mb(p, key) for p in tree(pid))


def reset_peak(pid: int) -> None:
    for p in tree(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            pass


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(name: str, argv: list[str], env: dict[str, str], port: int, log: Path,
          ready: str = "listening on", cwd: Path = ROOT) -> Server:
    out = log.open("w")
    # cwd matters: ``python -m`` imports from it before PYTHONPATH
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready in log.read_text():
            return Server(name, proc, port, log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"{name} did not start:\n{log.read_text()[-3000:]}")


def gateway_env(src: Path, backend: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RATE_LIMIT", "JWT_"))}
    env.update({
        "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1", "JWT_SECRET": SECRET,
        "CUEBOT_ENDPOINT": backend, "LOG_LEVEL": "info",
        # on, spending per request, never refusing under this load
        "RATE_LIMIT_RPS": "1000000", "RATE_LIMIT_BURST": "1000000",
        # wrk's requests are identical: coalescing would answer most concurrent
        # ones from one Cuebot call, which is its point but not what is measured
        # here (the cost of serving each request); --before-env can turn it on
        "COALESCE_READS": "false",
    })
    return env


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------
LUA = """
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


@dataclass
class Run:
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    seconds: float
    cpu: float = 0.0
    rss_max: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk_argv(url: str, path: str, conns: int, seconds: float, script: Path) -> list[str]:
    return ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(script),
            url + path]


def parse(out: str) -> Run:
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise SystemExit("wrk said:\n" + out)
    req, err, p50, p99, dur = (int(x) for x in m.groups())
    return Run(req, err, p50 / 1000, p99 / 1000, dur / 1e6)


def drive(server: Server, path: str, conns: int, seconds: float, script: Path,
          background: tuple[str, int] | None = None) -> Run:
    """One wrk run against ``server`` (CPU and peak RSS of it meanwhile).

    ``background``: (path, connections) of a second wrk on the same server
    for the whole run, started first (e.g. clients fetching 10,000 frames).
    """
    bg = None
    if background is not None:
        bg = subprocess.Popen(wrk_argv(server.url, background[0], background[1],
                                       seconds + 2, script),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
    pid = server.proc.pid
    c0 = cpu_seconds(pid)
    proc = subprocess.Popen(wrk_argv(server.url, path, conns, seconds, script),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mb(pid))
        time.sleep(0.2)
    cpu = cpu_seconds(pid) - c0
    run = parse(proc.stdout.read())  # type: ignore[union-attr]
    run.cpu, run.rss_max = cpu, peak
    if bg is not None:
        bg_out = bg.communicate()[0]
        if parse(bg_out).errors:
            raise SystemExit(f"{server.name}: background wrk had errors:\n{bg_out}")
    if run.errors:
        raise SystemExit(f"{server.name}: {run.errors} errors in {run.requests} requests "
                         f"of {path}; log: {server.log}")
    return run


def settle(pid: int, target: float, limit: float) -> tuple[float, float]:
    """Wait until RSS is at most ``target`` MB or ``limit`` s pass: (RSS, seconds)."""
    t0 = time.monotonic()
    while True:
        rss = rss_mb(pid)
        waited = time.monotonic() - t0
        if rss <= target or waited >= limit:
            return rss, waited
        time.sleep(1.0)


# ---------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each wrk run")
    ap.add_argument("--compare", type=Path, help="another checkout's gateway, run as 'before'")
    ap.add_argument("--before-env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment of the 'before' gateway (implies --compare . if absent), "
                         "to compare settings in one run")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="how long to wait for RSS to come back after large replies")
    ap.add_argument("--uvloop-floor", action="store_true",
                    help="also measure the floor on uvloop (ours runs on it by default; the "
                         "floor proper keeps asyncio's loop), and print ours against it")
    ap.add_argument("--role", choices=("backend", "floor", "floor-uv"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "backend":
        serve_backend(args.port)
        return 0
    if args.role in ("floor", "floor-uv"):
        serve_floor(args.port, args.backend, on_uvloop=args.role == "floor-uv")
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")

    sys.path.insert(0, str(ROOT))
    from gateway.auth import mint

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    script = tmp / "post.lua"
    script.write_text(LUA % mint(SECRET, "bench", 24 * 3600))
    bport = free_port()
    backend = f"127.0.0.1:{bport}"
    me = [sys.executable, str(Path(__file__).resolve())]
    servers: list[Server] = []
    try:
        servers.append(start("backend", me + ["--role", "backend", "--port", str(bport)],
                             dict(os.environ), bport, tmp / "backend.log", ready="ready"))
        gws: list[Server] = []
        before = args.compare or (ROOT if args.before_env else None)
        for name, src in (("ours", ROOT), ("before", before)):
            if src is None:
                continue
            port = free_port()
            env = gateway_env(src.resolve(), backend)
            if name == "before":
                env.update(kv.split("=", 1) for kv in args.before_env)
            gws.append(start(name, [sys.executable, "-m", "gateway", "--host", "127.0.0.1",
                                    "--port", str(port)], env, port, tmp / f"{name}.log",
                             cwd=src.resolve()))
        fport = free_port()
        floor = start("floor", me + ["--role", "floor", "--port", str(fport),
                                     "--backend", backend],
                      dict(os.environ), fport, tmp / "floor.log")
        floors = [floor]
        if args.uvloop_floor:
            uport = free_port()
            floors.append(start("floor-uv", me + ["--role", "floor-uv", "--port", str(uport),
                                                  "--backend", backend],
                                dict(os.environ), uport, tmp / "floor-uv.log"))
        servers += gws + floors
        everyone = gws + floors
        short = max(2.0, args.seconds / 2)
        for s in everyone:  # warm up: connections, caches, first-call imports
            drive(s, SMALL, 4, 1, script)
        time.sleep(1.0)
        rest = {s.name: rss_mb(s.proc.pid) for s in everyone}

        # small calls first, so that their memory figure is not a large reply's
        cpu: dict[tuple[str, int], list[float]] = {}
        loaded_rss: dict[str, float] = {}
        for r in range(args.rounds):
            for conns in (1, 16):
                for s in everyone:
                    run = drive(s, SMALL, conns, args.seconds, script)
                    cpu.setdefault((s.name, conns), []).append(run.cpu / run.requests)
                    loaded_rss[s.name] = max(loaded_rss.get(s.name, 0), run.rss_max)
            print(f"round {r + 1}/{args.rounds} (small calls) done", file=sys.stderr)
        for s in gws:
            drive(s, LARGE, 1, 1, script)

        alone: dict[str, list[Run]] = {}
        mixed: dict[str, list[Run]] = {}
        large: dict[str, list[Run]] = {}
        peak_large: dict[str, float] = {}
        peak_split: dict[str, list[tuple[float, float]]] = {}  # (serving, its children)
        for r in range(args.rounds):
            for s in gws:
                alone.setdefault(s.name, []).append(drive(s, SMALL, 1, args.seconds, script))
                mixed.setdefault(s.name, []).append(
                    drive(s, SMALL, 1, args.seconds, script, background=(LARGE, 2)))
                base, base_own = rss_mb(s.proc.pid), status_mb(s.proc.pid)
                reset_peak(s.proc.pid)
                run = drive(s, LARGE, 1, short, script)
                total = rss_mb(s.proc.pid, "VmHWM") - base
                own = status_mb(s.proc.pid, "VmHWM") - base_own
                peak_large[s.name] = max(peak_large.get(s.name, 0), total)
                peak_split.setdefault(s.name, []).append((own, total - own))
                large.setdefault(s.name, []).append(drive(s, LARGE, 2, args.seconds, script))
            print(f"round {r + 1}/{args.rounds} (large replies) done", file=sys.stderr)
        after = {s.name: rss_mb(s.proc.pid) for s in gws}
        settled = {s.name: settle(s.proc.pid, 1.25 * rest[s.name], args.settle) for s in gws}
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in servers:
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.proc.kill()

    med = statistics.median
    json_mb = len(vector("frames10k.go.json")) / 1e6
    print(f"\nCPU per small request ({SMALL}), ratio to the floor "
          f"(median of {args.rounds} interleaved rounds):")
    for conns in (1, 16):
        for g in gws:
            ratios = [a / b for a, b in zip(cpu[(g.name, conns)], cpu[("floor", conns)])]
            print(f"  c={conns:<3} {g.name:7s} {med(ratios):5.2f}x floor")
            if os.environ.get("BENCH_DEBUG"):  # the per-round figures behind the ratio
                print("    us/req", [round(x * 1e6) for x in cpu[(g.name, conns)]],
                      [round(x * 1e6) for x in cpu[("floor", conns)]])
    if args.uvloop_floor:
        print("\nThe same, against the floor on uvloop (context: the floor above keeps "
              "asyncio's loop):")
        for conns in (1, 16):
            for g in gws:
                ratios = [a / b for a, b in zip(cpu[(g.name, conns)],
                                                cpu[("floor-uv", conns)])]
                print(f"  c={conns:<3} {g.name:7s} {med(ratios):5.2f}x floor on uvloop")
    print("\nSmall-call latency, alone and while 2 clients fetch 10,000 frames "
          "(median of rounds):")
    for g in gws:
        a50, a99 = med(x.p50_ms for x in alone[g.name]), med(x.p99_ms for x in alone[g.name])
        m50, m99 = med(x.p50_ms for x in mixed[g.name]), med(x.p99_ms for x in mixed[g.name])
        print(f"  {g.name:7s} p50 {a50:7.2f} -> {m50:7.2f} ms ({m50 / a50:5.1f}x)   "
              f"p99 {a99:7.2f} -> {m99:7.2f} ms ({m99 / a99:5.1f}x)")
    print("\n10,000-frame replies, 2 clients (median of rounds):")
    base_rps = med(x.rps for x in large[gws[-1].name]) if len(gws) > 1 else None
    for g in gws:
        rps = med(x.rps for x in large[g.name])
        rel = f"  ({rps / base_rps:4.2f}x before)" if base_rps and g.name != "before" else ""
        print(f"  {g.name:7s} {rps:7.1f} replies/s{rel}")
    print(f"\nMemory (RSS of the process and its children, MB; the reply is "
          f"{json_mb:.1f} MB of JSON):")
    print(f"  {'':7s} {'at rest':>8s} {'small load':>10s} {'peak extra 10k':>15s} "
          f"{'after large':>11s} {'settled':>8s}")
    for g in gws:
        rss, waited = settled[g.name]
        print(f"  {g.name:7s} {rest[g.name]:8.1f} "
              f"{loaded_rss[g.name]:10.1f} {peak_large[g.name]:8.1f} "
              f"({peak_large[g.name] / json_mb:3.1f}x) {after[g.name]:11.1f} "
              f"{rss:8.1f} ({rss / rest[g.name]:4.2f}x at rest, after {waited:.0f} s)")
    print(f"  {'floor':7s} {rest['floor']:8.1f} {loaded_rss['floor']:10.1f}")
    print("\nPeak extra 10k by process (MB, x the JSON; median of rounds, whose largest "
          "total is the column above):")
    for g in gws:
        own = med(x[0] for x in peak_split[g.name])
        kids = med(x[1] for x in peak_split[g.name])
        print(f"  {g.name:7s} serving process {own:6.1f} ({own / json_mb:3.1f}x)   "
              f"conversion processes {kids:6.1f} ({kids / json_mb:3.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
