"""Proto3 JSON <-> protobuf wire bytes, compiled per message type.

The Go gateway encodes with protojson under grpc-gateway v2's defaults
(``EmitUnpopulated: true``, ``DiscardUnknown: true``). Clients such as CueWeb
depend on those bytes, so this module reproduces them exactly: json_name keys
in declaration order, every non-oneof field present, unset messages as
``null``, 64-bit integers as strings, enums by name, Go's float text.

Why code generation: a generic walker (``json_format``) asks the descriptor
about every field of every message on every call. Here each message type gets
two Python functions, written once when descriptors load and ``exec``'d, whose
bodies already know every field name, key and conversion. Per request there is
no descriptor access at all; the upb message does the wire work and orjson the
JSON text.

Decoding builds constructor keyword arguments (nested dicts and lists) and
hands them to the upb class in one call. Decode errors name the JSON path
(``r.maxResults: ...``); the path is assembled only while an error unwinds,
so a valid request pays nothing for it.
"""
from __future__ import annotations

import base64
import binascii
import json
import keyword
import math
import re
import struct
import sys
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Callable, Iterator

import orjson
from google.protobuf import descriptor_pb2, json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError as WireDecodeError
from google.protobuf.message import EncodeError as WireEncodeError
from google.protobuf.message import Message

__all__ = [
    "DecodeError",
    "EncodeError",
    "MessageCodec",
    "Transcoder",
]

_F = FieldDescriptor
_NULL_VALUE = "google.protobuf.NullValue"
_INT64_TYPES = frozenset({_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64})
_UINT64_TYPES = frozenset({_F.TYPE_UINT64, _F.TYPE_FIXED64})
_INT32_TYPES = frozenset({_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32})
_UINT32_TYPES = frozenset({_F.TYPE_UINT32, _F.TYPE_FIXED32})
_WKT_PREFIX = "google.protobuf."


class DecodeError(ValueError):
    """A request body that cannot become the request message (HTTP 400).

    ``path`` collects JSON keys and list indexes innermost-first while the
    error propagates out of the generated decoders; ``str()`` shows it
    outermost-first, e.g. ``r.ids[2]: expected a string, got number``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    @property
    def field_path(self) -> str:
        out = ""
        for part in reversed(self.path):
            out += part if part.startswith("[") else (f".{part}" if out else part)
        return out

    def __str__(self) -> str:
        where = self.field_path
        return f"{where}: {self.reason}" if where else self.reason


class EncodeError(ValueError):
    """A backend reply that cannot be rendered (bad wire bytes): HTTP 500."""


class _Refused(Exception):
    """The fast decoder met something it does not handle; the strict one will say what."""


class _Skip(Exception):
    """Raised by enum decoders for an unknown name: protojson's DiscardUnknown drops it."""


# ---------------------------------------------------------------------------
# encode helpers (wire value -> JSON value)
# ---------------------------------------------------------------------------
class _EnumNames(dict):
    """number -> name; numbers the enum does not define stay numbers, as in Go."""

    def __missing__(self, key: int) -> int:
        return key


def _to_f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


_F32_LO = _to_f32(1e-6)
_F32_HI = _to_f32(1e21)
_TWO53 = float(2**53)
_TWO24 = float(2**24)
_NEG_ZERO = orjson.Fragment(b"-0")
_CACHE_MAX = 65536


class _FloatTexts(dict):
    """float -> its JSON form: a look-up in C for a value seen before, ``make`` otherwise.

    The generated encoders subscript it directly (``_F32[m.x]``): no Python
    call per float field once its value is known. Zeros are never kept (0.0
    and -0.0 are one key but print differently), nor NaN or infinities.
    """

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[float], Any]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, v: float) -> Any:
        if v:
            return self._make(v)
        return _NEG_ZERO if math.copysign(1.0, v) < 0 else 0


def _split_digits(shortest: str) -> tuple[str, str, int]:
    """Sign, significant digits and decimal exponent of a shortest float text.

    The value equals ``0.<digits> * 10**exp``.
    """
    sign = ""
    if shortest[0] == "-":
        sign, shortest = "-", shortest[1:]
    mant, _, e = shortest.partition("e")
    exp = int(e) if e else 0
    whole, _, frac = mant.partition(".")
    digits = (whole + frac).lstrip("0")
    lead_zeros = len(whole + frac) - len((whole + frac).lstrip("0"))
    exp += len(whole) - lead_zeros
    digits = digits.rstrip("0") or "0"
    return sign, digits, exp


def _go_float_text(shortest: str, use_exponent: bool) -> bytes:
    """Lay out shortest round-trip digits the way Go's strconv does.

    Go prints 'f' notation unless the magnitude is below 1e-6 or at least
    1e21, then 'e' notation with at least two exponent digits, after which
    protojson trims ``e-0X`` to ``e-X``.
    """
    sign, digits, exp = _split_digits(shortest)
    if use_exponent:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = exp - 1
        e_text = f"+{e:02d}" if e >= 0 else (f"-{-e}" if -e < 10 else f"-{-e:02d}")
        return f"{sign}{mant}e{e_text}".encode()
    if exp <= 0:
        return f"{sign}0.{'0' * -exp}{digits}".encode()
    if exp >= len(digits):
        return f"{sign}{digits}{'0' * (exp - len(digits))}".encode()
    return f"{sign}{digits[:exp]}.{digits[exp:]}".encode()


