"""Replay verification: re-derive every decision, wave and finalization from the log.

A batch's log is folded event by event. Wherever the workflow acted — right after the
batching mode was set (the first wave) and right after each recorded outcome (a decision,
then a next wave or a finalization) — a copy of the batch as it stood is handed to the
same domain workflow again, and the events it raises are compared with the events that
were recorded there: the decision with its full context, raw decision, guard and reason;
the wave number, generation mode and every pair of each wave (pairing re-run); the
final status, scores, standard errors, ranks and reliability (scores re-fitted). Any
difference is a ``Divergence``. The fold then continues with the *recorded* events, so
one divergence is reported where it happened and does not cascade.

Each recorded consequence carries the version of the algorithm that produced it
(``domain.algorithms``). A difference in an event stamped with another version than the
current one — including ``UNSTAMPED`` events from before stamping — is classified
``algorithm_changed``, not ``divergence``: the algorithm was changed on purpose, so
a different answer is expected. Differences that follow such an event in the same step
(a wave after a decision that now comes out otherwise) are its consequences and are
classified the same way. Only ``divergence`` means the log disagrees with the code that
claims to have written it.

With another policy (``what_if``), the first decision point where the other policy
decides differently is reported per batch: it would have stopped earlier, later, or
with another outcome.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain import workflow
from domain.algorithms import (
    DECISION_ALGORITHM_VERSION,
    PAIRING_ALGORITHM_VERSION,
    SCORING_ALGORITHM_VERSION,
)
from domain.batch import CJBatch
from domain.continuation import DecisionKind
from domain.policy import BatchPolicy
from domain.values import GenerationMode

FLOAT_TOLERANCE = 1e-9
CONSEQUENCES = (CJBatch.ContinuationDecided, CJBatch.ComparisonsRequested, CJBatch.Finalized)
_IGNORED_FIELDS = {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_topic",
    "algorithm_version",  # compared by classification, not as a field
}
DIVERGENCE = "divergence"
ALGORITHM_CHANGED = "algorithm_changed"
CURRENT_ALGORITHM_VERSION: dict[type[Any], int] = {
    CJBatch.ComparisonsRequested: PAIRING_ALGORITHM_VERSION,
    CJBatch.ContinuationDecided: DECISION_ALGORITHM_VERSION,
    CJBatch.Finalized: SCORING_ALGORITHM_VERSION,
}
_TIMES = {"requested_at", "deadline_at"}  # taken from the clock, not derived


@dataclass(frozen=True)
class Divergence:
    batch_id: str
    version: int
    event: str
    field: str
    recorded: Any
    derived: Any
    classification: str = DIVERGENCE
    """``divergence`` (the log disagrees with the algorithm that wrote it: exit 1) or
    ``algorithm_changed`` (written by another algorithm version than today's)."""
    recorded_algorithm: int | None = None
    current_algorithm: int | None = None


@dataclass(frozen=True)
class WhatIf:
    batch_id: str
    change: str  # "stops earlier", "stops later", "another outcome"
    version: int
    wave: int
    outcomes: int
    recorded: str
    derived: str


def fold(events: Sequence[Any]) -> Iterable[tuple[int, CJBatch, list[Any]]]:
    """Yield ``(index, batch state, consequences)`` at every point where the workflow
    acted: after ``BatchingModeSet`` and after each ``ComparisonCompleted``; the
    consequences are the recorded events that the workflow raised there."""
    batch: Any = None
    for index, event in enumerate(events):
        batch = event.mutate(batch)
        if isinstance(event, CJBatch.BatchingModeSet | CJBatch.ComparisonCompleted):
            following: list[Any] = []
            for later in events[index + 1 :]:
                if not isinstance(later, CONSEQUENCES):
                    break
                following.append(later)
            yield index, batch, following


def _derive(
    batch: CJBatch, trigger: Any, recorded: list[Any], policy: BatchPolicy | None = None
) -> list[Any]:
    """The events the workflow raises on a copy of ``batch`` (under ``policy``)."""
    twin = copy.deepcopy(batch)
    if policy is not None:
        twin.policy = policy
    twin.collect_events()  # nothing pending: only what the workflow raises now
    now = _recorded_now(recorded, trigger)
    if isinstance(trigger, CJBatch.BatchingModeSet):
        workflow.request_first_wave(twin, now)
    else:
        workflow.continue_after_wave(twin, now)
    return list(twin.collect_events())


def _recorded_now(recorded: list[Any], trigger: Any) -> datetime:
    for event in recorded:
        if isinstance(event, CJBatch.ComparisonsRequested):
            return event.requested_at
    return trigger.timestamp  # type: ignore[no-any-return]


def verify_batch(events: Sequence[Any]) -> list[Divergence]:
    """Every difference between what was recorded and what the workflow derives,
    classified ``divergence`` or ``algorithm_changed``."""
    divergences: list[Divergence] = []
    batch_id = str(events[0].originator_id)
    for index, batch, recorded in fold(events):
        derived = _derive(batch, events[index], recorded)
        version = events[index].originator_version
        changed_before: tuple[int, int] | None = None  # stamps of an earlier changed event
        for position in range(max(len(recorded), len(derived))):
            mine = recorded[position] if position < len(recorded) else None
            theirs = derived[position] if position < len(derived) else None
            at = mine.originator_version if mine is not None else version + position + 1
            stamps = _stamps(mine) or changed_before
            if mine is None or theirs is None or type(mine) is not type(theirs):
                found = [
                    (_name(mine or theirs), "event", _name(mine), _name(theirs)),
                ]
            else:
                found = [(_name(mine), f, a, b) for f, a, b in _differences(mine, theirs)]
            for event_name, field, a, b in found:
                if stamps is None:
                    divergences.append(Divergence(batch_id, at, event_name, field, a, b))
                    continue
                changed_before = stamps
                divergences.append(
                    Divergence(batch_id, at, event_name, field, a, b, ALGORITHM_CHANGED, *stamps)
                )
    return divergences


def _stamps(recorded: Any) -> tuple[int, int] | None:
    """``(recorded, current)`` algorithm versions when ``recorded`` was made by another
    algorithm version than today's; ``None`` when they agree (or there is no event)."""
    current = CURRENT_ALGORITHM_VERSION.get(type(recorded))
    if current is None or recorded.algorithm_version == current:
        return None
    return recorded.algorithm_version, current


def _name(event: Any) -> str:
    return "(none)" if event is None else type(event).__name__


def _differences(recorded: Any, derived: Any) -> Iterable[tuple[str, Any, Any]]:
    for key, value in vars(recorded).items():
        if key in _IGNORED_FIELDS or key in _TIMES:
            continue
        yield from _compare(key, value, getattr(derived, key, None))


def _compare(path: str, a: Any, b: Any) -> Iterable[tuple[str, Any, Any]]:
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
        for f in dataclasses.fields(a):
            yield from _compare(f"{path}.{f.name}", getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, tuple | list) and isinstance(b, tuple | list):
        if len(a) != len(b):
            yield f"{path}.length", len(a), len(b)
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _compare(f"{path}[{i}]", x, y)
    elif isinstance(a, float) and isinstance(b, float):
        if not math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE):
            yield path, a, b
    elif a != b:
        yield path, _plain(a), _plain(b)


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def what_if(events: Sequence[Any], policy_overrides: dict[str, Any]) -> WhatIf | None:
    """Where (if anywhere) another policy would have decided differently."""
    batch_id = str(events[0].originator_id)
    for index, batch, recorded in fold(events):
        if not isinstance(events[index], CJBatch.ComparisonCompleted):
            continue
        policy = dataclasses.replace(batch.policy, **policy_overrides)
        derived = [
            e for e in _derive(batch, events[index], recorded, policy)
            if isinstance(e, CJBatch.ContinuationDecided)
        ]  # fmt: skip
        mine = next((e for e in recorded if isinstance(e, CJBatch.ContinuationDecided)), None)
        theirs = derived[0] if derived else None
        if mine is None and theirs is None:
            continue
        kind_recorded = mine.decision if mine is not None else DecisionKind.WAIT
        kind_derived = theirs.decision if theirs is not None else DecisionKind.WAIT
        if kind_recorded == kind_derived:
            continue
        outcomes = batch.outcomes
        return WhatIf(
            batch_id=batch_id,
            change=_change(kind_recorded, kind_derived),
            version=events[index].originator_version + 1,
            wave=len(batch.waves),
            outcomes=outcomes,
            recorded=kind_recorded.value,
            derived=kind_derived.value,
        )
    return None


def _change(recorded: DecisionKind, derived: DecisionKind) -> str:
    finals = (DecisionKind.FINALIZE_SCORING, DecisionKind.FINALIZE_FAILURE)
    if recorded in finals and derived in finals:
        return "another outcome"
    if derived in finals:
        return "stops earlier"
    if recorded in finals:
        return "stops later"
    return "another next step"


def policy_overrides(document: dict[str, Any]) -> dict[str, Any]:
    """Validate a what-if policy document: known fields of ``BatchPolicy`` only."""
    known = {f.name for f in dataclasses.fields(BatchPolicy)}
    unknown = sorted(set(document) - known)
    if unknown:
        raise ValueError(f"unknown policy field {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return dict(document)


def batch_ids(app: Any) -> list[UUID]:
    """Every batch in the log, in registration order."""
    from eventsourcing.utils import get_topic

    topic = get_topic(CJBatch.BatchRegistered)
    return [n.originator_id for n in app.iter_notifications([topic])]


__all__ = [
    "ALGORITHM_CHANGED",
    "DIVERGENCE",
    "Divergence",
    "GenerationMode",
    "WhatIf",
    "batch_ids",
    "policy_overrides",
    "verify_batch",
    "what_if",
]
