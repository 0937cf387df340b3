"""Value types of the CJ batch: small, immutable, typed.

Every value that travels inside an event is a frozen dataclass or a plain ``Enum`` so that
it round-trips through the event store unchanged (the application registers one
transcoding per type). Enums are deliberately *not* ``str`` subclasses: JSON would encode
those natively and they would come back as bare strings.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import Enum


class BatchingMode(Enum):
    """How CJ asks LPS to execute a wave."""

    PER_REQUEST = "per_request"
    SERIAL_BUNDLE = "serial_bundle"
    PROVIDER_BATCH_API = "provider_batch_api"


class GenerationMode(Enum):
    COVERAGE = "coverage"
    RESAMPLING = "resampling"


class FinalStatus(Enum):
    SCORED = "scored"
    FAILED = "failed"
    INSUFFICIENT_ESSAYS = "insufficient_essays"


class FailureSource(Enum):
    LPS = "lps"
    DEADLINE = "deadline"
    DISPATCHER = "dispatcher"  # e.g. an essay erased before its request left


def essay_id_problem(essay_id: str) -> str | None:
    """Why ``essay_id`` cannot name an essay (blank, or holding control characters), or
    ``None`` when it can. Every edge that accepts essay ids asks this."""
    if not essay_id.strip():
        return f"essay id {essay_id!r} is blank"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in essay_id):
        return f"essay id {essay_id!r} contains control characters"
    return None


@dataclass(frozen=True)
class Essay:
    """An essay as the log knows it: identity and a content hash, never the text."""

    essay_id: str
    content_hash: str
    is_anchor: bool = False
    known_grade: str | None = None


@dataclass(frozen=True)
class Pair:
    """One requested comparison. Orientation matters: A is shown first."""

    comparison_id: str
    essay_a: str
    essay_b: str

    def involves(self, essay_id: str) -> bool:
        return essay_id in (self.essay_a, self.essay_b)

    @property
    def key(self) -> tuple[str, str]:
        """The unordered pair, as a sorted tuple."""
        a, b = sorted((self.essay_a, self.essay_b))
        return (a, b)


@dataclass(frozen=True)
class SuccessDetails:
    winner_id: str
    confidence: int
    justification: str
    provider: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0


@dataclass(frozen=True)
class FailureDetails:
    error_code: str
    message: str
    retryable: bool
    source: FailureSource = FailureSource.LPS
    # what an answer that could not be used still cost (e.g. ``invalid_answer``)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class ComparisonOutcome:
    """Exactly one of ``success`` / ``failure`` is set."""

    comparison_id: str
    success: SuccessDetails | None = None
    failure: FailureDetails | None = None

    def __post_init__(self) -> None:
        if (self.success is None) == (self.failure is None):
            raise ValueError("an outcome is either a success or a failure, never both or neither")

    @property
    def succeeded(self) -> bool:
        return self.success is not None


@dataclass(frozen=True)
class EssayScore:
    essay_id: str
    score: float
    se: float
    rank: int
    comparisons: int


@dataclass(frozen=True)
class ScoringResult:
    scores: tuple[EssayScore, ...]
    reliability: float | None

    def score_map(self) -> dict[str, float]:
        return {s.essay_id: s.score for s in self.scores}


@dataclass(frozen=True)
class BatchingModeResolution:
    mode: BatchingMode
    source: str
    preferred_bundle_size: int
