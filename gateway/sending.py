"""A small reply with its body in memory, written to the socket in one step.

aiohttp sends a ``web.Response`` through ``prepare`` and ``write_eof``: some
twenty Python calls (header preparation, the prepare signal, the payload
writer's buffering of the head, then the write and a drain). For the
replies most requests get (a few hundred bytes of JSON, HTTP/1.1,
keep-alive) the outcome is always the same bytes: the head aiohttp would
make, then the body, in one write. ``send`` makes exactly that, with
aiohttp's own header serializer and date, and leaves the response and its
writer as ``write_eof`` leaves them, so aiohttp's own calls afterwards do
nothing. Anything else (another HTTP version, a closing connection, HEAD,
bodiless statuses, cookies, aiohttp's compression, prepare signals, large
bodies that should wait for the socket to drain) goes aiohttp's way.
``tests/test_sending.py`` compares the bytes of both ways.

It reads attributes of aiohttp's response and writer that are not public:
``setup.cfg`` pins the minor release it is tested with.
"""
from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_writer import _serialize_headers

# Above this a reply is written aiohttp's way, which waits for the socket
# to drain: a reply this small never fills the transport's buffer.
MAX_BYTES = 16 * 1024


def send(request: web.Request, response: web.Response) -> bool:
    """Write ``response`` (not yet prepared) in one write; False to leave it to aiohttp.

    Raises ConnectionError as aiohttp's own path does when the client has gone.
    """
    body = response._body
    message = request._message  # the parsed head: version, method, Connection
    if (type(body) is not bytes or len(body) > MAX_BYTES or response._compression
            or response._chunked or response._keep_alive is not None or response._cookies
            or message.version != HttpVersion11 or message.should_close
            or message.method == hdrs.METH_HEAD or request._match_info is None
            or request._match_info.current_app.on_response_prepare):
        return False
    status = response._status
    headers = response._headers
    if status < 200 or status == 204 or status == 304 or hdrs.CONTENT_LENGTH in headers \
            or (body and hdrs.CONTENT_TYPE not in headers):
        return False
    writer = request._payload_writer
    if writer.on_body_write is not None or writer._on_chunk_sent is not None \
            or writer._on_headers_sent is not None:
        return False
    headers[hdrs.CONTENT_LENGTH] = str(len(body))
    if hdrs.DATE not in headers:
        headers[hdrs.DATE] = rfc822_formatted_time()
    if hdrs.SERVER not in headers:
        headers[hdrs.SERVER] = SERVER_SOFTWARE
    head = _serialize_headers(f"HTTP/1.1 {status} {response._reason}", headers)
    writer._writelines((head, body) if body else (head,))
    # as write_eof leaves them: aiohttp's prepare() and write_eof() now return at once
    writer._eof = True
    response._keep_alive = True
    response._eof_sent = True
    response._req = None
    response._body_length = writer.output_size
    return True
