"""Small batches keep recording while a 3,000-essay batch closes its waves (PostgreSQL).

Two processes on one scratch PostgreSQL schema, each with its own ``BatchApplication``
(as two ``serve`` workers would be):

* **small**: keeps ``SMALL_BATCHES`` batches of 24 essays going and records their outcomes
  one per ``record_outcomes`` call (one transaction each), timing every call;
* **big**: one batch of ``BIG_ESSAYS`` essays in ``serial_bundle`` mode; it records each
  wave's outcomes in pages of 100 but the last, then records the last alone, which closes
  the wave (fit, decide, plan and append the next 1,500 pairs). ``CLOSINGS`` times.

Each small call is classed by when it ran: before the big process started (idle), while
the big batch closed a wave, or while it recorded its other outcomes. Reported: p50 / p99 /
max latency of the small calls in each class, and the closings themselves.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import statistics
import time
from typing import Any

from bench.harness import REPEATS, Target, emit, postgres_env, progress, quiet_logs

BIG_ESSAYS = int(os.environ.get("CJLEDGER_BENCH_RECORDING_ESSAYS", "3000"))
CLOSINGS = max(REPEATS, 5)
SMALL_BATCHES = 20
IDLE_SECONDS = 3.0


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def small_worker(env: dict[str, str], stop: Any, results: Any) -> None:
    from application.batches import BatchApplication, RegisterBatch
    from domain.values import ComparisonOutcome, Essay, SuccessDetails

    quiet_logs()
    rng = random.Random(5)
    calls: list[tuple[float, float]] = []  # (wall-clock start, seconds)
    with BatchApplication(env=env) as app:
        serial = 0
        open_pairs: dict[Any, list[Any]] = {}
        seen: dict[Any, int] = {}

        def start_batch() -> None:
            nonlocal serial
            serial += 1
            essays = tuple(Essay(f"s{serial}-e{i:02d}", f"hash-{i}") for i in range(24))
            batch_id = app.submit(RegisterBatch(f"small-{serial}", essays, seed=serial))
            open_pairs[batch_id] = []
            seen[batch_id] = 0

        def catch_up(batch_id: Any) -> None:
            from domain.batch import CJBatch

            for event in app.events.get(batch_id, gt=seen[batch_id]):
                seen[batch_id] = event.originator_version
                if isinstance(event, CJBatch.ComparisonsRequested):
                    open_pairs[batch_id].extend(event.pairs)
                if isinstance(event, CJBatch.Finalized):
                    del open_pairs[batch_id]
                    start_batch()
                    return

        for _ in range(SMALL_BATCHES):
            start_batch()
        for batch_id in list(open_pairs):
            catch_up(batch_id)
        while not stop.is_set():
            batch_id = rng.choice(sorted(open_pairs, key=str))
            if not open_pairs[batch_id]:
                catch_up(batch_id)
                continue
            pair = open_pairs[batch_id].pop()
            outcome = ComparisonOutcome(
                pair.comparison_id, SuccessDetails(pair.essay_a, 3, "bench", "sim", "bench")
            )
            started_at = time.time()
            started = time.perf_counter()
            app.record_outcomes([(batch_id, outcome)])
            calls.append((started_at, time.perf_counter() - started))
            if not open_pairs[batch_id]:
                catch_up(batch_id)
    results.put(json.dumps(calls))


def big_worker(env: dict[str, str], results: Any) -> None:
    from application.batches import BatchApplication
    from bench.bench_waves import JudgedBatch

    quiet_logs()
    windows: list[tuple[float, float]] = []
    fills: list[tuple[float, float]] = []
    with BatchApplication(env=env) as app:
        batch = JudgedBatch(app, BIG_ESSAYS)
        for _ in range(CLOSINGS):
            fill_started = time.time()
            while len(batch.open) > 1:
                page = [batch.outcome() for _ in range(min(100, len(batch.open) - 1))]
                app.record_outcomes(page)
            fills.append((fill_started, time.time()))
            last = [batch.outcome()]
            started = time.time()
            app.record_outcomes(last)
            windows.append((started, time.time()))
            batch.catch_up()
            progress(f"recording: big batch closed a wave in {windows[-1][1] - started:.3f} s")
    results.put(json.dumps({"closings": windows, "fills": fills}))


def main() -> None:
    quiet_logs()
    context = multiprocessing.get_context("spawn")
    with postgres_env("recording") as env:
        from application.batches import BatchApplication

        BatchApplication(env=env).close()  # create the tables once, before both start
        stop = context.Event()
        small_results = context.Queue()
        big_results = context.Queue()
        small = context.Process(target=small_worker, args=(env, stop, small_results))
        small.start()
        time.sleep(IDLE_SECONDS + 5.0)  # the small batches register, then run alone a while
        big_started = time.time()
        big = context.Process(target=big_worker, args=(env, big_results))
        big.start()
        big_report = json.loads(big_results.get())
        big.join()
        time.sleep(1.0)
        stop.set()
        calls = json.loads(small_results.get())
        small.join()

    closings = big_report["closings"]
    fills = big_report["fills"]

    def within(windows: list[list[float]], start: float, seconds: float) -> bool:
        return any(start < end and start + seconds > begin for begin, end in windows)

    idle = [s for start, s in calls if big_started - IDLE_SECONDS <= start < big_started]
    during_closing = [s for start, s in calls if within(closings, start, s)]
    during_fill = [
        s for start, s in calls if within(fills, start, s) and not within(closings, start, s)
    ]
    targets = []
    details: dict[str, Any] = {"big_essays": BIG_ESSAYS, "small_batches": SMALL_BATCHES}
    for name, samples in (
        ("idle", idle),
        ("during big closing", during_closing),
        ("during big recording", during_fill),
    ):
        if not samples:
            details[f"{name}_calls"] = 0
            continue
        ms = [sample * 1000.0 for sample in samples]
        details[name] = {
            "calls": len(ms),
            "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(percentile(ms, 0.99), 2),
            "max_ms": round(max(ms), 2),
        }
        targets.append(
            Target.at_most(
                f"small-batch p99 record, {name}",
                None,
                [percentile(ms, 0.99)],
                unit="ms",
                note=f"{len(ms)} calls",
            )
        )
    targets.append(
        Target.at_most(
            f"big closing @{BIG_ESSAYS} essays (concurrent)",
            None,
            [end - begin for begin, end in closings],
        )
    )
    emit("recording", targets, details)


if __name__ == "__main__":
    main()
