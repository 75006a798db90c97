"""The sandbox's state: one SQLite database, one writer.

Every RPC runs on the server's event loop and does its database work without
awaiting in between, inside ``Store.tx()``; so transactions are serialized
by construction and concurrent RPCs cannot interleave half-done writes. WAL
journaling keeps a file database consistent across a crash or restart.

Units follow Cuebot: cores as integer units (100 = one core), memory in KB,
times in epoch seconds. Statistics (frame counts per state, reserved cores)
are computed from the rows when read, so they can never drift from them;
only Cuebot's lifetime counters (created/rendered/failed counts) are stored.
"""
from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS facility (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, is_default INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS alloc (
    id TEXT PRIMARY KEY, facility_id TEXT NOT NULL REFERENCES facility(id),
    name TEXT NOT NULL,                      -- full name: <facility>.<alloc>
    tag TEXT NOT NULL, billable INTEGER NOT NULL DEFAULT 0,
    is_default INTEGER NOT NULL DEFAULT 0, enabled INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS show (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- insertion order, for listings
    id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    default_min_cores INTEGER NOT NULL DEFAULT 100, default_max_cores INTEGER NOT NULL DEFAULT 10000,
    default_min_gpus INTEGER NOT NULL DEFAULT 100, default_max_gpus INTEGER NOT NULL DEFAULT 100000,
    comment_email TEXT NOT NULL DEFAULT '', booking_enabled INTEGER NOT NULL DEFAULT 1,
    dispatch_enabled INTEGER NOT NULL DEFAULT 1, active INTEGER NOT NULL DEFAULT 1,
    scheduler_managed INTEGER NOT NULL DEFAULT 0,
    created_job_count INTEGER NOT NULL DEFAULT 0, created_frame_count INTEGER NOT NULL DEFAULT 0,
    rendered_frame_count INTEGER NOT NULL DEFAULT 0, failed_frame_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS show_alias (
    name TEXT PRIMARY KEY, show_id TEXT NOT NULL REFERENCES show(id));
CREATE TABLE IF NOT EXISTS dept (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, is_default INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS point (                 -- a department's config for one show
    id TEXT PRIMARY KEY, show_id TEXT NOT NULL REFERENCES show(id),
    dept_id TEXT NOT NULL REFERENCES dept(id), ti_managed INTEGER NOT NULL DEFAULT 0,
    ti_task TEXT NOT NULL DEFAULT '', min_cores INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS task (
    id TEXT PRIMARY KEY, point_id TEXT NOT NULL REFERENCES point(id), shot TEXT NOT NULL,
    min_cores INTEGER NOT NULL DEFAULT 0, adjust_cores INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS folder (                -- a job group
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    show_id TEXT NOT NULL REFERENCES show(id), parent_id TEXT, name TEXT NOT NULL,
    dept_id TEXT NOT NULL REFERENCES dept(id), level INTEGER NOT NULL DEFAULT 0,
    default_job_priority INTEGER NOT NULL DEFAULT -1,
    default_job_min_cores INTEGER NOT NULL DEFAULT -1, default_job_max_cores INTEGER NOT NULL DEFAULT -1,
    default_job_min_gpus INTEGER NOT NULL DEFAULT -1, default_job_max_gpus INTEGER NOT NULL DEFAULT -1,
    min_cores INTEGER NOT NULL DEFAULT 0, max_cores INTEGER NOT NULL DEFAULT -1,
    min_gpus INTEGER NOT NULL DEFAULT 0, max_gpus INTEGER NOT NULL DEFAULT -1);
CREATE TABLE IF NOT EXISTS subscription (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    show_id TEXT NOT NULL REFERENCES show(id), alloc_id TEXT NOT NULL REFERENCES alloc(id),
    size INTEGER NOT NULL, burst INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS service (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    show_id TEXT REFERENCES show(id),          -- NULL: a global service; else a show override
    name TEXT NOT NULL, threadable INTEGER NOT NULL DEFAULT 0,
    min_cores INTEGER NOT NULL DEFAULT 100, max_cores INTEGER NOT NULL DEFAULT 0,
    min_memory INTEGER NOT NULL DEFAULT 3355443, min_gpus INTEGER NOT NULL DEFAULT 0,
    max_gpus INTEGER NOT NULL DEFAULT 0, min_gpu_memory INTEGER NOT NULL DEFAULT 0,
    timeout INTEGER NOT NULL DEFAULT 0, timeout_llu INTEGER NOT NULL DEFAULT 0,
    min_memory_increase INTEGER NOT NULL DEFAULT 2097152,
    tags TEXT NOT NULL DEFAULT '');            -- ' | ' separated, in order
CREATE UNIQUE INDEX IF NOT EXISTS service_name ON service(ifnull(show_id, ''), name);
CREATE TABLE IF NOT EXISTS job (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    show_id TEXT NOT NULL REFERENCES show(id), folder_id TEXT NOT NULL REFERENCES folder(id),
    facility_id TEXT NOT NULL REFERENCES facility(id), dept_id TEXT NOT NULL REFERENCES dept(id),
    name TEXT NOT NULL,
    visible_name TEXT,                         -- the name while PENDING; NULL once finished
    shot TEXT NOT NULL, user TEXT NOT NULL, uid INTEGER, email TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'PENDING',     -- JobState name
    priority INTEGER NOT NULL DEFAULT 1,
    min_cores INTEGER NOT NULL DEFAULT 100, max_cores INTEGER NOT NULL DEFAULT 10000,
    min_gpus INTEGER NOT NULL DEFAULT 0, max_gpus INTEGER NOT NULL DEFAULT 100,
    is_paused INTEGER NOT NULL DEFAULT 0, auto_eat INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 1, os TEXT NOT NULL DEFAULT '',
    log_dir TEXT NOT NULL DEFAULT '', start_time INTEGER NOT NULL, stop_time INTEGER NOT NULL DEFAULT 0,
    parent_job_id TEXT,                        -- set on post-jobs (POSTED until the parent ends)
    rendered_frame_count INTEGER NOT NULL DEFAULT 0, failed_frame_count INTEGER NOT NULL DEFAULT 0,
    rendered_core_sec INTEGER NOT NULL DEFAULT 0, failed_core_sec INTEGER NOT NULL DEFAULT 0,
    max_rss INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS job_visible_name ON job(visible_name);
CREATE TABLE IF NOT EXISTS layer (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES job(id) ON DELETE CASCADE,
    name TEXT NOT NULL, type TEXT NOT NULL DEFAULT 'RENDER', dispatch_order INTEGER NOT NULL,
    command TEXT NOT NULL DEFAULT '', range TEXT NOT NULL, chunk_size INTEGER NOT NULL DEFAULT 1,
    min_cores INTEGER NOT NULL DEFAULT 100, max_cores INTEGER NOT NULL DEFAULT 0,
    threadable INTEGER NOT NULL DEFAULT 0, min_memory INTEGER NOT NULL DEFAULT 3355443,
    min_gpus INTEGER NOT NULL DEFAULT 0, max_gpus INTEGER NOT NULL DEFAULT 0,
    min_gpu_memory INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '',             -- ' | ' separated
    services TEXT NOT NULL DEFAULT '',         -- ',' separated
    timeout INTEGER NOT NULL DEFAULT 0, timeout_llu INTEGER NOT NULL DEFAULT 0,
    memory_optimizer_enabled INTEGER NOT NULL DEFAULT 1,
    start_after INTEGER NOT NULL DEFAULT 0, start_after_reason TEXT NOT NULL DEFAULT '',
    outputs TEXT NOT NULL DEFAULT '',          -- newline separated output paths
    rendered_frame_count INTEGER NOT NULL DEFAULT 0, failed_frame_count INTEGER NOT NULL DEFAULT 0,
    rendered_core_sec INTEGER NOT NULL DEFAULT 0, failed_core_sec INTEGER NOT NULL DEFAULT 0,
    max_rss INTEGER NOT NULL DEFAULT 0, low_frame_sec INTEGER NOT NULL DEFAULT 0,
    high_frame_sec INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, name));
CREATE TABLE IF NOT EXISTS frame (
    id TEXT PRIMARY KEY, layer_id TEXT NOT NULL REFERENCES layer(id) ON DELETE CASCADE,
    job_id TEXT NOT NULL REFERENCES job(id) ON DELETE CASCADE,
    name TEXT NOT NULL, number INTEGER NOT NULL, dispatch_order INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'WAITING',     -- FrameState name
    depend_count INTEGER NOT NULL DEFAULT 0,
    retry_count INTEGER NOT NULL DEFAULT 0, exit_status INTEGER NOT NULL DEFAULT -1,
    start_time INTEGER NOT NULL DEFAULT 0, stop_time INTEGER NOT NULL DEFAULT 0,
    max_rss INTEGER NOT NULL DEFAULT 0, used_memory INTEGER NOT NULL DEFAULT 0,
    reserved_memory INTEGER NOT NULL DEFAULT 0, reserved_gpu_memory INTEGER NOT NULL DEFAULT 0,
    last_resource TEXT NOT NULL DEFAULT '', total_core_time INTEGER NOT NULL DEFAULT 0,
    llu_time INTEGER NOT NULL, eligible_time INTEGER NOT NULL, submission_time INTEGER NOT NULL,
    updated_time INTEGER NOT NULL,
    checkpoint_state TEXT NOT NULL DEFAULT 'DISABLED', checkpoint_count INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, name));
CREATE TABLE IF NOT EXISTS frame_override (        -- FrameStateDisplayOverride, per frame and state
    frame_id TEXT NOT NULL REFERENCES frame(id) ON DELETE CASCADE, state TEXT NOT NULL,
    text TEXT NOT NULL, rgb TEXT NOT NULL, PRIMARY KEY (frame_id, state));
CREATE INDEX IF NOT EXISTS frame_job_state ON frame(job_id, state);
CREATE INDEX IF NOT EXISTS frame_layer ON frame(layer_id, dispatch_order);
CREATE TABLE IF NOT EXISTS host (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE,
    alloc_id TEXT NOT NULL REFERENCES alloc(id),
    lock_state TEXT NOT NULL DEFAULT 'OPEN', state TEXT NOT NULL DEFAULT 'UP',
    nimby_enabled INTEGER NOT NULL DEFAULT 0, thread_mode TEXT NOT NULL DEFAULT 'AUTO',
    cores INTEGER NOT NULL, idle_cores INTEGER NOT NULL,
    memory INTEGER NOT NULL, idle_memory INTEGER NOT NULL,
    gpus INTEGER NOT NULL DEFAULT 0, idle_gpus INTEGER NOT NULL DEFAULT 0,
    gpu_memory INTEGER NOT NULL DEFAULT 0, idle_gpu_memory INTEGER NOT NULL DEFAULT 0,
    total_swap INTEGER NOT NULL DEFAULT 0, free_swap INTEGER NOT NULL DEFAULT 0,
    total_memory INTEGER NOT NULL DEFAULT 0, free_memory INTEGER NOT NULL DEFAULT 0,
    total_mcp INTEGER NOT NULL DEFAULT 0, free_mcp INTEGER NOT NULL DEFAULT 0,
    total_gpu_memory INTEGER NOT NULL DEFAULT 0, free_gpu_memory INTEGER NOT NULL DEFAULT 0,
    load INTEGER NOT NULL DEFAULT 0, boot_time INTEGER NOT NULL, ping_time INTEGER NOT NULL,
    os TEXT NOT NULL DEFAULT 'rhel40');
CREATE TABLE IF NOT EXISTS host_tag (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id TEXT NOT NULL REFERENCES host(id) ON DELETE CASCADE,
    tag TEXT NOT NULL, type TEXT NOT NULL);    -- ALLOC, HARDWARE, HOSTNAME, MANUAL
CREATE TABLE IF NOT EXISTS proc (
    id TEXT PRIMARY KEY, host_id TEXT NOT NULL REFERENCES host(id),
    frame_id TEXT REFERENCES frame(id), job_id TEXT REFERENCES job(id),
    layer_id TEXT REFERENCES layer(id), show_id TEXT REFERENCES show(id),
    cores INTEGER NOT NULL, memory INTEGER NOT NULL, gpus INTEGER NOT NULL DEFAULT 0,
    gpu_memory INTEGER NOT NULL DEFAULT 0, used_memory INTEGER NOT NULL DEFAULT 0,
    max_rss INTEGER NOT NULL DEFAULT 0, used_gpu_memory INTEGER NOT NULL DEFAULT 0,
    booked_time INTEGER NOT NULL, dispatch_time INTEGER NOT NULL, ping_time INTEGER NOT NULL,
    unbooked INTEGER NOT NULL DEFAULT 0, redirect_target TEXT NOT NULL DEFAULT '',
    run_until REAL NOT NULL DEFAULT 0,         -- simulated end time (dispatcher clock)
    redirect_kind TEXT NOT NULL DEFAULT '',    -- '', JOB or GROUP: where the proc goes next
    redirect_id TEXT NOT NULL DEFAULT '',
    local_id TEXT,                             -- the render partition (host_local) it runs in
    will_fail INTEGER NOT NULL DEFAULT 0,      -- the simulated render ends in failure…
    stall_at REAL NOT NULL DEFAULT 0,          -- …and stops writing its log from then on
    progress INTEGER NOT NULL DEFAULT 0);      -- percent of the run its log reports
CREATE TABLE IF NOT EXISTS host_local (            -- render partitions: local bookings on a host
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    host_id TEXT NOT NULL REFERENCES host(id) ON DELETE CASCADE,
    job_id TEXT NOT NULL REFERENCES job(id) ON DELETE CASCADE, layer_id TEXT, frame_id TEXT,
    type TEXT NOT NULL,                        -- JOB_PARTITION, LAYER_PARTITION, FRAME_PARTITION
    max_cores INTEGER NOT NULL, max_memory INTEGER NOT NULL, max_gpus INTEGER NOT NULL DEFAULT 0,
    max_gpu_memory INTEGER NOT NULL DEFAULT 0, threads INTEGER NOT NULL DEFAULT 1,
    active INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS limit_record (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    max_value INTEGER NOT NULL DEFAULT 0,
    type TEXT NOT NULL DEFAULT 'FRAME',         -- FRAME or HOST counting
    enforcement TEXT NOT NULL DEFAULT 'ENFORCED',  -- ENFORCED, ADVISORY, DISABLED
    soft_value INTEGER NOT NULL DEFAULT -1, report_ttl INTEGER NOT NULL DEFAULT 900,
    exit_status INTEGER, delay_minutes INTEGER NOT NULL DEFAULT 0,
    auto_tag INTEGER NOT NULL DEFAULT 1,
    reported_time REAL NOT NULL DEFAULT 0,     -- the settlement watermark (0: never reported)
    report_source TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS layer_limit (
    layer_id TEXT NOT NULL REFERENCES layer(id) ON DELETE CASCADE,
    limit_id TEXT NOT NULL REFERENCES limit_record(id) ON DELETE CASCADE,
    source TEXT NOT NULL DEFAULT 'SPEC',        -- SPEC, AUTO or MANUAL
    created INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (layer_id, limit_id));
CREATE TABLE IF NOT EXISTS limit_host (            -- a license server's report: who holds tokens
    limit_id TEXT NOT NULL REFERENCES limit_record(id) ON DELETE CASCADE,
    host_name TEXT NOT NULL,                   -- normalized: short name, lower case
    reported_name TEXT NOT NULL, tokens INTEGER NOT NULL DEFAULT 1,
    user TEXT NOT NULL DEFAULT '', reported_time INTEGER NOT NULL,
    PRIMARY KEY (limit_id, host_name));
CREATE TABLE IF NOT EXISTS filter (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    show_id TEXT NOT NULL REFERENCES show(id), name TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'MATCH_ALL', ord REAL NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS matcher (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    filter_id TEXT NOT NULL REFERENCES filter(id) ON DELETE CASCADE,
    subject TEXT NOT NULL, type TEXT NOT NULL, input TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS action (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    filter_id TEXT NOT NULL REFERENCES filter(id) ON DELETE CASCADE,
    type TEXT NOT NULL, value_type TEXT NOT NULL DEFAULT 'NONE_TYPE',
    group_value TEXT NOT NULL DEFAULT '', string_value TEXT NOT NULL DEFAULT '',
    integer_value INTEGER NOT NULL DEFAULT 0, float_value REAL NOT NULL DEFAULT 0,
    boolean_value INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS depend (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL, target TEXT NOT NULL DEFAULT 'INTERNAL',
    any_frame INTEGER NOT NULL DEFAULT 0, active INTEGER NOT NULL DEFAULT 1,
    er_job_id TEXT, er_layer_id TEXT, er_frame_id TEXT,
    on_job_id TEXT, on_layer_id TEXT, on_frame_id TEXT,
    parent_id TEXT,                            -- a FRAME_BY_FRAME (or previous-frame) container
    composite INTEGER NOT NULL DEFAULT 0,      -- a container: never satisfied itself
    signature TEXT);                           -- what makes it unique while active
CREATE UNIQUE INDEX IF NOT EXISTS depend_signature ON depend(signature);
CREATE INDEX IF NOT EXISTS depend_parent ON depend(parent_id);
CREATE TABLE IF NOT EXISTS owner (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, show_id TEXT NOT NULL REFERENCES show(id));
CREATE TABLE IF NOT EXISTS deed (
    id TEXT PRIMARY KEY, owner_id TEXT NOT NULL REFERENCES owner(id) ON DELETE CASCADE,
    host_id TEXT NOT NULL UNIQUE REFERENCES host(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS comment (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    job_id TEXT REFERENCES job(id) ON DELETE CASCADE,
    host_id TEXT REFERENCES host(id) ON DELETE CASCADE,
    user TEXT NOT NULL, subject TEXT NOT NULL, message TEXT NOT NULL, timestamp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS config (
    key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# MIGRATIONS[n - 1] brings a schema-n database to n + 1 (new tables come from SCHEMA).
MIGRATIONS = [
    """
    ALTER TABLE frame ADD COLUMN checkpoint_state TEXT NOT NULL DEFAULT 'DISABLED';
    ALTER TABLE frame ADD COLUMN checkpoint_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE proc ADD COLUMN redirect_kind TEXT NOT NULL DEFAULT '';
    ALTER TABLE proc ADD COLUMN redirect_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE proc ADD COLUMN local_id TEXT;
    ALTER TABLE proc ADD COLUMN will_fail INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE proc ADD COLUMN stall_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE proc ADD COLUMN progress INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE limit_record ADD COLUMN type TEXT NOT NULL DEFAULT 'FRAME';
    ALTER TABLE limit_record ADD COLUMN enforcement TEXT NOT NULL DEFAULT 'ENFORCED';
    ALTER TABLE limit_record ADD COLUMN soft_value INTEGER NOT NULL DEFAULT -1;
    ALTER TABLE limit_record ADD COLUMN report_ttl INTEGER NOT NULL DEFAULT 900;
    ALTER TABLE limit_record ADD COLUMN exit_status INTEGER;
    ALTER TABLE limit_record ADD COLUMN delay_minutes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE limit_record ADD COLUMN auto_tag INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE limit_record ADD COLUMN reported_time REAL NOT NULL DEFAULT 0;
    ALTER TABLE limit_record ADD COLUMN report_source TEXT NOT NULL DEFAULT '';
    ALTER TABLE layer_limit ADD COLUMN source TEXT NOT NULL DEFAULT 'SPEC';
    ALTER TABLE layer_limit ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE depend ADD COLUMN parent_id TEXT;
    ALTER TABLE depend ADD COLUMN composite INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE depend ADD COLUMN signature TEXT;
    UPDATE depend SET composite = 1 WHERE type IN ('FRAME_BY_FRAME', 'PREVIOUS_FRAME');
    UPDATE depend SET parent_id = (
        SELECT p.id FROM depend p WHERE p.type IN ('FRAME_BY_FRAME', 'PREVIOUS_FRAME')
        AND p.er_layer_id = depend.er_layer_id AND p.on_layer_id = depend.on_layer_id
        ORDER BY p.seq LIMIT 1) WHERE type = 'FRAME_ON_FRAME';
    """,
]


def new_id() -> str:
    """A fresh id, as Cuebot makes them (random v4 UUID, lower case)."""
    return str(uuid.uuid4())


def now() -> int:
    return int(time.time())


class Store:
    """The database and the few primitives every servant uses."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: sandbox database schema {version}, "
                               f"this version knows up to {SCHEMA_VERSION}")
        if 0 < version < SCHEMA_VERSION:  # a database from an older sandbox: add what is new
            for script in MIGRATIONS[version - 1:]:
                self.db.executescript(script)
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._depth = 0

    @property
    def is_empty(self) -> bool:
        """No show yet: a new database, to be seeded."""
        return self.one("SELECT 1 FROM show LIMIT 1") is None

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (nested calls join the outer one); rolled back on error."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    def one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        return self.db.execute(sql, args).fetchone()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, args).fetchall()

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute a write; the number of rows it changed."""
        return self.db.execute(sql, args).rowcount

    def insert(self, table: str, **values: Any) -> str | None:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self.db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values.values()))
        return values.get("id")

    def config(self, key: str, default: str | None = None) -> str | None:
        row = self.one("SELECT value FROM config WHERE key = ?", (key,))
        return row[0] if row else default

    def set_config(self, key: str, value: str) -> None:
        self.run("INSERT INTO config (key, value) VALUES (?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def close(self) -> None:
        self.db.close()
