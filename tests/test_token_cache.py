"""The verified-token cache: a repeated token is a dict lookup, never a way around a check.

Its time window is PyJWT's (exp, nbf, iat and the leeway); refusals are
never stored; new secrets (a new authenticator) and new JWKS keys (see
test_jwks) forget everything verified before.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.app import STATE
from gateway.auth import Authenticator, AuthError, AuthSettings, TokenCache
from support import SECRET, RecordingCuebot

GET_SHOWS = "/show.ShowInterface/GetShows"


def _sign(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _auth(clock: Clock, leeway: float = 0.0, size: int = 100) -> Authenticator:
    return Authenticator(AuthSettings(secrets=(SECRET.encode(),), leeway=leeway),
                         cache_size=size, clock=clock)


def test_a_repeated_token_is_served_from_the_cache() -> None:
    clock = Clock()
    auth = _auth(clock)
    header = f"Bearer {_sign({'sub': 'a', 'exp': int(clock.now) + 60})}"
    first = auth.authenticate(header)
    assert len(auth.cache) == 1
    assert auth.authenticate(header) is first  # the same Identity: nothing verified again


@pytest.mark.parametrize("leeway", [0.0, 30.0])
def test_a_cached_token_expires_by_the_clock(leeway: float) -> None:
    """Past exp (+ leeway) the entry is dropped and the token verified again (and refused)."""
    clock = Clock()
    auth = _auth(clock, leeway)
    exp = int(clock.now) + 60
    header = f"Bearer {_sign({'sub': 'a', 'exp': exp})}"
    auth.authenticate(header)
    clock.now = exp + leeway - 0.5
    assert auth.authenticate(header).subject == "a"  # still inside the window
    clock.now = exp + leeway
    assert auth.cache.get(header) is None  # PyJWT's rule: exp <= now - leeway
    assert len(auth.cache) == 0


def test_a_cached_token_is_not_valid_before_its_nbf_or_iat() -> None:
    """A clock that steps back (NTP) does not make a cached token valid before its time."""
    clock = Clock()
    auth = _auth(clock, leeway=10)
    now = int(clock.now)
    tok = _sign({"sub": "a", "exp": now + 600, "nbf": now - 5, "iat": now})
    auth.authenticate(f"Bearer {tok}")
    clock.now = now - 10.5  # before iat - leeway
    assert auth.cache.get(f"Bearer {tok}") is None


async def test_expiry_is_honoured_for_a_cached_token(make_gateway: Any,
                                                     cuebot: RecordingCuebot) -> None:
    """End to end, on the real clock: accepted, cached, then refused once exp passes."""
    gw = await make_gateway(authorized=False, jwt_leeway=0)
    exp = int(time.time()) + 2
    headers = {"Authorization": f"Bearer {_sign({'sub': 'brief', 'exp': exp})}"}
    assert (await gw.post(GET_SHOWS, headers=headers)).status == 200
    assert (await gw.post(GET_SHOWS, headers=headers)).status == 200
    assert len(gw.app[STATE].auth.cache) == 1
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.1)
    resp = await gw.post(GET_SHOWS, headers=headers)
    body = await resp.json()
    assert resp.status == 403 and body["message"] == "token validation failed: token has expired"
    assert len(cuebot.calls) == 2


async def test_rotated_secrets_invalidate_cached_tokens(make_gateway: Any,
                                                        tmp_path: Path) -> None:
    old, new = ("old-secret-0123456789abcdef0123456789", "new-secret-0123456789abcdef0123456789")
    secrets = tmp_path / "secrets"
    secrets.write_text(old + "\n")
    gw = await make_gateway(authorized=False, jwt_secret=None, jwt_secret_file=secrets)
    exp = int(time.time()) + 600
    old_token = {"Authorization": f"Bearer {_sign({'sub': 'a', 'exp': exp}, old)}"}
    new_token = {"Authorization": f"Bearer {_sign({'sub': 'b', 'exp': exp}, new)}"}
    for _ in range(2):
        assert (await gw.post(GET_SHOWS, headers=old_token)).status == 200
    assert len(gw.app[STATE].auth.cache) == 1
    secrets.write_text(new + "\n")
    assert (await gw.post("/admin/reload", headers=old_token)).status == 200
    assert (await gw.post(GET_SHOWS, headers=old_token)).status == 403  # not from the cache
    assert (await gw.post(GET_SHOWS, headers=new_token)).status == 200


def test_refusals_are_not_cached() -> None:
    clock = Clock()
    auth = _auth(clock)
    for header in (f"Bearer {_sign({'sub': 'a', 'exp': 1})}",
                   f"Bearer {_sign({'sub': 'a', 'exp': int(clock.now) + 60}, 'x' * 40)}",
                   "Bearer not.a.jwt"):
        with pytest.raises(AuthError):
            auth.authenticate(header)
    assert len(auth.cache) == 0


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    auth = _auth(clock, size=3)
    tokens = [_sign({"sub": f"u{i}", "exp": int(clock.now) + 60}) for i in range(5)]
    for tok in tokens[:3]:
        auth.authenticate(f"Bearer {tok}")
    auth.authenticate(f"Bearer {tokens[0]}")  # used again: now the most recent
    for tok in tokens[3:]:
        auth.authenticate(f"Bearer {tok}")
    assert len(auth.cache) == 3
    assert auth.cache.get(f"Bearer {tokens[0]}") is not None
    assert auth.cache.get(f"Bearer {tokens[1]}") is None
    assert auth.cache.get(f"Bearer {tokens[2]}") is None


def test_a_token_without_exp_stays_until_evicted() -> None:
    cache = TokenCache(size=2)
    auth = Authenticator(AuthSettings(secrets=(SECRET.encode(),), required_claims=("sub",)))
    identity = auth.authenticate(f"Bearer {_sign({'sub': 'forever'})}")
    cache.put("t", identity, 30)
    assert cache.get("t") is identity
