"""Projection catch-up: events per second from position zero on a log of 1,000,000 events.

The log is what a real run leaves behind, at scale. A dozen batches (24 to 200 essays,
every batching mode, some failing judges) are run to their end through
``BatchApplication``, the dispatcher and a fake judge; their stored events (registrations,
mode choices, waves of ``ComparisonsRequested``, mostly ``ComparisonCompleted``,
continuation decisions, finalizations with scores) are the templates. Copies of them, each
with its own batch and comparison ids, are interleaved as if many batches ran at once
(``LANES`` at a time, a seeded random choice of which moves next) until the log holds
``CJLEDGER_BENCH_PROJECTION_EVENTS`` events (default 1,000,000), and bulk-written with
``COPY`` as the application's mapper stored them.

PostgreSQL: the log is written once into a template database (its name carries the
generator's version and size, so later runs reuse it: ``DROP DATABASE`` it to make a new
one). Each repeat clones it (``CREATE DATABASE ... TEMPLATE``), opens the application on
the clone, and times ``ReadModelRunner.run_once()`` — what ``cjledger projections run
--once`` does, with the garbage collector tuned as that command tunes it — catching all
four read models up from nothing, with the default page size.
SQLite: the same on a smaller log (``CJLEDGER_BENCH_PROJECTION_SQLITE_EVENTS``, default
200,000), copied file per repeat.

Reported: events of the log per second, min/median/max over the repeats (target
≥ 20,000/s on PostgreSQL, issue 11), the log's size in events and bytes and the mix of
event types, the rows each read model ends with, the load average around each repeat, and
the runner's CPU time per event (its process, all threads: less sensitive to other load on
the machine than the rate).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import resource
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bench.harness import POSTGRES_URL, REPEATS, Target, emit, progress, quiet_logs

GENERATOR_VERSION = 1
EVENTS = int(os.environ.get("CJLEDGER_BENCH_PROJECTION_EVENTS", "1000000"))
SQLITE_EVENTS = int(os.environ.get("CJLEDGER_BENCH_PROJECTION_SQLITE_EVENTS", "200000"))
LANES = 64  # batches running at once in the generated log
SEED = 11
TARGET = 20_000.0

# (essays, batching mode or None for the default, judge failure rate, seed)
TEMPLATES: tuple[tuple[int, str | None, float, int], ...] = (
    (24, None, 0.0, 1),
    (24, None, 0.05, 2),
    (24, "per_request", 0.0, 3),
    (30, "serial_bundle", 0.1, 4),
    (40, None, 0.02, 5),
    (60, None, 0.05, 6),
    (60, "serial_bundle", 0.0, 7),
    (90, None, 0.02, 8),
    (120, None, 0.05, 9),
    (200, None, 0.02, 10),
    (8, None, 0.6, 11),
    (3, None, 0.0, 12),
)

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_COPY_NAMESPACE = uuid.UUID("6f0d0c58-3c3e-4f8e-9a51-1f5a3c1b2d77")


@dataclass(frozen=True)
class Row:
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


def template_batches() -> list[list[Row]]:
    """Run the template batches for real and return each one's stored events, in order."""
    from application.batches import BatchApplication
    from domain.values import BatchingMode
    from infrastructure.persistence.store import eventsourcing_env
    from tests.fakes import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        app = BatchApplication(env=eventsourcing_env(f"sqlite:///{tmp}/templates.db"))
        try:
            ids = [
                run_batch(
                    app,
                    n=n,
                    mode=None if mode is None else BatchingMode(mode),
                    failure_rate=failure_rate,
                    ref=f"template-{index}",
                    seed=seed,
                    allow_sparse=True,
                )
                for index, (n, mode, failure_rate, seed) in enumerate(TEMPLATES)
            ]
            by_batch: dict[str, list[Row]] = {str(i): [] for i in ids}
            for n in app.recorder.select_notifications(start=None, limit=10_000_000):
                rows = by_batch.get(str(n.originator_id))
                if rows is not None:
                    rows.append(
                        Row(str(n.originator_id), n.originator_version, n.topic, bytes(n.state))
                    )
        finally:
            app.close()
    return [by_batch[str(i)] for i in ids]