def _special_float(v: float) -> str:
    if v != v:
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def _f64_new(v: float) -> Any:
    """The JSON form of a non-zero ``v``, remembered (up to _CACHE_MAX values)."""
    if v.is_integer() and -_TWO53 < v < _TWO53:
        r: Any = int(v)
    elif math.isinf(v) or v != v:
        return _special_float(v)  # not cached: every NaN would be a key of its own
    else:
        text = repr(v)
        if "e" in text:
            a = abs(v)
            r = orjson.Fragment(_go_float_text(text, a < 1e-6 or a >= 1e21))
        else:
            r = v  # orjson prints exactly repr() in plain notation
    if len(_f64_cache) < _CACHE_MAX:
        _f64_cache[v] = r
    return r


def _shortest_f32(v: float) -> str:
    """Fewest significant digits that read back as the same float32."""
    for p in range(1, 10):
        s = "%.*g" % (p, v)
        try:
            if _to_f32(float(s)) == v:
                return s
        except OverflowError:  # rounding went past FLT_MAX
            continue
    return repr(v)


def _f32_new(v: float) -> Any:
    """The JSON form of a non-zero ``v``, remembered (up to _CACHE_MAX values)."""
    if v.is_integer() and -_TWO24 < v < _TWO24:
        r: Any = int(v)
    elif math.isinf(v) or v != v:
        return _special_float(v)  # not cached: every NaN would be a key of its own
    else:
        a = abs(v)
        r = orjson.Fragment(_go_float_text(_shortest_f32(v), a < _F32_LO or a >= _F32_HI))
    if len(_f32_cache) < _CACHE_MAX:
        _f32_cache[v] = r
    return r


_f64_cache = _FloatTexts(_f64_new)
_f32_cache = _FloatTexts(_f32_new)
_f64 = _f64_cache.__getitem__  # the JSON form of a double / float field's value
_f32 = _f32_cache.__getitem__


def _b64(v: bytes) -> str:
    return base64.b64encode(v).decode("ascii")


# ---------------------------------------------------------------------------
# decode helpers (JSON value -> constructor value)
# ---------------------------------------------------------------------------
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")


class _Sent(float):
    """A JSON number with a fraction or exponent, as the precise parse reads it.

    It keeps the text as sent, so that an integer field can be judged (and an
    error quoted) from the digits the client wrote rather than a rounded float.
    """

    __slots__ = ("text",)

    def __new__(cls, text: str) -> "_Sent":
        v = super().__new__(cls, text)
        v.text = text
        return v


class _DupDict(dict):
    """A JSON object in which some key occurs more than once (the last value kept)."""

    __slots__ = ("dups",)


class _Imprecise(_Refused):
    """A float from orjson at an integer field: its digits may be rounded; parse precisely."""


_JSON_KIND = {dict: "object", list: "array", str: "string", bool: "boolean",
              int: "number", float: "number", type(None): "null", _Sent: "number",
              _DupDict: "object"}
_MAX_INT_DIGITS = 30  # beyond this an integer is out of every range: refuse before int()


def _kind(v: Any) -> str:
    return _JSON_KIND.get(type(v), type(v).__name__)


def _shown_value(v: Any) -> str:
    """A JSON value as the client sent it, for error messages."""
    if type(v) is _Sent:
        return v.text
    if type(v) is str:
        return orjson.dumps(v).decode()
    return repr(v) if type(v) is float else str(v)


def _whole(d: Decimal, sent: Any, label: str) -> int:
    """The integer a decimal number denotes; never builds one of absurd size."""
    if not d.is_finite() or d != d.to_integral_value():
        raise DecodeError(f"invalid {label} {_shown_value(sent)}: not a whole number")
    if d.adjusted() > _MAX_INT_DIGITS:
        raise DecodeError(f"{label} out of range: {_shown_value(sent)}")
    return int(d)


def _int_from_text(s: str, label: str = "integer") -> int:
    if _PLAIN_INT.match(s):
        if len(s) > _MAX_INT_DIGITS + 1:
            raise DecodeError(f"{label} out of range: {_shown_value(s)}")
        return int(s)
    if not _JSON_NUMBER.match(s):
        raise DecodeError(f"invalid {label} {_shown_value(s)}")
    return _whole(Decimal(s), s, label)


def _make_int(lo: int, hi: int, label: str) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        t = type(v)
        if t is int:
            n = v
        elif t is str:
            n = _int_from_text(v, label)
        elif t is _Sent:
            n = _whole(Decimal(v.text), v, label)
        elif t is float:
            # orjson reads integers beyond 64 bits as floats: only small whole
            # floats are surely what was sent; the rest is parsed again precisely
            if not v.is_integer():
                raise DecodeError(f"invalid {label} {v!r}: not a whole number")
            if not -_TWO53 < v < _TWO53:
                raise _Imprecise
            n = int(v)
        else:
            raise DecodeError(f"expected {label} (number or numeric string), got {_kind(v)}")
        if n < lo or n > hi:
            raise DecodeError(f"{label} out of range: {_shown_value(v)}")
        return n

    return conv


