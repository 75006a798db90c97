"""job.JobInterface, job.FrameInterface, job.LayerInterface, job.GroupInterface and
depend.DependInterface, as Cuebot's ManageJob/Frame/Layer/Group/Depend answer them.

How a missing object fails differs by interface, and clients depend on it:

- JobInterface: a job (by id in ``job``, or ``id``/``name`` of the lookups)
  that does not exist is NOT_FOUND ``Job not found``, whatever the RPC;
- the other interfaces: lookups (GetFrame, FindFrame, GetLayer, FindLayer,
  GetGroup, FindGroup, GetDepend) are NOT_FOUND ``Incorrect result size:
  expected 1, actual 0``; every other RPC is INTERNAL with Spring's
  EmptyResultDataAccessException text.

Cuebot runs some mutations from a queue (Kill, Eat, Retry, Satisfy…) and
answers OK before they happen; the sandbox applies them before answering,
which a client polling for the effect cannot tell apart. Side effects on
other objects (procs, hosts, job state, depends) are Farm operations.
Job.Kill without a ``reason`` is accepted and ignored, as in Cuebot.
GetUpdatedFrames with a ``last_check`` over 60 s old never answers, as
Cuebot's servant swallows that error: clients must send deadlines.
"""
from __future__ import annotations

import asyncio
from typing import Any, Sequence

from opencue_proto import comment_pb2, depend_pb2, job_pb2

from . import launchspec
from . import messages as M
from .common import find_one, whole_core_units
from .criteria import find_frames, find_jobs
from .servant import Reply, Servant, illegal, internal, job_not_found, missing
from .store import Store, new_id, now

MEM_RESERVED_MIN = 262144          # KB: Cuebot's floor for a layer's memory
CORE_POINTS_RESERVED_MIN = 10      # units: below this a layer's min cores resets…
CORE_POINTS_RESERVED_DEFAULT = 100  # …to one core
UPDATED_FRAMES_MAX = 100
UPDATED_FRAMES_WINDOW = 60         # seconds GetUpdatedFrames accepts


# ---------------------------------------------------------------------------
# lookups
# ---------------------------------------------------------------------------
def job_of(store: Store, msg: Any) -> Any:
    """The job a request's Job names, by id; missing -> NOT_FOUND ``Job not found``."""
    row = store.one("SELECT * FROM job WHERE id = ?", (msg.id,)) if msg.id else None
    if row is None:
        raise job_not_found()
    return row


def _by_id(store: Store, table: str, key: str) -> Any:
    """A frame/layer/group/depend a mutating RPC names; missing -> INTERNAL."""
    row = store.one(f"SELECT * FROM {table} WHERE id = ?", (key,)) if key else None
    if row is None:
        raise missing()
    return row


def frame_of(store: Store, msg: Any) -> Any:
    return _by_id(store, "frame", msg.id)


def layer_of(store: Store, msg: Any) -> Any:
    return _by_id(store, "layer", msg.id)


def group_of(store: Store, msg: Any) -> Any:
    return _by_id(store, "folder", msg.id)


def core_units(cores: float) -> int:
    """Cuebot's plain (not whole-core) conversion: cores x 100, rounded half up."""
    return int(cores * 100 + 0.5)


def _depends(store: Store, where: str, args: Sequence[Any]) -> depend_pb2.DependSeq:
    rows = store.all(f"SELECT * FROM depend WHERE {where} ORDER BY seq", args)
    return depend_pb2.DependSeq(depends=M.depends(store, rows))


def _frames(store: Store, rows: Sequence[Any]) -> job_pb2.FrameSeq:
    return job_pb2.FrameSeq(frames=M.frames(store, rows))


def _jobs(store: Store, rows: Sequence[Any]) -> job_pb2.JobSeq:
    return job_pb2.JobSeq(jobs=M.jobs(store, rows))


