"""Large messages are converted in worker processes: same bytes, loop never held.

Every test here runs real conversion processes (``python -m
gateway.offload_worker``) behind a real gateway or a real ``Offloader``.
"""
from __future__ import annotations

import asyncio
import gzip
import os
import signal
from typing import Any

import aiohttp
import orjson
import pytest

from gateway import offload_worker
from gateway.app import STATE
from gateway.offload import Offloader
from gateway.transcode import DecodeError, EncodeError
from test_vectors import _same
from support import (RecordingCuebot, auth_headers, table_without_backend, vector_bytes,
                     vector_manifest)

GET_FRAMES = "/job.JobInterface/GetFrames"
GET_SHOWS = "/show.ShowInterface/GetShows"
LAUNCH = "/job.JobInterface/LaunchSpec"
VECTORS = vector_manifest()


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_vectors_encode_byte_for_byte_in_the_worker(vec: dict, bundled: Any,
                                                         offloader: Offloader) -> None:
    table = table_without_backend(bundled)
    codec = table.transcoder.codec(bundled.pool.FindMessageTypeByName(vec["type"]))
    assert offloader.offloads(1)
    ours = await offloader.to_json(table, codec, vector_bytes(vec["bin"]))
    assert ours == vector_bytes(vec["go_json"])
    assert offloader.running == 1


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_vectors_decode_in_the_worker_as_inline(vec: dict, bundled: Any,
                                                     offloader: Offloader) -> None:
    table = table_without_backend(bundled)
    codec = table.transcoder.codec(bundled.pool.FindMessageTypeByName(vec["type"]))
    body = vector_bytes(vec["go_json"])
    theirs = codec.cls.FromString(await offloader.from_json(table, codec, body))
    ours = codec.cls.FromString(codec.from_json(body))
    assert _same(theirs, ours) == []  # as messages: map entries have no fixed wire order


async def test_errors_come_back_as_the_inline_ones(bundled: Any, offloader: Offloader) -> None:
    table = table_without_backend(bundled)
    codec = table.transcoder.codec(bundled.pool.FindMessageTypeByName("job.JobGetJobsRequest"))
    body = b'{"r": {"shows": ["a", 7]}}'
    with pytest.raises(DecodeError) as inline:
        codec.from_json(body)
    with pytest.raises(DecodeError) as offloaded:
        await offloader.from_json(table, codec, body)
    assert str(offloaded.value) == str(inline.value) == "r.shows[1]: expected string, got number"
    with pytest.raises(EncodeError, match="cannot parse job.JobGetJobsRequest"):
        await offloader.to_json(table, codec, b"\xff\xff\xff")


async def test_small_messages_stay_inline(bundled: Any) -> None:
    off = Offloader(workers=1, min_bytes=1000, idle=30)
    try:
        table = table_without_backend(bundled)
        codec = table.transcoder.codec(
            bundled.pool.FindMessageTypeByName("show.ShowGetShowsResponse"))
        assert not off.offloads(999) and off.offloads(1000)
        assert await off.to_json(table, codec, vector_bytes("show1.binpb")) == \
            vector_bytes("show1.go.json")
        assert off.running == 0  # no process was started for it
    finally:
        await off.close()


async def test_no_workers_means_inline(bundled: Any) -> None:
    off = Offloader(workers=0, min_bytes=1, idle=30)
    table = table_without_backend(bundled)
    codec = table.transcoder.codec(
        bundled.pool.FindMessageTypeByName("job.JobGetFramesResponse"))
    assert not off.offloads(10**9)
    assert await off.to_json(table, codec, vector_bytes("frames10k.binpb")) == \
        vector_bytes("frames10k.go.json")
    assert off.running == 0
    await off.close()


async def test_a_dead_worker_is_replaced_and_its_task_retried(bundled: Any,
                                                              offloader: Offloader) -> None:
    table = table_without_backend(bundled)
    codec = table.transcoder.codec(
        bundled.pool.FindMessageTypeByName("job.JobGetFramesResponse"))
    wire, go = vector_bytes("frames10k.binpb"), vector_bytes("frames10k.go.json")
    assert await offloader.to_json(table, codec, wire) == go
    first = offloader._pool[0].proc  # noqa: SLF001 - the process to kill
    # killed while idle: noticed, and the next task starts a new worker
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert await offloader.to_json(table, codec, wire) == go
    second = offloader._pool[0].proc  # noqa: SLF001
    assert second.pid != first.pid
    # killed while converting: the task runs again on a third worker
    task = asyncio.ensure_future(offloader.to_json(table, codec, wire))
    await asyncio.sleep(0)  # the task is written to the worker
    second.send_signal(signal.SIGKILL)
    assert await task == go
    assert offloader._pool[0].proc.pid not in (first.pid, second.pid)  # noqa: SLF001


