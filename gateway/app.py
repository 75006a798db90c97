"""The HTTP side: middleware, the one generic RPC handler, the app factory.

The path of a request, top to bottom of this file:
``context``, the one middleware (request id, CORS preflights, then
``guard.admit``: token, what the caller's roles allow (``authz``), the
client's rate limit; the error envelope, size cap, gzip, metrics, access
line) -> ``handle_rpc``: method table lookup ->
``MessageCodec.from_json`` -> ``invoke`` -> ``Protector.call`` (circuit
breaker, cap, coalescing: ``protect.py``) -> ``Route.call`` (Cuebot) ->
``MessageCodec.to_json`` -> response. The live state (method table, backend)
sits in one object so that a reload can swap it; what one request's layers
hand each other sits in a ``state.Call``.

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
import os
import re
import time
from typing import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from . import cors as cors_mod
from . import authz, bodies, compression, dev, errors, guard, health, logs, openapi, reload
from . import resources, sending, streaming
from .errors import GatewayError
from .metrics import UNMATCHED
from .offload import Answer, Offloader
from .protect import Protector
from .routes import SLASHES, MethodTable, Route
# the state and its keys (also importable from here, as they used to be defined here)
from .state import CALL, STATE, Call, GatewayState, caller  # noqa: F401 - STATE: tests
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
_HAS_METADATA = re.compile(r"^grpc-metadata-", re.IGNORECASE | re.MULTILINE)
# metadata a client may not set through Grpc-Metadata-*: ids and identity the
# gateway sets itself, credentials, and HTTP/2 connection-level headers
_RESERVED_METADATA = frozenset({
    "x-request-id", "authorization", "cookie", "connection", "upgrade", "host",
    "keep-alive", "proxy-connection", "transfer-encoding", "te", "content-type",
    "content-length", "user-agent",
})
IDENTITY_METADATA = "x-opencue-user"  # the token's subject, for Cuebot's logs


# ---------------------------------------------------------------------------
# the middleware
# ---------------------------------------------------------------------------
@web.middleware
async def context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id in and out, CORS, the guard, every failure in the JSON envelope,
    metrics, one access line.

    One middleware, not one per concern: each layer aiohttp stacks costs a
    coroutine per request, and this is every request's path. A reply with a
    body in memory is written here, not after the middleware returns, so
    that the duration covers sending it and a client that hangs up while it
    is sent is seen: that request, like one whose client left while the
    handler ran (aiohttp cancels the handler), is logged and counted as 499
    CANCELLED, at info level: a client's choice, not a server error. A
    large reply forwarded from the conversion process (``streaming.py``) has
    been sent by the handler already, headers and all: it is only recorded
    here, with what it did (``Sent``). Files (``FileResponse`` cannot be
    prepared twice) are left for aiohttp to send, after this line is logged.
    """
    started = time.perf_counter()
    state = request.app[STATE]
    rid = request.headers.get("X-Request-Id")
    if rid is None or not _REQUEST_ID_OK.match(rid):
        rid = _new_request_id()
    request[CALL] = call = Call(state, rid)
    resource = getattr(request.match_info.route, "resource", None)
    metrics = state.metrics
    metrics.in_flight.inc()
    response: web.StreamResponse | None = None
    status, code = 0, errors.OK
    try:
        try:
            if state.cors.enabled and "Origin" in request.headers:
                response = await _cors(request, call, state)
            if response is None:
                if resource not in state.open_resources:
                    await guard.admit(request, call, state)
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
        cfg = state.cfg
        sent = call.sent
        if sent is not None:  # streamed: sent already, nothing more to add or write
            status, code = sent.status, sent.code
            if cfg.dev:
                dev_log.info("%s %s -> %d streamed, %d bytes (not indented) (%.1f ms)",
                             request.method, request.path, status, sent.bytes_out,
                             (time.perf_counter() - started) * 1000)
            return response
        if code == errors.OK and response.status >= 400:
            code = errors.UNKNOWN  # an error reply a handler returned instead of raising
        if cfg.dev:
            _dev_reply(request, response, started)
        body = response.body if isinstance(response, web.Response) else None
        size = len(body) if isinstance(body, (bytes, bytearray)) else 0
        if size > cfg.max_response_bytes:
            response, code = _too_large(request, call, size, cfg.max_response_bytes)
        headers = response.headers
        headers["X-Request-Id"] = rid
        extra = call.reply_headers
        if extra:
            headers.update(extra)
        if state.draining and not response.prepared:
            # shutting down: the connection ends with this reply, and its client
            # reconnects elsewhere (a file or stream is prepared after this)
            response.force_close()
            headers["Connection"] = "close"
        if size >= cfg.gzip_min_bytes:  # below it, no reply is compressed
            await compression.maybe_gzip(request, response, cfg.gzip_min_bytes)
        status = response.status
        if type(response) is web.Response or isinstance(response, web.Response):
            try:  # a file or a stream is aiohttp's to send
                if not sending.send(request, response):
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
        metrics.in_flight.dec()
        _record(request, call, resource, response, status, code, time.perf_counter() - started)
    return response


