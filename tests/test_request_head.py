"""Request heads over the limits, against a real gateway process over raw sockets.

aiohttp's parser refuses them before any route runs; the gateway answers 431
in its envelope (as Go's net/http answers an oversized head), names the limit,
and never echoes the offending bytes, which may be a token. Heads within the
limits are served.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.server import MAX_HEADERS, MAX_LINE_BYTES
from support import GatewayProcess, RecordingCuebot, auth_headers

GET_SHOWS = "/show.ShowInterface/GetShows"


@pytest.fixture
async def gw(cuebot: RecordingCuebot) -> Any:
    proc = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "RATE_LIMIT_RPS": "0"})
    await asyncio.to_thread(proc.wait_ready)
    yield proc
    assert await asyncio.to_thread(proc.stop) == 0, proc.output
    assert "Traceback" not in proc.output


async def _send(port: int, head_lines: list[str], target: str = GET_SHOWS,
                body: bytes = b"{}") -> tuple[int, dict[str, Any], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"POST {target} HTTP/1.1", "Host: x", "Connection: close",
            f"Content-Length: {len(body)}", *head_lines]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    body_out = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body_out), data


def _auth() -> list[str]:
    return [f"{k}: {v}" for k, v in auth_headers().items()]


@pytest.mark.parametrize("case", ["long header value", "long header name", "long target",
                                  "too many headers"])
async def test_an_oversized_head_is_431_in_the_envelope(gw: GatewayProcess,
                                                        cuebot: RecordingCuebot,
                                                        case: str) -> None:
    secret = "Bearer " + "s3cr3t" * 3000
    lines, target = _auth(), GET_SHOWS
    if case == "long header value":
        lines = [f"Authorization: {secret}"]
    elif case == "long header name":
        lines += ["X-" + "n" * (MAX_LINE_BYTES + 10) + ": v"]
    elif case == "long target":
        target = GET_SHOWS + "?" + "q" * (MAX_LINE_BYTES + 10)
    else:
        lines += [f"X-Field-{i}: v" for i in range(MAX_HEADERS + 5)]
    status, body, raw = await _send(gw.port, lines, target)
    assert status == 431, raw[:300]
    assert list(body) == ["error", "code", "message", "details"]
    assert body["code"] == 8 and body["message"].startswith("request head too large: ")
    limit = str(MAX_HEADERS) if case == "too many headers" else str(MAX_LINE_BYTES)
    assert limit in body["message"]
    assert b"s3cr3t" not in raw and b"qqqq" not in raw and b"nnnn" not in raw
    assert cuebot.calls == []
    assert "s3cr3t" not in gw.output  # nor in the log


async def test_heads_within_the_limits_are_served(gw: GatewayProcess,
                                                  cuebot: RecordingCuebot) -> None:
    lines = _auth() + [f"X-Field-{i}: v" for i in range(MAX_HEADERS - 10)]
    lines.append("X-Long: " + "v" * (MAX_LINE_BYTES - 100))
    status, body, raw = await _send(gw.port, lines)
    assert status == 200, raw[:300]
    assert body == {"shows": None}
    assert len(cuebot.calls) == 1


async def test_other_malformed_heads_stay_400(gw: GatewayProcess) -> None:
    status, body, _ = await _send(gw.port, _auth() + ["Bad Header Name: v"])
    assert status == 400
    assert body["code"] == 3 and body["message"].startswith("malformed HTTP request")