_d_int32 = _make_int(-(2**31), 2**31 - 1, "int32")
_d_uint32 = _make_int(0, 2**32 - 1, "uint32")
_d_int64 = _make_int(-(2**63), 2**63 - 1, "int64")
_d_uint64 = _make_int(0, 2**64 - 1, "uint64")
_FLT_MAX = 3.4028234663852886e38
_SPECIAL_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float_any(v: Any, label: str) -> float:
    t = type(v)
    if t is float or t is _Sent:
        return v
    if t is int:
        try:
            return float(v)
        except OverflowError:
            raise DecodeError(f"{label} out of range: {v}") from None
    if t is str:
        s = _SPECIAL_IN.get(v)
        if s is not None:
            return s
        if not _JSON_NUMBER.match(v):
            raise DecodeError(f"invalid {label} {v!r}")
        f = float(v)
        if math.isinf(f):
            raise DecodeError(f"{label} out of range: {v}")
        return f
    raise DecodeError(f"expected {label} (number or numeric string), got {_kind(v)}")


def _d_double(v: Any) -> float:
    if type(v) is float:
        return v
    return _float_any(v, "double")


def _d_float(v: Any) -> float:
    f = v if type(v) is float else _float_any(v, "float")
    if (f > _FLT_MAX or f < -_FLT_MAX) and not math.isinf(f):
        # protojson rejects finite numbers that overflow float32 (struct
        # refuses exactly those; values that round down to FLT_MAX pass)
        try:
            struct.pack("<f", f)
        except OverflowError:
            raise DecodeError(f"float out of range: {_shown_value(v)}") from None
    return f


def _d_bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    raise DecodeError(f"expected boolean, got {_kind(v)}")


def _d_string(v: Any) -> str:
    if type(v) is str:
        return v
    raise DecodeError(f"expected string, got {_kind(v)}")


def _d_bytes(v: Any) -> bytes:
    if type(v) is not str:
        raise DecodeError(f"expected base64 string, got {_kind(v)}")
    s = v.rstrip("=")
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("invalid base64 data") from None


def _key_int(lo: int, hi: int, label: str) -> Callable[[str], int]:
    conv = _make_int(lo, hi, label)

    def key(k: str) -> int:
        if not _PLAIN_INT.match(k):
            raise DecodeError(f"invalid {label} map key {k!r}")
        return conv(int(k))

    return key


def _key_bool(k: str) -> bool:
    if k == "true":
        return True
    if k == "false":
        return False
    raise DecodeError(f"invalid bool map key {k!r}")


def _key_str(k: str) -> str:
    return k


def _make_enum(enum: EnumDescriptor) -> Callable[[Any], int]:
    names = {v.name: v.number for v in enum.values}
    label = enum.full_name
    number = _make_int(-(2**31), 2**31 - 1, f"enum {label} value")

    def conv(v: Any) -> int:
        if type(v) is str:
            n = names.get(v)
            if n is None:
                raise _Skip  # unknown name: dropped, as DiscardUnknown does
            return n
        if type(v) is int or type(v) is float or type(v) is _Sent:
            return number(v)
        raise DecodeError(f"expected enum {label} name or number, got {_kind(v)}")

    return conv


def _list_of(conv: Callable[[Any], Any], skip_unknown: bool) -> Callable[[Any], list]:
    """A repeated field: a JSON array whose elements all convert (no nulls)."""

    def fail(v: list) -> None:
        for i, x in enumerate(v):
            try:
                if x is None:
                    raise DecodeError("null is not allowed in a repeated field")
                conv(x)
            except _Skip:
                continue
            except DecodeError as e:
                e.path.append(f"[{i}]")
                raise
        raise DecodeError("invalid repeated field")  # pragma: no cover - defensive

    if skip_unknown:
        def conv_list(v: Any) -> list:
            if type(v) is not list:
                raise DecodeError(f"expected array, got {_kind(v)}")
            out = []
            for x in v:
                try:
                    out.append(conv(x))
                except _Skip:
                    continue
                except DecodeError:
                    fail(v)
            return out
    else:
        def conv_list(v: Any) -> list:
            if type(v) is not list:
                raise DecodeError(f"expected array, got {_kind(v)}")
            try:
                return [conv(x) for x in v]
            except (DecodeError, TypeError, AttributeError):
                fail(v)
                raise

    return conv_list


def _map_of(kconv: Callable[[str], Any], vconv: Callable[[Any], Any],
            keys: list[int]) -> Callable[[Any], dict]:
    """A map field: a JSON object; ``keys`` counts the entries seen (see ``from_json``)."""

    def conv_map(v: Any) -> dict:
        if type(v) is not dict:
            if type(v) is _DupDict:
                raise DecodeError(f"duplicate map key {_shown_value(v.dups[0])}")
            raise DecodeError(f"expected object (map), got {_kind(v)}")
        keys[0] += len(v)
        out = {}
        for k, x in v.items():
            try:
                if x is None:
                    raise DecodeError("null is not allowed as a map value")
                out[kconv(k)] = vconv(x)
            except _Skip:
                continue
            except DecodeError as e:
                e.path.append(f"[{k!r}]")
                raise
        return out

    return conv_map


