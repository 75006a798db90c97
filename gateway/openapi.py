"""The OpenAPI 3.0 document of the running gateway, generated from its method table.

The six ``/api`` operations of the OpenAPI seed first (what a newcomer on
``/docs`` looks for), then one ``POST`` path per exposed RPC, grouped by
service, summarised by its request and reply types and, when the descriptors
carry source info, its ``.proto`` comment; its schemas derived from the
loaded message descriptors with the proto3 JSON mapping the transcoder
implements (64-bit integers as strings, enums by name, unset messages as
``null``); the bearer scheme.

A message gets two schemas: ``pkg.Msg`` describes it as the gateway prints
it (every non-oneof field present, so all are required) and ``pkg.Msg-in``
as a client may send it (nothing required, unknown keys ignored). ``-`` cannot
occur in a proto name, so the two never collide with a real message.

OpenAPI 3.0 has no null type, and ``nullable`` only counts next to a ``type``
in the same schema, so ``{"allOf": [ref], "nullable": true}`` still refuses
null in a strict validator. An unset message field is therefore
``anyOf: [ref, <only null>]``. Enums print by name, but a value the loaded
descriptors do not name prints as its number (proto3 JSON), as happens when
Cuebot is newer than the descriptors, so replies allow both.

The document (and its gzip form) is built once per method table: at start-up
for the first table, and cached with any later one on its first use, so a
descriptor reload yields a new document and no request pays for it twice.
"""
from __future__ import annotations

import gzip
import hashlib
import weakref
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from aiohttp import web
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from . import __version__, static
from .compression import accepts_gzip
from .routes import MethodTable
from .state import STATE
from .transcode import is_repeated

T = FieldDescriptor
_INT64 = {T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64, T.TYPE_UINT64, T.TYPE_FIXED64}
_INT32 = {T.TYPE_INT32: ("int32", -(2**31), 2**31 - 1), T.TYPE_SINT32: ("int32", -(2**31), 2**31 - 1),
          T.TYPE_SFIXED32: ("int32", -(2**31), 2**31 - 1), T.TYPE_UINT32: ("int64", 0, 2**32 - 1),
          T.TYPE_FIXED32: ("int64", 0, 2**32 - 1)}
_SPECIAL_FLOATS = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}

# proto3 JSON forms of the well-known types (OpenCue uses none; foreign descriptors may)
_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}},
                            "additionalProperties": True},
    "google.protobuf.DoubleValue": {"oneOf": [{"type": "number", "format": "double"},
                                              _SPECIAL_FLOATS]},
    "google.protobuf.FloatValue": {"oneOf": [{"type": "number", "format": "float"},
                                             _SPECIAL_FLOATS]},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}

_ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error: the gRPC status code and Cuebot's (or the gateway's) message.",
    "required": ["error", "code", "message", "details"],
    "properties": {
        "error": {"type": "string", "description": "the message (the REST reference's key)"},
        "code": {"type": "integer", "description": "gRPC status code"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
    },
}

# accepts null and nothing else (see the module docstring)
_NULL_ONLY = {"type": "object", "nullable": True, "enum": [None]}


@dataclass(frozen=True)
class Served:
    """The document of one table as it goes out: plain, gzipped, and a digest for ETags."""

    body: bytes
    gzipped: bytes
    digest: str


_cache: "weakref.WeakKeyDictionary[MethodTable, Served]" = weakref.WeakKeyDictionary()


def served(table: MethodTable) -> Served:
    """The serialized document for ``table``, built once."""
    out = _cache.get(table)
    if out is None:
        body = orjson.dumps(document(table))
        out = Served(body, gzip.compress(body, 6, mtime=0),
                     hashlib.sha256(body).hexdigest()[:32])
        _cache[table] = out
    return out


def document_bytes(table: MethodTable) -> bytes:
    """The serialized document for ``table``, built once."""
    return served(table).body


def prepare(table: MethodTable) -> None:
    """Do now what a table's first /api or /openapi.json request would otherwise do."""
    from .resources import bind

    bind(table)
    served(table)


