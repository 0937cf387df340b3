"""The four read models, each a projection of the CJ batch events.

A projection names its tables (columns in portable SQL: SQLite and PostgreSQL run the same
statements) and says, per event type, which rows change. ``apply`` receives an open
transaction; the runner commits rows and tracking position together.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, ClassVar

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.batch import CJBatch
from projections.store import ReadModelStoreMixin


class ReadModelProjection(Projection[Any]):
    """A read model: its tables and how each event changes them."""

    name: str = ""
    ddl: ClassVar[dict[str, str]] = {}
    indexes: ClassVar[tuple[str, ...]] = ()
    handles: ClassVar[tuple[type, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.topics = tuple(get_topic(handled) for handled in cls.handles)

    def apply(self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], event: Any) -> None:
        """Change the rows for one event, inside the caller's transaction."""
        raise NotImplementedError

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """The library's one-event entry point: rows and tracking in one transaction."""
        store: ReadModelStoreMixin = self.view
        projection = type(self).name
        generation = store.active_generation(projection)
        if generation is None:
            raise LookupError(f"projection {projection} has no active generation")
        tables = store.tables_for(generation, self.ddl)
        with store.writing(projection, generation, tracking.notification_id) as c:
            if isinstance(domain_event, self.handles):
                self.apply(store, c, tables, domain_event)


def iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


class BatchSummaryProjection(ReadModelProjection):
    name = "batch_summary"
    ddl = {
        "batch_summary": (
            "batch_id TEXT PRIMARY KEY, external_ref TEXT NOT NULL, status TEXT NOT NULL, "
            "mode TEXT, mode_source TEXT, provider TEXT, model TEXT, essays INTEGER NOT NULL, "
            "anchors INTEGER NOT NULL, budget INTEGER NOT NULL, "
            "comparisons_requested INTEGER NOT NULL, successes INTEGER NOT NULL, "
            "failures INTEGER NOT NULL, waves INTEGER NOT NULL, "
            "decisions INTEGER NOT NULL, last_decision TEXT, last_reason TEXT, "
            "failure_reason TEXT, reliability DOUBLE PRECISION, created_at TEXT NOT NULL, "
            "updated_at TEXT NOT NULL, finalized_at TEXT, sparse INTEGER NOT NULL DEFAULT 0, "
            "split_half DOUBLE PRECISION, first_shown_win_rate DOUBLE PRECISION, "
            "position_bias_ci_low DOUBLE PRECISION, position_bias_ci_high DOUBLE PRECISION, "
            "mean_se DOUBLE PRECISION, max_se DOUBLE PRECISION, never_compared INTEGER, "
            "quality_flags TEXT, "
            "prompt_tokens INTEGER NOT NULL DEFAULT 0, "
            "completion_tokens INTEGER NOT NULL DEFAULT 0, "
            "cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0, "
            "essays_erased INTEGER NOT NULL DEFAULT 0"
        )
    }
    indexes = (
        "CREATE INDEX IF NOT EXISTS rm_batch_summary_status_g{g} ON {batch_summary} "
        "(status, created_at)",
    )
    handles = (
        CJBatch.BatchRegistered,
        CJBatch.BatchingModeSet,
        CJBatch.ComparisonsRequested,
        CJBatch.ComparisonCompleted,
        CJBatch.EssayErased,
        CJBatch.ContinuationDecided,
        CJBatch.Finalized,
    )

    def apply(self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], event: Any) -> None:
        table = tables["batch_summary"]
        batch_id = str(event.originator_id)
        at = iso(event.timestamp)
        if isinstance(event, CJBatch.BatchRegistered):
            store.execute(
                c,
                f"INSERT INTO {table} (batch_id, external_ref, status, provider, model, "
                "essays, anchors, budget, comparisons_requested, successes, "
                "failures, waves, decisions, created_at, updated_at, sparse) "
                "VALUES (?, ?, 'registered', ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, ?, ?, ?)",
                (
                    batch_id,
                    event.external_ref,
                    event.provider,
                    event.model,
                    len(event.essays),
                    sum(1 for e in event.essays if e.is_anchor),
                    event.policy.max_pairs_cap,
                    at,
                    at,
                    int(event.sparse),
                ),
            )
        elif isinstance(event, CJBatch.BatchingModeSet):
            store.execute(
                c,
                f"UPDATE {table} SET mode = ?, mode_source = ?, updated_at = ? WHERE batch_id = ?",
                (event.mode.value, event.source, at, batch_id),
            )
        elif isinstance(event, CJBatch.ComparisonsRequested):
            store.execute(
                c,
                f"UPDATE {table} SET status = 'running', waves = ?, "
                "comparisons_requested = comparisons_requested + ?, updated_at = ? "
                "WHERE batch_id = ?",
                (event.wave_number, len(event.pairs), at, batch_id),
            )
        elif isinstance(event, CJBatch.ComparisonCompleted):
            success = event.outcome.success
            if success is None:
                failure = event.outcome.failure
                assert failure is not None
                store.execute(
                    c,
                    f"UPDATE {table} SET failures = failures + 1, "
                    "prompt_tokens = prompt_tokens + ?, "
                    "completion_tokens = completion_tokens + ?, cost_usd = cost_usd + ?, "
                    "updated_at = ? WHERE batch_id = ?",
                    (
                        failure.prompt_tokens,
                        failure.completion_tokens,
                        failure.cost_usd,
                        at,
                        batch_id,
                    ),
                )
            else:
                store.execute(
                    c,
                    f"UPDATE {table} SET successes = successes + 1, "
                    "prompt_tokens = prompt_tokens + ?, "
                    "completion_tokens = completion_tokens + ?, cost_usd = cost_usd + ?, "
                    "updated_at = ? WHERE batch_id = ?",
                    (
                        success.prompt_tokens,
                        success.completion_tokens,
                        success.cost_usd,
                        at,
                        batch_id,
                    ),
                )
        elif isinstance(event, CJBatch.EssayErased):
            store.execute(
                c,
                f"UPDATE {table} SET essays_erased = essays_erased + 1, updated_at = ? "
                "WHERE batch_id = ?",
                (at, batch_id),
            )
        elif isinstance(event, CJBatch.ContinuationDecided):
            store.execute(
                c,
                f"UPDATE {table} SET decisions = decisions + 1, last_decision = ?, "
                "last_reason = ?, updated_at = ? WHERE batch_id = ?",
                (event.decision.value, event.reason, at, batch_id),
            )
        elif isinstance(event, CJBatch.Finalized):
            store.execute(
                c,
                f"UPDATE {table} SET status = ?, failure_reason = ?, "
                "reliability = ?, finalized_at = ?, updated_at = ? "
                "WHERE batch_id = ?",
                (event.status.value, event.failure_reason, event.reliability, at, at, batch_id),
            )
            quality = event.quality
            if quality is not None:  # recorded from policy version 2 on
                bias = quality.position_bias
                store.execute(
                    c,
                    f"UPDATE {table} SET split_half = ?, first_shown_win_rate = ?, "
                    "position_bias_ci_low = ?, position_bias_ci_high = ?, mean_se = ?, "
                    "max_se = ?, never_compared = ?, quality_flags = ? WHERE batch_id = ?",
                    (
                        quality.split_half,
                        bias.first_shown_win_rate,
                        bias.ci_low,
                        bias.ci_high,
                        quality.mean_se,
                        quality.max_se,
                        quality.never_compared,
                        ",".join(quality.flags),
                        batch_id,
                    ),
                )


