"""host.HostInterface, OwnerInterface, ProcInterface and DeedInterface, as Cuebot's
ManageHost/Owner/Proc/Deed answer them.

Missing objects: only the lookups (Host FindHost/GetHost, Owner GetOwner)
are NOT_FOUND ``Incorrect result size: expected 1, actual 0``; every other
RPC names its host/owner/proc/deed by id and a missing one is INTERNAL with
Spring's EmptyResultDataAccessException text (Owner.TakeOwnership finds its
host by *name*). Quirks kept because clients meet them on a real Cuebot:

- tags: AddTags adds each non-empty tag (trimmed after that check, so a
  blank one is added empty) as MANUAL, duplicates included; RemoveTags and RenameTag never touch the ALLOC tag; listings
  order tags by type (ALLOC, HARDWARE, HOSTNAME, MANUAL), then name;
- Lock/Unlock succeed at once: there is no RQD to tell (Cuebot would fail
  if it could not reach one); Reboot/RebootWhenIdle only set the state;
- SetAllocation refuses a host with procs and swaps its ALLOC tag;
- TakeOwnership needs a NIMBY host (``Cannot setup deeeds on non-NIMBY
  hosts.``, sic) and replaces the host's deed;
- Deed.GetHost looks the *deed id* up as a host id, so it fails (INTERNAL);
- Proc.Kill ends the render (resources back to the host, frame WAITING);
  Proc.Unbook only marks the proc unbooked unless ``kill`` is set.
"""
from __future__ import annotations

from typing import Any

from opencue_proto import comment_pb2, host_pb2, renderPartition_pb2

from . import messages as M
from . import redirect, whiteboard
from .common import find_one
from .hostsearch import find_hosts, find_procs
from .servant import Reply, Servant, internal, missing
from .store import Store, new_id, now

SPCUE_ERROR = "com.imageworks.spcue.SpcueRuntimeException"
MODIFICATION_ERROR = "com.imageworks.spcue.EntityModificationError"
INTEGRITY_ERROR = "org.springframework.dao.DataIntegrityViolationException"


def _by_id(store: Store, table: str, key: str) -> Any:
    """The row a mutating RPC names by id; missing -> INTERNAL (Cuebot's rule)."""
    row = store.one(f"SELECT * FROM {table} WHERE id = ?", (key,)) if key else None
    if row is None:
        raise missing()
    return row


def _hosts(store: Store, rows: list[Any]) -> host_pb2.HostSeq:
    return host_pb2.HostSeq(hosts=M.hosts(store, rows))


def _procs(store: Store, rows: list[Any]) -> host_pb2.ProcSeq:
    return host_pb2.ProcSeq(procs=M.procs(store, rows))


