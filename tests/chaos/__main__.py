"""``make chaos``: cjledger's own fault suite against real PostgreSQL and RabbitMQ.

Every scenario runs real ``cjledger serve`` and ``cjledger lps-worker`` processes on a
store and queue prefix of its own, submits batches in every batching mode, injects its
faults while they run, and ends with the same invariants:

* every requested comparison has exactly one ``ComparisonCompleted`` event (lost =
  requested without one, duplicated = more than one);
* every batch is finalized — none is left open with all its outcomes in;
* the read models the running processes kept equal a fresh fold of the log
  (``cjledger projections rebuild`` replays it into a new generation; both are compared
  row by row through the stable views).

Prints one table row per scenario; exits 1 if any invariant fails. Seeded: ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from rich.console import Console
from rich.table import Table

from domain.batch import CJBatch
from infrastructure.messaging.topology import OUTCOME_ROUTING_KEY, REQUEST_ROUTING_KEY, Topology
from tests.chaos.faults import Duplicator, SilentProxy, throwaway_postgres
from tests.e2e.messaging_support import (
    BROKER_URL,
    PG_URL,
    ROOT,
    Services,
    delete_topology,
    message_count,
    new_prefix,
    open_store,
    publish_raw,
    service_env,
    write_essays,
)

BATCHES = (("serial_bundle", 16, 48), ("per_request", 12, 36), ("provider_batch_api", 10, 30))
FINALIZE_TIMEOUT = 240.0


@dataclass
class Outcome:
    scenario: str
    faults: str
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and self.lost == 0 and self.duplicated == 0


@dataclass
class Stage:
    """One scenario's world: a store, a queue prefix, its processes and what it saw."""

    database_url: str
    prefix: str
    tmp: Path
    rng: random.Random
    env: dict[str, str]
    services: Services
    batch_ids: list[UUID] = field(default_factory=list)
    injected: int = 0

    def submit_all(self) -> None:
        for mode, essays, budget in BATCHES:
            path = write_essays(self.tmp / f"{mode}-{uuid4().hex[:6]}.jsonl", essays)
            result = subprocess.run(
                [
                    *(sys.executable, "-m", "infrastructure.cli.main", "submit", str(path)),
                    *("--mode", mode, "--budget", str(budget)),
                    *("--seed", str(self.rng.randrange(99))),
                ],
                env=self.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,
            )
            if result.returncode != 0:
                raise RuntimeError(f"submit failed: {result.stderr.strip()}")
            self.batch_ids.append(UUID(result.stdout.strip()))

    def wait_finalized(self, timeout: float = FINALIZE_TIMEOUT) -> list[UUID]:
        deadline = time.monotonic() + timeout
        pending = list(self.batch_ids)
        while pending and time.monotonic() < deadline:
            with suppress(Exception):
                app = open_store(self.database_url)
                try:
                    pending = [b for b in pending if not app.get_batch(b).is_finalized]
                finally:
                    app.close()
            if pending:
                time.sleep(0.5)
        return pending


@contextmanager
def stage(
    name: str, rng: random.Random, database_url: str | None = None, **extra_env: str
) -> Iterator[Stage]:
    prefix = new_prefix()
    tmp = Path(tempfile.mkdtemp(prefix=f"cjledger-chaos-{name}-"))
    with _database(database_url) as url:
        env = service_env(url, prefix)
        env.update(extra_env)
        services = Services(tmp, env)
        world = Stage(url, prefix, tmp, rng, env, services)
        try:
            yield world
        finally:
            services.stop_all()
            for service in services.started:
                service.kill()
            with suppress(Exception):
                delete_topology(prefix)


@contextmanager
def _database(server_url: str | None) -> Iterator[str]:
    base = (server_url or f"{PG_URL}/postgres").rsplit("/", 1)[0]
    name = f"cjl_chaos_{uuid4().hex[:10]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with suppress(psycopg.Error), psycopg.connect(f"{base}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------- invariants


