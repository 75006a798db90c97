"""Job submission: LaunchSpec and LaunchSpecAndWait with specs by pyoutline and by hand.

The RPCs run over real gRPC on the sandbox's own JobInterface servant (which
delegates to ``launchspec``); rows are checked in the store. "Nothing half-created" is checked by comparing every table's row count
and the show's lifetime counters before and after a failed launch.
"""
from __future__ import annotations

import importlib
from typing import Any, AsyncIterator

import grpc
import pytest
from opencue_proto import job_pb2, job_pb2_grpc

from gateway.sandbox import cjsl, depends, launchspec
from gateway.sandbox.farm import Farm
from gateway.sandbox.jobs import JobServant
from gateway.sandbox.seed import TESTING, seed
from gateway.sandbox.servant import mount
from gateway.sandbox.store import Store

DOCTYPE = ('<?xml version="1.0"?><!DOCTYPE spec PUBLIC "SPI Cue  Specification Language" '
           '"http://localhost:8080/spcue/dtd/cjsl-{}.dtd">')
QUEUE = "Failed to add job to launch queue: "
WAIT = "Failed to launch and add job: "


def spec(body: str, version: str = "1.15", *, show: str = "testing", shot: str = "sh010",
         user: str = "jdoe", head: str = "", uid: str = "<uid>1000</uid>") -> str:
    """A cjsl document: the header elements, then ``body`` (jobs and depends)."""
    return (DOCTYPE.format(version) + f"<spec>{head}<show>{show}</show><shot>{shot}</shot>"
            f"<user>{user}</user>{uid}{body}</spec>")


def layer(name: str = "render", rng: str = "1-10", chunk: int = 1, extra: str = "",
          kind: str = "Render") -> str:
    return (f'<layer name="{name}" type="{kind}"><cmd>echo {name}</cmd><range>{rng}</range>'
            f"<chunk>{chunk}</chunk>{extra}</layer>")


def job(name: str = "demo", *layers: str, options: str = "") -> str:
    return f'<job name="{name}">{options}<layers>{"".join(layers or (layer(),))}</layers></job>'


def depend(kind: str, depjob: str, onjob: str, **names: str) -> str:
    parts = [f"<depjob>{depjob}</depjob>"]
    parts += [f"<{k}>{names[k]}</{k}>" for k in ("deplayer", "depframe") if k in names]
    parts += [f"<onjob>{onjob}</onjob>"]
    parts += [f"<{k}>{names[k]}</{k}>" for k in ("onlayer", "onframe") if k in names]
    return f'<depend type="{kind}">{"".join(parts)}</depend>'


@pytest.fixture
def farm() -> Farm:
    store = Store()
    seed(store, demo=False)
    return Farm(store)


@pytest.fixture
async def jobs(farm: Farm) -> AsyncIterator[job_pb2_grpc.JobInterfaceStub]:
    server = grpc.aio.server()
    mount(server, JobServant(farm))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield job_pb2_grpc.JobInterfaceStub(channel)
    await channel.close()
    await server.stop(None)


def snapshot(store: Store) -> dict[str, Any]:
    tables = ("job", "layer", "frame", "depend", "layer_limit")
    counts: dict[str, Any] = {t: store.one(f"SELECT COUNT(*) FROM {t}")[0] for t in tables}
    counts["show"] = tuple(store.one("SELECT created_job_count, created_frame_count FROM show "
                                     "WHERE id = ?", (TESTING,)))
    return counts


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def frames(store: Store, job_name: str) -> dict[str, tuple[str, int]]:
    rows = store.all("SELECT f.name, f.state, f.depend_count FROM frame f JOIN job j ON "
                     "j.id = f.job_id WHERE j.name = ?", (job_name,))
    return {r["name"]: (r["state"], r["depend_count"]) for r in rows}


def succeed(farm: Farm, job_name: str, frame_name: str) -> None:
    """A frame's run ends well, with what follows from it (depends, job state)."""
    row = farm.store.one("SELECT f.id, f.job_id FROM frame f JOIN job j ON j.id = f.job_id "
                         "WHERE j.name = ? AND f.name = ?", (job_name, frame_name))
    with farm.store.tx():
        farm.finish_run(row["id"], "SUCCEEDED", 0)
        farm.frame_succeeded(row["id"])
        farm.check_job_done(row["job_id"])


