"""All settings, read once at start-up from flags and environment variables.

One table (``OPTIONS``) drives the dataclass, the environment, the flags and
``--help``, so a setting cannot exist in one and be missing from another.
A flag beats its environment variable, which beats the default. A bad value
stops start-up with one line naming the variable or flag and what was wrong.
The Go gateway's variables (``CUEBOT_ENDPOINT``, ``REST_PORT``,
``GRPC_MAX_RECV_MSG_MB``…) keep their names and meaning.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, Sequence

from . import __version__


class ConfigError(Exception):
    """A setting has a value the gateway cannot use."""


# ---------------------------------------------------------------------------
# value parsers: text -> typed value, or ValueError with a reason
# ---------------------------------------------------------------------------
def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if not lo <= v <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}, got {v}")
        return v

    return parse


_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*\Z")
_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration such as 30, 30s, 500ms or 2m, got {text!r}")
    value = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if value <= 0:
        raise ValueError(f"expected a duration above zero, got {text!r}")
    return value


_SIZE = re.compile(r"\s*([0-9]+)\s*(k|kb|kib|m|mb|mib|g|gb|gib)?\s*\Z", re.I)
_SIZE_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"expected a byte count such as 8388608, 512KiB or 8MiB, got {text!r}")
    unit = (m.group(2) or "").lower()[:1] or None
    value = int(m.group(1)) * _SIZE_UNITS[unit]
    if value <= 0:
        raise ValueError(f"expected a size above zero, got {text!r}")
    return value


def _float_range(lo: float, hi: float, *, low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not (lo < v if low_open else lo <= v) or not v <= hi:
            raise ValueError(f"expected a number {'above' if low_open else 'from'} {lo:g} "
                             f"{'and up to' if low_open else 'to'} {hi:g}, got {text.strip()}")
        return v

    return parse


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("expected a path, got an empty value")
    return Path(text).expanduser()


def _endpoint(text: str) -> str:
    t = text.strip()
    if not t or any(c.isspace() for c in t):
        raise ValueError(f"expected host:port, got {text!r}")
    if t.startswith(("http://", "https://")):
        raise ValueError(f"expected host:port without a scheme, got {text!r}")
    return t


def _log_level(text: str) -> str:
    t = text.strip().lower()
    if t == "warn":
        t = "warning"
    if t not in ("debug", "info", "warning", "error", "critical"):
        raise ValueError(f"expected debug, info, warning or error, got {text!r}")
    return t


def _source(text: str) -> str:
    t = text.strip().lower()
    if t not in ("bundled", "file", "reflection", "proto"):
        raise ValueError(f"expected bundled, file, reflection or proto, got {text!r}")
    return t


def _text(text: str) -> str:
    return text


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    name: str                 # Config field
    env: str | None           # environment variable
    flag: str | None          # command-line flag
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = "VALUE"
    switch: bool = False      # a flag without a value (sets the string "true")


OPTIONS: tuple[Option, ...] = (
    Option("cuebot_endpoint", "CUEBOT_ENDPOINT", "--cuebot-endpoint", _endpoint,
           "localhost:8443", "Cuebot gRPC address", "HOST:PORT"),
    Option("host", "REST_HOST", "--host", _text, "0.0.0.0",
           "address the HTTP server binds to", "ADDR"),
    Option("port", "REST_PORT", "--port", _int_range(0, 65535), 8448,
           "HTTP port (0 picks a free one and logs it)", "PORT"),
    Option("descriptor_source", "DESCRIPTOR_SOURCE", "--descriptor-source", _source, None,
           "where service descriptors come from: bundled, file, reflection or proto "
           "(default: implied by the options below, else bundled)", "SOURCE"),
    Option("descriptor_set", "DESCRIPTOR_SET", "--descriptor-set", _path, None,
           "FileDescriptorSet file (protoc --include_imports --descriptor_set_out)", "PATH"),
    Option("reflection", None, "--reflection", _bool, False,
           "load descriptors from Cuebot by gRPC server reflection", switch=True),
    Option("proto_path", "PROTO_PATH", "--proto-path", _path, None,
           "folder of .proto files compiled at start-up (needs grpcio-tools)", "DIR"),
    Option("services", "SERVICES", "--services", _names, (),
           "comma-separated service patterns to expose, e.g. 'show.*,job.*' "
           "(default: all)", "PATTERNS"),
    Option("exclude_services", "EXCLUDE_SERVICES", "--exclude-services", _names,
           ("rqd.*", "report.*", "grpc.reflection.*"),
           "comma-separated service patterns never exposed; '' exposes everything", "PATTERNS"),
    Option("grpc_timeout", "GRPC_TIMEOUT", "--grpc-timeout", _duration, 30.0,
           "deadline of each Cuebot call, in seconds or with a unit (500ms, 2m)", "DURATION"),
    Option("grpc_max_recv_msg_mb", "GRPC_MAX_RECV_MSG_MB", "--grpc-max-recv-msg-mb",
           _int_range(1, 4095), 256, "largest Cuebot reply accepted, in MB", "MB"),
    Option("max_request_bytes", "MAX_REQUEST_BYTES", "--max-request-bytes", _size,
           8 * 1024**2, "largest HTTP request body accepted (413 above)", "SIZE"),
    Option("cuebot_tls", "CUEBOT_TLS", "--cuebot-tls", _bool, False,
           "connect to Cuebot with TLS (implied by --cuebot-tls-ca)", switch=True),
    Option("cuebot_tls_ca", "CUEBOT_TLS_CA", "--cuebot-tls-ca", _path, None,
           "CA bundle that signed Cuebot's certificate (PEM)", "PATH"),
    Option("cuebot_tls_cert", "CUEBOT_TLS_CERT", "--cuebot-tls-cert", _path, None,
           "client certificate for mutual TLS (PEM)", "PATH"),
    Option("cuebot_tls_key", "CUEBOT_TLS_KEY", "--cuebot-tls-key", _path, None,
           "client private key for mutual TLS (PEM)", "PATH"),
    Option("cuebot_tls_server_name", "CUEBOT_TLS_SERVER_NAME", "--cuebot-tls-server-name",
           _text, None, "name to verify in Cuebot's certificate, if not the host", "NAME"),
    Option("log_level", "LOG_LEVEL", "--log-level", _log_level, "info",
           "debug, info, warning or error", "LEVEL"),
    Option("sandbox", "SANDBOX", "--sandbox", _bool, False,
           "start the embedded Cuebot stand-in on a free loopback port and serve it "
           "(ignores CUEBOT_ENDPOINT)", switch=True),
    Option("sandbox_db", "SANDBOX_DB", "--sandbox-db", _text, ":memory:",
           "the sandbox's SQLite file, kept across restarts (default: in memory)", "PATH"),
    Option("demo", "SANDBOX_DEMO", "--demo", _bool, False,
           "seed a new sandbox with demo hosts and jobs (the default)", switch=True),
    Option("empty", "SANDBOX_EMPTY", "--empty", _bool, False,
           "seed a new sandbox as a fresh Cuebot, without demo data", switch=True),
    Option("speed", "SANDBOX_SPEED", "--speed", _float_range(0, 10000, low_open=True), 1.0,
           "run the sandbox's simulated clock this many times faster", "N"),
    Option("no_dispatch", "SANDBOX_NO_DISPATCH", "--no-dispatch", _bool, False,
           "do not run the sandbox's dispatcher: frames stay where they are", switch=True),
    Option("failure_rate", "SANDBOX_FAILURE_RATE", "--failure-rate", _float_range(0, 1), 0.0,
           "chance that a simulated render fails (0 to 1)", "RATE"),
)


@dataclass(frozen=True)
class Config:
    cuebot_endpoint: str = "localhost:8443"
    host: str = "0.0.0.0"
    port: int = 8448
    descriptor_source: str = "bundled"
    descriptor_set: Path | None = None
    reflection: bool = False
    proto_path: Path | None = None
    services: tuple[str, ...] = ()
    exclude_services: tuple[str, ...] = ("rqd.*", "report.*", "grpc.reflection.*")
    grpc_timeout: float = 30.0
    grpc_max_recv_msg_mb: int = 256
    max_request_bytes: int = 8 * 1024**2
    cuebot_tls: bool = False
    cuebot_tls_ca: Path | None = None
    cuebot_tls_cert: Path | None = None
    cuebot_tls_key: Path | None = None
    cuebot_tls_server_name: str | None = None
    log_level: str = "info"
    sandbox: bool = False
    sandbox_db: str = ":memory:"
    demo: bool = False
    empty: bool = False
    speed: float = 1.0
    no_dispatch: bool = False
    failure_rate: float = 0.0

    @property
    def use_tls(self) -> bool:
        return self.cuebot_tls or self.cuebot_tls_ca is not None

    def with_(self, **changes: Any) -> "Config":
        """A copy with some settings changed, checked like the original."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if "descriptor_source" not in changes and any(
            k in changes for k in ("descriptor_set", "proto_path", "reflection")
        ):
            values["descriptor_source"] = None  # implied again by the new settings
            for k in ("descriptor_set", "proto_path", "reflection"):
                if k not in changes:
                    values[k] = None if k != "reflection" else False
        values.update(changes)
        return _checked(values)


