"""Depends made, listed, dropped and marked done through the gateway, as CueWeb's and CueGUI's
depend wizards and cueadmin's depend commands do it, with Cuebot's meaning.

Each test launches its own jobs on a fresh sandbox (no dispatcher running) and reads every
effect back over HTTP: the depend the RPC answers, the frames' states and the listings.
"""
from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from gateway.sandbox import server
from sandbox_http import EMPTY_RESULT, Cue, layer, spec


@pytest.fixture
async def cue(make_gateway: Any) -> AsyncIterator[Cue]:
    sb = await server.start(":memory:", demo=False)
    try:
        yield Cue(await make_gateway(cuebot_endpoint=sb.endpoint), sb)
    finally:
        await sb.stop(None)


async def two_jobs(cue: Cue) -> tuple[dict[str, Any], dict[str, Any]]:
    light = await cue.launch(spec("light", layer("prep", "1-2"), layer("beauty", "1-3")))
    comp = await cue.launch(spec("comp", layer("comp", "1-3")))
    return light, comp


def counts(states: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in states.values():
        out[s] = out.get(s, 0) + 1
    return out


# -- JobInterface ---------------------------------------------------------------------------
async def test_job_depends_on_job_layer_and_frame(cue: Cue) -> None:
    light, comp = await two_jobs(cue)
    assert set((await cue.states(comp)).values()) == {"WAITING"}
    dep = (await cue.rpc("/job.JobInterface/CreateDependencyOnJob",
                         {"job": {"id": comp["id"]}, "on_job": {"id": light["id"]}}))["depend"]
    assert (dep["type"], dep["target"], dep["active"], dep["dependErJob"], dep["dependOnJob"]) == (
        "JOB_ON_JOB", "EXTERNAL", True, comp["name"], light["name"])
    assert set((await cue.states(comp)).values()) == {"DEPEND"}
    beauty = await cue.layer(light, "beauty")
    on_layer = (await cue.rpc("/job.JobInterface/CreateDependencyOnLayer",
                              {"job": {"id": comp["id"]}, "layer": {"id": beauty["id"]}}))["depend"]
    frame = await cue.frame(light, "0001-prep")
    on_frame = (await cue.rpc("/job.JobInterface/CreateDependencyOnFrame",
                              {"job": {"id": comp["id"]}, "frame": {"id": frame["id"]}}))["depend"]
    assert (on_layer["type"], on_layer["dependOnLayer"]) == ("JOB_ON_LAYER", "beauty")
    assert (on_frame["type"], on_frame["dependOnFrame"]) == ("JOB_ON_FRAME", "0001-prep")
    assert {f["state"] for f in (await cue.frames(comp)).values()} == {"DEPEND"}
    listed = await cue.rpc("/job.JobInterface/GetWhatThisDependsOn", {"job": {"id": comp["id"]}})
    assert [d["type"] for d in listed["depends"]["depends"]] == [
        "JOB_ON_JOB", "JOB_ON_LAYER", "JOB_ON_FRAME"]
    on_light = await cue.rpc("/job.JobInterface/GetWhatDependsOnThis",
                             {"job": {"id": light["id"]}})
    assert len(on_light["depends"]["depends"]) == 3

    # DropDepends: the default target is INTERNAL, so these EXTERNAL depends stay...
    await cue.rpc("/job.JobInterface/DropDepends", {"job": {"id": comp["id"]}})
    assert set((await cue.states(comp)).values()) == {"DEPEND"}
    # ...until EXTERNAL (or ANY_TARGET) is asked for: all satisfied, frames WAITING again
    await cue.rpc("/job.JobInterface/DropDepends",
                  {"job": {"id": comp["id"]}, "target": "EXTERNAL"})
    assert set((await cue.states(comp)).values()) == {"WAITING"}
    got = await cue.rpc("/depend.DependInterface/GetDepend", {"id": dep["id"]})
    assert got["depend"]["active"] is False


async def test_job_depend_refusals_in_cuebots_words(cue: Cue) -> None:
    light, comp = await two_jobs(cue)
    this = {"job": {"id": light["id"]}}
    message = await cue.error("/job.JobInterface/CreateDependencyOnJob",
                              {**this, "on_job": {"id": light["id"]}}, 500)
    assert message == ("com.imageworks.spcue.depend.DependException: A job cannot depend on "
                       "itself.\nA job cannot depend on itself.")
    beauty = await cue.layer(light, "beauty")
    message = await cue.error("/job.JobInterface/CreateDependencyOnLayer",
                              {**this, "layer": {"id": beauty["id"]}}, 500)
    assert message.endswith("A job cannot depend on one of its own layers.")
    # anything the servant looks up for the job is "Job not found", even the other side
    for path, other in (("CreateDependencyOnFrame", {"frame": {"id": "nope"}}),
                        ("CreateDependencyOnJob", {"on_job": {"id": "nope"}})):
        message = await cue.error(f"/job.JobInterface/{path}",
                                  {"job": {"id": comp["id"]}, **other}, 404)
        assert message == "Job not found"
    # a duplicate of an active depend breaks Cuebot's unique signature
    body = {"job": {"id": comp["id"]}, "on_job": {"id": light["id"]}}
    await cue.rpc("/job.JobInterface/CreateDependencyOnJob", body)
    message = await cue.error("/job.JobInterface/CreateDependencyOnJob", body, 500)
    assert message.startswith("org.springframework.dao.DuplicateKeyException: ")
    # a job that is complete cannot be depended on
    for name in (await cue.frames(light)):
        await cue.rpc("/job.FrameInterface/Eat", {"frame": {"id": (await cue.frame(
            light, name))["id"]}})
    other = await cue.launch(spec("other", layer("other", "1")))
    message = await cue.error("/job.JobInterface/CreateDependencyOnJob",
                              {"job": {"id": other["id"]}, "on_job": {"id": light["id"]}}, 500)
    assert message.endswith("\nThe job you are depending on is already complete.")


async def test_a_depend_on_done_work_is_made_inactive(cue: Cue) -> None:
    light, comp = await two_jobs(cue)
    prep1 = await cue.frame(light, "0001-prep")
    await cue.rpc("/job.FrameInterface/Eat", {"frame": {"id": prep1["id"]}})
    dep = (await cue.rpc("/job.JobInterface/CreateDependencyOnFrame",
                         {"job": {"id": comp["id"]}, "frame": {"id": prep1["id"]}}))["depend"]
    assert dep["active"] is False
    assert set((await cue.states(comp)).values()) == {"WAITING"}


async def test_mark_done_frames_satisfies_what_waits_on_them(cue: Cue) -> None:
    light, comp = await two_jobs(cue)
    prep = {n: f for n, f in (await cue.frames(light)).items() if n.endswith("prep")}
    c1, c2 = (await cue.frame(comp, "0001-comp")), (await cue.frame(comp, "0002-comp"))
    for mine, theirs in ((c1, prep["0001-prep"]), (c2, prep["0002-prep"])):
        await cue.rpc("/job.FrameInterface/CreateDependencyOnFrame",
                      {"frame": {"id": mine["id"]}, "depend_on_frame": {"id": theirs["id"]}})
    assert counts(await cue.states(comp)) == {"DEPEND": 2, "WAITING": 1}
    await cue.rpc("/job.JobInterface/MarkDoneFrames",
                  {"job": {"id": light["id"]}, "req": {"frames": ["0001-prep"]}})
    after = await cue.states(comp)
    assert (after["0001-comp"], after["0002-comp"]) == ("WAITING", "DEPEND")
    # the marked frame keeps its own state: only what waited on it moves
    assert (await cue.frame(light, "0001-prep"))["state"] == "WAITING"


# -- LayerInterface --------------------------------------------------------------------------
async def test_layer_depends_and_markdone(cue: Cue) -> None:
    light, comp = await two_jobs(cue)
    comp_layer, beauty = await cue.layer(comp, "comp"), await cue.layer(light, "beauty")
    dep = (await cue.rpc("/job.LayerInterface/CreateDependencyOnLayer", {
        "layer": {"id": comp_layer["id"]}, "depend_on_layer": {"id": beauty["id"]}}))["depend"]
    assert (dep["type"], dep["dependErLayer"], dep["dependOnLayer"]) == (
        "LAYER_ON_LAYER", "comp", "beauty")
    on_job = (await cue.rpc("/job.LayerInterface/CreateDependencyOnJob", {
        "layer": {"id": comp_layer["id"]}, "job": {"id": light["id"]}}))["depend"]
    frame = await cue.frame(light, "0002-prep")
    on_frame = (await cue.rpc("/job.LayerInterface/CreateDependencyOnFrame", {
        "layer": {"id": comp_layer["id"]}, "frame": {"id": frame["id"]}}))["depend"]
    assert (on_job["type"], on_frame["type"]) == ("LAYER_ON_JOB", "LAYER_ON_FRAME")
    assert set((await cue.states(comp)).values()) == {"DEPEND"}
    # MarkdoneFrames on the depended-on layer satisfies what waits on the *layer* only
    await cue.rpc("/job.LayerInterface/MarkdoneFrames", {"layer": {"id": beauty["id"]}})
    got = await cue.rpc("/depend.DependInterface/GetDepend", {"id": dep["id"]})
    assert got["depend"]["active"] is False
    assert set((await cue.states(comp)).values()) == {"DEPEND"}   # two depends still hold
    await cue.rpc("/job.LayerInterface/DropDepends",
                  {"layer": {"id": comp_layer["id"]}, "target": "ANY_TARGET"})
    assert set((await cue.states(comp)).values()) == {"WAITING"}
    message = await cue.error("/job.LayerInterface/CreateDependencyOnLayer", {
        "layer": {"id": beauty["id"]}, "depend_on_layer": {"id": beauty["id"]}}, 500)
    assert message.endswith("\nCannot make the layer beauty depend on itself.")
    message = await cue.error("/job.LayerInterface/DropDepends", {"layer": {"id": "nope"}}, 500)
    assert message == EMPTY_RESULT


async def test_frame_by_frame_lists_only_its_container(cue: Cue) -> None:
    """Study §2.2 #1: CueGUI's depend views show one FRAME_BY_FRAME row, not N + 1."""
    job = await cue.launch(spec("fbf", layer("render", "1-4"), layer("comp", "1-4")))
    render, comp = await cue.layer(job, "render"), await cue.layer(job, "comp")
    dep = (await cue.rpc("/job.LayerInterface/CreateFrameByFrameDependency", {
        "layer": {"id": comp["id"]}, "depend_layer": {"id": render["id"]}}))["depend"]
    assert (dep["type"], dep["target"], dep["active"]) == ("FRAME_BY_FRAME", "INTERNAL", True)
    for path, body in (("/job.LayerInterface/GetWhatThisDependsOn", {"layer": {"id": comp["id"]}}),
                       ("/job.LayerInterface/GetWhatDependsOnThis",
                        {"layer": {"id": render["id"]}}),
                       ("/job.JobInterface/GetWhatDependsOnThis", {"job": {"id": job["id"]}})):
        listed = (await cue.rpc(path, body))["depends"]["depends"]
        assert [d["id"] for d in listed] == [dep["id"]], path
    # a frame sees its own child, on the matching frame
    f3 = await cue.frame(job, "0003-comp")
    mine = (await cue.rpc("/job.FrameInterface/GetWhatThisDependsOn",
                          {"frame": {"id": f3["id"]}}))["depends"]["depends"]
    assert [(d["type"], d["dependOnFrame"]) for d in mine] == [("FRAME_ON_FRAME", "0003-render")]
    assert counts(await cue.states(job)) == {"WAITING": 4, "DEPEND": 4}
    # dropping the frame's depends frees that frame alone
    await cue.rpc("/job.FrameInterface/DropDepends", {"frame": {"id": f3["id"]}})
    after = await cue.states(job)
    assert after["0003-comp"] == "WAITING" and after["0004-comp"] == "DEPEND"
    # the container is never satisfied itself (Cuebot's composite row stays active)
    await cue.rpc("/depend.DependInterface/Satisfy", {"depend": {"id": dep["id"]}})
    assert set(v for k, v in (await cue.states(job)).items() if k.endswith("comp")) == {
        "WAITING"}
    got = await cue.rpc("/depend.DependInterface/GetDepend", {"id": dep["id"]})
    assert got["depend"]["active"] is True
    # asking again answers the depend that exists
    again = (await cue.rpc("/job.LayerInterface/CreateFrameByFrameDependency", {
        "layer": {"id": comp["id"]}, "depend_layer": {"id": render["id"]}}))["depend"]
    assert again["id"] == dep["id"]


async def test_frame_by_frame_pairs_frames_as_cuebot(cue: Cue) -> None:
    """Study §2.2 #7: equal chunks but different ranges pair equal numbers only; one big
    chunk turns the depend into LAYER_ON_LAYER; a bigger depend-on chunk pairs the chunk."""
    job = await cue.launch(spec("pairs", layer("every", "1-10"), layer("odd", "1-10x2"),
                                layer("chunked", "1-10", chunk=5),
                                layer("whole", "1-10", chunk=10)))
    ids = {n: x["id"] for n, x in (await cue.layers(job)).items()}

    async def fbf(er: str, on: str) -> dict[str, Any]:
        return (await cue.rpc("/job.LayerInterface/CreateFrameByFrameDependency", {
            "layer": {"id": ids[er]}, "depend_layer": {"id": ids[on]}}))["depend"]

    await fbf("every", "odd")
    held = {n for n, s in (await cue.states(job)).items() if s == "DEPEND"}
    assert held == {f"{n:04d}-every" for n in (1, 3, 5, 7, 9)}   # frame 2 is not held
    whole = await fbf("odd", "whole")
    assert whole["type"] == "LAYER_ON_LAYER"
    await fbf("chunked", "every")   # depend-er chunk 5 > 1: frame 1 waits on 1..5, 6 on 6..10
    f1 = await cue.frame(job, "0001-chunked")
    mine = (await cue.rpc("/job.FrameInterface/GetWhatThisDependsOn",
                          {"frame": {"id": f1["id"]}}))["depends"]["depends"]
    assert sorted(d["dependOnFrame"] for d in mine) == [f"{n:04d}-every" for n in range(1, 6)]


async def test_frame_depends_and_mark_as_depend(cue: Cue) -> None:
    light, comp = await two_jobs(cue)
    f = await cue.frame(comp, "0002-comp")
    beauty = await cue.layer(light, "beauty")
    on_layer = (await cue.rpc("/job.FrameInterface/CreateDependencyOnLayer", {
        "frame": {"id": f["id"]}, "layer": {"id": beauty["id"]}}))["depend"]
    on_job = (await cue.rpc("/job.FrameInterface/CreateDependencyOnJob", {
        "frame": {"id": f["id"]}, "job": {"id": light["id"]}}))["depend"]
    assert (on_layer["type"], on_job["type"]) == ("FRAME_ON_LAYER", "FRAME_ON_JOB")
    assert (await cue.frame(comp, "0002-comp"))["state"] == "DEPEND"
    # MarkAsWaiting ignores the depends; MarkAsDepend counts them back
    await cue.rpc("/job.FrameInterface/MarkAsWaiting", {"frame": {"id": f["id"]}})
    assert (await cue.frame(comp, "0002-comp"))["state"] == "WAITING"
    await cue.rpc("/job.FrameInterface/MarkAsDepend", {"frame": {"id": f["id"]}})
    assert (await cue.frame(comp, "0002-comp"))["state"] == "DEPEND"
    await cue.rpc("/job.FrameInterface/DropDepends",
                  {"frame": {"id": f["id"]}, "target": "ANY_TARGET"})
    # dropping satisfies both; the count MarkAsDepend restored comes back down to 0
    assert (await cue.frame(comp, "0002-comp"))["state"] == "WAITING"
    own = await cue.frame(comp, "0001-comp")
    message = await cue.error("/job.FrameInterface/CreateDependencyOnLayer", {
        "frame": {"id": own["id"]}, "layer": {"id": (await cue.layer(comp, "comp"))["id"]}},
        500)
    assert message.endswith("\nThe frame 0001-comp cannot depend  on its own layer.")
