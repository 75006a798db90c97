"""Job submission: a cjsl spec becomes jobs, layers, frames and depends as Cuebot makes them.

``job.JobInterface/LaunchSpec`` and ``LaunchSpecAndWait`` are written here
as plain functions (``launch_spec``, ``launch_spec_and_wait``) that the
JobInterface servant calls, so that launching, which touches every table,
stays out of the servant module.

A launch has Cuebot's three steps and its two kinds of failure:

1. *parse* (:func:`build_plan`): the XML is read strictly (:mod:`.cjsl`)
   and turned into a :class:`LaunchPlan` with Cuebot's naming rules and unit
   conversions; any refusal is a :class:`SpecError` carrying Cuebot's text;
2. *verify* (:func:`verify`): no PENDING job may have a name being launched,
   and the show must exist (an alias counts) and be active;
3. *create* (:func:`create`): one transaction makes the jobs (post-jobs
   too), their depends, then runs the show's filters.

Failures of steps 1-2 are answered INTERNAL ``Failed to add job to launch
queue: <msg>`` by LaunchSpec. Cuebot runs step 3 later, from a queue, and
only logs a failure there (unknown facility or limit, a depend on a job or
layer that does not exist): LaunchSpec has already answered with the names
and no job appears. The sandbox runs step 3 before answering but keeps that
contract, logging the failure. LaunchSpecAndWait runs everything at once and
answers any failure INTERNAL ``Failed to launch and add job: <msg>``; for a
step-3 failure Cuebot's message is that of the job look-up that follows
(``Incorrect result size: expected 1, actual 0``), and so is ours.

Either way a failed launch leaves nothing behind: step 3 is one
transaction. Parsed but not stored: environment variables (no message
shows them) and ``<localbook>`` (no local booking in the sandbox).
"""
from __future__ import annotations

import importlib
import logging
import math
import re
import sqlite3
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable

from opencue_proto import job_pb2

from . import cjsl, depends, frameset
from . import messages as M
from .farm import Farm, FarmError, JobSpec, LayerSpec
from .servant import INCORRECT_SIZE_0, Reply, plain_internal
from .store import Store

log = logging.getLogger("gateway.sandbox")

QUEUE_FAILED = "Failed to add job to launch queue: "
LAUNCH_FAILED = "Failed to launch and add job: "
NAME = re.compile(r"^[\w.-]{3,}\Z", re.ASCII)
FRAME_NAME = re.compile(r"^(\d{4,6})-(\w+)\Z", re.ASCII)
TRUE = frozenset(("true", "yes", "1", "on"))
MAX_LAYERS = 2000
MAX_FRAMES = 100_000
GB = 1024 * 1024                    # KB
MEM_RESERVED_MIN = 262144           # KB: a layer's memory floor
CORE_POINTS_MIN = 10                # units: below this a layer gets…
CORE_POINTS_DEFAULT = 100           # …one core
CORE_POINTS_MAX = 2400
RETRIES_MIN, RETRIES_MAX = 0, 1     # a spec's maxretries is clamped to this
POST_JOB_MAX_CORES = 500            # units
POST_JOB_RETRIES = 2
POST_JOB_USER = "monitor"
LAYER_TYPES = {"Render": "RENDER", "Util": "UTIL", "Post": "POST"}

# what makes step 3 fail the way Cuebot's queued launch fails (anything else is a sandbox bug)
LAUNCH_ERRORS = (FarmError, depends.DependError, sqlite3.IntegrityError)


class SpecError(Exception):
    """The spec is refused before it is queued; the message is Cuebot's."""


@dataclass
class DependSpec:
    """A ``<depend>`` with its names conformed; resolved to ids when created."""

    kind: str
    er_job: str
    on_job: str
    er_layer: str | None = None
    on_layer: str | None = None
    er_frame: str | None = None
    on_frame: str | None = None
    any_frame: bool = False


@dataclass
class LaunchPlan:
    """Everything a spec asks for, checked and converted, nothing created yet."""

    show: str                                   # as the spec writes it (may be an alias)
    jobs: list[JobSpec] = field(default_factory=list)
    post_jobs: dict[str, JobSpec] = field(default_factory=dict)  # parent job name -> post-job
    depends: list[DependSpec] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The launched jobs' names, as LaunchSpec answers them (post-jobs not included)."""
        return [j.name for j in self.jobs]


