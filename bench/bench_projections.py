"""Projection catch-up speed: events per second from position zero, SQLite and PostgreSQL.

Builds a log of demo-sized batches (24 essays, failures included), then times

* a fresh runner catching all four read models up from position zero (``catch_up``);
* a rebuild of each read model beside the live one (``rebuild``), which replays the log
  into a new generation and switches readers to it.

Throughput is events of the log per second; ``event_applications_per_second`` counts an
event once per read model it passed through. Run with
``uv run python bench/bench_projections.py [--quick]``. Prints one JSON document and
writes it to ``bench/results/projections.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import structlog  # noqa: E402
from psycopg import sql  # noqa: E402

from application.batches import BatchApplication  # noqa: E402
from infrastructure.persistence.store import ensure_schema, eventsourcing_env  # noqa: E402
from projections.catalogue import PROJECTIONS  # noqa: E402
from projections.runner import ReadModelRunner  # noqa: E402
from tests.fakes import run_batch  # noqa: E402

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ESSAYS = 24


def measure(env: dict[str, str], batches: int) -> dict[str, Any]:
    app = BatchApplication(env=env)
    try:
        for i in range(batches):
            run_batch(app, n=ESSAYS, ref=f"bench-{i}", seed=i, failure_rate=0.05)
        head = app.recorder.max_notification_id() or 0
        runner = ReadModelRunner(app)
        started = time.perf_counter()
        runner.run_once()
        catch_up = time.perf_counter() - started
        assert all(lag == 0 for lag in runner.lag().values())
        rebuilds = {}
        for name in PROJECTIONS:
            started = time.perf_counter()
            runner.rebuild(name)
            seconds = time.perf_counter() - started
            rebuilds[name] = {
                "seconds": round(seconds, 3),
                "events_per_second": round(head / seconds),
            }
        return {
            "events": head,
            "catch_up": {
                "read_models": len(runner.projections),
                "seconds": round(catch_up, 3),
                "events_per_second": round(head / catch_up),
                "event_applications_per_second": round(head * len(runner.projections) / catch_up),
            },
            "rebuild": rebuilds,
        }
    finally:
        app.close()


@contextmanager
def postgres_env() -> Iterator[dict[str, str]]:
    schema = f"bench_rm_{uuid.uuid4().hex[:10]}"
    env = eventsourcing_env(f"{POSTGRES_URL}?schema={schema}")
    ensure_schema(env)
    try:
        yield env
    finally:
        dsn = psycopg.conninfo.make_conninfo(
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            dbname=env["POSTGRES_DBNAME"],
            user=env["POSTGRES_USER"],
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    batches = 4 if "--quick" in sys.argv else 40
    results: dict[str, Any] = {"batches": batches, "essays_per_batch": ESSAYS}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(eventsourcing_env(f"sqlite:///{tmp}/bench.db"), batches)
    try:
        with postgres_env() as env:
            results["postgres"] = measure(env, batches)
    except psycopg.OperationalError as error:
        results["postgres"] = {"skipped": f"PostgreSQL unreachable: {error}"}
    document = json.dumps(results, indent=2)
    print(document)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "projections.json").write_text(document)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    main()
