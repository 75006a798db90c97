"""facility.FacilityInterface, facility.AllocationInterface, subscription.SubscriptionInterface.

Cuebot's quirks kept on purpose: AllocationInterface/Get looks its argument
up as a *name* (a real id gives NOT_FOUND); FacilityInterface/GetAllocations
is UNIMPLEMENTED; Subscription/Find needs ``facility.alloc.show``.
Allocation messages in requests are found by id, else by facility + name
(full ``local.general`` or short ``general``).
"""
from __future__ import annotations

import logging
from typing import Any

from opencue_proto import facility_pb2, host_pb2, subscription_pb2

from . import messages as M
from .common import find_one
from .servant import Reply, Servant, internal, missing, not_found
from .store import new_id

CUE_GRPC_EXCEPTION = "com.imageworks.spcue.servant.CueGrpcException"
log = logging.getLogger("gateway.sandbox")


def move_host(store: Any, host_id: str, alloc: Any) -> None:
    """A host into another allocation: its ALLOC tag becomes the allocation's tag."""
    store.run("UPDATE host SET alloc_id = ? WHERE id = ?", (alloc["id"], host_id))
    store.run("DELETE FROM host_tag WHERE host_id = ? AND type = 'ALLOC'", (host_id,))
    store.insert("host_tag", host_id=host_id, tag=alloc["tag"], type="ALLOC")


def alloc_of(store: Any, msg: Any) -> Any:
    """The allocation a request's Allocation names; missing -> INTERNAL."""
    if msg.id:
        row = store.one("SELECT * FROM alloc WHERE id = ?", (msg.id,))
    else:
        name = msg.name if "." in msg.name or not msg.facility else f"{msg.facility}.{msg.name}"
        row = store.one("SELECT * FROM alloc WHERE name = ?", (name,))
    if row is None:
        raise missing()
    return row


