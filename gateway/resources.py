"""The resource API of the OpenAPI seed: plain GETs (and one DELETE) for dashboards.

Six operations (``/api/show``, ``/api/show/{show_id}/job``, ``/api/job/{job_id}``
GET and DELETE, ``/api/job/{job_id}/layer``, ``/api/host``) reshape Cuebot's
messages into the seed's flat schemas. They are not a second client: each one
calls RPCs of the current method table through ``app.invoke``, so deadlines,
metadata, identity, limits and error mapping are the RPC routes' own.

Mapping choices (the seed is silent on units; its examples decide):
- job ``state``: FINISHED as Cuebot says; else PAUSED when paused; else
  RUNNING when frames run; else PENDING. ``doneFrames`` = succeeded,
  ``waitingFrames`` = pending (waiting + depend: every frame not yet run).
- show and layer cores are Cuebot's integer core units (100 = one core), as
  the seed's examples (``minCores: 100``); host cores are whole cores.
- host memory in MB (Cuebot reports KB): ``totalMemory``/``idleMemory`` are
  Cuebot's reservable ``memory``/``idle_memory``, the same pair as the cores
  (CueGUI's "Mem"/"Idle"), not the physical ``total_memory``. ``load`` is a
  percentage of the host's cores (Cuebot's load is the load average x 100).
  REBOOTING -> DOWN, REBOOT_WHEN_IDLE -> UP.
- ``{show_id}`` is a show id or a show name.
- lists filtered by ``state`` are the unfiltered list filtered: only RUNNING
  can use Cuebot's active-job query (``include_finished`` false), because a
  post-job waiting for its parent (Cuebot's POSTED) reads PENDING and is
  missing from that query.
- a trailing slash, and a doubled leading slash (a base URL ending in ``/``),
  reach the same operation.

Everything that depends on the descriptors (routes, message classes, enum
names) is bound once per method table, not per request.
"""
from __future__ import annotations

import asyncio
import os
import socket
import weakref
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from google.protobuf.message import DecodeError as WireDecodeError
from yarl import URL

from . import authz, errors
from .errors import GatewayError
from .routes import MethodTable, Route

JOB_STATES = ("PENDING", "RUNNING", "FINISHED", "PAUSED")
HOST_STATES = ("UP", "DOWN", "REPAIR")
# Cuebot's HardwareState -> the seed's three states, and back for the search criteria
_HOST_STATE = {"UP": "UP", "DOWN": "DOWN", "REPAIR": "REPAIR", "REBOOTING": "DOWN",
               "REBOOT_WHEN_IDLE": "UP"}
_LAYER_TYPE = {"RENDER": "RENDER", "UTIL": "UTIL", "PRE": "UTIL", "POST": "UTIL"}

# The RPCs behind the six operations.
RPCS = {
    "active_shows": "/show.ShowInterface/GetActiveShows",
    "shows": "/show.ShowInterface/GetShows",
    "find_show": "/show.ShowInterface/FindShow",
    "jobs": "/job.JobInterface/GetJobs",
    "job": "/job.JobInterface/GetJob",
    "kill": "/job.JobInterface/Kill",
    "layers": "/job.JobInterface/GetLayers",
    "hosts": "/host.HostInterface/GetHosts",
}

# What each operation may call (keys of RPCS): its OpenAPI entry needs them served, and
# with AUTHZ_POLICY the caller's roles must allow every one of them, checked before any
# is called (DELETE /api/job/{job_id} needs job.JobInterface/GetJob and .../Kill).
NEEDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("/api/show", "GET"): ("active_shows",),
    ("/api/show/{show_id}/job", "GET"): ("find_show", "shows", "jobs"),
    ("/api/job/{job_id}", "GET"): ("job",),
    ("/api/job/{job_id}", "DELETE"): ("job", "kill"),
    ("/api/job/{job_id}/layer", "GET"): ("job", "layers"),
    ("/api/host", "GET"): ("hosts",),
}

