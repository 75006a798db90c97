"""gzip for large replies, when the client says it accepts it.

A 10,000-frame ``GetFrames`` reply is 6.4 MB of JSON; gzip level 1 makes it
1.07 MB (17 %) in less time than encoding the JSON took, level 6 (zlib's
default) 0.87 MB (14 %) in over twice as long, level 9 0.84 MB in about six
times (``scripts/bench_gzip.py``, BENCHMARKS.md). The link from the gateway to its clients is rarely slow
enough for the last 3 % to pay for that CPU, so level 1. Large bodies are
compressed in a worker thread (zlib releases the GIL), so one big reply does
not stall every other request on the event loop.

A reply forwarded as the conversion process writes it (``streaming.py``)
is compressed a piece at a time with one ``compressor()``: deflate does not
depend on how its input is cut, so the bytes are ``gzip_bytes``' of the whole.

Small replies are sent as they are (``GZIP_MIN_BYTES``, 1024 by default):
below a packet or two gzip saves nothing worth its CPU, and error envelopes
are well below it.
"""
from __future__ import annotations

import asyncio
import zlib
from functools import lru_cache

from aiohttp import hdrs, web

LEVEL = 1
OFFLOAD_BYTES = 256 * 1024  # about 2 ms of compression: above it, a worker thread
_GZIP_WBITS = 31            # zlib's gzip container (16 + 15-bit window)
_COMPRESSIBLE_TYPES = frozenset({"application/json", "application/openmetrics-text"})


def compressor() -> "zlib._Compress":
    """A gzip member to feed in pieces: the settings of ``gzip_bytes``, hence its bytes."""
    return zlib.compressobj(LEVEL, zlib.DEFLATED, _GZIP_WBITS)


def gzip_bytes(data: bytes) -> bytes:
    """``data`` as one gzip member (no file name, mtime 0: the same input, the same bytes)."""
    c = compressor()
    return c.compress(data) + c.flush()


def _qvalue(params: str) -> float:
    """The ``q`` of one Accept-Encoding item; a malformed one counts as 0 (not accepted)."""
    for param in params.split(";"):
        name, eq, value = param.partition("=")
        if eq and name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


@lru_cache(maxsize=512)
def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (RFC 9110 §12.5.3).

    ``gzip;q=0`` refuses it even when ``*`` is allowed; ``*`` allows it when
    gzip is not named. Clients send few distinct values, hence the cache.
    """
    gzip_q: float | None = None
    any_q: float | None = None
    for item in header.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            q = _qvalue(params)
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif coding == "*":
            any_q = _qvalue(params)
    if gzip_q is not None:
        return gzip_q > 0
    return any_q is not None and any_q > 0


def _compressible(content_type: str) -> bool:
    return content_type.startswith("text/") or content_type in _COMPRESSIBLE_TYPES


def _add_vary(response: web.StreamResponse) -> None:
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = "Accept-Encoding"
    elif vary.strip() != "*" and "accept-encoding" not in vary.lower():
        response.headers[hdrs.VARY] = f"{vary}, Accept-Encoding"


def wants_gzip(request: web.BaseRequest, response: web.StreamResponse, size: int,
               min_bytes: int) -> bool:
    """Whether ``response``, ``size`` bytes before compression, goes out gzipped.

    The one policy of both paths (a body in memory, a streamed reply): big
    enough, a type worth compressing, not encoded already, and accepted by
    the client. A reply of that size gets ``Vary: Accept-Encoding`` either
    way, since its encoding depends on that header.
    """
    if min_bytes <= 0 or size < min_bytes:
        return False
    if hdrs.CONTENT_ENCODING in response.headers or not _compressible(response.content_type):
        return False
    _add_vary(response)
    return accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))


async def maybe_gzip(request: web.BaseRequest, response: web.StreamResponse,
                     min_bytes: int) -> None:
    """Compress ``response`` in place if it is big enough and the client accepts gzip."""
    if not isinstance(response, web.Response) or response.prepared:
        return
    body = response.body
    if not isinstance(body, (bytes, bytearray)) or len(body) < min_bytes:
        return  # most replies: said before the call below
    if not wants_gzip(request, response, len(body), min_bytes):
        return
    if len(body) >= OFFLOAD_BYTES:
        out = await asyncio.get_running_loop().run_in_executor(None, gzip_bytes, bytes(body))
    else:
        out = gzip_bytes(bytes(body))
    response.body = out
    response.headers[hdrs.CONTENT_ENCODING] = "gzip"
