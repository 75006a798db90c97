"""Connection-level protection: slow clients cut, one address capped, odd HTTP versions refused.

aiohttp waits for a request's head and body as long as the client takes:
a connection trickling its headers a byte a second is held forever, and one
trickling its body holds a handler too. Here, per connection:

- the request line and headers must be complete within ``HEADER_TIMEOUT``,
  counted from the connection's start or from the first byte of a later
  request on it; past that, a client that sent part of a head gets a 408
  envelope, one that sent nothing is closed silently;
- the body within ``BODY_TIMEOUT`` of its head: the handler reading it gets
  ``BodyTimeout`` (a 408 envelope, see ``bodies.py``) and the connection closes
  after the reply;
- idle keep-alive connections are aiohttp's own ``keepalive_timeout``
  (``KEEPALIVE_TIMEOUT``);
- one client address may hold ``MAX_CONNECTIONS_PER_CLIENT`` connections;
  the next is answered 429 and closed at once, before any request is read.
  Peers in ``TRUSTED_PROXIES`` are exempt: a proxy carries many clients.

The same hook refuses what aiohttp's parser lets through although this
server does not speak it: an ``HTTP/2.0`` request line on this HTTP/1 port
(505) and a request line without a version, HTTP/0.9 (400).

These hooks read a few of ``RequestHandler``'s internals (the message queue,
the request counter, whether a handler runs), as ``server.py`` already
subclasses it; the tests exercise them against the aiohttp in use.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable

from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from . import errors
from .bodies import BodyTimeout
from .ratelimit import Network

log = logging.getLogger("gateway.connections")

LOG_EVERY = 10.0  # seconds between two log lines about the same address and reason
LINGER = 1.0      # seconds a cut connection is still read (and discarded) after its reply


class _Lingering:
    """A transport whose ``close`` sends the reply's end (FIN) and reads on for a moment.

    Closing a socket while the client is still sending makes the kernel answer
    with a reset, which can destroy the 408 or 429 just written before the
    client reads it. Half-closing first delivers the reply; what the client
    sends after it is discarded (the handler ignores data once closing) until
    the client closes too or LINGER passes.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        t = self._transport
        if t.is_closing():
            return
        try:
            if not t.can_write_eof():  # TLS: no half-close
                t.close()
                return
            t.write_eof()
        except (OSError, RuntimeError):
            t.close()
            return
        self._loop.call_later(LINGER, t.close)


@dataclass
class ConnectionGuard:
    """The limits, and what every connection of one server shares: counts per address."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_per_client: int = 0
    exempt: tuple[Network, ...] = ()
    on_cut: Callable[[str], None] = lambda _reason: None   # the metrics' counter
    open_by_address: dict[str, int] = field(default_factory=dict)
    _logged: dict[tuple[str, str], float] = field(default_factory=dict)

    def admit(self, address: str | None) -> bool:
        """Count one more connection from ``address``, unless it has its share already."""
        if self.max_per_client <= 0 or address is None or self._exempt(address):
            return True
        n = self.open_by_address.get(address, 0)
        if n >= self.max_per_client:
            return False
        self.open_by_address[address] = n + 1
        return True

    def release(self, address: str) -> None:
        n = self.open_by_address.get(address, 0) - 1
        if n > 0:
            self.open_by_address[address] = n
        else:
            self.open_by_address.pop(address, None)

    def _exempt(self, address: str) -> bool:
        if not self.exempt:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.exempt)

    def note(self, reason: str, address: str | None, message: str, *args: Any) -> None:
        """Count a cut connection; log it, at most every LOG_EVERY s per address and reason."""
        self.on_cut(reason)
        key = (reason, address or "-")
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY) < LOG_EVERY:
            return
        if len(self._logged) > 4096:
            self._logged.clear()
        self._logged[key] = now
        log.info(message, address or "unknown", *args)


def _raw_reply(status: int, code: int, message: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 reply in the envelope, for moments with no request object."""
    body = errors.GatewayError(status, code, message).body()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("ascii") + body


