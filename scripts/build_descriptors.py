#!/usr/bin/env python3
"""Write descriptors/opencue.binpb from the installed opencue-proto package.

The bundled descriptor set is what the gateway serves when no other source is
configured. It must be exactly what this script produces from the pinned
``opencue-proto`` (tests check it), so upgrading is:

    pip install opencue-proto==<new version>
    python scripts/build_descriptors.py
    # update the pin in setup.cfg, run the tests, commit

The files are taken from the package's generated modules (each carries its
FileDescriptorProto as protoc wrote it) and written dependencies-first, in the
order ``protoc --include_imports`` uses for the files sorted by name.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import pkgutil
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.descriptors import build  # noqa: E402


def opencue_files() -> list[descriptor_pb2.FileDescriptorProto]:
    try:
        package = importlib.import_module("opencue_proto")
    except ImportError:
        sys.exit("build_descriptors: opencue-proto is not installed "
                 "(pip install 'opencue-gateway[test]')")
    files = []
    for mod in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not mod.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"opencue_proto.{mod.name}")
        files.append(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "descriptors" / "opencue.binpb")
    args = ap.parse_args(argv)
    descs = build(opencue_files(), "opencue-proto")
    data = descs.serialized()
    args.output.write_bytes(data)
    version = importlib.metadata.version("opencue-proto")
    print(f"wrote {args.output} ({len(data)} bytes, {len(descs.files)} files, "
          f"{len(descs.services)} services) from opencue-proto {version}; "
          f"descriptor version {descs.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
