"""The dispatcher's booking rules, one Cuebot rule per test (study §3), on a fresh farm stepped
by hand: facility and OS, how many cores a proc takes (fractions, "all cores", threading, the
host's thread mode), GPU hosts, timeouts, scheduling modes and minimum cores, per-visit caps,
the job lock, the hosts' report cadence and sticky procs.
"""
from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.sandbox.dispatcher import DispatchSettings, Dispatcher
from gateway.sandbox.farm import Farm, JobSpec, LayerSpec
from gateway.sandbox.seed import TESTING, seed
from gateway.sandbox.store import Store

T0 = 1_800_000_000.0
GB = 1024 * 1024


@pytest.fixture
def farm() -> Any:
    store = Store(":memory:")
    seed(store, demo=False)
    yield Farm(store)
    store.close()


def dispatcher(farm: Farm, *, eager: bool = True, **kw: Any) -> Dispatcher:
    kw.setdefault("run_seconds", (100.0, 100.0))
    settings = DispatchSettings.eager(**kw) if eager else DispatchSettings(**kw)
    return Dispatcher(farm, settings, rng=random.Random(3))


def job(farm: Farm, name: str, *layers: LayerSpec, **kw: Any) -> str:
    kw.setdefault("facility", "local")
    with farm.store.tx():
        return farm.create_job(JobSpec(show_id=TESTING, shot="sh", user="u",
                                       name=f"testing-sh-u_{name}", layers=list(layers), **kw))


def host(farm: Farm, name: str, **kw: Any) -> str:
    kw.setdefault("memory", 32 * GB)
    with farm.store.tx():
        return farm.add_host(name, **kw)


def procs(farm: Farm, job_id: str) -> list[tuple[str, int]]:
    """(host name, core units) of the job's procs."""
    return sorted((r[0], r[1]) for r in farm.store.all(
        "SELECT h.name, p.cores FROM proc p JOIN host h ON h.id = p.host_id WHERE p.job_id = ?",
        (job_id,)))


def frame(farm: Farm, job_id: str, number: int) -> Any:
    return farm.store.one("SELECT * FROM frame WHERE job_id = ? AND number = ?", (job_id, number))


# -- where a job may run ---------------------------------------------------------------------
def test_facility_and_os_must_match(farm: Farm) -> None:
    host(farm, "rn001", cores=800)                                   # local.general, rhel40
    cloud = job(farm, "cloud", LayerSpec("render", "1"), facility="cloud")
    windows = job(farm, "win", LayerSpec("render", "1"), os="windows")
    any_os = job(farm, "anyos", LayerSpec("render", "1"))
    dispatcher(farm).step(T0)
    assert procs(farm, cloud) == [] and procs(farm, windows) == []
    assert procs(farm, any_os) == [("rn001", 100)]
    cloud_alloc = "00000000-0000-0000-0000-000000000003"
    host(farm, "cloud001", cores=800, alloc_id=cloud_alloc)
    host(farm, "win001", cores=800, os="windows,rhel40")
    dispatcher(farm).step(T0)
    assert procs(farm, cloud) == [("cloud001", 100)]
    assert procs(farm, windows) == [("win001", 100)]


def test_show_flags_do_not_stop_booking(farm: Farm) -> None:
    """Cuebot's booking reads neither booking_enabled nor dispatch_enabled (study §3.3)."""
    host(farm, "rn001", cores=800)
    farm.store.run("UPDATE show SET booking_enabled = 0, dispatch_enabled = 0")
    j = job(farm, "flags", LayerSpec("render", "1"))
    dispatcher(farm).step(T0)
    assert len(procs(farm, j)) == 1