def _bad_list(v: Any) -> list:
    raise DecodeError(f"expected array, got {_kind(v)}")


def _wrap_unexpected(e: Exception, key: str) -> DecodeError:
    err = DecodeError(str(e) or type(e).__name__)
    err.path.append(key)
    return err


# Names the generated code may use, besides the per-pool converters.
_BASE_NS: dict[str, Any] = {
    "_f64": _f64, "_f32": _f32, "_F64": _f64_cache, "_F32": _f32_cache, "_b64": _b64,
    "_str": str, "_list": list,
    "_map": map, "_sorted": sorted, "_dict": dict, "_kind": _kind, "_null": lambda _v: None,
    "_DecodeError": DecodeError, "_Skip": _Skip, "_wrap": _wrap_unexpected,
    "_d_int32": _d_int32, "_d_uint32": _d_uint32, "_d_int64": _d_int64,
    "_d_uint64": _d_uint64, "_d_float": _d_float, "_d_double": _d_double,
    "_d_bool": _d_bool, "_d_string": _d_string, "_d_bytes": _d_bytes,
    "_key_str": _key_str, "_key_bool": _key_bool,
    "_key_int32": _key_int(-(2**31), 2**31 - 1, "int32"),
    "_key_uint32": _key_int(0, 2**32 - 1, "uint32"),
    "_key_int64": _key_int(-(2**63), 2**63 - 1, "int64"),
    "_key_uint64": _key_int(0, 2**64 - 1, "uint64"),
    "_list_of": _list_of, "_map_of": _map_of, "_Refused": _Refused,
    "_bad_list": _bad_list, "_strt": str, "_int": int, "_float": float,
    "_DupDict": _DupDict, "_shown": _shown_value,
}


# ---------------------------------------------------------------------------
# code generation
# ---------------------------------------------------------------------------
def _ident(full_name: str) -> str:
    return full_name.replace(".", "_")


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


if hasattr(FieldDescriptor, "is_repeated"):
    def is_repeated(f: FieldDescriptor) -> bool:
        return f.is_repeated
else:  # protobuf < 5.28 has only the label (removed in 7.x)
    def is_repeated(f: FieldDescriptor) -> bool:
        return f.label == _F.LABEL_REPEATED


