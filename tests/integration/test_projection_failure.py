"""A read model that cannot apply an event, on the real PostgreSQL server: it is reported
(event, error) by ``projections status`` with a non-zero exit and in the logs, and the
other read models carry on to the head of the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from application.batches import BatchApplication
from infrastructure.persistence.store import eventsourcing_env
from projections.catalogue import PROJECTIONS
from projections.runner import ReadModelRunner
from tests.conftest import postgres_dsn
from tests.fakes import run_batch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def cjledger(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.cli.main", *args],
        cwd=ROOT,
        env={**os.environ, "CJLEDGER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_read_model_that_cannot_apply_an_event_is_reported_and_the_others_carry_on(
    postgres_url: str, postgres_schema: str
) -> None:
    broken = next(name for name, p in PROJECTIONS.items() if "rankings" in p.ddl)
    with BatchApplication(env=eventsourcing_env(postgres_url)) as app:
        run_batch(app, n=8, ref="poisoned-read-model")
        head = app.recorder.max_notification_id()
        ReadModelRunner(app)  # creates every read model's tables
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:  # a table refusing rows
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT refuses_rows CHECK (false) NOT VALID").format(
                sql.Identifier(postgres_schema, "rm_rankings_g1")
            )
        )

    caught_up = cjledger(postgres_url, "projections", "run", "--once")
    assert caught_up.returncode == 1
    assert f"{broken} cannot apply event" in caught_up.stderr
    assert "Traceback" not in caught_up.stderr

    status = cjledger(postgres_url, "projections", "status", "--json")
    assert status.returncode == 1, status.stderr
    rows = {row["projection"]: row for row in json.loads(status.stdout)}
    failure = rows[broken]["failure"]
    assert failure is not None and "Finalized" in failure and "refuses_rows" in failure
    assert rows[broken]["lag"] > 0
    for name, row in rows.items():
        if name != broken:
            assert row["failure"] is None and row["position"] == head, name
    assert f"read model {broken}" in status.stderr
    assert len(status.stderr.strip().splitlines()) == 1

    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:  # the operator repairs it
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT refuses_rows").format(
                sql.Identifier(postgres_schema, "rm_rankings_g1")
            )
        )
    assert cjledger(postgres_url, "projections", "run", "--once").returncode == 0
    repaired = cjledger(postgres_url, "projections", "status", "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert all(r["failure"] is None and r["lag"] == 0 for r in json.loads(repaired.stdout))
