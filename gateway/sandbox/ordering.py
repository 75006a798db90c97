"""Frame dispatch order: ReorderFrames and StaggerFrames, on a layer, as Cuebot's FrameDao does.

A frame's ``dispatch_order`` (0-based within its layer at launch) decides
which WAITING frame of a layer runs first. Both operations address frames
by their name, ``%04d-<layer>``, so numbers a layer lacks are skipped.

- FIRST: the frames of the range, in range order, take the orders just
  below the layer's lowest (``min - size`` upwards);
- LAST: Cuebot's query numbers frames ``0 .. size`` (the *positions* in the
  range, not its frame numbers) and moves those after the layer's highest
  order. So LAST on ``5-8`` moves frames 1-4 (and a frame 0, if any) to the
  end. The sandbox keeps this upstream bug: a client sees what Cuebot does;
- REVERSE: the first and last frames of the range swap orders, then the
  second and the one before last, and so on;
- stagger ``S`` on a range: the frames take the orders of the range
  interleaved by S (``1-10:2`` is 1,3,5,7,9, then 2,4,…), starting at the
  order of the range's first frame; a layer of one frame is left alone, and
  an unreadable range changes nothing.
"""
from __future__ import annotations

from typing import Any

from . import frameset
from .store import Store

ORDERS = ("FIRST", "LAST", "REVERSE")


def _name(layer: Any, number: int) -> str:
    return f"{number:04d}-{layer['name']}"


def _set_order(store: Store, layer: Any, number: int, order: int) -> None:
    store.run("UPDATE frame SET dispatch_order = ? WHERE job_id = ? AND layer_id = ? AND name = ?",
              (order, layer["job_id"], layer["id"], _name(layer, number)))


def _order_of(store: Store, layer: Any, number: int) -> int | None:
    row = store.one("SELECT dispatch_order FROM frame WHERE layer_id = ? AND name = ?",
                    (layer["id"], _name(layer, number)))
    return row["dispatch_order"] if row else None


def reorder_layer(store: Store, layer: Any, numbers: list[int], order: str) -> None:
    size = len(numbers)
    if order == "FIRST":
        low = store.one("SELECT MIN(dispatch_order) AS o FROM frame WHERE layer_id = ?",
                        (layer["id"],))["o"] or 0
        for i, n in enumerate(numbers):
            _set_order(store, layer, n, low - size + i)
    elif order == "LAST":
        high = store.one("SELECT MAX(dispatch_order) AS o FROM frame WHERE layer_id = ?",
                         (layer["id"],))["o"] or 0
        for i in range(size + 1):  # Cuebot's loop: positions, not the range's numbers
            _set_order(store, layer, i, high + 1 + i)
    else:
        swaps = []
        for i in range(size):
            if i >= size - i - 1:
                break
            a, b = _order_of(store, layer, numbers[i]), _order_of(store, layer, numbers[-1 - i])
            if a is None or b is None:
                continue
            swaps += [(numbers[-1 - i], a), (numbers[i], b)]
        for n, o in swaps:
            _set_order(store, layer, n, o)


def stagger_layer(store: Store, layer: Any, text: str, stagger: int) -> bool:
    """Stagger one layer; False if Cuebot's command would stop here (no such first frame)."""
    if store.one("SELECT COUNT(*) AS n FROM frame WHERE layer_id = ?", (layer["id"],))["n"] == 1:
        return True
    try:
        interleaved = frameset.parse(f"{text}:{stagger}")
        numbers = frameset.parse(text)
    except frameset.FrameSetError:
        return True  # Cuebot logs "failed to stagger layer" and goes on
    first = _order_of(store, layer, numbers[0])
    if first is None:
        return False
    position = {n: i for i, n in enumerate(interleaved)}
    for n in numbers:
        _set_order(store, layer, n, position.get(n, -1) + first)
    return True