class Transcoder:
    """Compiled converters for every message type of one descriptor pool.

    One instance per descriptor load; a reload builds a new one, so the
    generated namespace never mixes two generations of descriptors.
    """

    def __init__(self) -> None:
        self._ns: dict[str, Any] = dict(_BASE_NS)
        # JSON object keys the compiled decoders have seen, for the duplicate check
        self._keys: list[int] = [0]
        self._ns["_k"] = self._keys
        self._compiled: set[str] = set()
        self._codecs: dict[str, MessageCodec] = {}
        self._syntaxes: dict[str, str] = {}

    # -- public ---------------------------------------------------------
    def codec(self, desc: Descriptor) -> "MessageCodec":
        """The codec of ``desc``; its converters are compiled when first used.

        A method table names hundreds of message types, most of which a
        given gateway never converts: compiling them all at load would cost
        a quarter of a second and several MB for nothing.
        """
        c = self._codecs.get(desc.full_name)
        if c is None:
            c = self._codecs[desc.full_name] = MessageCodec(
                desc, message_factory.GetMessageClass(desc), self)
        return c

    def functions(self, desc: Descriptor) -> tuple[Callable, Callable, Callable]:
        """The encoder, fast decoder and strict decoder of ``desc``, compiled if need be."""
        name = _ident(desc.full_name)
        if "e_" + name not in self._ns:
            self._compile(desc)
        return self._ns["e_" + name], self._ns["d_" + name], self._ns["v_" + name]

    @property
    def message_types(self) -> int:
        return len(self._compiled)

    # -- compile --------------------------------------------------------
    def _compile(self, root: Descriptor) -> None:
        """Compile ``root`` and every message type reachable from it.

        Functions of one batch refer to each other by global name, so they are
        all defined first; the tables and list/map helpers, which hold direct
        references to decoder functions, are built once the batch exists.
        """
        pending, batch = [root], []
        while pending:
            d = pending.pop()
            if d.full_name in self._compiled:
                continue
            self._compiled.add(d.full_name)
            batch.append(d)
            if d.full_name.startswith(_WKT_PREFIX):
                continue
            for f in d.fields:
                if f.message_type is not None:
                    pending.append(f.message_type)
        late: list[str] = []
        for d in batch:
            if d.full_name.startswith(_WKT_PREFIX):
                self._compile_wkt(d)
                continue
            strict_src, strict_late = self._strict_decoder_source(d)
            fast_src, fast_late = self._fast_decoder_source(d)
            src = "\n".join((self._encoder_source(d), strict_src, fast_src))
            exec(compile(src, f"<transcode {d.full_name}>", "exec"), self._ns)
            late += (strict_late, fast_late)
        if late:
            exec(compile("\n".join(late), "<transcode tables>", "exec"), self._ns)

    def _compile_wkt(self, d: Descriptor) -> None:
        """Well-known types have special JSON forms; json_format knows them all.

        OpenCue's protos use none, so this path only serves foreign descriptors
        loaded by reflection or --proto-path, and speed matters less there.
        """
        cls = message_factory.GetMessageClass(d)
        name = _ident(d.full_name)

        def enc(m: Message) -> Any:
            return json_format.MessageToDict(
                m, preserving_proto_field_name=False, always_print_fields_with_no_presence=True
            )

        def dec(v: Any) -> Message:
            m = cls()
            try:
                json_format.ParseDict(v, m, ignore_unknown_fields=True)
            except json_format.ParseError as e:
                raise DecodeError(str(e)) from None
            return m

        self._ns["e_" + name] = enc
        self._ns["d_" + name] = self._ns["v_" + name] = dec

    def _syntax(self, d: Descriptor) -> str:
        """'proto2', 'proto3' or 'editions' of the file declaring ``d``."""
        name = d.file.name
        syntax = self._syntaxes.get(name)
        if syntax is None:
            proto = descriptor_pb2.FileDescriptorProto()
            d.file.CopyToProto(proto)
            syntax = self._syntaxes[name] = proto.syntax or "proto2"
        return syntax

    def _enum_names(self, enum: EnumDescriptor) -> str:
        key = "EN_" + _ident(enum.full_name)
        if key not in self._ns:
            self._ns[key] = _EnumNames({v.number: v.name for v in reversed(enum.values)})
        return key

    def _enum_values(self, enum: EnumDescriptor) -> str:
        key = "EV_" + _ident(enum.full_name)
        if key not in self._ns:
            self._ns[key] = {v.name: v.number for v in enum.values}
        return key

    def _enum_conv(self, enum: EnumDescriptor) -> str:
        key = "ED_" + _ident(enum.full_name)
        if key not in self._ns:
            self._ns[key] = _make_enum(enum)
        return key

    # -- encoder --------------------------------------------------------
    def _enc_value(self, f: FieldDescriptor, x: str) -> str:
        """Expression turning one singular value ``x`` of field ``f`` into JSON."""
        t = f.type
        if t in _INT64_TYPES or t in _UINT64_TYPES:
            return f"_str({x})"
        if t == _F.TYPE_ENUM and f.enum_type.full_name == _NULL_VALUE:
            return "None"  # proto3 JSON: google.protobuf.NullValue is always null
        if t == _F.TYPE_ENUM:
            return f"{self._enum_names(f.enum_type)}[{x}]"
        if t == _F.TYPE_FLOAT:
            return f"_F32[{x}]"
        if t == _F.TYPE_DOUBLE:
            return f"_F64[{x}]"
        if t == _F.TYPE_BYTES:
            return f"_b64({x})"
        if t in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            return f"e_{_ident(f.message_type.full_name)}({x})"
        return x  # string, bool, 32-bit integers are JSON-native

    def _enc_fn(self, f: FieldDescriptor) -> str | None:
        """A callable name for map() over a repeated field, None for identity."""
        t = f.type
        if t in _INT64_TYPES or t in _UINT64_TYPES:
            return "_str"
        if t == _F.TYPE_ENUM and f.enum_type.full_name == _NULL_VALUE:
            return "_null"
        if t == _F.TYPE_ENUM:
            return self._enum_names(f.enum_type) + ".__getitem__"
        if t == _F.TYPE_FLOAT:
            return "_f32"
        if t == _F.TYPE_DOUBLE:
            return "_f64"
        if t == _F.TYPE_BYTES:
            return "_b64"
        if t in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            return "e_" + _ident(f.message_type.full_name)
        return None

    def _enc_field(self, f: FieldDescriptor) -> str:
        plain = f.name.isidentifier() and not keyword.iskeyword(f.name)
        attr = f"m.{f.name}" if plain else f"getattr(m, {f.name!r})"
        if _is_map(f):
            entry = f.message_type
            kf, vf = entry.fields_by_name["key"], entry.fields_by_name["value"]
            if kf.type == _F.TYPE_BOOL:
                key = "('true' if k else 'false')"
            elif kf.type == _F.TYPE_STRING:
                key = "k"
            else:
                key = "_str(k)"
            # Go orders map entries by key: strings by code point, numbers numerically.
            return f"{{{key}: {self._enc_value(vf, 'v')} for k, v in _sorted({attr}.items())}}"
        if is_repeated(f):
            fn = self._enc_fn(f)
            return f"_list({attr})" if fn is None else f"_list(_map({fn}, {attr}))"
        if f.message_type is not None or (
            f.containing_oneof is None and self._syntax(f.containing_type) == "proto2"
        ):
            # unset messages, and unset proto2 scalars, print null under EmitUnpopulated
            return f"({self._enc_value(f, attr)} if m.HasField({f.name!r}) else None)"
        return self._enc_value(f, attr)

    def _encoder_source(self, d: Descriptor) -> str:
        fn = "e_" + _ident(d.full_name)
        items = ", ".join(f"{f.json_name!r}: {self._enc_field(f)}" for f in d.fields)
        lines = [f"def {fn}(m):", f"    d = {{{items}}}"]
        # oneof members (proto3 `optional` included) appear only when set;
        # building them in place and deleting keeps declaration order.
        for o in d.oneofs:
            members = list(o.fields)
            if len(members) == 1:
                f = members[0]
                lines.append(f"    if not m.HasField({f.name!r}): del d[{f.json_name!r}]")
            else:
                lines.append(f"    w = m.WhichOneof({o.name!r})")
                for f in members:
                    lines.append(f"    if w != {f.name!r}: del d[{f.json_name!r}]")
        lines.append("    return d")
        return "\n".join(lines) + "\n"

    # -- decoder --------------------------------------------------------
    def _dec_scalar(self, f: FieldDescriptor, msg_prefix: str = "v_") -> str:
        """Name of the checking converter for one value of ``f``."""
        t = f.type
        if t in _INT32_TYPES:
            return "_d_int32"
        if t in _UINT32_TYPES:
            return "_d_uint32"
        if t in _INT64_TYPES:
            return "_d_int64"
        if t in _UINT64_TYPES:
            return "_d_uint64"
        if t == _F.TYPE_FLOAT:
            return "_d_float"
        if t == _F.TYPE_DOUBLE:
            return "_d_double"
        if t == _F.TYPE_BOOL:
            return "_d_bool"
        if t == _F.TYPE_STRING:
            return "_d_string"
        if t == _F.TYPE_BYTES:
            return "_d_bytes"
        if t == _F.TYPE_ENUM:
            return self._enum_conv(f.enum_type)
        return msg_prefix + _ident(f.message_type.full_name)

    def _map_key(self, kf: FieldDescriptor) -> str:
        t = kf.type
        if t == _F.TYPE_STRING:
            return "_key_str"
        if t == _F.TYPE_BOOL:
            return "_key_bool"
        label = {**{x: "int32" for x in _INT32_TYPES}, **{x: "uint32" for x in _UINT32_TYPES},
                 **{x: "int64" for x in _INT64_TYPES}, **{x: "uint64" for x in _UINT64_TYPES}}[t]
        return "_key_" + label

    def _strict_decoder_source(self, d: Descriptor) -> tuple[str, str]:
        """Source of ``v_<T>`` and, separately, of its table and helpers.

        The strict decoder checks every value itself and records the JSON path
        of the first bad one. It runs only when the fast decoder or the upb
        constructor refused a body, to say precisely why.
        """
        name = _ident(d.full_name)
        fn, table = "v_" + name, "T_" + name
        entries: dict[str, str] = {}
        late: list[str] = []
        for i, f in enumerate(d.fields):
            if _is_map(f):
                entry = f.message_type
                conv = f"_m_{name}_{i}"
                late.append(
                    f"{conv} = _map_of({self._map_key(entry.fields_by_name['key'])}, "
                    f"{self._dec_scalar(entry.fields_by_name['value'])}, _k)"
                )
            elif is_repeated(f):
                conv = f"_l_{name}_{i}"
                late.append(
                    f"{conv} = _list_of({self._dec_scalar(f)}, {f.type == _F.TYPE_ENUM})"
                )
            else:
                conv = self._dec_scalar(f)
            # both spellings map to the proto name, the constructor's keyword
            entries[f.name] = f"({f.name!r}, {conv})"
            entries.setdefault(f.json_name, f"({f.name!r}, {conv})")
        late.append(
            f"{table} = {{" + ", ".join(f"{k!r}: {v}" for k, v in entries.items()) + "}"
        )
        src = (
            f"def {fn}(o):\n"
            f"    d = None\n"
            f"    if type(o) is not _dict:\n"
            f"        if type(o) is not _DupDict:\n"
            f"            raise _DecodeError('expected object, got ' + _kind(o))\n"
            f"        d = o.dups\n"
            f"    _k[0] += len(o)\n"
            f"    t = {table}\n"
            f"    kw = {{}}\n"
            f"    for k, v in o.items():\n"
            f"        e = t.get(k)\n"
            f"        if e is None:\n"
            f"            continue\n"
            f"        if d is not None and k in d:\n"
            f"            raise _DecodeError('duplicate field ' + _shown(k))\n"
            f"        if v is None:\n"
            f"            continue\n"
            f"        n = e[0]\n"
            f"        if n in kw:\n"
            f"            raise _DecodeError('field ' + n + ' given twice (JSON and proto name)')\n"
            f"        try:\n"
            f"            kw[n] = e[1](v)\n"
            f"        except _Skip:\n"
            f"            continue\n"
            f"        except _DecodeError as x:\n"
            f"            x.path.append(k)\n"
            f"            raise\n"
            f"        except (TypeError, ValueError, AttributeError) as x:\n"
            f"            raise _wrap(x, k) from None\n"
        )
        src += self._oneof_checks(d) + "    return kw\n"
        return src, "\n".join(late)

    @staticmethod
    def _oneof_checks(d: Descriptor) -> str:
        src = ""
        for o in d.oneofs:
            members = tuple(f.name for f in o.fields)
            if len(members) > 1:
                src += (
                    f"    if sum(1 for x in {members!r} if x in kw) > 1:\n"
                    f"        raise _DecodeError('more than one field of oneof {o.name} is set')\n"
                )
        return src

    def _fast_value(self, f: FieldDescriptor, helper: str) -> list[str]:
        """Statements storing ``kw[<name>]`` from the JSON value ``v``.

        Only the common JSON shapes are handled inline. Values whose checks
        upb makes itself when the message is built (str for string fields, int
        with range for integer fields) pass straight through: if upb refuses
        one, the strict decoder runs and names the offending path. Any other
        input a strict decoder would refuse must raise here too.
        """
        n = repr(f.name)
        t = f.type
        if _is_map(f):
            return [f"kw[{n}] = {helper}(v)"]
        if is_repeated(f):
            if t == _F.TYPE_STRING:
                return [f"kw[{n}] = v if type(v) is _list else _bad_list(v)"]
            if t in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
                sub = "d_" + _ident(f.message_type.full_name)
                return [f"kw[{n}] = [{sub}(x) for x in v] if type(v) is _list else _bad_list(v)"]
            return [f"kw[{n}] = {helper}(v)"]
        if t == _F.TYPE_STRING:
            return [f"kw[{n}] = v"]  # upb refuses any non-str (JSON has no bytes)
        if t == _F.TYPE_BOOL:  # upb would take 0/1 for a bool, protojson does not
            return [f"kw[{n}] = v if (v is True or v is False) else _d_bool(v)"]
        if t in _INT64_TYPES or t in _UINT64_TYPES:
            # int64 arrives as a decimal string (it is how we and Go print it);
            # plain positive digits are converted inline, the rest checked
            return [
                "if type(v) is _strt:",
                "    if v.isdigit() and v.isascii() and (v[0] != '0' or v == '0'):",
                f"        kw[{n}] = _int(v)",
                f"    else: kw[{n}] = {self._dec_scalar(f)}(v)",
                f"else: kw[{n}] = v",
            ]
        if t in _INT32_TYPES or t in _UINT32_TYPES:
            # upb takes ints only (no bool, float or str) and checks the range
            return [f"kw[{n}] = v"]
        if t == _F.TYPE_DOUBLE:
            return [f"kw[{n}] = v if type(v) is _float else _d_double(v)"]
        if t == _F.TYPE_ENUM:
            names = self._enum_values(f.enum_type)
            return [
                "if type(v) is _strt:",
                f"    x = {names}.get(v)",
                f"    if x is not None: kw[{n}] = x",
                f"else: kw[{n}] = {self._enum_conv(f.enum_type)}(v)",
            ]
        if t in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            return [f"kw[{n}] = d_{_ident(f.message_type.full_name)}(v)"]
        return [f"kw[{n}] = {self._dec_scalar(f)}(v)"]  # float, bytes

    def _fast_decoder_source(self, d: Descriptor) -> tuple[str, str]:
        """Source of ``d_<T>``, the decoder every request runs.

        It visits the message's fields (a dict lookup each) rather than the
        JSON keys, so unknown keys cost nothing, and it raises on anything
        unusual without explaining: the caller then reruns ``v_<T>``. It must
        never accept what ``v_<T>`` rejects, and must build the same result.
        It adds the number of keys of each object it visits to ``_k[0]``, for
        the duplicate-key check of ``MessageCodec.from_json``.
        """
        name = _ident(d.full_name)
        lines = [
            f"def d_{name}(o):",
            "    if type(o) is not _dict: raise _Refused",
            "    _k[0] += len(o)",
            "    kw = {}",
            "    g = o.get",
        ]
        for i, f in enumerate(d.fields):
            helper = f"_{'m' if _is_map(f) else 'l'}_{name}_{i}"
            lines.append(f"    v = g({f.json_name!r})")
            if f.json_name != f.name:
                lines.append("    if v is None:")
                lines.append(f"        v = g({f.name!r})")
                lines.append(f"    elif {f.name!r} in o: raise _Refused")
            lines.append("    if v is not None:")
            lines += ["        " + x for x in self._fast_value(f, helper)]
        return "\n".join(lines) + "\n" + self._oneof_checks(d) + "    return kw\n", ""