class RankingsProjection(ReadModelProjection):
    name = "rankings"
    ddl = {
        "rankings": (
            "batch_id TEXT NOT NULL, essay_id TEXT NOT NULL, score DOUBLE PRECISION NOT NULL, "
            "se DOUBLE PRECISION NOT NULL, rank INTEGER NOT NULL, comparisons INTEGER NOT NULL, "
            "infit DOUBLE PRECISION, outfit DOUBLE PRECISION, misfit INTEGER, "
            "PRIMARY KEY (batch_id, essay_id)"
        )
    }
    handles = (CJBatch.Finalized,)

    def apply(self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], event: Any) -> None:
        fit = {} if event.quality is None else {e.essay_id: e for e in event.quality.essays}
        rows = []
        for s in event.scores:
            essay = fit.get(s.essay_id)
            rows.append(
                (
                    str(event.originator_id),
                    s.essay_id,
                    s.score,
                    s.se,
                    s.rank,
                    s.comparisons,
                    None if essay is None else essay.infit,
                    None if essay is None else essay.outfit,
                    None if essay is None else int(essay.misfit),
                )
            )
        store.execute_many(
            c,
            f"INSERT INTO {tables['rankings']} (batch_id, essay_id, score, se, rank, "
            "comparisons, infit, outfit, misfit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


class ComparisonsProjection(ReadModelProjection):
    name = "comparisons"
    ddl = {
        "comparisons": (
            "comparison_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, wave INTEGER NOT NULL, "
            "pair_index INTEGER NOT NULL, "
            "generation_mode TEXT NOT NULL, essay_a TEXT NOT NULL, essay_b TEXT NOT NULL, "
            "outcome TEXT NOT NULL, winner TEXT, confidence INTEGER, error_code TEXT, "
            "error_source TEXT, provider TEXT, model TEXT, latency_ms DOUBLE PRECISION, "
            "cost_usd DOUBLE PRECISION, requested_at TEXT NOT NULL, deadline_at TEXT NOT NULL, "
            "completed_at TEXT"
        )
    }
    indexes = (
        "CREATE INDEX IF NOT EXISTS rm_comparisons_batch_g{g} ON {comparisons} (batch_id, wave)",
    )
    handles = (CJBatch.ComparisonsRequested, CJBatch.ComparisonCompleted)

    def apply(self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], event: Any) -> None:
        table = tables["comparisons"]
        if isinstance(event, CJBatch.ComparisonsRequested):
            store.execute_many(
                c,
                f"INSERT INTO {table} (comparison_id, batch_id, wave, pair_index, generation_mode, "
                "essay_a, essay_b, outcome, provider, model, requested_at, deadline_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                [
                    (
                        p.comparison_id,
                        str(event.originator_id),
                        event.wave_number,
                        index,
                        event.generation_mode.value,
                        p.essay_a,
                        p.essay_b,
                        event.provider,
                        event.model,
                        iso(event.requested_at),
                        iso(event.deadline_at),
                    )
                    for index, p in enumerate(event.pairs)
                ],
            )
            return
        outcome = event.outcome
        if outcome.success is not None:
            s = outcome.success
            store.execute(
                c,
                f"UPDATE {table} SET outcome = 'success', winner = ?, confidence = ?, "
                "provider = ?, model = ?, latency_ms = ?, cost_usd = ?, completed_at = ? "
                "WHERE comparison_id = ?",
                (
                    s.winner_id,
                    s.confidence,
                    s.provider,
                    s.model,
                    s.latency_ms,
                    s.cost_usd,
                    iso(event.timestamp),
                    outcome.comparison_id,
                ),
            )
        else:
            f = outcome.failure
            store.execute(
                c,
                f"UPDATE {table} SET outcome = 'failure', error_code = ?, error_source = ?, "
                "completed_at = ? WHERE comparison_id = ?",
                (f.error_code, f.source.value, iso(event.timestamp), outcome.comparison_id),
            )