# ---------------------------------------------------------------------------
# a spec written by OpenCue's own job-description library
# ---------------------------------------------------------------------------
def pyoutline_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    outline = pytest.importorskip("outline")
    from outline.cuerun import OutlineLauncher
    from outline.depend import DependType
    from outline.modules.shell import Shell

    monkeypatch.setenv("HOME", str(tmp_path))           # pyoutline writes a session dir
    monkeypatch.setattr(outline.util, "get_uid", lambda: 1000)  # tests may run as root
    ol = outline.Outline("Shot-Render", frame_range="1-10", shot="sh010", show="testing",
                         user="jdoe", facility="local", maxcores=8)
    render = Shell("render", command=["render", "-f", "#IFRAME#"], range="1-10", chunk=5,
                   cores=2, memory="4g", tags=["desktop"], service="arnold")
    comp = Shell("comp", command=["comp"], range="1-10", chunk=1, threadable=True)
    comp.depend_on(render, DependType.LayerOnLayer)
    frame_by_frame = Shell("preview", command=["preview"], range="1-10")
    frame_by_frame.depend_on(comp, DependType.FrameByFrame)
    for one in (render, comp, frame_by_frame):
        ol.add_layer(one)
    return OutlineLauncher(ol, user="jdoe", nomail=True).serialize(use_pycuerun=False)


async def test_pyoutline_spec_launches(farm: Farm, jobs: Any, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Any) -> None:
    text = pyoutline_spec(monkeypatch, tmp_path)
    assert "cjsl-1.15.dtd" in text
    got = await jobs.LaunchSpecAndWait(job_pb2.JobLaunchSpecAndWaitRequest(spec=text))
    (launched,) = got.jobs.jobs
    assert launched.name == "testing-sh010-jdoe_shot_render"
    assert (launched.state, launched.show, launched.facility, launched.group) == (
        job_pb2.PENDING, "testing", "local", "testing")
    assert launched.max_cores == 8.0 and launched.min_cores == 1.0 and launched.priority == 1
    assert launched.uid == 1000 and launched.user == "jdoe"
    assert launched.job_stats.total_frames == 2 + 10 + 10
    assert launched.job_stats.depend_frames == 20 and launched.job_stats.waiting_frames == 2

    layers = farm.store.all("SELECT * FROM layer WHERE job_id = ? ORDER BY dispatch_order",
                            (launched.id,))
    render, comp, preview = layers
    assert [r["name"] for r in layers] == ["render", "comp", "preview"]
    assert (render["min_cores"], render["min_memory"], render["services"], render["tags"],
            render["threadable"], render["chunk_size"]) == (
        200, 4 * 1024 * 1024, "arnold", "desktop", 1, 5)
    assert (comp["services"], comp["threadable"], comp["min_memory"]) == ("shell", 1, 3355443)
    assert frames(farm.store, launched.name)["0006-render"] == ("WAITING", 0)
    assert "0002-render" not in frames(farm.store, launched.name)
    kinds = [r["type"] for r in farm.store.all("SELECT type FROM depend ORDER BY seq")]
    assert kinds[:2] == ["LAYER_ON_LAYER", "FRAME_BY_FRAME"]
    assert kinds[2:] == ["FRAME_ON_FRAME"] * 10

    names = await jobs.FindJob(job_pb2.JobFindJobRequest(name=launched.name))
    assert names.job.id == launched.id


# ---------------------------------------------------------------------------
# hand-written specs: DTD versions, naming, chunking
# ---------------------------------------------------------------------------
VERSION_BODIES = {
    "1.5": job("v15", options="<paused>yes</paused><maxretries>0</maxretries>"),
    "1.6": job("v16", options="<autoeat>on</autoeat><os>rocky9</os>"),
    "1.7": job("v17", layer(extra="<gpu>1g</gpu>")),
    "1.8": job("v18", options='<localbook host="ws1" cores="2" memory="100" threads="1" '
                              'gpu="0"/>'),
    "1.9": job("v19"),
    "1.10": job("v110", layer(extra="<timeout>30</timeout><timeout_llu>10</timeout_llu>")),
    "1.11": job("v111", options="<priority>50</priority>"),
    "1.12": job("v112", layer(extra="<gpus>1</gpus><gpu_memory>2g</gpu_memory>")),
    "1.13": job("v113", options="<maxcores>4</maxcores><maxgpus>2</maxgpus>"),
    "1.14": job("v114", layer(extra='<outputs><output name="main">/out/a.exr</output>'
                                    "</outputs>")),
    "1.15": job("v115", layer(extra='<env><key name="A">1</key></env>'),
                options='<env><key name="B">2</key></env>'),
}


