"""service.ServiceInterface and service.ServiceOverrideInterface.

Values are stored raw as Cuebot does (min_cores in units, memory in KB).
Update is a full overwrite keyed by id (omitted fields become zero/empty);
an unknown id in Update or Delete is silently OK, as in Cuebot. A duplicate
name in CreateService is INTERNAL (Cuebot's unique index).
"""
from __future__ import annotations

from typing import Any

from opencue_proto import service_pb2

from . import messages as M
from .common import find_one
from .servant import Reply, Servant, internal
from .store import new_id


def service_columns(svc: Any) -> dict[str, Any]:
    """The stored columns of a Service message (every field: a full overwrite)."""
    return dict(
        name=svc.name, threadable=int(svc.threadable), min_cores=svc.min_cores,
        max_cores=svc.max_cores, min_memory=svc.min_memory, min_gpus=svc.min_gpus,
        max_gpus=svc.max_gpus, min_gpu_memory=svc.min_gpu_memory, timeout=svc.timeout,
        timeout_llu=svc.timeout_llu, min_memory_increase=svc.min_memory_increase,
        tags=M.join_tags(svc.tags))


class ServiceServant(Servant):
    SERVICE = "service.ServiceInterface"

    def GetDefaultServices(self, request: Any,
                           context: Any) -> Reply:
        rows = self.store.all("SELECT * FROM service WHERE show_id IS NULL ORDER BY seq")
        return dict(
            services=service_pb2.ServiceSeq(services=[M.service(r) for r in rows]))

    def GetService(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM service WHERE show_id IS NULL AND "
                       "(name = ? OR id = ?)", (request.name, request.name))
        return dict(service=M.service(row))

    def CreateService(self, request: Any,
                      context: Any) -> Reply:
        with self.store.tx():
            if self.store.one("SELECT 1 FROM service WHERE show_id IS NULL AND name = ?",
                              (request.data.name,)):
                raise internal("org.springframework.dao.DuplicateKeyException",
                               f"a service named {request.data.name} already exists")
            sid = new_id()
            self.store.insert("service", id=sid, show_id=None, **service_columns(request.data))
        row = self.store.one("SELECT * FROM service WHERE id = ?", (sid,))
        return dict(service=M.service(row))

    def Update(self, request: Any, context: Any) -> Reply:
        cols = service_columns(request.service)
        with self.store.tx():
            sets = ", ".join(f"{k} = ?" for k in cols)
            self.store.run(f"UPDATE service SET {sets} WHERE id = ? AND show_id IS NULL",
                           (*cols.values(), request.service.id))
        return None

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.store.run("DELETE FROM service WHERE id = ? AND show_id IS NULL",
                           (request.service.id,))
        return None


class ServiceOverrideServant(Servant):
    SERVICE = "service.ServiceOverrideInterface"

    def Update(self, request: Any, context: Any) -> Reply:
        cols = service_columns(request.service)
        with self.store.tx():
            sets = ", ".join(f"{k} = ?" for k in cols)
            self.store.run(f"UPDATE service SET {sets} WHERE id = ? AND show_id IS NOT NULL",
                           (*cols.values(), request.service.id))
        return None

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self.store.run("DELETE FROM service WHERE id = ? AND show_id IS NOT NULL",
                           (request.service.id,))
        return None