class FacilityServant(Servant):
    SERVICE = "facility.FacilityInterface"

    def Get(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM facility WHERE name = ? OR id = ?",
                       (request.name, request.name))
        return dict(facility=M.facilities([row])[0])

    def Create(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            fid = new_id()
            self.store.insert("facility", id=fid, name=request.name, is_default=0)
        row = self.store.one("SELECT * FROM facility WHERE id = ?", (fid,))
        return dict(facility=M.facilities([row])[0])

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            row = find_one(self.store, "SELECT * FROM facility WHERE name = ?", (request.name,),
                           lookup=False)
            if (self.store.one("SELECT 1 FROM alloc WHERE facility_id = ?", (row["id"],))
                    or self.store.one("SELECT 1 FROM job WHERE facility_id = ?", (row["id"],))):
                raise internal("org.springframework.dao.DataIntegrityViolationException",
                               f"facility {row['name']} is still referenced by allocations "
                               "or jobs")
            self.store.run("DELETE FROM facility WHERE id = ?", (row["id"],))
        return None

    def Rename(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            key = request.facility.id or request.facility.name
            if not self.store.run("UPDATE facility SET name = ? WHERE id = ? OR name = ?",
                                  (request.new_name, key, key)):
                raise missing()
        return None


class AllocationServant(Servant):
    SERVICE = "facility.AllocationInterface"

    def _one(self, row: Any) -> Any:
        return M.allocations(self.store, [row])[0]

    def GetAll(self, request: Any, context: Any) -> Reply:
        rows = self.store.all("SELECT * FROM alloc WHERE enabled = 1 ORDER BY name")
        return dict(allocations=facility_pb2.AllocationSeq(
            allocations=M.allocations(self.store, rows)))

    def Get(self, request: Any, context: Any) -> Reply:
        # Cuebot looks the id up as a name (upstream bug, kept for fidelity)
        row = find_one(self.store, "SELECT * FROM alloc WHERE name = ?", (request.id,))
        return dict(allocation=self._one(row))

    def Find(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM alloc WHERE name = ?", (request.name,))
        return dict(allocation=self._one(row))

    def GetDefault(self, request: Any, context: Any) -> Reply:
        return dict(allocation=self._one(self.farm.default_alloc()))

    def GetHosts(self, request: Any, context: Any) -> Reply:
        rows = self.store.all("SELECT * FROM host WHERE alloc_id = ? ORDER BY name",
                              (request.allocation.id,))
        return dict(hosts=host_pb2.HostSeq(
            hosts=M.hosts(self.store, rows)))

    def FindHosts(self, request: Any, context: Any) -> Reply:
        """Cuebot adds the allocation's *id* to the criteria's allocation *names*: kept, so
        only an id that is also a name (``local.general`` sent as the id) finds anything."""
        from .hostsearch import find_hosts

        r = host_pb2.HostSearchCriteria()
        r.CopyFrom(request.r)
        r.allocs.append(request.allocation.id)
        return dict(hosts=host_pb2.HostSeq(hosts=M.hosts(self.store, find_hosts(self.store, r))))

    def ReparentHosts(self, request: Any, context: Any) -> Reply:
        """Queued in Cuebot: answers OK, moves the hosts in order and stops (logged) at the
        first with running procs; an allocation id that does not exist moves nothing."""
        with self.store.tx():
            alloc = self.store.one("SELECT * FROM alloc WHERE id = ?", (request.allocation.id,))
            if alloc is None:
                log.warning("ReparentHosts: no allocation %s", request.allocation.id)
                return None
            for msg in request.hosts.hosts:
                host = self.store.one("SELECT * FROM host WHERE id = ?", (msg.id,))
                if host is None:
                    continue
                if self.store.one("SELECT 1 FROM proc WHERE host_id = ? LIMIT 1", (host["id"],)):
                    log.warning("ReparentHosts: %s has running procs; it and the hosts after "
                                "it stay where they are", host["name"])
                    break
                move_host(self.store, host["id"], alloc)
        return None

    def GetSubscriptions(self, request: Any,
                         context: Any) -> Reply:
        alloc = alloc_of(self.store, request.allocation)
        rows = self.store.all("SELECT * FROM subscription WHERE alloc_id = ? ORDER BY seq",
                              (alloc["id"],))
        return dict(
            subscriptions=subscription_pb2.SubscriptionSeq(
                subscriptions=M.subscriptions(self.store, rows)))

    def SetBillable(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            alloc = alloc_of(self.store, request.allocation)
            self.store.run("UPDATE alloc SET billable = ? WHERE id = ?",
                           (int(request.value), alloc["id"]))
        return None

    def SetTag(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            alloc = alloc_of(self.store, request.allocation)
            self.store.run("UPDATE alloc SET tag = ? WHERE id = ?", (request.tag, alloc["id"]))
            self.store.run("UPDATE host_tag SET tag = ? WHERE type = 'ALLOC' AND host_id IN "
                           "(SELECT id FROM host WHERE alloc_id = ?)", (request.tag, alloc["id"]))
        return None

    def SetName(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            alloc = alloc_of(self.store, request.allocation)
            fac = alloc["name"].split(".", 1)[0]
            short = request.name.split(".")[-1]
            self.store.run("UPDATE alloc SET name = ? WHERE id = ?",
                           (f"{fac}.{short}", alloc["id"]))
        return None

    def SetDefault(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            alloc = alloc_of(self.store, request.allocation)
            self.store.run("UPDATE alloc SET is_default = (id = ?)", (alloc["id"],))
        return None

    def Create(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            fac = find_one(self.store, "SELECT * FROM facility WHERE id = ? OR name = ?",
                           (request.facility.id, request.facility.name), lookup=False)
            aid = new_id()
            self.store.insert("alloc", id=aid, facility_id=fac["id"],
                              name=f"{fac['name']}.{request.name}", tag=request.tag)
        return dict(
            allocation=self._one(self.store.one("SELECT * FROM alloc WHERE id = ?", (aid,))))

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            alloc = alloc_of(self.store, request.allocation)
            if alloc["is_default"]:
                raise internal("com.imageworks.spcue.EntityRemovalError",
                               "The default allocation cannot be deleted.")
            if self.store.one("SELECT 1 FROM host WHERE alloc_id = ?", (alloc["id"],)):
                raise internal("com.imageworks.spcue.EntityRemovalError",
                               "allocation still has hosts")
            self.store.run("DELETE FROM subscription WHERE alloc_id = ?", (alloc["id"],))
            self.store.run("DELETE FROM alloc WHERE id = ?", (alloc["id"],))
        return None


class SubscriptionServant(Servant):
    SERVICE = "subscription.SubscriptionInterface"

    def _one(self, row: Any) -> Any:
        return M.subscriptions(self.store, [row])[0]

    def _sub(self, msg: Any) -> Any:
        row = self.store.one("SELECT * FROM subscription WHERE id = ?", (msg.id,))
        if row is None:
            raise missing()
        return row

    def Get(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM subscription WHERE id = ?", (request.id,))
        return dict(subscription=self._one(row))

    def Find(self, request: Any, context: Any) -> Reply:
        parts = request.name.split(".")
        if len(parts) != 3:
            raise internal(CUE_GRPC_EXCEPTION, "Subscription names must be in the form of "
                           "alloc.show")
        row = self.store.one(
            "SELECT s.* FROM subscription s JOIN alloc a ON a.id = s.alloc_id JOIN show sh "
            "ON sh.id = s.show_id WHERE a.name = ? AND sh.name = ?",
            (f"{parts[0]}.{parts[1]}", parts[2]))
        if row is None:
            raise not_found(f"A subscription to {request.name} was not found.")
        return dict(subscription=self._one(row))

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            sub = self._sub(request.subscription)
            busy = self.store.one("SELECT 1 FROM proc p JOIN host h ON h.id = p.host_id WHERE "
                                  "p.show_id = ? AND h.alloc_id = ?",
                                  (sub["show_id"], sub["alloc_id"]))
            if busy:
                raise internal("com.imageworks.spcue.EntityRemovalError",
                               "subscription has running procs")
            self.store.run("DELETE FROM subscription WHERE id = ?", (sub["id"],))
        return None

    def SetSize(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            sub = self._sub(request.subscription)
            self.store.run("UPDATE subscription SET size = ? WHERE id = ?",
                           (request.new_size, sub["id"]))
        return None

    def SetBurst(self, request: Any,
                 context: Any) -> Reply:
        with self.store.tx():
            # no check: Cuebot's guard is a trigger on growing usage, so a burst below what
            # runs is stored, and booking on the subscription stops until usage drops
            sub = self._sub(request.subscription)
            self.store.run("UPDATE subscription SET burst = ? WHERE id = ?",
                           (request.burst, sub["id"]))
        return None

