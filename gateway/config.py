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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, Sequence

from . import __version__, loops


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


def _size_or_zero(text: str) -> int:
    """A byte count where 0 means "off"."""
    return 0 if text.strip() == "0" else _size(text)


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


def _one_of(*choices: str) -> Callable[[str], str]:
    """A parser taking one of ``choices`` (case and surrounding blanks aside)."""
    said = f"{', '.join(choices[:-1])} or {choices[-1]}"

    def parse(text: str) -> str:
        t = text.strip().lower()
        if t not in choices:
            raise ValueError(f"expected {said}, got {text!r}")
        return t

    return parse


_log_format = _one_of("text", "json")
_event_loop = _one_of(*loops.KINDS)
_backend_calls = _one_of("auto", "direct", "aio")
_source = _one_of("bundled", "file", "reflection", "proto")
_fail_mode = _one_of("open", "closed")
_key_mode = _one_of("sub", "address", "sub+address")


def _log_level(text: str) -> str:
    t = text.strip().lower()
    if t == "warn":
        t = "warning"
    if t not in ("debug", "info", "warning", "error", "critical"):
        raise ValueError(f"expected debug, info, warning or error, got {text!r}")
    return t


def _text(text: str) -> str:
    return text


def _secret(text: str) -> str:
    # taken verbatim, as the Go gateway and CueWeb do: no trimming
    if not text:
        raise ValueError("the secret is empty")
    return text


HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
# verified with JWT_JWKS keys only, each with keys of the type it needs
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
_ALGORITHM_NAMES = {a.upper(): a for a in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS}


def _algorithms(text: str) -> tuple[str, ...]:
    names = tuple(_ALGORITHM_NAMES.get(n.upper(), n) for n in _names(text))
    bad = [n for n in names if n not in _ALGORITHM_NAMES.values()]
    if bad or not names:
        raise ValueError(f"expected some of {', '.join(HMAC_ALGORITHMS)} (with JWT_JWKS also "
                         f"{', '.join(ASYMMETRIC_ALGORITHMS)}), got {text!r}")
    return names


def _jwks_source(text: str) -> str:
    """A JWKS URL (https://, or http:// e.g. on loopback) or a file path."""
    t = text.strip()
    if not t:
        raise ValueError("expected a path or an https:// URL, got an empty value")
    if "://" in t:
        from yarl import URL

        url = URL(t)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an https:// or http:// URL with a host, got {text!r}")
        return t
    return str(Path(t).expanduser())


def _claim_name(text: str) -> str:
    t = text.strip()
    if not t:
        raise ValueError("expected a claim name such as role or realm_access.roles")
    return t


def _audit_target(text: str) -> str:
    t = text.strip()
    if not t:
        raise ValueError("expected a file path, or - for standard output")
    return t if t == "-" else str(Path(t).expanduser())


def _audit_methods(text: str) -> tuple[str, ...]:
    items = _names(text)
    if not items:
        raise ValueError("expected 'mutations', method patterns or -patterns, got nothing")
    for item in items:
        pattern = item[1:] if item.startswith("-") else item
        if pattern != "mutations" and pattern != "*" and "/" not in pattern:
            raise ValueError(f"{item!r} is not 'mutations' nor a pattern of "
                             "package.Service/Method such as 'job.*/*' or '*/Kill*'")
    return items


def _claims(text: str) -> tuple[str, ...]:
    return _names(text)


def _rate(text: str) -> float:
    return _float_range(0, 1_000_000)(text)


def _optional_rate(text: str) -> float | None:
    return None if not text.strip() else _float_range(0, 1_000_000, low_open=True)(text)


def _costs(text: str) -> tuple[tuple[str, float], ...]:
    out = []
    for item in _names(text):
        pattern, eq, cost = item.rpartition("=")
        if not eq or not pattern.strip():
            raise ValueError(f"expected PATTERN=COST items such as "
                             f"'job.JobInterface/GetJobs=5', got {item!r}")
        try:
            value = float(cost)
        except ValueError:
            raise ValueError(f"cost of {pattern.strip()!r} is not a number: {cost!r}") from None
        if not value > 0:
            raise ValueError(f"cost of {pattern.strip()!r} must be above zero, got {cost}")
        out.append((pattern.strip(), value))
    return tuple(out)


