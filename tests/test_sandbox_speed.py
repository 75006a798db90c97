"""The dispatcher running on its own: a high ``--speed`` really renders, ``--no-dispatch`` does not.

Unlike the stories (tests/test_story.py), nothing here steps the dispatcher
by hand: the sandbox runs it in the background, as ``opencue-gateway
--sandbox`` and ``python -m gateway.sandbox`` do, and the tests only watch,
each within a time bound. The two command lines are started as processes
and watched over gRPC (the sandbox's own port; the gateway prints it), so
these tests do not depend on how the gateway authenticates HTTP callers.
"""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from typing import Any, Iterator

import grpc
import orjson
import pytest
from opencue_proto import job_pb2, job_pb2_grpc

from gateway.sandbox import server
from gateway.sandbox.dispatcher import DispatchSettings
from support import ROOT, GatewayProcess, free_port

SPEC = ('<?xml version="1.0"?><!DOCTYPE spec PUBLIC "SPI Cue  Specification Language" '
        '"http://localhost:8080/spcue/dtd/cjsl-1.15.dtd"><spec><facility>local</facility>'
        '<show>testing</show>'
        '<shot>sh010</shot><user>jdoe</user><job name="{name}"><layers>'
        '<layer name="render" type="Render"><cmd>render</cmd><range>1-10</range><chunk>1</chunk>'
        "</layer></layers></job></spec>")
# At speed 1 a render lasts 5 to 20 s, so no job can finish within BOUND seconds unless
# the speed is applied; at --speed 1000 a 10-frame job needs two dispatcher passes (~1 s).
BOUND = 4.5


async def test_background_dispatcher_renders_a_job_seen_over_http(make_gateway: Any) -> None:
    sb = await server.start(":memory:", demo=False, dispatch=True,
                            settings=DispatchSettings(speed=1000, interval=0.02))
    try:
        with sb.store.tx():
            sb.farm.add_host("rn001", cores=400, memory=64 * 1024 * 1024)
        gw = await make_gateway(cuebot_endpoint=sb.endpoint)
        resp = await gw.post("/job.JobInterface/LaunchSpecAndWait",
                             data=orjson.dumps({"spec": SPEC.format(name="fast")}))
        assert resp.status == 200
        (job,) = orjson.loads(await resp.read())["jobs"]["jobs"]
        seen: set[str] = set()
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            resp = await gw.post("/job.JobInterface/GetFrames", data=orjson.dumps(
                {"job": {"id": job["id"]}, "req": {"page": 1, "limit": 100}}))
            seen |= {f["state"] for f in orjson.loads(await resp.read())["frames"]["frames"]}
            resp = await gw.post("/job.JobInterface/GetJob", data=orjson.dumps({"id": job["id"]}))
            got = orjson.loads(await resp.read())["job"]
            if got["state"] == "FINISHED":
                break
            await asyncio.sleep(0.01)
        assert got["state"] == "FINISHED", got["jobStats"]
        assert got["jobStats"]["succeededFrames"] == 10
        assert "RUNNING" in seen      # 4 cores for 10 frames: some ran while others waited
    finally:
        await sb.stop(None)


# ---------------------------------------------------------------------------
# the two command lines
# ---------------------------------------------------------------------------
def _launch_and_watch(endpoint: str, name: str, until: str, bound: float) -> dict[str, int]:
    """Launch a 10-frame job over gRPC; poll its frame counts until ``until`` or ``bound`` s."""
    with grpc.insecure_channel(endpoint) as channel:
        jobs = job_pb2_grpc.JobInterfaceStub(channel)
        launched = jobs.LaunchSpecAndWait(job_pb2.JobLaunchSpecAndWaitRequest(
            spec=SPEC.format(name=name)), timeout=10).jobs.jobs[0]
        deadline = time.monotonic() + bound
        while True:
            job = jobs.GetJob(job_pb2.JobGetJobRequest(id=launched.id), timeout=10).job
            s = job.job_stats
            counts = {"waiting": s.waiting_frames, "running": s.running_frames,
                      "succeeded": s.succeeded_frames, "state": job.state}
            if job_pb2.JobState.Name(job.state) == until or time.monotonic() > deadline:
                return counts
            time.sleep(0.05)


@pytest.fixture
def standalone(request: pytest.FixtureRequest) -> Iterator[str]:
    """``python -m gateway.sandbox`` with the test's flags; its gRPC endpoint."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.sandbox", "--port", str(port),
                             *request.param], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert any("listening on" in line for line in lines), lines
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()


@pytest.mark.parametrize("standalone", [["--speed", "1000"]], indirect=True)
def test_standalone_sandbox_at_high_speed_renders(standalone: str) -> None:
    counts = _launch_and_watch(standalone, "quick", "FINISHED", BOUND)
    assert counts["state"] == job_pb2.FINISHED and counts["succeeded"] == 10, counts


@pytest.mark.parametrize("standalone", [["--speed", "1000", "--no-dispatch"]], indirect=True)
def test_standalone_sandbox_without_dispatch_stays_still(standalone: str) -> None:
    # three of the dispatcher's half-second passes would have finished this job at this speed
    counts = _launch_and_watch(standalone, "still", "FINISHED", 1.6)
    assert counts == {"waiting": 10, "running": 0, "succeeded": 0, "state": job_pb2.PENDING}


def test_gateway_sandbox_speed_reaches_the_dispatcher() -> None:
    gw = GatewayProcess("--sandbox", "--speed", "1000", env={"JWT_SECRET": "x" * 32})
    try:
        gw.wait_ready()
        found = re.search(r"Cuebot at (127\.0\.0\.1:\d+), the sandbox", gw.output)
        assert found, gw.output
        counts = _launch_and_watch(found.group(1), "via_gateway", "FINISHED", BOUND)
        assert counts["state"] == job_pb2.FINISHED and counts["succeeded"] == 10, counts
    finally:
        assert gw.stop() == 0
