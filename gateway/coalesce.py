"""Coalescing: identical reads in flight at once share one Cuebot call.

Every CueWeb tab polls the same ``GetJobs``; when one is on its way to
Cuebot, an identical one waits for that call's answer instead of making its
own. Identical means the same key (``key``): the canonical method, the
request message bytes (as our own JSON decoding wrote them, so key order and
field spelling do not matter) and the forwarded metadata that could change
the answer; the request id and the caller's name are left out, since they
only label the call (Cuebot logs those of the request that made it).

A call is shared as a ``Flight``: one task making the call, and a count of
the requests waiting for it. Each waiter keeps its own deadline and its own
cancellation: one that gives up or goes away leaves the call running for
the others; when the last one leaves, the call is cancelled. The answer,
reply bytes or an error, is given to every waiter alike.

Read-your-writes: a flight carries the write generation it started in
(``protect.py`` counts writes this process has completed), and a request
joins only a flight of the current generation, so a read never gets an
answer to a call sent before a write that finished before the read began.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Hashable, Sequence

# metadata that labels a call without changing its answer
LABELS = frozenset({"x-request-id", "x-opencue-user"})

Key = tuple[str, bytes, tuple[tuple[str, str], ...]]


def key(path: str, data: bytes, metadata: Sequence[tuple[str, str]]) -> Key:
    """What makes two reads the same read."""
    extra = tuple(sorted((kv for kv in metadata if kv[0] not in LABELS), key=_name))
    return path, data, extra


def _name(kv: tuple[str, str]) -> str:
    return kv[0]


class WaitExpired(Exception):
    """A waiter's own deadline passed before the shared call answered."""

    def __init__(self, sent: bool) -> None:
        super().__init__("deadline passed")
        self.sent = sent  # whether the call had reached Cuebot by then


class Flight:
    """One call to Cuebot and the requests waiting for its answer."""

    __slots__ = ("key", "generation", "deadline", "alone", "task", "waiters", "sent", "closed")

    def __init__(self, key: Hashable, generation: int, deadline: float, alone: bool) -> None:
        self.key = key
        self.generation = generation
        self.deadline = deadline  # event-loop time: the call ends by then on its own
        self.alone = alone        # nobody may join (the circuit breaker's probe)
        self.task: asyncio.Task[Any] | None = None
        self.waiters = 0
        self.sent = False     # the call left the queue for Cuebot
        self.closed = False   # answered or abandoned: nobody may join any more


class Coalescer:
    """The flights in progress, by key."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def joinable(self, key: Hashable, generation: int) -> Flight | None:
        """A flight to wait for instead of calling, if one of this generation is on."""
        flight = self._flights.get(key)
        if flight is None or flight.generation != generation or flight.closed or flight.alone:
            return None
        return flight

    def start(self, key: Hashable, generation: int, deadline: float,
              call: Callable[[Flight], Awaitable[Any]], alone: bool = False) -> Flight:
        """A new flight making ``call(flight)``, over by ``deadline``; it replaces an older one.

        ``alone``: nobody joins it (the breaker's probe: while it tests a Cuebot
        that may be stalled, the others are refused at once, not kept waiting).
        """
        flight = Flight(key, generation, deadline, alone)

        async def run() -> Any:
            try:
                return await call(flight)
            finally:
                self._close(flight)

        flight.task = asyncio.get_running_loop().create_task(run())
        self._flights[key] = flight
        return flight

    async def wait(self, flight: Flight, deadline: float) -> Any:
        """The flight's answer (whatever ``call`` returned), or ``WaitExpired`` at ``deadline``.

        Leaving, by the deadline or by cancellation, does not cancel the call
        while another request waits for it; the last one to leave does. A
        waiter whose deadline is not before the call's own waits for the
        call to end, so that the call's own status (DEADLINE_EXCEEDED
        included: evidence for the circuit breaker) is what it gets.
        """
        task = flight.task
        assert task is not None
        flight.waiters += 1
        try:
            if deadline >= flight.deadline:
                await asyncio.shield(task)
            elif not task.done():
                await self._until(task, deadline)
                if not task.done():
                    raise WaitExpired(flight.sent)
            return task.result()
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not task.done():
                self._close(flight)
                task.cancel()

    @staticmethod
    async def _until(task: asyncio.Task[Any], deadline: float) -> None:
        """Wait for ``task`` to end, or for ``deadline``, whichever comes first."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        woken: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not woken.done():
                woken.set_result(None)

        task.add_done_callback(wake)
        timer = loop.call_later(remaining, wake)
        try:
            await woken
        finally:
            timer.cancel()
            task.remove_done_callback(wake)

    def _close(self, flight: Flight) -> None:
        flight.closed = True
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
