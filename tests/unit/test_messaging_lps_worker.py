"""The LPS worker: gathering, one provider call per comparison in flight, ack after confirm."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from application.lps import JobPolling, QueuedRequestExecutor
from domain.backoff import Backoff
from infrastructure.lps.simulated_judge import SeededSimulatedJudge, draw_thetas
from infrastructure.lps.simulated_provider import SimulatedProvider
from infrastructure.lps.worker import LpsWorker
from infrastructure.messaging.contracts import ComparisonOutcomeV1
from tests.unit.test_messaging_outcomes import FakeDeadLetters, FakeDelivery

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def request_body(
    comparison_id: str = "cmp-1",
    mode: str = "serial_bundle",
    bundle: int = 4,
    essay_a: str = "essay-a",
    essay_b: str = "essay-b",
) -> bytes:
    return json.dumps(
        {
            "comparison_id": comparison_id,
            "batch_id": "11111111-2222-3333-4444-555555555555",
            "wave_number": 1,
            "essay_a": essay_a,
            "essay_b": essay_b,
            "provider": "simulated",
            "model": "simulated-judge-1",
            "batching_mode": mode,
            "preferred_bundle_size": bundle,
            "requested_at": (NOW - timedelta(minutes=1)).isoformat(),
            "deadline_at": (NOW + timedelta(hours=4)).isoformat(),
            "correlation_id": "batch/wave-1",
        }
    ).encode()


class Outbox:
    """Collects published outcomes; can be told to refuse the next ones."""

    def __init__(self) -> None:
        self.published: list[ComparisonOutcomeV1] = []
        self.refuse = 0

    async def publish(self, outcome: ComparisonOutcomeV1) -> None:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("no confirm from the broker")
        self.published.append(outcome)


def make_worker(outbox: Outbox, lanes: int = 1, **options: Any) -> tuple[LpsWorker, list[Any]]:
    providers = []
    executors = []
    for lane in range(lanes):
        provider = SimulatedProvider(SeededSimulatedJudge({}, seed=3), job_delay=timedelta(0))
        providers.append(provider)
        executors.append(
            QueuedRequestExecutor(
                provider,
                None,
                rng=random.Random(lane),
                clock=lambda: NOW,
                sleep=lambda seconds: None,
                job_polling=JobPolling(poll_interval=timedelta(seconds=1)),
            )
        )
    options.setdefault("backoff", Backoff(base_seconds=0.01, max_seconds=0.01))
    worker = LpsWorker(
        executors=executors,
        publish_outcome=outbox.publish,
        dead_letters=options.pop("dead_letters", FakeDeadLetters()),
        clock=lambda: NOW,
        **options,
    )
    return worker, providers


async def run(worker: LpsWorker, deliveries: list[FakeDelivery]) -> None:
    await worker.start()
    await asyncio.wait_for(asyncio.gather(*(worker.handle(d) for d in deliveries)), timeout=5)
    await worker.stop()


async def test_a_duplicate_request_in_flight_calls_the_provider_once() -> None:
    outbox = Outbox()
    worker, (provider,) = make_worker(outbox, gather_window=0.05)
    first, duplicate = FakeDelivery(request_body()), FakeDelivery(request_body())

    await run(worker, [first, duplicate])

    assert provider.calls.count("compare") + provider.calls.count("compare_bundle") == 1
    assert [o.comparison_id for o in outbox.published] == ["cmp-1"]
    assert first.acked == duplicate.acked == 1
    assert worker.stats.joined_in_flight == 1


async def test_waiting_serial_bundle_requests_share_one_provider_call() -> None:
    outbox = Outbox()
    worker, (provider,) = make_worker(outbox, gather_window=0.5)
    deliveries = [
        FakeDelivery(request_body(f"cmp-{i}", essay_a=f"e{i}", essay_b=f"f{i}")) for i in range(4)
    ]

    await run(worker, deliveries)

    assert provider.calls == ["compare_bundle"]
    assert sorted(o.comparison_id for o in outbox.published) == [f"cmp-{i}" for i in range(4)]
    assert {o.queue_processing_mode.value for o in outbox.published} == {"serial_bundle"}
    assert all(d.acked == 1 for d in deliveries)


async def test_gathering_stops_as_soon_as_the_bundle_is_full() -> None:
    worker, _ = make_worker(Outbox(), gather_window=30.0)
    deliveries = [
        FakeDelivery(request_body(f"cmp-{i}", bundle=2, essay_a=f"e{i}")) for i in range(2)
    ]
    await run(worker, deliveries)  # would time out if it waited for the window
    assert all(d.acked == 1 for d in deliveries)


async def test_per_request_mode_calls_the_provider_once_per_request() -> None:
    outbox = Outbox()
    worker, (provider,) = make_worker(outbox, gather_window=0.5)
    deliveries = [
        FakeDelivery(request_body(f"cmp-{i}", mode="per_request", bundle=1, essay_a=f"e{i}"))
        for i in range(3)
    ]
    await run(worker, deliveries)
    assert provider.calls == ["compare"] * 3
    assert {o.queue_processing_mode.value for o in outbox.published} == {"per_request"}


async def test_provider_batch_requests_become_one_batch_job() -> None:
    outbox = Outbox()
    worker, (provider,) = make_worker(outbox, gather_window=0.5)
    deliveries = [
        FakeDelivery(request_body(f"cmp-{i}", mode="provider_batch_api", bundle=3, essay_a=f"e{i}"))
        for i in range(3)
    ]
    await run(worker, deliveries)
    assert provider.calls.count("schedule_job") == 1
    assert {o.queue_processing_mode.value for o in outbox.published} == {"batch_api"}
    assert all(d.acked == 1 for d in deliveries)


async def test_a_request_is_acknowledged_only_after_its_outcome_is_confirmed() -> None:
    outbox = Outbox()
    outbox.refuse = 1
    worker, _ = make_worker(outbox, gather_window=0.0)
    delivery = FakeDelivery(request_body())

    await run(worker, [delivery])

    assert delivery.acked == 0 and delivery.requeued == 1
    assert outbox.published == []
    assert worker.stats.publish_failures == 1


async def test_a_request_answered_recently_is_answered_again_without_the_provider() -> None:
    outbox = Outbox()
    worker, (provider,) = make_worker(outbox, gather_window=0.0)
    await run(worker, [FakeDelivery(request_body())])
    calls = list(provider.calls)

    again = FakeDelivery(request_body())
    await run(worker, [again])

    assert provider.calls == calls
    assert again.acked == 1
    assert [o.comparison_id for o in outbox.published] == ["cmp-1", "cmp-1"]
    assert outbox.published[0] == outbox.published[1]


async def test_a_malformed_request_is_dead_lettered_with_its_reason() -> None:
    dead = FakeDeadLetters()
    worker, (provider,) = make_worker(Outbox(), dead_letters=dead)
    broken = FakeDelivery(request_body(essay_b="essay-a"))  # the same essay twice
    garbage = FakeDelivery(b"<xml/>")

    await run(worker, [broken, garbage])

    assert sorted(dead.codes) == ["malformed_json", "schema_violation"]
    assert broken.acked == garbage.acked == 1
    assert provider.calls == []


async def test_lanes_execute_groups_side_by_side() -> None:
    outbox = Outbox()
    worker, providers = make_worker(outbox, lanes=2, gather_window=0.0)
    deliveries = [
        FakeDelivery(request_body(f"cmp-{i}", mode="per_request", bundle=1, essay_a=f"e{i}"))
        for i in range(6)
    ]
    await run(worker, deliveries)
    assert len(outbox.published) == 6
    assert all(d.acked == 1 for d in deliveries)
    assert sum(len(p.calls) for p in providers) == 6


def test_the_worker_judge_draws_the_same_thetas_as_the_demo() -> None:
    judge = SeededSimulatedJudge({}, seed=11)
    ids = [f"essay-{i}" for i in range(5)]
    assert {e: judge.theta(e) for e in ids} == draw_thetas(ids, 11)


def test_two_workers_judge_a_comparison_alike() -> None:
    one, two = SeededSimulatedJudge({}, seed=5), SeededSimulatedJudge({}, seed=5)
    two.theta("b")  # a different order of first sight changes nothing
    assert one.judge("c-1", "a", "b") == two.judge("c-1", "a", "b")


# ---------------------------------------------------------------------------- bundles


class BundleOutbox(Outbox):
    """Also takes several outcomes as one message (a bundle)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[list[str]] = []

    async def publish_many(self, outcomes: Any) -> None:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("no confirm from the broker")
        self.messages.append([o.comparison_id for o in outcomes])
        self.published.extend(outcomes)


