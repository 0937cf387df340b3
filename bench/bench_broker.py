"""Outcomes per second through RabbitMQ into the event store (CJ's outcome consumer).

What is measured: a backlog of ``ComparisonOutcomeV1`` messages waits in the outcomes
queue of a real RabbitMQ; the real ``serve`` components (FastStream subscriber with
manual acks, ``OutcomeGroupRecorder``, ``BatchApplication.record_outcomes``) start, and
the clock runs until every outcome has been recorded in the store *and* acknowledged.
``outcomes_per_second`` = outcomes / that time. Each message is parsed and validated,
recorded in a group (one transaction per group) and acknowledged after the commit; the
outcomes that close a wave also pay for the BT fit, the decision and ``Finalized``.

Set-up (not timed): ``--batches`` batches of ``--essays`` essays in
``provider_batch_api`` mode with a budget of ``--cap`` comparisons, so each batch asks
for one wave of ``--cap`` pairs; outcomes come from the simulated judge. Two arrival
orders are measured, each on a fresh store: ``by_batch`` (a batch's outcomes arrive
together, as LPS answers bundle by bundle) and ``interleaved`` (round-robin over all
batches, so every transaction touches every batch and replays each one — the unkind
order). The publish rate of the set-up (confirmed, persistent) is reported too.

Run: ``uv run python bench/bench_broker.py [--store postgres|sqlite]``. Needs RabbitMQ
(and PostgreSQL for the default store). Prints one JSON document and writes it to
``bench/results/broker.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from application.batches import BatchApplication, RegisterBatch
from application.dispatcher import REQUESTED_TOPIC, requests_from_event
from domain.policy import BatchPolicy
from domain.values import BatchingMode, Essay
from infrastructure.logging import configure_logging
from infrastructure.lps.process import make_executor
from infrastructure.messaging.broker import make_broker
from infrastructure.messaging.contracts import ComparisonOutcomeV1, ComparisonRequestV1
from infrastructure.messaging.processes import build_serve, service_env
from infrastructure.messaging.service import BrokerComponent
from infrastructure.messaging.topology import Topology
from infrastructure.messaging.transport import MessagePublisher
from infrastructure.persistence.positions import position_store_for
from infrastructure.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
PG = "postgresql://postgres@127.0.0.1:5432"


def build_outcomes(
    app: BatchApplication, settings: Settings, order: str
) -> list[ComparisonOutcomeV1]:
    """One simulated outcome per stored request, in the given arrival order."""
    executor = make_executor(settings)
    per_batch: list[list[ComparisonOutcomeV1]] = []
    for notification in app.iter_notifications([REQUESTED_TOPIC]):
        requests = requests_from_event(app.mapper.to_domain_event(notification))
        now = datetime.now(UTC)
        queued = [ComparisonRequestV1.from_request(r).to_queued(now) for r in requests]
        # per_request: one simulated call each, no batch-job waiting
        outcomes = executor.drain([q.with_attempts(0) for q in queued], now)
        per_batch.append([ComparisonOutcomeV1.from_outcome(o) for o in outcomes])
    if order == "by_batch":
        return [m for batch in per_batch for m in batch]
    interleaved: list[ComparisonOutcomeV1] = []
    for row in range(max(len(b) for b in per_batch)):
        interleaved.extend(b[row] for b in per_batch if row < len(b))
    return interleaved


async def publish_backlog(settings: Settings, messages: list[ComparisonOutcomeV1]) -> float:
    topology = Topology(settings.queue_prefix)
    broker = make_broker(settings.broker_url, prefetch=1)
    component = BrokerComponent(broker, topology)
    await component.start()
    publisher = MessagePublisher(broker, topology)
    started = time.perf_counter()
    for chunk in range(0, len(messages), 500):
        await asyncio.gather(*(publisher.publish_outcome(m) for m in messages[chunk : chunk + 500]))
    elapsed = time.perf_counter() - started
    await component.stop()
    return elapsed


async def consume_backlog(settings: Settings, app: BatchApplication, total: int) -> dict[str, Any]:
    process = build_serve(settings, app=app)
    started = time.perf_counter()
    for component in process.components:
        await component.start()
    consumer = process.consumer
    while consumer.stats.outcomes < total:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    for component in reversed(process.components):
        await component.stop()
    return {"seconds": elapsed, **consumer.stats.as_dict()}


async def delete_topology(settings: Settings) -> None:
    topology = Topology(settings.queue_prefix)
    broker = make_broker(settings.broker_url, prefetch=1)
    connection = await broker.connect()
    channel = await connection.channel()
    for name in topology.all_queue_names:
        await channel.queue_delete(name)
    for name in topology.all_exchange_names:
        await channel.exchange_delete(name)
    await broker.stop()


def run_case(args: argparse.Namespace, order: str) -> dict[str, Any]:
    """One measurement on a fresh store and a fresh set of queues."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    database = f"cjl_bench_{uuid.uuid4().hex[:12]}"
    tmp = tempfile.TemporaryDirectory()
    if args.store == "postgres":
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = f"{PG}/{database}"
    else:
        url = f"sqlite:///{tmp.name}/bench.db"
    os.environ.update(
        {
            "CJLEDGER_DATABASE_URL": url,
            "CJLEDGER_QUEUE_PREFIX": prefix,
            "CJLEDGER_LPS_QUEUE_MODE": "per_request",
            "CJLEDGER_MAX_PAIRS_CAP": str(args.cap),
        }
    )
    settings = Settings()
    app = BatchApplication(env=service_env(settings))
    try:
        for number in range(args.batches):
            app.submit(
                RegisterBatch(
                    external_ref=f"bench-{prefix}-{number}",
                    essays=tuple(
                        Essay(f"essay-{i:03d}", f"sha256:{i}") for i in range(args.essays)
                    ),
                    requested_mode=BatchingMode.PROVIDER_BATCH_API,
                    seed=number,
                    policy=BatchPolicy(max_pairs_cap=args.cap),
                )
            )
        # the waves count as sent: the dispatcher has nothing to publish during the run
        position_store_for(app).set("outbox", app.recorder.max_notification_id() or 0)
        messages = build_outcomes(app, settings, order)
        publish_seconds = asyncio.run(publish_backlog(settings, messages))
        consumed = asyncio.run(consume_backlog(settings, app, len(messages)))
        topics = [n.topic for n in app.iter_notifications()]
        return {
            "order": order,
            "outcomes": len(messages),
            "seconds": round(consumed["seconds"], 3),
            "outcomes_per_second": round(len(messages) / consumed["seconds"], 1),
            "transactions": consumed["groups"],
            "mean_outcomes_per_transaction": round(consumed["outcomes"] / consumed["groups"], 1),
            "largest_transaction": consumed["largest_group"],
            "recorded": consumed["recorded"],
            "duplicates": consumed["duplicates"],
            "rejected": consumed["rejected"],
            "comparison_completed_events": sum(t.endswith("ComparisonCompleted") for t in topics),
            "batches_finalized": sum(t.endswith("Finalized") for t in topics),
            "setup_publish_per_second": round(len(messages) / publish_seconds, 1),
        }
    finally:
        app.close()
        asyncio.run(delete_topology(settings))
        if args.store == "postgres":
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--essays", type=int, default=40)
    parser.add_argument("--cap", type=int, default=500)
    args = parser.parse_args()
    configure_logging(json_logs=True, level="WARNING")
    cases = [run_case(args, order) for order in ("by_batch", "interleaved")]
    settings = Settings()
    result = {
        "benchmark": "outcomes through RabbitMQ into the event store (CJ outcome consumer)",
        "measures": "backlog drain: consumer start -> every outcome recorded (one transaction "
        "per group) and acknowledged",
        "store": args.store,
        "batches": args.batches,
        "essays_per_batch": args.essays,
        "outcomes_per_second": {c["order"]: c["outcomes_per_second"] for c in cases},
        "cases": cases,
        "settings": {
            "outcome_batch_size": settings.outcome_batch_size,
            "outcome_batch_wait_ms": settings.outcome_batch_wait_ms,
            "outcome_prefetch": settings.outcome_prefetch,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "broker.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
