"""Depends of every DependType, made and satisfied the way Cuebot's DependManager does it.

A depend holds its "er" side (one frame, every frame of a layer, or of a
job) until its "on" side is done. Holding means each held frame's
``depend_count`` is one higher, and a frame that is WAITING, SUCCEEDED,
DEAD or CHECKPOINT becomes DEPEND (Cuebot's frame trigger); when the count
drops back to 0 a DEPEND frame is WAITING again. ``Farm.satisfy`` undoes a
hold.

Creation, as Cuebot's ``DependManagerService.createDepend``:

- a depend on a *job* that is already complete (nothing waiting, running,
  dead or depending) is refused: ``The job you are depending on is already
  complete.``; a depend on a complete layer or a SUCCEEDED/EATEN frame is
  made inactive (it holds nothing);
- each type refuses its own self-reference with Cuebot's words (``A job
  cannot depend on itself.``…), except a plain FRAME_ON_FRAME, which Cuebot
  lets a frame make on itself;
- an active depend that exists already (same type and sides) is a
  duplicate: INTERNAL, as Cuebot's unique signature index answers;
- FRAME_BY_FRAME is a container row (``composite``, never satisfied itself,
  always listed active) plus one FRAME_ON_FRAME child per depend-er frame,
  pointing at it with ``parent_id``. Pairs follow Cuebot: equal chunk sizes
  pair equal frame numbers (a frame the other layer lacks is not held), a
  larger depend-on chunk pairs the chunk holding the number, a smaller one
  the chunks covering the depend-er chunk. When either layer is a single
  chunk of size > 1 the depend is made LAYER_ON_LAYER instead. A duplicate
  FRAME_BY_FRAME answers the existing one;
- PREVIOUS_FRAME is a container too: frame ``i`` of the depend-er range on
  frame ``i-1`` of the depend-on range (frames that are not chunk starts are
  skipped), and, like Cuebot, satisfying the container does nothing;
- LAYER_ON_SIM_FRAME leaves no row of its own: one FRAME_ON_FRAME per
  depend-er frame on the sim frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import frameset
from .store import new_id, now

if TYPE_CHECKING:
    from .farm import Farm

DEPEND_EXCEPTION = "com.imageworks.spcue.depend.DependException"
DUPLICATE = "org.springframework.dao.DuplicateKeyException"
CONTAINERS = ("FRAME_BY_FRAME", "PREVIOUS_FRAME")
# states Cuebot's frame trigger turns into DEPEND while a frame's depend count is above 0
HELD = "('WAITING', 'SUCCEEDED', 'DEAD', 'CHECKPOINT', 'DEPEND')"
# what a job, layer or frame still has to do before it counts as complete
JOB_LEFT = "('WAITING', 'RUNNING', 'DEAD', 'DEPEND', 'CHECKPOINT', 'SETUP')"
LAYER_LEFT = "('WAITING', 'RUNNING', 'DEAD', 'DEPEND', 'SETUP')"

# which depends a finished frame, layer or job satisfies (Cuebot's getWhatDependsOn)
ON_JOB_TYPES = ("JOB_ON_JOB", "LAYER_ON_JOB", "FRAME_ON_JOB")
ON_LAYER_TYPES = ("JOB_ON_LAYER", "LAYER_ON_LAYER", "FRAME_ON_LAYER")
ON_FRAME_TYPES = ("FRAME_ON_FRAME", "LAYER_ON_FRAME", "JOB_ON_FRAME")


class DependError(Exception):
    """Cuebot's DependException (or another failure of creation): INTERNAL for a client."""

    def __init__(self, message: str, exception: str = DEPEND_EXCEPTION) -> None:
        super().__init__(message)
        self.exception = exception


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


def sql_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# ---------------------------------------------------------------------------
# holding and releasing frames
# ---------------------------------------------------------------------------
def er_where(dep: Any) -> tuple[str, str] | None:
    """The frames a depend row holds (a WHERE clause on frame and its key); None: nothing."""
    kind = dep["type"]
    if kind in CONTAINERS:
        return None
    er, _ = levels(kind)
    if er == "FRAME":
        return "id = ?", dep["er_frame_id"]
    if er == "LAYER":
        return "layer_id = ?", dep["er_layer_id"]
    return "job_id = ?", dep["er_job_id"]


def hold(farm: Farm, where: str, key: str) -> None:
    """One more depend on these frames: counts up, and the frames Cuebot holds go DEPEND."""
    farm.store.run(f"UPDATE frame SET depend_count = depend_count + 1, updated_time = ?, "
                   f"state = CASE WHEN state IN {HELD} THEN 'DEPEND' ELSE state END "
                   f"WHERE {where}", (now(), key))


def release(farm: Farm, where: str, key: str) -> None:
    """One depend fewer: counts down; a DEPEND frame reaching 0 is WAITING (eligible now)."""
    t = now()
    farm.store.run(f"UPDATE frame SET state = CASE WHEN depend_count = 1 AND state = 'DEPEND' "
                   f"THEN 'WAITING' ELSE state END, eligible_time = CASE WHEN depend_count = 1 "
                   f"AND state = 'DEPEND' THEN ? ELSE eligible_time END, "
                   f"depend_count = depend_count - 1, updated_time = ? "
                   f"WHERE {where} AND depend_count > 0", (t, t, key))


