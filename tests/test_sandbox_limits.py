"""LimitInterface through the gateway: the older API's quirks, and the license accounting the
bundled protos add (limit types and modes, failure rules, bindings, license-server reports,
holders), with the dispatcher gating on it as that Cuebot does.
"""
from __future__ import annotations

import time
from typing import Any, AsyncIterator

import pytest

from gateway.sandbox import server
from gateway.sandbox.dispatcher import DispatchSettings
from sandbox_http import GB, Cue, layer, spec

LICENSED = '<limits><limit>houdini</limit></limits>'


@pytest.fixture
async def cue(make_gateway: Any) -> AsyncIterator[Cue]:
    sb = await server.start(":memory:", demo=False)
    sb.dispatcher.settings = DispatchSettings.eager(run_seconds=(100.0, 100.0))
    try:
        with sb.store.tx():
            for name in ("rn001.farm.local", "rn002.farm.local"):
                sb.farm.add_host(name, cores=800, memory=32 * GB)
        yield Cue(await make_gateway(cuebot_endpoint=sb.endpoint), sb)
    finally:
        await sb.stop(None)


async def create(cue: Cue, **kw: Any) -> dict[str, Any]:
    return (await cue.rpc("/limit.LimitInterface/Create", {"name": "houdini", "max_value": 2,
                                                           **kw}))["limit"]


async def test_limit_settings_and_errors(cue: Cue) -> None:
    lim = await create(cue, type="HOST", enforcement="ADVISORY", soft_value=0)
    assert (lim["type"], lim["enforcement"], lim["softValue"], lim["reportTtl"],
            lim["blockingDisabled"], lim["currentUsage"]) == ("HOST", "ADVISORY", -1, 900, True, 0)
    name = {"name": "houdini"}
    await cue.rpc("/limit.LimitInterface/SetType", {**name, "type": "FRAME"})
    await cue.rpc("/limit.LimitInterface/SetEnforcement", {**name, "enforcement": "ENFORCED"})
    await cue.rpc("/limit.LimitInterface/SetSoftValue", {**name, "soft_value": 1})
    await cue.rpc("/limit.LimitInterface/SetReportTtl", {**name, "report_ttl": 60})
    got = await cue.limit("houdini")
    assert (got["type"], got["enforcement"], got["softValue"], got["reportTtl"],
            got["blockingDisabled"]) == ("FRAME", "ENFORCED", 1, 60, False)
    # the newer RPCs answer a missing limit NOT_FOUND; the older ones stay INTERNAL
    assert await cue.error("/limit.LimitInterface/SetType",
                           {"name": "nope", "type": "HOST"}, 404) == "Limit not found."
    message = await cue.error("/limit.LimitInterface/Find", {"name": "nope"}, 500)
    assert message.startswith("org.springframework.dao.EmptyResultDataAccessException")


async def test_failure_rules(cue: Cue) -> None:
    await create(cue)
    await cue.rpc("/limit.LimitInterface/Create", {"name": "katana", "max_value": 5})
    rule = {"name": "houdini", "exit_status": 330, "delay_minutes": 2, "auto_tag": True}
    await cue.rpc("/limit.LimitInterface/SetFailureRule", rule)
    got = await cue.limit("houdini")
    assert (got["exitStatus"], got["delayMinutes"], got["autoTag"]) == (330, 2, True)
    message = await cue.error("/limit.LimitInterface/SetFailureRule",
                              {**rule, "name": "katana"}, 409)
    assert message == "Exit status 330 is already claimed by limit houdini."
    for bad in ({**rule, "exit_status": 1}, {**rule, "exit_status": -3},
                {**rule, "delay_minutes": -1}):
        await cue.error("/limit.LimitInterface/SetFailureRule", bad, 400)
    await cue.rpc("/limit.LimitInterface/SetFailureRule", {**rule, "exit_status": 0})
    assert (await cue.limit("houdini"))["exitStatus"] == 0          # cleared


async def test_bindings(cue: Cue) -> None:
    lim = await create(cue)
    job = await cue.launch(spec("sim", layer("sim", "1-2", extra=LICENSED), layer("cache", "1")))
    cache = await cue.layer(job, "cache")
    await cue.rpc("/job.LayerInterface/AddLimit",
                  {"layer": {"id": cache["id"]}, "limit_id": lim["id"]})
    got = await cue.rpc("/limit.LimitInterface/GetBindings", {"limit_name": "houdini"})
    assert [(b["layerName"], b["source"], b["jobName"]) for b in got["bindings"]] == [
        ("sim", "SPEC", job["name"]), ("cache", "MANUAL", job["name"])]
    assert (await cue.limit("houdini"))["specLayerCount"] == 1
    manual = await cue.rpc("/limit.LimitInterface/GetBindings",
                           {"limit_name": "houdini", "sources": ["MANUAL"]})
    assert [b["layerId"] for b in manual["bindings"]] == [cache["id"]]
    message = await cue.error("/limit.LimitInterface/ClearBindings",
                              {"limit_name": "houdini", "sources": ["SPEC"]}, 400)
    assert message == "SPEC bindings are declared by the submitter and cannot be bulk-removed."
    assert await cue.rpc("/limit.LimitInterface/ClearBindings",
                         {"limit_name": "houdini", "sources": ["MANUAL", "AUTO"]}) == {
        "removed": 1}
    assert (await cue.layer(job, "cache"))["limits"] == [""]
    assert (await cue.layer(job, "sim"))["limits"] == ["houdini"]


