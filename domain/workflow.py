"""The CJ workflow: what a batch does when it starts and when a wave closes.

Each function mutates one ``CJBatch`` by calling its commands, so everything it does ends
up as pending events that the application saves in one atomic append. Nothing here reads
a clock: the application passes ``now``.
"""

from __future__ import annotations

from datetime import datetime

from domain.batch import CJBatch, CommandRejected
from domain.batching import preferred_bundle_size, resolve_batching_mode
from domain.continuation import (
    ContinuationContext,
    DecisionKind,
    DecisionReason,
    GuardedDecision,
    ScorePoint,
    apply_mode_guards,
    decide,
    given_up_pairs,
    is_small_net,
    max_score_change,
    wants_another_wave,
    when_pairing_finds_nothing,
)
from domain.pair_records import PairRecord
from domain.pairing import count_available_pairs, generate_wave, success_coverage
from domain.quality import BatchQuality, assess, split_half_reliability
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

PROVIDER_BATCH = BatchingMode.PROVIDER_BATCH_API


def start_batch(batch: CJBatch, mode_setting: BatchingMode | None, now: datetime) -> None:
    """Resolve the batching mode, then ask for the first wave (or finalize at once).

    The first wave is planned before the mode is recorded, so ``BatchingModeSet`` carries
    the bundle size the first wave really uses in the effective mode.
    """
    if batch.mode is not None:
        raise CommandRejected("the batch has already started")
    mode, source = resolve_batching_mode(
        batch.requested_mode, mode_setting, batch.provider, batch.policy
    )
    if _too_few_essays(batch):
        batch.set_batching_mode(mode, source, preferred_bundle_size(mode, 0, batch.policy))
        _finalize_too_few(batch)
        return
    pairs = _plan_wave(batch, mode, GenerationMode.COVERAGE, {})
    batch.set_batching_mode(mode, source, preferred_bundle_size(mode, len(pairs), batch.policy))
    _start_first_wave(batch, pairs, now)


def request_first_wave(batch: CJBatch, now: datetime) -> None:
    """What ``start_batch`` does once the mode is recorded: the first wave, or finalize.
    Replay verification re-runs it on a batch folded up to its ``BatchingModeSet``."""
    assert batch.mode is not None
    if _too_few_essays(batch):
        _finalize_too_few(batch)
        return
    _start_first_wave(batch, _plan_wave(batch, batch.mode, GenerationMode.COVERAGE, {}), now)


def _too_few_essays(batch: CJBatch) -> bool:
    return sum(1 for e in batch.essays if not e.is_anchor) < 2


def _finalize_too_few(batch: CJBatch) -> None:
    non_anchors = sum(1 for e in batch.essays if not e.is_anchor)
    batch.finalize(
        FinalStatus.INSUFFICIENT_ESSAYS,
        failure_reason=DecisionReason.FEWER_THAN_TWO_ESSAYS.value,
        failure_details=f"{non_anchors} non-anchor essay(s); at least 2 are needed",
    )


def _start_first_wave(batch: CJBatch, pairs: tuple[Pair, ...], now: datetime) -> None:
    if pairs:
        _submit_wave(batch, GenerationMode.COVERAGE, pairs, now)
    else:
        _decide_and_carry_out(batch, now, pairing_found_nothing=True)


def current_scores(batch: CJBatch, *, with_standard_errors: bool = True) -> ScoringResult:
    """A Bradley-Terry fit of the batch's successes under the batch's ridge, warm-started
    from the last decision's scores. Standard errors cost far more than scores on a large
    batch, so the continuation asks for them only when it finalizes (or when a rule reads
    them)."""
    return fit_bradley_terry(
        [e.essay_id for e in batch.essays],
        batch.successful_results(),
        batch.policy.ridge,
        initial=batch.last_scores,
        with_standard_errors=with_standard_errors,
    )


def build_context(
    batch: CJBatch, scores: ScoringResult, history: list[PairRecord] | None = None
) -> ContinuationContext:
    """The facts ``decide`` needs, taken from the batch's state and a fresh BT fit
    (``history``: the batch's ``pair_history()``, if the caller has it already)."""
    essay_ids = [e.essay_id for e in batch.essays]
    if history is None:
        history = batch.pair_history()
    given_up = given_up_pairs(history, batch.policy)
    ssr = split_half = None
    if batch.policy.reliability_target is not None and batch.mode is not PROVIDER_BATCH:
        ssr = scores.reliability
        split_half = split_half_reliability(
            essay_ids, batch.verdicts(), ridge=batch.policy.ridge, seed=batch.seed
        )
    return ContinuationContext(
        wave_number=len(batch.waves),
        essay_count=len(essay_ids),
        budget=batch.policy.max_pairs_cap,
        pairs_submitted=batch.pairs_submitted,
        outcomes=batch.outcomes,
        successes=batch.successes,
        failures=batch.failures,
        open_comparisons=batch.open_comparisons,
        pairs_available=count_available_pairs(essay_ids, history, given_up),
        success_coverage=success_coverage(essay_ids, history, given_up),
        resampling_passes_used=batch.resampling_passes_used,
        is_small_net=is_small_net(len(essay_ids), batch.policy),
        max_score_change=max_score_change(batch.last_scores, scores.score_map()),
        scores=tuple(ScorePoint(s.essay_id, s.score) for s in scores.scores),
        new_successes=batch.successes_in_last_wave(),
        pairs_given_up=len(given_up),
        ssr=ssr,
        split_half=split_half,
    )


