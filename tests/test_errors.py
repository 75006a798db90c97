"""Every failure is one JSON envelope with the right status; Cuebot's words pass through."""
from __future__ import annotations

import asyncio
import base64

import grpc
import orjson
import pytest

from gateway.errors import HTTP_STATUS
from support import auth_headers, raw_request

GET_SHOWS = "/show.ShowInterface/GetShows"
FIND_SHOW = "/show.ShowInterface/FindShow"


def envelope(body: bytes) -> dict:
    data = orjson.loads(body)
    assert list(data) == ["error", "code", "message", "details"]
    assert data["error"] == data["message"]
    return data


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK],
                         ids=lambda c: c.name)
async def test_grpc_codes_map_to_http_like_grpc_gateway(gateway, cuebot, code):
    message = f"Cuebot says {code.name}: “quoted” ünïcode\nsecond line"
    cuebot.reply(GET_SHOWS, code=code, message=message)
    resp = await gateway.post(GET_SHOWS, data=b"{}")
    assert resp.status == HTTP_STATUS[code.value[0]]
    assert resp.headers["Content-Type"] == "application/json"
    body = envelope(await resp.read())
    assert body["code"] == code.value[0]
    assert body["message"] == message  # word for word
    if code == grpc.StatusCode.UNAUTHENTICATED:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_status_table_is_grpc_gateways():
    assert HTTP_STATUS == {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403,
                           8: 429, 9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503,
                           15: 500, 16: 401}


async def test_cuebot_not_found_message_is_kept(gateway, cuebot):
    """CueWeb matches /not\\s*found/ on 404 bodies, and Cuebot's own text."""
    cuebot.reply(FIND_SHOW, code=grpc.StatusCode.NOT_FOUND,
                 message="Incorrect result size: expected 1, actual 0")
    resp = await gateway.post(FIND_SHOW, data=b'{"name":"non-existent-show-xyz-123"}')
    assert resp.status == 404
    assert envelope(await resp.read())["message"] == "Incorrect result size: expected 1, actual 0"


def _any(type_url: str, value: bytes) -> bytes:
    def ld(num: int, payload: bytes) -> bytes:
        return bytes([num << 3 | 2, len(payload)]) + payload
    return ld(1, type_url.encode()) + ld(2, value)


async def test_status_details_are_passed_on(gateway, cuebot):
    detail = _any("type.googleapis.com/google.rpc.ErrorInfo", b"\x0a\x03why")
    status = bytes([0x08, 9, 0x12, 4]) + b"nope" + bytes([0x1A, len(detail)]) + detail
    cuebot.reply(GET_SHOWS, code=grpc.StatusCode.FAILED_PRECONDITION, message="nope",
                 trailers=(("grpc-status-details-bin", status),))
    resp = await gateway.post(GET_SHOWS, data=b"{}")
    assert resp.status == 400
    body = envelope(await resp.read())
    assert body["details"] == [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "value": base64.b64encode(b"\x0a\x03why").decode()}]


async def test_garbled_status_details_do_not_break_the_error(gateway, cuebot):
    cuebot.reply(GET_SHOWS, code=grpc.StatusCode.INTERNAL, message="boom",
                 trailers=(("grpc-status-details-bin", b"\xff\xff\xff\xff"),))
    resp = await gateway.post(GET_SHOWS, data=b"{}")
    assert resp.status == 500 and envelope(await resp.read())["message"] == "boom"


@pytest.mark.parametrize("body, words", [
    (b"invalid-json", "malformed JSON"),
    (b'{"name": 5}', "name: expected string, got number"),
    (b"[]", "JSON object"),
    (b'{"name": "a"', "malformed JSON"),
])
async def test_bad_requests_are_400_and_never_reach_cuebot(gateway, cuebot, body, words):
    resp = await gateway.post(FIND_SHOW, data=body)
    assert resp.status == 400
    data = envelope(await resp.read())
    assert data["code"] == 3 and words in data["message"]
    assert "show.ShowFindShowRequest" in data["message"]
    assert cuebot.calls == []


async def test_body_over_the_limit_is_413_by_content_length(make_gateway, cuebot):
    gw = await make_gateway(max_request_bytes=1024)
    resp = await gw.post(FIND_SHOW, data=b'{"name":"' + b"x" * 2000 + b'"}')
    assert resp.status == 413
    data = envelope(await resp.read())
    assert data["code"] == 8 and "MAX_REQUEST_BYTES" in data["message"] and "1024" in data["message"]
    assert cuebot.calls == []


