"""Fetching descriptors from a running server with gRPC server reflection.

Both protocol versions are spoken: ``grpc.reflection.v1`` first, then
``grpc.reflection.v1alpha`` (what grpcio-reflection serves). Their messages
are identical on the wire, so one pair of message classes serves both paths.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from .descriptors import DescriptorError, Descriptors, build

log = logging.getLogger("gateway.reflection")

_PATHS = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)


class _Session:
    """One reflection stream: ask, read the answer, in order."""

    def __init__(self, channel: grpc.aio.Channel, path: str, timeout: float) -> None:
        self._call = channel.stream_stream(
            path,
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )(timeout=timeout)

    async def ask(self, **kw: object) -> rpb.ServerReflectionResponse:
        await self._call.write(rpb.ServerReflectionRequest(**kw))
        resp = await self._call.read()
        if resp is grpc.aio.EOF:
            raise DescriptorError("reflection stream ended early")
        if resp.HasField("error_response"):
            err = resp.error_response
            raise _NotFound(err.error_message or f"reflection error {err.error_code}")
        return resp

    def close(self) -> None:
        """End the stream without waiting: the answers are in, or not needed."""
        self._call.cancel()


class _NotFound(Exception):
    pass


async def _collect(session: _Session) -> list[descriptor_pb2.FileDescriptorProto]:
    listing = await session.ask(list_services="")
    names = [s.name for s in listing.list_services_response.service]
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def absorb(resp: rpb.ServerReflectionResponse) -> None:
        for raw in resp.file_descriptor_response.file_descriptor_proto:
            f = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files.setdefault(f.name, f)

    for name in names:
        if name.startswith("grpc.reflection."):
            continue  # the protocol itself: streaming, never exposed
        try:
            absorb(await session.ask(file_containing_symbol=name))
        except _NotFound as e:
            log.warning("reflection: server lists %s but cannot describe it (%s); skipped",
                        name, e)
    # servers usually send dependencies along; fetch any they left out
    pending = [d for f in files.values() for d in f.dependency]
    asked: set[str] = set()
    while pending:
        dep = pending.pop()
        if dep in files or dep in asked:
            continue
        asked.add(dep)
        try:
            absorb(await session.ask(file_by_filename=dep))
        except _NotFound:
            continue  # build() reports it, or supplies a well-known type
        if dep in files:
            pending.extend(files[dep].dependency)
    return list(files.values())


async def fetch(channel: grpc.aio.Channel, target: str, timeout: float) -> Descriptors:
    """Every file describing every service ``target`` lists."""
    source = f"reflection from {target}"
    last: Exception | None = None
    for path in _PATHS:
        session = _Session(channel, path, timeout)
        try:
            files = await _collect(session)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                last = last or e
                continue  # try the older protocol version
            if e.code() == grpc.StatusCode.INTERNAL and path != _PATHS[-1]:
                # grpcio may fail a write to a stream the server does not implement with
                # INTERNAL ("Internal error from Core") instead of UNIMPLEMENTED
                # (grpc/grpc#36066): the older version may still answer
                last = e
                continue
            raise DescriptorError(f"{source}: {e.code().name}: {e.details()}") from None
        except DescriptorError as e:
            raise DescriptorError(f"{source}: {e}") from None
        except asyncio.TimeoutError:
            raise DescriptorError(f"{source}: no answer within {timeout:g}s") from None
        finally:
            session.close()
        return build(files, source)
    detail = (f"{last.code().name}: {last.details()}" if isinstance(last, grpc.aio.AioRpcError)
              else "")
    raise DescriptorError(f"{source}: server reflection is not enabled on the server ({detail})")


def add_reflection_service(server: grpc.aio.Server, service_names: list[str],
                           versions: tuple[str, ...] = ("v1", "v1alpha"),
                           pool: Any = None) -> None:
    """Serve reflection for ``service_names`` (from ``pool``, default the default pool).

    grpcio-reflection implements v1alpha only; v1 has the same messages, so
    its servicer is mounted under the v1 name too.
    """
    from grpc_reflection.v1alpha import reflection as impl

    names = list(service_names) + [f"grpc.reflection.{v}.ServerReflection" for v in versions]
    servicer = impl.aio.ReflectionServicer(names, pool=pool)
    for v in versions:
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=rpb.ServerReflectionRequest.FromString,
            response_serializer=rpb.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            f"grpc.reflection.{v}.ServerReflection", {"ServerReflectionInfo": handler}),))
