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
from application.verification import ALGORITHM_CHANGED, verify_batch
from domain.algorithms import UNSTAMPED
from domain.batch import CJBatch
from domain.continuation import (
    LEGACY_CONTEXT_FIELDS,
    apply_mode_guards,
    decide,
    wants_another_wave,
)
from domain.policy import as_recorded
from infrastructure.embedded import InProcessTransport, run_until_idle
from infrastructure.persistence.positions import position_store_for
from tests.fakes import ThetaJudge, thetas_for
from tests.fixtures.stored_events import FIXTURE, plain_event, plain_state

DOCUMENT: dict[str, Any] = json.loads(FIXTURE.read_text())


def renamed(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(k, k): v for k, v in data.items()}


def extends(new: Any, old: Any) -> bool:
    """``new`` says all that ``old`` said: equal, except that records (dicts) may have
    gained fields that later versions added (the policy, the context, ``Finalized``)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(
            k in new and extends(new[k], v) for k, v in old.items()
        )
    if isinstance(old, list):
        return (
            isinstance(new, list)
            and len(new) == len(old)
            and all(extends(n, o) for n, o in zip(new, old, strict=True))
        )
    return bool(new == old)


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
        assert extends(new, old), (type(event).__qualname__, new, old)


@pytest.mark.parametrize("name", sorted(DOCUMENT["batches"]))
def test_every_stored_batch_replays_to_the_same_state(loaded: BatchApplication, name: str) -> None:
    batch = loaded.get_batch(UUID(DOCUMENT["batches"][name]))
    assert extends(plain_state(batch), DOCUMENT["states"][name])


def test_a_stored_batch_left_mid_wave_runs_on_to_its_end(loaded: BatchApplication) -> None:
    batch_id = UUID(DOCUMENT["batches"]["mid_wave"])
    transport = InProcessTransport()
    dispatcher = OutboxDispatcher(loaded, transport, position_store_for(loaded))
    run_until_idle(loaded, dispatcher, transport, ThetaJudge(thetas_for(6)))
    batch = loaded.get_batch(batch_id)
    assert batch.is_finalized
    assert isinstance(batch, CJBatch)
    assert batch.successes > DOCUMENT["states"]["mid_wave"]["successes"]


@pytest.mark.parametrize("name", sorted(DOCUMENT["batches"]))
def test_decisions_recorded_under_policy_1_are_decided_again_identically(
    loaded: BatchApplication, name: str
) -> None:
    """Today's rules, given a stored context and the batch's own (version-1) policy,
    reach the decision that was recorded: the raw one always, and the final one whenever
    no fallback (pairing finding nothing) stepped in."""
    events = list(loaded.repository.event_store.get(UUID(DOCUMENT["batches"][name])))
    registered = events[0]
    assert isinstance(registered, CJBatch.BatchRegistered)
    policy = registered.policy
    assert policy.policy_version == 1
    assert policy == as_recorded(policy)
    mode = next(e.mode for e in events if isinstance(e, CJBatch.BatchingModeSet))
    for event in events:
        if not isinstance(event, CJBatch.ContinuationDecided):
            continue
        assert event.policy_version == 1
        raw = decide(event.context, policy)
        assert (raw.kind, raw.reason.value) == (event.raw_decision, event.raw_reason)
        guarded = apply_mode_guards(raw, mode, event.context, policy)
        assert (None if guarded.guard is None else guarded.guard.value) == event.guard
        if wants_another_wave(guarded.final) and event.decision is not guarded.final.kind:
            assert event.reason == "nothing_left_to_ask"  # the fallback
        else:
            assert (guarded.final.kind, guarded.final.reason.value) == (
                event.decision,
                event.reason,
            )


@pytest.mark.parametrize("name", sorted(DOCUMENT["batches"]))
def test_events_stored_before_algorithm_stamps_read_as_unstamped(
    loaded: BatchApplication, name: str
) -> None:
    """Waves, decisions and finalizations written before stamping load with the
    ``UNSTAMPED`` algorithm version, and verify never calls their differences tampering."""
    events = list(loaded.repository.event_store.get(UUID(DOCUMENT["batches"][name])))
    stamped = [
        e
        for e in events
        if isinstance(
            e, CJBatch.ComparisonsRequested | CJBatch.ContinuationDecided | CJBatch.Finalized
        )
    ]
    assert stamped, "every stored batch asked for at least one wave or was finalized"
    assert {e.algorithm_version for e in stamped} == {UNSTAMPED}
    assert all(d.classification == ALGORITHM_CHANGED for d in verify_batch(events))