def test_tags_match_as_cuebots_regex(farm: Farm) -> None:
    host(farm, "rn001", cores=800, hardware_tags=["GPU"])
    j = job(farm, "tags", LayerSpec("render", "1", tags=["gpu"]))        # case-insensitive
    k = job(farm, "prefix", LayerSpec("render", "1", tags=["gen", "xyz"]))  # only the last
    dispatcher(farm).step(T0)                                          # alternative is \y
    assert len(procs(farm, j)) == 1 and len(procs(farm, k)) == 1


# -- how many cores a proc takes ------------------------------------------------------------------
@pytest.mark.parametrize("layer, expected", [
    (dict(min_cores=50), 50),                                # a fraction is booked as is
    (dict(min_cores=400), 100),                              # not threadable: one core
    (dict(min_cores=400, threadable=True), 400),             # threadable: at least its minimum
    (dict(min_cores=0, threadable=True), 800),               # 0: the whole host
    (dict(min_cores=0), 100),                                # ...but not threadable: one core
    (dict(min_cores=-200, threadable=True), 600),            # all but two
    (dict(min_cores=100, threadable=True, min_memory=16 * GB), 400),  # memory span: 16 of 32 GB
    (dict(min_cores=100, threadable=True, min_memory=31 * GB), 800),  # little left: all
])
def test_cores_a_proc_takes(farm: Farm, layer: dict[str, Any], expected: int) -> None:
    host(farm, "rn001", cores=800)
    layer.setdefault("min_memory", GB)
    j = job(farm, "cores", LayerSpec("render", "1", **layer))
    dispatcher(farm).step(T0)
    assert procs(farm, j) == [("rn001", expected)]


def test_layer_max_cores_caps_the_span(farm: Farm) -> None:
    host(farm, "rn001", cores=1600, memory=64 * GB)
    j = job(farm, "capped", LayerSpec("render", "1", min_cores=0, threadable=True))
    farm.store.run("UPDATE layer SET max_cores = 600 WHERE job_id = ?", (j,))
    farm.store.run("UPDATE layer SET min_cores = 100, min_memory = ? WHERE job_id = ?",
                   (60 * GB, j))
    dispatcher(farm).step(T0)
    assert procs(farm, j) == [("rn001", 600)]


def test_all_cores_needs_an_idle_host(farm: Farm) -> None:
    host(farm, "rn001", cores=800)
    busy = job(farm, "busy", LayerSpec("render", "1"), priority=10)
    whole = job(farm, "whole", LayerSpec("render", "1", min_cores=0, threadable=True))
    dispatcher(farm).step(T0)
    assert len(procs(farm, busy)) == 1 and procs(farm, whole) == []


def test_thread_mode_all_takes_threadable_work_only(farm: Farm) -> None:
    h = host(farm, "rn001", cores=800)
    farm.store.run("UPDATE host SET thread_mode = 'ALL' WHERE id = ?", (h,))
    single = job(farm, "single", LayerSpec("render", "1"), priority=10)
    threaded = job(farm, "threaded", LayerSpec("render", "1-2", threadable=True))
    dispatcher(farm).step(T0)
    assert procs(farm, single) == []
    assert procs(farm, threaded) == [("rn001", 800)]    # every whole idle core


# -- GPU hosts ------------------------------------------------------------------------------------
def test_gpu_hosts_prefer_gpu_work_and_keep_a_gpu_for_it(farm: Farm) -> None:
    host(farm, "gpu001", cores=800, gpus=2, gpu_memory=16 * GB)
    plain = job(farm, "plain", LayerSpec("render", "1-8"), priority=90)
    gpu = job(farm, "gpu", LayerSpec("render", "1", min_gpus=1, min_gpu_memory=GB))
    dispatcher(farm).step(T0)
    assert procs(farm, gpu) == [("gpu001", 100)]        # despite its lower priority
    assert procs(farm, plain) == []                      # GPU work found: only that this visit
    farm.store.run("DELETE FROM proc")
    farm.store.run("UPDATE host SET idle_cores = cores, idle_gpus = gpus, idle_memory = memory, "
                   "idle_gpu_memory = gpu_memory")
    farm.store.run("UPDATE frame SET state = 'SUCCEEDED' WHERE job_id = ?", (gpu,))
    farm.store.run("UPDATE frame SET state = 'WAITING' WHERE job_id = ?", (plain,))
    dispatcher(farm).step(T0 + 1)
    assert len(procs(farm, plain)) == 7                  # one core held back for GPU work
    assert farm.store.one("SELECT idle_gpus FROM host")[0] == 2


