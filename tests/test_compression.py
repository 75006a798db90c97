"""Large replies: gzip when the client accepts it, and 502 above MAX_RESPONSE_BYTES.

The big reply is the conformance vectors' 10,000-frame ``GetFrames`` (6.4 MB
of JSON), served by a ``RecordingCuebot``. Compressed replies are read raw
(the HTTP client's own decompression off), gunzipped here and compared byte
for byte with the uncompressed reply and with the Go gateway's bytes.
"""
from __future__ import annotations

import gzip
from typing import Any

import aiohttp
import orjson
import pytest
from opencue_proto import show_pb2

from gateway.compression import accepts_gzip
from gateway.config import ConfigError, load
from scrape import scrape, value
from support import RecordingCuebot, auth_headers, vector_bytes

GET_FRAMES = "/job.JobInterface/GetFrames"
GET_SHOWS = "/show.ShowInterface/GetShows"


async def _raw(gw: Any, path: str, accept_encoding: str | None, method: str = "POST",
               **headers: str) -> tuple[int, dict[str, str], bytes]:
    """One request whose reply body is returned exactly as it came over the wire."""
    sent = {**auth_headers(), **headers}
    if accept_encoding is not None:
        sent["Accept-Encoding"] = accept_encoding
    async with aiohttp.ClientSession(auto_decompress=False,
                                     skip_auto_headers=["Accept-Encoding"]) as session:
        async with session.request(method, gw.make_url(path), data=b"{}", headers=sent) as resp:
            return resp.status, dict(resp.headers), await resp.read()


@pytest.fixture
def frames(cuebot: RecordingCuebot) -> bytes:
    """The Go gateway's JSON for the reply ``cuebot`` now gives to GetFrames."""
    cuebot.reply(GET_FRAMES, vector_bytes("frames10k.binpb"))
    return vector_bytes("frames10k.go.json")


async def test_big_reply_is_gzipped_and_identical_once_gunzipped(make_gateway: Any,
                                                                 frames: bytes) -> None:
    gw = await make_gateway()
    status, plain_headers, plain = await _raw(gw, GET_FRAMES, None)
    assert status == 200 and "Content-Encoding" not in plain_headers
    assert plain == frames and len(plain) > 6_000_000
    assert plain_headers["Vary"] == "Accept-Encoding"

    status, headers, body = await _raw(gw, GET_FRAMES, "gzip, deflate, br")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Type"].startswith("application/json")
    # forwarded from the conversion process as it is compressed: its length is not known
    # when the headers go, so it is chunked
    assert "Content-Length" not in headers and headers["Transfer-Encoding"] == "chunked"
    assert len(body) < len(plain) // 4
    assert gzip.decompress(body) == plain

    found = await scrape(gw)
    assert value(found, "opencue_gateway_response_size_bytes_sum", route=GET_FRAMES) == \
        len(plain) + len(body)  # bytes as sent


@pytest.mark.parametrize("header,gzipped", [
    ("gzip", True),
    ("GZIP;Q=0.5", True),
    ("x-gzip", True),
    ("*", True),
    ("deflate, gzip;q=0.001", True),
    ("gzip;q=0", False),
    ("gzip;q=0.000", False),
    ("gzip;q=0, *", False),
    ("*;q=0", False),
    ("deflate, br", False),
    ("identity", False),
    ("gzip;q=bogus", False),
    ("", False),
])
async def test_accept_encoding_decides(make_gateway: Any, cuebot: RecordingCuebot,
                                       header: str, gzipped: bool) -> None:
    big = show_pb2.ShowGetShowsResponse(shows=show_pb2.ShowSeq(shows=[
        show_pb2.Show(id=f"id-{i}", name=f"show-{i}") for i in range(200)]))
    cuebot.reply(GET_SHOWS, big)
    gw = await make_gateway()
    status, headers, body = await _raw(gw, GET_SHOWS, header)
    assert status == 200
    assert (headers.get("Content-Encoding") == "gzip") is gzipped
    data = gzip.decompress(body) if gzipped else body
    assert len(orjson.loads(data)["shows"]["shows"]) == 200
    assert accepts_gzip(header) is gzipped


async def test_threshold_is_exact_and_zero_disables(make_gateway: Any, frames: bytes) -> None:
    at = await make_gateway(gzip_min_bytes=len(frames))
    assert (await _raw(at, GET_FRAMES, "gzip"))[1].get("Content-Encoding") == "gzip"
    above = await make_gateway(gzip_min_bytes=len(frames) + 1)
    status, headers, body = await _raw(above, GET_FRAMES, "gzip")
    assert "Content-Encoding" not in headers and "Vary" not in headers and body == frames
    off = await make_gateway(gzip_min_bytes=0)
    status, headers, body = await _raw(off, GET_FRAMES, "gzip")
    assert "Content-Encoding" not in headers and body == frames


