"""The HTTP side: middleware, the one generic RPC handler, the app factory.

The path of a request, top to bottom of this file:
``context`` middleware (request id, error envelope, size cap, gzip, metrics,
access line) ->
``cors`` (preflights answered here) -> ``guard`` (token, then what the
caller's roles allow (``authz``), then the client's rate limit) ->
``handle_rpc``: method table lookup ->
``MessageCodec.from_json`` -> ``invoke`` -> ``Protector.call`` (circuit
breaker, cap, coalescing: ``protect.py``) -> ``Route.call`` (Cuebot) ->
``MessageCodec.to_json`` -> response. The live state (method table, backend)
sits in one object so that a reload can swap it.

A large reply (``OFFLOAD_MIN_BYTES`` of wire bytes or more) is converted by
a worker process (``offload.py``) and forwarded from its pipe as it comes
(``streaming.forward``), never held whole here: that handler sends the reply
itself, with the headers, size cap and gzip the middleware gives the others,
and the middleware only records it. ``--dev`` does not indent such a reply.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
import os
import time
from typing import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from . import cors as cors_mod
from . import (auth, authz, bodies, compression, dev, errors, health, logs, openapi, reload,
               resources, streaming)
from .auth import AuthError
from .errors import GatewayError
from .logs import AccessEntry
from .metrics import UNMATCHED
from .offload import Answer, Offloader
from .protect import Protector
from .ratelimit import client_address, rate_limited
from .routes import MethodTable, Route
from .streaming import SENT
# the state and its keys (also importable from here, as they used to be defined here)
from .state import (BYTES_IN, OPEN_RESOURCES, REPLY_HEADERS, REQUEST_ID,  # noqa: F401
                    ROUTE_LABELS, ROUTE_PATH, STATE, USER, GatewayState)
from .transcode import DecodeError, EncodeError

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")
dev_log = logging.getLogger("gateway.dev")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# Served without a token or a rate limit: probes, metrics, the API description.
# Decided by the route a request matched, not by its path text, so that no
# spelling of a path (dots, escapes, another verb) can reach anything else open.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
OPEN_PREFIXES = ("/docs/static",)

_SLASHES = re.compile(r"//+")
# Request ids made here: a random 16-hex-digit prefix per process and a
# counter, 32 hex digits as a UUID's, unique without a syscall per request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def _reseed_request_ids() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_reseed_request_ids)  # a forked child is another process



_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}\Z")
_METADATA_KEY_OK = re.compile(r"[0-9a-z_.-]+\Z")
_GRPC_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])\Z")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_MIN_TIMEOUT = 1e-3  # finer deadlines are not kept by the gRPC library
_METADATA_PREFIX = "grpc-metadata-"
# metadata a client may not set through Grpc-Metadata-*: ids and identity the
# gateway sets itself, credentials, and HTTP/2 connection-level headers
_RESERVED_METADATA = frozenset({
    "x-request-id", "authorization", "cookie", "connection", "upgrade", "host",
    "keep-alive", "proxy-connection", "transfer-encoding", "te", "content-type",
    "content-length", "user-agent",
})
IDENTITY_METADATA = "x-opencue-user"  # the token's subject, for Cuebot's logs


# ---------------------------------------------------------------------------
# middleware
# ---------------------------------------------------------------------------
@web.middleware
async def context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id in and out, every failure in the JSON envelope, metrics, one access line.

    A reply with a body in memory is written here, not after the middleware
    returns, so that the duration covers sending it and a client that hangs
    up while it is sent is seen: that request, like one whose client left
    while the handler ran (aiohttp cancels the handler), is logged and
    counted as 499 CANCELLED, at info level: a client's choice, not a server
    error. A large reply forwarded from the conversion process
    (``streaming.py``) has been sent by the handler already, headers and
    all: it is only recorded here, with what it did (``Sent``). Files
    (``FileResponse`` cannot be prepared twice) are left for aiohttp to send,
    after this line is logged.
    """
    started = time.perf_counter()
    state = request.app[STATE]
    rid = request.headers.get("X-Request-Id")
    if rid is None or not _REQUEST_ID_OK.match(rid):
        rid = _new_request_id()
    request[REQUEST_ID] = rid
    request[REPLY_HEADERS] = extra = {}
    request[SENT] = None  # a streamed reply's record, once its headers are sent
    state.metrics.in_flight.inc()
    response: web.StreamResponse | None = None
    status, code = 0, errors.OK
    try:
        try:
            response = await handler(request)
        except GatewayError as e:
            response, code = e.response(), e.code
        except web.HTTPException as e:
            err = errors.from_http_exception(e)
            response, code = err.response(), err.code
        except Exception:  # noqa: BLE001 - the client gets an envelope, the log the traceback
            log.exception("unhandled error serving %s %s (request %s)",
                          request.method, request.path, rid)
            response, code = errors.internal().response(), errors.INTERNAL
        sent = request[SENT]
        if sent is not None:  # streamed: sent already, nothing more to add or write
            status, code = sent.status, sent.code
            if state.cfg.dev:
                dev_log.info("%s %s -> %d streamed, %d bytes (not indented) (%.1f ms)",
                             request.method, request.path, status, sent.bytes_out,
                             (time.perf_counter() - started) * 1000)
        else:
            if code == errors.OK and response.status >= 400:
                code = errors.UNKNOWN  # an error reply a handler returned instead of raising
            if state.cfg.dev:
                _dev_reply(request, response, started)
            response, code = _capped(request, response, code, state.cfg.max_response_bytes)
            response.headers["X-Request-Id"] = rid
            if extra:
                response.headers.update(extra)
            await compression.maybe_gzip(request, response, state.cfg.gzip_min_bytes)
            status = response.status
            if isinstance(response, web.Response):  # a file is aiohttp's to send
                try:
                    await response.prepare(request)
                    await response.write_eof()
                except ConnectionError:  # the client hung up mid-reply (handler not cancelled)
                    status, code = 499, errors.CANCELLED
    except asyncio.CancelledError:
        status, code = 499, errors.CANCELLED
        raise
    except BaseException:  # a bug past the envelope; aiohttp answers 500 and logs it
        status, code = 500, errors.INTERNAL
        raise
    finally:
        state.metrics.in_flight.dec()
        _record(request, state, response, status, code, time.perf_counter() - started)
    return response


