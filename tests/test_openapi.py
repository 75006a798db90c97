"""The generated OpenAPI document, and property-based runs against the live gateway.

openapi-spec-validator checks the document. Its schemas are checked against
what the gateway really prints: messages of every reachable type (OpenCue's
and two foreign proto sets), empty, filled and with odd values, go through the
transcoder and must validate with openapi-schema-validator, a strict OpenAPI
3.0 validator. schemathesis then generates requests from the seed's own spec
(``/api/...``) and from our generated spec (the ``/api`` operations and a
handful of RPC routes) and sends them to a gateway process in front of the
sandbox, checking that nothing fails on the gateway's side and that every
reply conforms to its schema; real objects are checked the same way, and a
deliberately wrong spec must make those runs fail.
"""
from __future__ import annotations

import copy
import gzip
import math
import re
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import jwt
import orjson
import pytest
import schemathesis
import yaml
from google.protobuf import duration_pb2
from google.protobuf.descriptor import FieldDescriptor as T
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, settings
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)

from gateway import openapi
from gateway.app import STATE
from gateway.config import Config
from gateway.descriptors import Descriptors, load_bundled, load_file
from gateway.openapi import document, document_bytes
from gateway.routes import MethodTable
from gateway.transcode import is_repeated
from support import GatewayProcess

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
SECRET = "openapi-test-secret-0123456789abcdef"
# schemathesis runs are bounded: examples per operation, a deadline per example,
# a timeout per request (and the gateway's own deadline on each Cuebot call)
EXAMPLES = 25
DEADLINE = timedelta(seconds=10)
REQUEST_TIMEOUT = 8.0


def _token() -> str:
    return jwt.encode({"sub": "schemathesis", "exp": int(time.time()) + 3600}, SECRET,
                      algorithm="HS256")


def seed_spec() -> dict[str, Any]:
    """The user's OpenAPI seed: the YAML after the page's header lines."""
    text = (DATA / "openapi_seed.txt").read_text()
    return yaml.safe_load(text[text.index("openapi: 3.0.3"):])


def _table(descs: Descriptors, **kw: Any) -> MethodTable:
    return MethodTable.build(descs, lambda path: None, **kw)  # type: ignore[arg-type]


def _compile(tmp_path: Path, folder: Path, name: str) -> Descriptors:
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path / f"{name}.binpb"
    include = Path(grpc_tools.__file__).parent / "_proto"
    assert protoc.main(["protoc", f"-I{folder}", f"-I{include}", "--include_imports",
                        f"--descriptor_set_out={out}", name]) == 0
    return load_file(out)


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
    assert all(list(doc["paths"][p]) == ["post"] for p in rpc_paths)
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
    ids = [o["operationId"] for ops in doc["paths"].values() for o in ops.values()]
    assert len(ids) == len(set(ids))


def test_docs_order_resources_first_then_rpcs_by_service(bundled: Descriptors) -> None:
    """Swagger UI follows document order: a newcomer sees /api first, not below 290 RPCs."""
    table = _table(bundled, exclude=Config().exclude_services)
    doc = document(table)
    paths = list(doc["paths"])
    api = [p for p in paths if p.startswith("/api/")]
    assert paths[:len(api)] == api and len(api) == 5
    assert [t["name"] for t in doc["tags"]] == ["Resources", *table.services]
    services = [doc["paths"][p]["post"]["tags"][0] for p in paths[len(api):]]
    assert services == sorted(services)  # each service's RPCs together


def test_every_rpc_has_a_summary_with_its_types(bundled: Descriptors) -> None:
    doc = document(_table(bundled))
    ops = [v["post"] for p, v in doc["paths"].items() if not p.startswith("/api/")]
    assert ops and all(o["summary"] for o in ops)
    get_shows = doc["paths"]["/show.ShowInterface/GetShows"]["post"]
    assert get_shows["summary"] == "show.ShowGetShowsRequest → show.ShowGetShowsResponse"
    assert "description" not in get_shows  # the bundled set carries no comments


