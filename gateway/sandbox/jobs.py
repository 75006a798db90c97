"""job.JobInterface and depend.DependInterface, as Cuebot's ManageJob/ManageDepend answer them
(Frame, Layer and Group interfaces: frames.py, layers.py, groups.py).

How a missing object fails differs by interface, and clients depend on it:

- JobInterface: a job (by id in ``job``) that does not exist is NOT_FOUND
  ``Job not found``, whatever the RPC; so is anything else the RPC looks up
  inside the servant's guard (the frame of CreateDependencyOnFrame, the
  group of SetGroup). FindJob and GetJob pass Spring's text on:
  NOT_FOUND ``Incorrect result size: expected 1, actual 0``. AddSubscriber
  answers INTERNAL ``Failed to find job data``;
- the other interfaces: lookups (GetFrame, FindFrame, GetLayer, FindLayer,
  GetGroup, FindGroup, GetDepend) are NOT_FOUND ``Incorrect result size:
  expected 1, actual 0``; every other RPC is INTERNAL with Spring's
  EmptyResultDataAccessException text.

Depend listings follow Cuebot's whiteboard: the job's and layer's
GetWhatDependsOnThis/GetWhatThisDependsOn leave out the frame-on-frame
children of a FRAME_BY_FRAME depend (only the container is listed);
DropDepends satisfies what the job (or layer, frame) depends on, for the
requested target (INTERNAL by default, EXTERNAL, ANY_TARGET);
MarkDoneFrames satisfies what waits on the matching frames without
touching their state.

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

from . import depends, launchspec, ordering
from . import messages as M
from .common import by_id, cue_frame_set, depend_error, find_one, job_of, whole_core_units
from .criteria import find_frames, find_jobs
from .servant import Reply, Servant, illegal, internal, job_not_found, plain_internal
from .store import Store, new_id, now

UPDATED_FRAMES_MAX = 100
UPDATED_FRAMES_WINDOW = 60         # seconds GetUpdatedFrames accepts
MODIFICATION_ERROR = "com.imageworks.spcue.EntityModificationError"


def depend_seq(store: Store, where: str, args: Sequence[Any]) -> depend_pb2.DependSeq:
    rows = store.all(f"SELECT * FROM depend WHERE {where} ORDER BY seq", args)
    return depend_pb2.DependSeq(depends=M.depends(store, rows))


def one_depend(store: Store, dep_id: str) -> depend_pb2.Depend:
    return M.depends(store, [store.one("SELECT * FROM depend WHERE id = ?", (dep_id,))])[0]


def depend_on(farm: Any, store: Store, kind: str, er: depends.Side, table: str,
              key: str) -> Reply:
    """A ``kind`` dependency of ``er`` on the job, layer or frame ``key`` of ``table``:
    the reply of the CreateDependencyOn* RPCs (called inside the store's transaction)."""
    other = by_id(store, table, key)
    on = depends.Side(other["id"]) if table == "job" else depends.Side(
        other["job_id"], other["id"] if table == "layer" else other["layer_id"],
        other["id"] if table == "frame" else None)
    try:
        dep_id = depends.create(farm, kind, er, on)
    except depends.DependError as e:
        raise depend_error(e) from None
    return dict(depend=one_depend(store, dep_id))


def target_clause(target: int) -> str:
    """DropDepends' DependTarget: INTERNAL (the default), EXTERNAL or ANY_TARGET."""
    name = depend_pb2.DependTarget.Name(target)
    return "" if name == "ANY_TARGET" else f" AND target = '{name}'"


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
        row = find_one(self.store, "SELECT * FROM job WHERE state = 'PENDING' AND name = ?",
                       (request.name.lower(),))
        return dict(job=M.jobs(self.store, [row])[0])

    def GetJob(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM job WHERE id = ?", (request.id,))
        return dict(job=M.jobs(self.store, [row])[0])

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
        return dict(depends=depend_seq(self.store, "er_job_id = ? AND type != 'FRAME_ON_FRAME'",
                                       (job["id"],)))

    def GetWhatDependsOnThis(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        return dict(depends=depend_seq(self.store, "parent_id IS NULL AND on_job_id = ?",
                                       (job["id"],)))

    def GetWhatThisDependsOn(self, request: Any, context: Any) -> Reply:
        job = job_of(self.store, request.job)
        return dict(depends=depend_seq(
            self.store, "parent_id IS NULL AND er_job_id = ? AND er_layer_id IS NULL AND "
            "er_frame_id IS NULL", (job["id"],)))

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
    def _set(self, request: Any, column: str, value: Any, **more: Any) -> None:
        values = {column: value, **more}
        with self.store.tx():
            job = job_of(self.store, request.job)
            sets = ", ".join(f"{c} = ?" for c in values)
            self.store.run(f"UPDATE job SET {sets} WHERE id = ?", (*values.values(), job["id"]))

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

    def SetMinGpus(self, request: Any, context: Any) -> Reply:
        self._set(request, "min_gpus", request.val)
        return None

    def SetMaxGpus(self, request: Any, context: Any) -> Reply:
        self._set(request, "max_gpus", request.val)
        return None

    def SetAutoEat(self, request: Any, context: Any) -> Reply:
        """Auto-eat on also sets max retries to 0; off sets them to 1 (Cuebot's JobDao)."""
        self._set(request, "auto_eat", int(request.value),
                  max_retries=0 if request.value else 1)
        return None

    def SetMaxRetries(self, request: Any, context: Any) -> Reply:
        ceiling = int(self.store.config("MAX_FRAME_RETRIES", "16") or 16)
        with self.store.tx():
            job = job_of(self.store, request.job)
            if request.max_retries < 0:
                raise illegal("max retries must be greater than 0")
            if request.max_retries > ceiling:
                raise illegal(f"max retries must be less than {ceiling}")
            self.store.run("UPDATE job SET max_retries = ? WHERE id = ?",
                           (request.max_retries, job["id"]))
        return None

    def SetGroup(self, request: Any, context: Any) -> Reply:
        """Into another group of the same show, taking every job default the group sets."""
        with self.store.tx():
            job = job_of(self.store, request.job)
            group = self.store.one("SELECT * FROM folder WHERE id = ?", (request.group_id,))
            if group is None:
                raise job_not_found()
            if group["show_id"] != job["show_id"]:
                raise internal(MODIFICATION_ERROR,
                               "error moving job, cannot move jobs between shows")
            self.farm.move_job(job["id"], group, ALL_JOB_DEFAULTS)
        return None

    def AddSubscriber(self, request: Any, context: Any) -> Reply:
        """The address joins the job's e-mail list (Cuebot mails it when the job ends)."""
        with self.store.tx():
            job = self.store.one("SELECT * FROM job WHERE id = ?", (request.job.id,))
            if job is None:
                raise plain_internal("Failed to find job data")
            emails = [e for e in job["email"].split(",") if e]
            if request.subscriber not in emails:
                emails.append(request.subscriber)
            self.store.run("UPDATE job SET email = ? WHERE id = ?", (",".join(emails), job["id"]))
        return None

    def ShutdownIfCompleted(self, request: Any, context: Any) -> Reply:
        """Finish the job if nothing is left to do (Cuebot's repair for a missed shutdown)."""
        with self.store.tx():
            self.farm.check_job_done(job_of(self.store, request.job)["id"])
        return None

    def RunFilters(self, request: Any, context: Any) -> Reply:
        from .filters import apply_filters

        with self.store.tx():
            apply_filters(self.store, job_of(self.store, request.job)["id"])
        return None

    # -- depends ---------------------------------------------------------------
    def _depend(self, request: Any, kind: str, on: Any) -> Reply:
        """Create ``kind`` with the job as the depend-er; ``on(store)`` finds the other side."""
        with self.store.tx():
            job = job_of(self.store, request.job)
            other = on(self.store)
            try:
                dep_id = depends.create(self.farm, kind, depends.Side(job["id"]), other)
            except depends.DependError as e:
                raise depend_error(e) from None
        return dict(depend=one_depend(self.store, dep_id))

    def _side(self, table: str, key: str) -> Any:
        """The depend-on side by id; a missing one is the servant's ``Job not found``."""
        def find(store: Store) -> depends.Side:
            row = store.one(f"SELECT * FROM {table} WHERE id = ?", (key,)) if key else None
            if row is None:
                raise job_not_found()
            return depends.Side(row["job_id"] if table != "job" else row["id"],
                                row["layer_id"] if table == "frame" else
                                row["id"] if table == "layer" else None,
                                row["id"] if table == "frame" else None)
        return find

    def CreateDependencyOnJob(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "JOB_ON_JOB", self._side("job", request.on_job.id))

    def CreateDependencyOnLayer(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "JOB_ON_LAYER", self._side("layer", request.layer.id))

    def CreateDependencyOnFrame(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "JOB_ON_FRAME", self._side("frame", request.frame.id))

    def DropDepends(self, request: Any, context: Any) -> Reply:
        """Satisfy what the job depends on (its layers' and frames' depends included)."""
        with self.store.tx():
            job = job_of(self.store, request.job)
            for dep in self.store.all(
                    f"SELECT id FROM depend WHERE er_job_id = ? AND active = 1 AND parent_id IS "
                    f"NULL{target_clause(request.target)} ORDER BY seq", (job["id"],)):
                self.farm.satisfy(dep["id"])
        return None

    def MarkDoneFrames(self, request: Any, context: Any) -> Reply:
        """What waits on the matching frames is satisfied; the frames keep their state."""
        with self.store.tx():
            job = job_of(self.store, request.job)
            for frame in find_frames(self.store, "f.job_id = ?", (job["id"],), request.req,
                                     paged=False):
                for dep in self.farm.what_depends_on_frame(frame):
                    self.farm.satisfy(dep["id"])
        return None

    # -- dispatch order ---------------------------------------------------------
    def _each_layer(self, request: Any) -> list[Any]:
        job = job_of(self.store, request.job)
        return self.store.all("SELECT * FROM layer WHERE job_id = ? ORDER BY dispatch_order",
                              (job["id"],))

    def ReorderFrames(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layers = self._each_layer(request)
            numbers = cue_frame_set(request.range)
            order = job_pb2.Order.Name(request.order)
            for layer in layers:
                ordering.reorder_layer(self.store, layer, numbers, order)
        return None

    def StaggerFrames(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            for layer in self._each_layer(request):
                if not ordering.stagger_layer(self.store, layer, request.range, request.stagger):
                    break  # Cuebot's queued command stops at the first failing layer
        return None

    # -- local booking ----------------------------------------------------------
    def AddRenderPartition(self, request: Any, context: Any) -> Reply:
        from .partitions import add_render_partition

        with self.store.tx():
            job = job_of(self.store, request.job)
        return add_render_partition(self.farm, request, "JOB_PARTITION", job_id=job["id"])

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

    def _bulk(self, request: Any, action: Any, req: Any = None) -> None:
        """Apply ``action(frame_row)`` to every frame matching ``req`` (no paging)."""
        with self.store.tx():
            job = job_of(self.store, request.job)
            for frame in find_frames(self.store, "f.job_id = ?", (job["id"],),
                                     request.req if req is None else req, paged=False):
                action(frame)

    def EatFrames(self, request: Any, context: Any) -> Reply:
        self._bulk(request, lambda f: self.farm.eat_frame(f["id"]))
        return None

    def RetryFrames(self, request: Any, context: Any) -> Reply:
        self._bulk(request, lambda f: self.farm.retry_frame(f["id"]))
        return None

    def KillFrames(self, request: Any, context: Any) -> Reply:
        """Cuebot drops the ``states`` filter before it looks for procs to kill."""
        req = job_pb2.FrameSearchCriteria()
        req.CopyFrom(request.req)
        req.ClearField("states")
        self._bulk(request, lambda f: self.farm.kill_frame(f["id"]), req)
        return None

    def MarkAsWaiting(self, request: Any, context: Any) -> Reply:
        self._bulk(request, lambda f: self.farm.mark_as_waiting(f["id"]))
        return None


# ---------------------------------------------------------------------------
class DependServant(Servant):
    SERVICE = "depend.DependInterface"

    def GetDepend(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM depend WHERE id = ?", (request.id,))
        return dict(depend=M.depends(self.store, [row])[0])

    def Satisfy(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.satisfy(by_id(self.store, "depend", request.depend.id)["id"])
        return None

    def Unsatisfy(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.unsatisfy(by_id(self.store, "depend", request.depend.id)["id"])
        return None


ALL_JOB_DEFAULTS = ("priority", "min_cores", "max_cores", "min_gpus", "max_gpus")

SERVANTS = [JobServant, DependServant]
