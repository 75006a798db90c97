"""Cuebot's search criteria (JobSearchCriteria, FrameSearchCriteria) as SQL.

Clients filter with these messages, and CueWeb and pycue rely on Cuebot's
exact reading of them, quirks included, so the sandbox translates them field
by field the way Cuebot's criteria classes build their WHERE clause:

- different fields are ANDed, the values of one repeated field ORed; exact
  matches are case-sensitive;
- ``substr`` is SQL ``LIKE '%x%'`` (``_`` and ``%`` stay wildcards, and,
  unlike SQLite's own LIKE, it is case-sensitive as in PostgreSQL); ``regex``
  is an unanchored, case-sensitive search in PostgreSQL's dialect (``\\y``,
  ``[[:digit:]]``…), and an invalid pattern is INTERNAL with PostgreSQL's words;
- jobs: unless ``include_finished``, only PENDING jobs;
- frames: ``frame_range`` ``N`` / ``A-B`` compare numbers, anything else is a
  frame set matched number by number (over 1000 frames, or unparsable, and
  Cuebot's query breaks: INTERNAL); ``memory_range`` (GB of max RSS) and
  ``duration_range`` (hours, WAITING frames excluded) take ``A-B`` or ``A``
  (at least A); ``change_date`` keeps frames updated after it;
  ``max_results``, ``offset`` and ``include_finished`` are ignored;
- paging: frames are numbered by frame dispatch order, then layer dispatch
  order, and rows ``(page-1)*limit < n <= page*limit`` are returned with
  ``page`` <= 0 read as 1, while ``limit`` is *not* defaulted: a limit of 0
  (or no criteria at all) lists nothing, and large limits are not capped.
  Bulk mutations use the same filters without paging.

The HostSearchCriteria translation can reuse :class:`Where`.
"""
from __future__ import annotations

import re
import sqlite3
from typing import Any, Iterable, Sequence

from . import frameset
from .servant import CueError, internal
from .store import Store

Row = sqlite3.Row

GB_KB = 1024 * 1024                 # memory is in KB; criteria speak GB
FRAME_SET_MAX = 1000                # Cuebot's limit on an expanded frame set
_SINGLE = re.compile(r"^([0-9]+)$")
_RANGE = re.compile(r"^([0-9]+)-([0-9]+)$")
_FLOAT_RANGE = re.compile(r"^([0-9.]+)-([0-9.]+)$")
_JAVA_FLOAT = re.compile(r"^\s*[+-]?(NaN|Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)[fFdD]?\s*$")

BAD_GRAMMAR = "org.springframework.jdbc.BadSqlGrammarException"
DATA_INTEGRITY = "org.springframework.dao.DataIntegrityViolationException"


def broken_query(near: str = "AND") -> CueError:
    """What Cuebot answers when a criterion leaves a hole in its SQL (INTERNAL)."""
    return internal(BAD_GRAMMAR, "PreparedStatementCallback; bad SQL grammar; nested exception "
                                 f"is org.postgresql.util.PSQLException: ERROR: syntax error at "
                                 f"or near \"{near}\"")


# ---------------------------------------------------------------------------
# SQL functions PostgreSQL has and SQLite lacks
# ---------------------------------------------------------------------------
def _like_regex(pattern: str) -> re.Pattern[str]:
    """PostgreSQL LIKE (backslash escapes) as an anchored, case-sensitive regex."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.S)


def _cue_like(pattern: str | None, value: str | None) -> int:
    if pattern is None or value is None:
        return 0
    return int(_like_regex(pattern).fullmatch(value) is not None)


# PostgreSQL's POSIX character classes, as Python character-class contents
_PG_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r"\s", "blank": r" \t", "xdigit": "0-9A-Fa-f", "word": r"\w",
    "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}
# PostgreSQL (ARE) escapes Python spells differently
_PG_ESCAPES = {"y": r"\b", "Y": r"\B", "m": r"(?<!\w)(?=\w)", "M": r"(?<=\w)(?!\w)",
               "e": r"\x1b"}
_SAME_ESCAPES = set("dDsSwWAZntrfvxu0123456789") | set(r"\.^$|?*+()[]{}-/ ,'\"#&~@%!:;<=>_`")


class PgRegexError(ValueError):
    """A pattern PostgreSQL refuses; the message is PostgreSQL's."""


