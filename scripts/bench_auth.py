#!/usr/bin/env python3
"""Token checks with and without the verified-token cache, in one run.

For an HS256 token (the gateway's default) and an RS256 and an ES256 token
(from an identity provider, through a JWKS file), times
``Authenticator.authenticate`` on the same header again and again, once with
the cache off (every call verifies the signature and the claims) and once
with it on (every call but the first is a cache hit), interleaved best-of-N,
and prints uncached time / cached time. Ratios, not absolute times, are what
carry over between machines.

    python scripts/bench_auth.py [--rounds 7] [--calls 2000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from gateway import jwks  # noqa: E402
from gateway.auth import Authenticator, AuthSettings  # noqa: E402
from idp import SigningKey, document  # noqa: E402
from support import SECRET, token  # noqa: E402


def timed(auth: Authenticator, header: str, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        auth.authenticate(header)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()

    rsa, ec = SigningKey.rsa("rsa"), SigningKey.ec("ec")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jwks.json"
        path.write_text(json.dumps(document(rsa, ec)))
        keys = jwks.KeySet(str(path), refresh=0)
        asyncio.run(keys.load())
    settings = AuthSettings(secrets=(SECRET.encode(),))
    uncached = Authenticator(settings, keys, cache_size=0)
    cached = Authenticator(settings, keys)
    headers = {
        "HS256": f"Bearer {token('bench')}",
        "RS256": f"Bearer {rsa.sign(sub='bench', lifetime=3600)}",
        "ES256": f"Bearer {ec.sign(sub='bench', lifetime=3600)}",
    }
    print(f"{'token':8}{'uncached x cached':>20}")
    for name, header in headers.items():
        cold, warm = [], []
        for _ in range(args.rounds):  # interleaved: machine noise hits both
            cold.append(timed(uncached, header, args.calls))
            warm.append(timed(cached, header, args.calls))
        print(f"{name:8}{min(cold) / min(warm):>20.0f}")
    print(f"(uncached time / cached time for the same header, best of {args.rounds} "
          f"interleaved rounds of {args.calls} calls)")


if __name__ == "__main__":
    main()
