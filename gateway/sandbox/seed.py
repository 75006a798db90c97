"""What a new sandbox holds: a fresh Cuebot's seed rows, and optional demo data.

The fresh seed reproduces Cuebot's own migrations and ``seed_data.sql``
(fixed ids included), so ids and names in clients' configuration work here
as they do against a docker-compose Cuebot. The demo data adds a small farm
so that every read RPC returns something real: hosts in several states,
jobs with frames in every state, procs, a limit, a filter, a depend,
comments, an owner with a deed and a task.
"""
from __future__ import annotations

from .farm import Farm, JobSpec, LayerSpec
from .store import Store, new_id, now

TESTING = "00000000-0000-0000-0000-000000000000"
ROOT_GROUP = "A0000000-0000-0000-0000-000000000000"
FAC_LOCAL = "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1"
FAC_CLOUD = "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA0"
PIPELINE_POINT = "FFEEDDCC-AAAA-AAAA-AAAA-AAAAAAAAAAA0"

ALLOCS = [  # id, facility, full name, tag, default
    ("00000000-0000-0000-0000-000000000000", FAC_LOCAL, "local.general", "general", 1),
    ("00000000-0000-0000-0000-000000000001", FAC_LOCAL, "local.desktop", "desktop", 0),
    ("00000000-0000-0000-0000-000000000002", FAC_LOCAL, "local.unassigned", "unassigned", 0),
    ("00000000-0000-0000-0000-000000000003", FAC_CLOUD, "cloud.general", "general", 0),
    ("00000000-0000-0000-0000-000000000004", FAC_CLOUD, "cloud.unassigned", "unassigned", 0),
]
SUBSCRIPTIONS = [  # id, alloc id
    ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000000"),
    ("00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000001"),
    ("00000000-0000-0000-0000-000000000003", "00000000-0000-0000-0000-000000000003"),
]
DEPTS = ["Lighting", "Animation", "Hair", "Cloth", "Layout", "FX", "Pipeline", "Unknown"]
SERVICES = [  # id suffix, name, threadable, min_cores (units), min_memory KB, tags
    ("AAA0", "default", False, 100, 3355443, "general | desktop"),
    ("AAA1", "prman", False, 100, 3355443, "general | desktop"),
    ("AAA2", "arnold", True, 100, 3355443, "general | desktop"),
    ("AAA3", "shell", False, 100, 3355443, "general | util"),
    ("AAA4", "maya", False, 100, 2097152, "general | desktop"),
    ("AAA5", "houdini", False, 100, 3355443, "general | desktop"),
    ("AAA7", "katana", True, 100, 2097152, "general | desktop | util"),
    ("AAA9", "nuke", False, 100, 2097152, "general | desktop"),
    ("AA11", "preprocess", False, 10, 393216, "util"),
    ("AA12", "postprocess", False, 10, 524288, "util"),
]


def dept_id(name: str) -> str:
    return f"AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA{DEPTS.index(name)}"


def seed_fresh(store: Store) -> None:
    """The rows of a Cuebot that has just been installed."""
    s = store
    s.insert("facility", id=FAC_CLOUD, name="cloud", is_default=1)
    s.insert("facility", id=FAC_LOCAL, name="local", is_default=0)
    for aid, fac, name, tag, default in ALLOCS:
        s.insert("alloc", id=aid, facility_id=fac, name=name, tag=tag, is_default=default)
    for i, name in enumerate(DEPTS):
        s.insert("dept", id=dept_id(name), name=name, is_default=int(name == "Unknown"))
    s.insert("show", id=TESTING, name="testing", default_min_cores=100,
             default_max_cores=200000, default_min_gpus=100, default_max_gpus=100000)
    s.insert("show_alias", name="test", show_id=TESTING)
    s.insert("point", id=PIPELINE_POINT, show_id=TESTING, dept_id=dept_id("Pipeline"))
    s.insert("folder", id=ROOT_GROUP, show_id=TESTING, parent_id=None, name="testing",
             dept_id=dept_id("Pipeline"), level=0)
    for sid, alloc in SUBSCRIPTIONS:
        s.insert("subscription", id=sid, show_id=TESTING, alloc_id=alloc, size=100000,
                 burst=100000)
    for suffix, name, threadable, min_cores, min_memory, tags in SERVICES:
        s.insert("service", id=f"AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAA{suffix}", show_id=None,
                 name=name, threadable=int(threadable), min_cores=min_cores, max_cores=0,
                 min_memory=min_memory, tags=tags)
    s.set_config("MAX_FRAME_RETRIES", "16")


