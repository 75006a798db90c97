"""Libraries a gateway process leaves out when its settings do not use them.

PyJWT imports ``cryptography`` whenever it is installed, for RSA, EC and
EdDSA keys; in the gateway only ``JWT_JWKS`` uses them (HS256 and its
siblings are the standard library's ``hmac``). Loaded, cryptography holds
about 8 MB of the serving process's memory. ``leave_out`` runs before the
serving modules are imported (``cli.main``, each ``--workers`` process): an
entry of None in ``sys.modules`` makes importing it fail, so PyJWT takes the
path it has for an installation without its ``crypto`` extra.
"""
from __future__ import annotations

import sys

from .config import Config

CRYPTOGRAPHY = "cryptography"


def leave_out(cfg: Config) -> None:
    """Before the serving modules are imported: keep out what ``cfg`` does not use."""
    if cfg.jwt_jwks is None and CRYPTOGRAPHY not in sys.modules:
        sys.modules[CRYPTOGRAPHY] = None  # type: ignore[assignment]
