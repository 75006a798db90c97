"""How a sandbox interface is written, and how it fails the way Cuebot fails.

A servant is a plain class naming its service (``SERVICE = "show.ShowInterface"``)
with one method per RPC it implements, ``def GetShows(self, request, context)``
returning the reply's fields as a dict (``{"shows": ShowSeq(...)}``), ``None``
for an empty reply, or the reply message itself (``async def`` is allowed too). ``serve()``
mounts it on the official servicer base class from ``opencue-proto``: every
RPC of the service gets an async handler, and those the servant does not
define answer UNIMPLEMENTED with Cuebot's wording.

Errors are raised as :class:`CueError`; the helpers below build Cuebot's
exact status codes and messages (see the module docstring of each servant
for which RPC uses which).
"""
from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any, Callable, Optional

import grpc
from google.protobuf import descriptor_pool, message_factory

from .stats import QUEUED

log = logging.getLogger("gateway.sandbox")

EMPTY_RESULT = "org.springframework.dao.EmptyResultDataAccessException"
WRONG_SIZE = "org.springframework.dao.IncorrectResultSizeDataAccessException"
ILLEGAL_ARGUMENT = "java.lang.IllegalArgumentException"
INCORRECT_SIZE_0 = "Incorrect result size: expected 1, actual 0"


Reply = Optional[dict[str, Any]]  # a servant method's result: the reply's fields, None = empty


class CueError(Exception):
    """An RPC failure, with the code and text Cuebot would send."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(message: str = INCORRECT_SIZE_0) -> CueError:
    """NOT_FOUND, as Cuebot's lookup RPCs (GetX/FindX) answer a missing object."""
    return CueError(grpc.StatusCode.NOT_FOUND, message)


def job_not_found() -> CueError:
    """Every JobInterface RPC on a missing job."""
    return CueError(grpc.StatusCode.NOT_FOUND, "Job not found")


def internal(exception: str, message: str) -> CueError:
    """INTERNAL as Cuebot's global interceptor words it: ``<class>: <msg>\\n<msg>``."""
    return CueError(grpc.StatusCode.INTERNAL, f"{exception}: {message}\n{message}")


def missing() -> CueError:
    """A missing object in a non-lookup (mostly mutating) RPC: INTERNAL, not NOT_FOUND."""
    return internal(EMPTY_RESULT, INCORRECT_SIZE_0)


def too_many(actual: int) -> CueError:
    return internal(WRONG_SIZE, f"Incorrect result size: expected 1, actual {actual}")


def illegal(message: str) -> CueError:
    return internal(ILLEGAL_ARGUMENT, message)


def plain_internal(message: str) -> CueError:
    """INTERNAL with a message an RPC builds itself (CreateShow, LaunchSpec…)."""
    return CueError(grpc.StatusCode.INTERNAL, message)


class Servant:
    """Base of every sandbox interface; ``farm`` is the shared model."""

    SERVICE = ""

    def __init__(self, farm: Any) -> None:
        self.farm = farm
        self.store = farm.store


def _servicer_parts(full_name: str) -> tuple[type, Callable[[Any, Any], None], Any]:
    """opencue-proto's servicer base, its add_*_to_server and the service descriptor."""
    # each OpenCue package lives in <package>.proto; importing it registers it
    module = importlib.import_module(f"opencue_proto.{full_name.split('.')[0]}_pb2_grpc")
    service = descriptor_pool.Default().FindServiceByName(full_name)
    base = getattr(module, f"{service.name}Servicer")
    add = getattr(module, f"add_{service.name}Servicer_to_server")
    return base, add, service


def _handler(servant: Servant, name: str, path: str, reply: type) -> Callable[..., Any]:
    impl = getattr(servant, name, None)
    if impl is None:
        async def unimplemented(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Method {path} is unimplemented")
        return unimplemented
    is_async = inspect.iscoroutinefunction(impl)
    queued = path in QUEUED and hasattr(servant.farm, "counters")

    async def handle(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            out = (await impl(request, context)) if is_async else impl(request, context)
            if queued:
                servant.farm.counters.manage_executed += 1
            if out is None:
                return reply()
            return reply(**out) if isinstance(out, dict) else out
        except CueError as e:
            await context.abort(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - a sandbox bug still answers like Cuebot
            log.exception("sandbox %s failed", path)
            text = str(e) or type(e).__name__
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"java.lang.RuntimeException: {text}\n{text}")
    return handle


def mount(server: grpc.aio.Server, servant: Servant) -> str:
    """Register ``servant`` on ``server``; returns the service's full name."""
    base, add, service = _servicer_parts(servant.SERVICE)
    methods = {m.name: _handler(servant, m.name, f"{service.full_name}/{m.name}",
                                message_factory.GetMessageClass(m.output_type))
               for m in service.methods}
    adapter = type(f"{service.name}Sandbox", (base,), methods)
    add(adapter(), server)
    return service.full_name


def implemented(servant: Servant | type[Servant]) -> list[str]:
    """The RPC names ``servant`` (an instance or its class) answers; the rest are UNIMPLEMENTED."""
    _, _, service = _servicer_parts(servant.SERVICE)
    return [m.name for m in service.methods if getattr(servant, m.name, None) is not None]
