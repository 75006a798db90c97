"""Direct unary calls (``unary.py``) against grpc.aio's own, over real loopback sockets.

Every case is made both ways on one channel to a ``RecordingCuebot``, and the
two must agree: the reply, what reaches the server, and for failures the
exception's type, code, details and trailing metadata. Then what a request
cancelled mid-call does to the call in gRPC's core, and the choice between
the two kinds at start-up.
"""
from __future__ import annotations

import asyncio
import types
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
import pytest

from gateway import unary
from gateway.backend import Backend
from gateway.config import Config, ConfigError
from support import (GatewayProcess, RecordingCuebot, Reply, auth_headers, dead_endpoint,
                     run_gateway, serving)

PATH = "/show.ShowInterface/GetShows"
MD = (("x-request-id", "0123456789abcdef0123456789abcdef"), ("x-opencue-user", "tester"))

Caller = Callable[..., Awaitable[bytes]]


@pytest.fixture
async def channel(cuebot: RecordingCuebot) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(cuebot.endpoint)
    yield ch
    await ch.close()


def both(ch: grpc.aio.Channel, path: str = PATH) -> list[Caller]:
    return [unary.UnaryCall(ch, path),
            ch.unary_unary(path, request_serializer=None, response_deserializer=None)]


async def outcome(call: Caller, **kw: Any) -> tuple[Any, ...]:
    """What a call ended with, in a form two kinds of call can be compared by."""
    try:
        return ("reply", await call(b"\x08\x01", **kw))
    except grpc.aio.AioRpcError as e:
        return ("error", type(e), e.code(), e.details(), tuple(e.trailing_metadata()))


def test_this_grpcio_supports_direct_calls() -> None:
    async def check() -> None:
        ch = grpc.aio.insecure_channel("127.0.0.1:1")
        try:
            assert unary.support(ch) is None
            assert unary.choose("auto", ch)[0] is True
            assert unary.choose("direct", ch)[0] is True
            assert unary.choose("aio", ch) == (False, "grpc.aio (BACKEND_CALLS=aio)")
        finally:
            await ch.close()

    asyncio.run(check())


def test_a_channel_without_the_internals_falls_back_or_refuses() -> None:
    lacking = types.SimpleNamespace()  # what a grpcio without a Cython channel would give
    why = unary.support(lacking)  # type: ignore[arg-type]
    assert why is not None and "lacks" in why
    direct, said = unary.choose("auto", lacking)  # type: ignore[arg-type]
    assert direct is False and said.startswith("grpc.aio (grpcio ")
    with pytest.raises(ValueError, match="BACKEND_CALLS=direct: grpcio .* lacks"):
        unary.choose("direct", lacking)  # type: ignore[arg-type]


async def test_replies_and_metadata_agree(cuebot: RecordingCuebot,
                                          channel: grpc.aio.Channel) -> None:
    cuebot.reply(PATH, b"\x0a\x03abc")
    results = [await outcome(c, timeout=5, metadata=MD) for c in both(channel)]
    assert results[0] == results[1] == ("reply", b"\x0a\x03abc")
    assert [c.request for c in cuebot.calls] == [b"\x08\x01", b"\x08\x01"]
    direct, aio = (c.metadata for c in cuebot.calls)
    assert direct["x-request-id"] == aio["x-request-id"] == MD[0][1]
    assert direct["x-opencue-user"] == "tester"
    assert {k for k in direct if not k.startswith(":")} == \
        {k for k in aio if not k.startswith(":")}


async def test_an_empty_reply_is_bytes(cuebot: RecordingCuebot, channel: grpc.aio.Channel) -> None:
    for call in both(channel):
        assert await call(b"", timeout=5) == b""


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE])
async def test_failures_agree(cuebot: RecordingCuebot, channel: grpc.aio.Channel,
                              code: grpc.StatusCode) -> None:
    cuebot.reply(PATH, code=code, message=f"no such show ({code.name})",
                 trailers=(("x-why", "because"),))
    direct, aio = [await outcome(c, timeout=5, metadata=MD) for c in both(channel)]
    assert direct == aio
    assert direct[:4] == ("error", grpc.aio.AioRpcError, code, f"no such show ({code.name})")
    assert ("x-why", "because") in direct[4]


async def test_deadlines_agree(cuebot: RecordingCuebot, channel: grpc.aio.Channel) -> None:
    cuebot.reply(PATH, delay=2.0)
    direct, aio = [await outcome(c, timeout=0.2) for c in both(channel)]
    assert direct[:3] == aio[:3] == ("error", grpc.aio.AioRpcError,
                                     grpc.StatusCode.DEADLINE_EXCEEDED)
    assert direct[3] == aio[3]