def _capped(request: web.Request, response: web.StreamResponse, code: int,
            limit: int) -> tuple[web.StreamResponse, int]:
    """The reply, or a 502 naming MAX_RESPONSE_BYTES instead of a body over it."""
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, (bytes, bytearray)) or len(body) <= limit:
        return response, code
    log.warning("reply to %s %s (request %s) is %d bytes, over MAX_RESPONSE_BYTES (%d); "
                "answered 502", request.method, request.path, request[REQUEST_ID],
                len(body), limit)
    err = errors.response_too_large(len(body), limit)
    return err.response(), err.code


def _route_label(request: web.Request, table: MethodTable) -> str:
    """The route as a metric label: a bounded set, never the raw path of an unknown URL."""
    labels = request.app[ROUTE_LABELS]
    resource = getattr(request.match_info.route, "resource", None)
    label = labels.get(resource, UNMATCHED)
    if label is not None:
        return label
    found = request.get(ROUTE_PATH)
    if found is not None:  # handle_rpc looked it up already, in the table it used
        return found
    path = request.path
    route = table.lookup(_SLASHES.sub("/", path) if "//" in path else path)
    return route.path if route is not None else UNMATCHED


def _route_labels(app: web.Application, rpc: web.AbstractResource) -> dict[object, str | None]:
    """Every route's label: its template (``/api/job/{job_id}``, ``/metrics``...).

    A route whose pattern spans segments (``.*``) is a catch-all: the RPC one
    is labelled per request by the method it names (None here), any other
    (404/405 under ``/api``) as ``unmatched``.
    """
    labels: dict[object, str | None] = {}
    for resource in app.router.resources():
        pattern = resource.get_info().get("pattern")
        catch_all = pattern is not None and ".*" in pattern.pattern
        labels[resource] = UNMATCHED if catch_all else resource.canonical
    labels[rpc] = None
    return labels


