"""Refusals the README's table promises, for the tokens issue 11 found misfiled.

401 is "no usable credential", 403 "a well-formed JWT that fails
validation". A token signed with the real secret whose header carries a
``crit`` PyJWT does not support was 401 ("not a JWT"); two ``Authorization``
headers were "first one wins". Raw requests over a real socket (two
headers of one name need exact bytes), to a gateway in front of a recording
Cuebot that must never see a refused request.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import orjson
import pytest

from scrape import scrape, value
from support import SECRET, RecordingCuebot, token

GET_SHOWS = "/show.ShowInterface/GetShows"
FAILURES = "opencue_gateway_auth_failures_total"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: dict[str, Any], claims: dict[str, Any] | None = None,
           secret: str = SECRET) -> str:
    """A compact JWS with exactly this header, HS256-signed with ``secret``."""
    claims = claims or {"sub": "artist", "exp": int(time.time()) + 3600}
    head = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return f"{head}.{_b64(sig)}"


async def send(port: int, headers: list[tuple[str, str]], body: bytes = b"{}") -> tuple[int, dict[str, str], dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"POST {GET_SHOWS} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = await reader.read()
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *rest = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in rest)}
    return int(status_line.split()[1]), hdrs, orjson.loads(payload)


@pytest.fixture
async def gateway(make_gateway: Any) -> Any:
    return await make_gateway(authorized=False)


@pytest.mark.parametrize("header", [
    {"alg": "HS256", "typ": "JWT", "crit": ["exp"]},       # an extension PyJWT does not know
    {"alg": "HS256", "crit": ["x-studio"], "x-studio": 1},
    {"alg": "HS256", "crit": "exp"},                        # crit must be a list
    {"alg": "HS256", "crit": []},                           # ... and not empty
    {"alg": "HS256", "crit": ["b64"]},                      # names a parameter that is absent
    {"alg": "HS256", "kid": 5},                             # kid must be a string
], ids=["crit-exp", "crit-private", "crit-string", "crit-empty", "crit-absent", "kid-number"])
@pytest.mark.parametrize("secret", [SECRET, "another-secret-0123456789abcdef012345"],
                         ids=["real-secret", "wrong-secret"])
async def test_well_formed_jwt_with_a_refused_header_is_403(
        gateway: Any, cuebot: RecordingCuebot, header: dict[str, Any], secret: str) -> None:
    status, headers, data = await send(gateway.port,
                                       [("Authorization", f"Bearer {signed(header, secret=secret)}")])
    assert status == 403, data
    assert data["code"] == 7 and data["message"].startswith("token validation failed")
    assert "www-authenticate" not in headers
    assert cuebot.calls == []


async def test_403_for_crit_is_counted_as_invalid(gateway: Any) -> None:
    await send(gateway.port, [("Authorization", f"Bearer {signed({'alg': 'HS256', 'crit': ['exp']})}")])
    assert value(await scrape(gateway), FAILURES, reason="invalid") == 1


@pytest.mark.parametrize("pair", [
    (f"Bearer {token('alice')}", f"Bearer {token('bob')}"),     # two valid tokens
    (f"Bearer {token('alice')}", "Bearer garbage"),
    ("Bearer garbage", f"Bearer {token('alice')}"),             # first one used to lose
    (f"Bearer {token('alice')}", ""),
], ids=["valid-valid", "valid-garbage", "garbage-valid", "valid-empty"])
async def test_two_authorization_headers_are_401(gateway: Any, cuebot: RecordingCuebot,
                                                 pair: tuple[str, str]) -> None:
    status, headers, data = await send(gateway.port, [("Authorization", v) for v in pair])
    assert status == 401, data
    assert data["code"] == 16 and "more than one Authorization header" in data["message"]
    assert headers["www-authenticate"].startswith("Bearer ")
    assert cuebot.calls == []
    assert value(await scrape(gateway), FAILURES, reason="multiple") == 1


async def test_one_authorization_header_still_works(gateway: Any, cuebot: RecordingCuebot) -> None:
    status, _h, data = await send(gateway.port, [("Authorization", f"Bearer {token('alice')}")])
    assert status == 200, data
    assert cuebot.calls[-1].metadata["x-opencue-user"] == "alice"


# ---------------------------------------------------------------------------
# the README's table, reason by reason
# ---------------------------------------------------------------------------
NOW = int(time.time())
TABLE = [  # (what the README says, Authorization value or None, status, metrics reason)
    ("no Authorization header", None, 401, "missing"),
    ("a scheme other than Bearer", "Basic dXNlcjpwYXNz", 401, "scheme"),
    ("Bearer not exactly so spelled", f"bearer {token()}", 401, "scheme"),
    ("not a JWT", "Bearer not-a-jwt", 401, "malformed"),
    ("padded base64url", "Bearer " + ".".join(
        base64.urlsafe_b64encode(p.encode()).decode() for p in
        ('{"alg":"HS256"}', '{"sub":"a","exp":9999999999}', "sig")), 401, "malformed"),
    ("longer than 4 KiB", f"Bearer {token(pad='x' * 5000)}", 401, "malformed"),
    ("bad signature", f"Bearer {signed({'alg': 'HS256'}, secret='x' * 32)}", 403, "signature"),
    ("expired", f"Bearer {signed({'alg': 'HS256'}, {'sub': 'a', 'exp': NOW - 3600})}", 403,
     "expired"),
    ("nbf in the future", f"Bearer {signed({'alg': 'HS256'}, {'sub': 'a', 'exp': NOW + 9999, 'nbf': NOW + 3600})}",
     403, "immature"),
    ("required claim missing", f"Bearer {signed({'alg': 'HS256'}, {'sub': 'a'})}", 403, "claims"),
    ("exp not a number", f"Bearer {signed({'alg': 'HS256'}, {'sub': 'a', 'exp': str(NOW + 99)})}",
     403, "claims"),
    ("sub empty", f"Bearer {signed({'alg': 'HS256'}, {'sub': '', 'exp': NOW + 99})}", 403,
     "claims"),
    ("algorithm not accepted", f"Bearer {signed({'alg': 'HS384'})}", 403, "algorithm"),
    ("alg none", "Bearer " + _b64(b'{"alg":"none"}') + "." +
     _b64(json.dumps({"sub": "a", "exp": NOW + 99}).encode()) + ".", 403, "algorithm"),
    ("an unsupported crit", f"Bearer {signed({'alg': 'HS256', 'crit': ['exp']})}", 403,
     "invalid"),
]


@pytest.mark.parametrize(("what", "header", "status", "reason"), TABLE,
                         ids=[t[0] for t in TABLE])
async def test_each_refusal_matches_the_readme(gateway: Any, cuebot: RecordingCuebot, what: str,
                                               header: str | None, status: int,
                                               reason: str) -> None:
    got, _h, data = await send(gateway.port, [] if header is None else [("Authorization", header)])
    assert got == status, (what, data)
    assert data["code"] == (16 if status == 401 else 7)
    assert value(await scrape(gateway), FAILURES, reason=reason) == 1
    assert cuebot.calls == []