COMMENTED = """\
syntax = "proto3";
package notes;
message Req { string name = 1; }
message Rep { string id = 1; }

// Looks things up.
service Finder {
    // Finds a thing by its <name>.
    //
    // Answers NOT_FOUND when there is none; `<name>` is matched exactly.
    rpc Find(Req) returns (Rep);
    rpc Plain(Req) returns (Rep);  // said after it
    rpc Bare(Req) returns (Rep);
}
"""


def test_summaries_carry_proto_comments_when_the_source_has_them(tmp_path: Path) -> None:
    from gateway.descriptors import load_proto_path

    (tmp_path / "notes.proto").write_text(COMMENTED)
    doc = document(_table(load_proto_path(tmp_path)))
    validate(doc)
    find = doc["paths"]["/notes.Finder/Find"]["post"]
    assert find["summary"] == "notes.Req → notes.Rep: Finds a thing by its &lt;name&gt;."
    assert find["description"] == ("Finds a thing by its &lt;name&gt;.\n\nAnswers NOT_FOUND "
                                   "when there is none; `<name>` is matched exactly.")
    assert doc["paths"]["/notes.Finder/Plain"]["post"]["summary"] == (
        "notes.Req → notes.Rep: said after it")
    assert doc["paths"]["/notes.Finder/Bare"]["post"]["summary"] == "notes.Req → notes.Rep"
    assert {"name": "notes.Finder", "description": "Looks things up."} in doc["tags"]


def test_placeholders_in_the_description_are_code_not_html(bundled: Descriptors) -> None:
    """Swagger UI renders Markdown with HTML: a bare <Method> would vanish as a tag."""
    text = document(_table(bundled))["info"]["description"]
    assert "`POST /<package.Service>/<Method>`" in text
    outside_code = "".join(text.split("`")[::2])
    assert "<" not in outside_code and ">" not in outside_code


