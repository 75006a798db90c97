"""Every example request of the REST reference, through the gateway, against the sandbox.

The reference (tests/data/rest_reference.md, the user's document) shows 81
``POST`` requests with JSON bodies. Each is replayed as written, after its
placeholder ids and names (``job-id-123``, ``myshow``…) are replaced with real
ones from the demo farm. The expected status is what Cuebot does with that
body: most succeed; some examples are wrong about the protos (a method that
does not exist -> 404, an object where the proto has a string -> 400, a
misspelt field silently dropped) or hit a Cuebot quirk (Allocation.Get wants
a name, Deed.GetHost always fails, Task RPCs look up by name) and fail the
way Cuebot fails. Every 200 reply is checked for the nesting the reference
shows (``{"shows":{"shows":[…]}}``) and for being complete, canonical JSON
(all fields present, as the Go gateway prints them).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from google.protobuf.descriptor import Descriptor

from gateway.app import STATE
from gateway.sandbox.store import new_id

REFERENCE = Path(__file__).resolve().parent / "data" / "rest_reference.md"
_EXAMPLE = re.compile(r"```http\nPOST (\S+)\n```\s*\n\*\*Request Body:\*\*\n```json\n(.*?)```"
                      r"(?:\s*\n\*\*Response:\*\*\n```json\n(.*?)```)?", re.S)
EXAMPLES = [(path, orjson.loads(body), orjson.loads(resp) if resp else None)
            for path, body, resp in _EXAMPLE.findall(REFERENCE.read_text())]

# Expected HTTP status per example (path, occurrence), when not 200.
NOT_OK = {
    ("/layer.LayerInterface/FindLayer", 0): 400,       # "job" is a string in the proto
    ("/layer.LayerInterface/Kill", 0): 404,            # no such method (KillFrames exists)
    ("/group.GroupInterface/FindGroup", 0): 400,       # "show" is a string in the proto
    ("/group.GroupInterface/SetMaxCores", 0): 500,     # "cores" is not a field: max 0 refused
    ("/owner.OwnerInterface/SetMaxCores", 0): 404,     # no such method
    ("/owner.OwnerInterface/TakeOwnership", 0): 400,   # "host" is a string in the proto
    ("/proc.ProcInterface/GetProc", 0): 404,           # no such method (GetProcs exists)
    ("/deed.DeedInterface/GetHost", 0): 500,           # Cuebot looks the deed id up as a host
    ("/facility.AllocationInterface/Get", 0): 404,     # Cuebot looks the id up as a name
    ("/facility.AllocationInterface/Find", 0): 404,    # "cloud" is not a full alloc name
    ("/facility.FacilityInterface/Get", 0): 404,       # no facility aws-us-west
    ("/facility.FacilityInterface/GetAllocations", 0): 501,  # unimplemented in Cuebot
    ("/subscription.SubscriptionInterface/Find", 0): 500,  # name must be facility.alloc.show
    ("/task.TaskInterface/Delete", 0): 500,            # Cuebot looks tasks up by name
    ("/task.TaskInterface/SetMinCores", 0): 500,
    ("/task.TaskInterface/ClearAdjustments", 0): 500,
}
DESTRUCTIVE = ("/Delete", "/Kill", "/Unbook")
# Placeholders that must mean something else in one example: Proc.Kill and
# Proc.Unbook each take a proc of their own (a killed proc is gone, as in Cuebot).
PER_EXAMPLE = {("/proc.ProcInterface/Unbook", 0): {"proc-id-ghi": "second-proc"}}


def _plan() -> list[tuple[str, int, dict, Any]]:
    """Examples with their occurrence index; destructive ones after the rest."""
    seen: dict[str, int] = {}
    out = []
    for path, body, resp in EXAMPLES:
        n = seen.get(path, 0)
        seen[path] = n + 1
        out.append((path, n, body, resp))
    return ([e for e in out if not e[0].endswith(DESTRUCTIVE)]
            + [e for e in out if e[0].endswith(DESTRUCTIVE)])


def _placeholders(sandbox: Any) -> dict[str, str]:
    """Real values for the reference's made-up ids and names."""
    s = sandbox.store
    one = lambda sql, *a: s.one(sql, a)[0]  # noqa: E731
    lighting = one("SELECT id FROM job WHERE name = 'testing-sh010-jdoe_lighting'")
    killed_frame = one("SELECT id FROM frame WHERE job_id = ? AND state = 'RUNNING' "
                       "ORDER BY number LIMIT 1", lighting)
    procs = s.all("SELECT id FROM proc WHERE frame_id != ? ORDER BY booked_time, id",
                  (killed_frame,))
    assert len(procs) >= 2
    with s.tx():  # a filter of its own for the action/matcher examples, and an override
        flt = new_id()
        s.insert("filter", id=flt, show_id="00000000-0000-0000-0000-000000000000",
                 name="second", type="MATCH_ANY", ord=2, enabled=1)
        action, matcher, override = new_id(), new_id(), new_id()
        s.insert("action", id=action, filter_id=flt, type="PAUSE_JOB")
        s.insert("matcher", id=matcher, filter_id=flt, subject="SHOT", type="IS", input="sh010")
        s.insert("service", id=override, show_id="00000000-0000-0000-0000-000000000000",
                 name="nuke", min_memory=4194304)
    return {
        "myshow": "testing",
        "myshow-shot001-comp": "testing-sh010-jdoe_lighting",
        "job-id-123": lighting,
        "frame-id-456": killed_frame,
        "layer-id-789": one("SELECT id FROM layer WHERE job_id = ? AND name = 'comp'", lighting),
        "comp_layer": "comp",
        "host-id-abc": one("SELECT id FROM host WHERE name = 'ws-asmith.studio.local'"),
        "render-node-01": "rn001.farm.studio.local",
        "group-id-def": "A0000000-0000-0000-0000-000000000000",
        "artist1": "jdoe",
        # procs of other frames than the one the Frame.Kill example kills
        "proc-id-ghi": procs[0][0],
        "second-proc": procs[1][0],
        "deed-id-jkl": one("SELECT id FROM deed"),
        "alloc-id-123": "00000000-0000-0000-0000-000000000000",
        "facility-id-456": "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1",
        "filter-id-789": one("SELECT id FROM filter WHERE name = 'auto_priority'"),
        "action-id-abc": action,
        "matcher-id-def": matcher,
        "depend-id-ghi": one("SELECT id FROM depend"),
        "sub-id-jkl": "00000000-0000-0000-0000-000000000003",
        "limit-id-mno": one("SELECT id FROM limit_record WHERE name = 'nuke_license'"),
        "service-id-pqr": one("SELECT id FROM service WHERE name = 'nuke' AND show_id IS NULL"),
        "override-id-vwx": override,
        "task-id-yz1": one("SELECT id FROM task"),
    }


