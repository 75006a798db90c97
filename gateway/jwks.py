"""An identity provider's public keys (``JWT_JWKS``): fetched, refreshed, kept when a fetch fails.

The source is a JWKS document (RFC 7517) in a file or at an https:// URL
(Keycloak's ``.../protocol/openid-connect/certs``, Okta's, Entra ID's...). It
is read at start-up (a failure stops start-up), then again every
``JWT_JWKS_REFRESH`` seconds, on reload (SIGHUP, ``POST /admin/reload``), and
when a token names a ``kid`` the set does not hold: an identity provider
signs with a new key as soon as it publishes it. Unknown kids are
client-chosen, so they cause at most one fetch a minute; requests that
arrive while a fetch is under way wait for it instead of starting another.
A fetch that fails (unreachable, not JSON, no usable key) changes nothing:
the last good set keeps verifying, and the log says so.

Each key is turned into a public key object once per fetch, and is allowed
only the algorithms its type can verify: RSA keys RS256..RS512 and
PS256..PS512, EC keys the ES algorithm of their curve, OKP keys EdDSA — and
only its own ``alg`` if the document names one. Symmetric (``oct``) keys,
encryption keys and RSA keys under 2048 bits are skipped, so nothing from a
JWKS can ever be used as an HMAC secret.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from yarl import URL

from .config import ASYMMETRIC_ALGORITHMS

log = logging.getLogger("gateway.jwks")

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": frozenset({"ES256"}), "P-384": frozenset({"ES384"}),
                 "P-521": frozenset({"ES512"})}
OKP_ALGORITHMS = {"Ed25519": frozenset({"EdDSA"}), "Ed448": frozenset({"EdDSA"})}
MIN_RSA_BITS = 2048
MAX_DOCUMENT_BYTES = 1024 * 1024
FETCH_TIMEOUT = 10.0
UNKNOWN_KID_INTERVAL = 60.0  # seconds between fetches caused by unknown kids
_WARN_EVERY = 30.0

assert RSA_ALGORITHMS | {a for s in EC_ALGORITHMS.values() for a in s} | {"EdDSA"} == set(
    ASYMMETRIC_ALGORITHMS), "the algorithm table and config.ASYMMETRIC_ALGORITHMS differ"


class JwksError(Exception):
    """A JWKS document could not be read or holds no usable key; the message says why."""


@dataclass(frozen=True)
class Key:
    """One verification key and the algorithms it may verify."""

    kid: str | None
    algorithms: frozenset[str]
    key: Any                 # a cryptography public key object
    fingerprint: bytes       # its public key (DER), to see whether a refresh changed anything


def _public(key: Any) -> Any:
    return key.public_key() if hasattr(key, "private_bytes") else key


def parse_key(jwk: Mapping[str, Any]) -> Key:
    """One JWK as a ``Key``, or ValueError saying why it cannot verify tokens here."""
    if not isinstance(jwk, Mapping):
        raise ValueError("not a JSON object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"use is {use!r}, not sig")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise ValueError("key_ops does not include verify")
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            key = _public(RSAAlgorithm.from_jwk(dict(jwk)))
            if key.key_size < MIN_RSA_BITS:
                raise ValueError(f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
            allowed = RSA_ALGORITHMS
        elif kty == "EC":
            allowed = EC_ALGORITHMS.get(jwk.get("crv"))  # type: ignore[arg-type]
            if allowed is None:
                raise ValueError(f"unsupported EC curve {jwk.get('crv')!r}")
            key = _public(ECAlgorithm.from_jwk(dict(jwk)))
        elif kty == "OKP":
            allowed = OKP_ALGORITHMS.get(jwk.get("crv"))  # type: ignore[arg-type]
            if allowed is None:
                raise ValueError(f"unsupported OKP curve {jwk.get('crv')!r}")
            key = _public(OKPAlgorithm.from_jwk(dict(jwk)))
        elif kty == "oct":
            raise ValueError("a symmetric (oct) key; HMAC secrets come from JWT_SECRET only")
        else:
            raise ValueError(f"unsupported kty {kty!r}")
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - PyJWT's InvalidKeyError, cryptography's errors
        raise ValueError(f"not a valid {kty} key ({type(e).__name__})") from None
    alg = jwk.get("alg")
    if alg is not None:
        if alg not in allowed:
            raise ValueError(f"alg {alg!r} does not fit a {kty} key")
        allowed = frozenset({alg})
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return Key(kid, allowed, key, der)


def parse_document(raw: bytes, source: str) -> tuple[list[Key], list[str]]:
    """The usable keys of a JWKS document, and why the others were skipped."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise JwksError(f"JWT_JWKS {source}: not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f"JWT_JWKS {source}: not a JWKS document (no \"keys\" list)")
    keys, skipped = [], []
    for i, jwk in enumerate(doc["keys"]):
        try:
            keys.append(parse_key(jwk))
        except ValueError as e:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            skipped.append(f"key {kid if isinstance(kid, str) else f'#{i}'}: {e}")
    if not keys:
        detail = f" ({'; '.join(skipped)})" if skipped else ""
        raise JwksError(f"JWT_JWKS {source}: no usable signing key{detail}")
    return keys, skipped


