"""Booking: which WAITING frames a host takes, as Cuebot's dispatcher decides it.

Cuebot books host by host: when a host reports in (or a render on it ends) it
asks "what should this host run?". :class:`Booker` answers that for the hosts
of one dispatcher pass; :func:`book_host` is the one-off for a host a redirect
or a render partition frees. The rules are those of Cuebot's dispatch queries
(``DispatchQuery``, ``CoreUnitDispatcher``, ``VirtualProc``), in its default
PRIORITY_ONLY mode unless another is chosen:

- *shows*: those subscribed to the host's allocation with at least a core of
  burst left; shows further under their subscription size first;
- *jobs*: PENDING, not paused, in the host allocation's *facility*, with no
  OS or the host's OS; by priority (FIFO: then age; BALANCED: Cuebot's rank,
  which lifts a job under its minimum cores by 100, and the sandbox lifts a
  group under its minimum cores the same way), ties to the older job. A job
  is skipped while its cores plus the layer's minimum would reach its max
  cores, its group is at its max cores (so a group may overshoot by what one
  visit books), or, with the job lock, another host booked it in the last 20
  seconds;
- *frames* of a job in frame dispatch order, then layer order, from layers
  whose ``start_after`` has passed, whose minimum cores, memory, GPUs and GPU
  memory the host has idle, whose tags match the host's (Cuebot's regex: the
  layer's ``a | b`` against the host's tags, case-insensitive), threadable if
  the host's thread mode is ALL, and whose limits admit another frame there;
  a frame that no longer fits ends the job's turn, as does the job reaching
  its max cores; the show reaching its burst ends the visit;
- *cores a proc takes* (``VirtualProc``): a minimum of 0 is the whole host, a
  negative one all but that many, a fraction is booked as is; from one core
  up, thread mode ALL takes every whole idle core, a threadable layer a span
  sized by its memory against the host's memory per core (every whole idle
  core when little memory would be left), never below the minimum or above
  the layer's max cores; a layer that is not threadable never takes more than
  one core, whatever it asks for;
- *GPU hosts* with idle GPUs look at GPU work first; when there is none they
  hold a GPU, a core and 4 GB back for it and book the rest;
- per visit at most 8 frames of one job and 12 frames in all.

A *local* booking (a render partition) books inside the partition, on a host
that is not OPEN (NIMBY-locked), ignoring tags, subscriptions and the lock;
its procs take the partition's ``threads`` cores.
"""
from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .limits import LimitState

CANDIDATE_LIMIT = 5000
CORE_POINTS_RESERVED_MIN = 10      # units a host must still have to book more
MEM_RESERVED_MIN = 262144          # KB a host must still have to book more
MEM_STRANDED = 1024 * 1024 + 512 * 1024  # KB: below this much left, threadable takes it all
GB4 = 4 * 1024 * 1024              # KB held back on a GPU host for GPU work
JOB_QUERY_MAX = 20
FRAME_QUERY_MAX = 20


@dataclass
class Rules:
    """The dispatcher's knobs (Cuebot's opencue.properties defaults)."""

    mode: str = "PRIORITY_ONLY"           # or FIFO, BALANCED
    job_frame_max: int = 8                 # dispatcher.job_frame_dispatch_max
    host_frame_max: int = 12               # dispatcher.host_frame_dispatch_max
    job_lock_seconds: float = 20.0         # dispatcher.job_lock_expire_seconds (0: off)


@dataclass
class HostRoom:
    """What a host (or a render partition on it) still has to give."""

    id: str
    name: str
    alloc_id: str
    facility_id: str
    os: set[str]
    thread_mode: str
    total_cores: int
    cores: int
    memory: int
    gpus: int
    gpu_memory: int
    tags: str = ""