# app.invoke: (request, route, serialized request) -> serialized reply
Invoke = Callable[[web.Request, Route, bytes], Awaitable[bytes]]

# the path parameters of an operation reached through a non-canonical path
PARAMS = web.RequestKey("api_params", dict) if hasattr(web, "RequestKey") else "api_params"
# who sends a kill, as pycue fills these fields (Cuebot logs them); known at load
_KILL_HOST = socket.gethostname()
_KILL_PID = str(os.getpid())


@dataclass(frozen=True)
class Bound:
    """The routes and enum names of one method table."""

    routes: dict[str, Route]
    job_state: dict[int, str]
    layer_type: dict[int, str]
    hardware_state: dict[int, str]
    hardware_number: dict[str, int]
    lock_state: dict[int, str]


_bound: "weakref.WeakKeyDictionary[MethodTable, Bound]" = weakref.WeakKeyDictionary()


def _enum(route: Route, *path: str) -> dict[int, str]:
    desc = route.response.descriptor
    for name in path[:-1]:
        desc = desc.fields_by_name[name].message_type
    return {v.number: v.name for v in desc.fields_by_name[path[-1]].enum_type.values}


def bind(table: MethodTable) -> Bound:
    """Resolve the operations' RPCs in ``table`` once; a missing one fails its operations only."""
    bound = _bound.get(table)
    if bound is not None:
        return bound
    routes = {key: r for key, path in RPCS.items() if (r := table.routes.get(path)) is not None}

    def names(key: str, *path: str) -> dict[int, str]:
        try:
            return _enum(routes[key], *path) if key in routes else {}
        except (KeyError, AttributeError):
            return {}

    hw = names("hosts", "hosts", "hosts", "state")
    bound = Bound(
        routes=routes,
        job_state=names("job", "job", "state"),
        layer_type=names("layers", "layers", "layers", "type"),
        hardware_state=hw,
        hardware_number={v: k for k, v in hw.items()},
        lock_state=names("hosts", "hosts", "hosts", "lock_state"),
    )
    _bound[table] = bound
    return bound