@pytest.mark.parametrize("version", sorted(VERSION_BODIES, key=lambda v: int(v[2:])))
async def test_each_dtd_version(farm: Farm, jobs: Any, version: str) -> None:
    text = spec(VERSION_BODIES[version], version)
    got = await jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=text))
    name = f"testing-sh010-jdoe_v{version.replace('.', '')}"
    assert list(got.names) == [name]
    row = farm.store.one("SELECT * FROM job WHERE name = ?", (name,))
    lay = farm.store.one("SELECT * FROM layer WHERE job_id = ?", (row["id"],))
    expect = {
        "1.5": lambda: row["is_paused"] == 1 and row["max_retries"] == 0,
        "1.6": lambda: row["auto_eat"] == 1 and row["os"] == "rocky9",
        "1.7": lambda: lay["min_gpu_memory"] == 1024 * 1024,
        "1.8": lambda: row["state"] == "PENDING",
        "1.9": lambda: row["uid"] == 1000,
        "1.10": lambda: (lay["timeout"], lay["timeout_llu"]) == (30, 10),
        "1.11": lambda: row["priority"] == 50,
        "1.12": lambda: (lay["min_gpus"], lay["min_gpu_memory"]) == (1, 2 * 1024 * 1024),
        "1.13": lambda: (row["max_cores"], row["max_gpus"]) == (400, 2),
        "1.14": lambda: lay["outputs"] == "/out/a.exr",
        "1.15": lambda: row["max_retries"] == 1 and not row["is_paused"],
    }
    assert expect[version]()


@pytest.mark.parametrize("version, body", [
    ("1.10", job("x", options="<priority>5</priority>")),       # priority came in 1.11
    ("1.12", job("x", options="<maxcores>5</maxcores>")),       # maxcores in 1.13
    ("1.5", job("x", options="<os>linux</os>")),                # os in 1.6
    ("1.9", job("x", layer(extra="<gpus>1</gpus>"))),           # gpus in 1.12
    ("1.13", job("x", layer(extra="<outputs/>"))),              # outputs in 1.14
    ("1.15", job("x", options="<autoeat>1</autoeat><paused>1</paused>")),  # order is strict
])
async def test_elements_outside_their_dtd_version_are_refused(farm: Farm, jobs: Any,
                                                              version: str, body: str) -> None:
    err = await rpc_error(jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(
        spec=spec(body, version))))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details().startswith(
        QUEUE + "Failed to parse job spec XML, org.jdom.input.JDOMParseException: Error on "
        'line 1: The content of element type "')
    assert farm.store.one("SELECT COUNT(*) FROM job")[0] == 0


def test_uid_is_required_before_1_9() -> None:
    with pytest.raises(launchspec.SpecError, match=r'must match "\(facility\?,dept\?,show,'
                                                   r'shot,user,email\?,uid,job\*'):
        launchspec.build_plan(spec(job(), "1.8", uid=""))
    assert launchspec.build_plan(spec(job(), "1.9", uid="")).jobs[0].uid is None


@pytest.mark.parametrize("attribute, expected", [
    ("Demo-Job", "testing-sh010-jdoe_demo_job"),
    ("testing-sh010-jdoe_Lighting", "testing-sh010-jdoe_lighting"),   # prefix not repeated
    ("__comp__v2", "testing-sh010-jdoe_comp_v2"),                     # runs collapsed, stripped
    ("a-b", "testing-sh010-jdoe_a_b"),
    ("v1.2", "testing-sh010-jdoe_v1.2"),
])
def test_job_names(attribute: str, expected: str) -> None:
    plan = launchspec.build_plan(spec(job(attribute)))
    assert plan.names == [expected]


def test_shot_and_layer_names_are_conformed() -> None:
    plan = launchspec.build_plan(spec(job("demo", layer("Beauty-Pass")), shot="Sh-010"))
    assert plan.names == ["testing-sh_010-jdoe_demo"]
    assert plan.jobs[0].layers[0].name == "beauty_pass"


