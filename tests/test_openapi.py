"""The generated OpenAPI document, and property-based runs against the live gateway.

openapi-spec-validator checks the document; schemathesis then generates
requests from the seed's own spec (``/api/...``) and from our generated spec
(a handful of RPC routes) and sends them to a gateway process in front of the
sandbox, checking that nothing fails on the gateway's side and that every
reply conforms to its schema.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator

import jwt
import orjson
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)

from gateway.app import STATE
from gateway.config import Config
from gateway.descriptors import load_file
from gateway.openapi import document, document_bytes
from gateway.routes import MethodTable
from support import GatewayProcess

DATA = Path(__file__).resolve().parent / "data"
SECRET = "openapi-test-secret-0123456789abcdef"
# schemathesis runs are bounded: examples per operation and a deadline per example
EXAMPLES = 25


def _token() -> str:
    return jwt.encode({"sub": "schemathesis", "exp": int(time.time()) + 3600}, SECRET,
                      algorithm="HS256")


def seed_spec() -> dict[str, Any]:
    """The user's OpenAPI seed: the YAML after the page's header lines."""
    text = (DATA / "openapi_seed.txt").read_text()
    return yaml.safe_load(text[text.index("openapi: 3.0.3"):])


# ---------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------
async def test_document_is_valid_openapi(gateway: Any) -> None:
    resp = await gateway.get("/openapi.json")
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
    doc = orjson.loads(await resp.read())
    validate(doc)
    assert doc["openapi"] == "3.0.3"
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert doc["security"] == [{"bearerAuth": []}]


async def test_one_path_per_exposed_rpc_plus_the_resources(gateway: Any) -> None:
    table = gateway.app[STATE].table
    doc = orjson.loads(await (await gateway.get("/openapi.json")).read())
    rpc_paths = {p for p in doc["paths"] if not p.startswith("/api/")}
    assert rpc_paths == set(table.routes)
    assert not any(p.startswith(("/rqd.", "/report.")) for p in doc["paths"])
    api = {p: sorted(ops) for p, ops in doc["paths"].items() if p.startswith("/api/")}
    assert api == {"/api/show": ["get"], "/api/show/{show_id}/job": ["get"],
                   "/api/job/{job_id}": ["delete", "get"], "/api/job/{job_id}/layer": ["get"],
                   "/api/host": ["get"]}
    op = doc["paths"]["/job.JobInterface/GetJobs"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/job.JobGetJobsRequest-in"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/job.JobGetJobsResponse"}


async def test_schemas_follow_the_proto3_json_mapping(gateway: Any) -> None:
    schemas = orjson.loads(await (await gateway.get("/openapi.json")).read())[
        "components"]["schemas"]
    frame = schemas["job.Frame"]
    # declaration order, lowerCamelCase, all required in replies
    from opencue_proto import job_pb2

    names = [f.json_name for f in job_pb2.Frame.DESCRIPTOR.fields]
    assert list(frame["properties"]) == names and frame["required"] == [
        f.json_name for f in job_pb2.Frame.DESCRIPTOR.fields if f.containing_oneof is None]
    props = frame["properties"]
    assert props["state"] == {"type": "string", "enum": [
        v.name for v in job_pb2.FrameState.DESCRIPTOR.values]}
    assert props["usedMemory"]["type"] == "string"            # int64 as a string
    assert props["usedMemory"]["format"] == "int64"
    assert props["retryCount"]["type"] == "integer"           # int32 as a number
    assert props["frameStateDisplayOverride"] == {
        "allOf": [{"$ref": "#/components/schemas/job.FrameStateDisplayOverride"}],
        "nullable": True}
    assert schemas["job.FrameSeq"]["properties"]["frames"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/job.Frame"}}
    # unset messages print as null
    job = schemas["job.Job"]["properties"]["jobStats"]
    assert job == {"allOf": [{"$ref": "#/components/schemas/job.JobStats"}], "nullable": True}
    # requests: nothing required, enums by number too, int64 as number or string
    req = schemas["job.FrameSearchCriteria-in"]
    assert "required" not in req
    crit = schemas["job.JobGetJobsRequest-in"]["properties"]["r"]["allOf"][0]["$ref"]
    assert crit == "#/components/schemas/job.JobSearchCriteria-in"
    # the seed's resource schemas, with every key required
    assert schemas["Job"]["required"] == ["id", "name", "show", "state", "priority",
                                          "totalFrames", "doneFrames", "runningFrames",
                                          "deadFrames", "waitingFrames"]
    assert schemas["ErrorResponse"]["required"] == ["error", "code", "message", "details"]


def test_document_follows_the_loaded_descriptors(bundled: Any) -> None:
    """A new table (as after a reload) gets its own document; the same table, the cached one."""
    def table(descs: Any, **kw: Any) -> MethodTable:
        return MethodTable.build(descs, lambda path: None, **kw)  # type: ignore[arg-type]

    a = table(bundled)
    assert document_bytes(a) is document_bytes(a)
    b = table(bundled, include=["show.*"])
    doc = orjson.loads(document_bytes(b))
    assert {p.split("/")[1] for p in doc["paths"] if not p.startswith("/api/")} == {
        "show.ShowInterface"}
    validate(doc)
    assert version_of(doc) == bundled.version


def version_of(doc: dict[str, Any]) -> str:
    return re.search(r"version ([0-9a-f]+)", doc["info"]["description"]).group(1)


def test_foreign_descriptors(tmp_path: Path) -> None:
    """Any proto set works: maps, oneofs, well-known types, recursion."""
    from grpc_tools import protoc

    protos = Path(__file__).resolve().parent / "protos"
    out = tmp_path / "set.binpb"
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    assert protoc.main(["protoc", f"-I{protos}", f"-I{include}", "--include_imports",
                        f"--descriptor_set_out={out}", "demo.proto"]) == 0
    descs = load_file(out)
    doc = document(MethodTable.build(descs, lambda path: None))  # type: ignore[arg-type]
    validate(doc)
    assert doc["paths"] and all(p.startswith("/demo.") for p in doc["paths"])
    schemas = doc["components"]["schemas"]
    every = schemas["demo.Everything"]["properties"]
    assert every["i64"]["type"] == "string" and every["u32"]["maximum"] == 2**32 - 1
    assert every["when"] == {"type": "string", "format": "date-time", "nullable": True}
    assert every["byNum"]["additionalProperties"] == {"$ref": "#/components/schemas/demo.Inner"}


# ---------------------------------------------------------------------------
# property-based runs against a live gateway in front of the sandbox
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live() -> Iterator[GatewayProcess]:
    gw = GatewayProcess("--sandbox", env={"JWT_SECRET": SECRET})
    try:
        yield gw.wait_ready()
    finally:
        gw.stop()


def _operations(spec: dict[str, Any]) -> dict[str, Any]:
    schema = schemathesis.openapi.from_dict(spec)
    return {op.label: op for op in (r.ok() for r in schema.get_all_operations())}


# RPCs that only read, with requests schemathesis can vary freely
RPC_SAMPLE = ("/show.ShowInterface/GetShows", "/show.ShowInterface/FindShow",
              "/job.JobInterface/GetJobs", "/facility.AllocationInterface/GetAll",
              "/service.ServiceInterface/GetDefaultServices", "/host.HostInterface/FindHost")


def _generated_sample() -> dict[str, Any]:
    """Our document for the bundled descriptors (what the live gateway serves), cut down."""
    from gateway.descriptors import load_bundled

    doc = document(MethodTable.build(load_bundled(), lambda path: None))  # type: ignore[arg-type]
    doc["paths"] = {p: doc["paths"][p] for p in RPC_SAMPLE}
    return doc


SEED_OPS = _operations(seed_spec())
GENERATED_OPS = _operations(_generated_sample())


def test_live_document_is_the_generated_one(live: GatewayProcess) -> None:
    import urllib.request

    from gateway.descriptors import load_bundled

    with urllib.request.urlopen(f"{live.url}/openapi.json", timeout=10) as r:
        served = r.read()
    assert served == orjson.dumps(document(MethodTable.build(
        load_bundled(), lambda path: None, exclude=Config().exclude_services)))


def gateway_did_not_fail(response: Any, case: Any) -> None:
    """5xx only as a mapped backend error: the envelope, carrying the backend's message.

    The gateway's own failures say ``internal error``; the /api operations
    never answer 5xx against a healthy sandbox.
    """
    if response.status_code < 500:
        return
    body = orjson.loads(response.content)
    assert set(body) == {"error", "code", "message", "details"}, body
    assert body["message"] != "internal error", f"gateway failure on {case.path}: {body}"
    assert not case.path.startswith("/api/"), f"{case.path} answered {response.status_code}"


CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _run(operation: Any, live: GatewayProcess) -> int:
    """Up to EXAMPLES generated requests against the live gateway; how many were sent."""
    sent = 0

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def check(case: Any) -> None:
        nonlocal sent
        response = case.call(base_url=live.url, headers={"Authorization": f"Bearer {_token()}"})
        sent += 1
        gateway_did_not_fail(response, case)
        case.validate_response(response, checks=CHECKS, excluded_checks=[not_a_server_error])

    check()
    return sent


@pytest.mark.parametrize("label", sorted(SEED_OPS))
def test_seed_spec_against_the_gateway(label: str, live: GatewayProcess) -> None:
    assert _run(SEED_OPS[label], live) >= 1


@pytest.mark.parametrize("label", sorted(GENERATED_OPS))
def test_generated_spec_against_the_gateway(label: str, live: GatewayProcess) -> None:
    assert _run(GENERATED_OPS[label], live) >= 1
