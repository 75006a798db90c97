"""The gateway's side of the gRPC connection, over real loopback sockets.

TLS and mutual TLS to Cuebot (with certificates made here, per run), what
reaches Cuebot besides the message (request id, ``Grpc-Metadata-*``, nothing
else), deadlines, a Cuebot that is down, the message bytes crossing exactly
once, and replies the gateway cannot or will not take. Nothing is mocked: a
``RecordingCuebot`` gRPC server stands in for Cuebot.
"""
from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opencue_proto import job_pb2, show_pb2

from gateway.app import create_app
from gateway.serving import StartupError, build_state
from gateway.config import Config
from gateway.server import GatewayRunner
from pki import Authority, Leaf, Pki
from support import SECRET, RecordingCuebot, free_port, raw_request

GET_SHOWS = "/show.ShowInterface/GetShows"
GET_JOBS = "/job.JobInterface/GetJobs"
GENERATED_ID = re.compile(r"[0-9a-f]{32}\Z")

GatewayFactory = Callable[..., Awaitable[TestClient]]


def envelope(body: bytes) -> dict[str, Any]:
    """The gateway's one error shape; anything else (HTML, a traceback) fails here."""
    data = orjson.loads(body)
    assert list(data) == ["error", "code", "message", "details"], data
    assert data["error"] == data["message"]
    return data


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Made once per module: key generation is the slow part, certs are read-only."""
    d = tmp_path_factory.mktemp("pki")
    ca = Authority.create(d, "test-ca")
    return Pki(
        ca=ca,
        other_ca=Authority.create(d, "other-ca"),
        localhost=ca.issue(d, "localhost", dns=("localhost",), ips=("127.0.0.1",)),
        internal=ca.issue(d, "cuebot.internal", dns=("cuebot.internal",)),
        client=ca.issue(d, "gateway-client", client=True),
    )


@pytest.fixture
async def tls_cuebot() -> AsyncIterator[Callable[..., Awaitable[RecordingCuebot]]]:
    """Start RecordingCuebots with TLS server credentials; all stopped at teardown."""
    started: list[RecordingCuebot] = []

    async def start(leaf: Leaf, *, client_ca: Authority | None = None) -> RecordingCuebot:
        creds = grpc.ssl_server_credentials(
            [leaf.pair()],
            root_certificates=client_ca.pem_path.read_bytes() if client_ca else None,
            require_client_auth=client_ca is not None,
        )
        server = await RecordingCuebot().start(credentials=creds)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def unavailable(resp: Any) -> dict[str, Any]:
    """Assert a 503 / UNAVAILABLE envelope and return it."""
    body = await resp.read()
    assert resp.status == 503, body
    data = envelope(body)
    assert data["code"] == 14
    return data


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------
async def test_tls_with_trusted_ca(make_gateway: GatewayFactory, tls_cuebot, pki: Pki) -> None:
    """CUEBOT_TLS_CA alone turns TLS on and verifies Cuebot by its host name."""
    server = await tls_cuebot(pki.localhost)
    gw = await make_gateway(cuebot_tls_ca=pki.ca.pem_path,
                            cuebot_endpoint=f"localhost:{server.port}")
    resp = await gw.post(GET_SHOWS, data=b"{}")
    assert resp.status == 200, await resp.read()
    assert server.paths() == [GET_SHOWS]


async def test_tls_by_ip_address(make_gateway: GatewayFactory, tls_cuebot, pki: Pki) -> None:
    """The IP SAN is checked when the endpoint is an address."""
    server = await tls_cuebot(pki.localhost)
    gw = await make_gateway(cuebot_tls_ca=pki.ca.pem_path, cuebot_endpoint=server.endpoint)
    resp = await gw.post(GET_SHOWS, data=b"{}")
    assert resp.status == 200, await resp.read()


async def test_plaintext_gateway_against_tls_cuebot_is_unavailable(
        make_gateway: GatewayFactory, tls_cuebot, pki: Pki) -> None:
    """The default (plaintext, like the Go gateway) fails cleanly against a TLS Cuebot."""
    server = await tls_cuebot(pki.localhost)
    gw = await make_gateway(cuebot_endpoint=f"localhost:{server.port}")
    await unavailable(await gw.post(GET_SHOWS, data=b"{}"))
    assert server.calls == []


async def test_untrusted_server_certificate_is_unavailable(
        make_gateway: GatewayFactory, tls_cuebot, pki: Pki) -> None:
    """A Cuebot certificate from a CA the gateway does not trust is refused."""
    server = await tls_cuebot(pki.localhost)
    gw = await make_gateway(cuebot_tls_ca=pki.other_ca.pem_path,
                            cuebot_endpoint=f"localhost:{server.port}")
    await unavailable(await gw.post(GET_SHOWS, data=b"{}"))
    assert server.calls == []


async def test_server_name_override(make_gateway: GatewayFactory, tls_cuebot, pki: Pki) -> None:
    """CUEBOT_TLS_SERVER_NAME: reach Cuebot by address, verify the name in its cert."""
    server = await tls_cuebot(pki.internal)
    gw = await make_gateway(cuebot_tls_ca=pki.ca.pem_path, cuebot_endpoint=server.endpoint,
                            cuebot_tls_server_name="cuebot.internal")
    resp = await gw.post(GET_SHOWS, data=b"{}")
    assert resp.status == 200, await resp.read()
    assert server.paths() == [GET_SHOWS]


async def test_certificate_name_mismatch_is_unavailable(
        make_gateway: GatewayFactory, tls_cuebot, pki: Pki) -> None:
    """Without the override the same cert does not match 127.0.0.1: host names are checked."""
    server = await tls_cuebot(pki.internal)
    gw = await make_gateway(cuebot_tls_ca=pki.ca.pem_path, cuebot_endpoint=server.endpoint)
    await unavailable(await gw.post(GET_SHOWS, data=b"{}"))
    assert server.calls == []


async def test_mutual_tls(make_gateway: GatewayFactory, tls_cuebot, pki: Pki) -> None:
    """CUEBOT_TLS_CERT + CUEBOT_TLS_KEY are presented to a Cuebot that demands them."""
    server = await tls_cuebot(pki.localhost, client_ca=pki.ca)
    gw = await make_gateway(cuebot_tls_ca=pki.ca.pem_path, cuebot_tls_cert=pki.client.cert,
                            cuebot_tls_key=pki.client.key,
                            cuebot_endpoint=f"localhost:{server.port}")
    resp = await gw.post(GET_SHOWS, data=b"{}")
    assert resp.status == 200, await resp.read()
    assert server.paths() == [GET_SHOWS]


async def test_mutual_tls_without_client_cert_is_unavailable(
        make_gateway: GatewayFactory, tls_cuebot, pki: Pki) -> None:
    server = await tls_cuebot(pki.localhost, client_ca=pki.ca)
    gw = await make_gateway(cuebot_tls_ca=pki.ca.pem_path,
                            cuebot_endpoint=f"localhost:{server.port}")
    await unavailable(await gw.post(GET_SHOWS, data=b"{}"))
    assert server.calls == []


async def test_tls_without_ca_uses_system_roots(make_gateway: GatewayFactory, tls_cuebot,
                                                pki: Pki) -> None:
    """CUEBOT_TLS=true alone trusts the system's CAs, which did not sign our test cert."""
    server = await tls_cuebot(pki.localhost)
    gw = await make_gateway(cuebot_tls=True, cuebot_endpoint=f"localhost:{server.port}")
    await unavailable(await gw.post(GET_SHOWS, data=b"{}"))
    assert server.calls == []


