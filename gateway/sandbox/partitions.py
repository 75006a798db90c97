"""Render partitions: local booking of a workstation for a job, layer or frame.

``{Job,Layer,Frame}Interface/AddRenderPartition`` lend a NIMBY-locked
workstation's cores to one piece of work, as Cuebot's LocalBookingSupport
does: the host (by name) must not be OPEN (``The host <name>/<id> is not
NIMBY locked``), the user must own a host (Cuebot checks that the owner holds
*a* deed, not a deed on this host: kept), then a partition of ``max_cores``
whole cores, ``max_memory`` KB (and GPUs) is made and frames are booked into
it at once. When none fits the call is INTERNAL ``Failed to find suitable
frames.`` and the partition stays, as in Cuebot.

While the partition is active the dispatcher keeps booking the work's
frames into it, ignoring tags and subscriptions; it goes when the job
finishes. ``RenderPartitionInterface/Delete`` kills what runs in it (the
frames go back to WAITING) and removes it; ``SetMaxResources`` changes the
positive values it is given (``cores`` in core units, as Cuebot takes them).

JobInterface answers a missing host or owner NOT_FOUND ``Job not found``
(its servant's guard); Layer and Frame answer INTERNAL.
"""
from __future__ import annotations

from typing import Any

from opencue_proto import renderPartition_pb2

from . import booking
from .servant import (INCORRECT_SIZE_0, Reply, Servant, internal, job_not_found, missing,
                      plain_internal)
from .store import Store, new_id, now

SPCUE_ERROR = "com.imageworks.spcue.SpcueRuntimeException"


def partition_messages(store: Store, rows: list[Any]) -> list[renderPartition_pb2.RenderPartition]:
    out = []
    for r in rows:
        used = store.one("SELECT COALESCE(SUM(cores), 0) AS c, COALESCE(SUM(memory), 0) AS m, "
                         "COALESCE(SUM(gpus), 0) AS g, COALESCE(SUM(gpu_memory), 0) AS gm "
                         "FROM proc WHERE local_id = ?", (r["id"],))
        names = store.one(
            "SELECT h.name AS host, j.name AS job, l.name AS layer, f.name AS frame FROM host h "
            "JOIN job j ON j.id = ? LEFT JOIN layer l ON l.id = ? LEFT JOIN frame f ON f.id = ? "
            "WHERE h.id = ?", (r["job_id"], r["layer_id"], r["frame_id"], r["host_id"]))
        out.append(renderPartition_pb2.RenderPartition(
            id=r["id"], job=names["job"], layer=names["layer"] or "",
            frame=names["frame"] or "", render_part_type=r["type"], host=names["host"],
            cores=used["c"], max_cores=r["max_cores"], threads=r["threads"],
            memory=used["m"], max_memory=r["max_memory"], gpus=used["g"],
            max_gpus=r["max_gpus"], gpu_memory=used["gm"],
            max_gpu_memory=r["max_gpu_memory"]))
    return out


def scope_of(local: Any) -> tuple[str, tuple[str, ...]]:
    """The frames a partition takes (a candidates() clause)."""
    if local["frame_id"]:
        return "AND f.id = ?", (local["frame_id"],)
    if local["layer_id"]:
        return "AND f.layer_id = ?", (local["layer_id"],)
    return "AND f.job_id = ?", (local["job_id"],)


def book_partition(farm: Any, local: Any, t: float) -> list[str]:
    scope, args = scope_of(local)
    return booking.Booker(farm, t, frames=[]).local(local, scope, args)


def add_render_partition(farm: Any, request: Any, kind: str, *, job_id: str,
                         layer_id: str | None = None, frame_id: str | None = None) -> Reply:
    store = farm.store
    lookup_failed = job_not_found() if kind == "JOB_PARTITION" else missing()
    with store.tx():
        host = store.one("SELECT * FROM host WHERE name = ?", (request.host,))
        if host is None:
            raise lookup_failed
        if host["lock_state"] == "OPEN":
            raise internal(SPCUE_ERROR, f"The host {host['name']}/{host['id']} is not NIMBY "
                                        f"locked")
        owner = store.one("SELECT * FROM owner WHERE name = ?", (request.username,))
        if owner is None:
            raise lookup_failed
        if store.one("SELECT 1 FROM deed WHERE owner_id = ?", (owner["id"],)) is None:
            raise internal(SPCUE_ERROR, f"{request.username} is not the owner of the host "
                                        f"{host['name']}")
        local_id = new_id()
        store.insert("host_local", id=local_id, host_id=host["id"], job_id=job_id,
                     layer_id=layer_id, frame_id=frame_id, type=kind,
                     max_cores=request.max_cores * 100, max_memory=request.max_memory,
                     max_gpus=request.max_gpus if kind != "FRAME_PARTITION" else 0,
                     max_gpu_memory=request.max_gpu_memory, threads=request.threads)
    with store.tx():
        local = store.one("SELECT * FROM host_local WHERE id = ?", (local_id,))
        booked = book_partition(farm, local, now())
    if not booked:
        raise plain_internal("Failed to find suitable frames.")
    return dict(render_partition=partition_messages(store, [local])[0])


class RenderPartitionServant(Servant):
    SERVICE = "renderPartition.RenderPartitionInterface"

    def _partition(self, msg: Any) -> Any:
        row = self.store.one("SELECT * FROM host_local WHERE id = ?", (msg.id,))
        if row is None:
            raise internal("org.springframework.dao.EmptyResultDataAccessException",
                           INCORRECT_SIZE_0)
        return row

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            local = self._partition(request.render_partition)
            for proc in self.store.all("SELECT id FROM proc WHERE local_id = ?", (local["id"],)):
                self.farm.kill_proc(proc["id"])
            self.store.run("DELETE FROM host_local WHERE id = ?", (local["id"],))
        return None

    def SetMaxResources(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            local = self._partition(request.render_partition)
            for column, value in (("max_cores", request.cores), ("max_memory", request.memory),
                                  ("max_gpus", request.gpus),
                                  ("max_gpu_memory", request.gpu_memory)):
                if value > 0:
                    self.store.run(f"UPDATE host_local SET {column} = ? WHERE id = ?",
                                   (value, local["id"]))
        return None


SERVANTS = [RenderPartitionServant]