async def test_small_replies_and_errors_are_not_compressed(make_gateway: Any,
                                                           cuebot: RecordingCuebot) -> None:
    gw = await make_gateway()
    for path in (GET_SHOWS, "/no.Such/Method"):
        status, headers, body = await _raw(gw, path, "gzip")
        assert "Content-Encoding" not in headers and "Vary" not in headers
        orjson.loads(body)
    status, headers, body = await _raw(gw, "/no.Such/Method", "gzip")
    assert status == 404 and orjson.loads(body)["code"] == 5


async def test_vary_keeps_cors_origin(make_gateway: Any, frames: bytes) -> None:
    gw = await make_gateway(cors_origins=("https://cueweb.example.com",))
    status, headers, body = await _raw(gw, GET_FRAMES, "gzip", Origin="https://evil.example")
    assert headers["Vary"] == "Origin, Accept-Encoding"
    assert gzip.decompress(body) == frames


async def test_metrics_scrape_is_gzipped_too(make_gateway: Any, frames: bytes) -> None:
    gw = await make_gateway()
    await _raw(gw, GET_FRAMES, None)
    status, headers, body = await _raw(gw, "/metrics", "gzip", method="GET")
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert b"opencue_gateway_requests_total" in gzip.decompress(body)


# ---------------------------------------------------------------------------
# MAX_RESPONSE_BYTES, and the gRPC receive limit before it
# ---------------------------------------------------------------------------
async def test_reply_over_max_response_bytes_is_502_naming_the_limit(
        make_gateway: Any, frames: bytes) -> None:
    limit = 5 * 1024 * 1024
    gw = await make_gateway(max_response_bytes=limit)
    status, headers, body = await _raw(gw, GET_FRAMES, "gzip")
    assert status == 502
    assert "Content-Encoding" not in headers  # a small envelope, not the giant reply
    data = orjson.loads(body)
    assert set(data) == {"error", "code", "message", "details"}
    assert data["code"] == 8
    assert data["message"] == (f"reply larger than MAX_RESPONSE_BYTES ({limit} bytes): "
                               f"{len(frames)} bytes of JSON")
    found = await scrape(gw)
    assert value(found, "opencue_gateway_requests_total", route=GET_FRAMES, status="502",
                 grpc_code="RESOURCE_EXHAUSTED") == 1

    roomy = await make_gateway(max_response_bytes=len(frames))
    status, _, body = await _raw(roomy, GET_FRAMES, None)
    assert status == 200 and body == frames


async def test_both_size_limits(make_gateway: Any, frames: bytes) -> None:
    """1.7 MB of protobuf passes a 2 MB gRPC limit, then its 6.4 MB of JSON meets the other."""
    grpc_limited = await make_gateway(grpc_max_recv_msg_mb=1)
    status, _, body = await _raw(grpc_limited, GET_FRAMES, None)
    assert status == 502
    message = orjson.loads(body)["message"]
    assert "GRPC_MAX_RECV_MSG_MB (1 MB)" in message and "MAX_RESPONSE_BYTES" not in message

    json_limited = await make_gateway(grpc_max_recv_msg_mb=2, max_response_bytes=6_000_000)
    status, _, body = await _raw(json_limited, GET_FRAMES, None)
    assert status == 502
    message = orjson.loads(body)["message"]
    assert "MAX_RESPONSE_BYTES (6000000 bytes)" in message and "GRPC" not in message


async def test_api_replies_are_capped_too(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    cuebot.reply("/show.ShowInterface/GetActiveShows", show_pb2.ShowGetActiveShowsResponse(
        shows=show_pb2.ShowSeq(shows=[show_pb2.Show(id=f"i{i}", name=f"s{i}")
                                      for i in range(50)])))
    gw = await make_gateway(max_response_bytes=1024)
    status, _, body = await _raw(gw, "/api/show", None, method="GET")
    assert status == 502 and "MAX_RESPONSE_BYTES (1024 bytes)" in orjson.loads(body)["message"]


def test_size_settings() -> None:
    cfg = load([], {})
    assert (cfg.gzip_min_bytes, cfg.max_response_bytes) == (1024, 1024**3)
    cfg = load(["--gzip-min-bytes", "0", "--max-response-bytes", "64MiB"], {})
    assert (cfg.gzip_min_bytes, cfg.max_response_bytes) == (0, 64 * 1024**2)
    assert load([], {"GZIP_MIN_BYTES": "4KiB"}).gzip_min_bytes == 4096
    with pytest.raises(ConfigError, match="MAX_RESPONSE_BYTES: expected a size above zero"):
        load([], {"MAX_RESPONSE_BYTES": "0"})
    with pytest.raises(ConfigError, match="GZIP_MIN_BYTES"):
        load([], {"GZIP_MIN_BYTES": "-1"})
