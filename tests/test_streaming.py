"""Large replies forwarded from the conversion process's pipe: same bytes, cut when broken.

Real gateways in front of a ``RecordingCuebot``, real conversion processes,
real sockets. Where a test needs a reply to be still on its way, the client
is a raw socket with a small receive buffer that stops reading after the
headers, and the reply (four copies of the 10,000 frames, 25 MB of JSON) is
several times what the pipe, the gateway's buffers and both sockets can
hold: the rest of it can only move once the client reads. Nothing here
asserts a duration; waits for an event have generous bounds.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
import random
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google.protobuf import descriptor_pb2

from gateway import compression
from gateway.app import STATE, create_app
from gateway.serving import build_state
from gateway.config import Config
from gateway.logs import JsonFormatter
from gateway.offload import Offloader, WorkerDied
from gateway.routes import MethodTable
from gateway.server import GatewayRunner
from scrape import scrape, value
from support import (SECRET, RecordingCuebot, auth_headers, table_without_backend,
                     vector_bytes, vector_manifest)

GET_FRAMES = "/job.JobInterface/GetFrames"
GET_JOBS = "/job.JobInterface/GetJobs"
GET_SHOWS = "/show.ShowInterface/GetShows"
VECTORS = vector_manifest()
COPIES = 4  # of the 10,000 frames in the reply that cannot fit in any buffer on its way
RCVBUF = 64 * 1024  # the slow client's receive buffer (set, so the kernel does not grow it)
HANG = 60.0  # seconds: a bound that only turns a hang (a regression) into a failure
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=HANG)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _big_reply() -> tuple[bytes, bytes]:
    """(wire, JSON) of COPIES x the 10,000 frames; the JSON is the Go bytes' frames repeated."""
    from opencue_proto import job_pb2

    one = job_pb2.JobGetFramesResponse.FromString(vector_bytes("frames10k.binpb"))
    big = job_pb2.JobGetFramesResponse()
    for _ in range(COPIES):
        big.frames.frames.extend(one.frames.frames)
    go = vector_bytes("frames10k.go.json")
    head, tail = b'{"frames":{"frames":[', b"]}}"
    assert go.startswith(head) and go.endswith(tail)
    inner = go[len(head):-len(tail)]
    return big.SerializeToString(), head + b",".join([inner] * COPIES) + tail


@pytest.fixture(scope="module")
def big() -> tuple[bytes, bytes]:
    return _big_reply()


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(JsonFormatter().format(r)) for r in caplog.records
            if r.name == "gateway.access"]


async def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


