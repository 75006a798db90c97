"""EVENT_LOOP: the gateway's processes run on uvloop, or on asyncio's loop when asked.

Every other test that starts ``python -m gateway`` runs it on the default
(uvloop); these check that the choice is the one made, that it is said at
start-up, and that a machine without uvloop still starts (``auto``) or says
why it cannot (``uvloop``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import ROOT, GatewayProcess, RecordingCuebot, auth_headers, run_gateway, serving


async def _one_call(gw: GatewayProcess) -> str:
    """GetShows through a started gateway process, then stop it; its output."""
    async with serving(gw) as http:
        async with http.post(f"{gw.url}/show.ShowInterface/GetShows", data=b"{}",
                             headers=auth_headers()) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.read() == b'{"shows":null}'
    return gw.output


@pytest.fixture
def no_uvloop(tmp_path: Path) -> str:
    """A PYTHONPATH on which ``import uvloop`` fails, as on a machine without it."""
    (tmp_path / "uvloop.py").write_text("raise ImportError('uvloop is not here')\n")
    return f"{tmp_path}{os.pathsep}{ROOT}"


@pytest.mark.parametrize("setting", [None, "auto", "uvloop"])
async def test_uvloop_serves_by_default_and_when_asked(cuebot: RecordingCuebot,
                                                      setting: str | None) -> None:
    out = await _one_call(GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint,
                                              "EVENT_LOOP": setting}))
    assert "event loop: uvloop" in out, out
    assert cuebot.paths() == ["/show.ShowInterface/GetShows"]


async def test_asyncio_loop_on_request(cuebot: RecordingCuebot) -> None:
    out = await _one_call(GatewayProcess("--event-loop", "asyncio",
                                         env={"CUEBOT_ENDPOINT": cuebot.endpoint}))
    assert "event loop: asyncio" in out, out
    assert "uvloop" not in out


async def test_without_uvloop_auto_falls_back_to_asyncio(cuebot: RecordingCuebot,
                                                         no_uvloop: str) -> None:
    out = await _one_call(GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint,
                                              "PYTHONPATH": no_uvloop}))
    assert "event loop: asyncio" in out, out


def test_without_uvloop_asking_for_it_is_one_error_line(no_uvloop: str) -> None:
    result = run_gateway(env={"EVENT_LOOP": "uvloop", "PYTHONPATH": no_uvloop})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "opencue-gateway: error: EVENT_LOOP=uvloop, but uvloop is not installed "
        "(pip install uvloop, or EVENT_LOOP=asyncio)")


def test_an_unknown_loop_is_a_setting_error() -> None:
    result = run_gateway(env={"EVENT_LOOP": "trio"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("opencue-gateway: error: EVENT_LOOP: expected auto, "
                                     "uvloop or asyncio, got 'trio'")


async def test_every_worker_runs_on_uvloop(cuebot: RecordingCuebot) -> None:
    out = await _one_call(GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint,
                                              "WORKERS": "2"}))
    assert out.count("event loop: uvloop") == 2, out
