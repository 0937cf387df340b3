"""Read models against a direct fold over the event log: equal, exactly once, rebuildable."""

from __future__ import annotations

import json
from dataclasses import asdict
from itertools import count
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.batches import BatchApplication
from domain.batch import CJBatch
from domain.values import BatchingMode
from projections.queries import ReadModels
from projections.runner import ProjectionFailed, ReadModelRunner
from tests.conftest import AppFactory
from tests.fakes import run_batch

_refs = count()


def iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def fold(events: list[Any]) -> dict[str, Any]:
    """Every row each read model must hold for one batch, folded straight from its events.

    Written independently of ``projections/``: a read model and this fold can only agree
    if both read the log the same way.
    """
    summary: dict[str, Any] = {}
    comparisons: dict[str, dict[str, Any]] = {}
    decisions: list[dict[str, Any]] = []
    rankings: list[dict[str, Any]] = []
    for e in events:
        bid, at = str(e.originator_id), iso(e.timestamp)
        if isinstance(e, CJBatch.BatchRegistered):
            summary = {
                "batch_id": bid,
                "external_ref": e.external_ref,
                "status": "registered",
                "mode": None,
                "mode_source": None,
                "provider": e.provider,
                "model": e.model,
                "essays": len(e.essays),
                "anchors": len([x for x in e.essays if x.is_anchor]),
                "budget": e.policy.max_pairs_cap,
                "comparisons_requested": 0,
                "successes": 0,
                "failures": 0,
                "waves": 0,
                "decisions": 0,
                "last_decision": None,
                "last_reason": None,
                "failure_reason": None,
                "reliability": None,
                "created_at": at,
                "updated_at": at,
                "finalized_at": None,
                "sparse": int(e.sparse),
                "split_half": None,
                "first_shown_win_rate": None,
                "position_bias_ci_low": None,
                "position_bias_ci_high": None,
                "mean_se": None,
                "max_se": None,
                "never_compared": None,
                "quality_flags": None,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost_usd": 0.0,
                "essays_erased": 0,
            }
            continue
        summary["updated_at"] = at
        if isinstance(e, CJBatch.BatchingModeSet):
            summary.update(mode=e.mode.value, mode_source=e.source)
        elif isinstance(e, CJBatch.ComparisonsRequested):
            summary.update(status="running", waves=e.wave_number)
            summary["comparisons_requested"] += len(e.pairs)
            for i, p in enumerate(e.pairs):
                comparisons[p.comparison_id] = {
                    "comparison_id": p.comparison_id,
                    "batch_id": bid,
                    "wave": e.wave_number,
                    "pair_index": i,
                    "generation_mode": e.generation_mode.value,
                    "essay_a": p.essay_a,
                    "essay_b": p.essay_b,
                    "outcome": "pending",
                    "winner": None,
                    "confidence": None,
                    "error_code": None,
                    "error_source": None,
                    "provider": e.provider,
                    "model": e.model,
                    "latency_ms": None,
                    "cost_usd": None,
                    "requested_at": iso(e.requested_at),
                    "deadline_at": iso(e.deadline_at),
                    "completed_at": None,
                }
        elif isinstance(e, CJBatch.ComparisonCompleted):
            row = comparisons[e.outcome.comparison_id]
            row["completed_at"] = at
            success, failure = e.outcome.success, e.outcome.failure
            if success is not None:
                summary["successes"] += 1
                summary["prompt_tokens"] += success.prompt_tokens
                summary["completion_tokens"] += success.completion_tokens
                summary["cost_usd"] += success.cost_usd
                row.update(
                    outcome="success",
                    winner=success.winner_id,
                    confidence=success.confidence,
                    provider=success.provider,
                    model=success.model,
                    latency_ms=success.latency_ms,
                    cost_usd=success.cost_usd,
                )
            else:
                summary["failures"] += 1
                summary["prompt_tokens"] += failure.prompt_tokens
                summary["completion_tokens"] += failure.completion_tokens
                summary["cost_usd"] += failure.cost_usd
                row.update(
                    outcome="failure",
                    error_code=failure.error_code,
                    error_source=failure.source.value,
                )
        elif isinstance(e, CJBatch.EssayErased):
            summary["essays_erased"] += 1
        elif isinstance(e, CJBatch.ContinuationDecided):
            summary["decisions"] += 1
            summary.update(last_decision=e.decision.value, last_reason=e.reason)
            ctx = e.context
            decisions.append(
                {
                    "batch_id": bid,
                    "version": e.originator_version,
                    "wave": ctx.wave_number,
                    "decision": e.decision.value,
                    "reason": e.reason,
                    "raw_decision": e.raw_decision.value,
                    "raw_reason": e.raw_reason,
                    "guard": e.guard,
                    "policy_version": e.policy_version,
                    "outcomes": ctx.outcomes,
                    "successes": ctx.successes,
                    "failures": ctx.failures,
                    "success_rate": ctx.success_rate,
                    "max_score_change": ctx.max_score_change,
                    "context": json.loads(json.dumps(asdict(ctx))),
                    "decided_at": at,
                }
            )
        elif isinstance(e, CJBatch.Finalized):
            summary.update(
                status=e.status.value,
                failure_reason=e.failure_reason,
                reliability=e.reliability,
                finalized_at=at,
            )
            q = e.quality
            fit = {} if q is None else {x.essay_id: x for x in q.essays}
            if q is not None:
                summary.update(
                    split_half=q.split_half,
                    first_shown_win_rate=q.position_bias.first_shown_win_rate,
                    position_bias_ci_low=q.position_bias.ci_low,
                    position_bias_ci_high=q.position_bias.ci_high,
                    mean_se=q.mean_se,
                    max_se=q.max_se,
                    never_compared=q.never_compared,
                    quality_flags=",".join(q.flags),
                )
            rankings = [
                {
                    "batch_id": bid,
                    "essay_id": s.essay_id,
                    "score": s.score,
                    "se": s.se,
                    "rank": s.rank,
                    "comparisons": s.comparisons,
                    "infit": fit[s.essay_id].infit if s.essay_id in fit else None,
                    "outfit": fit[s.essay_id].outfit if s.essay_id in fit else None,
                    "misfit": int(fit[s.essay_id].misfit) if s.essay_id in fit else None,
                }
                for s in sorted(e.scores, key=lambda s: (s.rank, s.essay_id))
            ]
    return {
        "summary": summary,
        "comparisons": list(comparisons.values()),
        "decisions": decisions,
        "rankings": rankings,
    }


