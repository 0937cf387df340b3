"""HTTP read latency of ``cjledger api``: rankings of one batch among 10,000.

Fills a SQLite store's read models with ``BATCHES`` finalized batches (rows written
straight into the read-model tables: replaying 10,000 real batches would measure the
runner, not the API), starts the real ``cjledger api --store FILE`` process, and reads
``GET /batches/{id}/rankings`` for random batches from this, second, process. Reports
min / median / p99 / max per repeat, in milliseconds. ``measure_rankings_reads`` is the
function other benchmarks can call.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Target, emit
from infrastructure.bootstrap import System
from infrastructure.settings import Settings
from projections.store import view_name

BATCHES = int(os.environ.get("BENCH_API_BATCHES", "10000"))
ESSAYS = 24
READS = int(os.environ.get("BENCH_API_READS", "1000"))
REPEATS = 3


def fill_read_models(store: Path, batches: int) -> list[str]:
    """``batches`` scored batches of ``ESSAYS`` essays in the read models; their ids."""
    ids = [str(uuid.uuid4()) for _ in range(batches)]
    with System(Settings(database_url=f"sqlite:///{store}")) as system:
        system.runner()  # tables and views
        rm = system.read_model_store
        summary = rm.qualify(f"rm_batch_summary_g{rm.active_generation('batch_summary')}")
        rankings = rm.qualify(f"rm_rankings_g{rm.active_generation('rankings')}")
        now = "2026-01-01T00:00:00+00:00"
        with rm.write_transaction() as c:
            c.executemany(
                f"INSERT INTO {summary} (batch_id, external_ref, status, essays, anchors, budget, "
                "comparisons_requested, successes, failures, waves, "
                "decisions, created_at, updated_at) "
                "VALUES (?, ?, 'scored', ?, 0, 120, 120, 120, 0, 5, 5, ?, ?)",
                [(b, f"bench-{i}", ESSAYS, now, now) for i, b in enumerate(ids)],
            )
            c.executemany(
                f"INSERT INTO {rankings} (batch_id, essay_id, score, se, rank, comparisons) "
                "VALUES (?, ?, ?, 0.5, ?, 10)",
                [(b, f"e{r}", 1.0 - r / ESSAYS, r) for b in ids for r in range(1, ESSAYS + 1)],
            )
        assert view_name("rankings")
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure_rankings_reads(
    base_url: str, ids: list[str], reads: int = READS, repeats: int = REPEATS
) -> list[dict[str, float]]:
    """Latency (ms) of ``GET /batches/{id}/rankings`` for random ids, per repeat."""
    rng = random.Random(1)
    results = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for _ in range(repeats):
            samples = []
            for _ in range(reads):
                batch_id = rng.choice(ids)
                started = time.perf_counter()
                response = client.get(f"/batches/{batch_id}/rankings")
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200 and len(response.json()["items"]) == ESSAYS
            samples.sort()
            results.append(
                {
                    "min": round(samples[0], 3),
                    "median": round(statistics.median(samples), 3),
                    "p99": round(samples[int(len(samples) * 0.99) - 1], 3),
                    "max": round(samples[-1], 3),
                    "mean": round(statistics.fmean(samples), 3),
                }
            )
    return results


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench-api.db"
        ids = fill_read_models(store, BATCHES)
        port = free_port()
        env = {**os.environ, "CJLEDGER_LOG_LEVEL": "WARNING"}
        api = subprocess.Popen(
            [sys.executable, "-m", "infrastructure.cli.main", "api", "--store", str(store),
             "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("cjledger api did not start")
                time.sleep(0.2)
            repeats = measure_rankings_reads(base, ids)
        finally:
            api.terminate()
            api.wait(10)
    p99s = [r["p99"] for r in repeats]
    return {
        "batches": BATCHES,
        "essays_per_batch": ESSAYS,
        "reads_per_repeat": READS,
        "rankings_read_ms": repeats,
        "p99_ms": {"min": min(p99s), "median": statistics.median(p99s), "max": max(p99s)},
    }


def report() -> None:
    """The runner's entry point: the p99 of each repeat against the issue's 10 ms."""
    result = main()
    repeats = result["rankings_read_ms"]
    emit(
        "api",
        targets=[
            Target.at_most("rankings read p99 (ms)", 10.0, [r["p99"] for r in repeats], "ms"),
            Target.at_most("rankings read median (ms)", None, [r["median"] for r in repeats], "ms"),
        ],
        details=result,
    )


if __name__ == "__main__":
    report()
