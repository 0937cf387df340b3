"""Where read models live: versioned tables plus the library's tracking, per backend.

Each projection writes into a *generation* of its tables (``rm_<table>_g<N>``). Queries
read the active generation, recorded in ``cjledger_rm_generations``. A rebuild fills
generation N+1 beside the live one and switches the pointer in one transaction, so a
reader never sees a half-built view.

Rows and the tracking position are written in the same transaction through the
``eventsourcing`` tracking recorders (``_insert_tracking``): the single-row tracking
insert refuses a position that is not past the stored one, so replaying an event that is
already applied rolls the whole transaction back. That is what makes projection
processing exactly-once. The tracking key is ``<projection>@g<N>``, so SQLite's shared
``tracking`` table holds one row per projection generation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder

GENERATIONS_TABLE = "cjledger_rm_generations"
PG_TRACKING_TABLE = "cjledger_rm_tracking"
_PLACEHOLDER = re.compile(r"\?")


def tracking_key(projection: str, generation: int) -> str:
    return f"{projection}@g{generation}"


def table_name(base: str, generation: int) -> str:
    return f"rm_{base}_g{generation}"


class ReadModelStoreMixin:
    """SQL shared by both backends; subclasses say how to name tables and bind values."""

    datastore: Any

    # -- dialect hooks -----------------------------------------------------------------

    def qualify(self, table: str) -> str:
        return table

    def sql(self, statement: str) -> str:
        return statement

    def row_dict(self, row: Any) -> dict[str, Any]:
        return dict(row)

    def _delete_tracking(self, cursor: Any, key: str) -> None:
        raise NotImplementedError

    # ``_insert_tracking(cursor, tracking)`` and ``max_tracking_id(name)`` come from the
    # library's tracking recorder that each concrete store also inherits from.
    _insert_tracking: Any
    max_tracking_id: Any

    # -- schema ------------------------------------------------------------------------

    def ensure_generations_table(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.qualify(GENERATIONS_TABLE)} "
                "(projection TEXT PRIMARY KEY, generation INTEGER NOT NULL)"
            )

    def tables_for(self, generation: int, ddl: dict[str, str]) -> dict[str, str]:
        return {base: self.qualify(table_name(base, generation)) for base in ddl}

    def create_generation(
        self, projection: str, generation: int, ddl: dict[str, str], indexes: Sequence[str] = ()
    ) -> None:
        """(Re)create a generation's tables, empty, with no tracking position."""
        tables = self.tables_for(generation, ddl)
        with self.datastore.transaction(commit=True) as c:
            for base, columns in ddl.items():
                c.execute(f"DROP TABLE IF EXISTS {tables[base]}")
                c.execute(f"CREATE TABLE {tables[base]} ({columns})")
            for index in indexes:
                c.execute(index.format(g=generation, **tables))
            self._delete_tracking(c, tracking_key(projection, generation))

    def drop_generation(self, generation: int, ddl: dict[str, str]) -> None:
        with self.datastore.transaction(commit=True) as c:
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

    def activate(self, projection: str, generation: int) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                self.sql(
                    f"INSERT INTO {self.qualify(GENERATIONS_TABLE)} (projection, generation) "
                    "VALUES (?, ?) ON CONFLICT (projection) DO UPDATE "
                    "SET generation = excluded.generation"
                ),
                (projection, generation),
            )

    def position(self, projection: str, generation: int) -> int:
        return self.max_tracking_id(tracking_key(projection, generation)) or 0

    # -- writing -----------------------------------------------------------------------

    @contextmanager
    def writing(self, projection: str, generation: int, position: int) -> Iterator[Any]:
        """A transaction that ends by moving the generation's tracking to ``position``."""
        with self.datastore.transaction(commit=True) as c:
            yield c
            self._insert_tracking(c, Tracking(tracking_key(projection, generation), position))

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


class SQLiteReadModelStore(ReadModelStoreMixin, SQLiteTrackingRecorder):
    def _delete_tracking(self, cursor: Any, key: str) -> None:
        cursor.execute("DELETE FROM tracking WHERE application_name = ?", (key,))


class PostgresReadModelStore(ReadModelStoreMixin, PostgresTrackingRecorder):
    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        kwargs.setdefault("tracking_table_name", PG_TRACKING_TABLE)
        super().__init__(datastore, **kwargs)

    def qualify(self, table: str) -> str:
        return f'"{self.datastore.schema}"."{table}"'

    def sql(self, statement: str) -> str:
        return _PLACEHOLDER.sub("%s", statement)

    def _delete_tracking(self, cursor: Any, key: str) -> None:
        cursor.execute(
            f"DELETE FROM {self.qualify(self.tracking_table_name)} WHERE application_name = %s",
            (key,),
        )


def store_for(app: Any) -> ReadModelStoreMixin:
    """The read-model store that lives in the same database as ``app``'s events."""
    module = type(app.recorder).__module__
    store: ReadModelStoreMixin
    if module.endswith("sqlite"):
        store = SQLiteReadModelStore(app.recorder.datastore)
    elif module.endswith("postgres"):
        store = PostgresReadModelStore(app.recorder.datastore)
    else:
        raise ValueError("read models need a SQLite or PostgreSQL store (CJLEDGER_DATABASE_URL)")
    store.create_table()  # the recorder's tracking table
    store.ensure_generations_table()
    return store
