"""limit.LimitInterface: limits on running work, and the license accounting of newer Cuebots.

A limit caps what the layers bound to it may run. Cuebot's older API (Create,
Find, Get, GetAll, Delete, Rename, SetMaxValue) keeps its quirks: no
NOT_FOUND mapping (a missing limit is INTERNAL), names not checked,
duplicates accepted (a later Find of that name is INTERNAL ``expected 1,
actual 2``).

The RPCs the bundled opencue-proto adds (SetType, SetEnforcement,
SetSoftValue, SetReportTtl, SetFailureRule, GetBindings, ClearBindings,
ReportUsage, GetHolds) follow the Cuebot that serves them: a missing limit
is NOT_FOUND ``Limit not found.``, bad arguments INVALID_ARGUMENT, an exit
status another limit claims ALREADY_EXISTS. Its counting model:

- a limit counts per ``FRAME`` (each running frame of a bound layer is a
  token) or per ``HOST`` (a host holding any token counts once: max_value is
  then "machines");
- a license server's report (ReportUsage) replaces the limit's set of
  holders (``settled``: hosts by short, lower-case name, with tokens) and
  moves its watermark to the report's capture time; frames dispatched since
  (watermark - 120 s) on hosts the report does not name are ``pending``;
  a limit never reported counts every running frame as pending;
- ``current_usage`` = settled + pending (``current_running`` repeats it);
  a report older than ``report_ttl`` seconds (0: never) is stale;
- the dispatcher only gates on ENFORCED limits that are not stale: FRAME
  books while usage < max_value; HOST books while usage < soft_value (-1:
  max_value) or on a host that already holds a token;
- bindings say where a layer's limit came from: SPEC (the job spec), MANUAL
  (Layer.AddLimit) or AUTO (learned from a failure rule); ClearBindings
  removes AUTO/MANUAL ones, never SPEC.

Not modelled: learning AUTO bindings from frames that exit with the failure
rule's status (the simulated renders only ever fail with status 1, which no
rule may claim), and the layer back-off that goes with it.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Iterable

import grpc
from opencue_proto import limit_pb2

from .common import find_one
from .servant import CueError, Reply, Servant
from .store import Store, new_id

SETTLE_WINDOW = 120          # seconds before the watermark that still count as pending
MIN_REPORT_INTERVAL = 5      # seconds between accepted reports for one limit


def short_name(host: str) -> str:
    """Cuebot's hostname normalization for license holders: short name, lower case."""
    return host.strip().split(".")[0].lower()


def _limit(store: Store, column: str, value: str) -> Any:
    """The older RPCs: none or several -> INTERNAL (no NOT_FOUND mapping)."""
    return find_one(store, f"SELECT * FROM limit_record WHERE {column} = ?", (value,),
                    lookup=False)


def _named(store: Store, name: str) -> Any:
    """The newer RPCs: a missing limit is NOT_FOUND ``Limit not found.``."""
    rows = store.all("SELECT * FROM limit_record WHERE name = ?", (name,))
    if not rows:
        raise CueError(grpc.StatusCode.NOT_FOUND, "Limit not found.")
    if len(rows) > 1:
        raise CueError(grpc.StatusCode.INTERNAL,
                       f"Incorrect result size: expected 1, actual {len(rows)}")
    return rows[0]


def invalid(message: str) -> CueError:
    return CueError(grpc.StatusCode.INVALID_ARGUMENT, message)


