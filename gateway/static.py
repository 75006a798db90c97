"""A fixed folder of files (the Swagger UI's assets) served like every other reply.

aiohttp's static handler asked the file system about whatever name a client
sent: a 5,000-character name raised ``OSError`` (a 500 and a traceback in
the log, with no token needed), and a missing file was a 404 with an empty
body that the access log and the metrics recorded as 200, because the file
is looked up only when aiohttp sends the reply, after the middleware.

Here the folder is listed once, when the app is built; a request names one
of those files or gets the 404 envelope, and the file's bytes are the
reply's body, so its status, size, gzip and access line are those of any
other in-memory reply. The names cannot leave the folder: nothing outside
the listing is ever opened.
"""
from __future__ import annotations

import asyncio
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

from . import errors

_TYPES = {".js": "text/javascript", ".map": "application/json", ".css": "text/css",
          ".html": "text/html", ".png": "image/png"}
MAX_AGE = 3600  # the assets change only with the package that ships them


@dataclass(frozen=True)
class _File:
    path: Path
    content_type: str
    etag: str


class StaticFolder:
    """The regular files under ``root``, by their path relative to it."""

    def __init__(self, root: Path) -> None:
        self.files: dict[str, _File] = {}
        for p in sorted(root.rglob("*")):
            if not p.is_file():
                continue
            st = p.stat()
            name = p.relative_to(root).as_posix()
            ctype = _TYPES.get(p.suffix) or mimetypes.guess_type(p.name)[0] \
                or "application/octet-stream"
            tag = hashlib.sha256(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
            self.files[name] = _File(p, ctype, f'"{tag[:16]}"')

    async def handle(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise errors.not_found("no such file in /docs/static")
        headers = {hdrs.ETAG: found.etag, hdrs.CACHE_CONTROL: f"public, max-age={MAX_AGE}"}
        if found.etag in (t.strip() for t in request.headers.get(hdrs.IF_NONE_MATCH, "")
                          .split(",")):
            return web.Response(status=304, headers=headers)
        try:
            body = await asyncio.to_thread(found.path.read_bytes)
        except OSError:  # removed since start-up (a package upgrade in place)
            raise errors.not_found("no such file in /docs/static") from None
        return web.Response(body=body, content_type=found.content_type, headers=headers)


def add_routes(app: web.Application, prefix: str, root: Path) -> None:
    """``GET prefix/<name>`` for each file under ``root`` (HEAD too)."""
    app.router.add_get(prefix + "/{name:.+}", StaticFolder(root).handle)
