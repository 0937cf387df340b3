"""Helpers for the tests that talk to a real RabbitMQ (and PostgreSQL), and run processes.

Every test run gets its own queue prefix (and store), so runs never meet each other's
messages; ``delete_topology`` removes a prefix's queues and exchanges afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import aio_pika
import psycopg
import pytest
from eventsourcing.utils import get_topic

from application.batches import BatchApplication
from domain.batch import CJBatch
from infrastructure.messaging.topology import Topology
from infrastructure.persistence.store import eventsourcing_env

ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("CJLEDGER_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_URL = os.environ.get("CJLEDGER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")

#: fast timings for process tests: short polls, short backoffs, quick shutdown
FAST_SETTINGS = {
    "CJLEDGER_DISPATCH_INTERVAL_SECONDS": "0.2",
    "CJLEDGER_RETRY_BACKOFF_BASE_SECONDS": "0.05",
    "CJLEDGER_RETRY_BACKOFF_MAX_SECONDS": "0.5",
    "CJLEDGER_SHUTDOWN_TIMEOUT_SECONDS": "5",
    "CJLEDGER_LPS_SIMULATED_JOB_DELAY_SECONDS": "0.1",
    "CJLEDGER_LPS_JOB_POLL_SECONDS": "0.05",
    "CJLEDGER_LPS_GATHER_MS": "20",
    "CJLEDGER_LOG_LEVEL": "INFO",
}


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


needs_rabbitmq = pytest.mark.skipif(
    not _port_open("127.0.0.1", 5672), reason="RabbitMQ is not running (make services)"
)
needs_postgres = pytest.mark.skipif(
    not _port_open("127.0.0.1", 5432), reason="PostgreSQL is not running (make services)"
)


def new_prefix() -> str:
    return f"cjt-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------- RabbitMQ


async def _delete_topology(prefix: str) -> None:
    topology = Topology(prefix)
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel()
        for name in topology.all_queue_names:
            await channel.queue_delete(name)
        for name in topology.all_exchange_names:
            await channel.exchange_delete(name)


def delete_topology(prefix: str) -> None:
    asyncio.run(_delete_topology(prefix))


@dataclass
class Received:
    body: bytes
    headers: dict[str, Any]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def items(self) -> list[Any]:
        """The decoded messages it carries: the items of a bundle, or itself alone."""
        data = self.json
        if isinstance(data, dict) and "bundle_version" in data:
            return list(data["items"])
        return [data]


async def take_all_async(queue_name: str) -> list[Received]:
    connection = await aio_pika.connect(BROKER_URL)
    taken = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(Received(message.body, dict(message.headers)))
    return taken


def take_all(queue_name: str) -> list[Received]:
    """Remove and return every message waiting in ``queue_name``."""
    return asyncio.run(take_all_async(queue_name))


async def message_count_async(queue_name: str) -> int:
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue_name, passive=True)
        return int(declared.declaration_result.message_count or 0)


def message_count(queue_name: str) -> int:
    """Messages ready in ``queue_name`` (not counting those delivered and unacknowledged)."""
    return asyncio.run(message_count_async(queue_name))


async def publish_raw_async(prefix: str, routing_key: str, bodies: Iterable[bytes]) -> None:
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Topology(prefix).exchange_name)
        for body in bodies:
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=routing_key,
                mandatory=True,
            )


def publish_raw(prefix: str, routing_key: str, bodies: Iterable[bytes]) -> None:
    """Publish raw bodies to the prefix's exchange (the topology must exist)."""
    asyncio.run(publish_raw_async(prefix, routing_key, list(bodies)))


# ---------------------------------------------------------------------- PostgreSQL


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    name = f"cjl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL}/{name}"
    finally:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------- processes


