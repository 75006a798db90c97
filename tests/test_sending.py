"""sending.py: small replies written in one step are the bytes aiohttp would write.

Each reply is fetched twice over one raw keep-alive connection: once the
usual way (``sending.send`` writes it) and once with that way closed
(``MAX_BYTES`` below every body, so aiohttp's ``prepare``/``write_eof``
writes it). The two must be the same bytes but for the clock in ``Date``.
Which way a reply went is read from ``send``'s own answer.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from gateway import sending
from support import RecordingCuebot, auth_headers

DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


class _Ways:
    """Wraps ``sending.send`` to note, per reply, whether it wrote it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken: list[bool] = []
        real = sending.send

        def send(request: Any, response: Any) -> bool:
            wrote = real(request, response)
            self.taken.append(wrote)
            return wrote

        monkeypatch.setattr(sending, "send", send)


async def _read_reply(reader: asyncio.StreamReader, head_only: bool = False) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    found = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    if head_only or found is None:
        return head
    return head + await reader.readexactly(int(found.group(1)))


async def _both_ways(port: int, request: bytes, monkeypatch: pytest.MonkeyPatch,
                     ways: _Ways) -> tuple[bytes, bytes]:
    """The reply to ``request`` written by ``send``, then by aiohttp, on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        fast = await _read_reply(reader)
        with monkeypatch.context() as m:
            m.setattr(sending, "MAX_BYTES", -1)
            writer.write(request)
            slow = await _read_reply(reader)
    finally:
        writer.close()
    assert ways.taken[-2:] == [True, False], ways.taken
    return DATE.sub(b"\r\nDate: -\r\n", fast), DATE.sub(b"\r\nDate: -\r\n", slow)


def _request(method: str, target: str, body: bytes = b"", token: bool = True,
             extra: str = "") -> bytes:
    auth = "".join(f"{k}: {v}\r\n" for k, v in auth_headers().items()) if token else ""
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: req-1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{auth}{extra}"
            "\r\n").encode() + body


@pytest.mark.parametrize("method, target, body, token", [
    ("POST", "/show.ShowInterface/GetShows", b"{}", True),          # a reply from Cuebot
    ("POST", "/show.ShowInterface/NoSuchMethod", b"{}", True),      # 404 envelope
    ("POST", "/show.ShowInterface/GetShows", b"{\"x\":", True),     # 400 envelope
    ("POST", "/show.ShowInterface/GetShows", b"{}", False),         # 401 envelope
    ("GET", "/api/show", b"", True),                                # a resource route
    ("GET", "/healthz", b"", False),                                # an open route
])
async def test_the_one_step_reply_is_aiohttps_bytes(make_gateway: Any, cuebot: RecordingCuebot,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    method: str, target: str, body: bytes,
                                                    token: bool) -> None:
    ways = _Ways(monkeypatch)
    cuebot.reply("/show.ShowInterface/GetShows",
                  bytes.fromhex("0a0c0a0a0a0474657374120274"))  # shows { shows { id name } }
    gw = await make_gateway(rate_limit_rps=1000, rate_limit_burst=1000)
    fast, slow = await _both_ways(gw.port, _request(method, target, body, token),
                                  monkeypatch, ways)
    # the rate-limit headers count down between the two requests: compare them apart
    remaining = re.compile(rb"\r\nX-RateLimit-(Remaining|Reset): [^\r]*")
    assert remaining.sub(b"", fast) == remaining.sub(b"", slow)
    assert fast.startswith(b"HTTP/1.1 "), fast
    assert b"\r\nX-Request-Id: req-1\r\n" in fast
    assert b"\r\nConnection:" not in fast  # kept open: HTTP/1.1's default


async def test_a_large_reply_waits_for_the_socket_as_aiohttp_does(
        make_gateway: Any, cuebot: RecordingCuebot, monkeypatch: pytest.MonkeyPatch) -> None:
    ways = _Ways(monkeypatch)
    name = b"n" * (sending.MAX_BYTES + 10)
    show = b"\x12" + _varint(len(name)) + name                  # Show { name }
    seq = b"\x0a" + _varint(len(show)) + show                   # ShowSeq { shows }
    cuebot.reply("/show.ShowInterface/GetShows", b"\x0a" + _varint(len(seq)) + seq)
    gw = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(_request("POST", "/show.ShowInterface/GetShows", b"{}"))
    reply = await _read_reply(reader)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert name in reply
    assert ways.taken == [False]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.mark.parametrize("request_bytes, says", [
    # the client closes: aiohttp writes Connection: close
    (_request("POST", "/show.ShowInterface/GetShows", b"{}", extra="Connection: close\r\n"),
     b"\r\nConnection: close\r\n"),
    # HTTP/1.0: aiohttp answers in its own version
    (_request("POST", "/show.ShowInterface/GetShows", b"{}").replace(b"HTTP/1.1", b"HTTP/1.0"),
     b"HTTP/1.0 200 OK\r\n"),
    # HEAD: a head without the body
    (_request("HEAD", "/healthz", token=False), b"HTTP/1.1 200 OK\r\n"),
])
async def test_other_replies_are_left_to_aiohttp(make_gateway: Any, cuebot: RecordingCuebot,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 request_bytes: bytes, says: bytes) -> None:
    ways = _Ways(monkeypatch)
    cuebot.reply("/show.ShowInterface/GetShows", b"")
    gw = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(request_bytes)
    reply = await _read_reply(reader, head_only=request_bytes.startswith(b"HEAD"))
    writer.close()
    assert says in reply, reply
    assert ways.taken == [False]


async def test_a_reply_while_draining_closes_its_connection(
        make_gateway: Any, cuebot: RecordingCuebot, monkeypatch: pytest.MonkeyPatch) -> None:
    ways = _Ways(monkeypatch)
    cuebot.reply("/show.ShowInterface/GetShows", b"")
    gw = await make_gateway()
    gw.app[_state_key()].draining = True
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(_request("POST", "/show.ShowInterface/GetShows", b"{}"))
    reply = await _read_reply(reader)
    assert b"\r\nConnection: close\r\n" in reply
    assert await reader.read() == b""  # and the gateway closed it
    writer.close()
    assert ways.taken == [False]


def _state_key() -> Any:
    from gateway.state import STATE

    return STATE
