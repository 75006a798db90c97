"""``opencue-gateway``: read settings, load descriptors, serve until told to stop.

Start-up failures (bad setting, missing descriptors, port taken) end the
process with one line on stderr and a non-zero exit code, never a traceback:
exit 2 for a bad setting, 1 for anything else (130 if interrupted before it is up).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Sequence

from aiohttp import web

from . import config as config_mod
from . import descriptors
from .app import GatewayState, create_app
from .backend import Backend
from .config import Config, ConfigError
from .descriptors import DescriptorError
from .routes import MethodTable
from .server import GatewayRunner

log = logging.getLogger("gateway")


class StartupError(Exception):
    """The gateway cannot start; the message says why."""


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiohttp's own access log is replaced by gateway.access
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def build_state(cfg: Config) -> GatewayState:
    """Backend channel, descriptors and method table, ready to serve."""
    try:
        backend = Backend(cfg)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    try:
        descs = await descriptors.load(cfg, backend.channel)
        table = MethodTable.build(descs, backend.unary, cfg.services, cfg.exclude_services)
    except DescriptorError as e:
        await backend.close()
        raise StartupError(str(e)) from None
    if not table.routes:
        await backend.close()
        raise StartupError(
            f"{descs.source}: no service left to expose; check SERVICES / EXCLUDE_SERVICES"
        )
    log.info("descriptors: %s, version %s: %d services, %d methods exposed",
             descs.source, descs.version, len(table.services), len(table.routes))
    if table.hidden_services:
        log.info("not exposed: %s", ", ".join(table.hidden_services))
    for alias, real in table.aliases():
        log.info("alias: /%s/* -> /%s/*", alias, real)
    return GatewayState(cfg=cfg, backend=backend, table=table)


async def _start_sandbox(cfg: Config) -> tuple[Config, object]:
    """The embedded Cuebot stand-in, and the settings pointing the gateway at it."""
    from .sandbox import server as sandbox_server  # only this mode needs it

    try:
        from .sandbox.dispatcher import DispatchSettings

        sb = await sandbox_server.start(
            cfg.sandbox_db, demo=not cfg.empty, dispatch=not cfg.no_dispatch,
            settings=DispatchSettings(speed=cfg.speed, failure_rate=cfg.failure_rate))
    except Exception as e:  # noqa: BLE001 - a bad database path, a full disk...
        raise StartupError(f"sandbox: {e}") from None
    return cfg.with_(cuebot_endpoint=sb.endpoint), sb


async def serve(cfg: Config, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set (or SIGINT/SIGTERM arrives)."""
    sandbox = None
    if cfg.sandbox:
        cfg, sandbox = await _start_sandbox(cfg)
    try:
        await _serve(cfg, stop, sandbox)
    finally:
        if sandbox is not None:
            await sandbox.stop()


async def _serve(cfg: Config, stop: asyncio.Event | None, sandbox: object | None) -> None:
    state = await build_state(cfg)
    runner = GatewayRunner(create_app(state), access_log=None, handle_signals=False)
    try:
        await runner.setup()  # from here on, runner.cleanup() closes the backend too
        # Handlers go in before the "listening on" line: a supervisor may send
        # SIGTERM as soon as it sees that line, and the default action would
        # kill the process without a clean shutdown (exit -15, not 0).
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        site = web.TCPSite(runner, cfg.host, cfg.port)
        try:
            await site.start()
        except OSError as e:
            raise StartupError(f"cannot listen on {cfg.host}:{cfg.port}: "
                               f"{e.strerror or e}") from None
        for addr in runner.addresses:
            host, port = addr[0], addr[1]
            log.info("listening on http://%s:%d (Cuebot at %s%s)",
                     f"[{host}]" if ":" in host else host, port, cfg.cuebot_endpoint,
                     ", the sandbox" if sandbox else "")
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = config_mod.load(argv, os.environ)
    except ConfigError as e:
        print(f"opencue-gateway: error: {e}", file=sys.stderr)
        return 2
    _setup_logging(cfg.log_level)
    try:
        asyncio.run(serve(cfg))
    except StartupError as e:
        print(f"opencue-gateway: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C before serve() installed its own handler (e.g. during a slow
        # --reflection fetch): asyncio.run re-raises it; say so, no traceback.
        print("opencue-gateway: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line, details on request
        log.debug("unexpected failure", exc_info=True)
        print(f"opencue-gateway: error: unexpected {type(e).__name__}: {e} "
              "(LOG_LEVEL=debug shows where)", file=sys.stderr)
        return 1
    return 0
