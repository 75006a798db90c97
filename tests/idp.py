"""A throwaway identity provider: real key pairs, their JWKS, tokens signed with them,
and a JWKS endpoint on a loopback port that counts its fetches and can be told to fail."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://sso.studio.example/realms/opencue"


@dataclass
class SigningKey:
    """A private key, its kid, and the algorithm it signs with."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str, alg: str = "RS256", bits: int = 2048) -> "SigningKey":
        return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ec(cls, kid: str, alg: str = "ES256") -> "SigningKey":
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
        return cls(kid, alg, ec.generate_private_key(curve))

    @classmethod
    def ed25519(cls, kid: str) -> "SigningKey":
        return cls(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())

    def jwk(self, *, with_alg: bool = True, **extra: Any) -> dict[str, Any]:
        """The public JWK, as an identity provider publishes it."""
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        data.update({"kid": self.kid, "use": "sig"})
        if with_alg:
            data["alg"] = self.alg
        data.update(extra)
        return data

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, claims: dict[str, Any] | None = None, *, alg: str | None = None,
             kid: str | None | bool = True, headers: dict[str, Any] | None = None,
             **extra: Any) -> str:
        """A token: ``claims`` or a fresh one for ``extra``; ``kid=False`` leaves it out."""
        payload = claims if claims is not None else fresh_claims(**extra)
        h = dict(headers or {})
        if kid is True:
            h["kid"] = self.kid
        elif isinstance(kid, str):
            h["kid"] = kid
        return jwt.encode(payload, self.private, algorithm=alg or self.alg, headers=h)


def fresh_claims(sub: str = "jdoe", lifetime: int = 600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + lifetime, **extra}


def document(*keys: SigningKey | dict[str, Any]) -> dict[str, Any]:
    return {"keys": [k.jwk() if isinstance(k, SigningKey) else k for k in keys]}


@dataclass
class JwksEndpoint:
    """``GET /certs`` answers ``doc`` (or fails as ``fail`` says); ``fetches`` counts them."""

    doc: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    fail: str | None = None    # None, "500", "garbage" or "empty"
    fetches: int = 0

    def app(self) -> web.Application:
        async def certs(request: web.Request) -> web.Response:
            self.fetches += 1
            if self.fail == "500":
                return web.Response(status=500, text="internal error")
            if self.fail == "garbage":
                return web.Response(text="<html>not json</html>", content_type="text/html")
            if self.fail == "empty":
                return web.json_response({"keys": []})
            return web.Response(text=json.dumps(self.doc), content_type="application/json")

        app = web.Application()
        app.router.add_get("/realms/opencue/protocol/openid-connect/certs", certs)
        return app

    PATH = "/realms/opencue/protocol/openid-connect/certs"
