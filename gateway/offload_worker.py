"""The conversion process: large messages transcoded away from the event loop.

Started by ``offload.Offloader`` as ``python -m gateway.offload_worker``; it
reads framed tasks on stdin and answers each on stdout, in order. It imports
only protobuf, orjson and the transcoder (no aiohttp, grpc or JWT), so it is
small, and it exits when stdin closes: when the gateway stops, dies, or lets
an idle worker go to give its memory back.

Frames (little-endian):
  task   op:u8 id:u32 version_len:u16 name_len:u16 payload_len:u32, then
         version, name, payload. op 1 loads a FileDescriptorSet (payload) as
         ``version``; op 2 encodes wire bytes of message ``name`` to JSON
         (long lists a slice at a time, see ``slices.py``); op 3 decodes a
         JSON body to wire bytes.
  answer id:u32 status:u8 payload_len:u32, then payload: the result for
         status 0; for an error (1 decode, 2 encode, 3 other), its message.
"""
from __future__ import annotations

import os
import signal
import struct
import sys
from typing import BinaryIO

TASK = struct.Struct("<BIHHI")
ANSWER = struct.Struct("<IBI")
LOAD, ENCODE, DECODE = 1, 2, 3
OK, DECODE_ERROR, ENCODE_ERROR, FAILED = 0, 1, 2, 3
KEEP_VERSIONS = 2  # the version serving, and the one a reload just replaced
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # Linux fcntl; fewer wake-ups per large message


def widen_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, OSError):
        pass  # not Linux, or over the system's pipe-max-size: the default works


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    """``n`` bytes, or None at end of input (a buffered read blocks until it has them)."""
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


class _Versions:
    """Codecs per descriptor version, built on first use of each message type."""

    def __init__(self) -> None:
        self._sets: dict[str, tuple[object, object, dict[str, object]]] = {}
        self._sliced: dict[tuple[str, str], object] = {}

    def load(self, version: str, payload: bytes) -> None:
        from google.protobuf import descriptor_pb2

        from .descriptors import build
        from .transcode import Transcoder

        fds = descriptor_pb2.FileDescriptorSet.FromString(payload)
        descs = build(fds.file, "offload")
        self._sets[version] = (descs.pool, Transcoder(), {})
        while len(self._sets) > KEEP_VERSIONS:
            del self._sets[next(iter(self._sets))]
        self._sliced = {k: v for k, v in self._sliced.items() if k[0] in self._sets}

    def codec(self, version: str, name: str):  # -> MessageCodec
        entry = self._sets.get(version)
        if entry is None:
            raise LookupError(f"descriptor version {version} is not loaded")
        pool, transcoder, codecs = entry
        codec = codecs.get(name)
        if codec is None:
            codec = codecs[name] = transcoder.codec(pool.FindMessageTypeByName(name))
        return codec

    def sliced(self, version: str, name: str):  # -> slices.SlicedEncoder
        """The encoder writing ``name``'s long lists a slice at a time (see slices.py)."""
        enc = self._sliced.get((version, name))
        if enc is None:
            from .slices import SlicedEncoder

            codec = self.codec(version, name)
            enc = self._sliced[version, name] = SlicedEncoder(codec, self._sets[version][1])
        return enc


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    from .transcode import DecodeError, EncodeError

    versions = _Versions()
    while True:
        head = _read_exactly(inp, TASK.size)
        if head is None:
            return
        op, task_id, vlen, nlen, plen = TASK.unpack(head)
        body = _read_exactly(inp, vlen + nlen + plen)
        if body is None:
            return
        version = body[:vlen].decode()
        name = body[vlen:vlen + nlen].decode()
        payload = body[vlen + nlen:]
        del body
        try:
            if op == LOAD:
                versions.load(version, payload)
                status, result = OK, [b""]
            elif op == ENCODE:
                status, result = OK, versions.sliced(version, name).encode(payload)
            elif op == DECODE:
                status, result = OK, [versions.codec(version, name).from_json(payload)]
            else:
                status, result = FAILED, [f"unknown task {op}".encode()]
        except DecodeError as e:
            status, result = DECODE_ERROR, [str(e).encode()]
        except EncodeError as e:
            status, result = ENCODE_ERROR, [str(e).encode()]
        except Exception as e:  # noqa: BLE001 - reported to the gateway, which decides
            status, result = FAILED, [f"{type(e).__name__}: {e}".encode()]
        del payload
        # the answer's pieces go out one by one: joined, they would be a second copy
        _write_all(out, ANSWER.pack(task_id, status, sum(map(len, result))))
        for piece in result:
            _write_all(out, piece)
        out.flush()
        del result


def _write_all(out: BinaryIO, data: bytes) -> None:
    """``data`` written whole (an unbuffered file may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[out.write(view):]


def main() -> None:
    # Ctrl-C reaches the whole process group; the gateway decides when this
    # process ends (by closing stdin), so it does not die with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp = os.fdopen(0, "rb", buffering=PIPE_BYTES)
    out = os.fdopen(1, "wb", buffering=0)
    sys.stdout = sys.stderr  # nothing stray may reach the answer channel
    widen_pipe(0)
    widen_pipe(1)
    try:
        serve(inp, out)
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
