"""Where the gateway's knowledge of Cuebot's API comes from.

Four sources give the same result, a :class:`Descriptors`: a
FileDescriptorSet file, gRPC server reflection (see ``reflection.py``), a
folder of ``.proto`` files compiled at start-up, or the set bundled with the
package. Nothing here is generated Python code, so a new Cuebot release needs
new descriptors, not a new gateway.

The version is a hash of the files in canonical form, so the same protos give
the same version whichever source they came from.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError as WireDecodeError

BUNDLED_NAME = "opencue.binpb"


class DescriptorError(Exception):
    """Descriptors could not be loaded; the message says what and where."""


@dataclass(frozen=True)
class Descriptors:
    """A consistent, loaded set of proto files and the pool built from them."""

    files: tuple[descriptor_pb2.FileDescriptorProto, ...]
    pool: descriptor_pool.DescriptorPool = field(repr=False)
    source: str
    version: str

    @property
    def services(self) -> list[ServiceDescriptor]:
        out = []
        for f in self.files:
            fd = self.pool.FindFileByName(f.name)
            out.extend(fd.services_by_name.values())
        return out

    @property
    def packages(self) -> frozenset[str]:
        return frozenset(f.package for f in self.files)

    def serialized(self) -> bytes:
        """The set as a FileDescriptorSet, dependencies first."""
        return descriptor_pb2.FileDescriptorSet(file=self.files).SerializeToString()


def _canonical_version(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> str:
    """A hash of the API the files define; comments and source positions do not count."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda x: x.name):
        if f.HasField("source_code_info"):
            f = descriptor_pb2.FileDescriptorProto.FromString(f.SerializeToString())
            f.ClearField("source_code_info")
        data = f.SerializeToString(deterministic=True)
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:16]


def _well_known(name: str) -> descriptor_pb2.FileDescriptorProto | None:
    """A google/protobuf/*.proto file from the runtime, for sets that omit them."""
    if not name.startswith("google/protobuf/"):
        return None
    try:
        fd = descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        module = "google.protobuf." + Path(name).stem + "_pb2"
        try:
            __import__(module)
            fd = descriptor_pool.Default().FindFileByName(name)
        except (ImportError, KeyError):
            return None
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    return proto


def build(files: Iterable[descriptor_pb2.FileDescriptorProto], source: str) -> Descriptors:
    """Order ``files`` dependencies-first, add them to a fresh pool, check them.

    A fresh pool per load keeps two generations of descriptors apart, which
    live reload relies on.
    """
    by_name: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for f in files:
        by_name.setdefault(f.name, f)
    if not by_name:
        raise DescriptorError(f"{source}: contains no proto files")

    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, wanted_by: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise DescriptorError(f"{source}: import cycle through {name}")
        f = by_name.get(name)
        if f is None:
            f = _well_known(name)
            if f is None:
                raise DescriptorError(f"{source}: {wanted_by} imports {name}, which is missing")
            by_name[name] = f
        state[name] = 1
        for dep in f.dependency:
            visit(dep, name)
        state[name] = 2
        ordered.append(f)

    for name in sorted(by_name):
        visit(name, name)

    pool = descriptor_pool.DescriptorPool()
    for f in ordered:
        try:
            pool.Add(f)
        except (TypeError, ValueError, KeyError) as e:
            raise DescriptorError(f"{source}: {f.name} is not a valid proto file: {e}") from None
    desc = Descriptors(tuple(ordered), pool, source, _canonical_version(ordered))
    if not desc.services:
        raise DescriptorError(f"{source}: defines no services")
    return desc


def parse_set(data: bytes, source: str) -> Descriptors:
    """A serialized FileDescriptorSet, as ``protoc --descriptor_set_out`` writes it."""
    if not data:
        raise DescriptorError(f"{source}: file is empty")
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(data)
    except WireDecodeError:
        raise DescriptorError(f"{source}: not a FileDescriptorSet (protobuf parse failed)") from None
    if not fds.file or any(not f.name for f in fds.file):
        raise DescriptorError(f"{source}: not a FileDescriptorSet (no named proto files in it)")
    return build(fds.file, source)


def load_file(path: Path) -> Descriptors:
    source = f"descriptor set {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DescriptorError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise DescriptorError(f"{source}: is a directory, expected a file") from None
    except OSError as e:
        raise DescriptorError(f"{source}: cannot read: {e.strerror}") from None
    return parse_set(data, source)


def bundled_path() -> Path:
    """The descriptor set shipped with the package (or beside it, in a checkout)."""
    try:
        p = resources.files("gateway.bundled").joinpath(BUNDLED_NAME)
        if p.is_file():
            return Path(str(p))
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "descriptors" / BUNDLED_NAME


def load_bundled() -> Descriptors:
    path = bundled_path()
    d = load_file(path)
    return Descriptors(d.files, d.pool, f"bundled {BUNDLED_NAME}", d.version)


def load_proto_path(root: Path) -> Descriptors:
    """Compile every ``.proto`` under ``root`` with grpcio-tools' protoc.

    protoc runs in a child process so that its diagnostics can be captured
    and its errors reported in one line, and a crash in it cannot take the
    gateway down.
    """
    source = f"proto path {root}"
    root = root.resolve()
    if not root.is_dir():
        raise DescriptorError(f"{source}: no such directory")
    protos = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))
    if not protos:
        raise DescriptorError(f"{source}: contains no .proto files")
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        raise DescriptorError(
            f"{source}: compiling .proto files needs grpcio-tools "
            "(pip install 'opencue-gateway[proto]')"
        ) from None
    include = resources.files("grpc_tools").joinpath("_proto")
    with tempfile.TemporaryDirectory(prefix="opencue-gateway-") as tmp:
        out = Path(tmp) / "set.binpb"
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc",
            f"--proto_path={root}", f"--proto_path={include}",
            # source info carries the .proto comments, which /docs shows
            "--include_imports", "--include_source_info", f"--descriptor_set_out={out}",
            *protos,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, check=False)
        if proc.returncode != 0 or not out.exists():
            # protoc names files by their full path; the source names the folder already
            errors = proc.stderr.replace(f"{root}{os.sep}", "")
            raise DescriptorError(f"{source}: protoc: {protoc_errors(errors, proc.returncode)}")
        return parse_set(out.read_bytes(), source)


# protoc's stderr mixes its errors with warnings: "f.proto:3:1: warning: Import x.proto is
# unused.", and abseil's log lines ("WARNING: All log messages before absl::InitializeLog()
# ...", "W0000 00:00:17.8 123 parser.cc:659] No edition or syntax specified ...").
_ABSL_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ?(.*)\Z")
_PROTOC_WARNING = re.compile(r"\S+: ?(\d+:\d+: )?warning: ")
MAX_PROTOC_ERRORS = 5


def protoc_errors(stderr: str, returncode: int) -> str:
    """protoc's errors in one line, its warnings left out.

    The first line of stderr is usually a warning (abseil's preamble, an unused
    import in OpenCue's own protos), which hid the error that mattered.
    """
    found: list[str] = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line.startswith("WARNING: All log messages before absl::"):
            continue
        if _PROTOC_WARNING.match(line):
            continue
        absl = _ABSL_LINE.match(line)
        if absl:
            if absl.group(1) in "IW":
                continue
            line = absl.group(2)
        if line not in found:
            found.append(line)
    if not found:
        return f"failed (exit code {returncode}) without naming an error"
    more = len(found) - MAX_PROTOC_ERRORS
    text = "; ".join(found[:MAX_PROTOC_ERRORS])
    return text + (f" (and {more} more)" if more > 0 else "")
