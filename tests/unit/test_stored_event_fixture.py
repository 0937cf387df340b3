"""Events an earlier release stored still load, decode to what they said, and replay to
the same batches — on SQLite and on PostgreSQL (see ``tests/fixtures/stored_events.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from application.batches import BatchApplication
from application.dispatcher import OutboxDispatcher
from domain.batch import CJBatch
from domain.continuation import LEGACY_CONTEXT_FIELDS
from infrastructure.embedded import InProcessTransport, run_until_idle
from infrastructure.persistence.positions import position_store_for
from tests.fakes import ThetaJudge, thetas_for
from tests.fixtures.stored_events import FIXTURE, plain_event, plain_state

DOCUMENT: dict[str, Any] = json.loads(FIXTURE.read_text())


def renamed(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(k, k): v for k, v in data.items()}


@pytest.fixture
def loaded(make_app: Callable[..., BatchApplication]) -> BatchApplication:
    """An application whose store holds exactly the fixture's rows."""
    app = make_app()
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=UUID(row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=row["state"].encode("utf-8"),
            )
            for row in DOCUMENT["rows"]
        ]
    )
    return app


def test_the_fixture_covers_every_kind_of_batch() -> None:
    states = DOCUMENT["states"]
    assert {s["final_status"] for s in states.values()} == {
        "scored",
        "failed",
        "insufficient_essays",
        None,
    }
    assert {s["mode"] for s in states.values()} == {
        "serial_bundle",
        "per_request",
        "provider_batch_api",
    }
    assert any(
        o["failure"] and o["failure"]["source"] == "deadline"
        for events in DOCUMENT["decoded"].values()
        for e in events
        if (o := e.get("outcome"))
    )


@pytest.mark.parametrize("name", sorted(DOCUMENT["batches"]))
def test_every_stored_event_decodes_to_what_it_said(loaded: BatchApplication, name: str) -> None:
    batch_id = DOCUMENT["batches"][name]
    recorded = DOCUMENT["decoded"][batch_id]
    events = list(loaded.repository.event_store.get(UUID(batch_id)))
    topics = [r["topic"] for r in DOCUMENT["rows"] if r["originator_id"] == UUID(batch_id).hex]
    assert ["domain.batch:" + type(e).__qualname__ for e in events] == topics
    assert len(events) == len(recorded)
    for event, old in zip(events, recorded, strict=True):
        new = plain_event(event)
        if "context" in old:  # the context's counts were renamed, their values kept
            old = {**old, "context": renamed(old["context"], LEGACY_CONTEXT_FIELDS)}
        # Later event versions may add fields (through their upcasters); none may change.
        assert {k: new.get(k) for k in old} == old, type(event).__qualname__


@pytest.mark.parametrize("name", sorted(DOCUMENT["batches"]))
def test_every_stored_batch_replays_to_the_same_state(loaded: BatchApplication, name: str) -> None:
    batch = loaded.get_batch(UUID(DOCUMENT["batches"][name]))
    assert plain_state(batch) == DOCUMENT["states"][name]


def test_a_stored_batch_left_mid_wave_runs_on_to_its_end(loaded: BatchApplication) -> None:
    batch_id = UUID(DOCUMENT["batches"]["mid_wave"])
    transport = InProcessTransport()
    dispatcher = OutboxDispatcher(loaded, transport, position_store_for(loaded))
    run_until_idle(loaded, dispatcher, transport, ThetaJudge(thetas_for(6)))
    batch = loaded.get_batch(batch_id)
    assert batch.is_finalized
    assert isinstance(batch, CJBatch)
    assert batch.successes > DOCUMENT["states"]["mid_wave"]["successes"]