def observed(models: ReadModels, batch_id: UUID) -> dict[str, Any]:
    """Everything the read models' queries return for one batch."""
    bid = str(batch_id)
    return {
        "summary": models.batch_summary(bid) or {},
        "comparisons": models.comparisons(bid),
        "decisions": models.decisions(bid),
        "rankings": models.rankings(bid),
    }


def assert_read_models_match_log(
    app: BatchApplication, runner: ReadModelRunner, batch_ids: list[UUID]
) -> None:
    models = ReadModels(runner.store)
    for batch_id in batch_ids:
        expected = fold(app.batch_events(batch_id))
        assert observed(models, batch_id) == expected


batch_shapes = st.fixed_dictionaries(
    {
        "n": st.integers(min_value=1, max_value=9),
        "mode": st.sampled_from([None, *BatchingMode]),
        "failure_rate": st.sampled_from([0.0, 0.2, 0.6]),
        "budget": st.sampled_from([None, 5, 40]),
        "seed": st.integers(min_value=0, max_value=1000),
    }
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=st.lists(batch_shapes, min_size=1, max_size=2),
    page_size=st.sampled_from([1, 7, 500]),
)
def test_each_read_model_equals_a_fold_over_the_log(
    make_app: AppFactory, batches: list[dict[str, Any]], page_size: int
) -> None:
    """Random batches (sizes, modes, budgets, failure rates, seeds), caught up page by page
    between them: every row of every read model is what a fold over the log says."""
    app = make_app()
    runner = ReadModelRunner(app, page_size=page_size)
    batch_ids = []
    for shape in batches:
        # sparse budgets too: read models must fold every kind of batch
        batch_ids.append(run_batch(app, ref=f"prop-{next(_refs)}", allow_sparse=True, **shape))
        runner.run_once()
    assert_read_models_match_log(app, runner, batch_ids)
    assert all(s.lag == 0 for s in runner.status())


