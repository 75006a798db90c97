"""The method table: URL path -> everything needed to serve that RPC.

Built once per descriptor load. A request does one dict lookup and finds its
codecs and its backend call ready; nothing asks a descriptor at request time.
A reload builds a new table and swaps it in whole, so a request never sees
half of two tables.

Spellings: the real path is ``/<proto package>.<Service>/<Method>``. OpenCue's
documentation also writes services under packages that do not exist
(``/frame.FrameInterface/GetFrame`` for ``job.FrameInterface``); when the
package is unknown and the bare service name is unique, the real service
answers.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Callable, Iterable

from .backend import UnaryCall
from .descriptors import Descriptors
from .transcode import MessageCodec, Transcoder

# runs of slashes in a path, read as one (as the Go gateway's mux does)
SLASHES = re.compile(r"//+")

log = logging.getLogger("gateway.routes")

CallFactory = Callable[[str], UnaryCall]


@dataclass(frozen=True, slots=True)
class Route:
    path: str          # canonical "/package.Service/Method"
    service: str       # "package.Service"
    method: str
    request: MessageCodec
    response: MessageCodec
    call: UnaryCall


def exposed(service: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Whether ``service`` passes the SERVICES / EXCLUDE_SERVICES patterns."""
    inc = tuple(include)
    if inc and not any(fnmatchcase(service, p) for p in inc):
        return False
    return not any(fnmatchcase(service, p) for p in exclude)


def conventional_package(service: str) -> str:
    """The package OpenCue's docs guess from a service name: FrameInterface -> frame."""
    base = service[: -len("Interface")] if service.endswith("Interface") else service
    return base[:1].lower() + base[1:]


class MethodTable:
    """Every exposed unary RPC, by path."""

    def __init__(self, descriptors: Descriptors, transcoder: Transcoder,
                 routes: dict[str, Route], bare: dict[str, str],
                 hidden: dict[str, str], streaming: frozenset[str]) -> None:
        self.descriptors = descriptors
        self.transcoder = transcoder
        self.routes = routes
        self._bare = bare            # "FrameInterface" -> "job.FrameInterface", unique names only
        self._hidden = hidden        # services present but not exposed -> why
        self._streaming = streaming  # paths of methods that are not unary
        self._packages = descriptors.packages
        self.version = descriptors.version
        self._descriptor_set: bytes | None = None

    @classmethod
    def build(cls, descriptors: Descriptors, call_factory: CallFactory,
              include: Iterable[str] = (), exclude: Iterable[str] = ()) -> "MethodTable":
        transcoder = Transcoder()
        routes: dict[str, Route] = {}
        hidden: dict[str, str] = {}
        streaming: set[str] = set()
        counts: dict[str, int] = {}
        for svc in descriptors.services:
            name = svc.full_name
            counts[svc.name] = counts.get(svc.name, 0) + 1
            if not exposed(name, include, exclude):
                hidden[name] = "not exposed by this gateway (SERVICES / EXCLUDE_SERVICES)"
                continue
            for m in svc.methods:
                path = f"/{name}/{m.name}"
                if m.client_streaming or m.server_streaming:
                    streaming.add(path)
                    continue
                routes[path] = Route(
                    path=path, service=name, method=m.name,
                    request=transcoder.codec(m.input_type),
                    response=transcoder.codec(m.output_type),
                    call=call_factory(path),
                )
        exposed_services = {r.service for r in routes.values()}
        bare = {
            s.rpartition(".")[2]: s for s in exposed_services
            if counts.get(s.rpartition(".")[2]) == 1
        }
        return cls(descriptors, transcoder, routes, bare, hidden, frozenset(streaming))

    @property
    def descriptor_set(self) -> bytes:
        """The descriptors as a FileDescriptorSet, for conversion processes (made once)."""
        if self._descriptor_set is None:
            self._descriptor_set = self.descriptors.serialized()
        return self._descriptor_set

    # -- per request ----------------------------------------------------
    def lookup(self, path: str) -> Route | None:
        route = self.routes.get(path)
        if route is None:
            real = self._alias(path)
            if real is not None:
                route = self.routes.get(real)
        return route

    def _alias(self, path: str) -> str | None:
        """The real path for ``/<unknown package>.<Service>/<Method>``, if unambiguous."""
        service, slash, method = path[1:].partition("/")
        package, dot, bare = service.rpartition(".")
        if not (slash and dot and method) or package in self._packages or "/" in method:
            return None
        real = self._bare.get(bare)
        return f"/{real}/{method}" if real else None

    def is_streaming(self, path: str) -> bool:
        real = path if path in self._streaming else self._alias(path)
        return real in self._streaming

    def explain_miss(self, path: str) -> str:
        """Why nothing serves ``path``, in words a client can act on."""
        service, slash, method = path[1:].partition("/")
        if not slash or not method or "/" in method or "." not in service:
            return f"no RPC at {path}: paths look like /<package.Service>/<Method>"
        if service in self._hidden:
            return f"service {service} is {self._hidden[service]}"
        real = self._alias(f"/{service}/x")
        if real is not None:
            service = real[1:].rpartition("/")[0]
        if any(r.service == service for r in self.routes.values()):
            return f"service {service} has no method {method}"
        return f"unknown service {service}"

    # -- start-up report ------------------------------------------------
    def aliases(self) -> list[tuple[str, str]]:
        """The documented-style spellings that resolve, for the start-up log."""
        out = []
        for bare, real in sorted(self._bare.items()):
            conv = conventional_package(bare)
            if conv != real.rpartition(".")[0] and conv not in self._packages:
                out.append((f"{conv}.{bare}", real))
        return out

    @property
    def services(self) -> list[str]:
        return sorted({r.service for r in self.routes.values()})

    @property
    def hidden_services(self) -> list[str]:
        return sorted(self._hidden)