async def test_a_worker_that_keeps_dying_fails_the_request_cleanly(bundled: Any) -> None:
    off = Offloader(workers=1, min_bytes=1, idle=30)
    table = table_without_backend(bundled)
    codec = table.transcoder.codec(
        bundled.pool.FindMessageTypeByName("job.JobGetFramesResponse"))
    killed: list[int] = []

    async def killer() -> None:  # kill every worker that appears, twice
        while len(killed) < 2:
            for w in list(off._pool):  # noqa: SLF001
                if w.proc.pid not in killed and w.pending:
                    w.proc.send_signal(signal.SIGKILL)
                    killed.append(w.proc.pid)
            await asyncio.sleep(0.001)

    k = asyncio.ensure_future(killer())
    try:
        with pytest.raises(EncodeError, match="conversion process died twice"):
            await off.to_json(table, codec, vector_bytes("frames10k.binpb"))
    finally:
        k.cancel()
        await off.close()


async def test_idle_workers_exit(bundled: Any) -> None:
    off = Offloader(workers=1, min_bytes=1, idle=0.2)
    try:
        table = table_without_backend(bundled)
        codec = table.transcoder.codec(
            bundled.pool.FindMessageTypeByName("show.ShowGetShowsResponse"))
        await off.to_json(table, codec, vector_bytes("show1.binpb"))
        proc = off._pool[0].proc  # noqa: SLF001
        await asyncio.wait_for(proc.wait(), 10)
        assert off.running == 0
        # and a new one comes when needed
        assert await off.to_json(table, codec, vector_bytes("show1.binpb")) == \
            vector_bytes("show1.go.json")
    finally:
        await off.close()


async def test_a_new_descriptor_version_is_loaded_into_running_workers(
        bundled: Any, offloader: Offloader) -> None:
    from gateway.descriptors import build

    old = table_without_backend(bundled)
    newer = table_without_backend(build(bundled.files, "a reload"))
    newer.version = "another-version"
    for table in (old, newer, old):
        codec = table.transcoder.codec(
            table.descriptors.pool.FindMessageTypeByName("show.ShowGetShowsResponse"))
        assert await offloader.to_json(table, codec, vector_bytes("show1.binpb")) == \
            vector_bytes("show1.go.json")
    assert offloader.running == 1


async def test_closing_stops_the_workers(bundled: Any) -> None:
    off = Offloader(workers=2, min_bytes=1, idle=30)
    table = table_without_backend(bundled)
    codec = table.transcoder.codec(
        bundled.pool.FindMessageTypeByName("job.JobGetFramesResponse"))
    wire = vector_bytes("frames10k.binpb")
    await asyncio.gather(*(off.to_json(table, codec, wire) for _ in range(3)))
    procs = [w.proc for w in off._pool]  # noqa: SLF001
    assert len(procs) == 2
    await off.close()
    assert all(p.returncode is not None for p in procs)
    assert not off.offloads(10**9)  # closed: anything left converts inline


# ---------------------------------------------------------------------------
# through the gateway
# ---------------------------------------------------------------------------
async def test_large_reply_through_the_gateway_is_go_bytes_plain_and_gzipped(
        make_gateway: Any, cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_FRAMES, vector_bytes("frames10k.binpb"))
    gw = await make_gateway()
    assert gw.server.app[STATE].offload.offloads(len(vector_bytes("frames10k.binpb")))
    go = vector_bytes("frames10k.go.json")
    resp = await gw.post(GET_FRAMES, data=b"{}", headers={"Accept-Encoding": "identity"})
    assert resp.status == 200 and await resp.read() == go
    resp = await gw.post(GET_FRAMES, data=b"{}", auto_decompress=False,
                         headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await resp.read()) == go


async def test_large_reply_over_max_response_bytes_is_a_clean_502(
        make_gateway: Any, cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_FRAMES, vector_bytes("frames10k.binpb"))
    gw = await make_gateway(max_response_bytes=1024 * 1024)
    resp = await gw.post(GET_FRAMES, data=b"{}")
    assert resp.status == 502
    body = await resp.json()
    assert body["code"] == 8 and "MAX_RESPONSE_BYTES" in body["message"]


async def test_unparseable_large_reply_is_a_clean_502(make_gateway: Any,
                                                      cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_FRAMES, b"\xff" * 300_000)
    gw = await make_gateway()
    resp = await gw.post(GET_FRAMES, data=b"{}")
    assert resp.status == 502
    body = await resp.json()
    assert set(body) == {"error", "code", "message", "details"}
    assert body["code"] == 13 and "cannot parse job.JobGetFramesResponse" in body["message"]


async def test_large_request_bodies_are_decoded_in_the_worker(make_gateway: Any,
                                                              cuebot: RecordingCuebot) -> None:
    gw = await make_gateway(offload_min_bytes=64 * 1024)
    spec = "<spec>" + "x" * 200_000 + "</spec>"
    resp = await gw.post(LAUNCH, data=orjson.dumps({"spec": spec}))
    assert resp.status == 200
    from opencue_proto import job_pb2

    assert job_pb2.JobLaunchSpecRequest.FromString(cuebot.calls[-1].request).spec == spec
    bad = orjson.dumps({"spec": spec, "r": 1})  # not a field: ignored, as inline
    assert (await gw.post(LAUNCH, data=bad)).status == 200
    wrong = orjson.dumps({"spec": [spec]})
    resp = await gw.post(LAUNCH, data=wrong)
    assert resp.status == 400
    assert (await resp.json())["message"] == \
        "invalid job.JobLaunchSpecRequest: spec: expected string, got array"


