"""Database rows -> OpenCue messages, the way Cuebot fills them.

Builders take rows (``sqlite3.Row``) and return ``opencue_proto`` messages.
Builders of objects with statistics take a *list* of rows and compute the
statistics for all of them with one grouped query, so a listing of 2,000 jobs
costs a few queries, not thousands.

Conversions (Cuebot's): cores are stored as units and shown as floats
(units / 100, two decimals, negative = -1.0 "unlimited"); memory in KB;
nullable strings come back as ""; frame names are ``%04d-<layer>``.
"""
from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from typing import Iterable, Sequence

from opencue_proto import (comment_pb2, department_pb2, depend_pb2, facility_pb2, filter_pb2,
                           host_pb2, job_pb2, service_pb2, show_pb2,
                           subscription_pb2, task_pb2)

from .store import Store

Row = sqlite3.Row

FRAME_STATES = ("WAITING", "SETUP", "RUNNING", "SUCCEEDED", "DEPEND", "DEAD", "EATEN",
                "CHECKPOINT")


def cores(units: int) -> float:
    """Core units -> cores, as Cuebot prints them (two decimals; -1 stays -1, "unset")."""
    if units == -1:
        return -1.0
    return round(units / 100.0, 2)


def split_tags(text: str) -> list[str]:
    return [t.strip() for t in text.split("|") if t.strip()]


