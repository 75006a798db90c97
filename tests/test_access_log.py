"""The access log: one line per request, text or JSON, cancelled requests as 499.

Lines come from real gateways (in this process through ``caplog``, rendered
by the formatter the process would use, and from ``python -m gateway``'s own
output). Client disconnects are real: a socket that sends a request to a slow
``RecordingCuebot`` method and closes before the reply.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opencue_proto import show_pb2

from gateway.app import create_app
from gateway.config import Config, ConfigError, load
from gateway.logs import AccessEntry, JsonFormatter
from gateway.server import GatewayRunner
from gateway.serving import build_state
from scrape import scrape, value
from support import (SECRET, GatewayProcess, RecordingCuebot, auth_headers, raw_request,
                     token)

GET_SHOWS = "/show.ShowInterface/GetShows"
FIELDS = {"request_id", "user", "client", "method", "path", "route", "status", "grpc_code",
          "bytes_in", "bytes_out", "duration_ms"}


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.access"]


def _json(record: logging.LogRecord) -> dict[str, Any]:
    return json.loads(JsonFormatter().format(record))


async def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------
# the line's facts
# ---------------------------------------------------------------------------
async def test_json_line_has_every_fact(make_gateway: Any, cuebot: RecordingCuebot,
                                        caplog: pytest.LogCaptureFixture) -> None:
    cuebot.reply(GET_SHOWS, show_pb2.ShowGetShowsResponse(
        shows=show_pb2.ShowSeq(shows=[show_pb2.Show(name="testing")])))
    gw = await make_gateway(authorized=False)
    body = b'{"x": 1}'
    with caplog.at_level(logging.INFO):
        resp = await gw.post(GET_SHOWS, data=body, headers={
            **auth_headers("jdoe@studio"), "X-Request-Id": "req-42"})
        reply = await resp.read()
        await gw.post("/no.Such/Method", headers={"X-Request-Id": "req-43"})
    ok, missing = (_json(r) for r in _access(caplog))
    assert set(ok) == FIELDS | {"time", "level", "logger"}
    assert ok["level"] == "info" and ok["logger"] == "gateway.access"
    assert {k: ok[k] for k in FIELDS - {"duration_ms"}} == {
        "request_id": "req-42", "user": "jdoe@studio", "client": "127.0.0.1",
        "method": "POST", "path": GET_SHOWS, "route": GET_SHOWS, "status": 200,
        "grpc_code": "OK", "bytes_in": len(body), "bytes_out": len(reply)}
    assert 0 < ok["duration_ms"] < 5000
    assert missing["request_id"] == "req-43" and missing["user"] is None
    assert (missing["status"], missing["grpc_code"], missing["route"]) == \
        (401, "UNAUTHENTICATED", "unmatched")


async def test_text_line_carries_the_same_facts(make_gateway: Any, cuebot: RecordingCuebot,
                                                caplog: pytest.LogCaptureFixture) -> None:
    cuebot.reply("/show.ShowInterface/FindShow", code=__import__("grpc").StatusCode.NOT_FOUND,
                 message="no show")
    gw = await make_gateway(authorized=False)
    with caplog.at_level(logging.INFO):
        await gw.post("/show.ShowInterface/FindShow", data=b'{"name":"x"}',
                      headers={**auth_headers("jdoe"), "X-Request-Id": "r-7"})
    (line,) = [r.getMessage() for r in _access(caplog)]
    assert re.fullmatch(
        r"POST /show\.ShowInterface/FindShow 404 NOT_FOUND [0-9.]+ms id=r-7 user=jdoe "
        r"client=127\.0\.0\.1 route=/show\.ShowInterface/FindShow in=12 out=\d+", line), line


async def test_untrusted_text_cannot_forge_a_line(make_gateway: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    gw = await make_gateway()
    with caplog.at_level(logging.INFO):
        status, _, _ = await raw_request(gw.port, "POST", "/no.Such/M%0Aforged%20200%20OK")
    assert status == 404
    (record,) = _access(caplog)
    line = record.getMessage()
    assert "\n" not in line
    assert '"/no.Such/M\\nforged 200 OK"' in line
    assert _json(record)["path"] == "/no.Such/M\\x0aforged 200 OK"  # escaped in JSON too


def test_log_format_setting() -> None:
    assert load([], {}).log_format == "text"
    assert load([], {"LOG_FORMAT": "JSON"}).log_format == "json"
    assert load(["--log-format", "text"], {"LOG_FORMAT": "json"}).log_format == "text"
    with pytest.raises(ConfigError, match="LOG_FORMAT: expected text or json"):
        load([], {"LOG_FORMAT": "xml"})


def test_json_formatter_keeps_ordinary_lines_and_tracebacks() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("gateway", logging.ERROR, __file__, 1, "failed %s", ("x",),
                                   __import__("sys").exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "failed x" and out["level"] == "error"
    assert "RuntimeError: boom" in out["exception"]
    entry = AccessEntry("id", None, "::1", "GET", "/p", "unmatched", 404, "NOT_FOUND", 0, 5,
                        1.23456)
    assert str(entry) == ("GET /p 404 NOT_FOUND 1.2ms id=id user=- client=::1 route=unmatched "
                          "in=0 out=5")
    assert entry.fields()["duration_ms"] == 1.235


# ---------------------------------------------------------------------------
# a client that goes away: 499, CANCELLED, info, no traceback
# ---------------------------------------------------------------------------
async def _send_and_hang_up(port: int, cuebot: RecordingCuebot, path: str) -> None:
    """Send a request, wait until it reaches Cuebot, then close the connection."""
    before = len(cuebot.calls)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 2",
                        "X-Request-Id: gone-away",
                        *(f"{k}: {v}" for k, v in auth_headers("leaver").items())])
    writer.write(head.encode() + b"\r\n\r\n{}")
    await writer.drain()
    await _wait_for(lambda: len(cuebot.calls) > before)
    writer.close()
    await writer.wait_closed()


def _assert_quiet_499(records: list[logging.LogRecord], caplog: pytest.LogCaptureFixture,
                      max_ms: float) -> dict[str, Any]:
    (record,) = [r for r in records if r.name == "gateway.access"]
    entry = _json(record)
    assert record.levelno == logging.INFO
    assert (entry["status"], entry["grpc_code"], entry["request_id"], entry["user"]) == \
        (499, "CANCELLED", "gone-away", "leaver")
    assert entry["duration_ms"] < max_ms
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
        [r.getMessage() for r in caplog.records]
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text
    return entry


async def test_disconnect_cancels_and_logs_499(make_gateway: Any, cuebot: RecordingCuebot,
                                               caplog: pytest.LogCaptureFixture) -> None:
    cuebot.reply(GET_SHOWS, delay=5.0)
    gw = await make_gateway()
    caplog.clear()  # start-up's lines (the rate-limit-off warning) are not the request's
    with caplog.at_level(logging.INFO):
        await _send_and_hang_up(gw.port, cuebot, GET_SHOWS)
        await _wait_for(lambda: _access(caplog))
        await asyncio.sleep(0.2)  # anything logged late would show up now
    _assert_quiet_499(caplog.records, caplog, max_ms=4000)  # did not wait for Cuebot
    found = await scrape(gw)
    assert value(found, "opencue_gateway_requests_total", route=GET_SHOWS, status="499",
                 grpc_code="CANCELLED") == 1
    assert value(found, "opencue_gateway_backend_duration_seconds_count", route=GET_SHOWS,
                 grpc_code="CANCELLED") == 1
    assert value(found, "opencue_gateway_requests_in_flight") == 1  # only the scrape


async def test_disconnect_without_handler_cancellation_is_also_499(
        cuebot: RecordingCuebot, caplog: pytest.LogCaptureFixture) -> None:
    """A runner that lets handlers finish: the reply's write fails, still 499."""
    cuebot.reply(GET_SHOWS, delay=0.5)
    state = await build_state(Config().with_(cuebot_endpoint=cuebot.endpoint, jwt_secret=SECRET,
                                             rate_limit_rps=0, grpc_timeout=5.0))
    runner = GatewayRunner(create_app(state), handler_cancellation=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        caplog.clear()
        with caplog.at_level(logging.INFO):
            await _send_and_hang_up(port, cuebot, GET_SHOWS)
            await _wait_for(lambda: _access(caplog))
            await asyncio.sleep(0.2)
        entry = _assert_quiet_499(caplog.records, caplog, max_ms=5000)
        assert entry["duration_ms"] >= 500  # the handler ran to the end this time
        text = state.metrics.exposition(None)[0].decode()
        from scrape import samples

        found = samples(text)
        assert value(found, "opencue_gateway_requests_total", status="499") == 1
        assert value(found, "opencue_gateway_backend_duration_seconds_count",
                     grpc_code="OK") == 1
    finally:
        await runner.cleanup()


async def test_gateway_process_logs_json_and_499(cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, delay=5.0)
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "LOG_FORMAT": "json"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        await _send_and_hang_up(gw.port, cuebot, GET_SHOWS)
        await _wait_for(lambda: '"status":499' in gw.output)
    finally:
        await asyncio.to_thread(gw.stop)
    lines = [json.loads(line) for line in gw.output.splitlines() if line.strip()]
    (entry,) = [e for e in lines if e["logger"] == "gateway.access"]
    assert (entry["status"], entry["grpc_code"], entry["user"]) == (499, "CANCELLED", "leaver")
    assert entry["duration_ms"] < 4000
    assert not [e for e in lines if e["level"] in ("error", "critical")], lines
    assert "Traceback" not in gw.output


# ---------------------------------------------------------------------------
# secrets never reach the log
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_tokens_and_secrets_never_logged(cuebot: RecordingCuebot, fmt: str) -> None:
    import aiohttp

    good = token("script-user")
    wrong_key = token("mallory", secret="not-the-gateway-secret-0123456789ab")
    expired = token("late", lifetime=-3600)
    redis_url = "redis://:hunter2-redis-pw@127.0.0.1:1/0"
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "LOG_FORMAT": fmt,
                             "LOG_LEVEL": "debug", "RATE_LIMIT_REDIS_URL": redis_url})
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as session:
            tries = [
                (GET_SHOWS, {"Authorization": f"Bearer {good}"}, 200),
                (GET_SHOWS, {"Authorization": f"Bearer {wrong_key}"}, 403),
                (GET_SHOWS, {"Authorization": f"Bearer {expired}"}, 403),
                (f"{GET_SHOWS}?access_token={good}", {"Authorization": f"Bearer {good}"}, 200),
                (GET_SHOWS, {"Authorization": f"Bearer {good}",
                             "Grpc-Metadata-Authorization": f"Bearer {good}"}, 400),
                (GET_SHOWS, {"Authorization": f"Bearer {good}", "Cookie": f"t={good}"}, 200),
            ]
            for path, headers, status in tries:
                async with session.post(gw.url + path, data=b"{}", headers=headers) as resp:
                    assert resp.status == status
    finally:
        await asyncio.to_thread(gw.stop)
    out = gw.output
    assert out.count("gateway.access") == len(tries)
    for secret in (SECRET, good, wrong_key, expired, "hunter2-redis-pw",
                   good.rsplit(".", 1)[1], wrong_key.rsplit(".", 1)[1]):
        assert secret not in out
    assert "script-user" in out  # the subject is logged, the token is not
    if fmt == "json":
        assert all(json.loads(line) for line in out.splitlines() if line.strip())


