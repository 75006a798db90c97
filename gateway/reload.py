"""Live reload: new descriptors become a new method table without a restart.

"Zero-codegen upgrades": when Cuebot's protos change, the gateway loads the
new descriptors (from the same source it started with), compiles a complete
new method table off the request path, in a worker thread, and swaps it in
with one assignment. A request reads the table once when it starts, so it
finishes on the table it began with; the old table is dropped when the last
such request is done. A reload that fails for any reason leaves the old
table serving, and says why in the log, the metrics and the reply of
``POST /admin/reload``.

Triggers: SIGHUP, ``POST /admin/reload``, a change of the descriptor-set
file or of the ``.proto`` files on disk (polled), and in reflection mode
every ``DESCRIPTOR_REFRESH`` seconds. A secrets file (``JWT_SECRET_FILE``)
and the policy (``AUTHZ_POLICY``) are read again on each reload, so a
rotated secret or a new rule needs no restart either; if either cannot be
used, the reload fails and both keep their old value. Each reload also
reopens the audit log (logrotate sends SIGHUP) and fetches ``JWT_JWKS``
again (a failed fetch keeps the last good keys and does not fail the reload).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from . import auth, authz, descriptors, errors, openapi, reflection
from .descriptors import DescriptorError
from .errors import GatewayError
from .routes import MethodTable
from .state import STATE, caller
from .workers import SUPERVISOR_ENV

if TYPE_CHECKING:
    from .state import GatewayState
    from .backend import Backend
    from .config import Config

log = logging.getLogger("gateway.reload")


class ReloadError(Exception):
    """A reload failed; the old table keeps serving."""


async def load_descriptors(cfg: "Config", backend: "Backend") -> descriptors.Descriptors:
    """The configured source, read again; file and compiler work off the event loop."""
    if cfg.descriptor_source == "reflection":
        return await reflection.fetch(backend.channel, cfg.cuebot_endpoint, cfg.grpc_timeout)
    if cfg.descriptor_source == "file":
        return await asyncio.to_thread(descriptors.load_file, cfg.descriptor_set)
    if cfg.descriptor_source == "proto":
        return await asyncio.to_thread(descriptors.load_proto_path, cfg.proto_path)
    return await asyncio.to_thread(descriptors.load_bundled)


async def build_table(cfg: "Config", backend: "Backend",
                      descs: descriptors.Descriptors) -> MethodTable:
    """Compile every codec of ``descs`` in a worker thread: requests keep flowing."""
    table = await asyncio.to_thread(MethodTable.build, descs, backend.unary, cfg.services,
                                    cfg.exclude_services)
    if not table.routes:
        raise DescriptorError(
            f"{descs.source}: no service left to expose; check SERVICES / EXCLUDE_SERVICES")
    return table


@dataclass(frozen=True)
class ReloadResult:
    outcome: str            # "ok", "unchanged" or "failed"
    version: str            # the version serving after the attempt
    previous: str
    services: int
    methods: int
    trigger: str
    error: str | None = None
    duration_ms: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "version": self.version, "previous": self.previous,
                "services": self.services, "methods": self.methods, "trigger": self.trigger,
                "error": self.error, "durationMs": round(self.duration_ms, 1)}


def _file_signature(path: Path) -> tuple[Any, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _tree_signature(root: Path) -> tuple[Any, ...] | None:
    try:
        return tuple(sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                            for p in root.rglob("*.proto")))
    except OSError:
        return None


class Reloader:
    """Owns the swap of ``state.table``; one reload at a time."""

    def __init__(self, state: "GatewayState") -> None:
        self.state = state
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.loaded_at = time.time()
        self.last: ReloadResult | None = None

    # -- the reload ------------------------------------------------------
    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            return await self._reload(trigger)

    async def _reload(self, trigger: str) -> ReloadResult:
        state = self.state
        old = state.table
        started = time.perf_counter()
        policy_changed = False
        try:
            policy_changed = await self._refresh_access()
            descs = await load_descriptors(state.cfg, state.backend)
            if descs.version == old.version:
                result = self._result("unchanged", old, old, trigger, started)
                log.info("reload (%s): descriptors unchanged, version %s", trigger, old.version)
            else:
                new = await build_table(state.cfg, state.backend, descs)
                # what the new table's first requests would do (OpenAPI document, /api bindings)
                await asyncio.to_thread(openapi.prepare, new)
                state.table = new  # the swap: one assignment, seen by the next request
                self.loaded_at = time.time()
                result = self._result("ok", new, old, trigger, started)
                log.info("reloaded descriptors (%s): %s, version %s -> %s: %d services, "
                         "%d methods", trigger, descs.source, old.version, new.version,
                         len(new.services), len(new.routes))
            if state.access is not None and (policy_changed or state.table is not old):
                state.access.warn_unmatched(state.table)
        except (DescriptorError, ReloadError, auth.AuthConfigError, authz.PolicyError,
                OSError) as e:
            result = self._result("failed", old, old, trigger, started, error=str(e))
            log.warning("reload (%s) failed, still serving version %s: %s", trigger,
                        old.version, e)
        except Exception as e:  # noqa: BLE001 - a bug must not take the old table down
            result = self._result("failed", old, old, trigger, started,
                                  error=f"unexpected {type(e).__name__}: {e}")
            log.exception("reload (%s) failed unexpectedly; still serving version %s",
                          trigger, old.version)
        self.last = result
        self._record(result)
        return result

    def _result(self, outcome: str, serving: MethodTable, old: MethodTable, trigger: str,
                started: float, error: str | None = None) -> ReloadResult:
        return ReloadResult(outcome=outcome, version=serving.version, previous=old.version,
                            services=len(serving.services), methods=len(serving.routes),
                            trigger=trigger, error=error,
                            duration_ms=(time.perf_counter() - started) * 1000)

    async def _refresh_access(self) -> bool:
        """Audit log reopened; secrets, policy and keys read again. True if the policy changed.

        Both files are read before either is swapped in: a bad one changes nothing.
        """
        state, cfg = self.state, self.state.cfg
        if state.access is not None:
            state.access.reopen()
        current = state.auth
        fresh = None
        if cfg.jwt_secret_file is not None and current is not None:
            fresh = auth.from_config(cfg, current.keys)
        policy = authz.read_policy(cfg.authz_policy) if state.access is not None else None
        if fresh is not None and fresh.settings.secrets != current.settings.secrets:
            state.auth = fresh  # a new authenticator: tokens verified before are forgotten
            log.info("JWT secrets reloaded from %s (%d accepted)", cfg.jwt_secret_file,
                     len(fresh.settings.secrets))
        changed = False
        if state.access is not None and state.access.replace_policy(policy):
            changed = True
            log.info("AUTHZ_POLICY reloaded from %s: roles %s", cfg.authz_policy,
                     ", ".join(policy.roles) if policy else "none")
        if current is not None and current.keys is not None:
            await current.keys.refresh("reload")
        return changed

    def _record(self, result: ReloadResult) -> None:
        metrics = getattr(self.state, "metrics", None)
        if metrics is None:
            return
        metrics.record_reload(result.outcome)
        if result.outcome == "ok":
            table = self.state.table
            metrics.set_descriptors(table.version, table.descriptors.source,
                                    len(table.services), len(table.routes))

    # -- triggers ----------------------------------------------------------
    def trigger(self, reason: str) -> None:
        """Reload in the background (signal handlers and watchers)."""
        task = asyncio.get_running_loop().create_task(self.reload(reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_watching(self) -> None:
        """Poll the source for changes, as configured; nothing for the bundled set."""
        cfg = self.state.cfg
        if cfg.descriptor_source == "reflection" and cfg.descriptor_refresh > 0:
            self._spawn(self._refresh_every(cfg.descriptor_refresh))
        elif cfg.descriptor_watch > 0 and cfg.descriptor_source == "file":
            path = cfg.descriptor_set
            self._spawn(self._watch(lambda: _file_signature(path), f"{path} changed",
                                    cfg.descriptor_watch))
        elif cfg.descriptor_watch > 0 and cfg.descriptor_source == "proto":
            root = cfg.proto_path
            self._spawn(self._watch(lambda: _tree_signature(root), f"{root} changed",
                                    cfg.descriptor_watch))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.reload("refresh")

    async def _watch(self, signature: Any, reason: str, every: float) -> None:
        seen = await asyncio.to_thread(signature)
        while True:
            await asyncio.sleep(every)
            now = await asyncio.to_thread(signature)
            if now != seen:
                seen = now
                if now is None:
                    log.warning("%s: the source is gone; still serving version %s", reason,
                                self.state.table.version)
                    continue
                await self.reload(reason)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def notify_supervisor() -> bool:
    """In a ``--workers`` process, ask the supervisor to reload every worker."""
    pid = os.environ.get(SUPERVISOR_ENV, "")
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), signal.SIGHUP)
    except OSError:
        return False
    return True


async def handle_reload(request: web.Request) -> web.Response:
    """``POST /admin/reload``: reload now and say what happened (authenticated)."""

    if request.method != "POST":
        raise errors.method_not_allowed("POST")
    state = request.app[STATE]
    who = caller(request)
    result = await state.reloader.reload(f"POST /admin/reload by {who}")
    if result.outcome == "failed":
        raise GatewayError(500, errors.INTERNAL,
                           f"reload failed, still serving version {result.version}: "
                           f"{result.error}")
    body = result.as_json()
    body["allWorkers"] = notify_supervisor()
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def add_routes(app: web.Application) -> None:
    resource = app.router.add_route("*", "/admin/reload", handle_reload).resource
    # with AUTHZ_POLICY, only a role allowed gateway.Admin/Reload may reload
    authz.declare(app, resource, authz.per_method({"POST": (authz.ADMIN_RELOAD,)}))
