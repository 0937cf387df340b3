"""Does recording an outcome get slower as a batch's history grows? SQLite and PostgreSQL.

One batch of 120 essays in ``serial_bundle`` mode asks for waves of 60 pairs (one matching
round) under a 6,000-pair budget, with stability checks off so it keeps running. Outcomes
go through ``BatchApplication.record_outcome``, one outcome and one append per call (the
dearest way; a consumer may also record a page of messages in one ``record_outcomes``).
Timed: ``WINDOW`` calls in a row at ~50 events of history (after ``WARMUP`` untimed calls
that open connections), and again at ~5,000; the history in between is filled one wave per
``record_outcomes`` call.

Reported per store, for the application as shipped (aggregate cache + snapshots):

* median and p95 milliseconds of all timed calls at each point, and the ratios large/small
  (target <= 1.2);
* the same for the calls that closed a wave apart, because those also fit Bradley-Terry
  scores and plan the next wave, which is O(comparisons) by design, once per wave;
* the first outcome a fresh process records (nothing cached: latest snapshot + tail).

For comparison, on the same store and history, fewer calls through applications without
the cache (``snapshots_only``) and without cache or snapshots (``replay``), and what one
deep copy of the batch costs (the library's default for a cached aggregate).

Run with ``make bench BENCH=store`` (or ``uv run python -m bench.bench_store``). Prints one
JSON document and writes it to ``bench/results/store.json``. PostgreSQL:
``CJLEDGER_BENCH_POSTGRES_URL`` (default the local server); the bench creates a schema of
its own and drops it afterwards.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import structlog

from application.batches import BatchApplication, RegisterBatch
from bench.harness import postgres_env
from domain.batch import CJBatch
from domain.policy import BatchPolicy
from domain.values import BatchingMode, ComparisonOutcome, Essay, Pair, SuccessDetails
from infrastructure.persistence.store import (
    eventsourcing_env,
)

RESULTS = Path(__file__).resolve().parent / "results"
ESSAYS = 120
POLICY = BatchPolicy(
    max_pairs_cap=6000,
    stability_threshold=0.0,
    min_successes_for_stability=10**9,  # never "stable": the batch runs to its budget
)
SMALL_AT = 50
LARGE_AT = 5_000
WINDOW = 150  # record_outcome calls timed at each point
WARMUP = 20  # untimed calls first: connections opened, statements prepared
COMPARISON_WINDOW = 25  # calls timed for the configurations shown for comparison
COMPARISONS = {
    "snapshots_only": {"AGGREGATE_CACHE_MAXSIZE": ""},
    "replay": {"AGGREGATE_CACHE_MAXSIZE": "", "IS_SNAPSHOTTING_ENABLED": "no"},
}


class Batch:
    """The batch under test, as the outside world sees it: its open comparisons."""

    def __init__(self, app: BatchApplication) -> None:
        self.app = app
        self.rng = random.Random(7)
        self.id: UUID = app.submit(
            RegisterBatch(
                "bench-store",
                tuple(Essay(f"essay-{i:03d}", f"hash-{i:03d}") for i in range(ESSAYS)),
                requested_mode=BatchingMode.SERIAL_BUNDLE,
                policy=POLICY,
            )
        )
        self.version = 0
        self.open: list[Pair] = []
        self.catch_up()

    def catch_up(self) -> int:
        """Read the events appended since last time; return how many there were."""
        new = list(self.app.events.get(self.id, gt=self.version))
        for event in new:
            if isinstance(event, CJBatch.ComparisonsRequested):
                self.open.extend(event.pairs)
            assert not isinstance(event, CJBatch.Finalized), "the batch ended early"
        if new:
            self.version = new[-1].originator_version
        return len(new)

    def outcome(self) -> ComparisonOutcome:
        pair = self.open.pop()
        a_wins = self.rng.random() < (0.75 if pair.essay_a < pair.essay_b else 0.25)
        winner = pair.essay_a if a_wins else pair.essay_b
        return ComparisonOutcome(
            pair.comparison_id, SuccessDetails(winner, 3, "bench", "simulated", "bench")
        )

    def fill_to(self, version: int) -> None:
        """Record whole waves (one call each) until the history reaches ``version``."""
        while self.version + len(self.open) < version:
            outcomes = [(self.id, self.outcome()) for _ in range(len(self.open))]
            self.app.record_outcomes(outcomes)
            self.catch_up()
        while self.version < version:  # the last part, in one call
            take = min(version - self.version, len(self.open))
            self.app.record_outcomes([(self.id, self.outcome()) for _ in range(take)])
            self.catch_up()

    def time_calls(self, app: BatchApplication, calls: int) -> tuple[list[float], list[float]]:
        """Time ``calls`` record_outcome calls; split into (ordinary, wave-closing)."""
        ordinary: list[float] = []
        closing: list[float] = []
        for _ in range(calls):
            outcome = self.outcome()
            started = time.perf_counter()
            app.record_outcome(self.id, outcome)
            elapsed = (time.perf_counter() - started) * 1000.0
            (closing if self.catch_up() > 1 else ordinary).append(elapsed)
        return ordinary, closing


def stats(samples: list[float]) -> dict[str, float | int]:
    if not samples:
        return {"calls": 0}
    ordered = sorted(samples)
    return {
        "calls": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "max_ms": round(ordered[-1], 3),
    }


def ratio(large: dict[str, Any], small: dict[str, Any], key: str) -> float | None:
    if key not in large or key not in small:
        return None
    return round(float(large[key]) / float(small[key]), 2)


def measure_point(batch: Batch, env: dict[str, str]) -> dict[str, Any]:
    history = batch.version
    ordinary, closing = batch.time_calls(batch.app, WINDOW)
    point: dict[str, Any] = {
        "history_events": history,
        "all_calls": stats(ordinary + closing),
        "ordinary_calls": stats(ordinary),
        "wave_closing_calls": stats(closing),
    }
    with BatchApplication(env=env) as fresh:
        started = time.perf_counter()
        fresh.record_outcome(batch.id, batch.outcome())
        point["fresh_process_first_call_ms"] = round((time.perf_counter() - started) * 1000, 2)
    batch.catch_up()
    for name, overrides in COMPARISONS.items():
        with BatchApplication(env={**env, **overrides}) as other:
            ordinary, closing = batch.time_calls(other, COMPARISON_WINDOW)
            point[name] = stats(ordinary + closing)
    started = time.perf_counter()
    batch.app.get_batch(batch.id)  # a deep copy of the cached batch
    point["deepcopy_of_cached_batch_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return point


def measure(env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    with BatchApplication(env=env) as app:
        batch = Batch(app)
        batch.fill_to(SMALL_AT - WARMUP)
        batch.time_calls(app, WARMUP)
        small = measure_point(batch, env)
        batch.fill_to(LARGE_AT)
        large = measure_point(batch, env)
        snapshots = (
            app.snapshots.recorder.select_events(batch.id, desc=True) if app.snapshots else []
        )
        comparisons = len(app.get_batch(batch.id).comparisons)
    result: dict[str, Any] = {"small": small, "large": large}
    result["ratio_large_to_small"] = {
        "median_all_calls": ratio(large["all_calls"], small["all_calls"], "median_ms"),
        "p95_all_calls": ratio(large["all_calls"], small["all_calls"], "p95_ms"),
        "median_ordinary_calls": ratio(
            large["ordinary_calls"], small["ordinary_calls"], "median_ms"
        ),
        "median_wave_closing_calls": ratio(
            large["wave_closing_calls"], small["wave_closing_calls"], "median_ms"
        ),
        "median_snapshots_only": ratio(
            large["snapshots_only"], small["snapshots_only"], "median_ms"
        ),
        "median_replay": ratio(large["replay"], small["replay"], "median_ms"),
    }
    result["final_history_events"] = batch.version
    result["comparisons_requested"] = comparisons
    result["snapshots_stored"] = len(snapshots)
    result["latest_snapshot_bytes"] = len(snapshots[0].state) if snapshots else 0
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


@contextmanager
def sqlite_store() -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        yield eventsourcing_env(f"sqlite:///{tmp}/bench-store.db")


def postgres_store() -> Any:
    return postgres_env("store")


def main() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    report: dict[str, Any] = {
        "essays": ESSAYS,
        "mode": "serial_bundle, waves of 60 pairs",
        "budget": POLICY.max_pairs_cap,
        "timed_calls_per_point": WINDOW,
        "comparison_calls_per_point": COMPARISON_WINDOW,
        "target_ratio": 1.2,
        "shipped_settings": {
            key: BatchApplication.env[key]
            for key in ("AGGREGATE_CACHE_MAXSIZE", "SNAPSHOT_INTERVAL")
        },
    }
    with sqlite_store() as env:
        report["sqlite"] = measure(env)
    try:
        with postgres_store() as env:
            report["postgres"] = measure(env)
    except psycopg.OperationalError as error:
        report["postgres"] = {"skipped": f"PostgreSQL unreachable: {error}"}
    document = json.dumps(report, indent=2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "store.json").write_text(document + "\n")
    print(document)


if __name__ == "__main__":
    main()
