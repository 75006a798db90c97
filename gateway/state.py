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
    from . import authz, health, reload, streaming
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
    # fixed by create_app: each route's metric label (None: the RPC catch-all,
    # labelled per request), and the routes served without a token or a limit
    route_labels: dict[object, str | None] = field(default_factory=dict)
    open_resources: frozenset[object] = frozenset()


STATE = web.AppKey("state", GatewayState)

# per request: one object holding what the layers of a request hand each other
# (a request's own mapping costs a Python-level call per key read or written)
class Call:
    """One request's facts, made by the ``context`` middleware, filled in as it goes."""

    __slots__ = ("state", "request_id", "reply_headers", "user", "route_path", "bytes_in",
                 "address", "sent")

    def __init__(self, state: GatewayState, request_id: str) -> None:
        self.state = state                    # read once per request, not per layer
        self.request_id = request_id
        # headers every reply gets, whatever produced it (rate-limit state, CORS)
        self.reply_headers: dict[str, str] = {}
        self.user: str | None = None          # the token's subject, once authenticated
        self.route_path: str | None = None    # the canonical RPC path, once looked up
        self.bytes_in: int | None = None      # body bytes as received, once read
        self.address: str | None = None       # the caller's address, once worked out
        # a reply the handler streamed itself (streaming.py): what it really did
        self.sent: streaming.Sent | None = None


CALL = web.RequestKey("call", Call)


def caller(request: web.Request) -> str:
    """Who is asking: the token's subject once authenticated, else the peer address."""
    call = request.get(CALL)
    return (call.user if call is not None else None) or request.remote or "unknown"
