"""The sandbox's Host, Owner, Proc and Deed interfaces over real gRPC.

The demo farm: rn001-rn016 in local.general (rn011-rn014 run the lighting
job's frames 11-14 on procs), rn017 LOCKED, rn018 DOWN, rn019 REPAIR,
ws-jdoe (NIMBY_LOCKED, deeded to owner jdoe) and ws-asmith (NIMBY, OPEN) in
local.desktop. Effects are checked through the RPCs a client would use, and
against the store where no RPC shows them (idle cores, proc rows).
"""
from __future__ import annotations

from typing import Any

import grpc
import pytest
from opencue_proto import comment_pb2, host_pb2, host_pb2_grpc

EMPTY_RESULT = ("org.springframework.dao.EmptyResultDataAccessException: Incorrect result "
                "size: expected 1, actual 0\nIncorrect result size: expected 1, actual 0")
NO_ROW = "Incorrect result size: expected 1, actual 0"
DESKTOP = "00000000-0000-0000-0000-000000000001"


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


class Farm:
    """The four stubs on one channel, and the store for what RPCs cannot show."""

    def __init__(self, sandbox: Any, channel: grpc.aio.Channel) -> None:
        self.store = sandbox.store
        self.hosts = host_pb2_grpc.HostInterfaceStub(channel)
        self.owners = host_pb2_grpc.OwnerInterfaceStub(channel)
        self.procs = host_pb2_grpc.ProcInterfaceStub(channel)
        self.deeds = host_pb2_grpc.DeedInterfaceStub(channel)

    async def host(self, name: str) -> host_pb2.Host:
        return (await self.hosts.FindHost(host_pb2.HostFindHostRequest(name=name))).host

    async def search(self, **criteria: Any) -> list[str]:
        reply = await self.hosts.GetHosts(host_pb2.HostGetHostsRequest(
            r=host_pb2.HostSearchCriteria(**criteria)))
        return sorted(h.name for h in reply.hosts.hosts)

    async def proc_search(self, **criteria: Any) -> list[host_pb2.Proc]:
        reply = await self.procs.GetProcs(host_pb2.ProcGetProcsRequest(
            r=host_pb2.ProcSearchCriteria(**criteria)))
        return list(reply.procs.procs)

    def frame_state(self, proc_name: str) -> str:
        """The state of the lighting render frame a proc named ``host/4.00/0`` ran."""
        return self.store.one("SELECT state FROM frame WHERE last_resource = ?",
                              (proc_name,))["state"]


@pytest.fixture
def farm(sandbox: Any, sandbox_channel: grpc.aio.Channel) -> Farm:
    return Farm(sandbox, sandbox_channel)


# ---------------------------------------------------------------------------
# reads and search criteria
# ---------------------------------------------------------------------------
async def test_get_hosts_with_every_criterion(farm: Farm) -> None:
    assert len(await farm.search()) == 21
    assert await farm.search(allocs=["local.desktop"]) == ["ws-asmith.studio.local",
                                                           "ws-jdoe.studio.local"]
    assert await farm.search(substr=["rn01"]) == [f"rn{i:03d}.farm.studio.local"
                                                  for i in range(10, 20)]
    assert await farm.search(regex=[r"^ws-", r"rn00[12]\."]) == [
        "rn001.farm.studio.local", "rn002.farm.studio.local", "ws-asmith.studio.local",
        "ws-jdoe.studio.local"]
    assert await farm.search(hosts=["rn005.farm.studio.local", "RN006.farm.studio.local"]) == [
        "rn005.farm.studio.local"]
    assert await farm.search(states=host_pb2.HardwareStateSeq(
        state=[host_pb2.DOWN, host_pb2.REPAIR])) == ["rn018.farm.studio.local",
                                                     "rn019.farm.studio.local"]
    assert await farm.search(lock_states=host_pb2.LockStateSeq(
        state=[host_pb2.LOCKED, host_pb2.NIMBY_LOCKED])) == ["rn017.farm.studio.local",
                                                             "ws-jdoe.studio.local"]
    rn003 = await farm.host("rn003.farm.studio.local")
    assert await farm.search(ids=[rn003.id], substr=["rn"]) == [rn003.name]
    assert await farm.search(allocs=["local.desktop"], substr=["rn"]) == []  # fields are ANDed


