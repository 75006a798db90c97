#!/usr/bin/env python3
"""What the duplicate-key and integer checks cost the request decoder, in one run.

``MessageCodec.from_json`` trusts orjson's reading of a body only after a
colon count (no key dropped by a duplicate) and with floats kept away from
integer fields; this compares it with the same fast path without those
checks (``orjson.loads`` + compiled decoder + ``Message(**kw)`` +
``SerializeToString``), interleaved, and prints ``checked / unchecked``
time (best of N rounds each) for the conformance vectors' two large
messages and two small request bodies.

    python scripts/bench_decode_checks.py [--rounds 21]
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Callable

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from gateway.descriptors import load_bundled  # noqa: E402
from gateway.transcode import Transcoder  # noqa: E402
from support import vector_bytes  # noqa: E402

SMALL = [("FindShow", "show.ShowFindShowRequest", b'{"name": "testing"}'),
         ("GetJobs", "job.JobGetJobsRequest",
          b'{"r": {"shows": ["testing"], "users": ["jdoe"], "include_finished": true}}')]
LARGE = [("frames10k", "job.JobGetFramesResponse"), ("jobs2k", "job.JobGetJobsResponse")]


def timed(fn: Callable[[], object], repeat: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args()
    descs = load_bundled()
    tc = Transcoder()
    cases = [(name, type_name, vector_bytes(f"{name}.go.json")) for name, type_name in LARGE]
    cases += SMALL
    print(f"{'body':<10} {'bytes':>10} {'checked / unchecked':>20}")
    for name, type_name, body in cases:
        codec = tc.codec(descs.pool.FindMessageTypeByName(type_name))
        cls, dec = codec.cls, codec.compile()._dec

        def checked() -> bytes:
            return codec.from_json(body)

        def unchecked() -> bytes:
            return cls(**dec(orjson.loads(body))).SerializeToString()

        assert checked() == unchecked()
        repeat = 3 if len(body) > 100_000 else 20_000
        a, b = [], []
        for _ in range(args.rounds):
            a.append(timed(checked, repeat))
            b.append(timed(unchecked, repeat))
        print(f"{name:<10} {len(body):>10,} {min(a) / min(b):>20.3f}")
    print(f"(best of {args.rounds} interleaved rounds each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