def continue_after_wave(batch: CJBatch, now: datetime) -> GuardedDecision | None:
    """Decide what follows a closed wave and carry it out. ``None`` while the wave is open."""
    if not batch.wave_is_closed:
        return None
    return _decide_and_carry_out(batch, now)


def _decide_and_carry_out(
    batch: CJBatch, now: datetime, pairing_found_nothing: bool = False
) -> GuardedDecision | None:
    """Build the context → decide → guard → record → carry out."""
    mode = batch.mode
    assert mode is not None
    policy = batch.policy
    # the reliability stopping rule reads SSR, hence standard errors
    scores = current_scores(batch, with_standard_errors=policy.reliability_target is not None)
    history = batch.pair_history()  # read by the context and by the next wave's plan
    ctx = build_context(batch, scores, history)
    if pairing_found_nothing:
        ctx, guarded = when_pairing_finds_nothing(ctx, mode, policy)
    else:
        raw = decide(ctx, policy)
        if raw.kind is DecisionKind.WAIT:
            return None
        guarded = apply_mode_guards(raw, mode, ctx, policy)

    next_pairs: tuple[Pair, ...] = ()
    if wants_another_wave(guarded.final):
        next_pairs = _plan_wave(
            batch, mode, _generation(guarded.final.kind), scores.score_map(), history
        )
        if not next_pairs:
            ctx, guarded = when_pairing_finds_nothing(ctx, mode, policy)

    batch.record_decision(guarded, ctx)
    final = guarded.final
    if final.kind in (DecisionKind.FINALIZE_SCORING, DecisionKind.FINALIZE_FAILURE):
        scores = current_scores(batch)  # with standard errors, from the scores just decided
    if final.kind is DecisionKind.FINALIZE_SCORING:
        batch.finalize(
            FinalStatus.SCORED, scores.scores, scores.reliability, quality=_quality(batch, scores)
        )
    elif final.kind is DecisionKind.FINALIZE_FAILURE:
        batch.finalize(
            FinalStatus.FAILED,
            scores.scores,
            scores.reliability,
            failure_reason=final.reason.value,
            failure_details=(
                f"{ctx.successes} of {ctx.outcomes} comparisons succeeded; "
                f"minimum success rate is {policy.min_success_rate}"
            ),
            quality=_quality(batch, scores),
        )
    else:
        _submit_wave(batch, _generation(final.kind), next_pairs, now)
    return guarded


def _quality(batch: CJBatch, scores: ScoringResult) -> BatchQuality | None:
    """Quality figures from policy version 2 on (version-1 batches recorded none)."""
    if batch.policy.policy_version < 2:
        return None
    return assess(
        scores,
        batch.verdicts(),
        ridge=batch.policy.ridge,
        seed=batch.seed,
        min_appearances=batch.policy.min_appearances,
        sparse_budget=batch.sparse,
    )


def _generation(kind: DecisionKind) -> GenerationMode:
    return GenerationMode.RESAMPLING if kind is DecisionKind.RESAMPLE else GenerationMode.COVERAGE


def _plan_wave(
    batch: CJBatch,
    mode: BatchingMode,
    generation: GenerationMode,
    scores: dict[str, float],
    history: list[PairRecord] | None = None,
) -> tuple[Pair, ...]:
    if history is None:
        history = batch.pair_history()
    return generate_wave(
        batch_id=str(batch.id),
        seed=batch.seed,
        wave_number=len(batch.waves) + 1,
        generation_mode=generation,
        # an erased essay has no text left to show a judge
        essay_ids=[e.essay_id for e in batch.essays if e.essay_id not in batch.erased_essays],
        history=history,
        scores=scores,
        max_pairs=batch.policy.max_pairs_cap - batch.pairs_submitted,
        all_pairs_in_one_wave=mode is PROVIDER_BATCH,
        unavailable=given_up_pairs(history, batch.policy),
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


def record_outcome(
    batch: CJBatch,
    outcome: ComparisonOutcome,
    now: datetime,
    justification_ref: str | None = None,
) -> bool:
    """Record one outcome and, if it closed the wave, decide what happens next.

    Returns ``False`` for a duplicate (nothing changes). Raises ``OutcomeRejected`` for an
    outcome that cannot belong to the batch.
    """
    if not batch.record_outcome(outcome, justification_ref):
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
