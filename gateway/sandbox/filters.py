"""A show's job filters, and filter.FilterInterface / ActionInterface / MatcherInterface
as Cuebot's ManageFilter/Action/Matcher answer them.

Filters are how a studio routes new work without touching each job, so the
engine follows Cuebot's FilterManager closely:

- :func:`apply_filters` runs on every launched job: the show's *enabled*
  filters in order; a filter applies when its matchers match (MATCH_ALL:
  every matcher; MATCH_ANY: one; a filter without matchers never applies);
  its actions run in order, and a STOP_PROCESSING action ends filtering.
  RunFilterOnJobs/RunFilterOnGroup run one filter, enabled or not.
- matching: job name, show, shot, user and facility are compared in lower
  case, the matcher's input as typed; PRIORITY compares the number as text;
  LAYER_NAME and SERVICE_NAME look at every layer (any one may match, and
  the negative types need all of them to pass); REGEX is an unanchored
  search, and an invalid pattern simply does not match.
- actions: PAUSE_JOB (boolean), SET_JOB_PRIORITY (integer), SET_JOB_MIN/
  MAX_CORES (float cores), MOVE_JOB_TO_GROUP (group id; the group's job
  defaults for priority/min/max cores apply unless an earlier action of
  this run set them; an empty or unknown group is ignored),
  SET_MEMORY_OPTIMIZER (boolean, all layers) and SET_ALL_<RENDER|UTIL|PRE>_
  LAYER_<TAGS|MEMORY|MIN_CORES|MAX_CORES> (``|``-separated tags, KB, float
  cores; SET_ALL_RENDER_LAYER_CORES is the min-cores one).

Missing objects: FindFilter is a lookup (NOT_FOUND); everything else is
INTERNAL, and Action.Commit on an unknown id says ``Invalid actionId on
Action commit: <id>``. Action.GetParentFilter always fails in Cuebot (the
action it builds has no filter) and fails here the same way. Filter.Delete
is queued in Cuebot; the sandbox deletes at once.
"""
from __future__ import annotations

import re
import sqlite3
from typing import Any, Iterable

from opencue_proto import filter_pb2

from . import messages as M
from .common import core_units, find_one
from .farm import Farm
from .servant import Reply, Servant, internal, missing
from .store import Store, new_id

Row = sqlite3.Row

SPCUE_ERROR = "com.imageworks.spcue.SpcueRuntimeException"
LOWERED = {"JOB_NAME": "name", "SHOT": "shot", "USER": "user"}
LAYER_ACTION = re.compile(r"^SET_ALL_(RENDER|UTIL|PRE)_LAYER_(TAGS|MEMORY|CORES|MIN_CORES|"
                          r"MAX_CORES)$")
VALUE_COLUMNS = {"GROUP_TYPE": "group_value", "STRING_TYPE": "string_value",
                 "INTEGER_TYPE": "integer_value", "FLOAT_TYPE": "float_value",
                 "BOOLEAN_TYPE": "boolean_value"}


# ---------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------
def _subject_values(store: Store, subject: str, job: Row) -> list[str]:
    """What a matcher subject compares, for one job."""
    if subject in LOWERED:
        return [job[LOWERED[subject]].lower()]
    if subject == "SHOW":
        return [store.one("SELECT name FROM show WHERE id = ?", (job["show_id"],))[0].lower()]
    if subject == "FACILITY":
        row = store.one("SELECT name FROM facility WHERE id = ?", (job["facility_id"],))
        return [row[0].lower()] if row else []
    if subject == "PRIORITY":
        return [str(job["priority"])]
    layers = store.all("SELECT name, services FROM layer WHERE job_id = ? ORDER BY "
                       "dispatch_order", (job["id"],))
    if subject == "LAYER_NAME":
        return [r["name"] for r in layers]
    return [s for r in layers for s in r["services"].split(",") if s]      # SERVICE_NAME


def _test(kind: str, value: str, text: str) -> bool:
    if kind in ("CONTAINS", "DOES_NOT_CONTAIN"):
        return value in text
    if kind in ("IS", "IS_NOT"):
        return text == value
    if kind == "BEGINS_WITH":
        return text.startswith(value)
    if kind == "ENDS_WITH":
        return text.endswith(value)
    return re.search(value, text) is not None                               # REGEX


