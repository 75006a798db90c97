"""Job filters in the sandbox: the engine run on launched jobs, and the Filter, Action
and Matcher interfaces over real gRPC.

The demo show ``testing`` has one filter, ``auto_priority`` (MATCH_ALL, job
name contains ``urgent`` -> priority 200). Engine tests launch jobs the way
LaunchSpec does (the job is created, then the show's filters run in the same
transaction) and read the result back from the store.
"""
from __future__ import annotations

from typing import Any

import grpc
import pytest
from opencue_proto import filter_pb2, filter_pb2_grpc, job_pb2, show_pb2, show_pb2_grpc

from gateway.sandbox import launchspec
from gateway.sandbox.farm import JobSpec, LayerSpec
from gateway.sandbox.filters import apply_filters, matcher_matches
from gateway.sandbox.seed import ROOT_GROUP, TESTING
from gateway.sandbox.store import new_id

EMPTY_RESULT = ("org.springframework.dao.EmptyResultDataAccessException: Incorrect result "
                "size: expected 1, actual 0\nIncorrect result size: expected 1, actual 0")
SPEC = ('<?xml version="1.0"?><!DOCTYPE spec PUBLIC "SPI Cue  Specification Language" '
        '"http://localhost:8080/spcue/dtd/cjsl-1.15.dtd"><spec><show>testing</show>'
        '<shot>sh090</shot><user>jdoe</user><uid>1000</uid><job name="{name}"><layers>'
        '<layer name="render" type="Render"><cmd>echo</cmd><range>1-2</range><chunk>1</chunk>'
        '</layer></layers></job></spec>')


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


class Filters:
    """A show's filters built straight into the store, and jobs launched through them."""

    def __init__(self, sandbox: Any) -> None:
        self.farm = sandbox.farm
        self.store = sandbox.store
        self.n = 0

    def add(self, name: str, matchers: list[tuple[str, str, str]],
            actions: list[dict[str, Any]], *, kind: str = "MATCH_ALL", enabled: bool = True,
            order: float = 10.0) -> str:
        fid = new_id()
        with self.store.tx():
            self.store.insert("filter", id=fid, show_id=TESTING, name=name, type=kind,
                              ord=order, enabled=int(enabled))
            for subject, match, text in matchers:
                self.store.insert("matcher", id=new_id(), filter_id=fid, subject=subject,
                                  type=match, input=text)
            for action in actions:
                self.store.insert("action", id=new_id(), filter_id=fid, **action)
        return fid

    def launch(self, suffix: str, *layers: LayerSpec, **spec: Any) -> Any:
        self.n += 1
        name = f"testing-sh09{self.n}-jdoe_{suffix}"
        with self.store.tx():
            job_id = self.farm.create_job(JobSpec(
                show_id=TESTING, shot=f"sh09{self.n}", user="jdoe", name=name,
                layers=list(layers) or [LayerSpec("render", "1-2")], **spec))
            apply_filters(self.store, job_id)
        return self.store.one("SELECT * FROM job WHERE id = ?", (job_id,))

    def layers(self, job_id: str) -> dict[str, Any]:
        return {r["name"]: r for r in self.store.all("SELECT * FROM layer WHERE job_id = ?",
                                                     (job_id,))}


@pytest.fixture
def filters(sandbox: Any) -> Filters:
    return Filters(sandbox)


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind, value, inputs, expected", [
    ("CONTAINS", "urg", ["job_urgent"], True),
    ("CONTAINS", "URG", ["job_urgent"], False),          # the input is not lower-cased
    ("DOES_NOT_CONTAIN", "x", ["abc", "xyz"], False),    # must hold for every value
    ("DOES_NOT_CONTAIN", "x", [], True),
    ("IS", "comp", ["render", "comp"], True),
    ("IS_NOT", "comp", ["render", "comp"], False),
    ("BEGINS_WITH", "ren", ["render"], True),
    ("ENDS_WITH", "der", ["render"], True),
    ("REGEX", r"sh0[1-3]0", ["testing-sh020-x"], True),  # unanchored search
    ("REGEX", "(broken", ["(broken"], False),            # invalid: no match
])
def test_matcher_types(kind: str, value: str, inputs: list[str], expected: bool) -> None:
    assert matcher_matches(kind, value, inputs) is expected


