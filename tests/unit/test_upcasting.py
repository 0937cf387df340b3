"""Old event versions stay readable: rows an earlier release wrote are upcast as they are
read, through the application's own mapper, on SQLite and on PostgreSQL. Stored rows are
never rewritten.

``Flag`` is a test-local aggregate whose ``Commented`` event is at version 3: version 1
stored the text as ``note``, version 2 renamed it ``text``, version 3 added the essays the
comment is about. The aggregate's own state is at version 2, which matters for snapshots.
The last test does the same with ``CJBatch``'s own event topic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import eventsourcing.domain
import eventsourcing.utils
import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from application.batches import BatchApplication
from domain.batch import CJBatch
from tests.fakes import run_batch

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Flag(Aggregate):
    """A reviewer's flag on a batch, with comments (an imaginary aggregate)."""

    class_version = 2

    class Raised(Aggregate.Created):
        reason: str

    class Commented(Aggregate.Event):
        class_version = 3
        text: str
        essay_ids: tuple[str, ...]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["text"] = state.pop("note")

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["essay_ids"] = []  # comments were about the whole batch

    @event(Raised)
    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.comments: list[str] = []
        self.essays_mentioned: tuple[str, ...] = ()

    @event(Commented)
    def comment(self, text: str, essay_ids: tuple[str, ...]) -> None:
        self.comments.append(text)
        self.essays_mentioned = tuple(sorted({*self.essays_mentioned, *essay_ids}))

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 of the state had no ``essays_mentioned``."""
        state["essays_mentioned"] = ()


@pytest.fixture
def app(store_env: dict[str, str]) -> Any:
    with BatchApplication(env={**store_env, "AGGREGATE_CACHE_MAXSIZE": ""}) as application:
        yield application


def old_row(
    app: BatchApplication, flag_id: UUID, version: int, topic: str, state: dict[str, Any]
) -> StoredEvent:
    """A row exactly as an older release wrote it: its shape, its ``class_version`` key
    (absent for version 1), the same topic."""
    return StoredEvent(
        originator_id=flag_id,
        originator_version=version,
        topic=topic,
        state=app.mapper.transcoder.encode({"timestamp": T0, **state}),
    )


def write_old_log(app: BatchApplication) -> UUID:
    flag_id = uuid4()
    app.recorder.insert_events(
        [
            old_row(
                app,
                flag_id,
                1,
                get_topic(Flag.Raised),
                {"originator_topic": get_topic(Flag), "reason": "possible plagiarism"},
            ),
            old_row(app, flag_id, 2, get_topic(Flag.Commented), {"note": "same as essay 7"}),
            old_row(
                app,
                flag_id,
                3,
                get_topic(Flag.Commented),
                {"text": "essay 7 is older", "class_version": 2},
            ),
        ]
    )
    return flag_id


def test_old_versions_of_an_event_are_read_back_in_todays_shape(app: BatchApplication) -> None:
    flag_id = write_old_log(app)
    _, v1, v2 = app.events.get(flag_id)
    assert isinstance(v1, Flag.Commented)
    assert isinstance(v2, Flag.Commented)
    assert (v1.text, v1.essay_ids) == ("same as essay 7", ())
    assert (v2.text, v2.essay_ids) == ("essay 7 is older", ())
    assert not hasattr(v1, "note")


def test_an_aggregate_replays_a_log_of_mixed_versions_and_appends_the_current_one(
    app: BatchApplication,
) -> None:
    flag_id = write_old_log(app)
    flag: Flag = app.repository.get(flag_id)
    flag.comment("confirmed", ("essay-07", "essay-12"))
    app.save(flag)

    replayed: Flag = app.repository.get(flag_id)
    assert replayed.comments == ["same as essay 7", "essay 7 is older", "confirmed"]
    assert replayed.essays_mentioned == ("essay-07", "essay-12")
    rows = app.recorder.select_events(flag_id)
    assert [json.loads(row.state).get("class_version") for row in rows] == [None, None, 2, 3]
    assert json.loads(rows[1].state)["note"] == "same as essay 7", "old rows stay as written"


def test_a_snapshot_of_an_older_state_version_is_upcast_when_restored(
    app: BatchApplication,
) -> None:
    flag_id = write_old_log(app)
    state_v1 = {  # what release 1 of Flag put in a snapshot at version 3
        "_created_on": T0,
        "_modified_on": T0,
        "reason": "possible plagiarism",
        "comments": ["same as essay 7", "essay 7 is older"],
    }
    assert app.snapshots is not None
    app.snapshots.recorder.insert_events(
        [
            old_row(
                app,
                flag_id,
                3,
                get_topic(Flag.Snapshot),
                {"topic": get_topic(Flag), "state": state_v1},
            )
        ]
    )
    restored: Flag = app.repository.get(flag_id)
    assert restored.version == 3
    assert restored.essays_mentioned == ()
    restored.comment("cleared", ("essay-07",))
    app.save(restored)
    assert app.repository.get(flag_id).essays_mentioned == ("essay-07",)


# --------------------------------------------------------------------------- CJBatch


class ComparisonCompletedV3(CJBatch.ComparisonCompleted):
    """Stand-in for a future version 3 of ``CJBatch.ComparisonCompleted`` that also records
    when the outcome arrived. Rows written today (version 2) know nothing of it."""

    class_version = 3
    received_at: datetime | None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["received_at"] = None


def test_todays_batch_events_are_read_by_a_future_version_of_their_class(
    store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with BatchApplication(env=store_env) as today:
        batch_id = run_batch(today, n=5)
        batch_today = vars(today.get_batch(batch_id))
        events_today = today.batch_events(batch_id)

    # Releasing version 3 would mean editing the class in domain/batch.py. Here the real
    # topic is pointed at the stand-in instead, which applies to the batch exactly as
    # today's class does (the library keys a decorated method by its exact event class).
    topic = get_topic(CJBatch.ComparisonCompleted)
    monkeypatch.setitem(eventsourcing.utils._topic_cache, topic, ComparisonCompletedV3)
    applier = eventsourcing.domain.decorated_funcs[CJBatch.ComparisonCompleted]
    monkeypatch.setitem(eventsourcing.domain.decorated_funcs, ComparisonCompletedV3, applier)

    with BatchApplication(env={**store_env, "IS_SNAPSHOTTING_ENABLED": "no"}) as future:
        events = future.batch_events(batch_id)
        completed = [e for e in events if isinstance(e, CJBatch.ComparisonCompleted)]
        upgraded = [e for e in completed if type(e) is ComparisonCompletedV3]
        assert upgraded
        assert upgraded == completed
        assert all(e.received_at is None for e in upgraded)
        before = [e for e in events_today if isinstance(e, CJBatch.ComparisonCompleted)]
        assert [e.outcome for e in completed] == [e.outcome for e in before]
        assert vars(future.get_batch(batch_id)) == batch_today
