"""Read-side queries over the read models' stable views.

Every query reads ``rm_<table>``, a view that always selects from the live generation
(see ``projections.store``), so a query never looks a generation up and a rebuild's
switch never sends it to a table that is gone. ``freshness`` says how far the read
models have caught up with the log, so a caller can tell a stale answer from a fresh one.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from projections.store import GENERATIONS_TABLE, ReadModelStoreMixin, view_name


class BadCursor(ValueError):
    """A pagination cursor that this service did not hand out."""


@dataclass(frozen=True)
class Freshness:
    """How far a read model has applied the log: ``position`` of ``head``."""

    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("cursor is not one this service handed out") from None
    if not isinstance(values, list) or len(values) != arity:
        raise BadCursor("cursor is not one this service handed out")
    return values


COMPARISON_ESSAYS = {
    "essay_a": "essay_a_external_id",
    "essay_b": "essay_b_external_id",
    "winner": "winner_external_id",
}


class ReadModels:
    """Queries over the four read models. ``head`` returns the log's last notification
    id (for freshness); without it, freshness reports the positions only.

    The read models hold essay refs only (so erasure never has to touch them). Given
    ``external_ids`` (batch id -> a function from essay ref to what to show, e.g.
    ``BatchApplication.external_ids`` over the content store), rankings and comparisons
    also name each essay by the school's id (``external_id``, ``essay_a_external_id``,
    ...), ``[erased]`` once it was erased.
    """

    def __init__(
        self,
        store: ReadModelStoreMixin,
        head: Callable[[], int] | None = None,
        external_ids: Callable[[str], Callable[[str], str]] | None = None,
    ) -> None:
        self.store = store
        self._head = head
        self._external_ids = external_ids
        self._last_head: tuple[float, int] | None = None  # (monotonic time, head)

    def _with_external_ids(
        self, batch_id: str, rows: list[dict[str, Any]], columns: dict[str, str]
    ) -> list[dict[str, Any]]:
        if self._external_ids is None:
            return rows
        resolve = self._external_ids(batch_id)
        for row in rows:
            for ref_column, shown in columns.items():
                ref = row.get(ref_column)
                row[shown] = None if ref is None else resolve(ref)
        return rows

    def _select(
        self, base: str, where: str = "", params: Sequence[Any] = (), order: str = ""
    ) -> list[dict[str, Any]]:
        view = self.store.qualify(view_name(base))
        return self.store.select(f"SELECT * FROM {view} {where} {order}", params)

    # ------------------------------------------------------------------ freshness

    def freshness(self, *projections: str, max_age: float = 0.0) -> Freshness:
        """The least caught-up of ``projections`` (all read models when none named).

        ``max_age`` (seconds): the log's head may be one read at most that long ago, so a
        busy reader does not ask the log on every request; ``lag`` may then miss the
        events appended within that interval (never more)."""
        positions = self.store.live_positions()
        wanted = [positions.get(p, 0) for p in projections] if projections else positions.values()
        return self._freshness(min(wanted, default=0), max_age)

    def _freshness(self, position: int, max_age: float) -> Freshness:
        return Freshness(position, max(position, self._log_head(max_age, position)))

    def _log_head(self, max_age: float, default: int) -> int:
        if self._head is None:
            return default
        now = time.monotonic()
        last = self._last_head
        if max_age > 0 and last is not None and now - last[0] < max_age:
            return last[1]
        head = self._head()
        self._last_head = (now, head)  # one tuple: a racing thread sees old or new, whole
        return head

    def _position_sql(self) -> str:
        """A scalar subquery: the tracked position of the live generation of the read
        model named by its one parameter (0 before anything was applied)."""
        generations = self.store.qualify(GENERATIONS_TABLE)
        return (
            f"SELECT COALESCE(MAX(t.notification_id), 0) FROM {generations} g "
            f"LEFT JOIN {self.store.qualify(self.store.tracking_table)} t "
            "ON t.application_name = g.projection || '@g' || CAST(g.generation AS TEXT) "
            "WHERE g.projection = ?"
        )

    # ------------------------------------------------------------------ batches

    def batch_summary(self, batch_id: str) -> dict[str, Any] | None:
        rows = self._select("batch_summary", "WHERE batch_id = ?", (batch_id,))
        return rows[0] if rows else None

    def batches(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        return self._select(
            "batch_summary",
            where,
            (*params, limit, offset),
            "ORDER BY created_at DESC, batch_id LIMIT ? OFFSET ?",
        )

    def batch_page(
        self,
        status: str | None = None,
        mode: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first; ``cursor`` continues after the last batch of the previous page."""
        conditions: list[str] = []
        params: list[Any] = []
        if status:
            conditions.append("status = ?")
            params.append(status)
        if mode:
            conditions.append("mode = ?")
            params.append(mode)
        if cursor:
            created_at, batch_id = decode_cursor(cursor, 2)
            conditions.append("(created_at < ? OR (created_at = ? AND batch_id > ?))")
            params.extend([created_at, created_at, batch_id])
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._select(
            "batch_summary",
            where,
            (*params, limit + 1),
            "ORDER BY created_at DESC, batch_id LIMIT ?",
        )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        next_cursor = (
            encode_cursor([last["created_at"], last["batch_id"]]) if more and last else None
        )
        return Page(rows, next_cursor)

    # ------------------------------------------------------------------ per batch

    def rankings(self, batch_id: str) -> list[dict[str, Any]]:
        rows = self._select(
            "rankings", "WHERE batch_id = ?", (batch_id,), "ORDER BY rank, essay_id"
        )
        return self._with_external_ids(batch_id, rows, {"essay_id": "external_id"})

    def rankings_and_freshness(
        self, batch_id: str, max_age: float = 0.0
    ) -> tuple[list[dict[str, Any]], Freshness]:
        """``rankings`` and the rankings read model's freshness, the rows and the tracked
        position read by one statement (the hot read of the API); ``max_age`` as in
        ``freshness``."""
        view = self.store.qualify(view_name("rankings"))
        rows = self.store.select(
            f"SELECT p.tracked_position AS tracked_position, r.* "
            f"FROM (SELECT ({self._position_sql()}) AS tracked_position) p "
            f"LEFT JOIN {view} r ON r.batch_id = ? ORDER BY r.rank, r.essay_id",
            ("rankings", batch_id),
        )
        position = int(rows[0]["tracked_position"] or 0) if rows else 0
        for row in rows:
            del row["tracked_position"]
        items = [r for r in rows if r["batch_id"] is not None]  # None: the one empty row
        ranked = self._with_external_ids(batch_id, items, {"essay_id": "external_id"})
        return ranked, self._freshness(position, max_age)

    def comparisons(self, batch_id: str) -> list[dict[str, Any]]:
        rows = self._select(
            "comparisons", "WHERE batch_id = ?", (batch_id,), "ORDER BY wave, pair_index"
        )
        return self._with_external_ids(batch_id, rows, COMPARISON_ESSAYS)

    def comparison_page(
        self,
        batch_id: str,
        limit: int = 100,
        cursor: str | None = None,
        outcome: str | None = None,
    ) -> Page:
        """In wave order; ``cursor`` continues after the previous page's last comparison."""
        conditions, params = ["batch_id = ?"], [batch_id]
        if outcome:
            conditions.append("outcome = ?")
            params.append(outcome)
        if cursor:
            wave, index = decode_cursor(cursor, 2)
            conditions.append("(wave > ? OR (wave = ? AND pair_index > ?))")
            params.extend([wave, wave, index])
        rows = self._select(
            "comparisons",
            f"WHERE {' AND '.join(conditions)}",
            (*params, limit + 1),
            "ORDER BY wave, pair_index LIMIT ?",
        )
        more = len(rows) > limit
        rows = self._with_external_ids(batch_id, rows[:limit], COMPARISON_ESSAYS)
        next_cursor = (
            encode_cursor([rows[-1]["wave"], rows[-1]["pair_index"]]) if more and rows else None
        )
        return Page(rows, next_cursor)

    def decisions(self, batch_id: str) -> list[dict[str, Any]]:
        rows = self._select("decision_audit", "WHERE batch_id = ?", (batch_id,), "ORDER BY version")
        for row in rows:
            row["context"] = json.loads(row["context"])
        return rows