# ---------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------
class LimitState:
    """Every limit's tokens per host, right now; the dispatcher books against it."""

    def __init__(self, store: Store, t: float | None = None) -> None:
        self.t = time.time() if t is None else t
        self.limits = {r["id"]: r for r in store.all("SELECT * FROM limit_record")}
        self.settled: dict[str, dict[str, int]] = defaultdict(dict)
        self.pending: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.running: dict[str, set[str]] = defaultdict(set)   # hosts with a bound frame
        for r in store.all("SELECT limit_id, host_name, tokens FROM limit_host"):
            self.settled[r["limit_id"]][r["host_name"]] = r["tokens"]
        for r in store.all("SELECT ll.limit_id, h.name AS host, p.dispatch_time FROM proc p "
                           "JOIN layer_limit ll ON ll.layer_id = p.layer_id "
                           "JOIN host h ON h.id = p.host_id WHERE p.frame_id IS NOT NULL"):
            self._count(r["limit_id"], short_name(r["host"]), r["dispatch_time"])

    def _count(self, limit_id: str, host: str, dispatched: float) -> None:
        self.running[limit_id].add(host)
        limit = self.limits.get(limit_id)
        if limit is None:
            return
        watermark = limit["reported_time"]
        if watermark and (host in self.settled[limit_id]
                          or dispatched < watermark - SETTLE_WINDOW):
            return
        self.pending[limit_id][host] += 1

    def add(self, limit_id: str, host: str, t: float) -> None:
        """A frame of a bound layer was just booked on ``host``."""
        self._count(limit_id, short_name(host), t)

    def _per_host(self, limit_id: str, tokens: dict[str, int]) -> int:
        if self.limits[limit_id]["type"] == "HOST":
            return sum(1 for n in tokens.values() if n > 0)
        return sum(tokens.values())

    def usage(self, limit_id: str) -> tuple[int, int, int, int]:
        """(current, settled, pending, hosts holding a token)."""
        settled, pending = self.settled[limit_id], self.pending[limit_id]
        merged: dict[str, int] = defaultdict(int)
        for tokens in (settled, pending):
            for host, n in tokens.items():
                merged[host] += n
        return (self._per_host(limit_id, merged), self._per_host(limit_id, settled),
                self._per_host(limit_id, pending), sum(1 for n in merged.values() if n > 0))

    def stale(self, limit_id: str) -> bool:
        limit = self.limits[limit_id]
        return bool(limit["report_ttl"] > 0 and limit["reported_time"]
                    and self.t - limit["reported_time"] > limit["report_ttl"])

    def blocking(self, limit_id: str) -> bool:
        return self.limits[limit_id]["enforcement"] == "ENFORCED" and not self.stale(limit_id)

    def admits(self, limit_id: str, host: str) -> bool:
        """May a frame of a layer bound to this limit start on ``host``?"""
        if limit_id not in self.limits or not self.blocking(limit_id):
            return True
        limit = self.limits[limit_id]
        used = self.usage(limit_id)[0]
        if limit["type"] == "FRAME":
            return used < limit["max_value"]
        host = short_name(host)
        soft = limit["soft_value"] if limit["soft_value"] >= 0 else limit["max_value"]
        return (used < soft or host in self.settled[limit_id]
                or host in self.running[limit_id])


def limit_messages(store: Store, rows: Iterable[Any]) -> list[limit_pb2.Limit]:
    rows = list(rows)
    if not rows:
        return []
    state = LimitState(store)
    counts: dict[tuple[str, str], int] = {
        (r["limit_id"], r["source"]): r["n"] for r in store.all(
            "SELECT limit_id, source, COUNT(*) AS n FROM layer_limit GROUP BY limit_id, source")}
    out = []
    for r in rows:
        current, settled, pending, hosts = state.usage(r["id"])
        out.append(limit_pb2.Limit(
            id=r["id"], name=r["name"], max_value=r["max_value"], current_running=current,
            type=r["type"], enforcement=r["enforcement"], soft_value=r["soft_value"],
            current_usage=current, settled_usage=settled, pending_usage=pending,
            host_count=hosts, last_report_time=int(r["reported_time"]),
            report_source=r["report_source"], report_ttl=r["report_ttl"],
            report_stale=state.stale(r["id"]), blocking_disabled=not state.blocking(r["id"]),
            exit_status=r["exit_status"] or 0, delay_minutes=r["delay_minutes"],
            auto_tag=bool(r["auto_tag"]), spec_layer_count=counts.get((r["id"], "SPEC"), 0),
            auto_layer_count=counts.get((r["id"], "AUTO"), 0)))
    return out


def _sources(values: Iterable[int]) -> list[str]:
    names = []
    for v in values:
        if v not in limit_pb2.LimitBindSource.values():
            raise invalid("Unrecognized binding source.")
        names.append(limit_pb2.LimitBindSource.Name(v))
    return names


