"""The sandbox's Limit, Task, Department, Comment and Cue interfaces over real gRPC.

Demo data used: limit ``nuke_license`` (max 10) on the lighting job's comp
layer, the show ``testing``'s Pipeline department config with one task
(shot sh010, 10 cores), a comment on host rn006.
"""
from __future__ import annotations

from typing import Any

import grpc
import pytest
from opencue_proto import (comment_pb2, comment_pb2_grpc, cue_pb2, cue_pb2_grpc, department_pb2,
                           department_pb2_grpc, job_pb2, job_pb2_grpc, limit_pb2,
                           limit_pb2_grpc, task_pb2, task_pb2_grpc)

from gateway.sandbox.seed import PIPELINE_POINT

EMPTY_RESULT = ("org.springframework.dao.EmptyResultDataAccessException: Incorrect result "
                "size: expected 1, actual 0\nIncorrect result size: expected 1, actual 0")


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


@pytest.fixture
def limits(sandbox_channel: grpc.aio.Channel) -> limit_pb2_grpc.LimitInterfaceStub:
    return limit_pb2_grpc.LimitInterfaceStub(sandbox_channel)


@pytest.fixture
def depts(sandbox_channel: grpc.aio.Channel) -> department_pb2_grpc.DepartmentInterfaceStub:
    return department_pb2_grpc.DepartmentInterfaceStub(sandbox_channel)


async def all_limits(limits: Any) -> list[tuple[str, int, int]]:
    got = await limits.GetAll(limit_pb2.LimitGetAllRequest())
    return [(x.name, x.max_value, x.current_running) for x in got.limits]


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------
async def test_limit_reads_and_running_count(sandbox: Any, limits: Any) -> None:
    assert await all_limits(limits) == [("nuke_license", 10, 0)]
    found = (await limits.Find(limit_pb2.LimitFindRequest(name="nuke_license"))).limit
    got = (await limits.Get(limit_pb2.LimitGetRequest(id=found.id))).limit
    assert got == found
    s = sandbox.store
    comp = s.one("SELECT id FROM frame WHERE name = '0001-comp'")["id"]
    host = s.one("SELECT id FROM host WHERE name = 'rn001.farm.studio.local'")["id"]
    with s.tx():
        sandbox.farm.book(comp, host)
    assert await all_limits(limits) == [("nuke_license", 10, 1)]


async def test_limit_mutations(limits: Any) -> None:
    made = (await limits.Create(limit_pb2.LimitCreateRequest(name="maya_license",
                                                             max_value=100))).limit
    assert (made.name, made.max_value, made.current_running) == ("maya_license", 100, 0)
    assert made.id
    await limits.SetMaxValue(limit_pb2.LimitSetMaxValueRequest(name="maya_license",
                                                               max_value=75))
    await limits.Rename(limit_pb2.LimitRenameRequest(old_name="maya_license",
                                                     new_name="arnold_license"))
    assert await all_limits(limits) == [("arnold_license", 75, 0), ("nuke_license", 10, 0)]
    await limits.Delete(limit_pb2.LimitDeleteRequest(name="arnold_license"))
    assert await all_limits(limits) == [("nuke_license", 10, 0)]


async def test_missing_limits_are_internal_and_duplicates_break_find(limits: Any) -> None:
    for call in (limits.Find(limit_pb2.LimitFindRequest(name="nope")),
                 limits.Get(limit_pb2.LimitGetRequest(id="nope")),
                 limits.Delete(limit_pb2.LimitDeleteRequest(name="nope")),
                 limits.SetMaxValue(limit_pb2.LimitSetMaxValueRequest(name="nope")),
                 limits.Rename(limit_pb2.LimitRenameRequest(old_name="nope", new_name="x"))):
        err = await rpc_error(call)
        assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)
    await limits.Create(limit_pb2.LimitCreateRequest(name="nuke_license", max_value=1))
    err = await rpc_error(limits.Find(limit_pb2.LimitFindRequest(name="nuke_license")))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details().endswith("Incorrect result size: expected 1, actual 2")