def check(world: Stage, outcome: Outcome) -> None:
    pending = world.wait_finalized()
    if pending:
        outcome.failures.append(f"{len(pending)} batch(es) not finalized")
    app = open_store(world.database_url)
    requested_total = 0
    try:
        for batch_id in world.batch_ids:
            events = app.batch_events(batch_id)
            requested = [
                p.comparison_id
                for e in events
                if isinstance(e, CJBatch.ComparisonsRequested)
                for p in e.pairs
            ]
            completed = [
                e.outcome.comparison_id
                for e in events
                if isinstance(e, CJBatch.ComparisonCompleted)
            ]
            requested_total += len(requested)
            if len(requested) != len(set(requested)):
                outcome.failures.append(f"{batch_id}: a comparison was requested twice")
            outcome.lost += len(set(requested) - set(completed))
            outcome.duplicated += len(completed) - len(set(completed))
            if set(completed) - set(requested):
                outcome.failures.append(f"{batch_id}: an outcome for an unrequested comparison")
            open_with_all_in = (
                not app.get_batch(batch_id).is_finalized
                and requested
                and set(requested) <= set(completed)
            )
            if open_with_all_in:
                outcome.failures.append(f"{batch_id}: open with every outcome in")
    finally:
        app.close()
    outcome.messages = requested_total + world.injected
    if not read_models_equal_a_fold(world):
        outcome.failures.append("read models differ from a fold of the log")


