"""The sandbox's foundation: seed data, storage, concurrency, reflection, and the
Show/Facility/Allocation/Subscription/Service interfaces, over real gRPC."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest
from opencue_proto import (facility_pb2, facility_pb2_grpc, filter_pb2, job_pb2, job_pb2_grpc,
                           service_pb2, service_pb2_grpc, show_pb2, show_pb2_grpc,
                           subscription_pb2, subscription_pb2_grpc)

from gateway import reflection
from gateway.sandbox import server
from gateway.sandbox.store import Store
from support import ROOT, free_port

TESTING = "00000000-0000-0000-0000-000000000000"


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


@pytest.fixture
async def fresh():
    """A sandbox seeded as a fresh Cuebot, no demo data."""
    sb = await server.start(":memory:", demo=False)
    channel = grpc.aio.insecure_channel(sb.endpoint)
    yield sb, channel
    await channel.close()
    await sb.stop(None)


# -- seed ----------------------------------------------------------------------
async def test_fresh_cuebot_seed(fresh):
    sb, ch = fresh
    shows = show_pb2_grpc.ShowInterfaceStub(ch)
    got = (await shows.GetShows(show_pb2.ShowGetShowsRequest())).shows.shows
    assert [s.name for s in got] == ["testing"]
    t = got[0]
    assert t.id == TESTING and t.default_min_cores == 1.0 and t.default_max_cores == 2000.0
    assert t.booking_enabled and t.dispatch_enabled and t.active
    assert (t.default_min_gpus, t.default_max_gpus) == (100.0, 100000.0)
    allocs = facility_pb2_grpc.AllocationInterfaceStub(ch)
    all_ = (await allocs.GetAll(facility_pb2.AllocGetAllRequest())).allocations.allocations
    assert [a.name for a in all_] == ["cloud.general", "cloud.unassigned", "local.desktop",
                                      "local.general", "local.unassigned"]
    assert {a.name: a.facility for a in all_}["local.general"] == "local"
    assert {a.name: a.id for a in all_}["local.general"] == "00000000-0000-0000-0000-000000000000"
    subs = (await shows.GetSubscriptions(show_pb2.ShowGetSubscriptionRequest(
        show=t))).subscriptions.subscriptions
    assert [(s.name, s.size, s.burst) for s in subs] == [
        ("local.general.testing", 100000, 100000), ("local.desktop.testing", 100000, 100000),
        ("cloud.general.testing", 100000, 100000)]
    root = (await shows.GetRootGroup(show_pb2.ShowGetRootGroupRequest(show=t))).group
    assert (root.id, root.name, root.department, root.max_cores) == (
        "A0000000-0000-0000-0000-000000000000", "testing", "Pipeline", -1.0)
    services = service_pb2_grpc.ServiceInterfaceStub(ch)
    svc = (await services.GetDefaultServices(
        service_pb2.ServiceGetDefaultServicesRequest())).services.services
    assert [s.name for s in svc] == ["default", "prman", "arnold", "shell", "maya", "houdini",
                                     "katana", "nuke", "preprocess", "postprocess"]
    assert svc[0].min_cores == 100 and svc[0].min_memory == 3355443
    assert list(svc[0].tags) == ["general", "desktop"] and svc[2].threadable
    jobs = job_pb2_grpc.JobInterfaceStub(ch)
    assert len((await jobs.GetJobs(job_pb2.JobGetJobsRequest(
        r={"include_finished": True}))).jobs.jobs) == 0


async def test_demo_farm_has_something_everywhere(sandbox):
    s = sandbox.store
    assert s.one("SELECT COUNT(*) FROM host")[0] >= 20
    states = {r[0] for r in s.all("SELECT DISTINCT state FROM frame")}
    assert {"WAITING", "RUNNING", "SUCCEEDED", "DEAD", "EATEN", "DEPEND"} <= states
    assert s.one("SELECT COUNT(*) FROM proc")[0] == 4
    assert {r[0] for r in s.all("SELECT DISTINCT state FROM job")} == {"PENDING", "FINISHED"}
    for table in ("limit_record", "filter", "matcher", "action", "depend", "comment",
                  "owner", "deed", "task"):
        assert s.one(f"SELECT COUNT(*) FROM {table}")[0] >= 1, table
    # running frames hold their hosts' cores
    busy = s.one("SELECT SUM(cores - idle_cores) FROM host")[0]
    assert busy == s.one("SELECT SUM(cores) FROM proc")[0]


# -- shows -----------------------------------------------------------------------
async def test_show_stats_count_pending_jobs_only(sandbox, sandbox_channel):
    shows = show_pb2_grpc.ShowInterfaceStub(sandbox_channel)
    t = (await shows.FindShow(show_pb2.ShowFindShowRequest(name="testing"))).show
    s = sandbox.store
    pending = s.all("SELECT f.state, COUNT(*) n FROM frame f JOIN job j ON j.id = f.job_id "
                    "WHERE j.state = 'PENDING' GROUP BY f.state")
    n = {r["state"]: r["n"] for r in pending}
    assert t.show_stats.pending_frames == n.get("WAITING", 0) + n.get("DEPEND", 0)
    assert t.show_stats.running_frames == n["RUNNING"] and t.show_stats.dead_frames == n["DEAD"]
    assert t.show_stats.pending_jobs == 3
    assert t.show_stats.created_job_count == 4
    assert t.show_stats.reserved_cores == 16.0


async def test_find_show_is_exact_and_not_found(sandbox_channel):
    shows = show_pb2_grpc.ShowInterfaceStub(sandbox_channel)
    for name in ("nope", "Testing", "test"):  # case-sensitive; aliases not honoured
        e = await rpc_error(shows.FindShow(show_pb2.ShowFindShowRequest(name=name)))
        assert e.code() == grpc.StatusCode.NOT_FOUND
        assert e.details() == "Incorrect result size: expected 1, actual 0"


async def test_active_shows(sandbox_channel):
    shows = show_pb2_grpc.ShowInterfaceStub(sandbox_channel)
    active = (await shows.GetActiveShows(show_pb2.ShowGetActiveShowsRequest())).shows.shows
    every = (await shows.GetShows(show_pb2.ShowGetShowsRequest())).shows.shows
    assert [s.name for s in every] == ["testing", "pipeline_test"]
    assert [s.name for s in active] == ["testing"]


@pytest.mark.parametrize("name, message", [
    ("ab", "Show could not be created.The show name must be at least 3 characters."),
    ("bad show!", "Show could not be created.The show name: bad show! is not in the proper "
                  "format.  Show names must be alpha numeric, no dashes or punctuation."),
])
async def test_create_show_validation(sandbox_channel, name, message):
    shows = show_pb2_grpc.ShowInterfaceStub(sandbox_channel)
    e = await rpc_error(shows.CreateShow(show_pb2.ShowCreateShowRequest(name=name)))
    assert e.code() == grpc.StatusCode.INTERNAL and e.details() == message


async def test_create_show_normalises_and_builds_its_parts(sandbox_channel):
    shows = show_pb2_grpc.ShowInterfaceStub(sandbox_channel)
    new = (await shows.CreateShow(show_pb2.ShowCreateShowRequest(name="New-Show"))).show
    assert new.name == "new_show" and new.default_min_cores == 1.0
    assert new.default_max_cores == 100.0 and new.active and len(new.id) == 36
    root = (await shows.GetRootGroup(show_pb2.ShowGetRootGroupRequest(show=new))).group
    assert root.name == "new_show" and root.department == "Unknown"
    assert not (await shows.GetSubscriptions(show_pb2.ShowGetSubscriptionRequest(
        show=new))).subscriptions.subscriptions
    depts = (await shows.GetDepartments(show_pb2.ShowGetDepartmentsRequest(
        show=new))).departments.departments
    assert [d.name for d in depts] == ["new_show.Unknown"]
    e = await rpc_error(shows.CreateShow(show_pb2.ShowCreateShowRequest(name="new_show")))
    assert e.code() == grpc.StatusCode.INTERNAL and e.details().startswith(
        "Show could not be created.")


async def test_show_setters_and_missing_show(sandbox_channel):
    shows = show_pb2_grpc.ShowInterfaceStub(sandbox_channel)
    t = (await shows.FindShow(show_pb2.ShowFindShowRequest(name="testing"))).show
    await shows.SetDefaultMaxCores(show_pb2.ShowSetDefaultMaxCoresRequest(show=t, max_cores=2.6))
    await shows.SetDefaultMinCores(show_pb2.ShowSetDefaultMinCoresRequest(show=t, min_cores=0.5))
    await shows.EnableBooking(show_pb2.ShowEnableBookingRequest(show=t, enabled=False))
    await shows.SetCommentEmail(show_pb2.ShowSetCommentEmailRequest(show=t, email="a@b.c"))
    t2 = (await shows.FindShow(show_pb2.ShowFindShowRequest(name="testing"))).show
    assert (t2.default_max_cores, t2.default_min_cores) == (2.0, 0.0)
    assert not t2.booking_enabled and t2.comment_email == "a@b.c"
    e = await rpc_error(shows.SetActive(show_pb2.ShowSetActiveRequest(
        show=show_pb2.Show(id="nope"), value=False)))
    assert e.code() == grpc.StatusCode.INTERNAL
    assert e.details() == ("org.springframework.dao.EmptyResultDataAccessException: Incorrect "
                           "result size: expected 1, actual 0\nIncorrect result size: expected "
                           "1, actual 0")


async def test_create_subscription_filter_owner_override(sandbox_channel):
    shows = show_pb2_grpc.ShowInterfaceStub(sandbox_channel)
    new = (await shows.CreateShow(show_pb2.ShowCreateShowRequest(name="subs_show"))).show
    sub = (await shows.CreateSubscription(show_pb2.ShowCreateSubscriptionRequest(
        show=new, allocation_id="00000000-0000-0000-0000-000000000003", size=10.5,
        burst=20))).subscription
    assert (sub.name, sub.size, sub.burst) == ("cloud.general.subs_show", 1050, 2000)
    e = await rpc_error(shows.CreateSubscription(show_pb2.ShowCreateSubscriptionRequest(
        show=new, allocation_id="00000000-0000-0000-0000-000000000003", size=1, burst=1)))
    assert e.code() == grpc.StatusCode.INTERNAL       # Cuebot's unique index c_subscription_uk
    assert e.details().startswith("org.springframework.dao.DuplicateKeyException: ")
    assert 'violates unique constraint "c_subscription_uk"' in e.details()
    flt = (await shows.CreateFilter(show_pb2.ShowCreateFilterRequest(
        show=new, name="f1"))).filter
    assert flt.type == filter_pb2.MATCH_ALL and flt.enabled
    found = (await shows.FindFilter(show_pb2.ShowFindFilterRequest(show=new, name="f1"))).filter
    assert found.id == flt.id
    owner = (await shows.CreateOwner(show_pb2.ShowCreateOwnerRequest(show=new,
                                                                     name="ann"))).owner
    assert owner.show == "subs_show" and owner.host_count == 0
    ov = (await shows.CreateServiceOverride(show_pb2.ShowCreateServiceOverrideRequest(
        show=new, service=service_pb2.Service(name="nuke", min_memory=8388608,
                                              tags=["a", "b"])))).service_override
    assert ov.data.name == "nuke" and list(ov.data.tags) == ["a", "b"]
    listed = (await shows.GetServiceOverrides(show_pb2.ShowGetServiceOverridesRequest(
        show=new))).service_overrides.service_overrides
    assert [o.id for o in listed] == [ov.id]


# -- facilities, allocations, subscriptions ---------------------------------------
async def test_allocation_lookups_keep_cuebots_quirks(sandbox_channel):
    allocs = facility_pb2_grpc.AllocationInterfaceStub(sandbox_channel)
    by_name = (await allocs.Get(facility_pb2.AllocGetRequest(id="local.general"))).allocation
    assert by_name.name == "local.general" and by_name.stats.hosts >= 19
    e = await rpc_error(allocs.Get(facility_pb2.AllocGetRequest(id=by_name.id)))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    found = (await allocs.Find(facility_pb2.AllocFindRequest(name="local.general"))).allocation
    assert found.id == by_name.id
    stats = found.stats
    assert stats.running_cores == stats.cores - stats.idle_cores
    assert stats.locked_hosts == 1 and stats.down_hosts == 1
    hosts = (await allocs.GetHosts(facility_pb2.AllocGetHostsRequest(
        allocation=found))).hosts.hosts
    assert len(hosts) == stats.hosts
    await allocs.SetBillable(facility_pb2.AllocSetBillableRequest(
        allocation=facility_pb2.Allocation(facility="local", name="general"), value=True))
    assert (await allocs.Find(facility_pb2.AllocFindRequest(
        name="local.general"))).allocation.billable
    e = await rpc_error(allocs.SetBillable(facility_pb2.AllocSetBillableRequest(
        allocation=facility_pb2.Allocation(name="nowhere.x"), value=True)))
    assert e.code() == grpc.StatusCode.INTERNAL


async def test_facilities(sandbox_channel):
    fac = facility_pb2_grpc.FacilityInterfaceStub(sandbox_channel)
    local = (await fac.Get(facility_pb2.FacilityGetRequest(name="local"))).facility
    assert local.id == "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAA1"
    made = (await fac.Create(facility_pb2.FacilityCreateRequest(name="aws-us-east"))).facility
    assert (await fac.Get(facility_pb2.FacilityGetRequest(name=made.id))).facility.name == \
        "aws-us-east"
    await fac.Delete(facility_pb2.FacilityDeleteRequest(name="aws-us-east"))
    e = await rpc_error(fac.Get(facility_pb2.FacilityGetRequest(name="aws-us-east")))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    e = await rpc_error(fac.Delete(facility_pb2.FacilityDeleteRequest(name="local")))
    assert e.code() == grpc.StatusCode.INTERNAL  # allocations still refer to it
    e = await rpc_error(fac.GetAllocations(facility_pb2.FacilityGetAllocationsRequest(
        facility=local)))
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.details() == "Method facility.FacilityInterface/GetAllocations is unimplemented"


async def test_subscriptions(sandbox_channel):
    subs = subscription_pb2_grpc.SubscriptionInterfaceStub(sandbox_channel)
    sub = (await subs.Find(subscription_pb2.SubscriptionFindRequest(
        name="local.general.testing"))).subscription
    assert sub.id == "00000000-0000-0000-0000-000000000001" and sub.reserved_cores == 1600
    await subs.SetSize(subscription_pb2.SubscriptionSetSizeRequest(subscription=sub,
                                                                  new_size=7500))
    got = (await subs.Get(subscription_pb2.SubscriptionGetRequest(id=sub.id))).subscription
    assert got.size == 7500
    # a burst below what runs is stored (Cuebot's guard only stops usage from growing past it)
    await subs.SetBurst(subscription_pb2.SubscriptionSetBurstRequest(subscription=sub, burst=100))
    got = (await subs.Get(subscription_pb2.SubscriptionGetRequest(id=sub.id))).subscription
    assert (got.burst, got.reserved_cores) == (100, 1600)
    e = await rpc_error(subs.Find(subscription_pb2.SubscriptionFindRequest(name="a.b")))
    assert e.code() == grpc.StatusCode.INTERNAL and "alloc.show" in e.details()
    e = await rpc_error(subs.Find(subscription_pb2.SubscriptionFindRequest(
        name="cloud.unassigned.testing")))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert e.details() == "A subscription to cloud.unassigned.testing was not found."
    e = await rpc_error(subs.Delete(subscription_pb2.SubscriptionDeleteRequest(
        subscription=sub)))
    assert e.code() == grpc.StatusCode.INTERNAL  # it has running procs
    cloud = (await subs.Find(subscription_pb2.SubscriptionFindRequest(
        name="cloud.general.testing"))).subscription
    await subs.Delete(subscription_pb2.SubscriptionDeleteRequest(subscription=cloud))
    e = await rpc_error(subs.Get(subscription_pb2.SubscriptionGetRequest(id=cloud.id)))
    assert e.code() == grpc.StatusCode.NOT_FOUND


# -- services ------------------------------------------------------------------------
async def test_services(sandbox_channel):
    services = service_pb2_grpc.ServiceInterfaceStub(sandbox_channel)
    nuke = (await services.GetService(service_pb2.ServiceGetServiceRequest(name="nuke"))).service
    assert nuke.min_memory == 2097152
    made = (await services.CreateService(service_pb2.ServiceCreateServiceRequest(
        data=service_pb2.Service(name="blender", threadable=True, min_cores=100, max_cores=1600,
                                 min_memory=2147483, tags=["blender", "render"])))).service
    assert made.name == "blender" and list(made.tags) == ["blender", "render"]
    e = await rpc_error(services.CreateService(service_pb2.ServiceCreateServiceRequest(
        data=service_pb2.Service(name="blender"))))
    assert e.code() == grpc.StatusCode.INTERNAL
    await services.Update(service_pb2.ServiceUpdateRequest(service=service_pb2.Service(
        id=made.id, name="blender", min_memory=8388608)))
    again = (await services.GetService(service_pb2.ServiceGetServiceRequest(
        name="blender"))).service
    assert again.min_memory == 8388608 and not again.threadable and list(again.tags) == []
    await services.Update(service_pb2.ServiceUpdateRequest(service=service_pb2.Service(
        id="nope", name="x")))  # unknown id: OK, nothing changes
    await services.Delete(service_pb2.ServiceDeleteRequest(service=made))
    e = await rpc_error(services.GetService(service_pb2.ServiceGetServiceRequest(
        name="blender")))
    assert e.code() == grpc.StatusCode.NOT_FOUND


async def test_service_overrides_update_and_delete(sandbox_channel):
    """Keyed by the override's id, a full overwrite; the global service is left alone."""
    shows = show_pb2_grpc.ShowInterfaceStub(sandbox_channel)
    overrides = service_pb2_grpc.ServiceOverrideInterfaceStub(sandbox_channel)
    services = service_pb2_grpc.ServiceInterfaceStub(sandbox_channel)
    show = show_pb2.Show(name="testing")
    ov = (await shows.CreateServiceOverride(show_pb2.ShowCreateServiceOverrideRequest(
        show=show, service=service_pb2.Service(name="maya", min_memory=8388608, threadable=True,
                                               tags=["desktop"])))).service_override
    await overrides.Update(service_pb2.ServiceOverrideUpdateRequest(service=service_pb2.Service(
        id=ov.id, name="maya", min_cores=200)))
    got = (await shows.GetServiceOverride(show_pb2.ShowGetServiceOverrideRequest(
        show=show, name="maya"))).service_override
    assert (got.id, got.data.min_cores, got.data.min_memory, got.data.threadable,
            list(got.data.tags)) == (ov.id, 200, 0, False, [])
    maya = (await services.GetService(service_pb2.ServiceGetServiceRequest(name="maya"))).service
    assert (maya.min_cores, maya.min_memory) == (100, 2097152)
    await overrides.Update(service_pb2.ServiceOverrideUpdateRequest(    # a global id: no-op
        service=service_pb2.Service(id=maya.id, name="maya")))
    assert (await services.GetService(service_pb2.ServiceGetServiceRequest(
        name="maya"))).service == maya
    await overrides.Delete(service_pb2.ServiceOverrideDeleteRequest(
        service=service_pb2.Service(id=ov.id)))
    await overrides.Delete(service_pb2.ServiceOverrideDeleteRequest(   # unknown: OK
        service=service_pb2.Service(id="no-such-override")))
    listed = (await shows.GetServiceOverrides(show_pb2.ShowGetServiceOverridesRequest(
        show=show))).service_overrides.service_overrides
    assert ov.id not in [o.id for o in listed]