def document(table: MethodTable) -> dict[str, Any]:
    """The whole document for ``table``; costly (every reachable message), so see ``served``."""
    from .resources import api_paths, api_schemas

    schemas = _Schemas()
    notes = comments(table.descriptors.files)
    # Swagger UI lists tags, and operations within them, in document order: the six
    # /api operations first, then each service's RPCs together (paths sort by service)
    paths: dict[str, Any] = dict(api_paths(table))
    for path, route in sorted(table.routes.items()):
        req = schemas.ref(route.request.descriptor, output=False)
        rep = schemas.ref(route.response.descriptor, output=True)
        types = f"{route.request.descriptor.full_name} → {route.response.descriptor.full_name}"
        note = notes.get(f"{route.service}.{route.method}")
        op: dict[str, Any] = {
            "operationId": f"{route.service}.{route.method}",
            "tags": [route.service],
            "summary": f"{types}: {_first_line(note)}" if note else types,
        }
        if note:
            op["description"] = _markdown_text(note)
        op["requestBody"] = {"required": False,
                             "content": {"application/json": {"schema": req}}}
        op["responses"] = {"200": _content("the RPC's reply", rep), **_error_responses()}
        paths[path] = {"post": op}
    components = {
        "schemas": {**dict(sorted(schemas.done.items())), **api_schemas(),
                    "ErrorResponse": _ERROR_SCHEMA},
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "OpenCue gateway",
            "version": __version__,
            # in a code span: Swagger UI renders descriptions as Markdown with HTML, and
            # would swallow <package.Service> and <Method> as unknown tags
            "description": (
                "The resource API under `/api`, then every exposed Cuebot RPC at "
                "`POST /<package.Service>/<Method>` (proto3 JSON in and out, as OpenCue's Go "
                "gateway), grouped by service. "
                f"Generated from the loaded descriptors (version {table.version})."),
        },
        "security": [{"bearerAuth": []}],
        "tags": [{"name": "Resources", "description": "OpenCue's REST resources: plain GETs "
                  "for dashboards"}]
        + [_tag(s, notes.get(s)) for s in table.services],
        "paths": paths,
        "components": components,
    }


def comments(files: Any) -> dict[str, str]:
    """Leading (else trailing) comments of services and methods, by full name.

    Only descriptors that carry source info have them: a ``--proto-path``
    folder, or a set written with ``protoc --include_source_info``; the
    bundled set and reflection do not.
    """
    out: dict[str, str] = {}
    for f in files:
        if not f.HasField("source_code_info"):
            continue
        prefix = f"{f.package}." if f.package else ""
        for loc in f.source_code_info.location:
            path = list(loc.path)
            if len(path) not in (2, 4) or path[0] != 6:  # 6: FileDescriptorProto.service
                continue
            if len(path) == 4 and path[2] != 2:  # 2: ServiceDescriptorProto.method
                continue
            text = _clean(loc.leading_comments or loc.trailing_comments)
            if not text:
                continue
            service = f.service[path[1]]
            name = f"{prefix}{service.name}"
            if len(path) == 4:
                name += f".{service.method[path[3]].name}"
            out[name] = text
    return out


def _clean(comment: str) -> str:
    lines = [ln.strip() for ln in comment.strip().splitlines()]
    return "\n".join(lines).strip()


def _first_line(text: str) -> str:
    return _markdown_text(text.split("\n\n", 1)[0].replace("\n", " "))


