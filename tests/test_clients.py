"""OpenCue's own applications against the sandbox: cueman and cueadmin as a wrangler runs them,
and the pycue calls behind CueGUI's views and menus that the sandbox used to lack.

The sandbox runs as its own process (``python -m gateway.sandbox``, demo farm, no dispatcher)
for the whole module; cueman and cueadmin run as commands with ``CUEBOT_HOSTS`` pointing at it,
and pycue reads the effects back. Each test works on objects of its own, so the order of the
tests does not matter.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Iterator

import pytest
from opencue_proto import depend_pb2, job_pb2

from support import ROOT, free_port

LIGHTING = "testing-sh010-jdoe_lighting"
ANIM = "testing-sh040-jdoe_anim_playblast"
FX = "testing-sh020-asmith_fx_sim"


@pytest.fixture(scope="module")
def cuebot() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.sandbox", "--port", str(port),
                             "--no-dispatch"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(5):
            if "listening on" in proc.stdout.readline():
                break
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


@pytest.fixture(scope="module")
def opencue(cuebot: str) -> Iterator[Any]:
    import opencue as client

    client.Cuebot.setHosts([cuebot])
    client.Cuebot.resetChannel()
    yield client
    client.Cuebot.closeChannel()


def tool(cuebot: str, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run cueman or cueadmin (``-force``: no questions) against the sandbox."""
    env = {**os.environ, "CUEBOT_HOSTS": cuebot, "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run([sys.executable, "-m", name, "-server", cuebot, "-force", *args],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (name, args, done.stdout, done.stderr)
    return done


# -- cueman ---------------------------------------------------------------------------------
def test_cueman_retries_and_autoeat(opencue: Any, cuebot: str) -> None:
    tool(cuebot, "cueman", "-retries", ANIM, "5")
    job = opencue.api.findJob(ANIM)
    assert job.data.job_stats.dead_frames == 2
    tool(cuebot, "cueman", "-autoeaton", ANIM)        # auto-eat on, and dead frames eaten
    job = opencue.api.getJob(job.id())               # eating the dead frames finished it
    assert job.data.auto_eat and job.data.job_stats.dead_frames == 0
    assert job.data.job_stats.eaten_frames == 2


def test_cueman_done_reorder_and_stagger(opencue: Any, cuebot: str) -> None:
    job = opencue.api.findJob(LIGHTING)
    comp = [f for f in job.getFrames(layer=["comp"]) if f.data.number == 3][0]
    assert comp.data.state == job_pb2.DEPEND
    # the comp layer waits on the whole render layer: marking frames done frees nothing...
    tool(cuebot, "cueman", "-done", LIGHTING, "-layer", "render", "-range", "15-20")
    assert opencue.api.findJob(LIGHTING).data.job_stats.depend_frames == 20
    tool(cuebot, "cueman", "-reorder", FX, "41-46", "FIRST")
    fx = opencue.api.findJob(FX)
    order = sorted(fx.getFrames(), key=lambda f: f.data.dispatch_order)
    assert order[0].data.number == 41
    tool(cuebot, "cueman", "-stagger", FX, "1-50", "10")
    order = sorted(fx.getFrames(), key=lambda f: (f.data.dispatch_order, f.data.number))
    assert [f.data.number for f in order][:3] == [1, 11, 21]


# -- cueadmin -------------------------------------------------------------------------------
def test_cueadmin_transfer_hosts(opencue: Any, cuebot: str) -> None:
    # local.desktop's two workstations move to local.unassigned
    before = [h.name() for h in opencue.api.findAllocation("local.desktop").getHosts()]
    assert sorted(before) == ["ws-asmith.studio.local", "ws-jdoe.studio.local"]
    tool(cuebot, "cueadmin", "-transfer", "local.desktop", "local.unassigned")
    moved = [h.name() for h in opencue.api.findAllocation("local.unassigned").getHosts()]
    assert sorted(moved) == sorted(before)
    assert opencue.api.findAllocation("local.desktop").getHosts() == []
    host = opencue.api.findHost("ws-jdoe.studio.local")
    assert "unassigned" in host.data.tags and "desktop" not in host.data.tags


def test_cueadmin_archive_show(opencue: Any, cuebot: str) -> None:
    opencue.api.createShow("oldshow")
    tool(cuebot, "cueadmin", "-archive-show", "oldshow", "testing")
    names = [s.name() for s in opencue.api.getShows()]
    assert "oldshow_archive" in names and "oldshow" not in names


# -- pycue, as CueGUI calls it ----------------------------------------------------------------------
def test_monitor_cue_tree_and_host_whiteboard(opencue: Any) -> None:
    show = opencue.api.findShow("testing")
    group = show.getRootGroup().createSubGroup("previs")
    board = show.getJobWhiteboard()
    assert board.name == "testing"
    assert "previs" in [g.name for g in board.groups.nested_groups]
    names = [j.name for j in board.inline_jobs]
    assert LIGHTING in names
    nested = [h.data for h in opencue.api.getHostWhiteboard()]
    assert len({h.name for h in nested}) == 21
    assert sum(len(h.procs.nested_procs) for h in nested) == 4
    group.delete()


def test_depends_through_pycue(opencue: Any) -> None:
    job = opencue.api.findJob(LIGHTING)
    render, comp = job.getLayers()
    assert [d.data.type for d in comp.getWhatThisDependsOn()] == [depend_pb2.LAYER_ON_LAYER]
    fx = opencue.api.findJob(FX)
    depend = fx.createDependencyOnLayer(render)
    assert depend.data.type == depend_pb2.JOB_ON_LAYER
    assert opencue.api.findJob(FX).data.job_stats.depend_frames == 10
    fx.dropDepends(depend_pb2.EXTERNAL)
    assert opencue.api.findJob(FX).data.job_stats.depend_frames == 0


def test_job_and_layer_settings_through_pycue(opencue: Any) -> None:
    job = opencue.api.findJob(LIGHTING)
    job.setMaxRetries(4)
    job.setMinGpus(1)
    render = job.getLayers()[0]
    render.setThreadable(True)
    render.setTimeout(120)
    render.setTimeoutLLU(30)
    layer = opencue.api.findLayer(LIGHTING, "render")
    assert layer.data.is_threadable and (layer.data.timeout, layer.data.timeout_llu) == (120, 30)
    assert opencue.api.findJob(LIGHTING).data.min_gpus == 1
