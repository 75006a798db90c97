"""task.TaskInterface, department.DepartmentInterface,
comment.CommentInterface and cue.CueInterface, as Cuebot's servants answer them.

What clients meet here, kept as Cuebot does it:

- tasks: Delete, SetMinCores and ClearAdjustments look the task up by
  ``task.name`` taken as its id (Cuebot fills ``name`` with nothing, so a
  client sending a Task it was given fails with INTERNAL);
- departments: a Department in a request is a show's department config,
  found by id (missing -> INTERNAL); managed cores are whole cores,
  AddTask's minimum cores are plain cores; DepartmentInterface/Delete is
  not implemented by Cuebot either (UNIMPLEMENTED);
- comments: Save (subject and message) and Delete of an unknown id change
  nothing and succeed, as Cuebot's plain UPDATE/DELETE do;
- GetSystemStats: the counters of stats.py (what the sandbox dispatched,
  booked, killed and carried out since it started), queues always free.
"""
from __future__ import annotations

from typing import Any, Iterable

from opencue_proto import task_pb2

from . import messages as M
from .common import core_units, find_one, whole_core_units
from .servant import Reply, Servant, internal, missing
from .store import new_id

INTEGRITY_ERROR = "org.springframework.dao.DataIntegrityViolationException"


# ---------------------------------------------------------------------------
class TaskServant(Servant):
    SERVICE = "task.TaskInterface"

    def _task(self, msg: Any) -> Any:
        """Cuebot's bug, kept: the task's *name* is used as its id."""
        row = self.store.one("SELECT * FROM task WHERE id = ?", (msg.name,)) if msg.name else None
        if row is None:
            raise missing()
        return row

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.store.run("DELETE FROM task WHERE id = ?", (self._task(request.task)["id"],))
        return None

    def SetMinCores(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            task = self._task(request.task)
            self.store.run("UPDATE task SET min_cores = ? WHERE id = ?",
                           (whole_core_units(request.new_min_cores), task["id"]))
        return None

    def ClearAdjustments(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            task = self._task(request.task)
            self.store.run("UPDATE task SET adjust_cores = 0 WHERE id = ?", (task["id"],))
        return None


# ---------------------------------------------------------------------------
class DepartmentServant(Servant):
    SERVICE = "department.DepartmentInterface"

    def _point(self, msg: Any) -> Any:
        row = self.store.one("SELECT * FROM point WHERE id = ?", (msg.id,)) if msg.id else None
        if row is None:
            raise missing()
        return row

    def _tasks(self, point_id: str) -> task_pb2.TaskSeq:
        rows = self.store.all("SELECT * FROM task WHERE point_id = ? ORDER BY shot", (point_id,))
        return task_pb2.TaskSeq(tasks=M.tasks(self.store, rows))

    def _add_tasks(self, point_id: str, shots: Iterable[tuple[str, float]]) -> list[str]:
        ids = []
        for shot, cores in shots:
            if self.store.one("SELECT 1 FROM task WHERE point_id = ? AND shot = ?",
                              (point_id, shot)):
                raise internal(INTEGRITY_ERROR, f"a task for shot {shot} exists")
            ids.append(new_id())
            self.store.insert("task", id=ids[-1], point_id=point_id, shot=shot,
                              min_cores=core_units(cores))
        return ids

    # -- reads ---------------------------------------------------------------
    def GetDepartmentNames(self, request: Any, context: Any) -> Reply:
        return dict(names=[r["name"] for r in self.store.all("SELECT name FROM dept ORDER BY name")])

    def GetTasks(self, request: Any, context: Any) -> Reply:
        return dict(tasks=self._tasks(self._point(request.department)["id"]))

    # -- tasks ---------------------------------------------------------------
    def AddTask(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            point = self._point(request.department)
            (tid,) = self._add_tasks(point["id"], [(request.shot, request.min_cores)])
        row = self.store.one("SELECT * FROM task WHERE id = ?", (tid,))
        return dict(task=M.tasks(self.store, [row])[0])

    def AddTasks(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            point = self._point(request.department)
            self._add_tasks(point["id"], sorted(request.tmap.items()))
        return dict(tasks=self._tasks(point["id"]))

    def ReplaceTasks(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            point = self._point(request.department)
            self.store.run("DELETE FROM task WHERE point_id = ?", (point["id"],))
            self._add_tasks(point["id"], sorted(request.tmap.items()))
        return dict(tasks=self._tasks(point["id"]))

    def ClearTasks(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.store.run("DELETE FROM task WHERE point_id = ?",
                           (self._point(request.department)["id"],))
        return None

    def ClearTaskAdjustments(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.store.run("UPDATE task SET adjust_cores = 0 WHERE point_id = ?",
                           (self._point(request.department)["id"],))
        return None

    # -- management ----------------------------------------------------------
    def _update(self, msg: Any, **values: Any) -> None:
        with self.store.tx():
            point = self._point(msg)
            sets = ", ".join(f"{c} = ?" for c in values)
            self.store.run(f"UPDATE point SET {sets} WHERE id = ?", (*values.values(), point["id"]))

    def SetManagedCores(self, request: Any, context: Any) -> Reply:
        self._update(request.department, min_cores=whole_core_units(request.managed_cores))
        return None

    def EnableTiManaged(self, request: Any, context: Any) -> Reply:
        self._update(request.department, ti_managed=1, ti_task=request.ti_task,
                     min_cores=whole_core_units(request.managed_cores))
        return None

    def DisableTiManaged(self, request: Any, context: Any) -> Reply:
        self._update(request.department, ti_managed=0, ti_task="")
        return None

    # -- department names ----------------------------------------------------
    def AddDepartmentName(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            if self.store.one("SELECT 1 FROM dept WHERE name = ?", (request.name,)):
                raise internal(INTEGRITY_ERROR, f"department {request.name} exists")
            self.store.insert("dept", id=new_id(), name=request.name)
        return None

    def RemoveDepartmentName(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            dept = find_one(self.store, "SELECT * FROM dept WHERE name = ?", (request.name,),
                            lookup=False)
            for table in ("point", "folder", "job"):
                if self.store.one(f"SELECT 1 FROM {table} WHERE dept_id = ? LIMIT 1",
                                  (dept["id"],)):
                    raise internal(INTEGRITY_ERROR, f"department {dept['name']} is in use")
            self.store.run("DELETE FROM dept WHERE id = ?", (dept["id"],))
        return None


# ---------------------------------------------------------------------------
class CommentServant(Servant):
    SERVICE = "comment.CommentInterface"

    def Save(self, request: Any, context: Any) -> Reply:
        c = request.comment
        with self.store.tx():
            self.store.run("UPDATE comment SET subject = ?, message = ? WHERE id = ?",
                           (c.subject, c.message, c.id))
        return None

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.store.run("DELETE FROM comment WHERE id = ?", (request.comment.id,))
        return None


class CueServant(Servant):
    SERVICE = "cue.CueInterface"

    def GetSystemStats(self, request: Any, context: Any) -> Reply:
        """Cuebot's live counters, as the sandbox keeps them (see stats.py)."""
        return dict(stats=self.farm.counters.message())


SERVANTS = [TaskServant, DepartmentServant, CommentServant, CueServant]