def pg_regex(pattern: str) -> str:
    """A PostgreSQL regular expression (the ``~`` operator's dialect) as a Python one.

    CueGUI sends what a user types into its search boxes, so the dialect
    matters: ``\\y`` (word boundary), ``\\m``/``\\M`` (word start/end) and the
    POSIX classes ``[[:digit:]]`` etc. work as in PostgreSQL.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise PgRegexError("invalid escape \\ sequence")
            e = pattern[i + 1]
            if e in _PG_ESCAPES:
                out.append(_PG_ESCAPES[e])
            elif e in _SAME_ESCAPES:
                out.append(c + e)
            else:
                raise PgRegexError("invalid escape \\ sequence")
            i += 2
        elif c == "[":
            j = i + 1
            part = ["["]
            if j < n and pattern[j] == "^":
                part.append("^")
                j += 1
            if j < n and pattern[j] == "]":   # a leading ] is a literal
                part.append(r"\]")
                j += 1
            while j < n and pattern[j] != "]":
                if pattern.startswith("[:", j):
                    end = pattern.find(":]", j + 2)
                    if end < 0:
                        raise PgRegexError("brackets [] not balanced")
                    name = pattern[j + 2:end]
                    if name not in _PG_CLASSES:
                        raise PgRegexError("invalid character class")
                    part.append(_PG_CLASSES[name])
                    j = end + 2
                elif pattern[j] == "\\" and j + 1 < n:
                    part.append(pattern[j:j + 2])
                    j += 2
                elif pattern[j] == "[":
                    part.append(r"\[")
                    j += 1
                else:
                    part.append(pattern[j])
                    j += 1
            if j >= n:
                raise PgRegexError("brackets [] not balanced")
            out.append("".join(part) + "]")
            i = j + 1
        else:
            out.append(c)
            i += 1
    translated = "".join(out)
    try:
        re.compile(translated)
    except re.error as e:
        raise PgRegexError(_pg_reason(e.msg)) from None
    return translated


def _pg_reason(python_message: str) -> str:
    """Python's complaint about a pattern in PostgreSQL's words."""
    if "parenthes" in python_message or "subpattern" in python_message:
        return "parentheses () not balanced"
    if "character set" in python_message:
        return "brackets [] not balanced"
    if "repeat" in python_message:
        return ("invalid repetition count(s)" if "greater than" in python_message
                else "quantifier operand invalid")
    if "escape" in python_message:
        return "invalid escape \\ sequence"
    return python_message


_PG_CACHE: dict[str, "re.Pattern[str]"] = {}


def _cue_regexp(pattern: str | None, value: str | None) -> int:
    if pattern is None or value is None:
        return 0
    compiled = _PG_CACHE.get(pattern)
    if compiled is None:
        compiled = _PG_CACHE[pattern] = re.compile(pg_regex(pattern))
    return int(compiled.search(value) is not None)


def install_functions(db: sqlite3.Connection) -> None:
    """Register cue_like() and cue_regexp() on the connection (cheap; idempotent)."""
    db.create_function("cue_like", 2, _cue_like, deterministic=True)
    db.create_function("cue_regexp", 2, _cue_regexp, deterministic=True)


def check_regex(pattern: str) -> None:
    """An invalid regex fails the query in PostgreSQL: INTERNAL, with its message."""
    try:
        pg_regex(pattern)
    except PgRegexError as e:
        text = f"ERROR: invalid regular expression: {e}"
        raise internal(DATA_INTEGRITY, f"PreparedStatementCallback; {text}; nested exception "
                                       f"is org.postgresql.util.PSQLException: {text}") from None


# ---------------------------------------------------------------------------
class Where:
    """ANDed clauses with their arguments, built the way Cuebot's Criteria builds them."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def add(self, clause: str, *args: Any) -> None:
        self.clauses.append(clause)
        self.args.extend(args)

    def any_equal(self, column: str, values: Iterable[Any]) -> None:
        values = list(values)
        if values:
            self.add("(" + " OR ".join(f"{column} = ?" for _ in values) + ")", *values)

    def any_like(self, column: str, values: Iterable[str]) -> None:
        values = list(dict.fromkeys(values))
        if values:
            self.add("(" + " OR ".join(f"cue_like(?, {column})" for _ in values) + ")",
                     *(f"%{v}%" for v in values))

    def any_regex(self, column: str, values: Iterable[str]) -> None:
        values = list(dict.fromkeys(values))
        for v in values:
            check_regex(v)
        if values:
            self.add("(" + " OR ".join(f"cue_regexp(?, {column})" for _ in values) + ")",
                     *values)

    def sql(self, prefix: str = " AND ") -> str:
        return prefix + " AND ".join(self.clauses) if self.clauses else ""


# ---------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------
def job_where(r: Any) -> Where:
    """JobSearchCriteria on ``job j JOIN show s``."""
    w = Where()
    w.any_equal("j.id", r.ids)
    w.any_equal("j.name", r.jobs)
    w.any_like("j.name", r.substr)
    w.any_regex("j.name", r.regex)
    w.any_equal("j.shot", r.shots)
    w.any_equal("s.name", r.shows)
    w.any_equal("j.user", r.users)
    if not r.include_finished:
        w.add("j.state = 'PENDING'")
    return w


