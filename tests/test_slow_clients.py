"""Slow and greedy clients against a real gateway process: cut on time, capped per address.

Raw sockets, because trickling bytes is the point. The gateway runs with
one-second timeouts so that a test lasts seconds; the only time bounds
asserted are generous ones (a connection is cut "within a few seconds"
rather than never). Before ``connections.py`` every one of these
connections was held open for as long as the client cared to keep it.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scrape import samples, value
from support import GatewayProcess, RecordingCuebot, auth_headers, token

NOWHERE = "127.0.0.1:9"  # no backend needed: these requests never get that far
CUT = "opencue_gateway_connections_cut_total"
GENEROUS = 8.0           # seconds: far above the 1 s timeouts, far below "forever"


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    proc = GatewayProcess(env={
        "CUEBOT_ENDPOINT": NOWHERE, "HEADER_TIMEOUT": "1", "BODY_TIMEOUT": "1",
        "KEEPALIVE_TIMEOUT": "1.5", "RATE_LIMIT_RPS": "0", "LOG_FORMAT": "json"})
    proc.wait_ready()
    yield proc
    assert proc.stop() == 0, proc.output
    assert "Traceback" not in proc.output and '"exception"' not in proc.output


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), GENEROUS)
    return data, time.monotonic() - started


async def _trickled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pieces: list[bytes], every: float) -> tuple[bytes, float]:
    """``_until_closed`` while ``pieces`` are sent one per ``every`` seconds."""

    async def trickle() -> None:
        for piece in pieces:
            writer.write(piece)
            await asyncio.sleep(every)

    sender = asyncio.ensure_future(trickle())
    try:
        return await _until_closed(reader)
    finally:
        sender.cancel()
        writer.close()


def _reply(data: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


async def _cut(gw: GatewayProcess, reason: str) -> float:
    reader, writer = await _open(gw.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), GENEROUS)
    writer.close()
    return value(samples(data.partition(b"\r\n\r\n")[2].decode()), CUT, reason=reason)


@pytest.mark.parametrize("every", [0.2, 0.01], ids=["slow", "steady"])
async def test_headers_trickled_a_byte_at_a_time_get_408(gw: GatewayProcess,
                                                         every: float) -> None:
    """Also while bytes keep coming: the 408 must not be lost to a reset on close."""
    before = await _cut(gw, "header_timeout")
    reader, writer = await _open(gw.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 1000
    data, took = await _trickled(reader, writer, [head[i:i + 1] for i in range(len(head))],
                                 every)
    status, headers, body = _reply(data)
    assert status == 408 and body["code"] == 4 and "head" in body["message"]
    assert headers["connection"] == "close"
    assert took < GENEROUS
    assert await _cut(gw, "header_timeout") == before + 1


async def test_a_connection_that_sends_nothing_is_closed(gw: GatewayProcess) -> None:
    reader, writer = await _open(gw.port)
    data, _took = await _until_closed(reader)
    writer.close()
    assert data == b""  # nothing was asked: nothing to answer


async def test_body_trickled_a_byte_at_a_time_gets_408_and_frees_the_handler(
        gw: GatewayProcess) -> None:
    before = await _cut(gw, "body_timeout")
    reader, writer = await _open(gw.port)
    writer.write(f"POST /show.ShowInterface/FindShow HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {token()}\r\nContent-Length: 100000\r\n\r\n".encode())
    data, took = await _trickled(reader, writer, [b" "] * 1000, 0.01)
    status, headers, body = _reply(data)
    assert status == 408 and body["code"] == 4 and "body" in body["message"]
    assert headers["connection"] == "close" and "x-request-id" in headers
    assert took < GENEROUS
    assert await _cut(gw, "body_timeout") == before + 1
    lines = [json.loads(x) for x in gw.output.splitlines() if '"gateway.access"' in x]
    assert any(e["status"] == 408 and e["path"] == "/show.ShowInterface/FindShow" for e in lines)


async def test_idle_keep_alive_connection_is_closed(gw: GatewayProcess) -> None:
    reader, writer = await _open(gw.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b'"ok"}'), GENEROUS)
    assert first.startswith(b"HTTP/1.1 200")
    rest, took = await _until_closed(reader)  # then nothing more: closed when idle too long
    writer.close()
    assert rest == b"" and took < GENEROUS


async def test_slow_but_timely_requests_and_pipelining_are_served(gw: GatewayProcess) -> None:
    reader, writer = await _open(gw.port)
    # a head in three parts and a body in two, each within its timeout
    for part in (b"GET /heal", b"thz HTTP/1.1\r\nHost: x\r\n", b"\r\n"):
        writer.write(part)
        await asyncio.sleep(0.3)
    assert (await asyncio.wait_for(reader.readuntil(b'"ok"}'), GENEROUS)).startswith(b"HTTP/1.1 200")
    body = b'{"name": "x"}'
    writer.write(f"POST /nothing.Here/X HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token()}"
                 f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:5])
    await asyncio.sleep(0.5)
    writer.write(body[5:])
    second = await asyncio.wait_for(reader.readuntil(b"}"), GENEROUS)
    assert second.startswith(b"HTTP/1.1 404")  # answered, not timed out
    # two requests in one write
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
                 b"Connection: close\r\n\r\n")
    data, _took = await _until_closed(reader)
    writer.close()
    assert data.count(b"HTTP/1.1 200") == 2


@pytest.mark.parametrize(("line", "status"), [
    (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"POST /show.ShowInterface/GetShows HTTP/2.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 505),
    (b"GET /healthz\r\n\r\n", 400),
])
async def test_http_versions_this_port_does_not_speak_are_refused(
        gw: GatewayProcess, line: bytes, status: int) -> None:
    reader, writer = await _open(gw.port)
    writer.write(line)
    data, _took = await _until_closed(reader)
    writer.close()
    got, headers, body = _reply(data)
    assert got == status and headers["content-type"] == "application/json"
    assert body["code"] == (12 if status == 505 else 3)
    assert set(body) == {"error", "code", "message", "details"}


async def test_http_1_0_is_still_served(gw: GatewayProcess) -> None:
    reader, writer = await _open(gw.port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    data, _took = await _until_closed(reader)
    writer.close()
    assert data.startswith(b"HTTP/1.0 200")


# ---------------------------------------------------------------------------
# connections per client address
# ---------------------------------------------------------------------------
async def _held(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    conns = [await _open(port) for _ in range(n)]
    for _r, w in conns:  # each one in use: a request sent, its reply read, kept alive
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for r, _w in conns:
        await asyncio.wait_for(r.readuntil(b'"ok"}'), GENEROUS)
    return conns


async def test_one_address_cannot_hold_more_than_its_share() -> None:
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": NOWHERE, "MAX_CONNECTIONS_PER_CLIENT": "4",
                             "RATE_LIMIT_RPS": "0"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        conns = await _held(gw.port, 4)
        reader, writer = await _open(gw.port)
        data, _took = await _until_closed(reader)
        writer.close()
        status, headers, body = _reply(data)
        assert status == 429 and body["code"] == 8
        assert "MAX_CONNECTIONS_PER_CLIENT" in body["message"] and headers["retry-after"] == "1"
        conns.pop()[1].close()  # one given back: room for one more
        await asyncio.sleep(0.5)
        conns += await _held(gw.port, 1)
        for _r, w in conns:
            w.close()
    finally:
        assert await asyncio.to_thread(gw.stop) == 0
    assert "refusing connections from 127.0.0.1" in gw.output


async def test_trusted_proxies_are_not_capped() -> None:
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": NOWHERE, "MAX_CONNECTIONS_PER_CLIENT": "2",
                             "TRUSTED_PROXIES": "127.0.0.1", "RATE_LIMIT_RPS": "0"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        conns = await _held(gw.port, 6)
        for _r, w in conns:
            w.close()
    finally:
        assert await asyncio.to_thread(gw.stop) == 0


async def test_a_long_request_is_not_cut_by_the_header_timeout() -> None:
    """The head's clock stops once the head is in: a slow Cuebot is not a slow client."""
    cuebot = await RecordingCuebot().start()
    cuebot.reply("/show.ShowInterface/GetShows", b"", delay=2.5)
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "HEADER_TIMEOUT": "1",
                             "BODY_TIMEOUT": "1", "RATE_LIMIT_RPS": "0"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        reader, writer = await _open(gw.port)
        auth = auth_headers()["Authorization"]
        writer.write(f"POST /show.ShowInterface/GetShows HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: {auth}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                     .encode())
        data, _took = await _until_closed(reader)
        writer.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
    finally:
        assert await asyncio.to_thread(gw.stop) == 0
        await cuebot.stop()
