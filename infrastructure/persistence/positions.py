"""Follower positions kept in the event store's own database.

The outbox dispatcher remembers how far it has read in the same store as the events, so a
restore of the database restores both together.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.postgres import PostgresRecorder
from eventsourcing.sqlite import SQLiteRecorder
from psycopg import sql

from application.dispatcher import InMemoryPositionStore
from application.ports import PositionStore

TABLE = "cjledger_positions"


class SQLitePositionStore:
    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, position INTEGER)"
            )

    def get(self, name: str) -> int:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT position FROM {TABLE} WHERE name = ?", (name,))
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def set(self, name: str, position: int) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                f"INSERT INTO {TABLE} (name, position) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position "
                f"WHERE excluded.position > {TABLE}.position",
                (name, position),
            )


class PostgresPositionStore:
    """Positions in the application's own schema (``POSTGRES_SCHEMA``, default ``public``)."""

    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore
        schema = getattr(datastore, "schema", "") or "public"
        self.table = sql.Identifier(schema, TABLE)
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} "
                    "(name text PRIMARY KEY, position bigint NOT NULL)"
                ).format(self.table)
            )

    def get(self, name: str) -> int:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                sql.SQL("SELECT position FROM {} WHERE name = %s").format(self.table), (name,)
            )
            row = cursor.fetchone()
        return int(row["position"]) if row else 0

    def set(self, name: str, position: int) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {} AS p (name, position) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position "
                    "WHERE EXCLUDED.position > p.position"
                ).format(self.table),
                (name, position),
            )


def position_store_for(app: Any) -> PositionStore:
    """The position store that lives beside ``app``'s events."""
    if isinstance(app.recorder, SQLiteRecorder):
        return SQLitePositionStore(app.recorder.datastore)
    if isinstance(app.recorder, PostgresRecorder):
        return PostgresPositionStore(app.recorder.datastore)
    return InMemoryPositionStore()