def _networks(text: str) -> tuple[str, ...]:
    from .ratelimit import parse_networks

    items = _names(text)
    parse_networks(items)  # ValueError names the bad entry
    return items


def _origins(text: str) -> tuple[str, ...]:
    items = _names(text)
    for o in items:
        if o != "*" and not re.match(r"https?://[^/\s]+\Z", o):
            raise ValueError(f"expected origins such as https://cueweb.example.com "
                             f"(scheme and host, no path) or *, got {o!r}")
    return items


def _method_patterns(text: str) -> tuple[str, ...]:
    """``package.Service/Method`` patterns (``*`` wildcards), ``!`` in front to exclude."""
    items = _names(text)
    for item in items:
        body = item[1:] if item.startswith("!") else item
        if "/" not in body.lstrip("/") or any(c.isspace() for c in body):
            raise ValueError(f"expected patterns such as 'job.JobInterface/GetJobs', "
                             f"'host.HostInterface/*' or '!show.ShowInterface/GetX', "
                             f"got {item!r}")
    return items


def _seconds(text: str) -> float:
    """A duration where zero (0, 0s, 0.0) means "off"."""
    m = _DURATION.match(text)
    if m and float(m.group(1)) == 0:
        return 0.0
    return _duration(text)


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
    secret: bool = False      # never shown: not in --help defaults, not in repr
    shown: str | None = None  # the default as --help words it, where the value says little