class MessageCodec:
    """Both directions for one message type; the per-request entry points."""

    __slots__ = ("descriptor", "full_name", "cls", "_transcoder", "_enc", "_dec", "_strict",
                 "_keys", "_empty_ok")

    def __init__(self, descriptor: Descriptor, cls: type[Message],
                 transcoder: Transcoder) -> None:
        self.descriptor = descriptor
        self.full_name = descriptor.full_name
        self.cls = cls
        self._transcoder = transcoder
        self._keys = transcoder._keys  # JSON object keys its decoders have seen
        # ``{}`` is the empty message, unless a proto2 field is required
        self._empty_ok = not any(f.is_required for f in descriptor.fields)
        # first use compiles, then these are the generated functions themselves
        self._enc: Callable[[Message], dict] = self._first_enc
        self._dec: Callable[[Any], dict] = self._first_dec
        self._strict: Callable[[Any], dict] = self._first_strict

    def compile(self) -> "MessageCodec":
        self._enc, self._dec, self._strict = self._transcoder.functions(self.descriptor)
        return self

    def _first_enc(self, msg: Message) -> dict:
        return self.compile()._enc(msg)

    def _first_dec(self, obj: Any) -> dict:
        return self.compile()._dec(obj)

    def _first_strict(self, obj: Any) -> dict:
        return self.compile()._strict(obj)

    # wire -> JSON
    def to_obj(self, msg: Message) -> dict:
        return self._enc(msg)

    def to_json(self, wire: bytes) -> bytes:
        try:
            msg = self.cls.FromString(wire)
        except WireDecodeError as e:
            raise EncodeError(f"cannot parse {self.full_name} from the backend: {e}") from None
        return orjson.dumps(self._enc(msg))

    # JSON -> wire
    def from_obj(self, obj: Any) -> Message:
        """The request message for a JSON value built in code, or DecodeError naming the path."""
        if type(obj) is not dict:
            raise DecodeError(f"request body must be a JSON object, got {_kind(obj)}")
        try:
            return self.cls(**self._dec(obj))
        except Exception:  # noqa: BLE001 - anything refused is re-examined below
            pass
        return self._checked(obj)

    def _checked(self, obj: Any) -> Message:
        """The strict decoder's verdict: the message, or DecodeError with the JSON path."""
        try:
            kw = self._strict(obj)
            return self.cls(**kw)
        except _Imprecise:  # a float from code at an integer field, beyond 2**53
            raise DecodeError(f"invalid {self.full_name}: an integer field holds a float "
                              "too large to be exact") from None
        except RecursionError:
            raise DecodeError(f"invalid {self.full_name}: nested too deeply") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, DecodeError):
                raise
            raise DecodeError(f"invalid {self.full_name}: {e}") from None

    def from_json(self, body: bytes) -> bytes:
        """Request JSON to wire bytes: the fast path, or the precise one when it must.

        The fast path is orjson and the compiled decoder. orjson keeps the last
        of duplicate keys and reads integers beyond 64 bits as rounded floats,
        so two cheap checks decide whether its reading can be trusted. Every
        key of a JSON object is followed by exactly one colon, and other colons
        occur only inside strings: if the decoders saw as many keys as the body
        has colons, no key was dropped. Otherwise (a colon inside a string, say)
        the colons orjson writes for what it read are compared with the body's:
        equal means none was dropped, unless a colon was sent escaped
        (``\\u003a``). Floats at integer fields refuse the fast path themselves.

        Anything in doubt or refused goes to the precise path: the standard
        library's parser keeping every key and the digits of every number, and
        the strict decoder saying what is wrong (a duplicate field, an integer
        out of range quoted as sent, the JSON path of a bad value).
        """
        if not body or body.isspace():
            return b""  # empty body = empty message, as grpc-gateway
        if body == b"{}" and self._empty_ok:
            return b""  # what the rest would make of it, for the commonest body of all
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise DecodeError(f"malformed JSON: {e}") from None
        if type(obj) is not dict:
            raise DecodeError(f"request body must be a JSON object, got {_kind(obj)}")
        keys = self._keys
        keys[0] = 0
        try:
            msg = self.cls(**self._dec(obj))
            colons = body.count(b":")
            if keys[0] == colons or _same_colons(obj, body, colons):
                return msg.SerializeToString()
        except Exception:  # noqa: BLE001 - refused or in doubt: the precise path decides
            pass
        with _deep_enough():
            return self._wire(self._checked(_precise_loads(body)))

    def _wire(self, msg: Message) -> bytes:
        try:
            return msg.SerializeToString()
        except WireEncodeError:  # proto2 required fields unset, or nesting upb refuses
            missing = msg.FindInitializationErrors()
            if not missing:
                raise DecodeError(f"invalid {self.full_name}: nested too deeply") from None
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more"
                                             if len(missing) > 5 else "")
            raise DecodeError(f"missing required field(s): {shown}") from None