# -- framework ------------------------------------------------------------------------
async def test_unimplemented_rpcs_answer_like_cuebot(sandbox_channel):
    """Cuebot leaves FacilityInterface/GetAllocations out of its servant: so does the sandbox."""
    facilities = facility_pb2_grpc.FacilityInterfaceStub(sandbox_channel)
    e = await rpc_error(facilities.GetAllocations(facility_pb2.FacilityGetAllocationsRequest()))
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.details() == "Method facility.FacilityInterface/GetAllocations is unimplemented"


async def test_reflection_describes_the_real_protos(sandbox, bundled):
    channel = grpc.aio.insecure_channel(sandbox.endpoint)
    try:
        d = await reflection.fetch(channel, sandbox.endpoint, 10)
    finally:
        await channel.close()
    served = {s.full_name for s in d.services}
    assert "show.ShowInterface" in served and "job.FrameInterface" in served
    assert "rqd.RqdInterface" not in served and "monitoring.MonitoringInterface" not in served
    for svc in served:  # every served service is described exactly as in the bundle
        ours = d.pool.FindServiceByName(svc)
        theirs = bundled.pool.FindServiceByName(svc)
        assert [m.name for m in ours.methods] == [m.name for m in theirs.methods]


# -- storage ------------------------------------------------------------------------------
async def test_file_database_survives_restart(tmp_path):
    db = tmp_path / "farm.db"
    sb = await server.start(db, demo=True)
    ch = grpc.aio.insecure_channel(sb.endpoint)
    shows = show_pb2_grpc.ShowInterfaceStub(ch)
    made = (await shows.CreateShow(show_pb2.ShowCreateShowRequest(name="kept"))).show
    before = (await shows.GetShows(show_pb2.ShowGetShowsRequest())).shows
    await ch.close()
    await sb.stop(None)
    assert Store(db).db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    sb = await server.start(db, demo=True)  # not seeded again
    ch = grpc.aio.insecure_channel(sb.endpoint)
    shows = show_pb2_grpc.ShowInterfaceStub(ch)
    after = (await shows.GetShows(show_pb2.ShowGetShowsRequest())).shows
    found = (await shows.FindShow(show_pb2.ShowFindShowRequest(name="kept"))).show
    await ch.close()
    await sb.stop(None)
    assert found.id == made.id and after == before


async def test_concurrent_writes_are_serialized(fresh):
    sb, ch = fresh
    shows = show_pb2_grpc.ShowInterfaceStub(ch)
    names = [f"show_{i:03d}" for i in range(60)]
    results = await asyncio.gather(*(shows.CreateShow(show_pb2.ShowCreateShowRequest(name=n))
                                     for n in names))
    assert sorted(r.show.name for r in results) == names
    # and the same name raced from many clients: exactly one wins
    race = await asyncio.gather(*(shows.CreateShow(show_pb2.ShowCreateShowRequest(name="dup"))
                                  for _ in range(20)), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in race) == 1
    assert sb.store.one("PRAGMA integrity_check")[0] == "ok"
    assert sb.store.one("SELECT COUNT(*) FROM folder")[0] == 1 + 60 + 1


def test_standalone_module_runs_and_stops():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.sandbox", "--port", str(port),
                             "--empty"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert any(f"listening on 127.0.0.1:{port}" in line for line in lines), lines
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = show_pb2_grpc.ShowInterfaceStub(ch)
            assert stub.GetShows(show_pb2.ShowGetShowsRequest(), timeout=5).shows.shows[0].name \
                == "testing"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()
