"""job.FrameInterface, as Cuebot's ManageFrame answers it.

Lookups (GetFrame, FindFrame) are NOT_FOUND ``Incorrect result size:
expected 1, actual 0``; every other RPC names its frame by id and a missing
one is INTERNAL (Spring's EmptyResultDataAccessException). Frame.GetFrames
finds its job by the job's *visible* name, so a finished job (or one a
retry reopened) is INTERNAL there.

- CreateDependencyOn{Job,Layer,Frame}: see depends.py; a frame may make a
  FRAME_ON_FRAME on itself, as Cuebot lets it (it then waits for ever,
  until DropDepends);
- DropDepends satisfies what the frame depends on (FRAME_ON_JOB/LAYER/
  FRAME, frame-by-frame children included) for the requested target;
- MarkAsDepend: a WAITING frame with active depends on it becomes DEPEND
  with its depend count recomputed the way Cuebot counts (every active,
  non-container depend of its job on JOB_ON_*, of its layer, or of itself);
- SetCheckpointState: COMPLETE only from COPYING or ENABLED (and counts the
  checkpoint); DISABLED, or a successful COMPLETE, brings a CHECKPOINT
  frame back to WAITING;
- state display overrides: one per frame and state (a new text or colour
  for a state replaces the old); a frame shows the override of its current
  state. An override for a frame that does not exist is INTERNAL (a foreign
  key); listing one is empty.
"""
from __future__ import annotations

from typing import Any

from opencue_proto import job_pb2

from . import depends
from . import messages as M
from .common import by_id, find_one
from .criteria import find_frames
from .farm import settled
from .jobs import depend_on, depend_seq, target_clause
from .servant import Reply, Servant, internal
from .store import Store, now

INTEGRITY_ERROR = "org.springframework.dao.DataIntegrityViolationException"


def frame_of(store: Store, msg: Any) -> Any:
    return by_id(store, "frame", msg.id)


class FrameServant(Servant):
    SERVICE = "job.FrameInterface"

    # -- reads -----------------------------------------------------------------
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
        return dict(frames=job_pb2.FrameSeq(frames=M.frames(self.store, rows)))

    def GetWhatDependsOnThis(self, request: Any, context: Any) -> Reply:
        frame = frame_of(self.store, request.frame)
        return dict(depends=depend_seq(self.store, "on_frame_id = ?", (frame["id"],)))

    def GetWhatThisDependsOn(self, request: Any, context: Any) -> Reply:
        f = frame_of(self.store, request.frame)
        return dict(depends=depend_seq(
            self.store, "(er_job_id = ? AND type IN ('JOB_ON_JOB', 'JOB_ON_LAYER', "
            "'JOB_ON_FRAME')) OR (er_layer_id = ? AND type IN ('LAYER_ON_JOB', "
            "'LAYER_ON_LAYER', 'LAYER_ON_FRAME')) OR er_frame_id = ?",
            (f["job_id"], f["layer_id"], f["id"])))

    def GetFrameStateDisplayOverrides(self, request: Any, context: Any) -> Reply:
        rows = self.store.all("SELECT * FROM frame_override WHERE frame_id = ? ORDER BY rowid",
                              (request.frame.id,))
        return dict(overrides=job_pb2.FrameStateDisplayOverrideSeq(
            overrides=[M.display_override(r) for r in rows]))

    # -- state -----------------------------------------------------------------
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

    def MarkAsDepend(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            f = frame_of(self.store, request.frame)
            count = self.store.one(
                "SELECT COUNT(*) AS n FROM depend WHERE ((er_job_id = ? AND type LIKE 'JOB_ON%') "
                "OR er_layer_id = ? OR er_frame_id = ?) AND active = 1 AND composite = 0",
                (f["job_id"], f["layer_id"], f["id"]))["n"]
            if count > 0:
                self.store.run("UPDATE frame SET state = 'DEPEND', depend_count = ?, "
                               "updated_time = ? WHERE id = ? AND state = 'WAITING'",
                               (count, now(), f["id"]))
        return None

    def SetCheckpointState(self, request: Any, context: Any) -> Reply:
        state = job_pb2.CheckpointState.Name(request.state)
        with self.store.tx():
            f = frame_of(self.store, request.frame)
            if state == "COMPLETE":
                changed = self.store.run(
                    "UPDATE frame SET checkpoint_state = 'COMPLETE', checkpoint_count = "
                    "checkpoint_count + 1 WHERE id = ? AND checkpoint_state IN ('COPYING', "
                    "'ENABLED')", (f["id"],)) == 1
            else:
                self.store.run("UPDATE frame SET checkpoint_state = ? WHERE id = ?",
                               (state, f["id"]))
                changed = True
            if state == "DISABLED" or (state == "COMPLETE" and changed):
                self.store.run("UPDATE frame SET state = ?, updated_time = ? WHERE id = ? AND "
                               "state = 'CHECKPOINT'",
                               (settled("WAITING", f["depend_count"]), now(), f["id"]))
        return None

    def SetFrameStateDisplayOverride(self, request: Any, context: Any) -> Reply:
        o = request.override
        with self.store.tx():
            if self.store.one("SELECT 1 FROM frame WHERE id = ?", (request.frame.id,)) is None:
                raise internal(INTEGRITY_ERROR, "ERROR: insert or update on table "
                               "\"frame_state_display_overrides\" violates foreign key constraint")
            self.store.run(
                "INSERT INTO frame_override (frame_id, state, text, rgb) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(frame_id, state) DO UPDATE SET text = excluded.text, "
                "rgb = excluded.rgb",
                (request.frame.id, job_pb2.FrameState.Name(o.state), o.text,
                 f"{o.color.red},{o.color.green},{o.color.blue}"))
        return None

    # -- depends ---------------------------------------------------------------
    def _depend(self, request: Any, kind: str, table: str, key: str) -> Reply:
        with self.store.tx():
            f = frame_of(self.store, request.frame)
            return depend_on(self.farm, self.store, kind,
                             depends.Side(f["job_id"], f["layer_id"], f["id"]), table, key)

    def CreateDependencyOnJob(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "FRAME_ON_JOB", "job", request.job.id)

    def CreateDependencyOnLayer(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "FRAME_ON_LAYER", "layer", request.layer.id)

    def CreateDependencyOnFrame(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "FRAME_ON_FRAME", "frame", request.depend_on_frame.id)

    def DropDepends(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            f = frame_of(self.store, request.frame)
            for dep in self.store.all(
                    f"SELECT id FROM depend WHERE er_frame_id = ? AND active = 1 AND type IN "
                    f"('FRAME_ON_JOB', 'FRAME_ON_LAYER', 'FRAME_ON_FRAME')"
                    f"{target_clause(request.target)} ORDER BY seq", (f["id"],)):
                self.farm.satisfy(dep["id"])
        return None

    # -- local booking -----------------------------------------------------------
    def AddRenderPartition(self, request: Any, context: Any) -> Reply:
        from .partitions import add_render_partition

        with self.store.tx():
            f = frame_of(self.store, request.frame)
        return add_render_partition(self.farm, request, "FRAME_PARTITION", job_id=f["job_id"],
                                    layer_id=f["layer_id"], frame_id=f["id"])


SERVANTS = [FrameServant]
