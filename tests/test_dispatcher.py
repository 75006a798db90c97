"""The sandbox's simulated dispatcher, stepped by hand on a fresh farm.

Each test builds the few hosts and jobs it needs on a fresh-Cuebot seed and
drives ``Dispatcher.step(now)`` with its own clock, then reads the database:
what is booked where, frame states, and the counters Cuebot keeps.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from gateway.sandbox.dispatcher import DispatchSettings, Dispatcher
from gateway.sandbox.farm import Farm, JobSpec, LayerSpec
from gateway.sandbox.seed import TESTING, seed
from gateway.sandbox.store import Store, new_id

T0 = 1_800_000_000.0


@pytest.fixture
def farm() -> Any:
    store = Store(":memory:")
    seed(store, demo=False)
    yield Farm(store)
    store.close()


def dispatcher(farm: Farm, **kw: Any) -> Dispatcher:
    """Every host asks for work on every pass, no job lock (see test_booking for those)."""
    settings = DispatchSettings.eager(run_seconds=kw.pop("run_seconds", (10.0, 10.0)), **kw)
    return Dispatcher(farm, settings, rng=random.Random(7))


def job(farm: Farm, name: str, *layers: LayerSpec, **kw: Any) -> str:
    """A job in facility ``local``, whose hosts (local.general) may run it."""
    kw.setdefault("facility", "local")
    with farm.store.tx():
        return farm.create_job(JobSpec(show_id=TESTING, shot="sh", user="u",
                                       name=f"testing-sh-u_{name}", layers=list(layers), **kw))


def host(farm: Farm, name: str, **kw: Any) -> str:
    with farm.store.tx():
        return farm.add_host(name, **kw)


def states(farm: Farm, job_id: str) -> dict[str, int]:
    rows = farm.store.all("SELECT state, COUNT(*) AS n FROM frame WHERE job_id = ? "
                          "GROUP BY state", (job_id,))
    return {r["state"]: r["n"] for r in rows}


def col(farm: Farm, sql: str, *args: Any) -> Any:
    return farm.store.one(sql, args)[0]


def test_frames_run_to_success_with_cuebot_counters(farm: Farm) -> None:
    h = host(farm, "h1", cores=400, memory=16 * 1048576)
    j = job(farm, "a", LayerSpec("render", "1-6", min_cores=100, min_memory=1048576))
    d = dispatcher(farm)
    r = d.step(T0)
    assert len(r.booked) == 4 and states(farm, j) == {"RUNNING": 4, "WAITING": 2}
    assert col(farm, "SELECT idle_cores FROM host WHERE id = ?", h) == 0
    assert col(farm, "SELECT idle_memory FROM host WHERE id = ?", h) == 12 * 1048576
    assert col(farm, "SELECT COUNT(*) FROM proc") == 4
    assert d.step(T0 + 5).booked == []                  # nothing due, nothing free
    r = d.step(T0 + 10)                                 # all four end; two more start
    assert len(r.succeeded) == 4 and len(r.booked) == 2
    assert states(farm, j) == {"SUCCEEDED": 4, "RUNNING": 2}
    assert col(farm, "SELECT rendered_frame_count FROM job WHERE id = ?", j) == 4
    assert col(farm, "SELECT rendered_core_sec FROM job WHERE id = ?", j) == 40
    assert col(farm, "SELECT retry_count FROM frame WHERE job_id = ? AND number = 1", j) == 1
    d.step(T0 + 20)
    assert states(farm, j) == {"SUCCEEDED": 6}
    assert col(farm, "SELECT state FROM job WHERE id = ?", j) == "FINISHED"
    assert col(farm, "SELECT visible_name FROM job WHERE id = ?", j) is None
    assert col(farm, "SELECT rendered_frame_count FROM show WHERE id = ?", TESTING) == 6
    assert col(farm, "SELECT idle_cores FROM host WHERE id = ?", h) == 400
    assert col(farm, "SELECT COUNT(*) FROM proc") == 0


def test_priority_then_age(farm: Farm) -> None:
    host(farm, "h1", cores=100)
    low = job(farm, "low", LayerSpec("l", "1"), priority=1)
    high = job(farm, "high", LayerSpec("l", "1"), priority=50)
    d = dispatcher(farm)
    d.step(T0)
    assert states(farm, high) == {"RUNNING": 1} and states(farm, low) == {"WAITING": 1}
    d.step(T0 + 10)
    assert states(farm, low) == {"RUNNING": 1}


@pytest.mark.parametrize("kw", [{"lock_state": "LOCKED"}, {"state": "DOWN"},
                                {"state": "REPAIR"}, {"lock_state": "NIMBY_LOCKED"}])
def test_unavailable_hosts_get_nothing(farm: Farm, kw: dict[str, str]) -> None:
    host(farm, "h1", **kw)
    j = job(farm, "a", LayerSpec("l", "1-3"))
    assert dispatcher(farm).step(T0).booked == [] and states(farm, j) == {"WAITING": 3}


def test_locking_a_host_stops_new_bookings_only(farm: Farm) -> None:
    h = host(farm, "h1", cores=200)
    j = job(farm, "a", LayerSpec("l", "1-4"))
    d = dispatcher(farm)
    d.step(T0)
    farm.store.run("UPDATE host SET lock_state = 'LOCKED' WHERE id = ?", (h,))
    d.step(T0 + 10)
    assert states(farm, j) == {"SUCCEEDED": 2, "WAITING": 2}


def test_tags_route_frames(farm: Farm) -> None:
    plain = host(farm, "plain", cores=800)
    gpu = host(farm, "gpuhost", cores=800, hardware_tags=["gpu"])
    j = job(farm, "a", LayerSpec("l", "1-3", tags=["gpu"]))
    dispatcher(farm).step(T0)
    assert states(farm, j) == {"RUNNING": 3}
    assert {r[0] for r in farm.store.all("SELECT host_id FROM proc")} == {gpu}
    assert col(farm, "SELECT idle_cores FROM host WHERE id = ?", plain) == 800


def test_resources_must_fit(farm: Farm) -> None:
    host(farm, "small", cores=200, memory=2 * 1048576)
    j = job(farm, "big", LayerSpec("l", "1", min_memory=4 * 1048576))
    k = job(farm, "wide", LayerSpec("l", "1", min_cores=400))
    dispatcher(farm).step(T0)
    assert states(farm, j) == {"WAITING": 1} and states(farm, k) == {"WAITING": 1}


def test_limit_caps_running_frames(farm: Farm) -> None:
    host(farm, "h1", cores=1600)
    with farm.store.tx():
        farm.store.insert("limit_record", id=new_id(), name="lic", max_value=2)
    j = job(farm, "a", LayerSpec("l", "1-5", limits=["lic"]))
    d = dispatcher(farm)
    d.step(T0)
    assert states(farm, j) == {"RUNNING": 2, "WAITING": 3}
    d.step(T0 + 10)
    assert states(farm, j) == {"SUCCEEDED": 2, "RUNNING": 2, "WAITING": 1}


def test_job_and_group_max_cores(farm: Farm) -> None:
    host(farm, "h1", cores=1600)
    j = job(farm, "a", LayerSpec("l", "1-8"), max_cores=300)
    dispatcher(farm).step(T0)
    assert states(farm, j)["RUNNING"] == 3
    farm.store.run("UPDATE job SET state = 'FINISHED', visible_name = NULL WHERE id = ?", (j,))
    farm.store.run("DELETE FROM proc")
    farm.store.run("UPDATE host SET idle_cores = cores, idle_memory = memory")
    farm.store.run("UPDATE folder SET max_cores = 200 WHERE show_id = ?", (TESTING,))
    k = job(farm, "b", LayerSpec("l", "1-12"))
    d = dispatcher(farm)
    d.step(T0)
    # Cuebot checks the group's cap when a job's turn starts, not per frame: one visit books
    # up to 8 frames of the job, overshooting; the next visit finds the group full
    assert states(farm, k)["RUNNING"] == 8
    d.step(T0 + 1)
    assert states(farm, k)["RUNNING"] == 8


def test_subscription_burst_and_missing_subscription(farm: Farm) -> None:
    host(farm, "h1", cores=1600)
    farm.store.run("UPDATE subscription SET burst = 200 WHERE show_id = ?", (TESTING,))
    j = job(farm, "a", LayerSpec("l", "1-8"))
    dispatcher(farm).step(T0)
    assert states(farm, j)["RUNNING"] == 2
    unassigned = col(farm, "SELECT id FROM alloc WHERE name = 'local.unassigned'")
    host(farm, "h2", cores=1600, alloc_id=unassigned)  # testing has no subscription there
    dispatcher(farm).step(T0)
    assert states(farm, j)["RUNNING"] == 2


def test_paused_jobs_wait(farm: Farm) -> None:
    host(farm, "h1")
    j = job(farm, "a", LayerSpec("l", "1-2"), paused=True)
    d = dispatcher(farm)
    d.step(T0)
    assert states(farm, j) == {"WAITING": 2}
    farm.store.run("UPDATE job SET is_paused = 0 WHERE id = ?", (j,))
    d.step(T0)
    assert states(farm, j) == {"RUNNING": 2}


def test_layer_depend_holds_until_the_parent_layer_is_done(farm: Farm) -> None:
    host(farm, "h1", cores=1600)
    j = job(farm, "a", LayerSpec("render", "1-2"), LayerSpec("comp", "1-2"))
    render, comp = (col(farm, "SELECT id FROM layer WHERE job_id = ? AND name = ?", j, n)
                    for n in ("render", "comp"))
    with farm.store.tx():
        farm.depend_layer_on_layer(comp, render)
    d = dispatcher(farm)
    d.step(T0)
    comp_states = lambda: sorted(r[0] for r in farm.store.all(  # noqa: E731
        "SELECT state FROM frame WHERE layer_id = ?", (comp,)))
    assert comp_states() == ["DEPEND", "DEPEND"]
    d.step(T0 + 10)   # render done -> depend satisfied; comp booked in the same pass
    assert comp_states() == ["RUNNING", "RUNNING"]
    assert col(farm, "SELECT active FROM depend") == 0
    d.step(T0 + 20)
    assert col(farm, "SELECT state FROM job WHERE id = ?", j) == "FINISHED"


def test_failures_retry_then_die(farm: Farm) -> None:
    host(farm, "h1", cores=100)
    j = job(farm, "a", LayerSpec("l", "1"), max_retries=2)
    d = dispatcher(farm, failure_rate=1.0)
    d.step(T0)
    r = d.step(T0 + 10)                          # run 1 fails: retries left -> WAITING, rebooked
    assert r.failed and r.booked == r.failed
    d.step(T0 + 20)                              # run 2 fails: retry_count 2 >= 2 -> DEAD
    assert states(farm, j) == {"DEAD": 1}
    assert col(farm, "SELECT retry_count FROM frame WHERE job_id = ?", j) == 2
    assert col(farm, "SELECT failed_frame_count FROM job WHERE id = ?", j) == 2
    assert col(farm, "SELECT state FROM job WHERE id = ?", j) == "PENDING"  # dead keeps it


def test_auto_eat_jobs_eat_failures(farm: Farm) -> None:
    host(farm, "h1", cores=100)
    j = job(farm, "a", LayerSpec("l", "1"), auto_eat=True)
    d = dispatcher(farm, failure_rate=1.0)
    d.step(T0)
    d.step(T0 + 10)
    assert states(farm, j) == {"EATEN": 1}
    assert col(farm, "SELECT state FROM job WHERE id = ?", j) == "FINISHED"


def test_speed_shortens_runs(farm: Farm) -> None:
    host(farm, "h1", cores=100)
    j = job(farm, "a", LayerSpec("l", "1"))
    d = dispatcher(farm, speed=10.0)
    d.step(T0)
    assert d.step(T0 + 0.9).succeeded == [] and d.step(T0 + 1.0).succeeded
    assert states(farm, j) == {"SUCCEEDED": 1}


@pytest.mark.parametrize("kw", [{"speed": 0}, {"speed": -1}, {"failure_rate": 1.5}])
def test_bad_settings(farm: Farm, kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Dispatcher(farm, DispatchSettings(**kw))


def test_demo_farm_runs_in_the_background() -> None:
    """The served sandbox with its dispatcher on: the demo's waiting frames start and end."""
    from gateway.sandbox import server

    async def scenario() -> None:
        sb = await server.start(":memory:", demo=True, dispatch=True,
                                settings=DispatchSettings(speed=200, interval=0.02))
        try:
            s = sb.store
            ran = lambda: s.one("SELECT COUNT(*) FROM frame WHERE state = 'SUCCEEDED'")[0]  # noqa
            before = ran()
            for _ in range(200):
                await asyncio.sleep(0.02)
                if ran() >= before + 10:
                    break
            assert ran() >= before + 10
            # hosts never over-booked, procs match running frames
            assert s.one("SELECT COUNT(*) FROM host WHERE idle_cores < 0 OR idle_memory < 0")[0] == 0
            assert (s.one("SELECT COUNT(*) FROM proc")[0]
                    == s.one("SELECT COUNT(*) FROM frame WHERE state = 'RUNNING'")[0])
        finally:
            await sb.stop(None)

    asyncio.run(scenario())


