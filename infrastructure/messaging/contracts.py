"""Versioned messages between CJ and LPS (pydantic v2): requests out, outcomes back.

These models are the edge: the broker (and the embedded transport) carry them as JSON,
and each side converts to its own plain types once — ``ComparisonRequestV1.to_queued``
on the LPS side, ``ComparisonOutcomeV1.to_domain`` on the CJ side. This module is the only
one that knows both CJ's and LPS's types; the two vocabularies meet here (e.g.
``queue_mode_for``). A change of shape that an old reader could misread means a new
``schema_version``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from application.ports import ComparisonRequest
from domain.lps import (
    JUSTIFICATION_MAX_CHARS,
    OverrideValue,
    QueuedRequest,
    QueueProcessingMode,
    RequestOutcome,
    normalise_overrides,
    truncate_justification,
)
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    FailureDetails,
    FailureSource,
    SuccessDetails,
)
from infrastructure.edge_types import (
    Count,
    FiniteNonNegative,
    Identifier,
    Message,
    Name,
    OptionalName,
    Text,
)
from infrastructure.messaging.validation import describe_validation_error

_QUEUE_MODE_BY_BATCHING_MODE = {
    BatchingMode.PER_REQUEST: QueueProcessingMode.PER_REQUEST,
    BatchingMode.SERIAL_BUNDLE: QueueProcessingMode.SERIAL_BUNDLE,
    BatchingMode.PROVIDER_BATCH_API: QueueProcessingMode.BATCH_API,
}


def queue_mode_for(batching_mode: BatchingMode) -> QueueProcessingMode:
    """The LPS queue processing mode that carries out a CJ batching mode."""
    return _QUEUE_MODE_BY_BATCHING_MODE[batching_mode]


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ComparisonRequestV1(_Contract):
    """CJ → LPS: execute one comparison."""

    schema_version: Literal[1] = 1
    comparison_id: Identifier
    batch_id: Identifier
    wave_number: Count
    essay_a: Identifier
    essay_b: Identifier
    provider: Name
    model: Name
    batching_mode: BatchingMode | None = None
    # deliberately any int: LPS ignores a hint outside 1..64 rather than reject the request
    preferred_bundle_size: int | None = None
    requested_at: AwareDatetime
    deadline_at: AwareDatetime
    correlation_id: Identifier
    overrides: dict[Name, OverrideValue] | None = None

    @field_validator("overrides")
    @classmethod
    def _finite_overrides(
        cls, value: dict[str, OverrideValue] | None
    ) -> dict[str, OverrideValue] | None:
        for key, item in (value or {}).items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"override {key!r} must be a finite number")
        return value

    @model_validator(mode="after")
    def _essays_differ(self) -> Self:
        if self.essay_a == self.essay_b:
            raise ValueError("essay_a and essay_b must differ")
        return self

    @classmethod
    def from_request(
        cls,
        request: ComparisonRequest,
        overrides: Mapping[str, OverrideValue] | None = None,
    ) -> ComparisonRequestV1:
        return cls.model_validate(cls._fields_of(request, overrides))

    @staticmethod
    def _fields_of(
        request: ComparisonRequest, overrides: Mapping[str, OverrideValue] | None
    ) -> dict[str, Any]:
        return {
            "comparison_id": request.comparison_id,
            "batch_id": request.batch_id,
            "wave_number": request.wave_number,
            "essay_a": request.essay_a,
            "essay_b": request.essay_b,
            "provider": request.provider,
            "model": request.model,
            "batching_mode": request.batching_mode,
            "preferred_bundle_size": request.preferred_bundle_size,
            "requested_at": request.requested_at,
            "deadline_at": request.deadline_at,
            "correlation_id": request.correlation_id,
            "overrides": dict(overrides) if overrides is not None else None,
        }

    def texts(self) -> dict[str, str]:
        """What the judge reads. Version 1 carries no texts."""
        return {}

    def to_queued(self, now: datetime, attempt_count: int = 0) -> QueuedRequest:
        """Enqueue at ``now``, living until ``deadline_at`` (zero time to live if already past).

        The one way a ``QueuedRequest`` is built from CJ's request.
        """
        return QueuedRequest(
            request_id=self.comparison_id,
            batch_id=self.batch_id,
            essay_a=self.essay_a,
            essay_b=self.essay_b,
            provider=self.provider,
            model=self.model,
            enqueued_at=now,
            time_to_live=max(timedelta(0), self.deadline_at - now),
            correlation_id=self.correlation_id,
            overrides=normalise_overrides(self.overrides),
            mode_hint=queue_mode_for(self.batching_mode) if self.batching_mode else None,
            preferred_bundle_size=self.preferred_bundle_size,
            attempt_count=attempt_count,
            **self.texts(),
        )


class ComparisonRequestV2(ComparisonRequestV1):
    """CJ → LPS, version 2: the request carries what the judge reads — both essay texts,
    the assignment's instructions and its rubric — so LPS needs no database. The essay
    ids are opaque refs, never a school's own ids."""

    schema_version: Literal[2] = 2  # type: ignore[assignment]
    essay_a_text: str
    essay_b_text: str
    instructions: str = ""
    rubric: str = ""

    @classmethod
    def from_request(
        cls,
        request: ComparisonRequest,
        overrides: Mapping[str, OverrideValue] | None = None,
    ) -> ComparisonRequestV2:
        fields = cls._fields_of(request, overrides)  # validated once, as version 2
        fields["essay_a_text"] = request.essay_a_text
        fields["essay_b_text"] = request.essay_b_text
        fields["instructions"] = request.instructions
        fields["rubric"] = request.rubric
        return cls.model_validate(fields)

    def texts(self) -> dict[str, str]:
        return {
            "essay_a_text": self.essay_a_text,
            "essay_b_text": self.essay_b_text,
            "instructions": self.instructions,
            "rubric": self.rubric,
        }


