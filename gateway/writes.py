"""How many writes this gateway has completed: the line read-your-writes draws.

A read may share a call (``coalesce.py``) or take a cached reply
(``readcache.py``) only if no write completed since that call was sent: the
count of completed writes must not have moved. One process keeps the count
in memory. The workers of one ``--workers`` supervisor share it, so that a
client whose write went to one worker and whose next read goes to another
(a new connection may land on any of them) still reads its own write: the
supervisor makes an 8-byte file and names it in ``OPENCUE_GATEWAY_WRITES``,
and every worker maps it. A write takes a file lock to count; a read only
looks at the mapped bytes. Replicas on other hosts share nothing: there,
read-your-writes holds for a client that stays on one replica.
"""
from __future__ import annotations

import fcntl
import mmap
import os

ENV = "OPENCUE_GATEWAY_WRITES"   # set by the workers' supervisor, not a setting
SIZE = 8


def create(path: str) -> None:
    """The shared counter's file, at zero (the supervisor's part)."""
    with open(path, "wb") as f:
        f.write(bytes(SIZE))


class Writes:
    """The count of completed writes, this process's or shared through ``path``."""

    def __init__(self, path: str | None = None) -> None:
        self._count = 0
        self._fd = -1
        self._map: mmap.mmap | None = None
        if path:
            self._fd = os.open(path, os.O_RDWR)
            self._map = mmap.mmap(self._fd, SIZE)

    @classmethod
    def for_process(cls) -> "Writes":
        return cls(os.environ.get(ENV) or None)

    @property
    def shared(self) -> bool:
        return self._map is not None

    def count(self) -> int:
        m = self._map
        return self._count if m is None else int.from_bytes(m[:SIZE], "little")

    def wrote(self) -> None:
        """One more write completed."""
        m = self._map
        if m is None:
            self._count += 1
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            m[:SIZE] = (int.from_bytes(m[:SIZE], "little") + 1).to_bytes(SIZE, "little")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            os.close(self._fd)
            self._map, self._fd = None, -1