def read_models_equal_a_fold(world: Stage) -> bool:
    """Wait for the live read models to reach the head, stop the processes, rebuild every
    read model from the log into a new generation, and compare the views before/after."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = cli(world, "projections", "status", "--json")
        if status.returncode == 0 and all(r["lag"] == 0 for r in json.loads(status.stdout)):
            break
        time.sleep(1)
    else:
        return False
    world.services.stop_all()
    live = dump_views(world.database_url)
    rebuilt = cli(world, "projections", "rebuild")
    if rebuilt.returncode != 0:
        print(rebuilt.stderr, file=sys.stderr)
        return False
    return live == dump_views(world.database_url) and bool(live)


def dump_views(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(database_url) as conn:
        views = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.views "
                "WHERE table_schema = 'public' AND table_name LIKE 'rm\\_%' ORDER BY 1"
            )
        ]
        return {
            view: sorted(map(repr, conn.execute(f'SELECT * FROM "{view}"').fetchall()))
            for view in views
        }


def cli(world: Stage, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.cli.main", *args],
        env=world.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---------------------------------------------------------------------- scenarios


def baseline(world: Stage) -> str:
    world.services.serve().wait_started()
    world.services.lps_worker().wait_started()
    world.submit_all()
    return "none"


def duplicate_deliveries(world: Stage) -> str:
    serve = world.services.serve()
    worker = world.services.lps_worker()
    serve.wait_started()
    worker.wait_started()
    tap = Duplicator(BROKER_URL, world.prefix).start()
    try:
        world.submit_all()
        world.wait_finalized()
    finally:
        tap.stop()
    world.injected += tap.copies
    return f"{tap.copies} copies"


def kill_nine(world: Stage) -> str:
    serve = world.services.serve()
    worker = world.services.lps_worker()
    serve.wait_started()
    worker.wait_started()
    world.submit_all()
    kills = 0
    victims = ["serve", "lps-worker"]
    world.rng.shuffle(victims)
    for round_number in range(6):  # each process killed three times, at random moments
        time.sleep(world.rng.uniform(0.2, 2.0))
        victim = victims[round_number % 2]
        running = serve if victim == "serve" else worker
        running.kill()  # SIGKILL: no drain, no acknowledgements, no goodbye
        kills += 1
        restarted = (
            world.services.serve(f"serve-{kills}")
            if victim == "serve"
            else world.services.lps_worker(f"lps-worker-{kills}")
        )
        restarted.wait_started()
        if victim == "serve":
            serve = restarted
        else:
            worker = restarted
    return f"{kills} x kill -9"


def two_serves(world: Stage) -> str:
    first = world.services.serve("serve-a")
    second = world.services.serve("serve-b")
    worker = world.services.lps_worker()
    for process in (first, second, worker):
        process.wait_started()
    world.submit_all()
    time.sleep(world.rng.uniform(1.0, 3.0))
    holder = first if first.events("dispatcher_lease_acquired") else second
    holder.kill()
    return f"2 serve, kill -9 of {holder.name} (dispatcher)"


def malformed_flood(world: Stage) -> str:
    serve = world.services.serve()
    worker = world.services.lps_worker()
    serve.wait_started()
    worker.wait_started()
    world.submit_all()
    bad_outcomes = [
        b'{"status": "success",',
        json.dumps({"schema_version": 1, "comparison_id": "x\x00"}).encode(),
        b'{"latency_ms": 1e999}',
        b"\xff\xfe not even utf-8",
    ]
    outcomes = [bad_outcomes[i % len(bad_outcomes)] for i in range(2000)]
    requests = [json.dumps({"essay_a": "a\x00", "n": i}).encode() for i in range(500)]
    publish_raw(world.prefix, OUTCOME_ROUTING_KEY, outcomes)
    publish_raw(world.prefix, REQUEST_ROUTING_KEY, requests)
    world.injected += len(outcomes) + len(requests)
    world.wait_finalized()
    topology = Topology(world.prefix)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dead = (
            message_count(topology.outcomes_dead_letter_queue_name),
            message_count(topology.requests_dead_letter_queue_name),
        )
        if dead == (len(outcomes), len(requests)):
            break
        time.sleep(1)
    if dead != (len(outcomes), len(requests)):
        raise AssertionError(f"dead letters {dead}, expected {(len(outcomes), len(requests))}")
    return f"{len(outcomes)} bad outcomes + {len(requests)} bad requests, all dead-lettered"


def unresponsive_broker(world: Stage) -> str:
    proxy = SilentProxy()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    world.env["CJLEDGER_BROKER_URL"] = url
    world.env["CJLEDGER_BROKER_CONNECT_TIMEOUT_SECONDS"] = "1"
    world.services.env = world.env
    serve = world.services.serve()
    worker = world.services.lps_worker()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        serve.events("waiting_for_broker") and worker.events("waiting_for_broker")
    ):
        time.sleep(0.5)
    if not (serve.events("waiting_for_broker") and worker.events("waiting_for_broker")):
        raise AssertionError("the processes did not say they were waiting for the broker")
    world.submit_all()  # stored while the broker is silent; sent once it answers
    time.sleep(2)
    proxy.forward()
    serve.wait_started()
    worker.wait_started()
    world.wait_finalized()
    return f"broker silent for the start ({proxy.silent_connections} connections held)"


def postgres_restart(world: Stage, restart: Callable[[], None]) -> str:
    serve = world.services.serve()
    worker = world.services.lps_worker()
    serve.wait_started()
    worker.wait_started()
    world.submit_all()
    time.sleep(world.rng.uniform(1.0, 3.0))
    restart()
    return "PostgreSQL restarted (immediate) mid-run"


def run_scenario(
    name: str, body: Callable[[Stage], str], rng: random.Random, **options: Any
) -> Outcome:
    outcome = Outcome(name, "")
    started = time.monotonic()
    try:
        with stage(name, rng, **options) as world:
            try:
                outcome.faults = body(world)
                check(world, outcome)
            except Exception as error:
                outcome.failures.append(f"{type(error).__name__}: {error}"[:300])
                traceback.print_exc(file=sys.stderr)
                for service in world.services.started:
                    tail = service.log_path.read_text(errors="replace").splitlines()[-5:]
                    print(f"--- {service.name}\n" + "\n".join(tail), file=sys.stderr)
    except Exception as error:
        outcome.failures.append(f"setup: {type(error).__name__}: {error}"[:300])
    outcome.seconds = time.monotonic() - started
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    args = parser.parse_args()
    os.chdir(ROOT)
    rng = random.Random(args.seed)
    outcomes: list[Outcome] = []

    def pg_restart_scenario() -> Outcome:
        with throwaway_postgres() as server:
            return run_scenario(
                "postgres restart",
                lambda world: postgres_restart(world, server.restart),
                rng,
                database_url=server.url,
            )

    scenarios: list[tuple[str, Callable[[], Outcome]]] = [
        ("baseline", lambda: run_scenario("baseline", baseline, rng)),
        (
            "duplicate deliveries",
            lambda: run_scenario("duplicate deliveries", duplicate_deliveries, rng),
        ),
        ("kill -9", lambda: run_scenario("kill -9", kill_nine, rng)),
        ("two serve", lambda: run_scenario("two serve", two_serves, rng)),
        ("malformed flood", lambda: run_scenario("malformed flood", malformed_flood, rng)),
        ("postgres restart", pg_restart_scenario),
        (
            "unresponsive broker",
            lambda: run_scenario("unresponsive broker", unresponsive_broker, rng),
        ),
    ]
    for name, run in scenarios:
        if args.only and args.only not in name:
            continue
        print(f"chaos: {name} ...", file=sys.stderr, flush=True)
        outcomes.append(run())
        print(f"chaos: {name}: {'ok' if outcomes[-1].ok else 'FAILED'}", file=sys.stderr)

    table = Table(title=f"make chaos (seed {args.seed})")
    for column in ("scenario", "faults", "messages", "lost", "duplicated", "invariants", "s"):
        table.add_column(column)
    for o in outcomes:
        verdict = "hold" if o.ok else "BROKEN: " + "; ".join(o.failures)
        table.add_row(
            o.scenario, o.faults, str(o.messages), str(o.lost), str(o.duplicated), verdict,
            f"{o.seconds:.0f}",
        )  # fmt: skip
    Console(width=200).print(table)
    return 0 if outcomes and all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    threading.current_thread().name = "chaos"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
