"""Request JSON as protojson reads it: integers exact to the digit, keys given once.

Over a real socket, through the gateway, to a recording backend: a refused
body must be a 400 envelope naming the field and the value as sent, and must
never reach Cuebot; an accepted one must arrive with the exact value.
orjson (the fast path) keeps the last of duplicate keys and rounds integers
beyond 64 bits to floats, so each case here failed before the precise path.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from google.protobuf import message_factory

from gateway.descriptors import Descriptors, load_proto_path
from support import GatewayProcess, RecordingCuebot, auth_headers

PROTOS = Path(__file__).resolve().parent / "protos"
ECHO = "/demo.Demo/Echo"
FIND_SHOW = "/show.ShowInterface/FindShow"


@pytest.fixture(scope="module")
def demo() -> Descriptors:
    return load_proto_path(PROTOS)


@pytest.fixture(scope="module")
def demo_set(demo: Descriptors, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("descriptors") / "demo.binpb"
    path.write_bytes(demo.serialized())
    return path


@pytest.fixture
async def gateway(make_gateway: Any, demo_set: Path) -> Any:
    return await make_gateway(descriptor_set=demo_set)


def _everything(demo: Descriptors, wire: bytes) -> Any:
    cls = message_factory.GetMessageClass(demo.pool.FindMessageTypeByName("demo.Everything"))
    return cls.FromString(wire)


async def _refused(gateway: Any, cuebot: RecordingCuebot, body: bytes,
                   path: str = ECHO) -> str:
    resp = await gateway.post(path, data=body)
    data = await resp.json()
    assert resp.status == 400, (body, data)
    assert set(data) == {"error", "code", "message", "details"} and data["code"] == 3
    assert cuebot.calls == [], "a refused body reached the backend"
    return data["message"]


# ---------------------------------------------------------------------------
# integers: every type, just out of range, as numbers and as strings
# ---------------------------------------------------------------------------
LIMITS = {  # JSON name: (label, lowest, highest)
    "i32": ("int32", -(2**31), 2**31 - 1), "s32": ("int32", -(2**31), 2**31 - 1),
    "sf32": ("int32", -(2**31), 2**31 - 1), "u32": ("uint32", 0, 2**32 - 1),
    "f32": ("uint32", 0, 2**32 - 1), "i64": ("int64", -(2**63), 2**63 - 1),
    "s64": ("int64", -(2**63), 2**63 - 1), "sf64": ("int64", -(2**63), 2**63 - 1),
    "u64": ("uint64", 0, 2**64 - 1), "f64": ("uint64", 0, 2**64 - 1),
}
OUT_OF_RANGE = [(name, value) for name, (_l, lo, hi) in LIMITS.items()
                for value in (lo - 1, hi + 1, hi * 2**70)]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
@pytest.mark.parametrize("as_string", [False, True], ids=["number", "string"])
async def test_integer_out_of_range_is_400_naming_field_and_value_as_sent(
        gateway: Any, cuebot: RecordingCuebot, field: str, value: int, as_string: bool) -> None:
    text = f'"{value}"' if as_string else str(value)
    message = await _refused(gateway, cuebot, f'{{"{field}": {text}}}'.encode())
    label = LIMITS[field][0]
    assert f"{field}: {label} out of range: {text}" in message


@pytest.mark.parametrize("field", list(LIMITS))
async def test_integer_extremes_reach_the_backend_exactly(
        gateway: Any, cuebot: RecordingCuebot, demo: Descriptors, field: str) -> None:
    _label, lo, hi = LIMITS[field]
    for value, text in ((lo, str(lo)), (hi, str(hi)), (hi, f'"{hi}"')):
        cuebot.calls.clear()
        resp = await gateway.post(ECHO, data=f'{{"{field}": {text}}}'.encode())
        assert resp.status == 200, await resp.text()
        sent = _everything(demo, cuebot.calls[-1].request)
        assert getattr(sent, field) == value  # JSON and proto names are the same here


async def test_int64_one_below_the_minimum_is_not_rounded_into_range(
        gateway: Any, cuebot: RecordingCuebot) -> None:
    """The issue's case: -9223372036854775809 was forwarded as -9223372036854775808."""
    message = await _refused(gateway, cuebot, b'{"i64": -9223372036854775809}')
    assert "i64: int64 out of range: -9223372036854775809" in message


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"big": [1, 2, 18446744073709551616]}', "big[2]: int64 out of range: 18446744073709551616"),
    (b'{"inner": {"nums": [2147483648]}}', "inner.nums[0]: int32 out of range: 2147483648"),
    (b'{"byNum": {"4294967296": {}}}', "byNum['4294967296']: uint32 out of range: 4294967296"),
    (b'{"wrapped": 9223372036854775808}', "wrapped"),
    (b'{"color": 99999999999999999999}', "color: enum demo.Color value out of range: "
                                         "99999999999999999999"),
    (b'{"i32": 1e10}', "i32: int32 out of range: 1e10"),
    (b'{"u64": 1.8446744073709551616e19}', "u64: uint64 out of range: 1.8446744073709551616e19"),
    (b'{"i64": 1.5}', "i64: invalid int64 1.5: not a whole number"),
])
async def test_out_of_range_inside_lists_maps_and_other_spellings(
        gateway: Any, cuebot: RecordingCuebot, body: bytes, expected: str) -> None:
    assert expected in await _refused(gateway, cuebot, body)