# ---------------------------------------------------------------------------
# values, as Cuebot reads them
# ---------------------------------------------------------------------------
def _text(elem: ET.Element, tag: str) -> str | None:
    """A child's text, trimmed; None if there is no such child ("" if it is empty)."""
    child = elem.find(tag)
    if child is None:
        return None
    return (child.text or "").strip()


def _int(text: str) -> int:
    """Java's Integer.valueOf: an optional sign and digits, else its exception message."""
    if not re.fullmatch(r"[+-]?\d+", text, re.ASCII):
        raise SpecError(f'For input string: "{text}"')
    return int(text)


def _number(text: str) -> float:
    """Java's Double.valueOf, for the finite numbers a spec may hold."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise SpecError(f'For input string: "{text}"')
    return value


def _bool(text: str | None) -> bool:
    return text is not None and text.strip().lower() in TRUE


def conform_name(kind: str, name: str) -> str:
    """A shot or layer name: lower case, '-' -> '_', at least 3 of ``[A-Za-z0-9_.-]``."""
    if len(name) < 3:
        raise SpecError(f"The {kind.lower()} name must be at least 3 characters.")
    new = name.replace("-", "_").lower()
    if not NAME.match(new):
        raise SpecError(f"The {kind.lower()} name: {new} is not in the proper format.  {kind} "
                        f"names must be alpha numeric, no dashes or punctuation.")
    return new


def conform_job_name(show: str, shot: str, user: str, name: str) -> str:
    """``<show>-<shot>-<user>_<suffix>``, the prefix not repeated if ``name`` has it already."""
    prefix = f"{show}-{shot}-{user}_"
    suffix = name[len(prefix) - 1:] if name.startswith(prefix) else name
    suffix = re.sub(r"_{2,}", "_", suffix.lower()).replace("-", "_")
    if not NAME.match(suffix):
        raise SpecError(f"The job name suffix: {suffix} must be composed of alpha numeric "
                        f"characters, periods, and underscores and be at least 3 characters "
                        f"long")
    return f"{prefix.rstrip('_')}_{suffix.lstrip('_')}".lower()


def conform_frame_name(name: str) -> str:
    """``0001-layer`` from ``1-Layer`` style names; 4-6 digit numbers only."""
    m = FRAME_NAME.match(name)
    if not m:
        raise SpecError(f"The frame name: {name} is not in the proper format.")
    return f"{int(m.group(1)):04d}-{conform_name('Layer', m.group(2))}"


def memory_kb(text: str, floor: int = MEM_RESERVED_MIN) -> int | None:
    """``4g``/``512m``/bare GB -> KB, raised to ``floor``; None (the default) if unreadable."""
    text = text.lower()
    try:
        if "m" in text:
            kb = int(_number(text[:text.rindex("m")]) * 1024)
        elif "g" in text:
            kb = _int(text[:text.rindex("g")]) * GB
        else:
            kb = _int(text) * GB
    except SpecError:
        return None     # Cuebot logs it and keeps the default
    return max(kb, floor)


def core_points(text: str) -> int:
    """``2.0`` = two cores, a bare integer = units; clamped as Cuebot clamps them."""
    units = int(_number(text) * 100 + 0.5) if "." in text else _int(text)
    if units < CORE_POINTS_MIN:
        return CORE_POINTS_DEFAULT
    return min(units, CORE_POINTS_MAX)


def _names(elem: ET.Element | None, tag: str) -> list[str]:
    """Children's texts, trimmed, empty ones and repeats dropped, order kept."""
    out: list[str] = []
    for child in elem.findall(tag) if elem is not None else ():
        text = (child.text or "").strip()
        if text and text not in out:
            out.append(text)
    return out


def _env(elem: ET.Element) -> dict[str, str]:
    """The first ``<env>``'s keys (Cuebot reads only that one)."""
    env = elem.find("env")
    return {k.get("name", ""): (k.text or "").strip()
            for k in (env.findall("key") if env is not None else ())}


def _tags(text: str | None) -> list[str] | None:
    """``a | b`` -> tags, each checked; None (service tags) if absent or empty."""
    if not text:
        return None
    parts = text.replace(" ", "").split("|")
    while parts and not parts[-1]:  # a Java split drops trailing empty strings
        parts.pop()
    tags: list[str] = []
    for tag in parts:
        if not NAME.match(tag):
            raise SpecError(f"error, invalid tag {tag}, tags must be alpha numberic and at "
                            f"least 3 characters in length.")
        if tag not in tags:
            tags.append(tag)
    return tags or None