def _substitute(value: Any, table: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, table) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, table) for v in value]
    if isinstance(value, str):
        return table.get(value, value)
    return value


def _check_documented_shape(example: Any, actual: Any, desc: Descriptor, where: str) -> None:
    """Every key the reference shows that is a real field is there, nested the same way."""
    if not isinstance(example, dict):
        return
    assert isinstance(actual, dict), f"{where}: expected an object"
    for key, ex_value in example.items():
        field = next((f for f in desc.fields if key in (f.json_name, f.name)), None)
        if field is None:
            continue  # the reference shows a field the protos do not have
        assert field.json_name in actual, f"{where}.{field.json_name} missing"
        value = actual[field.json_name]
        if field.message_type is None:
            continue
        if isinstance(ex_value, list) and ex_value:
            assert isinstance(value, list) and value, f"{where}.{key}: expected a non-empty list"
            _check_documented_shape(ex_value[0], value[0], field.message_type, f"{where}.{key}[0]")
        elif isinstance(ex_value, dict):
            assert value is not None, f"{where}.{key} is null"
            _check_documented_shape(ex_value, value, field.message_type, f"{where}.{key}")


async def test_every_reference_example(sandbox, make_gateway):
    gw = await make_gateway(cuebot_endpoint=sandbox.endpoint)
    table = gw.app[STATE].table
    values = _placeholders(sandbox)
    assert len(EXAMPLES) == 81
    failures = []
    for path, n, body, documented in _plan():
        table_here = {**values, **{k: values.get(v, v)
                                   for k, v in PER_EXAMPLE.get((path, n), {}).items()}}
        resp = await gw.post(path, data=orjson.dumps(_substitute(body, table_here)))
        raw = await resp.read()
        expected = NOT_OK.get((path, n), 200)
        if resp.status != expected:
            failures.append(f"{path}#{n}: {resp.status} (expected {expected}): {raw[:300]!r}")
            continue
        data = orjson.loads(raw)
        assert resp.headers["Content-Type"] == "application/json"
        if resp.status != 200:
            assert set(data) == {"error", "code", "message", "details"}
            continue
        route = table.lookup(path)
        # complete and canonical: exactly what our encoder (== Go's) prints for it
        assert route.response.to_json(route.response.from_json(raw)) == raw, path
        if documented is not None:
            _check_documented_shape(documented, data, route.response.descriptor, path)
    assert not failures, "\n".join(failures)