async def test_no_deadline_waits_for_the_reply(cuebot: RecordingCuebot,
                                               channel: grpc.aio.Channel) -> None:
    cuebot.reply(PATH, b"late", delay=0.3)
    assert await unary.UnaryCall(channel, PATH)(b"") == b"late"


async def test_a_dead_backend_agrees() -> None:
    with dead_endpoint() as endpoint:
        ch = grpc.aio.insecure_channel(endpoint)
        try:
            direct, aio = [await outcome(c, timeout=2) for c in both(ch)]
        finally:
            await ch.close()
    assert direct[:3] == aio[:3] == ("error", grpc.aio.AioRpcError,
                                     grpc.StatusCode.UNAVAILABLE)


async def test_a_cancelled_request_cancels_its_call(cuebot: RecordingCuebot,
                                                    channel: grpc.aio.Channel) -> None:
    """The server sees the call end as soon as the awaiting task is cancelled."""
    hold = asyncio.Event()
    cuebot.reply(PATH, b"never", hold=hold)
    try:
        task = asyncio.create_task(unary.UnaryCall(channel, PATH)(b"", timeout=30))
        while not cuebot.calls:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):  # the cancellation crosses the socket
            if cuebot.cancelled:
                break
            await asyncio.sleep(0.01)
        assert [c.path for c in cuebot.cancelled] == [PATH]
        # the channel is none the worse for it
        cuebot.reply(PATH, b"ok")
        assert await unary.UnaryCall(channel, PATH)(b"", timeout=5) == b"ok"
    finally:
        hold.set()


async def test_concurrent_calls_each_get_their_own_reply(cuebot: RecordingCuebot,
                                                         channel: grpc.aio.Channel) -> None:
    cuebot.replies[PATH] = lambda call: Reply(call.request[::-1])
    call = unary.UnaryCall(channel, PATH)
    bodies = [f"request {i}".encode() for i in range(50)]
    replies = await asyncio.gather(*(call(b, timeout=5) for b in bodies))
    assert replies == [b[::-1] for b in bodies]


async def test_backend_uses_the_kind_asked_for(cuebot: RecordingCuebot) -> None:
    for kind, direct in (("auto", True), ("direct", True), ("aio", False)):
        backend = Backend(Config(cuebot_endpoint=cuebot.endpoint, backend_calls=kind))
        try:
            call = backend.unary(PATH)
            assert isinstance(call, unary.UnaryCall) is direct, kind
            assert backend.calls.startswith("direct" if direct else "grpc.aio")
            cuebot.reply(PATH, b"x")
            assert await call(b"", timeout=5, metadata=MD) == b"x"
        finally:
            await backend.close()


def test_backend_refuses_direct_where_it_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unary, "support", lambda channel: "grpcio 0.0 lacks everything")

    async def check() -> None:
        with pytest.raises(ConfigError, match="BACKEND_CALLS=direct: grpcio 0.0"):
            Backend(Config(cuebot_endpoint="127.0.0.1:1", backend_calls="direct"))
        backend = Backend(Config(cuebot_endpoint="127.0.0.1:1"))
        try:
            assert backend.calls == "grpc.aio (grpcio 0.0 lacks everything)"
            assert not isinstance(backend.unary(PATH), unary.UnaryCall)
        finally:
            await backend.close()

    asyncio.run(check())


@pytest.mark.parametrize("setting, said", [
    (None, "calls to Cuebot: direct (grpcio "),
    ("aio", "calls to Cuebot: grpc.aio (BACKEND_CALLS=aio)")])
async def test_a_gateway_process_serves_with_either(cuebot: RecordingCuebot, setting: str | None,
                                                    said: str) -> None:
    gw = GatewayProcess(env={"CUEBOT_ENDPOINT": cuebot.endpoint, "BACKEND_CALLS": setting})
    async with serving(gw) as http:
        async with http.post(f"{gw.url}{PATH}", data=b"{}", headers=auth_headers()) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.read() == b'{"shows":null}'
        cuebot.reply(PATH, code=grpc.StatusCode.NOT_FOUND, message="no show")
        async with http.post(f"{gw.url}{PATH}", data=b"{}", headers=auth_headers()) as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": "no show", "code": 5,
                                         "message": "no show", "details": []}
    assert said in gw.output, gw.output


def test_a_bad_value_is_a_setting_error() -> None:
    result = run_gateway(env={"BACKEND_CALLS": "fast"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("opencue-gateway: error: BACKEND_CALLS: expected auto, "
                                     "direct or aio, got 'fast'")