@pytest.mark.parametrize("body, message", [
    (job("ab"), "The job name suffix: ab must be composed of alpha numeric characters, "
                "periods, and underscores and be at least 3 characters long"),
    (job("demo", layer("ab")), "The layer name must be at least 3 characters."),
    (job("demo", layer("a:b")), "The layer name: a:b is not in the proper format.  Layer "
                                "names must be alpha numeric, no dashes or punctuation."),
    (job("demo", layer(), layer()), "error, the layer render was already defined in job "
                                    "testing-sh010-jdoe_demo"),
    (job("demo", layer(kind="Post")), "The job testing-sh010-jdoe_demo has no layers"),
    (job("demo", layer(rng="1-x")), "error, the range 1-x is invalid"),
    (job("demo", layer(extra="<cores>many</cores>")), 'For input string: "many"'),
    (job("demo", layer(extra="<tags>general | a!</tags>")),
     "error, invalid tag a!, tags must be alpha numberic and at least 3 characters in length."),
    (job("demo", layer(rng="1-60000"), layer("comp", rng="1-50000")),
     "error, your job has 110000 frames, the maximum number of allowed frames is 100000"),
    (job("demo") + "<depends>" + depend("FRAME_ON_FRAME", "demo", "demo", depframe="0001-Render",
                                        onframe="0001-render") + "</depends>",
     "The frame name: 0001-render cannot depend on itself."),
])
def test_spec_refusals(body: str, message: str) -> None:
    with pytest.raises(launchspec.SpecError) as info:
        launchspec.build_plan(spec(body))
    assert str(info.value) == message


@pytest.mark.parametrize("user, uid", [("root", "<uid>1000</uid>"), ("jdoe", "<uid>0</uid>")])
def test_root_cannot_launch(user: str, uid: str) -> None:
    with pytest.raises(launchspec.SpecError, match=r"^Cannot launch jobs as root\.$"):
        launchspec.build_plan(spec(job(), user=user, uid=uid))


@pytest.mark.parametrize("rng, chunk, numbers", [
    ("1-10", 5, [1, 6]),
    ("1-10", 3, [1, 4, 7, 10]),
    ("1-20x5", 1, [1, 6, 11, 16]),
    ("1-10y3", 2, [2, 5, 8]),            # 2,3,5,6,8,9 in pairs
    ("1-8:4", 1, [1, 5, 3, 7, 2, 4, 6, 8]),
    ("3,1,3,2", 1, [3, 1, 2]),
])
def test_one_frame_per_chunk(farm: Farm, rng: str, chunk: int, numbers: list[int]) -> None:
    (job_id,) = launchspec.launch(farm, spec(job("demo", layer("render", rng, chunk))))
    rows = farm.store.all("SELECT name, number, dispatch_order, state FROM frame WHERE job_id "
                          "= ? ORDER BY dispatch_order", (job_id,))
    assert [r["number"] for r in rows] == numbers
    assert [r["name"] for r in rows] == [f"{n:04d}-render" for n in numbers]
    assert [r["dispatch_order"] for r in rows] == list(range(len(numbers)))
    assert {r["state"] for r in rows} == {"WAITING"}
    lay = farm.store.one("SELECT range, chunk_size FROM layer WHERE job_id = ?", (job_id,))
    assert (lay["range"], lay["chunk_size"]) == (rng, chunk)
    assert snapshot(farm.store)["show"] == (1, len(numbers))


@pytest.mark.parametrize("text, units", [
    ("2.0", 200), ("0.5", 50), ("1.25", 125), ("150", 150), ("5", 100), ("0", 100),
    ("3000", 2400), ("30.0", 2400),
])
def test_cores(text: str, units: int) -> None:
    assert launchspec.core_points(text) == units


@pytest.mark.parametrize("text, kb", [
    ("4g", 4194304), ("4G", 4194304), ("512m", 524288), ("1.5m", 262144), ("2", 2097152),
    ("100m", 262144), ("junk", None), ("1.5g", None),
])
def test_memory(text: str, kb: int | None) -> None:
    assert launchspec.memory_kb(text) == kb


def test_layer_resources_and_services(farm: Farm) -> None:
    body = job("demo",
               layer("shots", extra="<cores>0.5</cores><threadable>true</threadable>"
                                    "<memory>512m</memory><tags>util | general | util</tags>"
                                    "<services><service>nosuch</service><service>katana"
                                    "</service></services>"),
               layer("plain", extra="<services><service>nosuch</service></services>"))
    (job_id,) = launchspec.launch(farm, spec(body))
    shots, plain = farm.store.all("SELECT * FROM layer WHERE job_id = ? ORDER BY "
                                  "dispatch_order", (job_id,))
    # katana supplies the defaults (threadable), but under one core it cannot thread
    assert (shots["min_cores"], shots["threadable"], shots["min_memory"]) == (50, 0, 524288)
    assert shots["tags"] == "util | general" and shots["services"] == "nosuch,katana"
    assert plain["services"] == "nosuch,default" and plain["tags"] == "general | desktop"


