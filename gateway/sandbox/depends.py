"""Creating depends of every DependType, as a launch spec's ``<depends>`` ask for them.

A depend holds its "er" side (one frame, every frame of a layer, or of a
job) until its "on" side is done (a frame SUCCEEDED or EATEN; a layer or job
with every frame so). Holding means each held frame's ``depend_count`` is
one higher and a WAITING frame is DEPEND; ``Farm.satisfy`` undoes exactly
that. A depend whose "on" side is already done is created inactive.

Rows fill every id column of both sides down to the named level (a
FRAME_ON_FRAME names the frames' layers and jobs too), which is what the
Depend messages show and what ``Farm.satisfy`` and ``Farm.frame_succeeded``
expect.

FRAME_BY_FRAME and PREVIOUS_FRAME are made as Cuebot makes them: a row for
the layer pair that holds nothing itself, plus one FRAME_ON_FRAME per frame
of the "er" layer. Frame by frame pairs each frame with the "on" layer's
frame of the highest number not above it (so chunked layers line up with
the chunk holding that number); previous frame pairs it with the highest
number below it. A frame with no partner is not held.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .store import new_id, now

if TYPE_CHECKING:
    from .farm import Farm

DONE = "('SUCCEEDED', 'EATEN')"
CONTAINERS = ("FRAME_BY_FRAME", "PREVIOUS_FRAME")


class DependError(Exception):
    """The depend cannot be made (missing object, a layer on itself…)."""


@dataclass(frozen=True)
class Side:
    """One side of a depend: a job, a layer of it, or a frame of that (ids)."""

    job: str
    layer: str | None = None
    frame: str | None = None


def levels(kind: str) -> tuple[str, str]:
    """('LAYER', 'FRAME') for LAYER_ON_FRAME; FRAME_BY_FRAME etc. are layer pairs."""
    if kind in CONTAINERS:
        return "LAYER", "LAYER"
    if kind == "LAYER_ON_SIM_FRAME":
        return "LAYER", "FRAME"
    er, on = kind.split("_ON_")
    return er, on


def _on_done(farm: Farm, on: Side) -> bool:
    s = farm.store
    if on.frame:
        return s.one(f"SELECT 1 FROM frame WHERE id = ? AND state IN {DONE}",
                     (on.frame,)) is not None
    if on.layer:
        where, key = "layer_id = ?", on.layer
    else:
        if s.one("SELECT 1 FROM job WHERE id = ? AND state = 'FINISHED'", (on.job,)):
            return True
        where, key = "job_id = ?", on.job
    return s.one(f"SELECT 1 FROM frame WHERE {where} AND state NOT IN {DONE} LIMIT 1",
                 (key,)) is None


def _hold(farm: Farm, er: Side) -> None:
    if er.frame:
        where, key = "id = ?", er.frame
    elif er.layer:
        where, key = "layer_id = ?", er.layer
    else:
        where, key = "job_id = ?", er.job
    farm.store.run(f"UPDATE frame SET depend_count = depend_count + 1, updated_time = ?, "
                   f"state = CASE WHEN state IN ('WAITING', 'DEPEND') THEN 'DEPEND' "
                   f"ELSE state END WHERE {where}", (now(), key))


def _insert(farm: Farm, kind: str, er: Side, on: Side, any_frame: bool, holds: bool) -> str:
    s = farm.store
    active = not _on_done(farm, on) if holds else True
    dep_id = new_id()
    s.insert("depend", id=dep_id, type=kind,
             target="INTERNAL" if er.job == on.job else "EXTERNAL",
             any_frame=int(any_frame), active=int(active),
             er_job_id=er.job, er_layer_id=er.layer, er_frame_id=er.frame,
             on_job_id=on.job, on_layer_id=on.layer, on_frame_id=on.frame)
    if holds and active:
        _hold(farm, er)
    return dep_id


def create(farm: Farm, kind: str, er: Side, on: Side, *, any_frame: bool = False) -> str:
    """A depend of type ``kind`` (a DependType name); its id.

    ``er`` and ``on`` must be filled to the levels ``kind`` names (see
    :func:`levels`).
    """
    er_level, on_level = levels(kind)
    for side, level, label in ((er, er_level, "depend-er"), (on, on_level, "depend-on")):
        if (level in ("LAYER", "FRAME") and not side.layer) or (level == "FRAME"
                                                               and not side.frame):
            raise DependError(f"a {kind} depend needs a {label} {level.lower()}")
    er = Side(er.job, er.layer if er_level != "JOB" else None,
              er.frame if er_level == "FRAME" else None)
    on = Side(on.job, on.layer if on_level != "JOB" else None,
              on.frame if on_level == "FRAME" else None)
    if er == on:
        raise DependError(f"Cannot make the {er_level.lower()} depend on itself.")
    if er_level == on_level == "LAYER" and er.layer == on.layer:
        raise DependError("Cannot make a layer depend on itself.")
    if kind not in CONTAINERS:
        return _insert(farm, kind, er, on, any_frame, holds=True)
    parent = _insert(farm, kind, er, on, any_frame, holds=False)
    compare = "<=" if kind == "FRAME_BY_FRAME" else "<"
    for frame in farm.store.all("SELECT id, number FROM frame WHERE layer_id = ? "
                                "ORDER BY dispatch_order", (er.layer,)):
        partner = farm.store.one(
            f"SELECT id FROM frame WHERE layer_id = ? AND number {compare} ? "
            f"ORDER BY number DESC LIMIT 1", (on.layer, frame["number"]))
        if partner is not None:
            _insert(farm, "FRAME_ON_FRAME", Side(er.job, er.layer, frame["id"]),
                    Side(on.job, on.layer, partner["id"]), False, holds=True)
    return parent