async def test_a_small_call_is_answered_while_a_large_reply_is_converted(
        make_gateway: Any, cuebot: RecordingCuebot) -> None:
    """Ordering, not timing: the small reply arrives before the large one's first byte.

    Ten copies of the 10,000 frames take the conversion process a good part
    of a second; a gateway converting on its event loop would answer the
    small call only after that.
    """
    from opencue_proto import job_pb2

    one = job_pb2.JobGetFramesResponse.FromString(vector_bytes("frames10k.binpb"))
    big = job_pb2.JobGetFramesResponse()
    for _ in range(10):
        big.frames.frames.extend(one.frames.frames)
    cuebot.reply(GET_FRAMES, big)
    cuebot.reply(GET_SHOWS, vector_bytes("show1.binpb"))
    gw = await make_gateway(grpc_max_recv_msg_mb=64, grpc_timeout=60)
    order: list[str] = []

    async def large() -> None:
        resp = await gw.post(GET_FRAMES, data=b"{}")
        order.append("large headers")
        body = await resp.read()
        assert resp.status == 200 and len(body) > 60_000_000

    task = asyncio.ensure_future(large())
    while GET_FRAMES not in cuebot.paths():
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)  # the reply has reached the gateway: converting now
    resp = await gw.post(GET_SHOWS, data=b"{}")
    assert resp.status == 200 and await resp.read() == vector_bytes("show1.go.json")
    order.append("small")
    await task
    assert order == ["small", "large headers"]


async def test_gateway_shutdown_leaves_no_worker_behind(make_gateway: Any,
                                                        cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_FRAMES, vector_bytes("frames10k.binpb"))
    gw = await make_gateway()
    assert (await gw.post(GET_FRAMES, data=b"{}")).status == 200
    procs = [w.proc for w in gw.server.app[STATE].offload._pool]  # noqa: SLF001
    assert procs
    await gw.close()
    assert all(p.returncode is not None for p in procs)


def test_worker_frames_round_trip() -> None:
    """The wire format both ends share (a malformed frame ends the worker, cleanly)."""
    import io

    from google.protobuf import descriptor_pb2

    from gateway.descriptors import load_bundled

    descs = load_bundled()
    fds = descriptor_pb2.FileDescriptorSet(file=descs.files).SerializeToString()

    def task(op: int, tid: int, version: str, name: str, payload: bytes) -> bytes:
        v, n = version.encode(), name.encode()
        return offload_worker.TASK.pack(op, tid, len(v), len(n), len(payload)) + v + n + payload

    inp = io.BytesIO(task(offload_worker.LOAD, 1, "v1", "", fds)
                     + task(offload_worker.ENCODE, 2, "v1", "show.ShowGetShowsResponse",
                            vector_bytes("show1.binpb"))
                     + task(offload_worker.ENCODE, 3, "v2", "show.ShowGetShowsResponse", b"")
                     + task(9, 4, "v1", "x", b"")
                     + b"\x02\x05")  # a truncated frame: end of input
    out = io.BytesIO()
    offload_worker.serve(inp, out)
    data, answers = out.getvalue(), []
    while data:
        tid, status, size = offload_worker.ANSWER.unpack_from(data)
        start = offload_worker.ANSWER.size
        answers.append((tid, status, data[start:start + size]))
        data = data[start + size:]
    assert answers[0] == (1, offload_worker.OK, b"")
    assert answers[1] == (2, offload_worker.OK, vector_bytes("show1.go.json"))
    assert answers[2][:2] == (3, offload_worker.FAILED) and b"v2 is not loaded" in answers[2][2]
    assert answers[3] == (4, offload_worker.FAILED, b"unknown task 9")
    assert len(answers) == 4


async def test_a_gateway_process_converts_in_a_child_and_ctrl_c_stays_quiet(
        cuebot: RecordingCuebot) -> None:
    """The real process: a worker child appears, and SIGINT to the group is clean."""
    from support import GatewayProcess

    cuebot.reply(GET_FRAMES, vector_bytes("frames10k.binpb"))
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "RATE_LIMIT_RPS": "0"})
    try:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as session:
            async with session.post(gw.url + GET_FRAMES, data=b"{}",
                                    headers=auth_headers()) as resp:
                assert resp.status == 200
                assert await resp.read() == vector_bytes("frames10k.go.json")
        children = [int(p) for p in os.listdir("/proc") if p.isdigit()
                    and _ppid(int(p)) == gw.proc.pid]
        assert children, "no conversion process was started"
        gw.proc.send_signal(signal.SIGINT)
        for pid in children:
            os.kill(pid, signal.SIGINT)  # as a terminal does to the whole group
        assert await asyncio.to_thread(gw.proc.wait, 20) == 0
    finally:
        await asyncio.to_thread(gw.stop)
    assert "Traceback" not in gw.output, gw.output
    assert "KeyboardInterrupt" not in gw.output


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except OSError:
        return -1

