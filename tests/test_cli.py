"""The ``opencue-gateway`` process as an operator meets it.

Everything here runs ``python -m gateway`` in a child process: exit codes,
what lands on stderr and the start-up log are only observable from outside.
A start-up failure must be one line that says what is wrong, never a
traceback; a bad setting exits 2, anything else 1.
"""
from __future__ import annotations

import asyncio
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
from google.protobuf import descriptor_pb2

from gateway import __version__, config
from support import GatewayProcess, RecordingCuebot, auth_headers, free_port, run_gateway

PREFIX = "opencue-gateway: error: "
# the log format set up by cli.setup_logging
LOG_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def _error_line(result: subprocess.CompletedProcess, code: int, *, only_line: bool = True) -> str:
    """The one error line of a failed start, after checking how it failed.

    With ``only_line`` stderr holds nothing else; otherwise log records may
    precede it (a failure after descriptors loaded) but no other text may.
    """
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    assert result.returncode == code, everything
    assert result.stdout == "", everything
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if only_line:
        assert len(lines) == 1, result.stderr
    else:
        lines = [ln for ln in lines if not LOG_RECORD.match(ln)]
        assert len(lines) == 1, result.stderr
        assert result.stderr.rstrip("\n").splitlines()[-1] == lines[0], "error is not last"
    assert lines[0].startswith(PREFIX), result.stderr
    assert len(lines[0]) > len(PREFIX) + 10, "the reason is missing"
    # a foreseen failure, not the catch-all for bugs ("unexpected KeyError: ...")
    assert not lines[0].startswith(PREFIX + "unexpected"), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------
