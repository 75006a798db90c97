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
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .farm import Farm
from .messages import split_tags

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
            self._time_new_procs(t)
            self._complete(t, result)
            self._book(t, result)
        return result

    def _time_new_procs(self, t: float) -> None:
        """Procs booked by someone else (the demo seed) get an end time when first seen."""
        for p in self.store.all("SELECT id FROM proc WHERE run_until = 0 AND frame_id IS NOT NULL"):
            self.store.run("UPDATE proc SET run_until = ? WHERE id = ?", (t + self.duration(),
                                                                          p["id"]))

    def _complete(self, t: float, result: StepResult) -> None:
        due = self.store.all(
            "SELECT p.frame_id, f.retry_count, j.id AS job_id, j.max_retries, j.auto_eat "
            "FROM proc p JOIN frame f ON f.id = p.frame_id JOIN job j ON j.id = f.job_id "
            "WHERE p.run_until > 0 AND p.run_until <= ? ORDER BY p.run_until", (t,))
        for row in due:
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

    # -- booking ---------------------------------------------------------------
    def _book(self, t: float, result: StepResult) -> None:
        s = self.store
        hosts = [dict(h) for h in s.all(
            "SELECT h.id, h.idle_cores, h.idle_memory, h.idle_gpus, h.alloc_id "
            "FROM host h WHERE h.state = 'UP' AND "
            "h.lock_state = 'OPEN' AND h.idle_cores > 0 ORDER BY h.idle_cores DESC, h.name")]
        if not hosts:
            return
        frames = s.all(
            "SELECT f.id, f.job_id, f.layer_id, l.min_cores, l.min_memory, l.min_gpus, l.tags, "
            "j.show_id, j.folder_id, j.max_cores AS job_max, "
            "g.max_cores AS group_max "
            "FROM frame f JOIN layer l ON l.id = f.layer_id JOIN job j ON j.id = f.job_id "
            "JOIN show sh ON sh.id = j.show_id JOIN folder g ON g.id = j.folder_id "
            "WHERE f.state = 'WAITING' AND f.depend_count = 0 AND j.state = 'PENDING' "
            "AND j.is_paused = 0 AND sh.active = 1 AND sh.booking_enabled = 1 "
            "AND sh.dispatch_enabled = 1 "
            "ORDER BY j.priority DESC, j.start_time, j.seq, l.dispatch_order, f.dispatch_order "
            "LIMIT 2000")
        if not frames:
            return
        usage = _Usage(s)
        tags: dict[str, set[str]] = defaultdict(set)
        for row in s.all("SELECT host_id, tag FROM host_tag"):
            tags[row["host_id"]].add(row["tag"])
        for f in frames:
            cores = max(f["min_cores"], 100) if f["min_cores"] >= 0 else 100
            wanted = set(split_tags(f["tags"]))
            limits = usage.layer_limits.get(f["layer_id"], ())
            if any(usage.limit_used[x] >= usage.limit_max[x] for x in limits):
                continue
            if f["job_max"] >= 0 and usage.job[f["job_id"]] + cores > f["job_max"]:
                continue
            if f["group_max"] >= 0 and usage.folder[f["folder_id"]] + cores > f["group_max"]:
                continue
            for h in hosts:
                if (h["idle_cores"] < cores
                        or h["idle_memory"] < f["min_memory"] or h["idle_gpus"] < f["min_gpus"]
                        or (wanted and not wanted & tags[h["id"]])):
                    continue
                burst = usage.burst.get((f["show_id"], h["alloc_id"]))
                if burst is None or usage.sub[(f["show_id"], h["alloc_id"])] + cores > burst:
                    continue
                self.farm.book(f["id"], h["id"], cores=cores, memory=f["min_memory"],
                               gpus=f["min_gpus"], started=int(t),
                               run_until=t + self.duration())
                h["idle_cores"] -= cores
                h["idle_memory"] -= f["min_memory"]
                h["idle_gpus"] -= f["min_gpus"]
                usage.add(f, h["alloc_id"], cores, limits)
                result.booked.append(f["id"])
                break


class _Usage:
    """What is running now, per job, group, subscription and limit, kept up to date in a pass."""

    def __init__(self, s: Any) -> None:
        self.job: dict[str, int] = defaultdict(int)
        self.folder: dict[str, int] = defaultdict(int)
        self.sub: dict[tuple[str, str], int] = defaultdict(int)
        self.limit_used: dict[str, int] = defaultdict(int)
        for p in s.all("SELECT p.cores, p.job_id, p.show_id, h.alloc_id, j.folder_id FROM proc p "
                       "JOIN host h ON h.id = p.host_id JOIN job j ON j.id = p.job_id"):
            self.job[p["job_id"]] += p["cores"]
            self.folder[p["folder_id"]] += p["cores"]
            self.sub[(p["show_id"], p["alloc_id"])] += p["cores"]
        self.burst = {(r["show_id"], r["alloc_id"]): r["burst"]
                      for r in s.all("SELECT show_id, alloc_id, burst FROM subscription")}
        self.limit_max = {r["id"]: r["max_value"] for r in s.all("SELECT * FROM limit_record")}
        self.layer_limits: dict[str, tuple[str, ...]] = defaultdict(tuple)
        for r in s.all("SELECT layer_id, limit_id FROM layer_limit"):
            self.layer_limits[r["layer_id"]] += (r["limit_id"],)
        for r in s.all("SELECT ll.limit_id, COUNT(*) AS n FROM proc p JOIN layer_limit ll "
                       "ON ll.layer_id = p.layer_id GROUP BY ll.limit_id"):
            self.limit_used[r["limit_id"]] = r["n"]

    def add(self, f: Any, alloc_id: str, cores: int, limits: tuple[str, ...]) -> None:
        self.job[f["job_id"]] += cores
        self.folder[f["folder_id"]] += cores
        self.sub[(f["show_id"], alloc_id)] += cores
        for x in limits:
            self.limit_used[x] += 1