def _record(request: web.Request, state: GatewayState, response: web.StreamResponse | None,
            status: int, code: int, seconds: float) -> None:
    """The request's metrics and its access line."""
    route = _route_label(request, state.table)
    code_name = errors.code_name(code)
    bytes_in = request.get(BYTES_IN)
    if bytes_in is None:
        bytes_in = request.content_length or 0
    bytes_out = 0
    sent = request[SENT]
    if sent is not None:
        bytes_out = sent.bytes_out
    elif response is not None:
        body = response.body if isinstance(response, web.Response) else None
        bytes_out = (len(body) if isinstance(body, (bytes, bytearray))
                     else response.content_length or 0)
    state.metrics.observe_request(route, request.method, status, code_name, seconds,
                                  bytes_in, bytes_out)
    if access_log.isEnabledFor(logging.INFO):
        logs.access(AccessEntry(
            request_id=request[REQUEST_ID], user=request.get(USER),
            client=client_address(request.remote, request.headers.get("X-Forwarded-For"),
                                  state.trusted_proxies),
            method=request.method, path=request.path, route=route, status=status,
            grpc_code=code_name, bytes_in=bytes_in, bytes_out=bytes_out,
            duration_ms=seconds * 1000))


def _dev_reply(request: web.Request, response: web.StreamResponse, started: float) -> None:
    """--dev: a line summing up the reply, and the reply indented."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return
    body = response.body
    if not isinstance(body, (bytes, bytearray)) or not body or response.headers.get(
            "Content-Encoding"):
        return
    dev_log.info("%s %s -> %d %s (%.1f ms)", request.method, request.path, response.status,
                 dev.summary(bytes(body)), (time.perf_counter() - started) * 1000)
    response.body = dev.pretty(bytes(body))


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Preflights answered before auth; allowed origins get CORS headers on every reply."""
    policy = request.app[STATE].cors
    origin = request.headers.get("Origin")
    if origin is None or not policy.enabled:
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return await cors_mod.preflight(request, policy, origin)
    if policy.allows(origin):
        request[REPLY_HEADERS].update(policy.response_headers(origin))
    else:
        request[REPLY_HEADERS]["Vary"] = "Origin"
    return await handler(request)


def _is_open(request: web.Request) -> bool:
    resource = getattr(request.match_info.route, "resource", None)
    return resource is not None and resource in request.app[OPEN_RESOURCES]


def _address(request: web.Request) -> str:
    """The caller's address: the peer, or the forwarded client behind TRUSTED_PROXIES."""
    return client_address(request.remote, request.headers.get("X-Forwarded-For"),
                          request.app[STATE].trusted_proxies)


def _client(request: web.Request, subject: str | None) -> str:
    """The rate-limit key: the token's subject and/or the caller's address."""
    mode = request.app[STATE].cfg.rate_limit_key
    if subject and mode == "sub":
        return f"sub:{subject}"
    addr = _address(request)
    if subject and mode == "sub+address":
        return f"sub:{subject}@{addr}"
    return f"addr:{addr}"