def matcher_matches(kind: str, value: str, inputs: Iterable[str]) -> bool:
    """One matcher against a subject's values; negative types must hold for all of them."""
    if kind == "REGEX":
        try:
            re.compile(value)
        except re.error:
            return False
    hit = any(_test(kind, value, text) for text in inputs)
    return not hit if kind in ("DOES_NOT_CONTAIN", "IS_NOT") else hit


def filter_matches(store: Store, flt: Row, job: Row) -> bool:
    matchers = store.all("SELECT * FROM matcher WHERE filter_id = ? ORDER BY seq", (flt["id"],))
    if not matchers:
        return False
    results = (matcher_matches(m["type"], m["input"], _subject_values(store, m["subject"], job))
               for m in matchers)
    return all(results) if flt["type"] == "MATCH_ALL" else any(results)


# ---------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------
def _layer_action(store: Store, job_id: str, kind: str, what: str, action: Row) -> None:
    where = "job_id = ? AND type = ?"
    if what == "TAGS":
        column, value = "tags", M.join_tags(M.split_tags(action["string_value"]))
    elif what == "MEMORY":
        column, value = "min_memory", action["integer_value"]
    else:
        column = "max_cores" if what == "MAX_CORES" else "min_cores"
        value = core_units(action["float_value"])
    store.run(f"UPDATE layer SET {column} = ? WHERE {where}", (value, job_id, kind))


def _move_to_group(store: Store, job_id: str, group_id: str, already: set[str]) -> None:
    folder = store.one("SELECT * FROM folder WHERE id = ?", (group_id,)) if group_id else None
    if folder is None:
        return
    inherit = [c for c in ("priority", "min_cores", "max_cores") if c not in already]
    Farm(store).move_job(job_id, folder, inherit)


def apply_action(store: Store, action: Row, job_id: str, already: set[str]) -> None:
    """One action on one job; ``already`` collects what this run has set explicitly."""
    kind = action["type"]
    if kind == "PAUSE_JOB":
        store.run("UPDATE job SET is_paused = ? WHERE id = ?", (action["boolean_value"], job_id))
    elif kind == "SET_JOB_PRIORITY":
        already.add("priority")
        store.run("UPDATE job SET priority = ? WHERE id = ?", (action["integer_value"], job_id))
    elif kind in ("SET_JOB_MIN_CORES", "SET_JOB_MAX_CORES"):
        column = "min_cores" if kind == "SET_JOB_MIN_CORES" else "max_cores"
        already.add(column)
        store.run(f"UPDATE job SET {column} = ? WHERE id = ?",
                  (core_units(action["float_value"]), job_id))
    elif kind == "MOVE_JOB_TO_GROUP":
        _move_to_group(store, job_id, action["group_value"], already)
    elif kind == "SET_MEMORY_OPTIMIZER":
        store.run("UPDATE layer SET memory_optimizer_enabled = ? WHERE job_id = ?",
                  (action["boolean_value"], job_id))
    elif m := LAYER_ACTION.match(kind):
        _layer_action(store, job_id, m.group(1), m.group(2), action)


def _actions(store: Store, filter_id: str) -> list[Row]:
    """Creation order, stop-processing actions last (Cuebot's order)."""
    return store.all("SELECT * FROM action WHERE filter_id = ? ORDER BY "
                     "type = 'STOP_PROCESSING', seq", (filter_id,))


def apply_actions(store: Store, flt: Row, job_id: str, already: set[str]) -> bool:
    """The filter's actions on the job; True when one of them stops processing."""
    for action in _actions(store, flt["id"]):
        apply_action(store, action, job_id, already)
        if action["type"] == "STOP_PROCESSING":
            return True
    return False


def _job(store: Store, job_id: str) -> Row:
    return store.one("SELECT * FROM job WHERE id = ?", (job_id,))


def apply_filters(store: Store, job_id: str) -> None:
    """Run the show's enabled filters on a newly launched job (call inside ``store.tx()``)."""
    job = _job(store, job_id)
    already: set[str] = set()
    for flt in store.all("SELECT * FROM filter WHERE show_id = ? AND enabled = 1 "
                         "ORDER BY ord, seq", (job["show_id"],)):
        if filter_matches(store, flt, _job(store, job_id)):
            if apply_actions(store, flt, job_id, already):
                break