def host_room(store: Any, host_id: str, *, local: Any = None) -> HostRoom | None:
    """A host's idle resources, or a partition's share of them; None if it takes no work."""
    h = store.one("SELECT h.*, a.facility_id FROM host h JOIN alloc a ON a.id = h.alloc_id "
                  "WHERE h.id = ?", (host_id,))
    if h is None or h["state"] != "UP":
        return None
    os_list = {o.strip() for o in h["os"].split(",") if o.strip()}
    if local is None:
        if h["lock_state"] != "OPEN":
            return None
        tags = " ".join(r["tag"] for r in store.all(
            "SELECT tag FROM host_tag WHERE host_id = ? ORDER BY seq", (host_id,)))
        return HostRoom(h["id"], h["name"], h["alloc_id"], h["facility_id"], os_list,
                        h["thread_mode"], h["cores"], h["idle_cores"], h["idle_memory"],
                        h["idle_gpus"], h["idle_gpu_memory"], tags)
    used = store.one("SELECT COALESCE(SUM(cores), 0) AS c, COALESCE(SUM(memory), 0) AS m, "
                     "COALESCE(SUM(gpus), 0) AS g, COALESCE(SUM(gpu_memory), 0) AS gm "
                     "FROM proc WHERE local_id = ?", (local["id"],))
    return HostRoom(h["id"], h["name"], h["alloc_id"], h["facility_id"], os_list,
                    h["thread_mode"], h["cores"],
                    min(h["idle_cores"], local["max_cores"] - used["c"]),
                    min(h["idle_memory"], local["max_memory"] - used["m"]),
                    min(h["idle_gpus"], local["max_gpus"] - used["g"]),
                    min(h["idle_gpu_memory"], local["max_gpu_memory"] - used["gm"]))


def candidates(store: Any, scope: str = "", args: Sequence[Any] = (),
               t: float | None = None) -> list[Any]:
    """WAITING frames that may run at ``t`` (``scope``: an extra AND clause on f, l, j).

    A layer whose ``start_after`` is still ahead of ``t`` has none.
    """
    t = time.time() if t is None else t
    return store.all(
        "SELECT f.id, f.job_id, f.layer_id, f.dispatch_order, l.dispatch_order AS layer_order, "
        "l.min_cores, l.max_cores AS layer_max, l.threadable, l.min_memory, l.min_gpus, "
        "l.min_gpu_memory, l.tags, j.show_id, j.folder_id, j.facility_id, j.os, j.priority, "
        "j.min_cores AS job_min, j.max_cores AS job_max, j.max_gpus AS job_max_gpus, "
        "j.start_time, j.seq AS job_seq, g.max_cores AS group_max, g.min_cores AS group_min, "
        "g.max_gpus AS group_max_gpus, sh.scheduler_managed "
        "FROM frame f JOIN layer l ON l.id = f.layer_id JOIN job j ON j.id = f.job_id "
        "JOIN show sh ON sh.id = j.show_id JOIN folder g ON g.id = j.folder_id "
        "WHERE f.state = 'WAITING' AND f.depend_count = 0 AND j.state = 'PENDING' "
        f"AND j.is_paused = 0 AND l.start_after <= ? {scope} "
        "ORDER BY f.dispatch_order, l.dispatch_order, f.number "
        f"LIMIT {CANDIDATE_LIMIT}", (t, *args))


def proc_cores(room: HostRoom, f: Any) -> int | None:
    """Core units a frame's proc takes on this host (Cuebot's VirtualProc.build); None: none."""
    cores = f["min_cores"]
    whole = room.cores // 100
    if cores == 0:
        cores = room.total_cores
    elif cores < 0:
        cores = room.total_cores + cores
    elif cores >= 100:
        asked = cores
        if whole == 0:
            return None   # only a fraction of a core left
        if room.thread_mode == "ALL":
            cores = whole * 100
        elif f["threadable"]:
            if room.memory - f["min_memory"] <= MEM_STRANDED:
                cores = whole * 100
            else:
                cores = core_span(room, f["min_memory"], f["layer_max"])
            if room.thread_mode == "VARIABLE" and cores <= 200:
                cores = 200
                if cores > room.cores:
                    return None   # a threadable frame never runs on one core there
        cores = max(cores, 100, asked)
        if f["layer_max"] > 0 and cores > f["layer_max"]:
            cores = f["layer_max"]
        if cores > room.cores:
            cores = whole * 100
    if not f["threadable"] and cores > 100:
        cores = 100      # "don't thread non-threadable layers"
    return cores