def _same_colons(obj: Any, body: bytes, colons: int) -> bool:
    """Whether orjson, writing what it read, writes as many colons as the body has.

    Then no key was dropped (see ``MessageCodec.from_json``); an escaped colon
    in the body, or nesting deeper than orjson writes, leaves it undecided.
    """
    if b"\\u003" in body:
        return False
    try:
        return orjson.dumps(obj).count(b":") == colons
    except TypeError:  # orjson's own recursion limit
        return False


_PRECISE_RECURSION = 5000


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    """One JSON object of the precise parse; duplicate keys are remembered, not lost."""
    d = dict(pairs)
    if len(d) == len(pairs):
        return d
    seen: set[str] = set()
    dups: list[str] = []
    for k, _v in pairs:
        if k in seen and k not in dups:
            dups.append(k)
        seen.add(k)
    out = _DupDict(d)
    out.dups = tuple(dups)
    return out


@contextmanager
def _deep_enough() -> Iterator[None]:
    """Room for the nesting orjson accepts (1024 levels) in the precise path's recursion."""
    limit = sys.getrecursionlimit()
    if limit < _PRECISE_RECURSION:
        sys.setrecursionlimit(_PRECISE_RECURSION)
    try:
        yield
    finally:
        if limit < _PRECISE_RECURSION:
            sys.setrecursionlimit(limit)


def _precise_loads(body: bytes) -> Any:
    """The body as sent: every key of every object, every number's digits."""
    try:
        return json.loads(body, object_pairs_hook=_pairs, parse_float=_Sent)
    except RecursionError:
        raise DecodeError("malformed JSON: nested too deeply") from None
    except ValueError as e:  # orjson accepted it; kept for safety
        raise DecodeError(f"malformed JSON: {e}") from None
