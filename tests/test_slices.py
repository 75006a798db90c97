"""Long lists encoded a slice at a time in the conversion process: the same bytes, less memory.

``slices.SlicedEncoder`` is what the conversion process runs for every
reply; these tests hold it to ``MessageCodec.to_json`` byte for byte, on the
vectors and on shapes OpenCue's protos do not have (tests/data/slices.proto),
and check that the long lists really are cut: in pieces, with a fraction of
the memory.
"""
from __future__ import annotations

import io
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from gateway import offload_worker
from gateway.descriptors import Descriptors, load_file
from gateway.slices import SLICE_ITEMS, SlicedEncoder
from gateway.transcode import EncodeError, Transcoder
from support import vector_bytes, vector_manifest

VECTORS = vector_manifest()
LARGE = [v for v in VECTORS if v["name"] in ("frames10k", "jobs2k")]


def _encoder(descs: Descriptors, name: str, **kw: Any) -> SlicedEncoder:
    t = Transcoder()
    return SlicedEncoder(t.codec(descs.pool.FindMessageTypeByName(name)), t, **kw)


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
@pytest.mark.parametrize("slice_items,min_items", [(SLICE_ITEMS, SLICE_ITEMS), (3, 0), (1, 0)])
def test_vectors_are_the_same_bytes(vec: dict, bundled: Any, slice_items: int,
                                    min_items: int) -> None:
    enc = _encoder(bundled, vec["type"], slice_items=slice_items, min_items=min_items)
    pieces = enc.encode(vector_bytes(vec["bin"]))
    assert b"".join(pieces) == vector_bytes(vec["go_json"])


