"""The /api resource operations of the OpenAPI seed.

Against the sandbox, every value is checked against the database rows it
comes from (the ground truth), not against the gateway's own RPC replies.
Against the recording backend, the exact requests sent to Cuebot are checked
(the kill reason naming the caller, the host state criteria).
"""
from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest
from opencue_proto import host_pb2, job_pb2, show_pb2

SHOW_KEYS = ["id", "name", "active", "defaultMinCores", "defaultMaxCores"]
JOB_KEYS = ["id", "name", "show", "state", "priority", "totalFrames", "doneFrames",
            "runningFrames", "deadFrames", "waitingFrames"]
LAYER_KEYS = ["id", "name", "type", "state", "minCores", "maxCores", "threadable",
              "totalFrames", "doneFrames"]
HOST_KEYS = ["id", "name", "state", "lock", "totalCores", "idleCores", "totalMemory",
             "idleMemory", "load"]


async def _get(gw: Any, path: str, method: str = "GET") -> tuple[int, Any, Any]:
    resp = await gw.request(method, path)
    body = await resp.read()
    assert resp.headers["Content-Type"] == "application/json"
    return resp.status, orjson.loads(body), resp.headers


@pytest.fixture
async def api(sandbox: Any, make_gateway: Any) -> Any:
    return await make_gateway(cuebot_endpoint=sandbox.endpoint)


def _counts(store: Any, column: str, key: str) -> dict[str, int]:
    rows = store.all(f"SELECT state, COUNT(*) AS n FROM frame WHERE {column} = ? GROUP BY state",
                     (key,))
    return {r["state"]: r["n"] for r in rows}


def _expected_job(store: Any, row: Any) -> dict[str, Any]:
    c = _counts(store, "job_id", row["id"])
    if row["state"] == "FINISHED":
        state = "FINISHED"
    elif row["is_paused"]:
        state = "PAUSED"
    elif c.get("RUNNING"):
        state = "RUNNING"
    else:
        state = "PENDING"
    show = store.one("SELECT name FROM show WHERE id = ?", (row["show_id"],))["name"]
    return {"id": row["id"], "name": row["name"], "show": show, "state": state,
            "priority": row["priority"], "totalFrames": sum(c.values()),
            "doneFrames": c.get("SUCCEEDED", 0), "runningFrames": c.get("RUNNING", 0),
            "deadFrames": c.get("DEAD", 0),
            "waitingFrames": c.get("WAITING", 0) + c.get("DEPEND", 0)}


async def test_list_shows_is_the_active_shows(api: Any, sandbox: Any) -> None:
    status, data, _ = await _get(api, "/api/show")
    assert status == 200 and list(data) == ["shows"]
    rows = sandbox.store.all("SELECT * FROM show WHERE active = 1 ORDER BY seq")
    assert rows and sandbox.store.one("SELECT 1 FROM show WHERE active = 0")  # demo has one
    assert data["shows"] == [
        {"id": r["id"], "name": r["name"], "active": True,
         "defaultMinCores": r["default_min_cores"], "defaultMaxCores": r["default_max_cores"]}
        for r in rows]
    assert all(list(s) == SHOW_KEYS for s in data["shows"])