# ---------------------------------------------------------------------------
# departments and tasks
# ---------------------------------------------------------------------------
async def test_department_names_and_tasks(depts: Any) -> None:
    names = (await depts.GetDepartmentNames(department_pb2.DeptGetDepartmentNamesRequest())).names
    assert list(names) == sorted(names) and "Pipeline" in names and "Unknown" in names
    pipeline = department_pb2.Department(id=PIPELINE_POINT)
    tasks = (await depts.GetTasks(department_pb2.DeptGetTasksRequest(
        department=pipeline))).tasks.tasks
    assert [(t.shot, t.dept, t.min_cores) for t in tasks] == [("sh010", "Pipeline", 10.0)]
    added = (await depts.AddTask(department_pb2.DeptAddTaskRequest(
        department=pipeline, shot="sh020", min_cores=2.5))).task
    assert (added.shot, added.min_cores, added.point_id) == ("sh020", 2.5, PIPELINE_POINT)
    replaced = (await depts.ReplaceTasks(department_pb2.DeptReplaceTaskRequest(
        department=pipeline, tmap={"sh100": 1, "sh050": 4}))).tasks.tasks
    assert [(t.shot, t.min_cores) for t in replaced] == [("sh050", 4.0), ("sh100", 1.0)]
    await depts.ClearTasks(department_pb2.DeptClearTasksRequest(department=pipeline))
    assert not (await depts.GetTasks(department_pb2.DeptGetTasksRequest(
        department=pipeline))).tasks.tasks
    err = await rpc_error(depts.GetTasks(department_pb2.DeptGetTasksRequest(
        department=department_pb2.Department(id="nope"))))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_department_management(sandbox: Any, depts: Any) -> None:
    pipeline = department_pb2.Department(id=PIPELINE_POINT)
    point = lambda: sandbox.store.one("SELECT * FROM point WHERE id = ?",  # noqa: E731
                                      (PIPELINE_POINT,))
    await depts.EnableTiManaged(department_pb2.DeptEnableTiManagedRequest(
        department=pipeline, ti_task="lighting", managed_cores=12.7))
    assert (point()["ti_managed"], point()["ti_task"], point()["min_cores"]) == (
        1, "lighting", 1200)
    await depts.SetManagedCores(department_pb2.DeptSetManagedCoresRequest(
        department=pipeline, managed_cores=20))
    await depts.DisableTiManaged(department_pb2.DeptDisableTiManagedRequest(
        department=pipeline))
    assert (point()["ti_managed"], point()["ti_task"], point()["min_cores"]) == (0, "", 2000)
    await depts.AddDepartmentName(department_pb2.DeptAddDeptNameRequest(name="Comp"))
    assert "Comp" in (await depts.GetDepartmentNames(
        department_pb2.DeptGetDepartmentNamesRequest())).names
    await depts.RemoveDepartmentName(department_pb2.DeptRemoveDepartmentNameRequest(name="Comp"))
    err = await rpc_error(depts.RemoveDepartmentName(
        department_pb2.DeptRemoveDepartmentNameRequest(name="Pipeline")))   # in use
    assert err.code() == grpc.StatusCode.INTERNAL
    err = await rpc_error(depts.Delete(department_pb2.DeptDeleteRequest(department=pipeline)))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_task_rpcs_look_tasks_up_by_name(sandbox: Any,
                                               sandbox_channel: grpc.aio.Channel) -> None:
    tasks = task_pb2_grpc.TaskInterfaceStub(sandbox_channel)
    task_id = sandbox.store.one("SELECT id FROM task")["id"]
    as_given = task_pb2.Task(id=task_id)                  # what a client holding a Task sends
    for call in (tasks.SetMinCores(task_pb2.TaskSetMinCoresRequest(task=as_given,
                                                                   new_min_cores=4)),
                 tasks.ClearAdjustments(task_pb2.TaskClearAdjustmentsRequest(task=as_given)),
                 tasks.Delete(task_pb2.TaskDeleteRequest(task=as_given))):
        err = await rpc_error(call)
        assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)
    by_name = task_pb2.Task(name=task_id)
    sandbox.store.run("UPDATE task SET adjust_cores = 300")
    await tasks.SetMinCores(task_pb2.TaskSetMinCoresRequest(task=by_name, new_min_cores=2.6))
    await tasks.ClearAdjustments(task_pb2.TaskClearAdjustmentsRequest(task=by_name))
    row = sandbox.store.one("SELECT min_cores, adjust_cores FROM task")
    assert (row["min_cores"], row["adjust_cores"]) == (200, 0)   # whole cores
    await tasks.Delete(task_pb2.TaskDeleteRequest(task=by_name))
    assert sandbox.store.one("SELECT COUNT(*) FROM task")[0] == 0


# ---------------------------------------------------------------------------
# comments, system stats
# ---------------------------------------------------------------------------
async def test_comment_save_and_delete(sandbox: Any, sandbox_channel: grpc.aio.Channel) -> None:
    comments = comment_pb2_grpc.CommentInterfaceStub(sandbox_channel)
    row = sandbox.store.one("SELECT * FROM comment WHERE subject = 'disk'")
    await comments.Save(comment_pb2.CommentSaveRequest(comment=comment_pb2.Comment(
        id=row["id"], subject="disk", message="Replaced twice.")))
    saved = sandbox.store.one("SELECT * FROM comment WHERE id = ?", (row["id"],))
    assert (saved["message"], saved["user"], saved["timestamp"]) == (
        "Replaced twice.", row["user"], row["timestamp"])
    await comments.Delete(comment_pb2.CommentDeleteRequest(comment=comment_pb2.Comment(
        id=row["id"])))
    assert sandbox.store.one("SELECT * FROM comment WHERE id = ?", (row["id"],)) is None
    await comments.Delete(comment_pb2.CommentDeleteRequest(comment=comment_pb2.Comment(
        id=row["id"])))                                   # unknown: nothing to do, OK
    await comments.Save(comment_pb2.CommentSaveRequest(comment=comment_pb2.Comment(id="nope")))


async def test_system_stats(sandbox: Any, sandbox_channel: grpc.aio.Channel) -> None:
    """Study §2.2 #10: live counters, as Cuebot's CueStatic reports its queues."""
    cue = cue_pb2_grpc.CueInterfaceStub(sandbox_channel)
    stats = (await cue.GetSystemStats(cue_pb2.CueGetSystemStatsRequest())).stats
    assert (stats.dispatch_remaining_capacity, stats.manage_remaining_capacity,
            stats.booking_remaining_capacity, stats.report_remaining_capacity) == (
        2000, 2000, 2000, 5000)
    assert stats.booked_procs == stats.manage_executed == 0
    sandbox.dispatcher.step()                           # the demo farm's waiting frames start
    frames = job_pb2_grpc.FrameInterfaceStub(sandbox_channel)
    row = sandbox.store.one("SELECT id FROM frame WHERE state = 'DEAD' LIMIT 1")
    await frames.Retry(job_pb2.FrameRetryRequest(frame=job_pb2.Frame(id=row["id"])))
    stats = (await cue.GetSystemStats(cue_pb2.CueGetSystemStatsRequest())).stats
    running = sandbox.store.one("SELECT COUNT(*) FROM proc")[0]
    assert stats.dispatch_executed == 1 and stats.booking_executed >= 1
    assert stats.booked_procs == running - 4      # the demo seed booked 4 itself
    assert stats.manage_executed == 1             # the retry went through Cuebot's queue
