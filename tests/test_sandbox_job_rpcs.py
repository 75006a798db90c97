"""Job, Layer and Frame RPCs CueWeb's and CueGUI's menus call (Set Max Retries, auto-eat, reorder
and stagger frames, Set Start After, limits, timeouts…), through the gateway, with Cuebot's
values and side effects; state is read back before and after each call.
"""
from __future__ import annotations

import time
from typing import Any, AsyncIterator

import pytest

from gateway.sandbox import server
from gateway.sandbox.seed import ROOT_GROUP
from sandbox_http import EMPTY_RESULT, Cue, layer, spec


@pytest.fixture
async def cue(make_gateway: Any) -> AsyncIterator[Cue]:
    sb = await server.start(":memory:", demo=False)
    try:
        yield Cue(await make_gateway(cuebot_endpoint=sb.endpoint), sb)
    finally:
        await sb.stop(None)


def jid(job: dict[str, Any]) -> dict[str, Any]:
    return {"job": {"id": job["id"]}}


# -- JobInterface setters -------------------------------------------------------------------
async def test_auto_eat_and_max_retries(cue: Cue) -> None:
    job = await cue.launch(spec("retry"))
    assert (job["autoEat"], cue.store.one("SELECT max_retries FROM job")[0]) == (False, 1)
    await cue.rpc("/job.JobInterface/SetMaxRetries", {**jid(job), "max_retries": 7})
    assert cue.store.one("SELECT max_retries FROM job")[0] == 7
    await cue.rpc("/job.JobInterface/SetAutoEat", {**jid(job), "value": True})
    assert (await cue.job(job))["autoEat"] is True
    assert cue.store.one("SELECT max_retries FROM job")[0] == 0     # auto-eat: no retries
    await cue.rpc("/job.JobInterface/SetAutoEat", {**jid(job), "value": False})
    assert cue.store.one("SELECT max_retries FROM job")[0] == 1
    for value, text in ((-1, "max retries must be greater than 0"),
                        (17, "max retries must be less than 16")):
        message = await cue.error("/job.JobInterface/SetMaxRetries",
                                  {**jid(job), "max_retries": value}, 500)
        assert message == f"java.lang.IllegalArgumentException: {text}\n{text}"
    message = await cue.error("/job.JobInterface/SetAutoEat",
                              {"job": {"id": "nope"}, "value": True}, 404)
    assert message == "Job not found"


async def test_gpus_group_subscriber_and_filters(cue: Cue) -> None:
    job = await cue.launch(spec("misc"))
    await cue.rpc("/job.JobInterface/SetMinGpus", {**jid(job), "val": 2})
    await cue.rpc("/job.JobInterface/SetMaxGpus", {**jid(job), "val": 4})
    got = await cue.job(job)
    assert (got["minGpus"], got["maxGpus"]) == (2, 4)
    sub = (await cue.rpc("/job.GroupInterface/CreateSubGroup",
                         {"group": {"id": ROOT_GROUP}, "name": "lighting"}))["group"]
    await cue.rpc("/job.GroupInterface/SetDefaultJobPriority",
                  {"group": {"id": sub["id"]}, "priority": 77})
    await cue.rpc("/job.JobInterface/SetGroup", {**jid(job), "group_id": sub["id"]})
    got = await cue.job(job)
    assert (got["group"], got["priority"]) == ("lighting", 77)
    assert await cue.error("/job.JobInterface/SetGroup",
                           {**jid(job), "group_id": "nope"}, 404) == "Job not found"
    await cue.rpc("/job.JobInterface/AddSubscriber", {**jid(job), "subscriber": "a@b.c"})
    await cue.rpc("/job.JobInterface/AddSubscriber", {**jid(job), "subscriber": "a@b.c"})
    assert cue.store.one("SELECT email FROM job")[0] == "a@b.c"
    assert await cue.error("/job.JobInterface/AddSubscriber",
                           {"job": {"id": "nope"}, "subscriber": "x"}, 500) == (
        "Failed to find job data")
    # RunFilters: a filter made after the launch applies when asked to
    flt = (await cue.rpc("/show.ShowInterface/CreateFilter",
                         {"show": {"name": "testing"}, "name": "urgent"}))["filter"]
    await cue.rpc("/filter.FilterInterface/CreateMatcher", {"filter": {"id": flt["id"]}, "data": {
        "subject": "JOB_NAME", "type": "CONTAINS", "input": "misc"}})
    await cue.rpc("/filter.FilterInterface/CreateAction", {"filter": {"id": flt["id"]}, "data": {
        "type": "PAUSE_JOB", "value_type": "BOOLEAN_TYPE", "boolean_value": True}})
    assert (await cue.job(job))["isPaused"] is False
    await cue.rpc("/job.JobInterface/RunFilters", jid(job))
    assert (await cue.job(job))["isPaused"] is True