async def test_whole_numbers_written_as_floats_are_still_accepted(
        gateway: Any, cuebot: RecordingCuebot, demo: Descriptors) -> None:
    resp = await gateway.post(ECHO, data=b'{"i32": 1e3, "i64": "2e2", "u64": 9223372036854775807.0}')
    assert resp.status == 200, await resp.text()
    sent = _everything(demo, cuebot.calls[-1].request)
    assert (sent.i32, sent.i64, sent.u64) == (1000, 200, 9223372036854775807)


async def test_huge_exponent_is_refused_at_once() -> None:
    """``"1e99999999"`` for an int64 built a 100-million-digit integer: the process hung.

    A separate process, so that a hang fails this test instead of freezing it.
    """
    cuebot = await RecordingCuebot().start()
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint})
    try:
        await asyncio.to_thread(gw.wait_ready)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for path, body in (
                    ("/renderPartition.RenderPartitionInterface/SetMaxResources",
                     b'{"memory": "1e99999999"}'),
                    ("/job.JobInterface/SetPriority", b'{"job": {"id": "x"}, "val": "-1e99999999"}'),
                    ("/job.JobInterface/SetPriority", b'{"val": 1e300}')):
                async with http.post(gw.url + path, data=body, headers=auth_headers()) as resp:
                    data = await resp.json()
                assert resp.status == 400 and "out of range" in data["message"], data
        assert cuebot.calls == []
    finally:
        await asyncio.to_thread(gw.stop)
        await cuebot.stop()


# ---------------------------------------------------------------------------
# duplicate keys
# ---------------------------------------------------------------------------
async def test_duplicate_field_is_refused_like_protojson(make_gateway: Any,
                                                         cuebot: RecordingCuebot) -> None:
    """The issue's case, on an OpenCue method: 400 ``duplicate field "name"``."""
    gateway = await make_gateway()
    message = await _refused(gateway, cuebot, b'{"name":"a","name":"b"}', FIND_SHOW)
    assert 'duplicate field "name"' in message


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"text": "a", "i32": 1, "text": "b"}', 'duplicate field "text"'),
    (b'{"inner": {"text": "a", "text": "a"}}', 'inner: duplicate field "text"'),
    (b'{"inners": [{}, {"nums": [1], "nums": [2]}]}', 'inners[1]: duplicate field "nums"'),
    (b'{"text": null, "text": "x"}', 'duplicate field "text"'),
    (b'{"byName": {"k": "RED", "k": "GREEN"}}', 'byName: duplicate map key "k"'),
    # a colon inside a string, so that the first key count cannot decide
    (b'{"text": "a:b", "text": "c"}', 'duplicate field "text"'),
    (b'{"inner": {"text": "http://x"}, "text": "y", "text": "z"}', 'duplicate field "text"'),
    # an escaped colon, which orjson's own output would write plain
    (b'{"text": "\\u003a", "snake_case_name": "x", "snakeCaseName": "y"}', "given twice"),
    (b'{"text": "\\u003a", "i32": 1, "i32": 2}', 'duplicate field "i32"'),
    # the same key spelled with an escape is the same key
    (b'{"text": "a", "t\\u0065xt": "b"}', 'duplicate field "text"'),
    # JSON name and proto name of one field
    (b'{"snakeCaseName": "a", "snake_case_name": "b"}', "given twice"),
])
async def test_duplicates_are_found_wherever_they_are(gateway: Any, cuebot: RecordingCuebot,
                                                      body: bytes, expected: str) -> None:
    assert expected in await _refused(gateway, cuebot, body)


