"""Booking: which WAITING frames a host takes, as Cuebot's dispatcher decides it.

Cuebot books host by host: when a host reports in (or a frame on it ends)
it asks "what should this host run?". :func:`book_host` answers that for one
host and books the frames; the dispatcher calls it for every host on each
pass, a redirect calls it for the host it freed, a render partition for the
workstation lent to a job.

A frame qualifies when its job is PENDING and not paused, it has no
unsatisfied depends, and the caller's ``scope`` (a job, a group, a layer, a
frame) admits it. It fits a host when the host has the layer's cores,
memory and GPUs idle and its tags meet the layer's tags, and it keeps the
job within its max cores, the job's group within the group's max cores, the
show within its subscription's burst on the host's allocation, and every
limit on the layer under its max. Higher job priority books first, then
older jobs, then layer and frame dispatch order.

A *local* booking (a render partition) books inside the partition's own
cores and memory, on a host that is not OPEN (NIMBY-locked), ignoring tags,
subscriptions and the host's lock.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from .limits import LimitState
from .messages import split_tags

CANDIDATE_LIMIT = 2000


@dataclass
class HostRoom:
    """What a host (or a render partition on it) still has to give."""

    id: str
    name: str
    alloc_id: str
    cores: int
    memory: int
    gpus: int
    gpu_memory: int
    tags: set[str] = field(default_factory=set)


class Usage:
    """What is running now, per job, group, subscription and limit, kept up to date in a pass."""

    def __init__(self, s: Any, t: float | None = None) -> None:
        self.job: dict[str, int] = defaultdict(int)
        self.folder: dict[str, int] = defaultdict(int)
        self.sub: dict[tuple[str, str], int] = defaultdict(int)
        self.limits = LimitState(s, t)
        for p in s.all("SELECT p.cores, p.job_id, p.show_id, h.alloc_id, j.folder_id FROM proc p "
                       "JOIN host h ON h.id = p.host_id JOIN job j ON j.id = p.job_id"):
            self.job[p["job_id"]] += p["cores"]
            self.folder[p["folder_id"]] += p["cores"]
            self.sub[(p["show_id"], p["alloc_id"])] += p["cores"]
        self.burst = {(r["show_id"], r["alloc_id"]): r["burst"]
                      for r in s.all("SELECT show_id, alloc_id, burst FROM subscription")}
        self.layer_limits: dict[str, tuple[str, ...]] = defaultdict(tuple)
        for r in s.all("SELECT layer_id, limit_id FROM layer_limit"):
            self.layer_limits[r["layer_id"]] += (r["limit_id"],)

    def add(self, f: Any, room: HostRoom, cores: int, t: float) -> None:
        self.job[f["job_id"]] += cores
        self.folder[f["folder_id"]] += cores
        self.sub[(f["show_id"], room.alloc_id)] += cores
        for x in self.layer_limits.get(f["layer_id"], ()):
            self.limits.add(x, room.name, t)


def candidates(store: Any, scope: str = "", args: Sequence[Any] = (),
               t: float | None = None) -> list[Any]:
    """WAITING frames that may run at ``t``, in booking order (``scope``: an extra AND clause).

    A layer whose ``start_after`` is still ahead of ``t`` has none.
    """
    t = time.time() if t is None else t
    return store.all(
        "SELECT f.id, f.job_id, f.layer_id, l.min_cores, l.min_memory, l.min_gpus, "
        "l.min_gpu_memory, l.tags, j.show_id, j.folder_id, j.max_cores AS job_max, "
        "g.max_cores AS group_max "
        "FROM frame f JOIN layer l ON l.id = f.layer_id JOIN job j ON j.id = f.job_id "
        "JOIN show sh ON sh.id = j.show_id JOIN folder g ON g.id = j.folder_id "
        "WHERE f.state = 'WAITING' AND f.depend_count = 0 AND j.state = 'PENDING' "
        "AND j.is_paused = 0 AND sh.active = 1 AND sh.booking_enabled = 1 "
        "AND sh.dispatch_enabled = 1 AND l.start_after <= ? "
        f"{scope} "
        "ORDER BY j.priority DESC, j.start_time, j.seq, l.dispatch_order, f.dispatch_order "
        f"LIMIT {CANDIDATE_LIMIT}", (t, *args))


def host_room(store: Any, host_id: str, *, local: Any = None) -> HostRoom | None:
    """A host's idle resources, or a partition's share of them; None if it takes no work."""
    h = store.one("SELECT * FROM host WHERE id = ?", (host_id,))
    if h is None or h["state"] != "UP":
        return None
    if local is None:
        if h["lock_state"] != "OPEN":
            return None
        tags = {r["tag"] for r in store.all("SELECT tag FROM host_tag WHERE host_id = ?",
                                            (host_id,))}
        return HostRoom(h["id"], h["name"], h["alloc_id"], h["idle_cores"], h["idle_memory"],
                        h["idle_gpus"], h["idle_gpu_memory"], tags)
    used = store.one("SELECT COALESCE(SUM(cores), 0) AS c, COALESCE(SUM(memory), 0) AS m, "
                     "COALESCE(SUM(gpus), 0) AS g, COALESCE(SUM(gpu_memory), 0) AS gm "
                     "FROM proc WHERE local_id = ?", (local["id"],))
    return HostRoom(h["id"], h["name"], h["alloc_id"],
                    min(h["idle_cores"], local["max_cores"] - used["c"]),
                    min(h["idle_memory"], local["max_memory"] - used["m"]),
                    min(h["idle_gpus"], local["max_gpus"] - used["g"]),
                    min(h["idle_gpu_memory"], local["max_gpu_memory"] - used["gm"]))


def proc_cores(frame: Any) -> int:
    """Core units a frame's proc reserves (at least one core)."""
    return max(frame["min_cores"], 100) if frame["min_cores"] >= 0 else 100


