"""Tokens from an identity provider: real RSA/EC/Ed25519 keys, a JWKS served over loopback.

Every algorithm a JWKS key type allows is accepted, and only that; the
key-confusion attacks stay refused; a new kid is picked up, a failed refresh
keeps the last good keys, a removed key stops working at once (the token
cache forgets it); HS256 with JWT_SECRET works alongside throughout.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import jwks
from gateway.app import STATE
from gateway.auth import AuthError
from idp import ISSUER, JwksEndpoint, SigningKey, document, fresh_claims
from support import SECRET, RecordingCuebot, auth_headers, run_gateway

GET_SHOWS = "/show.ShowInterface/GetShows"

RSA = SigningKey.rsa("rsa-1")
RSA_2 = SigningKey.rsa("rsa-2")
EC256 = SigningKey.ec("ec-256", "ES256")
EC384 = SigningKey.ec("ec-384", "ES384")
ED = SigningKey.ed25519("ed-1")
ALL = (RSA, EC256, EC384, ED)


@pytest.fixture
async def idp(aiohttp_server: Any) -> tuple[JwksEndpoint, str]:
    endpoint = JwksEndpoint(document(*ALL))
    server = await aiohttp_server(endpoint.app())
    return endpoint, str(server.make_url(JwksEndpoint.PATH))


async def _sso_gateway(make_gateway: Any, url: str, **settings: Any) -> TestClient:
    return await make_gateway(authorized=False, jwt_jwks=url, **settings)


async def _status(gw: TestClient, tok: str, path: str = GET_SHOWS) -> tuple[int, dict[str, Any]]:
    resp = await gw.post(path, data=b"{}", headers={"Authorization": f"Bearer {tok}"})
    return resp.status, json.loads(await resp.read())


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hmac_token(key: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{b64(json.dumps(header))}.{b64(json.dumps(claims))}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


# ---------------------------------------------------------------------------
# accepted
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("key, alg", [
    (RSA, "RS256"), (RSA, "RS384"), (RSA, "RS512"), (RSA, "PS256"), (RSA, "PS512"),
    (EC256, "ES256"), (EC384, "ES384"), (ED, "EdDSA"),
], ids=lambda v: v if isinstance(v, str) else v.kid)
async def test_every_algorithm_a_key_type_allows_is_accepted(
        make_gateway: Any, cuebot: RecordingCuebot, aiohttp_server: Any,
        key: SigningKey, alg: str) -> None:
    # RSA keys published without "alg" (as many providers do) may sign with RS* and PS*
    endpoint = JwksEndpoint(document(*(k.jwk(with_alg=k is not RSA) for k in ALL)))
    server = await aiohttp_server(endpoint.app())
    gw = await _sso_gateway(make_gateway, str(server.make_url(JwksEndpoint.PATH)))
    status, body = await _status(gw, key.sign(alg=alg, sub="sso-user"))
    assert status == 200, body
    assert cuebot.calls[0].metadata["x-opencue-user"] == "sso-user"


async def test_hs256_with_the_secret_keeps_working_alongside(
        make_gateway: Any, idp: tuple[JwksEndpoint, str], cuebot: RecordingCuebot) -> None:
    _, url = idp
    gw = await _sso_gateway(make_gateway, url)
    assert (await gw.post(GET_SHOWS, headers=auth_headers())).status == 200
    assert (await _status(gw, RSA.sign()))[0] == 200
    assert len(cuebot.calls) == 2


async def test_jwks_without_any_secret(make_gateway: Any, idp: tuple[JwksEndpoint, str]) -> None:
    _, url = idp
    gw = await _sso_gateway(make_gateway, url, jwt_secret=None)
    assert (await _status(gw, ED.sign()))[0] == 200
    status, body = await _status(gw, auth_headers()["Authorization"].split()[1])
    assert status == 403 and "algorithm not allowed" in body["message"]
    assert "HS256" not in body["message"].split("accepted:")[1]


async def test_audience_and_issuer_apply(make_gateway: Any, idp: tuple[JwksEndpoint, str]) -> None:
    _, url = idp
    gw = await _sso_gateway(make_gateway, url, jwt_audience="opencue", jwt_issuer=ISSUER)
    assert (await _status(gw, RSA.sign(aud="opencue", iss=ISSUER)))[0] == 200
    assert (await _status(gw, RSA.sign(aud="other", iss=ISSUER)))[0] == 403
    assert (await _status(gw, RSA.sign(aud="opencue", iss="https://evil.example")))[0] == 403


async def test_algorithms_can_be_narrowed(make_gateway: Any, idp: tuple[JwksEndpoint, str]) -> None:
    _, url = idp
    gw = await _sso_gateway(make_gateway, url, jwt_algorithms=("HS256", "ES256"))
    assert (await _status(gw, EC256.sign()))[0] == 200
    status, body = await _status(gw, RSA.sign())
    assert status == 403 and "algorithm not allowed" in body["message"]


# ---------------------------------------------------------------------------
# refused: key confusion and friends
# ---------------------------------------------------------------------------
def _confusions() -> list[tuple[str, Any]]:
    claims = fresh_claims(lifetime=3600)
    attacker = SigningKey.rsa("rsa-1")  # same kid as the real key, another key pair
    return [
        ("HS256 keyed with the RSA public key (PEM), kid of the RSA key",
         hmac_token(RSA.public_pem(), {"alg": "HS256", "kid": "rsa-1"}, claims)),
        ("HS256 keyed with the RSA public key (PEM), no kid",
         hmac_token(RSA.public_pem(), {"alg": "HS256"}, claims)),
        ("HS256 keyed with the JWK's JSON",
         hmac_token(json.dumps(RSA.jwk()).encode(), {"alg": "HS256", "kid": "rsa-1"}, claims)),
        ("HS256 keyed with the EC public key",
         hmac_token(EC256.public_pem(), {"alg": "HS256", "kid": "ec-256"}, claims)),
        ("RS256 header, HMAC-signed with the RSA public key",
         hmac_token(RSA.public_pem(), {"alg": "RS256", "kid": "rsa-1"}, claims)),
        ("another key pair under the real kid", attacker.sign(claims)),
        ("ES256 under the RSA key's kid", EC256.sign(claims, kid="rsa-1")),
        ("RS256 under the EC key's kid", RSA.sign(claims, kid="ec-256")),
        ("ES384 under the P-256 key's kid", EC384.sign(claims, kid="ec-256")),
        ("EdDSA under the RSA key's kid", ED.sign(claims, kid="rsa-1")),
        ("the attacker's own key embedded as a jwk header",
         attacker.sign(claims, kid="attacker", headers={"jwk": attacker.jwk()})),
        ("a jku header pointing elsewhere",
         attacker.sign(claims, kid="rsa-1", headers={"jku": "http://127.0.0.1:1/certs"})),
        ("alg none", f"{b64(json.dumps({'alg': 'none', 'kid': 'rsa-1'}))}."
                     f"{b64(json.dumps(claims))}."),
        ("expired", RSA.sign(fresh_claims(lifetime=-3600))),
    ]


CONFUSIONS = _confusions()


@pytest.mark.parametrize("label, bad", CONFUSIONS, ids=[c[0] for c in CONFUSIONS])
async def test_key_confusion_and_forgeries_are_refused(
        make_gateway: Any, idp: tuple[JwksEndpoint, str], cuebot: RecordingCuebot,
        label: str, bad: str) -> None:
    _, url = idp
    gw = await _sso_gateway(make_gateway, url)
    status, body = await _status(gw, bad)
    assert status == 403, body
    assert body["code"] == 7 and body["message"].startswith("token validation failed")
    assert cuebot.calls == []


async def test_a_kid_that_is_not_a_string_is_refused(
        make_gateway: Any, idp: tuple[JwksEndpoint, str], cuebot: RecordingCuebot) -> None:
    from jwt.algorithms import RSAAlgorithm

    header, claims = json.dumps({"alg": "RS256", "kid": 7}), json.dumps(fresh_claims())
    signing_input = f"{b64(header)}.{b64(claims)}"
    sig = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), RSA.private)
    _, url = idp
    gw = await _sso_gateway(make_gateway, url)
    status, _ = await _status(gw, f"{signing_input}.{b64(sig)}")
    assert status in (401, 403)
    assert cuebot.calls == []


async def test_a_jwk_alg_pins_its_key_to_that_algorithm(
        make_gateway: Any, aiohttp_server: Any) -> None:
    endpoint = JwksEndpoint(document(RSA))  # published with "alg": "RS256"
    server = await aiohttp_server(endpoint.app())
    gw = await _sso_gateway(make_gateway, str(server.make_url(JwksEndpoint.PATH)))
    assert (await _status(gw, RSA.sign(alg="RS256")))[0] == 200
    status, body = await _status(gw, RSA.sign(alg="PS256"))
    assert status == 403 and "no PS256 key" in body["message"]


# ---------------------------------------------------------------------------
# rotation, refresh, failure
# ---------------------------------------------------------------------------
async def test_a_new_kid_is_fetched_once_and_then_throttled(
        make_gateway: Any, aiohttp_server: Any, cuebot: RecordingCuebot) -> None:
    endpoint = JwksEndpoint(document(RSA))
    server = await aiohttp_server(endpoint.app())
    gw = await _sso_gateway(make_gateway, str(server.make_url(JwksEndpoint.PATH)),
                            jwt_jwks_refresh=0)
    assert endpoint.fetches == 1  # at start-up
    # the provider rotates: a new key is published and used at once
    endpoint.doc = document(RSA, RSA_2)
    many = await asyncio.gather(*(_status(gw, RSA_2.sign(sub=f"u{i}")) for i in range(10)))
    assert [s for s, _ in many] == [200] * 10
    assert endpoint.fetches == 2  # the ten waited for one fetch
    # kids nobody published, within the minute: refused without fetching again
    stranger = SigningKey.rsa("stranger")
    for _ in range(5):
        status, body = await _status(gw, stranger.sign())
        assert status == 403 and "kid" in body["message"]
    assert endpoint.fetches == 2
    # the old key still works, and nothing was fetched for it
    assert (await _status(gw, RSA.sign()))[0] == 200
    assert endpoint.fetches == 2


async def test_a_failed_refresh_keeps_the_last_good_keys(
        make_gateway: Any, idp: tuple[JwksEndpoint, str], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, url = idp
    gw = await _sso_gateway(make_gateway, url, jwt_jwks_refresh=0.05)
    for failure in ("500", "garbage", "empty"):
        endpoint.fail = failure
        before = endpoint.fetches
        while endpoint.fetches < before + 2:  # two scheduled refreshes failed
            await asyncio.sleep(0.02)
        assert (await _status(gw, EC256.sign(sub=f"after-{failure}")))[0] == 200
    assert "JWKS refresh (scheduled) failed, still verifying with the 4 keys" in caplog.text
    metrics = await (await gw.get("/metrics")).text()
    assert 'opencue_gateway_jwks_refreshes_total{outcome="failed"}' in metrics
    assert "opencue_gateway_jwks_keys 4.0" in metrics
    # the provider recovers with a new set: the next refresh installs it
    endpoint.fail, endpoint.doc = None, document(RSA_2)
    state = gw.app[STATE]
    generation = state.auth.keys.generation
    while state.auth.keys.generation == generation:
        await asyncio.sleep(0.02)
    assert (await _status(gw, RSA_2.sign()))[0] == 200
    assert (await _status(gw, EC256.sign(sub="removed")))[0] == 403


async def test_a_removed_key_stops_working_although_its_token_was_cached(
        make_gateway: Any, idp: tuple[JwksEndpoint, str]) -> None:
    endpoint, url = idp
    gw = await _sso_gateway(make_gateway, url, jwt_jwks_refresh=0)
    tok = RSA.sign()
    assert (await _status(gw, tok))[0] == 200
    assert (await _status(gw, tok))[0] == 200
    assert len(gw.app[STATE].auth.cache) == 1
    endpoint.doc = document(EC256)  # the provider retires the RSA key
    resp = await gw.post("/admin/reload", headers=auth_headers())  # refetches the JWKS
    assert resp.status == 200
    status, body = await _status(gw, tok)
    assert status == 403, body


async def test_jwks_file_is_read_again_on_reload(make_gateway: Any, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document(RSA)))
    gw = await _sso_gateway(make_gateway, str(path), jwt_jwks_refresh=0)
    assert (await _status(gw, RSA.sign()))[0] == 200
    assert (await _status(gw, ED.sign()))[0] == 403
    path.write_text(json.dumps(document(RSA, ED)))
    assert (await gw.post("/admin/reload", headers=auth_headers())).status == 200
    assert (await _status(gw, ED.sign()))[0] == 200


# ---------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------
def test_unusable_keys_are_skipped_with_a_reason() -> None:
    small = SigningKey.rsa("small", bits=1024)
    private = RSA.jwk()
    private_numbers = RSA.private.private_numbers()
    private["d"] = base64.urlsafe_b64encode(
        private_numbers.d.to_bytes(256, "big")).rstrip(b"=").decode()
    docs = [
        {"kty": "oct", "kid": "sym", "k": b64(b"s" * 32)},
        RSA_2.jwk(use="enc"),
        RSA_2.jwk(key_ops=["encrypt"]),
        small.jwk(),
        EC256.jwk(alg="RS256"),
        {"kty": "EC", "crv": "P-256", "kid": "bad-point", "x": b64(b"\x01" * 32),
         "y": b64(b"\x02" * 32)},
        {"kty": "XYZ", "kid": "odd"},
        "not an object",
    ]
    keys, skipped = jwks.parse_document(json.dumps({"keys": [*docs, ED.jwk()]}).encode(), "t")
    assert [k.kid for k in keys] == ["ed-1"]
    assert len(skipped) == len(docs)
    reasons = " | ".join(skipped)
    for words in ("symmetric", "use is 'enc'", "key_ops", "1024 bits", "does not fit",
                  "Invalid EC key", "unsupported kty", "not a JSON object"):
        assert words in reasons, (words, reasons)
    # a JWKS that (wrongly) publishes a private key: only its public half is kept
    (key,), _ = jwks.parse_document(json.dumps({"keys": [private]}).encode(), "t")
    assert not hasattr(key.key, "private_bytes")
    assert key.algorithms == {"RS256"}


@pytest.mark.parametrize("raw, words", [
    (b"not json", "not JSON"),
    (b'{"keys": 3}', "no \"keys\" list"),
    (b'{"keys": []}', "no usable signing key"),
    (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "symmetric"),
])
def test_bad_documents_say_why(raw: bytes, words: str) -> None:
    with pytest.raises(jwks.JwksError, match=words):
        jwks.parse_document(raw, "somewhere")


def test_logged_urls_lose_credentials() -> None:
    assert jwks.shown("https://u:p@sso.example/certs?token=s3cret#x") == "https://sso.example/certs"
    assert jwks.shown("/etc/opencue/jwks.json") == "/etc/opencue/jwks.json"


def _one_error_line(result: Any, code: int) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == code, out
    assert "Traceback" not in out
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unreachable_jwks_stops_start_up_in_one_line() -> None:
    from support import free_port

    url = f"http://127.0.0.1:{free_port()}/certs"
    line = _one_error_line(run_gateway(env={"JWT_JWKS": url}), 1)
    assert "JWT_JWKS" in line and url in line


def test_jwks_file_that_is_not_one_stops_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "jwks.json"
    bad.write_text('{"issuer": "not a key set"}')
    line = _one_error_line(run_gateway(env={"JWT_JWKS": str(bad)}), 1)
    assert str(bad) in line and "not a JWKS document" in line


def test_asymmetric_algorithms_without_jwks_are_refused() -> None:
    line = _one_error_line(run_gateway(env={"JWT_ALGORITHMS": "HS256,ES256"}), 2)
    assert "JWT_ALGORITHMS" in line and "JWT_JWKS" in line


async def test_unknown_kid_without_a_refresh_is_refused_by_the_sync_path(tmp_path: Path) -> None:
    """``authenticate`` alone never fetches; ``check`` fetches once for a new kid."""
    from gateway.auth import Authenticator, AuthSettings

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document(RSA)))
    keys = jwks.KeySet(str(path), refresh=0)
    await keys.load()
    auth = Authenticator(AuthSettings(secrets=(SECRET.encode(),)), keys)
    path.write_text(json.dumps(document(RSA, RSA_2)))
    header = f"Bearer {RSA_2.sign()}"
    with pytest.raises(AuthError) as info:
        auth.authenticate(header)
    assert info.value.reason == "key"
    assert (await auth.check(header)).subject == "jdoe"
    await keys.close()


def test_sandbox_token_still_uses_hmac() -> None:
    """A JWT_ALGORITHMS list that starts with an asymmetric name still gets a token printed."""
    from gateway.startup import sandbox_banner
    from gateway.config import Config

    cfg = Config(jwt_secret=SECRET, jwt_algorithms=("ES256", "HS384"), jwt_jwks="/x")
    banner = sandbox_banner(cfg, "http://127.0.0.1:1")
    tok = banner.split("export TOKEN=")[1].split()[0]
    assert json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))["alg"] == "HS384"
