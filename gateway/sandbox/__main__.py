"""``python -m gateway.sandbox``: the Cuebot stand-in on its own."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import server
from .dispatcher import DispatchSettings


def _positive(text: str) -> float:
    v = float(text)
    if not 0 < v <= 10000:
        raise argparse.ArgumentTypeError(f"expected a number above 0 and up to 10000, got {text}")
    return v


def _rate(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return v


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gateway.sandbox", allow_abbrev=False,
                                description="A Cuebot stand-in: OpenCue's gRPC API over a "
                                            "SQLite farm, with server reflection.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="gRPC port (default 8443, Cuebot's)")
    p.add_argument("--db", default=":memory:",
                   help="SQLite file (kept across restarts) or :memory: (the default)")
    demo = p.add_mutually_exclusive_group()
    demo.add_argument("--demo", dest="demo", action="store_true", default=True,
                      help="seed a new database with demo hosts and jobs (the default)")
    demo.add_argument("--empty", dest="demo", action="store_false",
                      help="seed a new database as a fresh Cuebot only")
    p.add_argument("--speed", type=_positive, default=1.0,
                   help="run the simulated clock N times faster (default 1)")
    p.add_argument("--no-dispatch", action="store_true",
                   help="do not run the dispatcher: frames stay where they are")
    p.add_argument("--failure-rate", type=_rate, default=0.0,
                   help="chance that a simulated render fails, 0 to 1 (default 0)")
    p.add_argument("--log-root", default=None, metavar="DIR",
                   help="where renders write their frame logs (default: beside --db, "
                        "or a temporary folder for :memory:)")
    p.add_argument("--scheduling-mode", default="PRIORITY_ONLY",
                   choices=("PRIORITY_ONLY", "FIFO", "BALANCED"),
                   help="Cuebot's dispatcher.scheduling_mode (default PRIORITY_ONLY)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--list-rpcs", action="store_true",
                   help="print the RPCs the sandbox implements (Markdown) and exit")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    sandbox = await server.start(
        args.db, host=args.host, port=args.port, demo=args.demo, dispatch=not args.no_dispatch,
        settings=DispatchSettings(speed=args.speed, failure_rate=args.failure_rate,
                                  scheduling_mode=args.scheduling_mode),
        log_root=args.log_root)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"sandbox Cuebot listening on {args.host}:{sandbox.port} (frame logs in "
          f"{sandbox.log_root})", flush=True)
    await stop.wait()
    await sandbox.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.list_rpcs:
        print(server.rpc_list_markdown(), end="")
        return 0
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(args))
    except OSError as e:
        print(f"gateway.sandbox: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