async def test_invalid_regex_is_internal(farm: Farm) -> None:
    err = await rpc_error(farm.hosts.GetHosts(host_pb2.HostGetHostsRequest(
        r=host_pb2.HostSearchCriteria(regex=["(unclosed"]))))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "invalid regular expression" in err.details()


async def test_find_and_get_host(farm: Farm) -> None:
    host = await farm.host("rn001.farm.studio.local")
    assert host.alloc_name == "local.general" and host.cores == 32.0
    assert list(host.tags) == ["general", "linux", "rn001.farm.studio.local"]
    got = (await farm.hosts.GetHost(host_pb2.HostGetHostRequest(id=host.id))).host
    assert got == host
    for call in (farm.hosts.FindHost(host_pb2.HostFindHostRequest(name="nope")),
                 farm.hosts.GetHost(host_pb2.HostGetHostRequest(id=host.name))):
        err = await rpc_error(call)
        assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, NO_ROW)


# ---------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------
async def test_lock_unlock_and_hardware_state(farm: Farm) -> None:
    host = await farm.host("ws-jdoe.studio.local")
    await farm.hosts.Unlock(host_pb2.HostUnlockRequest(host=host))
    assert (await farm.host(host.name)).lock_state == host_pb2.OPEN
    await farm.hosts.Lock(host_pb2.HostLockRequest(host=host_pb2.Host(id=host.id)))
    assert (await farm.host(host.name)).lock_state == host_pb2.LOCKED
    await farm.hosts.SetHardwareState(host_pb2.HostSetHardwareStateRequest(
        host=host, state=host_pb2.DOWN))
    assert host.name in await farm.search(states=host_pb2.HardwareStateSeq(
        state=[host_pb2.DOWN]))
    await farm.hosts.RebootWhenIdle(host_pb2.HostRebootWhenIdleRequest(host=host))
    assert (await farm.host(host.name)).state == host_pb2.REBOOT_WHEN_IDLE
    await farm.hosts.SetThreadMode(host_pb2.HostSetThreadModeRequest(
        host=host, mode=host_pb2.VARIABLE))
    await farm.hosts.SetOs(host_pb2.HostSetOsRequest(host=host, os="rocky9"))
    got = await farm.host(host.name)
    assert (got.thread_mode, got.os) == (host_pb2.VARIABLE, "rocky9")
    err = await rpc_error(farm.hosts.Lock(host_pb2.HostLockRequest(
        host=host_pb2.Host(id="no-such-host"))))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_tags_keep_the_alloc_tag_and_order_by_type(farm: Farm) -> None:
    host = await farm.host("rn002.farm.studio.local")
    await farm.hosts.AddTags(host_pb2.HostAddTagsRequest(
        host=host, tags=["zeta", " alpha ", "", "   ", "linux"]))
    # MANUAL last, no de-dup; Cuebot skips "" but trims after that check, so "   " is added
    # as an empty tag (study §2.2 #15)
    assert list((await farm.host(host.name)).tags) == [
        "general", "linux", host.name, "", "alpha", "linux", "zeta"]
    await farm.hosts.RemoveTags(host_pb2.HostRemoveTagsRequest(
        host=host, tags=["general", "linux", "missing"]))
    await farm.hosts.RenameTag(host_pb2.HostRenameTagRequest(
        host=host, old_tag="general", new_tag="renamed"))
    await farm.hosts.RenameTag(host_pb2.HostRenameTagRequest(
        host=host, old_tag="zeta", new_tag="beta"))
    assert list((await farm.host(host.name)).tags) == ["general", host.name, "", "alpha", "beta"]