def copy_of(template: list[Row], copy: int) -> list[Row]:
    """The template batch with fresh batch and comparison ids (and external reference)."""
    ids: dict[bytes, bytes] = {}

    def rename(old: bytes) -> bytes:
        new = ids.get(old)
        if new is None:
            new = str(uuid.uuid5(_COPY_NAMESPACE, f"{copy}:{old.decode()}")).encode()
            ids[old] = new
        return new

    ref = f'"external_ref":"bench-{copy:07d}"'.encode()
    rows = []
    for row in template:
        state = _UUID.sub(lambda match: rename(match.group(0)), row.state)
        if row.topic.endswith("BatchRegistered"):
            state = re.sub(rb'"external_ref":"[^"]*"', ref, state)
        originator = rename(row.originator_id.encode()).decode()
        rows.append(Row(originator, row.originator_version, row.topic, state))
    return rows


def generate(events: int) -> Iterator[Row]:
    """``events`` stored events: copies of the templates, ``LANES`` batches at a time,
    interleaved by a seeded random choice (each batch's own events stay in order)."""
    templates = template_batches()
    rng = random.Random(SEED)
    lanes: list[Iterator[Row]] = []
    copy = 0
    written = 0

    def start() -> Iterator[Row]:
        nonlocal copy
        template = templates[copy % len(templates)]
        copy += 1
        return iter(copy_of(template, copy))

    lanes = [start() for _ in range(LANES)]
    while written < events:
        lane = rng.randrange(len(lanes))
        row = next(lanes[lane], None)
        if row is None:
            lanes[lane] = start()
            continue
        yield row
        written += 1


# ----------------------------------------------------------------------------- PostgreSQL


def server_url(dbname: str) -> str:
    parts = urlparse(POSTGRES_URL)
    return urlunparse(parts._replace(path=f"/{dbname}", query=""))


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(
        server_url(urlparse(POSTGRES_URL).path.lstrip("/") or "postgres"),
        autocommit=True,
        connect_timeout=10,
    )


def template_name(events: int) -> str:
    fingerprint = hashlib.sha256(repr((GENERATOR_VERSION, TEMPLATES, LANES, SEED)).encode())
    return f"cjledger_bench_log_{events}_{fingerprint.hexdigest()[:8]}"


def database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def ensure_postgres_log(events: int) -> tuple[str, dict[str, Any]]:
    """The template database holding the generated log (made once, then reused)."""
    name = template_name(events)
    with admin() as conn:
        if database_exists(conn, name):
            with psycopg.connect(server_url(name)) as db:
                found = db.execute("SELECT facts FROM bench_log_facts").fetchone()
            if found is not None:
                progress(f"projections: reusing the log in database {name}")
                return name, dict(found[0])
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    progress(f"projections: writing a log of {events:,} events into database {name}")
    started = time.perf_counter()
    from application.batches import BatchApplication
    from infrastructure.persistence.store import eventsourcing_env

    with BatchApplication(env=eventsourcing_env(server_url(name))) as app:  # creates tables
        recorder: Any = app.recorder
        table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    mix: Counter[str] = Counter()
    size = 0
    with psycopg.connect(server_url(name)) as db:
        with (
            db.cursor() as cur,
            cur.copy(
                sql.SQL(
                    "COPY {} (originator_id, originator_version, topic, state) FROM STDIN"
                ).format(table)
            ) as copy,
        ):
            for row in generate(events):
                copy.write_row((row.originator_id, row.originator_version, row.topic, row.state))
                mix[row.topic.rsplit(".", 1)[-1]] += 1
                size += len(row.state)
        facts = {
            "events": events,
            "state_bytes": size,
            "event_types": dict(mix.most_common()),
            "generated_seconds": round(time.perf_counter() - started, 1),
        }
        db.execute("CREATE TABLE bench_log_facts (facts JSONB NOT NULL)")
        db.execute("INSERT INTO bench_log_facts VALUES (%s)", (Jsonb(facts),))
    with psycopg.connect(server_url(name), autocommit=True) as db:
        db.execute("VACUUM ANALYZE")
    progress(f"projections: log written in {facts['generated_seconds']} s")
    return name, facts


@contextmanager
def postgres_clone(template: str) -> Iterator[str]:
    name = f"cjledger_bench_rm_{uuid.uuid4().hex[:10]}"
    with admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield server_url(name)
    finally:
        with admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# ----------------------------------------------------------------------------- SQLite


def write_sqlite_log(path: str, events: int) -> dict[str, Any]:
    from application.batches import BatchApplication
    from infrastructure.persistence.store import eventsourcing_env

    with BatchApplication(env=eventsourcing_env(f"sqlite:///{path}")) as app:
        recorder: Any = app.recorder
        table = recorder.events_table_name
        mix: Counter[str] = Counter()
        size = 0
        with recorder.datastore.transaction(commit=True) as c:
            batch: list[tuple[str, int, str, bytes]] = []
            for row in generate(events):
                batch.append((row.originator_id, row.originator_version, row.topic, row.state))
                mix[row.topic.rsplit(".", 1)[-1]] += 1
                size += len(row.state)
                if len(batch) == 10_000:
                    c.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", batch)
                    batch.clear()
            c.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", batch)
    return {"events": events, "state_bytes": size, "event_types": dict(mix.most_common())}


