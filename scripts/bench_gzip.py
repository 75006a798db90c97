#!/usr/bin/env python3
"""gzip levels on the 10,000-frame GetFrames reply (6.4 MB of JSON), in one run.

Prints, for each zlib level, the best-of-N compression time, the output size
and the time as a multiple of level 1's, next to the time the gateway takes
to encode that reply to JSON; ``gateway/compression.py`` uses the level this
table argued for (1). Ratios, not absolute times, are what carry over
between machines.

    python scripts/bench_gzip.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from gateway.descriptors import load_bundled  # noqa: E402
from gateway.transcode import Transcoder  # noqa: E402
from support import vector_bytes  # noqa: E402


def best(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    rounds = ap.parse_args().rounds
    wire = vector_bytes("frames10k.binpb")
    descs = load_bundled()
    codec = Transcoder().codec(descs.pool.FindMessageTypeByName("job.JobGetFramesResponse"))
    data = codec.to_json(wire)
    encode = best(lambda: codec.to_json(wire), rounds)
    print(f"reply: {len(data):,} bytes of JSON; times are ratios measured in this run")
    print("level      bytes      size  x level 1  x encoding")
    base = None
    for level in (1, 2, 3, 4, 5, 6, 9):
        def run() -> bytes:
            c = zlib.compressobj(level, zlib.DEFLATED, 31)
            return c.compress(data) + c.flush()

        t = best(run, rounds)
        base = base or t
        out = run()
        print(f"{level:>5} {len(out):>10,} {100 * len(out) / len(data):>8.1f}% "
              f"{t / base:>10.1f} {t / encode:>11.2f}")


if __name__ == "__main__":
    main()