# -- timeouts -------------------------------------------------------------------------------------
def test_layer_timeout_kills_the_render(farm: Farm) -> None:
    host(farm, "rn001", cores=800)
    j = job(farm, "slow", LayerSpec("render", "1", timeout=2), max_retries=3)
    d = dispatcher(farm, run_seconds=(1000.0, 1000.0))
    d.step(T0)
    assert d.step(T0 + 150).timed_out == []              # 2 minutes and a half: not over 2
    result = d.step(T0 + 181)                            # 3 whole minutes: over
    assert result.timed_out == [frame(farm, j, 1)["id"]]
    f = frame(farm, j, 1)
    assert (f["state"], f["exit_status"], f["retry_count"]) == ("DEAD", 1, 1)   # retries or not


def test_llu_timeout_catches_a_render_that_went_quiet(farm: Farm) -> None:
    host(farm, "rn001", cores=800)
    j = job(farm, "hang", LayerSpec("render", "1", timeout_llu=1), max_retries=3)
    d = dispatcher(farm, run_seconds=(600.0, 600.0), failure_rate=1.0)  # fails, stalls at 300 s
    d.step(T0)
    assert d.step(T0 + 290).timed_out == []              # still writing its log
    assert d.step(T0 + 330).timed_out == []              # quiet for 30 s only
    assert d.step(T0 + 361).timed_out                    # quiet for a minute: killed
    assert frame(farm, j, 1)["state"] == "DEAD"


def test_a_healthy_long_render_is_not_llu_killed(farm: Farm) -> None:
    host(farm, "rn001", cores=800)
    j = job(farm, "long", LayerSpec("render", "1", timeout_llu=1))
    d = dispatcher(farm, run_seconds=(600.0, 600.0))
    d.step(T0)
    for t in range(60, 600, 50):
        assert d.step(T0 + t).timed_out == []
    d.step(T0 + 600)
    assert frame(farm, j, 1)["state"] == "SUCCEEDED"


def test_a_retried_frame_keeps_its_history(farm: Farm) -> None:
    host(farm, "rn001", cores=800)
    j = job(farm, "again", LayerSpec("render", "1"), max_retries=3)
    d = dispatcher(farm, failure_rate=1.0)
    d.step(T0)
    d.step(T0 + 100)                                     # failed: back to WAITING, rebooked
    f = frame(farm, j, 1)
    assert (f["state"], f["retry_count"], f["exit_status"]) == ("RUNNING", 2, -1)
    assert f["last_resource"] == "rn001/1.00/0"
    assert farm.store.one("SELECT failed_frame_count FROM job")[0] == 1


# -- scheduling: priority, modes, minimum cores ---------------------------------------------------
def test_balanced_mode_serves_jobs_under_their_minimum_first(farm: Farm) -> None:
    host(farm, "rn001", cores=300)
    high = job(farm, "high", LayerSpec("render", "1-5"), priority=50)
    low = job(farm, "low", LayerSpec("render", "1-5"), priority=1)
    farm.store.run("UPDATE job SET min_cores = 200 WHERE id = ?", (low,))
    dispatcher(farm, scheduling_mode="PRIORITY_ONLY").step(T0)
    assert (len(procs(farm, high)), len(procs(farm, low))) == (3, 0)   # priority only
    farm.store.run("DELETE FROM proc")
    farm.store.run("UPDATE host SET idle_cores = cores, idle_memory = memory")
    farm.store.run("UPDATE frame SET state = 'WAITING'")
    d = dispatcher(farm, scheduling_mode="BALANCED", job_frame_max=1)
    d.step(T0)                  # low (1 + 100, under its minimum) before high (50)
    assert (len(procs(farm, high)), len(procs(farm, low))) == (1, 1)