# ---------------------------------------------------------------------------
class JobServant(Servant):
    SERVICE = "job.JobInterface"

    # -- reads ---------------------------------------------------------------
    def GetJobs(self, request: Any, context: Any) -> Reply:
        return dict(jobs=_jobs(self.store, find_jobs(self.store, request.r)))

    def GetJobNames(self, request: Any, context: Any) -> Reply:
        return dict(names=[r["name"] for r in find_jobs(self.store, request.r, "j.name")])

    def FindJob(self, request: Any, context: Any) -> Reply:
        rows = self.store.all("SELECT * FROM job WHERE state = 'PENDING' AND name = ?",
                              (request.name.lower(),))
        if len(rows) != 1:
            raise job_not_found()
        return dict(job=M.jobs(self.store, rows)[0])

    def GetJob(self, request: Any, context: Any) -> Reply:
        return dict(job=M.jobs(self.store, [job_of(self.store, request)])[0])

    def IsJobPending(self, request: Any, context: Any) -> Reply:
        row = self.store.one("SELECT 1 FROM job WHERE state = 'PENDING' AND name = ?",
                             (request.name,))
        return dict(value=row is not None)

    def GetCurrent(self, request: Any, context: Any) -> Reply:
        return dict(job=M.jobs(self.store, [job_of(self.store, request.job)])[0])

    def GetFrames(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        rows = find_frames(self.store, "f.job_id = ?", (job["id"],), request.req)
        return dict(frames=_frames(self.store, rows))

    def GetLayers(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        rows = self.store.all("SELECT * FROM layer WHERE job_id = ? ORDER BY dispatch_order",
                              (job["id"],))
        return dict(layers=job_pb2.LayerSeq(layers=M.layers(self.store, rows)))

    def GetComments(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        rows = self.store.all("SELECT * FROM comment WHERE job_id = ? ORDER BY timestamp, seq",
                              (job["id"],))
        return dict(comments=comment_pb2.CommentSeq(comments=M.comments(rows)))

    def GetDepends(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        return dict(depends=_depends(self.store, "er_job_id = ? AND type != 'FRAME_ON_FRAME'",
                                     (job["id"],)))

    def GetWhatDependsOnThis(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        return dict(depends=_depends(self.store, "on_job_id = ?", (job["id"],)))

    def GetWhatThisDependsOn(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        return dict(depends=_depends(
            self.store, "er_job_id = ? AND er_layer_id IS NULL AND er_frame_id IS NULL",
            (job["id"],)))

    async def GetUpdatedFrames(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        if now() - request.last_check > UPDATED_FRAMES_WINDOW:
            await asyncio.Event().wait()  # Cuebot never answers; the client's deadline ends it
        layer_ids = [layer.id for layer in request.layer_filter.layers]
        scope, args = "f.job_id = ? AND f.updated_time > ?", [job["id"], request.last_check]
        if layer_ids:
            scope += " AND f.layer_id IN (" + ",".join("?" * len(layer_ids)) + ")"
            args += layer_ids
        rows = self.store.all(
            f"SELECT f.*, p.max_rss AS p_rss, p.used_memory AS p_used FROM frame f "
            f"LEFT JOIN proc p ON p.frame_id = f.id WHERE {scope} "
            f"ORDER BY f.dispatch_order, f.number LIMIT {UPDATED_FRAMES_MAX}", args)
        updated = [job_pb2.UpdatedFrame(
            id=r["id"], state=r["state"], retry_count=r["retry_count"],
            exit_status=r["exit_status"], start_time=r["start_time"], stop_time=r["stop_time"],
            max_rss=r["p_rss"] if r["p_rss"] is not None else r["max_rss"],
            used_memory=r["p_used"] if r["p_used"] is not None else r["used_memory"],
            last_resource=r["last_resource"], llu_time=r["llu_time"]) for r in rows]
        state = self.store.one("SELECT state FROM job WHERE id = ?", (job["id"],))["state"]
        return dict(state=state, server_time=now() - 1,
                    updated_frames=job_pb2.UpdatedFrameSeq(updated_frames=updated))

    # -- submission (launching touches every table; launchspec.py does it) -----
    LaunchSpec = launchspec.launch_spec
    LaunchSpecAndWait = launchspec.launch_spec_and_wait

    # -- mutations -------------------------------------------------------------
    def _set(self, request: Any, column: str, value: Any) -> None:
        with self.store.tx():
            job = job_of(self.store, request.job)
            self.store.run(f"UPDATE job SET {column} = ? WHERE id = ?", (value, job["id"]))

    def Pause(self, request: Any, context: Any) -> Reply:
        self._set(request, "is_paused", 1)
        return None

    def Resume(self, request: Any, context: Any) -> Reply:
        self._set(request, "is_paused", 0)
        return None

    def SetPriority(self, request: Any, context: Any) -> Reply:
        self._set(request, "priority", request.val)
        return None

    def SetMinCores(self, request: Any, context: Any) -> Reply:
        self._set(request, "min_cores", whole_core_units(request.val))
        return None

    def SetMaxCores(self, request: Any, context: Any) -> Reply:
        self._set(request, "max_cores", whole_core_units(request.val))
        return None

    def Kill(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            job = job_of(self.store, request.job)
            if request.reason:  # no reason: Cuebot logs "Invalid Job Kill Request" and stops
                self.farm.kill_job(job["id"])
        return None

    def AddComment(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            job = job_of(self.store, request.job)
            c = request.new_comment
            self.store.insert("comment", id=new_id(), job_id=job["id"], user=c.user,
                              subject=c.subject, message=c.message, timestamp=now())
        return None

    def _bulk(self, request: Any, action: Any) -> None:
        """Apply ``action(frame_row)`` to every frame matching ``req`` (no paging)."""
        with self.store.tx():
            job = job_of(self.store, request.job)
            for frame in find_frames(self.store, "f.job_id = ?", (job["id"],), request.req,
                                     paged=False):
                action(frame)

    def EatFrames(self, request: Any, context: Any) -> Reply:
        self._bulk(request, lambda f: self.farm.eat_frame(f["id"]))
        return None

    def RetryFrames(self, request: Any, context: Any) -> Reply:
        self._bulk(request, lambda f: self.farm.retry_frame(f["id"]))
        return None

    def KillFrames(self, request: Any, context: Any) -> Reply:
        self._bulk(request, lambda f: self.farm.kill_frame(f["id"]))
        return None

    def MarkAsWaiting(self, request: Any, context: Any) -> Reply:
        self._bulk(request, lambda f: self.farm.mark_as_waiting(f["id"]))
        return None


# ---------------------------------------------------------------------------
class FrameServant(Servant):
    SERVICE = "job.FrameInterface"

    def GetFrame(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM frame WHERE id = ?", (request.id,))
        return dict(frame=M.frames(self.store, [row])[0])

    def FindFrame(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store,
                       "SELECT f.* FROM frame f JOIN layer l ON l.id = f.layer_id JOIN job j "
                       "ON j.id = f.job_id WHERE j.state = 'PENDING' AND j.name = ? AND "
                       "l.name = ? AND f.number = ?", (request.job, request.layer, request.frame))
        return dict(frame=M.frames(self.store, [row])[0])

    def GetFrames(self, request: Any, context: Any) -> Reply:
        job = find_one(self.store, "SELECT id FROM job WHERE visible_name = ?", (request.job,),
                       lookup=False)
        rows = find_frames(self.store, "f.job_id = ?", (job["id"],), request.r)
        return dict(frames=_frames(self.store, rows))

    def GetWhatDependsOnThis(self, request: Any, context: Any) -> Reply:
        frame = frame_of(self.store, request.frame)
        return dict(depends=_depends(self.store, "on_frame_id = ?", (frame["id"],)))

    def GetWhatThisDependsOn(self, request: Any, context: Any) -> Reply:
        f = frame_of(self.store, request.frame)
        return dict(depends=_depends(
            self.store, "(er_job_id = ? AND type IN ('JOB_ON_JOB', 'JOB_ON_LAYER', "
            "'JOB_ON_FRAME')) OR (er_layer_id = ? AND type IN ('LAYER_ON_JOB', "
            "'LAYER_ON_LAYER', 'LAYER_ON_FRAME')) OR er_frame_id = ?",
            (f["job_id"], f["layer_id"], f["id"])))

    def Retry(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.retry_frame(frame_of(self.store, request.frame)["id"])
        return None

    def Kill(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.kill_frame(frame_of(self.store, request.frame)["id"])
        return None

    def Eat(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.eat_frame(frame_of(self.store, request.frame)["id"])
        return None

    def MarkAsWaiting(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.mark_as_waiting(frame_of(self.store, request.frame)["id"])
        return None


# ---------------------------------------------------------------------------
class LayerServant(Servant):
    SERVICE = "job.LayerInterface"

    def GetLayer(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM layer WHERE id = ?", (request.id,))
        return dict(layer=M.layers(self.store, [row])[0])

    def FindLayer(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT l.* FROM layer l JOIN job j ON j.id = l.job_id "
                       "WHERE j.state = 'PENDING' AND j.name = ? AND l.name = ?",
                       (request.job, request.layer))
        return dict(layer=M.layers(self.store, [row])[0])

    def GetFrames(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        rows = find_frames(self.store, "f.layer_id = ?", (layer["id"],), request.s)
        return dict(frames=_frames(self.store, rows))

    def GetOutputPaths(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        return dict(output_paths=[p for p in layer["outputs"].split("\n") if p])

    def GetLimits(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        rows = self.store.all("SELECT l.* FROM limit_record l JOIN layer_limit ll ON "
                              "ll.limit_id = l.id WHERE ll.layer_id = ? ORDER BY l.name",
                              (layer["id"],))
        return dict(limits=list(M.limits(self.store, rows)))

    def GetWhatDependsOnThis(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        return dict(depends=_depends(self.store, "on_layer_id = ?", (layer["id"],)))

    def GetWhatThisDependsOn(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        return dict(depends=_depends(self.store, "er_layer_id = ?", (layer["id"],)))

    def _each_frame(self, request: Any, action: Any) -> None:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            for f in self.store.all("SELECT id FROM frame WHERE layer_id = ? ORDER BY "
                                    "dispatch_order", (layer["id"],)):
                action(f["id"])

    def KillFrames(self, request: Any, context: Any) -> Reply:
        self._each_frame(request, self.farm.kill_frame)
        return None

    def EatFrames(self, request: Any, context: Any) -> Reply:
        self._each_frame(request, self.farm.eat_frame)
        return None

    def RetryFrames(self, request: Any, context: Any) -> Reply:
        self._each_frame(request, self.farm.retry_frame)
        return None

    def _set(self, request: Any, column: str, value: Any) -> None:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            self.store.run(f"UPDATE layer SET {column} = ? WHERE id = ?", (value, layer["id"]))

    def SetTags(self, request: Any, context: Any) -> Reply:
        tags = list(dict.fromkeys(request.tags))
        if not tags:
            raise illegal("Layers must have at least one tag.")
        kept = [t for t in tags if t]
        if not kept:  # Cuebot trims a separator that was never added
            raise internal("java.lang.StringIndexOutOfBoundsException",
                           "start -3, end 0, length 0")
        self._set(request, "tags", M.join_tags(kept))
        return None

    def SetMinCores(self, request: Any, context: Any) -> Reply:
        units = core_units(request.cores)
        if units < CORE_POINTS_RESERVED_MIN:
            units = CORE_POINTS_RESERVED_DEFAULT
        self._set(request, "min_cores", units)
        return None

    def SetMaxCores(self, request: Any, context: Any) -> Reply:
        self._set(request, "max_cores", core_units(request.cores))
        return None

    def SetMinMemory(self, request: Any, context: Any) -> Reply:
        self._set(request, "min_memory", max(request.memory, MEM_RESERVED_MIN))
        return None


# ---------------------------------------------------------------------------
class GroupServant(Servant):
    SERVICE = "job.GroupInterface"

    def GetGroup(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM folder WHERE id = ?", (request.id,))
        return dict(group=M.groups(self.store, [row])[0])

    def FindGroup(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT g.* FROM folder g JOIN show s ON s.id = g.show_id "
                       "WHERE s.name = ? AND g.name = ?", (request.show, request.name))
        return dict(group=M.groups(self.store, [row])[0])

    def GetGroups(self, request: Any, context: Any) -> Reply:
        group = group_of(self.store, request.group)
        rows = self.store.all("SELECT * FROM folder WHERE parent_id = ? ORDER BY level, name",
                              (group["id"],))
        return dict(groups=job_pb2.GroupSeq(groups=M.groups(self.store, rows)))

    def GetJobs(self, request: Any, context: Any) -> Reply:
        group = group_of(self.store, request.group)
        rows = self.store.all("SELECT * FROM job WHERE folder_id = ? AND state = 'PENDING' "
                              "ORDER BY name", (group["id"],))
        return dict(jobs=_jobs(self.store, rows))

    def SetMinCores(self, request: Any, context: Any) -> Reply:
        units = max(whole_core_units(request.min_cores), 0)
        with self.store.tx():
            group = group_of(self.store, request.group)
            self.store.run("UPDATE folder SET min_cores = ? WHERE id = ?", (units, group["id"]))
        return None

    def SetMaxCores(self, request: Any, context: Any) -> Reply:
        units = whole_core_units(request.max_cores)
        with self.store.tx():
            group = group_of(self.store, request.group)
            if 0 <= units < 100:
                raise illegal(f"The group max cores feature must be a whole core or greater, "
                              f"pass in: {units}")
            self.store.run("UPDATE folder SET max_cores = ? WHERE id = ?", (units, group["id"]))
        return None

    def ReparentJobs(self, request: Any, context: Any) -> Reply:
        """Jobs move in one by one; each takes the group's job defaults that are set."""
        with self.store.tx():
            group = group_of(self.store, request.group)
            inherit = [(column, group[f"default_job_{column}"])
                       for column in ("priority", "min_cores", "max_cores", "min_gpus",
                                      "max_gpus")
                       if group[f"default_job_{column}"] != -1]
            sets = ", ".join(["folder_id = ?", "dept_id = ?"] + [f"{c} = ?" for c, _ in inherit])
            for msg in request.jobs.jobs:
                job = _by_id(self.store, "job", msg.id)
                if job["show_id"] != group["show_id"]:
                    raise internal("com.imageworks.spcue.EntityModificationError",
                                   "error moving job, cannot move jobs between shows")
                self.store.run(f"UPDATE job SET {sets} WHERE id = ?",
                               (group["id"], group["dept_id"], *(v for _, v in inherit),
                                job["id"]))
        return None


# ---------------------------------------------------------------------------
class DependServant(Servant):
    SERVICE = "depend.DependInterface"

    def GetDepend(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM depend WHERE id = ?", (request.id,))
        return dict(depend=M.depends(self.store, [row])[0])

    def Satisfy(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.satisfy(_by_id(self.store, "depend", request.depend.id)["id"])
        return None

    def Unsatisfy(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.unsatisfy(_by_id(self.store, "depend", request.depend.id)["id"])
        return None


SERVANTS = [JobServant, FrameServant, LayerServant, GroupServant, DependServant]
