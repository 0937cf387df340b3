"""Where read models live: versioned tables plus the library's tracking, per backend.

Each projection writes into a *generation* of its tables (``rm_<table>_g<N>``); the live
one is recorded in ``cjledger_rm_generations``. Readers use the stable views
``rm_<table>``, which always select from the live generation. A rebuild fills generation
N+1 beside the live one and switches the pointer and the views in one transaction, so a
reader never sees a half-built read model and never needs a new table name.

Rows and the tracking position are written in the same transaction through the
``eventsourcing`` tracking recorders (``_insert_tracking``): the single-row tracking
insert refuses a position that is not past the stored one, so replaying an event that is
already applied rolls the whole transaction back. That is what makes projection
processing exactly-once. The tracking key is ``<projection>@g<N>``, so SQLite's shared
``tracking`` table holds one row per projection generation.

The projections' SQL is the same on both backends. What differs lives here, in the two
store classes: how a table name is qualified (PostgreSQL's schema), the placeholder
(``?`` / ``%s``), how a write transaction starts (SQLite: ``BEGIN IMMEDIATE``), how a
switch keeps the live position still while it compares (SQLite's database lock /
``SELECT ... FOR UPDATE``), PostgreSQL's pipelining of a page's statements, and the lock
that keeps two rebuilds of one read model apart (a lock file / an advisory lock; both die
with the process that holds them).
"""

from __future__ import annotations

import fcntl
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    Tracking,
)
from eventsourcing.postgres import PostgresRecorder, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteRecorder, SQLiteTrackingRecorder
from eventsourcing.utils import retry
from psycopg.rows import tuple_row

from projections.binary_arrays import column_array, register_dumpers

GENERATIONS_TABLE = "cjledger_rm_generations"
FAILURES_TABLE = "cjledger_rm_failures"
PG_TRACKING_TABLE = "cjledger_rm_tracking"
_PLACEHOLDER = re.compile(r"\?")


class RebuildInProgress(RuntimeError):
    """Another process (or thread) is rebuilding the same read model."""


class _NotCaughtUp(Exception):
    pass


class StalePage(Exception):
    """The page was read from a position another runner has moved since: not applied.

    Raised inside the writing transaction, before any row is written, so nothing of the
    page is kept; the runner reads the next page from the committed position instead.
    """


MAX_PARAMETERS = 30_000
"""Bound values per statement: below SQLite's 32,766 and PostgreSQL's 65,535."""

_COLUMN = re.compile(r"(?:^|,)\s*(\w+) (TEXT|INTEGER|BIGINT|DOUBLE PRECISION)\b")


def column_types(columns: str) -> dict[str, str]:
    """Each column of a table's DDL (``"a TEXT NOT NULL, b INTEGER, ..."``) and its type."""
    return {name: kind for name, kind in _COLUMN.findall(columns)}


def tracking_key(projection: str, generation: int) -> str:
    return f"{projection}@g{generation}"


def table_name(base: str, generation: int) -> str:
    return f"rm_{base}_g{generation}"


def view_name(base: str) -> str:
    """The stable name of a read model's table: a view on its live generation."""
    return f"rm_{base}"


