"""Reports folded straight from a batch's events: the decision trail, waves and rankings.

Used by the demo and the audit commands; it reads nothing but the log, so it shows exactly
why a batch did what it did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from domain.batch import CJBatch
from domain.quality import BatchQuality


@dataclass(frozen=True)
class DecisionLine:
    wave: int
    decision: str
    raw_decision: str
    raw_reason: str
    guard: str | None
    reason: str
    outcomes: int
    successes: int
    failures: int
    pairs_submitted: int
    success_rate: float | None
    max_score_change: float | None


@dataclass(frozen=True)
class WaveLine:
    number: int
    generation_mode: str
    pairs: int


@dataclass(frozen=True)
class RankingLine:
    essay_id: str
    score: float
    se: float
    rank: int
    comparisons: int


@dataclass(frozen=True)
class UsageTotals:
    """Tokens and estimated cost of a batch: every answer, including those that could not
    be used (``invalid_answer``); ``judged_comparisons`` counts the successful ones."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    judged_comparisons: int = 0

    def plus(self, prompt: int, completion: int, cost: float, judged: int = 1) -> UsageTotals:
        return UsageTotals(
            self.prompt_tokens + prompt,
            self.completion_tokens + completion,
            self.cost_usd + cost,
            self.judged_comparisons + judged,
        )


Resolve = Callable[[str], str]
"""Essay ref -> what to show for it (the school's id, or ``[erased]``)."""


def _as_is(ref: str) -> str:
    return ref


@dataclass(frozen=True)
class BatchReport:
    batch_id: str
    external_ref: str
    status: str
    mode: str | None
    mode_source: str | None
    failure_reason: str | None
    decisions: tuple[DecisionLine, ...]
    waves: tuple[WaveLine, ...]
    rankings: tuple[RankingLine, ...]
    reliability: float | None
    event_count: int
    comparisons_requested: int
    outcomes: int
    sparse: bool = False
    quality: BatchQuality | None = None
    usage: UsageTotals = UsageTotals()
    essays_erased: int = 0


def build_report(events: Sequence[Any], resolve: Resolve = _as_is) -> BatchReport:
    """Fold one batch's events into a report; essays are shown through ``resolve``."""
    registered = events[0]
    assert isinstance(registered, CJBatch.BatchRegistered)
    mode = mode_source = failure_reason = None
    status = "running"
    decisions: list[DecisionLine] = []
    waves: list[WaveLine] = []
    rankings: tuple[RankingLine, ...] = ()
    reliability = None
    quality: BatchQuality | None = None
    requested = outcomes = erased = 0
    usage = UsageTotals()
    for event in events:
        if isinstance(event, CJBatch.BatchingModeSet):
            mode, mode_source = event.mode.value, event.source
        elif isinstance(event, CJBatch.ComparisonsRequested):
            waves.append(WaveLine(event.wave_number, event.generation_mode.value, len(event.pairs)))
            requested += len(event.pairs)
        elif isinstance(event, CJBatch.ComparisonCompleted):
            outcomes += 1
            success, failure = event.outcome.success, event.outcome.failure
            if success is not None:
                usage = usage.plus(
                    success.prompt_tokens, success.completion_tokens, success.cost_usd
                )
            elif failure is not None and (failure.prompt_tokens or failure.completion_tokens):
                usage = usage.plus(
                    failure.prompt_tokens, failure.completion_tokens, failure.cost_usd, judged=0
                )
        elif isinstance(event, CJBatch.EssayErased):
            erased += 1
        elif isinstance(event, CJBatch.ContinuationDecided):
            ctx = event.context
            decisions.append(
                DecisionLine(
                    wave=ctx.wave_number,
                    decision=event.decision.value,
                    raw_decision=event.raw_decision.value,
                    raw_reason=event.raw_reason,
                    guard=event.guard,
                    reason=event.reason,
                    outcomes=ctx.outcomes,
                    successes=ctx.successes,
                    failures=ctx.failures,
                    pairs_submitted=ctx.pairs_submitted,
                    success_rate=ctx.success_rate,
                    max_score_change=ctx.max_score_change,
                )
            )
        elif isinstance(event, CJBatch.Finalized):
            status = event.status.value
            failure_reason = event.failure_reason
            reliability = event.reliability
            quality = event.quality
            if quality is not None:  # essays by the school's ids, like the rankings
                quality = replace(
                    quality,
                    essays=tuple(replace(e, essay_id=resolve(e.essay_id)) for e in quality.essays),
                )
            rankings = tuple(
                RankingLine(resolve(s.essay_id), s.score, s.se, s.rank, s.comparisons)
                for s in event.scores
            )
    return BatchReport(
        batch_id=str(registered.originator_id),
        external_ref=registered.external_ref,
        status=status,
        mode=mode,
        mode_source=mode_source,
        failure_reason=failure_reason,
        decisions=tuple(decisions),
        waves=tuple(waves),
        rankings=rankings,
        reliability=reliability,
        event_count=len(events),
        comparisons_requested=requested,
        outcomes=outcomes,
        sparse=registered.sparse,
        quality=quality,
        usage=usage,
        essays_erased=erased,
    )


