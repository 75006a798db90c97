"""The sandbox gRPC server: every servant mounted, reflection on, one event loop."""
from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ..reflection import add_reflection_service
from .dispatcher import DispatchSettings, Dispatcher
from .farm import Farm
from .framelogs import FrameLogs
from .seed import seed
from .servant import Servant, implemented, mount
from .store import Store

log = logging.getLogger("gateway.sandbox")


def servant_classes() -> list[type[Servant]]:
    """Every interface the sandbox implements (the rest answer UNIMPLEMENTED)."""
    from . import facility, services, shows

    classes: list[type[Servant]] = [
        shows.ShowServant, facility.FacilityServant, facility.AllocationServant,
        facility.SubscriptionServant, services.ServiceServant, services.ServiceOverrideServant,
    ]
    for module_name in ("jobs", "frames", "layers", "groups", "hosts", "filters", "limits",
                        "partitions", "misc"):
        try:
            module = __import__(f"{__package__}.{module_name}", fromlist=["SERVANTS"])
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{module_name}":
                raise
            continue
        classes += getattr(module, "SERVANTS", [])
    return classes


# Services Cuebot serves (all but monitoring and the RQD-side ones); the
# sandbox mounts each, implemented or not, so a missing RPC is UNIMPLEMENTED
# ("is unimplemented") rather than "method not found".
CUEBOT_SERVICES = (
    "show.ShowInterface", "job.JobInterface", "job.FrameInterface", "job.LayerInterface",
    "job.GroupInterface", "host.HostInterface", "host.OwnerInterface", "host.ProcInterface",
    "host.DeedInterface", "comment.CommentInterface", "facility.AllocationInterface",
    "facility.FacilityInterface", "filter.FilterInterface", "filter.ActionInterface",
    "filter.MatcherInterface", "depend.DependInterface", "subscription.SubscriptionInterface",
    "limit.LimitInterface", "service.ServiceInterface", "service.ServiceOverrideInterface",
    "task.TaskInterface", "department.DepartmentInterface", "renderPartition.RenderPartitionInterface",
    "report.RqdReportInterface", "cue.CueInterface",
)


def implemented_rpcs() -> dict[str, list[str]]:
    """Service -> the RPCs the sandbox implements, for ``--list-rpcs`` and the README."""
    by_service = {cls.SERVICE: cls for cls in servant_classes()}
    return {name: implemented(by_service[name]) for name in CUEBOT_SERVICES
            if name in by_service and implemented(by_service[name])}


def rpc_list_markdown() -> str:
    return "".join(f"- `{service}`: {', '.join(methods)}\n"
                   for service, methods in implemented_rpcs().items())


@dataclass
class Sandbox:
    """A running sandbox: its store, model, gRPC server and port."""

    store: Store
    farm: Farm
    server: grpc.aio.Server
    port: int
    servants: dict[str, Servant] = field(default_factory=dict)
    dispatcher: Dispatcher | None = None
    log_root: Path | None = None       # where renders write their logs
    own_logs: bool = False             # a temporary log root, removed at stop
    _task: "asyncio.Task[None] | None" = None

    def start_dispatching(self) -> None:
        """Run the dispatcher in the background (tests step it by hand instead)."""
        if self._task is None and self.dispatcher is not None:
            self._task = asyncio.get_running_loop().create_task(self.dispatcher.run())

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.server.stop(grace)
        self.store.close()
        if self.own_logs and self.log_root is not None:
            shutil.rmtree(self.log_root, ignore_errors=True)


def default_log_root(db: str | Path) -> tuple[Path, bool]:
    """Beside a database file (``farm.db`` -> ``farm.db.logs``), else a temporary folder.

    The flag says whether the folder is the sandbox's own, to remove when it stops.
    """
    if str(db) != ":memory:":
        return Path(f"{db}.logs"), False
    return Path(tempfile.mkdtemp(prefix="opencue-sandbox-logs-")), True


async def start(db: str | Path = ":memory:", *, host: str = "127.0.0.1", port: int = 0,
                demo: bool = True, dispatch: bool = False,
                settings: DispatchSettings = DispatchSettings(),
                log_root: str | Path | None = None) -> Sandbox:
    """Open (and seed, if new) the database and serve it on ``host:port``.

    The dispatcher exists either way (``sandbox.dispatcher.step()``); with
    ``dispatch`` it also runs on its own. Renders write their logs under
    ``log_root`` (default: see :func:`default_log_root`).
    """
    store = Store(db)
    own_logs = False
    if log_root is None:
        log_root, own_logs = default_log_root(db)
    farm = Farm(store, FrameLogs(log_root))
    seed(store, demo=demo, farm=farm)
    try:
        dispatcher = Dispatcher(farm, settings)
    except ValueError:
        store.close()
        if own_logs:
            shutil.rmtree(log_root, ignore_errors=True)
        raise
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 100 * 1024 * 1024)])
    servants: dict[str, Servant] = {}
    by_service = {cls.SERVICE: cls for cls in servant_classes()}
    for name in CUEBOT_SERVICES:
        cls = by_service.get(name)
        servant = cls(farm) if cls else _Empty(farm, name)
        servants[mount(server, servant)] = servant
    add_reflection_service(server, list(servants))
    server.add_generic_rpc_handlers((_MethodNotFound(),))  # last: only what nothing serves
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        store.close()
        if own_logs:
            shutil.rmtree(log_root, ignore_errors=True)
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    total = sum(len(implemented(s)) for s in servants.values())
    log.info("sandbox Cuebot on %s:%d (%s, %d RPCs implemented)", host, bound, store.path, total)
    sandbox = Sandbox(store, farm, server, bound, servants, dispatcher,
                      log_root=Path(log_root), own_logs=own_logs)
    if dispatch:
        sandbox.start_dispatching()
    return sandbox


class _MethodNotFound(grpc.GenericRpcHandler):
    """A method no service serves, answered in grpc-java's words as Cuebot answers it.

    grpcio would say ``Method not found!``; Cuebot (grpc-java) names the
    method: ``Method not found: host.OwnerInterface/SetMaxCores``.
    """

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        message = f"Method not found: {details.method.lstrip('/')}"

        async def unknown(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            return b""  # not reached: abort raises

        return grpc.unary_unary_rpc_method_handler(unknown)


class _Empty(Servant):
    """A served interface with nothing implemented yet."""

    def __init__(self, farm: Farm, service: str) -> None:
        super().__init__(farm)
        self.SERVICE = service