def request_bundle(*bodies: bytes | Any) -> bytes:
    items = [json.loads(b) if isinstance(b, bytes) else b for b in bodies]
    return json.dumps({"bundle_version": 1, "kind": "comparison_requests", "items": items}).encode()


async def test_a_bundle_of_requests_is_answered_by_one_bundle_of_outcomes_then_acked() -> None:
    outbox = BundleOutbox()
    worker, (provider,) = make_worker(
        outbox, gather_window=0.5, publish_outcomes=outbox.publish_many
    )
    delivery = FakeDelivery(
        request_bundle(
            *(request_body(f"cmp-{i}", essay_a=f"e{i}", essay_b=f"f{i}") for i in range(4))
        )
    )

    await run(worker, [delivery])

    assert provider.calls == ["compare_bundle"]
    assert outbox.messages == [[f"cmp-{i}" for i in range(4)]]
    assert (delivery.acked, delivery.requeued) == (1, 0)


async def test_a_bad_request_in_a_bundle_is_dead_lettered_alone() -> None:
    outbox = BundleOutbox()
    dead = FakeDeadLetters()
    worker, _ = make_worker(
        outbox, gather_window=0.05, publish_outcomes=outbox.publish_many, dead_letters=dead
    )
    same_essays = json.loads(request_body("cmp-bad", essay_a="x", essay_b="x"))
    delivery = FakeDelivery(
        request_bundle(
            request_body("cmp-0", essay_a="e0"), same_essays, request_body("cmp-2", essay_a="e2")
        )
    )

    await run(worker, [delivery])

    assert dead.codes == ["schema_violation"]
    item = dead.sent[0][0]
    assert json.loads(item.body) == same_essays
    assert item.message_id == "cmp-bad"
    assert sorted(o.comparison_id for o in outbox.published) == ["cmp-0", "cmp-2"]
    assert (delivery.acked, delivery.requeued) == (1, 0)


async def test_an_unconfirmed_bundle_of_outcomes_requeues_the_requests_and_is_sent_again() -> None:
    outbox = BundleOutbox()
    outbox.refuse = 1
    worker, (provider,) = make_worker(
        outbox, gather_window=0.05, publish_outcomes=outbox.publish_many
    )
    body = request_bundle(*(request_body(f"cmp-{i}", essay_a=f"e{i}") for i in range(3)))
    first, again = FakeDelivery(body), FakeDelivery(body)

    await worker.start()
    await asyncio.wait_for(worker.handle(first), timeout=5)
    assert (first.acked, first.requeued) == (0, 1)  # back to the queue, whole
    await asyncio.wait_for(worker.handle(again), timeout=5)  # the redelivery
    await worker.stop()

    assert again.acked == 1
    assert sorted(o.comparison_id for o in outbox.published) == ["cmp-0", "cmp-1", "cmp-2"]
    assert provider.calls.count("compare_bundle") == 2  # nothing was confirmed the first time