async def test_list_jobs_by_show_name_and_id(api: Any, sandbox: Any) -> None:
    store = sandbox.store
    show = store.one("SELECT * FROM show WHERE name = 'testing'")
    rows = store.all("SELECT * FROM job WHERE show_id = ?", (show["id"],))
    assert {r["state"] for r in rows} >= {"PENDING", "FINISHED"}
    expected = sorted((_expected_job(store, r) for r in rows), key=lambda j: j["id"])
    assert {j["state"] for j in expected} >= {"RUNNING", "PAUSED", "FINISHED"}
    for key in ("testing", show["id"]):
        status, data, _ = await _get(api, f"/api/show/{key}/job")
        assert status == 200 and list(data) == ["jobs"]
        assert all(list(j) == JOB_KEYS for j in data["jobs"])
        assert sorted(data["jobs"], key=lambda j: j["id"]) == expected


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "FINISHED", "PAUSED"])
async def test_list_jobs_filtered_by_state(api: Any, sandbox: Any, state: str) -> None:
    store = sandbox.store
    rows = store.all("SELECT * FROM job")
    expected = sorted(j["id"] for j in map(lambda r: _expected_job(store, r), rows)
                      if j["state"] == state)
    status, data, _ = await _get(api, f"/api/show/testing/job?state={state}")
    assert status == 200
    assert sorted(j["id"] for j in data["jobs"]) == expected
    assert all(j["state"] == state for j in data["jobs"])


@pytest.mark.parametrize("query", ["state=running", "state=DONE", "state=", "state=PENDING&state=PAUSED"])
async def test_list_jobs_bad_state_is_400(api: Any, query: str) -> None:
    status, data, _ = await _get(api, f"/api/show/testing/job?{query}")
    assert status == 400 and data["code"] == 3
    assert "PENDING, RUNNING, FINISHED, PAUSED" in data["message"]


async def test_unknown_show_is_404(api: Any) -> None:
    status, data, _ = await _get(api, "/api/show/no_such_show/job")
    assert status == 404
    assert data == {"error": "show no_such_show not found", "code": 5,
                    "message": "show no_such_show not found", "details": []}


async def test_get_job_matches_the_database(api: Any, sandbox: Any) -> None:
    store = sandbox.store
    for row in store.all("SELECT * FROM job"):
        status, data, _ = await _get(api, f"/api/job/{row['id']}")
        assert status == 200 and list(data) == JOB_KEYS
        assert data == _expected_job(store, row)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_job_is_404(api: Any, method: str) -> None:
    for job_id in ("00000000-0000-0000-0000-00000000dead", "not-a-uuid"):
        status, data, _ = await _get(api, f"/api/job/{job_id}", method)
        assert status == 404 and data["code"] == 5 and set(data) == {
            "error", "code", "message", "details"}
        status, data, _ = await _get(api, f"/api/job/{job_id}/layer")
        assert status == 404 and data["code"] == 5


async def test_layers_match_the_database(api: Any, sandbox: Any) -> None:
    store = sandbox.store
    job = store.one("SELECT * FROM job WHERE name = 'testing-sh010-jdoe_lighting'")
    layers = store.all("SELECT * FROM layer WHERE job_id = ? ORDER BY dispatch_order", (job["id"],))
    status, data, _ = await _get(api, f"/api/job/{job['id']}/layer")
    assert status == 200 and list(data) == ["layers"]
    assert [x["id"] for x in data["layers"]] == [r["id"] for r in layers]
    for got, row in zip(data["layers"], layers):
        c = _counts(store, "layer_id", row["id"])
        assert list(got) == LAYER_KEYS
        assert got["name"] == row["name"]
        assert got["type"] == ("RENDER" if row["type"] == "RENDER" else "UTIL")
        assert got["minCores"] == row["min_cores"] and got["maxCores"] == row["max_cores"]
        assert got["threadable"] is bool(row["threadable"])
        assert got["totalFrames"] == sum(c.values())
        assert got["doneFrames"] == c.get("SUCCEEDED", 0)
        if c.get("RUNNING"):
            assert got["state"] == "RUNNING"
    assert {x["state"] for x in data["layers"]} & {"RUNNING", "WAITING", "SUCCEEDED"}


