"""optional.py: a gateway process without JWT_JWKS never loads cryptography.

Read from outside, as an operator would: the shared objects mapped into the
running process (``/proc/<pid>/maps``), while it answers calls signed the
way its settings say.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest

from idp import SigningKey, document, fresh_claims
from support import GatewayProcess, RecordingCuebot, auth_headers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _maps_cryptography(pid: int) -> bool:
    return "/cryptography/" in Path(f"/proc/{pid}/maps").read_text()


async def _serves(gw: GatewayProcess, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gw.url}/show.ShowInterface/GetShows", data=b"{}",
                             headers=headers) as resp:
            assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_without_jwks_cryptography_stays_out(cuebot: RecordingCuebot,
                                                   workers: str) -> None:
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "WORKERS": workers})
    try:
        await asyncio.to_thread(gw.wait_ready)
        await _serves(gw, auth_headers())  # an HS256 token, checked
        assert not _maps_cryptography(gw.proc.pid), "the serving process loaded it"
        children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
        assert len(children) >= (2 if workers == "2" else 0), children
        for pid in children:  # the workers, each its own interpreter (spawned)
            assert not _maps_cryptography(int(pid)), f"process {pid} loaded it"
    finally:
        assert await asyncio.to_thread(gw.stop) == 0, gw.output


async def test_with_jwks_cryptography_is_loaded_and_used(cuebot: RecordingCuebot,
                                                         tmp_path: Path) -> None:
    key = SigningKey.rsa("k1")
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(document(key)))
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "JWT_SECRET": None,
                             "JWT_JWKS": str(keys), "JWT_ALGORITHMS": "RS256"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        await _serves(gw, {"Authorization": f"Bearer {key.sign(fresh_claims())}"})
        assert _maps_cryptography(gw.proc.pid)
    finally:
        assert await asyncio.to_thread(gw.stop) == 0, gw.output
