"""Bearer JWT authentication, as the REST reference states it, hardened.

Status semantics (the reference): 401 when there is no usable credential — no
``Authorization`` header, a scheme other than ``Bearer``, a token that is not
a JWT at all; 403 when a well-formed JWT fails validation — bad signature,
expired, not yet valid, a required claim missing or of the wrong type, an
algorithm not allowed. Both use the gateway's error envelope; neither ever
repeats the token or a secret.

PyJWT does the cryptography and the time checks. What it is lenient about
and the Go gateway is not (padded base64 segments, ``"exp": "123"``) is
refused here before or after it runs. The header's algorithm picks the
keys: an HMAC one (``JWT_ALGORITHMS``) the secrets, an asymmetric one the
``JWT_JWKS`` keys whose type allows exactly that algorithm (``jwks.py``), so
a public key can never be used as an HMAC secret (key confusion) and
``none`` is never accepted.

A token verified once is remembered (``TokenCache``): the same token again
costs a dict lookup and a comparison of its exp/nbf/iat with the clock.
Only successes are remembered, each for no longer than its claims allow, and
a change of the keys forgets them all (new secrets make a new
``Authenticator``; new JWKS keys bump the key set's generation).
"""
from __future__ import annotations

import logging
import math
import re
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jwt

from . import errors
from .config import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS
from .errors import GatewayError

if TYPE_CHECKING:
    from .config import Config
    from .jwks import KeySet

log = logging.getLogger("gateway.auth")

__all__ = ["ASYMMETRIC_ALGORITHMS", "HMAC_ALGORITHMS"]  # re-exported for callers of auth
# RFC 7515 compact serialization: three base64url segments, no padding.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")
MAX_TOKEN_BYTES = 4096  # real tokens are a few hundred bytes; below aiohttp's 8 KiB line
_NUMERIC_CLAIMS = ("exp", "nbf", "iat")
# Below this, HS256 keys are weaker than the hash (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32
# verified tokens remembered; at a few hundred bytes each, a few MB at most
TOKEN_CACHE_SIZE = 10_000


class AuthError(GatewayError):
    """A refused credential. ``reason`` is a short label for metrics and logs."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        headers = {"WWW-Authenticate": _challenge(message, status)} if status == 401 else None
        super().__init__(status, errors.UNAUTHENTICATED if status == 401
                         else errors.PERMISSION_DENIED, message, headers=headers)
        self.reason = reason


def _challenge(message: str, status: int) -> str:
    if message == MISSING:
        return 'Bearer realm="opencue-gateway"'
    text = message.replace("\\", "").replace('"', "'")
    return f'Bearer realm="opencue-gateway", error="invalid_token", error_description="{text}"'


MISSING = "Authorization header required"


def credentials(headers: Mapping[str, str]) -> str | None:
    """The one ``Authorization`` header, or None; 401 if there are several.

    Taking the first of two would let whatever added the other (a proxy, a
    client library) decide who the caller is.
    """
    getall = getattr(headers, "getall", None)
    values = getall("Authorization", ()) if getall is not None else (
        [headers["Authorization"]] if "Authorization" in headers else [])
    if len(values) > 1:
        raise unauthenticated("more than one Authorization header", "multiple")
    return values[0] if values else None


def unauthenticated(message: str, reason: str) -> AuthError:
    return AuthError(401, message, reason)


def forbidden(message: str, reason: str) -> AuthError:
    return AuthError(403, message, reason)


class UnknownKey(AuthError):
    """An asymmetric token whose ``kid`` is not in the key set (yet): worth a JWKS refresh."""

    def __init__(self) -> None:
        super().__init__(403, "token validation failed: no key with the token's kid", "key")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a valid token says the caller is, and the roles it gives them."""

    subject: str | None
    claims: Mapping[str, Any]
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthSettings:
    secrets: tuple[bytes, ...]
    algorithms: tuple[str, ...] = ("HS256",)
    required_claims: tuple[str, ...] = ("sub", "exp")
    leeway: float = 30.0
    audience: str | None = None
    issuer: str | None = None
    roles_claim: str = "role"
    default_roles: tuple[str, ...] = ()  # a token whose claim names no role
    strict_roles: bool = False           # a malformed roles claim is refused (AUTHZ_POLICY set)

    def __repr__(self) -> str:  # never print the secrets
        return (f"AuthSettings(secrets=<{len(self.secrets)}>, algorithms={self.algorithms}, "
                f"required_claims={self.required_claims}, leeway={self.leeway}, "
                f"audience={self.audience!r}, issuer={self.issuer!r}, "
                f"roles_claim={self.roles_claim!r}, default_roles={self.default_roles})")


