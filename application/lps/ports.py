"""The LLM provider port: what the LPS executor needs from a provider.

Two interfaces, because providers offer two ways of working:

* ``PerCallProvider`` answers now — one comparison (``compare``) or a bundle of them in a
  single call (``compare_bundle``, results keyed by custom id).
* ``BatchJobProvider`` accepts a job and answers later — ``schedule_job`` returns a job id,
  ``job_status`` reports progress, ``collect_results`` returns one result per custom id.

Errors cross the port as ``ProviderError`` (with a code and a retryable flag); a plain
``TimeoutError`` or ``ConnectionError`` from a client library is understood as well.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Protocol

from domain.lps import LPSErrorCode, OverrideItems


@dataclass(frozen=True)
class ProviderItem:
    """One comparison as sent to a provider. ``custom_id`` is the request (comparison) id."""

    custom_id: str
    essay_a: str
    essay_b: str
    model: str
    overrides: OverrideItems = ()
    essay_a_text: str = field(default="", repr=False)
    essay_b_text: str = field(default="", repr=False)
    instructions: str = field(default="", repr=False)
    rubric: str = field(default="", repr=False)


@dataclass(frozen=True)
class ProviderVerdict:
    """The judge's answer: which essay won, how sure it was, and what it cost."""

    winner_id: str
    confidence: int
    justification: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    raw_answer: str | None = field(default=None, repr=False)
    prompt_template_version: str | None = None
    #: the model the provider says answered (``None``: the one asked for)
    model: str | None = None


@dataclass(frozen=True)
class ProviderFailure:
    """Why one item (or a whole call) failed, and whether trying again could help.

    An answer that could not be understood keeps its ``raw_answer`` (and the tokens it
    cost): it is evidence, and it was paid for.
    """

    code: str
    message: str
    retryable: bool
    raw_answer: str | None = field(default=None, repr=False)
    prompt_template_version: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ItemResult:
    """The result for one item of a bundled call or batch job: a verdict or a failure."""

    custom_id: str
    verdict: ProviderVerdict | None = None
    failure: ProviderFailure | None = None

    def __post_init__(self) -> None:
        if (self.verdict is None) == (self.failure is None):
            raise ValueError("an item result holds a verdict or a failure, never both or neither")


class ProviderError(Exception):
    """A provider call failed. Subclasses fix the code and the retryable flag."""

    default_code = LPSErrorCode.PROVIDER_ERROR.value
    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        raw_answer: str | None = None,
        prompt_template_version: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ):
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.retryable = retryable if retryable is not None else self.default_retryable
        self.raw_answer = raw_answer
        self.prompt_template_version = prompt_template_version
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    def as_failure(self) -> ProviderFailure:
        return ProviderFailure(
            code=self.code,
            message=self.message,
            retryable=self.retryable,
            raw_answer=self.raw_answer,
            prompt_template_version=self.prompt_template_version,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )


class InvalidAnswerError(ProviderError):
    """The judge answered, but not with a verdict we can read: never guess a winner."""

    default_code = LPSErrorCode.INVALID_ANSWER.value
    default_retryable = False


class RateLimitedError(ProviderError):
    default_code = LPSErrorCode.RATE_LIMITED.value
    default_retryable = True


class ProviderTimeoutError(ProviderError):
    default_code = LPSErrorCode.TIMEOUT.value
    default_retryable = True


class ProviderConnectionError(ProviderError):
    default_code = LPSErrorCode.CONNECTION_ERROR.value
    default_retryable = True


class ProviderServerError(ProviderError):
    """The provider answered 5xx: its problem, worth another try."""

    default_code = LPSErrorCode.SERVER_ERROR.value
    default_retryable = True

    def __init__(self, message: str, *, status_code: int = 500, code: str | None = None):
        super().__init__(f"HTTP {status_code}: {message}", code=code)
        self.status_code = status_code


def classify_error(error: BaseException) -> ProviderFailure:
    """Map anything a provider raised to a failure with a code and a retryable flag."""
    if isinstance(error, ProviderError):
        return error.as_failure()
    if isinstance(error, TimeoutError):
        return ProviderFailure(LPSErrorCode.TIMEOUT.value, str(error) or "timed out", True)
    if isinstance(error, ConnectionError):
        return ProviderFailure(
            LPSErrorCode.CONNECTION_ERROR.value, str(error) or "connection failed", True
        )
    return ProviderFailure(
        LPSErrorCode.PROVIDER_ERROR.value, f"{type(error).__name__}: {error}", False
    )


class BatchJobStatus(Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class BatchJobRef:
    """Everything needed to pick a provider batch job up again after a restart.

    Store ``to_json()`` when the job is scheduled (see the executor's ``on_job_scheduled``
    hook); after a restart, ``BatchJobRef.from_json(text)`` and ``executor.resume_job``.
    The job's timeout keeps counting from ``submitted_at``.
    """

    job_id: str
    provider: str
    custom_ids: tuple[str, ...]
    submitted_at: datetime
    version: int = 1

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "job_id": self.job_id,
                "provider": self.provider,
                "custom_ids": list(self.custom_ids),
                "submitted_at": self.submitted_at.isoformat(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> BatchJobRef:
        data = json.loads(text)
        if data.get("version") != 1:
            raise ValueError(f"unsupported batch job ref version: {data.get('version')!r}")
        submitted_at = datetime.fromisoformat(data["submitted_at"])
        if submitted_at.tzinfo is None:
            raise ValueError("submitted_at must carry a timezone")
        return cls(
            job_id=str(data["job_id"]),
            provider=str(data["provider"]),
            custom_ids=tuple(str(custom_id) for custom_id in data["custom_ids"]),
            submitted_at=submitted_at,
        )


class JobStore(Protocol):
    """Where a worker keeps the provider batch jobs it scheduled, so that a restarted
    worker resumes polling a job instead of submitting (and paying for) it again.

    ``save`` happens right after a job is scheduled — before any request of it is
    acknowledged. ``open_jobs`` returns the unfinished jobs holding any of the given
    custom ids that are not answered yet; ``answered`` records ids whose outcomes were
    produced, and a job whose ids are all answered is finished.
    """

    def save(self, ref: BatchJobRef) -> None: ...

    def open_jobs(self, provider: str, custom_ids: Sequence[str]) -> list[BatchJobRef]: ...

    def answered(self, job_id: str, custom_ids: Sequence[str]) -> None: ...


class PerCallProvider(Protocol):
    @property
    def name(self) -> str: ...

    def compare(self, item: ProviderItem) -> ProviderVerdict:
        """Judge one pair; raise ``ProviderError`` on failure."""
        ...

    def compare_bundle(self, items: Sequence[ProviderItem]) -> Sequence[ItemResult]:
        """Judge several pairs in one call. Raise only if the call as a whole failed;
        an item that failed on its own is reported as an ``ItemResult`` failure."""
        ...


class BatchJobProvider(Protocol):
    @property
    def name(self) -> str: ...

    def schedule_job(self, items: Sequence[ProviderItem]) -> str:
        """Submit a batch job and return the provider's job id."""
        ...

    def job_status(self, job_id: str) -> BatchJobStatus: ...

    def collect_results(
        self, job_id: str, items: Sequence[ProviderItem] = ()
    ) -> Sequence[ItemResult]:
        """Results of a completed job, one per custom id (some may be missing).

        ``items`` are the job's items as scheduled (rebuilt from the requests after a
        restart), for a provider whose answers name "A" / "B" rather than essay ids."""
        ...


class LLMProvider(PerCallProvider, BatchJobProvider, Protocol):
    """A provider usable in every queue processing mode."""
