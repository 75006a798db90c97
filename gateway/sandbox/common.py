"""Look-ups several servants share, failing the way Cuebot fails."""
from __future__ import annotations

import re
import sqlite3
from typing import Any

from .servant import missing, not_found
from .store import Store

Row = sqlite3.Row

NAME_OK = re.compile(r"^[\w.-]{3,}$")


def whole_core_units(value: float) -> int:
    """Cuebot's 'whole cores' setters (Convert.coresToWholeCoreUnits), in units.

    Exactly -1 stays -1 ("unlimited"); anything else is ``(x*100 + 0.5) / 100``
    truncated toward zero, so 2.6 -> 200 and -5 -> -400 (Cuebot stores that).
    """
    if value == -1:
        return -1
    return int((value * 100 + 0.5) / 100) * 100


def cue_core_units(value: float) -> int:
    """Convert.coresToCoreUnits: cores x 100 rounded to hundredths, then truncated."""
    from decimal import ROUND_HALF_UP, Decimal

    return int(Decimal(value * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def core_units(value: float) -> int:
    """Cores given as a float (e.g. a subscription size) -> units."""
    return int(round(value * 100))


def row_by_id_or_name(store: Store, table: str, msg: Any) -> Row | None:
    """A row for a message carrying ``id`` and/or ``name`` (id wins, as in Cuebot)."""
    key = getattr(msg, "id", "")
    if key:
        return store.one(f"SELECT * FROM {table} WHERE id = ?", (key,))
    name = getattr(msg, "name", "")
    if name:
        rows = store.all(f"SELECT * FROM {table} WHERE name = ?", (name,))
        if len(rows) == 1:
            return rows[0]
    return None


def show_of(store: Store, show: Any) -> Row:
    """The show a request names (Show message: id, else name); missing -> INTERNAL."""
    row = row_by_id_or_name(store, "show", show)
    if row is None:
        raise missing()
    return row


def find_one(store: Store, sql: str, args: tuple = (), *, lookup: bool = True) -> Row:
    """Exactly one row: NOT_FOUND for a lookup RPC, INTERNAL otherwise (Cuebot's rule)."""
    rows = store.all(sql, args)
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise not_found() if lookup else missing()
    from .servant import too_many

    raise too_many(len(rows))


# ---------------------------------------------------------------------------
# job, layer, frame, group and depend look-ups of the job.* servants
# ---------------------------------------------------------------------------
def job_of(store: Store, msg: Any) -> Row:
    """The job a request's Job names, by id; missing -> NOT_FOUND ``Job not found``."""
    from .servant import job_not_found

    row = store.one("SELECT * FROM job WHERE id = ?", (msg.id,)) if msg.id else None
    if row is None:
        raise job_not_found()
    return row


def by_id(store: Store, table: str, key: str) -> Row:
    """A row a non-lookup RPC names by id; missing -> INTERNAL (Cuebot's rule)."""
    row = store.one(f"SELECT * FROM {table} WHERE id = ?", (key,)) if key else None
    if row is None:
        raise missing()
    return row


def depend_error(e: Exception) -> Exception:
    """A DependError as the INTERNAL Cuebot's interceptor makes of its exception."""
    from .servant import internal

    return internal(getattr(e, "exception", "java.lang.RuntimeException"), str(e))


def cue_frame_set(text: str) -> list[int]:
    """A frame range a Reorder/Stagger call names; unreadable -> INTERNAL as Cuebot's FrameSet."""
    from . import frameset
    from .servant import illegal

    try:
        return frameset.parse(text)
    except frameset.FrameSetError as e:
        raise illegal(str(e)) from None