class OutcomeErrorV1(_Contract):
    code: Name
    message: Message
    retryable: bool


class TokenUsageV1(_Contract):
    prompt_tokens: Count = 0
    completion_tokens: Count = 0


class ComparisonOutcomeV1(_Contract):
    """LPS → CJ: the one outcome of one comparison request.

    A success names the winner and its confidence; a failure carries an error. Over-long
    justifications are truncated to ``JUSTIFICATION_MAX_CHARS`` (marked with an ellipsis),
    never rejected — losing the verdict over its prose would be the worse failure.
    """

    schema_version: Literal[1] = 1
    request_id: Identifier
    batch_id: Identifier
    comparison_id: Identifier
    correlation_id: Identifier
    status: Literal["success", "failure"]
    winner_essay_id: Identifier | None = None
    error: OutcomeErrorV1 | None = None
    confidence: int | None = Field(default=None, ge=1, le=5)
    justification: Text = ""
    provider: OptionalName
    model: OptionalName
    usage: TokenUsageV1 = TokenUsageV1()
    cost_usd: FiniteNonNegative = 0.0
    latency_ms: FiniteNonNegative = 0.0
    queue_processing_mode: QueueProcessingMode

    @field_validator("justification")
    @classmethod
    def _truncate(cls, value: str) -> str:
        return truncate_justification(value, JUSTIFICATION_MAX_CHARS)

    @model_validator(mode="after")
    def _status_matches_payload(self) -> Self:
        if self.status == "success":
            if self.winner_essay_id is None or self.confidence is None:
                raise ValueError("a success needs winner_essay_id and confidence")
            if self.error is not None:
                raise ValueError("a success carries no error")
        else:
            if self.error is None:
                raise ValueError("a failure needs an error")
            if self.winner_essay_id is not None:
                raise ValueError("a failure names no winner")
        return self

    @classmethod
    def from_outcome(cls, outcome: RequestOutcome) -> ComparisonOutcomeV1:
        return cls.model_validate(cls._fields_of(outcome))

    @staticmethod
    def _fields_of(outcome: RequestOutcome) -> dict[str, Any]:
        common = {
            "request_id": outcome.request_id,
            "batch_id": outcome.batch_id,
            "comparison_id": outcome.comparison_id,
            "correlation_id": outcome.correlation_id,
            "provider": outcome.provider,
            "model": outcome.model,
            "queue_processing_mode": outcome.queue_mode,
        }
        if outcome.success is not None:
            s = outcome.success
            return {
                **common,
                "status": "success",
                "winner_essay_id": s.winner_id,
                "confidence": s.confidence,
                "justification": s.justification,
                "usage": {
                    "prompt_tokens": s.prompt_tokens,
                    "completion_tokens": s.completion_tokens,
                },
                "cost_usd": s.cost_usd,
                "latency_ms": s.latency_ms,
            }
        assert outcome.failure is not None
        f = outcome.failure
        return {
            **common,
            "status": "failure",
            "error": {"code": f.error_code, "message": f.message, "retryable": f.retryable},
        }

    @property
    def queue_mode(self) -> QueueProcessingMode:
        return self.queue_processing_mode

    @property
    def raw(self) -> str | None:
        """The provider's raw answer (version 1 carries none)."""
        return None

    def to_domain(self) -> ComparisonOutcome:
        """CJ's value type; failures are attributed to LPS."""
        if self.status == "success":
            assert self.winner_essay_id is not None and self.confidence is not None
            return ComparisonOutcome(
                comparison_id=self.comparison_id,
                success=SuccessDetails(
                    winner_id=self.winner_essay_id,
                    confidence=self.confidence,
                    justification=self.justification,
                    provider=self.provider,
                    model=self.model,
                    prompt_tokens=self.usage.prompt_tokens,
                    completion_tokens=self.usage.completion_tokens,
                    cost_usd=self.cost_usd,
                    latency_ms=self.latency_ms,
                ),
            )
        assert self.error is not None
        return ComparisonOutcome(
            comparison_id=self.comparison_id,
            failure=FailureDetails(
                error_code=self.error.code,
                message=self.error.message,
                retryable=self.error.retryable,
                source=FailureSource.LPS,
                prompt_tokens=self.usage.prompt_tokens,
                completion_tokens=self.usage.completion_tokens,
                cost_usd=self.cost_usd,
            ),
        )


