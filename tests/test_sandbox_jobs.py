"""The sandbox's Job, Frame, Layer, Group and Depend interfaces over real gRPC.

The demo farm's lighting job is the usual subject: layer ``render`` (frames
1-8 SUCCEEDED, 9 DEAD, 10 EATEN, 11-14 RUNNING on procs, 15-20 WAITING) and
layer ``comp`` (1-20, DEPEND on render through a LAYER_ON_LAYER depend).
Effects are checked through the RPCs a client would use, and against the
store where the RPCs cannot see them (procs, hosts' idle cores).
"""
from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from opencue_proto import (comment_pb2, depend_pb2, depend_pb2_grpc, job_pb2, job_pb2_grpc,
                           show_pb2, show_pb2_grpc)

from gateway.sandbox.seed import ROOT_GROUP, TESTING
from gateway.sandbox.store import new_id

LIGHTING = "testing-sh010-jdoe_lighting"
FX = "testing-sh020-asmith_fx_sim"
COMP_DONE = "testing-sh030-bwayne_comp"
ANIM = "testing-sh040-jdoe_anim_playblast"
EMPTY_RESULT = ("org.springframework.dao.EmptyResultDataAccessException: Incorrect result "
                "size: expected 1, actual 0\nIncorrect result size: expected 1, actual 0")
NO_ROW = "Incorrect result size: expected 1, actual 0"


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


class Cue:
    """The five stubs on one channel, and the store for what RPCs cannot show."""

    def __init__(self, sandbox: Any, channel: grpc.aio.Channel) -> None:
        self.store = sandbox.store
        self.jobs = job_pb2_grpc.JobInterfaceStub(channel)
        self.frames = job_pb2_grpc.FrameInterfaceStub(channel)
        self.layers = job_pb2_grpc.LayerInterfaceStub(channel)
        self.groups = job_pb2_grpc.GroupInterfaceStub(channel)
        self.depends = depend_pb2_grpc.DependInterfaceStub(channel)
        self.shows = show_pb2_grpc.ShowInterfaceStub(channel)

    async def job(self, name: str = LIGHTING) -> job_pb2.Job:
        row = self.store.one("SELECT id FROM job WHERE name = ?", (name,))
        return (await self.jobs.GetJob(job_pb2.JobGetJobRequest(id=row["id"]))).job

    async def frames_of(self, job: job_pb2.Job, **req: Any) -> list[job_pb2.Frame]:
        req.setdefault("limit", 1000)
        got = await self.jobs.GetFrames(job_pb2.JobGetFramesRequest(
            job=job, req=job_pb2.FrameSearchCriteria(**req)))
        return list(got.frames.frames)

    async def frame(self, job: job_pb2.Job, name: str) -> job_pb2.Frame:
        return (await self.frames_of(job, frames=[name]))[0]

    async def layer(self, job: job_pb2.Job, name: str) -> job_pb2.Layer:
        layers = (await self.jobs.GetLayers(job_pb2.JobGetLayersRequest(job=job))).layers.layers
        return next(layer for layer in layers if layer.name == name)

    def procs_of(self, frame_id: str) -> int:
        return self.store.one("SELECT COUNT(*) FROM proc WHERE frame_id = ?", (frame_id,))[0]

    def idle(self) -> int:
        return self.store.one("SELECT SUM(idle_cores) FROM host")[0]


@pytest.fixture
def cue(sandbox: Any, sandbox_channel: grpc.aio.Channel) -> Cue:
    return Cue(sandbox, sandbox_channel)


