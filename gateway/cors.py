"""CORS for browser clients such as CueWeb served from another origin.

Nothing is allowed unless ``CORS_ORIGINS`` lists the origin (or ``*``).
Preflights are answered here, before authentication: a browser never sends
credentials on a preflight, so requiring a token would break every
cross-origin call. The methods a preflight allows are those the path really
serves (POST for an RPC, GET/DELETE for ``/api/job/{id}``…), asked of the
router rather than listed twice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiohttp import web

from . import errors
from .errors import GatewayError

# Request headers a browser may send; Grpc-Metadata-* are checked by pattern.
ALLOWED_HEADERS = ("authorization", "content-type", "x-request-id", "grpc-timeout")
_METADATA_HEADER = re.compile(r"grpc-metadata-[0-9a-z_.-]+\Z")
EXPOSED_HEADERS = ("X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                   "X-RateLimit-Reset", "Retry-After", "X-Descriptor-Version")
# dev mode: any port on the local machine
_LOCALHOST = re.compile(r"http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?\Z")


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[str]
    max_age: int = 600
    localhost: bool = False  # --dev: allow http://localhost:* as well
    enabled: bool = field(init=False)  # read by every request: worked out once

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled", bool(self.origins) or self.localhost)

    def allows(self, origin: str) -> bool:
        return ("*" in self.origins or origin in self.origins
                or (self.localhost and _LOCALHOST.match(origin) is not None))

    def response_headers(self, origin: str) -> dict[str, str]:
        """Headers on an actual (non-preflight) reply to an allowed origin."""
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
            "Vary": "Origin",
        }


async def allowed_methods(request: web.Request) -> tuple[str, ...]:
    """What the path serves, from the router's specific routes; RPC paths are POST."""
    methods: set[str] = set()
    for resource in request.app.router.resources():
        _match, allowed = await resource.resolve(request)
        if allowed and "*" not in allowed:  # the catch-alls say nothing useful
            methods |= set(allowed)
    if not methods:
        methods = {"POST"}
    return tuple(sorted(methods | {"OPTIONS"}))


async def preflight(request: web.Request, policy: CorsPolicy, origin: str) -> web.Response:
    if not policy.allows(origin):
        raise GatewayError(403, errors.PERMISSION_DENIED,
                           "origin not allowed by CORS_ORIGINS", headers={"Vary": "Origin"})
    methods = await allowed_methods(request)
    wanted = request.headers.get("Access-Control-Request-Method", "").upper()
    if wanted not in methods:
        raise GatewayError(405, errors.UNIMPLEMENTED,
                           f"{wanted or 'that method'} is not served at {request.path}",
                           headers={"Allow": ", ".join(methods), "Vary": "Origin"})
    asked = [h.strip().lower() for h in
             request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
    headers = [h for h in asked if h in ALLOWED_HEADERS or _METADATA_HEADER.match(h)]
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Allow-Headers": ", ".join(headers or ALLOWED_HEADERS),
        "Access-Control-Max-Age": str(policy.max_age),
        "Vary": "Origin",
    })
