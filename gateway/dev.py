"""``--dev``: the gateway as a developer's tool in front of a live Cuebot.

Replies are indented for reading in a terminal (the compact bytes the Go
gateway sends are the production contract, so this is dev-only), and each
request gets a log line summing up its reply — how many jobs, which error —
so a developer can watch what a web app asks for without a proxy.
"""
from __future__ import annotations

from typing import Any

import orjson

_MAX_PARTS = 4


def pretty(body: bytes) -> bytes:
    """The same JSON, indented (key order kept)."""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2) + b"\n"
    except orjson.JSONDecodeError:
        return body


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"[{len(value)}]"
    if value is None:
        return "null"
    return "{…}" if isinstance(value, dict) else "…"


def summary(body: bytes) -> str:
    """One line about a JSON reply: ``jobs.jobs[12]``, ``error 5: Job not found``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"{len(body)} bytes, not JSON"
    if not isinstance(data, dict):
        return _describe(data)
    if set(data) == {"error", "code", "message", "details"}:
        return f"error {data['code']}: {str(data['message'])[:120]}"
    if not data:
        return "{}"
    parts = []
    for key, value in list(data.items())[:_MAX_PARTS]:
        # Cuebot wraps lists in a message of their own: {"jobs": {"jobs": [...]}}
        if isinstance(value, dict) and len(value) == 1:
            (inner, inner_value), = value.items()
            parts.append(f"{key}.{inner}{_describe(inner_value)}")
        else:
            parts.append(f"{key}{_describe(value)}")
    more = len(data) - _MAX_PARTS
    return ", ".join(parts) + (f", +{more} keys" if more > 0 else "")
