"""Transcoding rules beyond the vectors: what protojson (grpc-gateway v2) does.

Requests: json and proto names, enums by name or number, int64 as number or
string, null for a message, unknown keys ignored at every depth, a wrong type
refused with the JSON path named. Replies: every field present, oneofs only
when set, proto2 presence as null, well-known types in their JSON forms.
"""
from __future__ import annotations

import base64
import math
import random
import struct
from pathlib import Path

import orjson
import pytest
from google.protobuf import json_format, message_factory

from gateway.descriptors import Descriptors, load_proto_path
from gateway.transcode import DecodeError, MessageCodec, Transcoder

PROTOS = Path(__file__).resolve().parent / "protos"


@pytest.fixture(scope="module")
def demo() -> Descriptors:
    return load_proto_path(PROTOS)


@pytest.fixture(scope="module")
def codecs(bundled, demo):
    opencue, test = Transcoder(), Transcoder()

    def get(name: str) -> MessageCodec:
        pool = demo.pool if name.split(".")[0] in ("demo", "legacy") else bundled.pool
        tc = test if pool is demo.pool else opencue
        return tc.codec(pool.FindMessageTypeByName(name))

    return get


def decode(codec: MessageCodec, body: bytes | str | dict):
    if isinstance(body, dict):
        body = orjson.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return codec.cls.FromString(codec.from_json(body))


def refused(codec: MessageCodec, body) -> str:
    with pytest.raises(DecodeError) as info:
        decode(codec, body)
    return str(info.value)


# ---------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------
def test_empty_and_whitespace_bodies_are_the_empty_message(codecs):
    c = codecs("job.JobGetJobsRequest")
    for body in (b"", b"  \n", b"{}"):
        assert c.from_json(body) == b""


def test_json_names_and_proto_names_both_work(codecs):
    c = codecs("job.JobGetJobsRequest")
    a = decode(c, {"r": {"includeFinished": True, "shows": ["testing"]}})
    b = decode(c, {"r": {"include_finished": True, "shows": ["testing"]}})
    assert a == b and a.r.include_finished and list(a.r.shows) == ["testing"]


def test_custom_json_name_and_proto_name(codecs):
    c = codecs("demo.Everything")
    assert decode(c, {"renamed": 3}).custom == 3
    assert decode(c, {"custom": 4}).custom == 4
    assert decode(c, {"snakeCaseName": "a"}).snake_case_name == "a"


def test_same_field_under_both_names_is_refused(codecs):
    msg = refused(codecs("job.JobGetJobsRequest"),
                  {"r": {"includeFinished": True, "include_finished": False}})
    assert "include_finished" in msg and "twice" in msg


def test_unknown_keys_are_ignored_at_every_depth(codecs):
    c = codecs("job.JobGetJobsRequest")
    m = decode(c, {"zzz": 1, "r": {"show": "testing", "maxResults": 100, "shows": ["a"],
                                   "nested": {"deep": [1, 2]}}})
    assert list(m.r.shows) == ["a"]


def test_null_leaves_fields_unset(codecs):
    c = codecs("job.JobGetFramesRequest")
    m = decode(c, {"job": None, "req": {"page": None, "ids": None, "states": None}})
    assert not m.HasField("job") and m.HasField("req") and m.req.page == 0


def test_empty_object_sets_a_message_field(codecs):
    m = decode(codecs("job.JobGetJobsRequest"), {"r": {}})
    assert m.HasField("r")


def test_enums_by_name_or_number(codecs):
    c = codecs("host.HostSetHardwareStateRequest")
    assert decode(c, {"state": "REPAIR"}).state == decode(c, {"state": 4}).state
    fc = codecs("job.JobGetFramesRequest")
    m = decode(fc, {"req": {"states": {"frameStates": [2, "DEAD", 5.0]}}})
    assert list(m.req.states.frame_states) == [2, 5, 5]