@pytest.mark.parametrize("setting, variable", [
    ("cuebot_tls_ca", "CUEBOT_TLS_CA"),
    ("cuebot_tls_cert", "CUEBOT_TLS_CERT"),
    ("cuebot_tls_key", "CUEBOT_TLS_KEY"),
])
async def test_missing_tls_file_stops_start_up(tmp_path: Path, pki: Pki,
                                                setting: str, variable: str) -> None:
    """A missing PEM file is a start-up error naming the variable, not a failing first call."""
    files: dict[str, Path] = {"cuebot_tls_ca": pki.ca.pem_path,
                              "cuebot_tls_cert": pki.client.cert,
                              "cuebot_tls_key": pki.client.key}
    files[setting] = tmp_path / "missing.pem"
    with pytest.raises(StartupError) as info:
        await build_state(Config().with_(jwt_secret=SECRET, cuebot_endpoint="127.0.0.1:1", **files))
    assert variable in str(info.value)
    assert "missing.pem" in str(info.value)


async def test_unusable_tls_files_stop_start_up(tmp_path: Path, pki: Pki) -> None:
    """gRPC takes any bytes and fails only at the handshake; we refuse them at start-up."""
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(StartupError, match="CUEBOT_TLS_CA .*junk.pem.*not a PEM CA bundle"):
        await build_state(Config().with_(jwt_secret=SECRET, cuebot_endpoint="127.0.0.1:1", cuebot_tls_ca=junk))
    with pytest.raises(StartupError, match="not a matching PEM certificate and key"):
        await build_state(Config().with_(jwt_secret=SECRET, cuebot_endpoint="127.0.0.1:1",
                                         cuebot_tls_ca=pki.ca.pem_path,
                                         cuebot_tls_cert=pki.client.cert,
                                         cuebot_tls_key=pki.localhost.key))


