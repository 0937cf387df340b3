"""Wave closings vs batch size (24 / 200 / 1,000 / 3,000 / 10,000 essays) on PostgreSQL.

What a user's batch pays, through ``BatchApplication`` as shipped (aggregate cache,
snapshots) on a scratch PostgreSQL schema: one batch per size, ``serial_bundle`` mode (a
wave is one matching round, n/2 pairs), a budget that never runs out and stability off,
so it keeps asking. Outcomes come from a seeded judge with known abilities and are
recorded the way the broker consumer records them: pages of ``PAGE`` outcomes per
``record_outcomes`` call (one transaction each).

Per size, ``REPEATS`` waves are closed. Reported:

* **wave closing**: the call that records a wave's last outcome, which fits the scores,
  decides, plans the next wave and appends it (min/median/max over the waves);
* **mean cost per outcome including closings**: every call's time over the wave divided
  by its outcomes (a median would hide the closing);
* **peak RSS** of the process that ran the size (each size runs in a fresh process).

Targets (issue 11): closing ≤ 1 s at 1,000 essays, ≤ 10 s at 10,000; peak RSS ≤ 1 GiB at
10,000. ``CJLEDGER_BENCH_WAVES_ESSAYS`` overrides the sizes (e.g. ``"24 1000"``).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from typing import Any
from uuid import UUID

from bench.harness import REPEATS, Target, emit, peak_rss_mb, postgres_env, progress, quiet_logs

SIZES = [
    int(n) for n in os.environ.get("CJLEDGER_BENCH_WAVES_ESSAYS", "24 200 1000 3000 10000").split()
]
PAGE = 100
CLOSING_TARGETS = {1000: 1.0, 10000: 10.0}
MEMORY_TARGET_MB = {10000: 1024.0}


class JudgedBatch:
    """A batch under test as the outside world sees it: its open comparisons, judged by
    known abilities (seeded), read back from the events the application appends."""

    def __init__(self, app: Any, essays: int, seed: int = 11) -> None:
        from application.batches import RegisterBatch
        from domain.policy import BatchPolicy
        from domain.values import BatchingMode, Essay

        self.app = app
        self.rng = random.Random(seed)
        self.ability = {f"essay-{i:05d}": self.rng.gauss(0.0, 1.5) for i in range(essays)}
        policy = BatchPolicy(
            max_pairs_cap=10**8,
            stability_threshold=0.0,
            min_successes_for_stability=10**9,  # never stable: the batch keeps asking
        )
        self.id: UUID = app.submit(
            RegisterBatch(
                f"bench-waves-{essays}",
                tuple(Essay(essay_id, f"hash-{essay_id}") for essay_id in self.ability),
                requested_mode=BatchingMode.SERIAL_BUNDLE,
                policy=policy,
                seed=seed,
            )
        )
        self.version = 0
        self.open: list[Any] = []
        self.catch_up()

    def catch_up(self) -> int:
        from domain.batch import CJBatch

        new = list(self.app.events.get(self.id, gt=self.version))
        for event in new:
            if isinstance(event, CJBatch.ComparisonsRequested):
                self.open.extend(event.pairs)
            if isinstance(event, CJBatch.Finalized):
                raise RuntimeError("the bench batch finalized; it should keep asking")
        if new:
            self.version = new[-1].originator_version
        return len(new)

    def outcome(self) -> tuple[UUID, Any]:
        from domain.values import ComparisonOutcome, SuccessDetails

        pair = self.open.pop()
        margin = self.ability[pair.essay_a] - self.ability[pair.essay_b]
        a_wins = self.rng.random() < 1.0 / (1.0 + math.exp(-margin))
        winner = pair.essay_a if a_wins else pair.essay_b
        return self.id, ComparisonOutcome(
            pair.comparison_id, SuccessDetails(winner, 3, "bench", "simulated", "bench-judge")
        )

    def close_one_wave(self) -> dict[str, float]:
        """Record the open wave page by page, the last outcome alone; time every call."""
        outcomes = len(self.open)
        total = 0.0
        while len(self.open) > 1:
            page = [self.outcome() for _ in range(min(PAGE, len(self.open) - 1))]
            started = time.perf_counter()
            self.app.record_outcomes(page)
            total += time.perf_counter() - started
        last = [self.outcome()]
        started = time.perf_counter()
        self.app.record_outcomes(last)
        closing = time.perf_counter() - started
        total += closing
        if self.catch_up() < 2 or not self.open:
            raise RuntimeError("the last outcome did not close the wave and open another")
        return {"closing_s": closing, "outcomes": outcomes, "mean_s_per_outcome": total / outcomes}


def measure_size(essays: int) -> dict[str, Any]:
    """Run in a fresh process: register, close ``REPEATS`` waves, report."""
    from application.batches import BatchApplication

    quiet_logs()
    with postgres_env("waves") as env, BatchApplication(env=env) as app:
        started = time.perf_counter()
        batch = JudgedBatch(app, essays)
        register_s = time.perf_counter() - started
        waves = []
        for wave in range(1, REPEATS + 1):
            waves.append(batch.close_one_wave())
            progress(
                f"waves: {essays} essays, wave {wave} closed in {waves[-1]['closing_s']:.3f} s"
            )
        snapshots = app.snapshots.recorder.select_events(batch.id) if app.snapshots else []
        return {
            "essays": essays,
            "register_and_first_wave_s": register_s,
            "waves": waves,
            "events": batch.version,
            "snapshots_kept": len(snapshots),
            "snapshot_bytes": [len(s.state) for s in snapshots],
            "peak_rss_mb": peak_rss_mb(),
        }


def main() -> None:
    sizes = []
    targets = []
    for essays in SIZES:
        progress(f"waves: {essays} essays ...")
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_waves", "--essays", str(essays)],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        size = json.loads(proc.stdout.strip().splitlines()[-1])
        sizes.append(size)
        closings = [wave["closing_s"] for wave in size["waves"]]
        per_outcome = [wave["mean_s_per_outcome"] * 1000.0 for wave in size["waves"]]
        targets.append(
            Target.at_most(f"wave closing @{essays} essays", CLOSING_TARGETS.get(essays), closings)
        )
        targets.append(
            Target.at_most(
                f"mean per outcome incl. closing @{essays}", None, per_outcome, unit="ms"
            )
        )
        targets.append(
            Target.at_most(
                f"peak RSS @{essays} essays",
                MEMORY_TARGET_MB.get(essays),
                [size["peak_rss_mb"]],
                unit="MiB",
                note="one process per size",
            )
        )
    emit("waves", targets, {"page_size": PAGE, "sizes": sizes})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--essays":
        print(json.dumps(measure_size(int(sys.argv[2]))), flush=True)
    else:
        main()