class GuardedHandler(RequestHandler):
    """A ``RequestHandler`` enforcing ``ConnectionGuard``'s limits on its connection."""

    _guard: ConnectionGuard | None = None
    _counted: str | None = None          # the address this connection is counted under
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = False                  # some bytes of the awaited head have arrived
    _body: Any = None                    # the payload whose end is awaited
    _body_timer: asyncio.TimerHandle | None = None

    # -- the connection ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = getattr(self._manager, "guard", None)
        if not isinstance(guard, ConnectionGuard):
            return
        self._guard = guard
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, (tuple, list)) and peer else None
        if not guard.admit(address):
            guard.note("client_limit", address, "refusing connections from %s: it holds "
                       "MAX_CONNECTIONS_PER_CLIENT (%d) already", guard.max_per_client)
            self._answer_and_close(_raw_reply(
                429, errors.RESOURCE_EXHAUSTED,
                f"too many connections from your address (MAX_CONNECTIONS_PER_CLIENT is "
                f"{guard.max_per_client}); reuse the ones you have", "Retry-After: 1\r\n"))
            return
        if address is not None and guard.max_per_client > 0 and not guard._exempt(address):
            self._counted = address
        self._arm_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head()
        self._disarm_body()
        if self._counted is not None and self._guard is not None:
            self._guard.release(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return super().data_received(data)
        before = self._request_count
        body = self._body
        super().data_received(data)
        new = self._request_count - before
        guard = self._guard
        if new:
            messages = self._messages
            start = len(messages) - new
            for i in range(start, len(messages)):
                if getattr(messages[i][0], "version", None) is not HttpVersion11:
                    self._refuse_versions(i)
            if guard is None:
                return
            if body is not None and body.is_eof():
                self._disarm_body()
            self._disarm_head()
            for i in range(start, len(messages)):
                payload = messages[i][1]
                if payload is not EMPTY_PAYLOAD and not payload.is_eof():
                    self._arm_body(payload)
        elif guard is None:
            return
        elif body is not None:
            if body.is_eof():
                self._disarm_body()
        elif data:  # part of a head: its clock runs from now
            self._head_bytes = True
            if self._head_timer is None:
                self._arm_head()

    # -- HTTP versions aiohttp's parser accepts and this server does not speak --------
    def _refuse_versions(self, i: int) -> None:
        """Message ``i`` (not HTTP/1.1) replaced by its refusal, unless it is HTTP/1.0."""
        msg, _payload = self._messages[i]
        version = getattr(msg, "version", None)
        if version is None or version.major == 1:
            return
        status, why = ((505, f"HTTP/{version.major}.{version.minor} is not spoken on this "
                             "port (HTTP/1.1)") if version.major >= 2
                       else (400, "a request line without an HTTP version (HTTP/0.9)"))
        self._messages[i] = (_ErrInfo(status=status, exc=HttpProcessingError(
            code=status, message=why), message=why), EMPTY_PAYLOAD)

    # -- the head --------------------------------------------------------------------
    def _arm_head(self) -> None:
        guard = self._guard
        if guard is not None and self._head_timer is None:
            self._head_timer = self._loop.call_later(guard.header_timeout, self._head_late)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = False

    def _head_late(self) -> None:
        self._head_timer = None
        guard = self._guard
        if guard is None or self.transport is None or self._force_close:
            return
        address = self._peer_address()
        guard.note("header_timeout", address, "closing a connection from %s: request head "
                   "not received within HEADER_TIMEOUT (%g s)", guard.header_timeout)
        if self._handling() or self._messages:
            self.close()  # a reply is being made here: the connection ends after it
            return
        if self._head_bytes:
            self._answer_and_close(_raw_reply(
                408, errors.DEADLINE_EXCEEDED,
                f"request head not received within {guard.header_timeout:g} s"))
        else:
            self.force_close()

    # -- the body --------------------------------------------------------------------
    def _arm_body(self, payload: Any) -> None:
        self._disarm_body()
        guard = self._guard
        assert guard is not None
        self._body = payload
        self._body_timer = self._loop.call_later(guard.body_timeout, self._body_late)

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = None

    def _body_late(self) -> None:
        payload, self._body, self._body_timer = self._body, None, None
        guard = self._guard
        if guard is None or payload is None or payload.is_eof() or self.transport is None:
            return
        guard.note("body_timeout", self._peer_address(), "cutting a request from %s: body "
                   "not received within BODY_TIMEOUT (%g s)", guard.body_timeout)
        if self._handling():
            # the handler reading it answers 408, and the connection closes after the
            # reply, lingering (aiohttp's own lingering would read the failed body)
            self._lingering_time = 0.0
            payload.set_exception(BodyTimeout(guard.body_timeout))
            self._linger()
            self.close()
        else:
            self.force_close()

    # -- closing after a reply of our own ----------------------------------------------
    def _linger(self) -> None:
        """From now on, closing this connection half-closes it first (see ``_Lingering``)."""
        t = self.transport
        if t is not None and not isinstance(t, _Lingering):
            self.transport = _Lingering(t, self._loop)  # type: ignore[assignment]

    def _answer_and_close(self, reply: bytes) -> None:
        """Write a complete reply made here (no request object) and end the connection."""
        t = self.transport
        if t is None:
            return
        t.write(reply)  # type: ignore[attr-defined]
        self._linger()
        self.close()  # handle no more of what arrives; stop waiting for a request
        self.transport.close()

    def _handling(self) -> bool:
        """Whether a handler is running for this connection (aiohttp's own flag)."""
        return bool(getattr(self, "_request_in_progress", False))

    def _peer_address(self) -> str | None:
        peer = self.peername
        return peer[0] if isinstance(peer, (tuple, list)) and peer else None
