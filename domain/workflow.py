"""The CJ workflow: what a batch does when it starts and when a wave closes.

Each function mutates one ``CJBatch`` by calling its commands, so everything it does ends
up as pending events that the application saves in one atomic append. Nothing here reads
a clock: the application passes ``now``.
"""

from __future__ import annotations

from datetime import datetime

from domain.batch import CJBatch, CommandRejected
from domain.batching import preferred_bundle_size, resolve
from domain.continuation import apply_mode_guards, decide
from domain.pairing import count_available_pairs, generate_wave, success_coverage
from domain.scoring import fit_bradley_terry
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    ContinuationContext,
    Decision,
    DecisionKind,
    FailureDetails,
    FailureSource,
    FinalStatus,
    GenerationMode,
    GuardedDecision,
    Pair,
    ScorePoint,
    ScoringResult,
)

NOT_ENOUGH_ESSAYS = "fewer_than_two_non_anchor_essays"


def start_batch(batch: CJBatch, mode_setting: BatchingMode | None, now: datetime) -> None:
    """Resolve the batching mode, then ask for the first wave (or finalize at once)."""
    if batch.mode is not None:
        raise CommandRejected("the batch has already started")
    non_anchors = [e for e in batch.essays if not e.is_anchor]
    n = len(batch.essays)
    all_pairs = n * (n - 1) // 2
    first_wave_estimate = min(batch.policy.max_pairs_cap, all_pairs)
    if batch.requested_mode is not BatchingMode.PROVIDER_BATCH_API:
        first_wave_estimate = min(first_wave_estimate, n // 2)
    resolution = resolve(
        batch.requested_mode, mode_setting, batch.provider, batch.policy, first_wave_estimate
    )
    batch.set_batching_mode(resolution.mode, resolution.source, resolution.preferred_bundle_size)
    if len(non_anchors) < 2:
        batch.finalize(
            FinalStatus.INSUFFICIENT_ESSAYS,
            failure_reason=NOT_ENOUGH_ESSAYS,
            failure_details=f"{len(non_anchors)} non-anchor essay(s); at least 2 are needed",
        )
        return
    _request_wave(batch, GenerationMode.COVERAGE, {}, now)


def current_scores(batch: CJBatch) -> ScoringResult:
    return fit_bradley_terry([e.essay_id for e in batch.essays], batch.successful_results())


def build_context(batch: CJBatch, scores: ScoringResult) -> ContinuationContext:
    """The facts ``decide`` needs, taken from the batch's state and a fresh BT fit."""
    essay_ids = [e.essay_id for e in batch.essays]
    history = batch.pair_history()
    score_map = scores.score_map()
    previous = batch.last_scores
    max_change: float | None = None
    if previous:
        max_change = max(
            (abs(score_map[eid] - previous.get(eid, 0.0)) for eid in score_map), default=0.0
        )
    return ContinuationContext(
        wave_number=len(batch.waves),
        essay_count=len(essay_ids),
        budget=batch.policy.max_pairs_cap,
        pairs_submitted=batch.pairs_submitted,
        callbacks_received=batch.callbacks_received,
        successes=batch.successes,
        failures=batch.failures,
        pending_callbacks=batch.open_comparisons,
        pairs_available=count_available_pairs(essay_ids, history),
        success_coverage=success_coverage(essay_ids, history),
        resampling_passes_used=batch.resampling_passes_used,
        is_small_net=len(essay_ids) <= batch.policy.small_net_max_essays,
        max_score_change=max_change,
        scores=tuple(ScorePoint(s.essay_id, s.score) for s in scores.scores),
    )


def continue_after_wave(batch: CJBatch, now: datetime) -> GuardedDecision | None:
    """Decide, record the decision, then carry it out. ``None`` while the wave is open."""
    if not batch.wave_is_closed:
        return None
    assert batch.mode is not None
    scores = current_scores(batch)
    ctx = build_context(batch, scores)
    raw = decide(ctx, batch.policy)
    if raw.kind is DecisionKind.WAIT:
        return None
    guarded = apply_mode_guards(raw, batch.mode, ctx, batch.policy)

    next_pairs: tuple[Pair, ...] = ()
    final = guarded.final
    if final.kind in (DecisionKind.RESAMPLE, DecisionKind.REQUEST_MORE_COMPARISONS):
        generation = (
            GenerationMode.RESAMPLING
            if final.kind is DecisionKind.RESAMPLE
            else GenerationMode.COVERAGE
        )
        next_pairs = _plan_wave(batch, generation, scores.score_map())
        if not next_pairs:
            # Pairing found nothing to ask after all: never leave a batch idle.
            final = Decision(DecisionKind.FINALIZE_SCORING, "nothing_left_to_ask")
            guarded = GuardedDecision(raw=raw, final=final, guard=guarded.guard)

    batch.record_decision(
        decision=final.kind,
        reason=final.reason,
        context=ctx,
        raw_decision=raw.kind,
        raw_reason=raw.reason,
        guard=guarded.guard,
    )
    if final.kind is DecisionKind.FINALIZE_SCORING:
        batch.finalize(FinalStatus.SCORED, scores.scores, scores.reliability)
    elif final.kind is DecisionKind.FINALIZE_FAILURE:
        batch.finalize(
            FinalStatus.FAILED,
            scores.scores,
            scores.reliability,
            failure_reason=final.reason,
            failure_details=(
                f"{ctx.successes} of {ctx.callbacks_received} comparisons succeeded; "
                f"minimum success rate is {batch.policy.min_success_rate}"
            ),
        )
    else:
        generation = (
            GenerationMode.RESAMPLING
            if final.kind is DecisionKind.RESAMPLE
            else GenerationMode.COVERAGE
        )
        _submit_wave(batch, generation, next_pairs, now)
    return guarded


def _plan_wave(
    batch: CJBatch, generation: GenerationMode, scores: dict[str, float]
) -> tuple[Pair, ...]:
    assert batch.mode is not None
    return generate_wave(
        batch_id=str(batch.id),
        seed=batch.seed,
        wave_number=len(batch.waves) + 1,
        generation_mode=generation,
        essay_ids=[e.essay_id for e in batch.essays],
        history=batch.pair_history(),
        scores=scores,
        max_pairs=batch.policy.max_pairs_cap - batch.pairs_submitted,
        all_pairs_in_one_wave=batch.mode is BatchingMode.PROVIDER_BATCH_API,
    )


def _submit_wave(
    batch: CJBatch, generation: GenerationMode, pairs: tuple[Pair, ...], now: datetime
) -> None:
    assert batch.mode is not None
    batch.request_comparisons(
        wave_number=len(batch.waves) + 1,
        generation_mode=generation,
        pairs=pairs,
        preferred_bundle_size=preferred_bundle_size(batch.mode, len(pairs), batch.policy),
        now=now,
    )


def _request_wave(
    batch: CJBatch, generation: GenerationMode, scores: dict[str, float], now: datetime
) -> None:
    pairs = _plan_wave(batch, generation, scores)
    if not pairs:
        batch.finalize(FinalStatus.SCORED, current_scores(batch).scores, None)
        return
    _submit_wave(batch, generation, pairs, now)


def record_outcome(batch: CJBatch, outcome: ComparisonOutcome, now: datetime) -> bool:
    """Record one outcome and, if it closed the wave, decide what happens next.

    Returns ``False`` for a duplicate (nothing changes). Raises ``OutcomeRejected`` for an
    outcome that cannot belong to the batch.
    """
    if not batch.record_outcome(outcome):
        return False
    continue_after_wave(batch, now)
    return True


def close_overdue(batch: CJBatch, now: datetime) -> list[str]:
    """Close every comparison past its deadline with a ``deadline`` failure."""
    if batch.is_finalized:
        return []
    closed = []
    for comparison_id in batch.overdue_comparisons(now):
        outcome = ComparisonOutcome(
            comparison_id=comparison_id,
            failure=FailureDetails(
                error_code="DEADLINE_EXCEEDED",
                message="no outcome arrived before the comparison deadline",
                retryable=False,
                source=FailureSource.DEADLINE,
            ),
        )
        if record_outcome(batch, outcome, now):
            closed.append(comparison_id)
    return closed
