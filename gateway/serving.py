"""Serving: the gateway's state built from the settings, then the listener until told to stop.

``cli.main`` (one process) and ``workers`` (each worker process) call it once
the settings are read; the start-up failures it raises are ``StartupError``.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from typing import TYPE_CHECKING, Callable

from aiohttp import web

from . import audit, auth, authz, health, loops, memory, reload, shutdown
from .app import GatewayState, create_app
from .backend import Backend
from .config import Config, ConfigError
from .connections import ConnectionGuard
from .cors import CorsPolicy
from .descriptors import DescriptorError
from .metrics import Metrics
from .ratelimit import RateLimiter, parse_networks
from .server import GatewayRunner
from .startup import StartupError, sandbox_banner, start_sandbox

if TYPE_CHECKING:
    from . import jwks

log = logging.getLogger("gateway")


def _guards(cfg: Config, keys: "jwks.KeySet | None", metrics: Metrics) -> dict[str, object]:
    """Authentication, authorization and audit, rate limits, CORS and proxies, as asked."""
    try:
        authenticator = auth.from_config(cfg, keys)
        access = authz.from_config(cfg, metrics)
    except (auth.AuthConfigError, authz.PolicyError, audit.AuditError, ValueError) as e:
        raise StartupError(str(e)) from None
    limiter = None
    if cfg.rate_limit_rps > 0:
        limiter = RateLimiter(cfg.rate_limit_rps, cfg.rate_limit_burst,
                              costs=cfg.rate_limit_costs, redis_url=cfg.rate_limit_redis_url,
                              fail=cfg.rate_limit_fail)
    return {
        "auth": authenticator, "access": access, "limiter": limiter,
        "cors": CorsPolicy(frozenset(cfg.cors_origins), cfg.cors_max_age, localhost=cfg.dev),
        "trusted_proxies": parse_networks(cfg.trusted_proxies),
    }


def _report_guards(guards: dict[str, object]) -> None:
    if guards["auth"] is None:
        log.warning("AUTHENTICATION IS OFF (--no-auth): anyone who can reach this port "
                    "can act on Cuebot. Never run like this on a shared network.")
    access = guards["access"]
    if isinstance(access, authz.Access):
        if access.policy is not None:
            log.info("authorization: %s, roles %s (from claim %r)", access.policy.source,
                     ", ".join(access.policy.roles), guards["auth"].settings.roles_claim
                     if isinstance(guards["auth"], auth.Authenticator) else "-")
        if access.audit is not None:
            log.info("audit log: %s (%s)", access.audit.target,
                     ",".join(access.audit.wants.items))
    limiter = guards["limiter"]
    if isinstance(limiter, RateLimiter):
        log.info("rate limit: %g requests/s per client (burst %g)%s", limiter.rate,
                 limiter.burst, ", shared in Redis" if limiter.redis else "")
    else:
        log.warning("rate limiting is off (RATE_LIMIT_RPS=0)")


async def build_state(cfg: Config) -> GatewayState:
    """Backend channel, descriptors and method table, ready to serve."""
    try:
        metrics = Metrics.for_process()
    except ValueError as e:
        raise StartupError(str(e)) from None
    keys = None
    if cfg.jwt_jwks:
        from . import jwks  # asymmetric keys: cryptography, loaded only when needed

        try:
            keys = await jwks.from_config(cfg.jwt_jwks, cfg.jwt_jwks_refresh)
        except jwks.JwksError as e:
            raise StartupError(str(e)) from None
    if keys is not None:
        keys.on_refresh = metrics.jwks_refresh
        metrics.jwks_keys.set(len(keys))
    try:
        guards = _guards(cfg, keys, metrics)
    except StartupError:
        if keys is not None:
            await keys.close()
        raise
    if isinstance(guards["limiter"], RateLimiter):
        guards["limiter"].on_redis_failure = metrics.redis_failure
    try:
        backend = Backend(cfg)
    except ConfigError as e:
        if keys is not None:
            await keys.close()
        raise StartupError(str(e)) from None
    try:  # the same two steps as every reload
        descs = await reload.load_descriptors(cfg, backend)
        table = await reload.build_table(cfg, backend, descs)
    except DescriptorError as e:
        await backend.close()
        if keys is not None:
            await keys.close()
        if isinstance(guards["access"], authz.Access):
            guards["access"].close()
        raise StartupError(str(e)) from None
    log.info("descriptors: %s, version %s: %d services, %d methods exposed",
             descs.source, descs.version, len(table.services), len(table.routes))
    if table.hidden_services:
        log.info("not exposed: %s", ", ".join(table.hidden_services))
    for alias, real in table.aliases():
        log.info("alias: /%s/* -> /%s/*", alias, real)
    _report_guards(guards)
    if isinstance(guards["access"], authz.Access):
        guards["access"].warn_unmatched(table)
    metrics.set_descriptors(descs.version, descs.source, len(table.services), len(table.routes))
    return GatewayState(cfg=cfg, backend=backend, table=table, metrics=metrics,
                        **guards)  # type: ignore[arg-type]


def _tls_context(cfg: Config) -> ssl.SSLContext | None:
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise StartupError(f"TLS_CERT_FILE {cfg.tls_cert_file} / TLS_KEY_FILE "
                           f"{cfg.tls_key_file}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


async def serve(cfg: Config, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set (or SIGINT/SIGTERM arrives)."""
    sandbox = None
    if cfg.sandbox:
        cfg, sandbox = await start_sandbox(cfg)
    try:
        await _serve(cfg, stop, sandbox)
    finally:
        if sandbox is not None:
            await sandbox.stop()


