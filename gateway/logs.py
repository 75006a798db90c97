"""Log output: the access line, in text or JSON, and the process's log set-up.

One access line per request, with the same facts in both formats: request
id, the token's subject, the caller's address, method, path, route, HTTP
status, gRPC code, body bytes in and out, duration. Only those: no header,
no query string, so a token or a secret cannot reach the log through it.

The line is an ``AccessEntry`` object as the log message: the text form is
rendered only if a text handler asks (``str()``), and the JSON formatter
takes the fields as they are.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

# what may split or disguise a log line: C0 and C1 controls, DEL, Unicode line and
# paragraph separators, bidirectional overrides
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escaped(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x0a``, ``\\u2028``).

    Applied by both formatters to every message and access field, so a value a
    client chose (a token's ``sub``, a path, a header) can neither end a log
    line and forge the next one nor hide text with terminal escapes.
    """
    if text.isascii() and text.isprintable():
        return text
    return _CONTROL.sub(_escaped, text)


# in a JSON text, what JSON itself leaves raw and some readers still break lines at
# or show as controls: DEL, C1 controls (NEL among them), U+2028/2029, bidi overrides
_JSON_RAW = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]|\xe2\x81[\xa6-\xa9]")


def _json_escaped(m: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(m.group().decode())


def json_line_safe(line: bytes) -> bytes:
    """A JSON text (orjson's) with those characters written as ``\\uXXXX``: same value.

    For lines that must keep values exactly (the audit trail): the JSON
    decodes to what was sent, and no reader splitting lines on NEL or U+2028
    sees a line end inside it.
    """
    if line.isascii() and b"\x7f" not in line:
        return line
    return _JSON_RAW.sub(_json_escaped, line)


# the access fields a client can put text into (the rest are ours or validated)
_CLIENT_TEXT = ("user", "path", "client", "method", "request_id")


def _shown(value: str | None) -> str:
    if value is None:
        return "-"
    # quoted unless plain printable ASCII without spaces or quotes, which
    # could break a space-separated line or forge one (str methods: this
    # runs four times per access line, a regex cost twice as much)
    if value and value.isascii() and value.isprintable() and " " not in value \
            and '"' not in value:
        return value
    return orjson.dumps(value).decode()


@dataclass(slots=True)
class AccessEntry:
    request_id: str
    user: str | None          # the token's sub; None without a valid token
    client: str               # the peer, or the forwarded client behind TRUSTED_PROXIES
    method: str
    path: str
    route: str                # the metrics' route label
    status: int               # 499: the client went away before the reply was sent
    grpc_code: str
    bytes_in: int
    bytes_out: int            # as sent, after gzip
    duration_ms: float

    def fields(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "user": self.user, "client": self.client,
                "method": self.method, "path": self.path, "route": self.route,
                "status": self.status, "grpc_code": self.grpc_code,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "duration_ms": round(self.duration_ms, 3)}

    def __str__(self) -> str:
        """The line's text, escaped (see ``escape``): what the text format shows."""
        return access_text(self.request_id, self.user, self.client, self.method, self.path,
                           self.route, self.status, self.grpc_code, self.bytes_in,
                           self.bytes_out, self.duration_ms)


def access_text(request_id: str, user: str | None, client: str, method: str, path: str,
                route: str, status: int, grpc_code: str, bytes_in: int, bytes_out: int,
                duration_ms: float) -> str:
    """An access line's text, escaped (see ``escape``): an ``AccessEntry``'s ``str()``."""
    if method and path and user and client and route:
        # the usual line: every text field plain, which one look at them together
        # says (and then nothing in the line needs escaping: the rest is ours)
        plain = f"{method}{path}{user}{client}{route}"
        if plain.isascii() and plain.isprintable() and " " not in plain \
                and '"' not in plain:
            return (f"{method} {path} {status} {grpc_code} {duration_ms:.1f}ms "
                    f"id={request_id} user={user} client={client} route={route} "
                    f"in={bytes_in} out={bytes_out}")
    return escape(
        f"{_shown(method)} {_shown(path)} {status} {grpc_code} {duration_ms:.1f}ms "
        f"id={request_id} user={_shown(user)} client={_shown(client)} "
        f"route={_shown(route)} in={bytes_in} out={bytes_out}")


class _SecondCache:
    """A timestamp's text up to the second, made once per second, not once per line.

    Every request writes an access line, and formatting the date is most of
    what the standard formatters spend on a line.
    """

    __slots__ = ("_fmt", "_utc", "_second", "_text")

    def __init__(self, fmt: str, utc: bool) -> None:
        self._fmt, self._utc = fmt, utc
        self._second, self._text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            t = time.gmtime(second) if self._utc else time.localtime(second)
            self._second, self._text = second, time.strftime(self._fmt, t)
        return self._text


ACCESS_LOGGER = "gateway.access"
_access_logger = logging.getLogger(ACCESS_LOGGER)


class AccessRecord(logging.LogRecord):
    """An access line as a log record, made without ``makeRecord``'s general work.

    Every request makes one. What a record of the access logger holds is the
    same each time but for the entry and the clock, so the rest is copied
    from a template (formatters read records' ``__dict__``, so these must be
    instance attributes).
    """

    def __init__(self, entry: "AccessEntry") -> None:  # noqa: D107 - see the class
        self.__dict__.update(_ACCESS_TEMPLATE)
        now = time.time()
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0
        self.relativeCreated = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
        self.msg = entry


class _AccessAt(AccessRecord):
    """An access record timed at a given moment (the direct path's, for the JSON form)."""

    def __init__(self, entry: "AccessEntry", created: float) -> None:  # noqa: D107
        super().__init__(entry)
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0


_ACCESS_TEMPLATE = {
    k: v for k, v in logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, "", (), None)
    .__dict__.items() if k not in ("created", "msecs", "relativeCreated", "msg")}


