"""End to end through real processes: outcomes per second with ``serve`` + ``lps-worker``.

Each repeat takes a fresh PostgreSQL database and queue prefix, registers ``BATCHES``
batches (their first waves wait in the log), starts ``S`` ``cjledger serve`` and ``W``
``cjledger lps-worker`` processes with the simulated provider, and waits until every
batch is finalized. The rate is outcome events recorded ÷ (time of the last
``ComparisonCompleted`` − time the first wave was published), so it covers dispatching,
the broker both ways, the worker, recording, decisions, next waves and finalizations.

In the same repeat it measures the server's raw single-row ``INSERT`` + ``COMMIT`` rate
(``bench.harness.raw_insert_commit_rate``, the same yardstick as the ``application``
entry: one connection, one event-sized row per transaction), and reports ratio =
outcomes/s ÷ inserts/s.

Layouts (the key in the results):

* ``1+1`` and ``2+2``: S serve + W worker processes, each serve also running the
  read-model projections in a thread (the default, ``CJLEDGER_SERVE_PROJECTIONS=true``);
* ``1+1+p``: the documented split deployment: one serve with
  ``CJLEDGER_SERVE_PROJECTIONS=false``, one worker, and one ``cjledger projections run``
  process following the log beside them.

Every repeat also records how far the projections were behind the log when the last
batch was finalized (``projection_lag_at_end``, notifications) and how long they took to
reach the head after that (``projections_caught_up_s``), so a layout cannot look faster
by leaving the read models behind.

Run alone with ``uv run python -m bench.run e2e``; ``CJLEDGER_BENCH_E2E_LAYOUTS="1+1"``
runs only the layouts named (space-separated keys), e.g. to compare two commits run after
run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import REPEATS, Target, emit, progress, quiet_logs, raw_insert_commit_rate

BATCHES = int(os.environ.get("CJLEDGER_BENCH_E2E_BATCHES", "64"))
ESSAYS = 40
BUDGET = 200


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _servers() -> dict[int, str]:
    """The pids of every RabbitMQ and PostgreSQL process on the machine, by server."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm in ("beam.smp", "postgres"):
            found[int(entry.name)] = "rabbitmq" if comm == "beam.smp" else "postgres"
    return found


def _cpu_of_servers(since: dict[int, float]) -> dict[str, float]:
    """CPU time the server processes alive now spent since ``since`` (pid → CPU seconds;
    a process not in it counts whole). A backend that ended meanwhile (another client's)
    is not counted, so a finished connection never makes the figure negative."""
    totals = {"rabbitmq": 0.0, "postgres": 0.0}
    for pid, server in _servers().items():
        totals[server] += max(0.0, _cpu_seconds(pid) - since.get(pid, 0.0))
    return totals


def _projection_lag(app: Any) -> int:
    """Notifications of the log the slowest read model has not applied yet."""
    from infrastructure.persistence.bootstrap import ddl_lock, retry_schema_race
    from projections.runner import ReadModelRunner

    # creating a runner creates missing tables: take the lock a running runner takes
    with ddl_lock(app.env):
        runner = retry_schema_race(lambda: ReadModelRunner(app))
    return max(runner.lag().values())


def _wait_projections_caught_up(app: Any, timeout: float) -> float | None:
    """Seconds until the read models reached the head of the log (None: not in time)."""
    started = time.monotonic()
    while _projection_lag(app):
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.1)
    return time.monotonic() - started


