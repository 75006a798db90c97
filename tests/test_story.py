"""The sandbox's farm told as stories, through the gateway over HTTP.

Each test submits work with ``LaunchSpecAndWait``, steps the simulated
dispatcher by hand with its own clock (every render lasts exactly 10
simulated seconds) and acts through the RPCs a person at CueWeb would use:
pause and resume, kill, retry and eat frames, lock hosts, change tags,
limits and caps. After every step :meth:`Story.check_books` reads the whole
farm back over HTTP and checks that Cuebot's counters agree with each
other (job = its frames = its layers = its procs; show and group = their
PENDING jobs; host idle = total - procs; allocation = its hosts;
subscription = its procs; limit = its running frames), and each story
also checks the exact numbers it expects.

Stories start from a fresh Cuebot (no demo farm, so every counter is
predictable) with two 8-core render nodes registered as RQD would register
them: no RPC creates hosts. One story runs on the demo farm (the shared
``sandbox`` fixture) to show the books also balance with other work around.
"""
from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import replace
from typing import Any, AsyncIterator

import orjson
import pytest

from gateway.sandbox import server
from gateway.sandbox.dispatcher import DispatchSettings, StepResult

GB = 1024 * 1024                    # KB
DOCTYPE = ('<?xml version="1.0"?><!DOCTYPE spec PUBLIC "SPI Cue  Specification Language" '
           '"http://localhost:8080/spcue/dtd/cjsl-1.15.dtd">')
RUN = 10.0                          # simulated seconds every render lasts
STATES = ("waiting", "running", "dead", "eaten", "depend", "succeeded")


# ---------------------------------------------------------------------------
# job specs (cjsl 1.15, elements in the DTD's order)
# ---------------------------------------------------------------------------
def layer(name: str = "render", frames: str = "1-10", *, cores: str = "2.0",
          memory: str = "4g", tags: str | None = None, limits: tuple[str, ...] = ()) -> str:
    # threadable: Cuebot books a layer that is not on one core, whatever it asks for
    extra = f"<cores>{cores}</cores><threadable>true</threadable><memory>{memory}</memory>"
    if tags is not None:
        extra += f"<tags>{tags}</tags>"
    if limits:
        extra += "<limits>" + "".join(f"<limit>{x}</limit>" for x in limits) + "</limits>"
    return (f'<layer name="{name}" type="Render"><cmd>render -f #IFRAME#</cmd>'
            f"<range>{frames}</range><chunk>1</chunk>{extra}</layer>")


def spec(name: str = "demo", *layers: str, depends: str = "") -> str:
    body = f'<job name="{name}"><layers>{"".join(layers or (layer(),))}</layers></job>'
    if depends:
        body += f"<depends>{depends}</depends>"
    return (DOCTYPE + "<spec><facility>local</facility><show>testing</show><shot>sh010</shot>"
            "<user>jdoe</user>" + body + "</spec>")


def job_name(name: str) -> str:
    return f"testing-sh010-jdoe_{name}"