# ---------------------------------------------------------------------------
# calling Cuebot
# ---------------------------------------------------------------------------
class Resources:
    """The six handlers; ``invoke`` is the gateway's one way to reach Cuebot."""

    def __init__(self, invoke: Invoke, table_of: Callable[[web.Request], MethodTable],
                 caller_of: Callable[[web.Request], str]) -> None:
        self._invoke = invoke
        self._table_of = table_of
        self._caller_of = caller_of

    async def _call(self, request: web.Request, bound: Bound, key: str, **fields: Any) -> Any:
        route = bound.routes.get(key)
        if route is None:
            raise GatewayError(501, errors.UNIMPLEMENTED,
                               f"{RPCS[key][1:]} is not exposed by this gateway, "
                               f"so {request.path} cannot be served")
        try:
            data = route.request.cls(**fields).SerializeToString()
        except (TypeError, ValueError) as e:  # descriptors that differ from OpenCue's
            raise _mismatch(RPCS[key], e) from None
        wire = await self._invoke(request, route, data)
        try:
            return route.response.cls.FromString(wire)
        except WireDecodeError as e:
            raise GatewayError(502, errors.INTERNAL,
                               f"cannot parse the reply of {RPCS[key][1:]}: {e}") from None

    # -- shows ------------------------------------------------------------
    async def list_shows(self, request: web.Request) -> web.Response:
        bound = bind(self._table_of(request))
        reply = await self._call(request, bound, "active_shows")
        return _json({"shows": [_show(s) for s in reply.shows.shows]})

    async def _find_show(self, request: web.Request, bound: Bound, key: str) -> str:
        """The name of the show ``key`` names by name or by id; 404 if none."""
        try:
            reply = await self._call(request, bound, "find_show", name=key)
            return reply.show.name
        except GatewayError as e:
            if e.code != errors.NOT_FOUND:
                raise
        reply = await self._call(request, bound, "shows")
        for show in reply.shows.shows:
            if show.id == key:
                return show.name
        raise errors.not_found(f"show {key} not found")

    # -- jobs -------------------------------------------------------------
    async def list_jobs(self, request: web.Request) -> web.Response:
        bound = bind(self._table_of(request))
        state = _choice(request, "state", JOB_STATES)
        show = await self._find_show(request, bound, _param(request, "show_id"))
        # Only a RUNNING job is sure to be among Cuebot's PENDING jobs; PENDING
        # and PAUSED include post-jobs still POSTED, so they need the full list.
        criteria = {"shows": [show], "include_finished": state != "RUNNING"}
        reply = await self._call(request, bound, "jobs", r=criteria)
        jobs = [_job(j, bound) for j in reply.jobs.jobs]
        if state is not None:
            jobs = [j for j in jobs if j["state"] == state]
        return _json({"jobs": jobs})

    async def _get_job(self, request: web.Request, bound: Bound) -> Any:
        return (await self._call(request, bound, "job", id=_param(request, "job_id"))).job

    async def get_job(self, request: web.Request) -> web.Response:
        bound = bind(self._table_of(request))
        return _json(_job(await self._get_job(request, bound), bound))

    async def kill_job(self, request: web.Request) -> web.Response:
        bound = bind(self._table_of(request))
        job = await self._get_job(request, bound)  # 404 for an unknown job, and its name
        if bound.job_state.get(job.state) == "FINISHED":
            # Cuebot ignores a kill of a finished job; say so instead of "killed"
            return _json({"success": True, "message": f"Job {job.name} was already finished"})
        caller = self._caller_of(request)
        await self._call(request, bound, "kill", job={"id": job.id}, username=caller,
                         pid=_KILL_PID, host_kill=_KILL_HOST,
                         reason=f"Killed by {caller} through opencue-gateway (DELETE /api/job)")
        return _json({"success": True, "message": f"Job {job.name} killed"})

    async def list_layers(self, request: web.Request) -> web.Response:
        bound = bind(self._table_of(request))
        # GetLayers of an unknown job is an empty list, so the job is looked up alongside
        _, reply = await _both(self._get_job(request, bound),
                               self._call(request, bound, "layers",
                                          job={"id": _param(request, "job_id")}))
        return _json({"layers": [_layer(layer, bound) for layer in reply.layers.layers]})

    # -- hosts ------------------------------------------------------------
    async def list_hosts(self, request: web.Request) -> web.Response:
        bound = bind(self._table_of(request))
        state = _choice(request, "state", HOST_STATES)
        criteria: dict[str, Any] = {}
        if state is not None:
            wanted = [bound.hardware_number[cue] for cue, ours in _HOST_STATE.items()
                      if ours == state and cue in bound.hardware_number]
            criteria["states"] = {"state": wanted}
        reply = await self._call(request, bound, "hosts", r=criteria)
        hosts = [_host(h, bound) for h in reply.hosts.hosts]
        if state is not None:
            hosts = [h for h in hosts if h["state"] == state]
        return _json({"hosts": hosts})


def _param(request: web.Request, name: str) -> str:
    """A path parameter, also when the operation was reached through ``miss``."""
    params = request.get(PARAMS)
    return params[name] if params is not None else request.match_info[name]


async def _both(a: Any, b: Any) -> tuple[Any, Any]:
    """Run two calls at once; the first failure wins, the other is cancelled."""
    ta, tb = asyncio.ensure_future(a), asyncio.ensure_future(b)
    try:
        return await ta, await tb
    finally:
        for t in (ta, tb):
            if not t.done():
                t.cancel()
        if tb.done() and not tb.cancelled():
            tb.exception()  # retrieved, so an unawaited failure is not logged