NULL_ONLY = {"type": "object", "nullable": True, "enum": [None]}


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
    # enums by name; a number only for a value the descriptors do not name
    by_name, by_number = props["state"]["oneOf"]
    assert by_name == {"type": "string",
                       "enum": [v.name for v in job_pb2.FrameState.DESCRIPTOR.values]}
    assert by_number["type"] == "integer"
    assert props["usedMemory"]["type"] == "string"            # int64 as a string
    assert props["usedMemory"]["format"] == "int64"
    assert props["retryCount"]["type"] == "integer"           # int32 as a number
    # an unset message prints as null, which a strict 3.0 validator must accept
    assert props["frameStateDisplayOverride"] == {"anyOf": [
        {"$ref": "#/components/schemas/job.FrameStateDisplayOverride"}, NULL_ONLY]}
    assert schemas["job.FrameSeq"]["properties"]["frames"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/job.Frame"}}
    assert schemas["job.Job"]["properties"]["jobStats"] == {"anyOf": [
        {"$ref": "#/components/schemas/job.JobStats"}, NULL_ONLY]}
    # proto3 optional: not printed when unset, so not required
    assert "uid" in schemas["job.Job"]["properties"]
    assert "uid" not in schemas["job.Job"]["required"]
    # requests: nothing required, enums by number too, int64 as number or string
    req = schemas["job.FrameSearchCriteria-in"]
    assert "required" not in req
    crit = schemas["job.JobGetJobsRequest-in"]["properties"]["r"]["anyOf"][0]["$ref"]
    assert crit == "#/components/schemas/job.JobSearchCriteria-in"
    assert {s["type"] for s in schemas["job.Frame-in"]["properties"]["usedMemory"]["oneOf"]} \
        == {"string", "integer"}
    # the seed's resource schemas, with every key required
    assert schemas["Job"]["required"] == ["id", "name", "show", "state", "priority",
                                          "totalFrames", "doneFrames", "runningFrames",
                                          "deadFrames", "waitingFrames"]
    assert schemas["ErrorResponse"]["required"] == ["error", "code", "message", "details"]


def _walk_refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        out = [schema["$ref"]] if "$ref" in schema else []
        return out + [r for v in schema.values() for r in _walk_refs(v)]
    if isinstance(schema, list):
        return [r for v in schema for r in _walk_refs(v)]
    return []


def test_resource_operations_mirror_the_seed(bundled: Descriptors) -> None:
    """Same operations, parameters, status codes and schemas (names, types, enums, nesting).

    Ours may only add: ``required`` lists, descriptions, an enum where the
    seed has a free string (layer state), the error replies it omits.
    """
    seed = seed_spec()
    ours = document(_table(bundled))
    for path, ops in seed["paths"].items():
        assert set(ours["paths"][path]) == set(ops), path
        for verb, op in ops.items():
            mine = ours["paths"][path][verb]
            assert mine["operationId"] == op["operationId"]
            strip = lambda ps: [(p["name"], p["in"], p["required"], p["schema"])  # noqa: E731
                                for p in ps]
            assert strip(mine.get("parameters", [])) == strip(op.get("parameters", []))
            assert set(op["responses"]) - {"500"} <= set(mine["responses"])
            for code, resp in op["responses"].items():
                mine_resp = mine["responses"].get(code, mine["responses"]["default"])
                assert (mine_resp["content"]["application/json"]["schema"]
                        == resp["content"]["application/json"]["schema"]), (path, verb, code)
    seed_schemas, our_schemas = seed["components"]["schemas"], ours["components"]["schemas"]
    for name, schema in seed_schemas.items():
        mine = our_schemas[name]
        assert mine["type"] == schema["type"] == "object"
        keys = list(schema["properties"])
        if name == "ErrorResponse":  # ours adds message and details (the envelope)
            assert list(mine["properties"])[:len(keys)] == keys
        else:
            assert list(mine["properties"]) == keys == mine["required"], name
        for key, prop in schema["properties"].items():
            got = mine["properties"][key]
            assert got.get("type") == prop.get("type"), (name, key)
            if "enum" in prop:
                assert got["enum"] == prop["enum"], (name, key)
            assert _walk_refs(got) == _walk_refs(prop), (name, key)
            if prop.get("type") == "array":
                assert got["items"] == prop["items"]
    assert our_schemas["Layer"]["properties"]["state"]["enum"]  # documented where seed is silent


def test_document_follows_the_loaded_descriptors(bundled: Descriptors) -> None:
    """A new table (as after a reload) gets its own document; the same table, the cached one."""
    a = _table(bundled)
    assert document_bytes(a) is document_bytes(a)
    b = _table(bundled, include=["show.*"])
    doc = orjson.loads(document_bytes(b))
    assert {p.split("/")[1] for p in doc["paths"] if not p.startswith("/api/")} == {
        "show.ShowInterface"}
    assert set(doc["paths"]) & {"/api/show", "/api/host"} == {"/api/show"}  # no host RPCs
    validate(doc)
    assert version_of(doc) == bundled.version


async def test_no_request_builds_the_document(gateway: Any, bundled: Descriptors,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Built at start-up; after a table swap (a reload) once, on its first use."""
    built: list[MethodTable] = []
    real = openapi.document

    def counting(table: MethodTable) -> dict[str, Any]:
        built.append(table)
        return real(table)

    monkeypatch.setattr(openapi, "document", counting)
    for _ in range(3):
        assert (await gateway.get("/openapi.json")).status == 200
    assert built == []
    state = gateway.app[STATE]
    state.table = _table(bundled, include=["job.*"])
    for _ in range(3):
        doc = orjson.loads(await (await gateway.get("/openapi.json")).read())
    assert built == [state.table]
    assert {p.split("/")[1].split(".")[0] for p in doc["paths"]} == {"job", "api"}


def version_of(doc: dict[str, Any]) -> str:
    return re.search(r"version ([0-9a-f]+)", doc["info"]["description"]).group(1)


def test_foreign_descriptors(tmp_path: Path) -> None:
    """Any proto set works: maps, oneofs, well-known types, custom JSON names."""
    doc = document(_table(_compile(tmp_path, TESTS / "protos", "demo.proto")))
    validate(doc)
    assert doc["paths"] and all(p.startswith("/demo.") for p in doc["paths"])
    schemas = doc["components"]["schemas"]
    every = schemas["demo.Everything"]["properties"]
    assert every["i64"]["type"] == "string" and every["u32"]["maximum"] == 2**32 - 1
    assert every["when"] == {"type": "string", "format": "date-time", "nullable": True}
    assert every["byNum"]["additionalProperties"] == {"$ref": "#/components/schemas/demo.Inner"}
    assert "renamed" in every and "custom" not in every
    required = schemas["demo.Everything"]["required"]
    assert not {"pickText", "pickInner", "pickNum", "maybe"} & set(required)


def test_shapes_opencue_lacks(tmp_path: Path) -> None:
    """Recursion, well-known types, Empty as a whole request, NullValue."""
    doc = document(_table(_compile(tmp_path, DATA, "openapi_shapes.proto")))
    validate(doc)
    schemas = doc["components"]["schemas"]
    tree = schemas["shapes.Tree"]["properties"]
    assert tree["children"]["items"] == {"$ref": "#/components/schemas/shapes.Tree"}
    assert tree["parent"] == {"anyOf": [{"$ref": "#/components/schemas/shapes.Tree"}, NULL_ONLY]}
    assert tree["byName"]["additionalProperties"] == {"$ref": "#/components/schemas/shapes.Tree"}
    assert tree["kinds"]["additionalProperties"]["oneOf"][0]["enum"] == [
        "KIND_UNSPECIFIED", "LEAF", "BRANCH"]
    assert tree["weight"]["type"] == "string" and "weight" not in schemas["shapes.Tree"][
        "required"]
    known = schemas["shapes.Known"]["properties"]
    assert known["took"]["type"] == "string" and known["mask"]["type"] == "string"
    assert known["doc"]["type"] == "object" and known["list"]["type"] == "array"
    assert known["value"] == {}                             # any JSON value, null included
    assert known["i64"] == {"type": "string", "format": "int64", "nullable": True}
    assert known["d"]["anyOf"][1] == NULL_ONLY               # number, NaN/Infinity, or null
    assert known["counters"]["additionalProperties"]["format"] == "int64"
    assert schemas["shapes.Nothing"]["properties"]["null"] == NULL_ONLY
    ping = doc["paths"]["/shapes.Shapes/Ping"]["post"]
    assert ping["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}


# ---------------------------------------------------------------------------
# every reply the transcoder can print conforms to its schema
# ---------------------------------------------------------------------------
def _scalar(f: Any, variant: str) -> Any:
    """A value for field ``f``: plain ("full") or at the edges of its type ("odd")."""
    t, odd = f.type, variant == "odd"
    if t in (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32):
        return -(2**31) if odd else 7
    if t in (T.TYPE_UINT32, T.TYPE_FIXED32):
        return 2**32 - 1 if odd else 7
    if t in (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64):
        return -(2**63) if odd else 2**53 + 1
    if t in (T.TYPE_UINT64, T.TYPE_FIXED64):
        return 2**64 - 1 if odd else 7
    if t in (T.TYPE_FLOAT, T.TYPE_DOUBLE):
        return (math.nan if f.number % 2 else -math.inf) if odd else 1.5
    if t == T.TYPE_BOOL:
        return True
    if t == T.TYPE_STRING:
        return "é\x00\U0001f3ac" if odd else "x"
    if t == T.TYPE_BYTES:
        return b"\xff\x00\xfb"
    if t == T.TYPE_ENUM:
        if f.enum_type.full_name == "google.protobuf.NullValue":
            return 0
        return 99 if odd else f.enum_type.values[-1].number  # 99: unknown to the descriptors
    raise AssertionError(f"no value for {f.full_name}")


def _fill_known(msg: Message, variant: str) -> bool:
    """Well-known types whose JSON form constrains their values; False if not one."""
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        msg.seconds, msg.nanos = 1700000000, 5000
    elif name == "google.protobuf.Duration":
        msg.seconds, msg.nanos = -3, -500
    elif name == "google.protobuf.FieldMask":
        msg.paths.extend(["a.b_c", "d"])
    elif name == "google.protobuf.Any":
        msg.type_url = "type.googleapis.com/google.protobuf.Duration"
        msg.value = duration_pb2.Duration(seconds=2).SerializeToString()
    elif name == "google.protobuf.Value":
        msg.string_value = "v"
    elif name == "google.protobuf.ListValue":
        msg.values.add().bool_value = True
        msg.values.add().null_value = 0
    elif name == "google.protobuf.Struct":
        msg.fields["k"].number_value = 2
    elif name.startswith("google.protobuf.") and name.endswith("Value"):
        value = _scalar(msg.DESCRIPTOR.fields_by_name["value"], variant)
        msg.value = math.inf if isinstance(value, float) and math.isnan(value) else value
    else:
        return False
    return True


def _fill(msg: Message, variant: str, depth: int = 0) -> None:
    """Set every field (one member of each real oneof), recursing three levels deep."""
    if _fill_known(msg, variant) or depth > 2:
        return
    d = msg.DESCRIPTOR
    chosen = {o.fields[0 if variant == "full" else -1].name for o in d.oneofs
              if len(o.fields) > 1}
    for f in d.fields:
        o = f.containing_oneof
        if o is not None and len(o.fields) > 1 and f.name not in chosen:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            kf = f.message_type.fields_by_name["key"]
            vf = f.message_type.fields_by_name["value"]
            entries = getattr(msg, f.name)
            keys = ["k0", "k1"] if kf.type == T.TYPE_STRING else (
                [True, False] if kf.type == T.TYPE_BOOL else [_scalar(kf, "odd"), 7])
            for k in keys:
                if vf.message_type is not None:
                    _fill(entries[k], variant, depth + 1)
                else:
                    entries[k] = _scalar(vf, variant)
        elif is_repeated(f):
            items = getattr(msg, f.name)
            for _ in range(2):
                if f.message_type is not None:
                    _fill(items.add(), variant, depth + 1)
                else:
                    items.append(_scalar(f, variant))
        elif f.message_type is not None:
            sub = getattr(msg, f.name)
            sub.SetInParent()
            _fill(sub, variant, depth + 1)
        else:
            setattr(msg, f.name, _scalar(f, variant))


def _validators(doc: dict[str, Any]) -> Callable[[str, Any], list[str]]:
    """Errors of ``instance`` against component ``name``, by a strict OpenAPI 3.0 validator."""
    registry = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT4))
    cache: dict[str, OAS30Validator] = {}

    def errors(name: str, instance: Any) -> list[str]:
        if name not in cache:
            cache[name] = OAS30Validator({"$ref": f"urn:doc#/components/schemas/{name}"},
                                         registry=registry, format_checker=oas30_format_checker)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in cache[name].iter_errors(instance)]

    return errors


def _conformance_failures(descs: Descriptors, doc: dict[str, Any] | None = None,
                          skip: tuple[str, ...] = ()) -> list[str]:
    """Every message type with a schema, printed by the transcoder, checked against it.

    What the gateway prints must also be something it documents as input.
    """
    table = _table(descs)
    doc = doc if doc is not None else document(table)
    schemas = doc["components"]["schemas"]
    errors = _validators(doc)
    names = sorted({n.removesuffix("-in") for n in schemas if "." in n} - set(skip))
    assert names
    failures = []
    for name in names:
        codec = table.transcoder.codec(descs.pool.FindMessageTypeByName(name))
        for variant in ("empty", "full", "odd"):
            msg = codec.cls()
            if variant != "empty":
                _fill(msg, variant)
            printed = orjson.loads(codec.to_json(msg.SerializeToString()))
            for schema in (name, f"{name}-in"):
                if schema in schemas:
                    failures += [f"{schema} ({variant}) {e}" for e in errors(schema, printed)]
    return failures


def test_every_opencue_reply_conforms(bundled: Descriptors) -> None:
    assert _conformance_failures(bundled) == []


def test_foreign_replies_conform(tmp_path: Path) -> None:
    demo = _compile(tmp_path, TESTS / "protos", "demo.proto")
    assert _conformance_failures(demo) == []
    shapes = _compile(tmp_path, DATA, "openapi_shapes.proto")
    assert _conformance_failures(shapes, skip=("shapes.Nothing",)) == []


def test_null_value_fields_print_as_null(tmp_path: Path) -> None:
    shapes = _compile(tmp_path, DATA, "openapi_shapes.proto")
    assert _conformance_failures(shapes) == []


def test_a_wrong_schema_is_noticed(bundled: Descriptors) -> None:
    """The conformance check can fail: int64 as a number, or null refused, is caught."""
    doc = document(_table(bundled))
    wrong = copy.deepcopy(doc)
    wrong["components"]["schemas"]["job.Frame"]["properties"]["usedMemory"] = {
        "type": "integer"}
    wrong["components"]["schemas"]["job.Job"]["properties"]["jobStats"] = {
        "allOf": [{"$ref": "#/components/schemas/job.JobStats"}], "nullable": True}
    failures = _conformance_failures(bundled, wrong)
    assert any(f.startswith("job.Frame (full) usedMemory:") for f in failures)
    assert any(f.startswith("job.Job (empty) jobStats:") for f in failures)


# ---------------------------------------------------------------------------
# serving it
# ---------------------------------------------------------------------------
async def test_gzip_etag_and_head(gateway: Any) -> None:
    plain = await gateway.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    body = await plain.read()
    assert "Content-Encoding" not in plain.headers and plain.headers["Vary"] == "Accept-Encoding"
    zipped = await gateway.get("/openapi.json", headers={"Accept-Encoding": "br, gzip"},
                               auto_decompress=False)
    raw = await zipped.read()
    assert zipped.headers["Content-Encoding"] == "gzip" and len(raw) < len(body) / 4
    assert gzip.decompress(raw) == body
    assert zipped.headers["ETag"] != plain.headers["ETag"]
    refused = await gateway.get("/openapi.json", headers={"Accept-Encoding": "gzip;q=0, br"})
    assert "Content-Encoding" not in refused.headers
    again = await gateway.get("/openapi.json", headers={
        "Accept-Encoding": "identity", "If-None-Match": plain.headers["ETag"]})
    assert again.status == 304 and await again.read() == b""
    stale = await gateway.get("/openapi.json", headers={
        "Accept-Encoding": "identity", "If-None-Match": '"something-else"'})
    assert stale.status == 200 and await stale.read() == body
    head = await gateway.head("/openapi.json", headers={"Accept-Encoding": "identity"})
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(body)


async def test_docs_page(gateway: Any) -> None:
    page = await gateway.get("/docs")
    html = await page.text()
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'url: "/openapi.json"' in html
    for asset in re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', html):
        resp = await gateway.get(asset)
        assert resp.status == 200 and len(await resp.read()) > 1000, asset


# ---------------------------------------------------------------------------
# property-based runs against a live gateway in front of the sandbox
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live() -> Iterator[GatewayProcess]:
    # RATE_LIMIT_RPS=0: a 429 would be an undocumented status for the seed's spec
    gw = GatewayProcess("--sandbox", env={"JWT_SECRET": SECRET, "RATE_LIMIT_RPS": "0",
                                          "GRPC_TIMEOUT": "5"})
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
    doc = document(_table(load_bundled()))
    doc["paths"] = {p: v for p, v in doc["paths"].items()
                    if p in RPC_SAMPLE or p.startswith("/api/")}
    return doc


SEED_OPS = _operations(seed_spec())
GENERATED_OPS = _operations(_generated_sample())


def _fetch(live: GatewayProcess, path: str, token: bool = True) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {_token()}"} if token else {}
    req = urllib.request.Request(f"{live.url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_live_document_is_the_generated_one(live: GatewayProcess) -> None:
    status, served = _fetch(live, "/openapi.json", token=False)
    assert status == 200
    assert served == orjson.dumps(document(_table(
        load_bundled(), exclude=Config().exclude_services)))


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/docs/static/swagger-ui.css",
                                  "/docs/static/swagger-ui-bundle.js"])
def test_the_description_needs_no_token(live: GatewayProcess, path: str) -> None:
    status, body = _fetch(live, path, token=False)
    assert status == 200 and body


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


def _check(case: Any, live: GatewayProcess) -> Any:
    """Send ``case``; fail unless the reply is sane and conforms to the operation's schema."""
    response = case.call(base_url=live.url, headers={"Authorization": f"Bearer {_token()}"},
                         timeout=REQUEST_TIMEOUT)
    gateway_did_not_fail(response, case)
    case.validate_response(response, checks=CHECKS, excluded_checks=[not_a_server_error])
    return response


def _run(operation: Any, live: GatewayProcess) -> int:
    """Up to EXAMPLES generated requests against the live gateway; how many were sent."""
    sent = 0

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=DEADLINE, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def check(case: Any) -> None:
        nonlocal sent
        sent += 1
        _check(case, live)

    check()
    return sent


@pytest.mark.parametrize("label", sorted(SEED_OPS))
def test_seed_spec_against_the_gateway(label: str, live: GatewayProcess) -> None:
    assert _run(SEED_OPS[label], live) >= 1


@pytest.mark.parametrize("label", sorted(GENERATED_OPS))
def test_generated_spec_against_the_gateway(label: str, live: GatewayProcess) -> None:
    assert _run(GENERATED_OPS[label], live) >= 1


def _real_cases(live: GatewayProcess, ops: dict[str, Any]) -> list[Any]:
    """Requests on the sandbox's real shows, jobs and hosts (random ids are all 404s)."""
    shows = orjson.loads(_fetch(live, "/api/show")[1])["shows"]
    jobs = orjson.loads(_fetch(live, "/api/show/testing/job")[1])["jobs"]
    assert shows and jobs
    cases = [ops["GET /api/show"].Case(), ops["GET /api/host"].Case()]
    cases += [ops["GET /api/host"].Case(query={"state": s}) for s in ("UP", "DOWN", "REPAIR")]
    for show in shows:
        for key in (show["id"], show["name"]):
            cases.append(ops["GET /api/show/{show_id}/job"].Case(path_parameters={"show_id": key}))
            cases += [ops["GET /api/show/{show_id}/job"].Case(
                path_parameters={"show_id": key}, query={"state": s})
                for s in ("PENDING", "RUNNING", "FINISHED", "PAUSED")]
    for job in jobs:
        for label in ("GET /api/job/{job_id}", "GET /api/job/{job_id}/layer"):
            cases.append(ops[label].Case(path_parameters={"job_id": job["id"]}))
    return cases


@pytest.mark.parametrize("spec", ["seed", "generated"])
def test_real_objects_conform(live: GatewayProcess, spec: str) -> None:
    ops = SEED_OPS if spec == "seed" else GENERATED_OPS
    statuses = [_check(case, live).status_code for case in _real_cases(live, ops)]
    assert statuses and set(statuses) == {200}
    # and a kill (each run kills a job still unfinished)
    jobs = orjson.loads(_fetch(live, "/api/show/testing/job")[1])["jobs"]
    victim = next(j["id"] for j in jobs if j["state"] != "FINISHED")
    killed = _check(ops["DELETE /api/job/{job_id}"].Case(path_parameters={"job_id": victim}),
                    live)
    assert killed.status_code == 200 and killed.json()["success"] is True


def _spoil(label: str, change: Callable[[dict[str, Any]], Any]) -> Any:
    spec = seed_spec()
    change(spec)
    return _operations(spec)[label]


WRONG_SPECS = {
    "a type": ("GET /api/show", lambda s: s["components"]["schemas"]["Show"]["properties"][
        "defaultMinCores"].update(type="string")),
    "a status code": ("GET /api/show", lambda s: s["paths"]["/api/show"]["get"][
        "responses"].pop("200")),
    "an enum": ("GET /api/host", lambda s: s["components"]["schemas"]["Host"]["properties"][
        "lock"].update(enum=["UNHEARD_OF"])),
    "a required key": ("GET /api/show", lambda s: s["components"]["schemas"]["Show"].update(
        required=["ownerEmail"])),
}


@pytest.mark.parametrize("what", sorted(WRONG_SPECS))
def test_a_wrong_spec_fails_the_run(live: GatewayProcess, what: str) -> None:
    """The runs above can fail: a spec wrong in one place makes the same run raise."""
    from schemathesis.core.failures import FailureGroup

    label, change = WRONG_SPECS[what]
    with pytest.raises(FailureGroup) as info:  # a BaseExceptionGroup, not an Exception
        _run(_spoil(label, change), live)
    assert {type(e).__name__ for e in info.value.exceptions} <= {
        "JsonSchemaError", "UndefinedStatusCode"}, info.value.exceptions