# ---------------------------------------------------------------------------
class LimitServant(Servant):
    SERVICE = "limit.LimitInterface"

    def _one(self, row: Any) -> limit_pb2.Limit:
        return limit_messages(self.store, [row])[0]

    # -- the older API ---------------------------------------------------------
    def GetAll(self, request: Any, context: Any) -> Reply:
        rows = self.store.all("SELECT * FROM limit_record ORDER BY name, seq")
        return dict(limits=limit_messages(self.store, rows))

    def Get(self, request: Any, context: Any) -> Reply:
        return dict(limit=self._one(_limit(self.store, "id", request.id)))

    def Find(self, request: Any, context: Any) -> Reply:
        return dict(limit=self._one(_limit(self.store, "name", request.name)))

    def Create(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            lid = new_id()
            self.store.insert(
                "limit_record", id=lid, name=request.name, max_value=request.max_value,
                type=limit_pb2.LimitType.Name(request.type),
                enforcement=limit_pb2.LimitEnforcement.Name(request.enforcement),
                soft_value=request.soft_value if request.soft_value > 0 else -1)
            if request.exit_status:
                self._failure_rule(self.store.one("SELECT * FROM limit_record WHERE id = ?",
                                                  (lid,)), request.exit_status,
                                   request.delay_minutes, request.auto_tag)
        return dict(limit=self._one(self.store.one("SELECT * FROM limit_record WHERE id = ?",
                                                   (lid,))))

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            row = _limit(self.store, "name", request.name)
            self.store.run("DELETE FROM limit_record WHERE id = ?", (row["id"],))
        return None

    def SetMaxValue(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            row = _limit(self.store, "name", request.name)
            self.store.run("UPDATE limit_record SET max_value = ? WHERE id = ?",
                           (request.max_value, row["id"]))
        return None

    def Rename(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            row = _limit(self.store, "name", request.old_name)
            self.store.run("UPDATE limit_record SET name = ? WHERE id = ?",
                           (request.new_name, row["id"]))
        return None

    # -- license accounting --------------------------------------------------------
    def _set(self, name: str, column: str, value: Any) -> None:
        with self.store.tx():
            row = _named(self.store, name)
            self.store.run(f"UPDATE limit_record SET {column} = ? WHERE id = ?",
                           (value, row["id"]))

    def SetType(self, request: Any, context: Any) -> Reply:
        self._set(request.name, "type", limit_pb2.LimitType.Name(request.type))
        return None

    def SetEnforcement(self, request: Any, context: Any) -> Reply:
        self._set(request.name, "enforcement",
                  limit_pb2.LimitEnforcement.Name(request.enforcement))
        return None

    def SetSoftValue(self, request: Any, context: Any) -> Reply:
        self._set(request.name, "soft_value", request.soft_value)
        return None

    def SetReportTtl(self, request: Any, context: Any) -> Reply:
        self._set(request.name, "report_ttl", request.report_ttl)
        return None

    def _failure_rule(self, limit: Any, status: int, delay: int, auto_tag: bool) -> None:
        if delay < 0:
            raise invalid("delay minutes must be >= 0")
        if status == 0:  # clears the rule; AUTO bindings it taught stay
            self.store.run("UPDATE limit_record SET exit_status = NULL, delay_minutes = ?, "
                           "auto_tag = ? WHERE id = ?", (delay, int(auto_tag), limit["id"]))
            return
        if status <= 1:
            raise invalid("Exit status must be greater than 1: status 0 is success and status "
                          "1 is the generic failure code.")
        other = self.store.one("SELECT name FROM limit_record WHERE exit_status = ? AND id != ?",
                               (status, limit["id"]))
        if other is not None:
            raise CueError(grpc.StatusCode.ALREADY_EXISTS,
                           f"Exit status {status} is already claimed by limit {other['name']}.")
        self.store.run("UPDATE limit_record SET exit_status = ?, delay_minutes = ?, "
                       "auto_tag = ? WHERE id = ?", (status, delay, int(auto_tag), limit["id"]))

    def SetFailureRule(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            self._failure_rule(_named(self.store, request.name), request.exit_status,
                               request.delay_minutes, request.auto_tag)
        return None

    def GetBindings(self, request: Any, context: Any) -> Reply:
        sources = _sources(request.sources)
        limit = _named(self.store, request.limit_name)
        sql = ("SELECT ll.*, l.name AS layer_name, l.services, j.name AS job_name FROM "
               "layer_limit ll JOIN layer l ON l.id = ll.layer_id JOIN job j ON j.id = "
               "l.job_id WHERE ll.limit_id = ?")
        args: list[Any] = [limit["id"]]
        if sources:
            sql += " AND ll.source IN (" + ",".join("?" * len(sources)) + ")"
            args += sources
        if request.layer_ids:
            sql += " AND ll.layer_id IN (" + ",".join("?" * len(request.layer_ids)) + ")"
            args += list(request.layer_ids)
        rows = self.store.all(sql + " ORDER BY ll.created, ll.rowid", args)
        return dict(bindings=[limit_pb2.LimitBinding(
            limit_id=limit["id"], layer_id=r["layer_id"], layer_name=r["layer_name"],
            job_name=r["job_name"], services=[s for s in r["services"].split(",") if s],
            source=r["source"], create_time=r["created"]) for r in rows])

    def ClearBindings(self, request: Any, context: Any) -> Reply:
        sources = _sources(request.sources)
        if "SPEC" in sources:
            raise invalid("SPEC bindings are declared by the submitter and cannot be "
                          "bulk-removed.")
        with self.store.tx():
            limit = _named(self.store, request.limit_name)
            wanted = sources or ["AUTO", "MANUAL"]
            removed = self.store.run(
                "DELETE FROM layer_limit WHERE limit_id = ? AND source IN ("
                + ",".join("?" * len(wanted)) + ")", (limit["id"], *wanted))
        return dict(removed=removed)

    def ReportUsage(self, request: Any, context: Any) -> Reply:
        for report in request.reports:  # a malformed snapshot rejects the whole request
            for hold in report.hosts:
                if hold.tokens <= 0:
                    raise invalid(f"Host {hold.host_name} in limit {report.limit_name} reports "
                                  f"tokens <= 0; omit hosts holding nothing.")
        t = time.time()
        applied, unknown, skipped = [], [], []
        with self.store.tx():
            for report in request.reports:
                rows = self.store.all("SELECT * FROM limit_record WHERE name = ?",
                                      (report.limit_name,))
                if not rows:
                    unknown.append(report.limit_name)
                    continue
                limit = rows[0]
                capture = min(report.capture_time, t) if report.capture_time > 0 else t
                if capture < limit["reported_time"]:
                    skipped.append(limit_pb2.LimitReportSkip(limit_name=limit["name"],
                                                             reason="OUT_OF_ORDER"))
                    continue
                if limit["reported_time"] and t - limit["reported_time"] < MIN_REPORT_INTERVAL:
                    skipped.append(limit_pb2.LimitReportSkip(limit_name=limit["name"],
                                                             reason="RATE_LIMITED"))
                    continue
                self.store.run("UPDATE limit_record SET reported_time = ?, report_source = ? "
                               "WHERE id = ?", (capture, request.source, limit["id"]))
                self.store.run("DELETE FROM limit_host WHERE limit_id = ?", (limit["id"],))
                for hold in report.hosts:
                    self.store.run(
                        "INSERT INTO limit_host (limit_id, host_name, reported_name, tokens, "
                        "user, reported_time) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(limit_id, "
                        "host_name) DO UPDATE SET tokens = tokens + excluded.tokens",
                        (limit["id"], short_name(hold.host_name), hold.host_name, hold.tokens,
                         hold.user, int(capture)))
                if report.total_licenses > 0:
                    self.store.run("UPDATE limit_record SET max_value = ? WHERE id = ?",
                                   (report.total_licenses, limit["id"]))
                applied.append(limit["id"])
        rows = [self.store.one("SELECT * FROM limit_record WHERE id = ?", (i,)) for i in applied]
        return dict(limits=limit_messages(self.store, rows), unknown_limits=unknown,
                    skipped_limits=skipped)

    def GetHolds(self, request: Any, context: Any) -> Reply:
        """Reported holders (EXTERNAL) and hosts running bound frames (CUE); both: BOTH."""
        limits = ([_named(self.store, request.limit_name)] if request.limit_name
                  else self.store.all("SELECT * FROM limit_record ORDER BY name, seq"))
        host_filter = short_name(request.host_name) if request.host_name else None
        holds = []
        for limit in limits:
            reported = {r["host_name"]: r for r in self.store.all(
                "SELECT * FROM limit_host WHERE limit_id = ?", (limit["id"],))}
            cue: dict[str, int] = defaultdict(int)
            for r in self.store.all("SELECT h.name FROM proc p JOIN layer_limit ll ON "
                                    "ll.layer_id = p.layer_id JOIN host h ON h.id = p.host_id "
                                    "WHERE ll.limit_id = ? AND p.frame_id IS NOT NULL",
                                    (limit["id"],)):
                cue[short_name(r["name"])] += 1
            for host in sorted(set(reported) | set(cue)):
                if host_filter is not None and host != host_filter:
                    continue
                rep = reported.get(host)
                known = self.store.one("SELECT id FROM host WHERE lower(name) = ? OR "
                                       "lower(name) LIKE ?", (host, f"{host}.%"))
                holds.append(limit_pb2.LimitHold(
                    limit_id=limit["id"], limit_name=limit["name"],
                    host_name=rep["reported_name"] if rep else host,
                    host_id=known["id"] if known else "",
                    tokens=(rep["tokens"] if rep else 0) + cue.get(host, 0),
                    user=rep["user"] if rep else "",
                    source="BOTH" if rep and host in cue else "EXTERNAL" if rep else "CUE",
                    report_time=rep["reported_time"] if rep else 0))
        return dict(holds=holds)


SERVANTS = [LimitServant]
