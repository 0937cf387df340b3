"""Read-side queries over the active generation of each read model.

Every query looks up the active generation and reads its tables; a rebuild that switches
generations between the two steps is retried once, so a reader only ever sees a complete
view.
"""

from __future__ import annotations

import json
from typing import Any

from projections.store import ReadModelStoreMixin, table_name


class ReadModels:
    def __init__(self, store: ReadModelStoreMixin) -> None:
        self.store = store

    def _select(
        self,
        projection: str,
        base: str,
        where: str = "",
        params: tuple[Any, ...] = (),
        order: str = "",
    ) -> list[dict[str, Any]]:
        for attempt in range(3):
            generation = self.store.active_generation(projection)
            if generation is None:
                return []
            table = self.store.qualify(table_name(base, generation))
            try:
                return self.store.select(f"SELECT * FROM {table} {where} {order}", params)
            except Exception:
                if attempt == 2 or self.store.active_generation(projection) == generation:
                    raise
        return []

    def batch_summary(self, batch_id: str) -> dict[str, Any] | None:
        rows = self._select("batch_summary", "batch_summary", "WHERE batch_id = ?", (batch_id,))
        return rows[0] if rows else None

    def batches(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        return self._select(
            "batch_summary",
            "batch_summary",
            where,
            (*params, limit, offset),
            "ORDER BY created_at DESC, batch_id LIMIT ? OFFSET ?",
        )

    def rankings(self, batch_id: str) -> list[dict[str, Any]]:
        return self._select(
            "rankings", "rankings", "WHERE batch_id = ?", (batch_id,), "ORDER BY rank"
        )

    def comparisons(self, batch_id: str) -> list[dict[str, Any]]:
        return self._select(
            "comparisons",
            "comparisons",
            "WHERE batch_id = ?",
            (batch_id,),
            "ORDER BY wave, pair_index",
        )

    def decisions(self, batch_id: str) -> list[dict[str, Any]]:
        rows = self._select(
            "decision_audit",
            "decision_audit",
            "WHERE batch_id = ?",
            (batch_id,),
            "ORDER BY version",
        )
        for row in rows:
            row["context"] = json.loads(row["context"])
        return rows
