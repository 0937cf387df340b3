"""The four read models, each a projection of the CJ batch events.

A projection names its tables (columns in portable SQL: SQLite and PostgreSQL run the same
statements) and says how events change its rows, in two ways that give the same rows:

* ``apply_page(store, c, tables, events)``: what the runner uses. The page's events are
  first folded in memory into row changes (a comparison requested and completed within the
  page becomes one row with its final values; a batch's counters are summed over the page),
  then written with a few set-based statements: multi-row ``INSERT`` and
  ``UPDATE ... FROM (VALUES ...)``, never a statement per event.
* ``apply(store, c, tables, event)``: one event, one statement; the library's
  ``process_event`` entry point, and the reference the page fold is tested against.

Both receive an open transaction; the runner commits rows and tracking position together.
A page that would break a constraint one event at a time breaks it as a page too (a
duplicate key is written, not merged away), so the runner can fall back to single events
and name the one that fails.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.batch import CJBatch
from projections.store import ReadModelStoreMixin, column_types


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

    def apply_page(
        self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], events: Sequence[Any]
    ) -> None:
        """Change the rows for a page of events (only those this read model handles, in
        log order) with set-based statements, inside the caller's transaction."""
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


def plain(value: Any) -> Any:
    """``dataclasses.asdict`` without its deep copies (what it gives ``json.dumps`` is the
    same): a decision's context holds every essay's score, and ``asdict`` was the dearest
    part of applying it."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _FIELDS.get(kind)
    if names is None:
        dataclass = is_dataclass(value) and not isinstance(value, type)
        names = _FIELDS[kind] = tuple(f.name for f in fields(value)) if dataclass else ()
        _FIELD_SETS[kind] = frozenset(names)
        if not dataclass:
            _NOT_DATACLASSES.add(kind)
    if kind not in _NOT_DATACLASSES:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def context_json(context: Any) -> str:
    """``json.dumps(plain(context), sort_keys=True)``, copying less: a dataclass whose
    attribute dict holds exactly its fields is encoded from that dict, and so are the
    dataclasses in its sequences (a decision's score points); anything else the encoder
    meets is asked of ``_fields``, which gives what ``plain`` would."""
    return json.dumps(_object(context), sort_keys=True, default=_fields)


def _object(value: Any) -> Any:
    attributes = _fields(value)
    return {
        name: [_fields(item) if type(item) not in _SCALARS else item for item in field]
        if type(field) is tuple or type(field) is list
        else field
        for name, field in attributes.items()
    }


def _fields(value: Any) -> Any:
    """What ``plain`` gives for a dataclass, for the JSON encoder: its attribute dict
    itself when that holds exactly its fields (nested values are encoded in turn);
    anything else is not the encoder's to write, as ``json.dumps(plain(...))`` says."""
    kind = type(value)
    names = _FIELDS.get(kind)
    if names is None:
        plain(value)  # learns whether it is a dataclass, and its fields
        names = _FIELDS[kind]
    if kind in _NOT_DATACLASSES:
        if isinstance(value, list | tuple | dict):
            return value
        raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")
    attributes = getattr(value, "__dict__", None)
    if attributes is not None and attributes.keys() == _FIELD_SETS[kind]:
        return attributes
    return {name: getattr(value, name) for name in names}


_SCALARS = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}
_FIELD_SETS: dict[type, frozenset[str]] = {}
_NOT_DATACLASSES: set[type] = set()


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

    def apply_page(
        self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], events: Sequence[Any]
    ) -> None:
        """Read the page's batches once, fold every event into their rows in memory (in
        log order, so sums add up exactly as one ``UPDATE`` per event would), then write
        new batches with one ``INSERT`` and changed ones with one ``UPDATE ... FROM``."""
        if not events:
            return
        table = tables["batch_summary"]
        columns = SUMMARY_COLUMNS
        batch_ids = [str(e.originator_id) for e in events]
        touched = list(dict.fromkeys(batch_ids))
        rows = {r["batch_id"]: r for r in store.select_in(c, table, "batch_id", touched)}
        inserted: list[dict[str, Any]] = []
        new: set[str] = set()  # batches whose row is one of ``inserted``
        changed: dict[str, dict[str, Any]] = {}
        for batch_id, event in zip(batch_ids, events, strict=True):
            if isinstance(event, CJBatch.BatchRegistered):
                row = _registered_row(event, columns)
                inserted.append(row)  # a batch registered twice fails as a duplicate key
                if batch_id not in rows:
                    rows[batch_id] = row
                    new.add(batch_id)
                continue
            current = rows.get(batch_id)
            if current is None:  # an UPDATE of a batch that has no row changes nothing
                continue
            _fold_summary(current, event)
            if batch_id not in new:
                changed[batch_id] = current
        for row in (*changed.values(), *inserted):
            _times_as_text(row)
        store.update_rows(
            c,
            table,
            ("batch_id",),
            [n for n in columns if n != "batch_id"],
            [[row[n] for n in columns] for row in changed.values()],
            SUMMARY_TYPES,
        )
        store.insert_rows(
            c, table, columns, [[row[n] for n in columns] for row in inserted], SUMMARY_TYPES
        )