# ---------------------------------------------------------------------------
# request id
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("rid", ["abc-123", "req.2024-01-01T00:00:00Z", "a" * 128,
                                 "dGVzdA==/+_:"])
async def test_request_id_is_forwarded_and_echoed(gateway: TestClient, cuebot: RecordingCuebot,
                                                  rid: str) -> None:
    """One id in the client's log, the gateway's and Cuebot's."""
    resp = await gateway.post(GET_SHOWS, data=b"{}", headers={"X-Request-Id": rid})
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == rid
    assert cuebot.calls[0].metadata["x-request-id"] == rid


async def test_request_id_is_generated_when_absent(gateway: TestClient,
                                                   cuebot: RecordingCuebot) -> None:
    resp = await gateway.post(GET_SHOWS, data=b"{}")
    assert resp.status == 200
    rid = resp.headers["X-Request-Id"]
    assert GENERATED_ID.match(rid), rid
    assert cuebot.calls[0].metadata["x-request-id"] == rid


async def test_generated_request_ids_differ(gateway: TestClient) -> None:
    first = await gateway.post(GET_SHOWS, data=b"{}")
    second = await gateway.post(GET_SHOWS, data=b"{}")
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@pytest.mark.parametrize("rid", ["x" * 200, "has space", "naïve-id", "", "a\tb"],
                         ids=["200-chars", "space", "non-ascii", "empty", "tab"])
async def test_invalid_request_id_is_replaced(gateway: TestClient, cuebot: RecordingCuebot,
                                              rid: str) -> None:
    """Anything that cannot safely go into a log line or gRPC metadata is not passed on.

    Sent with raw bytes: HTTP clients refuse (or re-encode) some of these values.
    """
    status, headers, _ = await raw_request(gateway.port, "POST", GET_SHOWS, b"{}",
                                           headers={"X-Request-Id": rid})
    assert status == 200
    echoed = headers["x-request-id"]
    assert GENERATED_ID.match(echoed), echoed
    assert cuebot.calls[0].metadata["x-request-id"] == echoed


@pytest.mark.parametrize("given", [None, "err-42"])
@pytest.mark.parametrize("path, body, status", [
    ("/nope.NoService/Nothing", b"{}", 404),
    (GET_SHOWS, b"{not json", 400),
])
async def test_errors_carry_the_request_id(gateway: TestClient, cuebot: RecordingCuebot,
                                           given: str | None, path: str, body: bytes,
                                           status: int) -> None:
    """A failed request can be matched to the gateway's log line too."""
    headers = {"X-Request-Id": given} if given else {}
    resp = await gateway.post(path, data=body, headers=headers)
    assert resp.status == status
    envelope(await resp.read())
    rid = resp.headers["X-Request-Id"]
    assert rid == given if given else GENERATED_ID.match(rid)
    assert cuebot.calls == []


async def test_backend_error_carries_the_request_id(gateway: TestClient,
                                                    cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, code=grpc.StatusCode.INTERNAL, message="boom")
    resp = await gateway.post(GET_SHOWS, data=b"{}", headers={"X-Request-Id": "boom-1"})
    assert resp.status == 500
    assert resp.headers["X-Request-Id"] == "boom-1"
    assert cuebot.calls[0].metadata["x-request-id"] == "boom-1"


