"""What LPS answers for each queued request: exactly one ``RequestOutcome``.

An outcome is a success (the judge's ``Verdict``) or a failure (a ``RequestFailure``: an
error code, a message and whether asking again could help). These are LPS's own types:
CJ's value types are reached only through the message contract
(``infrastructure.messaging.contracts``), never imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from domain.lps.requests import QueuedRequest, QueueProcessingMode

JUSTIFICATION_MAX_CHARS = 500
_ELLIPSIS = "…"


class LPSErrorCode(Enum):
    """Error codes LPS itself assigns. Providers may report codes of their own as well."""

    EXPIRED = "EXPIRED"
    RATE_LIMITED = "RATE_LIMITED"
    TIMEOUT = "TIMEOUT"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    SERVER_ERROR = "SERVER_ERROR"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    INVALID_RESPONSE = "INVALID_RESPONSE"
    INVALID_ANSWER = "invalid_answer"
    RESULT_MISSING = "RESULT_MISSING"
    JOB_SCHEDULE_FAILED = "JOB_SCHEDULE_FAILED"
    JOB_STATUS_FAILED = "JOB_STATUS_FAILED"
    JOB_COLLECT_FAILED = "JOB_COLLECT_FAILED"
    JOB_FAILED = "JOB_FAILED"
    JOB_CANCELLED = "JOB_CANCELLED"
    JOB_TIMEOUT = "JOB_TIMEOUT"
    NOT_IN_JOB = "NOT_IN_JOB"
    INTERNAL_ERROR = "INTERNAL_ERROR"


def truncate_justification(text: str, limit: int = JUSTIFICATION_MAX_CHARS) -> str:
    """Shorten ``text`` to at most ``limit`` characters, marking the cut with an ellipsis.

    A long justification is still worth keeping for an auditor, so it is cut, not dropped.
    """
    if len(text) <= limit:
        return text
    return text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


@dataclass(frozen=True)
class Verdict:
    """What the judge decided for one request, and what deciding it cost."""

    winner_id: str
    confidence: int
    justification: str
    provider: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    raw_answer: str | None = field(default=None, repr=False)
    prompt_template_version: str | None = None


@dataclass(frozen=True)
class RequestFailure:
    """Why LPS could not answer a request, and whether asking again could help.

    ``raw_answer`` keeps what the judge said when it could not be understood
    (``invalid_answer``), so an auditor can see it; it is never turned into a verdict.
    """

    error_code: str
    message: str
    retryable: bool
    raw_answer: str | None = field(default=None, repr=False)
    prompt_template_version: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class RequestOutcome:
    """The single answer LPS gives for one queued request. Exactly one of
    ``success`` / ``failure`` is set."""

    request_id: str
    batch_id: str
    correlation_id: str
    queue_mode: QueueProcessingMode
    provider: str
    model: str
    success: Verdict | None = None
    failure: RequestFailure | None = None

    def __post_init__(self) -> None:
        if (self.success is None) == (self.failure is None):
            raise ValueError("an outcome is either a success or a failure, never both or neither")

    @property
    def comparison_id(self) -> str:
        return self.request_id

    @property
    def succeeded(self) -> bool:
        return self.success is not None

    @property
    def result(self) -> str:
        """``success``, ``expired`` or ``failure``: the label metrics and stats count by."""
        if self.failure is None:
            return "success"
        if self.failure.error_code == LPSErrorCode.EXPIRED.value:
            return "expired"
        return "failure"

    @classmethod
    def succeeded_with(
        cls,
        request: QueuedRequest,
        mode: QueueProcessingMode,
        provider: str,
        details: Verdict,
    ) -> RequestOutcome:
        if details.winner_id not in (request.essay_a, request.essay_b):
            raise ValueError("the winner must be one of the two compared essays")
        return cls(
            request_id=request.request_id,
            batch_id=request.batch_id,
            correlation_id=request.correlation_id,
            queue_mode=mode,
            provider=provider,
            model=details.model,
            success=details,
        )

    @classmethod
    def failed_with(
        cls,
        request: QueuedRequest,
        mode: QueueProcessingMode,
        provider: str,
        code: str | LPSErrorCode,
        message: str,
        retryable: bool,
        *,
        raw_answer: str | None = None,
        prompt_template_version: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> RequestOutcome:
        return cls(
            request_id=request.request_id,
            batch_id=request.batch_id,
            correlation_id=request.correlation_id,
            queue_mode=mode,
            provider=provider,
            model=request.model,
            failure=RequestFailure(
                error_code=code.value if isinstance(code, LPSErrorCode) else code,
                message=message,
                retryable=retryable,
                raw_answer=raw_answer,
                prompt_template_version=prompt_template_version,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            ),
        )

    @classmethod
    def expired(
        cls, request: QueuedRequest, mode: QueueProcessingMode, provider: str, now: datetime
    ) -> RequestOutcome:
        """An expired request is answered, never dropped: CJ must not wait for it."""
        late = now - request.expires_at
        return cls.failed_with(
            request,
            mode,
            provider,
            LPSErrorCode.EXPIRED,
            f"request expired at {request.expires_at.isoformat()} "
            f"({late.total_seconds():.0f}s before it could be executed)",
            retryable=False,
        )
