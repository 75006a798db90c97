"""Routing: every exposed RPC at POST /<package.Service>/<Method>, and nothing else."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from google.protobuf import descriptor_pb2

from gateway.routes import MethodTable, conventional_package, exposed
from support import raw_request

HOST_AGENT = ("rqd.RqdInterface", "rqd.RunningFrame", "report.RqdReportInterface")


def _unary_methods(descs, skip=HOST_AGENT):
    for svc in descs.services:
        if svc.full_name in skip:
            continue
        for m in svc.methods:
            yield f"/{svc.full_name}/{m.name}", m


def test_bundled_descriptors_have_the_whole_opencue_api(bundled):
    methods = [m for s in bundled.services for m in s.methods]
    assert len(bundled.services) == 28 and len(methods) == 315


async def test_every_exposed_method_reaches_the_backend_with_empty_body(bundled, gateway, cuebot):
    """Table-driven: all 293 default-exposed methods route, and answer JSON."""
    expected = dict(_unary_methods(bundled))
    assert len(expected) == 293
    for path, method in expected.items():
        resp = await gateway.post(path, data=b"{}")
        body = await resp.read()
        assert resp.status == 200, (path, body)
        assert resp.headers["Content-Type"] == "application/json"
        reply = orjson.loads(body)
        assert list(reply) == [f.json_name for f in method.output_type.fields], path
    assert cuebot.paths() == list(expected)
    assert all(c.request == b"" for c in cuebot.calls)


async def test_reply_is_transcoded_from_the_backend_bytes(gateway, cuebot, bundled):
    from opencue_proto import show_pb2

    reply = show_pb2.ShowGetShowsResponse(shows={"shows": [{"id": "s1", "name": "testing",
                                                             "active": True}]})
    cuebot.reply("/show.ShowInterface/GetShows", reply)
    resp = await gateway.post("/show.ShowInterface/GetShows", data=b"{}")
    body = orjson.loads(await resp.read())
    assert body["shows"]["shows"][0]["name"] == "testing"
    assert body["shows"]["shows"][0]["showStats"] is None
    assert body["shows"]["shows"][0]["defaultMinCores"] == 0


@pytest.mark.parametrize("service", HOST_AGENT)
async def test_host_agent_services_are_not_exposed_by_default(gateway, cuebot, bundled, service):
    svc = bundled.pool.FindServiceByName(service)
    resp = await gateway.post(f"/{service}/{svc.methods[0].name}", data=b"{}")
    assert resp.status == 404
    body = orjson.loads(await resp.read())
    assert body["code"] == 5 and "not exposed" in body["message"]
    assert cuebot.calls == []


async def test_exclude_nothing_exposes_host_agents(make_gateway, cuebot):
    gw = await make_gateway(exclude_services=())
    assert (await gw.post("/rqd.RqdInterface/GetRunningFrameStatus", data=b"{}")).status == 200
    assert cuebot.paths() == ["/rqd.RqdInterface/GetRunningFrameStatus"]


async def test_services_allow_list(make_gateway, cuebot):
    gw = await make_gateway(services=("show.*", "job.JobInterface"))
    assert (await gw.post("/show.ShowInterface/GetShows", data=b"{}")).status == 200
    assert (await gw.post("/job.JobInterface/GetJobs", data=b"{}")).status == 200
    assert (await gw.post("/job.FrameInterface/GetFrame", data=b"{}")).status == 404
    assert (await gw.post("/host.HostInterface/GetHosts", data=b"{}")).status == 404
    assert cuebot.paths() == ["/show.ShowInterface/GetShows", "/job.JobInterface/GetJobs"]


@pytest.mark.parametrize("documented, real", [
    ("/frame.FrameInterface/GetFrame", "/job.FrameInterface/GetFrame"),
    ("/frame.FrameInterface/Retry", "/job.FrameInterface/Retry"),
    ("/layer.LayerInterface/GetLayer", "/job.LayerInterface/GetLayer"),
    ("/layer.LayerInterface/SetTags", "/job.LayerInterface/SetTags"),
    ("/group.GroupInterface/FindGroup", "/job.GroupInterface/FindGroup"),
    ("/owner.OwnerInterface/GetOwner", "/host.OwnerInterface/GetOwner"),
    ("/owner.OwnerInterface/TakeOwnership", "/host.OwnerInterface/TakeOwnership"),
    ("/proc.ProcInterface/Kill", "/host.ProcInterface/Kill"),
    ("/deed.DeedInterface/GetOwner", "/host.DeedInterface/GetOwner"),
    ("/deed.DeedInterface/GetHost", "/host.DeedInterface/GetHost"),
])
async def test_documented_package_spellings_reach_the_real_service(gateway, cuebot, documented,
                                                                   real):
    resp = await gateway.post(documented, data=b"{}")
    assert resp.status == 200, await resp.text()
    assert cuebot.paths() == [real]


@pytest.mark.parametrize("path, words", [
    ("/layer.LayerInterface/Kill", "job.LayerInterface has no method Kill"),
    ("/owner.OwnerInterface/SetMaxCores", "host.OwnerInterface has no method SetMaxCores"),
    ("/proc.ProcInterface/GetProc", "host.ProcInterface has no method GetProc"),
    ("/show.FrameInterface/GetFrame", "unknown service show.FrameInterface"),
    ("/invalid.Interface/DoSomething", "unknown service invalid.Interface"),
    ("/show.ShowInterface/GetShow", "show.ShowInterface has no method GetShow"),
])
async def test_documented_methods_that_do_not_exist_are_json_404(gateway, cuebot, path, words):
    resp = await gateway.post(path, data=b"{}")
    assert resp.status == 404
    body = orjson.loads(await resp.read())
    assert body == {"error": body["message"], "code": 5, "message": body["message"], "details": []}
    assert words in body["message"]
    assert cuebot.calls == []


def test_startup_alias_list_names_the_documented_spellings(bundled):
    table = MethodTable.build(bundled, lambda path: None, (), ("rqd.*", "report.*"))
    aliases = dict(table.aliases())
    for fake, real in [("frame.FrameInterface", "job.FrameInterface"),
                       ("layer.LayerInterface", "job.LayerInterface"),
                       ("group.GroupInterface", "job.GroupInterface"),
                       ("owner.OwnerInterface", "host.OwnerInterface"),
                       ("proc.ProcInterface", "host.ProcInterface"),
                       ("deed.DeedInterface", "host.DeedInterface")]:
        assert aliases[fake] == real
    assert "show.ShowInterface" not in aliases


def test_naming_helpers():
    assert conventional_package("FrameInterface") == "frame"
    assert conventional_package("ServiceOverrideInterface") == "serviceOverride"
    assert conventional_package("RunningFrame") == "runningFrame"
    assert exposed("rqd.RqdInterface", (), ("rqd.*",)) is False
    assert exposed("job.JobInterface", ("job.*",), ("rqd.*",)) is True
    assert exposed("show.ShowInterface", ("job.*",), ()) is False


@pytest.mark.parametrize("path", [
    "//show.ShowInterface/GetShows", "/show.ShowInterface//GetShows",
    "///show.ShowInterface///GetShows", "/show.ShowInterface/GetShows?x=1",
])
async def test_duplicate_slashes_collapse(gateway, cuebot, path):
    status, _, body = await raw_request(gateway.port, "POST", path, b"{}")
    assert status == 200, body
    assert cuebot.paths() == ["/show.ShowInterface/GetShows"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("POST", "/"), ("GET", "/favicon.ico"), ("POST", "/show.ShowInterface"),
    ("POST", "/show.ShowInterface/GetShows/"), ("POST", "/a/b/c"), ("DELETE", "/nothing"),
    ("POST", "/ShowInterface/GetShows"),
])
async def test_unknown_paths_are_json_404(gateway, cuebot, method, path):
    resp = await gateway.request(method, path, data=b"{}")
    assert resp.status == 404
    assert resp.headers["Content-Type"] == "application/json"
    body = orjson.loads(await resp.read())
    assert body["code"] == 5 and body["error"] == body["message"] and body["details"] == []
    assert cuebot.calls == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_wrong_verb_is_405_with_allow(gateway, cuebot, method):
    resp = await gateway.request(method, "/show.ShowInterface/GetShows")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    body = orjson.loads(await resp.read())
    assert body == {"error": "Method Not Allowed", "code": 12, "message": "Method Not Allowed",
                    "details": []}
    assert cuebot.calls == []


async def test_head_is_405_without_body(gateway):
    resp = await gateway.head("/show.ShowInterface/GetShows")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"


@pytest.mark.parametrize("content_type", [
    None, "application/json", "text/plain", "application/x-www-form-urlencoded",
    "application/json; charset=utf-8", "application/octet-stream",
])
async def test_any_content_type_is_read_as_json(gateway, cuebot, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await gateway.post("/show.ShowInterface/FindShow", data=b'{"name":"testing"}',
                              headers=headers, skip_auto_headers=["Content-Type"])
    assert resp.status == 200
    assert cuebot.calls[0].request == b"\n\x07testing"


async def test_empty_body_is_empty_request(gateway, cuebot):
    resp = await gateway.post("/show.ShowInterface/GetActiveShows")
    assert resp.status == 200
    assert cuebot.calls[0].request == b""


def _streaming_set(tmp_path: Path) -> Path:
    """A descriptor set with one unary and one server-streaming method."""
    f = descriptor_pb2.FileDescriptorProto(name="stream.proto", package="s", syntax="proto3")
    f.message_type.add(name="M").field.add(name="x", number=1, type=9, label=1, json_name="x")
    svc = f.service.add(name="Svc")
    svc.method.add(name="Unary", input_type=".s.M", output_type=".s.M")
    svc.method.add(name="Stream", input_type=".s.M", output_type=".s.M", server_streaming=True)
    p = tmp_path / "stream.binpb"
    p.write_bytes(descriptor_pb2.FileDescriptorSet(file=[f]).SerializeToString())
    return p


async def test_streaming_methods_are_501(make_gateway, cuebot, tmp_path):
    gw = await make_gateway(descriptor_set=_streaming_set(tmp_path))
    resp = await gw.post("/s.Svc/Stream", data=b"{}")
    assert resp.status == 501
    body = orjson.loads(await resp.read())
    assert body["code"] == 12 and "streaming" in body["message"]
    ok = await gw.post("/s.Svc/Unary", data=b'{"x":"y"}')
    assert ok.status == 200 and await ok.read() == b'{"x":""}'
    assert cuebot.paths() == ["/s.Svc/Unary"]