def test_show_alias_and_facility(farm: Farm) -> None:
    (job_id,) = launchspec.launch(farm, spec(job(), show="test",
                                             head="<facility>LOCAL</facility>"))
    row = farm.store.one("SELECT j.name, j.show_id, f.name AS facility FROM job j JOIN "
                         "facility f ON f.id = j.facility_id WHERE j.id = ?", (job_id,))
    assert tuple(row) == ("test-sh010-jdoe_demo", TESTING, "local")
    (other,) = launchspec.launch(farm, spec(job("other")))
    assert farm.store.one("SELECT f.name FROM job j JOIN facility f ON f.id = j.facility_id "
                          "WHERE j.id = ?", (other,))[0] == "cloud"


# ---------------------------------------------------------------------------
# post-jobs
# ---------------------------------------------------------------------------
async def test_post_layers_make_a_posted_job(farm: Farm, jobs: Any) -> None:
    body = job("demo", layer("render", "1-2"), layer("cleanup", "1", kind="Post"))
    got = await jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=spec(body)))
    assert list(got.names) == ["testing-sh010-jdoe_demo"]
    post = farm.store.one("SELECT * FROM job WHERE parent_job_id IS NOT NULL")
    assert post["name"].startswith("testing-sh010-monitor_demo_post_job_")
    assert (post["state"], post["user"], post["max_cores"], post["max_retries"]) == (
        "POSTED", "monitor", 500, 2)
    assert frames(farm.store, post["name"]) == {"0001-cleanup": ("WAITING", 0)}
    assert farm.store.one("SELECT type FROM layer WHERE job_id = ?", (post["id"],))[0] == "POST"

    succeed(farm, "testing-sh010-jdoe_demo", "0001-render")
    assert farm.store.one("SELECT state FROM job WHERE id = ?", (post["id"],))[0] == "POSTED"
    succeed(farm, "testing-sh010-jdoe_demo", "0002-render")
    assert farm.store.one("SELECT state FROM job WHERE id = ?", (post["id"],))[0] == "PENDING"


def test_post_job_name_replaces_the_first_user_match_only(farm: Farm) -> None:
    """Study §2.2 #12: Cuebot's replaceFirst, so a user named like the show keeps the show."""
    body = job("demo", layer("render", "1"), layer("cleanup", "1", kind="Post"))
    launchspec.launch(farm, spec(body, user="test"))
    post = farm.store.one("SELECT name FROM job WHERE parent_job_id IS NOT NULL")["name"]
    assert post.startswith("monitoring-sh010-test_demo_post_job_")


# ---------------------------------------------------------------------------
# depends
# ---------------------------------------------------------------------------
def test_layer_on_layer_and_frame_by_frame(farm: Farm) -> None:
    body = job("demo", layer("render", "1-4", 2), layer("comp", "1-4"), layer("ref", "1-4")) + (
        "<depends>" + depend("LAYER_ON_LAYER", "demo", "demo", deplayer="comp",
                             onlayer="render")
        + depend("FRAME_BY_FRAME", "demo", "demo", deplayer="ref", onlayer="render")
        + "</depends>")
    launchspec.launch(farm, spec(body))
    name = "testing-sh010-jdoe_demo"
    assert frames(farm.store, name) == {
        "0001-render": ("WAITING", 0), "0003-render": ("WAITING", 0),
        **{f"000{n}-comp": ("DEPEND", 1) for n in range(1, 5)},
        **{f"000{n}-ref": ("DEPEND", 1) for n in range(1, 5)}}
    succeed(farm, name, "0001-render")   # the chunk 1-2: ref 1 and 2 go, comp waits on all
    got = frames(farm.store, name)
    assert [got[f"000{n}-ref"] for n in range(1, 5)] == [("WAITING", 0)] * 2 + [("DEPEND", 1)] * 2
    assert {got[f"000{n}-comp"] for n in range(1, 5)} == {("DEPEND", 1)}
    succeed(farm, name, "0003-render")
    got = frames(farm.store, name)
    assert {v for k, v in got.items() if not k.endswith("render")} == {("WAITING", 0)}
    # every depend that held frames is satisfied; the FRAME_BY_FRAME container itself is never
    # satisfied (Cuebot keeps its composite row active), and its children point at it
    assert [tuple(r) for r in farm.store.all(
        "SELECT type, active FROM depend WHERE parent_id IS NULL ORDER BY seq")] == [
        ("LAYER_ON_LAYER", 0), ("FRAME_BY_FRAME", 1)]
    assert farm.store.one("SELECT COUNT(*) FROM depend WHERE active = 1 AND parent_id IS NOT "
                          "NULL")[0] == 0
    assert farm.store.one("SELECT COUNT(*) FROM depend WHERE parent_id IS NOT NULL")[0] == 4


