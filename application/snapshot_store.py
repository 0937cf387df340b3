"""Snapshots of batches: compressed, and only the latest few kept.

A snapshot is the whole batch state (every essay, every comparison with its outcome), so
it grows with the batch while an event stays small: a 5,161-event batch kept ten
snapshots totalling 17.8 MB against 3.85 MB of events. Only the latest snapshot is ever
read (a load starts from the newest one at or below the version asked for), so older ones
are pure cost. Two things follow:

* **Compressed.** Snapshots (not events: their JSON stays readable to SQL and to every
  reader of the log) go through their own mapper with a zlib compressor. Snapshots stored
  before compression was introduced are plain JSON, which starts with ``{`` and never
  with a zlib header, so they are still read as they are.
* **Pruned.** After a snapshot is stored, older ones of the same batch are deleted,
  keeping the latest ``SNAPSHOTS_KEPT``. A time-travel read at a version below the oldest
  kept snapshot simply replays from the first event, as it would without snapshots.

The library offers no way to delete stored records, so ``prune_snapshots`` speaks to the
three recorders the library ships (PostgreSQL, SQLite, in-memory) directly; this module is
the only place the application does.
"""

from __future__ import annotations

import zlib
from typing import Any
from uuid import UUID

from eventsourcing.compressor import ZlibCompressor
from eventsourcing.persistence import AggregateRecorder

SNAPSHOTS_KEPT = 2
"""The newest snapshot is what loads use; the one before it covers a snapshot write that
another process is still committing."""


class SnapshotCompressor(ZlibCompressor):
    """zlib, reading the uncompressed JSON snapshots of earlier releases unchanged."""

    def decompress(self, data: bytes) -> bytes:
        if data[:1] == b"{":  # plain JSON: stored before snapshots were compressed
            return data
        return zlib.decompress(data)


def prune_snapshots(recorder: AggregateRecorder, originator_id: UUID, keep: int) -> int:
    """Delete all but the ``keep`` newest snapshots of one aggregate; return how many went."""
    kept = recorder.select_events(originator_id, desc=True, limit=keep)
    if len(kept) < keep:
        return 0
    below = min(stored.originator_version for stored in kept)
    module = type(recorder).__module__
    if module == "eventsourcing.postgres":
        return _prune_postgres(recorder, originator_id, below)
    if module == "eventsourcing.sqlite":
        return _prune_sqlite(recorder, originator_id, below)
    if module == "eventsourcing.popo":
        return _prune_popo(recorder, originator_id, below)
    return 0  # an unknown recorder keeps its snapshots: costs space, never correctness


def _prune_postgres(recorder: Any, originator_id: UUID, below: int) -> int:
    from psycopg.sql import SQL, Identifier

    statement = SQL(
        "DELETE FROM {schema}.{table} WHERE originator_id = %s AND originator_version < %s"
    ).format(
        schema=Identifier(recorder.datastore.schema),
        table=Identifier(recorder.events_table_name),
    )
    with recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(statement, (originator_id, below))
        return int(cursor.rowcount)


def _prune_sqlite(recorder: Any, originator_id: UUID, below: int) -> int:
    statement = (
        f"DELETE FROM {recorder.events_table_name} "  # the library's own fixed table name
        "WHERE originator_id = ? AND originator_version < ?"
    )
    with recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(statement, (originator_id.hex, below))  # stored as hex there
        return int(cursor.sqlite_cursor.rowcount)


def _prune_popo(recorder: Any, originator_id: UUID, below: int) -> int:
    with recorder._database_lock:
        index = recorder._stored_events_index[str(originator_id)]
        old = [version for version in index if version < below]
        for version in old:
            del index[version]  # the row stays in the list, unreachable: memory stores are tests
        return len(old)
