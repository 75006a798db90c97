"""``/docs/static``: open to anyone, so every reply is the envelope and counted as sent.

Before ``static.py`` a 5,000-character name was a 500 with an ``OSError``
traceback in the log, and a missing file a 404 with an empty
``application/octet-stream`` body that the access log and ``requests_total``
recorded as 200.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import swagger_ui_bundle

from gateway.logs import JsonFormatter
from scrape import scrape, value
from support import raw_request

ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
REQ = "opencue_gateway_requests_total"
ROUTE = "/docs/static/{name}"


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(JsonFormatter().format(r)) for r in caplog.records
            if r.name == "gateway.access"]


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage()[:200] for r in bad]


@pytest.fixture
async def gateway(make_gateway: Any) -> Any:
    return await make_gateway(authorized=False)


@pytest.mark.parametrize("name", [
    "a" * 5000,                       # File name too long
    "nope.js",                        # missing
    "x/" * 300 + "y",                 # deep
    "swagger-ui.css/extra",           # a file used as a folder
    "%00",                            # a NUL byte
    "..%2f..%2fetc%2fpasswd",          # outside the folder
    "index.j2/..",
])
async def test_unknown_names_are_the_404_envelope_and_counted_as_404(
        gateway: Any, caplog: pytest.LogCaptureFixture, name: str) -> None:
    with caplog.at_level(logging.INFO):
        status, headers, body = await raw_request(gateway.port, "GET", f"/docs/static/{name}",
                                                  authorized=False)
    assert status == 404
    assert headers["content-type"] == "application/json"
    data = orjson.loads(body)
    assert set(data) == {"error", "code", "message", "details"} and data["code"] == 5
    _no_traceback(caplog)
    lines = _lines(caplog)
    assert [(e["status"], e["grpc_code"], e["bytes_out"]) for e in lines] == \
        [(404, "NOT_FOUND", len(body))]
    found = await scrape(gateway)
    assert value(found, REQ, route=ROUTE, status="404") == 1
    assert value(found, REQ, route=ROUTE, status="200") == 0


async def test_files_are_sent_with_their_size_in_the_log_and_metrics(
        gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    names = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")
    with caplog.at_level(logging.INFO):
        sizes = []
        for name in names:
            resp = await gateway.get(f"/docs/static/{name}", headers={"Accept-Encoding": "gzip"})
            assert resp.status == 200
            assert await resp.read() == (ASSETS / name).read_bytes()
            sizes.append(int(resp.headers["Content-Length"]))
    assert [(e["status"], e["route"], e["bytes_out"]) for e in _lines(caplog)] == \
        [(200, ROUTE, size) for size in sizes]
    assert sizes[0] < (ASSETS / names[0]).stat().st_size  # text is gzipped like any reply
    _no_traceback(caplog)
    assert value(await scrape(gateway), REQ, route=ROUTE, status="200") == len(names)


async def test_etag_revalidation_and_head(gateway: Any) -> None:
    first = await gateway.get("/docs/static/swagger-ui.css")
    etag = first.headers["ETag"]
    assert "max-age" in first.headers["Cache-Control"]
    again = await gateway.get("/docs/static/swagger-ui.css", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    head = await gateway.head("/docs/static/swagger-ui.css",
                              headers={"Accept-Encoding": "identity"})
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == (ASSETS / "swagger-ui.css").stat().st_size


async def test_other_verbs_on_static_names_meet_authentication(gateway: Any) -> None:
    status, _h, _b = await raw_request(gateway.port, "POST", "/docs/static/swagger-ui.css",
                                       b"{}", authorized=False)
    assert status == 401
