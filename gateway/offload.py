"""Large conversions in worker processes, so that no request holds the event loop.

Encoding a 10,000-frame reply is tens of milliseconds of pure Python; done
on the event loop, every other request waits that long. Messages of
``OFFLOAD_MIN_BYTES`` or more (wire bytes of a reply, JSON bytes of a
request) are converted instead by ``OFFLOAD_WORKERS`` child processes
(``offload_worker.py``), on the cores the event loop does not use; smaller
ones stay inline, where a round trip to another process would cost more
than the conversion. The output is the same function's, byte for byte.

Workers start on the first large message (a gateway that never sees one
never pays for them), load each descriptor version they are asked about
once, and exit after ``OFFLOAD_IDLE`` seconds without work, which gives the
memory a large conversion used back to the system. A worker that dies is
replaced and its task tried once more on the new one; a second death is the
request's 502, never a hang.

A reply's JSON need not cross into this process whole: ``to_json_stream``
hands over an ``Answer``, the worker's pipe positioned at that reply, to be
read a piece at a time while it is sent on (``streaming.py``). Answers come
in task order, so while one is being read the worker's reader waits for it
to be released, and reads and discards whatever its holder left unread
before it looks at the next answer: a client that leaves mid-reply cannot
put the next task's answer out of step.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import memory
from . import offload_worker as proto
from .transcode import DecodeError, EncodeError

if TYPE_CHECKING:
    from .routes import MethodTable
    from .transcode import MessageCodec

log = logging.getLogger("gateway.offload")

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# The worker imports this very package: its folder joins the path only if it
# is not there already (a source checkout), and then first, so that another
# installed copy cannot answer instead; a site-packages folder keeps its place.
_BOOT = ("import sys\n"
         "root = sys.argv[1]\n"
         "if root not in sys.path: sys.path.insert(0, root)\n"
         "from gateway.offload_worker import main\n"
         "main()\n")


class WorkerDied(Exception):
    """The conversion process ended with tasks outstanding."""


class Answer:
    """A successful answer still in the worker's pipe: ``size`` bytes, read a piece at a time.

    Its holder reads it to the end or gives up on it, and releases it either
    way (``release``): until then the worker's reader, which owns the pipe,
    stays out of it. The first piece can be read ahead (``prefetch``), so
    that a worker that dies before any of the reply is sent still counts as
    a death before the first byte (the task is tried again).
    """

    def __init__(self, stream: asyncio.StreamReader, size: int) -> None:
        self.size = size
        self._stream = stream
        self._left = size
        self._head = b""
        self._released = asyncio.Event()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    async def prefetch(self) -> None:
        """Read the first piece now (WorkerDied if the worker is gone)."""
        if not self._head and self._left:
            self._head = await self._piece()

    async def read(self) -> bytes:
        """The next piece (at most ``PIPE_BYTES``); ``b""`` once all ``size`` bytes are read."""
        if self._head:
            piece, self._head = self._head, b""
            return piece
        return await self._piece() if self._left else b""

    async def _piece(self) -> bytes:
        if self.released:
            raise RuntimeError("answer read after it was released")
        try:
            piece = await self._stream.read(min(self._left, proto.PIPE_BYTES))
        except ConnectionError:
            piece = b""
        if not piece:  # end of the pipe before the end of the answer
            raise WorkerDied()
        self._left -= len(piece)
        return piece

    def release(self) -> None:
        """Done with it, read whole or not: the worker's reader takes the pipe back."""
        self._head = b""
        self._released.set()

    async def _discard_rest(self) -> None:
        """Read what the holder left unread, in pieces, and drop it (the reader's part)."""
        await self._released.wait()
        while self._left:
            piece = await self._stream.read(min(self._left, proto.PIPE_BYTES))
            if not piece:
                raise asyncio.IncompleteReadError(b"", self._left)
            self._left -= len(piece)


