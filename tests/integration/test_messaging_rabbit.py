"""The messaging adapters against a real RabbitMQ, in one process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

import anyio
import pytest
from eventsourcing.persistence import OperationalError

from application.batches import BatchApplication, RecordResult, RegisterBatch
from application.dispatcher import OutboxDispatcher
from domain.backoff import Backoff
from domain.batch import CJBatch
from domain.values import BatchingMode
from infrastructure.messaging.broker import make_broker, subscribe
from infrastructure.messaging.contracts import ComparisonOutcomeV1, parse_request_data
from infrastructure.messaging.dead_letters import (
    CODE_HEADER,
    REASON_HEADER,
    SOURCE_QUEUE_HEADER,
    RabbitDeadLetters,
)
from infrastructure.messaging.outcomes import OutcomeConsumer
from infrastructure.messaging.service import BrokerComponent
from infrastructure.messaging.topology import OUTCOME_ROUTING_KEY, Topology
from infrastructure.messaging.transport import MessagePublisher, RabbitRequestTransport
from infrastructure.persistence.positions import position_store_for
from tests.e2e.messaging_support import (
    BROKER_URL,
    delete_topology,
    message_count_async,
    needs_rabbitmq,
    new_prefix,
    publish_raw_async,
    take_all_async,
)
from tests.fakes import essays

pytestmark = [pytest.mark.integration, needs_rabbitmq]


@pytest.fixture
def topology() -> Any:
    prefix = new_prefix()
    yield Topology(prefix)
    delete_topology(prefix)


@pytest.fixture
def cj(tmp_path: Path) -> Any:
    app = BatchApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "s.db")}
    )
    yield app
    app.close()


@pytest.fixture
async def running_broker(topology: Topology) -> AsyncIterator[BrokerComponent]:
    component = BrokerComponent(make_broker(BROKER_URL, prefetch=50), topology)
    await component.start()
    yield component
    await component.stop()


def dispatcher_for(app: BatchApplication, broker: BrokerComponent) -> OutboxDispatcher:
    publisher = MessagePublisher(broker.broker, broker.topology, timeout=5)
    transport = RabbitRequestTransport(publisher, asyncio.get_running_loop(), timeout=10)
    return OutboxDispatcher(app, transport, position_store_for(app))


async def test_the_dispatcher_publishes_each_stored_request_and_then_moves_its_position(
    cj: BatchApplication, running_broker: BrokerComponent, topology: Topology
) -> None:
    batch_id = cj.submit(RegisterBatch("dispatch-1", essays(6)))
    wave = [e for e in cj.batch_events(batch_id) if isinstance(e, CJBatch.ComparisonsRequested)]
    dispatcher = dispatcher_for(cj, running_broker)

    sent = await anyio.to_thread.run_sync(dispatcher.pump)

    assert sent == len(wave[0].pairs) == 3
    assert dispatcher.position == cj.recorder.max_notification_id()
    taken = await take_all_async(topology.requests_queue_name)
    messages = [parse_request_data(item) for m in taken for item in m.items]
    assert {m.schema_version for m in messages} == {2}
    assert sorted(m.comparison_id for m in messages) == sorted(
        p.comparison_id for p in wave[0].pairs
    )
    assert {m.batch_id for m in messages} == {str(batch_id)}
    assert await anyio.to_thread.run_sync(dispatcher.pump) == 0  # nothing is sent twice


@pytest.mark.parametrize(
    ("mode", "messages"),
    [(BatchingMode.SERIAL_BUNDLE, 1), (BatchingMode.PER_REQUEST, 6)],
)
async def test_a_serial_bundle_wave_leaves_as_one_bundle_other_waves_one_message_each(
    cj: BatchApplication,
    running_broker: BrokerComponent,
    topology: Topology,
    mode: BatchingMode,
    messages: int,
) -> None:
    batch_id = cj.submit(RegisterBatch(f"bundle-{mode.value}", essays(12), requested_mode=mode))
    wave = next(e for e in cj.batch_events(batch_id) if isinstance(e, CJBatch.ComparisonsRequested))
    dispatcher = dispatcher_for(cj, running_broker)

    assert await anyio.to_thread.run_sync(dispatcher.pump) == len(wave.pairs) == 6

    taken = await take_all_async(topology.requests_queue_name)
    assert len(taken) == messages
    items = [parse_request_data(item) for m in taken for item in m.items]
    assert sorted(i.comparison_id for i in items) == sorted(p.comparison_id for p in wave.pairs)
    assert {i.batching_mode for i in items} == {mode}
    if mode is BatchingMode.SERIAL_BUNDLE:
        assert taken[0].json["kind"] == "comparison_requests"


async def test_an_unroutable_request_fails_the_pump_and_the_position_stays(
    cj: BatchApplication, running_broker: BrokerComponent, topology: Topology
) -> None:
    cj.submit(RegisterBatch("dispatch-2", essays(4)))
    queue = await running_broker.broker.declare_queue(topology.requests_queue)
    await queue.unbind(topology.exchange_name, topology.requests_queue.routing())
    dispatcher = dispatcher_for(cj, running_broker)

    with pytest.raises(RuntimeError, match="not confirmed"):
        await anyio.to_thread.run_sync(dispatcher.pump)

    assert dispatcher.position == 0


class FlakyStore:
    """Fails the first ``failures`` calls as an unreachable database would."""

    def __init__(self, app: BatchApplication, failures: int) -> None:
        self.app = app
        self.failures = failures
        self.calls = 0

    def __call__(self, items: Sequence[Any]) -> list[RecordResult]:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("connection refused")
        return self.app.record_outcomes(items)


def outcome_for(batch: CJBatch, **changes: Any) -> bytes:
    comparison_id, record = next(iter(batch.comparisons.items()))
    message = ComparisonOutcomeV1(
        request_id=comparison_id,
        batch_id=str(batch.id),
        comparison_id=comparison_id,
        correlation_id=f"{batch.id}/wave-1",
        status="success",
        winner_essay_id=record.pair.essay_a,
        confidence=2,
        provider="simulated",
        model="simulated-judge-1",
        queue_processing_mode="serial_bundle",
    )
    return json.dumps(message.model_dump(mode="json") | changes).encode()


async def run_consumer(
    topology: Topology, record: Any, until: Any, timeout: float = 10.0
) -> OutcomeConsumer:
    broker = make_broker(BROKER_URL, prefetch=50, graceful_timeout=2)
    consumer = OutcomeConsumer(
        record,
        RabbitDeadLetters(broker, topology, topology.outcomes_queue_name, timeout=5),
        backoff=Backoff(base_seconds=0.05, max_seconds=0.2),
    )
    subscribe(broker, topology.outcomes_queue, topology.exchange, consumer.handle)
    component = BrokerComponent(broker, topology, before_close=[consumer.drain])
    await consumer.start()
    await component.start()
    try:
        with anyio.fail_after(timeout):
            while not until(consumer):
                await asyncio.sleep(0.02)
    finally:
        await component.stop()
        await consumer.stop()
    return consumer


async def test_an_outcome_that_met_an_unreachable_store_is_requeued_until_recorded(
    cj: BatchApplication, running_broker: BrokerComponent, topology: Topology
) -> None:
    batch = cj.get_batch(cj.submit(RegisterBatch("flaky-1", essays(4))))
    await publish_raw_async(topology.prefix, OUTCOME_ROUTING_KEY, [outcome_for(batch)])
    store = FlakyStore(cj, failures=2)

    consumer = await run_consumer(topology, store, until=lambda c: c.stats.recorded == 1)

    assert store.calls == 3
    assert consumer.stats.requeued == 2
    assert await message_count_async(topology.outcomes_queue_name) == 0
    assert await message_count_async(topology.outcomes_dead_letter_queue_name) == 0
    completed = [e for e in cj.batch_events(batch.id) if isinstance(e, CJBatch.ComparisonCompleted)]
    assert len(completed) == 1


async def test_a_refused_outcome_reaches_the_dead_letter_queue_with_its_reason(
    cj: BatchApplication, running_broker: BrokerComponent, topology: Topology
) -> None:
    batch = cj.get_batch(cj.submit(RegisterBatch("refused-1", essays(4))))
    foreign_winner = outcome_for(batch, winner_essay_id="essay-77")
    await publish_raw_async(topology.prefix, OUTCOME_ROUTING_KEY, [b"{oops", foreign_winner])

    await run_consumer(topology, cj.record_outcomes, until=lambda c: c.stats.dead_lettered == 2)

    dead = await take_all_async(topology.outcomes_dead_letter_queue_name)
    by_code = {m.headers[CODE_HEADER]: m for m in dead}
    assert set(by_code) == {"malformed_json", "winner_not_in_pair"}
    assert by_code["malformed_json"].body == b"{oops"  # the original body, unchanged
    assert "essay-77" in by_code["winner_not_in_pair"].headers[REASON_HEADER]
    assert {m.headers[SOURCE_QUEUE_HEADER] for m in dead} == {topology.outcomes_queue_name}
    assert await message_count_async(topology.outcomes_queue_name) == 0
    assert not [e for e in cj.batch_events(batch.id) if isinstance(e, CJBatch.ComparisonCompleted)]


async def test_a_bundle_of_outcomes_records_its_items_and_dead_letters_a_bad_one_alone(
    cj: BatchApplication, running_broker: BrokerComponent, topology: Topology
) -> None:
    batch = cj.get_batch(cj.submit(RegisterBatch("bundle-out-1", essays(6))))
    (first_id, _), (second_id, second) = list(batch.comparisons.items())[:2]
    good = [
        json.loads(outcome_for(batch)),
        json.loads(outcome_for(batch, comparison_id=second_id, request_id=second_id))
        | {"winner_essay_id": second.pair.essay_b},
    ]
    foreign = json.loads(outcome_for(batch, winner_essay_id="essay-77"))
    body = json.dumps(
        {"bundle_version": 1, "kind": "comparison_outcomes", "items": [good[0], foreign, good[1]]}
    ).encode()
    await publish_raw_async(topology.prefix, OUTCOME_ROUTING_KEY, [body])

    consumer = await run_consumer(
        topology,
        cj.record_outcomes,
        until=lambda c: c.stats.recorded == 2 and c.stats.dead_lettered == 1,
    )

    assert consumer.stats.dead_lettered == 1
    (dead,) = await take_all_async(topology.outcomes_dead_letter_queue_name)
    assert dead.json == foreign  # the bad item alone, not the bundle
    assert dead.headers[CODE_HEADER] == "winner_not_in_pair"
    assert dead.headers["x-cjledger-bundle-item"] == 1
    assert await message_count_async(topology.outcomes_queue_name) == 0  # acked
    done = [e for e in cj.batch_events(batch.id) if isinstance(e, CJBatch.ComparisonCompleted)]
    assert sorted(e.outcome.comparison_id for e in done) == sorted([first_id, second_id])


async def test_each_process_can_declare_the_topology_again(topology: Topology) -> None:
    for _ in range(2):
        component = BrokerComponent(make_broker(BROKER_URL, prefetch=1), topology)
        await component.start()
        await component.stop()
    assert await message_count_async(topology.requests_queue_name) == 0


def test_prefixes_keep_runs_apart() -> None:
    assert new_prefix() != new_prefix()
    assert uuid4()  # the prefix is random per run, not per process