# --help, --version
# ---------------------------------------------------------------------------
def test_help_lists_every_env_var() -> None:
    result = run_gateway("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("usage: opencue-gateway")
    for o in config.OPTIONS:
        if o.env:
            assert o.env in result.stdout, o.env
        if o.flag:
            assert o.flag in result.stdout, o.flag


def test_version() -> None:
    result = run_gateway("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"opencue-gateway {__version__}"


# ---------------------------------------------------------------------------
# bad settings: exit 2
# ---------------------------------------------------------------------------
def test_bad_env_setting_exits_2_naming_the_variable() -> None:
    line = _error_line(run_gateway(env={"REST_PORT": "abc"}), 2)
    assert line.startswith(PREFIX + "REST_PORT: ")
    assert "'abc'" in line


def test_bad_flag_setting_exits_2_naming_the_flag() -> None:
    line = _error_line(run_gateway("--grpc-timeout", "nope"), 2)
    assert line.startswith(PREFIX + "--grpc-timeout: ")
    assert "'nope'" in line


def test_malformed_command_line_exits_2_with_one_line() -> None:
    """A flag missing its value or an unknown flag: one line, not the usage block."""
    line = _error_line(run_gateway("--port"), 2)
    assert "--port" in line
    line = _error_line(run_gateway("--no-such-flag"), 2)
    assert "--no-such-flag" in line


def test_no_secret_says_every_way_out_in_one_line() -> None:
    """The line names both settings, and the development way out works as it is written."""
    line = _error_line(run_gateway(env={"JWT_SECRET": None}), 1)
    for words in ("JWT_SECRET,", "JWT_SECRET_FILE", "--sandbox", "--dev --no-auth"):
        assert words in line, line
    half = _error_line(run_gateway("--no-auth", env={"JWT_SECRET": None}), 2)
    assert "only allowed with --dev" in half and "--dev --no-auth" in half, half
    gw = GatewayProcess("--dev", "--no-auth", env={"JWT_SECRET": None,
                                                    "CUEBOT_ENDPOINT": "127.0.0.1:1"})
    try:
        gw.wait_ready()
    finally:
        assert gw.stop() == 0, gw.output


def test_conflicting_settings_exit_2() -> None:
    line = _error_line(run_gateway(env={"CUEBOT_TLS_CERT": "/c.pem"}), 2)
    assert "CUEBOT_TLS_KEY" in line


# ---------------------------------------------------------------------------
# start-up failures: exit 1
# ---------------------------------------------------------------------------
def test_missing_descriptor_set(tmp_path: Path) -> None:
    path = tmp_path / "nope.binpb"
    line = _error_line(run_gateway("--descriptor-set", str(path)), 1)
    assert str(path) in line and "no such file" in line


def test_empty_descriptor_set(tmp_path: Path) -> None:
    path = tmp_path / "empty.binpb"
    path.write_bytes(b"")
    line = _error_line(run_gateway("--descriptor-set", str(path)), 1)
    assert str(path) in line and "empty" in line


def test_corrupt_descriptor_set(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.binpb"
    path.write_bytes(random.Random(20240601).randbytes(4096))
    line = _error_line(run_gateway("--descriptor-set", str(path)), 1)
    assert str(path) in line and "not a FileDescriptorSet" in line


def test_descriptor_set_without_services(tmp_path: Path) -> None:
    f = descriptor_pb2.FileDescriptorProto(name="plain.proto", package="plain", syntax="proto3")
    msg = f.message_type.add(name="Thing")
    msg.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    path = tmp_path / "plain.binpb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[f]).SerializeToString())
    line = _error_line(run_gateway("--descriptor-set", str(path)), 1)
    assert str(path) in line and "no services" in line


def test_missing_proto_path(tmp_path: Path) -> None:
    path = tmp_path / "protos"
    line = _error_line(run_gateway("--proto-path", str(path)), 1)
    assert str(path) in line and "no such directory" in line


def test_proto_path_with_a_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "broken.proto").write_text(
        'syntax = "proto3";\npackage broken;\nmessage { string x = 1; }\n')
    line = _error_line(run_gateway("--proto-path", str(tmp_path)), 1)
    assert line.endswith("protoc: broken.proto:3:9: Expected message name."), line


def test_proto_path_error_is_protocs_error_not_its_warning(tmp_path: Path) -> None:
    """protoc's first stderr line is abseil's preamble warning; the error comes later."""
    (tmp_path / "broken.proto").write_text("garbage\n")
    line = _error_line(run_gateway("--proto-path", str(tmp_path)), 1)
    assert line.endswith('protoc: broken.proto:1:1: Expected top-level statement '
                         '(e.g. "message")."'[:-1]), line
    assert "WARNING" not in line and "absl" not in line


def test_reflection_against_a_dead_backend_fails_within_the_timeout() -> None:
    """Not hang: fail by the --grpc-timeout given (plus the interpreter's start-up)."""
    baseline_start = time.monotonic()
    run_gateway("--descriptor-set", "/nonexistent/x.binpb")
    baseline = time.monotonic() - baseline_start

    endpoint = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = run_gateway("--reflection", "--cuebot-endpoint", endpoint, "--grpc-timeout", "2s",
                         timeout=20)
    elapsed = time.monotonic() - start
    line = _error_line(result, 1)
    assert "reflection" in line and endpoint in line
    assert elapsed < baseline + 2.0 + 2.0, f"took {elapsed:.1f}s (start-up alone {baseline:.1f}s)"


def test_ctrl_c_during_start_up_is_one_line_not_a_traceback() -> None:
    """SIGINT while descriptors are still loading: exit 130, one line, no traceback.

    The backend is a TCP listener that never answers, so the gateway is
    provably inside the reflection fetch once it has connected, and stays
    there: the fetch's deadline is far longer than the test, so on however
    busy a machine, only the signal can end it (with a 2 s deadline, a slow
    machine saw DEADLINE_EXCEEDED, exit 1, before the signal was handled).
    """
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(60)
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        gw = GatewayProcess("--reflection", "--cuebot-endpoint", endpoint,
                            "--grpc-timeout", "10m")
        conn = None
        try:
            conn, _ = silent.accept()  # held open: the fetch can only wait
        finally:
            code = gw.stop(signal.SIGINT)
            if conn is not None:
                conn.close()
    out = gw.output
    assert "Traceback" not in out, out
    assert code == 130, out
    assert [ln for ln in out.splitlines() if ln.strip()] == ["opencue-gateway: interrupted"]


def test_http_port_already_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_gateway("--host", "127.0.0.1", "--port", str(port))
    line = _error_line(result, 1, only_line=False)
    assert f"127.0.0.1:{port}" in line and "cannot listen" in line


def test_services_matching_nothing() -> None:
    line = _error_line(run_gateway("--services", "nosuch.*"), 1)
    assert "no service left to expose" in line


# ---------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------
async def _started(gw: GatewayProcess) -> GatewayProcess:
    """Wait for "listening on" without blocking the loop the backend runs on."""
    try:
        return await asyncio.to_thread(gw.wait_ready, 30.0)
    except BaseException:
        await asyncio.to_thread(gw.stop)
        raise


async def test_end_to_end_and_clean_shutdown(cuebot: RecordingCuebot) -> None:
    gw = await _started(GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint}))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gw.url}/show.ShowInterface/GetShows", data=b"{}",
                                 headers={"Content-Type": "application/json",
                                          **auth_headers()}) as resp:
                status, ctype, body = resp.status, resp.headers.get("Content-Type"), \
                    await resp.read()
        assert status == 200, body
        assert ctype == "application/json"
        assert body == b'{"shows":null}'
        assert cuebot.paths() == ["/show.ShowInterface/GetShows"]
        assert cuebot.calls[0].request == b""
    finally:
        code = await asyncio.to_thread(gw.stop)
    out = gw.output
    assert code == 0, out
    assert "shutting down" in out
    assert "Traceback" not in out
    assert f"(Cuebot at {cuebot.endpoint})" in out


