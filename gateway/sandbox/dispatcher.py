"""The simulated dispatcher: what Cuebot's booking plus RQD's renders do to the farm.

Each pass (``step(t)``) is one transaction, in this order:

1. renders booked since the last pass get their length (``run_seconds``, a
   random span divided by ``speed``) and their fate: one in ``failure_rate``
   fails, and a failing render stops writing its log half way through;
2. running renders write their progress (the frame's LLU time moves);
3. timeouts, as Cuebot's host reports check them: a render running more than
   its layer's ``timeout`` minutes, or whose log has not moved for its
   ``timeout_llu`` minutes, is killed and its frame is DEAD (exit status 1,
   signal 9), retries or not;
4. renders whose time is up end: SUCCEEDED (exit 0), or failed (exit 1):
   EATEN for an auto-eat job, DEAD once ``retry_count`` reaches the job's max
   retries or after 12 hours of running, else WAITING (history kept: retry
   count, last resource). Then, as Cuebot's frame-complete handler does, the
   proc is *sticky*: the host takes the job's next frame if one fits, else
   asks for any work; a proc redirected elsewhere goes to its target;
5. render partitions book their work;
6. hosts whose report is due ask for work (:mod:`booking` has Cuebot's
   rules: facility, OS, tags, cores and threading, GPUs, limits, job and
   group caps, subscriptions, per-visit caps and the job lock). RQD reports
   every 5 to 30 seconds (``report_interval``, divided by ``speed``); a host
   seen for the first time reports at once.

Counters move through the Farm operations, as they would in Cuebot through its
triggers. Tests call ``step(t)`` with their own clock; the sandbox server runs
``run()`` in the background every ``interval`` wall seconds.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from . import booking
from .farm import Farm
from .partitions import book_partition

log = logging.getLogger("gateway.sandbox.dispatcher")

FRAME_TIME_NO_RETRY = 3600 * 12     # seconds: a longer failed run is DEAD, retries or not
TIMEOUT_EXIT = 1                    # RQD reports a killed render as exit status 1, signal 9
PROGRESS_STEP = 10                  # percent between a render's progress lines


@dataclass(frozen=True)
class DispatchSettings:
    speed: float = 1.0                                 # simulated seconds per wall second
    run_seconds: tuple[float, float] = (5.0, 20.0)     # a render's length at speed 1
    failure_rate: float = 0.0                          # chance that a run fails
    interval: float = 0.5                              # wall seconds between passes
    report_interval: tuple[float, float] = (5.0, 30.0)  # seconds between a host's reports
    scheduling_mode: str = "PRIORITY_ONLY"             # or FIFO, BALANCED (Cuebot's modes)
    job_lock_seconds: float = 20.0                     # a job booked on a host skips others
    job_frame_max: int = 8                             # frames of one job per host visit
    host_frame_max: int = 12                           # frames per host visit

    @classmethod
    def eager(cls, **kw: object) -> "DispatchSettings":
        """Every host asks for work on every pass and no job lock: booking at once."""
        kw.setdefault("report_interval", (0.0, 0.0))
        kw.setdefault("job_lock_seconds", 0.0)
        return cls(**kw)  # type: ignore[arg-type]


@dataclass
class StepResult:
    booked: list[str] = field(default_factory=list)     # frame ids started
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)     # back to WAITING, DEAD or EATEN
    timed_out: list[str] = field(default_factory=list)  # killed by a layer (LLU) timeout


class Dispatcher:
    def __init__(self, farm: Farm, settings: DispatchSettings = DispatchSettings(), *,
                 rng: random.Random | None = None) -> None:
        if settings.speed <= 0:
            raise ValueError("speed must be positive")
        if not 0.0 <= settings.failure_rate <= 1.0:
            raise ValueError("failure rate must be between 0 and 1")
        if settings.scheduling_mode not in ("PRIORITY_ONLY", "FIFO", "BALANCED"):
            raise ValueError(f"unknown scheduling mode {settings.scheduling_mode}")
        self.farm = farm
        self.store = farm.store
        self.settings = settings
        self.rng = rng or random.Random()
        self.next_report: dict[str, float] = {}   # host id -> when it next asks for work
        self.job_lock: dict[str, float] = {}      # job id -> until when other hosts skip it

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

    def _rules(self) -> booking.Rules:
        s = self.settings
        return booking.Rules(mode=s.scheduling_mode, job_frame_max=s.job_frame_max,
                             host_frame_max=s.host_frame_max,
                             job_lock_seconds=s.job_lock_seconds)

    # -- one pass --------------------------------------------------------------
    def step(self, now: float | None = None) -> StepResult:
        """One pass at ``now`` (default: the wall clock)."""
        t = time.time() if now is None else now
        result = StepResult()
        with self.store.tx():
            self.farm.counters.dispatch_executed += 1
            self._time_new_procs(t)
            self._progress(t)
            freed = self._timeouts(t, result) + self._complete(t, result)
            booker = booking.Booker(self.farm, t, self._rules(), job_lock=self.job_lock,
                                    speed=self.settings.speed)
            for host_id, job_id, kind, target in freed:
                result.booked += self._after_run(booker, host_id, job_id, kind, target)
            self._local(t, result)
            self._reports(booker, t, result)
            self._time_new_procs(t)
        return result

    def _time_new_procs(self, t: float) -> None:
        """Procs booked since the last look get an end time, a fate and a log cadence."""
        for p in self.store.all("SELECT id FROM proc WHERE run_until = 0 AND frame_id IS NOT "
                                "NULL ORDER BY rowid"):
            length = self.duration()
            fails = self.rng.random() < self.settings.failure_rate
            self.store.run("UPDATE proc SET run_until = ?, will_fail = ?, stall_at = ? "
                           "WHERE id = ?", (t + length, int(fails),
                                            t + length / 2 if fails else 0.0, p["id"]))

    def _progress(self, t: float) -> None:
        """Running renders write to their logs; a failing one goes quiet half way."""
        for p in self.store.all(
                "SELECT p.id, p.frame_id, p.dispatch_time, p.run_until, p.stall_at, p.progress "
                "FROM proc p WHERE p.frame_id IS NOT NULL AND p.run_until > 0"):
            quiet = p["stall_at"] and t >= p["stall_at"]
            upto = p["stall_at"] if quiet else t
            span = max(p["run_until"] - p["dispatch_time"], 1e-9)
            done = min(100, int(100 * (upto - p["dispatch_time"]) / span))
            step = done // PROGRESS_STEP * PROGRESS_STEP
            if self.farm.logs is not None and step > p["progress"] and step < 100:
                info = self.farm.frame_info(p["frame_id"])
                for percent in range(p["progress"] + PROGRESS_STEP, step + 1, PROGRESS_STEP):
                    self.farm.logs.progress(info, percent, p["dispatch_time"] + span * percent
                                            / 100)
            self.store.run("UPDATE proc SET progress = MAX(progress, ?) WHERE id = ?",
                           (step, p["id"]))
            self.store.run("UPDATE frame SET llu_time = ? WHERE id = ? AND llu_time < ?",
                           (int(upto), p["frame_id"], int(upto)))

    def _timeouts(self, t: float, result: StepResult) -> list[tuple[str, str, str, str]]:
        """Kill renders over their layer's timeout or LLU timeout: their frames are DEAD."""
        freed = []
        for r in self.store.all(
                "SELECT p.frame_id, p.host_id, p.redirect_kind, p.redirect_id, f.start_time, "
                "f.llu_time, f.job_id, l.timeout, l.timeout_llu FROM proc p JOIN frame f ON "
                "f.id = p.frame_id JOIN layer l ON l.id = f.layer_id WHERE p.run_until > 0 "
                "AND (l.timeout > 0 OR l.timeout_llu > 0)"):
            why = ""
            if r["timeout"] and (t - r["start_time"]) // 60 > r["timeout"]:
                why = "Frame timed out"
            elif r["timeout_llu"] and r["llu_time"] and (
                    (t - r["llu_time"]) // 60 > r["timeout_llu"] - 1):
                why = "Frame LLU timed out"
            if not why:
                continue
            self.farm.counters.report_executed += 1
            state = "EATEN" if self.store.one("SELECT auto_eat FROM job WHERE id = ?", (
                r["job_id"],))["auto_eat"] else "DEAD"
            self.farm.finish_run(r["frame_id"], state, TIMEOUT_EXIT, stopped=int(t), signal=9,
                                 kill_message=why)
            self.farm.check_job_done(r["job_id"])
            result.failed.append(r["frame_id"])
            result.timed_out.append(r["frame_id"])
            freed.append((r["host_id"], r["job_id"], r["redirect_kind"], r["redirect_id"]))
        return freed

    def _complete(self, t: float, result: StepResult) -> list[tuple[str, str, str, str]]:
        due = self.store.all(
            "SELECT p.frame_id, p.host_id, p.redirect_kind, p.redirect_id, p.will_fail, "
            "f.retry_count, f.start_time, j.id AS job_id, j.max_retries, j.auto_eat "
            "FROM proc p JOIN frame f ON f.id = p.frame_id JOIN job j ON j.id = f.job_id "
            "WHERE p.run_until > 0 AND p.run_until <= ? ORDER BY p.run_until, p.rowid", (t,))
        freed = []
        for row in due:
            self.farm.counters.report_executed += 1
            if not row["will_fail"]:
                self.farm.finish_run(row["frame_id"], "SUCCEEDED", 0, stopped=int(t))
                self.farm.frame_succeeded(row["frame_id"])
                result.succeeded.append(row["frame_id"])
            else:
                if row["auto_eat"]:
                    state = "EATEN"
                elif (row["retry_count"] >= row["max_retries"]
                      or t - row["start_time"] > FRAME_TIME_NO_RETRY):
                    state = "DEAD"
                else:
                    state = "WAITING"
                self.farm.finish_run(row["frame_id"], state, 1, stopped=int(t))
                result.failed.append(row["frame_id"])
            # a job finished by an eaten (auto-eat) failure releases its dependants too
            self.farm.check_job_done(row["job_id"])
            freed.append((row["host_id"], row["job_id"], row["redirect_kind"],
                          row["redirect_id"]))
        return freed

    def _after_run(self, booker: booking.Booker, host_id: str, job_id: str, kind: str,
                   target: str) -> list[str]:
        """A render ended on ``host_id``: the freed proc goes on (Cuebot's frame-complete)."""
        if kind:   # redirected: the host goes to the redirect's target
            if kind == "JOB":
                return booker.visit(host_id, job_ids=[target], lock=False)
            return booker.visit(host_id, folder_id=target, lock=False)
        sticky = booker.visit(host_id, job_ids=[job_id], lock=False, at_most=1)
        return sticky or booker.visit(host_id)

    def _local(self, t: float, result: StepResult) -> None:
        s = self.store
        for local in s.all("SELECT * FROM host_local WHERE active = 1 ORDER BY seq"):
            state = s.one("SELECT state FROM job WHERE id = ?", (local["job_id"],))["state"]
            if state != "PENDING":
                if s.one("SELECT 1 FROM proc WHERE local_id = ?", (local["id"],)) is None:
                    s.run("DELETE FROM host_local WHERE id = ?", (local["id"],))
                continue
            result.booked += book_partition(self.farm, local, t)

    def _reports(self, booker: booking.Booker, t: float, result: StepResult) -> None:
        """Hosts whose report is due ask for work, most idle first."""
        lo, hi = self.settings.report_interval
        for h in self.store.all("SELECT id FROM host WHERE state = 'UP' ORDER BY idle_cores "
                                "DESC, name"):
            due = self.next_report.get(h["id"])
            if due is not None and due > t:
                continue
            wait = self.rng.uniform(lo, hi) if hi > lo else lo
            self.next_report[h["id"]] = t + wait / self.settings.speed
            if booker.frames:
                result.booked += booker.visit(h["id"])
