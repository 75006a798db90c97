"""job.GroupInterface, as Cuebot's ManageGroup and GroupManager answer it.

Lookups (GetGroup, FindGroup) are NOT_FOUND ``Incorrect result size:
expected 1, actual 0``; everything else names its group by id and a missing
one is INTERNAL. The rules clients meet:

- CreateSubGroup: the new group sits one level below its parent, in the
  show's *default* department (Unknown), whose configuration the show gets
  if it lacks it; a sibling with the same name is INTERNAL
  (EntityCreationError);
- Delete: refused while the group has sub-groups or PENDING jobs, or a
  filter action moves jobs into it: INTERNAL ``Failed to remove group, be
  sure that there are no jobs or filter actions pointing at the group.``;
  its finished jobs move to the root group; the root group itself is never
  removed (the call succeeds and nothing happens);
- SetGroup / ReparentGroups: into another group of the same show, never
  into itself or one of its own sub-groups, and the root group cannot move
  (INTERNAL EntityModificationError with Cuebot's words); levels follow;
- SetDepartment: the group and every job in it take the department (by
  name; unknown is INTERNAL), the show gets its configuration if it lacks it;
- job defaults: SetDefaultJob{Min,Max}Cores are whole cores, 0 or less
  stored as -1 ("not set"); SetDefaultJob{Min,Max}Gpus likewise; a set
  value is also applied to every job in the group unless the group's
  department is managed. SetDefaultJobPriority stores -1 for a negative
  value but, as Cuebot does, gives every job in the group the value sent;
- SetMinCores/SetMinGpus: negative becomes 0; SetMaxCores: whole cores,
  negative -1, and under one core INTERNAL; SetMaxGpus: negative -1.
"""
from __future__ import annotations

from typing import Any

from opencue_proto import job_pb2

from . import messages as M
from .common import by_id, find_one, whole_core_units
from .servant import Reply, Servant, illegal, internal, missing, plain_internal
from .store import Store, new_id

MODIFICATION_ERROR = "com.imageworks.spcue.EntityModificationError"
CREATION_ERROR = "com.imageworks.spcue.EntityCreationError"
DELETE_REFUSED = ("Failed to remove group, be sure that there are no jobs or filter actions "
                  "pointing at the group.")
NAME_MAX = 36


def group_of(store: Store, msg: Any) -> Any:
    return by_id(store, "folder", msg.id)