@pytest.mark.parametrize("vec", LARGE, ids=[v["name"] for v in LARGE])
def test_large_vectors_are_cut_into_slices(vec: dict, bundled: Any) -> None:
    enc = _encoder(bundled, vec["type"])
    wire, go = vector_bytes(vec["bin"]), vector_bytes(vec["go_json"])
    pieces = enc.encode(wire)
    assert b"".join(pieces) == go
    items = len(enc.codec.cls.FromString(wire).ListFields()[0][1].ListFields()[0][1])
    assert items >= 2 * SLICE_ITEMS
    slices = -(-items // SLICE_ITEMS)
    # envelope head, "[", the slices with a comma between each two, "]", envelope tail
    assert len(pieces) == 2 + slices + (slices - 1) + 2
    assert max(map(len, pieces)) < 1.5 * len(go) / slices


@pytest.mark.parametrize("vec", LARGE, ids=[v["name"] for v in LARGE])
def test_sliced_encoding_holds_a_fraction_of_the_memory(vec: dict, bundled: Any) -> None:
    """Python's allocations at their peak: whole, every dictionary and the JSON at once.

    Sliced, the pieces of JSON and one slice of dictionaries (250 elements
    here, so that jobs2k has more than two slices): under half. Were the
    elements encoded with the envelope, it would be about two thirds.
    """
    enc = _encoder(bundled, vec["type"], slice_items=250)
    wire = vector_bytes(vec["bin"])
    enc.encode(wire)  # compiled, caches warm
    peaks = []
    for convert in (enc.codec.to_json, enc.encode):
        tracemalloc.start()
        try:
            convert(wire)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    whole, sliced = peaks
    assert sliced < 0.45 * whole, peaks


def test_the_worker_sends_the_pieces_unjoined(bundled: Any) -> None:
    """Through ``serve``: frames10k's answer is written piece by piece, and is Go's bytes."""
    fds = descriptor_pb2.FileDescriptorSet(file=bundled.files).SerializeToString()

    class Writes(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def write(self, b: Any) -> int:
            self.sizes.append(len(b))
            return super().write(b)

    inp = io.BytesIO(_task(offload_worker.LOAD, 1, "", fds)
                     + _task(offload_worker.ENCODE, 2, "job.JobGetFramesResponse",
                             vector_bytes("frames10k.binpb")))
    out = Writes()
    offload_worker.serve(inp, out)
    answers = _answers(out.getvalue())
    assert answers == [(1, offload_worker.OK, b""),
                       (2, offload_worker.OK, vector_bytes("frames10k.go.json"))]
    go = len(vector_bytes("frames10k.go.json"))
    assert len(out.sizes) > 20 and max(out.sizes) < go / 5


# ---------------------------------------------------------------------------
# shapes of tests/data/slices.proto
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Descriptors:
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("slices") / "slices.binpb"
    include = Path(grpc_tools.__file__).parent / "_proto"
    folder = Path(__file__).parent / "data"
    assert protoc.main(["protoc", f"-I{folder}", f"-I{include}", "--include_imports",
                        f"--descriptor_set_out={out}", "slices.proto"]) == 0
    return load_file(out)


def _items(cls: Any, n: int, prefix: str = "i") -> list[Any]:
    item = cls.DESCRIPTOR.fields_by_name["a"].message_type
    from google.protobuf import message_factory

    Item = message_factory.GetMessageClass(item)
    out = []
    for i in range(n):
        it = Item(name=f"{prefix}{i}", n=i * 10**12, x=i / 7, kind=i % 3)
        if i % 4 == 0:
            it.child.name = "c"
            it.kids.add(name="k", maybe=0)
        out.append(it)
    return out


def _top(shapes: Descriptors) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(shapes.pool.FindMessageTypeByName("slices.Top"))


def _holder(shapes: Descriptors) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(shapes.pool.FindMessageTypeByName("slices.Holder"))


def _cases(shapes: Descriptors) -> dict[str, bytes]:
    Top, Holder = _top(shapes), _holder(shapes)
    cases = {"empty message": Top()}
    m = Top()
    m.h.tag = "only empties"  # set, its lists empty; plain set with nothing in it
    m.plain.SetInParent()
    cases["empty lists"] = m
    m = Top(after="z")
    m.h.a.extend(_items(Holder, 5))
    cases["shorter than a slice"] = m
    m = Top(after="oneof")
    m.h.a.extend(_items(Holder, 2 * SLICE_ITEMS + 500))
    m.h.words.extend(["w"] * 3)
    cases["long list inside a oneof"] = m
    m = Top(s="picked the string")
    m.plain.b.extend(_items(Holder, SLICE_ITEMS))
    cases["oneof set to its other member"] = m
    m = Top()
    m.plain.a.extend(_items(Holder, SLICE_ITEMS + 1, "a"))
    m.plain.b.extend(_items(Holder, 3 * SLICE_ITEMS, "b"))
    m.plain.one.name = "between"
    m.direct.extend(_items(Holder, 2 * SLICE_ITEMS, "d"))
    m.h.b.extend(_items(Holder, SLICE_ITEMS - 1))
    m.by_name["k"].name = "map value"
    cases["several long lists"] = m
    m = Top()
    m.plain.a.extend(_items(Holder, 1500))  # nothing else set: still an object, not null
    m.again.h.a.extend(_items(Holder, 1500))  # recursion: not followed, encoded whole
    cases["set only by its list; recursive type"] = m
    m = Top()
    m.direct.extend(_items(Holder, 1200, '\x00slice "x" 0 \u2028'))
    cases["placeholder-like strings"] = m
    return {k: v.SerializeToString() for k, v in cases.items()}


@pytest.mark.parametrize("slice_items,min_items",
                         [(SLICE_ITEMS, SLICE_ITEMS), (7, 0), (1, 1), (SLICE_ITEMS, 0)])
def test_shapes_are_the_same_bytes(shapes: Descriptors, slice_items: int,
                                   min_items: int) -> None:
    enc = _encoder(shapes, "slices.Top", slice_items=slice_items, min_items=min_items)
    for name, wire in _cases(shapes).items():
        assert b"".join(enc.encode(wire)) == enc.codec.to_json(wire), name


def test_every_long_list_is_cut(shapes: Descriptors) -> None:
    enc = _encoder(shapes, "slices.Top")
    wire = _cases(shapes)["several long lists"]
    pieces = enc.encode(wire)
    assert b"".join(pieces) == enc.codec.to_json(wire)
    # plain.a (2 slices), plain.b (3) and direct (2) are cut; h.b (999) stays in the envelope
    cut = sum(1 for p in pieces if p == b"[")
    assert cut == 3
    assert len(pieces) == 1 + 3 * 3 + (2 + 1) + (3 + 2) + (2 + 1)


def test_shapes_through_the_worker(shapes: Descriptors) -> None:
    fds = descriptor_pb2.FileDescriptorSet(file=shapes.files).SerializeToString()
    cases = _cases(shapes)
    tasks = _task(offload_worker.LOAD, 0, "", fds) + b"".join(
        _task(offload_worker.ENCODE, i + 1, "slices.Top", w) for i, w in enumerate(cases.values()))
    tasks += _task(offload_worker.ENCODE, 99, "slices.Top", b"\xff\xff")
    out = io.BytesIO()
    offload_worker.serve(io.BytesIO(tasks), out)
    answers = _answers(out.getvalue())
    codec = Transcoder().codec(shapes.pool.FindMessageTypeByName("slices.Top"))
    assert answers[1:-1] == [(i + 1, offload_worker.OK, codec.to_json(w))
                             for i, w in enumerate(cases.values())]
    with pytest.raises(EncodeError) as inline:
        codec.to_json(b"\xff\xff")
    assert answers[-1] == (99, offload_worker.ENCODE_ERROR, str(inline.value).encode())


def _task(op: int, tid: int, name: str, payload: bytes) -> bytes:
    n = name.encode()
    return offload_worker.TASK.pack(op, tid, 1, len(n), len(payload)) + b"v" + n + payload


def _answers(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    while data:
        tid, status, size = offload_worker.ANSWER.unpack_from(data)
        start = offload_worker.ANSWER.size
        out.append((tid, status, data[start:start + size]))
        data = data[start + size:]
    return out
