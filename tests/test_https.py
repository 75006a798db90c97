"""The HTTPS listener (TLS_CERT_FILE / TLS_KEY_FILE), through the real process."""
from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest

from pki import Authority
from support import GatewayProcess, RecordingCuebot, auth_headers, run_gateway


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Path, Path]:
    d = tmp_path_factory.mktemp("https")
    ca = Authority.create(d, "https-ca")
    leaf = ca.issue(d, "gateway", dns=("localhost",), ips=("127.0.0.1",))
    return ca, leaf.cert, leaf.key


async def test_serves_https(certs: tuple[Authority, Path, Path], cuebot: RecordingCuebot) -> None:
    ca, cert, key = certs
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "TLS_CERT_FILE": str(cert),
                             "TLS_KEY_FILE": str(key)})
    try:
        await asyncio.to_thread(gw.wait_ready)
        assert f"listening on https://127.0.0.1:{gw.port}" in gw.output
        trust = ssl.create_default_context(cafile=str(ca.pem_path))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"https://127.0.0.1:{gw.port}/show.ShowInterface/GetShows",
                                 headers=auth_headers(), ssl=trust) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
                async with http.post(f"http://127.0.0.1:{gw.port}/show.ShowInterface/GetShows",
                                     headers=auth_headers()) as resp:
                    await resp.read()
    finally:
        await asyncio.to_thread(gw.stop)
    assert cuebot.paths() == ["/show.ShowInterface/GetShows"]


def test_unusable_certificate_is_one_line(tmp_path: Path,
                                          certs: tuple[Authority, Path, Path]) -> None:
    _ca, cert, _key = certs
    junk = tmp_path / "key.pem"
    junk.write_text("not a key")
    result = run_gateway(env={"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(junk)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TLS_KEY_FILE" in lines[0], result.stderr


def test_certificate_without_key_is_a_bad_setting(certs: tuple[Authority, Path, Path]) -> None:
    result = run_gateway(env={"TLS_CERT_FILE": str(certs[1])})
    assert result.returncode == 2 and "TLS_KEY_FILE" in result.stderr
