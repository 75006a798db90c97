"""The circuit breaker: when Cuebot is down, say so at once instead of letting each request find out.

Closed, calls go through. After ``BREAKER_FAILURES`` consecutive failures
the circuit opens: every call is refused at once (503, code 14, with when
the next try is) for ``BREAKER_COOLDOWN``. Then the next call goes through
as the one probe (half-open) while the others are still refused; its
answer closes the circuit or opens it for another cooldown.

A failure is UNAVAILABLE, or DEADLINE_EXCEEDED of a call that had the whole
``GRPC_TIMEOUT``: a client's own shorter ``Grpc-Timeout`` says nothing about
Cuebot, and counting it would let any client open the circuit for everyone.
Every other answer (NOT_FOUND, INTERNAL…) is Cuebot answering, so a success
here. A call that ends without an answer (its client left) decides nothing.

Recovery does not wait for gRPC: the channel retries connecting at least
twice per cooldown (``backend.py`` caps its reconnect back-off), and a
circuit that opened while the channel was disconnected lets the probe
through as soon as the channel is connected again, without waiting out the
rest of the cooldown.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import grpc

from . import errors
from .errors import GatewayError

log = logging.getLogger("gateway.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)

Clock = Callable[[], float]


class Breaker:
    """One circuit, in front of one Cuebot channel; single-threaded (the event loop's)."""

    def __init__(self, failures: int, cooldown: float, target: str, *,
                 connected: Callable[[], bool] | None = None,
                 on_change: Callable[[str, str], None] | None = None,
                 on_refuse: Callable[[], None] | None = None,
                 clock: Clock = time.monotonic) -> None:
        """``failures`` 0 turns the breaker off; ``connected`` tells whether the channel is up."""
        self.threshold = failures
        self.cooldown = cooldown
        self.target = target
        self.state = CLOSED
        self.failures = 0            # consecutive
        self.last_failure = ""       # "UNAVAILABLE: <Cuebot's or gRPC's words>"
        self.opened_at = 0.0         # epoch seconds, for /readyz
        self._next_try = 0.0         # clock() time
        self._connected = connected
        self._was_down = False       # the channel was seen disconnected since the circuit opened
        self._on_change = on_change
        self._on_refuse = on_refuse
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    # -- before a call ----------------------------------------------------
    def admit(self) -> bool:
        """Let a call go, or raise the refusal; True means this call is the probe.

        A probe must be followed by exactly one of ``succeeded``, ``failed``
        or ``abandon``.
        """
        if self.state == CLOSED:
            return False
        now = self._clock()
        if self.state == OPEN and (now >= self._next_try or self._reconnected()):
            self._move(HALF_OPEN)
            return True
        if self._on_refuse is not None:
            self._on_refuse()
        raise self._refusal(now)

    def refusing(self) -> bool:
        """Whether a call made now would be refused without a probe (for /readyz)."""
        return self.state == HALF_OPEN or (
            self.state == OPEN and self._clock() < self._next_try and not self._reconnected())

    def _reconnected(self) -> bool:
        if self._connected is None:
            return False
        if not self._connected():
            self._was_down = True
            return False
        return self._was_down

    def _refusal(self, now: float) -> GatewayError:
        why = (f"the circuit opened after {self.failures} consecutive failures "
               f"(last: {self.last_failure})")
        if self.state == HALF_OPEN:
            return errors.unavailable(
                f"Cuebot at {self.target} is unavailable: {why}; a probe call is testing it "
                f"now, next try when it answers", 1)
        wait = max(0.0, self._next_try - now)
        return errors.unavailable(
            f"Cuebot at {self.target} is unavailable: {why}; next try in {wait:.1f} s", wait)

    # -- after a call -----------------------------------------------------
    def succeeded(self, probe: bool) -> None:
        """Cuebot answered (whatever the answer's status, other than a failure)."""
        if not self.enabled:
            return
        if probe:
            self.failures = 0
            self._move(CLOSED)
            log.warning("circuit to Cuebot at %s closed: the probe call was answered",
                        self.target)
        elif self.state == CLOSED:
            self.failures = 0

    def answered(self, code: grpc.StatusCode, probe: bool, whole_deadline: bool,
                 details: str = "") -> None:
        """Cuebot's (or gRPC's) status for a call: a failure or an answer."""
        if code == grpc.StatusCode.UNAVAILABLE or (
                code == grpc.StatusCode.DEADLINE_EXCEEDED and whole_deadline):
            self.failed(f"{code.name}: {details}" if details else code.name, probe)
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.abandon(probe)  # the client's own short deadline: no verdict on Cuebot
        else:
            self.succeeded(probe)

    def failed(self, reason: str, probe: bool) -> None:
        if not self.enabled:
            return
        self.failures += 1
        self.last_failure = reason
        if probe or (self.state == CLOSED and self.failures >= self.threshold):
            self._open()

    def abandon(self, probe: bool) -> None:
        """The probe ended without an answer (its client left, the queue refused it).

        The next call becomes the probe, at once.
        """
        if probe and self.state == HALF_OPEN:
            self._next_try = self._clock()
            self._move(OPEN)

    def _open(self) -> None:
        first = self.state == CLOSED
        self._next_try = self._clock() + self.cooldown
        self.opened_at = time.time()
        self._was_down = self._connected is not None and not self._connected()
        self._move(OPEN)
        if first:
            log.warning("circuit to Cuebot at %s open after %d consecutive failures (last: %s); "
                        "calls are refused for %g s, then one probe call goes through",
                        self.target, self.failures, self.last_failure, self.cooldown)
        else:
            log.info("circuit to Cuebot at %s stays open: the probe failed (%s); next try "
                     "in %g s", self.target, self.last_failure, self.cooldown)

    def _move(self, state: str) -> None:
        old, self.state = self.state, state
        if old != state and self._on_change is not None:
            self._on_change(old, state)

    # -- reporting ----------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        """The circuit as /readyz shows it."""
        out: dict[str, object] = {"state": self.state, "consecutiveFailures": self.failures,
                                  "threshold": self.threshold,
                                  "cooldownSeconds": self.cooldown}
        if not self.enabled:
            out["state"] = "disabled"
        elif self.state != CLOSED:
            out["lastFailure"] = self.last_failure
            out["openedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.opened_at))
            out["nextTryInSeconds"] = round(max(0.0, self._next_try - self._clock()), 3)
        return out