class ComparisonOutcomeV2(ComparisonOutcomeV1):
    """LPS → CJ, version 2: adds the provider's ``raw_answer`` (kept for an answer that
    could not be understood too) and the ``prompt_template_version`` the judge was asked
    with. A failure may carry the tokens its unreadable answer cost in ``usage``."""

    schema_version: Literal[2] = 2  # type: ignore[assignment]
    raw_answer: str | None = None
    prompt_template_version: str | None = None

    @classmethod
    def from_outcome(cls, outcome: RequestOutcome) -> ComparisonOutcomeV2:
        fields = cls._fields_of(outcome)  # validated once, as version 2
        detail = outcome.success if outcome.success is not None else outcome.failure
        assert detail is not None
        if outcome.failure is not None:
            fields["usage"] = {
                "prompt_tokens": outcome.failure.prompt_tokens,
                "completion_tokens": outcome.failure.completion_tokens,
            }
        fields["raw_answer"] = detail.raw_answer
        fields["prompt_template_version"] = detail.prompt_template_version
        return cls.model_validate(fields)

    @property
    def raw(self) -> str | None:
        return self.raw_answer


def _schema_version(value: Any) -> str:
    """The version tag of a message; a message without one is read as version 1."""
    if isinstance(value, dict):
        return str(value.get("schema_version", 1))
    return str(getattr(value, "schema_version", 1))


RequestMessage = Annotated[
    Annotated[ComparisonRequestV1, Tag("1")] | Annotated[ComparisonRequestV2, Tag("2")],
    Discriminator(_schema_version),
]
OutcomeMessage = Annotated[
    Annotated[ComparisonOutcomeV1, Tag("1")] | Annotated[ComparisonOutcomeV2, Tag("2")],
    Discriminator(_schema_version),
]
_REQUESTS: TypeAdapter[ComparisonRequestV1 | ComparisonRequestV2] = TypeAdapter(RequestMessage)
_OUTCOMES: TypeAdapter[ComparisonOutcomeV1 | ComparisonOutcomeV2] = TypeAdapter(OutcomeMessage)


