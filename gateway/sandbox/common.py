"""Look-ups several servants share, failing the way Cuebot fails."""
from __future__ import annotations

import math
import re
import sqlite3
from typing import Any

from .servant import missing, not_found
from .store import Store

Row = sqlite3.Row

NAME_OK = re.compile(r"^[\w.-]{3,}$")


def whole_core_units(value: float) -> int:
    """Cuebot's 'whole cores' setters: floor(x + 0.005) cores, in units; -1 stays -1."""
    if value < 0:
        return -1
    return int(math.floor(value + 0.005)) * 100


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