async def test_shutdown_if_completed(cue: Cue) -> None:
    job = await cue.launch(spec("done", layer("render", "1-2")))
    await cue.rpc("/job.JobInterface/ShutdownIfCompleted", jid(job))
    assert (await cue.job(job))["state"] == "PENDING"        # frames left: nothing happens
    cue.store.run("UPDATE frame SET state = 'SUCCEEDED'")    # as if a shutdown had been missed
    await cue.rpc("/job.JobInterface/ShutdownIfCompleted", jid(job))
    assert (await cue.job(job))["state"] == "FINISHED"


async def test_kill_frames_ignores_the_state_filter(cue: Cue) -> None:
    """Study §2.2 #8: Cuebot drops ``states`` before looking for procs to kill."""
    with cue.store.tx():
        cue.sandbox.farm.add_host("rn001", cores=800, memory=32 * 1048576)
    job = await cue.launch(spec("kill", layer("render", "1-4")))
    cue.step(time.time())
    assert set((await cue.states(job)).values()) == {"RUNNING"}
    await cue.rpc("/job.JobInterface/KillFrames", {**jid(job), "req": {
        "states": {"frame_states": ["DEAD"]}, "frames": ["0001-render"]}, "reason": "test"})
    states = await cue.states(job)
    assert states["0001-render"] != "RUNNING" and states["0002-render"] == "RUNNING"


# -- dispatch order ----------------------------------------------------------------------------
async def test_reorder_and_stagger_frames(cue: Cue) -> None:
    job = await cue.launch(spec("order", layer("one", "1-6"), layer("two", "1-6")))
    assert await cue.orders(job, "one") == [1, 2, 3, 4, 5, 6]
    await cue.rpc("/job.JobInterface/ReorderFrames", {**jid(job), "range": "5-6", "order": "FIRST"})
    assert await cue.orders(job, "one") == [5, 6, 1, 2, 3, 4]
    assert await cue.orders(job, "two") == [5, 6, 1, 2, 3, 4]       # every layer of the job
    b = await cue.layer(job, "two")
    await cue.rpc("/job.LayerInterface/ReorderFrames",
                  {"layer": {"id": b["id"]}, "range": "1-6", "order": "REVERSE"})
    assert await cue.orders(job, "two") == [2, 1, 6, 5, 4, 3]        # orders swapped pairwise
    # LAST moves frames numbered by their position (0..size) to the end: Cuebot's own bug
    await cue.rpc("/job.LayerInterface/ReorderFrames",
                  {"layer": {"id": b["id"]}, "range": "5-6", "order": "LAST"})
    assert (await cue.orders(job, "two"))[-2:] == [1, 2]
    a = await cue.layer(job, "one")
    await cue.rpc("/job.LayerInterface/StaggerFrames",
                  {"layer": {"id": a["id"]}, "range": "1-6", "stagger": 2})
    assert await cue.orders(job, "one") == [1, 3, 5, 2, 4, 6]
    await cue.rpc("/job.JobInterface/StaggerFrames", {**jid(job), "range": "1-6", "stagger": 3})
    assert await cue.orders(job, "one") == [1, 4, 2, 3, 5, 6]
    message = await cue.error("/job.JobInterface/ReorderFrames",
                              {**jid(job), "range": "junk", "order": "FIRST"}, 500)
    assert message.startswith("java.lang.IllegalArgumentException: unrecognized frame range")


async def test_the_dispatcher_follows_the_new_order(cue: Cue) -> None:
    with cue.store.tx():
        cue.sandbox.farm.add_host("rn001", cores=100, memory=32 * 1048576)
    job = await cue.launch(spec("first", layer("render", "1-5")))
    await cue.rpc("/job.JobInterface/ReorderFrames", {**jid(job), "range": "4", "order": "FIRST"})
    cue.step(time.time())
    assert [n for n, s in (await cue.states(job)).items() if s == "RUNNING"] == ["0004-render"]


