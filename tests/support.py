"""Real peers for the tests: a gRPC server that records what the gateway sends.

``RecordingCuebot`` listens on a loopback port and answers every method of
every service (it does not need to know them): each call is recorded with its
raw request bytes and metadata, and answered with what the test set up for
that path, by default an empty reply message.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import aiohttp
import grpc
from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "vectors"

# The secret every test gateway accepts unless a test says otherwise.
SECRET = "gateway-tests-secret-0123456789abcdef"


def token(subject: str = "tester", *, secret: str = SECRET, lifetime: float = 3600,
          **claims: Any) -> str:
    """A valid HS256 token, as the REST reference's Python example makes them."""
    from gateway.auth import mint

    return mint(secret, subject, lifetime, extra=claims)


def auth_headers(subject: str = "tester", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(subject, **claims)}"}


@dataclass
class Call:
    path: str
    request: bytes
    metadata: dict[str, str]


@dataclass
class Reply:
    data: bytes = b""
    code: grpc.StatusCode | None = None
    message: str = ""
    trailers: tuple[tuple[str, Any], ...] = ()
    delay: float = 0.0
    hold: asyncio.Event | None = None   # answer only once it is set


@dataclass
class RecordingCuebot:
    """A gRPC server on 127.0.0.1 answering any unary method."""

    calls: list[Call] = field(default_factory=list)
    replies: dict[str, Reply | Callable[[Call], Reply]] = field(default_factory=dict)
    port: int = 0
    server: grpc.aio.Server | None = None
    in_flight: int = 0          # calls being answered now
    max_in_flight: int = 0      # the most at once
    cancelled: list[Call] = field(default_factory=list)  # calls the client cancelled

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reply(self, path: str, data: bytes | Message = b"", *, code: grpc.StatusCode | None = None,
              message: str = "", trailers: tuple = (), delay: float = 0.0,
              hold: asyncio.Event | None = None) -> None:
        if isinstance(data, Message):
            data = data.SerializeToString()
        self.replies[path] = Reply(data, code, message, trailers, delay, hold)

    def count(self, path: str) -> int:
        return sum(1 for c in self.calls if c.path == path)

    def paths(self) -> list[str]:
        return [c.path for c in self.calls]

    async def start(self, credentials: grpc.ServerCredentials | None = None,
                    reflection_services: list[str] | None = None,
                    reflection_pool: Any = None, port: int = 0) -> "RecordingCuebot":
        """Listen (on ``port``, or a free one); reflection serves ``reflection_pool``."""
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((_Handler(self),))
        if reflection_services is not None:
            from gateway.reflection import add_reflection_service

            add_reflection_service(self.server, reflection_services, pool=reflection_pool)
        addr = f"127.0.0.1:{port}"
        if credentials is None:
            self.port = self.server.add_insecure_port(addr)
        else:
            self.port = self.server.add_secure_port(addr, credentials)
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, owner: RecordingCuebot) -> None:
        self.owner = owner

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        path = details.method
        if path.startswith("/grpc.reflection."):
            return None  # left to the reflection service, if any
        owner = self.owner

        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            call = Call(path, request, {k: v for k, v in context.invocation_metadata()})
            owner.calls.append(call)
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
            try:
                spec = owner.replies.get(path, Reply())
                if callable(spec):
                    spec = spec(call)
                if spec.delay:
                    await asyncio.sleep(spec.delay)
                if spec.hold is not None:
                    await spec.hold.wait()
            except asyncio.CancelledError:
                owner.cancelled.append(call)
                raise
            finally:
                owner.in_flight -= 1
            if spec.code is not None:
                if spec.trailers:
                    context.set_trailing_metadata(spec.trailers)
                await context.abort(spec.code, spec.message)
            return spec.data

        return grpc.unary_unary_rpc_method_handler(unary)


async def raw_request(port: int, method: str, target: str, body: bytes = b"",
                      headers: dict[str, str] | None = None,
                      authorized: bool = True) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with the request-target sent exactly as given.

    HTTP client libraries normalise targets such as ``//a/b``; this does not.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    all_headers = {**(auth_headers() if authorized else {}), **(headers or {})}
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{k}: {v}" for k, v in all_headers.items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head_raw, _, payload = data.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, payload


# ---------------------------------------------------------------------------
# vectors
# ---------------------------------------------------------------------------
def vector_manifest() -> list[dict[str, str]]:
    return json.loads((VECTORS / "manifest.json").read_text())


def vector_bytes(name: str) -> bytes:
    p = VECTORS / name
    if p.exists():
        return p.read_bytes()
    return gzip.decompress((VECTORS / (name + ".gz")).read_bytes())


# ---------------------------------------------------------------------------
# the gateway as a separate process
# ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dead_endpoint() -> Iterator[str]:
    """``127.0.0.1:PORT`` where nothing answers, for as long as the block runs.

    The port is bound but not listening: connections are refused, and no
    other process (another test worker) can take it meanwhile, as it could
    a port that ``free_port`` merely found free.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


_LISTENING = re.compile(r"listening on https?://(?:\[[^\]]*\]|[^:/\s]+):(\d+)")


class GatewayProcess:
    """``python -m gateway`` in a child process, its output collected by a thread.

    It listens on a port the kernel picks (``--port 0``), read from its
    "listening on" line: no fixed port, and no window between finding a free
    port and binding it in which a parallel test could take it.
    """

    def __init__(self, *args: str, env: dict[str, str | None] | None = None,
                 port: int | None = None) -> None:
        self._port = port
        # ACCESS_LOG_FLUSH 0: a test reads a request's access line as soon as it is
        # answered (test_access_log checks the default's batching on its own)
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                    "JWT_SECRET": SECRET, "ACCESS_LOG_FLUSH": "0"}
        full_env.update(env or {})
        full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--host", "127.0.0.1",
             "--port", str(port or 0), *args],
            cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.log: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            found = _LISTENING.search(line)
            if found:
                if self._port is None:
                    self._port = int(found.group(1))
                self._ready.set()

    @property
    def port(self) -> int:
        """The port it listens on (waits for its "listening on" line)."""
        if self._port is None and not self._ready.wait(60):
            raise AssertionError("gateway has not said where it listens:\n" + self.output)
        assert self._port is not None
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.log)

    def wait_ready(self, timeout: float = 30.0) -> "GatewayProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.05):
                return self
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"gateway exited ({self.proc.returncode}):\n{self.output}")
        self.stop()
        raise AssertionError("gateway did not start in time:\n" + self.output)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


@contextlib.asynccontextmanager
async def serving(gw: GatewayProcess) -> AsyncIterator[aiohttp.ClientSession]:
    """``gw`` once it listens, with a client session; then stopped, which must go cleanly."""
    try:
        await asyncio.to_thread(gw.wait_ready, 30.0)
        async with aiohttp.ClientSession() as http:
            yield http
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output
    assert "Traceback" not in gw.output


def run_gateway(*args: str, env: dict[str, str | None] | None = None,
                timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``python -m gateway`` to completion (for start-up failures and --help).

    ``REST_PORT=0`` unless the test says otherwise: a start that gets as far
    as listening must not depend on 8448 being free (a newcomer's Quick-start
    gateway may hold it).
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "JWT_SECRET": SECRET, "REST_PORT": "0"}
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def table_without_backend(descs: Any) -> Any:
    """A method table over ``descs`` for conversions only: any call to Cuebot fails the test."""
    from gateway.routes import MethodTable

    async def never(*_: Any, **__: Any) -> bytes:
        raise AssertionError("no backend call expected")

    return MethodTable.build(descs, lambda path: never, exclude=())