def run_filter(store: Store, flt: Row, job_id: str) -> None:
    """One filter on one job, whether it is enabled or not (RunFilterOn*)."""
    if filter_matches(store, flt, _job(store, job_id)):
        apply_actions(store, flt, job_id, set())


def reorder(store: Store, show_id: str) -> None:
    """Renumber a show's filters 1, 2, 3… in their current order, as Cuebot does."""
    for n, row in enumerate(store.all("SELECT id FROM filter WHERE show_id = ? ORDER BY ord, seq",
                                      (show_id,)), start=1):
        store.run("UPDATE filter SET ord = ? WHERE id = ?", (float(n), row["id"]))


# ---------------------------------------------------------------------------
# servants
# ---------------------------------------------------------------------------
def _by_id(store: Store, table: str, key: str) -> Row:
    row = store.one(f"SELECT * FROM {table} WHERE id = ?", (key,)) if key else None
    if row is None:
        raise missing()
    return row


def _action_columns(data: Any) -> dict[str, Any]:
    """An Action message as columns: only the value its value type names is kept."""
    value_type = filter_pb2.ActionValueType.Name(data.value_type)
    cols: dict[str, Any] = dict(type=filter_pb2.ActionType.Name(data.type), value_type=value_type,
                                group_value="", string_value="", integer_value=0,
                                float_value=0.0, boolean_value=0)
    column = VALUE_COLUMNS.get(value_type)
    if column:
        cols[column] = getattr(data, column)
    return cols


def _matcher_columns(data: Any) -> dict[str, Any]:
    return dict(subject=filter_pb2.MatchSubject.Name(data.subject),
                type=filter_pb2.MatchType.Name(data.type), input=data.input)