def _too_large(request: web.Request, call: Call, size: int,
               limit: int) -> tuple[web.StreamResponse, int]:
    """A 502 naming MAX_RESPONSE_BYTES, instead of a reply body over it."""
    log.warning("reply to %s %s (request %s) is %d bytes, over MAX_RESPONSE_BYTES (%d); "
                "answered 502", request.method, request.path, call.request_id, size, limit)
    err = errors.response_too_large(size, limit)
    return err.response(), err.code


def _route_label(request: web.Request, call: Call, resource: object) -> str:
    """The route as a metric label: a bounded set, never the raw path of an unknown URL."""
    label = call.state.route_labels.get(resource, UNMATCHED)
    if label is not None:
        return label
    if call.route_path is not None:  # handle_rpc looked it up already, in the table it used
        return call.route_path
    path = request.path
    route = call.state.table.lookup(SLASHES.sub("/", path) if "//" in path else path)
    return route.path if route is not None else UNMATCHED


def _route_labels(app: web.Application,
                  rpcs: list[web.AbstractResource]) -> dict[object, str | None]:
    """Every route's label: its template (``/api/job/{job_id}``, ``/metrics``...).

    A route whose pattern spans segments (``.*``) is a catch-all, labelled
    ``unmatched`` (404/405 under ``/api``). The RPC routes are labelled per
    request by the method the path names in the table of the moment (None
    here).
    """
    labels: dict[object, str | None] = {}
    for resource in app.router.resources():
        pattern = resource.get_info().get("pattern")
        catch_all = pattern is not None and ".*" in pattern.pattern
        labels[resource] = UNMATCHED if catch_all else resource.canonical
    labels.update(dict.fromkeys(rpcs))
    return labels


def _record(request: web.Request, call: Call, resource: object,
            response: web.StreamResponse | None, status: int, code: int,
            seconds: float) -> None:
    """The request's metrics and its access line."""
    state = call.state
    route = _route_label(request, call, resource)
    code_name = errors.code_name(code)
    bytes_in = call.bytes_in
    if bytes_in is None:
        bytes_in = request.content_length or 0
    bytes_out = 0
    if call.sent is not None:
        bytes_out = call.sent.bytes_out
    elif response is not None:
        body = response.body if isinstance(response, web.Response) else None
        bytes_out = (len(body) if isinstance(body, (bytes, bytearray))
                     else response.content_length or 0)
    method = request.method
    state.metrics.observe_request(route, method, status, code_name, seconds, bytes_in,
                                  bytes_out)
    if access_log.isEnabledFor(logging.INFO):
        logs.log_access(call.request_id, call.user, guard.address(request, call, state),
                        method, request.path, route, status, code_name, bytes_in, bytes_out,
                        seconds * 1000)


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


async def _cors(request: web.Request, call: Call,
                state: GatewayState) -> web.StreamResponse | None:
    """A preflight's answer (before auth); else the CORS headers every reply gets."""
    policy = state.cors
    origin = request.headers["Origin"]
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return await cors_mod.preflight(request, policy, origin)
    if policy.allows(origin):
        call.reply_headers.update(policy.response_headers(origin))
    else:
        call.reply_headers["Vary"] = "Origin"
    return None


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


