"""Redirects: a proc handed to another job or group, as Cuebot's RedirectManager does it.

A redirect marks the proc (``redirect_target`` shows the job or group name,
and the proc is *unbooked*: it takes no next frame of its own job). When the
proc's render ends, by a kill or on its own, the proc is released and its
host is booked at once with work of the target job or group, within what
the dispatcher's rules allow there. :func:`follow` does that last step;
the dispatcher calls it for a redirected proc whose render completes.

- Host.RedirectToJob(proc ids, job): every named proc is redirected and
  killed (the frames go back to WAITING), then the hosts are booked for the
  job; it answers true.
- Proc.RedirectToJob(proc, job, kill): false unless the job has a frame the
  proc's cores and memory could run; with ``kill`` the render stops now.
- Proc.RedirectToGroup(proc, group, kill): false unless a PENDING job of the
  group has such a frame.
- Proc.UnbookToJob / UnbookToGroup(criteria, …, kill): the booked procs the
  criteria match (which must give ``max_results``), not already on those
  jobs or in that group, are redirected, to the jobs in turn; the number of
  procs is answered.
"""
from __future__ import annotations

from typing import Any

from . import booking


def set_redirect(farm: Any, proc_id: str, kind: str, target_id: str) -> None:
    store = farm.store
    table = "job" if kind == "JOB" else "folder"
    name = store.one(f"SELECT name FROM {table} WHERE id = ?", (target_id,))["name"]
    store.run("UPDATE proc SET redirect_target = ?, redirect_kind = ?, redirect_id = ?, "
              "unbooked = 1 WHERE id = ?", (name, kind, target_id, proc_id))
    farm.counters.unbooked_procs += 1


def scope(kind: str, target_id: str) -> tuple[str, tuple[str]]:
    if kind == "JOB":
        return "AND f.job_id = ?", (target_id,)
    return "AND j.folder_id = ?", (target_id,)


def follow(farm: Any, host_id: str, kind: str, target_id: str, t: float) -> list[str]:
    """Book the freed host for the redirect's target; the frames started."""
    if kind == "JOB":
        return booking.book_host(farm, host_id, t, job_ids=[target_id])
    return booking.book_host(farm, host_id, t, folder_id=target_id)


def could_run(store: Any, proc: Any, kind: str, target_id: str) -> bool:
    """Cuebot's test before a redirect: a frame of the target that the proc could take."""
    clause, args = scope(kind, target_id)
    return any(f["min_cores"] <= proc["cores"] and f["min_memory"] <= proc["memory"]
               for f in booking.candidates(store, clause, args))


def kill_and_follow(farm: Any, proc: Any, t: float) -> list[str]:
    """Stop a redirected proc's render (its frame WAITS again), then follow the redirect."""
    farm.kill_proc(proc["id"])
    return follow(farm, proc["host_id"], proc["redirect_kind"], proc["redirect_id"], t)