# ---------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------
async def test_grpc_metadata_headers_are_forwarded(gateway: TestClient,
                                                   cuebot: RecordingCuebot) -> None:
    resp = await gateway.post(GET_SHOWS, data=b"{}",
                              headers={"Grpc-Metadata-Studio": "spi",
                                       "Grpc-Metadata-Site_Name.v2": "Vancouver / B"})
    assert resp.status == 200
    md = cuebot.calls[0].metadata
    assert md["studio"] == "spi"
    assert md["site_name.v2"] == "Vancouver / B"


async def test_other_headers_are_not_forwarded(gateway: TestClient,
                                               cuebot: RecordingCuebot) -> None:
    """Authorization (the gateway's own business), cookies and the like never reach Cuebot."""
    resp = await gateway.post(GET_SHOWS, data=b"{}", headers={
        "Cookie": "session=secret-cookie",
        "X-Studio": "spi",
    })
    assert resp.status == 200
    md = cuebot.calls[0].metadata
    assert "authorization" not in md and "cookie" not in md and "x-studio" not in md
    assert not any("secret" in str(v) or "eyJ" in str(v) for v in md.values()), md


@pytest.mark.parametrize("header", [
    "Grpc-Metadata-Bad!Key",       # legal in HTTP, not in a gRPC metadata key
    "Grpc-Metadata-Bad*Key",
    "Grpc-Metadata-",              # an empty key
    "Grpc-Metadata-Trace-Bin",     # binary metadata: the value would be taken as base64
    "Grpc-Metadata-grpc-timeout",  # reserved for gRPC itself
])
async def test_invalid_metadata_key_is_refused(gateway: TestClient, cuebot: RecordingCuebot,
                                               header: str) -> None:
    status, _, body = await raw_request(gateway.port, "POST", GET_SHOWS, b"{}",
                                        headers={header: "x"})
    assert status == 400, body
    data = envelope(body)
    assert data["code"] == 3
    assert cuebot.calls == []


async def test_non_ascii_metadata_value_is_refused(gateway: TestClient,
                                                   cuebot: RecordingCuebot) -> None:
    """gRPC metadata values are printable ASCII; the rest cannot be passed on as sent."""
    status, _, body = await raw_request(gateway.port, "POST", GET_SHOWS, b"{}",
                                        headers={"Grpc-Metadata-Studio": "caf\u00e9"})
    assert status == 400, body
    assert envelope(body)["code"] == 3
    assert cuebot.calls == []


@pytest.mark.parametrize("key", ["X-Request-Id", "Authorization", "Cookie", "Connection",
                                 "Host", "Te", "Content-Type", "X-Opencue-User"])
async def test_reserved_metadata_is_refused(gateway: TestClient, cuebot: RecordingCuebot,
                                            key: str) -> None:
    """Credentials, the gateway's own ids and HTTP/2 connection headers cannot be smuggled."""
    resp = await gateway.post(GET_SHOWS, data=b"{}", headers={f"Grpc-Metadata-{key}": "x"})
    assert resp.status == 400
    data = envelope(await resp.read())
    assert data["code"] == 3 and "reserved" in data["message"]
    assert cuebot.calls == []


async def test_metadata_cannot_replace_the_request_id(gateway: TestClient,
                                                      cuebot: RecordingCuebot) -> None:
    """The id Cuebot logs is the one the gateway logged and echoed, whatever else is sent.

    Refusing the header (400) or ignoring it are both fine; Cuebot seeing another id is not.
    """
    resp = await gateway.post(GET_SHOWS, data=b"{}", headers={
        "X-Request-Id": "mine", "Grpc-Metadata-X-Request-Id": "forged"})
    if resp.status == 400:
        assert envelope(await resp.read())["code"] == 3
        assert cuebot.calls == []
        return
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == "mine"
    assert cuebot.calls[0].metadata["x-request-id"] == "mine"