def parse_request(body: bytes | str) -> ComparisonRequestV1:
    """A request message of any supported version (raises ``ValidationError``)."""
    return _REQUESTS.validate_json(body)


def parse_outcome_message(body: bytes | str) -> ComparisonOutcomeV1:
    """An outcome message of any supported version (raises ``ValidationError``)."""
    return _OUTCOMES.validate_json(body)


def raw_answer_of(message: ComparisonOutcomeV1) -> str | None:
    """The provider's raw answer a version-2 outcome carries (``None`` for version 1); CJ
    keeps it in the content store, never in an event."""
    return message.raw_answer if isinstance(message, ComparisonOutcomeV2) else None


def parse_request_data(data: Any) -> ComparisonRequestV1:
    """A request already decoded from JSON (an item of a bundle); raises ``ValidationError``."""
    return _REQUESTS.validate_python(data)


def parse_outcome_data(data: Any) -> ComparisonOutcomeV1:
    """An outcome already decoded from JSON (an item of a bundle); raises ``ValidationError``."""
    return _OUTCOMES.validate_python(data)


# ---------------------------------------------------------------------- bundles
#
# A bundle carries many requests (or many outcomes) in one AMQP message:
#
#     {"bundle_version": 1, "kind": "comparison_requests", "items": [{...}, {...}]}
#
# Each item is a complete single message of a version above (V1 or V2), validated on its
# own: one bad item is dead-lettered alone with its reason and never costs its neighbours.
# A reader tells a bundle from a single message by the ``bundle_version`` key, which no
# single message has (they forbid extra keys), so single messages keep working unchanged.

BUNDLE_VERSION_KEY = "bundle_version"
REQUEST_BUNDLE = "comparison_requests"
OUTCOME_BUNDLE = "comparison_outcomes"
BUNDLE_MAX_ITEMS = 1000
REQUEST_BUNDLE_TYPE = "ComparisonRequestBundleV1"
OUTCOME_BUNDLE_TYPE = "ComparisonOutcomeBundleV1"


class BundleV1(_Contract):
    """The envelope of a bundle; its items are validated one by one afterwards."""

    bundle_version: Literal[1]
    kind: Literal["comparison_requests", "comparison_outcomes"]
    items: list[Any] = Field(min_length=1, max_length=BUNDLE_MAX_ITEMS)


class BundleRefused(ValueError):
    """The envelope itself is unusable (the whole message is dead-lettered)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_BUNDLE_MARK = b'"' + BUNDLE_VERSION_KEY.encode() + b'"'


def bundle_items(body: bytes, kind: str) -> list[Any] | None:
    """The decoded items if ``body`` is a bundle of ``kind``; ``None`` for a single message.

    Raises ``BundleRefused`` for a bundle whose envelope is wrong (unknown version, other
    kind, no items, too many). A body that is not JSON is left to the single-message
    parser, which says so.
    """
    if _BUNDLE_MARK not in body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or BUNDLE_VERSION_KEY not in data:
        return None
    if data.get(BUNDLE_VERSION_KEY) != 1:
        raise BundleRefused(
            "unsupported_schema_version", "this consumer reads bundle_version 1 only"
        )
    try:
        bundle = BundleV1.model_validate(data)
    except ValidationError as error:
        raise BundleRefused("schema_violation", describe_validation_error(error)) from error
    if bundle.kind != kind:
        raise BundleRefused(
            "schema_violation", f"a bundle of {bundle.kind} on the queue for {kind}"
        )
    return bundle.items


def bundle_body(kind: str, messages: Sequence[_Contract]) -> bytes:
    """One bundle of ``messages`` (each serialised exactly as it would travel alone)."""
    head = b'{"bundle_version":1,"kind":"' + kind.encode() + b'","items":['
    return head + b",".join(m.model_dump_json().encode() for m in messages) + b"]}"