def fits(room: HostRoom, f: Any, usage: Usage, cores: int, *, local: bool) -> bool:
    if (room.cores < cores or room.memory < f["min_memory"] or room.gpus < f["min_gpus"]
            or room.gpu_memory < f["min_gpu_memory"]):
        return False
    limits = usage.layer_limits.get(f["layer_id"], ())
    if not all(usage.limits.admits(x, room.name) for x in limits):
        return False
    if f["job_max"] >= 0 and usage.job[f["job_id"]] + cores > f["job_max"]:
        return False
    if local:
        return True
    wanted = set(split_tags(f["tags"]))
    if wanted and not wanted & room.tags:
        return False
    if f["group_max"] >= 0 and usage.folder[f["folder_id"]] + cores > f["group_max"]:
        return False
    burst = usage.burst.get((f["show_id"], room.alloc_id))
    return burst is not None and usage.sub[(f["show_id"], room.alloc_id)] + cores <= burst


def book_host(farm: Any, host_id: str, t: float, *, frames: Sequence[Any] | None = None,
              usage: Usage | None = None, scope: str = "", args: Sequence[Any] = (),
              local: Any = None, at_most: int | None = None) -> list[str]:
    """Book what fits on one host now; the frame ids started.

    ``frames`` (from :func:`candidates`) and ``usage`` may be shared by the
    calls of one pass; the ones booked here are taken out of ``frames``.
    """
    store = farm.store
    farm.counters.booking_executed += 1
    room = host_room(store, host_id, local=local)
    if room is None or room.cores <= 0:
        return []
    if frames is None:
        frames = candidates(store, scope, args, t)
    usage = usage or Usage(store, t)
    booked: list[str] = []
    for f in frames:
        if at_most is not None and len(booked) >= at_most:
            break
        cores = proc_cores(f)
        if not fits(room, f, usage, cores, local=local is not None):
            continue
        proc_id = farm.book(f["id"], host_id, cores=cores, memory=f["min_memory"],
                            gpus=f["min_gpus"], started=int(t))
        if local is not None:
            store.run("UPDATE proc SET local_id = ? WHERE id = ?", (local["id"], proc_id))
        room.cores -= cores
        room.memory -= f["min_memory"]
        room.gpus -= f["min_gpus"]
        room.gpu_memory -= f["min_gpu_memory"]
        usage.add(f, room, cores, t)
        booked.append(f["id"])
        if room.cores <= 0:
            break
    farm.counters.booked_procs += len(booked)
    if booked and isinstance(frames, list):
        taken = set(booked)
        frames[:] = [f for f in frames if f["id"] not in taken]
    return booked