# ----------------------------------------------------------------------------- measuring


def catch_up(url: str) -> dict[str, Any]:
    """Open the application on a copy of the log and time one full catch-up, with the
    collector tuned as ``cjledger projections run`` (and ``serve``) tune it."""
    import gc

    from application.batches import BatchApplication
    from infrastructure.gc_tuning import tune_gc
    from infrastructure.persistence.store import eventsourcing_env
    from projections.runner import ReadModelRunner

    thresholds = gc.get_threshold()
    with BatchApplication(env=eventsourcing_env(url)) as app:
        runner = ReadModelRunner(app)  # creates the read models' tables
        head = runner.head()
        tune_gc()
        load_before = os.getloadavg()[0]
        cpu_before = _process_cpu()
        started = time.perf_counter()
        runner.run_once()
        seconds = time.perf_counter() - started
        cpu = _process_cpu() - cpu_before
        load_after = os.getloadavg()[0]
        lag = runner.lag()
        if any(lag.values()):
            raise RuntimeError(f"catch-up ended with a lag: {lag}")
        rows = {
            view: runner.store.select(f"SELECT COUNT(*) AS n FROM {runner.store.qualify(view)}")[0][
                "n"
            ]
            for view in ("rm_batch_summary", "rm_comparisons", "rm_decision_audit", "rm_rankings")
        }
    gc.unfreeze()  # the next repeat starts as this one did
    gc.set_threshold(*thresholds)
    return {
        "events": head,
        "seconds": round(seconds, 3),
        "events_per_second": round(head / seconds),
        # the runner's own CPU (all its threads) per event: less load-sensitive than the rate
        "cpu_us_per_event": round(cpu / head * 1e6, 1),
        "rows": rows,
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(load_after, 2),
    }


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_postgres() -> tuple[list[float], dict[str, Any]]:
    template, facts = ensure_postgres_log(EVENTS)
    runs = []
    for index in range(REPEATS):
        with postgres_clone(template) as url:
            result = catch_up(url)
        progress(
            f"projections: postgres repeat {index + 1}: {result['events_per_second']:,} events/s, "
            f"{result['cpu_us_per_event']} us of CPU per event"
        )
        runs.append(result)
    return [float(r["events_per_second"]) for r in runs], {
        "log": facts,
        "template_database": template,
        "repeats": runs,
    }


def measure_sqlite() -> tuple[list[float], dict[str, Any]]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        log = f"{tmp}/log.db"
        progress(f"projections: writing a SQLite log of {SQLITE_EVENTS:,} events")
        facts = write_sqlite_log(log, SQLITE_EVENTS)
        for index in range(REPEATS):
            copy = f"{tmp}/repeat-{index}.db"
            shutil.copyfile(log, copy)
            result = catch_up(f"sqlite:///{copy}")
            os.remove(copy)
            progress(
                f"projections: sqlite repeat {index + 1}: {result['events_per_second']:,} "
                f"events/s, {result['cpu_us_per_event']} us of CPU per event"
            )
            runs.append(result)
    return [float(r["events_per_second"]) for r in runs], {"log": facts, "repeats": runs}


def main() -> None:
    quiet_logs()
    from projections.runner import ReadModelRunner

    details: dict[str, Any] = {
        "page_size": ReadModelRunner.__init__.__kwdefaults__["page_size"],  # type: ignore[index]
        "lanes": LANES,
        "templates": [
            {"essays": n, "mode": mode or "default", "failure_rate": rate}
            for n, mode, rate, _ in TEMPLATES
        ],
    }
    targets = []
    pg_samples, details["postgres"] = measure_postgres()
    targets.append(
        Target.at_least(
            f"catch-up, PostgreSQL, {EVENTS:,}-event log (events/s)", TARGET, pg_samples
        )
    )
    sqlite_samples, details["sqlite"] = measure_sqlite()
    targets.append(
        Target.at_least(
            f"catch-up, SQLite, {SQLITE_EVENTS:,}-event log (events/s)", None, sqlite_samples
        )
    )
    emit("projections", targets=targets, details=details)


if __name__ == "__main__":
    main()
