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

import logging
import re
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

# values that would break a space-separated line (or forge one) are quoted
_PLAIN = re.compile(r"[\x21-\x7e]+\Z")
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


def _shown(value: str | None) -> str:
    if value is None:
        return "-"
    if _PLAIN.match(value) and '"' not in value:
        return value
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
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
        out = asdict(self)
        out["duration_ms"] = round(self.duration_ms, 3)
        return out

    def __str__(self) -> str:
        return (f"{_shown(self.method)} {_shown(self.path)} {self.status} {self.grpc_code} "
                f"{self.duration_ms:.1f}ms id={self.request_id} user={_shown(self.user)} "
                f"client={_shown(self.client)} route={_shown(self.route)} "
                f"in={self.bytes_in} out={self.bytes_out}")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, then the message or the access fields."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
                    .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if self.worker:
            out["worker"] = self.worker
        if isinstance(record.msg, AccessEntry):
            out.update({k: escape(v) if type(v) is str else v
                        for k, v in record.msg.fields().items()})
        else:
            out["message"] = escape(record.getMessage())
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """The usual text line, its message part escaped (a traceback, added after, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))


def setup(level: str, fmt: str = "text", worker: str | None = None) -> None:
    """Everything to stderr, as LOG_LEVEL and LOG_FORMAT say; a worker's lines say which."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = f"[{worker}]" if worker else ""
        handler.setFormatter(TextFormatter(
            f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    # aiohttp's own access log is replaced by gateway.access
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