def test_previous_frame_and_sim_frame(farm: Farm) -> None:
    body = job("demo", layer("sim", "1-3"), layer("cache", "1-3"), layer("look", "1-3")) + (
        "<depends>" + depend("PREVIOUS_FRAME", "demo", "demo", deplayer="cache", onlayer="sim")
        + depend("LAYER_ON_SIM_FRAME", "demo", "demo", deplayer="look", onframe="0001-sim")
        + "</depends>")
    launchspec.launch(farm, spec(body))
    got = frames(farm.store, "testing-sh010-jdoe_demo")
    assert [got[f"000{n}-cache"] for n in (1, 2, 3)] == [("WAITING", 0)] + [("DEPEND", 1)] * 2
    assert {got[f"000{n}-look"] for n in (1, 2, 3)} == {("DEPEND", 1)}
    succeed(farm, "testing-sh010-jdoe_demo", "0001-sim")
    got = frames(farm.store, "testing-sh010-jdoe_demo")
    assert (got["0002-cache"], got["0003-cache"]) == (("WAITING", 0), ("DEPEND", 1))
    assert {got[f"000{n}-look"] for n in (1, 2, 3)} == {("WAITING", 0)}


def test_job_depends_between_and_across_launches(farm: Farm) -> None:
    launchspec.launch(farm, spec(job("anim", layer("anim", "1-2"))))
    body = job("light", layer("light", "1-2"), layer("prep", "1-2")) + job("comp") + (
        "<depends>"
        + depend("JOB_ON_JOB", "comp", "light")
        + depend("LAYER_ON_JOB", "light", "testing-sh010-jdoe_anim", deplayer="light")
        + depend("FRAME_ON_LAYER", "light", "light", depframe="0002-prep", onlayer="light")
        + "</depends>")
    launchspec.launch(farm, spec(body))
    light, comp = "testing-sh010-jdoe_light", "testing-sh010-jdoe_comp"
    assert set(frames(farm.store, comp).values()) == {("DEPEND", 1)}
    assert frames(farm.store, light) == {
        "0001-light": ("DEPEND", 1), "0002-light": ("DEPEND", 1),
        "0001-prep": ("WAITING", 0), "0002-prep": ("DEPEND", 1)}
    targets = {r["type"]: r["target"] for r in farm.store.all("SELECT * FROM depend")}
    assert targets == {"JOB_ON_JOB": "EXTERNAL", "LAYER_ON_JOB": "EXTERNAL",
                       "FRAME_ON_LAYER": "INTERNAL"}
    for n in (1, 2):
        succeed(farm, "testing-sh010-jdoe_anim", f"000{n}-anim")
    assert set(frames(farm.store, light).values()) == {("WAITING", 0)} | {("DEPEND", 1)}
    for n in (1, 2):
        succeed(farm, light, f"000{n}-light")
    assert frames(farm.store, light)["0002-prep"] == ("WAITING", 0)
    succeed(farm, light, "0001-prep")
    succeed(farm, light, "0002-prep")
    assert set(frames(farm.store, comp).values()) == {("WAITING", 0)}


def test_job_depends_name_pending_jobs(farm: Farm) -> None:
    launchspec.launch(farm, spec(job("anim", layer("anim", "1"))))
    succeed(farm, "testing-sh010-jdoe_anim", "0001-anim")
    launchspec.launch(farm, spec(job("still")))
    # a finished job's name is released: depends can no longer find it by name
    launchspec.launch(farm, spec(job("next") + "<depends>" + depend(
        "JOB_ON_JOB", "next", "still") + "</depends>"))
    row = farm.store.one("SELECT active FROM depend")
    assert row["active"] == 1
    with pytest.raises(depends.DependError):
        launchspec.launch(farm, spec(job("late") + "<depends>" + depend(
            "JOB_ON_JOB", "late", "anim") + "</depends>"))