# ---------------------------------------------------------------------------
# completeness, as Cuebot counts it
# ---------------------------------------------------------------------------
def job_complete(farm: Farm, job_id: str) -> bool:
    return farm.store.one(f"SELECT 1 FROM frame WHERE job_id = ? AND state IN {JOB_LEFT} "
                          f"LIMIT 1", (job_id,)) is None


def layer_complete(farm: Farm, layer_id: str) -> bool:
    return farm.store.one(f"SELECT 1 FROM frame WHERE layer_id = ? AND state IN {LAYER_LEFT} "
                          f"LIMIT 1", (layer_id,)) is None


def frame_complete(farm: Farm, frame_id: str) -> bool:
    return farm.store.one("SELECT 1 FROM frame WHERE id = ? AND state IN ('SUCCEEDED', "
                          "'EATEN')", (frame_id,)) is not None


def _on_complete(farm: Farm, on_level: str, on: Side) -> bool:
    if on_level == "FRAME":
        return frame_complete(farm, on.frame or "")
    if on_level == "LAYER":
        return layer_complete(farm, on.layer or "")
    return job_complete(farm, on.job)


# ---------------------------------------------------------------------------
# creation
# ---------------------------------------------------------------------------
def _name(farm: Farm, table: str, key: str | None) -> str:
    row = farm.store.one(f"SELECT name FROM {table} WHERE id = ?", (key,))
    return row["name"] if row else ""


def _frame_layer(farm: Farm, frame_id: str | None) -> str | None:
    row = farm.store.one("SELECT layer_id FROM frame WHERE id = ?", (frame_id,))
    return row["layer_id"] if row else None


def _check_self(farm: Farm, kind: str, er: Side, on: Side) -> None:
    """Each depend type's own refusal of a self-reference, worded as Cuebot words it."""
    same_job = er.job == on.job
    message = None
    if kind == "JOB_ON_JOB" and same_job:
        message = "A job cannot depend on itself."
    elif kind == "JOB_ON_LAYER" and same_job:
        message = "A job cannot depend on one of its own layers."
    elif kind == "JOB_ON_FRAME" and same_job:
        message = "A job cannot depend on one of its own frames."
    elif kind == "LAYER_ON_JOB" and same_job:
        message = "A layer cannot depend on its own job."
    elif kind in ("LAYER_ON_LAYER", "FRAME_BY_FRAME") and er.layer == on.layer:
        message = f"Cannot make the layer {_name(farm, 'layer', er.layer)} depend on itself."
    elif kind == "LAYER_ON_SIM_FRAME" and er.layer == _frame_layer(farm, on.frame):
        message = f"Cannot make the layer {_name(farm, 'layer', er.layer)} depend on itself."
    elif kind == "LAYER_ON_FRAME" and er.layer == _frame_layer(farm, on.frame):
        message = "A layer cannot depend on one of its own frames."
    elif kind == "FRAME_ON_JOB" and same_job:
        message = "A frame cannot depend on its own job."
    elif kind == "FRAME_ON_LAYER" and _frame_layer(farm, er.frame) == on.layer:
        message = (f"The frame {_name(farm, 'frame', er.frame)} cannot depend  on its own "
                   f"layer.")
    if message:
        raise DependError(message)


def _signature(kind: str, er: Side, on: Side) -> str:
    return "|".join((kind, er.job, er.layer or "", er.frame or "", on.job, on.layer or "",
                     on.frame or ""))


def _insert(farm: Farm, kind: str, er: Side, on: Side, *, active: bool, any_frame: bool = False,
            parent: str | None = None, composite: bool = False) -> str:
    s = farm.store
    signature = _signature(kind, er, on)
    if s.one("SELECT 1 FROM depend WHERE signature = ?", (signature,)):
        raise DependError('ERROR: duplicate key value violates unique constraint '
                          '"i_depend_signature"', DUPLICATE)
    dep_id = new_id()
    s.insert("depend", id=dep_id, type=kind,
             target="INTERNAL" if er.job == on.job else "EXTERNAL",
             any_frame=int(any_frame), active=int(active), er_job_id=er.job,
             er_layer_id=er.layer, er_frame_id=er.frame, on_job_id=on.job,
             on_layer_id=on.layer, on_frame_id=on.frame, parent_id=parent,
             composite=int(composite), signature=signature)
    if active and not composite:
        dep = s.one("SELECT * FROM depend WHERE id = ?", (dep_id,))
        where = er_where(dep)
        if where is not None:
            hold(farm, *where)
    return dep_id


def _simple(farm: Farm, kind: str, er: Side, on: Side, any_frame: bool = False,
            parent: str | None = None) -> str:
    """A depend that holds frames directly: refused, inactive or active by its on side."""
    _, on_level = levels(kind)
    complete = _on_complete(farm, on_level, on)
    if complete and on_level == "JOB":
        raise DependError("The job you are depending on is already complete.")
    return _insert(farm, kind, er, on, active=not complete, any_frame=any_frame, parent=parent)