SUMMARY_TYPES = column_types(BatchSummaryProjection.ddl["batch_summary"])
SUMMARY_COLUMNS = tuple(SUMMARY_TYPES)

_SUMMARY_DEFAULTS: dict[str, Any] = {
    "status": "registered",
    "comparisons_requested": 0,
    "successes": 0,
    "failures": 0,
    "waves": 0,
    "decisions": 0,
    "sparse": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cost_usd": 0.0,
    "essays_erased": 0,
}


def _registered_row(event: Any, columns: Sequence[str]) -> dict[str, Any]:
    """The row ``BatchSummaryProjection.apply`` inserts for ``BatchRegistered``."""
    at = iso(event.timestamp)
    row: dict[str, Any] = dict.fromkeys(columns)
    row.update(_SUMMARY_DEFAULTS)
    row.update(
        batch_id=str(event.originator_id),
        external_ref=event.external_ref,
        provider=event.provider,
        model=event.model,
        essays=len(event.essays),
        anchors=sum(1 for e in event.essays if e.is_anchor),
        budget=event.policy.max_pairs_cap,
        created_at=at,
        updated_at=at,
        sparse=int(event.sparse),
    )
    return row


def _times_as_text(row: dict[str, Any]) -> None:
    """The folded row's times as ``apply`` writes them (``_fold_summary`` leaves each
    event's time as it is: only the last one of a page is written)."""
    for name in ("updated_at", "finalized_at"):
        value = row[name]
        if isinstance(value, datetime):
            row[name] = value.isoformat()


def _fold_summary(row: dict[str, Any], event: Any) -> None:
    """What ``BatchSummaryProjection.apply``'s ``UPDATE`` does to the row, in memory
    (times left as ``datetime``: ``_times_as_text`` writes them as ``apply`` does)."""
    at = event.timestamp
    if isinstance(event, CJBatch.ComparisonCompleted):  # most events of a log
        details: Any = event.outcome.success
        if details is None:
            details = event.outcome.failure
            row["failures"] += 1
        else:
            row["successes"] += 1
        row["prompt_tokens"] += details.prompt_tokens
        row["completion_tokens"] += details.completion_tokens
        row["cost_usd"] += details.cost_usd
        row["updated_at"] = at
    elif isinstance(event, CJBatch.BatchingModeSet):
        row.update(mode=event.mode.value, mode_source=event.source, updated_at=at)
    elif isinstance(event, CJBatch.ComparisonsRequested):
        row.update(status="running", waves=event.wave_number, updated_at=at)
        row["comparisons_requested"] += len(event.pairs)
    elif isinstance(event, CJBatch.EssayErased):
        row["essays_erased"] += 1
        row["updated_at"] = at
    elif isinstance(event, CJBatch.ContinuationDecided):
        row["decisions"] += 1
        row.update(last_decision=event.decision.value, last_reason=event.reason, updated_at=at)
    elif isinstance(event, CJBatch.Finalized):
        row.update(
            status=event.status.value,
            failure_reason=event.failure_reason,
            reliability=event.reliability,
            finalized_at=at,
            updated_at=at,
        )
        quality = event.quality
        if quality is not None:
            bias = quality.position_bias
            row.update(
                split_half=quality.split_half,
                first_shown_win_rate=bias.first_shown_win_rate,
                position_bias_ci_low=bias.ci_low,
                position_bias_ci_high=bias.ci_high,
                mean_se=quality.mean_se,
                max_se=quality.max_se,
                never_compared=quality.never_compared,
                quality_flags=",".join(quality.flags),
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
        rows = _ranking_rows(event)
        store.execute_many(
            c,
            f"INSERT INTO {tables['rankings']} (batch_id, essay_id, score, se, rank, "
            "comparisons, infit, outfit, misfit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def apply_page(
        self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], events: Sequence[Any]
    ) -> None:
        store.insert_rows(
            c,
            tables["rankings"],
            RANKING_COLUMNS,
            [row for event in events for row in _ranking_rows(event)],
            RANKING_TYPES,
        )


RANKING_TYPES = column_types(RankingsProjection.ddl["rankings"])
RANKING_COLUMNS = (
    "batch_id",
    "essay_id",
    "score",
    "se",
    "rank",
    "comparisons",
    "infit",
    "outfit",
    "misfit",
)


