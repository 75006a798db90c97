"""--dev: loopback only, indented replies, a summary line per reply, localhost CORS."""
from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from opencue_proto import job_pb2

from gateway import dev
from gateway.config import ConfigError, load
from support import RecordingCuebot, run_gateway

GET_JOBS = "/job.JobInterface/GetJobs"


def _jobs(n: int) -> job_pb2.JobGetJobsResponse:
    return job_pb2.JobGetJobsResponse(jobs=job_pb2.JobSeq(
        jobs=[job_pb2.Job(id=f"j{i}", name=f"job-{i}") for i in range(n)]))


async def test_replies_are_indented_and_summed_up(make_gateway: Any, cuebot: RecordingCuebot,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cuebot.reply(GET_JOBS, _jobs(3))
    compact = await make_gateway()
    pretty = await make_gateway(dev=True)
    plain = await (await compact.post(GET_JOBS)).read()
    with caplog.at_level(logging.INFO, logger="gateway.dev"):
        resp = await pretty.post(GET_JOBS)
        body = await resp.read()
        missing = await pretty.post("/job.JobInterface/Nope")
        missing_body = await missing.read()
    assert b"\n  " in body and b"\n" not in plain
    assert orjson.loads(body) == orjson.loads(plain)
    assert list(orjson.loads(body)["jobs"]["jobs"][0]) == list(orjson.loads(plain)["jobs"]["jobs"][0])
    assert missing.status == 404 and b"\n  " in missing_body
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.dev"]
    assert any(f"POST {GET_JOBS} -> 200 jobs.jobs[3]" in line for line in lines), lines
    assert any("-> 404 error 5: service job.JobInterface has no method Nope" in line
               for line in lines), lines


def test_summary_lines() -> None:
    assert dev.summary(b'{"jobs":{"jobs":[1,2]}}') == "jobs.jobs[2]"
    assert dev.summary(b'{"limits":[1]}') == "limits[1]"
    assert dev.summary(b'{"show":{"id":"x","name":"y"}}') == "show{\u2026}"
    assert dev.summary(b"{}") == "{}"
    assert dev.summary(b'{"error":"nope","code":5,"message":"nope","details":[]}') == \
        "error 5: nope"
    assert dev.summary(b"not json") == "8 bytes, not JSON"


async def test_localhost_origins_are_allowed(make_gateway: Any) -> None:
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    devgw = await make_gateway(authorized=False, dev=True)
    resp = await devgw.options(GET_JOBS, headers=preflight)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    evil = await devgw.options(GET_JOBS, headers={**preflight, "Origin": "http://evil.test"})
    assert evil.status == 403
    prod = await make_gateway(authorized=False)
    assert (await prod.options(GET_JOBS, headers=preflight)).status == 401


async def test_no_auth_in_dev_mode(make_gateway: Any, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False, dev=True, no_auth=True, jwt_secret=None)
    assert (await gw.post(GET_JOBS)).status == 200


def test_dev_serves_loopback_only() -> None:
    assert load(["--dev"], {}).host == "127.0.0.1"
    assert load(["--dev", "--host", "::1"], {}).host == "::1"
    with pytest.raises(ConfigError) as info:
        load(["--dev", "--host", "10.1.2.3"], {})
    assert "--dev" in str(info.value)
    with pytest.raises(ConfigError):
        load(["--dev"], {"REST_HOST": "192.168.1.5"})


def test_no_auth_outside_dev_mode_is_refused() -> None:
    result = run_gateway("--no-auth", env={"JWT_SECRET": None})
    assert result.returncode == 2
    assert "--no-auth is only allowed with --dev" in result.stderr


def test_dev_no_auth_process_warns_loudly() -> None:
    from support import GatewayProcess

    gw = GatewayProcess("--dev", "--no-auth", env={"JWT_SECRET": None,
                                                    "CUEBOT_ENDPOINT": "127.0.0.1:1"})
    try:
        gw.wait_ready()
    finally:
        gw.stop()
    assert "AUTHENTICATION IS OFF" in gw.output
    assert f"listening on http://127.0.0.1:{gw.port}" in gw.output