def test_unknown_enum_names_are_dropped_and_unknown_numbers_kept(codecs):
    c = codecs("host.HostSetHardwareStateRequest")
    assert decode(c, {"state": "ON_FIRE"}).state == 0
    m = decode(codecs("job.JobGetFramesRequest"),
               {"req": {"states": {"frameStates": ["RUNNING", "BOGUS", 42]}}})
    assert list(m.req.states.frame_states) == [2, 42]


@pytest.mark.parametrize("value, expected", [
    (5, 5), ("5", 5), ("-7", -7), ("1e3", 1000), (1e3, 1000), ("0", 0),
    ("9223372036854775807", 2**63 - 1), ("-9223372036854775808", -(2**63)),
])
def test_int64_as_number_or_string(codecs, value, expected):
    assert decode(codecs("job.LayerSetMinMemoryRequest"), {"memory": value}).memory == expected


@pytest.mark.parametrize("value", [
    "1.5", 1.5, "abc", "", " 5", "5 ", "1_000", "0x10", "007", "+5", "٣", True, [], {},
    "9223372036854775808", 2**63,
])
def test_bad_int64_values_are_refused_with_the_field_named(codecs, value):
    msg = refused(codecs("job.LayerSetMinMemoryRequest"), {"memory": value})
    assert msg.startswith("memory: ")


@pytest.mark.parametrize("field, value", [
    ("i32", 2**31), ("i32", -(2**31) - 1), ("u32", -1), ("u32", 2**32), ("u64", -1),
    ("u64", "18446744073709551616"), ("s32", 1.5), ("f32", True), ("sf64", "x"),
])
def test_integer_ranges_and_types(codecs, field, value):
    assert refused(codecs("demo.Everything"), {field: value}).startswith(field + ":")


def test_integer_extremes_accepted(codecs):
    m = decode(codecs("demo.Everything"), {
        "i32": -(2**31), "u32": 2**32 - 1, "u64": "18446744073709551615",
        "s64": "-9223372036854775808", "f64": 2**64 - 1, "sf32": "-5",
    })
    assert (m.i32, m.u32, m.u64, m.s64, m.f64, m.sf32) == (
        -(2**31), 2**32 - 1, 2**64 - 1, -(2**63), 2**64 - 1, -5)


def test_floats_numbers_strings_and_specials(codecs):
    c = codecs("demo.Everything")
    m = decode(c, {"fl": "1.5", "db": "NaN", "dbs": [1, "Infinity", "-Infinity", 2.5]})
    assert m.fl == 1.5 and math.isnan(m.db)
    assert list(m.dbs) == [1.0, math.inf, -math.inf, 2.5]


@pytest.mark.parametrize("field, value", [
    ("fl", 3.5e38), ("fl", "1e39"), ("db", "1e400"), ("db", "abc"), ("fl", True), ("db", [1]),
])
def test_float_overflow_and_bad_values(codecs, field, value):
    assert refused(codecs("demo.Everything"), {field: value}).startswith(field + ":")


def test_float32_max_accepted(codecs):
    fmax = struct.unpack("<f", struct.pack("<f", 3.4028234663852886e38))[0]
    assert decode(codecs("demo.Everything"), {"fl": fmax}).fl == fmax


@pytest.mark.parametrize("text", ["AAEC/w==", "AAEC/w", "AAEC_w==", "AAEC_w"])
def test_bytes_standard_or_url_base64_padded_or_not(codecs, text):
    assert decode(codecs("demo.Everything"), {"blob": text}).blob == b"\x00\x01\x02\xff"


def test_bytes_invalid_base64(codecs):
    assert refused(codecs("demo.Everything"), {"blob": "***"}).startswith("blob:")


def test_bool_must_be_a_json_boolean(codecs):
    c = codecs("job.JobGetJobsRequest")
    for v in (1, 0, "true", "false", None and 1):
        if v is None:
            continue
        assert "includeFinished" in refused(c, {"r": {"includeFinished": v}})