def roles_from_claims(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The roles a token names in ``claim``: a string (roles separated by spaces, as an
    OAuth ``scope``) or a list of strings; ValueError for anything else.

    A claim name holding dots that is not itself a claim reaches into objects
    (``realm_access.roles``, where Keycloak puts realm roles); a claim that is
    a URL with dots (``https://studio.example/roles``, Auth0's style) is
    found first as it is.
    """
    if claim in claims:
        value = claims[claim]
    else:
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(dict.fromkeys(value.split()))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(v for v in value if v))
    raise ValueError(f"claim {claim!r} must be a string or a list of strings")


class TokenCache:
    """Verified tokens (by the Authorization header that carried them), least recently
    used first, each with the window it is valid in.

    A hit is valid only inside ``[not_before, not_after)`` by the clock, as
    PyJWT would judge it (its integer exp/nbf/iat and the leeway); outside
    it the entry is dropped and the token verified again, which gives the
    refusal its usual reason. Refusals are never stored.
    """

    def __init__(self, size: int = TOKEN_CACHE_SIZE,
                 clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Identity, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Identity | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        identity, not_before, not_after = entry
        now = self.clock()
        if now < not_before or now >= not_after:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return identity

    def put(self, token: str, identity: Identity, leeway: float) -> None:
        if self.size <= 0:
            return
        claims = identity.claims
        not_before, not_after = -math.inf, math.inf
        try:
            if "exp" in claims:
                not_after = int(claims["exp"]) + leeway
            for name in ("nbf", "iat"):
                if name in claims:
                    not_before = max(not_before, int(claims[name]) - leeway)
        except (TypeError, ValueError, OverflowError):
            return  # PyJWT accepted it, so this cannot happen; never cache a doubt
        entries = self._entries
        entries[token] = (identity, not_before, not_after)
        entries.move_to_end(token)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class Authenticator:
    """Checks ``Authorization`` headers; built at start-up and again when secrets change."""

    def __init__(self, settings: AuthSettings, keys: "KeySet | None" = None, *,
                 cache_size: int = TOKEN_CACHE_SIZE,
                 clock: Callable[[], float] = time.time) -> None:
        if not settings.secrets and keys is None:
            raise ValueError("no JWT secret")
        known = HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS
        bad = [a for a in settings.algorithms if a not in known]
        if bad:
            raise ValueError(f"unsupported JWT algorithm(s) {', '.join(bad)}; "
                             f"only {', '.join(known)} are accepted")
        listed = [a for a in settings.algorithms if a in ASYMMETRIC_ALGORITHMS]
        if listed and keys is None:
            raise ValueError(f"JWT algorithm(s) {', '.join(listed)} need JWT_JWKS; without it "
                             f"only {', '.join(HMAC_ALGORITHMS)} are accepted")
        self.settings = settings
        self.keys = keys
        # HMAC algorithms verify with the secrets; asymmetric ones with the JWKS keys, all
        # of them unless JWT_ALGORITHMS names some
        self._hmac = frozenset(a for a in settings.algorithms
                               if a in HMAC_ALGORITHMS) if settings.secrets else frozenset()
        self._asymmetric = frozenset() if keys is None else frozenset(
            listed or ASYMMETRIC_ALGORITHMS)
        self._accepted = ", ".join(a for a in known if a in self._hmac | self._asymmetric)
        self._required = list(settings.required_claims)
        self._options = {
            "require": [c for c in self._required if c in ("exp", "nbf", "iat", "aud", "iss")],
            "verify_aud": settings.audience is not None,
            "verify_iss": settings.issuer is not None,
        }
        self.cache = TokenCache(cache_size, clock)
        self._generation = keys.generation if keys is not None else 0
        if any(len(s) < MIN_SECRET_BYTES for s in settings.secrets):
            log.warning("a JWT secret is shorter than %d bytes; HS256 keys that short are "
                        "easier to guess (use e.g. `openssl rand -hex 32`)", MIN_SECRET_BYTES)

    def authenticate(self, header: str | None) -> Identity:
        keys = self.keys
        if keys is not None and keys.generation != self._generation:
            self.cache.clear()  # the JWKS changed: a removed key must stop working now
            self._generation = keys.generation
        # the cache is keyed by the header as sent (it names one token): a
        # client repeating its header is answered before the header is parsed
        identity = self.cache.get(header) if header is not None else None
        if identity is not None:
            return identity
        token = self._token(header)
        claims = self._verify(token, self._parse(token))
        identity = Identity(subject=claims.get("sub"), claims=claims, roles=self._roles(claims))
        assert header is not None  # _token refused a missing one
        self.cache.put(header, identity, self.settings.leeway)
        return identity

    async def check(self, header: str | None) -> Identity:
        """``authenticate``, fetching the JWKS again once if the token's kid is new."""
        try:
            return self.authenticate(header)
        except UnknownKey:
            if self.keys is None or not await self.keys.refresh_for_unknown_kid():
                raise
        return self.authenticate(header)

    # -- steps ---------------------------------------------------------
    @staticmethod
    def _token(header: str | None) -> str:
        if header is None or not header.strip():
            raise unauthenticated(MISSING, "missing")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer":
            raise unauthenticated("Authorization header must use the Bearer scheme",
                                  "scheme")
        token = token.strip()
        if not token:
            raise unauthenticated("Bearer token is empty", "malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise unauthenticated(f"Bearer token longer than {MAX_TOKEN_BYTES} bytes",
                                  "malformed")
        return token

    @staticmethod
    def _parse(token: str) -> dict[str, Any]:
        """The header, or 401 unless this is a compact JWS with JSON header and payload."""
        if not _COMPACT.match(token):
            raise unauthenticated("invalid token: not a JWT (three unpadded base64url "
                                  "segments)", "malformed")
        try:
            header = jwt.get_unverified_header(token)
            jwt.decode(token, options={"verify_signature": False})
        except jwt.DecodeError:  # segments that are not base64url JSON objects
            raise unauthenticated("invalid token: not a JWT", "malformed") from None
        except jwt.PyJWTError as e:
            # a well-formed JWT whose header PyJWT refuses (an unsupported ``crit``
            # extension, a non-string ``kid``): it fails validation, hence 403
            raise forbidden(f"token validation failed: {_safe(e)}", "invalid") from None
        if not isinstance(header.get("alg"), str):
            raise unauthenticated("invalid token: header has no algorithm", "malformed")
        return header

    def _candidates(self, header: dict[str, Any]) -> tuple[str, list[Any]]:
        """The header's algorithm and the keys that may verify it (never an empty list)."""
        alg = header["alg"]
        if alg in self._hmac:
            return alg, list(self.settings.secrets)
        if alg in self._asymmetric:
            assert self.keys is not None
            kid = header.get("kid")  # PyJWT has refused a kid that is not a string
            found = self.keys.find(kid, alg)
            if found:
                return alg, found
            if kid is not None and not self.keys.has_kid(kid):
                raise UnknownKey()
            raise forbidden(f"token validation failed: no {alg} key"
                            + (" with the token's kid" if kid is not None else ""),
                            "algorithm" if kid is not None else "key")
        raise forbidden("token validation failed: algorithm not allowed "
                        f"(accepted: {self._accepted or 'none'})", "algorithm")

    def _verify(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        alg, keys = self._candidates(header)
        claims: dict[str, Any] | None = None
        for i, key in enumerate(keys):
            try:
                with warnings.catch_warnings():
                    # short keys are warned about once at start-up, not per request
                    warnings.simplefilter("ignore")
                    claims = jwt.decode(
                        token, key, algorithms=[alg], options=self._options,
                        leeway=self.settings.leeway, audience=self.settings.audience,
                        issuer=self.settings.issuer)
                break
            except jwt.InvalidSignatureError:
                if i == len(keys) - 1:
                    raise forbidden("token validation failed: signature verification failed",
                                    "signature") from None
            except jwt.InvalidAlgorithmError:
                raise forbidden("token validation failed: algorithm not allowed "
                                f"(accepted: {self._accepted})", "algorithm") from None
            except jwt.ExpiredSignatureError:
                raise forbidden("token validation failed: token has expired",
                                "expired") from None
            except jwt.ImmatureSignatureError:
                raise forbidden("token validation failed: token is not yet valid "
                                "(nbf or iat in the future)", "immature") from None
            except jwt.MissingRequiredClaimError as e:
                raise forbidden(f"token validation failed: missing claim {e.claim!r}",
                                "claims") from None
            except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as e:
                raise forbidden(f"token validation failed: {_safe(e)}", "claims") from None
            except jwt.PyJWTError as e:
                raise forbidden(f"token validation failed: {_safe(e)}", "invalid") from None
        assert claims is not None
        self._check_claims(claims)
        return claims

    def _roles(self, claims: dict[str, Any]) -> tuple[str, ...]:
        """The token's roles, or AUTHZ_DEFAULT_ROLE when it names none."""
        try:
            roles = roles_from_claims(claims, self.settings.roles_claim)
        except ValueError as e:
            if self.settings.strict_roles:
                raise forbidden(f"token validation failed: {e}", "claims") from None
            roles = ()  # only informative without a policy (the audit): as if absent
        return roles or self.settings.default_roles

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """Types PyJWT lets through (``"exp": "123"``, ``"sub": ""``), and required claims."""
        for name in _NUMERIC_CLAIMS:
            if name in claims:
                v = claims[name]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise forbidden(f"token validation failed: claim {name!r} must be a "
                                    "number", "claims")
        if "sub" in claims and (not isinstance(claims["sub"], str) or not claims["sub"]):
            raise forbidden("token validation failed: claim 'sub' must be a non-empty string",
                            "claims")
        for name in self._required:
            if name not in claims:
                raise forbidden(f"token validation failed: missing claim {name!r}", "claims")


def _safe(exc: Exception) -> str:
    """PyJWT's message, which names claims but never holds the token or a key."""
    text = str(exc) or type(exc).__name__
    return text[:200]


def mint(secret: bytes | str, subject: str, lifetime: float, *,
         algorithm: str = "HS256", extra: Mapping[str, Any] | None = None,
         now: float | None = None) -> str:
    """A token for ``subject`` (the sandbox's ready-made token, and tests)."""
    import time

    issued = int(now if now is not None else time.time())
    payload = {"sub": subject, "iat": issued, "exp": issued + int(lifetime), **(extra or {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(payload, secret, algorithm=algorithm)


class AuthConfigError(Exception):
    """Authentication cannot be set up as configured; the message says why."""


def read_secrets(secret: str | None, secret_file: Path | None) -> tuple[bytes, ...]:
    """The accepted secrets: ``JWT_SECRET`` verbatim, plus each line of ``JWT_SECRET_FILE``.

    Lines lose only their line ending (``echo s > file`` must work), blank
    lines are skipped; several lines are several valid secrets, which is how
    a secret is rotated without a moment when old tokens fail.
    """
    out: list[bytes] = []
    if secret:
        out.append(secret.encode())
    if secret_file is not None:
        try:
            raw = secret_file.read_bytes()
        except OSError as e:
            raise AuthConfigError(f"JWT_SECRET_FILE {secret_file}: "
                                  f"{e.strerror or e}") from None
        lines = [line.rstrip(b"\r") for line in raw.split(b"\n")]
        found = [line for line in lines if line.strip()]
        if not found:
            raise AuthConfigError(f"JWT_SECRET_FILE {secret_file}: holds no secret")
        out.extend(found)
    return tuple(dict.fromkeys(out))


def from_config(cfg: "Config", keys: "KeySet | None" = None) -> Authenticator | None:
    """The authenticator the settings ask for; None only with an explicit --no-auth.

    ``keys`` is the JWT_JWKS key set, made once (``jwks.from_config``) and
    handed to every authenticator that replaces this one on reload.
    """
    if cfg.no_auth:
        return None
    secrets = read_secrets(cfg.jwt_secret, cfg.jwt_secret_file)
    if not secrets and keys is None:
        raise AuthConfigError(
            "no JWT secret: set JWT_SECRET, or JWT_SECRET_FILE (--jwt-secret-file) to a file "
            "of secrets, or JWT_JWKS for an identity provider's keys; to try the gateway "
            "without one, --sandbox makes its own, and --dev --no-auth serves without "
            "authentication on 127.0.0.1 only")
    return Authenticator(AuthSettings(
        secrets=secrets, algorithms=cfg.jwt_algorithms,
        required_claims=cfg.jwt_required_claims, leeway=cfg.jwt_leeway,
        audience=cfg.jwt_audience or None, issuer=cfg.jwt_issuer or None,
        roles_claim=cfg.jwt_roles_claim, default_roles=cfg.authz_default_role,
        strict_roles=cfg.authz_policy is not None), keys)