# ---------------------------------------------------------------------------
class HostServant(Servant):
    SERVICE = "host.HostInterface"

    # -- reads ---------------------------------------------------------------
    def GetHosts(self, request: Any, context: Any) -> Reply:
        return dict(hosts=_hosts(self.store, find_hosts(self.store, request.r)))

    def FindHost(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM host WHERE name = ?", (request.name,))
        return dict(host=M.hosts(self.store, [row])[0])

    def GetHost(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM host WHERE id = ?", (request.id,))
        return dict(host=M.hosts(self.store, [row])[0])

    def GetProcs(self, request: Any, context: Any) -> Reply:
        host = _by_id(self.store, "host", request.host.id)
        rows = self.store.all("SELECT * FROM proc WHERE host_id = ? ORDER BY dispatch_time, id",
                              (host["id"],))
        return dict(procs=_procs(self.store, rows))

    def GetComments(self, request: Any, context: Any) -> Reply:
        host = _by_id(self.store, "host", request.host.id)
        rows = self.store.all("SELECT * FROM comment WHERE host_id = ? ORDER BY timestamp, seq",
                              (host["id"],))
        return dict(comments=comment_pb2.CommentSeq(comments=M.comments(rows)))

    def GetOwner(self, request: Any, context: Any) -> Reply:
        host = _by_id(self.store, "host", request.host.id)
        row = find_one(self.store, "SELECT o.* FROM owner o JOIN deed d ON d.owner_id = o.id "
                       "WHERE d.host_id = ?", (host["id"],), lookup=False)
        return dict(owner=M.owners(self.store, [row])[0])

    def GetDeed(self, request: Any, context: Any) -> Reply:
        host = _by_id(self.store, "host", request.host.id)
        row = find_one(self.store, "SELECT * FROM deed WHERE host_id = ?", (host["id"],),
                       lookup=False)
        return dict(deed=M.deeds(self.store, [row])[0])

    def GetRenderPartitions(self, request: Any, context: Any) -> Reply:
        from .partitions import partition_messages

        host = _by_id(self.store, "host", request.host.id)
        rows = self.store.all("SELECT * FROM host_local WHERE host_id = ? ORDER BY seq",
                              (host["id"],))
        return dict(render_partitions=renderPartition_pb2.RenderPartitionSeq(
            render_partitions=partition_messages(self.store, rows)))

    def GetHostWhiteboard(self, request: Any, context: Any) -> Reply:
        return dict(nested_hosts=whiteboard.host_whiteboard(self.store))

    def RedirectToJob(self, request: Any, context: Any) -> Reply:
        """Every named proc (by id) is redirected to the job and killed; then it is booked."""
        with self.store.tx():
            procs = [_by_id(self.store, "proc", key) for key in request.proc_names]
            job = _by_id(self.store, "job", request.job_id)
            for proc in procs:
                redirect.set_redirect(self.farm, proc["id"], "JOB", job["id"])
            hosts = list(dict.fromkeys(p["host_id"] for p in procs))
            for proc in procs:
                self.farm.kill_proc(proc["id"])
            for host_id in hosts:
                redirect.follow(self.farm, host_id, "JOB", job["id"], now())
        return dict(value=True)

    def _restart_rqd(self, request: Any, state: str) -> None:
        """Cuebot marks the host before telling its RQD; a host that is not UP is refused."""
        with self.store.tx():
            host = _by_id(self.store, "host", request.host.id)
            if host["state"] != "UP":
                raise internal("java.lang.IllegalStateException",
                               f"Cannot restart RQD on {host['name']}: the host is "
                               f"{host['state']}, not UP")
            self.store.run("UPDATE host SET state = ? WHERE id = ?", (state, host["id"]))

    def RestartRqdNow(self, request: Any, context: Any) -> Reply:
        self._restart_rqd(request, "REBOOTING")
        return None

    def RestartRqdWhenIdle(self, request: Any, context: Any) -> Reply:
        self._restart_rqd(request, "REBOOT_WHEN_IDLE")
        return None

    # -- state ---------------------------------------------------------------
    def _set(self, request: Any, column: str, value: Any) -> None:
        with self.store.tx():
            host = _by_id(self.store, "host", request.host.id)
            self.store.run(f"UPDATE host SET {column} = ? WHERE id = ?", (value, host["id"]))

    def Lock(self, request: Any, context: Any) -> Reply:
        self._set(request, "lock_state", "LOCKED")
        return None

    def Unlock(self, request: Any, context: Any) -> Reply:
        self._set(request, "lock_state", "OPEN")
        return None

    def SetHardwareState(self, request: Any, context: Any) -> Reply:
        self._set(request, "state", host_pb2.HardwareState.Name(request.state))
        return None

    def Reboot(self, request: Any, context: Any) -> Reply:
        self._set(request, "state", "REBOOTING")
        return None

    def RebootWhenIdle(self, request: Any, context: Any) -> Reply:
        self._set(request, "state", "REBOOT_WHEN_IDLE")
        return None

    def SetOs(self, request: Any, context: Any) -> Reply:
        self._set(request, "os", request.os)
        return None

    def SetThreadMode(self, request: Any, context: Any) -> Reply:
        self._set(request, "thread_mode", host_pb2.ThreadMode.Name(request.mode))
        return None

    def SetAllocation(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            host = _by_id(self.store, "host", request.host.id)
            alloc = _by_id(self.store, "alloc", request.allocation_id)
            if self.store.one("SELECT 1 FROM proc WHERE host_id = ? LIMIT 1", (host["id"],)):
                raise internal(MODIFICATION_ERROR, "You cannot move hosts with running procs "
                                                   "between allocations.")
            from .facility import move_host

            move_host(self.store, host["id"], alloc)
        return None

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            host = _by_id(self.store, "host", request.host.id)
            if self.store.one("SELECT 1 FROM proc WHERE host_id = ? LIMIT 1", (host["id"],)):
                raise internal(INTEGRITY_ERROR, f"host {host['name']} has running procs and "
                                                "cannot be deleted")
            self.store.run("DELETE FROM host WHERE id = ?", (host["id"],))
        return None

    # -- tags ----------------------------------------------------------------
    def AddTags(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            host = _by_id(self.store, "host", request.host.id)
            for tag in request.tags:
                if tag:  # Cuebot skips "" but trims after: "  " becomes an empty tag
                    self.store.insert("host_tag", host_id=host["id"], tag=tag.strip(),
                                      type="MANUAL")
        return None

    def RemoveTags(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            host = _by_id(self.store, "host", request.host.id)
            for tag in request.tags:
                self.store.run("DELETE FROM host_tag WHERE host_id = ? AND tag = ? AND "
                               "type != 'ALLOC'", (host["id"], tag))
        return None

    def RenameTag(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            host = _by_id(self.store, "host", request.host.id)
            self.store.run("UPDATE host_tag SET tag = ? WHERE host_id = ? AND tag = ? AND "
                           "type != 'ALLOC'", (request.new_tag, host["id"], request.old_tag))
        return None

    # -- comments ------------------------------------------------------------
    def AddComment(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            host = _by_id(self.store, "host", request.host.id)
            c = request.new_comment
            self.store.insert("comment", id=new_id(), host_id=host["id"], user=c.user,
                              subject=c.subject, message=c.message, timestamp=now())
        return None


# ---------------------------------------------------------------------------
class OwnerServant(Servant):
    SERVICE = "host.OwnerInterface"

    def GetOwner(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM owner WHERE name = ? OR id = ?",
                       (request.name, request.name))
        return dict(owner=M.owners(self.store, [row])[0])

    def GetDeeds(self, request: Any, context: Any) -> Reply:
        owner = _by_id(self.store, "owner", request.owner.id)
        rows = self.store.all("SELECT * FROM deed WHERE owner_id = ?", (owner["id"],))
        return dict(deeds=host_pb2.DeedSeq(deeds=M.deeds(self.store, rows)))

    def GetHosts(self, request: Any, context: Any) -> Reply:
        owner = _by_id(self.store, "owner", request.owner.id)
        rows = self.store.all("SELECT h.* FROM host h JOIN deed d ON d.host_id = h.id "
                              "WHERE d.owner_id = ? ORDER BY h.seq", (owner["id"],))
        return dict(hosts=_hosts(self.store, rows))

    def TakeOwnership(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            owner = _by_id(self.store, "owner", request.owner.id)
            host = find_one(self.store, "SELECT * FROM host WHERE name = ?", (request.host,),
                            lookup=False)
            if not host["nimby_enabled"]:
                raise internal(SPCUE_ERROR, "Cannot setup deeeds on non-NIMBY hosts.")
            self.store.run("DELETE FROM deed WHERE host_id = ?", (host["id"],))
            self.store.insert("deed", id=new_id(), owner_id=owner["id"], host_id=host["id"])
        return None

    def SetShow(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            owner = _by_id(self.store, "owner", request.owner.id)
            show = find_one(self.store, "SELECT * FROM show WHERE name = ?", (request.show,),
                            lookup=False)
            self.store.run("UPDATE owner SET show_id = ? WHERE id = ?", (show["id"], owner["id"]))
        return None

    def Delete(self, request: Any, context: Any) -> Reply:
        """Like Cuebot's database, an owner holding deeds cannot go (INTERNAL)."""
        with self.store.tx():
            owner = _by_id(self.store, "owner", request.owner.id)
            if self.store.one("SELECT 1 FROM deed WHERE owner_id = ? LIMIT 1", (owner["id"],)):
                raise internal(INTEGRITY_ERROR, f"owner {owner['name']} still holds deeds")
            self.store.run("DELETE FROM owner WHERE id = ?", (owner["id"],))
        return None


# ---------------------------------------------------------------------------
class DeedServant(Servant):
    SERVICE = "host.DeedInterface"

    def GetOwner(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT o.* FROM owner o JOIN deed d ON d.owner_id = o.id "
                       "WHERE d.id = ?", (request.deed.id,), lookup=False)
        return dict(owner=M.owners(self.store, [row])[0])

    def GetHost(self, request: Any, context: Any) -> Reply:
        """Cuebot's bug, kept: the deed's id is looked up as a *host* id."""
        row = find_one(self.store, "SELECT * FROM host WHERE id = ?", (request.deed.id,),
                       lookup=False)
        return dict(host=M.hosts(self.store, [row])[0])

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            deed = _by_id(self.store, "deed", request.deed.id)
            self.store.run("DELETE FROM deed WHERE id = ?", (deed["id"],))
        return None


# ---------------------------------------------------------------------------
class ProcServant(Servant):
    SERVICE = "host.ProcInterface"

    def GetProcs(self, request: Any, context: Any) -> Reply:
        return dict(procs=_procs(self.store, find_procs(self.store, request.r)))

    def _proc(self, msg: Any) -> Any:
        return _by_id(self.store, "proc", msg.id)

    def GetHost(self, request: Any, context: Any) -> Reply:
        proc = self._proc(request.proc)
        row = self.store.one("SELECT * FROM host WHERE id = ?", (proc["host_id"],))
        return dict(host=M.hosts(self.store, [row])[0])

    def GetFrame(self, request: Any, context: Any) -> Reply:
        row = _by_id(self.store, "frame", self._proc(request.proc)["frame_id"])
        return dict(frame=M.frames(self.store, [row])[0])

    def GetJob(self, request: Any, context: Any) -> Reply:
        row = _by_id(self.store, "job", self._proc(request.proc)["job_id"])
        return dict(job=M.jobs(self.store, [row])[0])

    def GetLayer(self, request: Any, context: Any) -> Reply:
        row = _by_id(self.store, "layer", self._proc(request.proc)["layer_id"])
        return dict(layer=M.layers(self.store, [row])[0])

    def Kill(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.farm.kill_proc(self._proc(request.proc)["id"])
        return None

    def Unbook(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            proc = self._proc(request.proc)
            self.store.run("UPDATE proc SET unbooked = 1 WHERE id = ?", (proc["id"],))
            self.farm.counters.unbooked_procs += 1
            if request.kill:
                self.farm.kill_proc(proc["id"])
        return None

    def UnbookProcs(self, request: Any, context: Any) -> Reply:
        """Every matching proc (oldest booking first) is unbooked, and killed with ``kill``."""
        with self.store.tx():
            rows = find_procs(self.store, request.r, order="p.booked_time")
            for proc in rows:
                self.store.run("UPDATE proc SET unbooked = 1 WHERE id = ?", (proc["id"],))
                self.farm.counters.unbooked_procs += 1
                if request.kill:
                    self.farm.kill_proc(proc["id"])
        return dict(num_procs=len(rows))

    def ClearRedirect(self, request: Any, context: Any) -> Reply:
        """The proc is booked again; True if a redirect was dropped."""
        with self.store.tx():
            proc = self._proc(request.proc)
            self.store.run("UPDATE proc SET unbooked = 0, redirect_target = '', redirect_kind = "
                           "'', redirect_id = '' WHERE id = ?", (proc["id"],))
        return dict(value=bool(proc["redirect_kind"]))

    def _redirect(self, request: Any, kind: str, target: Any) -> Reply:
        with self.store.tx():
            proc = self._proc(request.proc)
            if not redirect.could_run(self.store, proc, kind, target["id"]):
                return dict(value=False)
            redirect.set_redirect(self.farm, proc["id"], kind, target["id"])
            if request.kill:
                redirect.kill_and_follow(self.farm, self._proc(request.proc), now())
        return dict(value=True)

    def RedirectToJob(self, request: Any, context: Any) -> Reply:
        self._proc(request.proc)
        return self._redirect(request, "JOB", _by_id(self.store, "job", request.job_id))

    def RedirectToGroup(self, request: Any, context: Any) -> Reply:
        self._proc(request.proc)
        return self._redirect(request, "GROUP", _by_id(self.store, "folder", request.group_id))

    def _unbook_to(self, request: Any, kind: str, targets: list[str], skip: str) -> Reply:
        if not request.r.max_results:
            message = ("You must specify the number of procs to unbook within the "
                       "ProcSearchCriteria.")
            raise internal("java.lang.RuntimeException", message)
        if not targets:
            return dict(num_procs=0)
        with self.store.tx():
            marks = ",".join("?" * len(targets))
            procs = [p for p in find_procs(self.store, request.r, order="p.booked_time")
                     if not p["unbooked"] and not self.store.one(
                         f"SELECT 1 FROM job WHERE id = ? AND {skip} IN ({marks})",
                         (p["job_id"], *targets))]
            for n, proc in enumerate(procs):
                redirect.set_redirect(self.farm, proc["id"], kind, targets[n % len(targets)])
            if request.kill:
                for proc in procs:
                    fresh = _by_id(self.store, "proc", proc["id"])
                    redirect.kill_and_follow(self.farm, fresh, now())
        return dict(num_procs=len(procs))

    def UnbookToJob(self, request: Any, context: Any) -> Reply:
        """Unknown jobs are skipped; with none left nothing happens (0)."""
        jobs = [j.id for j in request.jobs.jobs
                if self.store.one("SELECT 1 FROM job WHERE id = ?", (j.id,))]
        return self._unbook_to(request, "JOB", jobs, "id")

    def UnbookToGroup(self, request: Any, context: Any) -> Reply:
        if request.r.max_results:
            group = _by_id(self.store, "folder", request.group.id)
            return self._unbook_to(request, "GROUP", [group["id"]], "folder_id")
        return self._unbook_to(request, "GROUP", [], "folder_id")


SERVANTS = [HostServant, OwnerServant, ProcServant, DeedServant]
