"""Every value type that travels in an event comes back from the transcoder unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import JSONTranscoder
from hypothesis import given
from hypothesis import strategies as st

from application.batches import VALUE_DATACLASSES, VALUE_ENUMS
from application.serialization import register_value_types
from domain.batch import ComparisonRecord, WaveRecord
from domain.continuation import ContinuationContext, DecisionKind, ScorePoint
from domain.policy import BatchPolicy
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    Essay,
    EssayScore,
    FailureDetails,
    FailureSource,
    GenerationMode,
    Pair,
    SuccessDetails,
)


def transcoder() -> JSONTranscoder:
    t = JSONTranscoder()
    register_value_types(t, VALUE_DATACLASSES, VALUE_ENUMS)
    return t


SUCCESS = ComparisonOutcome(
    "c1", success=SuccessDetails("a", 5, "clearer argument", "openai", "gpt", 10, 3, 0.25, 812.5)
)
FAILURE = ComparisonOutcome(
    "c2", failure=FailureDetails("DEADLINE_EXCEEDED", "late", False, FailureSource.DEADLINE)
)
SAMPLES: list[Any] = [
    Essay("e1", "sha256:ab", is_anchor=True, known_grade="B"),
    Essay("e2", "sha256:cd"),
    Pair("c1", "e1", "e2"),
    BatchPolicy(max_pairs_cap=7, provider_batch_allowed_providers=("simulated",)),
    SUCCESS,
    FAILURE,
    ContinuationContext(
        3,
        24,
        120,
        36,
        36,
        30,
        6,
        0,
        240,
        0.1,
        0,
        False,
        None,
        (ScorePoint("e1", 0.5), ScorePoint("e2", -0.5)),
    ),
    ContinuationContext(1, 3, 120, 3, 3, 3, 0, 0, 0, 1.0, 2, True, 0.0125),
    EssayScore("e1", 1.25, 0.3, 1, 12),
    ComparisonRecord(
        Pair("c1", "e1", "e2"),
        2,
        GenerationMode.RESAMPLING,
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 4, tzinfo=UTC),
        SUCCESS,
    ),
    WaveRecord(1, GenerationMode.COVERAGE, ("c1", "c2")),
    BatchingMode.PROVIDER_BATCH_API,
    DecisionKind.FINALIZE_FAILURE,
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_value_round_trips_exactly(value: Any) -> None:
    t = transcoder()
    decoded = t.decode(t.encode({"v": value}))["v"]
    assert decoded == value
    assert type(decoded) is type(value)


@given(
    score=st.floats(allow_nan=False, allow_infinity=False),
    se=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    rank=st.integers(min_value=1, max_value=10_000),
    essay_id=st.text(min_size=1, max_size=40),
)
def test_scores_round_trip_bit_for_bit(score: float, se: float, rank: int, essay_id: str) -> None:
    t = transcoder()
    value = EssayScore(essay_id, score, se, rank, rank)
    assert t.decode(t.encode([value]))[0] == value


def test_an_outcome_is_a_success_or_a_failure_never_both() -> None:
    with pytest.raises(ValueError):
        ComparisonOutcome("c", success=SUCCESS.success, failure=FAILURE.failure)
    with pytest.raises(ValueError):
        ComparisonOutcome("c")