def test_depends_on_frames_already_done_are_created_inactive(farm: Farm) -> None:
    launchspec.launch(farm, spec(job("anim", layer("anim", "1-2"))))
    succeed(farm, "testing-sh010-jdoe_anim", "0001-anim")
    launchspec.launch(farm, spec(job("light") + "<depends>" + depend(
        "LAYER_ON_FRAME", "light", "anim", deplayer="render", onframe="0001-anim")
        + "</depends>"))
    assert farm.store.one("SELECT active FROM depend")[0] == 0
    assert set(frames(farm.store, "testing-sh010-jdoe_light").values()) == {("WAITING", 0)}


# ---------------------------------------------------------------------------
# errors over gRPC, and nothing half-created
# ---------------------------------------------------------------------------
async def test_refusals_are_cuebots_internal_errors(farm: Farm, jobs: Any) -> None:
    cases = [
        ("<spec>", "Failed to parse job spec XML, org.jdom.input.JDOMParseException: Error on "
                   "line 1: no element found"),
        (spec(job(), show="nosuch"),
         "The nosuch does not exist. Please contact administrator of your OpenCue deployment "
         "to have this show created."),
        (spec(job("ab")), "The job name suffix: ab must be composed of alpha numeric "
                          "characters, periods, and underscores and be at least 3 characters "
                          "long"),
    ]
    for text, message in cases:
        err = await rpc_error(jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=text)))
        assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, QUEUE + message)
        err = await rpc_error(jobs.LaunchSpecAndWait(
            job_pb2.JobLaunchSpecAndWaitRequest(spec=text)))
        assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, WAIT + message)
    assert snapshot(farm.store)["job"] == 0


async def test_duplicate_pending_name_and_inactive_show(farm: Farm, jobs: Any) -> None:
    await jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=spec(job())))
    before = snapshot(farm.store)
    err = await rpc_error(jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=spec(job()))))
    assert err.details() == QUEUE + "The job testing-sh010-jdoe_demo is already pending"
    farm.store.run("UPDATE show SET active = 0")
    err = await rpc_error(jobs.LaunchSpecAndWait(job_pb2.JobLaunchSpecAndWaitRequest(
        spec=spec(job("other")))))
    assert err.details() == WAIT + (
        "The testing show has been deactivated.  Please contact administrator of your OpenCue "
        "deployment to reactivate this show.")
    assert snapshot(farm.store) == before


async def test_a_finished_jobs_name_can_be_launched_again(farm: Farm, jobs: Any) -> None:
    await jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=spec(job("demo", layer(rng="1")))))
    succeed(farm, "testing-sh010-jdoe_demo", "0001-render")
    got = await jobs.LaunchSpecAndWait(job_pb2.JobLaunchSpecAndWaitRequest(
        spec=spec(job("demo", layer(rng="1")))))
    assert got.jobs.jobs[0].state == job_pb2.PENDING
    assert farm.store.one("SELECT COUNT(*) FROM job WHERE name = ?",
                          ("testing-sh010-jdoe_demo",))[0] == 2


FAILING_LAUNCHES = {
    "facility": spec(job("one") + job("two"), head="<facility>mars</facility>"),
    "limit": spec(job("one") + job("two", layer(extra="<limits><limit>nosuch</limit>"
                                                      "</limits>"))),
    "depend on a missing layer": spec(job("one") + job("two") + "<depends>" + depend(
        "LAYER_ON_LAYER", "two", "one", deplayer="render", onlayer="nosuch") + "</depends>"),
    "a layer on itself": spec(job("one") + "<depends>" + depend(
        "LAYER_ON_LAYER", "one", "one", deplayer="render", onlayer="render") + "</depends>"),
    "a name twice in one spec": spec(job("one") + job("one")),
}