def test_maps_with_string_int_and_bool_keys(codecs):
    m = decode(codecs("demo.Everything"), {
        "byBool": {"true": "yes", "false": "no"},
        "byNum": {"7": {"text": "seven"}, "0": {}},
        "byName": {"a": "RED", "b": 2, "c": "NOPE"},
    })
    assert dict(m.by_bool) == {True: "yes", False: "no"}
    assert m.by_num[7].text == "seven" and 0 in m.by_num
    assert dict(m.by_name) == {"a": 1, "b": 2}  # unknown enum name dropped


@pytest.mark.parametrize("body, where", [
    ({"byBool": {"yes": "x"}}, "byBool['yes']"),
    ({"byNum": {"-1": {}}}, "byNum['-1']"),
    ({"byNum": {"x": {}}}, "byNum['x']"),
    ({"byName": {"a": None}}, "byName['a']"),
    ({"byNum": {"1": {"text": 5}}}, "byNum['1'].text"),
    ({"byName": []}, "byName"),
])
def test_bad_map_entries_name_the_key(codecs, body, where):
    assert refused(codecs("demo.Everything"), body).startswith(where + ":")


def test_oneof_members_and_conflicts(codecs):
    c = codecs("demo.Everything")
    assert decode(c, {"pickNum": 0}).WhichOneof("choice") == "pick_num"
    assert decode(c, {"pickText": None, "pickInner": {}}).WhichOneof("choice") == "pick_inner"
    assert "oneof choice" in refused(c, {"pickText": "a", "pickNum": 1})


def test_proto3_optional_presence(codecs):
    c = codecs("demo.Everything")
    assert decode(c, {"maybe": 0}).HasField("maybe")
    assert not decode(c, {}).HasField("maybe")


def test_well_known_types_in_requests(codecs):
    m = decode(codecs("demo.Everything"), {"when": "2026-11-22T10:00:00.5Z", "wrapped": "12"})
    assert m.when.seconds == 1795341600 and m.when.nanos == 500_000_000
    assert m.wrapped.value == 12
    assert refused(codecs("demo.Everything"), {"when": "yesterday"}).startswith("when:")


@pytest.mark.parametrize("body, message", [
    ({"r": {"shows": ["a", 3]}}, "r.shows[1]: expected string, got number"),
    ({"r": {"shows": "a"}}, "r.shows: expected array, got string"),
    ({"r": {"shows": ["a", None]}}, "r.shows[1]: null is not allowed in a repeated field"),
    ({"r": "testing"}, "r: expected object, got string"),
    ({"r": {"includeFinished": "yes"}}, "r.includeFinished: expected boolean, got string"),
    ({"r": {"ids": [{"id": "x"}]}}, "r.ids[0]: expected string, got object"),
])
def test_wrong_types_name_the_json_path(codecs, body, message):
    assert refused(codecs("job.JobGetJobsRequest"), body) == message


def test_path_through_repeated_messages(codecs):
    c = codecs("job.JobGetFramesResponse")
    body = {"frames": {"frames": [{"name": "a"}, {"name": "b"}, {"name": "c", "number": "x"}]}}
    assert refused(c, body).startswith("frames.frames[2].number: ")


def test_readme_bodies_with_objects_for_string_fields_are_refused(codecs):
    """FindLayer's documented body sends an object where the proto has a string (Go: 400)."""
    msg = refused(codecs("job.LayerFindLayerRequest"), {"job": {"id": "x"}, "layer": "comp"})
    assert msg.startswith("job: expected string")


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"3", b"null", b"true"])
def test_top_level_must_be_an_object(codecs, body):
    assert "JSON object" in refused(codecs("show.ShowGetShowsRequest"), body)


@pytest.mark.parametrize("body", [b"{", b"{'a':1}", b'{"a":1}x', b"\xff\xfe", b'{"a":"\\ud800"}',
                                  b"[" * 5000 + b"]" * 5000, b"NaN"])