def test_a_job_finished_by_eaten_failures_releases_its_dependants(farm: Farm) -> None:
    from gateway.sandbox import depends

    host(farm, "h1", cores=100)
    first = job(farm, "first", LayerSpec("l", "1"), auto_eat=True)
    second = job(farm, "second", LayerSpec("l", "1"))
    with farm.store.tx():
        depends.create(farm, "JOB_ON_JOB", depends.Side(second), depends.Side(first))
    d = dispatcher(farm, failure_rate=1.0)
    d.step(T0)
    assert states(farm, second) == {"DEPEND": 1}
    d.step(T0 + 10)                 # first's only frame fails and is eaten: first FINISHED
    assert col(farm, "SELECT state FROM job WHERE id = ?", first) == "FINISHED"
    assert col(farm, "SELECT active FROM depend") == 0
    assert states(farm, second) == {"RUNNING": 1}   # released, and booked in the same pass


def test_a_render_ending_while_its_depend_is_back_goes_to_depend(farm: Farm) -> None:
    """Cuebot's database holds a frame with unsatisfied depends in DEPEND, even a finished one."""
    host(farm, "h1", cores=1600)
    j = job(farm, "a", LayerSpec("render", "1"), LayerSpec("comp", "1-2"))
    render, comp = (col(farm, "SELECT id FROM layer WHERE job_id = ? AND name = ?", j, n)
                    for n in ("render", "comp"))
    with farm.store.tx():
        dep = farm.depend_layer_on_layer(comp, render)
    d = dispatcher(farm)
    d.step(T0)
    d.step(T0 + 10)                                     # render done; comp 1 and 2 run
    comp_frames = lambda: [r[0] for r in farm.store.all(  # noqa: E731
        "SELECT state FROM frame WHERE layer_id = ? ORDER BY number", (comp,))]
    assert comp_frames() == ["RUNNING", "RUNNING"]
    with farm.store.tx():
        assert farm.unsatisfy(dep)                      # the depend comes back mid-render
        farm.kill_proc(farm.store.one("SELECT p.id FROM proc p JOIN frame f ON "
                                      "f.id = p.frame_id WHERE f.number = 2")[0])
    d.step(T0 + 20)                                     # comp 1 ends well, but is held
    assert comp_frames() == ["DEPEND", "DEPEND"]
    assert col(farm, "SELECT rendered_frame_count FROM layer WHERE id = ?", comp) == 1
    with farm.store.tx():
        farm.retry_frame(col(farm, "SELECT id FROM frame WHERE layer_id = ?", render))
    d.step(T0 + 30)                                     # render runs again…
    d.step(T0 + 40)                                     # …and its end releases comp
    assert comp_frames() == ["RUNNING", "RUNNING"]
    d.step(T0 + 50)
    assert col(farm, "SELECT state FROM job WHERE id = ?", j) == "FINISHED"