async def test_static_files_are_sent_and_logged(make_gateway: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Static files are in-memory replies: their lines carry their size as sent."""
    from pathlib import Path

    import swagger_ui_bundle

    gw = await make_gateway(authorized=False)
    names = ("swagger-ui.css", "swagger-ui-bundle.js")
    with caplog.at_level(logging.INFO):
        bodies, sent = [], []
        for name in names:
            resp = await gw.get(f"/docs/static/{name}")
            assert resp.status == 200
            bodies.append(await resp.read())
            sent.append(int(resp.headers["Content-Length"]))
    for name, body in zip(names, bodies):
        assert body == (Path(swagger_ui_bundle.swagger_ui_path) / name).read_bytes()
    entries = [_json(r) for r in _access(caplog)]
    assert [(e["status"], e["route"], e["bytes_out"]) for e in entries] == \
        [(200, "/docs/static/{name}", n) for n in sent]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_direct_write_is_the_line_logging_writes(fmt: str) -> None:
    """With only setup()'s handler, access lines skip the logging chain: same text.

    Run in a process of its own, where setup() installs the handler (pytest's
    own handlers would otherwise take the chain path every time).
    """
    import subprocess
    import sys

    code = f"""
import logging, sys
from gateway import logs
logs.setup("info", {fmt!r})
assert logs._installed is logging.root.handlers[0]  # the direct path is open
entries = [logs.AccessEntry("id1", "alice", "127.0.0.1", "POST", "/a.B/C", "/a.B/C", 200,
                            "OK", 2, 30, 1.25),
           logs.AccessEntry("id2", None, "127.0.0.1", "GET", "/x y\\u2028\\x1b", "unmatched",
                            404, "NOT_FOUND", 0, 0, 0.5)]
for e in entries:
    logs.access(e)                       # the direct write
sys.stderr.write("--\\n")
logging.getLogger("gateway.access").addFilter(lambda r: True)  # now the logging chain
for e in entries:
    logs.access(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent).stderr
    direct, chained = out.split("--\n")
    assert direct.count("\n") == 2 and "\u2028" not in direct and "\x1b" not in direct

    def untimed(lines: str) -> list[str]:
        if fmt == "json":
            return [json.dumps({k: v for k, v in json.loads(line).items() if k != "time"})
                    for line in lines.splitlines()]
        return [line.split(" ", 2)[2] for line in lines.splitlines()]

    assert untimed(direct) == untimed(chained)


def _in_a_process(code: str, flush: float = 0.0) -> str:
    """``code`` run by a Python of its own after ``logs.setup``; what it wrote to stderr."""
    import subprocess
    import sys

    prelude = """
import asyncio, logging, sys
class Counting:
    # stderr, counting the writes made to it
    def __init__(self, out): self.out, self.writes = out, 0
    def write(self, s): self.writes += 1; return self.out.write(s)
    def flush(self): self.out.flush()
sys.stderr = Counting(sys.stderr)
from gateway import logs
logs.setup("info", "text", access_flush=FLUSH)
def entry(i):
    return logs.AccessEntry(f"id{i}", "alice", "127.0.0.1", "POST", "/a.B/C", "/a.B/C", 200,
                            "OK", 2, 30, 1.25)
"""
    return subprocess.run([sys.executable, "-c", f"FLUSH = {flush!r}\n" + prelude + code],
                          capture_output=True,
                          text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent).stderr


def test_lines_of_one_loop_turn_are_one_write_in_order() -> None:
    out = _in_a_process("""
async def main():
    before = sys.stderr.writes
    for i in range(3):
        logs.access(entry(i))
    assert sys.stderr.writes == before, "written before the turn ended"
    await asyncio.sleep(0)
    assert sys.stderr.writes == before + 1, sys.stderr.writes - before
    logs.access(entry(3))
    logging.getLogger("gateway").warning("after id3")   # another record: after the line
    logs.access(entry(4))
    await asyncio.sleep(0)
asyncio.run(main())
""")
    ids = [ln.split(" id=")[1].split()[0] if " id=" in ln else ln.split(": ", 1)[1]
           for ln in out.splitlines()]
    assert ids == ["id0", "id1", "id2", "id3", "after id3", "id4"], out


def test_a_line_made_in_the_last_turn_is_written_at_exit() -> None:
    out = _in_a_process("""
loop = asyncio.new_event_loop()
def last():
    logs.access(entry(7))
    loop.stop()   # the loop ends with this turn: the write it scheduled never runs
loop.call_soon(last)
loop.run_forever()
assert logs._pending
""")
    assert out.count("id=id7 ") == 1, out


def test_lines_wait_up_to_the_flush_interval_then_go_in_one_write() -> None:
    out = _in_a_process("""
async def main():
    before = sys.stderr.writes
    for i in range(3):
        logs.access(entry(i))
        await asyncio.sleep(0)           # turns of the loop pass: still waiting
    assert sys.stderr.writes == before, "written before the interval"
    await asyncio.sleep(0.5)             # well past ACCESS_LOG_FLUSH (0.05 s here)
    assert sys.stderr.writes == before + 1, sys.stderr.writes - before
    for i in range(3, 3 + logs.MAX_PENDING):   # a burst: written when the buffer is full
        logs.access(entry(i))
    assert sys.stderr.writes == before + 2, sys.stderr.writes - before
    logs.access(entry(999))
asyncio.run(main())
""", flush=0.05)
    ids = [ln.split(" id=")[1].split()[0] for ln in out.splitlines()]
    assert ids == [f"id{i}" for i in range(3 + 256)] + ["id999"], ids[-3:]


def test_the_default_flush_interval_is_what_the_readme_says() -> None:
    from gateway import config

    assert config.Config().access_log_flush == 0.1
    assert "| `ACCESS_LOG_FLUSH` | `--access-log-flush` | `100ms` |" in (
        Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_lines_still_waiting_when_the_gateway_stops_are_written(
        cuebot: RecordingCuebot, workers: str) -> None:
    """SIGTERM with lines inside a long ACCESS_LOG_FLUSH: none is lost, workers' included."""
    import aiohttp

    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "WORKERS": workers,
                             "ACCESS_LOG_FLUSH": "1h"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.post(f"{gw.url}/show.ShowInterface/GetShows", data=b"{}",
                                     headers=auth_headers()) as resp:
                    assert resp.status == 200
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output
    lines = [ln for ln in gw.output.splitlines() if "gateway.access" in ln]
    assert len(lines) == 3 and all(" 200 OK " in ln for ln in lines), gw.output
