"""Projection catch-up speed: events per second from position zero, SQLite and PostgreSQL.

Prints one JSON document. Builds a log of several demo-sized batches, then times a
fresh runner catching all four read models up, and a rebuild of one read model.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from application.batches import BatchApplication  # noqa: E402
from projections.runner import ReadModelRunner  # noqa: E402
from tests.fakes import run_batch  # noqa: E402

BATCHES = 12
ESSAYS = 24


def measure(env: dict[str, str]) -> dict[str, float | int]:
    app = BatchApplication(env=env)
    try:
        for i in range(BATCHES):
            run_batch(app, n=ESSAYS, ref=f"bench-{i}", seed=i)
        head = app.recorder.max_notification_id()
        runner = ReadModelRunner(app)
        started = time.perf_counter()
        runner.run_once()
        catch_up = time.perf_counter() - started
        started = time.perf_counter()
        runner.rebuild("comparisons")
        rebuild = time.perf_counter() - started
        return {
            "events": head,
            "read_models": len(runner.projections),
            "catch_up_seconds": round(catch_up, 3),
            "catch_up_events_per_second": round(head / catch_up),
            "event_applications_per_second": round(head * len(runner.projections) / catch_up),
            "rebuild_one_seconds": round(rebuild, 3),
            "rebuild_events_per_second": round(head / rebuild),
        }
    finally:
        app.close()


def main() -> None:
    results: dict[str, object] = {"batches": BATCHES, "essays_per_batch": ESSAYS}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(Path(tmp) / "bench.db"),
            }
        )
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as error:
        results["postgres"] = {"skipped": f"PostgreSQL unreachable: {error}"}
    else:
        try:
            results["postgres"] = measure(
                {
                    "PERSISTENCE_MODULE": "eventsourcing.postgres",
                    "POSTGRES_DBNAME": "postgres",
                    "POSTGRES_HOST": "127.0.0.1",
                    "POSTGRES_PORT": "5432",
                    "POSTGRES_USER": "postgres",
                    "POSTGRES_PASSWORD": "",
                    "POSTGRES_SCHEMA": schema,
                }
            )
        finally:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(f'DROP SCHEMA "{schema}" CASCADE')
    print(json.dumps(results))


if __name__ == "__main__":
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    main()