def _mismatch(path: str, e: Exception) -> GatewayError:
    return GatewayError(502, errors.INTERNAL,
                        f"the loaded descriptors do not match {path[1:]} as OpenCue defines "
                        f"it: {e}")


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    values = request.query.getall(name, [])
    if not values:
        return None
    if len(values) > 1 or values[0] not in allowed:
        shown = ", ".join(repr(v) for v in values)
        raise errors.bad_request(
            f"invalid {name} {shown}: expected one of {', '.join(allowed)}")
    return values[0]


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


# ---------------------------------------------------------------------------
# Cuebot message -> seed schema
# ---------------------------------------------------------------------------
def _units(cores: float) -> int:
    """Cuebot's float cores as integer core units (100 = one core; -1 stays -1)."""
    return -1 if cores < 0 else int(round(cores * 100))


def _show(s: Any) -> dict[str, Any]:
    return {"id": s.id, "name": s.name, "active": s.active,
            "defaultMinCores": _units(s.default_min_cores),
            "defaultMaxCores": _units(s.default_max_cores)}


def _job(j: Any, bound: Bound) -> dict[str, Any]:
    st = j.job_stats
    cue_state = bound.job_state.get(j.state, "")
    if cue_state == "FINISHED":
        state = "FINISHED"
    elif j.is_paused:
        state = "PAUSED"
    elif st.running_frames > 0:
        state = "RUNNING"
    else:
        state = "PENDING"
    return {"id": j.id, "name": j.name, "show": j.show, "state": state,
            "priority": j.priority, "totalFrames": st.total_frames,
            "doneFrames": st.succeeded_frames, "runningFrames": st.running_frames,
            "deadFrames": st.dead_frames, "waitingFrames": st.pending_frames}


def _layer_state(st: Any) -> str:
    """A layer's state from its frame counts (Cuebot keeps none): what its frames are doing."""
    if st.running_frames:
        return "RUNNING"
    if st.waiting_frames:
        return "WAITING"
    if st.dead_frames:
        return "DEAD"
    if st.depend_frames:
        return "DEPEND"
    return "SUCCEEDED" if st.total_frames else "WAITING"


def _layer(layer: Any, bound: Bound) -> dict[str, Any]:
    st = layer.layer_stats
    return {"id": layer.id, "name": layer.name,
            "type": _LAYER_TYPE.get(bound.layer_type.get(layer.type, ""), "UTIL"),
            "state": _layer_state(st), "minCores": _units(layer.min_cores),
            "maxCores": _units(layer.max_cores), "threadable": layer.is_threadable,
            "totalFrames": st.total_frames, "doneFrames": st.succeeded_frames}


def _host(h: Any, bound: Bound) -> dict[str, Any]:
    cores = int(h.cores)
    return {"id": h.id, "name": h.name,
            "state": _HOST_STATE.get(bound.hardware_state.get(h.state, ""), "DOWN"),
            "lock": bound.lock_state.get(h.lock_state, "OPEN"),
            "totalCores": cores, "idleCores": int(h.idle_cores),
            "totalMemory": h.memory // 1024, "idleMemory": h.idle_memory // 1024,
            "load": int(round(h.load / cores)) if cores > 0 else 0}


def _canonical(raw_path: str) -> str:
    """``raw_path`` without a trailing slash and with one leading slash."""
    return "/" + raw_path.strip("/")


