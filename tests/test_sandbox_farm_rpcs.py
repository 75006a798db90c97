"""Host, Proc, Allocation, Show and RenderPartition RPCs through the gateway: the host
whiteboard, redirecting procs to other work (CueGUI's "Redirect" and cueman's tools), moving
hosts between allocations (cueadmin -transfer), archiving a show (cueadmin -archive-show) and
lending a workstation to a job (render partitions); each read back before and after.

Stories run on a fresh sandbox with two 8-core render nodes and a NIMBY-locked workstation
owned by jdoe; the dispatcher is stepped by hand.
"""
from __future__ import annotations

import time
from typing import Any, AsyncIterator

import pytest

from gateway.sandbox import server
from gateway.sandbox.dispatcher import DispatchSettings
from gateway.sandbox.seed import ROOT_GROUP
from sandbox_http import EMPTY_RESULT, GB, Cue, layer, spec

DESKTOP = "00000000-0000-0000-0000-000000000001"
UNASSIGNED = "00000000-0000-0000-0000-000000000002"


@pytest.fixture
async def cue(make_gateway: Any) -> AsyncIterator[Cue]:
    sb = await server.start(":memory:", demo=False)
    sb.dispatcher.settings = DispatchSettings.eager(run_seconds=(10.0, 10.0))   # every render: 10 s
    try:
        with sb.store.tx():
            for name in ("rn001", "rn002"):
                sb.farm.add_host(name, cores=800, memory=32 * GB, hardware_tags=["linux"])
            ws = sb.farm.add_host("ws1", alloc_id=DESKTOP, cores=800, memory=32 * GB,
                                  nimby=True, lock_state="NIMBY_LOCKED")
            sb.store.insert("owner", id="owner-jdoe", name="jdoe",
                            show_id="00000000-0000-0000-0000-000000000000")
            sb.store.insert("deed", id="deed-1", owner_id="owner-jdoe", host_id=ws)
        yield Cue(await make_gateway(cuebot_endpoint=sb.endpoint), sb)
    finally:
        await sb.stop(None)


