#!/usr/bin/env python3
"""Instructions per small request, ours and the floor's, counted by callgrind.

Wall-clock and CPU figures on a shared machine move with whatever else
runs; instruction counts do not (the same count twice, whatever the load).
Each server runs under ``valgrind --tool=callgrind`` in front of the same
canned backend as ``bench_e2e.py``; after a warm-up its counters are zeroed,
N ``GetShows`` calls are made (one after another, or over ``--concurrency`` connections
at once), and the counters are dumped:

    instructions per request = instructions counted / N

User-space instructions only: the kernel's part of a request (socket calls,
wake-ups), the same for both servers, is not in them, so the ratio here is
an upper bound of the CPU ratio ``bench_e2e.py`` measures. Needs valgrind
(Debian: ``apt-get install valgrind``).

    python scripts/bench_instructions.py [--requests 300] [--concurrency 1] [--compare DIR]
                                         [--env NAME=VALUE]

``--env`` changes a setting of our gateway (e.g. ``LOG_LEVEL=warning`` to
see what the access log costs); ``--compare`` adds another checkout's gateway.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_e2e  # noqa: E402 - the canned backend and the floor live there

PATH = bench_e2e.SMALL


async def _drive(url: str, n: int, token: str, conns: int = 1) -> None:
    """``n`` calls over ``conns`` connections, each making its share one after another."""
    import aiohttp

    async def client(share: int) -> None:
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {token}"},
                connector=aiohttp.TCPConnector(limit=1)) as s:
            for _ in range(share):
                async with s.post(url, data=b"{}") as r:
                    if r.status != 200:
                        raise SystemExit(f"{url}: {r.status} {await r.text()}")
                    await r.read()

    await asyncio.gather(*(client(n // conns + (i < n % conns)) for i in range(conns)))


def _wait_up(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 300  # Python under callgrind starts slowly
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return
        except urllib.error.HTTPError:
            return  # an answer, whatever it is (the floor has no /healthz)
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text()[-2000:]}") from None
            time.sleep(1)
    raise SystemExit("server did not start under callgrind")


def count(name: str, argv: list[str], env: dict[str, str], cwd: Path, port: int, n: int,
          token: str, tmp: Path, conns: int = 1) -> float:
    out = tmp / name
    out.mkdir()
    log = out / "log"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p",
         "--dump-instr=no", *argv], env=env, cwd=cwd, stdout=log.open("w"),
        stderr=subprocess.STDOUT)
    try:
        _wait_up(port, proc, log)
        url = f"http://127.0.0.1:{port}{PATH}"
        asyncio.run(_drive(url, 100, token, conns))  # warm-up: first-call work
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       capture_output=True)
        asyncio.run(_drive(url, n, token, conns))
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       capture_output=True)
        time.sleep(1)
        dump = max(out.glob("cg.*"), key=lambda p: p.stat().st_mtime)
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]) / n
        raise SystemExit(f"no totals in {dump}")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=1,
                    help="connections making the calls at once")
    ap.add_argument("--compare", type=Path, help="another checkout's gateway, as 'before'")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting of our gateway")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (Debian: apt-get install valgrind)")
    sys.path.insert(0, str(ROOT))
    from gateway.auth import mint

    token = mint(bench_e2e.SECRET, "bench", 24 * 3600)
    tmp = Path(tempfile.mkdtemp(prefix="bench-instr-"))
    bport = bench_e2e.free_port()
    backend = f"127.0.0.1:{bport}"
    me = [sys.executable, str(HERE / "bench_e2e.py")]
    back = bench_e2e.start("backend", me + ["--role", "backend", "--port", str(bport)],
                           dict(os.environ), bport, tmp / "backend.log", ready="ready")
    results: list[tuple[str, float]] = []
    try:
        for name, src in (("ours", ROOT), ("before", args.compare)):
            if src is None:
                continue
            port = bench_e2e.free_port()
            env = bench_e2e.gateway_env(src.resolve(), backend)
            if name == "ours":
                env.update(kv.split("=", 1) for kv in args.env)
            results.append((name, count(
                name, [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port",
                       str(port)], env, src.resolve(), port, args.requests, token, tmp,
                args.concurrency)))
        port = bench_e2e.free_port()
        results.append(("floor", count(
            "floor", me + ["--role", "floor", "--port", str(port), "--backend", backend],
            dict(os.environ), ROOT, port, args.requests, token, tmp, args.concurrency)))
    finally:
        back.proc.terminate()
        back.proc.wait(10)
    floor = results[-1][1]
    print(f"instructions per {PATH} request (callgrind, {args.requests} requests each"
          + (f" over {args.concurrency} connections" if args.concurrency > 1 else "")
          + (f"; ours with {' '.join(args.env)}" if args.env else "") + "):")
    for name, ir in results:
        print(f"  {name:7s} {ir:12,.0f}   {ir / floor:5.2f}x floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