def core_span(room: HostRoom, min_memory: int, max_cores: int) -> int:
    """Cores for a threadable frame: its memory over the host's idle memory per core."""
    total = room.total_cores // 100
    if room.cores // 100 < 1 or total < 1:
        return 100
    per_core = room.memory / total
    cores = int(min_memory / per_core + 0.5) * 100 if per_core > 0 else 100
    if max_cores > 0 and cores > max_cores:
        cores = max_cores
    return cores


_TAG_PATTERNS: dict[str, "re.Pattern[str] | None"] = {}


def tags_match(layer_tags: str, host_tags: str) -> bool:
    """Cuebot's ``host.str_tags ~* ('(?x)' || layer.str_tags || '\\y')``."""
    pattern = _TAG_PATTERNS.get(layer_tags, False)
    if pattern is False:
        try:
            pattern = re.compile("(?ix)" + layer_tags + r"\b")
        except re.error:
            pattern = None
        _TAG_PATTERNS[layer_tags] = pattern
    return pattern is not None and pattern.search(host_tags) is not None


@dataclass
class Usage:
    """What is booked now, per job, group, subscription and limit; kept current in a pass."""

    store: Any
    t: float
    job: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    job_gpus: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    folder: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    folder_gpus: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sub: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    subs: dict[tuple[str, str], Any] = field(default_factory=dict)
    layer_limits: dict[str, tuple[str, ...]] = field(default_factory=lambda: defaultdict(tuple))

    def __post_init__(self) -> None:
        s = self.store
        for p in s.all("SELECT p.cores, p.gpus, p.job_id, p.show_id, h.alloc_id, j.folder_id "
                       "FROM proc p JOIN host h ON h.id = p.host_id JOIN job j ON "
                       "j.id = p.job_id"):
            self.job[p["job_id"]] += p["cores"]
            self.job_gpus[p["job_id"]] += p["gpus"]
            self.folder[p["folder_id"]] += p["cores"]
            self.folder_gpus[p["folder_id"]] += p["gpus"]
            self.sub[(p["show_id"], p["alloc_id"])] += p["cores"]
        self.subs = {(r["show_id"], r["alloc_id"]): r
                     for r in s.all("SELECT show_id, alloc_id, size, burst FROM subscription")}
        for r in s.all("SELECT layer_id, limit_id FROM layer_limit"):
            self.layer_limits[r["layer_id"]] += (r["limit_id"],)
        self.limits = LimitState(s, self.t)

    def add(self, f: Any, room: HostRoom, cores: int, gpus: int) -> None:
        self.job[f["job_id"]] += cores
        self.job_gpus[f["job_id"]] += gpus
        self.folder[f["folder_id"]] += cores
        self.folder_gpus[f["folder_id"]] += gpus
        self.sub[(f["show_id"], room.alloc_id)] += cores
        for x in self.layer_limits.get(f["layer_id"], ()):
            self.limits.add(x, room.name, self.t)

    def show_has_room(self, show_id: str, alloc_id: str) -> bool:
        """FIND_SHOWS: a subscription with a core of burst left and usage under it."""
        sub = self.subs.get((show_id, alloc_id))
        if sub is None:
            return False
        used = self.sub[(show_id, alloc_id)]
        return sub["burst"] > 0 and sub["burst"] - used >= 100 and used < sub["burst"]

    def over_burst(self, show_id: str, alloc_id: str) -> bool:
        sub = self.subs.get((show_id, alloc_id))
        return sub is None or self.sub[(show_id, alloc_id)] >= sub["burst"]

    def tier(self, show_id: str, alloc_id: str) -> float:
        sub = self.subs[(show_id, alloc_id)]
        used = self.sub[(show_id, alloc_id)]
        return used / sub["size"] if sub["size"] > 0 else float(used > 0)