# ---------------------------------------------------------------------------
# demo data
# ---------------------------------------------------------------------------
GENERAL, DESKTOP = ALLOCS[0][0], ALLOCS[1][0]


def seed_demo(farm: Farm) -> None:
    """A small living farm on top of the fresh seed."""
    s = farm.store
    t = now()
    hosts = []
    for i in range(1, 17):  # render nodes in local.general
        gpu = i % 4 == 0
        hosts.append(farm.add_host(
            f"rn{i:03d}.farm.studio.local", alloc_id=GENERAL,
            cores=(32 if i % 2 else 16) * 100, memory=(128 if i % 2 else 64) * 1024 * 1024,
            gpus=2 if gpu else 0, gpu_memory=16 * 1024 * 1024 if gpu else 0,
            hardware_tags=["linux"] + (["gpu"] if gpu else []),
            manual_tags=["nuke"] if i in (3, 7) else [], load=10 * (i % 5)))
    locked = farm.add_host("rn017.farm.studio.local", alloc_id=GENERAL, cores=1600,
                           memory=67108864, lock_state="LOCKED", hardware_tags=["linux"])
    down = farm.add_host("rn018.farm.studio.local", alloc_id=GENERAL, cores=1600,
                         memory=67108864, state="DOWN", hardware_tags=["linux"])
    farm.add_host("rn019.farm.studio.local", alloc_id=GENERAL, cores=1600, memory=67108864,
                  state="REPAIR", hardware_tags=["linux"])
    desk = farm.add_host("ws-jdoe.studio.local", alloc_id=DESKTOP, cores=800,
                         memory=33554432, nimby=True, lock_state="NIMBY_LOCKED",
                         hardware_tags=["linux"])
    farm.add_host("ws-asmith.studio.local", alloc_id=DESKTOP, cores=800, memory=33554432,
                  nimby=True, hardware_tags=["linux", "gpu"], gpus=1, gpu_memory=8388608)
    del locked, down

    lic = new_id()
    s.insert("limit_record", id=lic, name="nuke_license", max_value=10)

    # A running lighting job: frames in every state, comp waiting on render.
    lighting = farm.create_job(JobSpec(
        show_id=TESTING, shot="sh010", user="jdoe", name="testing-sh010-jdoe_lighting",
        facility="local", priority=100, max_retries=3, layers=[
            LayerSpec("render", "1-20", command="render -f #IFRAME#", services=["arnold"],
                      min_cores=400, min_memory=8388608, tags=["general"]),
            LayerSpec("comp", "1-20", command="nuke -x comp.nk #IFRAME#",
                      services=["nuke"], limits=["nuke_license"]),
        ]))
    render = s.one("SELECT id FROM layer WHERE job_id = ? AND name = 'render'", (lighting,))["id"]
    comp = s.one("SELECT id FROM layer WHERE job_id = ? AND name = 'comp'", (lighting,))["id"]
    farm.depend_layer_on_layer(comp, render)
    frames = [r["id"] for r in s.all("SELECT id FROM frame WHERE layer_id = ? "
                                     "ORDER BY dispatch_order", (render,))]
    for n, fid in enumerate(frames[:8]):  # 1-8 done
        farm.book(fid, hosts[n % 8], cores=400, started=t - 3600 + n * 60)
        farm.finish_run(fid, "SUCCEEDED", 0, stopped=t - 1800 + n * 60)
    farm.book(frames[8], hosts[9], cores=400, started=t - 900)   # 9 died twice, now DEAD
    farm.finish_run(frames[8], "DEAD", 1, stopped=t - 600)
    s.run("UPDATE frame SET retry_count = 3 WHERE id = ?", (frames[8],))
    s.run("UPDATE frame SET state = 'EATEN' WHERE id = ?", (frames[9],))   # 10 eaten
    for n, fid in enumerate(frames[10:14]):                               # 11-14 running
        farm.book(fid, hosts[10 + n], cores=400, started=t - 300 + n * 30)
    # 15-20 waiting

    # A paused FX simulation, nothing started.
    farm.create_job(JobSpec(
        show_id=TESTING, shot="sh020", user="asmith", name="testing-sh020-asmith_fx_sim",
        facility="local", paused=True, layers=[LayerSpec("sim", "1-50", command="hython sim.py #IFRAME#",
                                       services=["houdini"], chunk=5, min_memory=16777216)]))

    # A comp that has finished: every frame succeeded.
    done = farm.create_job(JobSpec(
        show_id=TESTING, shot="sh030", user="bwayne", name="testing-sh030-bwayne_comp",
        facility="local", layers=[LayerSpec("comp", "1001-1010", services=["nuke"])]))
    for n, r in enumerate(s.all("SELECT id FROM frame WHERE job_id = ? ORDER BY number",
                                (done,))):
        farm.book(r["id"], hosts[n % 16], started=t - 7200 + n * 100)
        farm.finish_run(r["id"], "SUCCEEDED", 0, stopped=t - 7000 + n * 100)
    farm.update_job_state(done)

    # An animation playblast with dead frames, keeping the job PENDING.
    anim = farm.create_job(JobSpec(
        show_id=TESTING, shot="sh040", user="jdoe", name="testing-sh040-jdoe_anim_playblast",
        facility="local", layers=[LayerSpec("playblast", "1-5", services=["maya"])]))
    for n, r in enumerate(s.all("SELECT id FROM frame WHERE job_id = ? ORDER BY number",
                                (anim,))):
        farm.book(r["id"], hosts[n], started=t - 1200)
        farm.finish_run(r["id"], "DEAD" if n < 2 else "SUCCEEDED", 1 if n < 2 else 0,
                        stopped=t - 1100)

    s.insert("comment", id=new_id(), job_id=lighting, user="jdoe", subject="render times",
             message="Frames 9 died on out-of-memory; raised memory for the next run.",
             timestamp=t - 500)
    s.insert("comment", id=new_id(), host_id=hosts[5], user="it", subject="disk",
             message="Scratch disk replaced.", timestamp=t - 86400)

    flt = new_id()
    s.insert("filter", id=flt, show_id=TESTING, name="auto_priority", type="MATCH_ALL", ord=1,
             enabled=1)
    s.insert("matcher", id=new_id(), filter_id=flt, subject="JOB_NAME", type="CONTAINS",
             input="urgent")
    s.insert("action", id=new_id(), filter_id=flt, type="SET_JOB_PRIORITY",
             value_type="INTEGER_TYPE", integer_value=200)

    owner = new_id()
    s.insert("owner", id=owner, name="jdoe", show_id=TESTING)
    s.insert("deed", id=new_id(), owner_id=owner, host_id=desk)

    s.insert("task", id=new_id(), point_id=PIPELINE_POINT, shot="sh010", min_cores=1000)
    farm.create_show("pipeline_test", active=False)


def seed(store: Store, demo: bool, farm: Farm | None = None) -> None:
    """Seed a new (empty) database; an existing one is left as it is.

    ``farm`` (on ``store``) is the one the demo jobs are made with, so that
    their logs go where that farm writes logs.
    """
    if not store.is_empty:
        return
    with store.tx():
        seed_fresh(store)
        if demo:
            seed_demo(farm or Farm(store))
