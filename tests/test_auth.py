"""Bearer JWTs through a real gateway on loopback, in front of a recording Cuebot.

A corpus of bad credentials, each refused with the reference's status (401:
no usable credential; 403: a JWT that fails validation) and never reaching
Cuebot; the tokens real clients send (the reference's example, CueWeb's,
the Go tests' ``{"user"}`` tokens when configured) accepted.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import Authenticator, AuthError, AuthSettings, read_secrets
from support import SECRET, RecordingCuebot, run_gateway, token

GET_SHOWS = "/show.ShowInterface/GetShows"
NOW = int(time.time())  # tokens far from the edges; those near one are made at test time


def now() -> int:
    return int(time.time())


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64_padded(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode()


def sign(claims: dict[str, Any], secret: str | bytes = SECRET, alg: str = "HS256",
         headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims, secret, algorithm=alg, headers=headers)


def good_claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "artist", "exp": NOW + 3600, **extra}


def raw_token(header: dict[str, Any], payload: Any, signature: str = "sig") -> str:
    return f"{b64(json.dumps(header))}.{b64(json.dumps(payload))}.{signature}"


def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _hmac_with(alg: str, header_alg: str, key: bytes, claims: dict[str, Any]) -> str:
    """A token whose header says ``header_alg`` but which is HMAC-signed with ``key``."""
    signing_input = f"{b64(json.dumps({'alg': header_alg, 'typ': 'JWT'}))}." \
                    f"{b64(json.dumps(claims))}"
    import hashlib
    import hmac

    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[alg]
    sig = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(sig)}"


RSA_PEM = _rsa_pem()
EC_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
VALID = sign(good_claims())


def _tampered_payload() -> str:
    h, _p, s = VALID.split(".")
    return f"{h}.{b64(json.dumps(good_claims(sub='root')))}.{s}"


def _tampered_signature() -> str:
    h, p, s = VALID.split(".")
    return f"{h}.{p}.{s[:-2] + ('AA' if s[-2:] != 'AA' else 'BB')}"


# (label, Authorization header or None for no header) -> 401
UNAUTHENTICATED = [
    ("no header", None),
    ("empty header", ""),
    ("basic scheme", "Basic dXNlcjpwYXNzd29yZA=="),
    ("lowercase bearer", f"bearer {VALID}"),
    ("uppercase bearer", f"BEARER {VALID}"),
    ("token without scheme", VALID),
    ("scheme only", "Bearer"),
    ("scheme and spaces", "Bearer    "),
    ("not a jwt", "Bearer invalid-token"),
    ("not a jwt, underscore", "Bearer invalid_token"),
    ("two segments", f"Bearer {'.'.join(VALID.split('.')[:2])}"),
    ("four segments", f"Bearer {VALID}.extra"),
    ("padded base64", "Bearer " + ".".join(
        [b64_padded('{"alg":"HS256","typ":"JWT"}'), b64_padded('{"sub":"a","exp":1}'), "c2ln"])),
    ("standard base64 alphabet", "Bearer " + VALID.split(".")[0] + "." +
     base64.b64encode(b'{"sub":"a>>>?","exp":9999999999}').decode().rstrip("=") + ".sig"),
    ("header not json", f"Bearer {b64('not json')}.{b64(json.dumps(good_claims()))}.sig"),
    ("payload not json", f"Bearer {b64(json.dumps({'alg': 'HS256'}))}.{b64('{oops')}.sig"),
    ("payload is a list", f"Bearer {raw_token({'alg': 'HS256'}, ['sub', 'exp'])}"),
    ("header without alg", f"Bearer {raw_token({'typ': 'JWT'}, good_claims())}"),
    ("oversized token", "Bearer " + sign(good_claims(pad="x" * 5000))),
    ("token and trailing text", f"Bearer {VALID} extra"),
]

# (label, token, settings) -> 403
FORBIDDEN = [
    ("wrong secret", sign(good_claims(), "another-secret-0123456789abcdef012345"), {}),
    ("empty secret", _hmac_with("HS256", "HS256", b"", good_claims()), {}),
    ("tampered payload", _tampered_payload(), {}),
    ("tampered signature", _tampered_signature(), {}),
    ("expired", sign(good_claims(exp=NOW - 3600)), {}),
    ("expired beyond the leeway", lambda: sign(good_claims(exp=now() - 60)), {}),
    ("nbf in the future", sign(good_claims(nbf=NOW + 3600)), {}),
    ("iat beyond the leeway", lambda: sign(good_claims(iat=now() + 60)), {}),
    ("missing sub", sign({"exp": NOW + 3600}), {}),
    ("missing exp", sign({"sub": "artist"}), {}),
    ("missing both", sign({"user": "artist"}), {}),
    ("exp as a string", sign(good_claims(exp=str(NOW + 3600))), {}),
    ("exp as a boolean", sign(good_claims(exp=True)), {}),
    ("exp not a number", sign(good_claims(exp="tomorrow")), {}),
    ("sub as a number", sign(good_claims(sub=42)), {}),
    ("sub empty", sign(good_claims(sub="")), {}),
    ("nbf as a string", sign(good_claims(nbf="0")), {}),
    ("alg none", raw_token({"alg": "none", "typ": "JWT"}, good_claims(), ""), {}),
    ("alg None", raw_token({"alg": "None"}, good_claims(), ""), {}),
    ("alg none with a signature", raw_token({"alg": "none"}, good_claims(), "c2ln"), {}),
    ("RS256 header, HMAC signature with the secret",
     _hmac_with("HS256", "RS256", SECRET.encode(), good_claims()), {}),
    ("RS256 signed by a private key", sign(good_claims(), RSA_PEM, "RS256"), {}),
    ("ES256 signed by a private key", sign(good_claims(), EC_PEM, "ES256"), {}),
    ("key confusion: HS256 keyed with a public key",
     _hmac_with("HS256", "HS256", _public_pem(RSA_PEM), good_claims()), {}),
    ("HS384 when only HS256 is accepted", sign(good_claims(), SECRET, "HS384"), {}),
    ("HS512 when only HS256 is accepted", sign(good_claims(), SECRET, "HS512"), {}),
    ("wrong audience", sign(good_claims(aud="other")), {"jwt_audience": "opencue"}),
    ("audience missing", sign(good_claims()), {"jwt_audience": "opencue"}),
    ("wrong issuer", sign(good_claims(iss="evil")), {"jwt_issuer": "studio-sso"}),
    ("required iat missing", sign(good_claims()), {"jwt_required_claims": ("sub", "exp", "iat")}),
]


def test_the_corpus_is_large_enough() -> None:
    assert len(UNAUTHENTICATED) + len(FORBIDDEN) >= 25


def _envelope(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert set(data) == {"error", "code", "message", "details"}, data
    assert data["error"] == data["message"] and data["details"] == []
    return data


async def _call(make_gateway: Any, header: str | None, **settings: Any) -> Any:
    gw: TestClient = await make_gateway(authorized=False, **settings)
    headers = {} if header is None else {"Authorization": header}
    resp = await gw.post(GET_SHOWS, data=b"{}", headers=headers)
    return resp, await resp.read()


@pytest.mark.parametrize("label, header", UNAUTHENTICATED, ids=[u[0] for u in UNAUTHENTICATED])
async def test_no_usable_credential_is_401(make_gateway: Any, cuebot: RecordingCuebot,
                                           label: str, header: str | None) -> None:
    resp, body = await _call(make_gateway, header)
    assert resp.status == 401, body
    data = _envelope(body)
    assert data["code"] == 16
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert resp.headers["Content-Type"] == "application/json"
    assert cuebot.calls == []
    if header and len(header) > 20:
        assert header.split(" ")[-1][:40].encode() not in body  # the token is not echoed


@pytest.mark.parametrize("label, bad, settings", FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
async def test_invalid_token_is_403(make_gateway: Any, cuebot: RecordingCuebot, label: str,
                                    bad: Any, settings: dict[str, Any]) -> None:
    bad = bad() if callable(bad) else bad
    resp, body = await _call(make_gateway, f"Bearer {bad}", **settings)
    assert resp.status == 403, body
    data = _envelope(body)
    assert data["code"] == 7
    assert "WWW-Authenticate" not in resp.headers
    assert data["message"].startswith("token validation failed")
    assert bad.encode() not in body and SECRET.encode() not in body
    assert cuebot.calls == []


async def test_query_string_token_is_401(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False)
    for name in ("token", "access_token", "jwt"):
        resp = await gw.post(f"{GET_SHOWS}?{name}={VALID}", data=b"{}")
        assert resp.status == 401
    assert cuebot.calls == []


async def test_oversized_header_is_refused_not_crashed(make_gateway: Any,
                                                       cuebot: RecordingCuebot) -> None:
    """Past the header-line limit the parser refuses the request itself.

    This in-process server is aiohttp's test server (400); the gateway's own
    listener answers 431 in the envelope (``test_request_head.py``).
    """
    gw = await make_gateway(authorized=False)
    resp = await gw.post(GET_SHOWS, data=b"{}", headers={"Authorization": "Bearer " + "a" * 20000})
    assert resp.status in (400, 431)
    assert cuebot.calls == []


# ---------------------------------------------------------------------------
# accepted
# ---------------------------------------------------------------------------
ACCEPTED = [
    ("the reference's example", sign({"sub": "api-client", "exp": NOW + 3600}), {}),
    ("CueWeb's claim set", sign({"sub": "user-id", "role": "user-role", "iat": NOW,
                                 "exp": NOW + 3600}), {}),
    ("CueWeb on a clock 20 s ahead", lambda: sign({"sub": "user-id", "role": "user-role",
                                                    "iat": now() + 20, "exp": now() + 3620}), {}),
    ("expired within the leeway", lambda: sign(good_claims(exp=now() - 5)), {}),
    ("nbf in the past", sign(good_claims(nbf=NOW - 10)), {}),
    ("float exp", sign(good_claims(exp=NOW + 3600.5)), {}),
    ("HS384 when enabled", sign(good_claims(), SECRET, "HS384"),
     {"jwt_algorithms": ("HS256", "HS384")}),
    ("HS512 when enabled", sign(good_claims(), SECRET, "HS512"), {"jwt_algorithms": ("HS512",)}),
    ("Go tests' user token, exp required only", sign({"user": "tester", "exp": NOW + 3600}),
     {"jwt_required_claims": ("exp",)}),
    ("audience and issuer", sign(good_claims(aud="opencue", iss="studio-sso")),
     {"jwt_audience": "opencue", "jwt_issuer": "studio-sso"}),
    ("one of several audiences", sign(good_claims(aud=["other", "opencue"])),
     {"jwt_audience": "opencue"}),
]


@pytest.mark.parametrize("label, good, settings", ACCEPTED, ids=[a[0] for a in ACCEPTED])
async def test_valid_tokens_are_accepted(make_gateway: Any, cuebot: RecordingCuebot, label: str,
                                         good: Any, settings: dict[str, Any]) -> None:
    good = good() if callable(good) else good
    resp, body = await _call(make_gateway, f"Bearer {good}", **settings)
    assert resp.status == 200, body
    assert cuebot.paths() == [GET_SHOWS]


async def test_rotation_accepts_every_listed_secret(make_gateway: Any, cuebot: RecordingCuebot,
                                                    tmp_path: Path) -> None:
    old, new = "old-secret-0123456789abcdef0123456789", "new-secret-0123456789abcdef0123456789"
    secrets = tmp_path / "secrets"
    secrets.write_text(f"{old}\n\n{new}\n")
    gw = await make_gateway(authorized=False, jwt_secret=None, jwt_secret_file=secrets)
    for secret in (old, new):
        resp = await gw.post(GET_SHOWS, headers={"Authorization": f"Bearer {sign(good_claims(), secret)}"})
        assert resp.status == 200
    resp = await gw.post(GET_SHOWS, headers={"Authorization": f"Bearer {VALID}"})
    assert resp.status == 403  # SECRET is not in the file
    assert len(cuebot.calls) == 2


def test_secret_file_lines_lose_only_their_line_endings(tmp_path: Path) -> None:
    f = tmp_path / "s"
    f.write_bytes(b" spaced secret \r\nsecond\n")
    assert read_secrets("env secret ", f) == (b"env secret ", b" spaced secret ", b"second")


def test_settings_never_print_secrets() -> None:
    settings = AuthSettings(secrets=(b"top-secret-value",))
    assert "top-secret-value" not in repr(settings)
    from gateway.config import Config

    cfg = Config(jwt_secret="top-secret-value", rate_limit_redis_url="redis://:pw@host/0")
    assert "top-secret-value" not in repr(cfg) and "pw@" not in repr(cfg)


def test_only_hmac_algorithms_can_be_configured() -> None:
    for algs in (("RS256",), ("none",), ("HS256", "ES256")):
        with pytest.raises(ValueError):
            Authenticator(AuthSettings(secrets=(b"x" * 32,), algorithms=algs))


def test_reasons_label_failures() -> None:
    a = Authenticator(AuthSettings(secrets=(SECRET.encode(),)))
    cases = {None: "missing", "Basic x": "scheme", "Bearer x": "malformed",
             f"Bearer {sign(good_claims(exp=NOW - 3600))}": "expired",
             f"Bearer {sign(good_claims(), 'other-secret-0123456789abcdef0123')}": "signature",
             f"Bearer {sign(good_claims(), SECRET, 'HS384')}": "algorithm"}
    for header, reason in cases.items():
        with pytest.raises(AuthError) as info:
            a.authenticate(header)
        assert info.value.reason == reason, header


# ---------------------------------------------------------------------------
# before routing, identity, open paths
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/nope"), ("POST", "/no.Such/Method"), ("PUT", GET_SHOWS),
    ("OPTIONS", GET_SHOWS), ("GET", "/api/show"), ("DELETE", "/api/job/x"),
])
async def test_every_route_needs_a_token(make_gateway: Any, cuebot: RecordingCuebot,
                                         method: str, path: str) -> None:
    gw = await make_gateway(authorized=False)
    resp = await gw.request(method, path)
    assert resp.status == 401
    assert _envelope(await resp.read())["code"] == 16
    assert cuebot.calls == []


async def test_with_a_token_unknown_paths_are_404(gateway: TestClient) -> None:
    resp = await gateway.post("/no.Such/Method", data=b"{}")
    assert resp.status == 404


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
async def test_open_paths_need_no_token(make_gateway: Any, path: str) -> None:
    gw = await make_gateway(authorized=False)
    resp = await gw.get(path)
    assert resp.status == 200


async def test_subject_reaches_cuebot_and_the_access_log(make_gateway: Any,
                                                         cuebot: RecordingCuebot,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    gw = await make_gateway(authorized=False)
    tok = sign(good_claims(sub="jdoe@studio"))
    with caplog.at_level(logging.INFO):
        resp = await gw.post(GET_SHOWS, headers={"Authorization": f"Bearer {tok}"})
    assert resp.status == 200
    assert cuebot.calls[0].metadata["x-opencue-user"] == "jdoe@studio"
    assert "authorization" not in cuebot.calls[0].metadata
    access = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert any("user=jdoe@studio" in line for line in access), access
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert tok not in everything and SECRET not in everything


async def test_non_ascii_subject_is_escaped_for_grpc(make_gateway: Any,
                                                     cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False)
    resp = await gw.post(GET_SHOWS, headers={
        "Authorization": f"Bearer {sign(good_claims(sub='jösé'))}"})
    assert resp.status == 200
    assert cuebot.calls[0].metadata["x-opencue-user"] == "j%C3%B6s%C3%A9"


async def test_client_cannot_forge_the_identity_metadata(gateway: TestClient,
                                                         cuebot: RecordingCuebot) -> None:
    resp = await gateway.post(GET_SHOWS, headers={"Grpc-Metadata-X-Opencue-User": "admin"})
    assert resp.status == 400
    assert cuebot.calls == []


async def test_no_auth_serves_without_tokens(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(no_auth=True, dev=True, jwt_secret=None)
    resp = await gw.post(GET_SHOWS)
    assert resp.status == 200
    assert "x-opencue-user" not in cuebot.calls[0].metadata


# ---------------------------------------------------------------------------
# start-up
# ---------------------------------------------------------------------------
def _one_error_line(result: Any, code: int) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == code, out
    assert "Traceback" not in out
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_secret_refuses_to_start() -> None:
    line = _one_error_line(run_gateway(env={"JWT_SECRET": None}), 1)
    assert "no JWT secret" in line and "JWT_SECRET" in line and "--no-auth" in line


def test_empty_secret_is_a_bad_setting() -> None:
    line = _one_error_line(run_gateway(env={"JWT_SECRET": ""}), 2)
    assert "JWT_SECRET" in line


def test_missing_secret_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    line = _one_error_line(run_gateway("--jwt-secret-file", str(missing),
                                       env={"JWT_SECRET": None}), 1)
    assert str(missing) in line and "JWT_SECRET_FILE" in line


def test_empty_secret_file_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n\n")
    line = _one_error_line(run_gateway("--jwt-secret-file", str(empty),
                                       env={"JWT_SECRET": None}), 1)
    assert "holds no secret" in line


def test_asymmetric_algorithm_setting_is_refused() -> None:
    line = _one_error_line(run_gateway(env={"JWT_ALGORITHMS": "RS256"}), 2)
    assert "JWT_ALGORITHMS" in line


def test_no_auth_with_a_secret_is_contradictory() -> None:
    line = _one_error_line(run_gateway("--no-auth"), 2)
    assert "--no-auth" in line


def test_token_helper_makes_accepted_tokens() -> None:
    a = Authenticator(AuthSettings(secrets=(SECRET.encode(),)))
    assert a.authenticate(f"Bearer {token('me')}").subject == "me"


# ---------------------------------------------------------------------------
# --sandbox: a ready-made token for the person who started it
# ---------------------------------------------------------------------------
def _banner(gw: Any, timeout: float = 30) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = gw.output
        if "curl -s" in out:
            tok = out.split("export TOKEN=", 1)[1].split()[0]
            curl = next(ln for ln in out.splitlines() if "curl -s" in ln)
            return tok, curl
        time.sleep(0.05)
    raise AssertionError(gw.output)


@pytest.mark.parametrize("secret", [None, "my-own-sandbox-secret-0123456789abcdef"])
def test_sandbox_prints_a_working_token(secret: str | None) -> None:
    import urllib.request

    from support import GatewayProcess

    gw = GatewayProcess("--sandbox", "--no-dispatch", env={"JWT_SECRET": secret}).wait_ready()
    try:
        tok, curl = _banner(gw)
        assert f"http://127.0.0.1:{gw.port}/show.ShowInterface/GetShows" in curl
        assert 'Authorization: Bearer $TOKEN' in curl
        req = urllib.request.Request(f"{gw.url}/show.ShowInterface/GetShows", data=b"{}",
                                     headers={"Authorization": f"Bearer {tok}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["shows"]["shows"][0]["name"] == "testing"
        if secret is not None:
            assert jwt.decode(tok, secret, algorithms=["HS256"])["sub"] == "sandbox-user"
            assert secret not in gw.output
    finally:
        gw.stop()


@pytest.mark.parametrize("target", [
    "/docs/static/../../show.ShowInterface/GetShows",
    "/docs/static/%2e%2e/%2e%2e/show.ShowInterface/GetShows",
    "/docs/static/..%2f..%2fshow.ShowInterface/GetShows",
    "/healthz/../show.ShowInterface/GetShows",
    "/openapi.json/../show.ShowInterface/GetShows",
    "/%68ealthz",                       # an open path, but POST is not what it serves
    "/docs/static//show.ShowInterface/GetShows",
])
async def test_open_paths_open_nothing_else(make_gateway: Any, cuebot: RecordingCuebot,
                                            target: str) -> None:
    """Openness belongs to the matched route, not to how the path is spelt."""
    from support import raw_request

    gw = await make_gateway(authorized=False)
    status, _headers, body = await raw_request(gw.port, "POST", target, b"{}", authorized=False)
    assert status == 401, body
    assert cuebot.calls == []