def shown(source: str) -> str:
    """The source as logs show it: a URL without its query (which may carry a credential)."""
    if "://" not in source:
        return source
    url = URL(source)
    return str(url.with_query(None).with_fragment(None).with_user(None))


class KeySet:
    """The keys of one JWKS source, swapped whole on each good fetch."""

    def __init__(self, source: str, refresh: float = 300.0, *, timeout: float = FETCH_TIMEOUT,
                 unknown_kid_interval: float = UNKNOWN_KID_INTERVAL) -> None:
        self.source = source
        self.is_url = "://" in source
        self.refresh_every = refresh
        self.timeout = timeout
        self.unknown_kid_interval = unknown_kid_interval
        self.generation = 0                # +1 whenever the usable keys change
        self.fetches = 0                   # attempts, good or bad
        self.loaded_at = 0.0               # epoch seconds of the last good fetch
        self.last_error: str | None = None
        self.on_refresh: Callable[[str, int], None] | None = None  # (outcome, keys): metrics
        self._keys: tuple[Key, ...] = ()
        self._by_kid: dict[str | None, tuple[Key, ...]] = {}
        self._kids: frozenset[str] = frozenset()
        self._fingerprint: frozenset[tuple[Any, ...]] = frozenset()
        self._inflight: asyncio.Future[bool] | None = None
        self._last_unknown_kid = -math.inf
        self._warned_at = -math.inf
        self._session: Any = None
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def kids(self) -> list[str]:
        return sorted(self._kids)

    # -- the request path --------------------------------------------------
    def find(self, kid: str | None, alg: str) -> list[Any]:
        """Keys that may verify ``alg``: the kid's, or any key when the token names none."""
        pool = self._by_kid.get(kid, ()) if kid is not None else self._keys
        return [k.key for k in pool if alg in k.algorithms]

    def has_kid(self, kid: str) -> bool:
        return kid in self._kids

    async def refresh_for_unknown_kid(self) -> bool:
        """Fetch again for a kid not in the set, at most once a minute; True if worth a retry."""
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        now = time.monotonic()
        if now - self._last_unknown_kid < self.unknown_kid_interval:
            return False
        self._last_unknown_kid = now
        return await self.refresh("unknown kid")

    # -- fetching -----------------------------------------------------------
    async def load(self) -> None:
        """The first fetch: JwksError if it fails (start-up stops with its message)."""
        keys, skipped = await self._fetch()
        self._install(keys, skipped)

    async def refresh(self, reason: str) -> bool:
        """Fetch now (or join the fetch under way); True if the keys changed. Never raises."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh(reason))
            self._inflight.add_done_callback(self._finished)
        return await asyncio.shield(self._inflight)

    def _finished(self, fut: asyncio.Future[bool]) -> None:
        if self._inflight is fut:
            self._inflight = None

    async def _refresh(self, reason: str) -> bool:
        try:
            keys, skipped = await self._fetch()
        except JwksError as e:
            self.last_error = str(e)
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                age = time.time() - self.loaded_at
                log.warning("JWKS refresh (%s) failed, still verifying with the %d keys "
                            "fetched %.0f s ago: %s", reason, len(self._keys), age, e)
            self._report("failed")
            return False
        changed = self._install(keys, skipped)
        if changed:
            log.info("JWKS refreshed (%s): %d keys (kid %s) from %s", reason, len(keys),
                     ", ".join(self.kids) or "none", shown(self.source))
        self._report("ok" if changed else "unchanged")
        return changed

    def _install(self, keys: list[Key], skipped: list[str]) -> bool:
        self.loaded_at = time.time()
        self.last_error = None
        fingerprint = frozenset((k.kid, k.algorithms, k.fingerprint) for k in keys)
        if fingerprint == self._fingerprint:
            return False
        for reason in skipped:
            log.warning("JWKS %s: %s skipped", shown(self.source), reason)
        by_kid: dict[str | None, list[Key]] = {}
        for k in keys:
            by_kid.setdefault(k.kid, []).append(k)
        self._keys = tuple(keys)
        self._by_kid = {kid: tuple(ks) for kid, ks in by_kid.items()}
        self._kids = frozenset(k.kid for k in keys if k.kid is not None)
        self._fingerprint = fingerprint
        self.generation += 1
        return True

    def _report(self, outcome: str) -> None:
        if self.on_refresh is not None:
            self.on_refresh(outcome, len(self._keys))

    async def _fetch(self) -> tuple[list[Key], list[str]]:
        self.fetches += 1
        where = shown(self.source)
        if not self.is_url:
            try:
                raw = await asyncio.to_thread(Path(self.source).read_bytes)
            except OSError as e:
                raise JwksError(f"JWT_JWKS {where}: {e.strerror or e}") from None
            if len(raw) > MAX_DOCUMENT_BYTES:
                raise JwksError(f"JWT_JWKS {where}: larger than {MAX_DOCUMENT_BYTES} bytes")
            return parse_document(raw, where)
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.get(self.source,
                                         headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise JwksError(f"JWT_JWKS {where}: HTTP {resp.status}")
                raw = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise JwksError(f"JWT_JWKS {where}: {type(e).__name__}"
                            f"{': ' + str(e) if str(e) else ''}") from None
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise JwksError(f"JWT_JWKS {where}: larger than {MAX_DOCUMENT_BYTES} bytes")
        return parse_document(raw, where)

    # -- the background refresh ---------------------------------------------
    def start(self) -> None:
        """Refresh every ``refresh_every`` seconds (nothing if 0); call in the running loop."""
        if self.refresh_every > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._every())

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_every)
            await self.refresh("scheduled")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


async def from_config(source: str | None, refresh: float) -> KeySet | None:
    """The JWT_JWKS key set, loaded; None without JWT_JWKS. JwksError if it cannot be read."""
    if not source:
        return None
    keys = KeySet(source, refresh)
    if keys.is_url and URL(source).scheme == "http" and URL(source).host not in (
            "127.0.0.1", "::1", "localhost"):
        log.warning("JWT_JWKS %s is plain http: whoever can alter that traffic can sign "
                    "tokens this gateway accepts; use https", shown(source))
    try:
        await keys.load()
    except BaseException:
        await keys.close()
        raise
    log.info("JWKS: %d keys (kid %s) from %s%s", len(keys), ", ".join(keys.kids) or "none",
             shown(source), f", refreshed every {refresh:g} s" if refresh > 0 else "")
    return keys