def test_malformed_json(codecs, body):
    assert refused(codecs("show.ShowGetShowsRequest"), body).startswith("malformed JSON")


def test_echoed_reply_objects_are_accepted(codecs, bundled):
    """CueWeb sends whole objects it received back (strings for int64, names, nulls)."""
    job = orjson.loads(
        b'{"id":"j1","state":"PENDING","name":"n","shot":"","show":"","user":"","group":"",'
        b'"facility":"","os":"","priority":1,"minCores":0.5,"maxCores":0,"logDir":"",'
        b'"isPaused":false,"hasComment":false,"autoEat":false,"startTime":0,"stopTime":0,'
        b'"jobStats":null,"minGpus":0,"maxGpus":0,"lokiUrl":"","eligibleTime":0,'
        b'"extraKeyFromUi":{"x":1}}')
    m = decode(codecs("job.JobPauseRequest"), {"job": job})
    assert m.job.id == "j1" and m.job.min_cores == 0.5 and not m.job.HasField("job_stats")


# ---------------------------------------------------------------------------
# replies
# ---------------------------------------------------------------------------
def test_empty_reply_prints_every_field(codecs):
    out = codecs("demo.Everything").to_json(b"")
    assert out == (
        b'{"i32":0,"i64":"0","u32":0,"u64":"0","s32":0,"s64":"0","f32":0,"f64":"0",'
        b'"sf32":0,"sf64":"0","fl":0,"db":0,"flag":false,"text":"","blob":"",'
        b'"color":"COLOR_UNSPECIFIED","inner":null,"colors":[],"inners":[],"big":[],"dbs":[],'
        b'"byBool":{},"byNum":{},"byName":{},"when":null,"wrapped":null,"snakeCaseName":"",'
        b'"renamed":0}')


def test_oneof_and_optional_appear_in_declaration_order_when_set(codecs):
    c = codecs("demo.Everything")
    out = c.to_json(c.cls(pick_inner={}, maybe=0).SerializeToString())
    keys = list(orjson.loads(out))
    assert keys.index("pickInner") == keys.index("byName") + 1
    assert keys.index("maybe") == keys.index("pickInner") + 1
    assert b'"pickInner":{"text":"","nums":[]}' in out and b'"pickText"' not in out


def test_proto2_unset_scalars_are_null(codecs):
    c = codecs("legacy.Legacy")
    assert c.to_json(b"") == b'{"count":null,"label":null,"ok":null,"xs":[],"child":null}'
    set_ = c.cls(count=0, ok=False, child={})
    assert c.to_json(set_.SerializePartialToString()) == (
        b'{"count":0,"label":null,"ok":false,"xs":[],'
        b'"child":{"count":null,"label":null,"ok":null,"xs":[],"child":null}}')


def test_well_known_types_in_replies(codecs):
    c = codecs("demo.Everything")
    m = c.cls(when={"seconds": 1, "nanos": 5000}, wrapped={"value": 5})
    out = orjson.loads(c.to_json(m.SerializeToString()))
    assert out["when"] == "1970-01-01T00:00:01.000005Z" and out["wrapped"] == "5"


def test_maps_sorted_by_key(codecs):
    c = codecs("demo.Everything")
    m = c.cls(by_bool={True: "t", False: "f"}, by_num={10: {}, 9: {}, 100: {}},
              by_name={"b": 1, "a": 2, "B": 1, "é": 0})
    out = c.to_json(m.SerializeToString())
    assert b'"byBool":{"false":"f","true":"t"}' in out
    assert out.index(b'"9"') < out.index(b'"10"') < out.index(b'"100"')
    assert b'"byName":{"B":"RED","a":"GREEN","b":"RED","\xc3\xa9":"COLOR_UNSPECIFIED"}' in out