OPTIONS: tuple[Option, ...] = (
    Option("cuebot_endpoint", "CUEBOT_ENDPOINT", "--cuebot-endpoint", _endpoint,
           "localhost:8443", "Cuebot gRPC address", "HOST:PORT"),
    Option("host", "REST_HOST", "--host", _text, "0.0.0.0",
           "address the HTTP server binds to", "ADDR"),
    Option("port", "REST_PORT", "--port", _int_range(0, 65535), 8448,
           "HTTP port (0 picks a free one and logs it)", "PORT"),
    Option("descriptor_source", "DESCRIPTOR_SOURCE", "--descriptor-source", _source, None,
           "where service descriptors come from: bundled, file, reflection or proto",
           "SOURCE", shown="implied by the options below, else bundled"),
    Option("descriptor_set", "DESCRIPTOR_SET", "--descriptor-set", _path, None,
           "FileDescriptorSet file (protoc --include_imports --descriptor_set_out)", "PATH"),
    Option("reflection", None, "--reflection", _bool, False,
           "load descriptors from Cuebot by gRPC server reflection", switch=True),
    Option("proto_path", "PROTO_PATH", "--proto-path", _path, None,
           "folder of .proto files compiled at start-up (needs grpcio-tools)", "DIR"),
    Option("descriptor_watch", "DESCRIPTOR_WATCH", "--descriptor-watch", _seconds, 2.0,
           "seconds between checks of the descriptor-set file or .proto folder for changes, "
           "which reload them (0: only SIGHUP and POST /admin/reload)", "DURATION"),
    Option("descriptor_refresh", "DESCRIPTOR_REFRESH", "--descriptor-refresh", _seconds, 60.0,
           "in reflection mode, seconds between fetches of the backend's descriptors (0: off)",
           "DURATION"),
    Option("services", "SERVICES", "--services", _names, (),
           "comma-separated service patterns to expose, e.g. 'show.*,job.*'", "PATTERNS",
           shown="all"),
    Option("exclude_services", "EXCLUDE_SERVICES", "--exclude-services", _names,
           ("rqd.*", "report.*", "grpc.reflection.*"),
           "comma-separated service patterns never exposed; '' exposes everything", "PATTERNS"),
    Option("grpc_timeout", "GRPC_TIMEOUT", "--grpc-timeout", _duration, 30.0,
           "deadline of each Cuebot call, in seconds or with a unit (500ms, 2m)", "DURATION"),
    Option("grpc_max_recv_msg_mb", "GRPC_MAX_RECV_MSG_MB", "--grpc-max-recv-msg-mb",
           _int_range(1, 4095), 256, "largest Cuebot reply accepted, in MB", "MB"),
    Option("max_request_bytes", "MAX_REQUEST_BYTES", "--max-request-bytes", _size,
           8 * 1024**2, "largest HTTP request body accepted (413 above)", "SIZE",
           shown="8MiB"),
    Option("max_response_bytes", "MAX_RESPONSE_BYTES", "--max-response-bytes", _size,
           1024**3, "largest reply body sent, before compression (502 above)", "SIZE",
           shown="1GiB"),
    Option("gzip_min_bytes", "GZIP_MIN_BYTES", "--gzip-min-bytes", _size_or_zero, 1024,
           "gzip replies from this size when the client accepts it (0: never)", "SIZE"),
    Option("offload_workers", "OFFLOAD_WORKERS", "--offload-workers", _int_range(0, 64), 2,
           "processes converting large messages off the event loop, started when needed "
           "(0: convert everything in the event loop)", "N"),
    Option("offload_min_bytes", "OFFLOAD_MIN_BYTES", "--offload-min-bytes", _size, 128 * 1024,
           "messages this large or larger (reply wire bytes, request JSON bytes) are "
           "converted by those processes", "SIZE"),
    Option("offload_idle", "OFFLOAD_IDLE", "--offload-idle", _seconds, 30.0,
           "seconds a conversion process may stay idle before it exits, giving its memory "
           "back (0: never)", "DURATION"),
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
    # -- authentication ------------------------------------------------
    Option("jwt_secret", "JWT_SECRET", None, _secret, None,
           "HMAC secret that signs client tokens, taken verbatim",
           secret=True),
    Option("jwt_secret_file", "JWT_SECRET_FILE", "--jwt-secret-file", _path, None,
           "file of HMAC secrets, one per line, all accepted (for rotation); with or "
           "instead of JWT_SECRET", "PATH"),
    Option("jwt_algorithms", "JWT_ALGORITHMS", "--jwt-algorithms", _algorithms, ("HS256",),
           "accepted token algorithms: HS256, HS384, HS512 with the secrets; with JWT_JWKS "
           "also RS256..PS512, ES256..ES512, EdDSA", "ALGS",
           shown="HS256; with JWT_JWKS, all of those"),
    Option("jwt_required_claims", "JWT_REQUIRED_CLAIMS", "--jwt-required-claims", _claims,
           ("sub", "exp"), "claims every token must carry ('' for none)", "CLAIMS"),
    Option("jwt_leeway", "JWT_LEEWAY", "--jwt-leeway", _seconds, 30.0,
           "clock skew tolerated on exp, nbf and iat", "DURATION"),
    Option("jwt_audience", "JWT_AUDIENCE", "--jwt-audience", _text, None,
           "required aud claim, if set", "AUD"),
    Option("jwt_issuer", "JWT_ISSUER", "--jwt-issuer", _text, None,
           "required iss claim, if set", "ISS"),
    Option("jwt_jwks", "JWT_JWKS", "--jwt-jwks", _jwks_source, None,
           "public keys of an identity provider (a JWKS document): a file, or an https:// URL "
           "fetched at start-up", "PATH|URL"),
    Option("jwt_jwks_refresh", "JWT_JWKS_REFRESH", "--jwt-jwks-refresh", _seconds, 300.0,
           "seconds between fetches of JWT_JWKS (0: only at start-up, on reload and when an "
           "unknown kid arrives)", "DURATION"),
    Option("jwt_roles_claim", "JWT_ROLES_CLAIM", "--jwt-roles-claim", _claim_name, "role",
           "claim naming the caller's roles: a string or a list of strings (a dotted name "
           "reaches into objects, e.g. realm_access.roles)", "CLAIM"),
    Option("no_auth", None, "--no-auth", _bool, False,
           "serve without authentication: only with --dev, so only on 127.0.0.1 (a loud "
           "warning)", switch=True),
    # -- authorization and audit -------------------------------------------
    Option("authz_policy", "AUTHZ_POLICY", "--authz-policy", _path, None,
           "TOML file of the RPC patterns each role may call", "PATH",
           shown="unset: everything allowed"),
    Option("authz_default_role", "AUTHZ_DEFAULT_ROLE", "--authz-default-role", _names, (),
           "role(s) of a caller whose token names none", "ROLES", shown="no role"),
    Option("audit_log", "AUDIT_LOG", "--audit-log", _audit_target, None,
           "JSON-lines audit of every mutation and every denial: a file, or - for standard "
           "output", "PATH"),
    Option("audit_methods", "AUDIT_METHODS", "--audit-methods", _audit_methods,
           ("mutations",), "what the audit records: mutations (methods not named Get*, Find*, "
           "Is*, List*), patterns, -patterns; the last that matches decides", "LIST"),
    # -- rate limits ---------------------------------------------------
    Option("rate_limit_rps", "RATE_LIMIT_RPS", "--rate-limit-rps", _rate, 100.0,
           "requests per second per client (0 turns limiting off)", "RPS"),
    Option("rate_limit_burst", "RATE_LIMIT_BURST", "--rate-limit-burst", _optional_rate, None,
           "bucket size: requests a client may make at once", "N",
           shown="one second's worth, RATE_LIMIT_RPS"),
    Option("rate_limit_costs", "RATE_LIMIT_COSTS", "--rate-limit-costs", _costs, (),
           "per-method costs, e.g. 'job.JobInterface/GetJobs=5,host.HostInterface/*=2'",
           "LIST"),
    Option("rate_limit_key", "RATE_LIMIT_KEY", "--rate-limit-key", _key_mode, "sub",
           "what a client is: the token's sub, the caller's address, or both", "KEY"),
    Option("rate_limit_redis_url", "RATE_LIMIT_REDIS_URL", "--rate-limit-redis-url", _text,
           None, "share buckets across replicas in Redis, e.g. redis://host:6379/0", "URL",
           secret=True),
    Option("rate_limit_fail", "RATE_LIMIT_FAIL", "--rate-limit-fail", _fail_mode, "open",
           "when Redis is unreachable: open (own buckets) or closed (503)", "MODE"),
    Option("trusted_proxies", "TRUSTED_PROXIES", "--trusted-proxies", _networks, (),
           "proxies whose X-Forwarded-For is believed (addresses or CIDRs)", "NETS"),
    # -- browsers and TLS ----------------------------------------------
    Option("cors_origins", "CORS_ORIGINS", "--cors-origins", _origins, (),
           "origins allowed to call from a browser (comma-separated, or *)", "ORIGINS"),
    Option("cors_max_age", "CORS_MAX_AGE", "--cors-max-age", _int_range(0, 86400), 600,
           "seconds a browser may cache a preflight answer", "SECONDS"),
    Option("tls_cert_file", "TLS_CERT_FILE", "--tls-cert-file", _path, None,
           "serve HTTPS with this certificate chain (PEM)", "PATH"),
    Option("tls_key_file", "TLS_KEY_FILE", "--tls-key-file", _path, None,
           "private key for TLS_CERT_FILE (PEM)", "PATH"),
    # -- connections -----------------------------------------------------
    Option("header_timeout", "HEADER_TIMEOUT", "--header-timeout", _duration, 10.0,
           "a request's line and headers must arrive within this (408, connection closed)",
           "DURATION"),
    Option("body_timeout", "BODY_TIMEOUT", "--body-timeout", _duration, 60.0,
           "a request's body must arrive within this once its headers have (408)", "DURATION"),
    Option("send_timeout", "SEND_TIMEOUT", "--send-timeout", _duration, 30.0,
           "a large reply forwarded as it is converted is cut if its client takes next to "
           "nothing of it (under 64 KiB) for this long (the conversion process waits for the "
           "client meanwhile)",
           "DURATION"),
    Option("keepalive_timeout", "KEEPALIVE_TIMEOUT", "--keepalive-timeout", _duration, 75.0,
           "an idle keep-alive connection is closed after this", "DURATION"),
    Option("max_connections_per_client", "MAX_CONNECTIONS_PER_CLIENT",
           "--max-connections-per-client", _int_range(0, 1_000_000), 256,
           "open connections one client address may hold; more are refused with 429 "
           "(0: no cap; TRUSTED_PROXIES are exempt)", "N"),
    # -- protecting Cuebot ---------------------------------------------
    Option("coalesce_reads", "COALESCE_READS", "--coalesce-reads", _bool, True,
           "identical reads in flight at once share one Cuebot call (false: each makes its "
           "own)", "BOOL"),
    Option("coalesce_methods", "COALESCE_METHODS", "--coalesce-methods", _method_patterns, (),
           "methods that are reads besides Get*, Find*, Is*, List*, e.g. "
           "'job.JobInterface/*Stats'; '!PATTERN' makes a method a write", "PATTERNS"),
    Option("read_cache_ms", "READ_CACHE_MS", "--read-cache-ms", _int_range(0, 600_000), 0,
           "serve a read's reply to identical reads for this many milliseconds after it "
           "arrived (0: off); every write through this gateway empties it", "MS"),
    Option("read_cache_max_bytes", "READ_CACHE_MAX_BYTES", "--read-cache-max-bytes", _size,
           64 * 1024**2, "memory the read cache may hold (oldest replies go first)", "SIZE"),
    Option("backend_max_in_flight", "BACKEND_MAX_IN_FLIGHT", "--backend-max-in-flight",
           _int_range(1, 1_000_000), 256,
           "Cuebot calls in flight at once; more wait in a queue", "N"),
    Option("backend_max_queue", "BACKEND_MAX_QUEUE", "--backend-max-queue",
           _int_range(0, 1_000_000), 1024,
           "calls that may wait for a free slot; beyond it, or past their deadline, 503", "N"),
    Option("breaker_failures", "BREAKER_FAILURES", "--breaker-failures",
           _int_range(0, 1_000_000), 5,
           "consecutive UNAVAILABLE / DEADLINE_EXCEEDED answers that open the circuit to "
           "Cuebot (0: no circuit breaker)", "N"),
    Option("breaker_cooldown", "BREAKER_COOLDOWN", "--breaker-cooldown", _duration, 2.0,
           "how long an open circuit refuses calls before one probe call may go through",
           "DURATION"),
    # -- the process -----------------------------------------------------
    # 25: exiting within it plus 1 s fits Kubernetes' default 30 s termination period
    Option("shutdown_grace", "SHUTDOWN_GRACE", "--shutdown-grace", _seconds, 25.0,
           "on SIGTERM, seconds in-flight requests may take to finish; the process exits "
           "within this plus one second, cutting what is left", "DURATION"),
    Option("shutdown_delay", "SHUTDOWN_DELAY", "--shutdown-delay", _seconds, 0.0,
           "on SIGTERM, seconds the listener still accepts (/readyz 503, replies closing "
           "their connection) so load balancers can see it leave; part of SHUTDOWN_GRACE",
           "DURATION"),
    Option("workers", "WORKERS", "--workers", _int_range(1, 256), 1,
           "processes serving one port (SO_REUSEPORT), for multi-core hosts", "N"),
    Option("event_loop", "EVENT_LOOP", "--event-loop", _event_loop, "auto",
           "the event loop: uvloop (libuv, in C: less CPU per call), asyncio (the "
           "standard library's), or auto (uvloop when it is installed)", "LOOP"),
    Option("backend_calls", "BACKEND_CALLS", "--backend-calls", _backend_calls, "auto",
           "how calls to Cuebot are made: direct (on grpc's Cython channel, without "
           "grpc.aio's call objects: less CPU per call), aio (grpc.aio's calls, keeping its "
           "interceptors and observability plugin), or auto (direct when this grpcio "
           "allows it)", "HOW"),
    Option("dev", "DEV", "--dev", _bool, False,
           "development mode: 127.0.0.1 only, pretty JSON, a log line per reply, CORS from "
           "http://localhost:*, --no-auth allowed", switch=True),
    Option("log_level", "LOG_LEVEL", "--log-level", _log_level, "info",
           "debug, info, warning or error", "LEVEL"),
    Option("log_format", "LOG_FORMAT", "--log-format", _log_format, "text",
           "log lines as text or as one JSON object per line", "FORMAT"),
    Option("access_log_flush", "ACCESS_LOG_FLUSH", "--access-log-flush", _seconds, 0.1,
           "access lines are written together, at most this long after the first of them "
           "(0: at the end of each event-loop turn); any other log line, 256 waiting lines "
           "and the process's exit write them at once", "DURATION", shown="100ms"),
    Option("sandbox", "SANDBOX", "--sandbox", _bool, False,
           "start the embedded Cuebot stand-in on a free loopback port and serve it "
           "(ignores CUEBOT_ENDPOINT)", switch=True),
    Option("sandbox_db", "SANDBOX_DB", "--sandbox-db", _text, ":memory:",
           "the sandbox's SQLite file, kept across restarts", "PATH", shown="in memory"),
    Option("demo", "SANDBOX_DEMO", "--demo", _bool, False,
           "seed a new sandbox with demo hosts and jobs", switch=True,
           shown="on, unless --empty"),
    Option("empty", "SANDBOX_EMPTY", "--empty", _bool, False,
           "seed a new sandbox as a fresh Cuebot, without demo data", switch=True),
    Option("speed", "SANDBOX_SPEED", "--speed", _float_range(0, 10000, low_open=True), 1.0,
           "run the sandbox's simulated clock this many times faster", "N"),
    Option("no_dispatch", "SANDBOX_NO_DISPATCH", "--no-dispatch", _bool, False,
           "do not run the sandbox's dispatcher: frames stay where they are", switch=True),
    Option("failure_rate", "SANDBOX_FAILURE_RATE", "--failure-rate", _float_range(0, 1), 0.0,
           "chance that a simulated render fails (0 to 1)", "RATE"),
    Option("log_root", "SANDBOX_LOG_ROOT", "--log-root", _path, None,
           "where the sandbox's renders write their frame logs", "DIR",
           shown="beside --sandbox-db, or a temporary folder"),
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
    max_response_bytes: int = 1024**3
    gzip_min_bytes: int = 1024
    offload_workers: int = 2
    offload_min_bytes: int = 128 * 1024
    offload_idle: float = 30.0
    cuebot_tls: bool = False
    cuebot_tls_ca: Path | None = None
    cuebot_tls_cert: Path | None = None
    cuebot_tls_key: Path | None = None
    cuebot_tls_server_name: str | None = None
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_secret_file: Path | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_required_claims: tuple[str, ...] = ("sub", "exp")
    jwt_leeway: float = 30.0
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_jwks: str | None = None
    jwt_jwks_refresh: float = 300.0
    jwt_roles_claim: str = "role"
    no_auth: bool = False
    authz_policy: Path | None = None
    authz_default_role: tuple[str, ...] = ()
    audit_log: str | None = None
    audit_methods: tuple[str, ...] = ("mutations",)
    rate_limit_rps: float = 100.0
    rate_limit_burst: float | None = None
    rate_limit_costs: tuple[tuple[str, float], ...] = ()
    rate_limit_key: str = "sub"
    rate_limit_redis_url: str | None = field(default=None, repr=False)
    rate_limit_fail: str = "open"
    trusted_proxies: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    cors_max_age: int = 600
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    descriptor_watch: float = 2.0
    descriptor_refresh: float = 60.0
    coalesce_reads: bool = True
    coalesce_methods: tuple[str, ...] = ()
    read_cache_ms: int = 0
    read_cache_max_bytes: int = 64 * 1024**2
    backend_max_in_flight: int = 256
    backend_max_queue: int = 1024
    breaker_failures: int = 5
    breaker_cooldown: float = 2.0
    shutdown_grace: float = 25.0
    shutdown_delay: float = 0.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    send_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    max_connections_per_client: int = 256
    workers: int = 1
    event_loop: str = "auto"
    backend_calls: str = "auto"
    dev: bool = False
    log_level: str = "info"
    log_format: str = "text"
    access_log_flush: float = 0.1
    sandbox: bool = False
    sandbox_db: str = ":memory:"
    demo: bool = False
    empty: bool = False
    speed: float = 1.0
    no_dispatch: bool = False
    failure_rate: float = 0.0
    log_root: Path | None = None

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


def _shown_default(o: Option) -> str:
    """The default as --help states it ("" for none worth stating)."""
    if o.shown is not None:
        return o.shown
    default = o.default
    if o.secret or default is None or default is False or default == ():
        return ""
    if isinstance(default, tuple):
        return ",".join(str(d) for d in default)
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _help(o: Option) -> str:
    where = [f"env {o.env}"] if o.env else []
    default = _shown_default(o)
    if default:
        where.append(f"default {default}")
    return f"{o.help} ({'; '.join(where)})" if where else o.help


def _wrapped(text: str, indent: str = "", width: int = 79) -> str:
    import textwrap

    return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent)


