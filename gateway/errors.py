"""Every failure becomes one JSON envelope, here and nowhere else.

The envelope is ``{"error", "code", "message", "details"}``: the REST
reference documents ``error``/``code``/``message`` (grpc-gateway v1's shape),
the Go gateway (v2) sends ``code``/``message``/``details``; the union serves
clients of both. ``code`` is always a gRPC status code, the HTTP status
follows grpc-gateway's table, and a backend's message passes through word for
word (CueWeb matches on Cuebot's text).
"""
from __future__ import annotations

import base64
import math
from typing import Any, Mapping

import grpc
import orjson
from aiohttp import web

# gRPC status code -> HTTP status, as grpc-gateway v2's HTTPStatusFromCode
HTTP_STATUS: dict[int, int] = {
    0: 200,    # OK
    1: 499,    # CANCELLED (client closed request)
    2: 500,    # UNKNOWN
    3: 400,    # INVALID_ARGUMENT
    4: 504,    # DEADLINE_EXCEEDED
    5: 404,    # NOT_FOUND
    6: 409,    # ALREADY_EXISTS
    7: 403,    # PERMISSION_DENIED
    8: 429,    # RESOURCE_EXHAUSTED
    9: 400,    # FAILED_PRECONDITION (deliberately not 412)
    10: 409,   # ABORTED
    11: 400,   # OUT_OF_RANGE
    12: 501,   # UNIMPLEMENTED
    13: 500,   # INTERNAL
    14: 503,   # UNAVAILABLE
    15: 500,   # DATA_LOSS
    16: 401,   # UNAUTHENTICATED
}

OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

# gRPC's names of the codes (OK, NOT_FOUND...), for metric labels and the access log
CODE_NAMES: dict[int, str] = {c.value[0]: c.name for c in grpc.StatusCode}


def code_name(code: int) -> str:
    return CODE_NAMES.get(code, "UNKNOWN")


def status_name(code: object) -> str:
    """The name of a ``grpc.StatusCode`` (what ``AioRpcError.code()`` returns)."""
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


class GatewayError(Exception):
    """A failure with its HTTP status, gRPC code and client-safe message."""

    def __init__(self, status: int, code: int, message: str,
                 headers: Mapping[str, str] | None = None,
                 details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details or []

    def again(self) -> "GatewayError":
        """A fresh copy, to raise once more: several requests may share one failure."""
        return GatewayError(self.status, self.code, self.message, self.headers, self.details)

    def body(self) -> bytes:
        return orjson.dumps({
            "error": self.message,
            "code": self.code,
            "message": self.message,
            "details": self.details,
        })

    def response(self) -> web.Response:
        return web.Response(
            status=self.status, body=self.body(),
            content_type="application/json", headers=self.headers,
        )


def not_found(message: str) -> GatewayError:
    return GatewayError(404, NOT_FOUND, message)


def method_not_allowed(allowed: str = "POST") -> GatewayError:
    return GatewayError(405, UNIMPLEMENTED, "Method Not Allowed", headers={"Allow": allowed})


def bad_request(message: str) -> GatewayError:
    return GatewayError(400, INVALID_ARGUMENT, message)


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, RESOURCE_EXHAUSTED,
        f"request body larger than MAX_REQUEST_BYTES ({limit} bytes)",
    )


def response_too_large(size: int, limit: int) -> GatewayError:
    """A reply the gateway will not send: 502, code RESOURCE_EXHAUSTED.

    The same pair as a Cuebot reply over GRPC_MAX_RECV_MSG_MB (see
    ``from_rpc_error``): a size limit was exhausted (8, not INTERNAL: nothing
    is broken, and a client can ask for less), and the fault is on the
    gateway's upstream side (502, not 429, which would say "slow down").
    """
    return GatewayError(
        502, RESOURCE_EXHAUSTED,
        f"reply larger than MAX_RESPONSE_BYTES ({limit} bytes): {size} bytes of JSON",
    )