def join_tags(tags: Iterable[str]) -> str:
    return " | ".join(t for t in tags if t)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _frame_counts(store: Store, column: str, ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """{id: {state: count}} of frames grouped by ``column`` (job_id or layer_id)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if ids:
        for r in store.all(f"SELECT {column} AS k, state, COUNT(*) AS n FROM frame "
                           f"WHERE {column} IN ({_marks(len(ids))}) GROUP BY {column}, state",
                           ids):
            out[r["k"]][r["state"]] = r["n"]
    return out


def _reserved(store: Store, column: str, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{id: (core units, gpus)} booked by procs, grouped by ``column`` of proc."""
    out: dict[str, tuple[int, int]] = {}
    if ids:
        for r in store.all(f"SELECT {column} AS k, SUM(cores) AS c, SUM(gpus) AS g FROM proc "
                           f"WHERE {column} IN ({_marks(len(ids))}) GROUP BY {column}", ids):
            out[r["k"]] = (r["c"] or 0, r["g"] or 0)
    return out


def _run_times(store: Store, column: str, ids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """{id: (low, high, avg) seconds} over SUCCEEDED frames."""
    out: dict[str, tuple[int, int, int]] = {}
    if ids:
        for r in store.all(
                f"SELECT {column} AS k, MIN(stop_time - start_time) AS lo, "
                f"MAX(stop_time - start_time) AS hi, AVG(stop_time - start_time) AS av "
                f"FROM frame WHERE state = 'SUCCEEDED' AND start_time > 0 AND "
                f"{column} IN ({_marks(len(ids))}) GROUP BY {column}", ids):
            out[r["k"]] = (int(r["lo"] or 0), int(r["hi"] or 0), int(r["av"] or 0))
    return out


# ---------------------------------------------------------------------------
# shows, groups, departments
# ---------------------------------------------------------------------------
def shows(store: Store, rows: Sequence[Row]) -> list[show_pb2.Show]:
    ids = [r["id"] for r in rows]
    live: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if ids:
        for r in store.all(
                f"SELECT j.show_id AS k, f.state, COUNT(*) AS n FROM frame f JOIN job j "
                f"ON j.id = f.job_id WHERE j.state = 'PENDING' AND j.show_id IN "
                f"({_marks(len(ids))}) GROUP BY j.show_id, f.state", ids):
            live[r["k"]][r["state"]] = r["n"]
        for r in store.all(f"SELECT show_id AS k, COUNT(*) AS n FROM job WHERE state = "
                           f"'PENDING' AND show_id IN ({_marks(len(ids))}) GROUP BY show_id", ids):
            live[r["k"]]["jobs"] = r["n"]
    booked = {}
    if ids:
        for r in store.all(
                f"SELECT p.show_id AS k, SUM(p.cores) AS c, SUM(p.gpus) AS g FROM proc p JOIN job j "
                f"ON j.id = p.job_id WHERE j.state = 'PENDING' AND p.show_id IN "
                f"({_marks(len(ids))}) GROUP BY p.show_id", ids):
            booked[r["k"]] = (r["c"] or 0, r["g"] or 0)
    out = []
    for r in rows:
        c = live[r["id"]]
        rc, rg = booked.get(r["id"], (0, 0))
        out.append(show_pb2.Show(
            id=r["id"], name=r["name"],
            default_min_cores=cores(r["default_min_cores"]),
            default_max_cores=cores(r["default_max_cores"]),
            comment_email=r["comment_email"], booking_enabled=bool(r["booking_enabled"]),
            dispatch_enabled=bool(r["dispatch_enabled"]), active=bool(r["active"]),
            default_min_gpus=float(r["default_min_gpus"]),
            default_max_gpus=float(r["default_max_gpus"]),
            scheduler_managed=bool(r["scheduler_managed"]),
            show_stats=show_pb2.ShowStats(
                running_frames=c["RUNNING"], dead_frames=c["DEAD"],
                pending_frames=c["WAITING"] + c["DEPEND"], pending_jobs=c["jobs"],
                created_job_count=r["created_job_count"],
                created_frame_count=r["created_frame_count"],
                rendered_frame_count=r["rendered_frame_count"],
                failed_frame_count=r["failed_frame_count"],
                reserved_cores=cores(rc), reserved_gpus=float(rg)),
        ))
    return out


def groups(store: Store, rows: Sequence[Row]) -> list[job_pb2.Group]:
    ids = [r["id"] for r in rows]
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    booked: dict[str, tuple[int, int]] = {}
    if ids:
        m = _marks(len(ids))
        for r in store.all(
                f"SELECT j.folder_id AS k, f.state, COUNT(*) AS n FROM frame f JOIN job j ON "
                f"j.id = f.job_id WHERE j.state = 'PENDING' AND j.folder_id IN ({m}) "
                f"GROUP BY j.folder_id, f.state", ids):
            counts[r["k"]][r["state"]] = r["n"]
        for r in store.all(f"SELECT folder_id AS k, COUNT(*) AS n FROM job WHERE state = "
                           f"'PENDING' AND folder_id IN ({m}) GROUP BY folder_id", ids):
            counts[r["k"]]["jobs"] = r["n"]
        for r in store.all(
                f"SELECT j.folder_id AS k, SUM(p.cores) AS c, SUM(p.gpus) AS g FROM proc p JOIN "
                f"job j ON j.id = p.job_id WHERE j.state = 'PENDING' AND j.folder_id IN ({m}) "
                f"GROUP BY j.folder_id", ids):
            booked[r["k"]] = (r["c"] or 0, r["g"] or 0)
    depts = {r["id"]: r["name"] for r in store.all("SELECT id, name FROM dept")}
    out = []
    for r in rows:
        c = counts[r["id"]]
        rc, rg = booked.get(r["id"], (0, 0))
        out.append(job_pb2.Group(
            id=r["id"], name=r["name"], department=depts.get(r["dept_id"], ""),
            default_job_priority=r["default_job_priority"],
            default_job_min_cores=cores(r["default_job_min_cores"]),
            default_job_max_cores=cores(r["default_job_max_cores"]),
            min_cores=cores(r["min_cores"]), max_cores=cores(r["max_cores"]),
            level=r["level"], parent_id=r["parent_id"] or "",
            group_stats=job_pb2.GroupStats(
                running_frames=c["RUNNING"], dead_frames=c["DEAD"], depend_frames=c["DEPEND"],
                waiting_frames=c["WAITING"], pending_jobs=c["jobs"],
                reserved_cores=cores(rc), reserved_gpus=float(rg)),
            default_job_min_gpus=float(r["default_job_min_gpus"]),
            default_job_max_gpus=float(r["default_job_max_gpus"]),
            min_gpus=float(r["min_gpus"]), max_gpus=float(r["max_gpus"]),
        ))
    return out


def departments(store: Store, rows: Sequence[Row]) -> list[department_pb2.Department]:
    """Rows of ``point`` (a department's configuration for one show)."""
    out = []
    for r in rows:
        show = store.one("SELECT name FROM show WHERE id = ?", (r["show_id"],))
        dept = store.one("SELECT name FROM dept WHERE id = ?", (r["dept_id"],))
        out.append(department_pb2.Department(
            id=r["id"], name=f"{show['name']}.{dept['name']}", dept=dept["name"],
            ti_task=r["ti_task"], min_cores=cores(r["min_cores"]),
            ti_managed=bool(r["ti_managed"])))
    return out


def tasks(store: Store, rows: Sequence[Row]) -> list[task_pb2.Task]:
    out = []
    for r in rows:
        point = store.one("SELECT p.id, d.name FROM point p JOIN dept d ON d.id = p.dept_id "
                          "WHERE p.id = ?", (r["point_id"],))
        out.append(task_pb2.Task(
            id=r["id"], name="", shot=r["shot"], dept=point["name"] if point else "",
            point_id=r["point_id"], min_cores=cores(r["min_cores"]),
            adjust_cores=cores(r["adjust_cores"])))
    return out


# ---------------------------------------------------------------------------
# jobs, layers, frames
# ---------------------------------------------------------------------------
def jobs(store: Store, rows: Sequence[Row]) -> list[job_pb2.Job]:
    ids = [r["id"] for r in rows]
    counts = _frame_counts(store, "job_id", ids)
    booked = _reserved(store, "job_id", ids)
    times = _run_times(store, "job_id", ids)
    layer_n: dict[str, int] = {}
    commented: set[str] = set()
    if ids:
        m = _marks(len(ids))
        layer_n = {r["job_id"]: r["n"] for r in store.all(
            f"SELECT job_id, COUNT(*) AS n FROM layer WHERE job_id IN ({m}) GROUP BY job_id", ids)}
        commented = {r["job_id"] for r in store.all(
            f"SELECT DISTINCT job_id FROM comment WHERE job_id IN ({m})", ids)}
    names = _names(store)
    out = []
    for r in rows:
        c = counts[r["id"]]
        rc, rg = booked.get(r["id"], (0, 0))
        _, hi, _ = times.get(r["id"], (0, 0, 0))
        total = sum(c.values())
        pending = c["WAITING"] + c["DEPEND"]
        rendered = r["rendered_frame_count"]
        avg_core = r["rendered_core_sec"] // rendered if rendered else 0
        job = job_pb2.Job(
            id=r["id"], state=r["state"], name=r["name"], shot=r["shot"],
            show=names["show"].get(r["show_id"], ""), user=r["user"],
            group=names["folder"].get(r["folder_id"], ""),
            facility=names["facility"].get(r["facility_id"], ""), os=r["os"],
            priority=r["priority"], min_cores=cores(r["min_cores"]),
            max_cores=cores(r["max_cores"]), log_dir=r["log_dir"],
            is_paused=bool(r["is_paused"]), has_comment=r["id"] in commented,
            auto_eat=bool(r["auto_eat"]), start_time=r["start_time"], stop_time=r["stop_time"],
            min_gpus=float(r["min_gpus"]), max_gpus=float(r["max_gpus"]), loki_url="",
            eligible_time=r["start_time"],
            job_stats=job_pb2.JobStats(
                total_layers=layer_n.get(r["id"], 0), total_frames=total,
                waiting_frames=c["WAITING"], running_frames=c["RUNNING"], dead_frames=c["DEAD"],
                eaten_frames=c["EATEN"], depend_frames=c["DEPEND"],
                succeeded_frames=c["SUCCEEDED"], pending_frames=pending,
                high_frame_sec=hi, avg_core_sec=avg_core,
                rendered_frame_count=rendered, failed_frame_count=r["failed_frame_count"],
                remaining_core_sec=pending * avg_core,
                total_core_sec=r["rendered_core_sec"] + r["failed_core_sec"],
                rendered_core_sec=r["rendered_core_sec"], failed_core_sec=r["failed_core_sec"],
                max_rss=r["max_rss"], reserved_cores=cores(rc), reserved_gpus=float(rg)),
        )
        if r["uid"] is not None:
            job.uid = r["uid"]
        out.append(job)
    return out


def layers(store: Store, rows: Sequence[Row]) -> list[job_pb2.Layer]:
    ids = [r["id"] for r in rows]
    counts = _frame_counts(store, "layer_id", ids)
    booked = _reserved(store, "layer_id", ids)
    times = _run_times(store, "layer_id", ids)
    limits: dict[str, list[str]] = defaultdict(list)
    bounds: dict[str, tuple[int, int]] = {}
    if ids:
        m = _marks(len(ids))
        for r in store.all(f"SELECT ll.layer_id, l.name FROM layer_limit ll JOIN limit_record l "
                           f"ON l.id = ll.limit_id WHERE ll.layer_id IN ({m}) ORDER BY l.name",
                           ids):
            limits[r["layer_id"]].append(r["name"])
        for r in store.all(f"SELECT layer_id, MIN(start_time) AS s, MAX(stop_time) AS e FROM "
                           f"frame WHERE start_time > 0 AND layer_id IN ({m}) GROUP BY layer_id",
                           ids):
            bounds[r["layer_id"]] = (r["s"] or 0, r["e"] or 0)
    out = []
    for r in rows:
        c = counts[r["id"]]
        rc, rg = booked.get(r["id"], (0, 0))
        lo, hi, av = times.get(r["id"], (0, 0, 0))
        pending = c["WAITING"] + c["DEPEND"]
        rendered = r["rendered_frame_count"]
        avg_core = r["rendered_core_sec"] // rendered if rendered else 0
        start, stop = bounds.get(r["id"], (0, 0))
        out.append(job_pb2.Layer(
            id=r["id"], name=r["name"], range=r["range"], tags=split_tags(r["tags"]),
            min_cores=cores(r["min_cores"]), max_cores=cores(r["max_cores"]),
            is_threadable=bool(r["threadable"]), min_memory=r["min_memory"],
            min_gpu_memory=r["min_gpu_memory"], chunk_size=r["chunk_size"],
            dispatch_order=r["dispatch_order"], type=r["type"],
            services=[s for s in r["services"].split(",") if s],
            memory_optimizer_enabled=bool(r["memory_optimizer_enabled"]),
            parent_id=r["job_id"], limits=limits.get(r["id"]) or [""],
            timeout=r["timeout"], timeout_llu=r["timeout_llu"],
            min_gpus=float(r["min_gpus"]), max_gpus=float(r["max_gpus"]),
            command=r["command"], start_time=start, stop_time=stop if not pending else 0,
            start_after=r["start_after"], start_after_reason=r["start_after_reason"],
            layer_stats=job_pb2.LayerStats(
                total_frames=sum(c.values()), waiting_frames=c["WAITING"],
                running_frames=c["RUNNING"], dead_frames=c["DEAD"], eaten_frames=c["EATEN"],
                depend_frames=c["DEPEND"], succeeded_frames=c["SUCCEEDED"],
                pending_frames=pending, avg_frame_sec=av, low_frame_sec=lo, high_frame_sec=hi,
                avg_core_sec=avg_core, rendered_frame_count=rendered,
                failed_frame_count=r["failed_frame_count"],
                remaining_core_sec=pending * avg_core,
                total_core_sec=r["rendered_core_sec"] + r["failed_core_sec"],
                rendered_core_sec=r["rendered_core_sec"], failed_core_sec=r["failed_core_sec"],
                max_rss=r["max_rss"], reserved_cores=cores(rc), reserved_gpus=float(rg)),
        ))
    return out


def display_override(r: Row) -> job_pb2.FrameStateDisplayOverride:
    red, green, blue = (int(x) for x in r["rgb"].split(","))
    return job_pb2.FrameStateDisplayOverride(
        state=r["state"], text=r["text"],
        color=job_pb2.FrameStateDisplayOverride.RGB(red=red, green=green, blue=blue))


def frames(store: Store, rows: Sequence[Row]) -> list[job_pb2.Frame]:
    layer_ids = sorted({r["layer_id"] for r in rows})
    layer_names = {}
    overrides: dict[tuple[str, str], Row] = {}
    if layer_ids:
        layer_names = {r["id"]: r["name"] for r in store.all(
            f"SELECT id, name FROM layer WHERE id IN ({_marks(len(layer_ids))})", layer_ids)}
    frame_ids = [r["id"] for r in rows]
    running = [r["id"] for r in rows if r["state"] == "RUNNING"]
    proc_cores: dict[str, int] = {}
    if running:
        proc_cores = {p["frame_id"]: p["cores"] for p in store.all(
            f"SELECT frame_id, cores FROM proc WHERE frame_id IN ({_marks(len(running))})",
            running)}
    t = int(time.time())
    if frame_ids and store.one("SELECT 1 FROM frame_override LIMIT 1"):
        overrides = {(o["frame_id"], o["state"]): o for o in store.all(
            f"SELECT * FROM frame_override WHERE frame_id IN ({_marks(len(frame_ids))})",
            frame_ids)}
    out = []
    for r in rows:
        frame = job_pb2.Frame(
            id=r["id"], name=r["name"], layer_name=layer_names.get(r["layer_id"], ""),
            number=r["number"], state=r["state"], retry_count=r["retry_count"],
            exit_status=r["exit_status"], dispatch_order=r["dispatch_order"],
            start_time=r["start_time"], stop_time=r["stop_time"], max_rss=r["max_rss"],
            used_memory=r["used_memory"], reserved_memory=r["reserved_memory"],
            reserved_gpu_memory=r["reserved_gpu_memory"], last_resource=r["last_resource"],
            checkpoint_state=r["checkpoint_state"], checkpoint_count=r["checkpoint_count"],
            total_core_time=r["total_core_time"] + (  # a run counts while it goes on
                max(0, t - r["start_time"]) * proc_cores[r["id"]] // 100
                if r["id"] in proc_cores else 0),
            llu_time=r["llu_time"],
            eligible_time=r["eligible_time"], submission_time=r["submission_time"])
        override = overrides.get((r["id"], r["state"]))
        if override is not None:
            frame.frame_state_display_override.CopyFrom(display_override(override))
        out.append(frame)
    return out


def depends(store: Store, rows: Sequence[Row]) -> list[depend_pb2.Depend]:
    def name(table: str, key: str | None) -> str:
        if not key:
            return ""
        r = store.one(f"SELECT name FROM {table} WHERE id = ?", (key,))
        return r["name"] if r else ""

    return [depend_pb2.Depend(
        id=r["id"], type=r["type"], target=r["target"], any_frame=bool(r["any_frame"]),
        active=bool(r["active"]),
        depend_er_job=name("job", r["er_job_id"]), depend_er_layer=name("layer", r["er_layer_id"]),
        depend_er_frame=name("frame", r["er_frame_id"]),
        depend_on_job=name("job", r["on_job_id"]), depend_on_layer=name("layer", r["on_layer_id"]),
        depend_on_frame=name("frame", r["on_frame_id"]),
    ) for r in rows]


def comments(rows: Sequence[Row]) -> list[comment_pb2.Comment]:
    return [comment_pb2.Comment(id=r["id"], timestamp=r["timestamp"], user=r["user"],
                                subject=r["subject"], message=r["message"]) for r in rows]


# ---------------------------------------------------------------------------
# hosts, procs, owners
# ---------------------------------------------------------------------------
TAG_TYPE_ORDER = "CASE type WHEN 'ALLOC' THEN 0 WHEN 'HARDWARE' THEN 1 WHEN 'HOSTNAME' THEN 2 ELSE 3 END"


def host_tags(store: Store, host_ids: Sequence[str]) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = defaultdict(list)
    if host_ids:
        for r in store.all(f"SELECT host_id, tag FROM host_tag WHERE host_id IN "
                           f"({_marks(len(host_ids))}) ORDER BY {TAG_TYPE_ORDER}, tag, seq",
                           host_ids):
            tags[r["host_id"]].append(r["tag"])
    return tags


def hosts(store: Store, rows: Sequence[Row]) -> list[host_pb2.Host]:
    ids = [r["id"] for r in rows]
    tags = host_tags(store, ids)
    allocs = _names(store)["alloc"]
    commented: set[str] = set()
    if ids:
        commented = {r["host_id"] for r in store.all(
            f"SELECT DISTINCT host_id FROM comment WHERE host_id IN ({_marks(len(ids))})", ids)}
    return [host_pb2.Host(
        id=r["id"], name=r["name"], alloc_name=allocs.get(r["alloc_id"], ""),
        nimby_enabled=bool(r["nimby_enabled"]), has_comment=r["id"] in commented,
        cores=cores(r["cores"]), idle_cores=cores(r["idle_cores"]), memory=r["memory"],
        idle_memory=r["idle_memory"], gpu_memory=r["gpu_memory"],
        idle_gpu_memory=r["idle_gpu_memory"], total_swap=r["total_swap"],
        total_memory=r["total_memory"], total_gpu_memory=r["total_gpu_memory"],
        total_mcp=r["total_mcp"], free_swap=r["free_swap"], free_memory=r["free_memory"],
        free_mcp=r["free_mcp"], free_gpu_memory=r["free_gpu_memory"], load=r["load"],
        boot_time=r["boot_time"], ping_time=r["ping_time"], os=r["os"], tags=tags.get(r["id"], []),
        state=r["state"], lock_state=r["lock_state"], thread_mode=r["thread_mode"],
        gpus=float(r["gpus"]), idle_gpus=float(r["idle_gpus"]),
    ) for r in rows]


def proc_name(host_name: str, core_units: int, gpus: int) -> str:
    """``host/1.00/0``: what Cuebot calls a proc, and a frame's last resource."""
    return f"{host_name}/{core_units / 100:.2f}/{gpus}"


def procs(store: Store, rows: Sequence[Row]) -> list[host_pb2.Proc]:
    out = []
    names = _names(store)
    for r in rows:
        host = store.one("SELECT name FROM host WHERE id = ?", (r["host_id"],))
        job = store.one("SELECT name, folder_id, log_dir FROM job WHERE id = ?", (r["job_id"],))
        frame = store.one("SELECT name FROM frame WHERE id = ?", (r["frame_id"],))
        layer = store.one("SELECT services FROM layer WHERE id = ?", (r["layer_id"],))
        job_name = job["name"] if job else ""
        frame_name = frame["name"] if frame else ""
        out.append(host_pb2.Proc(
            id=r["id"], name=proc_name(host["name"] if host else "", r["cores"], r["gpus"]),
            show_name=names["show"].get(r["show_id"], ""), job_name=job_name,
            frame_name=frame_name,
            group_name=names["folder"].get(job["folder_id"], "") if job else "",
            ping_time=r["ping_time"], bookedTime=r["booked_time"],
            dispatch_time=r["dispatch_time"], reserved_memory=r["memory"],
            reserved_gpu_memory=r["gpu_memory"], used_memory=r["used_memory"],
            reserved_cores=cores(r["cores"]), unbooked=bool(r["unbooked"]),
            log_path=f"{job['log_dir']}/{job_name}.{frame_name}.rqlog" if job else "",
            redirect_target=r["redirect_target"],
            services=[s for s in (layer["services"] if layer else "").split(",") if s],
            used_gpu_memory=r["used_gpu_memory"], reserved_gpus=float(r["gpus"]),
        ))
    return out


def owners(store: Store, rows: Sequence[Row]) -> list[host_pb2.Owner]:
    names = _names(store)
    out = []
    for r in rows:
        n = store.one("SELECT COUNT(*) AS n FROM deed WHERE owner_id = ?", (r["id"],))["n"]
        out.append(host_pb2.Owner(id=r["id"], name=r["name"],
                                  show=names["show"].get(r["show_id"], ""), host_count=n))
    return out


def deeds(store: Store, rows: Sequence[Row]) -> list[host_pb2.Deed]:
    out = []
    for r in rows:
        d = store.one("SELECT h.name AS host, o.name AS owner, s.name AS show FROM deed d "
                      "JOIN host h ON h.id = d.host_id JOIN owner o ON o.id = d.owner_id "
                      "JOIN show s ON s.id = o.show_id WHERE d.id = ?", (r["id"],))
        out.append(host_pb2.Deed(id=r["id"], host=d["host"], owner=d["owner"], show=d["show"]))
    return out


# ---------------------------------------------------------------------------
# facilities, allocations, subscriptions
# ---------------------------------------------------------------------------
def facilities(rows: Sequence[Row]) -> list[facility_pb2.Facility]:
    return [facility_pb2.Facility(id=r["id"], name=r["name"]) for r in rows]


def allocations(store: Store, rows: Sequence[Row]) -> list[facility_pb2.Allocation]:
    names = _names(store)
    out = []
    for r in rows:
        s = store.one(
            "SELECT COUNT(*) AS hosts, SUM(cores) AS cores, SUM(idle_cores) AS idle, "
            "SUM(gpus) AS gpus, SUM(idle_gpus) AS idle_gpus, "
            "SUM(CASE WHEN lock_state != 'OPEN' THEN cores ELSE 0 END) AS locked, "
            "SUM(CASE WHEN lock_state != 'OPEN' THEN gpus ELSE 0 END) AS locked_gpus, "
            "SUM(CASE WHEN lock_state != 'OPEN' THEN 1 ELSE 0 END) AS locked_hosts, "
            "SUM(CASE WHEN state = 'DOWN' THEN 1 ELSE 0 END) AS down_hosts, "
            "SUM(CASE WHEN lock_state = 'OPEN' AND state = 'UP' THEN idle_cores ELSE 0 END) "
            "AS available, "
            "SUM(CASE WHEN lock_state = 'OPEN' AND state = 'UP' THEN idle_gpus ELSE 0 END) "
            "AS available_gpus FROM host WHERE alloc_id = ?", (r["id"],))
        total, idle = s["cores"] or 0, s["idle"] or 0
        gpus, idle_gpus = s["gpus"] or 0, s["idle_gpus"] or 0
        out.append(facility_pb2.Allocation(
            id=r["id"], name=r["name"], tag=r["tag"],
            facility=names["facility"].get(r["facility_id"], ""), billable=bool(r["billable"]),
            stats=facility_pb2.AllocationStats(
                cores=cores(total), available_cores=cores(s["available"] or 0),
                idle_cores=cores(idle), running_cores=cores(total - idle),
                locked_cores=cores(s["locked"] or 0), hosts=s["hosts"],
                locked_hosts=s["locked_hosts"] or 0, down_hosts=s["down_hosts"] or 0,
                gpus=float(gpus), available_gpus=float(s["available_gpus"] or 0),
                idle_gpus=float(idle_gpus), running_gpus=float(gpus - idle_gpus),
                locked_gpus=float(s["locked_gpus"] or 0)),
        ))
    return out


def subscriptions(store: Store, rows: Sequence[Row]) -> list[subscription_pb2.Subscription]:
    out = []
    for r in rows:
        a = store.one("SELECT a.name AS alloc, f.name AS facility FROM alloc a JOIN facility f "
                      "ON f.id = a.facility_id WHERE a.id = ?", (r["alloc_id"],))
        show = store.one("SELECT name FROM show WHERE id = ?", (r["show_id"],))["name"]
        used = store.one("SELECT SUM(p.cores) AS c, SUM(p.gpus) AS g FROM proc p JOIN host h "
                         "ON h.id = p.host_id WHERE p.show_id = ? AND h.alloc_id = ?",
                         (r["show_id"], r["alloc_id"]))
        out.append(subscription_pb2.Subscription(
            id=r["id"], name=f"{a['alloc']}.{show}", show_name=show, facility=a["facility"],
            allocation_name=a["alloc"], size=r["size"], burst=r["burst"],
            reserved_cores=used["c"] or 0, reserved_gpus=used["g"] or 0))
    return out


# ---------------------------------------------------------------------------
# services, limits, filters
# ---------------------------------------------------------------------------
def service(r: Row) -> service_pb2.Service:
    return service_pb2.Service(
        id=r["id"], name=r["name"], threadable=bool(r["threadable"]), min_cores=r["min_cores"],
        max_cores=r["max_cores"], min_memory=r["min_memory"], min_gpu_memory=r["min_gpu_memory"],
        tags=split_tags(r["tags"]), timeout=r["timeout"], timeout_llu=r["timeout_llu"],
        min_gpus=r["min_gpus"], max_gpus=r["max_gpus"],
        min_memory_increase=r["min_memory_increase"])


def service_override(r: Row) -> service_pb2.ServiceOverride:
    return service_pb2.ServiceOverride(id=r["id"], data=service(r))


def filters(rows: Sequence[Row]) -> list[filter_pb2.Filter]:
    return [filter_pb2.Filter(id=r["id"], name=r["name"], type=r["type"], order=r["ord"],
                              enabled=bool(r["enabled"])) for r in rows]


def matchers(rows: Sequence[Row]) -> list[filter_pb2.Matcher]:
    return [filter_pb2.Matcher(id=r["id"], subject=r["subject"], type=r["type"],
                               input=r["input"]) for r in rows]


def actions(rows: Sequence[Row]) -> list[filter_pb2.Action]:
    return [filter_pb2.Action(
        id=r["id"], type=r["type"], value_type=r["value_type"], group_value=r["group_value"],
        string_value=r["string_value"], integer_value=r["integer_value"],
        float_value=r["float_value"], boolean_value=bool(r["boolean_value"])) for r in rows]


# ---------------------------------------------------------------------------
def _names(store: Store) -> dict[str, dict[str, str]]:
    """id -> name for the small tables every listing refers to."""
    return {
        "show": {r["id"]: r["name"] for r in store.all("SELECT id, name FROM show")},
        "folder": {r["id"]: r["name"] for r in store.all("SELECT id, name FROM folder")},
        "facility": {r["id"]: r["name"] for r in store.all("SELECT id, name FROM facility")},
        "alloc": {r["id"]: r["name"] for r in store.all("SELECT id, name FROM alloc")},
    }