# -- LayerInterface setters ----------------------------------------------------------------------
async def test_layer_settings(cue: Cue) -> None:
    job = await cue.launch(spec("settings", layer("render", "1-3")))
    lid = {"layer": {"id": (await cue.layer(job, "render"))["id"]}}
    before = await cue.layer(job, "render")
    assert (before["isThreadable"], before["timeout"], before["timeoutLlu"],
            before["memoryOptimizerEnabled"]) == (False, 0, 0, True)
    await cue.rpc("/job.LayerInterface/SetThreadable", {**lid, "threadable": True})
    await cue.rpc("/job.LayerInterface/SetTimeout", {**lid, "timeout": 90})
    await cue.rpc("/job.LayerInterface/SetTimeoutLLU", {**lid, "timeout_llu": 15})
    await cue.rpc("/job.LayerInterface/EnableMemoryOptimizer", {**lid, "value": False})
    await cue.rpc("/job.LayerInterface/SetMinGpuMemory", {**lid, "gpu_memory": 4194304})
    await cue.rpc("/job.LayerInterface/SetMinGpus", {**lid, "min_gpus": 1})
    await cue.rpc("/job.LayerInterface/SetMaxGpus", {**lid, "max_gpus": 2})
    await cue.rpc("/job.LayerInterface/SetMaxCores", {**lid, "cores": 2.5})
    await cue.rpc("/job.LayerInterface/SetMinCores", {**lid, "cores": 0.555})
    await cue.rpc("/job.LayerInterface/SetDispatchOrder", {**lid, "order": 5})
    await cue.rpc("/job.LayerInterface/RegisterOutputPath", {**lid, "spec": "/out/#.exr"})
    await cue.rpc("/job.LayerInterface/RegisterOutputPath", {**lid, "spec": "/out/#.exr"})
    after = await cue.layer(job, "render")
    assert (after["isThreadable"], after["timeout"], after["timeoutLlu"],
            after["memoryOptimizerEnabled"], after["minGpuMemory"], after["minGpus"],
            after["maxGpus"], after["dispatchOrder"]) == (True, 90, 15, False, "4194304", 1, 2, 5)
    assert after["maxCores"] == 2.0          # whole cores (study §2.2 #5)
    assert after["minCores"] == 0.55         # rounded to hundredths, then truncated
    paths = await cue.rpc("/job.LayerInterface/GetOutputPaths", lid)
    assert paths["outputPaths"] == ["/out/#.exr"]
    message = await cue.error("/job.LayerInterface/SetDispatchOrder", {**lid, "order": 0}, 500)
    assert message.endswith("\nLayer dispatch order must be positive.")
    assert await cue.error("/job.LayerInterface/SetTimeout",
                           {"layer": {"id": "nope"}, "timeout": 1}, 500) == EMPTY_RESULT


async def test_set_start_after_gates_the_layer(cue: Cue) -> None:
    with cue.store.tx():
        cue.sandbox.farm.add_host("rn001", cores=800, memory=32 * 1048576)
    job = await cue.launch(spec("later", layer("render", "1-2")))
    lid = {"layer": {"id": (await cue.layer(job, "render"))["id"]}}
    t = int(time.time())
    await cue.rpc("/job.LayerInterface/SetStartAfter",
                  {**lid, "start_after": t + 3600, "username": "jdoe"})
    got = await cue.layer(job, "render")
    assert (got["startAfter"], got["startAfterReason"]) == (str(t + 3600), "Set by jdoe")
    assert cue.step(t).booked == []                       # gated: nothing starts before it
    assert len(cue.step(t + 3601).booked) == 2
    await cue.rpc("/job.LayerInterface/SetStartAfter", {**lid, "start_after": 0})
    got = await cue.layer(job, "render")
    assert (got["startAfter"], got["startAfterReason"]) == ("0", "")   # the gate cleared
    for bad in (-1, t * 1000):   # a milliseconds value is the mistake this guards against
        message = await cue.error("/job.LayerInterface/SetStartAfter",
                                  {**lid, "start_after": bad}, 400)
        assert message.startswith("start_after must be a Unix timestamp in seconds")