def add_routes(app: web.Application, resources: Resources) -> None:
    """The six operations; near misses under /api reach them, the rest is 404/405."""
    r = app.router
    ours = [
        r.add_get("/api/show", resources.list_shows).resource,
        r.add_get("/api/show/{show_id}/job", resources.list_jobs).resource,
        r.add_get("/api/job/{job_id}", resources.get_job).resource,
        r.add_delete("/api/job/{job_id}", resources.kill_job).resource,
        r.add_get("/api/job/{job_id}/layer", resources.list_layers).resource,
        r.add_get("/api/host", resources.list_hosts).resource,
    ]

    rules = {}
    for resource in ours:
        rule = authz.per_method({verb: tuple(RPCS[key][1:] for key in keys)
                                 for (url, verb), keys in NEEDS.items()
                                 if url == resource.canonical})
        authz.declare(app, resource, rule)
        rules[resource] = rule

    def repaired(request: web.Request) -> web.Request:
        """The request with its path as the operation's (itself if already so)."""
        raw = request.rel_url.raw_path
        canonical = _canonical(raw)
        if canonical == raw:
            return request
        return request.clone(rel_url=URL.build(
            path=canonical, query_string=request.rel_url.raw_query_string, encoded=True))

    async def miss_needs(request: web.Request) -> authz.Need | None:
        """What ``miss`` will call: the needs of the operation a repaired path reaches."""
        probe = repaired(request)
        if probe is request:
            return None
        for resource in ours:
            match, _ = await resource.resolve(probe)
            if match is not None:
                need = rules[resource](probe)
                return authz.Need(need.methods, dict(match)) if isinstance(
                    need, authz.Need) else None
        return None

    async def miss(request: web.Request) -> web.StreamResponse:
        """``/api/show/`` and ``//api/show`` are ``/api/show``; anything else names the spec.

        Only these spellings are retried: an empty segment inside the path
        (``/api/show//job``) is a missing parameter, not a typo to repair.
        """
        probe = repaired(request)
        allowed: set[str] = set()
        for resource in ours:
            match, methods = await resource.resolve(probe)
            if match is not None and probe is not request:
                request[PARAMS] = dict(match)
                return await match.handler(request)
            allowed |= methods
        if allowed:
            raise errors.method_not_allowed(", ".join(sorted(allowed)))
        raise errors.not_found(f"no resource at {request.path}; see /openapi.json")

    # registered before the RPC catch-all: /api, /api/..., //api/... (not /api.Svc/...)
    catch_all = r.add_route("*", "/{lead:/*}api{tail:(/.*)?}", miss).resource
    authz.declare(app, catch_all, miss_needs)


# ---------------------------------------------------------------------------
# the operations in the OpenAPI document (the seed's, with our units spelled out)
# ---------------------------------------------------------------------------
def _obj(description: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "description": description, "required": list(props),
            "properties": props}


