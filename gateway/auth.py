"""Bearer JWT authentication, as the REST reference states it, hardened.

Status semantics (the reference): 401 when there is no usable credential — no
``Authorization`` header, a scheme other than ``Bearer``, a token that is not
a JWT at all; 403 when a well-formed JWT fails validation — bad signature,
expired, not yet valid, a required claim missing or of the wrong type, an
algorithm not allowed. Both use the gateway's error envelope; neither ever
repeats the token or a secret.

PyJWT does the cryptography and the time checks. What it is lenient about
and the Go gateway is not (padded base64 segments, ``"exp": "123"``) is
refused here before or after it runs. Only HMAC algorithms are accepted:
an ``RS256``/``ES256``/``none`` header is refused whatever the key, so a
public key can never be used as an HMAC secret (key confusion).
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import jwt

from . import errors
from .errors import GatewayError

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("gateway.auth")

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
# RFC 7515 compact serialization: three base64url segments, no padding.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")
MAX_TOKEN_BYTES = 4096  # real tokens are a few hundred bytes; below aiohttp's 8 KiB line
_NUMERIC_CLAIMS = ("exp", "nbf", "iat")
# Below this, HS256 keys are weaker than the hash (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32


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


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a valid token says the caller is."""

    subject: str | None
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class AuthSettings:
    secrets: tuple[bytes, ...]
    algorithms: tuple[str, ...] = ("HS256",)
    required_claims: tuple[str, ...] = ("sub", "exp")
    leeway: float = 30.0
    audience: str | None = None
    issuer: str | None = None

    def __repr__(self) -> str:  # never print the secrets
        return (f"AuthSettings(secrets=<{len(self.secrets)}>, algorithms={self.algorithms}, "
                f"required_claims={self.required_claims}, leeway={self.leeway}, "
                f"audience={self.audience!r}, issuer={self.issuer!r})")


class Authenticator:
    """Checks ``Authorization`` headers; built once at start-up."""

    def __init__(self, settings: AuthSettings) -> None:
        if not settings.secrets:
            raise ValueError("no JWT secret")
        bad = [a for a in settings.algorithms if a not in HMAC_ALGORITHMS]
        if bad:
            raise ValueError(f"unsupported JWT algorithm(s) {', '.join(bad)}; "
                             f"only {', '.join(HMAC_ALGORITHMS)} are accepted")
        self.settings = settings
        self._algorithms = list(settings.algorithms)
        self._required = list(settings.required_claims)
        self._options = {
            "require": [c for c in self._required if c in ("exp", "nbf", "iat", "aud", "iss")],
            "verify_aud": settings.audience is not None,
            "verify_iss": settings.issuer is not None,
        }
        if any(len(s) < MIN_SECRET_BYTES for s in settings.secrets):
            log.warning("a JWT secret is shorter than %d bytes; HS256 keys that short are "
                        "easier to guess (use e.g. `openssl rand -hex 32`)", MIN_SECRET_BYTES)

    def authenticate(self, header: str | None) -> Identity:
        token = self._token(header)
        self._parse(token)
        claims = self._verify(token)
        return Identity(subject=claims.get("sub"), claims=claims)

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
    def _parse(token: str) -> None:
        """401 unless this is a compact JWS whose header and payload are JSON objects."""
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

    def _verify(self, token: str) -> dict[str, Any]:
        claims: dict[str, Any] | None = None
        for i, secret in enumerate(self.settings.secrets):
            try:
                with warnings.catch_warnings():
                    # short keys are warned about once at start-up, not per request
                    warnings.simplefilter("ignore")
                    claims = jwt.decode(
                        token, secret, algorithms=self._algorithms, options=self._options,
                        leeway=self.settings.leeway, audience=self.settings.audience,
                        issuer=self.settings.issuer)
                break
            except jwt.InvalidSignatureError:
                if i == len(self.settings.secrets) - 1:
                    raise forbidden("token validation failed: signature verification failed",
                                    "signature") from None
            except jwt.InvalidAlgorithmError:
                raise forbidden("token validation failed: algorithm not allowed "
                                f"(accepted: {', '.join(self._algorithms)})",
                                "algorithm") from None
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


def from_config(cfg: "Config") -> Authenticator | None:
    """The authenticator the settings ask for; None only with an explicit --no-auth."""
    if cfg.no_auth:
        return None
    secrets = read_secrets(cfg.jwt_secret, cfg.jwt_secret_file)
    if not secrets:
        raise AuthConfigError(
            "no JWT secret: set JWT_SECRET or JWT_SECRET_FILE (or, for development only, "
            "pass --no-auth)")
    return Authenticator(AuthSettings(
        secrets=secrets, algorithms=cfg.jwt_algorithms,
        required_claims=cfg.jwt_required_claims, leeway=cfg.jwt_leeway,
        audience=cfg.jwt_audience or None, issuer=cfg.jwt_issuer or None))