def states(frames: list[job_pb2.Frame]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in frames:
        name = job_pb2.FrameState.Name(f.state)
        out[name] = out.get(name, 0) + 1
    return out


# -- GetJobs and JobSearchCriteria ----------------------------------------------------
async def names(cue: Cue, **r: Any) -> list[str]:
    got = await cue.jobs.GetJobs(job_pb2.JobGetJobsRequest(r=job_pb2.JobSearchCriteria(**r)))
    return [j.name for j in got.jobs.jobs]


async def test_get_jobs_empty_criteria_is_pending_jobs_by_name(cue: Cue) -> None:
    assert await names(cue) == [LIGHTING, FX, ANIM]
    assert await names(cue, include_finished=True) == [LIGHTING, FX, COMP_DONE, ANIM]


@pytest.mark.parametrize("criteria, expected", [
    ({"users": ["jdoe"]}, [LIGHTING, ANIM]),
    ({"users": ["jdoe", "asmith"]}, [LIGHTING, FX, ANIM]),              # ORed within a field
    ({"users": ["jdoe"], "shots": ["sh040"]}, [ANIM]),                  # ANDed across fields
    ({"shots": ["sh030"]}, []),                                          # finished: hidden
    ({"shots": ["sh030"], "include_finished": True}, [COMP_DONE]),
    ({"shows": ["testing"]}, [LIGHTING, FX, ANIM]),
    ({"shows": ["Testing"]}, []),                                        # case-sensitive
    ({"shows": ["pipeline_test"]}, []),
    ({"jobs": [FX]}, [FX]),
    ({"jobs": [FX.upper()]}, []),
    ({"substr": ["jdoe"]}, [LIGHTING, ANIM]),
    ({"substr": ["JDOE"]}, []),                                          # LIKE is case-sensitive
    ({"substr": ["sh0_0-jdoe"]}, [LIGHTING, ANIM]),                      # _ is a wildcard
    ({"substr": ["%fx%"]}, [FX]),
    ({"regex": ["_(fx|anim)_"]}, [FX, ANIM]),
    ({"regex": ["^testing-sh01"]}, [LIGHTING]),
    ({"regex": ["LIGHTING"]}, []),
])
async def test_job_search_criteria(cue: Cue, criteria: dict, expected: list[str]) -> None:
    assert await names(cue, **criteria) == expected


async def test_job_search_by_id_and_names(cue: Cue) -> None:
    done = await cue.job(COMP_DONE)
    assert await names(cue, ids=[done.id]) == []
    assert await names(cue, ids=[done.id], include_finished=True) == [COMP_DONE]
    got = await cue.jobs.GetJobNames(job_pb2.JobGetJobNamesRequest(
        r=job_pb2.JobSearchCriteria(users=["jdoe"])))
    assert list(got.names) == [LIGHTING, ANIM]


async def test_invalid_regex_is_internal(cue: Cue) -> None:
    e = await rpc_error(cue.jobs.GetJobs(job_pb2.JobGetJobsRequest(
        r=job_pb2.JobSearchCriteria(regex=["(unclosed"]))))
    assert e.code() == grpc.StatusCode.INTERNAL
    assert "ERROR: invalid regular expression: parentheses () not balanced" in e.details()


@pytest.mark.parametrize("pattern, expected", [
    (r"sh0[[:digit:]]0\y", [LIGHTING, FX, ANIM]),       # POSIX class, word boundary
    (r"\mjdoe", [LIGHTING, ANIM]),                         # start of a word
    (r"sh01\y", []),
    (r"[[:upper:]]", []),
])
async def test_regex_is_postgresqls_dialect(cue: Cue, pattern: str, expected: list[str]) -> None:
    """Study §2.2 #4: CueGUI sends users' text as ``regex``, which PostgreSQL reads."""
    assert await names(cue, regex=[pattern]) == expected


async def test_job_message_fields_and_stats(cue: Cue) -> None:
    job = (await cue.jobs.FindJob(job_pb2.JobFindJobRequest(name=LIGHTING))).job
    assert (job.show, job.group, job.facility, job.user, job.shot) == (
        "testing", "testing", "local", "jdoe", "sh010")
    assert job.state == job_pb2.PENDING and job.priority == 100 and job.has_comment
    s = job.job_stats
    assert (s.total_frames, s.total_layers, s.succeeded_frames, s.dead_frames, s.eaten_frames,
            s.running_frames, s.waiting_frames, s.depend_frames) == (40, 2, 8, 1, 1, 4, 6, 20)
    assert s.pending_frames == 26 and s.reserved_cores == 16.0
    assert job.log_dir.endswith(f"/logs/{LIGHTING}--{job.id}")


# -- lookups and their errors ------------------------------------------------------------
async def test_find_job_lower_cases_and_sees_pending_jobs_only(cue: Cue) -> None:
    found = (await cue.jobs.FindJob(job_pb2.JobFindJobRequest(name=LIGHTING.upper()))).job
    assert found.name == LIGHTING
    for name in (COMP_DONE, "no-such-job"):  # FindJob passes Spring's text on (not "Job not found")
        e = await rpc_error(cue.jobs.FindJob(job_pb2.JobFindJobRequest(name=name)))
        assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, NO_ROW)
    e = await rpc_error(cue.jobs.GetJob(job_pb2.JobGetJobRequest(id="no-such-id")))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, NO_ROW)
    done = await cue.job(COMP_DONE)  # GetJob finds any state
    assert done.state == job_pb2.FINISHED and done.stop_time > 0
    pending = await cue.jobs.IsJobPending(job_pb2.JobIsJobPendingRequest(name=LIGHTING))
    finished = await cue.jobs.IsJobPending(job_pb2.JobIsJobPendingRequest(name=COMP_DONE))
    assert pending.value and not finished.value


GHOST = job_pb2.Job(id="00000000-dead-beef-0000-000000000000", name=LIGHTING)


@pytest.mark.parametrize("rpc, msg", [
    ("GetFrames", job_pb2.JobGetFramesRequest(job=GHOST)),
    ("GetLayers", job_pb2.JobGetLayersRequest(job=GHOST)),
    ("GetComments", job_pb2.JobGetCommentsRequest(job=GHOST)),
    ("GetCurrent", job_pb2.JobGetCurrentRequest(job=GHOST)),
    ("GetDepends", job_pb2.JobGetDependsRequest(job=GHOST)),
    ("Pause", job_pb2.JobPauseRequest(job=GHOST)),
    ("Resume", job_pb2.JobResumeRequest(job=GHOST)),
    ("Kill", job_pb2.JobKillRequest(job=GHOST, reason="x")),
    ("SetPriority", job_pb2.JobSetPriorityRequest(job=GHOST, val=5)),
    ("AddComment", job_pb2.JobAddCommentRequest(job=GHOST)),
    ("EatFrames", job_pb2.JobEatFramesRequest(job=GHOST)),
])
async def test_every_job_rpc_says_job_not_found(cue: Cue, rpc: str, msg: Any) -> None:
    """The name is not used to find a job: only its id."""
    e = await rpc_error(getattr(cue.jobs, rpc)(msg))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "Job not found")


@pytest.mark.parametrize("stub, rpc, msg", [
    ("frames", "GetFrame", job_pb2.FrameGetFrameRequest(id="nope")),
    ("frames", "FindFrame", job_pb2.FrameFindFrameRequest(job=COMP_DONE, layer="comp",
                                                          frame=1001)),  # finished job
    ("layers", "GetLayer", job_pb2.LayerGetLayerRequest(id="nope")),
    ("layers", "FindLayer", job_pb2.LayerFindLayerRequest(job=COMP_DONE, layer="comp")),
    ("layers", "FindLayer", job_pb2.LayerFindLayerRequest(job=LIGHTING.upper(), layer="comp")),
    ("groups", "GetGroup", job_pb2.GroupGetGroupRequest(id="nope")),
    ("groups", "FindGroup", job_pb2.GroupFindGroupRequest(show="testing", name="nope")),
    ("depends", "GetDepend", depend_pb2.DependGetDependRequest(id="nope")),
])
async def test_lookups_are_not_found(cue: Cue, stub: str, rpc: str, msg: Any) -> None:
    e = await rpc_error(getattr(getattr(cue, stub), rpc)(msg))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, NO_ROW)