def _markdown_text(text: str) -> str:
    """A proto comment as literal Markdown text: ``<`` and ``>`` outside code spans escaped."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _tag(service: str, note: str | None) -> dict[str, Any]:
    return {"name": service, "description": _markdown_text(note)} if note else {"name": service}


def _content(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error_responses() -> dict[str, Any]:
    err = {"$ref": "#/components/schemas/ErrorResponse"}
    return {"default": _content("an error, in the gateway's one envelope", err)}


class _Schemas:
    """Component schemas of every message reachable from the routes."""

    def __init__(self) -> None:
        self.done: dict[str, dict[str, Any]] = {}

    def ref(self, desc: Descriptor, *, output: bool) -> dict[str, Any]:
        if desc.full_name in _WKT:
            return dict(_WKT[desc.full_name])
        name = desc.full_name if output else f"{desc.full_name}-in"
        if name not in self.done:
            self.done[name] = {}  # placeholder: recursive messages refer to it
            self.done[name] = self._message(desc, output)
        return {"$ref": f"#/components/schemas/{name}"}

    def _message(self, desc: Descriptor, output: bool) -> dict[str, Any]:
        props: dict[str, Any] = {}
        required: list[str] = []
        for f in desc.fields:
            props[f.json_name] = self._field(f, output)
            if output and f.containing_oneof is None:
                required.append(f.json_name)
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        if not output:
            schema["description"] = ("Field names in lowerCamelCase or as in the .proto; "
                                     "enums by name or number; unknown keys are ignored.")
        return schema

    def _field(self, f: FieldDescriptor, output: bool) -> dict[str, Any]:
        if _is_map(f):
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value, output)}
        if is_repeated(f):
            return {"type": "array", "items": self._single(f, output)}
        one = self._single(f, output)
        if f.type == T.TYPE_MESSAGE and one:  # ({} is Value, null included)
            # an unset message prints as null; a client may send null
            if "type" in one:
                return {**one, "nullable": True}
            return {"anyOf": [one, _NULL_ONLY]}
        return one

    def _single(self, f: FieldDescriptor, output: bool) -> dict[str, Any]:
        t = f.type
        if t == T.TYPE_MESSAGE:
            return self.ref(f.message_type, output=output)
        if t == T.TYPE_ENUM:
            if f.enum_type.full_name == "google.protobuf.NullValue":
                # proto3 JSON writes null; a parser also takes the name or number
                if output:
                    return dict(_NULL_ONLY)
                return {"anyOf": [_NULL_ONLY, {"type": "string", "enum": ["NULL_VALUE"]},
                                  {"type": "integer", "format": "int32"}]}
            names = [v.name for v in f.enum_type.values]
            number = {"type": "integer", "format": "int32",
                      "description": ("a value the loaded descriptors do not name" if output
                                      else "the value's number")}
            return {"oneOf": [{"type": "string", "enum": names}, number]}
        if t in _INT64:
            unsigned = t in (T.TYPE_UINT64, T.TYPE_FIXED64)
            s = {"type": "string", "format": "uint64" if unsigned else "int64",
                 "pattern": r"^[0-9]{1,20}$" if unsigned else r"^-?[0-9]{1,19}$"}
            if output:
                return s
            n = {"type": "integer", "format": "int64", "minimum": 0 if unsigned else -(2**63),
                 "maximum": 2**64 - 1 if unsigned else 2**63 - 1}
            return {"oneOf": [s, n]}
        if t in _INT32:
            fmt, lo, hi = _INT32[t]
            return {"type": "integer", "format": fmt, "minimum": lo, "maximum": hi}
        if t in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
            fmt = "double" if t == T.TYPE_DOUBLE else "float"
            return {"oneOf": [{"type": "number", "format": fmt}, _SPECIAL_FLOATS]}
        if t == T.TYPE_BOOL:
            return {"type": "boolean"}
        if t == T.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        return {"type": "string"}


def _is_map(f: FieldDescriptor) -> bool:
    mt = f.message_type
    return (is_repeated(f) and mt is not None
            and mt.GetOptions().map_entry)



# ---------------------------------------------------------------------------
# serving it
# ---------------------------------------------------------------------------
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>OpenCue gateway API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui",
  persistAuthorization: true});</script>
</body></html>
"""


def add_routes(app: web.Application, table_of: Callable[[web.Request], MethodTable]) -> None:
    """``GET /openapi.json`` and, when the Swagger UI assets are installed, ``/docs``."""

    async def spec(request: web.Request) -> web.Response:
        """The document; gzipped if the client takes it, 304 if it has this version."""
        doc = served(table_of(request))
        zipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        # each representation has its own strong validator
        etag = f'"{doc.digest}-gzip"' if zipped else f'"{doc.digest}"'
        headers = {"ETag": etag, "Vary": "Accept-Encoding", "Cache-Control": "no-cache"}
        if etag in (t.strip() for t in request.headers.get("If-None-Match", "").split(",")):
            return web.Response(status=304, headers=headers)
        if zipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=doc.gzipped if zipped else doc.body,
                            content_type="application/json", headers=headers)

    async def build_first(app: web.Application) -> None:

        if STATE in app:
            prepare(app[STATE].table)

    app.router.add_get("/openapi.json", spec)
    app.on_startup.append(build_first)
    try:
        import swagger_ui_bundle
    except ImportError:  # the page is optional; the document is not
        return

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=_DOCS_PAGE, content_type="text/html")

    app.router.add_get("/docs", page)
    static.add_routes(app, "/docs/static", Path(swagger_ui_bundle.swagger_ui_path))