@pytest.fixture
async def listener_port(cuebot: RecordingCuebot) -> AsyncIterator[int]:
    """The gateway behind the production runner (GatewayRunner), not the test client's.

    Only this runner answers aiohttp's own parser refusals in the JSON envelope.
    """
    state = await build_state(Config().with_(jwt_secret=SECRET, cuebot_endpoint=cuebot.endpoint,
                                             grpc_timeout=5.0))
    runner = GatewayRunner(create_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("name, value", [
    ("Grpc-Metadata-Bad Key", "x"),
    ("Grpc-Metadata-Studio", "a\x7fb"),
], ids=["space-in-key", "control-in-value"])
async def test_metadata_the_http_parser_refuses(listener_port: int, cuebot: RecordingCuebot,
                                                name: str, value: str) -> None:
    """Not even valid HTTP: aiohttp refuses before any middleware, still in the envelope."""
    status, headers, body = await raw_request(listener_port, "POST", GET_SHOWS, b"{}",
                                              headers={name: value})
    assert status == 400, body
    assert headers["content-type"].startswith("application/json")
    assert envelope(body)["code"] == 3
    assert cuebot.calls == []


# ---------------------------------------------------------------------------
# deadlines
# ---------------------------------------------------------------------------
async def _timed_post(client: TestClient, headers: dict[str, str] | None = None
                      ) -> tuple[int, bytes, float]:
    started = time.monotonic()
    resp = await client.post(GET_SHOWS, data=b"{}", headers=headers or {})
    body = await resp.read()
    return resp.status, body, time.monotonic() - started


async def test_grpc_timeout_setting_is_the_deadline(make_gateway: GatewayFactory,
                                                    cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, show_pb2.ShowGetShowsResponse(), delay=2.0)
    gw = await make_gateway(grpc_timeout=0.5)
    status, body, elapsed = await _timed_post(gw)
    assert status == 504, body
    assert envelope(body)["code"] == 4
    assert 0.4 < elapsed < 1.5


async def test_grpc_timeout_header_shortens_the_deadline(make_gateway: GatewayFactory,
                                                         cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, delay=2.0)
    gw = await make_gateway(grpc_timeout=5.0)
    status, body, elapsed = await _timed_post(gw, {"Grpc-Timeout": "200m"})
    assert status == 504, body
    assert envelope(body)["code"] == 4
    assert elapsed < 1.2


async def test_grpc_timeout_header_does_not_extend_the_deadline(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    """A client cannot hold a Cuebot call open past GRPC_TIMEOUT."""
    cuebot.reply(GET_SHOWS, delay=2.0)
    gw = await make_gateway(grpc_timeout=0.5)
    status, body, elapsed = await _timed_post(gw, {"Grpc-Timeout": "10S"})
    assert status == 504, body
    assert envelope(body)["code"] == 4
    assert elapsed < 1.5


async def test_grpc_timeout_header_within_deadline_succeeds(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    cuebot.reply(GET_SHOWS, delay=0.1)
    gw = await make_gateway(grpc_timeout=5.0)
    status, body, _ = await _timed_post(gw, {"Grpc-Timeout": "2S"})
    assert status == 200, body


@pytest.mark.parametrize("value", ["soon", "100", "1.5S", "-1S", "100ms", "123456789S"])
async def test_invalid_grpc_timeout_header_is_refused(gateway: TestClient,
                                                      cuebot: RecordingCuebot,
                                                      value: str) -> None:
    resp = await gateway.post(GET_SHOWS, data=b"{}", headers={"Grpc-Timeout": value})
    assert resp.status == 400
    data = envelope(await resp.read())
    assert data["code"] == 3 and "Grpc-Timeout" in data["message"]
    assert cuebot.calls == []


# ---------------------------------------------------------------------------
# Cuebot down
# ---------------------------------------------------------------------------
async def test_backend_down_is_a_quick_503(make_gateway: GatewayFactory) -> None:
    """Nothing listening: the client hears UNAVAILABLE at once, not after GRPC_TIMEOUT."""
    gw = await make_gateway(cuebot_endpoint=f"127.0.0.1:{free_port()}", grpc_timeout=5.0)
    for _ in range(2):  # the second call meets the channel in reconnect back-off
        status, body, elapsed = await _timed_post(gw)
        assert status == 503, body
        assert envelope(body)["code"] == 14
        assert elapsed < 2.5


async def test_backend_going_away_mid_call_is_503(gateway: TestClient,
                                                 cuebot: RecordingCuebot) -> None:
    """Cuebot shutting down under a call is UNAVAILABLE, not the client's 499 or a 500."""
    cuebot.reply(GET_SHOWS, delay=5.0)

    async def stop_soon() -> None:
        while not cuebot.calls:
            await asyncio.sleep(0.01)
        await cuebot.stop()

    stopper = asyncio.create_task(stop_soon())
    status, body, elapsed = await _timed_post(gateway)
    await stopper
    assert status == 503, body
    assert envelope(body)["code"] == 14
    assert elapsed < 2.5


# ---------------------------------------------------------------------------
# the message crosses once, byte for byte
# ---------------------------------------------------------------------------
async def test_request_bytes_are_the_protobuf_message(gateway: TestClient,
                                                      cuebot: RecordingCuebot) -> None:
    resp = await gateway.post(GET_JOBS,
                              data=b'{"r":{"shows":["testing"],"includeFinished":true}}')
    assert resp.status == 200, await resp.read()
    expected = job_pb2.JobGetJobsRequest(
        r=job_pb2.JobSearchCriteria(shows=["testing"], include_finished=True),
    ).SerializeToString()
    assert cuebot.calls[0].path == GET_JOBS
    assert cuebot.calls[0].request == expected


async def test_reply_bytes_become_json(gateway: TestClient, cuebot: RecordingCuebot) -> None:
    shows = show_pb2.ShowGetShowsResponse(
        shows=show_pb2.ShowSeq(shows=[show_pb2.Show(id="s1", name="testing")]))
    cuebot.reply(GET_SHOWS, shows)
    resp = await gateway.post(GET_SHOWS, data=b"{}")
    assert resp.status == 200
    assert orjson.loads(await resp.read())["shows"]["shows"][0]["name"] == "testing"


# ---------------------------------------------------------------------------
# replies the gateway will not or cannot take
# ---------------------------------------------------------------------------
def _big_shows_reply(min_bytes: int) -> show_pb2.ShowGetShowsResponse:
    """A real GetShows reply of at least ``min_bytes`` when serialized."""
    comment = "x" * 1000
    count = min_bytes // 1000 + 1
    return show_pb2.ShowGetShowsResponse(shows=show_pb2.ShowSeq(shows=[
        show_pb2.Show(id=f"id-{i}", name=f"show{i}", comment_email=comment)
        for i in range(count)
    ]))


async def test_reply_over_receive_limit_is_502_naming_the_setting(
        make_gateway: GatewayFactory, cuebot: RecordingCuebot) -> None:
    reply = _big_shows_reply(2 * 1024 * 1024)
    assert reply.ByteSize() > 2 * 1024 * 1024
    cuebot.reply(GET_SHOWS, reply)

    limited = await make_gateway(grpc_max_recv_msg_mb=1)
    resp = await limited.post(GET_SHOWS, data=b"{}")
    assert resp.status == 502
    data = envelope(await resp.read())
    assert "GRPC_MAX_RECV_MSG_MB" in data["message"]
    assert "1 MB" in data["message"]

    default = await make_gateway()
    resp = await default.post(GET_SHOWS, data=b"{}")
    assert resp.status == 200
    assert len(orjson.loads(await resp.read())["shows"]["shows"]) == len(reply.shows.shows)


@pytest.mark.parametrize("wire", [
    b"\xff\xff\xff",                   # a truncated varint tag
    b"\x0a\x05ab",                     # field 1 claims 5 bytes, 2 follow
    b"\x0a\x05\x0a\x03\x12\x01\xff",   # shows.shows[0].name is not UTF-8
    b"\x0f",                           # wire type 7 does not exist
], ids=["bad-tag", "truncated", "bad-utf8", "bad-wire-type"])
async def test_garbage_reply_is_502_envelope(gateway: TestClient, cuebot: RecordingCuebot,
                                             wire: bytes) -> None:
    cuebot.reply(GET_SHOWS, wire)
    resp = await gateway.post(GET_SHOWS, data=b"{}", headers={"X-Request-Id": "garbage-1"})
    body = await resp.read()
    assert resp.status == 502, body
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Request-Id"] == "garbage-1"
    data = envelope(body)
    assert "show.ShowGetShowsResponse" in data["message"]
    assert b"Traceback" not in body