class _Worker:
    """One child process and the tasks it owes answers to, in order."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        # task id -> (its future, whether a successful answer is handed over as an Answer)
        self.pending: dict[int, tuple[asyncio.Future[tuple[int, bytes | Answer]], bool]] = {}
        self.streaming: Answer | None = None  # the answer being read by its holder
        self.loaded: set[str] = set()
        self.last_used = time.monotonic()
        self.alive = True
        self._ids = (n & 0xFFFFFFFF for n in itertools.count(1))
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls) -> "_Worker":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _BOOT, _PACKAGE_ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=proto.PIPE_BYTES)  # read answers in pipe-sized pieces
        log.debug("conversion worker %d started", proc.pid)
        return cls(proc)

    @property
    def load(self) -> int:
        """Tasks this worker still owes, counting an answer that is still being read."""
        return len(self.pending) + (self.streaming is not None)

    async def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        try:
            while True:
                head = await out.readexactly(proto.ANSWER.size)
                task_id, status, size = proto.ANSWER.unpack(head)
                fut, streams = self.pending.pop(task_id, (None, False))
                if streams and status == proto.OK:
                    await self._hand_over(fut, Answer(out, size))
                    continue
                payload = await out.readexactly(size) if size else b""
                if fut is None:  # a descriptor load's answer
                    if status != proto.OK:
                        log.error("conversion worker %d could not load descriptors: %s",
                                  self.proc.pid, payload.decode(errors="replace"))
                elif not fut.done():
                    fut.set_result((status, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._died()

    async def _hand_over(self, fut: "asyncio.Future[tuple[int, bytes | Answer]] | None",
                         answer: Answer) -> None:
        """Let ``fut``'s task read ``answer`` from the pipe; resume once it lets go."""
        self.streaming = answer
        try:
            if fut is None or fut.done():  # nobody waits for it any more
                answer.release()
            else:
                fut.set_result((proto.OK, answer))
            await answer._discard_rest()  # noqa: SLF001 - the reader's half of Answer
        finally:
            self.streaming = None
            self.last_used = time.monotonic()

    def _died(self) -> None:
        self.alive = False
        for fut, _ in self.pending.values():
            if not fut.done():
                fut.set_exception(WorkerDied())
        self.pending.clear()

    def send(self, op: int, task_id: int, version: str, name: str, payload: bytes) -> None:
        v, n = version.encode(), name.encode()
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(proto.TASK.pack(op, task_id, len(v), len(n), len(payload)) + v + n)
        stdin.write(payload)

    async def call(self, op: int, version: str, name: str, payload: bytes,
                   descriptor_set: bytes, stream: bool = False) -> tuple[int, bytes | Answer]:
        """The task's (status, result); with ``stream``, a successful result is an Answer
        that the caller must release."""
        if not self.alive:
            raise WorkerDied()
        if version not in self.loaded:
            # answered before the task, in order; nobody waits for this answer
            # (the reader drops it), and a failed load fails the task after it
            self.send(proto.LOAD, next(self._ids), version, "", descriptor_set)
            self.loaded.add(version)
        task_id = next(self._ids)
        fut: asyncio.Future[tuple[int, bytes | Answer]] = \
            asyncio.get_running_loop().create_future()
        self.pending[task_id] = (fut, stream)
        self.last_used = time.monotonic()
        try:
            try:
                self.send(op, task_id, version, name, payload)
                stdin = self.proc.stdin
                assert stdin is not None
                await stdin.drain()
            except (ConnectionError, RuntimeError):
                self._died()
            return await fut
        except BaseException:
            # the caller left (cancelled): the reader is to drop the answer, which
            # it does for a future that is done; one handed over already is released
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled() and fut.exception() is None:
                result = fut.result()[1]
                if isinstance(result, Answer):
                    result.release()
            raise
        finally:
            self.last_used = time.monotonic()

    async def close(self, grace: float = 2.0) -> None:
        self.alive = False
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        if not await self._ended(grace):
            self.proc.kill()
            await self._ended(grace)
        if not self.reader.done():
            # the process is gone but its answer's holder has not let go yet: stopping
            # must not wait for it (it sees the end of the pipe when it reads on)
            self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)

    async def _ended(self, seconds: float) -> bool:
        """Whether the process ended within ``seconds``.

        asyncio's ``wait`` also waits for the end of stdout to be read, which
        an answer nobody reads any more would put off for ever.
        """
        try:
            await asyncio.wait_for(self.proc.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True


class Offloader:
    """Converts messages, inline or in a worker process by size."""

    def __init__(self, workers: int, min_bytes: int, idle: float) -> None:
        self.workers = workers
        self.min_bytes = min_bytes
        self.idle = idle
        self._pool: list[_Worker] = []
        self._starting: set[asyncio.Future[_Worker]] = set()
        self._warned_at = -60.0
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False

    def offloads(self, size: int) -> bool:
        """Whether a message of ``size`` bytes goes to a worker."""
        return self.workers > 0 and size >= self.min_bytes and not self._closed

    # -- the two directions ------------------------------------------------
    async def to_json(self, table: "MethodTable", codec: "MessageCodec", wire: bytes) -> bytes:
        """``codec.to_json(wire)``, off the event loop when ``wire`` is large."""
        out = await self._convert(proto.ENCODE, table, codec, wire, codec.to_json)
        assert isinstance(out, bytes)
        return out

    async def to_json_stream(self, table: "MethodTable", codec: "MessageCodec",
                             wire: bytes) -> "bytes | Answer":
        """``codec.to_json(wire)`` as an Answer to read from a worker's pipe, first piece
        read ahead; as bytes when it was converted here (small, or no worker could start).

        The caller must ``release`` the Answer, whatever happens to its reply.
        """
        return await self._convert(proto.ENCODE, table, codec, wire, codec.to_json, stream=True)

    async def from_json(self, table: "MethodTable", codec: "MessageCodec", body: bytes) -> bytes:
        """``codec.from_json(body)``, off the event loop when ``body`` is large."""
        out = await self._convert(proto.DECODE, table, codec, body, codec.from_json)
        assert isinstance(out, bytes)
        return out

    async def _convert(self, op: int, table: "MethodTable", codec: "MessageCodec",
                       data: bytes, inline: "Callable[[bytes], bytes]",
                       stream: bool = False) -> "bytes | Answer":
        """``inline(data)``'s result, from a worker when ``data`` is large; its errors alike."""
        if not self.offloads(len(data)):
            return inline(data)
        answer = await self._run(op, table, codec.full_name, data, stream)
        if answer is None:  # no worker could start
            return inline(data)
        status, out = answer
        if status == proto.OK:
            return out
        assert isinstance(out, bytes)  # errors come whole
        if status == proto.DECODE_ERROR:
            raise DecodeError(out.decode(errors="replace"))
        raise EncodeError(out.decode(errors="replace"))

    async def _run(self, op: int, table: "MethodTable", name: str, payload: bytes,
                   stream: bool = False) -> "tuple[int, bytes | Answer] | None":
        """The worker's answer, or None when no worker can be started (convert inline).

        With ``stream``, a successful answer is an Answer whose first piece has
        been read: a worker that dies before that is a death before the first
        byte of the reply, and the task is tried once more.
        """
        for attempt in (1, 2):
            try:
                worker = await self._worker()
            except OSError as e:
                self._cannot_start(e)
                return None
            try:
                status, out = await worker.call(op, table.version, name, payload,
                                                table.descriptor_set, stream)
                if isinstance(out, Answer):
                    try:
                        await out.prefetch()
                    except BaseException:
                        out.release()
                        raise
                return status, out
            except WorkerDied:
                log.error("conversion worker %d died (exit %s) converting %s%s",
                          worker.proc.pid, worker.proc.returncode, name,
                          "; trying once more" if attempt == 1 else "")
                self._drop(worker)
        raise EncodeError(f"converting {name} failed: the conversion process died twice")

    def _cannot_start(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.error("cannot start a conversion process (%s); converting large messages "
                      "in the event loop meanwhile", exc)

    # -- the pool ------------------------------------------------------------
    async def _worker(self) -> _Worker:
        """An idle worker, a new one while fewer than ``workers`` run, else the least busy.

        Of the idle ones, the one used last: a trickle of large messages keeps
        one worker busy and lets the others reach OFFLOAD_IDLE and exit.
        """
        self._pool = [w for w in self._pool if w.alive]
        idle = [w for w in self._pool if not w.load]
        if idle:
            return max(idle, key=lambda w: w.last_used)
        if len(self._pool) + len(self._starting) < self.workers:
            task = asyncio.ensure_future(_Worker.start())
            self._starting.add(task)
            task.add_done_callback(self._started)
        elif self._pool:
            return min(self._pool, key=lambda w: w.load)  # queue behind it
        else:
            task = next(iter(self._starting))
        worker = await asyncio.shield(task)  # a caller that leaves does not stop a start
        if not worker.alive:
            raise OSError("the new conversion process exited at once")
        return worker

    def _started(self, task: "asyncio.Future[_Worker]") -> None:
        self._starting.discard(task)
        if task.cancelled() or task.exception() is not None:
            return  # the callers awaiting it see the exception
        if self._closed:
            return  # close() stops it
        self._pool.append(task.result())
        self._schedule_reaper()

    def _drop(self, worker: _Worker) -> None:
        if worker in self._pool:
            self._pool.remove(worker)
        asyncio.ensure_future(worker.close(0.5))

    def _schedule_reaper(self) -> None:
        if self._reaper is None and self.idle > 0:
            self._reaper = asyncio.get_running_loop().call_later(self.idle / 4, self._reap)

    def _reap(self) -> None:
        """Let workers idle for ``idle`` seconds go: their memory returns to the system."""
        self._reaper = None
        now = time.monotonic()
        for w in list(self._pool):
            if not w.load and now - w.last_used >= self.idle:
                log.debug("conversion worker %d idle for %.0f s: stopping it", w.proc.pid,
                          now - w.last_used)
                self._drop(w)
        if self._pool:
            self._schedule_reaper()
        else:
            memory.trim()

    @property
    def running(self) -> int:
        return sum(1 for w in self._pool if w.alive)

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        starting = await asyncio.gather(*self._starting, return_exceptions=True)
        pool = self._pool + [w for w in starting if isinstance(w, _Worker)]
        self._pool = []
        await asyncio.gather(*(w.close() for w in pool), return_exceptions=True)
