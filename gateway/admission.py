"""The cap on what reaches Cuebot: ``BACKEND_MAX_IN_FLIGHT`` calls at once, a bounded queue behind.

Without it, a burst of slow calls piles up inside grpc (and in Cuebot's
thread pool and database) with no limit. Here a call beyond the cap waits
its turn, first come first served, in a queue of at most
``BACKEND_MAX_QUEUE``; when the queue is full, or the call's deadline passes
before a slot frees, it is refused with 503 (code 14) and ``Retry-After``,
and Cuebot never sees it. A slot is handed from the call that frees it
straight to the oldest waiter, so a newcomer cannot overtake the queue.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from . import errors

# how long a refused client should wait: a slot frees as soon as any call ends
RETRY_AFTER = 1.0

Report = Callable[[int, int], None]       # (calls in flight, calls queued)
Refused = Callable[[str], None]           # reason: "full" or "deadline"


class Admission:
    """Slots for calls to Cuebot; one per call, from ``acquire`` to ``release``."""

    def __init__(self, limit: int, queue: int, *, report: Report | None = None,
                 refused: Refused | None = None) -> None:
        self.limit = limit
        self.queue = queue
        self.in_flight = 0
        self._waiting: deque[asyncio.Future[bool]] = deque()
        self.report = report  # told of every change, if set
        self._refused = refused

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def take(self) -> bool:
        """Take a free slot if there is one now, without waiting (then ``acquire``)."""
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            self._changed()
            return True
        return False

    async def acquire(self, deadline: float) -> None:
        """Take a slot, waiting in line until ``deadline`` (event-loop time) at most."""
        if self.take():
            return
        if len(self._waiting) >= self.queue:
            raise self._refusal("full")
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise self._refusal("deadline")
        turn: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(turn)
        self._changed()
        timer = loop.call_later(remaining, self._expire, turn)
        try:
            granted = await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result():
                self.release()  # handed a slot as the caller left: pass it on
            else:
                self._forget(turn)
            raise
        finally:
            timer.cancel()
        if not granted:
            raise self._refusal("deadline")

    def release(self) -> None:
        """Free a slot: the oldest waiter gets it, else it is free."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(True)  # in_flight unchanged: the slot changes hands
                self._changed()
                return
        self.in_flight -= 1
        self._changed()

    def _expire(self, turn: asyncio.Future[bool]) -> None:
        if not turn.done():
            turn.set_result(False)
            self._forget(turn)

    def _forget(self, turn: asyncio.Future[bool]) -> None:
        try:
            self._waiting.remove(turn)
        except ValueError:
            pass
        self._changed()

    def expired(self) -> errors.GatewayError:
        """The refusal of a call whose deadline passed in the queue."""
        return self._refusal("deadline")

    def _refusal(self, reason: str) -> errors.GatewayError:
        if self._refused is not None:
            self._refused(reason)
        busy = f"Cuebot is busy: {self.in_flight} calls in flight (BACKEND_MAX_IN_FLIGHT)"
        if reason == "full":
            return errors.unavailable(
                f"{busy} and the queue is full ({self.queue}, BACKEND_MAX_QUEUE)", RETRY_AFTER)
        return errors.unavailable(
            f"{busy}; this request's deadline passed while it waited in the queue", RETRY_AFTER)

    def _changed(self) -> None:
        if self.report is not None:
            self.report(self.in_flight, len(self._waiting))
