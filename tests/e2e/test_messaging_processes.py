"""``cjledger serve`` and ``cjledger lps-worker`` as real processes on a real RabbitMQ.

Each test gets its own queue prefix and its own store, starts the processes it needs,
submits batches and waits until they are finalized, then reads the event log.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.batch import CJBatch
from infrastructure.cli.main import main as cli
from infrastructure.lps.process import build_lps_worker
from infrastructure.messaging.broker import LoopThread
from infrastructure.messaging.contracts import ComparisonOutcomeV1
from infrastructure.messaging.dead_letters import CODE_HEADER, REASON_HEADER
from infrastructure.messaging.topology import OUTCOME_ROUTING_KEY, Topology
from infrastructure.persistence.positions import position_store_for
from infrastructure.settings import Settings
from tests.e2e.messaging_support import (
    Services,
    assert_one_completion_per_requested_comparison,
    delete_topology,
    fresh_postgres_database,
    message_count,
    needs_postgres,
    needs_rabbitmq,
    new_prefix,
    open_store,
    publish_raw,
    service_env,
    take_all,
    valid_outcome,
    wait_until_finalized,
    write_essays,
)

pytestmark = [pytest.mark.e2e, needs_rabbitmq]


@dataclass
class Run:
    services: Services
    database_url: str
    prefix: str
    tmp_path: Path

    @property
    def topology(self) -> Topology:
        return Topology(self.prefix)

    def submit(self, essays: int = 8, *args: str) -> UUID:
        """``cjledger submit`` (in this process: the same code, without a second start-up)."""
        path = write_essays(self.tmp_path / f"essays-{uuid4().hex[:6]}.jsonl", essays)
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit) as done:
            cli(["submit", str(path), *args])
            sys.exit(0)
        assert done.value.code in (0, None), out.getvalue()
        return UUID(out.getvalue().strip())


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    prefix = new_prefix()
    database_url = f"sqlite:///{tmp_path / 'events.db'}"
    env = service_env(database_url, prefix)
    for key, value in env.items():
        if key.startswith("CJLEDGER_"):
            monkeypatch.setenv(key, value)
    services = Services(tmp_path, env)
    yield Run(services, database_url, prefix, tmp_path)
    services.stop_all()
    delete_topology(prefix)


def completed_in_log(database_url: str, batch_id: UUID) -> list[str]:
    app = open_store(database_url)
    try:
        return [
            e.outcome.comparison_id
            for e in app.batch_events(batch_id)
            if isinstance(e, CJBatch.ComparisonCompleted)
        ]
    finally:
        app.close()


def check_log(database_url: str, batch_ids: list[UUID]) -> None:
    app = open_store(database_url)
    try:
        for batch_id in batch_ids:
            assert_one_completion_per_requested_comparison(app, batch_id)
    finally:
        app.close()


# ---------------------------------------------------------------------------- modes


def test_serve_and_a_worker_finish_a_batch_in_every_mode(run: Run) -> None:
    serve = run.services.serve()
    worker = run.services.lps_worker()
    serve.wait_started()
    worker.wait_started()

    batches = {
        mode: run.submit(8, "--mode", mode, "--budget", "16")
        for mode in ("per_request", "serial_bundle", "provider_batch_api")
    }
    wait_until_finalized(run.database_url, batches.values())
    check_log(run.database_url, list(batches.values()))

    app = open_store(run.database_url)
    for mode, batch_id in batches.items():
        batch = app.get_batch(batch_id)
        assert batch.mode is not None and batch.mode.value == mode
        assert batch.final_status is not None and batch.final_status.value == "scored"
    app.close()
    published = worker.events("outcomes_published")  # one line per executed group
    assert {line["queue_processing_mode"] for line in published} == {
        "per_request",
        "serial_bundle",
        "batch_api",
    }
    batch_ids = {b for line in published for b in line["batch_ids"]}
    assert batch_ids == {str(b) for b in batches.values()}
    assert all(line["correlation_ids"] and line["comparison_ids"] for line in published)
    assert all(
        line["confirmed"] == line["outcomes"] == len(line["comparison_ids"]) for line in published
    )
    assert serve.terminate() == 0 and worker.terminate() == 0
    assert message_count(run.topology.outcomes_dead_letter_queue_name) == 0


# ---------------------------------------------------------------------------- duplicates


class InTestWorker:
    """An LPS worker on a loop thread of the test process; it can publish each outcome twice."""

    def __init__(self, *, publish_twice: bool) -> None:
        self.loop = LoopThread("test-lps-worker")
        self.process = self.loop.call(self._start(publish_twice), timeout=30)

    async def _start(self, publish_twice: bool) -> Any:
        process = build_lps_worker(Settings())
        if publish_twice:
            once = process.worker.publish_outcome

            async def twice(outcome: ComparisonOutcomeV1) -> None:
                await once(outcome)
                await once(outcome)

            process.worker.publish_outcome = twice
            many = process.worker.publish_outcomes
            assert many is not None

            async def bundle_twice(outcomes: Sequence[ComparisonOutcomeV1]) -> None:
                await many(outcomes)
                await many(outcomes)

            process.worker.publish_outcomes = bundle_twice
        for component in process.components:
            await component.start()
        return process

    async def _stop(self) -> None:
        for component in reversed(self.process.components):
            await component.stop()

    def stop(self) -> None:
        self.loop.call(self._stop(), timeout=30)
        self.loop.close()


def normalized_log(database_url: str, batch_id: UUID) -> list[Any]:
    """The batch's events without times; outcomes of a wave as a set (arrival order varies)."""
    app = open_store(database_url)
    events = app.batch_events(batch_id)
    app.close()
    skipped = {"timestamp", "originator_version", "requested_at", "deadline_at"}
    log: list[Any] = []
    outcomes: list[str] = []
    for event in events:
        state = repr(sorted((k, v) for k, v in event.__dict__.items() if k not in skipped))
        if isinstance(event, CJBatch.ComparisonCompleted):
            outcomes.append(state)
            continue
        if outcomes:
            log.append(("outcomes", sorted(outcomes)))
            outcomes = []
        log.append((type(event).__name__, state))
    return log


