"""The CJ workflow: what a batch does when it starts and when a wave closes.

Each function mutates one ``CJBatch`` by calling its commands, so everything it does ends
up as pending events that the application saves in one atomic append. Nothing here reads
a clock: the application passes ``now``.
"""

from __future__ import annotations

from datetime import datetime

from domain.batch import CJBatch, CommandRejected
from domain.batching import preferred_bundle_size, resolve
from domain.continuation import (
    ContinuationContext,
    DecisionKind,
    DecisionReason,
    GuardedDecision,
    ScorePoint,
    apply_mode_guards,
    decide,
    is_small_net,
    max_score_change,
    wants_another_wave,
    when_pairing_finds_nothing,
)
from domain.pairing import count_available_pairs, generate_wave, success_coverage
from domain.scoring import fit_bradley_terry
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    FailureDetails,
    FailureSource,
    FinalStatus,
    GenerationMode,
    Pair,
    ScoringResult,
)


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
            failure_reason=DecisionReason.FEWER_THAN_TWO_ESSAYS.value,
            failure_details=f"{len(non_anchors)} non-anchor essay(s); at least 2 are needed",
        )
        return
    _request_wave(batch, GenerationMode.COVERAGE, {}, now)


def current_scores(batch: CJBatch, *, with_standard_errors: bool = True) -> ScoringResult:
    """A Bradley-Terry fit of the batch's successes, warm-started from the last decision's
    scores. Standard errors cost far more than scores on a large batch, so the continuation
    asks for them only when it finalizes (or when a rule reads them)."""
    return fit_bradley_terry(
        [e.essay_id for e in batch.essays],
        batch.successful_results(),
        initial=batch.last_scores,
        with_standard_errors=with_standard_errors,
    )


def build_context(batch: CJBatch, scores: ScoringResult) -> ContinuationContext:
    """The facts ``decide`` needs, taken from the batch's state and a fresh BT fit."""
    essay_ids = [e.essay_id for e in batch.essays]
    history = batch.pair_history()
    return ContinuationContext(
        wave_number=len(batch.waves),
        essay_count=len(essay_ids),
        budget=batch.policy.max_pairs_cap,
        pairs_submitted=batch.pairs_submitted,
        outcomes=batch.outcomes,
        successes=batch.successes,
        failures=batch.failures,
        open_comparisons=batch.open_comparisons,
        pairs_available=count_available_pairs(essay_ids, history),
        success_coverage=success_coverage(essay_ids, history),
        resampling_passes_used=batch.resampling_passes_used,
        is_small_net=is_small_net(len(essay_ids), batch.policy),
        max_score_change=max_score_change(batch.last_scores, scores.score_map()),
        scores=tuple(ScorePoint(s.essay_id, s.score) for s in scores.scores),
    )


def continue_after_wave(batch: CJBatch, now: datetime) -> GuardedDecision | None:
    """Build the context, decide, guard, record, carry out. ``None`` while the wave is open."""
    if not batch.wave_is_closed:
        return None
    assert batch.mode is not None
    scores = current_scores(batch, with_standard_errors=False)
    ctx = build_context(batch, scores)
    raw = decide(ctx, batch.policy)
    if raw.kind is DecisionKind.WAIT:
        return None
    guarded = apply_mode_guards(raw, batch.mode, ctx, batch.policy)

    next_pairs: tuple[Pair, ...] = ()
    if wants_another_wave(guarded.final):
        next_pairs = _plan_wave(batch, _generation(guarded.final.kind), scores.score_map())
        if not next_pairs:
            guarded = when_pairing_finds_nothing(guarded)

    batch.record_decision(guarded, ctx)
    final = guarded.final
    if final.kind in (DecisionKind.FINALIZE_SCORING, DecisionKind.FINALIZE_FAILURE):
        scores = current_scores(batch)  # with standard errors, from the scores just decided
    if final.kind is DecisionKind.FINALIZE_SCORING:
        batch.finalize(FinalStatus.SCORED, scores.scores, scores.reliability)
    elif final.kind is DecisionKind.FINALIZE_FAILURE:
        batch.finalize(
            FinalStatus.FAILED,
            scores.scores,
            scores.reliability,
            failure_reason=final.reason.value,
            failure_details=(
                f"{ctx.successes} of {ctx.outcomes} comparisons succeeded; "
                f"minimum success rate is {batch.policy.min_success_rate}"
            ),
        )
    else:
        _submit_wave(batch, _generation(final.kind), next_pairs, now)
    return guarded


def _generation(kind: DecisionKind) -> GenerationMode:
    return GenerationMode.RESAMPLING if kind is DecisionKind.RESAMPLE else GenerationMode.COVERAGE


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
