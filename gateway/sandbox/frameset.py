"""Cuebot's frame-range syntax: ``1-10``, ``1-100x5``, ``1-10y3``, ``1-20:4``, ``3,7,9-12``.

``A-BxS`` steps by S; ``A-ByS`` is the inverse (the frames ``xS`` skips);
``A-B:S`` interleaves (every S-th frame, then the ones between at S/2, … down
to 1, each frame once). Duplicates are dropped, first occurrence kept.
"""
from __future__ import annotations

import re

_PART = re.compile(r"\s*(-?\d+)(?:-(-?\d+)(?:([xy:])(-?\d+))?)?\s*\Z")
MAX_FRAMES = 100_000


class FrameSetError(ValueError):
    pass


def _span(a: int, b: int, step: int) -> range:
    return range(a, b + 1, step) if a <= b else range(a, b - 1, -step)


def parse(text: str) -> list[int]:
    """The frame numbers of ``text``, in order, without duplicates."""
    out: list[int] = []
    seen: set[int] = set()

    def add(n: int) -> None:
        if n not in seen:
            seen.add(n)
            out.append(n)
            if len(out) > MAX_FRAMES:
                raise FrameSetError(f"frame range {text!r} has more than {MAX_FRAMES} frames")

    if not text or not text.strip():
        raise FrameSetError(f"unrecognized frame range syntax {text}")
    for part in text.split(","):
        m = _PART.match(part)
        if not m:  # Cuebot's FrameRange words it so (an IllegalArgumentException)
            raise FrameSetError(f"unrecognized frame range syntax {part}")
        a = int(m.group(1))
        if m.group(2) is None:
            add(a)
            continue
        b, op, step = int(m.group(2)), m.group(3), int(m.group(4) or 1)
        if step <= 0:
            raise FrameSetError("step cannot be zero" if step == 0 else
                                f"unrecognized frame range syntax {part}")
        if op in (None, "x"):
            for n in _span(a, b, step):
                add(n)
        elif op == "y":
            skipped = set(_span(a, b, step))
            for n in _span(a, b, 1):
                if n not in skipped:
                    add(n)
        else:  # ':' interleave
            s = step
            while s >= 1:
                for n in _span(a, b, s):
                    add(n)
                s //= 2
    return out


def chunk_starts(frames: list[int], chunk: int) -> list[int]:
    """One frame per chunk of ``chunk`` consecutive entries: its first number."""
    if chunk < 1:
        raise FrameSetError(f"chunk size must be at least 1, got {chunk}")
    return frames[::chunk]
