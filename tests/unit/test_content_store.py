"""Student data lives in the content store only, and erasure really erases it.

Every test runs on SQLite and on PostgreSQL (``store_env``). The judge here quotes the
essays it is shown, as a real LLM's justification may, so the prose that comes back is
student data too. After a batch has run, every table of the database is read back as
text and searched: the texts, the school's ids and the quoted prose may appear in the
content tables and nowhere else; after erasure, nowhere at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import structlog
from eventsourcing.persistence import StoredEvent

from application.batches import BatchApplication, RegisterBatch
from application.content import ERASED, EssaySubmission, UnknownEssay
from application.dispatcher import CONTENT_ERASED, OutboxDispatcher
from application.ports import ComparisonRequest
from application.reports import build_report, summarize_event
from domain import workflow
from domain.batch import CJBatch
from domain.values import ComparisonOutcome, SuccessDetails
from infrastructure.embedded import InProcessTransport, run_until_idle
from infrastructure.persistence.content import CONTENT_TABLES
from infrastructure.persistence.positions import position_store_for
from infrastructure.persistence.store import eventsourcing_env
from projections.queries import ReadModels
from projections.runner import ReadModelRunner
from tests.conftest import AppFactory

NAMES = [
    f"Pupil-{name}" for name in ("Zebedee", "Quintessa", "Marmaduke", "Ottoline", "Bartholomew")
]


def text_of(name: str) -> str:
    words = " ".join(f"{name.lower()}-thought-{i}" for i in range(len(name)))
    return f"My essay about the sea, by {name}: {words}."


SUBMISSIONS = tuple(EssaySubmission(name, text_of(name)) for name in NAMES)
SECRET_STRINGS = [*NAMES, *(text_of(n) for n in NAMES), "the sea, by"]


class QuotingJudge:
    """Prefers the longer essay and quotes both in its justification."""

    def __init__(self) -> None:
        self.requests: list[ComparisonRequest] = []

    def __call__(
        self, requests: Sequence[ComparisonRequest]
    ) -> list[tuple[UUID, ComparisonOutcome]]:
        self.requests.extend(requests)
        answers = []
        for r in requests:
            a_wins = len(r.essay_a_text) >= len(r.essay_b_text)
            winner = r.essay_a if a_wins else r.essay_b
            quote = f"A said {r.essay_a_text!r}; B said {r.essay_b_text!r}"
            success = SuccessDetails(winner, 4, quote, "simulated", "quoting-judge", 100, 20)
            answers.append((UUID(r.batch_id), ComparisonOutcome(r.comparison_id, success=success)))
        return answers


def register(app: BatchApplication, ref: str = "class-7b", budget: int = 12) -> UUID:
    return app.submit(
        RegisterBatch(
            ref,
            submissions=SUBMISSIONS,
            instructions="Write about the sea.",
            rubric="Imagery; structure; voice.",
            budget_override=budget,
            seed=3,
        )
    )


def drive(app: BatchApplication, judge: QuotingJudge) -> None:
    transport = InProcessTransport()
    run_until_idle(app, OutboxDispatcher(app, transport, position_store_for(app)), transport, judge)


def database_text(app: BatchApplication) -> dict[str, str]:
    """Every table of the store, each read back as one string."""
    datastore: Any = app.recorder.datastore
    schema = getattr(datastore, "schema", None)
    with datastore.transaction(commit=False) as c:
        if schema is None:
            c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = [row["name"] for row in c.fetchall()]
            qualified = {t: f'"{t}"' for t in tables}
        else:
            c.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
            tables = [row["table_name"] for row in c.fetchall()]
            qualified = {t: f'"{schema}"."{t}"' for t in tables}
        dump = {}
        for table in tables:
            c.execute(f"SELECT * FROM {qualified[table]}")
            cells = [
                bytes(v).decode("utf-8", "replace") if isinstance(v, bytes | memoryview) else str(v)
                for row in c.fetchall()
                for v in dict(row).values()
            ]
            dump[table] = "\n".join(cells)
    return dump


def where_found(dump: dict[str, str], needles: Sequence[str]) -> dict[str, list[str]]:
    return {
        t: [n for n in needles if n in text]
        for t, text in dump.items()
        if any(n in text for n in needles)
    }


def test_student_text_stays_out_of_events_snapshots_read_models_and_logs(
    make_app: AppFactory, store_env: dict[str, str]
) -> None:
    app = BatchApplication(env={**store_env, "SNAPSHOT_INTERVAL": "4"})
    judge = QuotingJudge()
    with structlog.testing.capture_logs() as logs:
        batch_id = register(app)
        drive(app, judge)
        ReadModelRunner(app).run_once()
    try:
        assert app.get_batch(batch_id).is_finalized
        # the dispatcher filled every request from the content store
        assert judge.requests and all(r.essay_a_text and r.essay_b_text for r in judge.requests)
        assert {r.rubric for r in judge.requests} == {"Imagery; structure; voice."}
        dump = database_text(app)
        assert dump["stored_snapshots" if "stored_snapshots" in dump else "cjbatches_snapshots"]
        found = where_found(dump, SECRET_STRINGS)
        assert found and set(found) <= set(CONTENT_TABLES), found
        # snapshots are stored compressed: read them back decoded as well
        assert app.snapshots is not None
        snapshots = list(app.snapshots.get(batch_id))
        assert snapshots
        assert not [s for s in SECRET_STRINGS if any(s in repr(x.state) for x in snapshots)]
        assert not [line for line in map(str, logs) if any(s in line for s in SECRET_STRINGS)]
        # the read side and the report show the school's ids, resolved through the store
        report = build_report(app.batch_events(batch_id), app.external_ids(batch_id))
        assert sorted(r.essay_id for r in report.rankings) == sorted(NAMES)
        assert report.usage.prompt_tokens == 100 * report.usage.judged_comparisons > 0
        models = ReadModels(
            ReadModelRunner(app).store, external_ids=lambda b: app.external_ids(UUID(b))
        )
        assert sorted(r["external_id"] for r in models.rankings(str(batch_id))) == sorted(NAMES)
        summary = models.batch_summary(str(batch_id))
        assert summary is not None and summary["prompt_tokens"] == report.usage.prompt_tokens
        assert summary["completion_tokens"] == 20 * report.usage.judged_comparisons
    finally:
        app.close()


def test_erasure_leaves_no_trace_of_the_essay_and_decisions_replay_identically(
    make_app: AppFactory,
) -> None:
    app = make_app()
    batch_id = register(app)
    drive(app, QuotingJudge())
    ReadModelRunner(app).run_once()
    before = app.batch_events(batch_id)
    victim = NAMES[1]
    victim_texts = [victim, text_of(victim)]
    assert where_found(database_text(app), victim_texts)

    result = app.erase_essay(batch_id, victim, "parent's request")
    ReadModelRunner(app).run_once()

    assert result.answers_erased > 0
    assert not where_found(database_text(app), victim_texts)
    others = where_found(database_text(app), [n for n in NAMES if n != victim])
    assert set(others) <= set(CONTENT_TABLES) and others
    events = app.batch_events(batch_id)
    erased = events[-1]
    assert isinstance(erased, CJBatch.EssayErased)
    assert erased.reason == "parent's request"
    assert "erased" in summarize_event(erased)
    assert events[:-1] == before  # nothing stored is rewritten
    resolve = app.external_ids(batch_id)
    assert resolve(result.essay_ref) == ERASED
    report = build_report(events, resolve)
    assert ERASED in [r.essay_id for r in report.rankings]

    fresh = make_app()  # no cache: the batch is replayed from the store
    replayed = fresh.get_batch(batch_id)
    original = app.get_batch(batch_id, version=len(before))
    assert replayed.final_scores == original.final_scores
    assert_decisions_rederive(fresh, batch_id)
    with pytest.raises(UnknownEssay):
        app.erase_essay(batch_id, victim, "again")


def assert_decisions_rederive(app: BatchApplication, batch_id: UUID) -> None:
    """Each stored decision, and the wave after it, follows again from the state before it."""
    events = app.batch_events(batch_id)
    decisions = [e for e in events if isinstance(e, CJBatch.ContinuationDecided)]
    assert decisions
    for decided in decisions:
        batch = app.get_batch(batch_id, version=decided.originator_version - 1)
        workflow.continue_after_wave(batch, decided.timestamp)
        again = batch.collect_events()
        assert isinstance(again[0], CJBatch.ContinuationDecided)
        assert (again[0].decision, again[0].reason, again[0].context) == (
            decided.decision,
            decided.reason,
            decided.context,
        )
        stored_next = events[decided.originator_version]
        assert type(again[1]) is type(stored_next)
        if isinstance(stored_next, CJBatch.ComparisonsRequested):
            assert again[1].pairs == stored_next.pairs  # type: ignore[attr-defined]


def test_an_essay_erased_before_its_request_left_is_answered_content_erased(
    make_app: AppFactory,
) -> None:
    app = make_app()
    batch_id = register(app, budget=10)
    first_wave = app.get_batch(batch_id).comparisons
    victim = NAMES[0]
    result = app.erase_essay(batch_id, victim, "withdrawn")
    involved = {cid for cid, r in first_wave.items() if r.pair.involves(result.essay_ref)}
    judge = QuotingJudge()
    drive(app, judge)

    batch = app.get_batch(batch_id)
    assert batch.is_finalized
    assert not {r.comparison_id for r in judge.requests} & involved  # never sent
    for cid in involved:
        outcome = batch.comparisons[cid].outcome
        assert outcome is not None and outcome.failure is not None
        assert outcome.failure.error_code == CONTENT_ERASED
    # later waves never pair the erased essay again
    assert all(
        not r.pair.involves(result.essay_ref)
        for c, r in batch.comparisons.items()
        if c not in first_wave
    )
    assert_decisions_rederive(make_app(), batch_id)


def test_prose_arriving_after_erasure_is_dropped_and_a_retry_stores_it_once(
    make_app: AppFactory,
) -> None:
    app = make_app()
    batch_id = register(app)
    transport = InProcessTransport()
    OutboxDispatcher(app, transport, position_store_for(app)).pump()
    requests = transport.take_all()
    answers = QuotingJudge()(requests)
    content = app.require_content()

    first, *rest = answers
    # the raw answer rides with the outcome, as version-2 messages bring it
    assert app.record_outcomes([(first[0], first[1], "RAW {json}")])[0].status.value == "recorded"
    assert app.record_outcomes([first], {first[1].comparison_id: "other"})[0].status.value == (
        "duplicate"
    )
    stored = content.answers(str(batch_id))
    assert list(stored) == [first[1].comparison_id]
    assert stored[first[1].comparison_id].raw_answer == "RAW {json}"
    completed = [
        e for e in app.batch_events(batch_id) if isinstance(e, CJBatch.ComparisonCompleted)
    ]
    assert completed[0].justification_ref == first[1].comparison_id
    assert (
        completed[0].outcome.success is not None
        and completed[0].outcome.success.justification == ""
    )

    second = rest[0]
    pair = app.get_batch(batch_id).comparisons[second[1].comparison_id].pair
    victim = app.external_ids(batch_id)(pair.essay_a)
    app.erase_essay(batch_id, victim, "withdrawn")
    app.record_outcomes([second])
    assert second[1].comparison_id not in content.answers(str(batch_id))
    late = [e for e in app.batch_events(batch_id) if isinstance(e, CJBatch.ComparisonCompleted)][-1]
    assert late.justification_ref is None


def test_comparison_completed_version_1_rows_still_load(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """A row written before version 2 (text inline, no ref) reads as version 2 with its
    text kept and no ref; the batch it belongs to replays to the same state."""
    app = make_app()
    batch_id = register(app)
    drive(app, QuotingJudge())
    rows = app.recorder.select_events(batch_id)
    topic = CJBatch.ComparisonCompleted.__module__ + ":" + CJBatch.ComparisonCompleted.__qualname__
    old_rows = []
    for row in rows:
        if row.topic != topic:
            continue
        state = json.loads(row.state)
        assert state.pop("class_version") == 2
        del state["justification_ref"]
        state["outcome"]["_data_"]["success"]["justification"] = "old inline prose"
        old_rows.append(replace(row, state=json.dumps(state).encode()))
    assert old_rows

    other = BatchApplication(env=eventsourcing_env(f"sqlite:///{tmp_path / 'old.db'}"))
    other.recorder.insert_events(
        [
            StoredEvent(r.originator_id, r.originator_version, r.topic, r.state)
            if r.topic != topic
            else next(o for o in old_rows if o.originator_version == r.originator_version)
            for r in rows
        ]
    )
    events = other.batch_events(batch_id)
    completed = [e for e in events if isinstance(e, CJBatch.ComparisonCompleted)]
    assert all(e.justification_ref is None for e in completed)
    assert all(
        e.outcome.success is not None and e.outcome.success.justification == "old inline prose"
        for e in completed
    )
    assert other.get_batch(batch_id).final_scores == app.get_batch(batch_id).final_scores
    other.close()


def test_a_group_of_outcomes_stores_every_answer_once_with_its_own_raw_answer(
    make_app: AppFactory,
) -> None:
    """A consumer's group goes to the content store in one statement: each recorded
    outcome's prose lands under its own comparison, a missing raw answer stays missing,
    and a duplicate in the same group does not replace the first answer."""
    app = make_app()
    batch_id = register(app)
    transport = InProcessTransport()
    OutboxDispatcher(app, transport, position_store_for(app)).pump()
    first, second = QuotingJudge()(transport.take_all())[:2]
    assert first[1].success is not None
    again = replace(first[1], success=replace(first[1].success, justification="other"))
    group = [
        (first[0], first[1], "RAW one"),
        (second[0], second[1], None),
        (first[0], again, "RAW again"),
    ]
    statuses = [r.status.value for r in app.record_outcomes(group)]
    assert statuses == ["recorded", "recorded", "duplicate"]
    stored = app.require_content().answers(str(batch_id))
    assert set(stored) == {first[1].comparison_id, second[1].comparison_id}
    for (_, outcome), raw in ((first, "RAW one"), (second, None)):
        assert outcome.success is not None
        assert stored[outcome.comparison_id].justification == outcome.success.justification
        assert stored[outcome.comparison_id].raw_answer == raw