def test_the_demo_filter_on_launch(filters: Filters) -> None:
    assert filters.launch("URGENT_fix")["priority"] == 200   # job names compare lower-cased
    assert filters.launch("normal")["priority"] == 1


def test_match_all_and_match_any(filters: Filters) -> None:
    matchers = [("USER", "IS", "jdoe"), ("SHOT", "IS", "nope")]
    filters.add("all", matchers, [dict(type="PAUSE_JOB", value_type="BOOLEAN_TYPE",
                                       boolean_value=1)])
    filters.add("any", matchers, [dict(type="SET_JOB_MAX_CORES", value_type="FLOAT_TYPE",
                                       float_value=12.5)], kind="MATCH_ANY")
    filters.add("none", [], [dict(type="SET_JOB_PRIORITY", value_type="INTEGER_TYPE",
                                  integer_value=7)])          # no matchers: never applies
    filters.add("off", [("USER", "IS", "jdoe")], [dict(
        type="SET_JOB_MIN_CORES", value_type="FLOAT_TYPE", float_value=3)], enabled=False)
    job = filters.launch("plain")
    assert (job["is_paused"], job["max_cores"], job["priority"], job["min_cores"]) == (
        0, 1250, 1, 100)


def test_stop_processing_ends_the_run(filters: Filters) -> None:
    filters.add("first", [("SHOW", "IS", "testing")], [
        dict(type="STOP_PROCESSING"),      # listed last whatever its creation order
        dict(type="SET_JOB_PRIORITY", value_type="INTEGER_TYPE", integer_value=50)], order=0.5)
    filters.add("second", [("SHOW", "IS", "testing")], [
        dict(type="PAUSE_JOB", value_type="BOOLEAN_TYPE", boolean_value=1)], order=20)
    job = filters.launch("stopped")
    assert (job["priority"], job["is_paused"]) == (50, 0)


def test_layer_subjects_and_layer_actions(filters: Filters) -> None:
    filters.add("comp", [("LAYER_NAME", "IS", "comp"), ("SERVICE_NAME", "IS", "nuke")], [
        dict(type="SET_ALL_RENDER_LAYER_TAGS", value_type="STRING_TYPE",
             string_value="gpu|linux"),
        dict(type="SET_ALL_RENDER_LAYER_MEMORY", value_type="INTEGER_TYPE",
             integer_value=8388608),
        dict(type="SET_ALL_RENDER_LAYER_CORES", value_type="FLOAT_TYPE", float_value=2),
        dict(type="SET_ALL_UTIL_LAYER_MAX_CORES", value_type="FLOAT_TYPE", float_value=1),
        dict(type="SET_MEMORY_OPTIMIZER", value_type="BOOLEAN_TYPE", boolean_value=0)])
    job = filters.launch("comp", LayerSpec("render", "1-2"),
                         LayerSpec("comp", "1-2", services=["nuke"]),
                         LayerSpec("cleanup", "1", type="UTIL"))
    layers = filters.layers(job["id"])
    for name in ("render", "comp"):
        assert (layers[name]["tags"], layers[name]["min_memory"], layers[name]["min_cores"]) == (
            "gpu | linux", 8388608, 200)
    assert (layers["cleanup"]["min_cores"], layers["cleanup"]["max_cores"]) == (100, 100)
    assert {r["memory_optimizer_enabled"] for r in layers.values()} == {0}
    other = filters.layers(filters.launch("render_only")["id"])
    assert other["render"]["min_memory"] != 8388608


