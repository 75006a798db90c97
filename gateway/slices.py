"""Large repeated fields encoded a slice at a time, in the conversion process.

``MessageCodec.to_json`` builds the whole reply as dictionaries before orjson
writes it: for 10,000 frames about 18 MB of them, three times the JSON, all
alive at once. Here a reply whose repeated message field (reached through
singular message fields from the root, e.g. ``frames.frames``) holds many
elements is written in pieces instead: the rest of the message (the
envelope) with that list replaced by a placeholder string, then the elements
a slice at a time, each slice's dictionaries gone before the next is built.
The pieces are the bytes ``to_json`` writes, only cut apart; the worker
sends them one after another without joining them.

The list is detached from the parsed message with ``ClearField`` while a
reference to it is held: upb then hands the elements over to the detached
list instead of copying them, and the envelope encodes the field as ``[]``.
Presence of the messages on the way (a set but emptied message still prints
as an object, a oneof keeps its choice) is untouched. The inline path does
not use this: replies that small are cheaper in one piece.
"""
from __future__ import annotations

import secrets
from typing import Any, Callable, Iterator

import orjson
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError as WireDecodeError
from google.protobuf.message import Message

from .transcode import EncodeError, MessageCodec, Transcoder, is_repeated

__all__ = ["SLICE_ITEMS", "SlicedEncoder"]

SLICE_ITEMS = 1000  # elements per slice: about 1.8 MB of dictionaries for frames
_MAX_DEPTH = 8  # singular message fields followed from the root, at most
_WKT_PREFIX = "google.protobuf."  # special JSON forms: never looked into

FieldPath = tuple[FieldDescriptor, ...]


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def _list_paths(root: Descriptor) -> list[FieldPath]:
    """Every repeated message field reachable through singular message fields.

    A type already on the way is not entered again (recursive messages), nor
    is a well-known type, whose JSON is not an object of its fields.
    """
    found: list[FieldPath] = []

    def walk(d: Descriptor, way: FieldPath, seen: frozenset[str]) -> None:
        for f in d.fields:
            if f.message_type is None or _is_map(f):
                continue
            if is_repeated(f):
                found.append(way + (f,))
            elif (len(way) < _MAX_DEPTH and f.message_type.full_name not in seen
                  and not f.message_type.full_name.startswith(_WKT_PREFIX)):
                walk(f.message_type, way + (f,), seen | {f.message_type.full_name})

    walk(root, (), frozenset({root.full_name}))
    return found


class SlicedEncoder:
    """``to_json`` of one message type, as pieces, its long lists a slice at a time."""

    def __init__(self, codec: MessageCodec, transcoder: Transcoder,
                 slice_items: int = SLICE_ITEMS, min_items: int = SLICE_ITEMS) -> None:
        self.codec = codec
        self.slice_items = slice_items
        self.min_items = min_items  # shorter lists stay in the envelope
        self._paths = _list_paths(codec.descriptor)
        self._element_enc: dict[str, Callable[[Message], dict]] = {
            p[-1].message_type.full_name: transcoder.functions(p[-1].message_type)[0]
            for p in self._paths
        }

    def encode(self, wire: bytes) -> list[bytes]:
        """The JSON ``codec.to_json(wire)`` returns, as pieces to send in order."""
        if not self._paths:
            return [self.codec.to_json(wire)]
        try:
            msg = self.codec.cls.FromString(wire)
        except WireDecodeError as e:
            raise EncodeError(
                f"cannot parse {self.codec.full_name} from the backend: {e}") from None
        lists = self._detach(msg)
        if not lists:
            return [orjson.dumps(self.codec.to_obj(msg))]
        token = secrets.token_hex(16)
        env = self.codec.to_obj(msg)
        marks: list[bytes] = []
        for i, (path, _items) in enumerate(lists):
            mark = f"\x00slice {token} {i}"
            obj = env
            for f in path[:-1]:
                obj = obj[f.json_name]
            obj[path[-1].json_name] = mark
            marks.append(orjson.dumps(mark))
        text = orjson.dumps(env)
        del env
        if any(text.count(m) != 1 for m in marks):  # pragma: no cover - 128 random bits
            raise EncodeError("placeholder collision while encoding in slices")
        pieces: list[bytes] = []
        # the placeholders appear in the order the paths were visited, which
        # is not necessarily their order in the text: cut at each in turn
        found = sorted((text.index(m), i) for i, m in enumerate(marks))
        start = 0
        for at, i in found:
            pieces.append(text[start:at])
            path, items = lists[i]
            pieces += self._elements(items, self._element_enc[path[-1].message_type.full_name])
            start = at + len(marks[i])
        pieces.append(text[start:])
        return pieces

    def _detach(self, msg: Message) -> list[tuple[FieldPath, Any]]:
        """The long lists, taken out of ``msg`` (moved, not copied; see the module doc)."""
        out = []
        for path in self._paths:
            m = msg
            for f in path[:-1]:
                if not m.HasField(f.name):
                    break
                m = getattr(m, f.name)
            else:
                name = path[-1].name
                items = getattr(m, name)
                if len(items) >= self.min_items:
                    m.ClearField(name)
                    out.append((path, items))
        return out

    def _elements(self, items: Any, enc: Callable[[Message], dict]) -> Iterator[bytes]:
        """``[e1,e2,...]`` in pieces, one orjson call per slice of dictionaries."""
        n, step = len(items), self.slice_items
        yield b"["
        for lo in range(0, n, step):
            if lo:
                yield b","
            yield orjson.dumps([enc(items[k]) for k in range(lo, min(lo + step, n))])[1:-1]
        yield b"]"
