"""Who may do what: roles from the token against AUTHZ_POLICY, through a real gateway.

A viewer token reads and is refused changes; a wrangler's patterns let it act
on jobs and lock hosts only; alias spellings are judged as the real method;
``/api`` operations need every RPC they call, checked before any is called;
a refusal is a 403 envelope naming the method and roles, counted, logged,
sent nowhere and spending nothing from the rate limit.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request
from opencue_proto import job_pb2

from gateway.app import STATE
from gateway.authz import ALLOWED, CALLER, Access, Caller, Policy, PolicyError
from support import RecordingCuebot, auth_headers, raw_request, run_gateway

POLICY = """\
# the issue's example
[roles]
viewer   = ["*/Get*", "*/Find*", "*/Is*"]
wrangler = ["job.*/*", "host.HostInterface/Lock", "host.HostInterface/Unlock"]
admin    = ["*"]
"""
KILL = "/job.JobInterface/Kill"
LOCK = "/host.HostInterface/Lock"
GET_SHOWS = "/show.ShowInterface/GetShows"


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture
async def gw(make_gateway: Any, policy_file: Path) -> TestClient:
    return await make_gateway(authorized=False, authz_policy=policy_file)


def as_(role: Any, sub: str = "someone", **claims: Any) -> dict[str, str]:
    if role is not None:
        claims["role"] = role
    return auth_headers(sub, **claims)


async def call(gw: TestClient, path: str, role: Any, body: bytes = b"{}",
               method: str = "POST", **claims: Any) -> tuple[int, dict[str, Any]]:
    resp = await gw.request(method, path, data=body, headers=as_(role, **claims))
    raw = await resp.read()
    return resp.status, (json.loads(raw) if raw else {})


# ---------------------------------------------------------------------------
# the policy file
# ---------------------------------------------------------------------------
def test_the_issues_policy_parses() -> None:
    p = Policy.parse(POLICY)
    assert p.allows("job.JobInterface/GetJobs", ("viewer",))
    assert not p.allows("job.JobInterface/Kill", ("viewer",))
    assert p.allows("job.JobInterface/Kill", ("viewer", "wrangler"))
    assert p.allows("host.HostInterface/Lock", ("wrangler",))
    assert not p.allows("host.HostInterface/Delete", ("wrangler",))
    assert p.allows("host.HostInterface/Delete", ("admin",))
    assert not p.allows("job.JobInterface/Kill", ())
    assert p.roles_allowing("job.JobInterface/Kill") == {"wrangler", "admin"}


@pytest.mark.parametrize("text, words", [
    ("[roles\nviewer = 1", "not valid TOML"),
    ("viewer = ['*']", "unknown key 'viewer'"),
    ("[roles]\n", "names no role"),
    ("", "no [roles] table"),
    ("[roles]\nviewer = '*/Get*'", "expected a list of patterns"),
    ("[roles]\nviewer = [1, 2]", "expected a list of patterns"),
    ("[roles]\nviewer = ['job.JobInterface']", "does not look like package.Service/Method"),
    ("[roles]\nviewer = ['a/b/c']", "does not look like"),
    ('[roles]\n"two words" = ["*"]', "has no spaces"),
])
def test_a_bad_policy_says_where_and_why_in_one_line(text: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.parse(text, "/etc/opencue/policy.toml")
    message = str(info.value)
    assert message.startswith("AUTHZ_POLICY /etc/opencue/policy.toml: ")
    assert words in message and "\n" not in message


def test_a_leading_slash_in_a_pattern_is_forgiven() -> None:
    assert Policy.parse("[roles]\nr = ['/job.JobInterface/Kill']").allows(
        "job.JobInterface/Kill", ("r",))


def test_a_bad_policy_file_stops_start_up_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text("[roles]\nviewer = 'oops'\n")
    result = run_gateway("--authz-policy", str(bad))
    assert result.returncode == 1, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.stderr
    missing = run_gateway(env={"AUTHZ_POLICY": str(tmp_path / "nope.toml")})
    assert missing.returncode == 1 and "nope.toml" in missing.stderr


# ---------------------------------------------------------------------------
# through the gateway
# ---------------------------------------------------------------------------
async def test_a_viewer_reads_and_may_not_kill(gw: TestClient, cuebot: RecordingCuebot) -> None:
    assert (await call(gw, GET_SHOWS, "viewer"))[0] == 200
    assert (await call(gw, "/job.JobInterface/FindJob", "viewer"))[0] == 200
    assert (await call(gw, "/job.JobInterface/IsJobPending", "viewer"))[0] == 200
    resp = await gw.post(KILL, data=b'{"job": {"id": "j1"}}', headers=as_("viewer"))
    body = await resp.json()
    assert resp.status == 403
    assert body == {"error": body["message"], "code": 7, "message":
                    "permission denied: job.JobInterface/Kill is not allowed for role viewer",
                    "details": []}
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    token = as_("viewer")["Authorization"].split()[1]
    assert token not in json.dumps(body)
    assert cuebot.paths() == [GET_SHOWS, "/job.JobInterface/FindJob",
                              "/job.JobInterface/IsJobPending"]


async def test_a_wrangler_acts_on_jobs_and_locks_hosts(gw: TestClient,
                                                       cuebot: RecordingCuebot) -> None:
    for path in (KILL, "/job.JobInterface/Pause", "/job.FrameInterface/Retry",
                 "/job.LayerInterface/SetMinCores", LOCK, "/host.HostInterface/Unlock"):
        assert (await call(gw, path, "wrangler"))[0] == 200, path
    for path in ("/host.HostInterface/Delete", "/show.ShowInterface/CreateShow",
                 "/host.HostInterface/GetHosts"):
        status, body = await call(gw, path, "wrangler")
        assert status == 403 and path[1:] in body["message"], path
    assert len(cuebot.calls) == 6


async def test_an_admin_may_do_everything(gw: TestClient) -> None:
    for path in (KILL, "/host.HostInterface/Delete", "/show.ShowInterface/CreateShow"):
        assert (await call(gw, path, "admin"))[0] == 200
    assert (await gw.post("/admin/reload", headers=as_("admin"))).status == 200


async def test_reload_needs_a_role_that_may_reload(gw: TestClient) -> None:
    status, body = await call(gw, "/admin/reload", "wrangler")
    assert status == 403 and "gateway.Admin/Reload" in body["message"]


async def test_several_roles_any_of_them_allows(gw: TestClient) -> None:
    assert (await call(gw, KILL, ["viewer", "wrangler"]))[0] == 200
    assert (await call(gw, KILL, "viewer wrangler"))[0] == 200  # OAuth scope style
    status, body = await call(gw, KILL, ["viewer", "artist"])
    assert status == 403 and "roles viewer, artist" in body["message"]


async def test_no_role_and_the_default_role(make_gateway: Any, policy_file: Path) -> None:
    strict = await make_gateway(authorized=False, authz_policy=policy_file)
    status, body = await call(strict, GET_SHOWS, None)
    assert status == 403 and "a caller without roles" in body["message"]
    lenient = await make_gateway(authorized=False, authz_policy=policy_file,
                                 authz_default_role=("viewer",))
    assert (await call(lenient, GET_SHOWS, None))[0] == 200
    assert (await call(lenient, GET_SHOWS, []))[0] == 200
    assert (await call(lenient, KILL, None))[0] == 403
    assert (await call(lenient, KILL, "wrangler"))[0] == 200  # a token's own roles win


async def test_a_malformed_roles_claim_is_refused_only_with_a_policy(
        make_gateway: Any, policy_file: Path, cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(authorized=False, authz_policy=policy_file)
    for bad in (42, {"admin": True}, ["viewer", 3]):
        status, body = await call(gw, GET_SHOWS, bad)
        assert status == 403 and "claim 'role' must be a string or a list" in body["message"]
    assert cuebot.calls == []
    open_gw = await make_gateway(authorized=False)
    assert (await call(open_gw, KILL, 42))[0] == 200  # no policy: allowed, as before


async def test_roles_from_a_nested_claim(make_gateway: Any, policy_file: Path) -> None:
    gw = await make_gateway(authorized=False, authz_policy=policy_file,
                            jwt_roles_claim="realm_access.roles")
    assert (await call(gw, KILL, None, realm_access={"roles": ["wrangler"]}))[0] == 200
    assert (await call(gw, KILL, "wrangler", realm_access={"roles": ["viewer"]}))[0] == 403


async def test_alias_spellings_are_judged_as_the_real_method(
        make_gateway: Any, tmp_path: Path, cuebot: RecordingCuebot,
        caplog: pytest.LogCaptureFixture) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[roles]\nframer = ["job.FrameInterface/*"]\n'
                      'aliased = ["frame.FrameInterface/*"]\n')
    with caplog.at_level(logging.WARNING, logger="gateway.authz"):
        gw = await make_gateway(authorized=False, authz_policy=policy)
    # a pattern on the alias spelling matches nothing, and start-up says so
    assert "pattern 'frame.FrameInterface/*' matches no method served" in caplog.text
    for path in ("/job.FrameInterface/Kill", "/frame.FrameInterface/Kill"):
        assert (await call(gw, path, "framer"))[0] == 200, path
        status, body = await call(gw, path, "aliased")
        assert status == 403 and "job.FrameInterface/Kill" in body["message"], path
    assert cuebot.paths() == ["/job.FrameInterface/Kill"] * 2


async def test_unknown_methods_are_404_not_403(gw: TestClient) -> None:
    assert (await call(gw, "/job.JobInterface/NoSuchMethod", "viewer"))[0] == 404
    assert (await call(gw, "/api/nothing", "viewer", method="GET"))[0] == 404


# ---------------------------------------------------------------------------
# /api: authorized as the RPCs the operation calls
# ---------------------------------------------------------------------------
def _job_reply(cuebot: RecordingCuebot) -> None:
    job = job_pb2.Job(id="job-1", name="testing-sh01-jdoe_render", show="testing")
    cuebot.reply("/job.JobInterface/GetJob", job_pb2.JobGetJobResponse(job=job))


async def test_api_kill_needs_kill_and_nothing_reaches_cuebot_when_refused(
        gw: TestClient, cuebot: RecordingCuebot) -> None:
    _job_reply(cuebot)
    assert (await call(gw, "/api/job/job-1", "viewer", method="GET"))[0] == 200
    for path in ("/api/job/job-1", "/api/job/job-1/", "//api/job/job-1"):
        status, _, raw = await raw_request(gw.port, "DELETE", path, headers=as_("viewer"),
                                           authorized=False)
        assert status == 403, path
        assert json.loads(raw)["message"] == ("permission denied: job.JobInterface/Kill is "
                                              "not allowed for role viewer")
    assert cuebot.paths() == ["/job.JobInterface/GetJob"]  # the GET; no GetJob for a DELETE
    status, body = await call(gw, "/api/job/job-1", "wrangler", method="DELETE")
    assert status == 200 and body["success"] is True
    assert cuebot.paths()[1:] == ["/job.JobInterface/GetJob", KILL]


async def test_api_operations_need_every_rpc_they_call(
        make_gateway: Any, tmp_path: Path, cuebot: RecordingCuebot) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[roles]\nkiller = ["job.JobInterface/Kill"]\n'
                      'shows = ["show.ShowInterface/GetShows", "show.ShowInterface/FindShow"]\n')
    gw = await make_gateway(authorized=False, authz_policy=policy)
    status, body = await call(gw, "/api/job/job-1", "killer", method="DELETE")
    assert status == 403 and "job.JobInterface/GetJob" in body["message"]
    status, body = await call(gw, "/api/show/testing/job", "shows", method="GET")
    assert status == 403 and "job.JobInterface/GetJobs" in body["message"]
    status, body = await call(gw, "/api/show", "shows", method="HEAD")
    assert status == 403
    assert cuebot.calls == []


# ---------------------------------------------------------------------------
# refusals are cheap and accounted for
# ---------------------------------------------------------------------------
async def test_a_denial_spends_nothing_and_is_counted_and_logged(
        make_gateway: Any, policy_file: Path, cuebot: RecordingCuebot,
        caplog: pytest.LogCaptureFixture) -> None:
    gw = await make_gateway(authorized=False, authz_policy=policy_file, rate_limit_rps=1,
                            rate_limit_burst=2)
    with caplog.at_level(logging.INFO, logger="gateway.authz"):
        for _ in range(5):
            resp = await gw.post(KILL, headers=as_("viewer", sub="jdoe\nforged line"))
            assert resp.status == 403  # never 429: denials take nothing from the bucket
            assert "X-RateLimit-Remaining" not in resp.headers
    resp = await gw.post(GET_SHOWS, headers=as_("viewer", sub="jdoe\nforged line"))
    assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "1"
    assert cuebot.paths() == [GET_SHOWS]
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.authz"]
    assert len(lines) == 5
    assert all(line.startswith('denied job.JobInterface/Kill to "jdoe\\nforged line" (role '
                               'viewer;') for line in lines), lines
    metrics = await (await gw.get("/metrics")).text()
    assert 'opencue_gateway_authz_denials_total{method="job.JobInterface/Kill"} 5.0' in metrics


async def test_no_policy_allows_everything(gateway: TestClient, cuebot: RecordingCuebot) -> None:
    for path in (KILL, "/host.HostInterface/Delete"):
        assert (await gateway.post(path)).status == 200
    assert (await gateway.post("/admin/reload")).status == 200
    assert gateway.app[STATE].access is None


async def test_no_auth_callers_have_the_default_role(make_gateway: Any,
                                                     policy_file: Path) -> None:
    gw = await make_gateway(no_auth=True, dev=True, jwt_secret=None, authz_policy=policy_file,
                            authz_default_role=("viewer",))
    assert (await gw.post(GET_SHOWS)).status == 200
    assert (await gw.post(KILL)).status == 403


# ---------------------------------------------------------------------------
# reload
# ---------------------------------------------------------------------------
async def test_the_policy_is_read_again_on_reload(gw: TestClient, policy_file: Path) -> None:
    assert (await call(gw, KILL, "viewer"))[0] == 403
    policy_file.write_text(POLICY.replace('"*/Is*"]', '"*/Is*", "job.JobInterface/Kill"]'))
    assert (await gw.post("/admin/reload", headers=as_("admin"))).status == 200
    assert (await call(gw, KILL, "viewer"))[0] == 200
    # a broken file: the reload fails, saying why, and the policy in force stays
    policy_file.write_text("[roles]\nviewer = 'everything'\n")
    resp = await gw.post("/admin/reload", headers=as_("admin"))
    body = await resp.json()
    assert resp.status == 500 and f"AUTHZ_POLICY {policy_file}" in body["message"]
    assert (await call(gw, KILL, "viewer"))[0] == 200
    assert (await call(gw, "/host.HostInterface/Delete", "viewer"))[0] == 403


# ---------------------------------------------------------------------------
# invoke's own check: a call its route did not declare
# ---------------------------------------------------------------------------
async def test_invoke_checks_a_call_its_route_did_not_declare(gw: TestClient) -> None:
    state = gw.app[STATE]
    access: Access = state.access
    request = make_mocked_request("GET", "/api/show", app=gw.app)
    request[CALLER] = Caller("rid", "jdoe", ("viewer",), "127.0.0.1")
    request[ALLOWED] = ("show.ShowInterface/GetActiveShows",)
    kill = state.table.routes[KILL]
    access.before_call(request, state.table.routes["/show.ShowInterface/GetActiveShows"], b"")
    with pytest.raises(Exception) as info:
        access.before_call(request, kill, b"")
    assert getattr(info.value, "status", None) == 403
    assert "job.JobInterface/Kill" in info.value.message  # type: ignore[attr-defined]


def test_the_sandbox_token_has_every_role_of_the_policy(policy_file: Path) -> None:
    import jwt

    from gateway.auth import roles_from_claims
    from gateway.startup import sandbox_banner
    from gateway.config import Config

    for claim in ("role", "realm_access.roles"):
        cfg = Config(jwt_secret="s" * 40, authz_policy=policy_file, jwt_roles_claim=claim)
        tok = sandbox_banner(cfg, "http://127.0.0.1:1").split("export TOKEN=")[1].split()[0]
        claims = jwt.decode(tok, "s" * 40, algorithms=["HS256"])
        assert roles_from_claims(claims, claim) == ("viewer", "wrangler", "admin")