# ---------------------------------------------------------------------------
# step 1: parse
# ---------------------------------------------------------------------------
class _Parser:
    """One spec's header values and running totals while its jobs are read."""

    def __init__(self, root: ET.Element) -> None:
        facility = _text(root, "facility")
        self.facility = facility.lower() if facility is not None else None
        self.show = _text(root, "show") or ""
        self.shot = conform_name("Shot", _text(root, "shot") or "")
        self.user = _text(root, "user") or ""
        uid = _text(root, "uid")
        self.uid = _int(uid) if uid is not None else None
        self.email = _text(root, "email") or ""
        if self.user == "root" or self.uid == 0:
            raise SpecError("Cannot launch jobs as root.")
        self.total_frames = 0

    def job_name(self, name: str | None) -> str:
        if name is None:
            raise SpecError("Job names cannot be null")
        return conform_job_name(self.show, self.shot, self.user, name)

    def job(self, elem: ET.Element) -> tuple[JobSpec, JobSpec | None]:
        name = self.job_name(elem.get("name"))
        job = JobSpec(show_id="", shot=self.shot, user=self.user, name=name,
                      facility=self.facility, uid=self.uid, email=self.email,
                      paused=_bool(_text(elem, "paused")),
                      auto_eat=_bool(_text(elem, "autoeat")), env=_env(elem))
        if (os_name := _text(elem, "os")) is not None:
            job.os = os_name
        if (retries := _text(elem, "maxretries")) is not None:
            job.max_retries = min(max(_int(retries), RETRIES_MIN), RETRIES_MAX)
        if (max_cores := _text(elem, "maxcores")) is not None:
            job.max_cores = _int(max_cores) * 100
        if (max_gpus := _text(elem, "maxgpus")) is not None:
            job.max_gpus = _int(max_gpus)
        if (priority := _text(elem, "priority")) is not None:
            job.priority = _int(priority)
        local = elem.find("localbook")
        if local is not None:  # read like Cuebot (bad numbers fail), not stored
            for attr in ("cores", "threads", "memory", "gpu"):
                _int(local.get(attr, ""))
        post: JobSpec | None = None
        seen: set[str] = set()
        layers = elem.find("layers")
        for layer_elem in layers.findall("layer") if layers is not None else ():
            layer = self.layer(layer_elem)
            if layer.name in seen:
                raise SpecError(f"error, the layer {layer.name} was already defined in job "
                                f"{name}")
            seen.add(layer.name)
            if layer.type == "POST":
                post = post or self.post_job(job)
                post.layers.append(layer)
            else:
                job.layers.append(layer)
                if len(job.layers) > MAX_LAYERS:
                    raise SpecError(f"error, your job has {len(job.layers)} layers,  the "
                                    f"maximum number of allowed layers is {MAX_LAYERS}")
        if not job.layers:
            raise SpecError(f"The job {name} has no layers")
        return job, post

    def post_job(self, parent: JobSpec) -> JobSpec:
        """Where a job's Post layers go: run by ``monitor`` once the parent finishes."""
        name = f"{parent.name}_post_job_{int(time.time() * 1000)}"
        if self.user:  # Cuebot's replaceFirst: the first match of the user name, read as a regex
            try:
                name = re.sub(self.user, POST_JOB_USER, name, count=1)
            except re.error:
                name = name.replace(self.user, POST_JOB_USER, 1)
        return JobSpec(show_id="", shot=self.shot, user=POST_JOB_USER, name=name,
                       facility=self.facility,
                       uid=self.uid, os=parent.os, max_cores=POST_JOB_MAX_CORES,
                       max_retries=POST_JOB_RETRIES, env=dict(parent.env), state="POSTED")

    def layer(self, elem: ET.Element) -> LayerSpec:
        name = conform_name("Layer", elem.get("name") or "")
        range_text = _text(elem, "range") or ""
        chunk = _int(_text(elem, "chunk") or "")
        try:
            frames = len(frameset.chunk_starts(frameset.parse(range_text), chunk))
        except frameset.FrameSetError:
            raise SpecError(f"error, the range {range_text} is invalid") from None
        self.total_frames += frames
        if self.total_frames > MAX_FRAMES:
            raise SpecError(f"error, your job has {self.total_frames} frames, the maximum "
                            f"number of allowed frames is {MAX_FRAMES}")
        layer = LayerSpec(name=name, range=range_text, chunk=chunk,
                          command=_text(elem, "cmd") or "",
                          type=LAYER_TYPES[elem.get("type", "Render")],
                          services=_names(elem.find("services"), "service"),
                          limits=_names(elem.find("limits"), "limit"),
                          outputs=_names(elem.find("outputs"), "output"),
                          tags=_tags(_text(elem, "tags")), env=_env(elem))
        if (cores := _text(elem, "cores")) is not None:
            layer.min_cores = core_points(cores)
        if (threadable := _text(elem, "threadable")) is not None:
            layer.threadable = _bool(threadable)
        if (memory := _text(elem, "memory")) is not None:
            layer.min_memory = memory_kb(memory)
        if (gpus := _text(elem, "gpus")) is not None:
            layer.min_gpus = _int(gpus)
        gpu_memory = _text(elem, "gpu_memory") or _text(elem, "gpu")  # gpu: deprecated name
        if gpu_memory:
            layer.min_gpu_memory = memory_kb(gpu_memory, floor=0)
        if (timeout := _text(elem, "timeout")) is not None:
            layer.timeout = _int(timeout)
        if (timeout_llu := _text(elem, "timeout_llu")) is not None:
            layer.timeout_llu = _int(timeout_llu)
        return layer

    def depend(self, elem: ET.Element) -> DependSpec:
        kind = elem.get("type", "").upper()
        dep = DependSpec(kind=kind, er_job=self.job_name(_text(elem, "depjob")),
                         on_job=self.job_name(_text(elem, "onjob")),
                         any_frame=kind == "LAYER_ON_LAYER" and _bool(elem.get("anyframe")))
        if (er_layer := _text(elem, "deplayer")) is not None:
            dep.er_layer = conform_name("Layer", er_layer)
        if (on_layer := _text(elem, "onlayer")) is not None:
            dep.on_layer = conform_name("Layer", on_layer)
        if (er_frame := _text(elem, "depframe")) is not None:
            dep.er_frame = conform_frame_name(er_frame)
        if (on_frame := _text(elem, "onframe")) is not None:
            dep.on_frame = conform_frame_name(on_frame)
        if dep.er_frame is not None and dep.er_frame == dep.on_frame:
            raise SpecError(f"The frame name: {dep.er_frame} cannot depend on itself.")
        return dep