# ---------------------------------------------------------------------------
class Story:
    """An HTTP client of the gateway, the sandbox's dispatcher and a clock."""

    def __init__(self, gw: Any, sandbox: Any) -> None:
        self.gw = gw
        self.sandbox = sandbox
        self.t = float(int(time.time()))
        # every host asks for work on every pass, no job lock: each step books what fits
        sandbox.dispatcher.settings = DispatchSettings.eager(run_seconds=(RUN, RUN))
        sandbox.dispatcher.rng = random.Random(6)

    async def rpc(self, path: str, body: dict[str, Any] | None = None, *,
                  status: int = 200) -> Any:
        resp = await self.gw.post(path, data=orjson.dumps(body or {}))
        data = orjson.loads(await resp.read())
        assert resp.status == status, (path, resp.status, data)
        return data

    async def step(self, seconds: float = 0.0) -> StepResult:
        """Advance the clock and run one dispatcher pass, then check the books."""
        self.t += seconds
        result = self.sandbox.dispatcher.step(self.t)
        await self.check_books()
        return result

    def failing(self, rate: float) -> None:
        d = self.sandbox.dispatcher
        d.settings = replace(d.settings, failure_rate=rate)

    # -- reads ---------------------------------------------------------------
    async def launch(self, text: str) -> dict[str, Any]:
        got = await self.rpc("/job.JobInterface/LaunchSpecAndWait", {"spec": text})
        (job,) = got["jobs"]["jobs"]
        await self.check_books()
        return job

    async def job(self, job: dict[str, Any]) -> dict[str, Any]:
        return (await self.rpc("/job.JobInterface/GetJob", {"id": job["id"]}))["job"]

    async def stats(self, job: dict[str, Any]) -> dict[str, Any]:
        return (await self.job(job))["jobStats"]

    async def frames(self, job: dict[str, Any], **req: Any) -> dict[str, dict[str, Any]]:
        got = await self.rpc("/job.JobInterface/GetFrames",
                             {"job": {"id": job["id"]}, "req": {"page": 1, "limit": 1000, **req}})
        return {f["name"]: f for f in got["frames"]["frames"]}

    async def states(self, job: dict[str, Any]) -> dict[str, str]:
        return {n: f["state"] for n, f in (await self.frames(job)).items()}

    async def counts(self, job: dict[str, Any]) -> dict[str, int]:
        return dict(Counter((await self.states(job)).values()))

    async def layers(self, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
        got = await self.rpc("/job.JobInterface/GetLayers", {"job": {"id": job["id"]}})
        return {x["name"]: x for x in got["layers"]["layers"]}

    async def host(self, name: str) -> dict[str, Any]:
        return (await self.rpc("/host.HostInterface/FindHost", {"name": name}))["host"]

    async def procs(self, **criteria: Any) -> list[dict[str, Any]]:
        return (await self.rpc("/host.ProcInterface/GetProcs", {"r": criteria}))["procs"]["procs"]

    async def booked_on(self, job: dict[str, Any]) -> Counter[str]:
        """How many of the job's frames run on each host."""
        return Counter(p["name"].split("/")[0] for p in await self.procs(jobs=[job["name"]]))

    async def show(self) -> dict[str, Any]:
        return (await self.rpc("/show.ShowInterface/FindShow", {"name": "testing"}))["show"]

    async def alloc(self, name: str) -> dict[str, Any]:
        return (await self.rpc("/facility.AllocationInterface/Find", {"name": name}))[
            "allocation"]

    # -- the books -------------------------------------------------------------
    async def check_books(self) -> None:
        """Every counter Cuebot keeps agrees with what it counts."""
        jobs = (await self.rpc("/job.JobInterface/GetJobs",
                               {"r": {"include_finished": True}}))["jobs"]["jobs"]
        procs = await self.procs()
        hosts = (await self.rpc("/host.HostInterface/GetHosts", {"r": {}}))["hosts"]["hosts"]
        layers = {j["id"]: list((await self.layers(j)).values()) for j in jobs}
        for job in jobs:
            await self._check_job(job, layers[job["id"]],
                                  [p for p in procs if p["jobName"] == job["name"]])
        pending = [j for j in jobs if j["state"] == "PENDING" and j["show"] == "testing"]
        show = (await self.show())["showStats"]
        assert show["pendingJobs"] == len(pending)
        for key in ("runningFrames", "deadFrames", "pendingFrames"):
            assert show[key] == sum(j["jobStats"][key] for j in pending), key
        assert show["reservedCores"] == pytest.approx(
            sum(j["jobStats"]["reservedCores"] for j in pending))
        root = (await self.rpc("/show.ShowInterface/GetRootGroup",
                               {"show": {"name": "testing"}}))["group"]
        in_root = [j for j in pending if j["group"] == root["name"]]
        g = root["groupStats"]
        assert g["pendingJobs"] == len(in_root)
        for key in ("waitingFrames", "dependFrames", "runningFrames", "deadFrames"):
            assert g[key] == sum(j["jobStats"][key] for j in in_root), key
        self._check_hosts(hosts, procs)
        await self._check_allocations(hosts, procs)
        for lim in (await self.rpc("/limit.LimitInterface/GetAll"))["limits"]:
            assert lim["currentRunning"] == sum(
                x["layerStats"]["runningFrames"] for ls in layers.values() for x in ls
                if lim["name"] in x["limits"]), lim["name"]

    async def _check_job(self, job: dict[str, Any], layers: list[dict[str, Any]],
                         procs: list[dict[str, Any]]) -> None:
        s = job["jobStats"]
        frames = await self.frames(job)
        by_state = Counter(f["state"].lower() for f in frames.values())
        assert s["totalFrames"] == len(frames)
        for state in STATES:
            assert s[f"{state}Frames"] == by_state[state], (job["name"], state)
        assert s["pendingFrames"] == by_state["waiting"] + by_state["depend"]
        assert s["totalLayers"] == len(layers)
        for key in [f"{x}Frames" for x in STATES] + ["totalFrames", "pendingFrames"]:
            assert s[key] == sum(x["layerStats"][key] for x in layers), (job["name"], key)
        for key in ("renderedFrameCount", "failedFrameCount", "renderedCoreSec"):
            assert int(s[key]) == sum(int(x["layerStats"][key]) for x in layers), key
        # one proc per running frame, on the resource the frame says
        assert s["runningFrames"] == len(procs)
        assert s["reservedCores"] == pytest.approx(sum(p["reservedCores"] for p in procs))
        on = {p["frameName"]: p["name"] for p in procs}
        for name, f in frames.items():
            if f["state"] == "RUNNING":
                assert on[name] == f["lastResource"], name
        if job["state"] == "PENDING":  # something is left to do, or it would have finished
            left = by_state["waiting"] + by_state["running"] + by_state["dead"]
            assert left + by_state["depend"] > 0, job["name"]

    @staticmethod
    def _check_hosts(hosts: list[dict[str, Any]], procs: list[dict[str, Any]]) -> None:
        for h in hosts:
            mine = [p for p in procs if p["name"].split("/")[0] == h["name"]]
            assert h["cores"] - h["idleCores"] == pytest.approx(
                sum(p["reservedCores"] for p in mine)), h["name"]
            assert int(h["memory"]) - int(h["idleMemory"]) == sum(
                int(p["reservedMemory"]) for p in mine), h["name"]
            assert h["idleCores"] >= 0 and int(h["idleMemory"]) >= 0

    async def _check_allocations(self, hosts: list[dict[str, Any]],
                                 procs: list[dict[str, Any]]) -> None:
        allocs = (await self.rpc("/facility.AllocationInterface/GetAll"))["allocations"][
            "allocations"]
        for a in allocs:
            mine = [h for h in hosts if h["allocName"] == a["name"]]
            st = a["stats"]
            assert st["hosts"] == len(mine)
            assert st["cores"] == pytest.approx(sum(h["cores"] for h in mine))
            assert st["idleCores"] == pytest.approx(sum(h["idleCores"] for h in mine))
            assert st["runningCores"] == pytest.approx(st["cores"] - st["idleCores"])
            assert st["lockedCores"] == pytest.approx(
                sum(h["cores"] for h in mine if h["lockState"] != "OPEN"))
            assert st["lockedHosts"] == sum(h["lockState"] != "OPEN" for h in mine)
            assert st["downHosts"] == sum(h["state"] == "DOWN" for h in mine)
            assert st["availableCores"] == pytest.approx(sum(
                h["idleCores"] for h in mine if h["lockState"] == "OPEN" and h["state"] == "UP"))
        subs = (await self.rpc("/show.ShowInterface/GetSubscriptions",
                               {"show": {"name": "testing"}}))["subscriptions"]["subscriptions"]
        alloc_of = {h["name"]: h["allocName"] for h in hosts}
        for sub in subs:  # raw core units, as Cuebot stores subscriptions
            used = sum(p["reservedCores"] for p in procs if p["showName"] == "testing"
                       and alloc_of[p["name"].split("/")[0]] == sub["allocationName"])
            assert sub["reservedCores"] == round(used * 100), sub["name"]


@pytest.fixture
async def story(make_gateway: Any) -> AsyncIterator[Story]:
    """A fresh Cuebot with render nodes rn001 and rn002 (8 cores, 32 GB, tag ``linux``)."""
    sb = await server.start(":memory:", demo=False)
    try:
        with sb.store.tx():
            for name in ("rn001", "rn002"):
                sb.farm.add_host(name, cores=800, memory=32 * GB, hardware_tags=["linux"])
        yield Story(await make_gateway(cuebot_endpoint=sb.endpoint), sb)
    finally:
        await sb.stop(None)


# ---------------------------------------------------------------------------
# the stories
# ---------------------------------------------------------------------------
async def test_a_job_runs_from_waiting_to_succeeded(story: Story) -> None:
    job = await story.launch(spec("demo", layer("render", "1-10", cores="2.0", memory="4g")))
    assert job["name"] == job_name("demo") and job["state"] == "PENDING"
    assert (job["jobStats"]["waitingFrames"], job["jobStats"]["pendingFrames"]) == (10, 10)
    show = await story.show()
    assert (show["showStats"]["pendingFrames"], show["showStats"]["pendingJobs"],
            show["showStats"]["createdJobCount"], show["showStats"]["createdFrameCount"]) == (
        10, 1, "1", "10")

    # 16 cores, 2 per frame: eight start, four on each host, two wait
    result = await story.step()
    assert len(result.booked) == 8
    assert await story.counts(job) == {"RUNNING": 8, "WAITING": 2}
    assert await story.booked_on(job) == {"rn001": 4, "rn002": 4}
    stats = await story.stats(job)
    assert (stats["runningFrames"], stats["waitingFrames"], stats["reservedCores"]) == (8, 2, 16)
    first = (await story.frames(job))["0001-render"]
    assert (first["retryCount"], first["startTime"], first["lastResource"]) == (
        1, int(story.t), "rn001/2.00/0")
    rn001 = await story.host("rn001")
    assert (rn001["idleCores"], int(rn001["idleMemory"])) == (0, 16 * GB)
    general = (await story.alloc("local.general"))["stats"]
    assert (general["cores"], general["idleCores"], general["runningCores"],
            general["availableCores"]) == (16, 0, 16, 0)
    show = (await story.show())["showStats"]
    assert (show["runningFrames"], show["pendingFrames"], show["reservedCores"]) == (8, 2, 16)

    assert (await story.step(5)).booked == []                  # half way: nothing changes
    result = await story.step(5)                               # eight end, the last two start
    assert (len(result.succeeded), len(result.booked)) == (8, 2)
    assert await story.counts(job) == {"SUCCEEDED": 8, "RUNNING": 2}
    stats = await story.stats(job)
    assert (stats["renderedFrameCount"], stats["renderedCoreSec"]) == ("8", "160")
    assert (await story.show())["showStats"]["renderedFrameCount"] == "8"

    await story.step(10)
    done = await story.job(job)
    assert done["state"] == "FINISHED" and done["stopTime"] > 0
    assert done["jobStats"]["succeededFrames"] == 10
    render = (await story.layers(job))["render"]["layerStats"]
    assert (render["avgFrameSec"], render["lowFrameSec"], render["highFrameSec"]) == (10, 10, 10)
    show = (await story.show())["showStats"]
    assert (show["pendingJobs"], show["runningFrames"], show["renderedFrameCount"]) == (0, 0, "10")
    assert (await story.host("rn001"))["idleCores"] == 8 and await story.procs() == []

    # a finished job is out of the default listing and its name is free again
    missing = await story.rpc("/job.JobInterface/FindJob", {"name": job["name"]}, status=404)
    assert missing["message"] == "Incorrect result size: expected 1, actual 0"
    listed = await story.rpc("/job.JobInterface/GetJobs", {"r": {"shows": ["testing"]}})
    assert listed["jobs"]["jobs"] == []
    again = await story.launch(spec("demo"))
    assert again["id"] != job["id"] and again["state"] == "PENDING"


async def test_pause_and_resume(story: Story) -> None:
    job = await story.launch(spec("demo", layer(frames="1-4")))
    await story.rpc("/job.JobInterface/Pause", {"job": job})    # the whole Job echoed, as CueWeb
    assert (await story.job(job))["isPaused"] is True
    assert (await story.step()).booked == []
    assert await story.counts(job) == {"WAITING": 4}
    await story.rpc("/job.JobInterface/Resume", {"job": {"id": job["id"]}})
    assert len((await story.step()).booked) == 4
    await story.rpc("/job.JobInterface/Pause", {"job": {"id": job["id"]}})
    await story.step(10)                                        # what runs still finishes
    assert await story.counts(job) == {"SUCCEEDED": 4}
    assert (await story.job(job))["state"] == "FINISHED"        # paused or not


async def test_kill_a_frame_retry_the_dead_one_eat_another(story: Story) -> None:
    job = await story.launch(spec("demo", layer(frames="1-3")))
    await story.step()
    frames = await story.frames(job)
    # maxretries defaults to 1: a killed first run leaves no retry, the frame is DEAD
    await story.rpc("/job.FrameInterface/Kill", {"frame": frames["0001-render"],
                                                  "username": "jdoe", "reason": "wrong camera"})
    await story.check_books()
    assert (await story.states(job))["0001-render"] == "DEAD"
    stats = await story.stats(job)
    assert (stats["deadFrames"], stats["runningFrames"], stats["failedFrameCount"]) == (1, 2, "1")
    assert (await story.show())["showStats"]["deadFrames"] == 1

    await story.rpc("/frame.FrameInterface/Eat", {"frame": {"id": frames["0002-render"]["id"]}})
    await story.check_books()
    assert await story.counts(job) == {"DEAD": 1, "EATEN": 1, "RUNNING": 1}
    assert (await story.host("rn001"))["idleCores"] == 6       # two procs gone

    await story.step(10)                                       # frame 3 succeeds…
    assert await story.counts(job) == {"DEAD": 1, "EATEN": 1, "SUCCEEDED": 1}
    assert (await story.job(job))["state"] == "PENDING"        # …but a DEAD frame keeps it open

    await story.rpc("/job.FrameInterface/Retry", {"frame": {"id": frames["0001-render"]["id"]}})
    await story.check_books()
    assert (await story.states(job))["0001-render"] == "WAITING"
    await story.step()
    again = (await story.frames(job))["0001-render"]
    assert (again["state"], again["retryCount"]) == ("RUNNING", 2)
    await story.step(10)
    assert await story.counts(job) == {"EATEN": 1, "SUCCEEDED": 2}
    assert (await story.job(job))["state"] == "FINISHED"

    # retrying a frame of a finished job opens the job again
    await story.rpc("/job.FrameInterface/Retry", {"frame": {"id": frames["0003-render"]["id"]}})
    assert (await story.job(job))["state"] == "PENDING"
    await story.step()
    await story.step(10)
    assert (await story.job(job))["state"] == "FINISHED"


async def test_failed_renders_retry_then_die_and_come_back(story: Story) -> None:
    job = await story.launch(spec("demo", layer(frames="1-2")))
    story.failing(1.0)
    await story.step()
    result = await story.step(10)
    assert len(result.failed) == 2
    assert await story.counts(job) == {"DEAD": 2}
    stats = await story.stats(job)
    assert (stats["failedFrameCount"], stats["deadFrames"], stats["pendingFrames"]) == ("2", 2, 0)
    show = (await story.show())["showStats"]
    assert (show["deadFrames"], show["failedFrameCount"], show["pendingJobs"]) == (2, "2", 1)
    story.failing(0.0)
    await story.rpc("/job.JobInterface/RetryFrames",
                    {"job": {"id": job["id"]}, "req": {"states": {"frame_states": [5]}}})
    await story.check_books()
    assert await story.counts(job) == {"WAITING": 2}
    await story.step()
    await story.step(10)
    assert (await story.job(job))["state"] == "FINISHED"


async def test_kill_a_job(story: Story) -> None:
    job = await story.launch(spec("demo", layer(frames="1-10")))
    await story.step()
    await story.rpc("/job.JobInterface/Kill", {"job": job, "username": "jdoe"})
    assert (await story.job(job))["state"] == "PENDING"        # no reason: Cuebot ignores it
    await story.rpc("/job.JobInterface/Kill", {"job": job, "username": "jdoe",
                                                "reason": "wrong shot"})
    await story.check_books()
    killed = await story.job(job)
    assert killed["state"] == "FINISHED" and killed["stopTime"] > 0
    assert await story.counts(job) == {"WAITING": 10}          # running ones went back
    assert await story.procs() == [] and (await story.host("rn002"))["idleCores"] == 8
    assert (await story.step()).booked == []                   # a finished job gets nothing
    again = await story.launch(spec("demo"))                   # and its name is free
    assert again["state"] == "PENDING"


async def test_procs_killed_or_unbooked(story: Story) -> None:
    job = await story.launch(spec("demo", layer(frames="1-2")))
    await story.step()
    one, two = sorted(await story.procs(), key=lambda p: p["frameName"])
    await story.rpc("/proc.ProcInterface/Kill", {"proc": {"id": one["id"]}})
    await story.check_books()
    states = await story.states(job)
    assert states == {"0001-render": "WAITING", "0002-render": "RUNNING"}
    assert (await story.stats(job))["failedFrameCount"] == "0"  # a person's kill, not a failure
    await story.rpc("/proc.ProcInterface/Unbook", {"proc": {"id": two["id"]}, "kill": True})
    await story.check_books()
    assert await story.counts(job) == {"WAITING": 2}
    assert len((await story.step()).booked) == 2


async def test_a_locked_host_gets_nothing_more(story: Story) -> None:
    job = await story.launch(spec("demo", layer(frames="1-12")))
    await story.step()
    assert await story.booked_on(job) == {"rn001": 4, "rn002": 4}
    rn002 = await story.host("rn002")
    await story.rpc("/host.HostInterface/Lock", {"host": rn002})
    await story.check_books()
    general = (await story.alloc("local.general"))["stats"]
    assert (general["lockedHosts"], general["lockedCores"]) == (1, 8)
    await story.step(10)                       # rn002's four finish; only rn001 takes more
    assert await story.booked_on(job) == {"rn001": 4}
    assert await story.counts(job) == {"SUCCEEDED": 8, "RUNNING": 4}
    assert (await story.host("rn002"))["idleCores"] == 8
    await story.rpc("/host.HostInterface/Unlock", {"host": {"id": rn002["id"]}})
    assert (await story.step()).booked == []    # nothing is left waiting
    await story.step(10)
    assert (await story.job(job))["state"] == "FINISHED"
    # a host that is not UP is not booked either
    later = await story.launch(spec("later", layer(frames="1")))
    await story.rpc("/host.HostInterface/SetHardwareState", {"host": {"id": rn002["id"]},
                                                             "state": "REPAIR"})
    await story.rpc("/host.HostInterface/Lock", {"host": {"id": (await story.host("rn001"))[
        "id"]}})
    assert (await story.step()).booked == [] and await story.counts(later) == {"WAITING": 1}


async def test_tags_route_frames(story: Story) -> None:
    job = await story.launch(spec("demo", layer(frames="1-4", tags="gpu")))
    await story.step()
    assert await story.counts(job) == {"WAITING": 4}             # no host has the tag
    rn002 = await story.host("rn002")
    await story.rpc("/host.HostInterface/AddTags", {"host": rn002, "tags": ["gpu"]})
    assert "gpu" in (await story.host("rn002"))["tags"]
    await story.step()
    assert await story.booked_on(job) == {"rn002": 4}
    # the layer now asks for the hosts' hardware tag: both hosts qualify
    render = (await story.layers(job))["render"]
    await story.rpc("/layer.LayerInterface/SetTags", {"layer": {"id": render["id"]},
                                                       "tags": ["linux"]})
    assert (await story.layers(job))["render"]["tags"] == ["linux"]
    later = await story.launch(spec("later", layer(frames="1-2", tags="gpu")))
    await story.rpc("/host.HostInterface/RemoveTags", {"host": rn002, "tags": ["gpu"]})
    await story.step(10)
    assert await story.counts(later) == {"WAITING": 2}
    await story.rpc("/host.HostInterface/RenameTag", {"host": rn002, "old_tag": "linux",
                                                      "new_tag": "gpu"})
    await story.step()
    assert await story.booked_on(later) == {"rn002": 2}


async def test_a_limit_caps_running_frames(story: Story) -> None:
    made = await story.rpc("/limit.LimitInterface/Create", {"name": "nuke_lic", "max_value": 2})
    assert (made["limit"]["name"], made["limit"]["currentRunning"]) == ("nuke_lic", 0)
    job = await story.launch(spec("comp", layer("comp", "1-6", limits=("nuke_lic",))))
    assert (await story.layers(job))["comp"]["limits"] == ["nuke_lic"]
    await story.step()
    assert await story.counts(job) == {"RUNNING": 2, "WAITING": 4}   # 16 cores, 2 licences
    limits = (await story.rpc("/limit.LimitInterface/GetAll"))["limits"]
    assert [(x["name"], x["currentRunning"]) for x in limits] == [("nuke_lic", 2)]
    await story.rpc("/limit.LimitInterface/SetMaxValue", {"name": "nuke_lic", "max_value": 3})
    await story.step()
    assert await story.counts(job) == {"RUNNING": 3, "WAITING": 3}
    await story.step(10)
    assert await story.counts(job) == {"SUCCEEDED": 3, "RUNNING": 3}


async def test_caps_and_priority(story: Story) -> None:
    first = await story.launch(spec("first", layer(frames="1-8")))
    second = await story.launch(spec("second", layer(frames="1-8")))
    await story.rpc("/job.JobInterface/SetMaxCores", {"job": {"id": first["id"]}, "val": 4})
    await story.rpc("/job.JobInterface/SetPriority", {"job": {"id": second["id"]}, "val": 50})
    assert ((await story.job(first))["maxCores"], (await story.job(second))["priority"]) == (4, 50)
    await story.step()
    # the higher priority job books first and fills the farm; "first" is capped anyway
    assert (await story.counts(second), await story.counts(first)) == (
        {"RUNNING": 8}, {"WAITING": 8})
    await story.step(10)
    assert await story.counts(first) == {"RUNNING": 2, "WAITING": 6}  # 4 cores = two frames
    root = (await story.rpc("/show.ShowInterface/GetRootGroup",
                            {"show": {"name": "testing"}}))["group"]
    await story.rpc("/job.GroupInterface/SetMaxCores", {"group": {"id": root["id"]},
                                                         "max_cores": 2})
    assert (await story.rpc("/job.GroupInterface/GetGroup", {"id": root["id"]}))["group"][
        "maxCores"] == 2
    await story.step(10)                                              # the group allows one
    assert await story.counts(first) == {"SUCCEEDED": 2, "RUNNING": 1, "WAITING": 5}
    # two renders of 10 s on 2 cores: 20 core-seconds each, five frames still to go
    stats = await story.stats(first)
    assert (stats["avgCoreSec"], stats["remainingCoreSec"], stats["highFrameSec"],
            stats["avgFrameSec"]) == (20, "100", 10, 0)   # Cuebot never fills avgFrameSec
    assert (await story.layers(first))["render"]["layerStats"]["avgFrameSec"] == 10
    assert (await story.rpc("/job.GroupInterface/GetGroup", {"id": root["id"]}))["group"][
        "groupStats"]["reservedCores"] == 2


async def test_a_depend_holds_a_layer_until_its_parent_finishes(story: Story) -> None:
    depend = ('<depend type="LAYER_ON_LAYER"><depjob>demo</depjob><deplayer>comp</deplayer>'
              "<onjob>demo</onjob><onlayer>render</onlayer></depend>")
    job = await story.launch(spec("demo", layer("render", "1-2"), layer("comp", "1-2"),
                                  depends=depend))
    stats = job["jobStats"]
    assert (stats["waitingFrames"], stats["dependFrames"], stats["pendingFrames"]) == (2, 2, 4)
    comp = (await story.layers(job))["comp"]
    (dep,) = (await story.rpc("/job.LayerInterface/GetWhatThisDependsOn",
                              {"layer": {"id": comp["id"]}}))["depends"]["depends"]
    assert (dep["type"], dep["active"], dep["dependOnLayer"]) == ("LAYER_ON_LAYER", True, "render")
    root = (await story.rpc("/show.ShowInterface/GetRootGroup",
                            {"show": {"name": "testing"}}))["group"]
    assert root["groupStats"]["dependFrames"] == 2

    await story.step()                          # plenty of room, but comp must wait
    assert await story.states(job) == {"0001-render": "RUNNING", "0002-render": "RUNNING",
                                       "0001-comp": "DEPEND", "0002-comp": "DEPEND"}
    await story.step(10)                        # render done: the depend is satisfied…
    assert await story.states(job) == {"0001-render": "SUCCEEDED", "0002-render": "SUCCEEDED",
                                       "0001-comp": "RUNNING", "0002-comp": "RUNNING"}
    got = await story.rpc("/depend.DependInterface/GetDepend", {"id": dep["id"]})
    assert got["depend"]["active"] is False     # …and comp booked in the same pass
    await story.step(10)
    assert (await story.job(job))["state"] == "FINISHED"


async def test_filters_act_on_newly_launched_jobs(story: Story) -> None:
    flt = (await story.rpc("/show.ShowInterface/CreateFilter",
                           {"show": {"name": "testing"}, "name": "hold_wip"}))["filter"]
    await story.rpc("/filter.FilterInterface/CreateMatcher", {"filter": flt, "data": {
        "subject": "JOB_NAME", "type": "CONTAINS", "input": "wip"}})
    await story.rpc("/filter.FilterInterface/CreateAction", {"filter": flt, "data": {
        "type": "PAUSE_JOB", "valueType": "BOOLEAN_TYPE", "booleanValue": True}})
    held = await story.launch(spec("wip_look", layer(frames="1-2")))
    other = await story.launch(spec("final", layer(frames="1-2")))
    assert (held["isPaused"], other["isPaused"]) == (True, False)
    await story.step()
    assert (await story.counts(held), await story.counts(other)) == (
        {"WAITING": 2}, {"RUNNING": 2})
    await story.rpc("/filter.FilterInterface/SetEnabled", {"filter": flt, "enabled": False})
    assert (await story.launch(spec("wip_two", layer(frames="1"))))["isPaused"] is False


async def test_the_books_balance_on_the_demo_farm(sandbox: Any, make_gateway: Any) -> None:
    """Our job among the demo's running, dead and paused work, stepped to its end."""
    story = Story(await make_gateway(cuebot_endpoint=sandbox.endpoint), sandbox)
    await story.check_books()
    job = await story.launch(spec("urgent_fix", layer(frames="1-20")))
    assert job["priority"] == 200              # the demo's auto_priority filter matched
    for _ in range(4):
        await story.step(RUN)
    assert await story.counts(job) == {"SUCCEEDED": 20}
    assert (await story.job(job))["state"] == "FINISHED"


# ---------------------------------------------------------------------------
# the README's demo does what the README says
# ---------------------------------------------------------------------------
def _readme_demo() -> tuple[str, list[tuple[str, str | None]]]:
    """The Demo section's curl calls: (path, body text) each, in order, and its text.

    A body is the call's ``-d`` argument as the shell would pass it, with ``$ID`` still in
    it; the heredoc's body (the submission) is None here and read by the caller.
    """
    from support import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Demo\n"):]
    section = section[:section.index("\n## ", 1)]
    calls: list[tuple[str, str | None]] = []
    for line in section.splitlines():
        if "curl -s" in line:
            path = re.search(r"localhost:8448(/\S+)", line).group(1)
            assert '-H "Authorization: Bearer $TOKEN"' in line, line
            single = re.search(r"-d '(.*)'$", line)
            double = re.search(r'-d "(.*)"$', line)
            body = (single.group(1) if single else
                    double.group(1).replace('\\"', '"') if double else None)
            calls.append((path, body))
    return section, calls


def _heredoc(section: str) -> dict[str, Any]:
    return orjson.loads(re.search(r"<<'EOF'[^\n]*\n(.*?)\nEOF\n", section, re.S).group(1))


async def test_the_readme_demo(sandbox: Any, make_gateway: Any) -> None:
    """Its calls, polled as a person would while renders of 5 to 20 s end one by one.

    The dispatcher keeps Cuebot's cadence (hosts report every 5 to 30 s, a job lock of 20 s),
    so the frames are seen WAITING before they run; the id-based calls work to the end.
    """
    section, calls = _readme_demo()
    (submit, _), (listing, listing_body), (frames, frames_body) = calls
    story = Story(await make_gateway(cuebot_endpoint=sandbox.endpoint), sandbox)
    sandbox.dispatcher.settings = DispatchSettings(run_seconds=(5.0, 20.0))
    answer = await story.rpc(submit, _heredoc(section))
    job_id = answer["jobs"]["jobs"][0]["id"]
    bodies = [orjson.loads(b.replace("$ID", job_id)) for b in (listing_body, frames_body)]
    order = ["WAITING", "RUNNING", "SUCCEEDED"]
    seen: dict[str, list[str]] = {}
    waiting_after_a_step = 0
    for _ in range(20):
        job = (await story.rpc(listing, bodies[0]))["job"]
        if job["state"] == "FINISHED":
            break
        for f in (await story.rpc(frames, bodies[1]))["frames"]["frames"]:
            if seen.setdefault(f["name"], [])[-1:] != [f["state"]]:
                seen[f["name"]].append(f["state"])
        await story.step(5)
        stats = (await story.rpc(listing, bodies[0]))["job"]["jobStats"]
        if stats["runningFrames"]:
            waiting_after_a_step = max(waiting_after_a_step, stats["waitingFrames"])
    assert job["state"] == "FINISHED" and job["jobStats"]["succeededFrames"] == 10
    assert len(seen) == 10 and all(s == order[:len(s)] for s in seen.values()), seen
    assert sum(s == order for s in seen.values()) >= 3    # seen through all three states
    # the job lock and the hosts' report cadence kept some frames waiting after a pass
    assert waiting_after_a_step > 0
    got = await story.rpc(frames, bodies[1])              # and the listing works once finished
    assert {f["state"] for f in got["frames"]["frames"]} == {"SUCCEEDED"}