def test_move_to_group_inherits_what_no_earlier_action_set(filters: Filters) -> None:
    store = filters.store
    group = new_id()
    with store.tx():
        store.insert("folder", id=group, show_id=TESTING, parent_id=ROOT_GROUP, name="lighting",
                     dept_id=store.one("SELECT dept_id FROM folder WHERE id = ?",
                                       (ROOT_GROUP,))["dept_id"], level=1,
                     default_job_priority=300, default_job_max_cores=4000)
    filters.add("move", [("USER", "IS", "jdoe")], [
        dict(type="SET_JOB_MAX_CORES", value_type="FLOAT_TYPE", float_value=10),
        dict(type="MOVE_JOB_TO_GROUP", value_type="GROUP_TYPE", group_value=group)])
    job = filters.launch("moved")
    assert (job["folder_id"], job["priority"], job["max_cores"]) == (group, 300, 1000)
    filters.add("nowhere", [("USER", "IS", "jdoe")], [
        dict(type="MOVE_JOB_TO_GROUP", value_type="GROUP_TYPE", group_value="no-such-group")],
        order=30)
    assert filters.launch("still_moved")["folder_id"] == group   # an unknown group is ignored


def test_launch_spec_runs_the_filters(sandbox: Any) -> None:
    (job_id,) = launchspec.launch(sandbox.farm, SPEC.format(name="urgent_comp"))
    assert sandbox.store.one("SELECT priority FROM job WHERE id = ?", (job_id,))[0] == 200


# ---------------------------------------------------------------------------
# the interfaces
# ---------------------------------------------------------------------------
class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.shows = show_pb2_grpc.ShowInterfaceStub(channel)
        self.filters = filter_pb2_grpc.FilterInterfaceStub(channel)
        self.actions = filter_pb2_grpc.ActionInterfaceStub(channel)
        self.matchers = filter_pb2_grpc.MatcherInterfaceStub(channel)

    async def create(self, name: str) -> filter_pb2.Filter:
        return (await self.shows.CreateFilter(show_pb2.ShowCreateFilterRequest(
            show=show_pb2.Show(name="testing"), name=name))).filter

    async def listing(self) -> list[tuple[str, float]]:
        got = await self.shows.GetFilters(show_pb2.ShowGetFiltersRequest(
            show=show_pb2.Show(name="testing")))
        return [(f.name, f.order) for f in got.filters.filters]

    async def actions_of(self, flt: filter_pb2.Filter) -> list[filter_pb2.Action]:
        got = await self.filters.GetActions(filter_pb2.FilterGetActionsRequest(filter=flt))
        return list(got.actions.actions)

    async def matchers_of(self, flt: filter_pb2.Filter) -> list[filter_pb2.Matcher]:
        got = await self.filters.GetMatchers(filter_pb2.FilterGetMatchersRequest(filter=flt))
        return list(got.matchers.matchers)


@pytest.fixture
def stubs(sandbox_channel: grpc.aio.Channel) -> Stubs:
    return Stubs(sandbox_channel)