def _epilog() -> str:
    para = _wrapped
    env_only = [o for o in OPTIONS if o.flag is None and o.env]
    parts = ["\n".join([para("Environment only (a flag would show in `ps`):")]
                       + [para(f"{o.env}: {o.help}", "  ") for o in env_only])]
    parts.append(para(
        "Authentication: every request needs a JWT signed with JWT_SECRET or a secret in "
        "JWT_SECRET_FILE (--jwt-secret-file), or by an identity provider's key (JWT_JWKS); "
        "without any of them the gateway does not start. "
        "--sandbox makes a secret and prints a token for it; --dev --no-auth serves without "
        "authentication, on 127.0.0.1 only."))
    parts.append(para("Every setting can also come from the environment variable shown; "
                      "a flag wins over its variable."))
    return "\n\n".join(parts)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="opencue-gateway",
        allow_abbrev=False,  # a typo must not silently become another flag
        description=_wrapped("HTTP/JSON gateway for OpenCue's Cuebot: POST "
                             "/<package.Service>/<Method> with a JSON body calls that gRPC "
                             "method and returns its reply as JSON."),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog's lines as made
    )
    for o in OPTIONS:
        if o.flag is None:
            continue  # environment only (secrets: a flag would show in `ps`): the epilog
        if o.switch:
            p.add_argument(o.flag, dest=o.name, action="store_const", const="true",
                           default=None, help=_help(o))
        else:
            p.add_argument(o.flag, dest=o.name, metavar=o.metavar, default=None,
                           help=_help(o))
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def load(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Config:
    """The configuration for these arguments and this environment."""
    args = parser().parse_args(argv)
    values: dict[str, Any] = {}
    for o in OPTIONS:
        raw, where = (getattr(args, o.name) if o.flag else None), o.flag
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
    if (values.get("tls_cert_file") is None) != (values.get("tls_key_file") is None):
        raise ConfigError("HTTPS needs both TLS_CERT_FILE and TLS_KEY_FILE")
    if values.get("no_auth") and (values.get("jwt_secret") or values.get("jwt_secret_file")
                                  or values.get("jwt_jwks")):
        raise ConfigError("--no-auth contradicts JWT_SECRET / JWT_SECRET_FILE / JWT_JWKS; "
                          "choose one")
    asymmetric = [a for a in values.get("jwt_algorithms") or () if a in ASYMMETRIC_ALGORITHMS]
    if asymmetric and not values.get("jwt_jwks"):
        raise ConfigError(f"JWT_ALGORITHMS {', '.join(asymmetric)} needs JWT_JWKS (the "
                          "identity provider's public keys); without it only HS256, HS384 "
                          "and HS512 can be verified")
    if values.get("no_auth") and not values.get("dev"):
        raise ConfigError("--no-auth is only allowed with --dev, which serves 127.0.0.1 only: "
                          "run --dev --no-auth, or set JWT_SECRET / JWT_SECRET_FILE")
    if values.get("dev"):
        host = values.get("host") or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
            raise ConfigError(f"--dev serves 127.0.0.1 only; REST_HOST / --host {host} "
                              "contradicts it")
        values["host"] = "::1" if host == "::1" else "127.0.0.1"
    delay, grace = values.get("shutdown_delay") or 0.0, values.get("shutdown_grace") or 0.0
    if delay > grace:
        raise ConfigError(f"SHUTDOWN_DELAY ({delay:g} s) is part of SHUTDOWN_GRACE "
                          f"({grace:g} s) and cannot exceed it")
    rps, burst = values.get("rate_limit_rps") or 0.0, values.get("rate_limit_burst")
    if rps and burst is not None and burst < 1:
        raise ConfigError("RATE_LIMIT_BURST must be at least 1")
    for pattern, cost in values.get("rate_limit_costs") or ():
        if rps and cost > (burst if burst is not None else max(rps, 1.0)):
            raise ConfigError(f"RATE_LIMIT_COSTS: {pattern} costs {cost:g}, more than a "
                              "full bucket (RATE_LIMIT_BURST); it could never be served")
    return Config(**values)
