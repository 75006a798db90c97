"""The farm's domain operations, shared by the servants, the seed data and the dispatcher.

Each operation is one consistent change (call it inside ``store.tx()``):
creating a host as an RQD registration would, creating a job with its
layers and frames, booking a frame on a host, ending a run. Servants keep
to reading and to the simple updates of their own interface; anything with
side effects on other objects lives here so that there is one version of it.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Sequence

from . import depends, frameset
from .messages import join_tags, proc_name
from .framelogs import FRAME_INFO_SQL, FrameLogs
from .stats import Counters
from .store import Store, new_id, now

Row = sqlite3.Row


@dataclass
class LayerSpec:
    """A layer as a job spec describes it; None means 'take the service default'."""

    name: str
    range: str
    command: str = "echo render"
    chunk: int = 1
    type: str = "RENDER"
    services: Sequence[str] = ("default",)
    min_cores: int | None = None        # units
    threadable: bool | None = None
    min_memory: int | None = None       # KB
    min_gpus: int | None = None
    min_gpu_memory: int | None = None
    tags: Sequence[str] | None = None
    timeout: int | None = None
    timeout_llu: int | None = None
    limits: Sequence[str] = ()
    outputs: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)  # parsed from specs, not stored


@dataclass
class JobSpec:
    show_id: str
    shot: str
    user: str
    name: str                           # the full job name
    layers: list[LayerSpec] = field(default_factory=list)
    facility: str | None = None         # facility name; None = the default facility
    paused: bool = False
    priority: int = 1
    max_retries: int = 1
    auto_eat: bool = False
    uid: int | None = None
    os: str = ""
    email: str = ""
    max_cores: int | None = None        # units
    max_gpus: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # parsed from specs, not stored
    state: str = "PENDING"              # POSTED for a post-job until its parent finishes
    parent_job_id: str | None = None    # set on post-jobs


# States a frame cannot hold while a depend on it is unsatisfied: Cuebot's
# database turns them into DEPEND (a trigger on the frame table).
HELD_BACK = frozenset(("WAITING", "SUCCEEDED", "DEAD", "CHECKPOINT"))


def settled(state: str, depend_count: int) -> str:
    """The state a frame really takes when set to ``state`` with ``depend_count`` depends.

    A frame can be RUNNING while a depend on it comes back (Depend.Unsatisfy,
    or a retried frame it waits on); when that render ends it goes to DEPEND,
    not to WAITING or SUCCEEDED, and runs again once the depend is satisfied.
    """
    return "DEPEND" if depend_count > 0 and state in HELD_BACK else state


class FarmError(Exception):
    """A domain rule refused the operation; servants turn it into Cuebot's error."""


