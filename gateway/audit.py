"""The audit trail (``AUDIT_LOG``): one JSON line per change made through the gateway.

A line is written for every Cuebot call of an audited method (by default
every method whose name does not start with Get, Find, Is or List;
``AUDIT_METHODS`` widens or narrows that) once Cuebot has answered, and for
every authorization denial. Its fields: ``time``, ``event`` (``call`` or
``denied``), ``request_id``, ``user`` (the token's sub), ``roles``,
``client``, ``method`` (canonical ``package.Service/Method``), ``path`` (as
requested), ``targets``, ``status`` and ``grpc_code`` (Cuebot's answer, as
HTTP status and gRPC code), ``duration_ms``.

``targets`` are read from the request message, never searched for in text:
the id and name of every OpenCue object in it (a ``job.Job``, a
``host.Host``... as whole messages, in ``*Seq`` lists, in search criteria),
and string fields whose names say what they hold (``job_id``, ``allocation_id``,
``hosts``, ``layers``...). How to find them in a message type is worked out
once per type and descriptor load, not per request.

Each line goes to the file with one ``write`` on a descriptor opened with
``O_APPEND``: it reaches the kernel at once (nothing is buffered in the
process, so nothing is lost on shutdown), and lines from several workers
appending to one file never interleave. Values are JSON-escaped, NEL,
U+2028 and their kind included (``logs.json_line_safe``), so no field can
start a line of its own, even for a reader that splits lines on those; the
values decode to exactly what was sent. ``reopen`` (on reload, i.e. SIGHUP) opens
the path again, for logrotate.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import translate
from typing import Callable, Sequence

import grpc
import orjson
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError as WireDecodeError
from google.protobuf.message import Message

from . import errors
from .logs import json_line_safe

log = logging.getLogger("gateway.audit")

READ_PREFIXES = ("Get", "Find", "Is", "List")
MUTATIONS = "mutations"
MAX_TARGETS = 100          # a ReparentJobs of 10,000 jobs still makes one short line
_WARN_EVERY = 30.0
_MODE = 0o640              # user names and ids: not for everyone on the machine

# HTTP status of each gRPC code name, as the client is answered
STATUS_OF = {c.name: errors.HTTP_STATUS.get(c.value[0], 500) for c in grpc.StatusCode}


class AuditError(Exception):
    """The audit log cannot be opened; the message says which and why."""


def is_read(method: str) -> bool:
    """Whether ``package.Service/Method`` names a read (Get*, Find*, Is*, List*)."""
    return method.rpartition("/")[2].startswith(READ_PREFIXES)


class Selection:
    """Which methods AUDIT_METHODS audits: the last item that matches a method decides."""

    def __init__(self, items: Sequence[str] = (MUTATIONS,)) -> None:
        self.items = tuple(items)
        self._rules: list[tuple[bool, Callable[[str], bool]]] = []
        for item in self.items:
            keep = not item.startswith("-")
            pattern = item if keep else item[1:]
            if pattern == MUTATIONS:
                self._rules.append((keep, lambda m: not is_read(m)))
            else:
                self._rules.append((keep, re.compile(translate(pattern.lstrip("/"))).match))
        self._memo: dict[str, bool] = {}

    def __call__(self, method: str) -> bool:
        hit = self._memo.get(method)
        if hit is None:
            hit = False
            for keep, matches in self._rules:
                if matches(method):
                    hit = keep
            if len(self._memo) > 4096:  # methods come from method tables: never many
                self._memo.clear()
            self._memo[method] = hit
        return hit


# ---------------------------------------------------------------------------
# targets: what a request message acts on
# ---------------------------------------------------------------------------
Target = dict[str, str]
Step = Callable[[Message, list[Target]], None]
_MAX_DEPTH = 3
# words of field names that name a kind otherwise
_ALIASES = {"alloc": "allocation", "allocs": "allocation", "dept": "department"}
# OpenCue's objects: a message of one of these names is a target as a whole
KINDS = frozenset({
    "job", "layer", "frame", "host", "show", "group", "proc", "owner", "deed", "allocation",
    "facility", "subscription", "filter", "action", "matcher", "depend", "comment", "limit",
    "service", "service_override", "department", "task", "render_partition",
})


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _kind_of_word(word: str) -> str | None:
    word = _ALIASES.get(word, word)
    if word in KINDS:
        return word
    if word.endswith("s") and word[:-1] in KINDS:
        return word[:-1]
    return None


def _string_kind(field: FieldDescriptor, owner_kind: str | None,
                 top: bool) -> tuple[str, str] | None:
    """(kind, "id" or "name") for a string field whose name says what it holds."""
    name = field.name
    if top and name in ("name", "old_name") and owner_kind:
        return owner_kind, "name"  # Create(name), Rename(old_name, new_name)
    for suffix, what in (("_ids", "id"), ("_id", "id"), ("_names", "name"), ("_name", "name")):
        if name.endswith(suffix):
            kind = _kind_of_word(name[: -len(suffix)])
            if kind is None and what == "id":
                kind = name[: -len(suffix)]  # any x_id is the id of an x
            return (kind, what) if kind else None
    if name in ("ids", "id") and owner_kind:
        return owner_kind, "id"
    kind = _kind_of_word(name)
    return (kind, "name") if kind else None


def _entity_kind(desc: Descriptor) -> str | None:
    """The kind of an OpenCue object message (one with a string id), else None."""
    kind = _snake(desc.name)
    id_field = desc.fields_by_name.get("id")
    if kind in KINDS and id_field is not None and id_field.type == FieldDescriptor.TYPE_STRING:
        return kind
    return None


def _entity_step(name: str, kind: str, desc: Descriptor, repeated: bool) -> Step:
    has_name = "name" in desc.fields_by_name

    def one(sub: Message, out: list[Target]) -> None:
        t = {"kind": kind}
        if sub.id:  # type: ignore[attr-defined]
            t["id"] = sub.id  # type: ignore[attr-defined]
        if has_name and sub.name:  # type: ignore[attr-defined]
            t["name"] = sub.name  # type: ignore[attr-defined]
        if len(t) > 1:
            out.append(t)

    if repeated:
        def step(msg: Message, out: list[Target]) -> None:
            for sub in getattr(msg, name):
                one(sub, out)
    else:
        def step(msg: Message, out: list[Target]) -> None:
            if msg.HasField(name):
                one(getattr(msg, name), out)
    return step


def _nested_step(name: str, steps: list[Step], repeated: bool) -> Step:
    if repeated:
        def step(msg: Message, out: list[Target]) -> None:
            for sub in getattr(msg, name):
                for s in steps:
                    s(sub, out)
    else:
        def step(msg: Message, out: list[Target]) -> None:
            if msg.HasField(name):
                sub = getattr(msg, name)
                for s in steps:
                    s(sub, out)
    return step


def _string_step(name: str, kind: str, what: str, repeated: bool) -> Step:
    if repeated:
        def step(msg: Message, out: list[Target]) -> None:
            for v in getattr(msg, name):
                if v:
                    out.append({"kind": kind, what: v})
    else:
        def step(msg: Message, out: list[Target]) -> None:
            v = getattr(msg, name)
            if v:
                out.append({"kind": kind, what: v})
    return step


def _plan(desc: Descriptor, owner_kind: str | None, depth: int) -> list[Step]:
    """How to read the targets of a message of type ``desc``, field by field."""
    top = depth == 0
    has_entity = any(f.message_type is not None and _entity_kind(f.message_type)
                     for f in desc.fields)
    steps: list[Step] = []
    for f in desc.fields:
        repeated = f.is_repeated
        sub = f.message_type
        if sub is not None:
            if sub.GetOptions().map_entry:
                continue
            kind = _entity_kind(sub)
            if kind is not None:
                steps.append(_entity_step(f.name, kind, sub, repeated))
            elif depth < _MAX_DEPTH:
                # search criteria and *Seq lists: their own words name their kind
                inner = _plan(sub, _criteria_kind(sub) or None, depth + 1)
                if inner:
                    steps.append(_nested_step(f.name, inner, repeated))
        elif f.type == FieldDescriptor.TYPE_STRING:
            if top and has_entity and f.name in ("name", "old_name"):
                continue  # beside an object, a name is a new name, not a target
            found = _string_kind(f, owner_kind, top)
            if found is not None:
                steps.append(_string_step(f.name, found[0], found[1], repeated))
    return steps


def _criteria_kind(desc: Descriptor) -> str | None:
    """``FrameSearchCriteria`` -> frame: the kind whose ``ids`` a nested message lists."""
    words = _snake(desc.name).split("_")
    for n in range(len(words), 0, -1):
        kind = _kind_of_word("_".join(words[:n]))
        if kind is not None:
            return kind
    return None


class Targets:
    """Target extraction per message class, planned at its first use.

    Keyed by the generated message class: a descriptor load makes new
    classes, so each load plans again, once per type, and the plans of a
    replaced method table go with its classes.
    """

    def __init__(self) -> None:
        self._plans: "weakref.WeakKeyDictionary[type, list[Step]]" = (
            weakref.WeakKeyDictionary())

    def plan(self, cls: type[Message], service: str) -> list[Step]:
        steps = self._plans.get(cls)
        if steps is None:
            owner = _kind_of_word(_snake(service.rpartition(".")[2].removesuffix("Interface")))
            steps = _plan(cls.DESCRIPTOR, owner, 0)
            self._plans[cls] = steps
        return steps

    def of_message(self, msg: Message, service: str) -> list[Target]:
        out: list[Target] = []
        for step in self.plan(type(msg), service):
            step(msg, out)
        return _unique(out)

    def of_wire(self, cls: type[Message], data: bytes, service: str) -> list[Target]:
        """The targets of a serialized request; [] if it does not parse."""
        if not self.plan(cls, service):
            return []
        try:
            msg = cls.FromString(data)
        except WireDecodeError:
            return []
        return self.of_message(msg, service)


def _unique(targets: list[Target]) -> list[Target]:
    seen: set[tuple[tuple[str, str], ...]] = set()
    out = []
    for t in targets:
        key = tuple(t.items())
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


# ---------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Record:
    """One audit line's facts."""

    event: str                # "call" or "denied"
    request_id: str
    user: str | None
    roles: tuple[str, ...]
    client: str
    method: str               # package.Service/Method
    path: str
    targets: list[Target]
    status: int
    grpc_code: str
    duration_ms: float


