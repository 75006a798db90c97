"""The HTTP listener: aiohttp's runner, with its own refusals in our envelope.

aiohttp answers a request it cannot parse (bad framing, invalid header
characters, an oversized line) before any middleware runs, in text/plain, and
logs the exception with the offending raw line, which may be an
``Authorization`` header. Here those answers use the gateway's JSON envelope
and the log line names only the kind of error. Each connection is a
``connections.GuardedHandler``: read timeouts, the per-address cap and the
HTTP versions refused (see ``connections.py``).
"""
from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from . import errors
from .connections import ConnectionGuard, GuardedHandler

log = logging.getLogger("gateway.http")

# The request head's limits (aiohttp's own defaults, set here so that the
# refusal can name them): one line, one header field, and how many fields.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128


def _head_too_large(exc: BaseException | None) -> errors.GatewayError | None:
    """431 for a head over its limits (as Go's net/http answers), else None.

    aiohttp reports an oversized request line or header field as ``LineTooLong``
    and too many fields as a ``BadHttpMessage``, both 400; which line was too
    long it does not say in a form worth relying on.
    """
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) \
            else MAX_LINE_BYTES
        why = f"the request line or a header field is longer than {limit} bytes"
    elif isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
        why = f"more than {MAX_HEADERS} header fields"
    else:
        return None
    return errors.GatewayError(431, errors.RESOURCE_EXHAUSTED,
                               f"request head too large: {why}")


class _EnvelopeHandler(GuardedHandler):
    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if status == 505:  # the client's HTTP version (see connections.py), not our failure
            log.info("refused request from %s: %s", request.remote, message or status)
            err = errors.GatewayError(505, errors.UNIMPLEMENTED,
                                      message or "HTTP version not supported")
        elif status >= 500:
            log.error("error handling request from %s: %s", request.remote,
                      type(exc).__name__ if exc else status)
            err = errors.internal() if status == 500 else errors.GatewayError(
                status, errors.UNAVAILABLE if status == 503 else errors.INTERNAL,
                HTTPStatus(status).phrase)
        elif (err := _head_too_large(exc)) is not None:
            log.info("request head too large from %s: %s", request.remote, type(exc).__name__)
        else:
            log.info("malformed request from %s: %s", request.remote,
                     type(exc).__name__ if exc else status)
            err = errors.GatewayError(status, errors.INVALID_ARGUMENT,
                                      f"malformed HTTP request ({HTTPStatus(status).phrase})")
        resp = err.response()
        resp.force_close()
        return resp


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer protocol errors in JSON.

    A client that disconnects cancels its handler, and with it the Cuebot
    call (as the Go gateway's request context does), instead of Cuebot's
    answer being computed for nobody; the request is logged as 499.
    """

    def __init__(self, app: web.Application, *, guard: ConnectionGuard | None = None,
                 **kwargs: object) -> None:
        kwargs.setdefault("handler_cancellation", True)
        kwargs.setdefault("max_line_size", MAX_LINE_BYTES)
        kwargs.setdefault("max_field_size", MAX_FIELD_BYTES)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        self.guard = guard

    def quick_shutdown(self) -> None:
        """Let ``cleanup()`` wait only briefly: ``shutdown.drain`` has waited already."""
        self._shutdown_timeout = 0.1

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EnvelopeServer  # same state, different handler class
        server.guard = self.guard  # type: ignore[attr-defined]  # read by each connection
        return server
