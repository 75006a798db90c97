"""Frame logs: each simulated render writes an RQD-style log under the sandbox's log root, at the
job's ``logDir``, so clients reading logs from disk (CueWeb's log view, CueGUI) show them; and
the README's demo, run as written (bash, curl) against ``opencue-gateway --sandbox``.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from gateway.sandbox import server
from gateway.sandbox.dispatcher import DispatchSettings
from sandbox_http import GB, Cue, layer, spec
from support import ROOT, SECRET, GatewayProcess, token


@pytest.fixture
async def cue(make_gateway: Any, tmp_path: Path) -> AsyncIterator[Cue]:
    sb = await server.start(":memory:", demo=False, log_root=tmp_path / "logs")
    sb.dispatcher.settings = DispatchSettings.eager(run_seconds=(100.0, 100.0))
    try:
        with sb.store.tx():
            sb.farm.add_host("rn001", cores=800, memory=32 * GB)
        yield Cue(await make_gateway(cuebot_endpoint=sb.endpoint), sb)
    finally:
        await sb.stop(None)


async def test_a_render_writes_its_log_where_rqd_would(cue: Cue, tmp_path: Path) -> None:
    job = await cue.launch(spec("logged", layer("render", "7-8")))
    root = (tmp_path / "logs").resolve()
    assert job["logDir"] == f"{root}/testing/sh010/logs/{job['name']}--{job['id']}"
    t = time.time()
    cue.step(t)
    (proc, _) = await cue.procs(jobs=[job["name"]])
    path = Path(job["logDir"]) / f"{job['name']}.0007-render.rqlog"
    assert proc["logPath"] in (str(path), str(Path(job["logDir"]) /
                                             f"{job['name']}.0008-render.rqlog"))
    text = path.read_text()
    assert text.startswith("=" * 59 + "\nRenderQ JobSpec      ")
    assert re.search(r"^command\s+render -f 7$", text, re.M)      # #IFRAME# filled in
    assert re.search(rf"^logDestination\s+{re.escape(str(path))}$", text, re.M)
    assert re.search(r"^renderHost\s+rn001$", text, re.M)
    assert re.search(rf"^frameId\s+{(await cue.frame(job, '0007-render'))['id']}$", text, re.M)
    assert "RenderQ Job Complete" not in text
    cue.step(t + 55)                                    # half way: progress lines
    assert "render: frame 7 50% done" in path.read_text()
    cue.step(t + 100)
    text = path.read_text()
    assert re.search(r"RenderQ Job Complete\n\nexitStatus\s+0\nexitSignal\s+0\n", text)
    assert re.search(r"^renderhost\s+rn001$", text, re.M)
    assert (await cue.frame(job, "0007-render"))["state"] == "SUCCEEDED"


async def test_retries_rotate_and_kills_say_why(cue: Cue) -> None:
    job = await cue.launch(spec("again", layer("render", "1")))
    t = time.time()
    cue.step(t)
    frame = await cue.frame(job, "0001-render")
    await cue.rpc("/job.FrameInterface/Retry", {"frame": {"id": frame["id"]}})
    path = Path(job["logDir"]) / f"{job['name']}.0001-render.rqlog"
    first = path.read_text()
    assert re.search(r"exitStatus\s+1\nexitSignal\s+9\nkillMessage\s+Killed by Cuebot", first)
    cue.step(t + 1)                                     # it runs again: a new log, the old one kept
    assert path.with_name(path.name + ".1").read_text() == first
    assert "RenderQ Job Complete" not in path.read_text()
    lid = (await cue.layer(job, "render"))["id"]
    await cue.rpc("/job.LayerInterface/SetTimeout", {"layer": {"id": lid}, "timeout": 1})
    cue.step(t + 1 + 121)                               # over a minute: killed, DEAD
    assert re.search(r"exitSignal\s+9\nkillMessage\s+Frame timed out", path.read_text())
    assert (await cue.frame(job, "0001-render"))["state"] == "DEAD"


async def test_default_log_roots(tmp_path: Path) -> None:
    db = tmp_path / "farm.db"
    sb = await server.start(db, demo=True)
    try:
        assert sb.log_root == Path(f"{db}.logs")
        running = sb.store.one("SELECT j.log_dir, j.name, f.name AS frame FROM frame f JOIN job j "
                               "ON j.id = f.job_id WHERE f.state = 'RUNNING' LIMIT 1")
        assert running["log_dir"].startswith(str(Path(f"{db}.logs").resolve()))
        assert (Path(running["log_dir"]) / f"{running['name']}.{running['frame']}.rqlog").exists()
    finally:
        await sb.stop(None)
    assert Path(f"{db}.logs").is_dir()                  # kept: it goes with the database
    sb = await server.start(":memory:", demo=False)
    temporary = sb.log_root
    assert temporary is not None and temporary.is_dir()
    await sb.stop(None)
    assert not temporary.exists()                       # an in-memory sandbox cleans up


def _demo_blocks() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Demo\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    submit = next(b for b in blocks if "LaunchSpecAndWait" in b)
    watch = next(b for b in blocks if "GetFrames" in b)
    return submit, watch


def test_the_readme_demo_as_a_shell_runs_it(tmp_path: Path) -> None:
    """Start the gateway with --sandbox as the README does (fast), paste its commands into
    bash, and watch the job end; the watch commands still answer once it has finished, and the
    frames' logs are on disk under --log-root."""
    logs = tmp_path / "logs"
    gw = GatewayProcess("--sandbox", "--speed", "100", "--log-root", str(logs),
                        env={"JWT_SECRET": SECRET}).wait_ready()
    try:
        submit, watch = _demo_blocks()
        env = {**os.environ, "TOKEN": token()}
        local = f"127.0.0.1:{gw.port}"

        def bash(script: str) -> str:
            done = subprocess.run(["bash", "-c", script.replace("localhost:8448", local)],
                                  env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        job_id = bash(submit + 'echo "$ID"\n').strip()
        assert re.fullmatch(r"[0-9a-f-]{36}", job_id), job_id
        env["ID"] = job_id
        get_job, get_frames = watch.strip().splitlines()
        import json

        state = ""
        for _ in range(600):                            # until it is done, however long
            state = json.loads(bash(get_job))["job"]["state"]
            if state == "FINISHED":
                break
            time.sleep(0.05)
        assert state == "FINISHED"
        frames = json.loads(bash(get_frames))["frames"]["frames"]
        assert sorted(f["state"] for f in frames) == ["SUCCEEDED"] * 10
        log_dir = json.loads(bash(get_job))["job"]["logDir"]
        assert log_dir.startswith(str(logs.resolve()))
        rqlogs = sorted(p.name for p in Path(log_dir).glob("*.rqlog"))
        assert len(rqlogs) == 10 and rqlogs[0].endswith(".0001-render.rqlog")
        assert "RenderQ Job Complete" in (Path(log_dir) / rqlogs[0]).read_text()
    finally:
        gw.stop()
