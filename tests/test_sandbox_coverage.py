"""What the sandbox must implement, and how it answers everything else.

The rule: **every RPC that OpenCue's own applications call and that Cuebot
serves is implemented.** "Called" is read from the clients themselves:
CueWeb's request paths (``data/cueweb_rpcs.txt``, taken from OpenCue's
cueweb sources) and every request message the installed opencue-pycue's
``api`` module and ``wrappers`` build (CueGUI, cueadmin and cueman reach
Cuebot only through pycue, so its surface covers them). "Served" is every
method of the services Cuebot registers except the few its servants leave
out (``CUEBOT_LEAVES_OUT``, answered UNIMPLEMENTED here as there) and the
RQD report interface, which only RQD calls. Monitoring is not served by
Cuebot at all and answers "Method not found".

Also: every read RPC CueWeb calls (opencue_clients.md §3.6), every RPC the
user's REST reference names; every other method of a served interface
answers UNIMPLEMENTED in Cuebot's words, and a method nothing serves is
"Method not found" as grpc-java words it, both checked over gRPC.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory

from gateway.sandbox.server import CUEBOT_SERVICES, implemented_rpcs

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = DATA / "rest_reference.md"
# declared in the protos, never overridden by Cuebot's servants
CUEBOT_LEAVES_OUT = {"facility.FacilityInterface/GetAllocations",
                     "job.LayerInterface/SetMinGpu", "department.DepartmentInterface/Delete"}
RQD_ONLY = "report.RqdReportInterface"   # served by Cuebot, called by RQD alone

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


def _served() -> set[str]:
    return {f"{name}/{m.name}" for name in CUEBOT_SERVICES if name != RQD_ONLY
            for m in _service(name).methods} - CUEBOT_LEAVES_OUT


def _by_request_message() -> dict[str, list[str]]:
    """Request message full name -> the RPCs taking it (pycue is read by what it builds)."""
    out: dict[str, list[str]] = {}
    for name in (*CUEBOT_SERVICES, "monitoring.MonitoringInterface"):
        for m in _service(name).methods:
            out.setdefault(m.input_type.full_name, []).append(f"{name}/{m.name}")
    return out


def pycue_calls() -> set[str]:
    """Every RPC whose request message opencue-pycue's api module or wrappers build."""
    import opencue

    root = Path(opencue.__file__).resolve().parent
    by_message = _by_request_message()
    called: set[str] = set()
    for source in [root / "api.py", *sorted((root / "wrappers").glob("*.py"))]:
        for package, message in re.findall(r"\b(\w+)_pb2\.(\w+Request)\b", source.read_text()):
            called.update(by_message.get(f"{package}.{message}", []))
    return called


def cueweb_calls() -> set[str]:
    return {line.strip() for line in (DATA / "cueweb_rpcs.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def test_every_rpc_a_client_calls_and_cuebot_serves_is_implemented() -> None:
    pycue, cueweb = pycue_calls(), cueweb_calls()
    assert len(pycue) > 250 and len(cueweb) > 140          # the scans found the clients
    assert "show.ShowInterface/GetJobWhiteboard" in pycue  # CueGUI's Monitor Cue tree
    assert "job.JobInterface/SetMaxRetries" in cueweb
    required = (pycue | cueweb) & _served()
    assert sorted(required - _implemented()) == []
    # what clients call that Cuebot does not serve stays out (monitoring, the servants' gaps)
    assert (pycue | cueweb) - _served() - _implemented() == {
        rpc for rpc in pycue | cueweb if rpc.startswith("monitoring.") or rpc in CUEBOT_LEAVES_OUT}
    assert not _implemented() & CUEBOT_LEAVES_OUT


def test_everything_cuebot_serves_for_clients_is_implemented() -> None:
    assert sorted(_served() - _implemented()) == []


def test_every_cueweb_read_is_implemented() -> None:
    wanted = {f"{s}/{m}" for s, methods in CUEWEB_READS.items() for m in methods}
    assert len(wanted) == 32
    assert sorted(wanted - _implemented()) == []


def test_every_reference_rpc_in_the_protos_is_implemented() -> None:
    wanted = _reference_rpcs()
    assert len(wanted) == 77   # of the 80 RPCs it names, three do not exist
    assert sorted(wanted - _implemented()) == ["facility.FacilityInterface/GetAllocations"]


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
