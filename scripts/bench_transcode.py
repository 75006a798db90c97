#!/usr/bin/env python3
"""Our compiled converters against google.protobuf.json_format, in one run.

Times both directions on the conformance vectors' large messages
(10,000 frames; 2,000 jobs) and prints ratios, which stay meaningful on a
noisy machine where absolute times do not:

  encode: wire bytes -> JSON bytes
      ours       Message.FromString + compiled encoder + orjson.dumps
      baseline   Message.FromString + json_format.MessageToDict + json.dumps
  decode: JSON bytes -> wire bytes
      ours       orjson.loads + compiled decoder + Message(**kw).SerializeToString
      baseline   json_format.Parse + SerializeToString

Both sides produce the Go gateway's JSON semantics (every field emitted);
only ours matches its bytes. Each figure is the best of N rounds, the two
sides interleaved so drift affects both.

    python scripts/bench_transcode.py [--rounds 7] [--check 4]

``--check X`` exits non-zero if any ratio falls below X (the issue's bar is 4).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from google.protobuf import json_format  # noqa: E402

from gateway.descriptors import load_bundled  # noqa: E402
from gateway.transcode import Transcoder  # noqa: E402
from support import vector_bytes  # noqa: E402

CASES = [("frames10k", "job.JobGetFramesResponse"), ("jobs2k", "job.JobGetJobsResponse")]


def best(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved(a: Callable[[], object], b: Callable[[], object], rounds: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(best(a, 1))
        tb.append(best(b, 1))
    return min(ta), min(tb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--check", type=float, default=None,
                    help="fail if a ratio is below this")
    args = ap.parse_args()

    descs = load_bundled()
    tc = Transcoder()
    rows = []
    for name, type_name in CASES:
        codec = tc.codec(descs.pool.FindMessageTypeByName(type_name))
        wire = vector_bytes(f"{name}.binpb")
        go_json = vector_bytes(f"{name}.go.json")
        go_text = go_json.decode()
        cls = codec.cls
        assert codec.to_json(wire) == go_json, "encoder no longer matches the vector"

        def enc_ours() -> bytes:
            return codec.to_json(wire)

        def enc_base() -> bytes:
            m = cls.FromString(wire)
            d = json_format.MessageToDict(m, always_print_fields_with_no_presence=True)
            return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()

        def dec_ours() -> bytes:
            return codec.from_json(go_json)

        def dec_base() -> bytes:
            return json_format.Parse(go_text, cls(), ignore_unknown_fields=True).SerializeToString()

        for fn in (enc_ours, enc_base, dec_ours, dec_base):  # warm caches and allocators
            fn()
        e_ours, e_base = interleaved(enc_ours, enc_base, args.rounds)
        d_ours, d_base = interleaved(dec_ours, dec_base, args.rounds)
        rows.append((name, len(wire), len(go_json), e_base / e_ours, d_base / d_ours))

    print(f"{'message':<10} {'wire':>10} {'json':>10} {'encode x':>9} {'decode x':>9}")
    for name, nw, nj, er, dr in rows:
        print(f"{name:<10} {nw:>10,} {nj:>10,} {er:>9.1f} {dr:>9.1f}")
    print("(ratios: json_format time / our time, best of "
          f"{args.rounds} interleaved rounds each)")
    if args.check is not None:
        worst = min(min(r[3], r[4]) for r in rows)
        if worst < args.check:
            print(f"FAIL: slowest ratio {worst:.1f} is below {args.check}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
