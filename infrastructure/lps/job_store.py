"""The LPS worker's own memory of provider batch jobs: one small SQLite file.

LPS has no event store (it is stateless apart from this): what a restarted worker needs
is which provider job holds which comparison ids, nothing else. A local SQLite file
(``CJLEDGER_LPS_STATE_PATH``) keeps it without a server and without coupling LPS to CJ's
database; it is written before the job's requests can be acknowledged (the worker acks
only after publishing their outcomes, which comes after the job is saved and polled).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from application.lps import BatchJobRef

SCHEMA = """
CREATE TABLE IF NOT EXISTS lps_jobs (
    job_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    ref TEXT NOT NULL,
    answered TEXT NOT NULL DEFAULT '[]',
    finished_at TEXT
)
"""


class SqliteJobStore:
    """``JobStore`` on a SQLite file; safe to share between the worker's lanes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def save(self, ref: BatchJobRef) -> None:
        with self._lock, self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO lps_jobs (job_id, provider, ref) VALUES (?, ?, ?)",
                (ref.job_id, ref.provider, ref.to_json()),
            )

    def open_jobs(self, provider: str, custom_ids: Sequence[str]) -> list[BatchJobRef]:
        wanted = set(custom_ids)
        with self._lock, self._connect() as conn:
            rows = conn.execute(
                "SELECT ref, answered FROM lps_jobs WHERE finished_at IS NULL AND provider = ? "
                "ORDER BY rowid",
                (provider,),
            ).fetchall()
        found = []
        for ref_text, answered_text in rows:
            ref = BatchJobRef.from_json(ref_text)
            if (set(ref.custom_ids) - set(json.loads(answered_text))) & wanted:
                found.append(ref)
        return found

    def answered(self, job_id: str, custom_ids: Sequence[str]) -> None:
        with self._lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT ref, answered FROM lps_jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None:
                conn.execute("COMMIT")
                return
            ref = BatchJobRef.from_json(row[0])
            answered = sorted(set(json.loads(row[1])) | set(custom_ids))
            finished = (
                datetime.now(UTC).isoformat() if set(ref.custom_ids) <= set(answered) else None
            )
            conn.execute(
                "UPDATE lps_jobs SET answered = ?, finished_at = ? WHERE job_id = ?",
                (json.dumps(answered), finished, job_id),
            )
            conn.execute("COMMIT")

    def jobs(self) -> list[tuple[str, bool]]:
        """Every stored job id and whether it is finished (for operators and tests)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT job_id, finished_at FROM lps_jobs ORDER BY rowid")
            return [(job_id, finished is not None) for job_id, finished in rows]