def summarize_event(event: Any, resolve: Resolve = _as_is) -> str:
    """One line that tells an auditor what an event says (essays through ``resolve``)."""
    if isinstance(event, CJBatch.BatchRegistered):
        anchors = sum(1 for e in event.essays if e.is_anchor)
        mode = event.requested_mode.value if event.requested_mode else "none"
        return (
            f"ref={event.external_ref} essays={len(event.essays)} anchors={anchors} "
            f"requested_mode={mode} provider={event.provider}/{event.model} "
            f"budget={event.policy.max_pairs_cap} seed={event.seed}"
        )
    if isinstance(event, CJBatch.BatchingModeSet):
        return (
            f"mode={event.mode.value} source={event.source} "
            f"bundle_size={event.preferred_bundle_size}"
        )
    if isinstance(event, CJBatch.ComparisonsRequested):
        return (
            f"wave={event.wave_number} generation={event.generation_mode.value} "
            f"pairs={len(event.pairs)} bundle_size={event.preferred_bundle_size}"
        )
    if isinstance(event, CJBatch.ComparisonCompleted):
        o = event.outcome
        if o.success is not None:
            return (
                f"comparison={o.comparison_id} success winner={resolve(o.success.winner_id)} "
                f"confidence={o.success.confidence} tokens={o.success.prompt_tokens}+"
                f"{o.success.completion_tokens}"
            )
        assert o.failure is not None
        return (
            f"comparison={o.comparison_id} failure code={o.failure.error_code} "
            f"source={o.failure.source.value}"
        )
    if isinstance(event, CJBatch.EssayErased):
        return f"essay={event.essay_ref} erased reason={event.reason!r}"
    if isinstance(event, CJBatch.ContinuationDecided):
        ctx = event.context
        guard = f" guard={event.guard} raw={event.raw_decision.value}" if event.guard else ""
        change = "-" if ctx.max_score_change is None else f"{ctx.max_score_change:.4f}"
        return (
            f"decision={event.decision.value} reason={event.reason}{guard} "
            f"outcomes={ctx.outcomes} successes={ctx.successes} "
            f"max_change={change}"
        )
    if isinstance(event, CJBatch.Finalized):
        extra = f" reason={event.failure_reason}" if event.failure_reason else ""
        rel = "-" if event.reliability is None else f"{event.reliability:.3f}"
        quality = event.quality
        if quality is not None:
            split = "-" if quality.split_half is None else f"{quality.split_half:.3f}"
            first = quality.position_bias.first_shown_win_rate
            extra += (
                f" split_half={split} first_shown_wins={'-' if first is None else f'{first:.3f}'}"
                f" never_compared={quality.never_compared}"
                f" misfits={sum(1 for e in quality.essays if e.misfit)}"
                f" flags={','.join(quality.flags) or '-'}"
            )
        return (
            f"status={event.status.value} essays_scored={len(event.scores)} "
            f"reliability={rel}{extra}"
        )
    return type(event).__name__
