"""show.ShowInterface, as Cuebot's ManageShow answers it.

A show in a request is found by id, else by name; a missing one is INTERNAL
(only FindShow is a lookup RPC with NOT_FOUND). CreateShow normalises the
name (lower case, '-' -> '_'); unlike Cuebot, which accepts a duplicate and
then fails every later lookup, the sandbox refuses a duplicate name with
INTERNAL ``Show could not be created.`` plus the reason.
"""
from __future__ import annotations

from typing import Any

from opencue_proto import department_pb2, filter_pb2, host_pb2, job_pb2, service_pb2, show_pb2
from opencue_proto import subscription_pb2

from . import messages as M
from .common import NAME_OK, core_units, find_one, show_of, whole_core_units
from .servant import Reply, Servant, illegal, internal, missing, plain_internal
from .store import new_id


DUPLICATE_KEY = "org.springframework.dao.DuplicateKeyException"


class ShowServant(Servant):
    SERVICE = "show.ShowInterface"

    # -- reads -----------------------------------------------------------
    def GetShows(self, request: Any, context: Any) -> Reply:
        rows = self.store.all("SELECT * FROM show ORDER BY seq")
        return dict(shows=show_pb2.ShowSeq(shows=M.shows(self.store, rows)))

    def GetActiveShows(self, request: Any, context: Any) -> Reply:
        rows = self.store.all("SELECT * FROM show WHERE active = 1 ORDER BY seq")
        return dict(
            shows=show_pb2.ShowSeq(shows=M.shows(self.store, rows)))

    def FindShow(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM show WHERE name = ?", (request.name,))
        return dict(show=M.shows(self.store, [row])[0])

    def GetRootGroup(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        row = self.farm.root_folder(show["id"])
        return dict(group=M.groups(self.store, [row])[0])

    def GetGroups(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        rows = self.store.all("SELECT * FROM folder WHERE show_id = ? ORDER BY level, name",
                              (show["id"],))
        return dict(groups=job_pb2.GroupSeq(
            groups=M.groups(self.store, rows)))

    def GetJobs(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        rows = self.store.all("SELECT * FROM job WHERE show_id = ? AND state = 'PENDING' "
                              "ORDER BY name", (show["id"],))
        return dict(jobs=job_pb2.JobSeq(jobs=M.jobs(self.store, rows)))

    def GetJobWhiteboard(self, request: Any, context: Any) -> Reply:
        from .whiteboard import job_whiteboard

        show = show_of(self.store, request.show)
        return dict(whiteboard=job_whiteboard(self.store, show["id"]))

    def GetSubscriptions(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        rows = self.store.all("SELECT * FROM subscription WHERE show_id = ? ORDER BY seq",
                              (show["id"],))
        return dict(subscriptions=subscription_pb2.SubscriptionSeq(
            subscriptions=M.subscriptions(self.store, rows)))

    def GetFilters(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        rows = self.store.all("SELECT * FROM filter WHERE show_id = ? ORDER BY ord, seq",
                              (show["id"],))
        return dict(filters=filter_pb2.FilterSeq(
            filters=M.filters(rows)))

    def FindFilter(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        row = find_one(self.store, "SELECT * FROM filter WHERE show_id = ? AND name = ?",
                       (show["id"], request.name))
        return dict(filter=M.filters([row])[0])

    def GetDepartments(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        rows = self.store.all("SELECT p.* FROM point p JOIN dept d ON d.id = p.dept_id "
                              "WHERE p.show_id = ? ORDER BY d.name", (show["id"],))
        return dict(departments=department_pb2.DepartmentSeq(
            departments=M.departments(self.store, rows)))

    def GetDepartment(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        row = find_one(self.store, "SELECT p.* FROM point p JOIN dept d ON d.id = p.dept_id "
                       "WHERE p.show_id = ? AND d.name = ?", (show["id"], request.department))
        return dict(department=M.departments(self.store, [row])[0])

    def GetServiceOverrides(self, request: Any,
                            context: Any) -> Reply:
        show = show_of(self.store, request.show)
        rows = self.store.all("SELECT * FROM service WHERE show_id = ? ORDER BY name",
                              (show["id"],))
        return dict(
            service_overrides=service_pb2.ServiceOverrideSeq(
                service_overrides=[M.service_override(r) for r in rows]))

    def GetServiceOverride(self, request: Any,
                           context: Any) -> Reply:
        show = show_of(self.store, request.show)
        row = find_one(self.store, "SELECT * FROM service WHERE show_id = ? AND (name = ? OR "
                       "id = ?)", (show["id"], request.name, request.name))
        return dict(service_override=M.service_override(row))

    def GetDeeds(self, request: Any, context: Any) -> Reply:
        show = show_of(self.store, request.show)
        rows = self.store.all("SELECT d.* FROM deed d JOIN owner o ON o.id = d.owner_id "
                              "WHERE o.show_id = ?", (show["id"],))
        return dict(deeds=host_pb2.DeedSeq(
            deeds=M.deeds(self.store, rows)))

    # -- creation --------------------------------------------------------
    def CreateShow(self, request: Any, context: Any) -> Reply:
        name = request.name.lower().replace("-", "_")
        if len(name) < 3:
            raise plain_internal(
                "Show could not be created.The show name must be at least 3 characters.")
        if not NAME_OK.match(name):
            raise plain_internal(
                f"Show could not be created.The show name: {name} is not in the proper format."
                "  Show names must be alpha numeric, no dashes or punctuation.")
        if len(name) > 36:
            raise plain_internal("Show could not be created.ERROR: value too long for type "
                                 "character varying(36)")
        with self.store.tx():
            if self.store.one("SELECT 1 FROM show WHERE name = ?", (name,)):
                raise plain_internal(f"Show could not be created.A show named {name} exists.")
            show_id = self.farm.create_show(name)
        row = self.store.one("SELECT * FROM show WHERE id = ?", (show_id,))
        return dict(show=M.shows(self.store, [row])[0])

    def CreateSubscription(self, request: Any,
                           context: Any) -> Reply:
        with self.store.tx():
            show = show_of(self.store, request.show)
            alloc = self.store.one("SELECT * FROM alloc WHERE id = ?", (request.allocation_id,))
            if alloc is None:
                raise missing()
            if self.store.one("SELECT 1 FROM subscription WHERE show_id = ? AND alloc_id = ?",
                              (show["id"], alloc["id"])):  # Cuebot's unique index answers
                raise internal(DUPLICATE_KEY, "PreparedStatementCallback; ERROR: duplicate key "
                               "value violates unique constraint \"c_subscription_uk\"\n  Detail: "
                               f"Key (pk_show, pk_alloc)=({show['id']}, {alloc['id']}) already "
                               "exists.")
            sub_id = new_id()
            self.store.insert("subscription", id=sub_id, show_id=show["id"],
                              alloc_id=alloc["id"], size=core_units(request.size),
                              burst=core_units(request.burst))
        row = self.store.one("SELECT * FROM subscription WHERE id = ?", (sub_id,))
        return dict(
            subscription=M.subscriptions(self.store, [row])[0])

    def CreateFilter(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            show = show_of(self.store, request.show)
            top = self.store.one("SELECT MAX(ord) AS o FROM filter WHERE show_id = ?",
                                 (show["id"],))["o"]
            fid = new_id()
            self.store.insert("filter", id=fid, show_id=show["id"], name=request.name,
                              type="MATCH_ALL", ord=(top or 0) + 1, enabled=1)
        row = self.store.one("SELECT * FROM filter WHERE id = ?", (fid,))
        return dict(filter=M.filters([row])[0])

    def CreateOwner(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            show = show_of(self.store, request.show)
            if self.store.one("SELECT 1 FROM owner WHERE name = ?", (request.name,)):
                raise illegal(f"owner {request.name} exists")
            oid = new_id()
            self.store.insert("owner", id=oid, name=request.name, show_id=show["id"])
        row = self.store.one("SELECT * FROM owner WHERE id = ?", (oid,))
        return dict(owner=M.owners(self.store, [row])[0])

    def CreateServiceOverride(self, request: Any,
                              context: Any) -> Reply:
        from .services import service_columns

        with self.store.tx():
            show = show_of(self.store, request.show)
            sid = new_id()
            self.store.insert("service", id=sid, show_id=show["id"],
                              **service_columns(request.service))
        row = self.store.one("SELECT * FROM service WHERE id = ?", (sid,))
        return dict(service_override=M.service_override(row))

    # -- settings --------------------------------------------------------
    def _set(self, request: Any, column: str, value: Any) -> None:
        with self.store.tx():
            show = show_of(self.store, request.show)
            self.store.run(f"UPDATE show SET {column} = ? WHERE id = ?", (value, show["id"]))

    def EnableBooking(self, request: Any, context: Any) -> Reply:
        self._set(request, "booking_enabled", int(request.enabled))
        return None

    def EnableDispatching(self, request: Any,
                          context: Any) -> Reply:
        self._set(request, "dispatch_enabled", int(request.enabled))
        return None

    def SetActive(self, request: Any, context: Any) -> Reply:
        self._set(request, "active", int(request.value))
        return None

    def SetCommentEmail(self, request: Any, context: Any) -> Reply:
        self._set(request, "comment_email", request.email)
        return None

    def SetDefaultMaxCores(self, request: Any,
                           context: Any) -> Reply:
        self._set(request, "default_max_cores", whole_core_units(request.max_cores))
        return None

    def SetDefaultMinCores(self, request: Any,
                           context: Any) -> Reply:
        self._set(request, "default_min_cores", whole_core_units(request.min_cores))
        return None

    def SetDefaultMaxGpus(self, request: Any,
                          context: Any) -> Reply:
        self._set(request, "default_max_gpus", request.max_gpus)
        return None

    def SetDefaultMinGpus(self, request: Any,
                          context: Any) -> Reply:
        self._set(request, "default_min_gpus", request.min_gpus)
        return None

    def SetSchedulerManaged(self, request: Any,
                            context: Any) -> Reply:
        self._set(request, "scheduler_managed", int(request.enabled))
        return None

    def Archive(self, request: Any, context: Any) -> Reply:
        """The show's name becomes an alias of the target show (new jobs launched under it
        go there) and the show is renamed ``<name>_archive``; its jobs stay where they are."""
        with self.store.tx():
            show = show_of(self.store, request.show)
            target = find_one(self.store, "SELECT * FROM show WHERE name = ?",
                              (request.target_show_name,), lookup=False)
            self.store.run("INSERT OR REPLACE INTO show_alias (name, show_id) VALUES (?, ?)",
                           (show["name"], target["id"]))
            self.store.run("UPDATE show SET name = ? WHERE id = ?",
                           (f"{show['name']}_archive", show["id"]))
        return None

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            show = show_of(self.store, request.show)
            if self.store.one("SELECT 1 FROM job WHERE show_id = ?", (show["id"],)):
                raise illegal(f"show {show['name']} has jobs and cannot be deleted")
            for table in ("subscription", "filter", "owner", "point", "show_alias"):
                self.store.run(f"DELETE FROM {table} WHERE show_id = ?", (show["id"],))
            self.store.run("DELETE FROM service WHERE show_id = ?", (show["id"],))
            self.store.run("DELETE FROM folder WHERE show_id = ?", (show["id"],))
            self.store.run("DELETE FROM show WHERE id = ?", (show["id"],))
        return None