def find_jobs(store: Store, r: Any, columns: str = "j.*") -> list[Row]:
    """Jobs matching ``r``, by name (Cuebot's order)."""
    install_functions(store.db)
    w = job_where(r)
    return store.all(f"SELECT {columns} FROM job j JOIN show s ON s.id = j.show_id "
                     f"WHERE 1 = 1{w.sql()} ORDER BY j.name", w.args)


# ---------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------
def _java_float(text: str) -> float:
    """Java's Float.valueOf, near enough: a trailing f/d is allowed, junk is not."""
    if not _JAVA_FLOAT.match(text):
        raise ValueError(text)
    return float(text.strip().rstrip("fFdD"))


def _frame_set_clause(w: Where, text: str) -> None:
    if m := _SINGLE.match(text):
        w.add("f.number = ?", int(m.group(1)))
    elif m := _RANGE.match(text):
        w.add("(f.number >= ? AND f.number <= ?)", int(m.group(1)), int(m.group(2)))
    else:
        try:
            numbers = frameset.parse(text)
        except frameset.FrameSetError as e:
            raise internal("java.lang.IllegalArgumentException", str(e)) from None
        if not numbers or len(numbers) > FRAME_SET_MAX:
            raise broken_query()
        w.add("f.number IN (" + ",".join("?" * len(numbers)) + ")", *numbers)


def _float_range(text: str) -> tuple[float, float | None]:
    """``A-B`` or ``A``; anything unreadable leaves Cuebot's query broken (INTERNAL)."""
    try:
        if m := _FLOAT_RANGE.match(text):
            return _java_float(m.group(1)), _java_float(m.group(2))
        return _java_float(text), None
    except ValueError:
        raise broken_query() from None


def frame_where(r: Any) -> Where:
    """FrameSearchCriteria on ``frame f JOIN layer l``."""
    w = Where()
    w.any_equal("f.id", r.ids)
    w.any_equal("f.name", r.frames)
    w.any_equal("l.name", r.layers)
    from opencue_proto import job_pb2

    w.any_equal("f.state", dict.fromkeys(job_pb2.FrameState.Name(s)
                                         for s in r.states.frame_states))
    if r.frame_range:
        _frame_set_clause(w, r.frame_range)
    if r.memory_range:
        lo, hi = _float_range(r.memory_range)
        if hi is None:
            w.add("f.max_rss >= ?", GB_KB * lo)
        else:
            w.add("(f.max_rss >= ? AND f.max_rss <= ?)", GB_KB * lo, GB_KB * hi)
    if r.duration_range:
        lo, hi = _float_range(r.duration_range)
        duration = ("(CASE WHEN f.start_time = 0 THEN 0 WHEN f.stop_time = 0 OR f.stop_time < "
                    "f.start_time THEN CAST(strftime('%s','now') AS INTEGER) - f.start_time "
                    "ELSE f.stop_time - f.start_time END)")
        if hi is None:
            w.add(f"(f.state != 'WAITING' AND {duration} >= ?)", int(3600 * lo))
        else:
            w.add(f"(f.state != 'WAITING' AND {duration} BETWEEN ? AND ?)",
                  int(3600 * lo), int(3600 * hi))
    if r.change_date > 0:
        w.add("f.updated_time > ?", r.change_date)
    return w


def page_bounds(r: Any) -> tuple[int, int]:
    """Row numbers (exclusive low, inclusive high) a listing returns: Cuebot's arithmetic."""
    page = r.page if r.page > 0 else 1
    return (page - 1) * r.limit, page * r.limit


FRAME_ORDER = "f.dispatch_order, l.dispatch_order, f.number, f.id"


def find_frames(store: Store, scope: str, scope_args: Sequence[Any], r: Any, *,
                paged: bool = True, limit: int | None = None) -> list[Row]:
    """Frames in ``scope`` (a clause on f/l/j, e.g. ``f.job_id = ?``) matching ``r``.

    ``paged`` applies the page/limit arithmetic of a listing; bulk mutations
    pass False. ``limit`` caps the rows (GetUpdatedFrames' 100).
    """
    w = frame_where(r)
    sql = (f"SELECT f.* FROM frame f JOIN layer l ON l.id = f.layer_id JOIN job j "
           f"ON j.id = f.job_id WHERE {scope}{w.sql()} ORDER BY {FRAME_ORDER}")
    args: list[Any] = [*scope_args, *w.args]
    if paged:
        lo, hi = page_bounds(r)
        if hi <= lo:
            return []
        sql += " LIMIT ? OFFSET ?"
        args += [hi - lo, lo]
    elif limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return store.all(sql, args)