class AuditLog:
    """The JSON-lines file (or standard output) the records are appended to."""

    def __init__(self, target: str, methods: Sequence[str] = (MUTATIONS,)) -> None:
        self.target = target
        self.wants = Selection(methods)
        self.targets = Targets()
        self.lines = 0
        self.failures = 0
        self.on_failure: Callable[[], None] | None = None  # the metrics' counter
        self._warned_at = -_WARN_EVERY
        self._fd = self._open()

    def _open(self) -> int:
        if self.target == "-":
            return sys.stdout.fileno()
        try:
            return os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           _MODE)
        except OSError as e:
            raise AuditError(f"AUDIT_LOG {self.target}: {e.strerror or e}") from None

    def reopen(self) -> None:
        """Open the path again (after logrotate moved the file); keep the old one on failure."""
        if self.target == "-":
            return
        try:
            fd = self._open()
        except AuditError as e:
            log.warning("%s; still writing to the file opened before", e)
            return
        old, self._fd = self._fd, fd
        os.close(old)
        log.info("audit log reopened: %s", self.target)

    def write(self, record: Record) -> None:
        line = orjson.dumps({
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "event": record.event,
            "request_id": record.request_id,
            "user": record.user,
            "roles": list(record.roles),
            "client": record.client,
            "method": record.method,
            "path": record.path,
            "targets": record.targets[:MAX_TARGETS],
            **({"targets_omitted": len(record.targets) - MAX_TARGETS}
               if len(record.targets) > MAX_TARGETS else {}),
            "status": record.status,
            "grpc_code": record.grpc_code,
            "duration_ms": round(record.duration_ms, 3),
        }, option=orjson.OPT_APPEND_NEWLINE)
        line = json_line_safe(line)  # no NEL or U+2028 raw, for readers that split on them
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            self.failures += 1
            if self.on_failure is not None:
                self.on_failure()
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                log.error("cannot write the audit log %s: %s (request %s, %s)", self.target,
                          e.strerror or e, record.request_id, record.method)
            return
        self.lines += 1

    def close(self) -> None:
        if self.target != "-" and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
