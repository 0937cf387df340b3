"""Outcomes/s through the application path vs the server's raw INSERT+COMMIT rate (PostgreSQL).

Issue 11 §2: "outcomes/s through the full application path (outcome, decision, next
wave) ≥ the raw single-row INSERT+COMMIT rate of the same server measured in the same
run". This entry measures both, side by side, on one scratch schema:

* **raw INSERT+COMMIT**: ``bench.harness.raw_insert_commit_rate``: one connection in
  autocommit mode inserts one event-sized row per transaction (INSERT and COMMIT in one
  round trip) for three seconds; the rate is rows/s. Measured before every repeat of the
  application path, so both see the same server and the same load.
* **application path**: one ``BatchApplication`` as ``serve`` runs it (aggregate cache,
  snapshots, content store) with ``BATCHES`` batches in flight (24 / 48 / 100 essays,
  ``serial_bundle``, the default stopping rules, a budget of 4 comparisons per essay).
  Outcomes of every open comparison of every batch are shuffled together and recorded in
  groups of 100-1,000 per ``record_outcomes`` call (one transaction each), the way the
  broker consumer groups what arrives; ~1 % are duplicates of one of the last 1,000
  outcomes sent (redeliveries).
  Waves close inside the groups, so a group pays for the decisions, the next waves and
  the finalizations it causes. A finalized batch is replaced by a new one (registration
  is not timed). Only the time inside ``record_outcomes`` is counted.

Reported per repeat (``OUTCOMES`` outcomes each): outcomes/s, the ratio to the raw rate
of the same repeat (target ≥ 1), the **mean** cost per outcome including wave closings
(total time ÷ outcomes), the CPU time this process spent per outcome (what a loaded
machine distorts least), and how many wave closings, decisions and finalizations the
outcomes caused. ``CJLEDGER_BENCH_PROFILE=FILE`` also writes a cProfile of the timed
calls (``python -m pstats FILE``).
"""

from __future__ import annotations

import cProfile
import os
import random
import statistics
import time
from typing import Any
from uuid import UUID

from bench.harness import (
    REPEATS,
    Target,
    emit,
    postgres_env,
    progress,
    quiet_logs,
    raw_insert_commit_rate,
)

BATCHES = int(os.environ.get("CJLEDGER_BENCH_APPLICATION_BATCHES", "30"))
OUTCOMES = int(os.environ.get("CJLEDGER_BENCH_APPLICATION_OUTCOMES", "10000"))
SIZES = (24, 48, 100)
GROUP_MIN, GROUP_MAX = 100, 1000
DUPLICATE_FRACTION = 0.01
RECENT = 1000  # a duplicate repeats one of the last RECENT outcomes sent
PROFILE = os.environ.get("CJLEDGER_BENCH_PROFILE", "")


class Workload:
    """Batches in flight as the outside world sees them: their open comparisons, judged by
    seeded abilities, read back from the events the application appends."""

    def __init__(self, app: Any, seed: int = 3) -> None:
        self.app = app
        self.rng = random.Random(seed)
        self.serial = 0
        self.version: dict[UUID, int] = {}
        self.ability: dict[UUID, dict[str, float]] = {}
        self.open: list[tuple[UUID, Any]] = []  # (batch id, pair)
        self.sent: list[tuple[UUID, Any]] = []  # outcomes already recorded (for duplicates)
        self.counts = {"closings": 0, "finalized": 0, "registered": 0}
        for _ in range(BATCHES):
            self.register()

    def register(self) -> None:
        from application.batches import RegisterBatch
        from domain.policy import BatchPolicy
        from domain.values import BatchingMode, Essay

        self.serial += 1
        essays = SIZES[self.serial % len(SIZES)]
        ids = [f"b{self.serial}-e{i:03d}" for i in range(essays)]
        batch_id: UUID = self.app.submit(
            RegisterBatch(
                f"bench-application-{self.serial}",
                tuple(Essay(essay_id, f"hash-{essay_id}") for essay_id in ids),
                requested_mode=BatchingMode.SERIAL_BUNDLE,
                policy=BatchPolicy(max_pairs_cap=4 * essays),
                seed=self.serial,
            )
        )
        self.ability[batch_id] = {essay_id: self.rng.gauss(0.0, 1.5) for essay_id in ids}
        self.version[batch_id] = 0
        self.counts["registered"] += 1
        self.catch_up(batch_id)

    def catch_up(self, batch_id: UUID) -> None:
        from domain.batch import CJBatch

        for event in self.app.events.get(batch_id, gt=self.version[batch_id]):
            self.version[batch_id] = event.originator_version
            if isinstance(event, CJBatch.ComparisonsRequested):
                self.open.extend((batch_id, pair) for pair in event.pairs)
            elif isinstance(event, CJBatch.ContinuationDecided):
                self.counts["closings"] += 1
            elif isinstance(event, CJBatch.Finalized):
                self.counts["finalized"] += 1
                del self.version[batch_id]
                self.register()
                return

    def group(self, size: int) -> list[tuple[UUID, Any]]:
        from domain.values import ComparisonOutcome, SuccessDetails

        items = []
        for _ in range(min(size, len(self.open))):
            if self.sent and self.rng.random() < DUPLICATE_FRACTION:
                items.append(self.rng.choice(self.sent[-RECENT:]))  # a redelivery
                continue
            batch_id, pair = self.open.pop(self.rng.randrange(len(self.open)))
            ability = self.ability[batch_id]
            margin = ability[pair.essay_a] - ability[pair.essay_b]
            a_wins = self.rng.random() < 1.0 / (1.0 + 2.718281828 ** (-margin))
            outcome = ComparisonOutcome(
                pair.comparison_id,
                SuccessDetails(
                    pair.essay_a if a_wins else pair.essay_b,
                    3,
                    "the winner argues more clearly",
                    "simulated",
                    "bench-judge",
                ),
            )
            items.append((batch_id, outcome))
            self.sent.append((batch_id, outcome))
        return items