@pytest.mark.parametrize("value, text", [
    (0.1, b"0.1"), (1.0, b"1"), (-0.0, b"-0"), (1e-7, b"1e-7"), (1.5e-7, b"1.5e-7"),
    (0.000001, b"0.000001"), (1e20, b"100000000000000000000"), (1e21, b"1e+21"),
    (123456789.125, b"123456789.125"), (5e-324, b"5e-324"), (1.7976931348623157e308,
                                                              b"1.7976931348623157e+308"),
    (2.0**60, b"1152921504606847000"), (math.nan, b'"NaN"'), (math.inf, b'"Infinity"'),
    (-math.inf, b'"-Infinity"'),
])
def test_double_text_like_go(codecs, value, text):
    c = codecs("demo.Everything")
    out = c.to_json(c.cls(db=value).SerializeToString())
    assert b'"db":' + text + b"," in out


@pytest.mark.parametrize("value, text", [
    (0.1, b"0.1"), (1.0, b"1"), (0.3333333, b"0.3333333"), (3.4028234663852886e38,
                                                           b"3.4028235e+38"),
    (1e-7, b"1e-7"), (1.4e-45, b"1e-45"), (16777217.0, b"16777216"), (1e10, b"10000000000"),
    (1e21, b"1e+21"), (1.5e-7, b"1.5e-7"),
    (123456.79, b"123456.79"),
])
def test_float32_text_at_its_own_width(codecs, value, text):
    c = codecs("demo.Everything")
    out = c.to_json(c.cls(fl=value).SerializeToString())
    assert b'"fl":' + text + b"," in out


def test_strings_escaped_like_go(codecs):
    c = codecs("demo.Everything")
    out = c.to_json(c.cls(text='q"b\\ <&> \u2028 \x00\x1f\b\f\n\r\t é 😀').SerializeToString())
    assert (b'"text":"q\\"b\\\\ <&> \xe2\x80\xa8 \\u0000\\u001f\\b\\f\\n\\r\\t \xc3\xa9 '
            b'\xf0\x9f\x98\x80"') in out


def test_bytes_and_int64_lists(codecs):
    c = codecs("demo.Everything")
    out = orjson.loads(c.to_json(c.cls(blob=b"\x00\xff", big=[-1, 2**62]).SerializeToString()))
    assert out["blob"] == base64.b64encode(b"\x00\xff").decode() and out["big"] == ["-1", str(2**62)]


def test_bad_reply_bytes_raise_encode_error(codecs):
    from gateway.transcode import EncodeError

    with pytest.raises(EncodeError):
        codecs("show.ShowGetShowsResponse").to_json(b"\xff\xff\xff")


# ---------------------------------------------------------------------------
# cross-check against the protobuf runtime's own JSON, on random messages
# ---------------------------------------------------------------------------
def _random_message(cls, rng: random.Random, depth: int = 0):
    m = cls()
    for f in m.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            continue
        if f.containing_oneof is not None and rng.random() < 0.5:
            continue

        def value():
            t = f.type
            if t == f.TYPE_STRING:
                return rng.choice(["", "a", "héllo", "x" * rng.randint(1, 20), "\u2028\x01"])
            if t == f.TYPE_BOOL:
                return rng.random() < 0.5
            if t in (f.TYPE_INT64, f.TYPE_SINT64, f.TYPE_SFIXED64):
                return rng.randint(-(2**63), 2**63 - 1)
            if t in (f.TYPE_UINT64, f.TYPE_FIXED64):
                return rng.randint(0, 2**64 - 1)
            if t in (f.TYPE_INT32, f.TYPE_SINT32, f.TYPE_SFIXED32):
                return rng.randint(-(2**31), 2**31 - 1)
            if t in (f.TYPE_UINT32, f.TYPE_FIXED32):
                return rng.randint(0, 2**32 - 1)
            if t == f.TYPE_FLOAT:
                return struct.unpack("<f", struct.pack("<f", rng.uniform(-1e6, 1e6)))[0]
            if t == f.TYPE_DOUBLE:
                return rng.choice([rng.uniform(-1e9, 1e9), rng.random() * 1e-9, 1e300 * rng.random()])
            if t == f.TYPE_BYTES:
                return bytes(rng.randrange(256) for _ in range(rng.randint(0, 8)))
            if t == f.TYPE_ENUM:
                return rng.choice([v.number for v in f.enum_type.values])
            return None

        if f.message_type is not None:
            if depth > 3 or f.message_type.full_name.startswith("google.protobuf."):
                continue
            sub = message_factory.GetMessageClass(f.message_type)
            if f.is_repeated:
                getattr(m, f.name).extend(
                    _random_message(sub, rng, depth + 1) for _ in range(rng.randint(0, 2)))
            else:
                getattr(m, f.name).CopyFrom(_random_message(sub, rng, depth + 1))
        elif f.is_repeated:
            getattr(m, f.name).extend(value() for _ in range(rng.randint(0, 3)))
        else:
            setattr(m, f.name, value())
    return m