async def _spend(request: web.Request, client: str) -> None:
    """Take this request's cost from ``client``'s bucket, or refuse it with 429."""
    state = request.app[STATE]
    limiter = state.limiter
    if limiter is None:
        return
    cost = 1.0
    if limiter.priced:  # per-method costs: priced by the canonical path of the RPC
        path = request.path
        route = state.table.lookup(_SLASHES.sub("/", path) if "//" in path else path)
        cost = limiter.cost(route.path if route else path)
    try:  # this process's buckets answer at once; Redis's are awaited
        decision = limiter.check_local(client, cost) or await limiter.check(client, cost)
    except GatewayError:  # Redis down and RATE_LIMIT_FAIL=closed
        state.metrics.rate_limit_rejection("redis_closed")
        raise
    request[REPLY_HEADERS].update(decision.headers())
    if not decision.allowed:
        state.metrics.rate_limit_rejection("limit")
        raise rate_limited(decision)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token, then the caller's roles, then the client's rate limit: nothing reaches a
    route without all three.

    Runs before routing, so an unknown path without a token is 401, as the Go
    gateway answers. A refused token still spends from the caller's address
    bucket: guessing tokens is rate limited too. A call the policy refuses
    (403) spends nothing.
    """
    if _is_open(request):
        return await handler(request)
    state = request.app[STATE]
    identity = subject = None
    if state.auth is not None:
        try:
            identity = await state.auth.check(auth.credentials(request.headers))
        except AuthError as e:
            state.metrics.auth_failure(e.reason)
            await _spend(request, _client(request, None))
            raise
        subject = identity.subject
        if subject:
            request[USER] = subject
    if state.access is not None:
        await state.access.admit(request, identity, request[REQUEST_ID], _address(request))
    await _spend(request, _client(request, subject))
    return await handler(request)


# ---------------------------------------------------------------------------
# the generic RPC handler
# ---------------------------------------------------------------------------
def _deadline(request: web.Request, limit: float) -> float:
    """The call deadline: GRPC_TIMEOUT, or a shorter ``Grpc-Timeout`` header."""
    header = request.headers.get("Grpc-Timeout")
    if header is None:
        return limit
    m = _GRPC_TIMEOUT.match(header.strip())
    if not m:
        raise errors.bad_request(f"invalid Grpc-Timeout header {header!r}")
    timeout = int(m.group(1)) * _TIMEOUT_UNITS[m.group(2)]
    if timeout < _MIN_TIMEOUT:
        # gRPC does not keep deadlines this fine (a 1n call to a quick Cuebot
        # succeeds); one this close has passed before Cuebot could answer
        raise GatewayError(504, errors.DEADLINE_EXCEEDED,
                           f"Deadline Exceeded (Grpc-Timeout {header.strip()} is under "
                           "a millisecond; Cuebot was not called)")
    return min(limit, timeout)


def _metadata(request: web.Request) -> list[tuple[str, str]]:
    """gRPC metadata for the call: the request id, plus ``Grpc-Metadata-*`` headers."""
    md = [("x-request-id", request[REQUEST_ID])]
    user = request.get(USER)
    if user:
        md.append((IDENTITY_METADATA, user if user.isascii() and user.isprintable()
                   else quote(user, safe="")))
    for name, value in request.headers.items():
        lower = name.lower()
        if lower.startswith(_METADATA_PREFIX):
            key = lower[len(_METADATA_PREFIX):]
            if not _METADATA_KEY_OK.match(key) or key.endswith("-bin") or key.startswith("grpc-"):
                raise errors.bad_request(f"invalid metadata header {name}")
            if key in _RESERVED_METADATA or key.startswith("x-opencue-"):
                raise errors.bad_request(f"metadata header {name} is reserved")
            if not value.isascii() or not value.isprintable():
                raise errors.bad_request(f"invalid value in metadata header {name}")
            md.append((key, value))
    return md


async def _body(request: web.Request, limit: int) -> bytes:
    body, received = await bodies.read(request, limit)
    request[BYTES_IN] = received
    return body


def _rpc_route(request: web.Request) -> Route | None:
    """What an RPC request calls, for authorization: the real method behind any alias."""
    path = request.path
    return request.app[STATE].table.lookup(_SLASHES.sub("/", path) if "//" in path else path)


def caller(request: web.Request) -> str:
    """Who is asking: the token's subject once authenticated, else the peer address."""
    return request.get(USER) or request.remote or "unknown"


