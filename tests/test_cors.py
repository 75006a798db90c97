"""CORS: preflights answered before auth, with what each path really serves."""
from __future__ import annotations

from typing import Any

import pytest

from support import RecordingCuebot

GET_SHOWS = "/show.ShowInterface/GetShows"
CUEWEB = "https://cueweb.example.com"


def preflight(method: str = "POST", headers: str = "authorization, content-type",
              origin: str = CUEWEB) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers}


async def test_preflight_before_auth(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False, cors_origins=(CUEWEB,), cors_max_age=120)
    resp = await gw.options(GET_SHOWS, headers=preflight())
    assert resp.status == 204
    h = resp.headers
    assert h["Access-Control-Allow-Origin"] == CUEWEB
    assert h["Access-Control-Allow-Methods"] == "OPTIONS, POST"
    assert h["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert h["Access-Control-Max-Age"] == "120"
    assert "Origin" in h["Vary"]
    assert cuebot.calls == []


@pytest.mark.parametrize("path, methods", [
    ("/api/job/abc", "DELETE, GET, HEAD, OPTIONS"),
    ("/api/show", "GET, HEAD, OPTIONS"),
    ("/frame.FrameInterface/GetFrame", "OPTIONS, POST"),
])
async def test_preflight_methods_come_from_the_routes(make_gateway: Any, path: str,
                                                      methods: str) -> None:
    gw = await make_gateway(authorized=False, cors_origins=(CUEWEB,))
    resp = await gw.options(path, headers=preflight("GET" if "api" in path else "POST"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Methods"] == methods


async def test_preflight_for_a_method_the_path_does_not_serve(make_gateway: Any) -> None:
    gw = await make_gateway(authorized=False, cors_origins=(CUEWEB,))
    resp = await gw.options(GET_SHOWS, headers=preflight("PUT"))
    assert resp.status == 405
    assert resp.headers["Allow"] == "OPTIONS, POST"
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_only_known_request_headers_are_allowed(make_gateway: Any) -> None:
    gw = await make_gateway(authorized=False, cors_origins=(CUEWEB,))
    resp = await gw.options(GET_SHOWS, headers=preflight(
        headers="Authorization, Grpc-Metadata-Trace, X-Evil, Cookie"))
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization, grpc-metadata-trace"


async def test_other_origins_are_refused(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False, cors_origins=(CUEWEB,))
    resp = await gw.options(GET_SHOWS, headers=preflight(origin="https://evil.example.com"))
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    body = await resp.json()
    assert body["code"] == 7 and set(body) == {"error", "code", "message", "details"}
    # an actual request from it is served (CORS is the browser's protection) without the header
    ok = await gw.post(GET_SHOWS, headers={"Origin": "https://evil.example.com"})
    assert ok.status == 401 and "Access-Control-Allow-Origin" not in ok.headers


async def test_allowed_origin_sees_replies_and_errors(make_gateway: Any) -> None:
    gw = await make_gateway(cors_origins=(CUEWEB,), rate_limit_rps=10)
    for resp in (await gw.post(GET_SHOWS, headers={"Origin": CUEWEB}),
                 await gw.post("/no.Such/Call", headers={"Origin": CUEWEB}),
                 await gw.post(GET_SHOWS, headers={"Origin": CUEWEB, "Authorization": "x"})):
        assert resp.headers["Access-Control-Allow-Origin"] == CUEWEB
        exposed = resp.headers["Access-Control-Expose-Headers"]
        assert "X-Request-Id" in exposed and "X-RateLimit-Remaining" in exposed


async def test_wildcard_allows_any_origin(make_gateway: Any) -> None:
    gw = await make_gateway(authorized=False, cors_origins=("*",))
    resp = await gw.options(GET_SHOWS, headers=preflight(origin="http://anything.test:3000"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "http://anything.test:3000"


async def test_without_cors_origins_preflights_are_plain_requests(make_gateway: Any) -> None:
    """Nothing is allowed by default: the preflight meets auth like any request."""
    gw = await make_gateway(authorized=False)
    resp = await gw.options(GET_SHOWS, headers=preflight())
    assert resp.status == 401
    assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.parametrize("value", ["cueweb.example.com", "https://x.com/path", "ftp://x.com"])
def test_bad_origins_are_bad_settings(value: str) -> None:
    from gateway.config import ConfigError, load

    with pytest.raises(ConfigError) as info:
        load([], {"CORS_ORIGINS": value})
    assert "CORS_ORIGINS" in str(info.value)
