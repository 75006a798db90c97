"""The audit trail: one parseable JSON line per change and per denial, never lost or forged.

Lines for a kill, a lock and a denial are parsed field by field; targets
come from the request message (unit tests over OpenCue's own request types);
AUDIT_METHODS widens and narrows; concurrent load writes exactly one line per
mutation; the file is reopened on SIGHUP (logrotate) and a call cut by
shutdown still gets its line; a write that fails is counted, not fatal.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp.test_utils import TestClient
from opencue_proto import (facility_pb2, host_pb2, job_pb2, limit_pb2, show_pb2)

from gateway.audit import Selection, Targets, is_read
from support import GatewayProcess, RecordingCuebot, auth_headers, run_gateway

KILL = "/job.JobInterface/Kill"
LOCK = "/host.HostInterface/Lock"
POLICY = """\
[roles]
viewer   = ["*/Get*", "*/Find*", "*/Is*"]
wrangler = ["job.*/*", "host.HostInterface/Lock", "host.HostInterface/Unlock"]
"""
FIELDS = ["time", "event", "request_id", "user", "roles", "client", "method", "path",
          "targets", "status", "grpc_code", "duration_ms"]


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]


@pytest.fixture
async def audited(make_gateway: Any, tmp_path: Path) -> tuple[TestClient, Path]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    log = tmp_path / "audit.jsonl"
    gw = await make_gateway(authorized=False, authz_policy=policy, audit_log=str(log))
    return gw, log


def as_(role: str, sub: str = "jdoe") -> dict[str, str]:
    return auth_headers(sub, role=role)


# ---------------------------------------------------------------------------
# the lines
# ---------------------------------------------------------------------------
async def test_a_kill_a_lock_and_a_denial(audited: tuple[TestClient, Path],
                                          cuebot: RecordingCuebot) -> None:
    gw, log = audited
    kill = await gw.post(KILL, headers={**as_("wrangler"), "X-Request-Id": "kill-1"},
                         data=json.dumps({"job": {"id": "job-7", "name": "testing-sh01-jdoe_x"},
                                          "username": "jdoe", "reason": "wrong frames"}))
    assert kill.status == 200
    lock = await gw.post(LOCK, headers=as_("wrangler", "wrangler-bob"),
                         data=b'{"host": {"id": "host-3", "name": "render-03"}}')
    assert lock.status == 200
    denied = await gw.post("/host.HostInterface/Delete", headers=as_("viewer", "ann"),
                           data=b'{"host": {"name": "render-09"}}')
    assert denied.status == 403
    reads = await gw.post("/job.JobInterface/GetJobs", headers=as_("viewer"))
    assert reads.status == 200  # a read: no line
    got = lines(log)
    assert [list(line) for line in got] == [FIELDS] * 3
    k, lk, d = got
    assert {key: k[key] for key in FIELDS[1:]} == {
        "event": "call", "request_id": "kill-1", "user": "jdoe", "roles": ["wrangler"],
        "client": "127.0.0.1", "method": "job.JobInterface/Kill", "path": KILL,
        "targets": [{"kind": "job", "id": "job-7", "name": "testing-sh01-jdoe_x"}],
        "status": 200, "grpc_code": "OK", "duration_ms": k["duration_ms"]}
    assert k["time"].endswith("Z") and k["duration_ms"] >= 0
    assert lk["method"] == "host.HostInterface/Lock" and lk["user"] == "wrangler-bob"
    assert lk["targets"] == [{"kind": "host", "id": "host-3", "name": "render-03"}]
    assert lk["request_id"] == lock.headers["X-Request-Id"]
    assert d["event"] == "denied" and d["method"] == "host.HostInterface/Delete"
    assert (d["status"], d["grpc_code"], d["roles"]) == (403, "PERMISSION_DENIED", ["viewer"])
    assert d["targets"] == [{"kind": "host", "name": "render-09"}]
    assert [c.path for c in cuebot.calls] == [KILL, LOCK, "/job.JobInterface/GetJobs"]


async def test_a_kill_through_the_api_and_its_denial(audited: tuple[TestClient, Path],
                                                     cuebot: RecordingCuebot) -> None:
    gw, log = audited
    job = job_pb2.Job(id="job-1", name="testing-sh01-jdoe_render", show="testing")
    cuebot.reply("/job.JobInterface/GetJob", job_pb2.JobGetJobResponse(job=job))
    assert (await gw.delete("/api/job/job-1", headers=as_("viewer"))).status == 403
    assert (await gw.delete("/api/job/job-1", headers=as_("wrangler"))).status == 200
    d, k = lines(log)
    assert (d["event"], d["method"], d["path"]) == ("denied", "job.JobInterface/Kill",
                                                    "/api/job/job-1")
    assert d["targets"] == [{"kind": "job", "id": "job-1"}]
    assert (k["event"], k["method"], k["status"]) == ("call", "job.JobInterface/Kill", 200)
    assert k["targets"] == [{"kind": "job", "id": "job-1"}]


async def test_cuebots_refusal_is_recorded_as_such(audited: tuple[TestClient, Path],
                                                   cuebot: RecordingCuebot) -> None:
    gw, log = audited
    cuebot.reply(KILL, code=grpc.StatusCode.NOT_FOUND, message="no such job")
    assert (await gw.post(KILL, headers=as_("wrangler"), data=b'{"job":{"id":"x"}}')).status == 404
    (line,) = lines(log)
    assert (line["status"], line["grpc_code"]) == (404, "NOT_FOUND")


async def test_client_chosen_values_cannot_forge_lines(audited: tuple[TestClient, Path]) -> None:
    gw, log = audited
    evil = 'x"}\n{"event":"call","user":"root'
    resp = await gw.post(KILL, headers=as_("wrangler", sub=evil),
                         data=json.dumps({"job": {"name": evil + "\u2028\r"}}))
    assert resp.status == 200
    (line,) = lines(log)
    assert line["user"] == evil and line["targets"][0]["name"] == evil + "\u2028\r"
    assert log.read_bytes().count(b"\n") == 1


async def test_audit_methods_widen_and_narrow(make_gateway: Any, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    gw = await make_gateway(audit_log=str(log), audit_methods=(
        "mutations", "job.JobInterface/GetJob", "-host.HostInterface/Lock"))
    for path in ("/job.JobInterface/GetJob", "/job.JobInterface/GetJobs", LOCK, KILL):
        assert (await gw.post(path)).status == 200
    assert [line["method"] for line in lines(log)] == ["job.JobInterface/GetJob",
                                                       "job.JobInterface/Kill"]
    assert lines(log)[0]["roles"] == []  # no policy: roles are recorded as the token has them


def test_selection_last_match_wins() -> None:
    s = Selection(("*", "-*/Get*", "job.JobInterface/GetJob"))
    assert s("job.JobInterface/GetJob") and s("job.JobInterface/FindJob")
    assert not s("job.JobInterface/GetJobs")
    assert not Selection(("job.*/*",))("host.HostInterface/Lock")
    assert is_read("x.Y/ListThings") and is_read("x.Y/IsOk") and not is_read("x.Y/Kill")


# ---------------------------------------------------------------------------
# load, rotation, shutdown, failure
# ---------------------------------------------------------------------------
async def test_one_line_per_mutation_under_concurrent_load(make_gateway: Any, tmp_path: Path,
                                                           cuebot: RecordingCuebot) -> None:
    log = tmp_path / "audit.jsonl"
    gw = await make_gateway(audit_log=str(log))
    cuebot.reply(KILL, delay=0.01)
    n = 300

    async def kill(i: int) -> int:
        resp = await gw.post(KILL, data=json.dumps({"job": {"id": f"job-{i}"}}),
                             headers={"X-Request-Id": f"req-{i}"})
        return resp.status

    statuses = await asyncio.gather(*(kill(i) for i in range(n)),
                                    *(gw.post("/job.JobInterface/GetJobs") for _ in range(50)))
    assert all((s if isinstance(s, int) else s.status) == 200 for s in statuses)
    got = lines(log)
    assert len(got) == n
    assert sorted(line["request_id"] for line in got) == sorted(f"req-{i}" for i in range(n))
    assert {line["targets"][0]["id"] for line in got} == {f"job-{i}" for i in range(n)}


async def test_reopened_on_sighup_for_logrotate(tmp_path: Path, cuebot: RecordingCuebot) -> None:
    log = tmp_path / "audit.jsonl"
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "AUDIT_LOG": str(log),
                             "RATE_LIMIT_RPS": "0"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            async with http.post(f"{gw.url}{KILL}", data=b'{"job":{"id":"before"}}') as r:
                assert r.status == 200
            rotated = tmp_path / "audit.jsonl.1"
            os.rename(log, rotated)  # what logrotate does, before it sends SIGHUP
            gw.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "audit log reopened" not in gw.output and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            async with http.post(f"{gw.url}{KILL}", data=b'{"job":{"id":"after"}}') as r:
                assert r.status == 200
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output
    assert [line["targets"][0]["id"] for line in lines(rotated)] == ["before"]
    assert [line["targets"][0]["id"] for line in lines(log)] == ["after"]
    assert os.stat(log).st_mode & 0o777 == 0o640


async def test_a_call_cut_by_shutdown_still_gets_its_line(tmp_path: Path,
                                                          cuebot: RecordingCuebot) -> None:
    log = tmp_path / "audit.jsonl"
    cuebot.reply(KILL, delay=30)
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "AUDIT_LOG": str(log),
                             "RATE_LIMIT_RPS": "0", "SHUTDOWN_GRACE": "0.5"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            pending = asyncio.ensure_future(http.post(f"{gw.url}{KILL}", data=b"{}"))
            while not cuebot.calls:
                await asyncio.sleep(0.02)
            gw.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(pending, return_exceptions=True)
    finally:
        await asyncio.to_thread(gw.stop)
    (line,) = lines(log)
    assert line["method"] == "job.JobInterface/Kill" and line["grpc_code"] == "CANCELLED"


async def test_standard_output(cuebot: RecordingCuebot) -> None:
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "AUDIT_LOG": "-",
                             "RATE_LIMIT_RPS": "0"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            async with http.post(f"{gw.url}{LOCK}", data=b'{"host":{"name":"r1"}}') as r:
                assert r.status == 200
        deadline = time.monotonic() + 5
        while '"event":"call"' not in gw.output and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(gw.stop)
    (line,) = [json.loads(ln) for ln in gw.output.splitlines() if ln.startswith('{"time"')]
    assert line["targets"] == [{"kind": "host", "name": "r1"}]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_a_write_that_fails_is_counted_not_fatal(make_gateway: Any) -> None:
    gw = await make_gateway(audit_log="/dev/full")
    assert (await gw.post(KILL)).status == 200
    metrics = await (await gw.get("/metrics")).text()
    assert "opencue_gateway_audit_write_failures_total 1.0" in metrics


def test_an_audit_log_that_cannot_be_opened_stops_start_up(tmp_path: Path) -> None:
    where = tmp_path / "no" / "such" / "dir" / "audit.jsonl"
    result = run_gateway(env={"AUDIT_LOG": str(where)})
    assert result.returncode == 1
    lines_ = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines_) == 1 and str(where) in lines_[0] and "AUDIT_LOG" in lines_[0]


# ---------------------------------------------------------------------------
# targets, from OpenCue's own request messages
# ---------------------------------------------------------------------------
def _targets(msg: Any, service: str) -> list[dict[str, str]]:
    return Targets().of_message(msg, service)


@pytest.mark.parametrize("service, msg, expected", [
    ("job.JobInterface", job_pb2.JobKillFramesRequest(
        job=job_pb2.Job(id="j1", name="jname"),
        req=job_pb2.FrameSearchCriteria(ids=["f1"], frames=["0001-render"], layers=["render"]),
        username="jdoe", reason="bad"),
     [{"kind": "job", "id": "j1", "name": "jname"}, {"kind": "frame", "id": "f1"},
      {"kind": "frame", "name": "0001-render"}, {"kind": "layer", "name": "render"}]),
    ("job.GroupInterface", job_pb2.GroupReparentJobsRequest(
        group=job_pb2.Group(id="g1", name="lighting"),
        jobs=job_pb2.JobSeq(jobs=[job_pb2.Job(id="a"), job_pb2.Job(id="b", name="B")])),
     [{"kind": "group", "id": "g1", "name": "lighting"}, {"kind": "job", "id": "a"},
      {"kind": "job", "id": "b", "name": "B"}]),
    ("job.GroupInterface", job_pb2.GroupSetNameRequest(group=job_pb2.Group(id="g1"),
                                                       name="new name"),
     [{"kind": "group", "id": "g1"}]),
    ("host.HostInterface", host_pb2.HostRedirectToJobRequest(
        host=host_pb2.Host(name="r1"), proc_names=["p1", "p2"], job_id="j9"),
     [{"kind": "host", "name": "r1"}, {"kind": "proc", "name": "p1"},
      {"kind": "proc", "name": "p2"}, {"kind": "job", "id": "j9"}]),
    ("host.ProcInterface", host_pb2.ProcUnbookToJobRequest(
        r=host_pb2.ProcSearchCriteria(hosts=["r1"], allocs=["local.general"]),
        jobs=job_pb2.JobSeq(jobs=[job_pb2.Job(name="j")]), kill=True),
     [{"kind": "host", "name": "r1"}, {"kind": "allocation", "name": "local.general"},
      {"kind": "job", "name": "j"}]),
    ("show.ShowInterface", show_pb2.ShowCreateSubscriptionRequest(
        show=show_pb2.Show(id="s1", name="testing"), allocation_id="a1", size=100),
     [{"kind": "show", "id": "s1", "name": "testing"}, {"kind": "allocation", "id": "a1"}]),
    ("limit.LimitInterface", limit_pb2.LimitCreateRequest(name="nuke", max_value=10),
     [{"kind": "limit", "name": "nuke"}]),
    ("limit.LimitInterface", limit_pb2.LimitRenameRequest(old_name="a", new_name="b"),
     [{"kind": "limit", "name": "a"}]),
    ("facility.AllocationInterface", facility_pb2.AllocDeleteRequest(
        allocation=facility_pb2.Allocation(id="al1", name="local.general")),
     [{"kind": "allocation", "id": "al1", "name": "local.general"}]),
    ("job.JobInterface", job_pb2.JobLaunchSpecRequest(spec="<spec>...</spec>"), []),
    ("job.JobInterface", job_pb2.JobKillRequest(), []),
])
def test_targets_of_opencue_requests(service: str, msg: Any,
                                     expected: list[dict[str, str]]) -> None:
    assert _targets(msg, service) == expected


def test_targets_are_planned_once_per_message_type() -> None:
    t = Targets()
    first = t.plan(job_pb2.JobKillRequest, "job.JobInterface")
    assert t.plan(job_pb2.JobKillRequest, "job.JobInterface") is first


def test_many_targets_are_capped(tmp_path: Path) -> None:
    from gateway.audit import AuditLog, Record

    log = AuditLog(str(tmp_path / "a.jsonl"))
    targets = [{"kind": "job", "id": str(i)} for i in range(250)]
    log.write(Record("call", "r", "u", (), "c", "job.GroupInterface/ReparentJobs", "/x",
                     targets, 200, "OK", 1.0))
    log.close()
    (line,) = lines(tmp_path / "a.jsonl")
    assert len(line["targets"]) == 100 and line["targets_omitted"] == 150