async def test_find_filter_and_settings(stubs: Stubs) -> None:
    found = (await stubs.filters.FindFilter(filter_pb2.FilterFindFilterRequest(
        show="testing", name="auto_priority"))).filter
    assert (found.type, found.order, found.enabled) == (filter_pb2.MATCH_ALL, 1.0, True)
    err = await rpc_error(stubs.filters.FindFilter(filter_pb2.FilterFindFilterRequest(
        show="testing", name="nope")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    await stubs.filters.SetEnabled(filter_pb2.FilterSetEnabledRequest(filter=found,
                                                                      enabled=False))
    await stubs.filters.SetName(filter_pb2.FilterSetNameRequest(filter=found, name="renamed"))
    await stubs.filters.SetType(filter_pb2.FilterSetTypeRequest(filter=found,
                                                                type=filter_pb2.MATCH_ANY))
    again = (await stubs.filters.FindFilter(filter_pb2.FilterFindFilterRequest(
        show="testing", name="renamed"))).filter
    assert (again.id, again.type, again.enabled) == (found.id, filter_pb2.MATCH_ANY, False)
    err = await rpc_error(stubs.filters.SetEnabled(filter_pb2.FilterSetEnabledRequest(
        filter=filter_pb2.Filter(id="nope"), enabled=True)))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_ordering(stubs: Stubs) -> None:
    b, c = await stubs.create("b"), await stubs.create("c")
    assert await stubs.listing() == [("auto_priority", 1.0), ("b", 2.0), ("c", 3.0)]
    await stubs.filters.OrderFirst(filter_pb2.FilterOrderFirstRequest(filter=c))
    assert [n for n, _ in await stubs.listing()] == ["c", "auto_priority", "b"]
    await stubs.filters.LowerOrder(filter_pb2.FilterLowerOrderRequest(filter=c))
    assert await stubs.listing() == [("auto_priority", 1.0), ("c", 2.0), ("b", 3.0)]
    await stubs.filters.RaiseOrder(filter_pb2.FilterRaiseOrderRequest(filter=b))
    assert [n for n, _ in await stubs.listing()] == ["auto_priority", "b", "c"]
    await stubs.filters.OrderLast(filter_pb2.FilterOrderLastRequest(filter=b))
    assert [n for n, _ in await stubs.listing()] == ["auto_priority", "c", "b"]
    await stubs.filters.SetOrder(filter_pb2.FilterSetOrderRequest(filter=b, order=1))
    assert await stubs.listing() == [("b", 1.0), ("auto_priority", 2.0), ("c", 3.0)]
    await stubs.filters.Delete(filter_pb2.FilterDeleteRequest(filter=b))
    assert await stubs.listing() == [("auto_priority", 1.0), ("c", 2.0)]


async def test_matchers_and_actions(stubs: Stubs) -> None:
    flt = await stubs.create("routing")
    matcher = (await stubs.filters.CreateMatcher(filter_pb2.FilterCreateMatcherRequest(
        filter=flt, data=filter_pb2.Matcher(subject=filter_pb2.SHOT, type=filter_pb2.IS,
                                            input="sh010")))).matcher
    assert matcher.id and (matcher.subject, matcher.input) == (filter_pb2.SHOT, "sh010")
    stop = (await stubs.filters.CreateAction(filter_pb2.FilterCreateActionRequest(
        filter=flt, data=filter_pb2.Action(type=filter_pb2.STOP_PROCESSING,
                                           value_type=filter_pb2.NONE_TYPE)))).action
    pause = (await stubs.filters.CreateAction(filter_pb2.FilterCreateActionRequest(
        filter=flt, data=filter_pb2.Action(type=filter_pb2.PAUSE_JOB,
                                           value_type=filter_pb2.BOOLEAN_TYPE,
                                           boolean_value=True, integer_value=9)))).action
    assert (pause.boolean_value, pause.integer_value) == (True, 0)   # only the typed value
    assert [a.id for a in await stubs.actions_of(flt)] == [pause.id, stop.id]

    await stubs.actions.Commit(filter_pb2.ActionCommitRequest(action=filter_pb2.Action(
        id=pause.id, type=filter_pb2.SET_JOB_PRIORITY, value_type=filter_pb2.INTEGER_TYPE,
        integer_value=250)))
    changed = (await stubs.actions_of(flt))[0]
    assert (changed.type, changed.integer_value, changed.boolean_value) == (
        filter_pb2.SET_JOB_PRIORITY, 250, False)
    await stubs.matchers.Commit(filter_pb2.MatcherCommitRequest(matcher=filter_pb2.Matcher(
        id=matcher.id, subject=filter_pb2.JOB_NAME, type=filter_pb2.REGEX, input="^urgent")))
    assert (await stubs.matchers_of(flt))[0].type == filter_pb2.REGEX
    parent = (await stubs.matchers.GetParentFilter(filter_pb2.MatcherGetParentFilterRequest(
        matcher=matcher))).filter
    assert parent.id == flt.id

    err = await rpc_error(stubs.actions.Commit(filter_pb2.ActionCommitRequest(
        action=filter_pb2.Action(id="nope"))))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == ("com.imageworks.spcue.SpcueRuntimeException: Invalid actionId on "
                             "Action commit: nope\nInvalid actionId on Action commit: nope")
    err = await rpc_error(stubs.actions.GetParentFilter(filter_pb2.ActionGetParentFilterRequest(
        action=pause)))
    assert err.code() == grpc.StatusCode.INTERNAL
    for call in (stubs.matchers.Commit(filter_pb2.MatcherCommitRequest(
                     matcher=filter_pb2.Matcher(id="nope"))),
                 stubs.matchers.Delete(filter_pb2.MatcherDeleteRequest(
                     matcher=filter_pb2.Matcher(id="nope"))),
                 stubs.actions.Delete(filter_pb2.ActionDeleteRequest(
                     action=filter_pb2.Action(id="nope")))):
        err = await rpc_error(call)
        assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)

    await stubs.actions.Delete(filter_pb2.ActionDeleteRequest(action=stop))
    await stubs.matchers.Delete(filter_pb2.MatcherDeleteRequest(matcher=matcher))
    assert [a.id for a in await stubs.actions_of(flt)] == [pause.id]
    assert await stubs.matchers_of(flt) == []


async def test_run_filter_on_jobs_and_group(sandbox: Any, stubs: Stubs) -> None:
    flt = await stubs.create("pause_sh010")
    await stubs.filters.CreateMatcher(filter_pb2.FilterCreateMatcherRequest(
        filter=flt, data=filter_pb2.Matcher(subject=filter_pb2.SHOT, type=filter_pb2.IS,
                                            input="sh010")))
    await stubs.filters.CreateAction(filter_pb2.FilterCreateActionRequest(
        filter=flt, data=filter_pb2.Action(type=filter_pb2.PAUSE_JOB,
                                           value_type=filter_pb2.BOOLEAN_TYPE,
                                           boolean_value=True)))
    await stubs.filters.SetEnabled(filter_pb2.FilterSetEnabledRequest(filter=flt,
                                                                      enabled=False))
    store = sandbox.store
    ids = {r["name"]: r["id"] for r in store.all("SELECT id, name FROM job")}
    await stubs.filters.RunFilterOnJobs(filter_pb2.FilterRunFilterOnJobsRequest(
        filter=flt, jobs=job_pb2.JobSeq(jobs=[job_pb2.Job(id=i) for i in ids.values()])))
    paused = {r["name"] for r in store.all("SELECT name FROM job WHERE is_paused = 1")}
    assert paused == {"testing-sh010-jdoe_lighting", "testing-sh020-asmith_fx_sim"}
    store.run("UPDATE job SET is_paused = 0")
    await stubs.filters.RunFilterOnGroup(filter_pb2.FilterRunFilterOnGroupRequest(
        filter=flt, group=job_pb2.Group(id=ROOT_GROUP)))
    assert store.one("SELECT COUNT(*) FROM job WHERE is_paused = 1")[0] == 1
    err = await rpc_error(stubs.filters.RunFilterOnJobs(filter_pb2.FilterRunFilterOnJobsRequest(
        filter=flt, jobs=job_pb2.JobSeq(jobs=[job_pb2.Job(id="nope")]))))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_delete_removes_matchers_and_actions(sandbox: Any, stubs: Stubs) -> None:
    flt = (await stubs.filters.FindFilter(filter_pb2.FilterFindFilterRequest(
        show="testing", name="auto_priority"))).filter
    await stubs.filters.Delete(filter_pb2.FilterDeleteRequest(filter=flt))
    for table in ("filter", "matcher", "action"):
        assert sandbox.store.one(f"SELECT COUNT(*) FROM {table}")[0] == 0
    err = await rpc_error(stubs.filters.GetActions(filter_pb2.FilterGetActionsRequest(
        filter=flt)))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)