def build_plan(xml_text: str) -> LaunchPlan:
    """Step 1: the spec read, checked and converted; :class:`SpecError` if refused."""
    try:
        root, _version = cjsl.parse(xml_text)
    except cjsl.SpecXmlError as e:
        raise SpecError(f"Failed to parse job spec XML, {e}") from None
    parser = _Parser(root)
    plan = LaunchPlan(show=parser.show)
    for elem in root.findall("job"):
        job, post = parser.job(elem)
        plan.jobs.append(job)
        if post is not None:
            plan.post_jobs[job.name] = post
    for group in root.findall("depends"):
        plan.depends += [parser.depend(d) for d in group.findall("depend")]
    return plan


# ---------------------------------------------------------------------------
# step 2: verify
# ---------------------------------------------------------------------------
def find_show(store: Store, name: str) -> sqlite3.Row | None:
    """A show by its name or one of its aliases (launching honours aliases)."""
    return (store.one("SELECT * FROM show WHERE name = ? ORDER BY seq LIMIT 1", (name,))
            or store.one("SELECT s.* FROM show_alias a JOIN show s ON s.id = a.show_id "
                         "WHERE a.name = ?", (name,)))


def verify(store: Store, plan: LaunchPlan) -> None:
    """Step 2: no name already pending, the show exists and is active; sets the show id."""
    for job in plan.jobs:
        if store.one("SELECT 1 FROM job WHERE visible_name = ? AND state = 'PENDING'",
                     (job.name,)):
            raise SpecError(f"The job {job.name} is already pending")
    show = find_show(store, plan.show)
    if show is None:
        raise SpecError(f"The {plan.show} does not exist. Please contact administrator of "
                        f"your OpenCue deployment to have this show created.")
    if not show["active"]:
        raise SpecError(f"The {plan.show} show has been deactivated.  Please contact "
                        f"administrator of your OpenCue deployment to reactivate this show.")
    for job in [*plan.jobs, *plan.post_jobs.values()]:
        job.show_id = show["id"]


