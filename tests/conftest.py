"""Shared fixtures: a recording gRPC backend and gateways in front of it."""
from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.serving import build_state
from gateway.config import Config
from gateway.descriptors import Descriptors, load_bundled
from support import SECRET, RecordingCuebot, auth_headers


@pytest.fixture(scope="session")
def bundled() -> Descriptors:
    return load_bundled()


@pytest.fixture
async def cuebot() -> AsyncIterator[RecordingCuebot]:
    backend = await RecordingCuebot().start()
    yield backend
    await backend.stop()


GatewayFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_gateway(cuebot: RecordingCuebot, aiohttp_client: Any) -> GatewayFactory:
    """Start a gateway (real HTTP server on loopback) with some settings changed.

    It accepts tokens signed with ``support.SECRET`` and its client sends one
    with every request (``authorized=False``: a client without one). Rate
    limits are off unless a test sets ``rate_limit_rps``.
    """

    async def make(authorized: bool = True, **settings: Any) -> TestClient:
        settings.setdefault("cuebot_endpoint", cuebot.endpoint)
        settings.setdefault("grpc_timeout", 5.0)
        settings.setdefault("rate_limit_rps", 0)
        if not settings.get("no_auth"):
            settings.setdefault("jwt_secret", SECRET)
        state = await build_state(Config().with_(**settings))
        headers = auth_headers() if authorized and not settings.get("no_auth") else None
        return await aiohttp_client(create_app(state), headers=headers)

    return make


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> TestClient:
    """A gateway with default settings in front of ``cuebot``."""
    return await make_gateway()


@pytest.fixture
async def sandbox() -> AsyncIterator[Any]:
    """The Cuebot stand-in, in memory, seeded with demo data, on a loopback port."""
    from gateway.sandbox import server

    sb = await server.start(":memory:", demo=True)
    yield sb
    await sb.stop(None)


@pytest.fixture
async def sandbox_channel(sandbox: Any) -> AsyncIterator[grpc.aio.Channel]:
    """A gRPC channel to ``sandbox`` (use opencue_proto stubs on it)."""
    channel = grpc.aio.insecure_channel(sandbox.endpoint)
    yield channel
    await channel.close()


@pytest.fixture
async def offloader() -> AsyncIterator[Any]:
    """One conversion process that takes every message (OFFLOAD_MIN_BYTES 1)."""
    from gateway.offload import Offloader

    off = Offloader(workers=1, min_bytes=1, idle=30)
    yield off
    await off.close()
