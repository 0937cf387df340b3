"""Issue 8's defects, each through the real application and store: what a batch does
now, next to what policy version 1 (the original service's rules) does on the same run."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import datetime
from uuid import UUID

import pytest
from structlog.testing import capture_logs

from application.batches import BatchApplication, RegisterBatch
from application.dispatcher import OutboxDispatcher
from application.ports import ComparisonRequest
from domain import workflow
from domain.batch import CJBatch, CommandRejected, SparseBudget
from domain.continuation import DecisionKind
from domain.policy import BatchPolicy, as_recorded
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    Essay,
    FailureDetails,
    FinalStatus,
    SuccessDetails,
)
from infrastructure.embedded import InProcessTransport, run_until_idle, with_outage
from infrastructure.persistence.positions import position_store_for
from tests.conftest import AppFactory
from tests.fakes import StepClock, ThetaJudge, essays, thetas_for

POLICY_V1 = as_recorded(BatchPolicy(policy_version=1))


def drive(app: BatchApplication, execute: object) -> None:
    transport = InProcessTransport()
    dispatcher = OutboxDispatcher(app, transport, position_store_for(app))
    run_until_idle(app, dispatcher, transport, execute)  # type: ignore[arg-type]


def decisions(app: BatchApplication, batch_id: UUID) -> list[CJBatch.ContinuationDecided]:
    return [e for e in app.batch_events(batch_id) if isinstance(e, CJBatch.ContinuationDecided)]


# -- 1. a failed wave is not "stable" -------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "stable_after_outage"), [(POLICY_V1, True), (BatchPolicy(), False)]
)
def test_a_wave_that_only_failed_is_not_stable(
    make_app: AppFactory, policy: BatchPolicy, stable_after_outage: bool
) -> None:
    """24 essays, a perfect judge, and a provider outage in wave 2: the scores do not move
    in wave 2, which policy 1 took for stability (scored at 50 % success after 24 of 120)."""
    app = make_app()
    batch_id = app.submit(RegisterBatch("outage", essays(24), seed=7, policy=policy))
    drive(app, with_outage(ThetaJudge(thetas_for(24)), frozenset({2})))
    after_outage = decisions(app, batch_id)[1]
    assert after_outage.context.wave_number == 2
    assert after_outage.context.failures == 12
    assert after_outage.context.max_score_change is not None
    assert after_outage.context.max_score_change < 1e-9  # no new evidence, no movement
    assert (after_outage.reason == "stable") is stable_after_outage
    if not stable_after_outage:
        assert after_outage.context.new_successes == 0
        assert after_outage.decision is DecisionKind.REQUEST_MORE_COMPARISONS
        assert all(
            d.reason != "stable" or d.context.new_successes for d in decisions(app, batch_id)
        )


# -- 2. fail as soon as the success rate cannot be met -----------------------------------------


@pytest.mark.parametrize(
    ("policy", "reason", "requested"),
    [(POLICY_V1, "zero_successes", 120), (BatchPolicy(), "success_rate_unreachable", 36)],
)
def test_a_judge_that_always_fails_stops_early(
    make_app: AppFactory, policy: BatchPolicy, reason: str, requested: int
) -> None:
    app = make_app()
    batch_id = app.submit(RegisterBatch("fails", essays(24), seed=7, policy=policy))
    drive(app, ThetaJudge(thetas_for(24), failure_rate=1.0))
    batch = app.get_batch(batch_id)
    assert batch.final_status is FinalStatus.FAILED
    assert batch.failure_reason == reason
    assert batch.pairs_submitted == requested


# -- 3. pairs that keep failing are given up ---------------------------------------------------


class PoisonPairJudge(ThetaJudge):
    """Fails every comparison of one pair; answers the others."""

    def __init__(self, poison: frozenset[str], thetas: dict[str, float]) -> None:
        super().__init__(thetas)
        self.poison = poison
        self.asked: Counter[frozenset[str]] = Counter()

    def outcome(self, request: ComparisonRequest) -> ComparisonOutcome:
        pair = frozenset((request.essay_a, request.essay_b))
        self.asked[pair] += 1
        if pair == self.poison:
            return ComparisonOutcome(
                request.comparison_id,
                failure=FailureDetails("PROVIDER_ERROR", "this pair always fails", False),
            )
        return super().outcome(request)


@pytest.mark.parametrize(("policy", "max_asked"), [(POLICY_V1, 200), (BatchPolicy(), 3)])
def test_a_pair_that_always_fails_is_given_up_after_three_attempts(
    make_app: AppFactory, policy: BatchPolicy, max_asked: int
) -> None:
    app = make_app()
    poison = frozenset({"essay-00", "essay-01"})
    judge = PoisonPairJudge(poison, thetas_for(3))
    batch_id = app.submit(RegisterBatch("poison", essays(3), seed=7, policy=policy))
    drive(app, judge)
    batch = app.get_batch(batch_id)
    assert batch.is_finalized
    if max_asked == 3:
        assert judge.asked[poison] == 3
        last = decisions(app, batch_id)[-1]
        assert last.context.pairs_given_up == 1
        assert all(
            d.context.pairs_given_up == (d.context.failures >= 3) for d in decisions(app, batch_id)
        )
    else:
        assert judge.asked[poison] > 100  # the defect: asked until the budget ran out


# -- 4. the deadline sweep survives one bad batch ----------------------------------------------


def test_the_deadline_sweep_carries_on_past_a_batch_that_raises(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = StepClock()
    app = make_app(clock=clock)
    bad = app.submit(RegisterBatch("bad", essays(4), seed=1))
    good = app.submit(RegisterBatch("good", essays(4), seed=2))
    assert app.open_batch_ids() == [bad, good]
    real = workflow.close_overdue

    def close_overdue(batch: CJBatch, now: datetime) -> list[str]:
        if batch.id == bad:
            raise RuntimeError("corrupt batch")
        return real(batch, now)

    monkeypatch.setattr(workflow, "close_overdue", close_overdue)
    clock.advance(hours=5)
    with capture_logs() as logs:
        closed = app.close_overdue()
    assert closed == 2  # the good batch's first wave (4 essays: 2 pairs)
    assert app.get_batch(good).failures == 2
    assert app.get_batch(bad).failures == 0
    (failure,) = [line for line in logs if line["event"] == "deadline_sweep_failed"]
    assert failure["batch_id"] == str(bad)
    assert "corrupt batch" in failure["error"]


# -- 5. BatchingModeSet records the bundle size of the effective mode -------------------------


@pytest.mark.parametrize(
    ("requested", "setting", "provider", "mode", "bundle"),
    [
        (None, BatchingMode.PROVIDER_BATCH_API, "simulated", BatchingMode.PROVIDER_BATCH_API, 64),
        (BatchingMode.PROVIDER_BATCH_API, None, "mistral", BatchingMode.SERIAL_BUNDLE, 12),
        (None, None, "simulated", BatchingMode.SERIAL_BUNDLE, 12),
        (BatchingMode.PER_REQUEST, None, "simulated", BatchingMode.PER_REQUEST, 1),
    ],
)
def test_the_recorded_bundle_size_is_what_the_first_wave_sends(
    make_app: AppFactory,
    requested: BatchingMode | None,
    setting: BatchingMode | None,
    provider: str,
    mode: BatchingMode,
    bundle: int,
) -> None:
    app = make_app(mode_setting=setting)
    batch_id = app.submit(
        RegisterBatch("modes", essays(24), provider=provider, requested_mode=requested, seed=1)
    )
    events = app.batch_events(batch_id)
    (mode_set,) = [e for e in events if isinstance(e, CJBatch.BatchingModeSet)]
    (wave,) = [e for e in events if isinstance(e, CJBatch.ComparisonsRequested)]
    assert mode_set.mode is mode
    assert mode_set.preferred_bundle_size == wave.preferred_bundle_size == bundle


# -- 8/9 and budget sanity: refused at submission, nothing stored ------------------------------


@pytest.mark.parametrize(
    ("bad_essays", "message"),
    [
        ((Essay("  ", "h1"), Essay("b", "h2")), "is blank"),
        ((Essay("", "h1"), Essay("b", "h2")), "is blank"),
        ((Essay("a\x07", "h1"), Essay("b", "h2")), "control characters"),
        ((Essay("a\nb", "h1"), Essay("b", "h2")), "control characters"),
    ],
)
def test_blank_or_control_character_essay_ids_are_refused(
    make_app: AppFactory, bad_essays: tuple[Essay, ...], message: str
) -> None:
    app = make_app()
    with pytest.raises(CommandRejected, match=message):
        app.submit(RegisterBatch("bad-ids", bad_essays))
    assert app.recorder.max_notification_id() in (0, None)


@pytest.mark.parametrize(
    ("n", "budget", "appearances", "smallest"),
    [(300, 120, 2, 300), (2000, 120, 2, 2000), (241, 120, 1, 121), (25, 60, 5, 63)],
)
def test_a_budget_too_small_for_min_appearances_is_refused_naming_the_smallest(
    make_app: AppFactory, n: int, budget: int, appearances: int, smallest: int
) -> None:
    app = make_app()
    policy = BatchPolicy(max_pairs_cap=budget, min_appearances=appearances)
    with pytest.raises(SparseBudget) as refused:
        app.submit(RegisterBatch("sparse", essays(n), policy=policy))
    assert refused.value.smallest == smallest
    assert f"smallest budget that can is {smallest}" in str(refused.value)
    assert app.recorder.max_notification_id() in (0, None)
    enough = BatchPolicy(max_pairs_cap=smallest, min_appearances=appearances)
    assert (
        CJBatch.register(
            external_ref="ok",
            essays=essays(n),
            policy=enough,
            requested_mode=None,
            provider="simulated",
            model="m",
            seed=0,
        ).sparse
        is False
    )


def test_a_sparse_batch_runs_when_accepted_and_is_flagged(make_app: AppFactory) -> None:
    app = make_app()
    batch_id = app.submit(
        RegisterBatch(
            "sparse-ok", essays(50), policy=BatchPolicy(max_pairs_cap=20), allow_sparse=True
        )
    )
    drive(app, ThetaJudge(thetas_for(50)))
    batch = app.get_batch(batch_id)
    assert batch.sparse
    assert batch.final_status is FinalStatus.SCORED
    assert batch.quality is not None
    assert "sparse_budget" in batch.quality.flags
    assert "isolated_items" in batch.quality.flags
    assert batch.quality.never_compared == 50 - 2 * 20


# -- quality figures at finalization -----------------------------------------------------------


class FirstShownJudge(ThetaJudge):
    """A judge that prefers whichever essay it reads first, on top of true quality."""

    def __init__(self, thetas: dict[str, float], preference: float) -> None:
        super().__init__(thetas)
        self.preference = preference

    def outcome(self, request: ComparisonRequest) -> ComparisonOutcome:
        rng = random.Random(f"first:{request.comparison_id}")
        margin = self.thetas[request.essay_a] - self.thetas[request.essay_b] + self.preference
        a_wins = rng.random() < 1 / (1 + math.exp(-margin))
        winner = request.essay_a if a_wins else request.essay_b
        return ComparisonOutcome(
            request.comparison_id, success=SuccessDetails(winner, 3, "", "simulated", "first")
        )


@pytest.mark.parametrize(("preference", "biased"), [(0.0, False), (1.5, True)])
def test_the_judges_position_bias_is_measured(
    make_app: AppFactory, preference: float, biased: bool
) -> None:
    app = make_app()
    policy = BatchPolicy(max_pairs_cap=300, min_successes_for_stability=10**9)
    batch_id = app.submit(RegisterBatch("bias", essays(30), seed=3, policy=policy))
    drive(app, FirstShownJudge(thetas_for(30), preference))
    quality = app.get_batch(batch_id).quality
    assert quality is not None
    bias = quality.position_bias
    assert bias.ci_low is not None and bias.ci_high is not None
    assert (bias.ci_low > 0.5) is biased
    assert (bias.ci_low <= 0.5 <= bias.ci_high) is not biased


def test_finalized_records_every_quality_figure(make_app: AppFactory) -> None:
    app = make_app()
    batch_id = app.submit(RegisterBatch("quality", essays(24), seed=7))
    drive(app, ThetaJudge(thetas_for(24)))
    (finalized,) = [e for e in app.batch_events(batch_id) if isinstance(e, CJBatch.Finalized)]
    quality = finalized.quality
    assert quality is not None
    assert quality.ssr == finalized.reliability
    assert quality.split_half is not None and 0.0 < quality.split_half <= 1.0
    assert [e.essay_id for e in quality.essays] == [s.essay_id for s in finalized.scores]
    assert all(e.infit is not None and e.outfit is not None for e in quality.essays)
    assert [e.comparisons for e in quality.essays] == [s.comparisons for s in finalized.scores]
    assert quality.never_compared == 0
    assert quality.max_se == max(s.se for s in finalized.scores)
