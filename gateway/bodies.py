"""Request bodies: read within MAX_REQUEST_BYTES, decoded as Content-Encoding says, refused clearly.

aiohttp's own request decompression is off (``create_app`` passes
``auto_decompress=False``): it turned a corrupt gzip body into an exception
the handler saw as a bug (500, a traceback per request), let a truncated
gzip stream and unknown codings through as if they were JSON, and refused
``br``/``zstd`` as malformed HTTP. Here the client's mistakes are the
client's: ``identity``, ``gzip`` (``x-gzip``) and ``deflate`` (zlib-wrapped
as RFC 9110 says, or raw, as some clients send it) are taken; a body that is
not complete, valid data of its coding is 400; any other coding, or several
stacked, is 415 with ``Accept-Encoding`` saying what is taken. A body that
inflates beyond MAX_REQUEST_BYTES is 413 as soon as it does: a
decompression bomb is never inflated further than the limit.
"""
from __future__ import annotations

import asyncio
import zlib

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from . import errors
from .compression import OFFLOAD_BYTES
from .errors import GatewayError

ACCEPTED = "gzip, deflate"
_GZIP = frozenset({"gzip", "x-gzip"})
_GZIP_MAGIC = b"\x1f\x8b"


class BodyTimeout(Exception):
    """Set on a request's payload when its body did not arrive within BODY_TIMEOUT."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request body not received within {seconds:g} s")
        self.seconds = seconds


def unsupported(coding: str) -> GatewayError:
    return GatewayError(415, errors.INVALID_ARGUMENT,
                        f"unsupported Content-Encoding {coding!r}; this gateway takes "
                        f"{ACCEPTED} or identity", headers={"Accept-Encoding": ACCEPTED})


def request_timeout(what: str, seconds: float) -> GatewayError:
    """408: the client was too slow; the connection is closed after the reply."""
    return GatewayError(408, errors.DEADLINE_EXCEEDED,
                        f"request {what} not received within {seconds:g} s",
                        headers={"Connection": "close"})


def coding_of(request: web.BaseRequest) -> str | None:
    """The one content coding to undo (None: the body is as sent), or 415."""
    values = request.headers.getall(hdrs.CONTENT_ENCODING, ())
    codings = [c.strip().lower() for v in values for c in v.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) > 1:
        raise unsupported(", ".join(codings))
    coding = codings[0]
    if coding in _GZIP:
        return "gzip"
    if coding == "deflate":
        return "deflate"
    raise unsupported(coding)


def _bad(coding: str, why: str) -> GatewayError:
    return errors.bad_request(f"request body is not valid {coding} data ({why})")


def inflate(raw: bytes, coding: str, limit: int) -> bytes:
    """``raw`` decoded; 400 unless it is complete valid data, 413 past ``limit`` bytes."""
    out: list[bytes] = []
    size = 0
    data = raw
    while True:
        if coding == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
            d = zlib.decompressobj(zlib.MAX_WBITS)     # zlib container (RFC 1950)
        else:
            d = zlib.decompressobj(-zlib.MAX_WBITS)    # raw deflate (RFC 1951)
        try:
            chunk = d.decompress(data, limit + 1 - size)
            if not d.unconsumed_tail:
                chunk += d.flush()
        except zlib.error as e:
            raise _bad(coding, str(e).removeprefix("Error -3 while decompressing data: ")) \
                from None
        size += len(chunk)
        if size > limit or d.unconsumed_tail:
            raise GatewayError(413, errors.RESOURCE_EXHAUSTED,
                               f"request body larger than MAX_REQUEST_BYTES ({limit} bytes) "
                               f"once {coding}-decoded")
        out.append(chunk)
        if not d.eof:
            raise _bad(coding, "truncated")
        data = d.unused_data
        if not data:
            return b"".join(out)
        if coding != "gzip" or not data.startswith(_GZIP_MAGIC):
            raise _bad(coding, "data after the end of the stream")
        # another gzip member (RFC 1952 allows several): decoded in turn


async def read(request: web.Request, limit: int) -> tuple[bytes, int]:
    """The decoded body and its size as received, or the envelope saying why not."""
    length = request.content_length
    if length is not None and length > limit:
        raise errors.too_large(limit)
    coding = coding_of(request) if hdrs.CONTENT_ENCODING in request.headers else None
    try:
        content = request.content
        if content.is_eof() and request._read_bytes is None:  # noqa: SLF001
            # all of it is here (a small body comes with the head): taken at once,
            # without read()'s loop of awaited chunks, and kept where read() keeps it
            raw = request._read_bytes = content.read_nowait()  # noqa: SLF001
            if len(raw) > limit:  # chunked, so no Content-Length said so before
                raise errors.too_large(limit)
        else:
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.too_large(limit) from None
    except BodyTimeout as e:
        raise request_timeout("body", e.seconds) from None
    except (HttpProcessingError, RequestPayloadError):  # bad chunked framing and the like
        raise errors.bad_request("malformed request body (bad framing)") from None
    if coding is None or not raw:
        return raw, len(raw)
    if len(raw) >= OFFLOAD_BYTES:  # zlib releases the GIL: big bodies off the event loop
        body = await asyncio.get_running_loop().run_in_executor(None, inflate, raw, coding,
                                                                 limit)
    else:
        body = inflate(raw, coding, limit)
    return body, len(raw)
