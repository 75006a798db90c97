"""The simulated dispatcher: what Cuebot's booking plus RQD's renders do to the farm.

Each pass (``step``) first ends the runs whose simulated time is up, then books
WAITING frames onto hosts, in one transaction. Booking follows Cuebot's rules
closely enough for clients to see the same effects:

- frames of PENDING, unpaused jobs of active shows, with no unsatisfied
  depends; higher job priority first, then older jobs, then layer and frame
  dispatch order;
- onto UP, OPEN (not locked, not NIMBY) hosts whose tags meet the layer's
  tags and that have the layer's cores, memory and GPUs idle (the facility is
  not checked: a fresh Cuebot puts jobs in ``cloud`` and hosts in
  ``local.general``, and still renders them);
- within the job's max cores, its group's max cores, the show's subscription
  to the host's allocation (its burst), and every limit on the layer.

A run lasts a random time in ``run_seconds`` divided by ``speed`` and then
SUCCEEDS, or fails at ``failure_rate``: back to WAITING while retries are
left, DEAD once ``retry_count`` reaches the job's ``max_retries`` (EATEN for
auto-eat jobs). Counters move through the Farm operations, as they would in
Cuebot through its triggers. Tests call ``step(now)`` with their own clock;
the sandbox server runs ``run()`` in the background.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from . import booking, redirect
from .farm import Farm
from .partitions import book_partition

log = logging.getLogger("gateway.sandbox.dispatcher")


@dataclass(frozen=True)
class DispatchSettings:
    speed: float = 1.0                               # simulated seconds per wall second
    run_seconds: tuple[float, float] = (5.0, 20.0)   # a render's length at speed 1
    failure_rate: float = 0.0                        # chance that a run fails
    interval: float = 0.5                            # wall seconds between passes


@dataclass
class StepResult:
    booked: list[str] = field(default_factory=list)     # frame ids started
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)     # back to WAITING, DEAD or EATEN


class Dispatcher:
    def __init__(self, farm: Farm, settings: DispatchSettings = DispatchSettings(), *,
                 rng: random.Random | None = None) -> None:
        if settings.speed <= 0:
            raise ValueError("speed must be positive")
        if not 0.0 <= settings.failure_rate <= 1.0:
            raise ValueError("failure rate must be between 0 and 1")
        self.farm = farm
        self.store = farm.store
        self.settings = settings
        self.rng = rng or random.Random()

    # -- the background loop -------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a bad pass must not stop the farm
                log.exception("dispatcher pass failed")
            await asyncio.sleep(self.settings.interval)

    def duration(self) -> float:
        lo, hi = self.settings.run_seconds
        return self.rng.uniform(lo, hi) / self.settings.speed

    # -- one pass --------------------------------------------------------------
    def step(self, now: float | None = None) -> StepResult:
        """End the runs that are due at ``now``, then book what fits."""
        t = time.time() if now is None else now
        result = StepResult()
        with self.store.tx():
            self.farm.counters.dispatch_executed += 1
            self._time_new_procs(t)
            self._complete(t, result)
            self._book(t, result)
            self._time_new_procs(t)
        return result

    def _time_new_procs(self, t: float) -> None:
        """Procs booked by someone else (the demo seed) get an end time when first seen."""
        for p in self.store.all("SELECT id FROM proc WHERE run_until = 0 AND frame_id IS NOT NULL"):
            self.store.run("UPDATE proc SET run_until = ? WHERE id = ?", (t + self.duration(),
                                                                          p["id"]))

    def _complete(self, t: float, result: StepResult) -> None:
        due = self.store.all(
            "SELECT p.frame_id, p.host_id, p.redirect_kind, p.redirect_id, f.retry_count, "
            "j.id AS job_id, j.max_retries, j.auto_eat FROM proc p JOIN frame f ON f.id = p.frame_id JOIN job j ON j.id = f.job_id "
            "WHERE p.run_until > 0 AND p.run_until <= ? ORDER BY p.run_until", (t,))
        for row in due:
            self.farm.counters.report_executed += 1
            if self.rng.random() >= self.settings.failure_rate:
                self.farm.finish_run(row["frame_id"], "SUCCEEDED", 0, stopped=int(t))
                self.farm.frame_succeeded(row["frame_id"])
                result.succeeded.append(row["frame_id"])
            else:
                if row["auto_eat"]:
                    state = "EATEN"
                elif row["retry_count"] >= row["max_retries"]:
                    state = "DEAD"
                else:
                    state = "WAITING"
                self.farm.finish_run(row["frame_id"], state, 1, stopped=int(t))
                result.failed.append(row["frame_id"])
            # a job finished by an eaten (auto-eat) failure releases its dependants too
            self.farm.check_job_done(row["job_id"])
            if row["redirect_kind"]:  # the proc was given away: its host goes to the target
                result.booked += redirect.follow(self.farm, row["host_id"],
                                                 row["redirect_kind"], row["redirect_id"], t)

    # -- booking ---------------------------------------------------------------
    def _book(self, t: float, result: StepResult) -> None:
        """Host by host, as Cuebot books: the hosts with most idle cores first."""
        s = self.store
        for local in s.all("SELECT * FROM host_local WHERE active = 1 ORDER BY seq"):
            if s.one("SELECT state FROM job WHERE id = ?", (local["job_id"],))["state"] != (
                    "PENDING"):
                if s.one("SELECT 1 FROM proc WHERE local_id = ?", (local["id"],)) is None:
                    s.run("DELETE FROM host_local WHERE id = ?", (local["id"],))
                continue
            result.booked += book_partition(self.farm, local, t)
        hosts = s.all("SELECT id FROM host WHERE state = 'UP' AND lock_state = 'OPEN' AND "
                      "idle_cores > 0 ORDER BY idle_cores DESC, name")
        if not hosts:
            return
        frames = booking.candidates(s, t=t)
        usage = booking.Usage(s, t)
        for h in hosts:
            if not frames:
                break
            result.booked += booking.book_host(self.farm, h["id"], t, frames=frames,
                                               usage=usage)