class SlowClient:
    """A raw HTTP/1.1 client with a small receive buffer that reads only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def post(cls, port: int, path: str, **headers: str) -> "SlowClient":
        """Send the request and read the reply's status line and headers, nothing more."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=RCVBUF)
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 2",
                 *(f"{k}: {v}" for k, v in {**auth_headers(), **headers}.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n{}").encode())
        await writer.drain()
        client = cls(reader, writer)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        client.status = int(head[0].split()[1])
        client.headers = {k.strip().lower(): v.strip()
                          for k, _, v in (line.partition(":") for line in head[1:] if line)}
        return client

    async def read_rest(self) -> bytes:
        """The body as far as it comes (until the length, the end, or a reset)."""
        want = int(self.headers.get("content-length", -1))
        data = bytearray()
        try:
            while want < 0 or len(data) < want:
                piece = await asyncio.wait_for(self.reader.read(1 << 20), HANG)
                if not piece:
                    break
                data += piece
        except ConnectionError:
            pass
        return bytes(data)

    def close(self) -> None:
        self.writer.close()


def _echo_descriptors(bundled: Any, path: Path) -> Path:
    """The bundled descriptors plus ``vectorecho.Echo``: one method returning each vector's
    type (some are not any served RPC's reply), so every vector can be a reply."""
    types = {v["type"] for v in VECTORS}
    deps = sorted({bundled.pool.FindMessageTypeByName(t).file.name for t in types}
                  | {bundled.pool.FindMessageTypeByName("show.ShowGetShowsRequest").file.name})
    f = descriptor_pb2.FileDescriptorProto(name="vectorecho.proto", package="vectorecho",
                                           syntax="proto3", dependency=deps)
    service = f.service.add(name="Echo")
    for v in VECTORS:
        service.method.add(name=_method(v), input_type=".show.ShowGetShowsRequest",
                           output_type=f".{v['type']}")
    path.write_bytes(descriptor_pb2.FileDescriptorSet(
        file=[*bundled.files, f]).SerializeToString())
    return path


def _method(vec: dict[str, str]) -> str:
    return "".join(part.capitalize() for part in vec["name"].split("_"))


async def _post_raw(gw: Any, path: str, accept_encoding: str) -> tuple[int, Any, bytes]:
    """A reply's status, headers and body exactly as sent (no decompression)."""
    async with aiohttp.ClientSession(auto_decompress=False, timeout=CLIENT_TIMEOUT,
                                     skip_auto_headers=["Accept-Encoding"]) as session:
        async with session.post(gw.make_url(path), data=b"{}", headers={
                **auth_headers(), "Accept-Encoding": accept_encoding}) as resp:
            return resp.status, resp.headers, await resp.read()


def _worker_pids(state: Any) -> list[int]:
    return [w.proc.pid for w in state.offload._pool]  # noqa: SLF001


# ---------------------------------------------------------------------------
# the bytes
# ---------------------------------------------------------------------------
async def test_every_vector_streamed_is_go_bytes_plain_and_gzipped(
        make_gateway: Any, cuebot: RecordingCuebot, bundled: Any, tmp_path: Path) -> None:
    """Every reply through the worker (OFFLOAD_MIN_BYTES=1) and gzipped from 1 byte on."""
    gw = await make_gateway(descriptor_set=_echo_descriptors(bundled, tmp_path / "set.binpb"),
                            offload_min_bytes=1, gzip_min_bytes=1, offload_workers=1)
    state = gw.server.app[STATE]
    for vec in VECTORS:
        path = f"/vectorecho.Echo/{_method(vec)}"
        cuebot.reply(path, vector_bytes(vec["bin"]))
        go = vector_bytes(vec["go_json"])
        status, headers, body = await _post_raw(gw, path, "identity")
        assert status == 200 and body == go, vec["name"]
        assert int(headers["Content-Length"]) == len(go), vec["name"]
        status, headers, body = await _post_raw(gw, path, "gzip")
        assert status == 200 and headers["Content-Encoding"] == "gzip", vec["name"]
        assert headers["Transfer-Encoding"] == "chunked", vec["name"]  # streamed, not whole
        assert gzip.decompress(body) == go, vec["name"]
        assert body == compression.gzip_bytes(go), vec["name"]
    assert len(_worker_pids(state)) == 1  # all of them went through the one worker


async def test_large_reply_streamed_with_every_header_and_recorded(
        make_gateway: Any, cuebot: RecordingCuebot, caplog: pytest.LogCaptureFixture) -> None:
    """The headers the middleware gives other replies, and an access line with bytes sent."""
    cuebot.reply(GET_FRAMES, vector_bytes("frames10k.binpb"))
    cuebot.reply(GET_SHOWS, vector_bytes("show1.binpb"))
    origin = "https://cueweb.example.com"
    gw = await make_gateway(rate_limit_rps=1000, cors_origins=(origin,))
    go = vector_bytes("frames10k.go.json")
    asked = {"Origin": origin, "Accept-Encoding": "identity"}
    small = await gw.post(GET_SHOWS, data=b"{}", headers=asked)
    assert small.status == 200
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        resp = await gw.post(GET_FRAMES, data=b"{}",
                             headers={**asked, "X-Request-Id": "streamed-1"})
        assert resp.status == 200 and await resp.read() == go
    assert set(small.headers) - {"Content-Length"} <= set(resp.headers)
    assert resp.headers["X-Request-Id"] == "streamed-1"
    assert resp.headers["X-Descriptor-Version"] == small.headers["X-Descriptor-Version"]
    assert "X-RateLimit-Remaining" in resp.headers
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert resp.headers["Vary"] == "Origin, Accept-Encoding"
    assert int(resp.headers["Content-Length"]) == len(go)
    (entry,) = [e for e in _access(caplog) if e["request_id"] == "streamed-1"]
    assert (entry["status"], entry["grpc_code"], entry["bytes_out"]) == (200, "OK", len(go))
    found = await scrape(gw)
    assert value(found, "opencue_gateway_response_size_bytes_sum", route=GET_FRAMES) == len(go)


async def test_dev_mode_logs_a_streamed_reply_without_indenting_it(
        make_gateway: Any, cuebot: RecordingCuebot, caplog: pytest.LogCaptureFixture) -> None:
    cuebot.reply(GET_FRAMES, vector_bytes("frames10k.binpb"))
    gw = await make_gateway(dev=True)
    go = vector_bytes("frames10k.go.json")
    with caplog.at_level(logging.INFO, logger="gateway.dev"):
        resp = await gw.post(GET_FRAMES, data=b"{}", headers={"Accept-Encoding": "identity"})
        assert resp.status == 200 and await resp.read() == go
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.dev"]
    assert any(f"POST {GET_FRAMES} -> 200 streamed, {len(go)} bytes" in line
               for line in lines), lines


# ---------------------------------------------------------------------------
# before the first byte: the envelope
# ---------------------------------------------------------------------------
async def test_over_max_response_bytes_is_a_clean_502_and_the_worker_stays_in_step(
        make_gateway: Any, cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_FRAMES, vector_bytes("frames10k.binpb"))  # 6.4 MB of JSON: over
    cuebot.reply(GET_JOBS, vector_bytes("jobs2k.binpb"))       # 2.1 MB: under
    gw = await make_gateway(max_response_bytes=3 * 1024 * 1024, offload_workers=1)
    state = gw.server.app[STATE]
    jobs = vector_bytes("jobs2k.go.json")
    for _ in range(2):
        resp = await gw.post(GET_FRAMES, data=b"{}", headers={"X-Request-Id": "too-big"},
                             timeout=CLIENT_TIMEOUT)
        assert resp.status == 502
        assert resp.headers["X-Request-Id"] == "too-big" and "X-Descriptor-Version" in resp.headers
        body = await resp.json()
        assert set(body) == {"error", "code", "message", "details"}
        assert body["code"] == 8 and "MAX_RESPONSE_BYTES" in body["message"]
        # the refused reply was read off the pipe: the next answer is the next task's
        resp = await gw.post(GET_JOBS, data=b"{}", timeout=CLIENT_TIMEOUT)
        assert resp.status == 200 and await resp.read() == jobs
    assert len(_worker_pids(state)) == 1  # drained, not replaced


async def _serving(make_gateway: Any, cuebot: RecordingCuebot, wire: bytes,
                   **settings: Any) -> tuple[Any, Any]:
    """A gateway with one conversion process, Cuebot answering GetFrames with ``wire``
    (a large reply) and GetJobs with a 2,000-job one (the next request after it)."""
    cuebot.reply(GET_FRAMES, wire)
    cuebot.reply(GET_JOBS, vector_bytes("jobs2k.binpb"))
    gw = await make_gateway(offload_workers=1, grpc_max_recv_msg_mb=64, grpc_timeout=60,
                            **settings)
    return gw, gw.server.app[STATE]


# ---------------------------------------------------------------------------
# after the first byte: the connection is cut
# ---------------------------------------------------------------------------
async def test_worker_killed_mid_reply_cuts_the_connection(
        make_gateway: Any, cuebot: RecordingCuebot, big: tuple[bytes, bytes],
        caplog: pytest.LogCaptureFixture) -> None:
    wire, json_bytes = big
    gw, state = await _serving(make_gateway, cuebot, wire)
    with caplog.at_level(logging.INFO):
        async with aiohttp.ClientSession(auto_decompress=False,
                                         timeout=CLIENT_TIMEOUT) as session:
            async with session.post(gw.make_url(GET_FRAMES), data=b"{}", headers={
                    **auth_headers(), "Accept-Encoding": "identity",
                    "X-Request-Id": "cut-1"}) as resp:
                assert resp.status == 200  # the headers are out: no envelope possible now
                (worker,) = state.offload._pool  # noqa: SLF001
                assert worker.streaming is not None  # its answer is on its way
                worker.proc.send_signal(signal.SIGKILL)
                with pytest.raises(aiohttp.ClientError):  # not a timeout: a cut
                    await resp.read()
        await _wait_for(lambda: any(e["request_id"] == "cut-1" for e in _access(caplog)))
    (entry,) = [e for e in _access(caplog) if e["request_id"] == "cut-1"]
    assert (entry["status"], entry["grpc_code"]) == (502, "INTERNAL")
    assert 0 < entry["bytes_out"] < len(json_bytes)
    assert any("cut after" in r.getMessage() and "died" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)
    # the next large reply comes from a new worker, whole
    resp = await gw.post(GET_JOBS, data=b"{}", timeout=CLIENT_TIMEOUT)
    assert resp.status == 200 and await resp.read() == vector_bytes("jobs2k.go.json")
    assert _worker_pids(state) != [worker.proc.pid]


async def test_worker_killed_mid_gzipped_reply_leaves_no_complete_gzip(
        make_gateway: Any, cuebot: RecordingCuebot, big: tuple[bytes, bytes]) -> None:
    wire, _ = big
    cuebot.reply(GET_FRAMES, wire)
    gw = await make_gateway(offload_workers=1, grpc_max_recv_msg_mb=64, grpc_timeout=60)
    state = gw.server.app[STATE]
    client = await SlowClient.post(gw.port, GET_FRAMES, **{"Accept-Encoding": "gzip"})
    try:
        assert client.status == 200 and client.headers["transfer-encoding"] == "chunked"
        (worker,) = state.offload._pool  # noqa: SLF001
        worker.proc.send_signal(signal.SIGKILL)
        raw = await client.read_rest()
    finally:
        client.close()
    assert not raw.endswith(b"0\r\n\r\n")  # no last chunk: the reply is visibly incomplete


@pytest.mark.parametrize("cancelling", [False, True], ids=["write-fails", "handler-cancelled"])
async def test_client_leaving_mid_reply_is_499_and_the_worker_stays_in_step(
        cuebot: RecordingCuebot, big: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture,
        cancelling: bool) -> None:
    """Both ways aiohttp reports it: a failed write, or the handler cancelled (production)."""
    wire, json_bytes = big
    cuebot.reply(GET_FRAMES, wire)
    state = await build_state(Config().with_(
        cuebot_endpoint=cuebot.endpoint, jwt_secret=SECRET, rate_limit_rps=0, grpc_timeout=60,
        grpc_max_recv_msg_mb=64, offload_workers=1))
    runner = GatewayRunner(create_app(state), handler_cancellation=cancelling, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        caplog.clear()  # start-up's lines (the rate-limit-off warning) are not the request's
        with caplog.at_level(logging.INFO):
            client = await SlowClient.post(port, GET_FRAMES, **{"X-Request-Id": "leaver"})
            assert client.status == 200
            await client.reader.readexactly(100_000)  # some of it arrived
            (worker,) = state.offload._pool  # noqa: SLF001
            client.close()
            await _wait_for(lambda: any(e["request_id"] == "leaver" for e in _access(caplog)))
            await _wait_for(lambda: worker.streaming is None)  # the rest read and dropped
        (entry,) = [e for e in _access(caplog) if e["request_id"] == "leaver"]
        assert (entry["status"], entry["grpc_code"]) == (499, "CANCELLED")
        assert 100_000 <= entry["bytes_out"] < len(json_bytes)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        # the same worker answers the next one, from its first byte
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
            async with session.post(f"http://127.0.0.1:{port}{GET_FRAMES}", data=b"{}",
                                    headers={**auth_headers(),
                                             "Accept-Encoding": "identity"}) as resp:
                assert resp.status == 200 and await resp.read() == json_bytes
        assert _worker_pids(state) == [worker.proc.pid]
    finally:
        await runner.cleanup()


async def test_client_that_stops_reading_is_cut_after_send_timeout(
        make_gateway: Any, cuebot: RecordingCuebot, big: tuple[bytes, bytes],
        caplog: pytest.LogCaptureFixture) -> None:
    wire, json_bytes = big
    gw, state = await _serving(make_gateway, cuebot, wire, send_timeout=0.5)
    with caplog.at_level(logging.INFO):
        client = await SlowClient.post(gw.port, GET_FRAMES, **{"X-Request-Id": "stalled"})
        try:
            assert client.status == 200
            await _wait_for(lambda: any(e["request_id"] == "stalled" for e in _access(caplog)))
            rest = await client.read_rest()
        finally:
            client.close()
    (entry,) = [e for e in _access(caplog) if e["request_id"] == "stalled"]
    assert (entry["status"], entry["grpc_code"]) == (408, "DEADLINE_EXCEEDED")
    assert len(rest) < len(json_bytes)
    found = await scrape(gw)
    assert value(found, "opencue_gateway_connections_cut_total", reason="send_timeout") == 1
    resp = await gw.post(GET_JOBS, data=b"{}", timeout=CLIENT_TIMEOUT)  # the worker was freed, and is in step
    assert resp.status == 200 and await resp.read() == vector_bytes("jobs2k.go.json")
    assert len(_worker_pids(state)) == 1


# ---------------------------------------------------------------------------
# beside a large reply
# ---------------------------------------------------------------------------
async def test_a_small_call_completes_while_a_large_reply_is_being_sent(
        make_gateway: Any, cuebot: RecordingCuebot, big: tuple[bytes, bytes]) -> None:
    wire, json_bytes = big
    cuebot.reply(GET_FRAMES, wire)
    cuebot.reply(GET_SHOWS, vector_bytes("show1.binpb"))
    gw = await make_gateway(offload_workers=1, grpc_max_recv_msg_mb=64, grpc_timeout=60)
    state = gw.server.app[STATE]
    client = await SlowClient.post(gw.port, GET_FRAMES, **{"Accept-Encoding": "identity"})
    try:
        assert client.status == 200
        (worker,) = state.offload._pool  # noqa: SLF001
        resp = await gw.post(GET_SHOWS, data=b"{}", timeout=CLIENT_TIMEOUT)
        assert resp.status == 200 and await resp.read() == vector_bytes("show1.go.json")
        assert worker.streaming is not None  # the large one is still being sent
        body = await client.read_rest()
    finally:
        client.close()
    assert body == json_bytes


# ---------------------------------------------------------------------------
# the offloader's half, without HTTP
# ---------------------------------------------------------------------------
def _codec(table: MethodTable, bundled: Any, name: str) -> Any:
    return table.transcoder.codec(bundled.pool.FindMessageTypeByName(name))


@pytest.fixture
def table(bundled: Any) -> MethodTable:
    return table_without_backend(bundled)


async def _read_all(answer: Any) -> list[bytes]:
    pieces = []
    while piece := await answer.read():
        pieces.append(piece)
    return pieces


async def test_an_answer_read_in_pieces_is_the_go_bytes(table: MethodTable, bundled: Any,
                                                       offloader: Offloader) -> None:
    codec = _codec(table, bundled, "job.JobGetFramesResponse")
    go = vector_bytes("frames10k.go.json")
    for _ in range(2):
        answer = await offloader.to_json_stream(table, codec, vector_bytes("frames10k.binpb"))
        try:
            assert answer.size == len(go)
            pieces = await _read_all(answer)
        finally:
            answer.release()
        assert b"".join(pieces) == go and len(pieces) > 1


async def test_a_small_reply_is_converted_here_as_bytes(table: MethodTable, bundled: Any) -> None:
    off = Offloader(workers=1, min_bytes=1000, idle=30)
    try:
        codec = _codec(table, bundled, "show.ShowGetShowsResponse")
        out = await off.to_json_stream(table, codec, vector_bytes("show1.binpb"))
        assert out == vector_bytes("show1.go.json") and off.running == 0
    finally:
        await off.close()


async def test_an_answer_released_early_is_dropped_and_the_next_is_in_step(
        table: MethodTable, bundled: Any, offloader: Offloader) -> None:
    frames = _codec(table, bundled, "job.JobGetFramesResponse")
    shows = _codec(table, bundled, "show.ShowGetShowsResponse")
    answer = await offloader.to_json_stream(table, frames, vector_bytes("frames10k.binpb"))
    await answer.read()
    answer.release()
    with pytest.raises(RuntimeError):
        await answer.read()
    out = await asyncio.wait_for(offloader.to_json(table, shows, vector_bytes("show1.binpb")),
                                 HANG)  # out of step, it would wait for a garbled answer
    assert out == vector_bytes("show1.go.json")
    (worker,) = offloader._pool  # noqa: SLF001
    assert worker.streaming is None and worker.load == 0


@pytest.mark.parametrize("when", ["sending", "waiting"])
async def test_a_caller_that_leaves_before_its_answer_leaves_the_worker_in_step(
        table: MethodTable, bundled: Any, offloader: Offloader, when: str) -> None:
    frames = _codec(table, bundled, "job.JobGetFramesResponse")
    shows = _codec(table, bundled, "show.ShowGetShowsResponse")
    assert await offloader.to_json(table, shows, vector_bytes("show1.binpb"))  # started
    (worker,) = offloader._pool  # noqa: SLF001
    task = asyncio.ensure_future(
        offloader.to_json_stream(table, frames, vector_bytes("frames10k.binpb")))
    await asyncio.sleep(0)  # the task is written: 1.7 MB, more than the pipe takes at once
    stdin = worker.proc.stdin
    assert stdin is not None
    if when == "sending":
        assert stdin.transport.get_write_buffer_size() > 0  # still being sent
    else:
        await _wait_for(lambda: stdin.transport.get_write_buffer_size() == 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    out = await asyncio.wait_for(offloader.to_json(table, shows, vector_bytes("show1.binpb")),
                                 HANG)  # behind an answer nobody releases, it would hang
    assert out == vector_bytes("show1.go.json")
    assert offloader._pool == [worker] and worker.load == 0  # noqa: SLF001


async def test_a_worker_killed_before_the_first_piece_is_retried(
        table: MethodTable, bundled: Any, offloader: Offloader) -> None:
    frames = _codec(table, bundled, "job.JobGetFramesResponse")
    shows = _codec(table, bundled, "show.ShowGetShowsResponse")
    assert await offloader.to_json(table, shows, vector_bytes("show1.binpb"))
    (first,) = offloader._pool  # noqa: SLF001
    task = asyncio.ensure_future(
        offloader.to_json_stream(table, frames, vector_bytes("frames10k.binpb")))
    await _wait_for(lambda: first.pending)
    first.proc.send_signal(signal.SIGKILL)  # while it converts
    answer = await asyncio.wait_for(task, HANG)
    try:
        assert b"".join(await _read_all(answer)) == vector_bytes("frames10k.go.json")
    finally:
        answer.release()
    assert offloader._pool[0].proc.pid != first.proc.pid  # noqa: SLF001


async def test_a_worker_killed_mid_answer_is_worker_died_not_a_short_answer(
        table: MethodTable, bundled: Any, offloader: Offloader) -> None:
    frames = _codec(table, bundled, "job.JobGetFramesResponse")
    answer = await offloader.to_json_stream(table, frames, vector_bytes("frames10k.binpb"))
    (worker,) = offloader._pool  # noqa: SLF001
    got = len(await answer.read())
    worker.proc.send_signal(signal.SIGKILL)  # 6.4 MB do not fit in the pipe: it was writing
    try:
        with pytest.raises(WorkerDied):
            while piece := await answer.read():
                got += len(piece)
    finally:
        answer.release()
    assert got < answer.size
    await worker.reader  # the reader saw the end of the pipe too
    assert not worker.alive
    out = await asyncio.wait_for(offloader.to_json(table, frames,
                                                   vector_bytes("frames10k.binpb")), HANG)
    assert out == vector_bytes("frames10k.go.json")  # from a new worker


async def test_a_worker_whose_answer_is_being_read_is_busy(table: MethodTable,
                                                           bundled: Any) -> None:
    """A second task goes to a second worker, not behind an answer still being read."""
    off = Offloader(workers=2, min_bytes=1, idle=30)
    try:
        frames = _codec(table, bundled, "job.JobGetFramesResponse")
        shows = _codec(table, bundled, "show.ShowGetShowsResponse")
        answer = await off.to_json_stream(table, frames, vector_bytes("frames10k.binpb"))
        try:
            # behind the held answer it would wait for ever: the bound only stops a hang
            out = await asyncio.wait_for(
                off.to_json(table, shows, vector_bytes("show1.binpb")), 60)
            assert out == vector_bytes("show1.go.json") and off.running == 2
        finally:
            answer.release()
    finally:
        await off.close()


def test_gzip_fed_in_pieces_is_gzip_bytes_of_the_whole() -> None:
    data = vector_bytes("frames10k.go.json")
    rng = random.Random(7)
    for _ in range(3):
        c, out, at = compression.compressor(), [], 0
        while at < len(data):
            n = rng.choice((1, 7, 4096, 65536, 262144, 1 << 20, 3 << 20))
            out.append(c.compress(data[at:at + n]))
            at += n
        out.append(c.flush())
        assert b"".join(out) == compression.gzip_bytes(data)
    small = data[:20_000]
    c = compression.compressor()
    one_by_one = b"".join(c.compress(small[i:i + 1]) for i in range(len(small))) + c.flush()
    assert one_by_one == compression.gzip_bytes(small)
