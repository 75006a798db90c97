"""``--workers N``: N gateway processes on one port, kept alive by a supervisor.

One Python process serves on one core; a multi-core host runs several. Each
worker is a complete gateway (own event loop, own Cuebot channel, own method
table) listening on the same port with SO_REUSEPORT, so the kernel spreads
connections across them with no proxy in between. The supervisor (this
process) does not serve: it reserves the port, starts the workers (spawned,
not forked: gRPC does not survive fork), forwards SIGHUP so every worker
reloads, restarts a worker that dies, and on SIGTERM stops them all within
``SHUTDOWN_GRACE``. In ``--sandbox`` mode it also runs the sandbox, which
every worker uses.

Rate limits are per process unless ``RATE_LIMIT_REDIS_URL`` is set: N
workers with local buckets admit N times the rate. Metrics are aggregated
across workers through ``PROMETHEUS_MULTIPROC_DIR``, which the supervisor
creates for them; in it, the count of completed writes that keeps reads
coalesced or cached in one worker from predating a write made through
another (``writes.py``).
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from . import loops, optional, writes
from .config import Config
from .startup import StartupError, sandbox_banner, start_sandbox

log = logging.getLogger("gateway.workers")

SUPERVISOR_ENV = "OPENCUE_GATEWAY_SUPERVISOR"  # set for the workers: the supervisor's pid
READY_TIMEOUT = 120.0   # seconds for every worker to load descriptors and listen
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class _Worker:
    index: int
    process: Any                 # multiprocessing.Process
    started: float
    restarts: int = 0


def _child(cfg: Config, index: int, ready: Any) -> None:
    """A worker's main: the ordinary gateway, on the shared port."""
    from . import logs, shutdown

    logs.setup(cfg.log_level, cfg.log_format, f"w{index}", cfg.access_log_flush)
    shutdown.enable_watchdog()
    optional.leave_out(cfg)
    from . import serving

    pid = os.getpid()
    try:
        loops.run(serving.run_worker(cfg, lambda: ready.put((index, pid, None)),
                                     first=index == 0), cfg.event_loop)
    except (serving.StartupError, loops.LoopUnavailable) as e:
        ready.put((index, pid, str(e)))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (not listen) the port with SO_REUSEPORT: it is ours, and workers may share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ctx = multiprocessing.get_context("spawn")
        self.ready = self.ctx.Queue()
        self.workers: dict[int, _Worker] = {}
        self.stopping = asyncio.Event()
        self.metrics_dir: str | None = None

    def _start(self, index: int, restarts: int = 0) -> _Worker:
        p = self.ctx.Process(target=_child, args=(self.cfg, index, self.ready),
                             name=f"opencue-gateway-w{index}", daemon=False)
        p.start()
        log.info("worker %d started (pid %s)", index, p.pid)
        w = _Worker(index, p, time.monotonic(), restarts)
        self.workers[index] = w
        return w

    async def _wait_ready(self, n: int) -> None:

        pending = set(range(n))
        deadline = time.monotonic() + READY_TIMEOUT
        while pending:
            if time.monotonic() > deadline:
                raise StartupError(f"workers {sorted(pending)} did not start within "
                                   f"{READY_TIMEOUT:g} s")
            if self.stopping.is_set():
                return
            try:
                index, _pid, error = await asyncio.to_thread(self.ready.get, True, 0.2)
            except Exception:  # noqa: BLE001 - queue.Empty: look at the processes again
                for i in list(pending):
                    code = self.workers[i].process.exitcode
                    if code is not None:
                        raise StartupError(f"worker {i} exited ({code}) while starting")
                continue
            if error is not None:
                raise StartupError(error)
            pending.discard(index)

    def _forward(self, sig: int) -> None:
        for w in self.workers.values():
            if w.process.exitcode is None and w.process.pid is not None:
                try:
                    os.kill(w.process.pid, sig)
                except OSError:
                    pass

    def _reaped(self, w: _Worker) -> None:
        if self.metrics_dir is None:
            return
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(w.process.pid, self.metrics_dir)
        except Exception:  # noqa: BLE001 - metrics are a courtesy here
            pass

    async def _keep_alive(self) -> None:
        """Restart workers that die while the supervisor is not stopping."""
        while not self.stopping.is_set():
            for index, w in list(self.workers.items()):
                code = w.process.exitcode
                if code is None:
                    continue
                self._reaped(w)
                lived = time.monotonic() - w.started
                restarts = 0 if lived > 60 else w.restarts + 1
                delay = RESTART_BACKOFF[min(restarts, len(RESTART_BACKOFF) - 1)]
                log.warning("worker %d (pid %s) exited with code %s; restarting in %g s",
                            index, w.process.pid, code, delay)
                w.process.close()
                del self.workers[index]
                await self._sleep_or_stop(delay)
                if self.stopping.is_set():
                    return
                self._start(index, restarts)
            await self._sleep_or_stop(0.2)

    async def _sleep_or_stop(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _stop_all(self) -> int:
        self._forward(signal.SIGTERM)
        # each worker ends itself by SHUTDOWN_GRACE + 0.9 s (shutdown.py); one that has
        # not by then is stuck, and killed, so that the whole stops within the grace + 1 s
        deadline = time.monotonic() + self.cfg.shutdown_grace + 0.95
        worst = 0
        for w in list(self.workers.values()):
            left = max(0.1, deadline - time.monotonic())
            await asyncio.to_thread(w.process.join, left)
            if w.process.exitcode is None:
                log.warning("worker %d did not stop in time; killing it", w.index)
                w.process.kill()
                await asyncio.to_thread(w.process.join, 5)
            code = w.process.exitcode or 0
            worst = worst or (code if code > 0 else 0)
            self._reaped(w)
        return worst

    async def run(self) -> int:

        cfg = self.cfg
        sandbox = None
        reserved = None
        try:
            if cfg.sandbox:
                cfg, sandbox = await start_sandbox(cfg)
            try:
                reserved = _reserve(cfg.host, cfg.port)
            except OSError as e:
                raise StartupError(f"cannot listen on {cfg.host}:{cfg.port}: "
                                   f"{e.strerror or e}") from None
            port = reserved.getsockname()[1]
            if cfg.rate_limit_rps > 0 and not cfg.rate_limit_redis_url:
                log.warning("rate limits are per worker: %d workers admit up to %d x "
                            "RATE_LIMIT_RPS; set RATE_LIMIT_REDIS_URL to share one limit",
                            cfg.workers, cfg.workers)
            self.cfg = cfg.with_(port=port, sandbox=False, workers=1)
            self.metrics_dir = tempfile.mkdtemp(prefix="opencue-gateway-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
            # one count of completed writes for all workers: read-your-writes across them
            writes_file = os.path.join(self.metrics_dir, "writes")
            writes.create(writes_file)
            os.environ[writes.ENV] = writes_file
            os.environ[SUPERVISOR_ENV] = str(os.getpid())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
            for i in range(cfg.workers):
                self._start(i)
            try:
                await self._wait_ready(cfg.workers)
            except StartupError:
                await self._stop_all()
                raise
            scheme = "https" if cfg.tls_cert_file else "http"
            shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
            log.info("listening on %s://%s:%d with %d workers (Cuebot at %s%s)", scheme, shown,
                     port, cfg.workers, cfg.cuebot_endpoint, ", the sandbox" if sandbox else "")
            if sandbox is not None:
                host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else shown
                print(sandbox_banner(cfg, f"{scheme}://{host}:{port}"), flush=True)
            await self._keep_alive()
            log.info("shutting down %d workers", len(self.workers))
            return await self._stop_all()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                asyncio.get_running_loop().remove_signal_handler(sig)
            if reserved is not None:
                reserved.close()
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if sandbox is not None:
                await sandbox.stop()


def run(cfg: Config) -> int:
    return loops.run(Supervisor(cfg).run(), cfg.event_loop)
