"""What happens after a wave: the pure decision and the batching-mode guards.

``decide`` is mode-agnostic and applies DESIGN.md's rules in order; the first that holds
wins. ``apply_mode_guards`` then forbids what a mode cannot do (a provider batch job is a
single wave: no more waves, no resampling). Both are pure, so an auditor can re-run them on
the context stored in ``ContinuationDecided`` and get the same answer.
"""

from __future__ import annotations

from domain.policy import BatchPolicy
from domain.values import (
    BatchingMode,
    ContinuationContext,
    Decision,
    DecisionKind,
    GuardedDecision,
)

PROVIDER_BATCH_GUARD = "provider_batch_single_wave"


def is_stable(ctx: ContinuationContext, policy: BatchPolicy) -> bool:
    """Scores moved no more than the threshold since the previous decision (inclusive)."""
    return (
        ctx.successes >= policy.min_successes_for_stability
        and ctx.max_score_change is not None
        and ctx.max_score_change <= policy.stability_threshold
    )


def callbacks_reached_cap(ctx: ContinuationContext) -> bool:
    return ctx.callbacks_received >= ctx.budget


def budget_exhausted(ctx: ContinuationContext) -> bool:
    return ctx.pairs_submitted >= ctx.budget


def small_net_passes_used_up(ctx: ContinuationContext, policy: BatchPolicy) -> bool:
    return (
        ctx.is_small_net
        and ctx.has_full_coverage
        and ctx.resampling_passes_used >= policy.small_net_resampling_passes
    )


def resampling_passes_left(ctx: ContinuationContext, policy: BatchPolicy) -> bool:
    if ctx.is_small_net:
        return ctx.has_full_coverage and (
            ctx.resampling_passes_used < policy.small_net_resampling_passes
        )
    return (
        ctx.success_coverage >= policy.regular_resampling_min_coverage
        and ctx.resampling_passes_used < policy.regular_resampling_passes
    )


def nothing_left_to_ask(ctx: ContinuationContext, policy: BatchPolicy) -> bool:
    return ctx.pairs_available == 0 and not resampling_passes_left(ctx, policy)


def success_rate_too_low(ctx: ContinuationContext, policy: BatchPolicy) -> str | None:
    """The failure reason if the success-rate rule holds, else ``None``."""
    if ctx.callbacks_received == 0:
        return None
    if ctx.successes == 0:
        return "zero_successes"
    rate = ctx.success_rate
    if rate is not None and rate < policy.min_success_rate:
        return "low_success_rate"
    return None


def cap_hit(ctx: ContinuationContext, policy: BatchPolicy) -> bool:
    return (
        callbacks_reached_cap(ctx)
        or budget_exhausted(ctx)
        or small_net_passes_used_up(ctx, policy)
        or nothing_left_to_ask(ctx, policy)
    )


def decide(ctx: ContinuationContext, policy: BatchPolicy) -> Decision:
    """DESIGN.md's continuation rules, in order."""
    if ctx.pending_callbacks > 0:
        return Decision(DecisionKind.WAIT, "pending_callbacks")

    failure = success_rate_too_low(ctx, policy)
    if failure is not None and cap_hit(ctx, policy):
        return Decision(DecisionKind.FINALIZE_FAILURE, failure)

    if is_stable(ctx, policy):
        return Decision(DecisionKind.FINALIZE_SCORING, "stable")
    if callbacks_reached_cap(ctx):
        return Decision(DecisionKind.FINALIZE_SCORING, "callbacks_reached_cap")
    if budget_exhausted(ctx):
        return Decision(DecisionKind.FINALIZE_SCORING, "budget_exhausted")
    if small_net_passes_used_up(ctx, policy):
        return Decision(DecisionKind.FINALIZE_SCORING, "small_net_passes_exhausted")

    if ctx.budget_left > 0 and resampling_passes_left(ctx, policy):
        reason = "small_net_resampling" if ctx.is_small_net else "regular_resampling"
        return Decision(DecisionKind.RESAMPLE, reason)

    if ctx.budget_left > 0 and ctx.pairs_available > 0:
        return Decision(DecisionKind.REQUEST_MORE_COMPARISONS, "more_pairs_available")

    return Decision(DecisionKind.FINALIZE_SCORING, "nothing_left_to_ask")


def apply_mode_guards(
    decision: Decision, mode: BatchingMode, ctx: ContinuationContext, policy: BatchPolicy
) -> GuardedDecision:
    """Forbid what the batching mode cannot do; record which guard changed the decision."""
    wants_another_wave = decision.kind in (
        DecisionKind.RESAMPLE,
        DecisionKind.REQUEST_MORE_COMPARISONS,
    )
    if mode is BatchingMode.PROVIDER_BATCH_API and wants_another_wave:
        # The single provider job is the cap: the success-rate rule applies to it.
        failure = success_rate_too_low(ctx, policy)
        if failure is not None:
            final = Decision(DecisionKind.FINALIZE_FAILURE, failure)
        else:
            final = Decision(DecisionKind.FINALIZE_SCORING, PROVIDER_BATCH_GUARD)
        return GuardedDecision(raw=decision, final=final, guard=PROVIDER_BATCH_GUARD)
    return GuardedDecision(raw=decision, final=decision, guard=None)