async def _serve(cfg: Config, stop: asyncio.Event | None, sandbox: object | None, *,
                 reuse_port: bool = False, ready: Callable[[], None] | None = None,
                 check_cuebot: bool = True) -> None:
    tls = _tls_context(cfg)
    memory.setup()
    state = await build_state(cfg)
    check: asyncio.Task[None] | None = None
    app = create_app(state)
    runner = GatewayRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=cfg.shutdown_grace,
                           keepalive_timeout=cfg.keepalive_timeout,
                           guard=connection_guard(cfg, state))
    drained = False
    try:
        await runner.setup()  # from here on, runner.cleanup() closes the backend too
        # Handlers go in before the "listening on" line: a supervisor may send
        # SIGTERM as soon as it sees that line, and the default action would
        # kill the process without a clean shutdown (exit -15, not 0).
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        reloader = state.reloader
        assert reloader is not None
        loop.add_signal_handler(signal.SIGHUP, reloader.trigger, "SIGHUP")
        site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=tls,
                           reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as e:
            raise StartupError(f"cannot listen on {cfg.host}:{cfg.port}: "
                               f"{e.strerror or e}") from None
        scheme = "https" if tls else "http"
        log.info("event loop: %s; calls to Cuebot: %s", loops.name(loop),
                 state.backend.calls)
        for addr in runner.addresses:
            host, port = addr[0], addr[1]
            log.info("listening on %s://%s:%d (Cuebot at %s%s)", scheme,
                     f"[{host}]" if ":" in host else host, port, cfg.cuebot_endpoint,
                     ", the sandbox" if sandbox else "")
        if sandbox and runner.addresses:
            host, port = runner.addresses[0][0], runner.addresses[0][1]
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            print(sandbox_banner(cfg, f"{scheme}://{shown}:{port}"), flush=True)
        reloader.start_watching()
        if check_cuebot and state.readiness is not None:  # a warning if it does not answer
            check = asyncio.create_task(health.report_at_start(state.backend, state.readiness))
        if ready is not None:
            ready()
        await stop.wait()
        if check is not None:  # before the drain closes the channel under it
            check.cancel()
            await asyncio.gather(check, return_exceptions=True)
        stop.clear()  # from now on, a second signal cuts what is still in flight
        await shutdown.drain(runner, state, cfg.shutdown_grace, cfg.shutdown_delay, stop)
        drained = True
    finally:
        if check is not None:  # start-up failed part-way
            check.cancel()
            await asyncio.gather(check, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            asyncio.get_running_loop().remove_signal_handler(sig)
        if not drained:  # start-up failed part-way, or the drain did
            await runner.cleanup()


def connection_guard(cfg: Config, state: GatewayState) -> ConnectionGuard:
    """The per-connection limits, counting what they cut in the metrics."""
    return ConnectionGuard(header_timeout=cfg.header_timeout, body_timeout=cfg.body_timeout,
                           max_per_client=cfg.max_connections_per_client,
                           exempt=state.trusted_proxies, on_cut=state.metrics.connection_cut)


async def run_worker(cfg: Config, ready: Callable[[], None], *, first: bool = True) -> None:
    """One ``--workers`` process: the gateway on a port it shares with its siblings.

    Only the ``first`` worker reports on Cuebot at start-up: one warning, not N.
    """
    await _serve(cfg, None, None, reuse_port=True, ready=ready, check_cuebot=first)
