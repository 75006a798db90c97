"""CueInterface/GetSystemStats: Cuebot's queue and dispatch counters, as the sandbox runs them.

Cuebot answers with live numbers from its thread pools (dispatch, manage,
report, booking) and its dispatch counters. The sandbox does the same work
synchronously, so its queues never wait and have no busy threads; what it
counts since it started:

- ``dispatch_executed``: dispatcher passes; ``booking_executed``: hosts it
  tried to book; ``booked_procs``: frames it started;
- ``report_executed``: renders that ended (RQD's frame-complete reports);
- ``manage_executed``: the operations Cuebot queues (kills, eats, retries,
  depend changes, reorders, launches…) the sandbox carried out;
- ``unbooked_procs``: procs unbooked or redirected; ``cleared_procs``: procs
  killed and cleared;
- remaining capacities: Cuebot's default queue sizes (2000; 5000 for
  reports), all free. ``req_for_*`` stay 0, as Cuebot leaves them.
"""
from __future__ import annotations

from dataclasses import dataclass

from opencue_proto import cue_pb2

QUEUE_CAPACITY = 2000
REPORT_QUEUE_CAPACITY = 5000

# RPCs Cuebot hands to its manage queue
QUEUED = frozenset(
    [f"job.JobInterface/{m}" for m in ("Kill", "EatFrames", "KillFrames", "RetryFrames",
                                       "MarkDoneFrames", "DropDepends", "ReorderFrames",
                                       "StaggerFrames", "ShutdownIfCompleted")]
    + [f"job.LayerInterface/{m}" for m in ("EatFrames", "KillFrames", "RetryFrames",
                                           "MarkdoneFrames", "DropDepends", "ReorderFrames",
                                           "StaggerFrames")]
    + [f"job.FrameInterface/{m}" for m in ("Eat", "Kill", "Retry", "DropDepends")]
    + ["depend.DependInterface/Satisfy", "facility.AllocationInterface/ReparentHosts",
       "filter.FilterInterface/Delete"])


@dataclass
class Counters:
    dispatch_executed: int = 0
    booking_executed: int = 0
    booked_procs: int = 0
    report_executed: int = 0
    manage_executed: int = 0
    unbooked_procs: int = 0
    cleared_procs: int = 0

    def message(self) -> cue_pb2.SystemStats:
        return cue_pb2.SystemStats(
            dispatch_remaining_capacity=QUEUE_CAPACITY, dispatch_executed=self.dispatch_executed,
            manage_remaining_capacity=QUEUE_CAPACITY, manage_executed=self.manage_executed,
            report_remaining_capacity=REPORT_QUEUE_CAPACITY,
            report_executed=self.report_executed,
            booking_remaining_capacity=QUEUE_CAPACITY, booking_executed=self.booking_executed,
            booked_procs=self.booked_procs, unbooked_procs=self.unbooked_procs,
            cleared_procs=self.cleared_procs)