@pytest.mark.parametrize("case", FAILING_LAUNCHES)
async def test_failed_launches_leave_nothing(farm: Farm, jobs: Any, case: str) -> None:
    await jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=spec(job("before"))))
    before = snapshot(farm.store)
    text = FAILING_LAUNCHES[case]
    # LaunchSpec answered before Cuebot's queued launch failed: names, and no job
    got = await jobs.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=text))
    assert list(got.names)[0] == "testing-sh010-jdoe_one"
    assert snapshot(farm.store) == before
    err = await rpc_error(jobs.LaunchSpecAndWait(job_pb2.JobLaunchSpecAndWaitRequest(
        spec=text)))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INTERNAL, WAIT + "Incorrect result size: expected 1, actual 0")
    assert snapshot(farm.store) == before
    with pytest.raises(launchspec.LAUNCH_ERRORS):
        launchspec.launch(farm, text)
    assert snapshot(farm.store) == before


def test_filters_run_on_each_launched_job_inside_the_launch(
        farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bool]] = []

    def apply_filters(store: Store, job_id: str) -> None:
        seen.append((store.one("SELECT name FROM job WHERE id = ?", (job_id,))[0],
                     store.db.in_transaction))

    monkeypatch.setattr(launchspec, "_filters", lambda: apply_filters)
    launchspec.launch(farm, spec(job("one") + job("two", layer(), layer("post", kind="Post"))))
    assert seen == [("testing-sh010-jdoe_one", True), ("testing-sh010-jdoe_two", True)]


def test_filters_module_is_optional() -> None:
    found = launchspec._filters()
    try:
        filters = importlib.import_module("gateway.sandbox.filters")
    except ModuleNotFoundError:
        assert found is None
    else:
        assert found is getattr(filters, "apply_filters", None)


# ---------------------------------------------------------------------------
# the XML reader refuses what it must not expand
# ---------------------------------------------------------------------------
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE spec [<!ENTITY a "aaaaaaaaaa">'
          '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
          "<spec><show>&c;</show></spec>")
XXE = ('<?xml version="1.0"?><!DOCTYPE spec PUBLIC "x" '
       '"http://localhost:8080/spcue/dtd/cjsl-1.15.dtd" [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       "<spec><show>&x;</show></spec>")


@pytest.mark.parametrize("text, message", [
    (LAUGHS, "Internal DTD subsets are not accepted in a job spec."),
    (XXE, "Internal DTD subsets are not accepted in a job spec."),
    (spec(job()).replace("<show>testing", "<show>&undeclared;"),
     'The entity "undeclared" was referenced, but not declared.'),
    (spec(job()).replace(DOCTYPE.format("1.15"), '<?xml version="1.0"?>'),
     "Document is invalid: no grammar found."),
    (spec(job()).replace("cjsl-1.15.dtd", "cjsl-2.0.dtd"),
     "the DTD http://localhost:8080/spcue/dtd/cjsl-2.0.dtd is not one of the cjsl DTDs"),
    (spec(job()).replace('type="Render"', 'type="Sim"'),
     'Attribute "type" with value "Sim" must have a value from the list "Render Util Post ".'),
    (spec(job()).replace("<layers>", "<layers><bogus/>"), 'Element type "bogus" must be '
                                                          'declared.'),
    (spec(job()).replace('name="demo"', 'name="my demo"'),
     'Attribute value "my demo" of type NMTOKEN must be a name token.'),
    (spec(job()).replace('<job name="demo">', "<job>"),
     'Attribute "name" is required and must be specified for element type "job".'),
    (spec(job()).replace("<shot>", "text<shot>"),
     'The content of element type "spec" must match'),
])
def test_xml_refusals(text: str, message: str) -> None:
    with pytest.raises(cjsl.SpecXmlError) as info:
        cjsl.parse(text)
    assert str(info.value).startswith("org.jdom.input.JDOMParseException: Error on line 1: ")
    assert message in str(info.value)


# ---------------------------------------------------------------------------
# the served sandbox answers both RPCs (its JobInterface is the servant above)
# ---------------------------------------------------------------------------
async def test_the_served_sandbox_launches(sandbox: Any, sandbox_channel: Any) -> None:
    stub = job_pb2_grpc.JobInterfaceStub(sandbox_channel)
    got = await stub.LaunchSpec(job_pb2.JobLaunchSpecRequest(spec=spec(job("served"))))
    assert list(got.names) == ["testing-sh010-jdoe_served"]
    found = await stub.FindJob(job_pb2.JobFindJobRequest(name="testing-sh010-jdoe_served"))
    assert found.job.job_stats.waiting_frames == 10
    err = await rpc_error(stub.LaunchSpecAndWait(job_pb2.JobLaunchSpecAndWaitRequest(
        spec=spec(job("served")))))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INTERNAL, WAIT + "The job testing-sh010-jdoe_served is already pending")
