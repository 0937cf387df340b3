"""What happens after a wave: the one home of the continuation decision.

Everything a decision depends on lives here: the facts it looks at
(``ContinuationContext``), the stability measure, the small-net test, the reason codes,
the mode-agnostic rules (``decide``, DESIGN.md's rules in order; the first that holds
wins), the batching-mode guards (``apply_mode_guards``: a provider batch job is a single
wave, so no more waves and no resampling) and the fallback used when pairing finds
nothing to ask. All of it is pure, so an auditor can re-run it on the context stored in
``ContinuationDecided`` and get the same answer. ``domain.workflow`` only sequences:
build the context, decide, guard, record.

Counting words, used the same way everywhere: an *outcome* is any answer to a requested
comparison, a *success* or a *failure*; an *open comparison* has been requested and has
no outcome yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from fractions import Fraction

from domain.pair_records import Key, PairRecord, PairStatus
from domain.policy import BatchPolicy
from domain.values import BatchingMode


class DecisionKind(Enum):
    WAIT = "WAIT"
    FINALIZE_FAILURE = "FINALIZE_FAILURE"
    FINALIZE_SCORING = "FINALIZE_SCORING"
    RESAMPLE = "RESAMPLE"
    REQUEST_MORE_COMPARISONS = "REQUEST_MORE_COMPARISONS"


class DecisionReason(Enum):
    """Why a decision (or a finalization) was taken. Events store the value."""

    OPEN_COMPARISONS = "open_comparisons"
    ZERO_SUCCESSES = "zero_successes"
    LOW_SUCCESS_RATE = "low_success_rate"
    SUCCESS_RATE_UNREACHABLE = "success_rate_unreachable"
    STABLE = "stable"
    RELIABILITY_REACHED = "reliability_reached"
    CALLBACKS_REACHED_CAP = "callbacks_reached_cap"
    BUDGET_EXHAUSTED = "budget_exhausted"
    SMALL_NET_PASSES_EXHAUSTED = "small_net_passes_exhausted"
    SMALL_NET_RESAMPLING = "small_net_resampling"
    REGULAR_RESAMPLING = "regular_resampling"
    MORE_PAIRS_AVAILABLE = "more_pairs_available"
    NOTHING_LEFT_TO_ASK = "nothing_left_to_ask"
    PROVIDER_BATCH_SINGLE_WAVE = "provider_batch_single_wave"
    FEWER_THAN_TWO_ESSAYS = "fewer_than_two_non_anchor_essays"


class Guard(Enum):
    """A batching-mode guard that changed a decision."""

    PROVIDER_BATCH_SINGLE_WAVE = "provider_batch_single_wave"


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    reason: DecisionReason


@dataclass(frozen=True)
class GuardedDecision:
    """The decision carried out, with the raw one and the guard that changed it (if any)."""

    raw: Decision
    final: Decision
    guard: Guard | None = None


@dataclass(frozen=True)
class ScorePoint:
    essay_id: str
    score: float


@dataclass(frozen=True)
class ContinuationContext:
    """Everything ``decide()`` looks at, recorded verbatim in ``ContinuationDecided``."""

    wave_number: int
    essay_count: int
    budget: int
    pairs_submitted: int
    outcomes: int
    successes: int
    failures: int
    open_comparisons: int
    pairs_available: int
    success_coverage: float
    resampling_passes_used: int
    is_small_net: bool
    max_score_change: float | None
    scores: tuple[ScorePoint, ...] = field(default=())
    # Added with policy version 2 (absent, hence default, in contexts stored before).
    new_successes: int = 0
    pairs_given_up: int = 0
    pairing_found_nothing: bool = False
    ssr: float | None = None
    split_half: float | None = None

    @property
    def success_rate(self) -> float | None:
        if self.outcomes == 0:
            return None
        return self.successes / self.outcomes

    @property
    def budget_left(self) -> int:
        return max(0, self.budget - self.pairs_submitted)

    @property
    def has_full_coverage(self) -> bool:
        return self.success_coverage >= 1.0


LEGACY_CONTEXT_FIELDS = {"callbacks_received": "outcomes", "pending_callbacks": "open_comparisons"}
"""Names ``ContinuationContext`` fields had in events stored before they were unified."""


# ------------------------------------------------------------------ measures


def is_small_net(essay_count: int, policy: BatchPolicy) -> bool:
    """A net so small that every pair is asked, then resampled a few times."""
    return essay_count <= policy.small_net_max_essays


def max_score_change(
    previous: Mapping[str, float] | None, current: Mapping[str, float]
) -> float | None:
    """The stability measure: the largest move of any score since the previous decision
    (an essay missing before counts as 0); ``None`` at the first decision."""
    if not previous:
        return None
    return max((abs(score - previous.get(eid, 0.0)) for eid, score in current.items()), default=0.0)


def given_up_pairs(history: Iterable[PairRecord], policy: BatchPolicy) -> frozenset[Key]:
    """Pairs that failed ``max_attempts_per_pair`` times: never asked again (0: no limit)."""
    limit = policy.max_attempts_per_pair
    if limit <= 0:
        return frozenset()
    failed = Counter(r.key for r in history if r.status is PairStatus.FAILED)
    return frozenset(key for key, count in failed.items() if count >= limit)


# ------------------------------------------------------------------ rules


def is_stable(ctx: ContinuationContext, policy: BatchPolicy) -> bool:
    """Scores moved no more than the threshold since the previous decision (inclusive).

    From policy version 2 that only counts on new evidence: the wave just closed added at
    least one success, and the batch's success rate meets ``min_success_rate`` (a wave
    that only failed leaves the scores unchanged, which is not stability).
    """
    moved_little = (
        ctx.successes >= policy.min_successes_for_stability
        and ctx.max_score_change is not None
        and ctx.max_score_change <= policy.stability_threshold
    )
    if not policy.stability_needs_new_evidence:
        return moved_little
    rate = ctx.success_rate
    return (
        moved_little
        and ctx.new_successes >= 1
        and rate is not None
        and rate >= policy.min_success_rate
    )


def success_rate_unreachable(ctx: ContinuationContext, policy: BatchPolicy) -> bool:
    """More failures than ``(1 - min_success_rate) x budget``: even if every comparison
    left in the budget succeeded, the batch could not reach ``min_success_rate``."""
    if not policy.fails_early or ctx.failures == 0:
        return False
    best_rate = Fraction(ctx.budget - ctx.failures, ctx.budget)
    return best_rate < Fraction(str(policy.min_success_rate))


def reliability_reached(ctx: ContinuationContext, policy: BatchPolicy) -> bool:
    """The optional stopping rule: SSR and split-half both reach ``reliability_target``."""
    target = policy.reliability_target
    return (
        target is not None
        and ctx.ssr is not None
        and ctx.split_half is not None
        and ctx.ssr >= target
        and ctx.split_half >= target
    )


def callbacks_reached_cap(ctx: ContinuationContext) -> bool:
    return ctx.outcomes >= ctx.budget


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
    return ctx.pairing_found_nothing or (
        ctx.pairs_available == 0 and not resampling_passes_left(ctx, policy)
    )


def success_rate_too_low(ctx: ContinuationContext, policy: BatchPolicy) -> DecisionReason | None:
    """The failure reason if the success-rate rule holds, else ``None``."""
    if ctx.outcomes == 0:
        return None
    if ctx.successes == 0:
        return DecisionReason.ZERO_SUCCESSES
    rate = ctx.success_rate
    if rate is not None and rate < policy.min_success_rate:
        return DecisionReason.LOW_SUCCESS_RATE
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
    kind, why = DecisionKind, DecisionReason
    if ctx.open_comparisons > 0:
        return Decision(kind.WAIT, why.OPEN_COMPARISONS)

    failure = success_rate_too_low(ctx, policy)
    if failure is not None and cap_hit(ctx, policy):
        return Decision(kind.FINALIZE_FAILURE, failure)
    if success_rate_unreachable(ctx, policy):
        return Decision(kind.FINALIZE_FAILURE, why.SUCCESS_RATE_UNREACHABLE)

    if is_stable(ctx, policy):
        return Decision(kind.FINALIZE_SCORING, why.STABLE)
    if reliability_reached(ctx, policy):
        return Decision(kind.FINALIZE_SCORING, why.RELIABILITY_REACHED)
    if callbacks_reached_cap(ctx):
        return Decision(kind.FINALIZE_SCORING, why.CALLBACKS_REACHED_CAP)
    if budget_exhausted(ctx):
        return Decision(kind.FINALIZE_SCORING, why.BUDGET_EXHAUSTED)
    if small_net_passes_used_up(ctx, policy):
        return Decision(kind.FINALIZE_SCORING, why.SMALL_NET_PASSES_EXHAUSTED)

    if ctx.pairing_found_nothing:
        return Decision(kind.FINALIZE_SCORING, why.NOTHING_LEFT_TO_ASK)
    if ctx.budget_left > 0 and resampling_passes_left(ctx, policy):
        reason = why.SMALL_NET_RESAMPLING if ctx.is_small_net else why.REGULAR_RESAMPLING
        return Decision(kind.RESAMPLE, reason)

    if ctx.budget_left > 0 and ctx.pairs_available > 0:
        return Decision(kind.REQUEST_MORE_COMPARISONS, why.MORE_PAIRS_AVAILABLE)

    return Decision(kind.FINALIZE_SCORING, why.NOTHING_LEFT_TO_ASK)


def apply_mode_guards(
    decision: Decision, mode: BatchingMode, ctx: ContinuationContext, policy: BatchPolicy
) -> GuardedDecision:
    """Forbid what the batching mode cannot do; record which guard changed the decision."""
    if mode is BatchingMode.PROVIDER_BATCH_API and wants_another_wave(decision):
        # The single provider job is the cap: the success-rate rule applies to it.
        failure = success_rate_too_low(ctx, policy)
        if failure is not None:
            final = Decision(DecisionKind.FINALIZE_FAILURE, failure)
        else:
            final = Decision(
                DecisionKind.FINALIZE_SCORING, DecisionReason.PROVIDER_BATCH_SINGLE_WAVE
            )
        return GuardedDecision(raw=decision, final=final, guard=Guard.PROVIDER_BATCH_SINGLE_WAVE)
    return GuardedDecision(raw=decision, final=decision, guard=None)


def wants_another_wave(decision: Decision) -> bool:
    return decision.kind in (DecisionKind.RESAMPLE, DecisionKind.REQUEST_MORE_COMPARISONS)


def when_pairing_finds_nothing(
    ctx: ContinuationContext, mode: BatchingMode, policy: BatchPolicy
) -> tuple[ContinuationContext, GuardedDecision]:
    """The fallback when a wave was wanted but pairing found nothing to ask.

    No side door: the batch is decided again, through ``decide`` and the mode guards like
    any other decision, on the same facts plus "pairing found nothing" (which counts as a
    cap, so the success-rate rule applies). The result never asks for another wave.
    """
    if policy.policy_version < 2:  # version 1 finalized straight away, bypassing the rules
        return ctx, GuardedDecision(
            raw=decide(ctx, policy),
            final=Decision(DecisionKind.FINALIZE_SCORING, DecisionReason.NOTHING_LEFT_TO_ASK),
            guard=apply_mode_guards(decide(ctx, policy), mode, ctx, policy).guard,
        )
    exhausted = replace(ctx, pairing_found_nothing=True)
    guarded = apply_mode_guards(decide(exhausted, policy), mode, exhausted, policy)
    assert not wants_another_wave(guarded.final)
    return exhausted, guarded