assert {o.name for o in OPTIONS} == {f.name for f in fields(Config)}, "OPTIONS and Config differ"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a malformed command line as a ConfigError.

    argparse's own ``error()`` prints the whole usage block and exits, which
    breaks the one-line, exit-2 contract for bad settings (``--port`` with no
    value, an unknown flag).
    """

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="opencue-gateway",
        allow_abbrev=False,  # a typo must not silently become another flag
        description="HTTP/JSON gateway for OpenCue's Cuebot: POST /<package.Service>/<Method> "
                    "with a JSON body calls that gRPC method and returns its reply as JSON.",
        epilog="Every setting can also come from the environment variable shown; "
               "a flag wins over its variable.",
    )
    for o in OPTIONS:
        where = f"env {o.env}; " if o.env else ""
        default = o.default
        if isinstance(default, tuple):
            default = ",".join(default) or "none"
        shown = "" if default in (None, False) else f"default {default}"
        extra = f" ({where}{shown})".replace("; )", ")") if (where or shown) else ""
        if o.switch:
            p.add_argument(o.flag, dest=o.name, action="store_const", const="true",
                           default=None, help=o.help + extra)
        else:
            p.add_argument(o.flag, dest=o.name, metavar=o.metavar, default=None,
                           help=o.help + extra)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def load(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Config:
    """The configuration for these arguments and this environment."""
    args = parser().parse_args(argv)
    values: dict[str, Any] = {}
    for o in OPTIONS:
        raw, where = getattr(args, o.name), o.flag
        if raw is None and o.env is not None and o.env in environ:
            raw, where = environ[o.env], o.env
        if raw is None:
            values[o.name] = o.default
            continue
        try:
            values[o.name] = o.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return _checked(values)


def _checked(values: dict[str, Any]) -> Config:
    """Cross-field rules, applied to every Config however it was made."""
    explicit = values.get("descriptor_source")
    implied = [name for name, on in (
        ("file", values.get("descriptor_set") is not None),
        ("reflection", values.get("reflection")),
        ("proto", values.get("proto_path") is not None),
    ) if on]
    if explicit is None and len(implied) > 1:
        raise ConfigError(
            "choose one descriptor source: --descriptor-set, --reflection or --proto-path "
            "(or say which with DESCRIPTOR_SOURCE)"
        )
    source = explicit or (implied[0] if implied else "bundled")
    if source == "file" and values.get("descriptor_set") is None:
        raise ConfigError("DESCRIPTOR_SOURCE=file needs DESCRIPTOR_SET (--descriptor-set)")
    if source == "proto" and values.get("proto_path") is None:
        raise ConfigError("DESCRIPTOR_SOURCE=proto needs PROTO_PATH (--proto-path)")
    if values.get("demo") and values.get("empty"):
        raise ConfigError("choose one of --demo and --empty")
    values["descriptor_source"] = source
    if not values.get("cuebot_tls_server_name"):
        values["cuebot_tls_server_name"] = None  # empty means "the endpoint's host"
    values["reflection"] = source == "reflection"
    if (values.get("cuebot_tls_cert") is None) != (values.get("cuebot_tls_key") is None):
        raise ConfigError("mutual TLS needs both CUEBOT_TLS_CERT and CUEBOT_TLS_KEY")
    return Config(**values)
