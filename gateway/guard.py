"""What a request must pass before any route serves it: its token, its roles, its rate limit.

Called by the ``context`` middleware for every route that is not open
(probes, metrics, the API description), before routing decides anything
else, so an unknown path without a token is 401, as the Go gateway answers.
A refused token still spends from the caller's address bucket: guessing
tokens is rate limited too. A call the policy refuses (403) spends nothing.

The common case runs without a coroutine of its own per step: a cached
token and this process's buckets answer at once; only a JWKS refetch for a
new key id, the authorization policy and a Redis bucket are awaited.
"""
from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import web

from .auth import AuthError, UnknownKey, credentials
from .errors import GatewayError
from .ratelimit import Decision, add_headers, client_address, rate_limited
from .routes import SLASHES
from .state import Call, GatewayState


def address(request: web.Request, call: Call, state: GatewayState) -> str:
    """The caller's address: the peer, or the forwarded client behind TRUSTED_PROXIES."""
    addr = call.address
    if addr is None:
        trusted = state.trusted_proxies
        addr = call.address = client_address(
            request.remote, request.headers.get("X-Forwarded-For") if trusted else None, trusted)
    return addr


def _client(request: web.Request, call: Call, state: GatewayState, subject: str | None) -> str:
    """The rate-limit key: the token's subject and/or the caller's address."""
    mode = state.cfg.rate_limit_key
    if subject and mode == "sub":
        return f"sub:{subject}"
    addr = address(request, call, state)
    if subject and mode == "sub+address":
        return f"sub:{subject}@{addr}"
    return f"addr:{addr}"


def _cost(request: web.Request, state: GatewayState) -> float:
    """Per-method costs (RATE_LIMIT_COSTS): priced by the canonical path of the RPC."""
    limiter = state.limiter
    assert limiter is not None
    if not limiter.priced:
        return 1.0
    path = request.path
    route = state.table.lookup(SLASHES.sub("/", path) if "//" in path else path)
    return limiter.cost(route.path if route else path)


async def _remote(call: Call, state: GatewayState, client: str, cost: float) -> Decision | None:
    """The shared (Redis) bucket's decision: None if allowed, else the refusal."""
    limiter = state.limiter
    assert limiter is not None
    try:
        decision = await limiter.check(client, cost)
    except GatewayError:  # Redis down and RATE_LIMIT_FAIL=closed
        state.metrics.rate_limit_rejection("redis_closed")
        raise
    add_headers(decision, call.reply_headers)
    return None if decision.allowed else decision


def _spend(request: web.Request, call: Call, state: GatewayState,
           subject: str | None) -> Awaitable[None] | None:
    """Take this request's cost from its client's bucket, or refuse it with 429.

    This process's bucket answers at once (None); for Redis's, the coroutine
    to await is returned. The bucket's state goes into the reply's headers
    either way. Only called with a limiter.
    """
    limiter = state.limiter
    assert limiter is not None
    client = _client(request, call, state, subject)
    if limiter.redis is not None:
        return _spend_remote(request, call, state, client)
    refused = limiter.spend_here(client, _cost(request, state) if limiter.priced else 1.0,
                                 call.reply_headers)
    if refused is not None:
        state.metrics.rate_limit_rejection("limit")
        raise rate_limited(refused)
    return None


async def _spend_remote(request: web.Request, call: Call, state: GatewayState,
                        client: str) -> None:
    """``_spend`` for a bucket in Redis."""
    refused = await _remote(call, state, client, _cost(request, state))
    if refused is not None:
        state.metrics.rate_limit_rejection("limit")
        raise rate_limited(refused)


async def admit(request: web.Request, call: Call, state: GatewayState) -> None:
    """Token, then the caller's roles, then the client's rate limit; raises to refuse."""
    identity = subject = None
    authenticator = state.auth
    if authenticator is not None:
        try:
            header = credentials(request.headers)
            try:
                identity = authenticator.authenticate(header)
            except UnknownKey:  # a key id the JWKS may have gained since it was fetched
                identity = await authenticator.check(header)
        except AuthError as e:
            state.metrics.auth_failure(e.reason)
            if state.limiter is not None and (remote := _spend(request, call, state, None)):
                await remote
            raise
        subject = identity.subject
        if subject:
            call.user = subject
    if state.access is not None:
        await state.access.admit(request, identity, call.request_id,
                                 address(request, call, state))
    if state.limiter is not None and (remote := _spend(request, call, state, subject)):
        await remote