class DecisionAuditProjection(ReadModelProjection):
    name = "decision_audit"
    ddl = {
        "decision_audit": (
            "batch_id TEXT NOT NULL, version INTEGER NOT NULL, wave INTEGER NOT NULL, "
            "decision TEXT NOT NULL, reason TEXT NOT NULL, raw_decision TEXT NOT NULL, "
            "raw_reason TEXT NOT NULL, guard TEXT, policy_version INTEGER NOT NULL, "
            "outcomes INTEGER NOT NULL, successes INTEGER NOT NULL, "
            "failures INTEGER NOT NULL, success_rate DOUBLE PRECISION, "
            "max_score_change DOUBLE PRECISION, context TEXT NOT NULL, decided_at TEXT NOT NULL, "
            "PRIMARY KEY (batch_id, version)"
        )
    }
    handles = (CJBatch.ContinuationDecided,)

    def apply(self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], event: Any) -> None:
        ctx = event.context
        store.execute(
            c,
            f"INSERT INTO {tables['decision_audit']} (batch_id, version, wave, decision, reason, "
            "raw_decision, raw_reason, guard, policy_version, outcomes, successes, "
            "failures, success_rate, max_score_change, context, decided_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(event.originator_id),
                event.originator_version,
                ctx.wave_number,
                event.decision.value,
                event.reason,
                event.raw_decision.value,
                event.raw_reason,
                event.guard,
                event.policy_version,
                ctx.outcomes,
                ctx.successes,
                ctx.failures,
                ctx.success_rate,
                ctx.max_score_change,
                json.dumps(asdict(ctx), sort_keys=True),
                iso(event.timestamp),
            ),
        )


PROJECTIONS: dict[str, type[ReadModelProjection]] = {
    cls.name: cls
    for cls in (
        BatchSummaryProjection,
        RankingsProjection,
        ComparisonsProjection,
        DecisionAuditProjection,
    )
}
