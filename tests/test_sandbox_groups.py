"""GroupInterface through the gateway, as CueGUI's group dialog and CueWeb's group actions use
it: the group tree (create, rename, move, delete), departments, and the job defaults a group
gives its jobs; and the show's job whiteboard (CueGUI's "Monitor Cue" tree) that draws it.
"""
from __future__ import annotations

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


async def sub(cue: Cue, parent: str, name: str) -> dict[str, Any]:
    return (await cue.rpc("/job.GroupInterface/CreateSubGroup",
                          {"group": {"id": parent}, "name": name}))["group"]


def gid(group: dict[str, Any] | str) -> dict[str, Any]:
    return {"group": {"id": group if isinstance(group, str) else group["id"]}}


async def test_create_rename_move_and_delete(cue: Cue) -> None:
    light = await sub(cue, ROOT_GROUP, "lighting")
    assert (light["name"], light["level"], light["parentId"], light["department"]) == (
        "lighting", 1, ROOT_GROUP, "Unknown")       # sub-groups start in the default department
    # the show got a configuration for that department
    depts = await cue.rpc("/show.ShowInterface/GetDepartments", {"show": {"name": "testing"}})
    assert "testing.Unknown" in [d["name"] for d in depts["departments"]["departments"]]
    key = await sub(cue, light["id"], "key")
    assert key["level"] == 2
    message = await cue.error("/job.GroupInterface/CreateSubGroup",
                              {**gid(ROOT_GROUP), "name": "lighting"}, 500)
    assert message.startswith("com.imageworks.spcue.EntityCreationError: error creating group")
    await cue.rpc("/job.GroupInterface/SetName", {**gid(key), "name": "keylight"})
    assert (await cue.group(key["id"]))["name"] == "keylight"
    # move keylight up to the root, then lighting under keylight
    await cue.rpc("/job.GroupInterface/SetGroup", {**gid(key), "parent_group": {"id": ROOT_GROUP}})
    assert (await cue.group(key["id"]))["level"] == 1
    await cue.rpc("/job.GroupInterface/ReparentGroups",
                  {**gid(key), "groups": {"groups": [{"id": light["id"]}, {"id": "nope"}]}})
    moved = await cue.group(light["id"])
    assert (moved["parentId"], moved["level"]) == (key["id"], 2)
    children = await cue.rpc("/job.GroupInterface/GetGroups", gid(key))
    assert [g["name"] for g in children["groups"]["groups"]] == ["lighting"]
    for body, text in (
            ({**gid(key), "parent_group": {"id": light["id"]}},
             "error moving group, you cannot move a group into one of its sub groups"),
            ({**gid(key), "parent_group": {"id": key["id"]}},
             "error moving group, cannot move group into itself"),
            # every group is below the root, so moving the root fails on Cuebot's first check
            ({**gid(ROOT_GROUP), "parent_group": {"id": key["id"]}},
             "error moving group, you cannot move a group into one of its sub groups")):
        message = await cue.error("/job.GroupInterface/SetGroup", body, 500)
        assert message == f"com.imageworks.spcue.EntityModificationError: {text}\n{text}"
    # a group with sub-groups, or pending jobs, is not deleted
    refused = ("Failed to remove group, be sure that there are no jobs or filter actions "
               "pointing at the group.")
    assert await cue.error("/job.GroupInterface/Delete", gid(key), 500) == refused
    job = await cue.launch(spec("grouped"))
    await cue.rpc("/job.JobInterface/SetGroup", {"job": {"id": job["id"]},
                                                 "group_id": light["id"]})
    assert await cue.error("/job.GroupInterface/Delete", gid(light), 500) == refused
    await cue.rpc("/job.JobInterface/Kill", {"job": {"id": job["id"]}, "reason": "done"})
    await cue.rpc("/job.GroupInterface/Delete", gid(light))     # its finished job goes to root
    assert await cue.error("/job.GroupInterface/GetGroup", {"id": light["id"]}, 404)
    assert (await cue.job(job))["group"] == "testing"
    await cue.rpc("/job.GroupInterface/Delete", gid(ROOT_GROUP))   # the root stays, silently
    assert (await cue.group(ROOT_GROUP))["name"] == "testing"
    assert await cue.error("/job.GroupInterface/Delete", gid("nope"), 500) == EMPTY_RESULT


