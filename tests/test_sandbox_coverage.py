"""What the sandbox must implement, and how it answers everything else.

The sandbox implements every read RPC CueWeb calls (opencue_clients.md
§3.6, the methods marked R) and every RPC the user's REST reference shows
that exists in the protos; the one exception is Cuebot's own gap,
FacilityInterface/GetAllocations, which Cuebot leaves unimplemented too.
Every other method of a served interface answers UNIMPLEMENTED in Cuebot's
words, and a method nothing serves is "Method not found" as grpc-java words
it; both are checked by calling them over gRPC.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory

from gateway.sandbox.server import CUEBOT_SERVICES, implemented_rpcs

REFERENCE = Path(__file__).resolve().parent / "data" / "rest_reference.md"
CUEBOT_LEAVES_OUT = {"facility.FacilityInterface/GetAllocations"}

# opencue_clients.md §3.6: the read RPCs CueWeb calls, per interface
CUEWEB_READS = {
    "show.ShowInterface": ["GetShows", "GetActiveShows", "FindShow", "GetGroups",
                           "GetSubscriptions", "GetFilters", "GetDepartments",
                           "GetServiceOverrides"],
    "job.JobInterface": ["GetJobs", "GetJob", "GetFrames", "GetLayers", "GetComments",
                         "GetDepends", "GetWhatDependsOnThis"],
    "job.LayerInterface": ["GetOutputPaths", "GetWhatThisDependsOn"],
    "job.FrameInterface": ["GetFrame", "GetWhatThisDependsOn"],
    "job.GroupInterface": ["GetJobs"],
    "host.HostInterface": ["GetHosts", "FindHost", "GetProcs", "GetComments"],
    "host.ProcInterface": ["GetProcs"],
    "facility.AllocationInterface": ["GetAll"],
    "limit.LimitInterface": ["GetAll"],
    "service.ServiceInterface": ["GetDefaultServices"],
    "filter.FilterInterface": ["GetActions", "GetMatchers"],
    "department.DepartmentInterface": ["GetDepartmentNames", "GetTasks"],
}


def _implemented() -> set[str]:
    return {f"{service}/{m}" for service, methods in implemented_rpcs().items() for m in methods}


def _service(name: str) -> Any:
    import importlib

    importlib.import_module(f"opencue_proto.{name.split('.')[0]}_pb2")
    return descriptor_pool.Default().FindServiceByName(name)


def _reference_rpcs() -> set[str]:
    """The reference's RPCs that exist in the protos, under their real package."""
    by_bare = {full.split(".")[1]: full for full in CUEBOT_SERVICES}
    out = set()
    for _, service, method in re.findall(r"/([a-zA-Z]+)\.([A-Za-z]+Interface)/([A-Za-z]+)",
                                         REFERENCE.read_text()):
        full = by_bare.get(service)
        if full and method in [m.name for m in _service(full).methods]:
            out.add(f"{full}/{method}")
    return out


def test_every_cueweb_read_is_implemented() -> None:
    wanted = {f"{s}/{m}" for s, methods in CUEWEB_READS.items() for m in methods}
    assert len(wanted) == 32
    assert sorted(wanted - _implemented()) == []


def test_every_reference_rpc_in_the_protos_is_implemented() -> None:
    wanted = _reference_rpcs()
    assert len(wanted) == 77   # of the 80 RPCs it names, three do not exist
    assert sorted(wanted - _implemented()) == sorted(CUEBOT_LEAVES_OUT)


async def test_the_rest_answer_unimplemented_in_cuebots_words(sandbox: Any) -> None:
    done = _implemented()
    channel = grpc.aio.insecure_channel(sandbox.endpoint)
    missing = 0
    try:
        for name in CUEBOT_SERVICES:
            for m in _service(name).methods:
                path = f"{name}/{m.name}"
                if path in done:
                    continue
                missing += 1
                call = channel.unary_unary(
                    f"/{path}", request_serializer=lambda b: b,
                    response_deserializer=message_factory.GetMessageClass(
                        m.output_type).FromString)
                try:
                    await call(b"", timeout=5)
                except grpc.aio.AioRpcError as e:
                    assert (e.code(), e.details()) == (
                        grpc.StatusCode.UNIMPLEMENTED, f"Method {path} is unimplemented")
                else:
                    raise AssertionError(f"{path} answered")
    finally:
        await channel.close()
    assert missing > 0


async def test_methods_nothing_serves_are_not_found_as_in_cuebot(sandbox: Any) -> None:
    """The reference's Owner.SetMaxCores and Proc.GetProc, and the unserved monitoring API."""
    channel = grpc.aio.insecure_channel(sandbox.endpoint)
    try:
        for path in ("host.OwnerInterface/SetMaxCores", "host.ProcInterface/GetProc",
                     "monitoring.MonitoringInterface/GetFrameHistory"):
            call = channel.unary_unary(f"/{path}", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
            try:
                await call(b"", timeout=5)
            except grpc.aio.AioRpcError as e:
                assert (e.code(), e.details()) == (grpc.StatusCode.UNIMPLEMENTED,
                                                   f"Method not found: {path}")
            else:
                raise AssertionError(f"{path} answered")
    finally:
        await channel.close()