def measure(app: Any, workload: Workload, profiler: cProfile.Profile | None) -> dict[str, Any]:
    before = dict(workload.counts)
    recorded = 0
    seconds = cpu = 0.0
    groups: list[float] = []  # seconds per outcome, per group
    while recorded < OUTCOMES:
        items = workload.group(workload.rng.randint(GROUP_MIN, GROUP_MAX))
        if not items:
            raise RuntimeError("no open comparison left")
        if profiler is not None:
            profiler.enable()
        started, cpu_started = time.perf_counter(), time.process_time()
        app.record_outcomes(items)
        elapsed = time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        if profiler is not None:
            profiler.disable()
        seconds += elapsed
        recorded += len(items)
        groups.append(elapsed / len(items))
        for batch_id in {batch_id for batch_id, _ in items}:
            if batch_id in workload.version:
                workload.catch_up(batch_id)
    after = workload.counts
    return {
        "outcomes": recorded,
        "groups": len(groups),
        "seconds": seconds,
        "outcomes_per_s": recorded / seconds,
        "mean_us_per_outcome": seconds / recorded * 1e6,
        "cpu_us_per_outcome": cpu / recorded * 1e6,
        "group_us_per_outcome": {
            "min": min(groups) * 1e6,
            "median": statistics.median(groups) * 1e6,
            "max": max(groups) * 1e6,
        },
        "wave_closings": after["closings"] - before["closings"],
        "finalized": after["finalized"] - before["finalized"],
    }


def main() -> None:
    from application.batches import BatchApplication
    from infrastructure.persistence.store import postgres_conninfo

    quiet_logs()
    profiler = cProfile.Profile() if PROFILE else None
    runs = []
    with postgres_env("application") as env, BatchApplication(env=env) as app:
        workload = Workload(app)
        warm = measure_warmup(app, workload)
        for repeat in range(1, REPEATS + 1):
            raw = raw_insert_commit_rate(postgres_conninfo(env))
            run = measure(app, workload, profiler)
            run["raw_insert_commit_per_s"] = raw
            run["ratio_to_raw"] = run["outcomes_per_s"] / raw
            runs.append(run)
            progress(
                f"application: repeat {repeat}: {run['outcomes_per_s']:.0f} outcomes/s, "
                f"raw INSERT+COMMIT {raw:.0f}/s, ratio {run['ratio_to_raw']:.2f}, "
                f"CPU {run['cpu_us_per_outcome']:.0f} µs/outcome, "
                f"{run['wave_closings']} closings, {run['finalized']} finalized"
            )
    if profiler is not None:
        profiler.dump_stats(PROFILE)
    targets = [
        Target.at_least(
            "record_outcomes ÷ raw INSERT+COMMIT",
            1.0,
            [run["ratio_to_raw"] for run in runs],
            unit="×",
            note="same server, same run",
        ),
        Target.at_least(
            "outcomes/s through record_outcomes", None, [run["outcomes_per_s"] for run in runs]
        ),
        Target.at_least(
            "raw single-row INSERT+COMMIT", None, [run["raw_insert_commit_per_s"] for run in runs]
        ),
        Target.at_most(
            "mean per outcome incl. closings",
            None,
            [run["mean_us_per_outcome"] for run in runs],
            unit="µs",
        ),
        Target.at_most(
            "CPU per outcome incl. closings",
            None,
            [run["cpu_us_per_outcome"] for run in runs],
            unit="µs",
            note="this process only; the server's is apart",
        ),
    ]
    details = {
        "batches_in_flight": BATCHES,
        "essays_per_batch": list(SIZES),
        "group_size": [GROUP_MIN, GROUP_MAX],
        "duplicate_fraction": DUPLICATE_FRACTION,
        "outcomes_per_repeat": OUTCOMES,
        "warmup": warm,
        "runs": runs,
    }
    emit("application", targets, details)


def measure_warmup(app: Any, workload: Workload) -> dict[str, Any]:
    """Untimed: one pass of groups so connections, caches and statements are warm."""
    for _ in range(3):
        items = workload.group(workload.rng.randint(GROUP_MIN, GROUP_MAX))
        app.record_outcomes(items)
        for batch_id in {batch_id for batch_id, _ in items}:
            if batch_id in workload.version:
                workload.catch_up(batch_id)
    return dict(workload.counts)


if __name__ == "__main__":
    main()