def _metadata(request: web.Request, call: Call) -> list[tuple[str, str]]:
    """gRPC metadata for the call: the request id, plus ``Grpc-Metadata-*`` headers."""
    md = [("x-request-id", call.request_id)]
    user = call.user
    if user:
        md.append((IDENTITY_METADATA, user if user.isascii() and user.isprintable()
                   else quote(user, safe="")))
    headers = request.headers
    # one search over the names first: most requests carry no such header
    if not _HAS_METADATA.search("\n".join(headers.keys())):
        return md
    for name, value in headers.items():
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


def _rpc_route(request: web.Request) -> Route | None:
    """What an RPC request calls, for authorization: the real method behind any alias."""
    path = request.path
    return request.app[STATE].table.lookup(SLASHES.sub("/", path) if "//" in path else path)


async def invoke(request: web.Request, route: Route, data: bytes) -> bytes:
    """Call Cuebot for ``request``, with its deadline and metadata; failures as GatewayError.

    The one way to reach the backend, for the RPC routes and the /api ones
    alike; ``protect.py`` decides whether the call is made, shared or refused.
    """
    call = request[CALL]
    state = call.state
    access = state.access
    timeout, metadata = _deadline(request, state.cfg.grpc_timeout), _metadata(request, call)
    if access is None:
        reply = await state.protect.call(route, data, timeout, metadata)
    else:
        access.before_call(request, route, data)  # a call its route did not declare
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            reply = await state.protect.call(route, data, timeout, metadata)
            code = "OK"
        except GatewayError as e:
            code = errors.code_name(e.code)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:  # the audit line
            access.after_call(request, route, data, code, time.perf_counter() - started)
    if type(reply) is not bytes:  # an Answer: maybe shared, maybe from the micro-cache
        reply, headers = reply
        if headers:
            call.reply_headers.update(headers)
    return reply


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    call = request[CALL]
    state = call.state
    table = state.table  # read once: a reload mid-request does not affect it
    path = request.path
    if "//" in path:
        path = SLASHES.sub("/", path)
    call.reply_headers["X-Descriptor-Version"] = table.version
    route = table.lookup(path)
    if route is None:
        if table.is_streaming(path):
            raise GatewayError(501, errors.UNIMPLEMENTED,
                               f"{path} is a streaming RPC; this gateway serves unary RPCs only")
        raise errors.not_found(table.explain_miss(path))
    call.route_path = route.path  # the metrics label, from the table this request uses
    if request.method != "POST":
        raise errors.method_not_allowed("POST")

    body, call.bytes_in = await bodies.read(request, state.cfg.max_request_bytes)
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
        if not offload.offloads(len(reply)):
            return web.Response(body=route.response.to_json(reply),
                                content_type="application/json")
        out = await offload.to_json_stream(table, route.response, reply)
    except EncodeError as e:
        raise GatewayError(502, errors.INTERNAL, str(e)) from None
    del reply  # not kept while a large reply is forwarded
    if isinstance(out, Answer):  # large: forwarded from the conversion process as it comes
        return await streaming.forward(request, out)
    return web.Response(body=out, content_type="application/json")


# ---------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------
def create_app(state: GatewayState) -> web.Application:
    app = web.Application(
        client_max_size=state.cfg.max_request_bytes,
        middlewares=[context],
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
        call = request[CALL]
        table = call.state.table
        call.reply_headers["X-Descriptor-Version"] = table.version
        return table

    app.router.add_get("/metrics", state.metrics.handle)
    health.add_routes(app)
    reload.add_routes(app)
    resources.add_routes(app, resources.Resources(invoke, table_of, caller))
    openapi.add_routes(app, table_of)
    # Each RPC of the table loaded at start-up has a route of its own: the
    # router finds an exact path with one dict look-up, where reaching the
    # catch-all takes a walk up the path and a regex. The catch-all serves
    # everything else (aliases, doubled slashes, methods a reload adds,
    # unknown paths); every one of these routes serves whatever the table of
    # the moment says (handle_rpc looks the path up again).
    taken = {r.canonical for r in app.router.resources()}
    rpcs = [app.router.add_route("*", path, handle_rpc).resource
            for path in state.table.routes if path not in taken]
    rpcs.append(app.router.add_route("*", "/{path:.*}", handle_rpc).resource)
    for rpc in rpcs:
        authz.declare(app, rpc, _rpc_route)
    state.route_labels = _route_labels(app, rpcs)
    state.open_resources = frozenset(
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