def test_every_outcome_published_twice_leaves_the_same_log_as_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = []
    duplicates = []
    # One registration, copied into both stores: essay refs are drawn at random per
    # submission, so two submissions of one file would pair (and be judged) differently.
    template = tmp_path / "registered.db"
    monkeypatch.setenv("CJLEDGER_DATABASE_URL", f"sqlite:///{template}")
    batch_id = Run(Services(tmp_path, {}), f"sqlite:///{template}", "-", tmp_path).submit(
        8, "--ref", "same-batch", "--seed", "3", "--budget", "16"
    )
    for publish_twice in (False, True):
        prefix = new_prefix()
        shutil.copyfile(template, tmp_path / f"events-{publish_twice}.db")
        database_url = f"sqlite:///{tmp_path / f'events-{publish_twice}.db'}"
        env = service_env(database_url, prefix)
        for key, value in env.items():
            if key.startswith("CJLEDGER_"):
                monkeypatch.setenv(key, value)
        run = Run(Services(tmp_path / str(publish_twice), env), database_url, prefix, tmp_path)
        run.services.tmp_path.mkdir()
        serve = run.services.serve()
        worker = InTestWorker(publish_twice=publish_twice)
        try:
            serve.wait_started()
            wait_until_finalized(database_url, [batch_id])
            time.sleep(0.5)  # let the second copies of the last outcomes arrive
            check_log(database_url, [batch_id])
            logs.append(normalized_log(database_url, batch_id))
            duplicates.append(sum(line["duplicates"] for line in serve.events("outcomes_recorded")))
        finally:
            worker.stop()
            run.services.stop_all()
            delete_topology(prefix)

    assert logs[0] == logs[1]
    requested = sum(1 for entry in logs[1] if entry[0] == "outcomes" for _ in entry[1])
    assert duplicates == [0, requested]


# ---------------------------------------------------------------------------- dead letters


def test_malformed_and_unknown_outcomes_are_dead_lettered_and_the_batch_still_finishes(
    run: Run,
) -> None:
    serve = run.services.serve()
    serve.wait_started()
    batch_id = run.submit(8, "--budget", "16")  # no worker yet: the first wave waits
    valid = valid_outcome(run.database_url, batch_id)
    bad = {
        "malformed_json": b'{"status": "success",',
        "schema_violation": json.dumps({**valid, "confidence": 11}).encode(),
        "unknown_batch": json.dumps({**valid, "batch_id": str(uuid4())}).encode(),
        "unknown_comparison": json.dumps({**valid, "comparison_id": "never-asked"}).encode(),
        "winner_not_in_pair": json.dumps({**valid, "winner_essay_id": "essay-99"}).encode(),
    }
    publish_raw(run.prefix, OUTCOME_ROUTING_KEY, bad.values())

    worker = run.services.lps_worker()
    wait_until_finalized(run.database_url, [batch_id])
    check_log(run.database_url, [batch_id])

    dead = take_all(run.topology.outcomes_dead_letter_queue_name)
    assert sorted(m.headers[CODE_HEADER] for m in dead) == sorted(bad)
    assert all(m.headers[REASON_HEADER] for m in dead)
    assert {m.body for m in dead} == set(bad.values())
    assert len(serve.events("outcome_dead_lettered")) == len(bad)
    assert serve.process is not None and serve.process.poll() is None  # still consuming
    assert serve.terminate() == 0 and worker.terminate() == 0


