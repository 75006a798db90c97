"""Descriptor sources: each gives the same method table for the same protos."""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from gateway import reflection
from gateway.config import Config
from gateway.descriptors import (DescriptorError, build, bundled_path, load_bundled,
                                 load_file, load_proto_path, parse_set)
from gateway.routes import MethodTable
from support import ROOT, RecordingCuebot, free_port

PROTOS = Path(__file__).resolve().parent / "protos"


def _opencue_service_names() -> list[str]:
    import opencue_proto

    names = []
    for mod in pkgutil.iter_modules(opencue_proto.__path__):
        if mod.name.endswith("_pb2"):
            m = importlib.import_module(f"opencue_proto.{mod.name}")
            names += [s.full_name for s in m.DESCRIPTOR.services_by_name.values()]
    return sorted(names)


def _table(descs) -> dict[str, tuple[str, str]]:
    t = MethodTable.build(descs, lambda path: None)
    return {p: (r.request.full_name, r.response.full_name) for p, r in t.routes.items()}


def test_bundled_file_is_what_the_build_script_makes(tmp_path):
    out = tmp_path / "opencue.binpb"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_descriptors.py"),
                           "-o", str(out)], capture_output=True, text=True, check=True)
    assert "opencue-proto 1.37.0" in proc.stdout
    assert out.read_bytes() == (ROOT / "descriptors" / "opencue.binpb").read_bytes()


def test_bundled_set_is_opencue_proto_1_37(bundled):
    assert bundled.source == "bundled opencue.binpb"
    assert bundled_path().read_bytes() == bundled.serialized()
    assert sorted(s.full_name for s in bundled.services) == _opencue_service_names()


def test_file_source_equals_bundled(bundled):
    d = load_file(bundled_path())
    assert d.version == bundled.version and _table(d) == _table(bundled)


def test_version_ignores_file_order(bundled):
    shuffled = build(list(reversed(bundled.files)), "reversed")
    assert shuffled.version == bundled.version


def test_missing_well_known_imports_are_supplied(demo_set_without_wkt):
    d = parse_set(demo_set_without_wkt, "no-wkt")
    assert "google/protobuf/timestamp.proto" in [f.name for f in d.files]
    assert d.pool.FindMessageTypeByName("demo.Everything")


@pytest.fixture(scope="module")
def demo_set_without_wkt() -> bytes:
    d = load_proto_path(PROTOS)
    files = [f for f in d.files if not f.name.startswith("google/")]
    return descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()


def test_proto_path_equals_protoc_descriptor_set(tmp_path):
    from grpc_tools import protoc  # noqa: F401 - the test extra installs it

    out = tmp_path / "demo.binpb"
    include = Path(importlib.import_module("grpc_tools").__file__).parent / "_proto"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}",
                    "--include_imports", f"--descriptor_set_out={out}", "demo.proto",
                    "legacy.proto"], check=True, cwd=PROTOS)
    a, b = load_proto_path(PROTOS), load_file(out)
    assert a.version == b.version and _table(a) == _table(b)
    assert "/demo.Demo/Echo" in _table(a) and "/demo.Demo/Watch" not in _table(a)


# -- reflection ------------------------------------------------------------
@pytest.fixture
async def reflecting_cuebot():
    # importing opencue_proto registers its files in the default pool, which
    # grpcio-reflection serves from
    backend = await RecordingCuebot().start(reflection_services=_opencue_service_names())
    yield backend
    await backend.stop()


async def test_reflection_equals_bundled(reflecting_cuebot, bundled):
    channel = grpc.aio.insecure_channel(reflecting_cuebot.endpoint)
    try:
        d = await reflection.fetch(channel, reflecting_cuebot.endpoint, 10)
    finally:
        await channel.close()
    assert d.source == f"reflection from {reflecting_cuebot.endpoint}"
    assert d.version == bundled.version and _table(d) == _table(bundled)