@pytest.mark.parametrize("stub, rpc, msg", [
    ("frames", "Retry", job_pb2.FrameRetryRequest(frame=job_pb2.Frame(id="nope"))),
    ("frames", "Kill", job_pb2.FrameKillRequest(frame=job_pb2.Frame(id="nope"))),
    ("frames", "Eat", job_pb2.FrameEatRequest(frame=job_pb2.Frame(id="nope"))),
    ("frames", "MarkAsWaiting", job_pb2.FrameMarkAsWaitingRequest(frame=job_pb2.Frame(id="x"))),
    ("frames", "GetFrames", job_pb2.FrameGetFramesRequest(job="no-such-job")),
    ("layers", "GetFrames", job_pb2.LayerGetFramesRequest(layer=job_pb2.Layer(id="nope"))),
    ("layers", "SetTags", job_pb2.LayerSetTagsRequest(layer=job_pb2.Layer(id="x"), tags=["a"])),
    ("layers", "KillFrames", job_pb2.LayerKillFramesRequest(layer=job_pb2.Layer(id="x"))),
    ("groups", "SetMinCores", job_pb2.GroupSetMinCoresRequest(group=job_pb2.Group(id="x"))),
    ("groups", "GetJobs", job_pb2.GroupGetJobsRequest(group=job_pb2.Group(id="x"))),
    ("depends", "Satisfy", depend_pb2.DependSatisfyRequest(depend=depend_pb2.Depend(id="x"))),
    ("depends", "Unsatisfy", depend_pb2.DependUnsatisfyRequest(
        depend=depend_pb2.Depend(id="x"))),
])
async def test_other_rpcs_on_missing_objects_are_internal(cue: Cue, stub: str, rpc: str,
                                                          msg: Any) -> None:
    e = await rpc_error(getattr(getattr(cue, stub), rpc)(msg))
    assert (e.code(), e.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_layer_and_frame_lookups(cue: Cue) -> None:
    job = await cue.job()
    layers = (await cue.jobs.GetLayers(job_pb2.JobGetLayersRequest(job=job))).layers.layers
    assert [(x.name, x.dispatch_order) for x in layers] == [("render", 1), ("comp", 2)]
    render, comp = layers
    assert list(render.tags) == ["general"] and list(render.services) == ["arnold"]
    assert render.min_cores == 4.0 and list(render.limits) == [""]
    assert list(comp.limits) == ["nuke_license"]
    s = render.layer_stats
    assert (s.total_frames, s.succeeded_frames, s.running_frames, s.waiting_frames) == (
        20, 8, 4, 6)
    found = (await cue.layers.FindLayer(job_pb2.LayerFindLayerRequest(
        job=LIGHTING, layer="comp"))).layer
    assert found.id == comp.id and found.parent_id == job.id
    assert (await cue.layers.GetLayer(job_pb2.LayerGetLayerRequest(id=comp.id))).layer == found
    frame = (await cue.frames.FindFrame(job_pb2.FrameFindFrameRequest(
        job=LIGHTING, layer="render", frame=9))).frame
    assert frame.name == "0009-render" and frame.state == job_pb2.DEAD
    assert frame.layer_name == "render" and frame.retry_count == 3
    same = (await cue.frames.GetFrame(job_pb2.FrameGetFrameRequest(id=frame.id))).frame
    assert same == frame
    limits = (await cue.layers.GetLimits(job_pb2.LayerGetLimitsRequest(layer=comp))).limits
    assert [x.name for x in limits] == ["nuke_license"]


# -- frame listings: criteria and the paging quirk -----------------------------------------
async def test_get_frames_without_limit_lists_nothing(cue: Cue) -> None:
    job = await cue.job()
    for req in (None, job_pb2.FrameSearchCriteria(), job_pb2.FrameSearchCriteria(page=1)):
        got = await cue.jobs.GetFrames(job_pb2.JobGetFramesRequest(job=job, req=req))
        assert list(got.frames.frames) == []


async def test_get_frames_pages_interleave_layers(cue: Cue) -> None:
    job = await cue.job()
    first = await cue.frames_of(job, page=1, limit=5)
    assert [f.name for f in first] == ["0001-render", "0001-comp", "0002-render", "0002-comp",
                                       "0003-render"]
    assert [f.name for f in await cue.frames_of(job, page=0, limit=5)] == [
        f.name for f in first]                                          # page 0 reads as 1
    second = await cue.frames_of(job, page=2, limit=5)
    assert second[0].name == "0003-comp" and len(second) == 5
    assert len(await cue.frames_of(job, page=3, limit=15)) == 10      # 40 frames in all
    assert await cue.frames_of(job, page=9, limit=15) == []
    assert len(await cue.frames_of(job, page=1, limit=5000)) == 40    # not capped


@pytest.mark.parametrize("req, expected", [
    ({"states": {"frame_states": [job_pb2.RUNNING]}},
     ["0011-render", "0012-render", "0013-render", "0014-render"]),
    ({"states": {"frame_states": [job_pb2.DEAD, job_pb2.EATEN]}},
     ["0009-render", "0010-render"]),
    ({"layers": ["comp"], "frame_range": "3"}, ["0003-comp"]),
    ({"layers": ["render"], "frame_range": "2-4"}, ["0002-render", "0003-render",
                                                    "0004-render"]),
    ({"layers": ["render"], "frame_range": "1-20x9"}, ["0001-render", "0010-render",
                                                       "0019-render"]),
    ({"layers": ["render"], "frame_range": "20,1"}, ["0001-render", "0020-render"]),
    ({"frames": ["0005-comp", "0006-render"]}, ["0005-comp", "0006-render"]),
    ({"layers": ["nope"]}, []),
    ({"layers": ["render"], "memory_range": "5-1000"}, []),
    ({"layers": ["render"], "states": {"frame_states": [job_pb2.RUNNING]},
      "duration_range": "0.07"}, ["0011-render", "0012-render"]),   # over 252 s
])
async def test_frame_search_criteria(cue: Cue, req: dict, expected: list[str]) -> None:
    job = await cue.job()
    assert [f.name for f in await cue.frames_of(job, **req)] == expected


async def test_frame_memory_range_in_gb(cue: Cue) -> None:
    job = await cue.job()
    ran = {f.name for f in await cue.frames_of(job, memory_range="3-5")}
    # render frames reserve 8 GB; the demo's procs report half of it as max RSS
    assert ran and all(n.endswith("-render") for n in ran)
    assert {f.name for f in await cue.frames_of(job, memory_range="3.5")} == ran
    assert await cue.frames_of(job, memory_range="4.1") == []


@pytest.mark.parametrize("req", [{"frame_range": "1-2000x1"}, {"frame_range": "a-b"},
                                 {"memory_range": "lots"}, {"duration_range": "1-x"}])
async def test_frame_criteria_that_break_cuebots_query(cue: Cue, req: dict) -> None:
    job = await cue.job()
    e = await rpc_error(cue.frames_of(job, **req))
    assert e.code() == grpc.StatusCode.INTERNAL
    if req.get("frame_range") == "a-b":   # Cuebot's FrameRange words it so
        assert e.details() == ("java.lang.IllegalArgumentException: unrecognized frame range "
                               "syntax a-b\nunrecognized frame range syntax a-b")


async def test_frame_ids_and_ids_of_another_job(cue: Cue) -> None:
    job, fx = await cue.job(), await cue.job(FX)
    mine = (await cue.frames_of(job, limit=1))[0]
    theirs = (await cue.frames_of(fx, limit=1))[0]
    got = await cue.frames_of(job, ids=[mine.id, theirs.id])
    assert [f.id for f in got] == [mine.id]                       # scoped to the job


async def test_layer_and_frame_interface_listings(cue: Cue) -> None:
    job = await cue.job()
    comp = await cue.layer(job, "comp")
    got = await cue.layers.GetFrames(job_pb2.LayerGetFramesRequest(
        layer=comp, s=job_pb2.FrameSearchCriteria(page=2, limit=8)))
    assert [f.name for f in got.frames.frames] == [f"{n:04d}-comp" for n in range(9, 17)]
    nothing = await cue.layers.GetFrames(job_pb2.LayerGetFramesRequest(layer=comp))
    assert list(nothing.frames.frames) == []
    by_name = await cue.frames.GetFrames(job_pb2.FrameGetFramesRequest(
        job=LIGHTING, r=job_pb2.FrameSearchCriteria(layers=["comp"], limit=3)))
    assert [f.name for f in by_name.frames.frames] == ["0001-comp", "0002-comp", "0003-comp"]


# -- job mutations ---------------------------------------------------------------------------
async def test_pause_resume_and_setters(cue: Cue) -> None:
    job = await cue.job()
    await cue.jobs.Pause(job_pb2.JobPauseRequest(job=job))
    assert (await cue.job()).is_paused
    await cue.jobs.Resume(job_pb2.JobResumeRequest(job=job))
    assert not (await cue.job()).is_paused
    await cue.jobs.SetPriority(job_pb2.JobSetPriorityRequest(job=job, val=250))
    await cue.jobs.SetMinCores(job_pb2.JobSetMinCoresRequest(job=job, val=2.6))
    await cue.jobs.SetMaxCores(job_pb2.JobSetMaxCoresRequest(job=job, val=12.996))
    got = await cue.job()
    assert (got.priority, got.min_cores, got.max_cores) == (250, 2.0, 13.0)
    await cue.jobs.SetMaxCores(job_pb2.JobSetMaxCoresRequest(job=job, val=-1))
    assert (await cue.job()).max_cores == -1.0
    # only exactly -1 means "unlimited": Cuebot stores -5 as -400 units and shows -4.0
    await cue.jobs.SetMaxCores(job_pb2.JobSetMaxCoresRequest(job=job, val=-5))
    assert (await cue.job()).max_cores == -4.0
    done = await cue.job(COMP_DONE)  # no state check
    await cue.jobs.Pause(job_pb2.JobPauseRequest(job=done))
    assert (await cue.job(COMP_DONE)).is_paused


async def test_kill_without_reason_is_ignored(cue: Cue) -> None:
    job = await cue.job()
    await cue.jobs.Kill(job_pb2.JobKillRequest(job=job, username="jdoe", pid="1",
                                               host_kill="ws"))
    assert (await cue.job()).state == job_pb2.PENDING


async def test_kill_with_reason(cue: Cue) -> None:
    job = await cue.job()
    running = await cue.frames_of(job, states={"frame_states": [job_pb2.RUNNING]})
    idle_before = cue.idle()
    show_before = (await cue.shows.FindShow(show_pb2.ShowFindShowRequest(name="testing"))).show
    await cue.jobs.Kill(job_pb2.JobKillRequest(job=job, username="jdoe", reason="wrong cam"))
    killed = await cue.job()
    assert killed.state == job_pb2.FINISHED and killed.stop_time > 0
    assert killed.job_stats.running_frames == 0 and killed.job_stats.reserved_cores == 0
    after = {f.id: f for f in await cue.frames_of(killed)}
    assert all(after[f.id].state == job_pb2.WAITING for f in running)
    assert all(cue.procs_of(f.id) == 0 for f in running)
    assert cue.idle() == idle_before + 1600                              # 4 procs x 4 cores
    assert states(list(after.values()))["DEPEND"] == 20                  # kept their state
    e = await rpc_error(cue.jobs.FindJob(job_pb2.JobFindJobRequest(name=LIGHTING)))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    show = (await cue.shows.FindShow(show_pb2.ShowFindShowRequest(name="testing"))).show
    assert show.show_stats.pending_jobs == show_before.show_stats.pending_jobs - 1
    assert show.show_stats.reserved_cores == show_before.show_stats.reserved_cores - 16
    assert cue.store.one("SELECT visible_name FROM job WHERE id = ?", (job.id,))[0] is None
    await cue.jobs.Kill(job_pb2.JobKillRequest(job=job, reason="again"))  # finished: no-op


async def test_kill_satisfies_what_depends_on_the_job(cue: Cue) -> None:
    job, fx = await cue.job(), await cue.job(FX)
    dep = _depend(cue, "JOB_ON_JOB", er_job_id=fx.id, on_job_id=job.id)
    assert states(await cue.frames_of(fx)) == {"DEPEND": 10}
    listed = await cue.jobs.GetWhatDependsOnThis(job_pb2.JobGetWhatDependsOnThisRequest(job=job))
    assert dep in [d.id for d in listed.depends.depends]
    await cue.jobs.Kill(job_pb2.JobKillRequest(job=job, reason="gone"))
    assert states(await cue.frames_of(fx)) == {"WAITING": 10}
    got = (await cue.depends.GetDepend(depend_pb2.DependGetDependRequest(id=dep))).depend
    assert not got.active and got.depend_er_job == FX and got.depend_on_job == LIGHTING


def _depend(cue: Cue, kind: str, **keys: str) -> str:
    """A depend added as a launch would (frames held), for the depend RPC tests."""
    s = cue.store
    dep = new_id()
    with s.tx():
        s.insert("depend", id=dep, type=kind, target="EXTERNAL", **keys)
        if "er_frame_id" in keys:
            where, key = "id = ?", keys["er_frame_id"]
        elif "er_layer_id" in keys:
            where, key = "layer_id = ?", keys["er_layer_id"]
        else:
            where, key = "job_id = ?", keys["er_job_id"]
        s.run(f"UPDATE frame SET depend_count = depend_count + 1, state = CASE WHEN state = "
              f"'WAITING' THEN 'DEPEND' ELSE state END WHERE {where}", (key,))
    return dep


async def test_comments(cue: Cue) -> None:
    fx = await cue.job(FX)
    assert not fx.has_comment
    await cue.jobs.AddComment(job_pb2.JobAddCommentRequest(job=fx, new_comment=comment_pb2.Comment(
        user="asmith", subject="cache", message="re-cached sim")))
    got = (await cue.jobs.GetComments(job_pb2.JobGetCommentsRequest(job=fx))).comments.comments
    assert [(c.user, c.subject, c.message) for c in got] == [("asmith", "cache", "re-cached sim")]
    assert abs(got[0].timestamp - time.time()) < 5 and len(got[0].id) == 36
    assert (await cue.job(FX)).has_comment
    current = (await cue.jobs.GetCurrent(job_pb2.JobGetCurrentRequest(job=fx))).job
    assert current.has_comment


async def test_bulk_frame_operations_use_criteria_without_paging(cue: Cue) -> None:
    job = await cue.job()
    await cue.jobs.RetryFrames(job_pb2.JobRetryFramesRequest(
        job=job, req=job_pb2.FrameSearchCriteria(states={"frame_states": [job_pb2.DEAD]})))
    assert (await cue.frame(job, "0009-render")).state == job_pb2.WAITING
    await cue.jobs.EatFrames(job_pb2.JobEatFramesRequest(
        job=job, req=job_pb2.FrameSearchCriteria(layers=["render"], frame_range="15-20")))
    render = await cue.frames_of(job, layers=["render"], frame_range="15-20")
    assert states(render) == {"EATEN": 6}
    await cue.jobs.MarkAsWaiting(job_pb2.JobMarkAsWaitingRequest(
        job=job, req=job_pb2.FrameSearchCriteria(frames=["0001-comp"])))
    assert (await cue.frame(job, "0001-comp")).state == job_pb2.WAITING
    await cue.jobs.KillFrames(job_pb2.JobKillFramesRequest(job=job))   # empty req: whole job
    assert cue.store.one("SELECT COUNT(*) FROM proc WHERE job_id = ?", (job.id,))[0] == 0
    assert (await cue.job()).job_stats.running_frames == 0


async def test_get_updated_frames(cue: Cue) -> None:
    job = await cue.job()
    since = int(time.time()) - 2
    cue.store.run("UPDATE frame SET updated_time = ? WHERE job_id = ?", (since - 10, job.id))
    dead = await cue.frame(job, "0009-render")
    await cue.frames.Retry(job_pb2.FrameRetryRequest(frame=dead))
    got = await cue.jobs.GetUpdatedFrames(job_pb2.JobGetUpdatedFramesRequest(
        job=job, last_check=since))
    assert got.state == job_pb2.PENDING and abs(got.server_time - time.time()) < 5
    assert [(f.id, f.state) for f in got.updated_frames.updated_frames] == [
        (dead.id, job_pb2.WAITING)]
    comp = await cue.layer(job, "comp")
    only_comp = await cue.jobs.GetUpdatedFrames(job_pb2.JobGetUpdatedFramesRequest(
        job=job, last_check=since, layer_filter=job_pb2.LayerSeq(layers=[comp])))
    assert list(only_comp.updated_frames.updated_frames) == []


async def test_get_updated_frames_with_an_old_check_never_answers(cue: Cue) -> None:
    job = await cue.job()
    e = await rpc_error(cue.jobs.GetUpdatedFrames(job_pb2.JobGetUpdatedFramesRequest(
        job=job, last_check=int(time.time()) - 120), timeout=0.5))
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# -- frame mutations -----------------------------------------------------------------------
async def test_frame_kill_is_a_failed_run_with_retries(cue: Cue) -> None:
    job = await cue.job()
    frame = await cue.frame(job, "0011-render")
    idle = cue.idle()
    await cue.frames.Kill(job_pb2.FrameKillRequest(frame=frame, reason="stuck"))
    killed = await cue.frame(job, "0011-render")
    assert killed.state == job_pb2.WAITING and killed.exit_status == 1   # 1 try of 3
    assert killed.stop_time > 0 and cue.procs_of(frame.id) == 0 and cue.idle() == idle + 400
    after = await cue.job()
    assert after.job_stats.failed_frame_count == job.job_stats.failed_frame_count + 1
    assert after.job_stats.running_frames == 3 and after.job_stats.reserved_cores == 12.0
    waiting = await cue.frame(job, "0015-render")
    await cue.frames.Kill(job_pb2.FrameKillRequest(frame=waiting))       # not running: no-op
    assert (await cue.frame(job, "0015-render")) == waiting


async def test_frame_kill_out_of_retries_is_dead(cue: Cue) -> None:
    job = await cue.job()
    frame = await cue.frame(job, "0012-render")
    cue.store.run("UPDATE frame SET retry_count = 3 WHERE id = ?", (frame.id,))
    await cue.frames.Kill(job_pb2.FrameKillRequest(frame=frame))
    assert (await cue.frame(job, "0012-render")).state == job_pb2.DEAD


async def test_frame_retry(cue: Cue) -> None:
    job = await cue.job()
    dead = await cue.frame(job, "0009-render")
    await cue.frames.Retry(job_pb2.FrameRetryRequest(frame=dead))
    assert (await cue.frame(job, "0009-render")).state == job_pb2.WAITING
    running = await cue.frame(job, "0013-render")
    await cue.frames.Retry(job_pb2.FrameRetryRequest(frame=running))   # killed, then WAITING
    assert (await cue.frame(job, "0013-render")).state == job_pb2.WAITING
    assert cue.procs_of(running.id) == 0
    held = await cue.frame(job, "0004-comp")                            # depends unsatisfied
    await cue.frames.Retry(job_pb2.FrameRetryRequest(frame=held))
    assert (await cue.frame(job, "0004-comp")).state == job_pb2.DEPEND
    stats = (await cue.job()).job_stats
    assert (stats.dead_frames, stats.running_frames, stats.waiting_frames) == (0, 3, 8)


async def test_retry_reopens_a_finished_job(cue: Cue) -> None:
    """As in Cuebot only the state changes: the stop time stays, the visible name stays free."""
    done = await cue.job(COMP_DONE)
    frame = (await cue.frames_of(done, limit=1))[0]
    await cue.frames.Retry(job_pb2.FrameRetryRequest(frame=frame))
    job = await cue.job(COMP_DONE)
    assert job.state == job_pb2.PENDING and job.stop_time == done.stop_time > 0
    assert (await cue.jobs.FindJob(job_pb2.JobFindJobRequest(name=COMP_DONE))).job.id == job.id
    assert job.job_stats.waiting_frames == 1 and job.job_stats.succeeded_frames == 9
    e = await rpc_error(cue.frames.GetFrames(job_pb2.FrameGetFramesRequest(
        job=COMP_DONE, r=job_pb2.FrameSearchCriteria(limit=10))))   # by visible name: gone
    assert (e.code(), e.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_frame_eat(cue: Cue) -> None:
    job = await cue.job()
    for name in ("0015-render", "0001-render", "0014-render"):  # WAITING, SUCCEEDED, RUNNING
        await cue.frames.Eat(job_pb2.FrameEatRequest(frame=await cue.frame(job, name)))
    assert (await cue.frame(job, "0015-render")).state == job_pb2.EATEN
    assert (await cue.frame(job, "0001-render")).state == job_pb2.SUCCEEDED   # stays
    eaten = await cue.frame(job, "0014-render")
    assert eaten.state == job_pb2.EATEN and cue.procs_of(eaten.id) == 0
    stats = (await cue.job()).job_stats
    assert (stats.eaten_frames, stats.running_frames) == (3, 3)


async def test_eating_the_last_frames_finishes_the_job(cue: Cue) -> None:
    anim = await cue.job(ANIM)  # 2 DEAD frames keep it PENDING
    assert anim.state == job_pb2.PENDING
    layer = await cue.layer(anim, "playblast")
    await cue.layers.EatFrames(job_pb2.LayerEatFramesRequest(layer=layer))
    done = await cue.job(ANIM)
    assert done.state == job_pb2.FINISHED and done.stop_time > 0
    assert states(await cue.frames_of(done)) == {"EATEN": 2, "SUCCEEDED": 3}
    assert ANIM not in await names(cue)


async def test_mark_as_waiting(cue: Cue) -> None:
    job = await cue.job()
    comp = await cue.frame(job, "0002-comp")
    await cue.frames.MarkAsWaiting(job_pb2.FrameMarkAsWaitingRequest(frame=comp))
    assert (await cue.frame(job, "0002-comp")).state == job_pb2.WAITING
    assert cue.store.one("SELECT depend_count FROM frame WHERE id = ?", (comp.id,))[0] == 0
    running = await cue.frame(job, "0011-render")
    await cue.frames.MarkAsWaiting(job_pb2.FrameMarkAsWaitingRequest(frame=running))
    assert (await cue.frame(job, "0011-render")).state == job_pb2.RUNNING   # DEPEND only


# -- layer mutations -----------------------------------------------------------------------
async def test_layer_kill_and_retry_frames(cue: Cue) -> None:
    job = await cue.job()
    render = await cue.layer(job, "render")
    await cue.layers.KillFrames(job_pb2.LayerKillFramesRequest(layer=render, username="jdoe"))
    after = await cue.layer(job, "render")
    assert after.layer_stats.running_frames == 0 and after.layer_stats.reserved_cores == 0
    assert after.layer_stats.waiting_frames == 10
    await cue.layers.RetryFrames(job_pb2.LayerRetryFramesRequest(layer=render))
    assert states(await cue.frames_of(job, layers=["render"])) == {"WAITING": 20}


async def test_layer_setters(cue: Cue) -> None:
    job = await cue.job()
    comp = await cue.layer(job, "comp")
    await cue.layers.SetTags(job_pb2.LayerSetTagsRequest(layer=comp, tags=["nuke", "", "comp",
                                                                         "nuke"]))
    await cue.layers.SetMinCores(job_pb2.LayerSetMinCoresRequest(layer=comp, cores=2.5))
    await cue.layers.SetMinMemory(job_pb2.LayerSetMinMemoryRequest(layer=comp, memory=8388608))
    got = await cue.layer(job, "comp")
    assert sorted(got.tags) == ["comp", "nuke"] and got.min_cores == 2.5
    assert got.min_memory == 8388608
    await cue.layers.SetMinCores(job_pb2.LayerSetMinCoresRequest(layer=comp, cores=0.05))
    await cue.layers.SetMinMemory(job_pb2.LayerSetMinMemoryRequest(layer=comp, memory=1024))
    got = await cue.layer(job, "comp")
    assert got.min_cores == 1.0 and got.min_memory == 262144             # Cuebot's floors


@pytest.mark.parametrize("tags, message", [
    ([], "java.lang.IllegalArgumentException: Layers must have at least one tag.\n"
         "Layers must have at least one tag."),
    ([""], "java.lang.StringIndexOutOfBoundsException: start -3, end 0, length 0\n"
           "start -3, end 0, length 0"),
])
async def test_layer_set_tags_refuses_no_tags(cue: Cue, tags: list[str], message: str) -> None:
    comp = await cue.layer(await cue.job(), "comp")
    e = await rpc_error(cue.layers.SetTags(job_pb2.LayerSetTagsRequest(layer=comp, tags=tags)))
    assert (e.code(), e.details()) == (grpc.StatusCode.INTERNAL, message)


# -- depends -------------------------------------------------------------------------------
async def test_depend_satisfy_unsatisfy_and_listings(cue: Cue) -> None:
    job = await cue.job()
    render, comp = await cue.layer(job, "render"), await cue.layer(job, "comp")
    on = (await cue.layers.GetWhatDependsOnThis(job_pb2.LayerGetWhatDependsOnThisRequest(
        layer=render))).depends.depends
    assert len(on) == 1
    dep = on[0]
    assert (dep.type, dep.target, dep.active) == (depend_pb2.LAYER_ON_LAYER,
                                                  depend_pb2.INTERNAL, True)
    assert (dep.depend_er_layer, dep.depend_on_layer, dep.depend_er_job) == (
        "comp", "render", LIGHTING)
    this = await cue.layers.GetWhatThisDependsOn(job_pb2.LayerGetWhatThisDependsOnRequest(
        layer=comp))
    assert [d.id for d in this.depends.depends] == [dep.id]
    frame = await cue.frame(job, "0001-comp")
    by_frame = await cue.frames.GetWhatThisDependsOn(job_pb2.FrameGetWhatThisDependsOnRequest(
        frame=frame))
    assert [d.id for d in by_frame.depends.depends] == [dep.id]
    listed = await cue.jobs.GetDepends(job_pb2.JobGetDependsRequest(job=job))
    assert [d.id for d in listed.depends.depends] == [dep.id]
    whole_job = await cue.jobs.GetWhatThisDependsOn(job_pb2.JobGetWhatThisDependsOnRequest(
        job=job))
    assert list(whole_job.depends.depends) == []                     # layer depends excluded

    await cue.depends.Satisfy(depend_pb2.DependSatisfyRequest(depend=dep))
    assert states(await cue.frames_of(job, layers=["comp"])) == {"WAITING": 20}
    assert not (await cue.depends.GetDepend(depend_pb2.DependGetDependRequest(
        id=dep.id))).depend.active
    await cue.depends.Unsatisfy(depend_pb2.DependUnsatisfyRequest(depend=dep))
    assert states(await cue.frames_of(job, layers=["comp"])) == {"DEPEND": 20}
    assert (await cue.depends.GetDepend(depend_pb2.DependGetDependRequest(
        id=dep.id))).depend.active


async def test_unsatisfy_leaves_other_depend_types(cue: Cue) -> None:
    job, fx = await cue.job(), await cue.job(FX)
    dep = _depend(cue, "JOB_ON_JOB", er_job_id=fx.id, on_job_id=job.id)
    await cue.depends.Satisfy(depend_pb2.DependSatisfyRequest(depend=depend_pb2.Depend(id=dep)))
    await cue.depends.Unsatisfy(depend_pb2.DependUnsatisfyRequest(
        depend=depend_pb2.Depend(id=dep)))
    assert states(await cue.frames_of(fx)) == {"WAITING": 10}


async def test_retrying_finished_work_holds_its_dependents_again(cue: Cue) -> None:
    job = await cue.job()
    dep = (await cue.jobs.GetDepends(job_pb2.JobGetDependsRequest(job=job))).depends.depends[0]
    await cue.depends.Satisfy(depend_pb2.DependSatisfyRequest(depend=dep))
    done = await cue.frame(job, "0001-render")
    await cue.frames.Retry(job_pb2.FrameRetryRequest(frame=done))
    assert states(await cue.frames_of(job, layers=["comp"])) == {"DEPEND": 20}


# -- groups --------------------------------------------------------------------------------
async def test_group_lookups_and_listings(cue: Cue) -> None:
    root = (await cue.groups.FindGroup(job_pb2.GroupFindGroupRequest(show="testing",
                                                                    name="testing"))).group
    assert root.id == ROOT_GROUP and root.department == "Pipeline" and root.level == 0
    assert root.group_stats.pending_jobs == 3 and root.group_stats.running_frames == 4
    assert root.group_stats.reserved_cores == 16.0
    assert (await cue.groups.GetGroup(job_pb2.GroupGetGroupRequest(id=ROOT_GROUP))).group == root
    jobs = (await cue.groups.GetJobs(job_pb2.GroupGetJobsRequest(group=root))).jobs.jobs
    assert [j.name for j in jobs] == [LIGHTING, FX, ANIM]
    sub = _subgroup(cue, "lighting", default_job_priority=42)
    children = (await cue.groups.GetGroups(job_pb2.GroupGetGroupsRequest(
        group=root))).groups.groups
    assert [(g.id, g.name, g.parent_id, g.level) for g in children] == [
        (sub, "lighting", ROOT_GROUP, 1)]


def _subgroup(cue: Cue, name: str, **columns: Any) -> str:
    gid = new_id()
    with cue.store.tx():
        cue.store.insert("folder", id=gid, show_id=TESTING, parent_id=ROOT_GROUP, name=name,
                         dept_id=cue.store.one("SELECT dept_id FROM folder WHERE id = ?",
                                               (ROOT_GROUP,))[0], level=1, **columns)
    return gid


@pytest.mark.parametrize("value, expected", [(2.6, 2.0), (-3, 0.0), (0.996, 1.0)])
async def test_group_set_min_cores(cue: Cue, value: float, expected: float) -> None:
    group = job_pb2.Group(id=ROOT_GROUP)
    await cue.groups.SetMinCores(job_pb2.GroupSetMinCoresRequest(group=group, min_cores=value))
    got = (await cue.groups.GetGroup(job_pb2.GroupGetGroupRequest(id=ROOT_GROUP))).group
    assert got.min_cores == expected


async def test_group_set_max_cores(cue: Cue) -> None:
    group = job_pb2.Group(id=ROOT_GROUP)
    await cue.groups.SetMaxCores(job_pb2.GroupSetMaxCoresRequest(group=group, max_cores=10.4))
    assert (await cue.groups.GetGroup(job_pb2.GroupGetGroupRequest(
        id=ROOT_GROUP))).group.max_cores == 10.0
    await cue.groups.SetMaxCores(job_pb2.GroupSetMaxCoresRequest(group=group, max_cores=-7))
    assert (await cue.groups.GetGroup(job_pb2.GroupGetGroupRequest(
        id=ROOT_GROUP))).group.max_cores == -1.0
    e = await rpc_error(cue.groups.SetMaxCores(job_pb2.GroupSetMaxCoresRequest(group=group)))
    assert e.code() == grpc.StatusCode.INTERNAL
    assert e.details() == ("java.lang.IllegalArgumentException: The group max cores feature "
                           "must be a whole core or greater, pass in: 0\nThe group max cores "
                           "feature must be a whole core or greater, pass in: 0")


async def test_reparent_jobs_inherits_group_defaults(cue: Cue) -> None:
    sub = _subgroup(cue, "fx", default_job_priority=42, default_job_max_cores=800)
    fx = await cue.job(FX)
    await cue.groups.ReparentJobs(job_pb2.GroupReparentJobsRequest(
        group=job_pb2.Group(id=sub), jobs=job_pb2.JobSeq(jobs=[fx])))
    moved = await cue.job(FX)
    assert (moved.group, moved.priority, moved.max_cores, moved.min_cores) == (
        "fx", 42, 8.0, fx.min_cores)
    got = (await cue.groups.GetGroup(job_pb2.GroupGetGroupRequest(id=sub))).group
    assert got.group_stats.pending_jobs == 1 and got.group_stats.waiting_frames == 10
    other = (await cue.shows.CreateShow(show_pb2.ShowCreateShowRequest(name="other"))).show
    root = (await cue.shows.GetRootGroup(show_pb2.ShowGetRootGroupRequest(show=other))).group
    e = await rpc_error(cue.groups.ReparentJobs(job_pb2.GroupReparentJobsRequest(
        group=root, jobs=job_pb2.JobSeq(jobs=[fx]))))
    assert e.code() == grpc.StatusCode.INTERNAL and "cannot move jobs between shows" in \
        e.details()
    e = await rpc_error(cue.groups.ReparentJobs(job_pb2.GroupReparentJobsRequest(
        group=root, jobs=job_pb2.JobSeq(jobs=[job_pb2.Job(id="nope")]))))
    assert (e.code(), e.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_a_running_frame_counts_its_run_in_total_core_time(cue: Cue) -> None:
    """As Cuebot's whiteboard: past runs plus the one going on (here 4 cores for 300 s+)."""
    job = await cue.job()
    running = await cue.frame(job, "0011-render")     # the demo started it 300 s ago on 4 cores
    assert running.state == job_pb2.RUNNING and running.total_core_time >= 1200
    done = await cue.frame(job, "0001-render")
    row = cue.store.one("SELECT total_core_time FROM frame WHERE id = ?", (done.id,))
    assert done.total_core_time == row[0]             # a finished frame shows what it used
