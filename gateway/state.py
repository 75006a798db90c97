"""What every request reads: the live gateway state and the keys it is stored under.

A module of its own so that the modules serving routes beside the RPC
handler (``health``, ``openapi``, ``reload``, ``shutdown``) can reach the
state without importing ``app``, which imports them to wire them in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from .cors import CorsPolicy
from .metrics import Metrics

if TYPE_CHECKING:
    from . import authz, health, reload
    from .auth import Authenticator
    from .backend import Backend
    from .config import Config
    from .offload import Offloader
    from .protect import Protector
    from .ratelimit import Network, RateLimiter
    from .routes import MethodTable


@dataclass
class GatewayState:
    """What a request needs; ``table`` is replaced whole on reload."""

    cfg: Config
    backend: Backend
    table: MethodTable
    auth: Authenticator | None = None        # None only with --no-auth
    limiter: RateLimiter | None = None       # None when RATE_LIMIT_RPS=0
    access: authz.Access | None = None       # None without AUTHZ_POLICY and AUDIT_LOG
    cors: CorsPolicy = CorsPolicy(frozenset())
    trusted_proxies: tuple[Network, ...] = ()
    metrics: Metrics = field(default_factory=Metrics)
    reloader: reload.Reloader | None = None      # made by create_app
    readiness: health.Readiness | None = None    # made by create_app
    offload: Offloader | None = None             # made by create_app
    protect: Protector | None = None             # made by create_app
    draining: bool = False                       # shutting down: /readyz says 503


STATE = web.AppKey("state", GatewayState)
# each route's metric label, fixed when the app is built (None: the RPC catch-all)
ROUTE_LABELS = web.AppKey("route_labels", dict)
# the routes served without a token or a rate limit (see app.OPEN_PATHS)
OPEN_RESOURCES = web.AppKey("open_resources", frozenset)

# per request
REQUEST_ID = web.RequestKey("request_id", str)
USER = web.RequestKey("user", str)  # the token's subject, once authenticated
# headers every reply gets, whatever produced it (rate-limit state, CORS)
REPLY_HEADERS = web.RequestKey("reply_headers", dict)
# the canonical path of the RPC a request named, once handle_rpc has found it
ROUTE_PATH = web.RequestKey("route_path", str)
# request body bytes as received, once a handler has read the body
BYTES_IN = web.RequestKey("bytes_in", int)