async def test_startup_log_lists_aliases_and_hidden_services(cuebot: RecordingCuebot) -> None:
    gw = await _started(GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint}))
    code = await asyncio.to_thread(gw.stop)
    out = gw.output
    assert code == 0, out
    assert "alias: /frame.FrameInterface/* -> /job.FrameInterface/*" in out
    hidden = next((ln for ln in out.splitlines() if "not exposed:" in ln), "")
    for service in ("rqd.RqdInterface", "report.RqdReportInterface"):
        assert service in hidden, out
    assert "descriptors: bundled opencue.binpb" in out


def test_sigterm_right_after_the_listening_line_is_a_clean_shutdown() -> None:
    """Supervisors signal as soon as the service says it is up; that must not kill it.

    Signal handlers installed after the "listening on" line left a window in
    which SIGTERM took the default action (exit -15, no "shutting down").
    """
    for _ in range(3):
        gw = GatewayProcess().wait_ready()
        code = gw.stop()
        assert code == 0, gw.output
        assert "shutting down" in gw.output


ECHO_PROTO = """\
syntax = "proto3";
package demo;
service Echo { rpc Say(Msg) returns (Msg); }
message Msg { string text = 1; int64 n = 2; }
"""
# Msg{text: "hi", n: 5} on the wire, by hand: field 1 (LEN) "hi", field 2 (VARINT) 5
ECHO_BYTES = b"\x0a\x02hi\x10\x05"


async def test_proto_path_end_to_end(cuebot: RecordingCuebot, tmp_path: Path) -> None:
    (tmp_path / "echo.proto").write_text(ECHO_PROTO)
    cuebot.reply("/demo.Echo/Say", ECHO_BYTES)
    gw = await _started(GatewayProcess("--proto-path", str(tmp_path),
                                       env={"CUEBOT_ENDPOINT": cuebot.endpoint}))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gw.url}/demo.Echo/Say", data=b'{"text":"hi","n":"5"}',
                                 headers={"Content-Type": "application/json",
                                          **auth_headers()}) as resp:
                status, ctype, body = resp.status, resp.headers.get("Content-Type"), \
                    await resp.read()
        assert status == 200, body
        assert ctype == "application/json"
        assert cuebot.paths() == ["/demo.Echo/Say"]
        assert cuebot.calls[0].request == ECHO_BYTES
        assert body == b'{"text":"hi","n":"5"}'
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output
    assert f"proto path {tmp_path}" in gw.output