def access(entry: "AccessEntry") -> None:
    """Log ``entry`` on ``gateway.access`` (info; the caller has checked that level)."""
    log_access(entry.request_id, entry.user, entry.client, entry.method, entry.path,
               entry.route, entry.status, entry.grpc_code, entry.bytes_in, entry.bytes_out,
               entry.duration_ms)


def log_access(*fields: Any) -> None:
    """An access line, from an ``AccessEntry``'s fields in order, to logging's handlers.

    When those are just the handler ``setup`` installed, the line goes to its
    stream directly: the same text its formatter makes, without the logging
    module's chain of calls (loggers, filters, locks, emit) and, in the text
    format, without an ``AccessEntry``: together they cost more than the
    line itself. Lines are written together (``_flush``): those made within
    ACCESS_LOG_FLUSH of the first (100 ms by default; 0: those of one turn of
    the event loop), or 256 of them, or before any other record, or at exit.
    Each write costs the kernel far more than the line: under load this is
    one write for many requests instead of one each. Anything else (a handler
    or filter added later, a test capturing records) gets the record through
    that chain.
    """
    h = _installed
    lg = _access_logger
    handlers = logging.root.handlers
    fmt = _installed_formatter
    if h is None or lg.handlers or lg.filters or not lg.propagate or h.filters \
            or len(handlers) != 1 or handlers[0] is not h or logging.root.filters \
            or h.level > logging.INFO or h.formatter is not fmt:
        _access_logger.handle(AccessRecord(AccessEntry(*fields)))
        return
    try:
        if type(fmt) is TextFormatter:
            line = fmt.time_prefix(time.time()) + access_text(*fields)
        else:
            line = fmt.access_line(AccessEntry(*fields), time.time())  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - as logging does: report, never fail the request
        h.handleError(AccessRecord(AccessEntry(*fields)))
        return
    if not _pending:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a tool, a test): now
            _pending.append(line + "\n")
            _flush()
            return
        if _flush_after > 0:
            loop.call_later(_flush_after, _flush)
        else:
            loop.call_soon(_flush)
    _pending.append(line + "\n")
    if len(_pending) >= MAX_PENDING:
        _flush()


# access lines made and not yet written (see ACCESS_LOG_FLUSH)
_pending: list[str] = []
_flush_after = 0.0   # seconds; 0: at the end of the event-loop turn
MAX_PENDING = 256    # lines: a burst is written at once, not held