async def test_hosts_match_the_database(api: Any, sandbox: Any) -> None:
    store = sandbox.store
    rows = {r["id"]: r for r in store.all("SELECT * FROM host")}
    status, data, _ = await _get(api, "/api/host")
    assert status == 200 and list(data) == ["hosts"]
    assert sorted(h["id"] for h in data["hosts"]) == sorted(rows)
    for h in data["hosts"]:
        r = rows[h["id"]]
        assert list(h) == HOST_KEYS
        cores = r["cores"] // 100
        assert h["name"] == r["name"] and h["lock"] == r["lock_state"]
        assert h["state"] == {"REBOOTING": "DOWN", "REBOOT_WHEN_IDLE": "UP"}.get(
            r["state"], r["state"])
        assert (h["totalCores"], h["idleCores"]) == (cores, r["idle_cores"] // 100)
        assert (h["totalMemory"], h["idleMemory"]) == (r["memory"] // 1024,
                                                       r["idle_memory"] // 1024)
        assert h["load"] == round(r["load"] / cores)


@pytest.mark.parametrize("state", ["UP", "DOWN", "REPAIR"])
async def test_hosts_filtered_by_state(api: Any, sandbox: Any, state: str) -> None:
    status, data, _ = await _get(api, f"/api/host?state={state}")
    assert status == 200
    cue = {"UP": ("UP", "REBOOT_WHEN_IDLE"), "DOWN": ("DOWN", "REBOOTING"),
           "REPAIR": ("REPAIR",)}[state]
    expected = sorted(r["id"] for r in sandbox.store.all("SELECT * FROM host")
                      if r["state"] in cue)
    assert sorted(h["id"] for h in data["hosts"]) == expected
    if state == "UP":
        assert expected


async def test_bad_host_state_is_400(api: Any) -> None:
    status, data, _ = await _get(api, "/api/host?state=REBOOTING")
    assert status == 400 and "UP, DOWN, REPAIR" in data["message"]


async def test_kill_job(api: Any, sandbox: Any) -> None:
    store = sandbox.store
    job = store.one("SELECT * FROM job WHERE name = 'testing-sh010-jdoe_lighting'")
    assert job["state"] == "PENDING"
    status, data, _ = await _get(api, f"/api/job/{job['id']}", "DELETE")
    assert status == 200
    assert data == {"success": True, "message": f"Job {job['name']} killed"}
    assert store.one("SELECT state FROM job WHERE id = ?", (job["id"],))["state"] == "FINISHED"
    status, data, _ = await _get(api, f"/api/job/{job['id']}")
    assert data["state"] == "FINISHED"


async def test_kill_reason_names_the_caller(cuebot: Any, make_gateway: Any) -> None:
    job = job_pb2.Job(id="j1", name="show-shot-user_x")
    cuebot.reply("/job.JobInterface/GetJob", job_pb2.JobGetJobResponse(job=job))
    gw = await make_gateway()
    status, data, _ = await _get(gw, "/api/job/j1", "DELETE")
    assert status == 200 and data["message"] == "Job show-shot-user_x killed"
    kill = next(c for c in cuebot.calls if c.path == "/job.JobInterface/Kill")
    req = job_pb2.JobKillRequest.FromString(kill.request)
    assert req.job.id == "j1" and req.username
    assert req.username in req.reason and "opencue-gateway" in req.reason
    assert kill.metadata["x-request-id"]


async def test_host_state_goes_to_cuebot_as_criteria(cuebot: Any, make_gateway: Any) -> None:
    H = host_pb2
    hosts = [H.Host(id="a", name="a", state=H.UP, cores=8, memory=8 * 1048576, load=400),
             H.Host(id="b", name="b", state=H.REBOOTING, cores=8),
             H.Host(id="c", name="c", state=H.REBOOT_WHEN_IDLE, cores=8, lock_state=H.NIMBY_LOCKED)]
    cuebot.reply("/host.HostInterface/GetHosts",
                 H.HostGetHostsResponse(hosts=H.HostSeq(hosts=hosts)))
    gw = await make_gateway()
    status, data, _ = await _get(gw, "/api/host?state=DOWN")
    assert status == 200
    req = H.HostGetHostsRequest.FromString(cuebot.calls[-1].request)
    assert sorted(req.r.states.state) == sorted([H.DOWN, H.REBOOTING])
    # a backend that ignores the criteria still yields only DOWN hosts
    assert [h["id"] for h in data["hosts"]] == ["b"]
    status, data, _ = await _get(gw, "/api/host")
    assert [(h["id"], h["state"], h["lock"]) for h in data["hosts"]] == [
        ("a", "UP", "OPEN"), ("b", "DOWN", "OPEN"), ("c", "UP", "NIMBY_LOCKED")]
    assert data["hosts"][0]["load"] == 50 and data["hosts"][0]["totalMemory"] == 8192
    assert data["hosts"][1]["load"] == 0


async def test_backend_errors_keep_their_mapping(cuebot: Any, make_gateway: Any) -> None:
    cuebot.reply("/show.ShowInterface/GetActiveShows", code=grpc.StatusCode.INTERNAL,
                 message="boom in Cuebot")
    gw = await make_gateway(grpc_timeout=2.0)
    status, data, _ = await _get(gw, "/api/show")
    assert status == 500 and data["message"] == "boom in Cuebot"
    cuebot.reply("/show.ShowInterface/GetActiveShows",
                 show_pb2.ShowGetActiveShowsResponse(shows=show_pb2.ShowSeq(shows=[
                     show_pb2.Show(id="s", name="s", active=True, default_min_cores=1.5,
                                   default_max_cores=-1)])))
    status, data, _ = await _get(gw, "/api/show")
    assert data["shows"] == [{"id": "s", "name": "s", "active": True,
                              "defaultMinCores": 150, "defaultMaxCores": -1}]


async def test_dead_backend_is_503(make_gateway: Any) -> None:
    from support import free_port

    gw = await make_gateway(cuebot_endpoint=f"127.0.0.1:{free_port()}", grpc_timeout=2.0)
    status, data, _ = await _get(gw, "/api/host")
    assert status == 503 and data["code"] == 14


async def test_unexposed_service_is_501_naming_the_rpc(cuebot: Any, make_gateway: Any) -> None:
    gw = await make_gateway(services=("show.*",))
    status, data, _ = await _get(gw, "/api/host")
    assert status == 501 and "host.HostInterface/GetHosts" in data["message"]
    assert cuebot.calls == []


async def test_other_verbs_and_paths_under_api(api: Any) -> None:
    status, data, headers = await _get(api, "/api/show", "POST")
    assert status == 405 and "GET" in headers["Allow"] and data["code"] == 12
    status, _, headers = await _get(api, "/api/job/x", "PUT")
    assert status == 405 and {"GET", "DELETE"} <= set(headers["Allow"].split(", "))
    status, data, _ = await _get(api, "/api/nothing/here")
    assert status == 404 and "/openapi.json" in data["message"]


# ---------------------------------------------------------------------------
# a post-job, killing what is finished, mapping details
# ---------------------------------------------------------------------------
POST_SPEC = ('<?xml version="1.0"?><!DOCTYPE spec PUBLIC "SPI Cue  Specification Language" '
             '"http://localhost:8080/spcue/dtd/cjsl-1.15.dtd"><spec><show>testing</show>'
             '<shot>sh777</shot><user>jdoe</user><job name="withpost"><layers>'
             '<layer name="render" type="Render"><cmd>echo r</cmd><range>1-2</range>'
             '<chunk>1</chunk></layer><layer name="cleanup" type="Post"><cmd>echo c</cmd>'
             '<range>1</range><chunk>1</chunk></layer></layers></job></spec>')


async def test_filtered_lists_are_the_unfiltered_list_filtered(api: Any, sandbox: Any) -> None:
    """A post-job still POSTED reads PENDING, and ?state=PENDING lists it too."""
    from gateway.sandbox import launchspec

    launchspec.launch(sandbox.farm, POST_SPEC)
    post = sandbox.store.one("SELECT * FROM job WHERE state = 'POSTED'")
    assert post is not None
    _, everything, _ = await _get(api, "/api/show/testing/job")
    by_state = {j["id"]: j["state"] for j in everything["jobs"]}
    assert by_state[post["id"]] == "PENDING"
    for state in ("PENDING", "RUNNING", "FINISHED", "PAUSED"):
        status, data, _ = await _get(api, f"/api/show/testing/job?state={state}")
        assert status == 200
        assert sorted(j["id"] for j in data["jobs"]) == sorted(
            i for i, s in by_state.items() if s == state), state


async def test_kill_of_a_finished_job_says_so(cuebot: Any, make_gateway: Any) -> None:
    job = job_pb2.Job(id="j1", name="show-shot-user_x", state=job_pb2.FINISHED)
    cuebot.reply("/job.JobInterface/GetJob", job_pb2.JobGetJobResponse(job=job))
    gw = await make_gateway()
    status, data, _ = await _get(gw, "/api/job/j1", "DELETE")
    assert status == 200
    assert data == {"success": True, "message": "Job show-shot-user_x was already finished"}
    assert "/job.JobInterface/Kill" not in cuebot.paths()


async def test_kill_names_the_gateway_host_as_pycue_does(cuebot: Any, make_gateway: Any) -> None:
    import os
    import socket

    cuebot.reply("/job.JobInterface/GetJob",
                 job_pb2.JobGetJobResponse(job=job_pb2.Job(id="j1", name="n")))
    gw = await make_gateway()
    assert (await _get(gw, "/api/job/j1", "DELETE"))[0] == 200
    kill = next(c for c in cuebot.calls if c.path == "/job.JobInterface/Kill")
    req = job_pb2.JobKillRequest.FromString(kill.request)
    assert (req.host_kill, req.pid) == (socket.gethostname(), str(os.getpid()))


async def test_layer_types_and_states(cuebot: Any, make_gateway: Any) -> None:
    J = job_pb2
    stats = {"running": J.LayerStats(total_frames=3, running_frames=1, waiting_frames=2),
             "waiting": J.LayerStats(total_frames=2, waiting_frames=1, dead_frames=1),
             "dead": J.LayerStats(total_frames=2, dead_frames=1, succeeded_frames=1),
             "depend": J.LayerStats(total_frames=2, depend_frames=2),
             "done": J.LayerStats(total_frames=2, succeeded_frames=1, eaten_frames=1),
             "empty": J.LayerStats()}
    kinds = [J.PRE, J.POST, J.RENDER, J.UTIL, J.RENDER, J.UTIL]
    layers = [J.Layer(id=name, name=name, type=kind, layer_stats=st, min_cores=0.5,
                      max_cores=-1, is_threadable=True)
              for (name, st), kind in zip(stats.items(), kinds)]
    cuebot.reply("/job.JobInterface/GetJob", J.JobGetJobResponse(job=J.Job(id="j")))
    cuebot.reply("/job.JobInterface/GetLayers",
                 J.JobGetLayersResponse(layers=J.LayerSeq(layers=layers)))
    gw = await make_gateway()
    status, data, _ = await _get(gw, "/api/job/j/layer")
    assert status == 200
    assert [(x["id"], x["type"], x["state"]) for x in data["layers"]] == [
        ("running", "UTIL", "RUNNING"), ("waiting", "UTIL", "WAITING"),
        ("dead", "RENDER", "DEAD"), ("depend", "UTIL", "DEPEND"),
        ("done", "RENDER", "SUCCEEDED"), ("empty", "UTIL", "WAITING")]
    assert {(x["minCores"], x["maxCores"], x["threadable"]) for x in data["layers"]} == {
        (50, -1, True)}


async def test_show_by_id_falls_back_to_the_full_list(cuebot: Any, make_gateway: Any) -> None:
    """FindShow knows names only; an id is looked up among all shows, inactive ones too."""
    S = show_pb2
    cuebot.reply("/show.ShowInterface/FindShow", code=grpc.StatusCode.NOT_FOUND,
                 message="Incorrect result size: expected 1, actual 0")
    cuebot.reply("/show.ShowInterface/GetShows", S.ShowGetShowsResponse(shows=S.ShowSeq(
        shows=[S.Show(id="s-1", name="old", active=False)])))
    gw = await make_gateway()
    status, data, _ = await _get(gw, "/api/show/s-1/job")
    assert status == 200 and data == {"jobs": []}
    req = job_pb2.JobGetJobsRequest.FromString(cuebot.calls[-1].request)
    assert list(req.r.shows) == ["old"] and req.r.include_finished
    status, data, _ = await _get(gw, "/api/show/s-2/job")
    assert status == 404 and data["message"] == "show s-2 not found"


# ---------------------------------------------------------------------------
# what HTTP clients send: spellings, HEAD, encodings, odd parameters
# ---------------------------------------------------------------------------
async def _raw(gw: Any, method: str, target: str,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """The request-target exactly as given (HTTP clients normalise some)."""
    from support import raw_request

    return await raw_request(gw.port, method, target, headers=headers)


@pytest.mark.parametrize("target", ["/api/show/", "//api/show", "///api/show//",
                                    "/api/show/?x=1"])
async def test_trailing_and_doubled_leading_slashes(api: Any, target: str) -> None:
    _, canonical, _ = await _get(api, "/api/show")
    status, _, body = await _raw(api, "GET", target)
    assert status == 200 and orjson.loads(body) == canonical


async def test_near_miss_spellings_keep_parameters_and_verbs(api: Any, sandbox: Any) -> None:
    job = sandbox.store.one("SELECT * FROM job WHERE name = 'testing-sh010-jdoe_lighting'")
    _, expected, _ = await _get(api, f"/api/job/{job['id']}")
    for target in (f"/api/job/{job['id']}/", f"//api/job/{job['id']}"):
        status, _, body = await _raw(api, "GET", target)
        assert status == 200 and orjson.loads(body) == expected
    status, _, body = await _raw(api, "GET", f"//api/job/{job['id']}/layer/")
    assert status == 200 and len(orjson.loads(body)["layers"]) > 0
    status, _, body = await _raw(api, "GET", "/api/show/testing/job/?state=BOGUS")
    assert status == 400 and orjson.loads(body)["code"] == 3
    status, headers, body = await _raw(api, "POST", "/api/show/")
    assert status == 405 and "GET" in headers["allow"] and orjson.loads(body)["code"] == 12
    status, _, body = await _raw(api, "DELETE", f"/api/job/{job['id']}/")
    assert status == 200 and orjson.loads(body)["success"] is True


@pytest.mark.parametrize("target", ["/api", "/api/", "/api/show//job", "/api/job//layer",
                                    "/api/job/", "/api/hosts"])
async def test_other_paths_under_api_are_404(api: Any, target: str) -> None:
    status, headers, body = await _raw(api, "GET", target)
    data = orjson.loads(body)
    assert status == 404 and headers["content-type"] == "application/json"
    assert data["code"] == 5 and "/openapi.json" in data["message"]


async def test_a_package_named_api_still_reaches_the_rpc_routes(api: Any) -> None:
    status, _, body = await _raw(api, "POST", "//api.Thing/Do")
    assert status == 404 and "unknown service api.Thing" in orjson.loads(body)["message"]


@pytest.mark.parametrize("path", ["/api/show", "/api/host", "/api/show/testing/job",
                                  "/api/job/nope", "/api/show/testing/job?state=x"])
async def test_head_is_get_without_a_body(api: Any, path: str) -> None:
    get = await api.get(path)
    get_body = await get.read()
    head = await api.head(path)
    assert head.status == get.status and await head.read() == b""
    assert head.headers["Content-Type"] == "application/json"
    # what GET would send for the same request: gzipped above GZIP_MIN_BYTES
    assert head.headers.get("Content-Encoding") == get.headers.get("Content-Encoding")
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    if "Content-Encoding" not in get.headers:
        assert int(head.headers["Content-Length"]) == len(get_body)


@pytest.mark.parametrize("encoding", ["gzip", "br, gzip;q=0.5", "*", "identity;q=0"])
async def test_accept_encoding_gets_a_reply_the_client_can_read(api: Any,
                                                                encoding: str) -> None:
    resp = await api.get("/api/show", headers={"Accept-Encoding": encoding})
    assert resp.status == 200
    assert resp.headers.get("Content-Encoding", "identity") in ("identity", "gzip")
    assert list(orjson.loads(await resp.read())) == ["shows"]  # the client decodes gzip


async def test_unknown_query_parameters_are_ignored(api: Any) -> None:
    for path in ("/api/show", "/api/host", "/api/show/testing/job"):
        _, plain, _ = await _get(api, path)
        sep = "&" if "?" in path else "?"
        status, data, _ = await _get(api, f"{path}{sep}limit=5&page=2&foo")
        assert status == 200 and data.keys() == plain.keys()
    status, data, _ = await _get(api, "/api/host?state=UP&limit=1")
    assert status == 200 and all(h["state"] == "UP" for h in data["hosts"])


BAD_IDS = ["%00", "%FF", "%ED%A0%80", "%F0%9F%8E%AC", "a%2Fb", "..", "%2E%2E", "%20",
           "'%20OR%201=1--", "%25", "x" * 4000, "%C3%A9t%C3%A9", "%7B%7D", "a;b", "%0D%0A"]


async def test_bad_path_parameters_are_404_never_500(api: Any) -> None:
    for raw_id in BAD_IDS:
        for method, target in (("GET", f"/api/job/{raw_id}"), ("DELETE", f"/api/job/{raw_id}"),
                               ("GET", f"/api/job/{raw_id}/layer"),
                               ("GET", f"/api/show/{raw_id}/job"),
                               ("GET", f"/api/show/{raw_id}/job?state=RUNNING")):
            status, headers, body = await _raw(api, method, target)
            data = orjson.loads(body)
            assert status == 404, (target, status, data)
            assert set(data) == {"error", "code", "message", "details"} and data["code"] == 5
            assert headers["content-type"] == "application/json"


async def test_bad_query_values_are_400(api: Any) -> None:
    for query in ("state=%00", "state=%FF", "state=%ED%A0%80", "state=UP%00",
                  "state=" + "U" * 5000, "state"):
        for path in ("/api/host", "/api/show/testing/job"):
            status, _, body = await _raw(api, "GET", f"{path}?{query}")
            assert status == 400 and orjson.loads(body)["code"] == 3, (path, query)


async def test_every_error_matches_the_seed_error_schema(api: Any) -> None:
    """The seed's ErrorResponse (error: string, code: integer), via openapi-schema-validator."""
    from pathlib import Path

    import yaml
    from openapi_schema_validator import OAS30Validator

    text = (Path(__file__).parent / "data" / "openapi_seed.txt").read_text()
    schema = yaml.safe_load(text[text.index("openapi: 3.0.3"):])["components"]["schemas"][
        "ErrorResponse"]
    validator = OAS30Validator(schema)
    for method, target in (("GET", "/api/job/nope"), ("GET", "/api/show/nope/job"),
                           ("GET", "/api/host?state=x"), ("PUT", "/api/show"),
                           ("GET", "/api/nothing"), ("GET", "/api/job/nope/layer")):
        status, _, body = await _raw(api, method, target)
        data = orjson.loads(body)
        assert status >= 400 and data["error"] == data["message"]
        validator.validate(data)
        assert set(schema["properties"]) <= set(data)