async def test_reflection_falls_back_to_v1alpha(bundled):
    server = grpc.aio.server()
    reflection.add_reflection_service(server, _opencue_service_names(), versions=("v1alpha",))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        d = await reflection.fetch(channel, f"127.0.0.1:{port}", 10)
    finally:
        await channel.close()
        await server.stop(None)
    assert d.version == bundled.version


async def test_reflection_falls_back_when_v1_fails_internally(bundled):
    """grpcio may answer a write to an unimplemented stream with INTERNAL (grpc/grpc#36066)."""
    async def broken(requests, context):
        await context.abort(grpc.StatusCode.INTERNAL, "Internal error from Core")

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "grpc.reflection.v1.ServerReflection",
        {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(broken)}),))
    reflection.add_reflection_service(server, _opencue_service_names(), versions=("v1alpha",))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        d = await reflection.fetch(channel, f"127.0.0.1:{port}", 10)
    finally:
        await channel.close()
        await server.stop(None)
    assert d.version == bundled.version


async def test_reflection_not_enabled(cuebot):
    channel = grpc.aio.insecure_channel(cuebot.endpoint)
    try:
        with pytest.raises(DescriptorError, match="reflection is not enabled"):
            await reflection.fetch(channel, cuebot.endpoint, 5)
    finally:
        await channel.close()


async def test_reflection_backend_down():
    target = f"127.0.0.1:{free_port()}"
    channel = grpc.aio.insecure_channel(target)
    try:
        with pytest.raises(DescriptorError, match="UNAVAILABLE"):
            await reflection.fetch(channel, target, 5)
    finally:
        await channel.close()


async def test_reflection_mode_gateway_serves_and_calls(make_gateway, reflecting_cuebot):
    gw = await make_gateway(cuebot_endpoint=reflecting_cuebot.endpoint, reflection=True)
    resp = await gw.post("/job.JobInterface/GetJobs", data=b'{"r":{"shows":["testing"]}}')
    assert resp.status == 200
    assert reflecting_cuebot.paths() == ["/job.JobInterface/GetJobs"]


async def test_load_dispatches_on_the_configured_source(tmp_path, bundled):
    from gateway.backend import Backend
    from gateway.reload import load_descriptors

    backend = Backend(Config().with_(cuebot_endpoint="127.0.0.1:1"))
    try:
        assert (await load_descriptors(Config(), backend)).version == bundled.version
        f = tmp_path / "set.binpb"
        f.write_bytes(bundled.serialized())
        assert (await load_descriptors(Config().with_(descriptor_set=f), backend)).source == \
            f"descriptor set {f}"
        assert (await load_descriptors(Config().with_(proto_path=PROTOS), backend)
                ).source.startswith("proto path")
    finally:
        await backend.close()


# -- failures ----------------------------------------------------------------
def _set(*files: descriptor_pb2.FileDescriptorProto) -> bytes:
    return descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()


@pytest.mark.parametrize("content, words", [
    (b"", "file is empty"),
    (b"\xff\xfe\xfd garbage", "not a FileDescriptorSet"),
    (b"PK\x03\x04" + bytes(range(200)), "not a FileDescriptorSet"),
    (_set(descriptor_pb2.FileDescriptorProto(name="x.proto", package="x")), "defines no services"),
    (_set(descriptor_pb2.FileDescriptorProto(name="a.proto", dependency=["b.proto"])),
     "a.proto imports b.proto, which is missing"),
])
def test_bad_descriptor_sets(tmp_path, content, words):
    p = tmp_path / "set.binpb"
    p.write_bytes(content)
    with pytest.raises(DescriptorError) as info:
        load_file(p)
    assert str(info.value).startswith(f"descriptor set {p}: ") and words in str(info.value)