async def invoke(request: web.Request, route: Route, data: bytes) -> bytes:
    """Call Cuebot for ``request``, with its deadline and metadata; failures as GatewayError.

    The one way to reach the backend, for the RPC routes and the /api ones
    alike; ``protect.py`` decides whether the call is made, shared or refused.
    """
    state = request.app[STATE]
    access = state.access
    if access is not None:
        access.before_call(request, route, data)  # a call its route did not declare
    timeout, metadata = _deadline(request, state.cfg.grpc_timeout), _metadata(request)
    started = time.perf_counter()
    code = "UNKNOWN"
    try:
        answer = await state.protect.call(route, data, timeout, metadata)
        code = "OK"
    except GatewayError as e:
        code = errors.code_name(e.code)
        raise
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    finally:
        if access is not None:  # the audit line
            access.after_call(request, route, data, code, time.perf_counter() - started)
    if answer.headers:
        request[REPLY_HEADERS].update(answer.headers)
    return answer.reply


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    table = state.table  # read once: a reload mid-request does not affect it
    path = request.path
    if "//" in path:
        path = _SLASHES.sub("/", path)
    request[REPLY_HEADERS]["X-Descriptor-Version"] = table.version
    route = table.lookup(path)
    if route is None:
        if table.is_streaming(path):
            raise GatewayError(501, errors.UNIMPLEMENTED,
                               f"{path} is a streaming RPC; this gateway serves unary RPCs only")
        raise errors.not_found(table.explain_miss(path))
    request[ROUTE_PATH] = route.path  # the metrics label, from the table this request uses
    if request.method != "POST":
        raise errors.method_not_allowed("POST")

    body = await _body(request, state.cfg.max_request_bytes)
    offload = state.offload
    assert offload is not None
    try:  # large messages are converted in another process, small ones right here
        data = (await offload.from_json(table, route.request, body)
                if offload.offloads(len(body)) else route.request.from_json(body))
    except DecodeError as e:
        raise errors.bad_request(f"invalid {route.request.full_name}: {e}") from None
    except EncodeError as e:  # the conversion process failed, not the request
        raise GatewayError(502, errors.INTERNAL, str(e)) from None
    reply = await invoke(request, route, data)
    try:
        out = (await offload.to_json_stream(table, route.response, reply)
               if offload.offloads(len(reply)) else route.response.to_json(reply))
    except EncodeError as e:
        raise GatewayError(502, errors.INTERNAL, str(e)) from None
    if isinstance(out, Answer):  # large: forwarded from the conversion process as it comes
        del reply  # not kept while it is sent
        return await streaming.forward(request, out)
    return web.Response(body=out, content_type="application/json")


# ---------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------
def create_app(state: GatewayState) -> web.Application:
    app = web.Application(
        client_max_size=state.cfg.max_request_bytes,
        # without CORS_ORIGINS (or --dev) no request needs the cors layer
        middlewares=[context, cors, guard] if state.cors.enabled else [context, guard],
        handler_args={"auto_decompress": False},  # bodies.py decodes, and refuses clearly
    )
    app[STATE] = state
    if state.reloader is None:
        state.reloader = reload.Reloader(state)
    if state.readiness is None:
        state.readiness = health.Readiness(state.backend)
    if state.offload is None:
        cfg = state.cfg
        state.offload = Offloader(cfg.offload_workers, cfg.offload_min_bytes, cfg.offload_idle)
    if state.protect is None:
        state.protect = Protector(state.cfg, state.backend, state.metrics)

    def table_of(request: web.Request) -> MethodTable:
        """The table a request uses, read once; its version goes in the reply."""
        table = request.app[STATE].table
        request[REPLY_HEADERS]["X-Descriptor-Version"] = table.version
        return table

    app.router.add_get("/metrics", state.metrics.handle)
    health.add_routes(app)
    reload.add_routes(app)
    resources.add_routes(app, resources.Resources(invoke, table_of, caller))
    openapi.add_routes(app, table_of)
    rpc = app.router.add_route("*", "/{path:.*}", handle_rpc).resource
    authz.declare(app, rpc, _rpc_route)
    app[ROUTE_LABELS] = _route_labels(app, rpc)
    app[OPEN_RESOURCES] = frozenset(
        r for r in app.router.resources()
        if r.canonical in OPEN_PATHS or r.canonical.startswith(OPEN_PREFIXES))

    async def start_jwks(app: web.Application) -> None:
        auth = app[STATE].auth
        if auth is not None and auth.keys is not None:
            auth.keys.start()  # JWT_JWKS_REFRESH

    async def close_backend(app: web.Application) -> None:
        state = app[STATE]
        if state.reloader is not None:
            await state.reloader.close()
        await state.backend.close()
        if state.offload is not None:
            await state.offload.close()
        if state.limiter is not None:
            await state.limiter.close()
        if state.auth is not None and state.auth.keys is not None:
            await state.auth.keys.close()
        if state.access is not None:
            state.access.close()

    app.on_startup.append(start_jwks)
    app.on_cleanup.append(close_backend)
    return app
