"""What every benchmark entry shares: repeats, statistics, targets, a scratch PostgreSQL
schema, peak memory, and the one JSON line an entry prints.

An **entry** is a module ``bench/bench_<name>.py`` with a ``main()`` that measures and
calls ``emit(...)``; ``bench/run.py`` finds it by its file name, runs it in a process of
its own (BLAS threads pinned to one, so figures do not depend on what else the machine
runs) and reads the JSON it printed. To add one:

    from bench.harness import Target, emit, repeat

    def main() -> None:
        samples = repeat(lambda: do_the_thing(), repeats=3)       # seconds, fixed seeds
        emit("my_entry", targets=[Target.at_most("thing (s)", 1.0, samples)],
             details={"anything": "else worth keeping"})

A ``Target`` holds the limit, the direction (``at_most`` for costs, ``at_least`` for
rates) and the min/median/max (and mean) of the samples; the runner prints each with its
ratio median ÷ limit and whether it is met. Entries measure; they never assert timings.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Set to 1 by the runner for every entry (numpy reads them once, at import).
from infrastructure import BLAS_THREAD_VARIABLES

POSTGRES_URL = os.environ.get(
    "CJLEDGER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

REPEATS = int(os.environ.get("CJLEDGER_BENCH_REPEATS", "3"))
"""Repeats per measurement (three by default; min/median/max are reported)."""


@dataclass(frozen=True)
class Summary:
    """min / median / max (and mean, which shows a cost that grows) of some samples."""

    min: float
    median: float
    max: float
    mean: float
    samples: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarise")
        return cls(
            min=min(samples),
            median=statistics.median(samples),
            max=max(samples),
            mean=statistics.fmean(samples),
            samples=len(samples),
        )

    def rounded(self, digits: int = 4) -> dict[str, float | int]:
        return {
            "min": _round(self.min, digits),
            "median": _round(self.median, digits),
            "max": _round(self.max, digits),
            "mean": _round(self.mean, digits),
            "samples": self.samples,
        }


@dataclass(frozen=True)
class Target:
    """One line of the printed table: a figure, its limit and which side is good.

    ``limit`` may be ``None`` for a figure that is measured and reported without a target.
    """

    name: str
    limit: float | None
    unit: str
    better: str  # "lower" or "higher"
    measured: Summary
    note: str = ""

    @classmethod
    def at_most(
        cls,
        name: str,
        limit: float | None,
        samples: Sequence[float],
        unit: str = "s",
        note: str = "",
    ) -> Target:
        return cls(name, limit, unit, "lower", Summary.of(samples), note)

    @classmethod
    def at_least(
        cls,
        name: str,
        limit: float | None,
        samples: Sequence[float],
        unit: str = "/s",
        note: str = "",
    ) -> Target:
        return cls(name, limit, unit, "higher", Summary.of(samples), note)

    @property
    def ratio(self) -> float | None:
        """Median ÷ limit: at most 1 is met for a cost, at least 1 for a rate."""
        if self.limit is None or self.limit == 0:
            return None
        return self.measured.median / self.limit

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio <= 1.0 if self.better == "lower" else ratio >= 1.0

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "limit": self.limit,
            "unit": self.unit,
            "better": self.better,
            **self.measured.rounded(),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Stopwatch:
    """Collects elapsed seconds of repeated runs: ``with watch: ...``."""

    samples: list[float] = field(default_factory=list)
    _started: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.samples.append(time.perf_counter() - self._started)


def repeat(run: Callable[[], object], repeats: int = REPEATS, warmup: int = 0) -> list[float]:
    """Seconds per call of ``run``, ``repeats`` times (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        run()
    watch = Stopwatch()
    for _ in range(repeats):
        with watch:
            run()
    return watch.samples


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def quiet_logs() -> None:
    """Entries print JSON on stdout; the application's info logs would only slow them."""
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


@contextmanager
def postgres_env(prefix: str) -> Iterator[dict[str, str]]:
    """An eventsourcing environment on a fresh schema of the bench server, dropped after."""
    import psycopg
    from psycopg import sql

    from infrastructure.persistence.store import ensure_schema, eventsourcing_env, postgres_conninfo

    schema = f"bench_{prefix}_{uuid.uuid4().hex[:12]}"
    env = eventsourcing_env(f"{POSTGRES_URL}?schema={schema}")
    ensure_schema(env)
    try:
        yield env
    finally:
        with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


RAW_INSERT_SECONDS = 3.0


def raw_insert_commit_rate(conninfo: str, seconds: float = RAW_INSERT_SECONDS) -> float:
    """The server's raw single-row INSERT+COMMIT rate, rows/s: what the application path
    (``application``) and the processes (``e2e``) are compared with.

    One connection in autocommit mode inserts one event-sized row per transaction into a
    scratch table shaped like the events table (``bigserial`` key, ``uuid``, version,
    topic, ``bytea`` state), ``seconds`` long. Autocommit sends the INSERT and its COMMIT
    in one round trip: the fastest a client can commit rows one by one, so the baseline
    is not slowed by a second round trip per row. The table is a real (logged) table, so
    every commit waits for its WAL flush as an event append does; it is dropped after.
    """
    import psycopg
    from psycopg import sql

    table = sql.Identifier(f"bench_raw_insert_{uuid.uuid4().hex[:12]}")
    payload = b'{"comparison_id":"' + b"x" * 32 + b'","outcome":{"winner":"essay-0001"}}'
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigserial PRIMARY KEY, originator_id uuid NOT NULL, "
                "originator_version bigint NOT NULL, topic text NOT NULL, state bytea NOT NULL)"
            ).format(table)
        )
        statement = sql.SQL(
            "INSERT INTO {} (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s)"
        ).format(table)
        originator = uuid.uuid4()
        rows = 0
        try:
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                for _ in range(50):
                    rows += 1
                    conn.execute(statement, (originator, rows, "bench:Raw", payload))
            return rows / (time.perf_counter() - started)
        finally:
            conn.execute(sql.SQL("DROP TABLE {}").format(table))


def emit(entry: str, targets: Sequence[Target] = (), details: dict[str, Any] | None = None) -> None:
    """Print the entry's result as one JSON line (the runner reads the last line)."""
    document = {
        "entry": entry,
        "targets": [target.as_json() for target in targets],
        "details": details or {},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(json.dumps(document), flush=True)


def progress(message: str) -> None:
    """A line on stderr, so a long entry shows it is alive (the runner passes it through)."""
    print(f"  {message}", file=sys.stderr, flush=True)


def _round(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}") if value else 0.0


__all__ = [
    "BLAS_THREAD_VARIABLES",
    "REPEATS",
    "Stopwatch",
    "Summary",
    "Target",
    "emit",
    "peak_rss_mb",
    "postgres_env",
    "progress",
    "quiet_logs",
    "repeat",
]