async def test_set_allocation(farm: Farm) -> None:
    busy = await farm.host("rn011.farm.studio.local")
    err = await rpc_error(farm.hosts.SetAllocation(host_pb2.HostSetAllocationRequest(
        host=busy, allocation_id=DESKTOP)))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == ("com.imageworks.spcue.EntityModificationError: You cannot move "
                             "hosts with running procs between allocations.\nYou cannot move "
                             "hosts with running procs between allocations.")
    idle = await farm.host("rn001.farm.studio.local")
    await farm.hosts.SetAllocation(host_pb2.HostSetAllocationRequest(
        host=idle, allocation_id=DESKTOP))
    moved = await farm.host(idle.name)
    assert moved.alloc_name == "local.desktop"
    assert list(moved.tags) == ["desktop", "linux", idle.name]
    err = await rpc_error(farm.hosts.SetAllocation(host_pb2.HostSetAllocationRequest(
        host=idle, allocation_id="no-such-alloc")))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_comments(farm: Farm) -> None:
    host = await farm.host("rn002.farm.studio.local")
    assert not host.has_comment
    await farm.hosts.AddComment(host_pb2.HostAddCommentRequest(host=host, new_comment=(
        comment_pb2.Comment(user="it", subject="fan", message="Noisy fan."))))
    got = (await farm.hosts.GetComments(host_pb2.HostGetCommentsRequest(host=host))).comments
    assert [(c.user, c.subject, c.message) for c in got.comments] == [("it", "fan", "Noisy fan.")]
    assert got.comments[0].id and got.comments[0].timestamp > 0
    assert (await farm.host(host.name)).has_comment


async def test_delete_host(farm: Farm) -> None:
    busy = await farm.host("rn012.farm.studio.local")
    err = await rpc_error(farm.hosts.Delete(host_pb2.HostDeleteRequest(host=busy)))
    assert err.code() == grpc.StatusCode.INTERNAL
    idle = await farm.host("rn006.farm.studio.local")      # it has a comment
    await farm.hosts.Delete(host_pb2.HostDeleteRequest(host=idle))
    assert idle.name not in await farm.search()
    assert farm.store.one("SELECT COUNT(*) FROM comment WHERE host_id = ?", (idle.id,))[0] == 0


# ---------------------------------------------------------------------------
# procs
# ---------------------------------------------------------------------------
async def test_procs_of_a_host_and_by_criteria(farm: Farm) -> None:
    host = await farm.host("rn011.farm.studio.local")
    procs = (await farm.hosts.GetProcs(host_pb2.HostGetProcsRequest(host=host))).procs.procs
    assert [(p.name, p.job_name, p.frame_name) for p in procs] == [
        ("rn011.farm.studio.local/4.00/0", "testing-sh010-jdoe_lighting", "0011-render")]
    everything = await farm.proc_search()
    assert [p.name.split("/")[0] for p in everything] == [
        f"rn0{i}.farm.studio.local" for i in (11, 12, 13, 14)]   # by host name
    assert len(await farm.proc_search(jobs=["testing-sh010-jdoe_lighting"], layers=["render"],
                                      shows=["testing"], allocs=["local.general"])) == 4
    assert await farm.proc_search(layers=["comp"]) == []
    assert await farm.proc_search(hosts=["rn013.farm.studio.local"]) == [everything[2]]
    page = await farm.proc_search(first_result=2, max_results=[2])
    assert page == everything[1:3]
    memory = everything[0].reserved_memory
    assert len(await farm.proc_search(memory_range=[
        {"min": memory, "max": memory}])) == 4
    assert await farm.proc_search(duration_range=[{"min": 0, "max": 10}]) == []
    # study §2.2 #9: both are GreaterThan criteria, so both keep procs reserving at least that
    for key in ("memory_greater_than", "memory_less_than"):
        assert len(await farm.proc_search(**{key: [{"value": memory}]})) == 4
        assert await farm.proc_search(**{key: [{"value": memory + 1}]}) == []