async def test_body_over_the_limit_is_413_when_chunked(make_gateway, cuebot):
    gw = await make_gateway(max_request_bytes=1024)

    async def chunks():
        yield b'{"name":"'
        for _ in range(20):
            yield b"x" * 200
        yield b'"}'

    resp = await gw.post(FIND_SHOW, data=chunks())
    assert resp.status == 413
    assert envelope(await resp.read())["code"] == 8
    assert cuebot.calls == []


async def _chunked_at_once(port: int, body: bytes) -> tuple[int, bytes]:
    """A chunked request whose whole body is written with its head, in one write."""
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                      for i in range(0, len(body), 100)) + b"0\r\n\r\n"
    head = "".join(f"{k}: {v}\r\n" for k, v in auth_headers().items())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {FIND_SHOW} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 f"Connection: close\r\n{head}\r\n".encode() + chunks)
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


async def test_a_chunked_body_that_came_whole_is_held_to_the_limit(make_gateway, cuebot):
    """Taken at once (it is all there), and still measured: no Content-Length said its size."""
    gw = await make_gateway(max_request_bytes=1024)
    status, body = await _chunked_at_once(gw.port, b'{"name":"' + b"x" * 1100 + b'"}')
    assert status == 413 and b"MAX_REQUEST_BYTES" in body
    assert cuebot.calls == []
    at_limit = b'{"name":"' + b"x" * (1024 - 11) + b'"}'
    status, _ = await _chunked_at_once(gw.port, at_limit)
    assert status == 200
    from opencue_proto import show_pb2

    sent = show_pb2.ShowFindShowRequest(name="x" * (1024 - 11)).SerializeToString()
    assert [c.request for c in cuebot.calls] == [sent]


async def test_body_at_the_limit_is_accepted(make_gateway, cuebot):
    gw = await make_gateway(max_request_bytes=1024)
    body = b'{"name":"' + b"x" * (1024 - 11) + b'"}'
    assert len(body) == 1024
    assert (await gw.post(FIND_SHOW, data=body)).status == 200


async def test_backend_down_is_503_quickly(make_gateway):
    from support import free_port

    gw = await make_gateway(cuebot_endpoint=f"127.0.0.1:{free_port()}", grpc_timeout=10.0)
    started = asyncio.get_running_loop().time()
    resp = await gw.post(GET_SHOWS, data=b"{}")
    assert resp.status == 503
    assert envelope(await resp.read())["code"] == 14
    assert asyncio.get_running_loop().time() - started < 5


async def test_slow_backend_is_504_at_the_deadline(make_gateway, cuebot):
    gw = await make_gateway(grpc_timeout=0.3)
    cuebot.reply(GET_SHOWS, delay=3)
    started = asyncio.get_running_loop().time()
    resp = await gw.post(GET_SHOWS, data=b"{}")
    assert resp.status == 504 and envelope(await resp.read())["code"] == 4
    assert asyncio.get_running_loop().time() - started < 2


async def test_reply_that_is_not_the_reply_type_is_502(gateway, cuebot):
    cuebot.reply(GET_SHOWS, b"\xff\xff\xff")
    resp = await gateway.post(GET_SHOWS, data=b"{}")
    assert resp.status == 502
    data = envelope(await resp.read())
    assert "show.ShowGetShowsResponse" in data["message"]


@pytest.mark.parametrize("request_bytes", [
    b"POST /show.ShowInterface/GetShows HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /show.ShowInterface/GetShows HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Bearer sec\x01ret-token\r\nContent-Length: 2\r\n\r\n{}",
    b"GARBAGE\r\n\r\n",
])
def test_malformed_http_gets_a_json_400_and_leaks_nothing(request_bytes):
    """aiohttp's own parser refusals, through the real gateway process."""
    import socket

    from support import GatewayProcess

    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": "127.0.0.1:1"}).wait_ready()
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(request_bytes)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    finally:
        gw.stop()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b"Content-Type: application/json" in head
    assert envelope(body)["code"] == 3
    assert b"sec" not in data and "sec\x01ret" not in gw.output and "Traceback" not in gw.output


async def test_errors_carry_request_id(gateway):
    status, headers, body = await raw_request(gateway.port, "GET", "/nope",
                                              headers={"X-Request-Id": "abc-123"})
    assert status == 404 and headers["x-request-id"] == "abc-123"
    assert envelope(body)["code"] == 5