def booked_on(procs: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in procs:
        host = p["name"].split("/")[0]
        out[host] = out.get(host, 0) + 1
    return out


# -- HostInterface ------------------------------------------------------------------------------
async def test_host_whiteboard_nests_procs(cue: Cue) -> None:
    job = await cue.launch(spec("board", layer("render", "1-3", cores="2.0")))
    cue.step(time.time())
    board = (await cue.rpc("/host.HostInterface/GetHostWhiteboard"))["nestedHosts"]
    hosts = board["nestedHosts"]
    assert [h["name"] for h in hosts] == ["rn001", "rn002", "ws1"]
    procs = [p for h in hosts for p in (h["procs"] or {}).get("nestedProcs", [])]
    assert len(procs) == 3 and {p["jobName"] for p in procs} == {job["name"]}
    one = next(h for h in hosts if h["procs"] and h["procs"]["nestedProcs"])
    proc = one["procs"]["nestedProcs"][0]
    assert proc["parent"]["name"] == one["name"] and proc["parent"]["procs"] is None
    assert one["idleCores"] == one["cores"] - sum(p["reservedCores"]
                                                  for p in one["procs"]["nestedProcs"])


async def test_restart_rqd(cue: Cue) -> None:
    rn1 = await cue.host("rn001")
    await cue.rpc("/host.HostInterface/RestartRqdNow", {"host": {"id": rn1["id"]}})
    assert (await cue.host("rn001"))["state"] == "REBOOTING"
    message = await cue.error("/host.HostInterface/RestartRqdWhenIdle",
                              {"host": {"id": rn1["id"]}}, 500)
    assert message.startswith("java.lang.IllegalStateException: ")   # only an UP host
    rn2 = await cue.host("rn002")
    await cue.rpc("/host.HostInterface/RestartRqdWhenIdle", {"host": {"id": rn2["id"]}})
    assert (await cue.host("rn002"))["state"] == "REBOOT_WHEN_IDLE"
    # a host that is not UP takes no new work
    await cue.launch(spec("after", layer("render", "1-2")))
    assert cue.step(time.time()).booked == []


async def test_host_redirect_to_job(cue: Cue) -> None:
    t = time.time()
    low = await cue.launch(spec("low", layer("render", "1-8", cores="2.0")))
    cue.step(t)
    assert booked_on(await cue.procs(jobs=[low["name"]])) == {"rn001": 4, "rn002": 4}
    urgent = await cue.launch(spec("urgent", layer("render", "1-2", cores="4.0")))
    on_rn1 = [p["id"] for p in await cue.procs(hosts=["rn001"])]
    got = await cue.rpc("/host.HostInterface/RedirectToJob", {
        "host": {"id": (await cue.host("rn001"))["id"]}, "proc_names": on_rn1,
        "job_id": urgent["id"]})
    assert got == {"value": True}
    # rn001's four renders were stopped (back to WAITING) and rn001 now runs the urgent job
    assert booked_on(await cue.procs(jobs=[urgent["name"]])) == {"rn001": 2}
    assert booked_on(await cue.procs(jobs=[low["name"]])) == {"rn002": 4}
    assert list((await cue.states(low)).values()).count("WAITING") == 4
    message = await cue.error("/host.HostInterface/RedirectToJob", {
        "host": {"id": "x"}, "proc_names": ["no-such-proc"], "job_id": urgent["id"]}, 500)
    assert message == EMPTY_RESULT


# -- ProcInterface --------------------------------------------------------------------------
async def test_proc_redirects(cue: Cue) -> None:
    t = time.time()
    low = await cue.launch(spec("low", layer("render", "1-16", cores="2.0")))
    cue.step(t)
    target = await cue.launch(spec("target", layer("render", "1-10", cores="2.0")))
    cue.store.run("UPDATE job SET priority = 0 WHERE id = ?", (target["id"],))
    proc = (await cue.procs(hosts=["rn002"]))[0]
    # without kill the render goes on; the proc says where it will go, and is unbooked
    got = await cue.rpc("/host.ProcInterface/RedirectToJob",
                        {"proc": {"id": proc["id"]}, "job_id": target["id"], "kill": False})
    assert got == {"value": True}
    marked = next(p for p in await cue.procs() if p["id"] == proc["id"])
    assert (marked["redirectTarget"], marked["unbooked"]) == (target["name"], True)
    assert await cue.procs(jobs=[target["name"]]) == []
    # when that render ends its host goes to the target, though the target's priority is lower
    result = cue.step(t + 10)
    assert len(result.succeeded) == 8
    assert booked_on(await cue.procs(jobs=[target["name"]])).get("rn002", 0) >= 1
    # ClearRedirect drops a redirect that was set
    other = (await cue.procs(jobs=[low["name"]]))[0]
    await cue.rpc("/host.ProcInterface/RedirectToJob",
                  {"proc": {"id": other["id"]}, "job_id": target["id"]})
    assert (await cue.rpc("/host.ProcInterface/ClearRedirect",
                          {"proc": {"id": other["id"]}})) == {"value": True}
    assert (await cue.rpc("/host.ProcInterface/ClearRedirect",
                          {"proc": {"id": other["id"]}})) == {"value": False}


async def test_proc_redirect_to_group_with_kill(cue: Cue) -> None:
    t = time.time()
    low = await cue.launch(spec("low", layer("render", "1-8", cores="2.0")))
    cue.step(t)
    fx = (await cue.rpc("/job.GroupInterface/CreateSubGroup",
                        {"group": {"id": ROOT_GROUP}, "name": "fx"}))["group"]
    empty = await cue.rpc("/host.ProcInterface/RedirectToGroup", {
        "proc": {"id": (await cue.procs())[0]["id"]}, "group_id": fx["id"], "kill": True})
    assert empty == {"value": False}                 # nothing in the group could run
    sim = await cue.launch(spec("sim", layer("sim", "1-2", cores="2.0")))
    await cue.rpc("/job.JobInterface/SetGroup", {"job": {"id": sim["id"]}, "group_id": fx["id"]})
    proc = (await cue.procs(hosts=["rn001"]))[0]
    got = await cue.rpc("/host.ProcInterface/RedirectToGroup",
                        {"proc": {"id": proc["id"]}, "group_id": fx["id"], "kill": True})
    assert got == {"value": True}
    assert booked_on(await cue.procs(jobs=[sim["name"]])) == {"rn001": 1}
    assert list((await cue.states(low)).values()).count("RUNNING") == 7


async def test_unbook_to_job_and_group(cue: Cue) -> None:
    t = time.time()
    low = await cue.launch(spec("low", layer("render", "1-8", cores="2.0")))
    cue.step(t)
    first = await cue.launch(spec("first", layer("render", "1-4", cores="2.0")))
    second = await cue.launch(spec("second", layer("render", "1-4", cores="2.0")))
    message = await cue.error("/host.ProcInterface/UnbookToJob", {
        "r": {"hosts": ["rn001"]}, "jobs": {"jobs": [{"id": first["id"]}]}}, 500)
    assert message == ("java.lang.RuntimeException: You must specify the number of procs to "
                       "unbook within the ProcSearchCriteria.\nYou must specify the number of "
                       "procs to unbook within the ProcSearchCriteria.")
    got = await cue.rpc("/host.ProcInterface/UnbookToJob", {
        "r": {"hosts": ["rn001"], "max_results": [4]},
        "jobs": {"jobs": [{"id": first["id"]}, {"id": second["id"]}, {"id": "gone"}]},
        "kill": True})
    assert got == {"numProcs": 4}
    # the four procs were shared out in turn; as each render stopped, the cores it freed on
    # rn001 went to its target
    assert booked_on(await cue.procs(jobs=[low["name"]])) == {"rn002": 4}
    assert booked_on(await cue.procs(jobs=[first["name"]])) == {"rn001": 2}
    assert booked_on(await cue.procs(jobs=[second["name"]])) == {"rn001": 2}
    none = await cue.rpc("/host.ProcInterface/UnbookToJob", {
        "r": {"max_results": [2]}, "jobs": {"jobs": [{"id": "gone"}]}})
    assert none == {"numProcs": 0}
    fx = (await cue.rpc("/job.GroupInterface/CreateSubGroup",
                        {"group": {"id": ROOT_GROUP}, "name": "fx"}))["group"]
    got = await cue.rpc("/host.ProcInterface/UnbookToGroup", {
        "r": {"hosts": ["rn002"], "max_results": [2]}, "group": {"id": fx["id"]}})
    assert got == {"numProcs": 2}
    marked = [p for p in await cue.procs(hosts=["rn002"]) if p["redirectTarget"] == "fx"]
    assert len(marked) == 2 and all(p["unbooked"] for p in marked)


# -- AllocationInterface -------------------------------------------------------------------------
async def test_reparent_hosts(cue: Cue) -> None:
    rn1, rn2 = await cue.host("rn001"), await cue.host("rn002")
    await cue.launch(spec("busy", layer("render", "1", cores="8.0")))
    cue.step(time.time())                        # one 8-core frame: it lands on one host
    busy = "rn001" if await cue.procs(hosts=["rn001"]) else "rn002"
    free = "rn002" if busy == "rn001" else "rn001"
    order = [await cue.host(free), await cue.host(busy)]
    await cue.rpc("/facility.AllocationInterface/ReparentHosts", {
        "allocation": {"id": UNASSIGNED},
        "hosts": {"hosts": [{"id": h["id"]} for h in order]}})
    moved = await cue.host(free)
    assert moved["allocName"] == "local.unassigned" and "unassigned" in moved["tags"]
    assert (await cue.host(busy))["allocName"] == "local.general"   # running procs: stays
    alloc = await cue.rpc("/facility.AllocationInterface/Find", {"name": "local.unassigned"})
    assert alloc["allocation"]["stats"]["hosts"] == 1
    assert {rn1["id"], rn2["id"]} >= {moved["id"]}


async def test_find_hosts_reads_the_id_as_a_name(cue: Cue) -> None:
    """Cuebot adds the allocation's id to the allocation *names* it searches: kept."""
    by_id = await cue.rpc("/facility.AllocationInterface/FindHosts", {
        "allocation": {"id": "00000000-0000-0000-0000-000000000000"}, "r": {}})
    assert by_id == {"hosts": {"hosts": []}}
    by_name = await cue.rpc("/facility.AllocationInterface/FindHosts", {
        "allocation": {"id": "local.general"}, "r": {"substr": ["rn00"]}})
    assert [h["name"] for h in by_name["hosts"]["hosts"]] == ["rn001", "rn002"]


# -- ShowInterface/Archive --------------------------------------------------------------------------
async def test_archive_show(cue: Cue) -> None:
    await cue.rpc("/show.ShowInterface/CreateShow", {"name": "oldshow"})
    await cue.rpc("/show.ShowInterface/Archive",
                  {"show": {"name": "oldshow"}, "target_show_name": "testing"})
    shows = await cue.rpc("/show.ShowInterface/GetShows")
    assert [s["name"] for s in shows["shows"]["shows"]] == ["testing", "oldshow_archive"]
    # the old name is now an alias of the target: jobs launched under it land in testing
    text = spec("late").replace("<show>testing</show>", "<show>oldshow</show>")
    job = await cue.launch(text)
    assert job["show"] == "testing" and job["name"].startswith("oldshow-")
    message = await cue.error("/show.ShowInterface/Archive",
                              {"show": {"name": "testing"}, "target_show_name": "nope"}, 500)
    assert message == EMPTY_RESULT


# -- render partitions ------------------------------------------------------------------------------
async def test_render_partition_lends_a_workstation(cue: Cue) -> None:
    job = await cue.launch(spec("local", layer("render", "1-6", cores="2.0")))
    body = {"job": {"id": job["id"]}, "host": "ws1", "threads": 2, "max_cores": 4,
            "max_memory": 8 * GB, "username": "jdoe"}
    part = (await cue.rpc("/job.JobInterface/AddRenderPartition", body))["renderPartition"]
    assert (part["host"], part["job"], part["renderPartType"], part["maxCores"], part["cores"],
            part["threads"]) == ("ws1", job["name"], "JOB_PARTITION", 400, 400, 2)
    assert booked_on(await cue.procs(jobs=[job["name"]])) == {"ws1": 2}
    listed = await cue.rpc("/host.HostInterface/GetRenderPartitions",
                           {"host": {"id": (await cue.host("ws1"))["id"]}})
    assert [p["id"] for p in listed["renderPartitions"]["renderPartitions"]] == [part["id"]]
    # more room: the dispatcher fills it on its next pass (only the partition, not the NIMBY host)
    await cue.rpc("/renderPartition.RenderPartitionInterface/SetMaxResources",
                  {"render_partition": {"id": part["id"]}, "cores": 800, "memory": 0})
    cue.sandbox.store.run("UPDATE host SET lock_state = 'LOCKED' WHERE name LIKE 'rn%'")
    cue.step(time.time())
    assert booked_on(await cue.procs(jobs=[job["name"]])) == {"ws1": 4}
    await cue.rpc("/renderPartition.RenderPartitionInterface/Delete",
                  {"render_partition": {"id": part["id"]}})
    assert await cue.procs(jobs=[job["name"]]) == []
    assert set((await cue.states(job)).values()) == {"WAITING"}


async def test_render_partition_refusals(cue: Cue) -> None:
    job = await cue.launch(spec("local", layer("render", "1-2", cores="2.0")))
    base = {"host": "ws1", "threads": 1, "max_cores": 2, "max_memory": 8 * GB,
            "username": "jdoe"}
    message = await cue.error("/job.JobInterface/AddRenderPartition",
                              {**base, "job": {"id": job["id"]}, "host": "rn001"}, 500)
    rn1 = await cue.host("rn001")
    assert message.startswith(f"com.imageworks.spcue.SpcueRuntimeException: The host rn001/"
                              f"{rn1['id']} is not NIMBY locked")
    assert await cue.error("/job.JobInterface/AddRenderPartition",
                           {**base, "job": {"id": job["id"]}, "host": "nope"}, 404) == (
        "Job not found")
    layer_id = (await cue.layer(job, "render"))["id"]
    assert await cue.error("/job.LayerInterface/AddRenderPartition",
                           {**base, "layer": {"id": layer_id}, "username": "nobody"}, 500) == (
        EMPTY_RESULT)
    small = {**base, "layer": {"id": layer_id}, "max_memory": 1024}
    assert await cue.error("/job.LayerInterface/AddRenderPartition", small, 500) == (
        "Failed to find suitable frames.")
    frame = await cue.frame(job, "0002-render")
    part = (await cue.rpc("/job.FrameInterface/AddRenderPartition",
                          {**base, "frame": {"id": frame["id"]}}))["renderPartition"]
    assert (part["renderPartType"], part["frame"]) == ("FRAME_PARTITION", "0002-render")
    assert (await cue.frame(job, "0002-render"))["state"] == "RUNNING"
    assert (await cue.frame(job, "0001-render"))["state"] == "WAITING"
    assert await cue.error("/renderPartition.RenderPartitionInterface/Delete",
                           {"render_partition": {"id": "nope"}}, 500) == EMPTY_RESULT