def one_run(
    serves: int, workers: int, repeat: int, projections_apart: bool = False
) -> dict[str, Any]:
    from application.batches import BatchApplication, RegisterBatch
    from domain.batch import CJBatch
    from domain.policy import BatchPolicy
    from domain.values import BatchingMode
    from infrastructure.persistence.store import eventsourcing_env
    from tests.e2e.messaging_support import (
        Services,
        delete_topology,
        fresh_postgres_database,
        new_prefix,
        service_env,
        wait_until_finalized,
    )
    from tests.fakes import essays

    prefix = new_prefix()
    with fresh_postgres_database() as database_url:
        inserts = raw_insert_commit_rate(database_url)
        app = BatchApplication(env=eventsourcing_env(database_url))
        batch_ids = [
            app.submit(
                RegisterBatch(
                    f"bench-e2e-{repeat}-{i}",
                    essays(ESSAYS),
                    requested_mode=BatchingMode.SERIAL_BUNDLE,
                    seed=i,
                    policy=BatchPolicy(max_pairs_cap=BUDGET),
                )
            )
            for i in range(BATCHES)
        ]
        app.close()
        env = service_env(database_url, prefix)
        env["CJLEDGER_LOG_LEVEL"] = "INFO"
        if projections_apart:
            env["CJLEDGER_SERVE_PROJECTIONS"] = "false"
        with tempfile.TemporaryDirectory() as tmp:
            services = Services(Path(tmp), env)
            try:
                load_before = os.getloadavg()[0]
                servers_before = {pid: _cpu_seconds(pid) for pid in _servers()}
                started = []
                if projections_apart:
                    # started first and caught up with the registrations, so that its
                    # start-up is not counted in its CPU per outcome
                    started.append(
                        services.start("projections", services.command("projections", "run"))
                    )
                    with BatchApplication(env=eventsourcing_env(database_url)) as observer:
                        _wait_projections_caught_up(observer, timeout=120)
                serving = [services.serve(f"serve-{i}") for i in range(serves)]
                serving += [services.lps_worker(f"worker-{i}") for i in range(workers)]
                for process in serving:
                    process.wait_started()
                started += serving
                pids = {p.name: p.process.pid for p in started if p.process is not None}
                cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
                wait_until_finalized(database_url, batch_ids, timeout=900, interval=0.5)
                cpu = {name: _cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
                cpu.update(_cpu_of_servers(servers_before))
                load_after = os.getloadavg()[0]
                observer = BatchApplication(env=eventsourcing_env(database_url))
                try:
                    lag_at_end = _projection_lag(observer)
                    caught_up = _wait_projections_caught_up(observer, timeout=300)
                finally:
                    observer.close()
                first_publish = min(
                    datetime.fromisoformat(line["timestamp"])
                    for process in started
                    for line in process.events("wave_dispatched")
                )
            finally:
                services.stop_all()
                delete_topology(prefix)
        app = BatchApplication(env=eventsourcing_env(database_url))
        try:
            completed = [
                e
                for b in batch_ids
                for e in app.batch_events(b)
                if isinstance(e, CJBatch.ComparisonCompleted)
            ]
        finally:
            app.close()
    last = max(e.timestamp for e in completed)
    seconds = (last - first_publish).total_seconds()
    rate = len(completed) / seconds
    return {
        "outcomes": len(completed),
        "seconds": round(seconds, 3),
        "outcomes_per_second": round(rate, 1),
        "insert_commit_per_second": round(inserts, 1),
        "ratio": round(rate / inserts, 3),
        # CPU seconds each process spent while the batches ran (serve / lps-worker from
        # their start; the servers' figures include anything else they served meanwhile)
        "cpu_ms_per_outcome": {k: round(1000 * v / len(completed), 3) for k, v in cpu.items()},
        "load_1m": [round(load_before, 2), round(load_after, 2)],
        "projection_lag_at_end": lag_at_end,
        "projections_caught_up_s": None if caught_up is None else round(caught_up, 2),
    }


# (key, serves, workers, projections in their own process)
LAYOUTS = (("1+1", 1, 1, False), ("2+2", 2, 2, False), ("1+1+p", 1, 1, True))
TITLES = {
    "1+1": "end to end 1 serve + 1 lps-worker (outcomes/s)",
    "2+2": "end to end 2 serve + 2 lps-worker (outcomes/s)",
    "1+1+p": "end to end 1 serve + 1 lps-worker + 1 projections run (outcomes/s)",
}
#: the layouts to run (keys, space-separated): all by default; one alone is quicker when
#: comparing two commits run after run
SELECTED = os.environ.get("CJLEDGER_BENCH_E2E_LAYOUTS", " ".join(TITLES)).split()


def main() -> None:
    quiet_logs()
    unknown = [key for key in SELECTED if key not in TITLES]
    if unknown:
        raise SystemExit(f"unknown e2e layout {unknown[0]!r}; known: {', '.join(TITLES)}")
    results: dict[str, list[dict[str, Any]]] = {}
    for layout, serves, workers, apart in LAYOUTS:
        if layout not in SELECTED:
            continue
        results[layout] = []
        for repeat in range(REPEATS):
            run = one_run(serves, workers, repeat, projections_apart=apart)
            progress(f"e2e {layout} repeat {repeat + 1}: {json.dumps(run)}")
            results[layout].append(run)
    targets = [
        Target.at_least(TITLES[key], 2000, [r["outcomes_per_second"] for r in runs])
        for key, runs in results.items()
    ]
    if "1+1" in results:
        targets.append(
            Target.at_least(
                "outcomes/s ÷ raw INSERT+COMMIT/s, 1+1 (same run)",
                1.0,
                [r["ratio"] for r in results["1+1"]],
                unit="x",
            )
        )
    targets.append(
        Target.at_least(
            "raw single-row INSERT+COMMIT (rows/s)",
            None,
            [r["insert_commit_per_second"] for runs in results.values() for r in runs],
        )
    )
    emit(
        "e2e",
        targets=targets,
        details={
            "batches": BATCHES,
            "essays": ESSAYS,
            "budget": BUDGET,
            "layouts": {
                key: {"serve": s, "lps_worker": w, "projections_in_own_process": p}
                for key, s, w, p in LAYOUTS
                if key in results
            },
            "runs": results,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