async def test_proc_lookups(farm: Farm) -> None:
    proc = (await farm.proc_search(hosts=["rn012.farm.studio.local"]))[0]
    ref = host_pb2.Proc(id=proc.id)
    assert (await farm.procs.GetHost(host_pb2.ProcGetHostRequest(proc=ref))).host.name == \
        "rn012.farm.studio.local"
    assert (await farm.procs.GetFrame(host_pb2.ProcGetFrameRequest(proc=ref))).frame.name == \
        "0012-render"
    assert (await farm.procs.GetLayer(host_pb2.ProcGetLayerRequest(proc=ref))).layer.name == \
        "render"
    job = (await farm.procs.GetJob(host_pb2.ProcGetJobRequest(proc=ref))).job
    assert job.name == "testing-sh010-jdoe_lighting"
    err = await rpc_error(farm.procs.GetHost(host_pb2.ProcGetHostRequest(
        proc=host_pb2.Proc(id="gone"))))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_proc_kill_frees_the_host_and_requeues_the_frame(farm: Farm) -> None:
    proc = (await farm.proc_search(hosts=["rn011.farm.studio.local"]))[0]
    before = (await farm.host("rn011.farm.studio.local")).idle_cores
    await farm.procs.Kill(host_pb2.ProcKillRequest(proc=host_pb2.Proc(id=proc.id)))
    assert await farm.proc_search(hosts=["rn011.farm.studio.local"]) == []
    assert (await farm.host("rn011.farm.studio.local")).idle_cores == before + 4.0
    frame = farm.store.one("SELECT state, retry_count FROM frame WHERE name = '0011-render'")
    assert frame["state"] == "WAITING"
    err = await rpc_error(farm.procs.Kill(host_pb2.ProcKillRequest(proc=proc)))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_unbook_marks_and_kills_only_when_asked(farm: Farm) -> None:
    proc = (await farm.proc_search(hosts=["rn012.farm.studio.local"]))[0]
    await farm.procs.Unbook(host_pb2.ProcUnbookRequest(proc=proc))
    again = (await farm.proc_search(hosts=["rn012.farm.studio.local"]))[0]
    assert again.unbooked and farm.frame_state(proc.name) == "RUNNING"
    reply = await farm.procs.ClearRedirect(host_pb2.ProcClearRedirectRequest(proc=proc))
    assert not reply.value
    assert not (await farm.proc_search(hosts=["rn012.farm.studio.local"]))[0].unbooked
    await farm.procs.Unbook(host_pb2.ProcUnbookRequest(proc=proc, kill=True))
    assert await farm.proc_search(hosts=["rn012.farm.studio.local"]) == []
    assert farm.frame_state(proc.name) == "WAITING"


async def test_unbook_procs_by_criteria(farm: Farm) -> None:
    reply = await farm.procs.UnbookProcs(host_pb2.ProcUnbookProcsRequest(
        r=host_pb2.ProcSearchCriteria(jobs=["testing-sh010-jdoe_lighting"], max_results=[3]),
        kill=True))
    assert reply.num_procs == 3
    left = await farm.proc_search()
    assert [p.name for p in left] == ["rn014.farm.studio.local/4.00/0"]   # newest booking stays
    assert farm.store.one("SELECT COUNT(*) FROM frame WHERE state = 'RUNNING'")[0] == 1


# ---------------------------------------------------------------------------
# owners and deeds
# ---------------------------------------------------------------------------
async def test_owner_lookup(farm: Farm) -> None:
    owner = (await farm.owners.GetOwner(host_pb2.OwnerGetOwnerRequest(name="jdoe"))).owner
    assert (owner.name, owner.show, owner.host_count) == ("jdoe", "testing", 1)
    by_id = (await farm.owners.GetOwner(host_pb2.OwnerGetOwnerRequest(name=owner.id))).owner
    assert by_id == owner
    err = await rpc_error(farm.owners.GetOwner(host_pb2.OwnerGetOwnerRequest(name="nobody")))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, NO_ROW)
    hosts = (await farm.owners.GetHosts(host_pb2.OwnerGetHostsRequest(owner=owner))).hosts
    assert [h.name for h in hosts.hosts] == ["ws-jdoe.studio.local"]
    deeds = (await farm.owners.GetDeeds(host_pb2.OwnerGetDeedsRequest(owner=owner))).deeds
    assert [(d.host, d.owner, d.show) for d in deeds.deeds] == [
        ("ws-jdoe.studio.local", "jdoe", "testing")]