def test_processing_is_incremental_and_idempotent(make_app: AppFactory) -> None:
    app = make_app()
    runner = ReadModelRunner(app)
    first = run_batch(app, n=5, ref="inc-1")
    runner.run_once()
    second = run_batch(app, n=6, ref="inc-2", mode=BatchingMode.PER_REQUEST)
    runner.run_once()
    assert runner.run_once() == 0
    ReadModelRunner(app).run_once()  # a second runner on the same store adds nothing
    assert_read_models_match_log(app, runner, [first, second])
    assert len(ReadModels(runner.store).batches()) == 2


def test_a_runner_that_crashes_mid_page_resumes_without_duplicates_or_gaps(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    batch_ids = [run_batch(app, n=8, ref=f"crash-{i}") for i in range(2)]
    runner = ReadModelRunner(app, page_size=40)
    projection = runner.projections["comparisons"]
    original = projection.apply_page
    completed = [
        e
        for b in batch_ids
        for e in app.batch_events(b)
        if isinstance(e, CJBatch.ComparisonCompleted)
    ]
    poisoned = completed[60].outcome.comparison_id

    def flaky_apply_page(store: Any, c: Any, tables: Any, events: Any) -> None:
        if any(getattr(e, "outcome", None) and e.outcome.comparison_id == poisoned for e in events):
            raise RuntimeError("runner killed mid-page")
        original(store, c, tables, events)

    monkeypatch.setattr(projection, "apply_page", flaky_apply_page)
    with pytest.raises(ProjectionFailed, match="runner killed mid-page") as failed:
        runner.run_once()
    assert failed.value.topic == "CJBatch.ComparisonCompleted"
    stuck = {s.name: s for s in runner.status()}["comparisons"]
    assert 0 < stuck.position < stuck.head, "part of the log was committed"
    ids = [n.id for n in app.recorder.select_notifications(start=None, limit=100_000)]
    before = ids[ids.index(failed.value.position) - 1]
    assert stuck.position == before, "every event before the refused one is kept"
    monkeypatch.setattr(projection, "apply_page", original)
    ReadModelRunner(app, page_size=40).run_once()  # a fresh runner resumes
    assert_read_models_match_log(app, runner, batch_ids)


def test_rebuild_builds_beside_and_switches_when_caught_up(make_app: AppFactory) -> None:
    app = make_app()
    batch_ids = [run_batch(app, n=7, ref=f"rb-{i}") for i in range(3)]
    runner = ReadModelRunner(app, page_size=25)
    runner.run_once()
    models = ReadModels(runner.store)
    before = {
        str(b): (models.comparisons(str(b)), models.decisions(str(b)), models.batch_summary(str(b)))
        for b in batch_ids
    }
    seen_during: list[bool] = []
    late: list[UUID] = []

    def during(position: int, head: int) -> None:
        # Readers still see the old, complete view while the new one is half built.
        seen_during.append(
            all(
                (models.comparisons(b), models.decisions(b), models.batch_summary(b)) == v
                for b, v in before.items()
            )
        )
        if not late:  # a writer keeps going during the rebuild
            late.append(run_batch(app, n=4, ref="rb-late"))

    for name in ("comparisons", "decision_audit", "batch_summary"):
        old = runner.store.active_generation(name)
        status = runner.rebuild(name, progress=during if name == "comparisons" else None)
        assert status.generation == old + 1 and status.lag == 0
    assert seen_during and all(seen_during)
    runner.run_once()
    assert_read_models_match_log(app, runner, [*batch_ids, *late])
    for b, (comparisons, decisions, summary) in before.items():
        assert models.comparisons(b) == comparisons
        assert models.decisions(b) == decisions
        assert models.batch_summary(b) == summary
