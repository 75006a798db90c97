"""Large replies forwarded from the conversion process's pipe, never held whole here.

A 10,000-frame reply is 6.4 MB of JSON. Read whole from the worker, it was
in this process twice while it was read, then again in the socket's buffer
while a client took it. Here the worker's answer (``offload.Answer``) goes
to the client a pipe-sized piece at a time: each ``write`` waits for the
socket to take the piece, so a slow client slows the worker's pipe instead
of filling this process's memory.

What is known before the first byte is answered as any reply: the answer's
header gives its size, so a reply over ``MAX_RESPONSE_BYTES`` is the usual
502 envelope (its bytes are read from the pipe and dropped, so that the
worker's next answer stays in step), and a worker that dies before its
first piece is read was retried by the offloader. The response then goes
out with every header the ``context`` middleware gives other replies
(request id, descriptor version, rate-limit and CORS headers), identity with
a ``Content-Length``, or gzipped (the same policy and bytes as
``compression.py``) in chunks.

After the first byte the status line is gone, so a failure cannot become an
envelope: the connection is cut (the client sees a short body or a missing
last chunk, never a complete-looking reply) and the request is recorded with
what really happened (``Sent``): 502 when the worker died, 499 when the
client left, 408 when it took (next to) nothing for ``SEND_TIMEOUT``. Either way the
Answer is released and the worker's reader drops the rest of it.
"""
from __future__ import annotations

import asyncio
import logging
import zlib
from dataclasses import dataclass

from aiohttp import hdrs, web

from . import compression, errors
from .offload import Answer, WorkerDied
from .state import REPLY_HEADERS, REQUEST_ID, STATE

log = logging.getLogger("gateway.streaming")


@dataclass
class Sent:
    """What a streamed reply really did, for the access line and the metrics."""

    status: int = 200
    code: int = errors.OK
    bytes_out: int = 0  # body bytes written to the socket (compressed, when gzipped)


# what one write hands the socket: aiohttp waits for the socket after each write
# of more than 64 KiB, so SEND_TIMEOUT bounds a wait for about this much progress
WRITE_BYTES = 64 * 1024

# set once a streamed reply's headers are sent (None until then): the middleware
# then records it from here and leaves the (prepared) response alone
SENT: "web.RequestKey[Sent | None]" = web.RequestKey("sent")


async def forward(request: web.Request, answer: Answer) -> web.StreamResponse:
    """Send ``answer`` as the JSON reply to ``request``; release it whatever happens."""
    try:
        cfg = request.app[STATE].cfg
        if answer.size > cfg.max_response_bytes:
            log.warning("reply to %s %s (request %s) is %d bytes, over MAX_RESPONSE_BYTES "
                        "(%d); answered 502", request.method, request.path,
                        request[REQUEST_ID], answer.size, cfg.max_response_bytes)
            raise errors.response_too_large(answer.size, cfg.max_response_bytes)
        resp = web.StreamResponse(headers={"X-Request-Id": request[REQUEST_ID]})
        resp.content_type = "application/json"
        resp.headers.update(request[REPLY_HEADERS])
        gz = None
        if compression.wants_gzip(request, resp, answer.size, cfg.gzip_min_bytes):
            resp.headers[hdrs.CONTENT_ENCODING] = "gzip"  # length unknown: chunked
            gz = compression.compressor()
        else:
            resp.content_length = answer.size
        sent = request[SENT] = Sent()
        try:
            await resp.prepare(request)
            await _pump(resp, answer, gz, sent, cfg.send_timeout)
        except WorkerDied:
            log.error("reply to %s %s (request %s) cut after %d bytes: the conversion "
                      "process died", request.method, request.path, request[REQUEST_ID],
                      sent.bytes_out)
            _cut(request, sent, 502, errors.INTERNAL)
        except ConnectionError:  # the client left (handlers not cancelled)
            _cut(request, sent, 499, errors.CANCELLED)
        except TimeoutError:
            request.app[STATE].metrics.connection_cut("send_timeout")
            log.info("reply to %s %s (request %s) cut after %d bytes: the client took next "
                     "to nothing of it for SEND_TIMEOUT (%g s)", request.method, request.path,
                     request[REQUEST_ID], sent.bytes_out, cfg.send_timeout)
            _cut(request, sent, 408, errors.DEADLINE_EXCEEDED)
        except asyncio.CancelledError:  # the client left, or shutdown cut the request
            _cut(request, sent, 499, errors.CANCELLED)
            raise
        except BaseException:  # a bug: logged by the middleware; no half reply stays open
            _cut(request, sent, 500, errors.INTERNAL)
            raise
        return resp
    finally:
        answer.release()


async def _pump(resp: web.StreamResponse, answer: Answer, gz: zlib._Compress | None,
                sent: Sent, timeout: float) -> None:
    """Copy ``answer`` to ``resp`` piece by piece, each write waiting for the socket."""
    loop = asyncio.get_running_loop()
    while piece := await answer.read():
        if gz is not None:
            # zlib lets go of the GIL: a large piece is compressed beside the loop
            piece = (await loop.run_in_executor(None, gz.compress, piece)
                     if len(piece) >= compression.OFFLOAD_BYTES else gz.compress(piece))
            if not piece:
                continue
        await _write(resp, piece, sent, timeout)
    if gz is not None:
        await _write(resp, gz.flush(), sent, timeout)
    async with asyncio.timeout(timeout):
        await resp.write_eof()


async def _write(resp: web.StreamResponse, data: bytes, sent: Sent, timeout: float) -> None:
    """``data`` to the client, WRITE_BYTES at a time, each within ``timeout``.

    Each write waits until the socket has taken most of what is queued, so
    the bound applies to a client that takes (next to) nothing for that
    long, not to one that is slow but reading: the worker waits for either.
    """
    view = memoryview(data)
    for at in range(0, len(view), WRITE_BYTES):
        part = view[at:at + WRITE_BYTES]
        async with asyncio.timeout(timeout):
            await resp.write(part)
        sent.bytes_out += len(part)


def _cut(request: web.Request, sent: Sent, status: int, code: int) -> None:
    """End the connection mid-reply, so that the client cannot take it for a whole one."""
    sent.status, sent.code = status, code
    transport = request.transport
    if transport is not None:
        transport.abort()