async def test_layer_limits(cue: Cue) -> None:
    lic = (await cue.rpc("/limit.LimitInterface/Create", {"name": "lic", "max_value": 1}))["limit"]
    job = await cue.launch(spec("lim", layer("render", "1-2")))
    lid = {"layer": {"id": (await cue.layer(job, "render"))["id"]}}
    assert (await cue.layer(job, "render"))["limits"] == [""]
    await cue.rpc("/job.LayerInterface/AddLimit", {**lid, "limit_id": lic["id"]})
    await cue.rpc("/job.LayerInterface/AddLimit", {**lid, "limit_id": lic["id"]})   # once
    await cue.rpc("/job.LayerInterface/AddLimit", {**lid, "limit_id": "no-such-limit"})
    assert (await cue.layer(job, "render"))["limits"] == ["lic"]
    got = await cue.rpc("/job.LayerInterface/GetLimits", lid)
    assert [x["name"] for x in got["limits"]] == ["lic"]
    await cue.rpc("/job.LayerInterface/DropLimit", {**lid, "limit_id": lic["id"]})
    assert (await cue.layer(job, "render"))["limits"] == [""]


# -- FrameInterface -----------------------------------------------------------------------------
async def test_checkpoint_state(cue: Cue) -> None:
    job = await cue.launch(spec("ckpt", layer("render", "1")))
    f = await cue.frame(job, "0001-render")
    assert f["checkpointState"] == "DISABLED"
    fid = {"frame": {"id": f["id"]}}
    await cue.rpc("/job.FrameInterface/SetCheckpointState", {**fid, "state": "COMPLETE"})
    assert (await cue.frame(job, "0001-render"))["checkpointState"] == "DISABLED"  # not from here
    await cue.rpc("/job.FrameInterface/SetCheckpointState", {**fid, "state": "ENABLED"})
    await cue.rpc("/job.FrameInterface/SetCheckpointState", {**fid, "state": "COMPLETE"})
    got = await cue.frame(job, "0001-render")
    assert (got["checkpointState"], got["checkpointCount"]) == ("COMPLETE", 1)
    cue.store.run("UPDATE frame SET state = 'CHECKPOINT'")
    await cue.rpc("/job.FrameInterface/SetCheckpointState", {**fid, "state": "DISABLED"})
    assert (await cue.frame(job, "0001-render"))["state"] == "WAITING"


async def test_frame_state_display_overrides(cue: Cue) -> None:
    job = await cue.launch(spec("colour", layer("render", "1-2")))
    f = await cue.frame(job, "0001-render")
    fid = {"frame": {"id": f["id"]}}
    assert (await cue.rpc("/job.FrameInterface/GetFrameStateDisplayOverrides", fid)) == {
        "overrides": {"overrides": []}}
    red = {"state": "WAITING", "text": "QUEUED", "color": {"red": 200, "green": 10, "blue": 5}}
    await cue.rpc("/job.FrameInterface/SetFrameStateDisplayOverride", {**fid, "override": red})
    shown = (await cue.frame(job, "0001-render"))["frameStateDisplayOverride"]
    assert shown == red
    assert (await cue.frame(job, "0002-render"))["frameStateDisplayOverride"] is None
    blue = {**red, "text": "HELD", "color": {"red": 0, "green": 0, "blue": 255}}
    await cue.rpc("/job.FrameInterface/SetFrameStateDisplayOverride", {**fid, "override": blue})
    dead = {"state": "DEAD", "text": "BROKEN", "color": {"red": 1, "green": 2, "blue": 3}}
    await cue.rpc("/job.FrameInterface/SetFrameStateDisplayOverride", {**fid, "override": dead})
    got = await cue.rpc("/job.FrameInterface/GetFrameStateDisplayOverrides", fid)
    assert got["overrides"]["overrides"] == [blue, dead]   # the WAITING one replaced
    assert (await cue.frame(job, "0001-render"))["frameStateDisplayOverride"] == blue
    message = await cue.error("/job.FrameInterface/SetFrameStateDisplayOverride",
                              {"frame": {"id": "nope"}, "override": red}, 500)
    assert message.startswith("org.springframework.dao.DataIntegrityViolationException")