def _frames(farm: Farm, layer_id: str) -> dict[int, str]:
    """number -> frame id of a layer."""
    return {r["number"]: r["id"] for r in farm.store.all(
        "SELECT id, number FROM frame WHERE layer_id = ?", (layer_id,))}


def _layer(farm: Farm, layer_id: str) -> Any:
    return farm.store.one("SELECT * FROM layer WHERE id = ?", (layer_id,))


def _normalized(layer: Any) -> list[int]:
    """A layer's frame numbers, one per chunk (Cuebot's normalizeFrameRange)."""
    return frameset.chunk_starts(frameset.parse(layer["range"]), layer["chunk_size"])


def _find_chunk(numbers: list[int], n: int) -> int:
    """The depend-on chunk holding frame ``n`` (Cuebot's CueUtil.findChunk)."""
    if n in numbers:
        return n
    for i, candidate in enumerate(numbers):
        if candidate > n:
            if i == 0:
                raise DependError(f"Index -1 out of bounds for length {len(numbers)}",
                                  "java.lang.ArrayIndexOutOfBoundsException")
            return numbers[i - 1]
    if not numbers:
        raise DependError(f"unable to find chunk for frame: {n} in the range: []",
                          "java.lang.RuntimeException")
    return numbers[-1]


def _frame_by_frame(farm: Farm, er: Side, on: Side) -> str:
    er_layer, on_layer = _layer(farm, er.layer or ""), _layer(farm, on.layer or "")
    if er.job != on.job and "_tile_" in on_layer["name"]:
        return ""  # Cuebot makes no external depends on tile layers
    er_set, on_set = _normalized(er_layer), _normalized(on_layer)
    if ((len(on_set) == 1 and on_layer["chunk_size"] > 1)
            or (len(er_set) == 1 and er_layer["chunk_size"] > 1)):
        return _simple(farm, "LAYER_ON_LAYER", er, on)
    existing = farm.store.one("SELECT id FROM depend WHERE signature = ?",
                              (_signature("FRAME_BY_FRAME", er, on),))
    if existing is not None:
        return existing["id"]
    parent = _insert(farm, "FRAME_BY_FRAME", er, on, active=True, composite=True)
    er_chunk, on_chunk = er_layer["chunk_size"], on_layer["chunk_size"]
    er_frames, on_frames = _frames(farm, er_layer["id"]), _frames(farm, on_layer["id"])
    for n in er_set:
        partners: list[int] = []
        if on_chunk > er_chunk:
            partners.append(_find_chunk(on_set, n))
        elif on_chunk < er_chunk:
            first = _find_chunk(on_set, n)
            start = on_set.index(first)
            partners += [on_set[i] for i in range(start, start + er_chunk - on_chunk + 1)
                         if i < len(on_set)]
        elif er_set != on_set:
            if n not in on_set:
                continue
            partners.append(n)
        else:
            partners.append(n)
        if n not in er_frames:
            continue
        for m in dict.fromkeys(partners):
            if m in on_frames:
                _simple(farm, "FRAME_ON_FRAME", Side(er.job, er.layer, er_frames[n]),
                        Side(on.job, on.layer, on_frames[m]), parent=parent)
    return parent


def _previous_frame(farm: Farm, er: Side, on: Side) -> str:
    er_layer, on_layer = _layer(farm, er.layer or ""), _layer(farm, on.layer or "")
    parent = _insert(farm, "PREVIOUS_FRAME", er, on, active=True, composite=True)
    er_set, on_set = frameset.parse(er_layer["range"]), frameset.parse(on_layer["range"])
    er_frames, on_frames = _frames(farm, er_layer["id"]), _frames(farm, on_layer["id"])
    for i in range(1, len(er_set)):
        if i - 1 >= len(on_set):
            break
        a, b = er_frames.get(er_set[i]), on_frames.get(on_set[i - 1])
        if a and b:
            _simple(farm, "FRAME_ON_FRAME", Side(er.job, er.layer, a), Side(on.job, on.layer, b),
                    parent=parent)
    return parent


def create(farm: Farm, kind: str, er: Side, on: Side, *, any_frame: bool = False) -> str:
    """A depend of type ``kind`` (a DependType name); the id of the row a client sees.

    ``er`` and ``on`` must be filled to the levels ``kind`` names (see
    :func:`levels`); :class:`DependError` carries Cuebot's refusal.
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
    _check_self(farm, kind, er, on)
    if kind == "FRAME_BY_FRAME":
        return _frame_by_frame(farm, er, on)
    if kind == "PREVIOUS_FRAME":
        return _previous_frame(farm, er, on)
    if kind == "LAYER_ON_SIM_FRAME":
        first = ""
        for frame_id in _frames(farm, er.layer or "").values():
            dep = _simple(farm, "FRAME_ON_FRAME", Side(er.job, er.layer, frame_id), on)
            first = first or dep
        return first
    return _simple(farm, kind, er, on, any_frame=any_frame and kind == "LAYER_ON_LAYER")