class Farm:
    def __init__(self, store: Store, logs: FrameLogs | None = None) -> None:
        self.store = store
        self.counters = Counters()   # GetSystemStats' numbers, since this farm was opened
        self.logs = logs             # where renders write their logs (None: nowhere)

    # -- lookups ----------------------------------------------------------
    def root_folder(self, show_id: str) -> Row:
        row = self.store.one("SELECT * FROM folder WHERE show_id = ? AND parent_id IS NULL "
                             "ORDER BY seq LIMIT 1", (show_id,))
        if row is None:
            raise FarmError(f"show {show_id} has no root group")
        return row

    def default_facility(self) -> Row:
        row = self.store.one("SELECT * FROM facility WHERE is_default = 1 ORDER BY name LIMIT 1")
        return row or self.store.one("SELECT * FROM facility ORDER BY name LIMIT 1")

    def default_alloc(self) -> Row:
        return self.store.one("SELECT * FROM alloc WHERE is_default = 1 LIMIT 1")

    def service_for(self, names: Sequence[str], show_id: str) -> Row:
        """The first known service of ``names`` (show override first), else 'default'."""
        for name in list(names) + ["default"]:
            for show in (show_id, None):
                row = self.store.one(
                    "SELECT * FROM service WHERE name = ? AND show_id IS ?", (name, show))
                if row is not None:
                    return row
        raise FarmError("no default service")

    # -- shows ------------------------------------------------------------
    def create_show(self, name: str, *, min_cores: int = 100, max_cores: int = 10000,
                    active: bool = True) -> str:
        """A show as CreateShow makes it: a root group and a department config, no subscriptions."""
        s = self.store
        unknown = s.one("SELECT id FROM dept WHERE is_default = 1")["id"]
        show_id = new_id()
        s.insert("show", id=show_id, name=name, default_min_cores=min_cores,
                 default_max_cores=max_cores, active=int(active))
        s.insert("folder", id=new_id(), show_id=show_id, parent_id=None, name=name,
                 dept_id=unknown, level=0)
        s.insert("point", id=new_id(), show_id=show_id, dept_id=unknown)
        return show_id

    # -- hosts ------------------------------------------------------------
    def add_host(self, name: str, *, alloc_id: str | None = None, cores: int = 1600,
                 memory: int = 67108864, gpus: int = 0, gpu_memory: int = 0,
                 state: str = "UP", lock_state: str = "OPEN", nimby: bool = False,
                 os: str = "rhel40", hardware_tags: Sequence[str] = (),
                 manual_tags: Sequence[str] = (), load: int = 0) -> str:
        """A host as an RQD registration makes one (cores in units, memory in KB)."""
        alloc = (self.store.one("SELECT * FROM alloc WHERE id = ?", (alloc_id,))
                 if alloc_id else self.default_alloc())
        t = now()
        host_id = new_id()
        self.store.insert(
            "host", id=host_id, name=name, alloc_id=alloc["id"], lock_state=lock_state,
            state=state, nimby_enabled=int(nimby), thread_mode="ALL" if nimby else "AUTO",
            cores=cores, idle_cores=cores, memory=memory, idle_memory=memory, gpus=gpus,
            idle_gpus=gpus, gpu_memory=gpu_memory, idle_gpu_memory=gpu_memory,
            total_swap=memory // 4, free_swap=memory // 4, total_memory=memory,
            free_memory=memory, total_mcp=104857600, free_mcp=94371840,
            total_gpu_memory=gpu_memory, free_gpu_memory=gpu_memory, load=load,
            boot_time=t - 86400 * 3, ping_time=t, os=os)
        tags = [(alloc["tag"], "ALLOC"), (name, "HOSTNAME")]
        tags += [(x, "HARDWARE") for x in hardware_tags] + [(x, "MANUAL") for x in manual_tags]
        for tag, kind in tags:
            self.store.insert("host_tag", host_id=host_id, tag=tag, type=kind)
        return host_id

    # -- jobs -------------------------------------------------------------
    def create_job(self, spec: JobSpec) -> str:
        """A PENDING job with its layers and WAITING frames; the show's counters move."""
        s = self.store
        show = s.one("SELECT * FROM show WHERE id = ?", (spec.show_id,))
        folder = self.root_folder(spec.show_id)
        if spec.facility:
            facility = s.one("SELECT * FROM facility WHERE name = ?", (spec.facility.lower(),))
            if facility is None:
                raise FarmError(f"facility {spec.facility} does not exist")
        else:
            facility = self.default_facility()
        if s.one("SELECT 1 FROM job WHERE visible_name = ?", (spec.name,)):
            raise FarmError(f"The job {spec.name} is already pending")
        t = now()
        job_id = new_id()
        s.insert(
            "job", id=job_id, show_id=spec.show_id, folder_id=folder["id"],
            facility_id=facility["id"], dept_id=folder["dept_id"], name=spec.name,
            visible_name=spec.name, shot=spec.shot, user=spec.user, uid=spec.uid,
            email=spec.email, state=spec.state, parent_job_id=spec.parent_job_id,
            priority=spec.priority,
            max_cores=spec.max_cores if spec.max_cores is not None else 10000,
            max_gpus=spec.max_gpus if spec.max_gpus is not None else 100,
            is_paused=int(spec.paused), auto_eat=int(spec.auto_eat),
            max_retries=0 if spec.auto_eat else spec.max_retries, os=spec.os,
            log_dir=(self.logs.job_dir(show["name"], spec.shot, spec.name, job_id) if self.logs
                     else f"/shots/{show['name']}/{spec.shot}/logs/{spec.name}--{job_id}"),
            start_time=t)
        total = 0
        for order, layer in enumerate(spec.layers, start=1):
            total += self._create_layer(job_id, spec.show_id, order, layer, t)
        s.run("UPDATE show SET created_job_count = created_job_count + 1, "
              "created_frame_count = created_frame_count + ? WHERE id = ?", (total, spec.show_id))
        return job_id

    def _create_layer(self, job_id: str, show_id: str, order: int, spec: LayerSpec,
                      t: int) -> int:
        s = self.store
        svc = self.service_for(spec.services, show_id)
        services = list(spec.services) or ["default"]
        if not any(s.one("SELECT 1 FROM service WHERE name = ?", (n,)) for n in services):
            services.append("default")
        min_cores = spec.min_cores if spec.min_cores is not None else svc["min_cores"]
        threadable = spec.threadable if spec.threadable is not None else bool(svc["threadable"])
        if 0 < min_cores < 100:
            threadable = False
        layer_id = new_id()
        s.insert(
            "layer", id=layer_id, job_id=job_id, name=spec.name, type=spec.type,
            dispatch_order=order, command=spec.command, range=spec.range,
            chunk_size=spec.chunk, min_cores=min_cores, max_cores=svc["max_cores"],
            threadable=int(threadable),
            min_memory=spec.min_memory if spec.min_memory is not None else svc["min_memory"],
            min_gpus=spec.min_gpus if spec.min_gpus is not None else svc["min_gpus"],
            max_gpus=svc["max_gpus"],
            min_gpu_memory=(spec.min_gpu_memory if spec.min_gpu_memory is not None
                            else svc["min_gpu_memory"]),
            tags=join_tags(spec.tags) if spec.tags is not None else svc["tags"],
            services=",".join(services),
            timeout=spec.timeout if spec.timeout is not None else svc["timeout"],
            timeout_llu=spec.timeout_llu if spec.timeout_llu is not None else svc["timeout_llu"],
            outputs="\n".join(spec.outputs))
        for name in spec.limits:
            limit = s.one("SELECT id FROM limit_record WHERE name = ?", (name,))
            if limit is None:
                raise FarmError(f"limit {name} does not exist")
            s.run("INSERT OR IGNORE INTO layer_limit (layer_id, limit_id, source, created) "
                  "VALUES (?, ?, 'SPEC', ?)", (layer_id, limit["id"], t))
        numbers = frameset.chunk_starts(frameset.parse(spec.range), spec.chunk)
        s.db.executemany(
            "INSERT INTO frame (id, layer_id, job_id, name, number, dispatch_order, state, "
            "llu_time, eligible_time, submission_time, updated_time) "
            "VALUES (?, ?, ?, ?, ?, ?, 'WAITING', ?, ?, ?, ?)",
            [(new_id(), layer_id, job_id, f"{n:04d}-{spec.name}", n, i, t, t, t, t)
             for i, n in enumerate(numbers)])
        return len(numbers)

    def depend_layer_on_layer(self, layer_id: str, on_layer_id: str) -> str:
        """LAYER_ON_LAYER: every frame of ``layer_id`` waits for all of ``on_layer_id``."""
        er = self.store.one("SELECT job_id FROM layer WHERE id = ?", (layer_id,))
        on = self.store.one("SELECT job_id FROM layer WHERE id = ?", (on_layer_id,))
        return depends.create(self, "LAYER_ON_LAYER", depends.Side(er["job_id"], layer_id),
                              depends.Side(on["job_id"], on_layer_id))

    # -- running frames ---------------------------------------------------
    def book(self, frame_id: str, host_id: str, *, cores: int | None = None,
             memory: int | None = None, gpus: int = 0, started: int | None = None,
             run_until: float = 0.0) -> str:
        """Start ``frame_id`` on ``host_id``: a proc takes the resources, the frame RUNS."""
        s = self.store
        frame = s.one("SELECT f.*, l.min_cores, l.min_memory, l.min_gpu_memory, j.show_id "
                      "FROM frame f JOIN layer l ON l.id = f.layer_id JOIN job j "
                      "ON j.id = f.job_id WHERE f.id = ?", (frame_id,))
        host = s.one("SELECT * FROM host WHERE id = ?", (host_id,))
        core_units = cores if cores is not None else max(frame["min_cores"], 100)
        mem = memory if memory is not None else frame["min_memory"]
        t = started if started is not None else now()
        proc_id = new_id()
        s.insert("proc", id=proc_id, host_id=host_id, frame_id=frame_id, job_id=frame["job_id"],
                 layer_id=frame["layer_id"], show_id=frame["show_id"], cores=core_units,
                 memory=mem, gpus=gpus, gpu_memory=frame["min_gpu_memory"],
                 used_memory=mem // 2, max_rss=mem // 2, booked_time=t, dispatch_time=t,
                 ping_time=now(), run_until=run_until)
        s.run("UPDATE host SET idle_cores = idle_cores - ?, idle_memory = idle_memory - ?, "
              "idle_gpus = idle_gpus - ?, free_memory = free_memory - ? WHERE id = ?",
              (core_units, mem, gpus, mem // 2, host_id))
        s.run("UPDATE frame SET state = 'RUNNING', retry_count = retry_count + 1, "
              "start_time = ?, stop_time = 0, exit_status = -1, reserved_memory = ?, "
              "reserved_gpu_memory = ?, used_memory = ?, last_resource = ?, llu_time = ?, "
              "updated_time = ? WHERE id = ?",
              (t, mem, frame["min_gpu_memory"], mem // 2,
               proc_name(host["name"], core_units, gpus), t, now(), frame_id))
        if self.logs is not None:
            self.logs.start(self.frame_info(frame_id), host["name"], core_units, t)
        return proc_id

    def frame_info(self, frame_id: str) -> Row:
        """What a frame's log names (job, layer, command, ids)."""
        return self.store.one(FRAME_INFO_SQL, (frame_id,))

    def _log_end(self, frame: Row, proc: Row | None, t: int, exit_status: int,
                 signal: int = 0, kill_message: str = "") -> None:
        if self.logs is None or proc is None:
            return
        host = self.store.one("SELECT name FROM host WHERE id = ?", (proc["host_id"],))
        self.logs.finish(self.frame_info(frame["id"]), host["name"] if host else "",
                         frame["start_time"] or t, t, exit_status, signal, proc["max_rss"],
                         kill_message)

    def release(self, proc_id: str) -> Row | None:
        """Remove a proc and give its resources back to the host; the proc row as it was."""
        s = self.store
        proc = s.one("SELECT * FROM proc WHERE id = ?", (proc_id,))
        if proc is None:
            return None
        s.run("DELETE FROM proc WHERE id = ?", (proc_id,))
        s.run("UPDATE host SET idle_cores = idle_cores + ?, idle_memory = idle_memory + ?, "
              "idle_gpus = idle_gpus + ?, free_memory = MIN(total_memory, free_memory + ?) "
              "WHERE id = ?",
              (proc["cores"], proc["memory"], proc["gpus"], proc["memory"] // 2, proc["host_id"]))
        return proc

    def finish_run(self, frame_id: str, state: str, exit_status: int,
                   stopped: int | None = None, *, signal: int = 0,
                   kill_message: str = "") -> None:
        """End a frame's run: SUCCEEDED, DEAD or back to WAITING, with Cuebot's counters.

        The proc (if any) is released. Counters: rendered (exit 0) or failed
        frame counts and core-seconds on the job, layer and show; max RSS.
        """
        s = self.store
        frame = s.one("SELECT * FROM frame WHERE id = ?", (frame_id,))
        proc = s.one("SELECT * FROM proc WHERE frame_id = ?", (frame_id,))
        t = stopped if stopped is not None else now()
        core_units = proc["cores"] if proc else 100
        seconds = max(0, t - frame["start_time"]) if frame["start_time"] else 0
        core_sec = seconds * core_units // 100
        rss = proc["max_rss"] if proc else frame["max_rss"]
        self._log_end(frame, proc, t, exit_status, signal, kill_message)
        if proc:
            self.release(proc["id"])
        state = settled(state, frame["depend_count"])
        s.run("UPDATE frame SET state = ?, exit_status = ?, stop_time = ?, max_rss = ?, "
              "total_core_time = total_core_time + ?, llu_time = ?, updated_time = ?, "
              "eligible_time = CASE WHEN ? = 'WAITING' THEN ? ELSE eligible_time END "
              "WHERE id = ?",
              (state, exit_status, t, rss, core_sec, t, now(), state, t, frame_id))
        good = exit_status == 0
        kind = "rendered" if good else "failed"
        for table, key in (("job", frame["job_id"]), ("layer", frame["layer_id"])):
            s.run(f"UPDATE {table} SET {kind}_frame_count = {kind}_frame_count + 1, "
                  f"{kind}_core_sec = {kind}_core_sec + ?, max_rss = MAX(max_rss, ?) "
                  f"WHERE id = ?", (core_sec, rss, key))
        s.run(f"UPDATE show SET {kind}_frame_count = {kind}_frame_count + 1 WHERE id = "
              f"(SELECT show_id FROM job WHERE id = ?)", (frame["job_id"],))
        if good:
            s.run("UPDATE layer SET low_frame_sec = CASE WHEN low_frame_sec = 0 OR ? < "
                  "low_frame_sec THEN ? ELSE low_frame_sec END, high_frame_sec = "
                  "MAX(high_frame_sec, ?) WHERE id = ?",
                  (seconds, seconds, seconds, frame["layer_id"]))

    # -- depends ----------------------------------------------------------
    def satisfy(self, depend_id: str) -> bool:
        """Satisfy a depend as Cuebot does; False if nothing changed.

        A FRAME_BY_FRAME container satisfies its active children and stays
        as it is; other containers (PREVIOUS_FRAME) cannot be satisfied at
        all. Any other active depend goes inactive and its frames' depend
        counts drop (a DEPEND frame reaching 0 is WAITING).
        """
        s = self.store
        dep = s.one("SELECT * FROM depend WHERE id = ?", (depend_id,))
        if dep is None:
            return False
        if dep["type"] == "FRAME_BY_FRAME":
            children = s.all("SELECT id FROM depend WHERE parent_id = ? AND active = 1 AND "
                             "er_job_id = ? AND on_job_id = ?",
                             (depend_id, dep["er_job_id"], dep["on_job_id"]))
            for child in children:
                self.satisfy(child["id"])
            return bool(children)
        if dep["composite"] or not dep["active"]:
            return False
        s.run("UPDATE depend SET active = 0, signature = id WHERE id = ?", (depend_id,))
        where = depends.er_where(dep)
        if where is not None:
            depends.release(self, *where)
        return True

    def what_depends_on_frame(self, frame: Row, active: bool = True) -> list[Row]:
        """Depends waiting on this frame (and any-frame LAYER_ON_LAYER on its layer)."""
        return self.store.all(
            f"SELECT * FROM depend WHERE active = ? AND on_job_id = ? AND ((on_frame_id = ? AND "
            f"type IN {depends.sql_list(depends.ON_FRAME_TYPES)}) OR (on_layer_id = ? AND "
            f"type = 'LAYER_ON_LAYER' AND any_frame = 1)) ORDER BY seq",
            (int(active), frame["job_id"], frame["id"], frame["layer_id"]))

    def what_depends_on_layer(self, layer_id: str, active: bool = True) -> list[Row]:
        return self.store.all(
            f"SELECT * FROM depend WHERE active = ? AND on_layer_id = ? AND type IN "
            f"{depends.sql_list(depends.ON_LAYER_TYPES)} ORDER BY seq", (int(active), layer_id))

    def what_depends_on_job(self, job_id: str) -> list[Row]:
        return self.store.all(
            f"SELECT * FROM depend WHERE active = 1 AND on_job_id = ? AND type IN "
            f"{depends.sql_list(depends.ON_JOB_TYPES)} ORDER BY seq", (job_id,))

    def frame_succeeded(self, frame_id: str) -> None:
        """Satisfy what waited on this frame, and on its layer once that is complete.

        Depends on the job are satisfied when the job finishes (check_job_done).
        """
        s = self.store
        frame = s.one("SELECT id, layer_id, job_id, state FROM frame WHERE id = ?", (frame_id,))
        if frame["state"] != "SUCCEEDED":  # held back to DEPEND (see settled): not done yet
            return
        for dep in self.what_depends_on_frame(frame):
            self.satisfy(dep["id"])
        if depends.layer_complete(self, frame["layer_id"]):
            for dep in self.what_depends_on_layer(frame["layer_id"]):
                self.satisfy(dep["id"])

    def update_job_state(self, job_id: str) -> str:
        """PENDING -> FINISHED once nothing is waiting, running, dead or depending."""
        s = self.store
        job = s.one("SELECT state FROM job WHERE id = ?", (job_id,))
        if job["state"] != "PENDING":
            return job["state"]
        left = s.one("SELECT COUNT(*) AS n FROM frame WHERE job_id = ? AND state IN "
                     "('WAITING', 'RUNNING', 'DEAD', 'DEPEND', 'CHECKPOINT', 'SETUP')",
                     (job_id,))["n"]
        if left == 0:
            self.finish_job(job_id)
            return "FINISHED"
        return "PENDING"

    def finish_job(self, job_id: str) -> None:
        """FINISHED: stop time set, the name released for a new launch; post-jobs may start."""
        if self.store.run("UPDATE job SET state = 'FINISHED', stop_time = ?, "
                          "visible_name = NULL WHERE id = ? AND state != 'FINISHED'",
                          (now(), job_id)):
            self.store.run("UPDATE job SET state = 'PENDING' WHERE parent_job_id = ? AND "
                           "state = 'POSTED'", (job_id,))

    # -- manual frame, job and depend operations ----------------------------
    # The Job/Layer/Frame/Depend RPCs change frames through these, so that a
    # frame's proc, its host's idle resources, the job's state and the
    # depends on the work always move together (and the dispatcher can use
    # the same rules). Frame.Kill is a failed run, as RQD would report it,
    # so Cuebot's retry rules and failure counters apply; Retry, Eat and
    # Job.Kill just end the render before changing the frame.
    def failed_state(self, frame_id: str) -> str:
        """Where a failed run leaves a frame: EATEN (auto-eat), DEAD (no retries left), WAITING."""
        row = self.store.one("SELECT f.retry_count, j.max_retries, j.auto_eat FROM frame f "
                             "JOIN job j ON j.id = f.job_id WHERE f.id = ?", (frame_id,))
        if row["auto_eat"]:
            return "EATEN"
        return "DEAD" if row["retry_count"] >= row["max_retries"] else "WAITING"

    def kill_frame(self, frame_id: str) -> bool:
        """Kill a running frame's render (a failed run); False if it was not running."""
        if self.store.one("SELECT 1 FROM proc WHERE frame_id = ?", (frame_id,)) is None:
            return False
        state = self.failed_state(frame_id)
        self.finish_run(frame_id, state, 1, signal=9, kill_message="Frame killed by request")
        if state == "EATEN":
            self.check_job_done(self._job_of(frame_id))
        return True

    def stop_frame(self, frame_id: str, state: str) -> None:
        """End a frame's render, if any (proc released, not counted), and set ``state``."""
        s = self.store
        t = now()
        proc = s.one("SELECT * FROM proc WHERE frame_id = ?", (frame_id,))
        if proc is not None:
            frame = s.one("SELECT * FROM frame WHERE id = ?", (frame_id,))
            self._log_end(frame, proc, t, 1, 9, f"Killed by Cuebot (frame {state.lower()})")
            self.release(proc["id"])
            s.run("UPDATE frame SET stop_time = ?, llu_time = ? WHERE id = ?", (t, t, frame_id))
        held = s.one("SELECT depend_count FROM frame WHERE id = ?", (frame_id,))
        state = settled(state, held["depend_count"] if held else 0)
        s.run("UPDATE frame SET state = ?, updated_time = ?, eligible_time = CASE WHEN ? = "
              "'WAITING' THEN ? ELSE eligible_time END WHERE id = ?",
              (state, t, state, t, frame_id))

    def retry_frame(self, frame_id: str) -> None:
        """Back to WAITING (DEPEND while depends are unsatisfied); the job is PENDING again.

        A running render is stopped first. Depends that this frame's work had
        satisfied (frame-on-frame on it, layer-on-layer on its layer) hold
        their frames again.
        """
        frame = self.store.one("SELECT * FROM frame WHERE id = ?", (frame_id,))
        self.stop_frame(frame_id, "DEPEND" if frame["depend_count"] > 0 else "WAITING")
        for dep in (self.what_depends_on_frame(frame, active=False)
                    + self.what_depends_on_layer(frame["layer_id"], active=False)):
            self.unsatisfy(dep["id"])
        self.reopen_job(frame["job_id"])

    def eat_frame(self, frame_id: str) -> None:
        """EATEN (a SUCCEEDED frame stays SUCCEEDED); depends on it are not satisfied."""
        frame = self.store.one("SELECT state, job_id FROM frame WHERE id = ?", (frame_id,))
        if frame["state"] not in ("SUCCEEDED", "EATEN"):
            self.stop_frame(frame_id, "EATEN")
        self.check_job_done(frame["job_id"])

    def mark_as_waiting(self, frame_id: str) -> bool:
        """A DEPEND frame goes WAITING with its depend count cleared; others are untouched."""
        t = now()
        return self.store.run(
            "UPDATE frame SET state = 'WAITING', depend_count = 0, updated_time = ?, "
            "llu_time = ?, eligible_time = ? WHERE id = ? AND state = 'DEPEND'",
            (t, t, t, frame_id)) == 1

    def unsatisfy(self, depend_id: str) -> bool:
        """Depend.Unsatisfy: only FRAME_ON_FRAME and LAYER_ON_LAYER come back.

        Their frames count the depend again (WAITING, SUCCEEDED, DEAD frames go DEPEND).
        """
        s = self.store
        dep = s.one("SELECT * FROM depend WHERE id = ?", (depend_id,))
        if dep is None or dep["active"] or dep["type"] not in ("FRAME_ON_FRAME",
                                                               "LAYER_ON_LAYER"):
            return False
        s.run("UPDATE depend SET active = 1 WHERE id = ?", (depend_id,))
        where = depends.er_where(dep)
        if where is not None:
            depends.hold(self, *where)
        return True

    def reopen_job(self, job_id: str) -> None:
        """A FINISHED job is PENDING again; as in Cuebot only the state changes.

        Its visible name stays released and its stop time set, so look-ups by
        name (FindJob, FindLayer, FindFrame, Frame.GetFrames) no longer find it.
        """
        self.store.run("UPDATE job SET state = 'PENDING' WHERE id = ? AND state = 'FINISHED'",
                       (job_id,))

    def check_job_done(self, job_id: str) -> str:
        """update_job_state, and when that finishes the job, satisfy what waited on it."""
        before = self.store.one("SELECT state FROM job WHERE id = ?", (job_id,))["state"]
        state = self.update_job_state(job_id)
        if before == "PENDING" and state == "FINISHED":
            self.satisfy_depends_on_job(job_id)
        return state

    def satisfy_depends_on_job(self, job_id: str) -> None:
        """What waits on the job as a whole (JOB/LAYER/FRAME_ON_JOB) is released."""
        for dep in self.what_depends_on_job(job_id):
            self.satisfy(dep["id"])

    def kill_job(self, job_id: str) -> bool:
        """Job.Kill with a reason: a PENDING job ends FINISHED; False if it was not PENDING.

        Running frames go back to WAITING (their procs released), WAITING and
        DEPEND frames keep their state, the name is freed, depends on the job
        are satisfied and its POSTED post-jobs become PENDING.
        """
        s = self.store
        job = s.one("SELECT state FROM job WHERE id = ?", (job_id,))
        if job is None or job["state"] != "PENDING":
            return False
        for f in s.all("SELECT frame_id FROM proc WHERE job_id = ? AND frame_id IS NOT NULL",
                       (job_id,)):
            self.stop_frame(f["frame_id"], "WAITING")
        self.finish_job(job_id)
        self.satisfy_depends_on_job(job_id)
        s.run("UPDATE job SET state = 'PENDING' WHERE parent_job_id = ? AND state = 'POSTED'",
              (job_id,))
        return True

    # -- procs and job placement ------------------------------------------
    def kill_proc(self, proc_id: str) -> None:
        """Proc.Kill: the proc is gone, its host's resources are back, its frame WAITS again.

        The frame is not counted as a failure: the kill came from a person,
        not from the render, so it simply goes back in line.
        """
        proc = self.store.one("SELECT frame_id FROM proc WHERE id = ?", (proc_id,))
        if proc is None:
            return
        self.counters.cleared_procs += 1
        if proc["frame_id"]:
            self.stop_frame(proc["frame_id"], "WAITING")
        else:
            self.release(proc_id)

    def move_job(self, job_id: str, folder: Row, inherit: Sequence[str] = (
            "priority", "min_cores", "max_cores")) -> None:
        """Put a job in a group; of ``inherit``, the group's job defaults that are set apply."""
        values = [(c, folder[f"default_job_{c}"]) for c in inherit
                  if folder[f"default_job_{c}"] != -1]
        sets = ", ".join(["folder_id = ?", "dept_id = ?"] + [f"{c} = ?" for c, _ in values])
        self.store.run(f"UPDATE job SET {sets} WHERE id = ?",
                       (folder["id"], folder["dept_id"], *(v for _, v in values), job_id))

    def _job_of(self, frame_id: str) -> str:
        return self.store.one("SELECT job_id FROM frame WHERE id = ?", (frame_id,))["job_id"]
