"""The CJ outcome consumer, with small fakes for the delivery and the dead-letter queue."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import OperationalError

from application.batches import BatchApplication, RecordResult, RegisterBatch
from application.content import EssaySubmission
from domain.backoff import Backoff
from domain.batch import CJBatch
from domain.values import ComparisonOutcome
from infrastructure.messaging.contracts import ComparisonOutcomeV1
from infrastructure.messaging.outcomes import OutcomeConsumer, parse_outcome
from infrastructure.persistence.store import eventsourcing_env
from tests.fakes import essays


@dataclass
class FakeDelivery:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str = "m-1"
    correlation_id: str = "c-1"
    acked: int = 0
    requeued: int = 0
    rejected: int = 0

    async def ack(self) -> None:
        self.acked += 1

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        assert requeue, "nothing in cjledger drops a message with a plain nack"
        self.requeued += 1

    async def reject(self, requeue: bool = False) -> None:
        assert not requeue, "a reject hands the message to the broker's dead letters"
        self.rejected += 1

    @property
    def settled(self) -> bool:
        return self.acked + self.requeued + self.rejected > 0


@dataclass
class FakeDeadLetters:
    sent: list[tuple[FakeDelivery, str, str]] = field(default_factory=list)
    fail: bool = False

    async def send(self, delivery: Any, code: str, reason: str) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append((delivery, code, reason))

    @property
    def codes(self) -> list[str]:
        return [code for _, code, _ in self.sent]


class CountingRecorder:
    """Wraps ``record_outcomes`` and remembers the size of every call."""

    def __init__(self, record: Callable[[Sequence[Any]], list[RecordResult]]) -> None:
        self.record = record
        self.calls: list[int] = []

    def __call__(self, items: Sequence[Any]) -> list[RecordResult]:
        self.calls.append(len(items))
        return self.record(items)


@pytest.fixture
def cj() -> Iterator[BatchApplication]:
    app = BatchApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield app
    app.close()


def started_batch(app: BatchApplication, n: int = 6) -> CJBatch:
    return app.get_batch(app.submit(RegisterBatch(f"ref-{uuid4()}", essays(n))))


def outcome_body(batch: CJBatch, index: int = 0, **changes: Any) -> bytes:
    comparison_id, record = list(batch.comparisons.items())[index]
    message = {
        "request_id": comparison_id,
        "batch_id": str(batch.id),
        "comparison_id": comparison_id,
        "correlation_id": f"{batch.id}/wave-1",
        "status": "success",
        "winner_essay_id": record.pair.essay_a,
        "confidence": 3,
        "justification": "A is clearer.",
        "provider": "simulated",
        "model": "simulated-judge-1",
        "queue_processing_mode": "serial_bundle",
    }
    message.update(changes)
    return json.dumps(message).encode()


def consumer_for(
    record: Callable[[Sequence[Any]], list[RecordResult]],
    dead_letters: FakeDeadLetters,
    **options: Any,
) -> OutcomeConsumer:
    options.setdefault("backoff", Backoff(base_seconds=0.01, max_seconds=0.02))
    return OutcomeConsumer(record, dead_letters, **options)


async def handle_all(consumer: OutcomeConsumer, deliveries: Sequence[FakeDelivery]) -> None:
    await consumer.start()
    for delivery in deliveries:
        await consumer.handle(delivery)
    await consumer.drain()
    await consumer.stop()


def completed(app: BatchApplication, batch_id: UUID) -> list[ComparisonOutcome]:
    return [
        e.outcome for e in app.batch_events(batch_id) if isinstance(e, CJBatch.ComparisonCompleted)
    ]


# ---------------------------------------------------------------------------- parsing


def test_parse_names_malformed_json() -> None:
    refusal = parse_outcome(b"{not json")
    assert refusal.code == "malformed_json"


def test_parse_names_the_fields_that_break_the_schema() -> None:
    refusal = parse_outcome(json.dumps({"status": "success"}).encode())
    assert refusal.code == "schema_violation"
    assert "comparison_id" in refusal.reason


def test_parse_refuses_other_schema_versions_by_name(cj: BatchApplication) -> None:
    body = outcome_body(started_batch(cj), schema_version=3)
    assert parse_outcome(body).code == "unsupported_schema_version"


def test_parse_treats_a_batch_id_that_is_no_uuid_as_unknown(cj: BatchApplication) -> None:
    body = outcome_body(started_batch(cj), batch_id="batch-7")
    assert parse_outcome(body).code == "unknown_batch"


# ---------------------------------------------------------------------------- recording


async def test_outcomes_arriving_together_are_recorded_in_one_transaction(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj, n=8)
    recorder = CountingRecorder(cj.record_outcomes)
    deliveries = [FakeDelivery(outcome_body(batch, i)) for i in range(4)]

    await handle_all(consumer_for(recorder, FakeDeadLetters()), deliveries)

    assert recorder.calls == [4]
    assert all(d.acked == 1 and d.requeued == 0 for d in deliveries)
    assert len(completed(cj, batch.id)) == 4


async def test_a_group_never_exceeds_the_configured_size(cj: BatchApplication) -> None:
    batch = started_batch(cj, n=8)
    recorder = CountingRecorder(cj.record_outcomes)
    deliveries = [FakeDelivery(outcome_body(batch, i)) for i in range(4)]

    await handle_all(consumer_for(recorder, FakeDeadLetters(), max_items=3), deliveries)

    assert recorder.calls == [3, 1]
    assert all(d.acked == 1 for d in deliveries)


async def test_a_duplicate_outcome_is_acknowledged_and_changes_nothing(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj)
    first, again = FakeDelivery(outcome_body(batch)), FakeDelivery(outcome_body(batch))
    dead = FakeDeadLetters()

    await handle_all(consumer_for(cj.record_outcomes, dead), [first])
    events_before = len(cj.batch_events(batch.id))
    consumer = consumer_for(cj.record_outcomes, dead)
    await handle_all(consumer, [again])

    assert again.acked == 1 and dead.sent == []
    assert consumer.stats.duplicates == 1
    assert len(cj.batch_events(batch.id)) == events_before


async def test_bad_outcomes_are_dead_lettered_alone_and_their_neighbours_recorded(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj, n=8)
    good = [FakeDelivery(outcome_body(batch, i)) for i in range(2)]
    bad = {
        "malformed_json": FakeDelivery(b"\xff not json"),
        "schema_violation": FakeDelivery(outcome_body(batch, 2, confidence=9)),
        "unknown_batch": FakeDelivery(outcome_body(batch, 2, batch_id=str(uuid4()))),
        "unknown_comparison": FakeDelivery(
            outcome_body(batch, 2, comparison_id="no-such-comparison")
        ),
        "winner_not_in_pair": FakeDelivery(outcome_body(batch, 3, winner_essay_id="essay-99")),
    }
    dead = FakeDeadLetters()
    recorder = CountingRecorder(cj.record_outcomes)

    await handle_all(consumer_for(recorder, dead), [good[0], *bad.values(), good[1]])

    assert sorted(dead.codes) == sorted(bad)
    for code, delivery in bad.items():
        assert delivery.acked == 1, code  # acknowledged only once the dead letter is stored
        assert any(d is delivery and reason for d, _, reason in dead.sent)
    assert all(d.acked == 1 for d in good)
    assert recorder.calls == [5]  # the refused-on-sight ones never reach the store
    first_two = set(list(batch.comparisons)[:2])
    assert {o.comparison_id for o in completed(cj, batch.id)} == first_two


async def test_an_unreachable_store_requeues_after_a_backoff_and_never_acks(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj)

    def store_down(items: Sequence[Any]) -> list[RecordResult]:
        raise OperationalError("could not connect to server")

    delivery = FakeDelivery(outcome_body(batch))
    consumer = consumer_for(
        store_down, FakeDeadLetters(), backoff=Backoff(base_seconds=0.05, max_seconds=0.05)
    )
    await consumer.start()
    await consumer.handle(delivery)
    await asyncio.sleep(0.02)
    assert not delivery.settled  # held during the backoff
    for _ in range(100):
        if delivery.settled:
            break
        await asyncio.sleep(0.01)
    await consumer.stop()

    assert delivery.requeued == 1 and delivery.acked == 0
    assert consumer.consecutive_failures == 1
    assert completed(cj, batch.id) == []


@dataclass(frozen=True)
class WatchedBackoff(Backoff):
    """The real backoff, noting the retry number the consumer asks a delay for."""

    asked: list[int] = field(default_factory=list, compare=False)

    def delay(self, retry_number: int, random_fraction: float) -> float:
        self.asked.append(retry_number)
        return super().delay(retry_number, random_fraction)


async def test_backoff_grows_with_consecutive_store_failures_and_resets_after_a_success(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj)
    outages = [OperationalError("could not connect to server")] * 3

    def flaky_store(items: Sequence[Any]) -> list[RecordResult]:
        if outages:
            raise outages.pop()
        return cj.record_outcomes(items)

    backoff = WatchedBackoff(base_seconds=0.001, max_seconds=0.004, jitter=0.0)
    consumer = consumer_for(flaky_store, FakeDeadLetters(), backoff=backoff)
    await consumer.start()
    for _ in range(4):  # the broker redelivers each requeued message
        delivery = FakeDelivery(outcome_body(batch))
        await consumer.handle(delivery)
        for _ in range(500):
            if delivery.settled:
                break
            await asyncio.sleep(0.002)
        assert delivery.settled
    await consumer.stop()

    assert backoff.asked == [1, 2, 3]  # each failure in a row waits one step longer
    assert [backoff.delay(n, 0.0) for n in (1, 2, 3)] == [0.001, 0.002, 0.004]
    assert consumer.consecutive_failures == 0  # the fourth delivery was recorded
    assert len(completed(cj, batch.id)) == 1


async def test_an_unexpected_error_is_narrowed_down_to_the_outcome_that_causes_it(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj, n=8)
    poison = list(batch.comparisons)[1]

    def record(items: Sequence[Any]) -> list[RecordResult]:
        if any(outcome.comparison_id == poison for _, outcome, *_ in items):
            raise KeyError("a bug that only this outcome triggers")
        return cj.record_outcomes(items)

    deliveries = [FakeDelivery(outcome_body(batch, i)) for i in range(3)]
    dead = FakeDeadLetters()
    await handle_all(consumer_for(record, dead), deliveries)

    assert dead.codes == ["internal_error"]
    assert dead.sent[0][0] is deliveries[1]
    assert all(d.acked == 1 for d in deliveries)
    assert len(completed(cj, batch.id)) == 2


async def test_a_dead_letter_the_broker_did_not_confirm_is_requeued_not_acked() -> None:
    delivery = FakeDelivery(b"garbage")
    await handle_all(consumer_for(lambda items: [], FakeDeadLetters(fail=True)), [delivery])
    assert delivery.requeued == 1 and delivery.acked == 0


async def test_drain_records_what_was_received_before_the_channel_closes(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj, n=8)
    consumer = consumer_for(cj.record_outcomes, FakeDeadLetters(), max_wait=10.0)
    deliveries = [FakeDelivery(outcome_body(batch, i)) for i in range(3)]
    await consumer.start()
    for delivery in deliveries:
        await consumer.handle(delivery)

    await asyncio.wait_for(consumer.drain(), timeout=2)  # does not wait out max_wait
    await consumer.stop()

    assert all(d.acked == 1 for d in deliveries)


def test_the_contract_outcome_round_trips_through_the_parser(cj: BatchApplication) -> None:
    batch = started_batch(cj)
    parsed = parse_outcome(outcome_body(batch))
    assert parsed.batch_id == batch.id
    assert parsed.message == ComparisonOutcomeV1.model_validate_json(outcome_body(batch))


# ---------------------------------------------------------------------------- content


async def test_a_version_2_outcome_leaves_its_prose_and_raw_answer_in_the_content_store() -> None:
    app = BatchApplication(env=eventsourcing_env("memory://"))
    submissions = tuple(EssaySubmission(f"pupil-{i}", f"Essay text {i}.") for i in range(4))
    batch = app.get_batch(app.submit(RegisterBatch("ref-content", submissions=submissions)))
    comparison_id = next(iter(batch.comparisons))
    body = outcome_body(
        batch,
        0,
        schema_version=2,
        justification="A says 'Essay text 1.' better",
        raw_answer='{"winner": "A", "confidence": 3}',
    )
    delivery = FakeDelivery(body)
    await handle_all(consumer_for(app.record_outcomes, FakeDeadLetters()), [delivery])

    assert delivery.acked == 1
    stored = app.require_content().answers(str(batch.id))[comparison_id]
    assert stored.justification == "A says 'Essay text 1.' better"
    assert stored.raw_answer == '{"winner": "A", "confidence": 3}'
    (event,) = [e for e in app.batch_events(batch.id) if isinstance(e, CJBatch.ComparisonCompleted)]
    assert event.justification_ref == comparison_id
    assert event.outcome.success is not None and event.outcome.success.justification == ""
    app.close()


# ---------------------------------------------------------------------------- bundles


def bundle_of(*items: bytes | Any) -> bytes:
    decoded = [json.loads(i) if isinstance(i, bytes) else i for i in items]
    return json.dumps(
        {"bundle_version": 1, "kind": "comparison_outcomes", "items": decoded}
    ).encode()


async def test_a_bundle_is_recorded_in_one_group_and_acknowledged_once(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj, n=8)
    delivery = FakeDelivery(bundle_of(*(outcome_body(batch, i) for i in range(4))))
    recorder = CountingRecorder(cj.record_outcomes)

    await handle_all(consumer_for(recorder, FakeDeadLetters()), [delivery])

    assert recorder.calls == [4]
    assert (delivery.acked, delivery.requeued, delivery.rejected) == (1, 0, 0)
    assert {o.comparison_id for o in completed(cj, batch.id)} == set(list(batch.comparisons)[:4])


async def test_a_bad_item_is_dead_lettered_alone_and_its_neighbours_recorded(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj, n=8)
    foreign = json.loads(outcome_body(batch, 1, winner_essay_id="essay-99"))
    delivery = FakeDelivery(
        bundle_of(outcome_body(batch, 0), {"not": "an outcome"}, foreign, outcome_body(batch, 2))
    )
    dead = FakeDeadLetters()

    await handle_all(consumer_for(cj.record_outcomes, dead), [delivery])

    assert sorted(dead.codes) == ["schema_violation", "winner_not_in_pair"]
    by_code = {code: (item, reason) for item, code, reason in dead.sent}
    item, reason = by_code["winner_not_in_pair"]
    assert json.loads(item.body) == foreign  # the item alone is the dead letter's body
    assert item.dead_letter_headers == {"x-cjledger-bundle-item": 2}
    assert "essay-99" in reason
    assert delivery.acked == 1  # every item settled: the message is done
    recorded = {o.comparison_id for o in completed(cj, batch.id)}
    ids = list(batch.comparisons)
    assert recorded == {ids[0], ids[2]}


async def test_a_bundle_met_by_an_unreachable_store_is_requeued_whole_never_acked(
    cj: BatchApplication,
) -> None:
    batch = started_batch(cj)

    def store_down(items: Sequence[Any]) -> list[RecordResult]:
        raise OperationalError("could not connect to server")

    delivery = FakeDelivery(bundle_of(*(outcome_body(batch, i) for i in range(3))))
    await handle_all(consumer_for(store_down, FakeDeadLetters()), [delivery])

    assert (delivery.acked, delivery.requeued, delivery.rejected) == (0, 1, 0)


async def test_a_redelivered_bundle_records_nothing_twice(cj: BatchApplication) -> None:
    batch = started_batch(cj, n=8)
    body = bundle_of(*(outcome_body(batch, i) for i in range(3)))
    first, again = FakeDelivery(body), FakeDelivery(body)
    consumer = consumer_for(cj.record_outcomes, FakeDeadLetters())

    await handle_all(consumer, [first])
    events_before = len(cj.batch_events(batch.id))
    await handle_all(consumer, [again])

    assert first.acked == again.acked == 1
    assert consumer.stats.duplicates == 3
    assert len(cj.batch_events(batch.id)) == events_before


@pytest.mark.parametrize(
    ("envelope", "code"),
    [
        ({"bundle_version": 2, "kind": "comparison_outcomes", "items": [{}]}, "unsupported"),
        ({"bundle_version": 1, "kind": "comparison_outcomes", "items": []}, "schema_violation"),
        ({"bundle_version": 1, "kind": "comparison_requests", "items": [{}]}, "schema_violation"),
    ],
)
async def test_an_unusable_bundle_envelope_is_dead_lettered_whole(
    envelope: dict[str, Any], code: str
) -> None:
    delivery = FakeDelivery(json.dumps(envelope).encode())
    dead = FakeDeadLetters()
    app = BatchApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        await handle_all(consumer_for(app.record_outcomes, dead), [delivery])
    finally:
        app.close()
    assert len(dead.sent) == 1 and dead.sent[0][0] is delivery
    assert dead.codes[0].startswith(code)
    assert delivery.acked == 1


async def test_outcomes_that_arrive_during_a_recording_are_recorded_next_without_waiting(
    cj: BatchApplication,
) -> None:
    """A group only waits ``max_wait`` to fill when the consumer was idle: outcomes that
    queued up while the previous group was being recorded go at once (here ``max_wait``
    is far longer than the test waits)."""
    batch = started_batch(cj, n=8)
    gate = threading.Event()
    recorder = CountingRecorder(cj.record_outcomes)

    def record(items: Sequence[Any]) -> list[RecordResult]:
        gate.wait(timeout=5)
        return recorder(items)

    consumer = consumer_for(record, FakeDeadLetters(), max_items=2, max_wait=30.0)
    deliveries = [FakeDelivery(outcome_body(batch, i)) for i in range(3)]
    await consumer.start()
    await consumer.handle(deliveries[0])
    await consumer.handle(deliveries[1])  # a full group: recorded at once, held at the gate
    while consumer._waiting:  # the first group was taken
        await asyncio.sleep(0.01)
    await consumer.handle(deliveries[2])  # arrives while the first group is recording
    gate.set()

    async def all_acked() -> None:
        while not all(d.acked for d in deliveries):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(all_acked(), timeout=10)  # not after max_wait (30 s)
    await consumer.drain()
    await consumer.stop()
    assert recorder.calls == [2, 1]
