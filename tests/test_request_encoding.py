"""Compressed request bodies: decoded when valid, the client's fault when not, never a 500.

Raw bytes over a real socket (the framing and the header are the point), to
a gateway in front of a recording backend. Before ``bodies.py`` a corrupt
gzip body was a 500 with tracebacks in the log, a truncated one and an
unknown coding went through, and ``br`` was "malformed HTTP".
"""
from __future__ import annotations

import gzip
import logging
import zlib
from typing import Any

import orjson
import pytest

from support import RecordingCuebot, raw_request

FIND_SHOW = "/show.ShowInterface/FindShow"
BODY = b'{"name": "testing"}'
WIRE = b"\n\x07testing"  # ShowFindShowRequest{name: "testing"}


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.fixture
async def gateway(make_gateway: Any) -> Any:
    return await make_gateway(max_request_bytes=64 * 1024)


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# mtime=0: the same bytes in every process, or pytest-xdist's workers collect
# differently named tests and refuse to run
@pytest.mark.parametrize(("coding", "body"), [
    ("gzip", gzip.compress(BODY, mtime=0)),
    ("x-gzip", gzip.compress(BODY, mtime=0)),
    ("GZIP", gzip.compress(BODY, mtime=0)),
    # two members
    ("gzip", gzip.compress(BODY[:8], mtime=0) + gzip.compress(BODY[8:], mtime=0)),
    ("deflate", zlib.compress(BODY)),          # zlib container, as RFC 9110 says
    ("deflate", _raw_deflate(BODY)),           # raw deflate, as some clients send
    ("identity", BODY),
    ("identity, gzip", gzip.compress(BODY, mtime=0)),
])
async def test_valid_compressed_bodies_reach_the_backend_decoded(
        gateway: Any, cuebot: RecordingCuebot, coding: str, body: bytes) -> None:
    status, _h, reply = await raw_request(gateway.port, "POST", FIND_SHOW, body,
                                          headers={"Content-Encoding": coding})
    assert status == 200, reply
    assert cuebot.calls[-1].request == WIRE


@pytest.mark.parametrize(("coding", "body", "why"), [
    ("gzip", b"this is not gzip", "gzip"),
    ("deflate", b"this is not deflate", "deflate"),
    ("gzip", gzip.compress(BODY, mtime=0)[:-6], "truncated"),
    ("gzip", gzip.compress(BODY, mtime=0)[:12], "truncated"),
    ("deflate", zlib.compress(BODY)[:-3], "truncated"),
    ("gzip", gzip.compress(BODY, mtime=0) + b"junk", "data after the end"),
    ("gzip", gzip.compress(BODY, mtime=0)[:-8] + b"\0" * 8, "gzip"),  # wrong CRC and length
])
async def test_invalid_compressed_body_is_400_in_the_envelope_without_traceback(
        gateway: Any, cuebot: RecordingCuebot, caplog: pytest.LogCaptureFixture,
        coding: str, body: bytes, why: str) -> None:
    status, headers, reply = await raw_request(gateway.port, "POST", FIND_SHOW, body,
                                               headers={"Content-Encoding": coding})
    data = orjson.loads(reply)
    assert status == 400, data
    assert set(data) == {"error", "code", "message", "details"} and data["code"] == 3
    assert why in data["message"] and "not valid" in data["message"]
    assert headers["content-type"] == "application/json"
    assert cuebot.calls == []
    _no_traceback(caplog)


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "foo", "gzip, gzip",
                                    "gzip, deflate"])
async def test_coding_we_do_not_take_is_415_naming_what_we_take(
        gateway: Any, cuebot: RecordingCuebot, caplog: pytest.LogCaptureFixture,
        coding: str) -> None:
    status, headers, reply = await raw_request(gateway.port, "POST", FIND_SHOW, BODY,
                                               headers={"Content-Encoding": coding})
    data = orjson.loads(reply)
    assert status == 415, data
    assert data["code"] == 3 and "unsupported Content-Encoding" in data["message"]
    assert headers["accept-encoding"] == "gzip, deflate"
    assert cuebot.calls == []
    _no_traceback(caplog)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_decompression_bomb_is_413_and_cheap(gateway: Any, cuebot: RecordingCuebot,
                                                   coding: str) -> None:
    """16 MB of spaces in about 16 KB: refused once 64 KiB (the limit) is inflated."""
    big = b" " * (16 * 1024 * 1024)
    body = gzip.compress(big, 9, mtime=0) if coding == "gzip" else zlib.compress(big, 9)
    assert len(body) < 64 * 1024
    status, _h, reply = await raw_request(gateway.port, "POST", FIND_SHOW, body,
                                          headers={"Content-Encoding": coding})
    data = orjson.loads(reply)
    assert status == 413 and data["code"] == 8, data
    assert "MAX_REQUEST_BYTES" in data["message"]
    assert cuebot.calls == []


async def test_body_that_inflates_to_exactly_the_limit_is_taken(
        gateway: Any, cuebot: RecordingCuebot) -> None:
    padded = BODY + b" " * (64 * 1024 - len(BODY))
    status, _h, reply = await raw_request(gateway.port, "POST", FIND_SHOW, gzip.compress(padded, mtime=0),
                                          headers={"Content-Encoding": "gzip"})
    assert status == 200, reply
    assert cuebot.calls[-1].request == WIRE
    status, _h, _r = await raw_request(gateway.port, "POST", FIND_SHOW,
                                       gzip.compress(padded + b" ", mtime=0),
                                       headers={"Content-Encoding": "gzip"})
    assert status == 413


async def test_empty_body_with_a_coding_is_the_empty_message(
        gateway: Any, cuebot: RecordingCuebot) -> None:
    status, _h, reply = await raw_request(gateway.port, "POST", FIND_SHOW, b"",
                                          headers={"Content-Encoding": "gzip"})
    assert status == 200, reply
    assert cuebot.calls[-1].request == b""
