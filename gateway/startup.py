"""What a serving process and the ``--workers`` supervisor both do before serving.

The one-line start-up failure (``StartupError``: the process says why and
exits 1, never with a traceback), and ``--sandbox``: the embedded Cuebot
stand-in, started before the gateway points at it, and the banner with a
ready-made token printed once the gateway listens.
"""
from __future__ import annotations

import secrets

from .config import Config


class StartupError(Exception):
    """The gateway cannot start; the message says why."""


async def start_sandbox(cfg: Config) -> tuple[Config, object]:
    """The embedded Cuebot stand-in, and the settings pointing the gateway at it."""
    from .sandbox import server as sandbox_server  # only this mode needs it

    try:
        from .sandbox.dispatcher import DispatchSettings

        sb = await sandbox_server.start(
            cfg.sandbox_db, demo=not cfg.empty, dispatch=not cfg.no_dispatch,
            settings=DispatchSettings(speed=cfg.speed, failure_rate=cfg.failure_rate),
            log_root=cfg.log_root)
    except Exception as e:  # noqa: BLE001 - a bad database path, a full disk...
        raise StartupError(f"sandbox: {e}") from None
    changes: dict[str, object] = {"cuebot_endpoint": sb.endpoint}
    if not cfg.no_auth and not cfg.jwt_secret and cfg.jwt_secret_file is None:
        changes["jwt_secret"] = secrets.token_hex(32)  # this run's own; never logged
    return cfg.with_(**changes), sb


SANDBOX_TOKEN_HOURS = 12


def sandbox_banner(cfg: Config, url: str) -> str:
    """The ready-made token and a curl line, for the person who typed --sandbox."""
    if cfg.no_auth:
        return (f"\nSandbox ready at {url} (no authentication).\n"
                f"  curl -s -X POST {url}/show.ShowInterface/GetShows -d '{{}}'\n")
    from . import auth, authz  # here: a process that never starts a sandbox need not load them

    secret = cfg.jwt_secret or auth.read_secrets(None, cfg.jwt_secret_file)[0].decode()
    hmac = [a for a in cfg.jwt_algorithms if a in auth.HMAC_ALGORITHMS]
    extra = {}
    try:  # whoever started the sandbox may do everything its policy names
        policy = authz.read_policy(cfg.authz_policy)
    except authz.PolicyError:
        policy = None
    if policy is not None:
        extra[cfg.jwt_roles_claim] = list(policy.roles)
    token = auth.mint(secret, "sandbox-user", SANDBOX_TOKEN_HOURS * 3600,
                      algorithm=hmac[0] if hmac else "HS256", extra=extra)
    return (f"\nSandbox ready at {url}. A token for it (valid {SANDBOX_TOKEN_HOURS} h):\n"
            f"  export TOKEN={token}\n"
            f"  curl -s -H \"Authorization: Bearer $TOKEN\" -X POST "
            f"{url}/show.ShowInterface/GetShows -d '{{}}'\n")