async def test_take_ownership(farm: Farm) -> None:
    owner = (await farm.owners.GetOwner(host_pb2.OwnerGetOwnerRequest(name="jdoe"))).owner
    err = await rpc_error(farm.owners.TakeOwnership(host_pb2.OwnerTakeOwnershipRequest(
        owner=owner, host="rn001.farm.studio.local")))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == ("com.imageworks.spcue.SpcueRuntimeException: Cannot setup deeeds "
                             "on non-NIMBY hosts.\nCannot setup deeeds on non-NIMBY hosts.")
    for bad in (host_pb2.OwnerTakeOwnershipRequest(owner=host_pb2.Owner(name="jdoe"),
                                                   host="ws-asmith.studio.local"),
                host_pb2.OwnerTakeOwnershipRequest(owner=owner, host="no-such-host")):
        err = await rpc_error(farm.owners.TakeOwnership(bad))     # owner by id, host by name
        assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)
    await farm.owners.TakeOwnership(host_pb2.OwnerTakeOwnershipRequest(
        owner=owner, host="ws-asmith.studio.local"))
    asmith = await farm.host("ws-asmith.studio.local")
    assert (await farm.hosts.GetOwner(host_pb2.HostGetOwnerRequest(host=asmith))).owner.id == \
        owner.id
    deed = (await farm.hosts.GetDeed(host_pb2.HostGetDeedRequest(host=asmith))).deed
    assert (deed.host, deed.owner) == ("ws-asmith.studio.local", "jdoe")
    assert (await farm.owners.GetOwner(host_pb2.OwnerGetOwnerRequest(
        name="jdoe"))).owner.host_count == 2
    err = await rpc_error(farm.hosts.GetOwner(host_pb2.HostGetOwnerRequest(
        host=await farm.host("rn001.farm.studio.local"))))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_deed_interface(farm: Farm) -> None:
    deed_id = farm.store.one("SELECT id FROM deed")["id"]
    deed = host_pb2.Deed(id=deed_id)
    owner = (await farm.deeds.GetOwner(host_pb2.DeedGetOwnerRequest(deed=deed))).owner
    assert owner.name == "jdoe"
    err = await rpc_error(farm.deeds.GetHost(host_pb2.DeedGetHostRequest(deed=deed)))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)
    await farm.deeds.Delete(host_pb2.DeedDeleteRequest(deed=deed))
    err = await rpc_error(farm.deeds.GetOwner(host_pb2.DeedGetOwnerRequest(deed=deed)))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)
    await farm.owners.Delete(host_pb2.OwnerDeleteRequest(owner=owner))
    err = await rpc_error(farm.owners.GetOwner(host_pb2.OwnerGetOwnerRequest(name="jdoe")))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_owner_with_deeds_cannot_be_deleted_and_can_change_show(farm: Farm) -> None:
    owner = (await farm.owners.GetOwner(host_pb2.OwnerGetOwnerRequest(name="jdoe"))).owner
    err = await rpc_error(farm.owners.Delete(host_pb2.OwnerDeleteRequest(owner=owner)))
    assert err.code() == grpc.StatusCode.INTERNAL
    await farm.owners.SetShow(host_pb2.OwnerSetShowRequest(owner=owner, show="pipeline_test"))
    assert (await farm.owners.GetOwner(host_pb2.OwnerGetOwnerRequest(
        name="jdoe"))).owner.show == "pipeline_test"
    err = await rpc_error(farm.owners.SetShow(host_pb2.OwnerSetShowRequest(
        owner=owner, show="nope")))
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, EMPTY_RESULT)


async def test_render_partitions_are_empty(farm: Farm) -> None:
    host = await farm.host("ws-jdoe.studio.local")
    reply = await farm.hosts.GetRenderPartitions(host_pb2.HostGetRenderPartitionsRequest(
        host=host))
    assert list(reply.render_partitions.render_partitions) == []