class Booker:
    """The host visits of one dispatcher pass, sharing what they have booked."""

    def __init__(self, farm: Any, t: float, rules: Rules | None = None, *,
                 job_lock: dict[str, float] | None = None, speed: float = 1.0,
                 frames: list[Any] | None = None) -> None:
        self.farm = farm
        self.store = farm.store
        self.t = t
        self.rules = rules or Rules()
        self.job_lock = job_lock if job_lock is not None else {}
        self.speed = speed
        self.frames = frames if frames is not None else candidates(self.store, t=t)
        self.usage = Usage(self.store, t)

    # -- what may run here ---------------------------------------------------------
    def _qualifies(self, f: Any, room: HostRoom, gpu_work: bool) -> bool:
        if f["facility_id"] != room.facility_id or f["scheduler_managed"]:
            return False
        if f["os"] and f["os"] not in room.os:
            return False
        if gpu_work != (f["min_gpus"] >= 1):
            return False
        if (f["min_cores"] > room.cores or f["min_memory"] > room.memory
                or f["min_gpus"] > room.gpus or f["min_gpu_memory"] > room.gpu_memory):
            return False
        if room.thread_mode == "ALL" and not f["threadable"]:
            return False
        if not tags_match(f["tags"], room.tags):
            return False
        return self.usage.show_has_room(f["show_id"], room.alloc_id)

    def _job_open(self, f: Any) -> bool:
        """The job query's caps, checked when a job's turn starts."""
        u = self.usage
        balanced = self.rules.mode == "BALANCED"
        cores = u.job[f["job_id"]] + f["min_cores"]
        if not (cores <= f["job_max"] if balanced else cores < f["job_max"]):
            return False
        if not u.job_gpus[f["job_id"]] + f["min_gpus"] < f["job_max_gpus"]:
            return False
        group = u.folder[f["folder_id"]] + (f["min_cores"] if balanced else 0)
        if f["group_max"] != -1 and not group < f["group_max"]:
            return False
        return f["group_max_gpus"] == -1 or u.folder_gpus[f["folder_id"]] < f["group_max_gpus"]

    def _rank(self, f: Any, room: HostRoom) -> tuple[Any, ...]:
        mode = self.rules.mode
        tier = self.usage.tier(f["show_id"], room.alloc_id)
        if mode == "BALANCED":
            boost = 0
            if f["job_min"] > 0 and self.usage.job[f["job_id"]] <= f["job_min"]:
                boost += 100 * (1 - self.usage.job[f["job_id"]] // f["job_min"])
            if f["group_min"] > 0 and self.usage.folder[f["folder_id"]] < f["group_min"]:
                boost += 100
            age = int(self.t - f["start_time"]) // 86400
            return (tier, -(f["priority"] + boost + age), f["start_time"], f["job_seq"])
        return (tier, -f["priority"], f["start_time"], f["job_seq"])

    def _locked(self, job_id: str) -> bool:
        if self.rules.job_lock_seconds <= 0:
            return False
        until = self.job_lock.get(job_id, 0.0)
        if until > self.t:
            return True
        self.job_lock[job_id] = self.t + self.rules.job_lock_seconds / self.speed
        return False

    # -- visits --------------------------------------------------------------------------
    def visit(self, host_id: str, *, job_ids: Iterable[str] | None = None,
              folder_id: str | None = None, lock: bool = True,
              at_most: int | None = None) -> list[str]:
        """The host asks for work (all of it, or of some jobs, or a group); frames started."""
        room = host_room(self.store, host_id)
        if room is None or room.cores < CORE_POINTS_RESERVED_MIN:
            return []
        self.farm.counters.booking_executed += 1
        wanted = set(job_ids) if job_ids is not None else None
        held_back = None
        booked: list[str] = []
        if room.gpus > 0:
            booked = self._book_jobs(room, wanted, folder_id, lock, at_most, gpu_work=True)
            if not booked:    # no GPU work: keep a GPU (and a core, 4 GB) free for it
                held_back = (min(100, room.cores), min(GB4, room.memory),
                             min(1, room.gpus), min(GB4, room.gpu_memory))
                room.cores -= held_back[0]
                room.memory -= held_back[1]
                room.gpus -= held_back[2]
                room.gpu_memory -= held_back[3]
        if not booked:
            booked = self._book_jobs(room, wanted, folder_id, lock, at_most, gpu_work=False)
        self.farm.counters.booked_procs += len(booked)
        if booked:
            taken = set(booked)
            self.frames[:] = [f for f in self.frames if f["id"] not in taken]
        return booked

    def _book_jobs(self, room: HostRoom, wanted: set[str] | None, folder_id: str | None,
                   lock: bool, at_most: int | None, *, gpu_work: bool) -> list[str]:
        by_job: dict[str, list[Any]] = {}
        for f in self.frames:
            if wanted is not None and f["job_id"] not in wanted:
                continue
            if folder_id is not None and f["folder_id"] != folder_id:
                continue
            if self._qualifies(f, room, gpu_work):
                by_job.setdefault(f["job_id"], []).append(f)
        jobs = sorted(by_job.values(), key=lambda fs: self._rank(fs[0], room))
        booked: list[str] = []
        limit = min(at_most or self.rules.host_frame_max, self.rules.host_frame_max)
        for frames in jobs[:JOB_QUERY_MAX]:
            if len(booked) >= limit:
                break
            if not self._job_open(frames[0]):
                continue
            if lock and self._locked(frames[0]["job_id"]):
                continue
            n, stop = self._book_job(room, frames, booked, limit)
            if stop:
                break
        return booked

    def _book_job(self, room: HostRoom, frames: list[Any], booked: list[str],
                  limit: int) -> tuple[int, bool]:
        """One job's turn on the host; (frames booked, whether the visit is over)."""
        u = self.usage
        n = 0
        for f in frames[:FRAME_QUERY_MAX]:
            cores = proc_cores(room, f)
            if cores is None:
                return n, True
            if f["min_cores"] <= 0 and room.cores < room.total_cores:
                break        # "all cores" needs a host with nothing else on it
            need = max(f["min_cores"], cores) if f["min_cores"] > 0 else cores
            if (room.cores < need or room.memory < f["min_memory"]
                    or room.gpus < f["min_gpus"] or room.gpu_memory < f["min_gpu_memory"]):
                break
            if u.job[f["job_id"]] + cores > f["job_max"]:
                break
            if u.over_burst(f["show_id"], room.alloc_id):
                return n, True
            if not all(u.limits.admits(x, room.name) for x in u.layer_limits.get(f["layer_id"],
                                                                                 ())):
                continue
            self.farm.book(f["id"], room.id, cores=cores, memory=f["min_memory"],
                           gpus=f["min_gpus"], started=int(self.t))
            room.cores -= cores
            room.memory -= f["min_memory"]
            room.gpus -= f["min_gpus"]
            room.gpu_memory -= f["min_gpu_memory"]
            u.add(f, room, cores, f["min_gpus"])
            booked.append(f["id"])
            n += 1
            if room.cores < CORE_POINTS_RESERVED_MIN or room.memory < MEM_RESERVED_MIN:
                return n, True
            if n >= self.rules.job_frame_max or len(booked) >= limit:
                break
        return n, False

    def local(self, local: Any, scope: str, args: Sequence[Any]) -> list[str]:
        """Book frames of a render partition's work into it (``threads`` cores each)."""
        room = host_room(self.store, local["host_id"], local=local)
        if room is None:
            return []
        booked: list[str] = []
        for f in candidates(self.store, scope, args, self.t):
            whole = room.cores // 100
            if whole == 0 or room.memory < f["min_memory"] or room.gpus < f["min_gpus"]:
                break
            cores = min(local["threads"] * 100, whole * 100) if local["threads"] > 0 else 100
            proc_id = self.farm.book(f["id"], room.id, cores=cores, memory=f["min_memory"],
                                     gpus=f["min_gpus"], started=int(self.t))
            self.store.run("UPDATE proc SET local_id = ? WHERE id = ?", (local["id"], proc_id))
            room.cores -= cores
            room.memory -= f["min_memory"]
            room.gpus -= f["min_gpus"]
            booked.append(f["id"])
        self.farm.counters.booked_procs += len(booked)
        return booked


def book_host(farm: Any, host_id: str, t: float, *, job_ids: Iterable[str] | None = None,
              folder_id: str | None = None) -> list[str]:
    """One visit outside a pass (a redirect's freed host): no job lock, as Cuebot's."""
    return Booker(farm, t).visit(host_id, job_ids=job_ids, folder_id=folder_id, lock=False)
