"""The batch application end to end on a real store: replay, idempotency, rejection, races."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.batches import BatchApplication, BatchConflict, BatchNotFound, RegisterBatch
from application.dispatcher import InMemoryPositionStore, OutboxDispatcher
from domain.batch import CJBatch, OutcomeRejected
from domain.continuation import DecisionKind
from domain.policy import BatchPolicy, as_recorded
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    Essay,
    FailureSource,
    FinalStatus,
    GenerationMode,
    SuccessDetails,
)
from infrastructure.embedded import InProcessTransport
from tests.conftest import AppFactory
from tests.fakes import StepClock, ThetaJudge, essays, run_batch, thetas_for


def decisions(app: BatchApplication, batch_id: UUID) -> list[CJBatch.ContinuationDecided]:
    return [e for e in app.batch_events(batch_id) if isinstance(e, CJBatch.ContinuationDecided)]


def waves(app: BatchApplication, batch_id: UUID) -> list[CJBatch.ComparisonsRequested]:
    return [e for e in app.batch_events(batch_id) if isinstance(e, CJBatch.ComparisonsRequested)]


def first_wave(
    app: BatchApplication, ref: str = "b", n: int = 6, **kw: object
) -> tuple[UUID, list[CJBatch.ComparisonsRequested]]:
    batch_id = app.submit(RegisterBatch(ref, essays(n), seed=3, **kw))  # type: ignore[arg-type]
    return batch_id, waves(app, batch_id)


def win(comparison_id: str, winner: str) -> ComparisonOutcome:
    return ComparisonOutcome(comparison_id, success=SuccessDetails(winner, 4, "j", "sim", "m"))


def test_every_event_round_trips_through_the_store_exactly(make_app: AppFactory) -> None:
    app = make_app()
    batch_id = run_batch(app, n=6)
    stored = app.batch_events(batch_id)
    kinds = {type(e).__name__ for e in stored}
    assert kinds == {
        "BatchRegistered",
        "BatchingModeSet",
        "ComparisonsRequested",
        "ComparisonCompleted",
        "ContinuationDecided",
        "Finalized",
    }
    fresh = make_app()  # a second instance reads only what is on disk
    assert fresh.batch_events(batch_id) == stored
    for event in stored:
        for value in vars(event).values():
            assert not isinstance(value, list), "sequences come back as tuples"


def test_replay_rebuilds_the_live_state(make_app: AppFactory) -> None:
    app = make_app()
    batch_id = app.submit(RegisterBatch("r", essays(8), seed=2))
    live = app.get_batch(batch_id)
    transport = InProcessTransport()
    dispatcher = OutboxDispatcher(app, transport, InMemoryPositionStore())
    judge = ThetaJudge(thetas_for(8))
    dispatcher.pump()
    for batch_uuid, outcome in judge(transport.take_all()):
        live.record_outcome(outcome)
        app.record_outcome(batch_uuid, outcome)
    replayed = make_app().get_batch(batch_id)
    stored_now = app.get_batch(batch_id)
    assert replayed.__dict__ == stored_now.__dict__
    assert replayed.version == stored_now.version


def test_registering_the_same_request_twice_is_a_no_op(make_app: AppFactory) -> None:
    app = make_app()
    first = app.submit(RegisterBatch("same-ref", essays(4), seed=3, budget_override=50))
    head = app.recorder.max_notification_id()
    second = app.submit(RegisterBatch("same-ref", essays(4), seed=3, budget_override=50))
    assert first == second
    assert app.recorder.max_notification_id() == head


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"essays": essays(9)}, "essays"),
        ({"essays": (*essays(3), Essay("essay-03", "other-hash"))}, "essays"),
        ({"seed": 4}, "seed"),
        ({"budget_override": 40}, "budget"),
        ({"requested_mode": BatchingMode.PER_REQUEST}, "requested mode"),
        ({"model": "another-judge"}, "model"),
    ],
)
def test_the_same_reference_with_different_content_is_refused(
    make_app: AppFactory, change: dict[str, Any], named: str
) -> None:
    app = make_app()
    original = {"essays": essays(4), "seed": 3, "budget_override": 50}
    batch_id = app.submit(RegisterBatch("same-ref", **original))
    head = app.recorder.max_notification_id()
    with pytest.raises(BatchConflict) as refused:
        app.submit(RegisterBatch("same-ref", **{**original, **change}))
    assert str(batch_id) in str(refused.value)
    assert named in str(refused.value)
    assert app.recorder.max_notification_id() == head


def test_duplicate_outcome_is_recorded_once(make_app: AppFactory) -> None:
    app = make_app()
    batch_id, (wave,) = first_wave(app)
    pair = wave.pairs[0]
    assert app.record_outcome(batch_id, win(pair.comparison_id, pair.essay_a)) is True
    version = app.get_batch(batch_id).version
    assert app.record_outcome(batch_id, win(pair.comparison_id, pair.essay_b)) is False
    assert app.get_batch(batch_id).version == version


@pytest.mark.parametrize(
    ("make_outcome", "error", "code"),
    [
        (lambda p: win("no-such-comparison", p.essay_a), OutcomeRejected, "unknown_comparison"),
        (lambda p: win(p.comparison_id, "essay-99"), OutcomeRejected, "winner_not_in_pair"),
        (
            lambda p: ComparisonOutcome(
                p.comparison_id, success=SuccessDetails(p.essay_a, 9, "j", "sim", "m")
            ),
            OutcomeRejected,
            "confidence_out_of_range",
        ),
    ],
    ids=["unknown_comparison", "winner_outside_pair", "confidence_out_of_range"],
)
def test_bad_outcomes_are_rejected_and_change_nothing(
    make_app: AppFactory, make_outcome: object, error: type[Exception], code: str
) -> None:
    app = make_app()
    batch_id, (wave,) = first_wave(app)
    head = app.recorder.max_notification_id()
    with pytest.raises(error) as raised:
        app.record_outcome(batch_id, make_outcome(wave.pairs[0]))  # type: ignore[operator]
    assert getattr(raised.value, "code", None) == code
    assert app.recorder.max_notification_id() == head


def test_outcome_for_unknown_batch_is_rejected(make_app: AppFactory) -> None:
    app = make_app()
    with pytest.raises(BatchNotFound):
        app.record_outcome(uuid4(), win("x", "y"))


def test_one_bad_outcome_does_not_block_its_neighbours(make_app: AppFactory) -> None:
    app = make_app()
    batch_id, (wave,) = first_wave(app)
    good = [win(p.comparison_id, p.essay_a) for p in wave.pairs[:2]]
    results = app.record_outcomes(
        [(batch_id, good[0]), (batch_id, win("bogus", "essay-00")), (batch_id, good[1])]
    )
    assert [r.status.value for r in results] == ["recorded", "rejected", "recorded"]
    assert app.get_batch(batch_id).successes == 2


def test_last_outcome_of_a_wave_saves_decision_and_next_wave_atomically(
    make_app: AppFactory,
) -> None:
    app = make_app()
    batch_id, (wave,) = first_wave(app, n=6)
    for pair in wave.pairs[:-1]:
        app.record_outcome(batch_id, win(pair.comparison_id, pair.essay_a))
    head = app.recorder.max_notification_id()
    last = wave.pairs[-1]
    app.record_outcome(batch_id, win(last.comparison_id, last.essay_a))
    new = app.recorder.select_notifications(start=head, limit=10, inclusive_of_start=False)
    assert [n.topic.rsplit(".", 1)[-1] for n in new] == [
        "ComparisonCompleted",
        "ContinuationDecided",
        "ComparisonsRequested",
    ]


def test_two_instances_racing_on_the_last_two_outcomes_start_one_wave(
    make_app: AppFactory,
) -> None:
    """Two application instances on one store record the last two outcomes of a wave at
    the same moment; optimistic concurrency lets exactly one next wave through."""
    setup = make_app()
    batch_id, (wave,) = first_wave(setup, n=6)
    for pair in wave.pairs[:-2]:
        setup.record_outcome(batch_id, win(pair.comparison_id, pair.essay_a))
    one, two = make_app(), make_app()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def record(app: BatchApplication, pair_index: int) -> None:
        pair = wave.pairs[pair_index]
        try:
            barrier.wait()
            app.record_outcome(batch_id, win(pair.comparison_id, pair.essay_b))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [
        threading.Thread(target=record, args=(one, -2)),
        threading.Thread(target=record, args=(two, -1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = make_app()
    assert len(waves(final, batch_id)) == 2
    assert len(decisions(final, batch_id)) == 1
    assert final.get_batch(batch_id).successes == len(wave.pairs)


def test_deadline_closes_overdue_comparisons_as_failures(make_app: AppFactory) -> None:
    clock = StepClock()
    app = make_app(clock=clock)
    batch_id, (wave,) = first_wave(app, n=4)
    assert app.close_overdue() == 0
    clock.advance(hours=4)
    assert app.close_overdue() == len(wave.pairs)
    batch = app.get_batch(batch_id)
    closed = [r.outcome for r in batch.comparisons.values() if r.outcome is not None]
    assert closed and all(o.failure and o.failure.source is FailureSource.DEADLINE for o in closed)
    assert batch.decision_count == 1, "the deadline closed the wave, so a decision followed"


def test_provider_batch_mode_runs_one_wave_and_one_decision(make_app: AppFactory) -> None:
    app = make_app()
    batch_id = run_batch(
        app, n=40, mode=BatchingMode.PROVIDER_BATCH_API, policy=BatchPolicy(max_pairs_cap=400)
    )
    (wave,) = waves(app, batch_id)
    (decision,) = decisions(app, batch_id)
    assert len(wave.pairs) == 400
    assert decision.decision is DecisionKind.FINALIZE_SCORING


def test_provider_batch_mode_with_budget_left_finalizes_by_guard(make_app: AppFactory) -> None:
    app = make_app()
    batch_id = run_batch(app, n=6, mode=BatchingMode.PROVIDER_BATCH_API)
    (wave,) = waves(app, batch_id)
    (decision,) = decisions(app, batch_id)
    assert len(wave.pairs) == 15
    assert decision.decision is DecisionKind.FINALIZE_SCORING
    assert decision.guard == "provider_batch_single_wave"
    assert decision.raw_decision in (DecisionKind.RESAMPLE, DecisionKind.REQUEST_MORE_COMPARISONS)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_small_net_covers_then_resamples_at_most_four_times(
    make_app: AppFactory, seed: int
) -> None:
    app = make_app()
    batch_id = run_batch(app, n=3, seed=seed)
    modes = [(w.generation_mode, len(w.pairs)) for w in waves(app, batch_id)]
    assert modes[:3] == [(GenerationMode.COVERAGE, 1)] * 3
    assert all(mode is GenerationMode.RESAMPLING for mode, _ in modes[3:])
    trail = decisions(app, batch_id)
    kinds = [d.decision for d in trail]
    # every resampling wave was asked for by a RESAMPLE decision, at least one happened,
    # and the batch stops at the fourth pass unless it was stable before
    assert kinds.count(DecisionKind.RESAMPLE) == len(modes) - 3 >= 1
    expected = "small_net_passes_exhausted" if len(modes) - 3 == 4 else "stable"
    assert trail[-1].reason == expected
    assert kinds[-1] is DecisionKind.FINALIZE_SCORING


NEVER_STABLE_V1 = as_recorded(
    BatchPolicy(max_pairs_cap=40, policy_version=1, min_successes_for_stability=10**9)
)


@pytest.mark.parametrize(
    ("failure_rate", "reason"), [(1.0, "zero_successes"), (0.5, "low_success_rate")]
)
def test_under_policy_1_failing_judges_fail_the_batch_once_the_cap_is_hit(
    make_app: AppFactory, failure_rate: float, reason: str
) -> None:
    app = make_app()
    # Stability is switched off so that only the success-rate rule can end the batch:
    # under policy 1 a wave of failures moves no score, which reads as "stable".
    batch_id = run_batch(app, n=10, failure_rate=failure_rate, policy=NEVER_STABLE_V1)
    batch = app.get_batch(batch_id)
    assert batch.final_status is FinalStatus.FAILED
    assert batch.failure_reason == reason
    assert batch.pairs_submitted == 40


@pytest.mark.parametrize("failure_rate", [1.0, 0.5])
def test_failing_judges_fail_the_batch_as_soon_as_the_rate_is_unreachable(
    make_app: AppFactory, failure_rate: float
) -> None:
    app = make_app()
    batch_id = run_batch(app, n=10, failure_rate=failure_rate, policy=BatchPolicy(max_pairs_cap=40))
    batch = app.get_batch(batch_id)
    assert batch.final_status is FinalStatus.FAILED
    assert batch.failure_reason == "success_rate_unreachable"
    # (1 - 0.8) x 40 = 8 failures can be absorbed; the wave that brings the 9th ends it.
    assert 8 < batch.failures <= 8 + 5
    assert batch.pairs_submitted < 40


def test_fewer_than_two_non_anchor_essays_finalize_at_once(make_app: AppFactory) -> None:
    app = make_app()
    batch_id = app.submit(RegisterBatch("tiny", essays(3, anchors=2)))
    batch = app.get_batch(batch_id)
    assert batch.final_status is FinalStatus.INSUFFICIENT_ESSAYS
    assert batch.waves == []


def test_every_wave_closing_is_noted_with_its_decision_and_cost(make_app: AppFactory) -> None:
    app = make_app()
    other = run_batch(app, n=6, ref="other")
    batch_id = run_batch(app, n=10, budget=30)
    batch = app.get_batch(batch_id)
    closings = [c for c in app.wave_closings if c.batch_id == batch_id]
    assert [c.wave for c in closings] == [w.number for w in batch.waves]
    assert batch.last_decision is not None
    assert closings[-1].decision == batch.last_decision.value
    assert all(c.decision == DecisionKind.REQUEST_MORE_COMPARISONS.value for c in closings[:-1])
    assert all(c.seconds > 0 and c.essays == 10 for c in closings)
    assert any(c.batch_id == other for c in app.wave_closings)
