"""The one gRPC channel to Cuebot, and raw-bytes unary calls over it.

Requests arrive here already serialized and replies leave as bytes: the
channel has no (de)serializers, so each message crosses the gRPC boundary
exactly once. Call objects are made once per method when the method table is
built, not per request.
"""
from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import grpc

from . import unary
from .config import Config, ConfigError

log = logging.getLogger("gateway.backend")

Metadata = Sequence[tuple[str, str]]
UnaryCall = Callable[..., Awaitable[bytes]]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror or e}") from None


def _check_pem(cfg: Config, ca: bytes | None) -> None:
    """Refuse unusable TLS files at start-up.

    gRPC accepts any bytes here and only fails at the first handshake, so a
    typo would otherwise show as every call answering 503.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"CUEBOT_TLS_CA {cfg.cuebot_tls_ca}: not a PEM CA bundle "
                              f"({e.__class__.__name__})") from None
    if cfg.cuebot_tls_cert is not None and cfg.cuebot_tls_key is not None:
        try:
            ctx.load_cert_chain(cfg.cuebot_tls_cert, cfg.cuebot_tls_key)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"CUEBOT_TLS_CERT {cfg.cuebot_tls_cert} / CUEBOT_TLS_KEY "
                              f"{cfg.cuebot_tls_key}: not a matching PEM certificate and key "
                              f"({e.__class__.__name__})") from None


def channel_credentials(cfg: Config) -> grpc.ChannelCredentials | None:
    """TLS credentials for Cuebot, or None for a plaintext channel (the Go default)."""
    if not cfg.use_tls:
        return None
    ca = _read(cfg.cuebot_tls_ca, "CUEBOT_TLS_CA") if cfg.cuebot_tls_ca else None
    cert = _read(cfg.cuebot_tls_cert, "CUEBOT_TLS_CERT") if cfg.cuebot_tls_cert else None
    key = _read(cfg.cuebot_tls_key, "CUEBOT_TLS_KEY") if cfg.cuebot_tls_key else None
    _check_pem(cfg, ca)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


def reconnect_options(cfg: Config) -> list[tuple[str, object]]:
    """With the circuit breaker on, retry connecting to a down Cuebot at least twice per cooldown.

    gRPC's own back-off grows to two minutes, so a Cuebot back after a long
    outage could wait that long for the gateway to notice; the breaker's
    probe can only succeed once the channel has reconnected. A connection
    attempt every second or so costs nothing. Without the breaker, gRPC's
    defaults stand.
    """
    if cfg.breaker_failures <= 0:
        return []
    most = max(100, int(cfg.breaker_cooldown * 1000 / 2))
    return [("grpc.max_reconnect_backoff_ms", most),
            ("grpc.initial_reconnect_backoff_ms", min(1000, most))]


class Backend:
    """Cuebot, as the rest of the gateway sees it."""

    def __init__(self, cfg: Config) -> None:
        self.target = cfg.cuebot_endpoint
        self.timeout = cfg.grpc_timeout
        self.max_recv_mb = cfg.grpc_max_recv_msg_mb
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", cfg.grpc_max_recv_msg_mb * 1024 * 1024),
            ("grpc.max_send_message_length", -1),
            ("grpc.primary_user_agent", "opencue-gateway"),
        ]
        options.extend(reconnect_options(cfg))
        if cfg.cuebot_tls_server_name:
            options.append(("grpc.ssl_target_name_override", cfg.cuebot_tls_server_name))
        creds = channel_credentials(cfg)
        if creds is None:
            self.channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(self.target, creds, options=options)
        log.debug("channel to %s (%s)", self.target, "TLS" if creds else "plaintext")
        try:
            self.direct, self.calls = unary.choose(cfg.backend_calls, self.channel)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def unary(self, path: str) -> UnaryCall:
        """A callable sending request bytes to ``path`` and returning reply bytes.

        Call it as ``await call(data, timeout=..., metadata=...)``; it raises
        ``grpc.aio.AioRpcError`` for a failed call (``unary.py`` says which of
        the two kinds it is).
        """
        if self.direct:
            return unary.UnaryCall(self.channel, path)
        return self.channel.unary_unary(path, request_serializer=None,
                                        response_deserializer=None)

    def connected(self) -> bool:
        """Whether the channel has a live connection to Cuebot now (it does not try to make one)."""
        return self.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY

    async def close(self) -> None:
        await self.channel.close()
