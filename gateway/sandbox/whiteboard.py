"""Cuebot's nested whiteboards: a show's group tree with its jobs, and every host with its procs.

``ShowInterface/GetJobWhiteboard`` is what CueGUI's "Monitor Cue" tree
draws: the show's root group, each group with its sub-groups (``groups``),
the ids of its PENDING jobs (``jobs``), those jobs themselves
(``inline_jobs``, as a current Cuebot sends them so clients skip a GetJob
per job) and the group's counts over them (``stats``). A sub-group's
``parent`` is its parent group without the parent's own sub-groups.
Groups are listed level by level, by name within a level. Cuebot caches
this answer for ten seconds unless ``fresh`` is asked for; the sandbox is
always fresh.

``HostInterface/GetHostWhiteboard`` lists every host (by name) with its
procs; a proc's ``parent`` is its host without procs.
"""
from __future__ import annotations

from typing import Any

from opencue_proto import host_pb2, job_pb2

from . import messages as M
from .store import Store

_GROUP_FIELDS = ("id", "name", "department", "default_job_priority", "default_job_min_cores",
                 "default_job_max_cores", "min_cores", "max_cores", "level",
                 "default_job_min_gpus", "default_job_max_gpus", "min_gpus", "max_gpus")
_STATS_FIELDS = ("dead_frames", "running_frames", "waiting_frames", "depend_frames",
                 "reserved_cores", "pending_jobs")


def _nested(group: job_pb2.Group) -> job_pb2.NestedGroup:
    out = job_pb2.NestedGroup(**{f: getattr(group, f) for f in _GROUP_FIELDS})
    for f in _STATS_FIELDS:
        setattr(out.stats, f, getattr(group.group_stats, f))
    return out


def job_whiteboard(store: Store, show_id: str) -> job_pb2.NestedGroup:
    rows = store.all("SELECT * FROM folder WHERE show_id = ? ORDER BY level, name", (show_id,))
    groups = {r["id"]: (r, _nested(g)) for r, g in zip(rows, M.groups(store, rows))}
    jobs = store.all("SELECT * FROM job WHERE show_id = ? AND state = 'PENDING' ORDER BY name",
                     (show_id,))
    for row, msg in zip(jobs, M.jobs(store, jobs)):
        entry = groups.get(row["folder_id"])
        if entry is not None:
            entry[1].jobs.append(row["id"])
            entry[1].inline_jobs.append(msg)
    root: job_pb2.NestedGroup | None = None
    # deepest groups first, so a group is complete before it goes into its parent (the sort
    # is stable: siblings stay in name order)
    for row, msg in sorted(groups.values(), key=lambda e: -e[0]["level"]):
        parent = groups.get(row["parent_id"] or "")
        if parent is None:
            root = root or msg
            continue
        child = parent[1].groups.nested_groups.add()
        child.CopyFrom(msg)
        bare = job_pb2.NestedGroup()
        bare.CopyFrom(parent[1])
        bare.ClearField("groups")
        child.parent.CopyFrom(bare)
    return root or job_pb2.NestedGroup()


def _copy(source: Any, target: Any) -> None:
    """The fields ``target`` shares with ``source`` (Host -> NestedHost, Proc -> NestedProc)."""
    for f in source.DESCRIPTOR.fields:
        if f.name not in target.DESCRIPTOR.fields_by_name or f.name in ("procs", "parent"):
            continue
        value = getattr(source, f.name)
        if (f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED):
            getattr(target, f.name).extend(value)
        else:
            setattr(target, f.name, value)


def host_whiteboard(store: Store) -> host_pb2.NestedHostSeq:
    rows = store.all("SELECT * FROM host ORDER BY name")
    out = host_pb2.NestedHostSeq()
    for row, host in zip(rows, M.hosts(store, rows)):
        nested = out.nested_hosts.add()
        _copy(host, nested)
        bare = host_pb2.NestedHost()
        bare.CopyFrom(nested)
        procs = store.all("SELECT * FROM proc WHERE host_id = ? ORDER BY dispatch_time, id",
                          (row["id"],))
        for proc in M.procs(store, procs):
            p = nested.procs.nested_procs.add()
            _copy(proc, p)
            p.parent.CopyFrom(bare)
    return out
