"""Names, dead-letter wiring, and the serve subscriber on FastStream's in-memory broker."""

from __future__ import annotations

import pytest
from faststream.rabbit import TestRabbitBroker

from application.batches import BatchApplication, RegisterBatch
from domain.batch import CJBatch
from infrastructure.messaging.contracts import ComparisonOutcomeV1
from infrastructure.messaging.processes import build_serve
from infrastructure.messaging.topology import OUTCOME_ROUTING_KEY, Topology
from infrastructure.settings import Settings
from tests.fakes import essays


def test_every_name_carries_the_prefix() -> None:
    topology = Topology("run-42")
    for name in (*topology.all_queue_names, *topology.all_exchange_names):
        assert name.startswith("run-42.")
    assert topology.outcomes_dead_letter_queue_name == "run-42.cj.outcomes.dead"


def test_each_work_queue_dead_letters_into_its_own_queue() -> None:
    topology = Topology("p")
    for queue in (topology.requests_queue, topology.outcomes_queue):
        arguments = queue.arguments or {}
        assert arguments["x-dead-letter-exchange"] == topology.dead_letter_exchange_name
        dead = topology.dead_letter_queue(queue.name)
        assert dead.routing() == arguments["x-dead-letter-routing-key"] == queue.name
        assert queue.durable and dead.durable


@pytest.mark.parametrize("prefix", ["", "has space", "a/b", "x" * 102])
def test_a_prefix_that_could_clash_or_break_a_name_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="queue prefix"):
        Topology(prefix)


async def test_serve_records_an_outcome_delivered_by_the_in_memory_broker() -> None:
    app = BatchApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    process = build_serve(Settings(database_url="memory://", queue_prefix="unit"), app=app)
    batch = app.get_batch(app.submit(RegisterBatch("unit-ref", essays(4))))
    comparison_id, record = next(iter(batch.comparisons.items()))
    message = ComparisonOutcomeV1(
        request_id=comparison_id,
        batch_id=str(batch.id),
        comparison_id=comparison_id,
        correlation_id="unit/wave-1",
        status="success",
        winner_essay_id=record.pair.essay_b,
        confidence=4,
        provider="simulated",
        model="simulated-judge-1",
        queue_processing_mode="serial_bundle",
    )

    async with TestRabbitBroker(process.broker) as broker:
        await process.consumer.start()
        await broker.publish(
            message.model_dump_json().encode(),
            exchange=process.topology.exchange,
            routing_key=OUTCOME_ROUTING_KEY,
        )
        await process.consumer.drain()
        await process.consumer.stop()

    events = app.batch_events(batch.id)
    completed = [e.outcome for e in events if isinstance(e, CJBatch.ComparisonCompleted)]
    assert [outcome.comparison_id for outcome in completed] == [comparison_id]
    app.close()