async def test_department_and_resources(cue: Cue) -> None:
    fx = await sub(cue, ROOT_GROUP, "fx")
    job = await cue.launch(spec("sim"))
    await cue.rpc("/job.GroupInterface/ReparentJobs", {**gid(fx), "jobs": {"jobs": [
        {"id": job["id"]}]}})
    await cue.rpc("/job.GroupInterface/SetDepartment", {**gid(fx), "dept": "FX"})
    assert (await cue.group(fx["id"]))["department"] == "FX"
    assert cue.store.one("SELECT d.name FROM job j JOIN dept d ON d.id = j.dept_id")[0] == "FX"
    assert await cue.error("/job.GroupInterface/SetDepartment",
                           {**gid(fx), "dept": "Nope"}, 500) == EMPTY_RESULT
    await cue.rpc("/job.GroupInterface/SetMinGpus", {**gid(fx), "min_gpus": -3})
    await cue.rpc("/job.GroupInterface/SetMaxGpus", {**gid(fx), "max_gpus": -3})
    got = await cue.group(fx["id"])
    assert (got["minGpus"], got["maxGpus"]) == (0, -1)
    await cue.rpc("/job.GroupInterface/SetMaxGpus", {**gid(fx), "max_gpus": 4})
    assert (await cue.group(fx["id"]))["maxGpus"] == 4


async def test_job_defaults_reach_the_groups_jobs(cue: Cue) -> None:
    fx = await sub(cue, ROOT_GROUP, "fx")
    job = await cue.launch(spec("sim"))
    await cue.rpc("/job.JobInterface/SetGroup", {"job": {"id": job["id"]}, "group_id": fx["id"]})
    await cue.rpc("/job.GroupInterface/SetDefaultJobMaxCores", {**gid(fx), "max_cores": 8.7})
    await cue.rpc("/job.GroupInterface/SetDefaultJobMinCores", {**gid(fx), "min_cores": 2})
    await cue.rpc("/job.GroupInterface/SetDefaultJobMaxGpus", {**gid(fx), "max_gpus": 3})
    await cue.rpc("/job.GroupInterface/SetDefaultJobMinGpus", {**gid(fx), "min_gpus": 1})
    await cue.rpc("/job.GroupInterface/SetDefaultJobPriority", {**gid(fx), "priority": 40})
    g = await cue.group(fx["id"])
    assert (g["defaultJobMaxCores"], g["defaultJobMinCores"], g["defaultJobMaxGpus"],
            g["defaultJobMinGpus"], g["defaultJobPriority"]) == (8.0, 2.0, 3, 1, 40)  # whole cores
    j = await cue.job(job)
    assert (j["maxCores"], j["minCores"], j["maxGpus"], j["minGpus"], j["priority"]) == (
        8.0, 2.0, 3, 1, 40)
    # 0 unsets the default (-1) and leaves the jobs alone...
    await cue.rpc("/job.GroupInterface/SetDefaultJobMaxCores", {**gid(fx), "max_cores": 0})
    assert (await cue.group(fx["id"]))["defaultJobMaxCores"] == -1.0
    # ...but a negative priority, stored as -1, still reaches every job, as in Cuebot
    await cue.rpc("/job.GroupInterface/SetDefaultJobPriority", {**gid(fx), "priority": -5})
    assert (await cue.group(fx["id"]))["defaultJobPriority"] == -1
    assert (await cue.job(job))["priority"] == -5


async def test_job_whiteboard_draws_the_tree(cue: Cue) -> None:
    """CueGUI's Monitor Cue stays empty without ShowInterface/GetJobWhiteboard."""
    light = await sub(cue, ROOT_GROUP, "lighting")
    key = await sub(cue, light["id"], "key")
    await sub(cue, ROOT_GROUP, "anim")
    root_job = await cue.launch(spec("roots", layer("render", "1-3")))
    key_job = await cue.launch(spec("keys", layer("render", "1-2")))
    await cue.rpc("/job.JobInterface/SetGroup", {"job": {"id": key_job["id"]},
                                                 "group_id": key["id"]})
    board = (await cue.rpc("/show.ShowInterface/GetJobWhiteboard",
                           {"show": {"name": "testing"}}))["whiteboard"]
    assert (board["id"], board["name"], board["level"]) == (ROOT_GROUP, "testing", 0)
    assert board["jobs"] == [root_job["id"]]
    assert [j["name"] for j in board["inlineJobs"]] == [root_job["name"]]
    assert (board["stats"]["pendingJobs"], board["stats"]["waitingFrames"]) == (1, 3)
    kids = board["groups"]["nestedGroups"]
    assert [g["name"] for g in kids] == ["anim", "lighting"]
    lighting = kids[1]
    assert lighting["parent"]["name"] == "testing" and lighting["parent"]["groups"] is None
    (keys,) = lighting["groups"]["nestedGroups"]
    assert (keys["name"], keys["level"], keys["jobs"]) == ("key", 2, [key_job["id"]])
    assert keys["inlineJobs"][0]["jobStats"]["waitingFrames"] == 2
    assert keys["parent"]["name"] == "lighting"
    message = await cue.error("/show.ShowInterface/GetJobWhiteboard",
                              {"show": {"name": "nope"}}, 500)
    assert message == EMPTY_RESULT