# ---------------------------------------------------------------------------- crash


def test_a_dispatcher_killed_mid_wave_republishes_it_after_restart(run: Run) -> None:
    worker = run.services.lps_worker()
    crashing = run.services.start(
        "crashing-serve", [sys.executable, "-m", "tests.e2e.crashing_serve", "2"]
    )
    crashing.wait_started()
    worker.wait_started()
    batch_id = run.submit(10, "--mode", "serial_bundle", "--budget", "20")  # wave 1: 5 pairs

    assert crashing.process is not None
    assert crashing.process.wait(timeout=30) == -signal.SIGKILL
    app = open_store(run.database_url)
    first_wave = len(app.get_batch(batch_id).comparisons)
    assert position_store_for(app).get("outbox") == 0  # the wave was never marked sent
    app.close()
    assert first_wave == 5

    serve = run.services.serve()
    wait_until_finalized(run.database_url, [batch_id])
    check_log(run.database_url, [batch_id])
    # the two requests that left before the crash were sent again and answered from memory
    assert len(worker.events("request_answered_from_memory")) == 2
    assert serve.terminate() == 0 and worker.terminate() == 0


# ---------------------------------------------------------------------------- shutdown


def test_a_worker_stopped_by_sigterm_returns_unfinished_requests_to_the_queue(run: Run) -> None:
    worker = run.services.lps_worker(
        CJLEDGER_LPS_SIMULATED_JOB_DELAY_SECONDS="60", CJLEDGER_SHUTDOWN_TIMEOUT_SECONDS="1"
    )
    serve = run.services.serve()
    worker.wait_started()
    serve.wait_started()
    batch_id = run.submit(6, "--mode", "provider_batch_api")
    deadline = time.monotonic() + 20
    while not worker.events("lps.job_scheduled") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.events("lps.job_scheduled"), "the batch job never started"

    started = time.monotonic()
    assert worker.terminate(timeout=15) == 0
    assert time.monotonic() - started < 10
    assert worker.events("service_stopped")

    app = open_store(run.database_url)
    pairs = len(app.get_batch(batch_id).comparisons)
    app.close()
    assert message_count(run.topology.requests_queue_name) == pairs  # back, none lost
    assert completed_in_log(run.database_url, batch_id) == []
    assert serve.terminate() == 0


# ---------------------------------------------------------------------------- two serves


@needs_postgres
def test_two_serve_processes_share_the_outcome_queue_without_duplicate_waves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = new_prefix()
    with fresh_postgres_database() as database_url:
        env = service_env(database_url, prefix)
        for key, value in env.items():
            if key.startswith("CJLEDGER_"):
                monkeypatch.setenv(key, value)
        run = Run(Services(tmp_path, env), database_url, prefix, tmp_path)
        try:
            serves = [run.services.serve("serve-1"), run.services.serve("serve-2")]
            workers = [run.services.lps_worker("worker-1"), run.services.lps_worker("worker-2")]
            for process in (*serves, *workers):
                process.wait_started()
            batch_ids = [
                run.submit(12, "--mode", mode, "--budget", "30")
                for mode in ("serial_bundle", "per_request", "serial_bundle")
            ]
            wait_until_finalized(database_url, batch_ids, timeout=90)
            check_log(database_url, batch_ids)

            for serve in serves:  # both took part in recording
                assert sum(line["recorded"] for line in serve.events("outcomes_recorded")) > 0
            leases = [len(s.events("dispatcher_lease_acquired")) for s in serves]
            assert sorted(leases) == [0, 1]  # one dispatcher at a time
            assert message_count(Topology(prefix).outcomes_dead_letter_queue_name) == 0
            for process in (*serves, *workers):
                assert process.terminate() == 0
        finally:
            run.services.stop_all()
            delete_topology(prefix)
