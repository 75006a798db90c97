"""Conformance: our JSON is byte-identical to the Go gateway's for the same message.

The vectors hold binary OpenCue messages and the exact bytes Go's protojson
(grpc-gateway v2 defaults) produced for them. Both directions are checked:
wire -> JSON must equal Go's bytes; Go's JSON -> wire must give the same
message back (NaN's sign bit and -0 aside, which JSON cannot carry here).
"""
from __future__ import annotations

import math

import orjson
import pytest
from google.protobuf.message import Message

from gateway.transcode import Transcoder
from support import vector_bytes, vector_manifest

VECTORS = vector_manifest()


@pytest.fixture(scope="module")
def transcoder() -> Transcoder:
    return Transcoder()


def _codec(transcoder: Transcoder, bundled, type_name: str):
    return transcoder.codec(bundled.pool.FindMessageTypeByName(type_name))


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_encode_matches_go_byte_for_byte(vec, transcoder, bundled):
    codec = _codec(transcoder, bundled, vec["type"])
    ours = codec.to_json(vector_bytes(vec["bin"]))
    go = vector_bytes(vec["go_json"])
    if ours != go:
        at = next(i for i, (a, b) in enumerate(zip(ours, go)) if a != b)
        pytest.fail(f"differs at byte {at}:\n ours {ours[at-80:at+40]!r}\n   go {go[at-80:at+40]!r}")


def _same(a: Message, b: Message, path: str = "") -> list[str]:
    """Field-by-field equality where NaN equals NaN and -0 equals 0."""
    diffs = []
    for f in a.DESCRIPTOR.fields:
        x, y = getattr(a, f.name), getattr(b, f.name)
        here = f"{path}.{f.name}"
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            if dict(x) != dict(y) and f.message_type.fields_by_name["value"].message_type is None:
                diffs.append(here)
            elif f.message_type.fields_by_name["value"].message_type is not None:
                if sorted(x) != sorted(y):
                    diffs.append(here)
                for k in x:
                    diffs += _same(x[k], y[k], f"{here}[{k!r}]")
        elif f.message_type is not None and f.is_repeated:
            if len(x) != len(y):
                diffs.append(here)
            for i, (xx, yy) in enumerate(zip(x, y)):
                diffs += _same(xx, yy, f"{here}[{i}]")
        elif f.message_type is not None:
            if a.HasField(f.name) != b.HasField(f.name):
                diffs.append(here)
            diffs += _same(x, y, here)
        elif f.is_repeated:
            if list(x) != list(y):
                diffs.append(here)
        elif isinstance(x, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                diffs.append(here)
        elif x != y:
            diffs.append(here)
    for o in a.DESCRIPTOR.oneofs:
        if a.WhichOneof(o.name) != b.WhichOneof(o.name):
            diffs.append(f"{path}.{o.name}")
    return diffs


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decode_go_json_gives_back_the_message(vec, transcoder, bundled):
    codec = _codec(transcoder, bundled, vec["type"])
    original = codec.cls.FromString(vector_bytes(vec["bin"]))
    decoded = codec.cls.FromString(codec.from_json(vector_bytes(vec["go_json"])))
    assert _same(decoded, original) == []


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_fast_decoder_takes_go_json_without_fallback(vec, transcoder, bundled):
    """The per-request decoder must handle Go's own output itself.

    If it refused, the strict decoder would still produce the right message,
    just slower; this guards the speed the benchmarks promise.
    """
    codec = _codec(transcoder, bundled, vec["type"])
    obj = orjson.loads(vector_bytes(vec["go_json"]))
    fast = codec.cls(**codec._dec(obj))
    strict = codec.cls(**codec._strict(obj))
    assert _same(fast, strict) == []


def test_round_trip_through_our_own_json(transcoder, bundled):
    """wire -> JSON -> wire is the identity on the big replies."""
    for vec in VECTORS:
        codec = _codec(transcoder, bundled, vec["type"])
        data = vector_bytes(vec["bin"])
        again = codec.cls.FromString(codec.from_json(codec.to_json(data)))
        assert _same(again, codec.cls.FromString(data)) == [], vec["name"]