# ---------------------------------------------------------------------------
# step 3: create
# ---------------------------------------------------------------------------
def _filters() -> Callable[[Store, str], Any] | None:
    """``filters.apply_filters`` if the sandbox has filters (the module is optional)."""
    try:
        module = importlib.import_module(f"{__package__}.filters")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.filters":
            raise
        return None
    return getattr(module, "apply_filters", None)


def _one(store: Store, sql: str, args: tuple[Any, ...]) -> str:
    row = store.one(sql, args)
    if row is None:
        raise depends.DependError(INCORRECT_SIZE_0)
    return row["id"]


def _side(store: Store, job_name: str, layer: str | None, frame: str | None) -> depends.Side:
    """A depend side's ids from names: jobs by pending name, layers and frames in the job."""
    job_id = _one(store, "SELECT id FROM job WHERE visible_name = ?", (job_name,))
    if frame is not None:
        row = store.one("SELECT id, layer_id FROM frame WHERE job_id = ? AND name = ?",
                        (job_id, frame))
        if row is None:
            raise depends.DependError(INCORRECT_SIZE_0)
        return depends.Side(job_id, row["layer_id"], row["id"])
    layer_id = (_one(store, "SELECT id FROM layer WHERE job_id = ? AND name = ?",
                     (job_id, layer)) if layer is not None else None)
    return depends.Side(job_id, layer_id)


def create(farm: Farm, plan: LaunchPlan) -> list[str]:
    """Step 3, in one transaction: jobs, post-jobs, depends, filters; the jobs' ids."""
    store = farm.store
    apply_filters = _filters()
    with store.tx():
        ids: list[str] = []
        for job in plan.jobs:
            ids.append(farm.create_job(job))
            post = plan.post_jobs.get(job.name)
            if post is not None:
                post.parent_job_id = ids[-1]
                farm.create_job(post)
        for dep in plan.depends:
            er = _side(store, dep.er_job, dep.er_layer, dep.er_frame)
            on = _side(store, dep.on_job, dep.on_layer, dep.on_frame)
            depends.create(farm, dep.kind, er, on, any_frame=dep.any_frame)
        if apply_filters is not None:
            for job_id in ids:
                apply_filters(store, job_id)
    return ids


def launch(farm: Farm, xml_text: str) -> list[str]:
    """Parse, verify and create in one transaction; the new jobs' ids.

    Raises :class:`SpecError` (refused spec) or one of ``LAUNCH_ERRORS``
    (the launch itself failed); nothing is left behind either way.
    """
    plan = build_plan(xml_text)
    with farm.store.tx():
        verify(farm.store, plan)
        return create(farm, plan)


# ---------------------------------------------------------------------------
# the RPCs (JobInterface's servant delegates to these)
# ---------------------------------------------------------------------------
def launch_spec(servant: Any, request: Any, context: Any) -> Reply:
    """LaunchSpec(spec) -> names; a refused spec is INTERNAL, a failed launch only logged."""
    try:
        plan = build_plan(request.spec)
        verify(servant.store, plan)
    except SpecError as e:
        raise plain_internal(QUEUE_FAILED + str(e)) from None
    try:
        create(servant.farm, plan)
    except LAUNCH_ERRORS as e:
        log.warning("launch of %s failed after it was accepted (as in Cuebot, no job is "
                    "created and the client is not told): %s", ", ".join(plan.names), e)
    return {"names": plan.names}


def launch_spec_and_wait(servant: Any, request: Any, context: Any) -> Reply:
    """LaunchSpecAndWait(spec) -> the new jobs; any failure is INTERNAL."""
    store = servant.store
    try:
        plan = build_plan(request.spec)
        verify(store, plan)
    except SpecError as e:
        raise plain_internal(LAUNCH_FAILED + str(e)) from None
    try:
        ids = create(servant.farm, plan)
    except LAUNCH_ERRORS as e:
        log.warning("launch of %s failed: %s", ", ".join(plan.names), e)
        raise plain_internal(LAUNCH_FAILED + INCORRECT_SIZE_0) from None
    rows = [store.one("SELECT * FROM job WHERE id = ?", (i,)) for i in ids]
    return {"jobs": job_pb2.JobSeq(jobs=M.jobs(store, rows))}