def _ranking_rows(event: Any) -> list[tuple[Any, ...]]:
    fit = {} if event.quality is None else {e.essay_id: e for e in event.quality.essays}
    batch_id = str(event.originator_id)
    rows = []
    for s in event.scores:
        essay = fit.get(s.essay_id)
        rows.append(
            (
                batch_id,
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
    return rows


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

    def apply_page(
        self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], events: Sequence[Any]
    ) -> None:
        """Requests become rows; an outcome for a row of this page is folded into it, an
        outcome for an earlier page's row becomes a change to it. Earlier rows are changed
        before the page's rows are inserted (as one ``UPDATE`` per event would: an outcome
        that came before its request changes nothing)."""
        table = tables["comparisons"]
        inserted: list[dict[str, Any]] = []
        new: dict[str, dict[str, Any]] = {}
        changes: dict[str, dict[str, Any]] = {}
        for event in events:
            if isinstance(event, CJBatch.ComparisonsRequested):
                for row in _requested_rows(event):
                    inserted.append(row)  # requested twice: a duplicate key, as per event
                    new[row["comparison_id"]] = row
                continue
            outcome = event.outcome
            values = _completed_values(event)
            pending = new.get(outcome.comparison_id)
            if pending is not None:
                pending.update(values)
            else:
                changes.setdefault(outcome.comparison_id, {}).update(values)
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        for comparison_id, values in changes.items():
            by_columns.setdefault(tuple(values), []).append([comparison_id, *values.values()])
        for changed_columns, rows in by_columns.items():
            store.update_rows(c, table, ("comparison_id",), changed_columns, rows, COMPARISON_TYPES)
        store.insert_rows(
            c,
            table,
            COMPARISON_COLUMNS,
            [list(row.values()) for row in inserted],
            COMPARISON_TYPES,
        )


COMPARISON_TYPES = column_types(ComparisonsProjection.ddl["comparisons"])
COMPARISON_COLUMNS = tuple(COMPARISON_TYPES)


def _requested_rows(event: Any) -> list[dict[str, Any]]:
    """The rows ``ComparisonsProjection.apply`` inserts for ``ComparisonsRequested``."""
    batch_id = str(event.originator_id)
    requested_at, deadline_at = iso(event.requested_at), iso(event.deadline_at)
    mode = event.generation_mode.value
    wave, provider, model = event.wave_number, event.provider, event.model
    # keys in the order of COMPARISON_COLUMNS: ``apply_page`` writes ``row.values()``
    return [
        {
            "comparison_id": p.comparison_id,
            "batch_id": batch_id,
            "wave": wave,
            "pair_index": index,
            "generation_mode": mode,
            "essay_a": p.essay_a,
            "essay_b": p.essay_b,
            "outcome": "pending",
            "winner": None,
            "confidence": None,
            "error_code": None,
            "error_source": None,
            "provider": provider,
            "model": model,
            "latency_ms": None,
            "cost_usd": None,
            "requested_at": requested_at,
            "deadline_at": deadline_at,
            "completed_at": None,
        }
        for index, p in enumerate(event.pairs)
    ]


def _completed_values(event: Any) -> dict[str, Any]:
    """The columns ``ComparisonsProjection.apply`` sets for ``ComparisonCompleted``."""
    outcome = event.outcome
    s = outcome.success
    if s is not None:
        return {
            "outcome": "success",
            "winner": s.winner_id,
            "confidence": s.confidence,
            "provider": s.provider,
            "model": s.model,
            "latency_ms": s.latency_ms,
            "cost_usd": s.cost_usd,
            "completed_at": iso(event.timestamp),
        }
    f = outcome.failure
    return {
        "outcome": "failure",
        "error_code": f.error_code,
        "error_source": f.source.value,
        "completed_at": iso(event.timestamp),
    }


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
        store.execute(
            c,
            f"INSERT INTO {tables['decision_audit']} (batch_id, version, wave, decision, reason, "
            "raw_decision, raw_reason, guard, policy_version, outcomes, successes, "
            "failures, success_rate, max_score_change, context, decided_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _decision_row(event),
        )

    def apply_page(
        self, store: ReadModelStoreMixin, c: Any, tables: dict[str, str], events: Sequence[Any]
    ) -> None:
        store.insert_rows(
            c,
            tables["decision_audit"],
            DECISION_COLUMNS,
            [_decision_row(e) for e in events],
            DECISION_TYPES,
        )


DECISION_TYPES = column_types(DecisionAuditProjection.ddl["decision_audit"])
DECISION_COLUMNS = tuple(DECISION_TYPES)


def _decision_row(event: Any) -> tuple[Any, ...]:
    ctx = event.context
    return (
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
        context_json(ctx),
        iso(event.timestamp),
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