def _normalise(ours, theirs, msg_desc):
    """Compare our JSON to json_format's: they differ only in documented ways."""
    for f in msg_desc.fields:
        key = f.json_name
        a = ours.get(key, "<absent>")
        b = theirs.get(key, "<absent>")
        if f.message_type is not None and not f.message_type.GetOptions().map_entry:
            if f.is_repeated:
                assert len(a) == len(b if b != "<absent>" else [])
                for x, y in zip(a, b if b != "<absent>" else []):
                    _normalise(x, y, f.message_type)
            elif a is None:
                assert b == "<absent>"  # json_format omits unset messages, Go prints null
            elif a != "<absent>":
                _normalise(a, b, f.message_type)
        elif f.type in (f.TYPE_FLOAT, f.TYPE_DOUBLE):
            xs = a if f.is_repeated else [a]
            ys = b if f.is_repeated else [b]
            for x, y in zip(xs, ys):
                if isinstance(x, str):
                    assert x == y
                else:
                    width = 1e-6 if f.type == f.TYPE_FLOAT else 1e-12
                    assert math.isclose(x, y, rel_tol=width, abs_tol=1e-300), (key, x, y)
        else:
            assert a == b, (key, a, b)


@pytest.mark.parametrize("type_name", [
    "job.Job", "job.Frame", "job.Layer", "host.Host", "host.Proc", "show.Show",
    "job.JobGetFramesResponse", "filter.Action", "demo.Everything",
])
def test_random_messages_agree_with_json_format(codecs, type_name):
    rng = random.Random(type_name)
    c = codecs(type_name)
    for _ in range(150):
        m = _random_message(c.cls, rng)
        ours = orjson.loads(c.to_json(m.SerializeToString()))
        theirs = json_format.MessageToDict(m, always_print_fields_with_no_presence=True)
        _normalise(ours, theirs, m.DESCRIPTOR)
        assert c.cls.FromString(c.from_json(c.to_json(m.SerializeToString()))) == m \
            or any(isinstance(v, float) and math.isnan(v) for v in ours.values())


def test_converters_are_compiled_on_first_use(bundled) -> None:
    """A method table names hundreds of types; only those used cost memory."""
    from gateway.routes import MethodTable

    async def never(*_a, **_k) -> bytes:
        raise AssertionError

    table = MethodTable.build(bundled, lambda path: never)
    assert table.transcoder.message_types == 0
    route = table.lookup("/show.ShowInterface/GetShows")
    assert route.request.from_json(b"{}") == b""  # the empty message needs no decoder
    assert table.transcoder.message_types == 0
    assert route.request.from_json(b"{ }") == b""
    compiled = table.transcoder.message_types
    assert 0 < compiled < 10  # the request type and what it contains
    from support import vector_bytes

    assert route.response.to_json(vector_bytes("show1.binpb")) == vector_bytes("show1.go.json")
    assert table.transcoder.message_types > compiled