class ReadModelStoreMixin:
    """SQL shared by both backends; subclasses say how to name tables and bind values."""

    datastore: Any

    # -- dialect hooks -----------------------------------------------------------------

    @contextmanager
    def write_transaction(self) -> Iterator[Any]:
        """A transaction that will write: committed at the end, rolled back on error."""
        with self.datastore.transaction(commit=True) as c:
            yield c

    def qualify(self, table: str) -> str:
        return table

    def sql(self, statement: str) -> str:
        return statement

    def row_dict(self, row: Any) -> dict[str, Any]:
        return dict(row)

    def _delete_tracking(self, cursor: Any, key: str) -> None:
        raise NotImplementedError

    def _freeze_tracking(self, cursor: Any, key: str) -> None:
        """Keep other transactions from moving ``key``'s position until this one ends."""

    @contextmanager
    def rebuild_lock(self, projection: str) -> Iterator[None]:
        raise NotImplementedError
        yield

    # ``_insert_tracking(cursor, tracking)`` and ``max_tracking_id(name)`` come from the
    # library's tracking recorder that each concrete store also inherits from.
    _insert_tracking: Any
    max_tracking_id: Any

    # -- schema ------------------------------------------------------------------------

    def ensure_generations_table(self) -> None:
        with self.write_transaction() as c:
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.qualify(GENERATIONS_TABLE)} "
                "(projection TEXT PRIMARY KEY, generation INTEGER NOT NULL)"
            )

    def ensure_failures_table(self) -> None:
        with self.write_transaction() as c:
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.qualify(FAILURES_TABLE)} "
                "(projection TEXT PRIMARY KEY, generation INTEGER NOT NULL, "
                "position BIGINT NOT NULL, error TEXT NOT NULL, failed_at TEXT NOT NULL)"
            )

    def record_failure(self, projection: str, generation: int, position: int, error: str) -> None:
        """Remember that ``projection`` cannot apply the event at ``position`` (shown by
        ``projections status`` in every process until the read model moves past it)."""
        with self.write_transaction() as c:
            c.execute(
                self.sql(
                    f"INSERT INTO {self.qualify(FAILURES_TABLE)} "
                    "(projection, generation, position, error, failed_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (projection) DO UPDATE SET generation = excluded.generation, "
                    "position = excluded.position, error = excluded.error, "
                    "failed_at = excluded.failed_at"
                ),
                (projection, generation, position, error, datetime.now(UTC).isoformat()),
            )

    def clear_failure(self, projection: str) -> None:
        with self.write_transaction() as c:
            c.execute(
                self.sql(f"DELETE FROM {self.qualify(FAILURES_TABLE)} WHERE projection = ?"),
                (projection,),
            )

    def failures(self) -> dict[str, str]:
        """Per failing read model: which event it cannot apply, and why."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT projection, position, error FROM {self.qualify(FAILURES_TABLE)}")
            rows = [self.row_dict(row) for row in c.fetchall()]
        return {row["projection"]: f"event {row['position']}: {row['error']}" for row in rows}

    def tables_for(self, generation: int, ddl: dict[str, str]) -> dict[str, str]:
        return {base: self.qualify(table_name(base, generation)) for base in ddl}

    def create_generation(
        self, projection: str, generation: int, ddl: dict[str, str], indexes: Sequence[str] = ()
    ) -> None:
        """(Re)create a generation's tables, empty, with no tracking position."""
        tables = self.tables_for(generation, ddl)
        with self.write_transaction() as c:
            for base, columns in ddl.items():
                c.execute(f"DROP TABLE IF EXISTS {tables[base]}")
                c.execute(f"CREATE TABLE {tables[base]} ({columns})")
            for index in indexes:
                c.execute(index.format(g=generation, **tables))
            self._delete_tracking(c, tracking_key(projection, generation))

    def ensure_first_generation(
        self, projection: str, ddl: dict[str, str], indexes: Sequence[str] = ()
    ) -> None:
        """Give a read model its first generation, unless it has one: two processes that
        start at once on a new store both end up using the same, untouched tables."""
        tables = self.tables_for(1, ddl)
        with self.write_transaction() as c:
            for base, columns in ddl.items():
                c.execute(f"CREATE TABLE IF NOT EXISTS {tables[base]} ({columns})")
            for index in indexes:
                c.execute(index.format(g=1, **tables))
            c.execute(
                self.sql(
                    f"INSERT INTO {self.qualify(GENERATIONS_TABLE)} (projection, generation) "
                    "VALUES (?, 1) ON CONFLICT (projection) DO NOTHING"
                ),
                (projection,),
            )
        self.ensure_views(projection, ddl)

    def ensure_views(self, projection: str, ddl: dict[str, str]) -> None:
        """Give each of the read model's tables its stable view, on the live generation
        (a store made before views existed gets them here)."""
        if all(self._view_exists(view_name(base)) for base in ddl):
            return
        with self.write_transaction() as c:
            self._lock_views(c, projection)
            generation = self._active_generation(c, projection)
            if generation is not None:
                self._point_views(c, generation, ddl)

    def _point_views(self, c: Any, generation: int, ddl: dict[str, str]) -> None:
        tables = self.tables_for(generation, ddl)
        for base in ddl:
            view = self.qualify(view_name(base))
            c.execute(f"DROP VIEW IF EXISTS {view}")
            c.execute(f"CREATE VIEW {view} AS SELECT * FROM {tables[base]}")

    def _view_exists(self, view: str) -> bool:
        raise NotImplementedError

    def _lock_views(self, cursor: Any, projection: str) -> None:
        """Keep two processes from (re)creating one read model's views at once."""

    def drop_generation(self, generation: int, ddl: dict[str, str]) -> None:
        with self.write_transaction() as c:
            for table in self.tables_for(generation, ddl).values():
                c.execute(f"DROP TABLE IF EXISTS {table}")

    def active_generation(self, projection: str) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            return self._active_generation(c, projection)

    def _active_generation(self, c: Any, projection: str) -> int | None:
        c.execute(
            self.sql(
                f"SELECT generation FROM {self.qualify(GENERATIONS_TABLE)} WHERE projection = ?"
            ),
            (projection,),
        )
        row = c.fetchone()
        return None if row is None else int(self.row_dict(row)["generation"])

    def switch_if_caught_up(self, projection: str, old: int, new: int, ddl: dict[str, str]) -> bool:
        """Point readers at generation ``new`` if it has applied at least every event
        ``old`` has, all in one transaction; ``False`` (nothing changed) otherwise. The read
        model's stable views (its tables in ``ddl``) are re-pointed in the same transaction.

        The pointer row is written first, which takes SQLite's write lock at once (and
        the row lock on PostgreSQL); ``old``'s tracking row is then frozen, so the two
        positions compared are the ones readers see when the switch commits. Readers thus
        never step back to an older state of the read model.
        """
        try:
            with self.write_transaction() as c:
                pointer = self.qualify(GENERATIONS_TABLE)
                c.execute(  # a write first: it takes the lock before anything is read
                    self.sql(f"UPDATE {pointer} SET generation = generation WHERE projection = ?"),
                    (projection,),
                )
                if self._active_generation(c, projection) != old:
                    raise _NotCaughtUp(f"{projection} is not at generation {old}")
                self._freeze_tracking(c, tracking_key(projection, old))
                if self._position(c, projection, new) < self._position(c, projection, old):
                    raise _NotCaughtUp(f"generation {new} of {projection} is behind")
                c.execute(
                    self.sql(f"UPDATE {pointer} SET generation = ? WHERE projection = ?"),
                    (new, projection),
                )
                self._point_views(c, new, ddl)
        except _NotCaughtUp:
            return False
        return True

    def _position(self, c: Any, projection: str, generation: int) -> int:
        return int(self._max_tracking_id(tracking_key(projection, generation), c) or 0)

    _max_tracking_id: Any

    def position(self, projection: str, generation: int) -> int:
        return self.max_tracking_id(tracking_key(projection, generation)) or 0

    tracking_table: str = "tracking"

    def live_positions(self) -> dict[str, int]:
        """Per read model, the position of its live generation: one query, for readers."""
        rows = self.select(
            f"SELECT g.projection AS projection, t.notification_id AS position "
            f"FROM {self.qualify(GENERATIONS_TABLE)} g "
            f"LEFT JOIN {self.qualify(self.tracking_table)} t "
            "ON t.application_name = g.projection || '@g' || CAST(g.generation AS TEXT)"
        )
        return {r["projection"]: int(r["position"] or 0) for r in rows}

    def live_state(self) -> dict[str, tuple[int, int]]:
        """Per read model, its live generation and that generation's position."""
        rows = self.select(
            f"SELECT g.projection AS projection, g.generation AS generation, "
            f"t.notification_id AS position FROM {self.qualify(GENERATIONS_TABLE)} g "
            f"LEFT JOIN {self.qualify(self.tracking_table)} t "
            "ON t.application_name = g.projection || '@g' || CAST(g.generation AS TEXT)"
        )
        return {r["projection"]: (int(r["generation"]), int(r["position"] or 0)) for r in rows}

    # -- writing -----------------------------------------------------------------------

    @contextmanager
    def writing(
        self, projection: str, generation: int, position: int, start: int | None = None
    ) -> Iterator[Any]:
        """A transaction that ends by moving the generation's tracking to ``position``.

        With ``start`` (the position the page was read after), the committed position is
        checked first, inside this transaction and under a lock that every writer of this
        generation takes: if it is not exactly ``start``, another runner applied some of
        the page already and ``StalePage`` is raised before anything is written. Checking
        only the end of the page (the tracking insert's own rule) would accept a page read
        from a stale position and count its first events twice.
        """
        if start is not None:
            with self.writing_together([(projection, generation)], start, position) as c:
                yield c
            return
        with self.write_transaction() as c:
            yield c
            self._insert_tracking(c, Tracking(tracking_key(projection, generation), position))

    def _lock_tracking(self, cursor: Any, key: str) -> None:
        """Keep other writers of ``key`` out until this transaction ends (SQLite: the
        ``BEGIN IMMEDIATE`` write lock already does)."""

    @contextmanager
    def writing_together(
        self, targets: Sequence[tuple[str, int]], start: int, position: int
    ) -> Iterator[Any]:
        """``writing`` for several read models (projection, generation) at once: one
        transaction that checks each one is exactly at ``start`` (``StalePage`` if any is
        not), and ends by moving each to ``position``. Locks are taken in one order, so
        two runners applying overlapping sets never wait for each other in a circle."""
        keys = sorted({tracking_key(p, g): (p, g) for p, g in targets}.items())
        with self.write_transaction() as c:
            for key, (projection, generation) in keys:
                self._lock_tracking(c, key)
                committed = self._position(c, projection, generation)
                if committed != start:
                    raise StalePage(f"{key} is at {committed}, the page starts after {start}")
            yield c
            for key, _ in keys:
                self._insert_tracking(c, Tracking(key, position))

    # -- set-based writes ----------------------------------------------------------------

    placeholder = "?"

    def _typed(self, placeholder: str, kind: str) -> str:
        """A placeholder whose type the server must know (a ``VALUES`` column)."""
        return placeholder

    def select_in(
        self, c: Any, table: str, key: str, values: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """The rows of ``table`` whose ``key`` is one of ``values``."""
        found: list[dict[str, Any]] = []
        step = MAX_PARAMETERS
        for i in range(0, len(values), step):
            chunk = values[i : i + step]
            marks = ", ".join([self.placeholder] * len(chunk))
            c.execute(f"SELECT * FROM {table} WHERE {key} IN ({marks})", tuple(chunk))
            found.extend(self.row_dict(r) for r in c.fetchall())
        return found

    def insert_rows(
        self,
        c: Any,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        types: dict[str, str],
    ) -> None:
        """Insert ``rows`` with multi-row ``INSERT`` statements (as few as the bound-value
        limit allows)."""
        if not rows:
            return
        one = "(" + ", ".join([self.placeholder] * len(columns)) + ")"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        step = max(1, MAX_PARAMETERS // len(columns))
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            c.execute(head + ", ".join([one] * len(chunk)), [v for row in chunk for v in row])

    def update_rows(
        self,
        c: Any,
        table: str,
        keys: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        types: dict[str, str],
    ) -> None:
        """Set ``columns`` of the rows named by ``keys``: each of ``rows`` is the key
        values, then the column values. ``UPDATE ... FROM (VALUES ...)``, one statement
        per bound-value limit's worth of rows."""
        if not rows:
            return
        names = [*keys, *columns]
        width = len(names)
        aliases = [f"column{i}" for i in range(1, width + 1)]
        first = "(" + ", ".join(self._typed(self.placeholder, types[n]) for n in names) + ")"
        other = "(" + ", ".join([self.placeholder] * width) + ")"
        sets = ", ".join(f"{n} = v.{a}" for n, a in zip(columns, aliases[len(keys) :], strict=True))
        match = " AND ".join(
            f"t.{k} = v.{a}" for k, a in zip(keys, aliases[: len(keys)], strict=True)
        )
        step = max(1, MAX_PARAMETERS // width)
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            values = ", ".join([first, *[other] * (len(chunk) - 1)])
            c.execute(
                f"UPDATE {table} AS t SET {sets} FROM (VALUES {values}) AS "
                f"{self._values_alias(aliases)} WHERE {match}",
                [v for row in chunk for v in row],
            )

    def _values_alias(self, aliases: Sequence[str]) -> str:
        """SQLite names a ``VALUES`` table's columns column1, column2, ... by itself."""
        return "v"

    def execute(self, c: Any, statement: str, params: Sequence[Any] = ()) -> None:
        c.execute(self.sql(statement), tuple(params))

    def execute_many(self, c: Any, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            c.executemany(self.sql(statement), [tuple(r) for r in rows])

    # -- reading -----------------------------------------------------------------------

    def select(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.sql(statement), tuple(params))
            return [self.row_dict(r) for r in c.fetchall()]

    reads_ahead = False
    """Whether the runner reads the next page while it writes one (``read_ahead``): only
    where reading and writing wait for a server, on connections of their own."""

    def notifications(
        self, recorder: Any, start: int, limit: int, stop: int | None = None
    ) -> Sequence[Any]:
        """Up to ``limit`` notifications of ``recorder``'s log after ``start`` (and up to
        ``stop``), in order: objects with the attributes of the library's
        ``Notification`` (``id``, ``originator_id``, ``originator_version``, ``topic``,
        ``state``)."""
        return list(
            recorder.select_notifications(
                start=start, limit=limit, stop=stop, inclusive_of_start=False
            )
        )


class SQLiteReadModelStore(ReadModelStoreMixin, SQLiteTrackingRecorder):
    """Read models in the SQLite file of the events. A write transaction holds the whole
    database's lock, so nothing needs freezing while a switch compares positions."""

    _thread_locks: dict[str, threading.Lock] = {}
    _thread_locks_guard = threading.Lock()

    def _delete_tracking(self, cursor: Any, key: str) -> None:
        cursor.execute("DELETE FROM tracking WHERE application_name = ?", (key,))

    @contextmanager
    def write_transaction(self) -> Iterator[Any]:
        """``BEGIN IMMEDIATE``: take the write lock up front (waiting for it if need be).

        The library begins transactions deferred; one that reads before it writes cannot
        wait for another writer and fails with "database is locked" at once.
        """
        with self.datastore.transaction(commit=True) as c:
            c.execute("COMMIT")  # the empty deferred transaction the library began
            c.execute("BEGIN IMMEDIATE")
            yield c

    def _view_exists(self, view: str) -> bool:
        rows = self.select("SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?", (view,))
        return bool(rows)

    @contextmanager
    def rebuild_lock(self, projection: str) -> Iterator[None]:
        """A lock file beside the database (flock: released if the process dies); a shared
        in-memory database has no file, so a thread lock stands in for it."""
        db_name = self.datastore.pool.db_name
        key = f"{db_name}:{projection}"
        with self._thread_locks_guard:
            thread_lock = self._thread_locks.setdefault(key, threading.Lock())
        if not thread_lock.acquire(blocking=False):
            raise RebuildInProgress(f"a rebuild of {projection} is already running")
        try:
            if _is_memory_database(db_name):
                yield
                return
            with open(Path(f"{db_name}.rebuild-{projection}.lock"), "a+b") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise RebuildInProgress(
                        f"a rebuild of {projection} is already running"
                    ) from None
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            thread_lock.release()


def _is_memory_database(db_name: str) -> bool:
    return ":memory:" in db_name or "mode=memory" in db_name


class PageNotification(NamedTuple):
    """A notification as the PostgreSQL store reads a page of them: the library's
    ``Notification`` attributes, in a tuple (a frozen dataclass per row, made from a dict
    per row, cost more than the rest of reading the page)."""

    id: int
    originator_id: Any
    originator_version: int
    topic: str
    state: bytes


class PostgresReadModelStore(ReadModelStoreMixin, PostgresTrackingRecorder):
    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        kwargs.setdefault("tracking_table_name", PG_TRACKING_TABLE)
        super().__init__(datastore, **kwargs)

    reads_ahead = True

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library
    def notifications(
        self, recorder: Any, start: int, limit: int, stop: int | None = None
    ) -> Sequence[Any]:
        """The library's ``select_notifications`` with rows read as tuples in binary
        format (no text to parse for the UUIDs and the events' bytes)."""
        events = self.qualify(recorder.events_table_name)
        statement = (
            "SELECT notification_id, originator_id, originator_version, topic, state "
            f"FROM {events} WHERE notification_id > %s"
        )
        params: tuple[int, ...] = (start, limit)
        if stop is not None:
            statement += " AND notification_id <= %s"
            params = (start, stop, limit)
        statement += " ORDER BY notification_id LIMIT %s"
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row, binary=True) as c,
        ):
            c.execute(statement, params, prepare=True)
            return list(map(_page_notification, c.fetchall()))

    @property
    def tracking_table(self) -> str:  # type: ignore[override]
        return str(self.tracking_table_name)

    def qualify(self, table: str) -> str:
        return f'"{self.datastore.schema}"."{table}"'

    def _view_exists(self, view: str) -> bool:
        rows = self.select(
            "SELECT 1 FROM information_schema.views WHERE table_schema = ? AND table_name = ?",
            (self.datastore.schema, view),
        )
        return bool(rows)

    def _lock_views(self, cursor: Any, projection: str) -> None:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            (f"cjledger.views:{self.datastore.schema}:{projection}",),
        )

    def sql(self, statement: str) -> str:
        return _PLACEHOLDER.sub("%s", statement)

    placeholder = "%s"

    def _typed(self, placeholder: str, kind: str) -> str:
        return f"CAST({placeholder} AS {kind})"

    def _values_alias(self, aliases: Sequence[str]) -> str:
        return f"v({', '.join(aliases)})"

    def select_in(
        self, c: Any, table: str, key: str, values: Sequence[Any]
    ) -> list[dict[str, Any]]:
        if not values:
            return []
        c.execute(f"SELECT * FROM {table} WHERE {key} = ANY(%s)", (list(values),))
        return [self.row_dict(r) for r in c.fetchall()]

    # PostgreSQL takes a page's rows as one array per column, each bound as one value in
    # the server's binary array format (``binary_arrays``) and turned back into rows by
    # ``unnest``: a statement whose text is the same for every page, no per-row text to
    # format or parse, and floats sent exactly (±Infinity and NaN included).

    def insert_rows(
        self,
        c: Any,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        types: dict[str, str],
    ) -> None:
        if not rows:
            return
        names = ", ".join(columns)
        source, params = _row_source(c, columns, rows, types)
        c.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {source}", params)

    def update_rows(
        self,
        c: Any,
        table: str,
        keys: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        types: dict[str, str],
    ) -> None:
        if not rows:
            return
        sets = ", ".join(f"{n} = v.{n}" for n in columns)
        match = " AND ".join(f"t.{k} = v.{k}" for k in keys)
        source, params = _row_source(c, [*keys, *columns], rows, types)
        c.execute(f"UPDATE {table} AS t SET {sets} FROM {source} WHERE {match}", params)

    def _delete_tracking(self, cursor: Any, key: str) -> None:
        cursor.execute(
            f"DELETE FROM {self.qualify(self.tracking_table_name)} WHERE application_name = %s",
            (key,),
        )

    def _freeze_tracking(self, cursor: Any, key: str) -> None:
        cursor.execute(
            f"SELECT notification_id FROM {self.qualify(self.tracking_table_name)} "
            "WHERE application_name = %s FOR UPDATE",
            (key,),
        )

    def _lock_tracking(self, cursor: Any, key: str) -> None:
        # A transaction-scoped advisory lock: it also covers a generation whose tracking
        # row does not exist yet, which a row lock could not.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            (f"cjledger.rm:{self.datastore.schema}:{key}",),
        )

    @contextmanager
    def writing(
        self, projection: str, generation: int, position: int, start: int | None = None
    ) -> Iterator[Any]:
        """As on SQLite, in pipeline mode: a page's statements go out without waiting for
        each other's replies; errors still surface before the commit."""
        if start is not None:  # writing_together brings its own pipeline
            with self.writing_together([(projection, generation)], start, position) as c:
                yield c
            return
        with (
            super().writing(projection, generation, position, start) as c,
            c.connection.pipeline(),
        ):
            yield c

    @contextmanager
    def writing_together(
        self, targets: Sequence[tuple[str, int]], start: int, position: int
    ) -> Iterator[Any]:
        """As on SQLite, with as few round trips to the server as it takes: the locks and
        one read of every position in one exchange, the page's statements and one write
        of every position pipelined, then the commit (the library's tracking insert and
        a read of each position, one by one, took some twenty round trips a page)."""
        keys = sorted({tracking_key(p, g) for p, g in targets})
        tracking = self.qualify(self.tracking_table_name)
        with self.write_transaction() as c:
            with c.connection.pipeline():
                for key in keys:
                    self._lock_tracking(c, key)
                c.execute(
                    f"SELECT application_name, notification_id FROM {tracking} "
                    "WHERE application_name = ANY(%s)",
                    (keys,),
                    prepare=True,
                )
                committed = {r["application_name"]: r["notification_id"] for r in c.fetchall()}
                for key in keys:
                    if committed.get(key, 0) != start:
                        raise StalePage(
                            f"{key} is at {committed.get(key, 0)}, the page starts after {start}"
                        )
                yield c
                # the library's single-row tracking rule for all of them at once: a position
                # only moves forward (each was at ``start``, under the lock, a moment ago)
                moved = c.connection.cursor()
                moved.execute(
                    f"INSERT INTO {tracking} AS t (application_name, notification_id) "
                    "SELECT unnest(%s::text[]), %s "
                    "ON CONFLICT (application_name) DO UPDATE "
                    "SET notification_id = excluded.notification_id "
                    "WHERE t.notification_id < excluded.notification_id RETURNING 1",
                    (keys, position),
                    prepare=True,
                )
            if len(moved.fetchall()) != len(keys):  # before the commit
                raise IntegrityError(f"tracking of {keys} refused position {position}")

    @contextmanager
    def rebuild_lock(self, projection: str) -> Iterator[None]:
        """A session advisory lock on a connection held for the rebuild; PostgreSQL
        releases it if the process dies."""
        key = f"cjledger.rebuild:{self.datastore.schema}:{projection}"
        with self.datastore.get_connection() as conn:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s)) AS locked", (key,)
            ).fetchone()
            if not row or not row["locked"]:
                raise RebuildInProgress(f"a rebuild of {projection} is already running")
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def _row_source(
    c: Any, names: Sequence[str], rows: Sequence[Sequence[Any]], types: dict[str, str]
) -> tuple[str, list[Any]]:
    """A page's rows as a relation ``v`` with columns ``names``, and its parameters: one
    array per column."""
    register_dumpers(c)
    arrays = ", ".join(f"CAST(%b AS {types[n]}[])" for n in names)
    columns = [
        column_array(types[name], column)
        for name, column in zip(names, zip(*rows, strict=True), strict=True)
    ]
    return f"unnest({arrays}) AS v({', '.join(names)})", columns


_page_notification = partial(tuple.__new__, PageNotification)


def store_for(app: Any) -> ReadModelStoreMixin:
    """The read-model store that lives in the same database as ``app``'s events."""
    store: ReadModelStoreMixin
    if isinstance(app.recorder, SQLiteRecorder):
        store = SQLiteReadModelStore(app.recorder.datastore)
    elif isinstance(app.recorder, PostgresRecorder):
        store = PostgresReadModelStore(app.recorder.datastore)
    else:
        raise ValueError("read models need a SQLite or PostgreSQL store (CJLEDGER_DATABASE_URL)")
    store.create_table()  # the recorder's tracking table
    store.ensure_generations_table()
    store.ensure_failures_table()
    return store
