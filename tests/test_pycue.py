"""OpenCue's own Python client (opencue-pycue) against the sandbox.

pycue is synchronous and keeps a process-wide channel, so the sandbox runs
as its own process (``python -m gateway.sandbox``) and the tests call pycue
directly, as a pipeline script would against a real Cuebot.
"""
from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest
from opencue_proto import job_pb2

from support import ROOT, free_port


@pytest.fixture(scope="module")
def opencue() -> Iterator[object]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.sandbox", "--port", str(port),
                             "--no-dispatch"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        for _ in range(5):
            if "listening on" in proc.stdout.readline():
                break
        import opencue as client

        client.Cuebot.setHosts([f"127.0.0.1:{port}"])
        client.Cuebot.resetChannel()
        yield client
        client.Cuebot.closeChannel()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_shows(opencue):
    names = [s.name() for s in opencue.api.getShows()]
    assert names == ["testing", "pipeline_test"]
    show = opencue.api.findShow("testing")
    assert show.id() == "00000000-0000-0000-0000-000000000000"
    assert show.data.default_max_cores == 2000.0
    assert [g.name() for g in show.getGroups()] == ["testing"]
    assert len(show.getSubscriptions()) == 3
    with pytest.raises(opencue.exception.EntityNotFoundException):
        opencue.api.findShow("no_such_show")


def test_jobs_layers_frames(opencue):
    jobs = opencue.api.getJobs(show=["testing"])
    assert [j.name() for j in jobs] == ["testing-sh010-jdoe_lighting",
                                        "testing-sh020-asmith_fx_sim",
                                        "testing-sh040-jdoe_anim_playblast"]
    everything = opencue.api.getJobs(show=["testing"], include_finished=True)
    assert len(everything) == 4
    job = opencue.api.findJob("testing-sh010-jdoe_lighting")
    assert job.user() == "jdoe" and job.shot() == "sh010" and job.priority() == 100
    layers = job.getLayers()
    assert [layer.name() for layer in layers] == ["render", "comp"]
    frames = job.getFrames()
    assert len(frames) == 40
    running = job.getFrames(state=[job_pb2.RUNNING])
    assert len(running) == 4 and all(f.data.state == job_pb2.RUNNING for f in running)
    stats = job.data.job_stats
    assert (stats.succeeded_frames, stats.running_frames, stats.dead_frames) == (8, 4, 1)
    assert stats.total_frames == 40


def test_hosts_and_allocations(opencue):
    hosts = opencue.api.getHosts()
    assert len(hosts) == 21
    host = opencue.api.findHost("rn001.farm.studio.local")
    assert host.data.alloc_name == "local.general" and "general" in host.data.tags
    allocs = opencue.api.getAllocations()
    assert [a.name() for a in allocs] == ["cloud.general", "cloud.unassigned", "local.desktop",
                                          "local.general", "local.unassigned"]


def test_services_limits_departments(opencue):
    services = opencue.api.getDefaultServices()
    assert [s.name() for s in services][:3] == ["default", "prman", "arnold"]
    assert [limit.name() for limit in opencue.api.getLimits()] == ["nuke_license"]
    assert "Pipeline" in opencue.api.getDepartmentNames()
    # pycue hands back the bare protobuf message here, not a wrapper
    assert opencue.api.getFacility("local").name == "local"


def test_a_mutation_round_trip(opencue):
    job = opencue.api.findJob("testing-sh020-asmith_fx_sim")
    assert job.isPaused()
    job.resume()
    assert not opencue.api.findJob("testing-sh020-asmith_fx_sim").isPaused()
    job.pause()
    assert opencue.api.findJob("testing-sh020-asmith_fx_sim").isPaused()