@dataclass
class ServiceProcess:
    """One ``cjledger`` process with its own log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    @property
    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"event": "(not json)", "text": raw})
        return lines

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines if line.get("event") == name]

    def wait_started(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.events("service_started"):
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not start:\n{self.log_path.read_text()}")

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"{self.name} ignored SIGTERM:\n{self.log_path.read_text()}"
            ) from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Services:
    """Starts ``cjledger`` processes for one test and makes sure they all end."""

    tmp_path: Path
    env: dict[str, str]
    started: list[ServiceProcess] = field(default_factory=list)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "infrastructure.cli.main", *args]

    def start(
        self, name: str, args: list[str], extra_env: dict[str, str] | None = None
    ) -> ServiceProcess:
        env = {**self.env, **(extra_env or {})}
        service = ServiceProcess(name, args, env, self.tmp_path / f"{name}.log").start()
        self.started.append(service)
        return service

    def serve(self, name: str = "serve", **extra: str) -> ServiceProcess:
        return self.start(name, self.command("serve"), extra)

    def lps_worker(self, name: str = "lps-worker", **extra: str) -> ServiceProcess:
        return self.start(name, self.command("lps-worker"), extra)

    def stop_all(self) -> None:
        for service in self.started:
            if service.process is not None and service.process.poll() is None:
                with suppress(AssertionError):
                    service.terminate()


def service_env(database_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CJLEDGER_")}
    env.update(FAST_SETTINGS)
    env.update(
        {
            "CJLEDGER_DATABASE_URL": database_url,
            "CJLEDGER_BROKER_URL": BROKER_URL,
            "CJLEDGER_QUEUE_PREFIX": prefix,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# ---------------------------------------------------------------------- the store


def open_store(database_url: str) -> BatchApplication:
    return BatchApplication(env=eventsourcing_env(database_url))


def valid_outcome(database_url: str, batch_id: UUID) -> dict[str, Any]:
    """A well-formed success outcome (as JSON data) for the batch's first comparison."""
    from infrastructure.messaging.contracts import ComparisonOutcomeV1

    app = open_store(database_url)
    try:
        batch = app.get_batch(batch_id)
    finally:
        app.close()
    comparison_id, record = next(iter(batch.comparisons.items()))
    return ComparisonOutcomeV1(
        request_id=comparison_id,
        batch_id=str(batch_id),
        comparison_id=comparison_id,
        correlation_id=f"{batch_id}/wave-1",
        status="success",
        winner_essay_id=record.pair.essay_a,
        confidence=3,
        provider="simulated",
        model="simulated-judge-1",
        queue_processing_mode="serial_bundle",
    ).model_dump(mode="json")


def write_essays(path: Path, count: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"essay_id": f"essay-{i:02d}", "text": f"Essay {i} argues point {i}."})
            + "\n"
            for i in range(count)
        )
    )
    return path


FINALIZED_TOPIC = get_topic(CJBatch.Finalized)


def wait_until_finalized(
    database_url: str,
    batch_ids: Iterable[UUID],
    timeout: float = 60.0,
    interval: float = 0.1,
) -> None:
    """Wait until every batch has its ``Finalized`` event.

    On PostgreSQL, one small SQL query on the events table per ``interval`` (the
    ``Finalized`` rows of the batches still pending) instead of replaying every batch
    aggregate: the waiting test or bench must not take the CPU from the processes it is
    waiting for.
    """
    pending = set(batch_ids)
    deadline = time.monotonic() + timeout
    app = open_store(database_url)
    if not database_url.startswith("postgres"):
        try:  # SQLite: small test batches, replaying them is cheap
            while pending and time.monotonic() < deadline:
                pending = {b for b in pending if not app.get_batch(b).is_finalized}
                if pending:
                    time.sleep(interval)
        finally:
            app.close()
    else:
        table = app.recorder.events_table_name  # type: ignore[attr-defined]
        app.close()
        query = (
            f"SELECT DISTINCT originator_id FROM {table} "
            "WHERE topic = %s AND originator_id = ANY(%s)"
        )
        with psycopg.connect(database_url, autocommit=True) as conn:
            while pending and time.monotonic() < deadline:
                rows = conn.execute(query, (FINALIZED_TOPIC, list(pending))).fetchall()
                pending -= {row[0] for row in rows}
                if pending:
                    time.sleep(interval)
    if pending:
        names = sorted(map(str, pending))
        raise AssertionError(f"batches not finalized within {timeout}s: {names}")


def assert_one_completion_per_requested_comparison(app: BatchApplication, batch_id: UUID) -> None:
    events = app.batch_events(batch_id)
    requested = [
        pair.comparison_id
        for e in events
        if isinstance(e, CJBatch.ComparisonsRequested)
        for pair in e.pairs
    ]
    completed = [
        e.outcome.comparison_id for e in events if isinstance(e, CJBatch.ComparisonCompleted)
    ]
    waves = [e.wave_number for e in events if isinstance(e, CJBatch.ComparisonsRequested)]
    assert waves == list(range(1, len(waves) + 1)), f"waves out of order: {waves}"
    assert len(requested) == len(set(requested)), "a comparison was requested twice"
    assert sorted(completed) == sorted(requested), "not exactly one outcome per comparison"
    assert any(isinstance(e, CJBatch.Finalized) for e in events)
