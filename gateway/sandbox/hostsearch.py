"""HostSearchCriteria and ProcSearchCriteria as SQL, read the way Cuebot reads them.

GetHosts and GetProcs are how CueWeb and pycue list the farm, so the
criteria keep Cuebot's meaning (and the JobSearchCriteria conventions of
:mod:`criteria`): different fields are ANDed, values of one repeated field
ORed, exact matches case-sensitive.

Hosts: ``ids``, ``hosts`` (exact names), ``substr`` (``LIKE '%x%'``),
``regex`` (unanchored; an invalid one is INTERNAL), ``allocs`` (full
allocation names such as ``local.general``), ``states`` and ``lock_states``.
No paging, no defined order (the sandbox lists in registration order).

Procs: ``hosts``, ``jobs``, ``layers``, ``shows``, ``allocs`` by exact
name; ``memory_range`` (the first one) on reserved memory in KB, inclusive;
``duration_range`` (the first one) on seconds since the proc was dispatched;
``max_results`` (the first value) and ``first_result`` page through the rows
as Cuebot numbers them (``first_result`` <= 1 is the first row). Listings are
ordered by host name, then dispatch time. ``memory_greater_than`` and
``memory_less_than`` (the first of each) both keep procs reserving *at least*
that many KB: the proto declares both as GreaterThan criteria and Cuebot
applies them so.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from opencue_proto import host_pb2

from .criteria import Where, install_functions
from .store import Store, now

Row = sqlite3.Row

PROC_FROM = ("FROM proc p JOIN host h ON h.id = p.host_id JOIN alloc a ON a.id = h.alloc_id "
             "LEFT JOIN job j ON j.id = p.job_id LEFT JOIN layer l ON l.id = p.layer_id "
             "LEFT JOIN show s ON s.id = p.show_id")


def host_where(r: Any) -> Where:
    """HostSearchCriteria on ``host h JOIN alloc a``."""
    w = Where()
    w.any_equal("h.id", r.ids)
    w.any_equal("h.name", r.hosts)
    w.any_like("h.name", r.substr)
    w.any_regex("h.name", r.regex)
    w.any_equal("a.name", r.allocs)
    w.any_equal("h.state", [host_pb2.HardwareState.Name(s) for s in r.states.state])
    w.any_equal("h.lock_state", [host_pb2.LockState.Name(s) for s in r.lock_states.state])
    return w


def find_hosts(store: Store, r: Any) -> list[Row]:
    install_functions(store.db)
    w = host_where(r)
    return store.all("SELECT h.* FROM host h JOIN alloc a ON a.id = h.alloc_id "
                     f"WHERE 1 = 1{w.sql()} ORDER BY h.seq", w.args)


def proc_where(r: Any) -> Where:
    """ProcSearchCriteria on ``PROC_FROM``."""
    w = Where()
    w.any_equal("h.name", r.hosts)
    w.any_equal("j.name", r.jobs)
    w.any_equal("l.name", r.layers)
    w.any_equal("s.name", r.shows)
    w.any_equal("a.name", r.allocs)
    if r.memory_range:
        w.add("p.memory BETWEEN ? AND ?", r.memory_range[0].min, r.memory_range[0].max)
    # both are GreaterThan criteria in the proto, so Cuebot applies both as "at least"
    for criterion in (r.memory_less_than, r.memory_greater_than):
        if criterion:
            w.add("p.memory >= ?", criterion[0].value)
    if r.duration_range:
        w.add("(? - p.dispatch_time) BETWEEN ? AND ?", now(), r.duration_range[0].min,
              r.duration_range[0].max)
    return w


def find_procs(store: Store, r: Any, order: str = "h.name, p.dispatch_time") -> list[Row]:
    """Procs matching ``r`` in ``order``, paged by ``first_result``/``max_results``."""
    w = proc_where(r)
    rows = store.all(f"SELECT p.* {PROC_FROM} WHERE 1 = 1{w.sql()} ORDER BY {order}, p.id",
                     w.args)
    first = max(r.first_result, 1)
    if r.max_results and r.max_results[0] > 0:
        return rows[first - 1:first - 1 + r.max_results[0]]
    return rows[first - 1:]
