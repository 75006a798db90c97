"""The optional micro-cache of read replies (``READ_CACHE_MS``, off by default).

Twenty CueWeb tabs polling the same ``GetJobs`` every few seconds do not
arrive at the same instant, so coalescing alone cannot merge them; a reply
kept for, say, 500 ms can. An entry is served only while it is younger than
the TTL, counted from when Cuebot's answer arrived, so a client sees data at
most that stale. Every write through this gateway empties the cache, and
``protect.py`` never stores a reply to a read that was sent before the last
write, so a client never reads its own change undone.

Entries live in arrival order, which is also expiry order (one TTL for all),
so expired ones are dropped from the front in O(1) each; the byte bound
(``READ_CACHE_MAX_BYTES``) drops the oldest first too.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

# what a key and an entry cost beyond their bytes (tuples, dict slot, floats)
ENTRY_OVERHEAD = 200


class ReadCache:
    """Reply bytes by request key, each for ``ttl`` seconds, at most ``max_bytes`` in all."""

    def __init__(self, ttl: float, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[bytes, float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, now: float) -> tuple[bytes, float] | None:
        """The reply and its age in seconds, if one younger than the TTL is kept."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        reply, arrived, _ = entry
        age = now - arrived
        if age >= self.ttl:
            self._expire(now)
            return None
        return reply, age

    def put(self, key: Hashable, reply: bytes, size: int, now: float) -> None:
        """Keep ``reply`` (``size``: its bytes plus its key's) from ``now`` on."""
        cost = size + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        self._entries[key] = (reply, now, cost)
        self.bytes += cost
        self._expire(now)
        while self.bytes > self.max_bytes:
            self._drop_oldest()

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            _, arrived, _ = next(iter(entries.values()))
            if now - arrived < self.ttl:
                return
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, (_, _, cost) = self._entries.popitem(last=False)
        self.bytes -= cost