class GroupServant(Servant):
    SERVICE = "job.GroupInterface"

    # -- reads -----------------------------------------------------------------
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
        return dict(jobs=job_pb2.JobSeq(jobs=M.jobs(self.store, rows)))

    # -- the tree ----------------------------------------------------------------
    def _department_config(self, show_id: str, dept_id: str) -> None:
        if self.store.one("SELECT 1 FROM point WHERE show_id = ? AND dept_id = ?",
                          (show_id, dept_id)) is None:
            self.store.insert("point", id=new_id(), show_id=show_id, dept_id=dept_id)

    def CreateSubGroup(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            parent = group_of(self.store, request.group)
            if (len(request.name) > NAME_MAX or self.store.one(
                    "SELECT 1 FROM folder WHERE parent_id = ? AND name = ?",
                    (parent["id"], request.name))):
                raise internal(CREATION_ERROR, "error creating group, org.springframework.dao."
                               "DuplicateKeyException: ERROR: duplicate key value violates "
                               "unique constraint \"c_folder_uk\"" if len(request.name) <= NAME_MAX
                               else "error creating group, ERROR: value too long for type "
                               "character varying(36)")
            dept = self.store.one("SELECT id FROM dept WHERE is_default = 1")["id"]
            group_id = new_id()
            self.store.insert("folder", id=group_id, show_id=parent["show_id"],
                              parent_id=parent["id"], name=request.name, dept_id=dept,
                              level=parent["level"] + 1)
            self._department_config(parent["show_id"], dept)
        row = self.store.one("SELECT * FROM folder WHERE id = ?", (group_id,))
        return dict(group=M.groups(self.store, [row])[0])

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            group = group_of(self.store, request.group)
            if group["parent_id"] is None:
                return None  # Cuebot's DELETE skips the top-level group
            busy = (self.store.one("SELECT 1 FROM folder WHERE parent_id = ?", (group["id"],))
                    or self.store.one("SELECT 1 FROM job WHERE folder_id = ? AND state = "
                                      "'PENDING'", (group["id"],))
                    or self.store.one("SELECT 1 FROM action WHERE type = 'MOVE_JOB_TO_GROUP' "
                                      "AND group_value = ?", (group["id"],)))
            if busy:
                raise plain_internal(DELETE_REFUSED)
            root = self.farm.root_folder(group["show_id"])
            self.store.run("UPDATE job SET folder_id = ? WHERE folder_id = ?",
                           (root["id"], group["id"]))
            self.store.run("DELETE FROM folder WHERE id = ?", (group["id"],))
        return None

    def _move(self, group: Any, dest: Any) -> None:
        if group["id"] == dest["id"]:
            raise internal(MODIFICATION_ERROR, "error moving group, cannot move group into itself")
        if group["show_id"] != dest["show_id"]:
            raise internal(MODIFICATION_ERROR,
                           "error moving group, cannot move groups between shows")
        ancestor = dest["parent_id"]
        while ancestor is not None:
            if ancestor == group["id"]:
                raise internal(MODIFICATION_ERROR, "error moving group, you cannot move a group "
                                                   "into one of its sub groups")
            ancestor = self.store.one("SELECT parent_id FROM folder WHERE id = ?",
                                      (ancestor,))["parent_id"]
        if group["parent_id"] is None:
            raise internal(MODIFICATION_ERROR, f"error moving group, {group['name']}, the group "
                                               f"does not exist or its the top level group")
        self.store.run("UPDATE folder SET parent_id = ? WHERE id = ?", (dest["id"], group["id"]))
        self._relevel(group["id"], dest["level"] + 1)

    def _relevel(self, group_id: str, level: int) -> None:
        self.store.run("UPDATE folder SET level = ? WHERE id = ?", (level, group_id))
        for child in self.store.all("SELECT id FROM folder WHERE parent_id = ?", (group_id,)):
            self._relevel(child["id"], level + 1)

    def SetGroup(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            group = group_of(self.store, request.group)
            dest = by_id(self.store, "folder", request.parent_group.id)
            self._move(group, dest)
        return None

    def ReparentGroups(self, request: Any, context: Any) -> Reply:
        """The named groups that exist move under this one (unknown ids are skipped)."""
        with self.store.tx():
            dest = group_of(self.store, request.group)
            for msg in request.groups.groups:
                group = self.store.one("SELECT * FROM folder WHERE id = ?", (msg.id,))
                if group is not None:
                    self._move(group, self.store.one("SELECT * FROM folder WHERE id = ?",
                                                     (dest["id"],)))
        return None

    def SetName(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            group = group_of(self.store, request.group)
            if len(request.name) > NAME_MAX or (group["parent_id"] and self.store.one(
                    "SELECT 1 FROM folder WHERE parent_id = ? AND name = ? AND id != ?",
                    (group["parent_id"], request.name, group["id"]))):
                raise internal("org.springframework.dao.DataIntegrityViolationException",
                               "ERROR: duplicate key value violates unique constraint "
                               "\"c_folder_uk\"" if len(request.name) <= NAME_MAX
                               else "ERROR: value too long for type character varying(36)")
            self.store.run("UPDATE folder SET name = ? WHERE id = ?", (request.name, group["id"]))
        return None

    def SetDepartment(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            group = group_of(self.store, request.group)
            dept = self.store.one("SELECT * FROM dept WHERE name = ?", (request.dept,))
            if dept is None:
                raise missing()
            self._department_config(group["show_id"], dept["id"])
            self.store.run("UPDATE folder SET dept_id = ? WHERE id = ?", (dept["id"], group["id"]))
            self.store.run("UPDATE job SET dept_id = ? WHERE folder_id = ?",
                           (dept["id"], group["id"]))
        return None

    def ReparentJobs(self, request: Any, context: Any) -> Reply:
        """Jobs move in one by one; each takes the group's job defaults that are set."""
        from .jobs import ALL_JOB_DEFAULTS

        with self.store.tx():
            group = group_of(self.store, request.group)
            for msg in request.jobs.jobs:
                job = by_id(self.store, "job", msg.id)
                if job["show_id"] != group["show_id"]:
                    raise internal(MODIFICATION_ERROR,
                                   "error moving job, cannot move jobs between shows")
                self.farm.move_job(job["id"], group, ALL_JOB_DEFAULTS)
        return None

    # -- resources -----------------------------------------------------------------
    def _set(self, request: Any, column: str, value: Any) -> Any:
        with self.store.tx():
            group = group_of(self.store, request.group)
            self.store.run(f"UPDATE folder SET {column} = ? WHERE id = ?", (value, group["id"]))
        return group

    def SetMinCores(self, request: Any, context: Any) -> Reply:
        self._set(request, "min_cores", max(whole_core_units(request.min_cores), 0))
        return None

    def SetMaxCores(self, request: Any, context: Any) -> Reply:
        units = whole_core_units(request.max_cores)
        units = -1 if units < 0 else units
        if units != -1 and units < 100:
            with self.store.tx():
                group_of(self.store, request.group)
            raise illegal(f"The group max cores feature must be a whole core or greater, "
                          f"pass in: {units}")
        self._set(request, "max_cores", units)
        return None

    def SetMinGpus(self, request: Any, context: Any) -> Reply:
        self._set(request, "min_gpus", max(request.min_gpus, 0))
        return None

    def SetMaxGpus(self, request: Any, context: Any) -> Reply:
        self._set(request, "max_gpus", -1 if request.max_gpus < 0 else request.max_gpus)
        return None

    # -- defaults for the group's jobs -------------------------------------------------
    def _managed(self, group: Any) -> bool:
        return self.store.one("SELECT 1 FROM point WHERE show_id = ? AND dept_id = ? AND "
                              "ti_managed = 1", (group["show_id"], group["dept_id"])) is not None

    def _default(self, request: Any, column: str, sent: int) -> None:
        """Store the default (0 or less: -1); a set value reaches the jobs unless managed."""
        with self.store.tx():
            group = group_of(self.store, request.group)
            stored = -1 if sent <= 0 else sent
            self.store.run(f"UPDATE folder SET default_job_{column} = ? WHERE id = ?",
                           (stored, group["id"]))
            if sent != -1 and not self._managed(group):
                self.store.run(f"UPDATE job SET {column} = ? WHERE folder_id = ?",
                               (sent, group["id"]))

    def SetDefaultJobMinCores(self, request: Any, context: Any) -> Reply:
        self._default(request, "min_cores", whole_core_units(request.min_cores))
        return None

    def SetDefaultJobMaxCores(self, request: Any, context: Any) -> Reply:
        self._default(request, "max_cores", whole_core_units(request.max_cores))
        return None

    def SetDefaultJobMinGpus(self, request: Any, context: Any) -> Reply:
        self._default(request, "min_gpus", request.min_gpus)
        return None

    def SetDefaultJobMaxGpus(self, request: Any, context: Any) -> Reply:
        self._default(request, "max_gpus", request.max_gpus)
        return None

    def SetDefaultJobPriority(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            group = group_of(self.store, request.group)
            stored = -1 if request.priority < 0 else request.priority
            self.store.run("UPDATE folder SET default_job_priority = ? WHERE id = ?",
                           (stored, group["id"]))
            self.store.run("UPDATE job SET priority = ? WHERE folder_id = ?",
                           (request.priority, group["id"]))
        return None


SERVANTS = [GroupServant]