def retry_after(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds, at least 1 (0 would invite an immediate retry)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def unavailable(message: str, retry_in: float) -> GatewayError:
    """503, code 14: Cuebot cannot take this call now; try again in ``retry_in`` seconds.

    The gateway's own refusals on Cuebot's behalf (circuit open, queue full)
    use the code a down Cuebot would have given, so clients need one rule.
    """
    return GatewayError(503, UNAVAILABLE, message, headers=retry_after(retry_in))


def deadline_exceeded() -> GatewayError:
    """A request's own deadline passed while it waited for a call it shares (gRPC's words)."""
    return GatewayError(504, DEADLINE_EXCEEDED, "Deadline Exceeded")


def internal(message: str = "internal error") -> GatewayError:
    return GatewayError(500, INTERNAL, message)


def from_http_exception(exc: web.HTTPException) -> GatewayError:
    """aiohttp's own refusals (bad framing, size limit…) in our envelope."""
    status = exc.status
    code = {400: INVALID_ARGUMENT, 404: NOT_FOUND, 405: UNIMPLEMENTED,
            413: RESOURCE_EXHAUSTED}.get(status, INTERNAL if status >= 500 else INVALID_ARGUMENT)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return GatewayError(status, code, exc.reason or "error", headers=headers)


def _details(trailers: Any) -> list[Any]:
    """``google.rpc.Status.details`` from ``grpc-status-details-bin``, if sent.

    Each ``Any`` is shown as ``{"@type", "value"}`` with the value base64:
    the gateway cannot know every detail type, and this never fails.
    """
    if not trailers:
        return []
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return [{"@type": url, "value": base64.b64encode(raw).decode()}
                    for url, raw in _status_details(value)]
    return []


def _status_details(data: bytes) -> list[tuple[str, bytes]]:
    """Parse field 3 (repeated Any) of google.rpc.Status without its proto."""
    out: list[tuple[str, bytes]] = []
    for num, payload in _fields(data):
        if num == 3 and isinstance(payload, bytes):
            url, value = "", b""
            for n, p in _fields(payload):
                if n == 1 and isinstance(p, bytes):
                    url = p.decode("utf-8", "replace")
                elif n == 2 and isinstance(p, bytes):
                    value = p
            out.append((url, value))
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(data: bytes) -> list[tuple[int, bytes | int]]:
    out: list[tuple[int, bytes | int]] = []
    i = 0
    try:
        while i < len(data):
            key, i = _varint(data, i)
            num, wt = key >> 3, key & 7
            if wt == 0:
                v, i = _varint(data, i)
                out.append((num, v))
            elif wt == 2:
                n, i = _varint(data, i)
                out.append((num, data[i:i + n]))
                i += n
            elif wt == 1:
                i += 8
            elif wt == 5:
                i += 4
            else:
                break
    except ValueError:
        pass
    return out


def from_rpc_error(exc: grpc.aio.AioRpcError, max_recv_mb: int | None = None) -> GatewayError:
    """A backend failure, Cuebot's message unchanged.

    One exception to grpc-gateway's table: gRPC's own "message larger than
    max" is RESOURCE_EXHAUSTED, which would reach the client as a puzzling
    429; it is a reply the gateway refused to take, so 502 naming the limit.
    """
    code = exc.code()
    num = code.value[0] if isinstance(code, grpc.StatusCode) else int(code or 2)
    message = exc.details() or (code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN")
    if num == RESOURCE_EXHAUSTED and "larger than max" in message and max_recv_mb:
        return GatewayError(
            502, RESOURCE_EXHAUSTED,
            f"backend reply larger than GRPC_MAX_RECV_MSG_MB ({max_recv_mb} MB): {message}",
        )
    status = HTTP_STATUS.get(num, 500)
    headers = {"WWW-Authenticate": "Bearer"} if num == UNAUTHENTICATED else None
    try:
        details = _details(exc.trailing_metadata())
    except Exception:  # noqa: BLE001 - details are a courtesy, never a second failure
        details = []
    return GatewayError(status, num, message, headers=headers, details=details)