def test_invalid_file_in_set(tmp_path):
    f = descriptor_pb2.FileDescriptorProto(name="bad.proto", package="bad")
    m = f.message_type.add(name="M")
    m.field.add(name="x", number=1, type=11, type_name=".bad.Missing", label=1)
    f.service.add(name="S").method.add(name="Do", input_type=".bad.M", output_type=".bad.M")
    p = tmp_path / "bad.binpb"
    p.write_bytes(_set(f))
    with pytest.raises(DescriptorError, match="bad.proto is not a valid proto file"):
        load_file(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DescriptorError, match="no such file"):
        load_file(tmp_path / "nope.binpb")
    with pytest.raises(DescriptorError, match="is a directory"):
        load_file(tmp_path)


def test_proto_path_failures(tmp_path):
    with pytest.raises(DescriptorError, match="no such directory"):
        load_proto_path(tmp_path / "nope")
    with pytest.raises(DescriptorError, match="contains no .proto files"):
        load_proto_path(tmp_path)
    (tmp_path / "broken.proto").write_text('syntax = "proto3";\nmessage M { int32 x = ; }\n')
    with pytest.raises(DescriptorError) as info:
        load_proto_path(tmp_path)
    assert "protoc" in str(info.value) and "broken.proto" in str(info.value)


# protoc's stderr for a folder with an unused import and a file that is not a proto
PROTOC_STDERR = """\
a.proto:3:1: warning: Import b.proto is unused.
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
W0000 00:00:1796489320.816946   18558 parser.cc:659] No edition or syntax specified for the \
proto file: c.proto. Please use 'edition = "YYYY";'  to specify a valid edition version.
c.proto:1:1: Expected top-level statement (e.g. "message").
monitoring.proto:12:1: warning: Import report.proto is unused.
E0000 00:00:1796489320.816950   18558 importer.cc:10] d.proto: File not found.
"""


def test_protoc_errors_leave_its_warnings_out():
    from gateway.descriptors import protoc_errors

    assert protoc_errors(PROTOC_STDERR, 1) == (
        'c.proto:1:1: Expected top-level statement (e.g. "message").; d.proto: File not found.')
    assert "exit code 1" in protoc_errors("a.proto:3:1: warning: Import b.proto is unused.\n", 1)
    many = "".join(f"x.proto:{i}:1: Expected type name.\n" for i in range(1, 9))
    assert protoc_errors(many, 1).endswith("x.proto:5:1: Expected type name. (and 3 more)")


def test_proto_path_reports_the_error_not_the_warnings(tmp_path):
    """OpenCue's own protos warn (an unused import); a broken file beside them must show."""
    (tmp_path / "a.proto").write_text('syntax = "proto3";\npackage a;\nimport "b.proto";\n'
                                      "message M { string x = 1; }\n"
                                      "service S { rpc Do(M) returns (M); }\n")
    (tmp_path / "b.proto").write_text('syntax = "proto3";\npackage b;\nmessage N {}\n')
    assert load_proto_path(tmp_path).pool.FindServiceByName("a.S")  # warnings alone: fine
    (tmp_path / "broken.proto").write_text("garbage\n")
    with pytest.raises(DescriptorError) as info:
        load_proto_path(tmp_path)
    message = str(info.value)
    assert message == (f"proto path {tmp_path.resolve()}: protoc: broken.proto:1:1: "
                       'Expected top-level statement (e.g. "message").'), message


def test_proto_path_keeps_comments_but_its_version_does_not_count_them(tmp_path):
    (tmp_path / "c.proto").write_text('syntax = "proto3";\npackage c;\nmessage M {}\n'
                                      "// Says it.\nservice S { rpc Do(M) returns (M); }\n")
    commented = load_proto_path(tmp_path)
    assert commented.files[-1].source_code_info.location
    (tmp_path / "c.proto").write_text('syntax = "proto3";\npackage c;\nmessage M {}\n'
                                      "service S { rpc Do(M) returns (M); }\n")
    assert load_proto_path(tmp_path).version == commented.version


def test_pools_are_independent(bundled):
    """A reload builds a fresh pool: the default pool and other loads are untouched."""
    again = load_bundled()
    assert again.pool is not bundled.pool and again.pool is not descriptor_pool.Default()