async def test_reports_holds_and_usage(cue: Cue) -> None:
    await create(cue, max_value=10)
    t = time.time()
    report = {"limit_name": "houdini", "capture_time": int(t) - 2, "total_licenses": 25,
              "hosts": [{"host_name": "WS-Artist.studio.local", "tokens": 1, "user": "amy"},
                        {"host_name": "rn002", "tokens": 1}]}
    got = await cue.rpc("/limit.LimitInterface/ReportUsage", {
        "reports": [report, {"limit_name": "maya", "hosts": []}], "source": "lic01"})
    assert got["unknownLimits"] == ["maya"] and got["skippedLimits"] == []
    (lim,) = got["limits"]
    assert (lim["maxValue"], lim["settledUsage"], lim["pendingUsage"], lim["currentUsage"],
            lim["hostCount"], lim["reportSource"]) == (25, 2, 0, 2, 2, "lic01")
    again = await cue.rpc("/limit.LimitInterface/ReportUsage",
                          {"reports": [report], "source": "lic02"})
    assert again["skippedLimits"] == [{"limitName": "houdini", "reason": "RATE_LIMITED"}]
    cue.store.run("UPDATE limit_record SET reported_time = reported_time - 60")
    old = {**report, "capture_time": int(t) - 3600}
    late = await cue.rpc("/limit.LimitInterface/ReportUsage", {"reports": [old], "source": "x"})
    assert late["skippedLimits"] == [{"limitName": "houdini", "reason": "OUT_OF_ORDER"}]
    await cue.error("/limit.LimitInterface/ReportUsage", {"reports": [
        {"limit_name": "houdini", "hosts": [{"host_name": "x", "tokens": 0}]}]}, 400)
    # a frame booked now on a host the report does not name is pending
    cue.store.run("UPDATE host SET lock_state = 'LOCKED' WHERE name LIKE 'rn002%'")
    job = await cue.launch(spec("sim", layer("sim", "1", extra=LICENSED)))
    cue.step(time.time())
    assert (await cue.procs(jobs=[job["name"]]))[0]["name"].startswith("rn001.farm.local/")
    got = await cue.limit("houdini")
    assert (got["settledUsage"], got["pendingUsage"], got["currentUsage"]) == (2, 1, 3)
    holds = (await cue.rpc("/limit.LimitInterface/GetHolds", {"limit_name": "houdini"}))["holds"]
    assert [(h["hostName"], h["source"], h["tokens"], h["user"]) for h in holds] == [
        ("rn001", "CUE", 1, ""), ("rn002", "EXTERNAL", 1, ""),
        ("WS-Artist.studio.local", "EXTERNAL", 1, "amy")]
    rn1 = await cue.host("rn001.farm.local")
    assert holds[0]["hostId"] == rn1["id"] and holds[2]["hostId"] == ""
    one = await cue.rpc("/limit.LimitInterface/GetHolds", {"host_name": "ws-artist"})
    assert [h["limitName"] for h in one["holds"]] == ["houdini"]
    assert await cue.error("/limit.LimitInterface/GetHolds", {"limit_name": "nope"}, 404) == (
        "Limit not found.")


async def test_host_limits_pack_work_onto_hosts_that_hold_a_token(cue: Cue) -> None:
    """A HOST limit of one machine: every frame goes to the one host holding the token."""
    await create(cue, max_value=1, type="HOST")
    job = await cue.launch(spec("sim", layer("sim", "1-6", cores="1.0", extra=LICENSED)))
    cue.step(time.time())
    hosts = {p["name"].split("/")[0] for p in await cue.procs(jobs=[job["name"]])}
    assert len(hosts) == 1
    assert len(await cue.procs(jobs=[job["name"]])) == 6      # all on it: one token shared
    got = await cue.limit("houdini")
    assert (got["currentUsage"], got["hostCount"], got["currentRunning"]) == (1, 1, 1)


async def test_frame_limits_gate_unless_advisory_or_stale(cue: Cue) -> None:
    await create(cue, max_value=2)
    job = await cue.launch(spec("sim", layer("sim", "1-6", extra=LICENSED)))
    cue.step(time.time())
    assert len(await cue.procs(jobs=[job["name"]])) == 2
    await cue.rpc("/limit.LimitInterface/SetEnforcement",
                  {"name": "houdini", "enforcement": "ADVISORY"})
    cue.step(time.time())
    assert len(await cue.procs(jobs=[job["name"]])) == 6
    assert (await cue.limit("houdini"))["currentUsage"] == 6