def test_group_minimum_cores_in_balanced_mode(farm: Farm) -> None:
    host(farm, "rn001", cores=100)
    a = job(farm, "aaa", LayerSpec("render", "1"), priority=60)
    b = job(farm, "bbb", LayerSpec("render", "1"), priority=20)
    with farm.store.tx():
        root = farm.root_folder(TESTING)
        farm.store.insert("folder", id="fx", show_id=TESTING, parent_id=root["id"], name="fx",
                          dept_id=root["dept_id"], level=1, min_cores=100)
        farm.move_job(b, farm.store.one("SELECT * FROM folder WHERE id = 'fx'"), ())
    farm.store.run("UPDATE job SET min_cores = 0")
    dispatcher(farm, scheduling_mode="BALANCED").step(T0)
    assert (procs(farm, a), len(procs(farm, b))) == ([], 1)


# -- per-visit caps, job lock, cadence, sticky procs -------------------------------------------------
def test_per_visit_caps(farm: Farm) -> None:
    host(farm, "big", cores=6400, memory=256 * GB)
    one = job(farm, "one", LayerSpec("render", "1-20"), priority=50)
    two = job(farm, "two", LayerSpec("render", "1-20"), priority=40)
    d = dispatcher(farm)
    d.step(T0)
    assert (len(procs(farm, one)), len(procs(farm, two))) == (8, 4)   # 8 a job, 12 a visit
    d.step(T0 + 1)
    assert (len(procs(farm, one)), len(procs(farm, two))) == (16, 8)


def test_the_job_lock_keeps_other_hosts_off_for_twenty_seconds(farm: Farm) -> None:
    for name in ("rn001", "rn002"):
        host(farm, name, cores=400)
    j = job(farm, "locked", LayerSpec("render", "1-8"))
    d = dispatcher(farm, eager=False, report_interval=(1.0, 1.0))
    d.step(T0)
    assert [h for h, _ in procs(farm, j)] == ["rn001"] * 4   # the other host skipped the job
    d.step(T0 + 10)
    assert len(procs(farm, j)) == 4
    d.step(T0 + 21)                                       # the lock has expired
    assert [h for h, _ in procs(farm, j)] == ["rn001"] * 4 + ["rn002"] * 4


def test_hosts_ask_for_work_when_they_report(farm: Farm) -> None:
    host(farm, "rn001", cores=400)
    d = dispatcher(farm, eager=False, report_interval=(10.0, 10.0))
    d.step(T0)                                            # reports (nothing to do yet)
    j = job(farm, "later", LayerSpec("render", "1"))
    assert d.step(T0 + 5).booked == []                    # waits for the host's next report
    assert d.step(T0 + 10).booked == [frame(farm, j, 1)["id"]]


def test_procs_are_sticky(farm: Farm) -> None:
    """A render that ends hands its host the job's next frame, even with better work waiting."""
    host(farm, "rn001", cores=100)
    first = job(farm, "first", LayerSpec("render", "1-3"), priority=10)
    d = dispatcher(farm, eager=False, report_interval=(1000.0, 1000.0), run_seconds=(10.0, 10.0))
    d.step(T0)
    urgent = job(farm, "urgent", LayerSpec("render", "1"), priority=90)
    d.step(T0 + 10)                                       # frame 1 ends; frame 2 takes the proc
    assert len(procs(farm, first)) == 1 and procs(farm, urgent) == []
    d.step(T0 + 20)
    d.step(T0 + 30)                                       # nothing left of first: host asks
    assert len(procs(farm, urgent)) == 1