def _s(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _i(description: str) -> dict[str, Any]:
    return {"type": "integer", "description": description}


def _list(key: str, item: str) -> dict[str, Any]:
    return _obj(f"list of {key}", {key: {"type": "array",
                                         "items": {"$ref": f"#/components/schemas/{item}"}}})


def api_schemas() -> dict[str, Any]:
    return {
        "Show": _obj("A show (production)", {
            "id": _s("show id"), "name": _s("show name"),
            "active": {"type": "boolean", "description": "whether the show is active"},
            "defaultMinCores": _i("default minimum cores of its jobs, in core units (100 = 1 core)"),
            "defaultMaxCores": _i("default maximum cores of its jobs, in core units (100 = 1 core)"),
        }),
        "ShowList": _list("shows", "Show"),
        "Job": _obj("A render job", {
            "id": _s("job id"), "name": _s("full job name"), "show": _s("show name"),
            "state": _s("FINISHED; else PAUSED when paused; else RUNNING when frames run; "
                        "else PENDING", enum=list(JOB_STATES)),
            "priority": _i("job priority (higher first)"),
            "totalFrames": _i("frames in the job"),
            "doneFrames": _i("succeeded frames"),
            "runningFrames": _i("running frames"),
            "deadFrames": _i("dead (failed) frames"),
            "waitingFrames": _i("frames not yet run: waiting or held by a dependency"),
        }),
        "JobList": _list("jobs", "Job"),
        "Layer": _obj("A layer of a job", {
            "id": _s("layer id"), "name": _s("layer name"),
            "type": _s("RENDER, or UTIL (Cuebot's UTIL, PRE and POST)", enum=["RENDER", "UTIL"]),
            "state": _s("what its frames are doing: RUNNING, WAITING, DEAD, DEPEND or SUCCEEDED",
                        enum=["RUNNING", "WAITING", "DEAD", "DEPEND", "SUCCEEDED"]),
            "minCores": _i("minimum cores per frame, in core units (100 = 1 core)"),
            "maxCores": _i("maximum cores per frame, in core units (0 = no limit)"),
            "threadable": {"type": "boolean", "description": "frames may use several cores"},
            "totalFrames": _i("frames in the layer"),
            "doneFrames": _i("succeeded frames"),
        }),
        "LayerList": _list("layers", "Layer"),
        "Host": _obj("A render host", {
            "id": _s("host id"), "name": _s("host name"),
            "state": _s("UP, DOWN (also while rebooting) or REPAIR", enum=list(HOST_STATES)),
            "lock": _s("lock state", enum=["OPEN", "LOCKED", "NIMBY_LOCKED"]),
            "totalCores": _i("cores (whole cores)"), "idleCores": _i("idle cores (whole cores)"),
            "totalMemory": _i("reservable memory in MB"),
            "idleMemory": _i("unreserved memory in MB"),
            "load": _i("load average as a percentage of the host's cores"),
        }),
        "HostList": _list("hosts", "Host"),
        "SuccessResponse": _obj("The outcome of an action", {
            "success": {"type": "boolean"}, "message": _s("what was done")}),
    }


def api_paths(table: MethodTable) -> dict[str, Any]:
    """The operations whose RPCs ``table`` serves (all of them for OpenCue's descriptors)."""
    have = bind(table).routes

    def op(op_id: str, summary: str, schema: str, params: list[dict[str, Any]],
           not_found: str | None = None) -> dict[str, Any]:
        ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
        responses: dict[str, Any] = {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref(schema)}}},
        }
        if any(p["in"] == "query" for p in params):
            responses["400"] = {"description": "an invalid state",
                                "content": {"application/json": {"schema": ref("ErrorResponse")}}}
        if not_found:
            responses["404"] = {"description": not_found,
                                "content": {"application/json": {"schema": ref("ErrorResponse")}}}
        responses["default"] = {"description": "an error, in the gateway's one envelope",
                                "content": {"application/json": {"schema": ref("ErrorResponse")}}}
        return {"operationId": op_id, "summary": summary, "tags": ["Resources"],
                "parameters": params, "responses": responses}

    def path(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "description": description,
                "schema": {"type": "string"}}

    def state(values: tuple[str, ...]) -> dict[str, Any]:
        return {"name": "state", "in": "query", "required": False,
                "description": "only those in this state",
                "schema": {"type": "string", "enum": list(values)}}

    job_id = path("job_id", "job id")
    ops = [
        ("/api/show", "get", op("listShows", "Active shows", "ShowList", [])),
        ("/api/show/{show_id}/job", "get", op(
            "listJobs", "Pending, running and finished jobs of a show", "JobList",
            [path("show_id", "show id or name"), state(JOB_STATES)], "Show not found")),
        ("/api/job/{job_id}", "get",
         op("getJob", "One job", "Job", [job_id], "Job not found")),
        ("/api/job/{job_id}", "delete",
         op("killJob", "Kill a job (the reason names the caller)", "SuccessResponse",
            [job_id], "Job not found")),
        ("/api/job/{job_id}/layer", "get",
         op("listLayers", "Layers of a job", "LayerList", [job_id], "Job not found")),
        ("/api/host", "get",
         op("listHosts", "Render hosts", "HostList", [state(HOST_STATES)])),
    ]
    out: dict[str, Any] = {}
    for url, verb, operation in ops:
        if all(key in have for key in NEEDS[(url, verb.upper())]):
            out.setdefault(url, {})[verb] = operation
    return out
