"""Log lines cannot be forged: every value a client chooses is escaped, in text and JSON.

The audit trail (``AUDIT_LOG``) is a log too: its lines are split as Python's
``str.splitlines`` does (on NEL and U+2028 as well) and each must be one whole record.

A real ``python -m gateway`` in each log format, fed control characters in
every client-chosen value that reaches a log line: the token's subject (in
the access line and in the ``gateway.reload`` line of ``POST
/admin/reload``, which the issue found split), the path (also the gRPC
method name), headers (``X-Request-Id``, ``X-Forwarded-For`` behind a
trusted proxy), and ``--dev``'s reply summary. Then every line of the
process's output is checked: no forged line, no raw control character.
"""
from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from support import GatewayProcess, RecordingCuebot, raw_request, token

FORGED = "FORGED 200 OK"
# each splits or disguises a line somewhere: a terminal, `less`, a JSON viewer, Python's splitlines
HOSTILE = ["\n", "\r", "\x1b[2K\r", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028",
           "\u2029", "\u202e"]
_RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


async def _hostile_requests(gw: GatewayProcess) -> None:
    port = gw.port
    for i, c in enumerate(HOSTILE):
        sub = f"user{i}{c}{FORGED} sub"
        auth = {"Authorization": f"Bearer {token(sub)}"}
        # the subject: in the reload line and its access line
        status, _h, _b = await raw_request(port, "POST", "/admin/reload", b"",
                                           headers=auth, authorized=False)
        assert status == 200
        # the subject on an RPC, with a forwarded client and a request id
        await raw_request(port, "POST", "/show.ShowInterface/GetShows", b"{}",
                          headers={**auth, "X-Forwarded-For": f"10.0.0.{i}",
                                   "X-Request-Id": f"id{i}"}, authorized=False)
    # the path and the method name it carries, percent-encoded (decoded before logging)
    for c in ("%0A", "%0D", "%1B", "%00", "%C2%85", "%E2%80%A8", "%E2%80%AE"):
        await raw_request(port, "POST", f"/show.ShowInterface/Get{c}{FORGED.replace(' ', '%20')}",
                          b"{}")
        await raw_request(port, "GET", f"/api/job/x{c}{FORGED.replace(' ', '%20')}")
        await raw_request(port, "GET", f"/docs/static/x{c}{FORGED.replace(' ', '%20')}",
                          authorized=False)
    # header bytes the HTTP parser lets through (obs-text, other controls)
    for value in ("id\x0bX", "id\x85X", "id\x1bX"):
        await raw_request(port, "GET", "/healthz", headers={"X-Request-Id": value},
                          authorized=False)


def _check_text(output: str) -> None:
    for line in output.split("\n"):
        assert not line.lstrip("\r").startswith(FORGED.split()[0]), line
        assert not _RAW.search(line), repr(line)
        assert "\r" not in line, repr(line)


def _check_json(output: str) -> None:
    lines = [line for line in output.split("\n") if line.strip()]
    assert lines
    for line in lines:
        data = json.loads(line)  # every line is one object: nothing split it
        for key, value in data.items():
            if isinstance(value, str) and key != "exception":
                assert not _RAW.search(value) and "\n" not in value and "\r" not in value, \
                    (key, value)


async def _hostile_audited_calls(gw: GatewayProcess) -> int:
    """Kills whose subject, path and targets carry each hostile character: audit lines."""
    for i, c in enumerate(HOSTILE):
        auth = {"Authorization": f"Bearer {token(f'user{i}{c}{FORGED}')}"}
        body = json.dumps({"job": {"id": f"job{i}{c}{FORGED}", "name": f"n{c}x"}})
        status, _h, _b = await raw_request(gw.port, "POST", "/job.JobInterface/Kill",
                                           body.encode(), headers=auth, authorized=False)
        assert status == 200
    return len(HOSTILE)


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_client_values_cannot_forge_log_lines(fmt: str, tmp_path: Any) -> None:
    cuebot = await RecordingCuebot().start()
    audit = tmp_path / "audit.jsonl"
    gw = GatewayProcess("--dev", env={"CUEBOT_ENDPOINT": cuebot.endpoint, "LOG_FORMAT": fmt,
                                      "TRUSTED_PROXIES": "127.0.0.1", "RATE_LIMIT_RPS": "0",
                                      "AUDIT_LOG": str(audit)})
    try:
        await asyncio.to_thread(gw.wait_ready)
        await _hostile_requests(gw)
        audited = await _hostile_audited_calls(gw)
    finally:
        code = await asyncio.to_thread(gw.stop)
        await cuebot.stop()
    # the audit trail: one JSON line per call, whatever a reader splits lines on; its
    # values are kept exactly (JSON-escaped), so the forged text is there, but inside a line
    lines = audit.read_text().splitlines()
    assert len(lines) == audited, lines
    for line in lines:
        assert not _RAW.search(line) and "\r" not in line, repr(line)
        entry = json.loads(line)
        assert FORGED in entry["user"] and FORGED in entry["targets"][0]["id"]
    assert code == 0, gw.output
    output = gw.output
    assert output.count("reload (POST /admin/reload by user") == len(HOSTILE), output[-3000:]
    escaped = "user0\\x0aFORGED" if fmt == "text" else "user0\\\\x0aFORGED"  # JSON doubles \\
    assert escaped in output  # the subject is there, escaped
    assert "Traceback" not in output and '"exception"' not in output
    (_check_text if fmt == "text" else _check_json)(output)


def test_escape_keeps_ordinary_text_and_escapes_controls() -> None:
    from gateway.logs import escape

    assert escape("ordinary text / é ü 漢字 🎞") == "ordinary text / é ü 漢字 🎞"
    assert escape("a\nb\rc\td\x00e\x7f") == "a\\x0ab\\x0dc\\x09d\\x00e\\x7f"
    assert escape("nel\x85 ls\u2028 ps\u2029 rlo\u202e") == \
        "nel\\x85 ls\\u2028 ps\\u2029 rlo\\u202e"


def test_both_formatters_escape_every_message() -> None:
    import logging

    from gateway.logs import AccessEntry, JsonFormatter, TextFormatter

    record = logging.LogRecord("gateway.reload", logging.INFO, __file__, 1,
                               "reload (%s)", ("by x\nFORGED",), None)
    assert "\n" not in TextFormatter("%(message)s").format(record)
    assert json.loads(JsonFormatter().format(record))["message"] == "reload (by x\\x0aFORGED)"
    entry = AccessEntry("id", "u\nv", "c\u2028", "GET", "/p\rq", "r", 200, "OK", 0, 0, 1.0)
    access = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, entry, (), None)
    fields: dict[str, Any] = json.loads(JsonFormatter().format(access))
    assert (fields["user"], fields["client"], fields["path"]) == ("u\\x0av", "c\\u2028", "/p\\x0dq")
    text = TextFormatter("%(message)s").format(access)
    assert "\n" not in text and "\r" not in text and "\u2028" not in text