async def test_duplicate_unknown_keys_are_ignored_as_protojson_does(
        gateway: Any, cuebot: RecordingCuebot, demo: Descriptors) -> None:
    """protojson's DiscardUnknown skips unknown fields before its duplicate check."""
    resp = await gateway.post(ECHO, data=b'{"zz": 1, "zz": {"a": 2}, "text": "kept"}')
    assert resp.status == 200, await resp.text()
    assert _everything(demo, cuebot.calls[-1].request).text == "kept"


@pytest.mark.parametrize("body", [
    b'{"text": "a:b:c", "inner": {"text": "x:"}, "byName": {"a:b": "RED"}}',
    b'{ "text" : "spaced" ,\n "inners" : [ { "text" : "1" } , { "text" : "2" } ] }',
    b'{"text": "\\u003a\\u003A", "i64": "-9223372036854775808"}',
    b'{"byNum": {"1": {"text": "a"}, "2": {"text": "b"}}, "byBool": {"true": "t"}}',
    b'{"zz": {"text": "unknown"}, "text": "known"}',
])
async def test_bodies_without_duplicates_pass_whatever_their_colons(
        gateway: Any, cuebot: RecordingCuebot, demo: Descriptors, body: bytes) -> None:
    resp = await gateway.post(ECHO, data=body)
    assert resp.status == 200, await resp.text()
    expected = orjson.loads(body)
    sent = _everything(demo, cuebot.calls[-1].request)
    if "text" in expected:
        assert sent.text == expected["text"]


# ---------------------------------------------------------------------------
# what the checks above must not break: depth, proto2 required fields
# ---------------------------------------------------------------------------
LEGACY = "/legacy.LegacyService/Get"


def _nested(depth: int, ok: bool = True) -> bytes:
    head = '{"ok": true, "child": ' if ok else '{"child": '
    return (head * depth + ('{"ok": true}' if ok else "{}") + "}" * depth).encode()


async def test_deep_unknown_objects_are_ignored_at_any_depth_json_allows(
        gateway: Any, cuebot: RecordingCuebot, demo: Descriptors) -> None:
    """Deeper than orjson writes back (254): the precise path decides, without a 500."""
    body = b'{"text": "t", "zz": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"
    resp = await gateway.post(ECHO, data=body)
    assert resp.status == 200, await resp.text()
    assert _everything(demo, cuebot.calls[-1].request).text == "t"


async def test_deep_recursive_messages_are_decoded_or_refused_cleanly(
        gateway: Any, cuebot: RecordingCuebot) -> None:
    resp = await gateway.post(LEGACY, data=_nested(500))
    assert resp.status == 200, await resp.text()
    cuebot.calls.clear()
    message = await _refused(gateway, cuebot, _nested(500)[:-1] + b', "ok": false}', LEGACY)
    assert 'duplicate field "ok"' in message
    # beyond orjson's nesting limit: malformed JSON, a 400 as well
    resp = await gateway.post(LEGACY, data=_nested(1100))
    assert resp.status == 400 and (await resp.json())["code"] == 3


async def test_proto2_required_fields_missing_is_400_naming_them(
        gateway: Any, cuebot: RecordingCuebot) -> None:
    """protojson refuses a message whose required fields are unset; upb raised a 500 here."""
    message = await _refused(gateway, cuebot, b'{"count": 1, "child": {}}', LEGACY)
    assert "missing required field(s): ok, child.ok" in message
    message = await _refused(gateway, cuebot, _nested(20, ok=False), LEGACY)
    assert "and 16 more" in message


async def test_an_empty_object_still_needs_the_required_fields(
        gateway: Any, cuebot: RecordingCuebot) -> None:
    """``{}`` is short-cut to the empty message only where that message is complete."""
    message = await _refused(gateway, cuebot, b"{}", LEGACY)
    assert "missing required field(s): ok" in message
    resp = await gateway.post(ECHO, data=b"{}")
    assert resp.status == 200, await resp.text()