def _flush() -> None:
    """Write the pending access lines to the installed handler's stream, in one write.

    Also called before the handler writes any other record, so lines keep
    the order they were made in, and at exit.
    """
    n = len(_pending)
    h = _installed
    if not n or h is None:
        return
    text = "".join(_pending[:n])
    del _pending[:n]  # not clear(): another thread may have added one meanwhile
    try:
        with h.lock:
            h.stream.write(text)
            h.stream.flush()
    except Exception:  # noqa: BLE001 - as logging does: report, never fail the request
        h.handleError(logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, text, None, None))


atexit.register(_flush)  # a line made in the last turn of the loop


class _Handler(logging.StreamHandler):
    """``setup``'s handler: pending access lines go out before any other record."""

    def emit(self, record: logging.LogRecord) -> None:
        if _pending:
            _flush()
        super().emit(record)


# the handler setup() made, and its formatter
_installed: logging.StreamHandler | None = None
_installed_formatter: "TextFormatter | JsonFormatter | None" = None


class TextFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s`` with the date cached per second.

    The line's message part is escaped (``escape``); a traceback, added after
    it, keeps its own lines. Access records take a short cut to the same text.
    """

    def __init__(self, fmt: str, tag: str = "") -> None:
        super().__init__(fmt)
        self._clock = _SecondCache("%Y-%m-%d %H:%M:%S", utc=False)
        self._access = f" INFO {ACCESS_LOGGER}{tag}: "
        self._ms, self._prefix = -1, ""  # the last access line's millisecond, and its start

    def format(self, record: logging.LogRecord) -> str:
        if type(record) is AccessRecord:
            return self.access_line(record.msg, record.created)
        return super().format(record)

    def access_line(self, entry: "AccessEntry", created: float) -> str:
        """An access line as ``format`` writes it for a record made at ``created``."""
        return f"{self.time_prefix(created)}{entry}"

    def time_prefix(self, created: float) -> str:
        """An access line's start, up to its message, for a record made at ``created``.

        Kept for the millisecond it was made in: under load, several lines share one.
        """
        second = int(created)
        ms = int((created - second) * 1000)  # as logging works out a record's msecs
        key = second * 1000 + ms
        if key != self._ms:
            self._ms = key
            self._prefix = f"{self._clock(created)},{ms:03d}{self._access}"
        return self._prefix

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._clock(record.created)},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, then the message or the access fields."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker
        self._clock = _SecondCache("%Y-%m-%dT%H:%M:%S", utc=True)

    def access_line(self, entry: "AccessEntry", created: float) -> str:
        """An access line as ``format`` writes it for a record made at ``created``."""
        return self.format(_AccessAt(entry, created))

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": f"{self._clock(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if self.worker:
            out["worker"] = self.worker
        if isinstance(record.msg, AccessEntry):
            fields = record.msg.fields()
            for key in _CLIENT_TEXT:
                value = fields[key]
                if value:
                    fields[key] = escape(value)
            out.update(fields)
        else:
            out["message"] = escape(record.getMessage())
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup(level: str, fmt: str = "text", worker: str | None = None,
          access_flush: float = 0.0) -> None:
    """Everything to stderr, as LOG_LEVEL and LOG_FORMAT say; a worker's lines say which.

    Access lines wait up to ``access_flush`` seconds (ACCESS_LOG_FLUSH) to be
    written with the others made meanwhile: one write for many requests.
    """
    # No format here shows a record's source file, thread or process, and
    # finding them (a stack walk per line) is most of a log call's cost:
    # the logging module's documented switches turn that off.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    _flush()  # lines made for the handler being replaced
    handler = _Handler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = f"[{worker}]" if worker else ""
        handler.setFormatter(TextFormatter(
            f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s", tag))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    global _installed, _installed_formatter, _flush_after  # noqa: PLW0603 - see log_access()
    _flush_after = access_flush
    _installed = handler if logging.root.handlers == [handler] else None
    _installed_formatter = handler.formatter  # type: ignore[assignment]
    # aiohttp's own access log is replaced by gateway.access
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