class FilterServant(Servant):
    SERVICE = "filter.FilterInterface"

    def _filter(self, msg: Any) -> Row:
        return _by_id(self.store, "filter", msg.id)

    # -- reads ---------------------------------------------------------------
    def FindFilter(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT f.* FROM filter f JOIN show s ON s.id = f.show_id "
                       "WHERE s.name = ? AND f.name = ?", (request.show, request.name))
        return dict(filter=M.filters([row])[0])

    def GetActions(self, request: Any, context: Any) -> Reply:
        rows = _actions(self.store, self._filter(request.filter)["id"])
        return dict(actions=filter_pb2.ActionSeq(actions=M.actions(rows)))

    def GetMatchers(self, request: Any, context: Any) -> Reply:
        flt = self._filter(request.filter)
        rows = self.store.all("SELECT * FROM matcher WHERE filter_id = ? ORDER BY seq",
                              (flt["id"],))
        return dict(matchers=filter_pb2.MatcherSeq(matchers=M.matchers(rows)))

    # -- settings ------------------------------------------------------------
    def _set(self, request: Any, column: str, value: Any) -> None:
        with self.store.tx():
            flt = self._filter(request.filter)
            self.store.run(f"UPDATE filter SET {column} = ? WHERE id = ?", (value, flt["id"]))

    def SetEnabled(self, request: Any, context: Any) -> Reply:
        self._set(request, "enabled", int(request.enabled))
        return None

    def SetName(self, request: Any, context: Any) -> Reply:
        self._set(request, "name", request.name)
        return None

    def SetType(self, request: Any, context: Any) -> Reply:
        self._set(request, "type", filter_pb2.FilterType.Name(request.type))
        return None

    def _move(self, request: Any, sql: str, *args: Any) -> None:
        """Cuebot's ordering: shift this filter's position, then renumber the show's filters."""
        with self.store.tx():
            flt = self._filter(request.filter)
            self.store.run(f"UPDATE filter SET ord = {sql} WHERE id = ?", (*args, flt["id"]))
            reorder(self.store, flt["show_id"])

    def SetOrder(self, request: Any, context: Any) -> Reply:
        self._move(request, "? - 0.1", float(request.order))
        return None

    def OrderFirst(self, request: Any, context: Any) -> Reply:
        self._move(request, "? - 0.1", 0.0)
        return None

    def OrderLast(self, request: Any, context: Any) -> Reply:
        self._move(request, "? - 0.1", 9999.0)
        return None

    def RaiseOrder(self, request: Any, context: Any) -> Reply:
        self._move(request, "ord - 1.1")
        return None

    def LowerOrder(self, request: Any, context: Any) -> Reply:
        self._move(request, "ord + 1.1")
        return None

    # -- create / delete -----------------------------------------------------
    def CreateMatcher(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            flt = self._filter(request.filter)
            mid = new_id()
            self.store.insert("matcher", id=mid, filter_id=flt["id"],
                              **_matcher_columns(request.data))
        row = self.store.one("SELECT * FROM matcher WHERE id = ?", (mid,))
        return dict(matcher=M.matchers([row])[0])

    def CreateAction(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            flt = self._filter(request.filter)
            aid = new_id()
            self.store.insert("action", id=aid, filter_id=flt["id"],
                              **_action_columns(request.data))
        row = self.store.one("SELECT * FROM action WHERE id = ?", (aid,))
        return dict(action=M.actions([row])[0])

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            flt = self._filter(request.filter)
            for table in ("action", "matcher"):
                self.store.run(f"DELETE FROM {table} WHERE filter_id = ?", (flt["id"],))
            self.store.run("DELETE FROM filter WHERE id = ?", (flt["id"],))
            reorder(self.store, flt["show_id"])
        return None

    # -- running -------------------------------------------------------------
    def RunFilterOnJobs(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            flt = self._filter(request.filter)
            for job in request.jobs.jobs:
                run_filter(self.store, flt, _by_id(self.store, "job", job.id)["id"])
        return None

    def RunFilterOnGroup(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            flt = self._filter(request.filter)
            group = _by_id(self.store, "folder", request.group.id)
            for job in self.store.all("SELECT id FROM job WHERE folder_id = ? AND state = "
                                      "'PENDING' ORDER BY name", (group["id"],)):
                run_filter(self.store, flt, job["id"])
        return None


class ActionServant(Servant):
    SERVICE = "filter.ActionInterface"

    def Commit(self, request: Any, context: Any) -> Reply:
        """Type and value are overwritten from the message (its value type picks the value)."""
        with self.store.tx():
            key = request.action.id
            if not key or self.store.one("SELECT 1 FROM action WHERE id = ?", (key,)) is None:
                raise internal(SPCUE_ERROR, f"Invalid actionId on Action commit: {key}")
            cols = _action_columns(request.action)
            sets = ", ".join(f"{c} = ?" for c in cols)
            self.store.run(f"UPDATE action SET {sets} WHERE id = ?", (*cols.values(), key))
        return None

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            action = _by_id(self.store, "action", request.action.id)
            self.store.run("DELETE FROM action WHERE id = ?", (action["id"],))
        return None

    def GetParentFilter(self, request: Any, context: Any) -> Reply:
        """Always INTERNAL in Cuebot: the action it builds from the request has no filter."""
        raise internal(SPCUE_ERROR, "Trying to get a filterId from a ActityEntity created "
                                    "without a filter")


class MatcherServant(Servant):
    SERVICE = "filter.MatcherInterface"

    def Commit(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            matcher = _by_id(self.store, "matcher", request.matcher.id)
            cols = _matcher_columns(request.matcher)
            sets = ", ".join(f"{c} = ?" for c in cols)
            self.store.run(f"UPDATE matcher SET {sets} WHERE id = ?",
                           (*cols.values(), matcher["id"]))
        return None

    def Delete(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            matcher = _by_id(self.store, "matcher", request.matcher.id)
            self.store.run("DELETE FROM matcher WHERE id = ?", (matcher["id"],))
        return None

    def GetParentFilter(self, request: Any, context: Any) -> Reply:
        matcher = _by_id(self.store, "matcher", request.matcher.id)
        row = self.store.one("SELECT * FROM filter WHERE id = ?", (matcher["filter_id"],))
        return dict(filter=M.filters([row])[0])


SERVANTS = [FilterServant, ActionServant, MatcherServant]
