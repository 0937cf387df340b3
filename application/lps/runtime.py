"""What every execution strategy shares: the provider, the retry rule, the clock, the
observer, and the one place that turns provider results into outcomes."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import structlog

from application.lps.observer import ExecutorStats, LPSObserver
from application.lps.ports import (
    BatchJobRef,
    ItemResult,
    LLMProvider,
    ProviderFailure,
    ProviderItem,
    ProviderVerdict,
    classify_error,
)
from domain.backoff import Backoff
from domain.lps import (
    LPSErrorCode,
    QueuedRequest,
    QueueProcessingMode,
    RequestOutcome,
    Verdict,
    truncate_justification,
)

T = TypeVar("T")

log = structlog.get_logger("cjledger.lps")

#: port methods that carry work; ``job_status`` polls are counted apart
WORK_CALLS = frozenset({"compare", "compare_bundle", "schedule_job", "collect_results"})


@dataclass
class Execution:
    """What a strategy produced for one bundle."""

    outcomes: list[RequestOutcome]
    job_ref: BatchJobRef | None = None


class ExecutionStrategy(Protocol):
    mode: QueueProcessingMode

    def execute(self, bundle: tuple[QueuedRequest, ...]) -> Execution: ...


def log_fields(mode: QueueProcessingMode, requests: Iterable[QueuedRequest]) -> dict[str, Any]:
    """The identifiers every LPS log event carries."""
    requests = list(requests)
    return {
        "queue_processing_mode": mode.value,
        "batch_ids": sorted({r.batch_id for r in requests}),
        "comparison_ids": [r.request_id for r in requests],
        "correlation_ids": sorted({r.correlation_id for r in requests}),
    }


def provider_item(request: QueuedRequest) -> ProviderItem:
    return ProviderItem(
        custom_id=request.request_id,
        essay_a=request.essay_a,
        essay_b=request.essay_b,
        model=request.model,
        overrides=request.overrides,
        essay_a_text=request.essay_a_text,
        essay_b_text=request.essay_b_text,
        instructions=request.instructions,
        rubric=request.rubric,
    )


@dataclass
class Runtime:
    provider: LLMProvider
    max_attempts: int
    backoff: Backoff
    rng: random.Random
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]
    observer: LPSObserver
    stats: ExecutorStats = field(default_factory=ExecutorStats)

    def call(self, mode: QueueProcessingMode, call: str, fn: Callable[..., T], *args: Any) -> T:
        """Call the provider, counting the call whether or not it succeeds."""
        self.stats.calls_by_name[call] += 1
        if call in WORK_CALLS:
            self.stats.provider_calls += 1
        else:
            self.stats.job_polls += 1
        self.observer.provider_called(mode, call)
        return fn(*args)

    def call_with_retries(
        self,
        mode: QueueProcessingMode,
        call: str,
        fn: Callable[..., T],
        *args: Any,
        fields: dict[str, Any],
    ) -> T | ProviderFailure:
        """Call until it works, the error is not retryable, or ``max_attempts`` are spent.

        Returns the call's result, or the last failure.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.call(mode, call, fn, *args)
            except Exception as error:
                failure = classify_error(error)
                if not failure.retryable or attempt >= self.max_attempts:
                    return failure
                self.wait_before_retry(mode, attempt, [failure.code], call=call, **fields)

    def wait_before_retry(
        self,
        mode: QueueProcessingMode,
        retry_number: int,
        error_codes: Sequence[str],
        **fields: Any,
    ) -> None:
        delay = self.backoff.delay(retry_number, self.rng.random())
        self.stats.retries += len(error_codes)
        for code in error_codes:
            self.observer.retry_scheduled(mode, code)
        log.info(
            "lps.retry_scheduled",
            retry_number=retry_number,
            delay_seconds=round(delay, 3),
            error_codes=sorted(set(error_codes)),
            **fields,
        )
        self.sleep(delay)

    def outcome(
        self, request: QueuedRequest, mode: QueueProcessingMode, result: ItemResult
    ) -> RequestOutcome:
        """Turn one provider result into the request's outcome, checking the verdict."""
        if result.verdict is None:
            assert result.failure is not None
            return self.failed(request, mode, result.failure)
        problem = _verdict_problem(request, result.verdict)
        if problem is not None:
            return RequestOutcome.failed_with(
                request,
                mode,
                self.provider.name,
                LPSErrorCode.INVALID_RESPONSE,
                problem,
                retryable=False,
                raw_answer=result.verdict.raw_answer,
                prompt_template_version=result.verdict.prompt_template_version,
                prompt_tokens=result.verdict.prompt_tokens,
                completion_tokens=result.verdict.completion_tokens,
            )
        verdict = result.verdict
        return RequestOutcome.succeeded_with(
            request,
            mode,
            self.provider.name,
            Verdict(
                winner_id=verdict.winner_id,
                confidence=verdict.confidence,
                justification=truncate_justification(verdict.justification),
                provider=self.provider.name,
                model=verdict.model or request.model,
                prompt_tokens=verdict.prompt_tokens,
                completion_tokens=verdict.completion_tokens,
                cost_usd=verdict.cost_usd,
                latency_ms=verdict.latency_ms,
                raw_answer=verdict.raw_answer,
                prompt_template_version=verdict.prompt_template_version,
            ),
        )

    def failed(
        self,
        request: QueuedRequest,
        mode: QueueProcessingMode,
        failure: ProviderFailure,
        code: LPSErrorCode | None = None,
    ) -> RequestOutcome:
        """A failure outcome; ``code`` replaces the provider's code, keeping it in the message."""
        keeps_code = code is None or code.value == failure.code
        message = failure.message if keeps_code else f"{failure.code}: {failure.message}"
        return RequestOutcome.failed_with(
            request,
            mode,
            self.provider.name,
            code if code is not None else failure.code,
            message,
            failure.retryable,
            raw_answer=failure.raw_answer,
            prompt_template_version=failure.prompt_template_version,
            prompt_tokens=failure.prompt_tokens,
            completion_tokens=failure.completion_tokens,
        )

    def map_results(
        self,
        mode: QueueProcessingMode,
        requests: Sequence[QueuedRequest],
        results: Iterable[ItemResult],
    ) -> dict[str, ItemResult]:
        """Key results by custom id: unknown ids are ignored, a missing id becomes a
        ``RESULT_MISSING`` failure, and of two results for one id the first counts."""
        wanted = {r.request_id for r in requests}
        by_id: dict[str, ItemResult] = {}
        for result in results:
            if result.custom_id not in wanted:
                log.warning(
                    "lps.result_unknown_id",
                    custom_id=result.custom_id,
                    **log_fields(mode, requests),
                )
            elif result.custom_id in by_id:
                log.warning(
                    "lps.result_duplicate_id",
                    custom_id=result.custom_id,
                    **log_fields(mode, requests),
                )
            else:
                by_id[result.custom_id] = result
        missing = [r for r in requests if r.request_id not in by_id]
        if missing:
            log.warning("lps.result_missing", **log_fields(mode, missing))
        for request in missing:
            by_id[request.request_id] = ItemResult(
                custom_id=request.request_id,
                failure=ProviderFailure(
                    LPSErrorCode.RESULT_MISSING.value,
                    "the provider returned no result for this item",
                    retryable=True,
                ),
            )
        return by_id


def _verdict_problem(request: QueuedRequest, verdict: ProviderVerdict) -> str | None:
    if verdict.winner_id not in (request.essay_a, request.essay_b):
        return f"winner {verdict.winner_id!r} is neither of the compared essays"
    if not 1 <= verdict.confidence <= 5:
        return f"confidence {verdict.confidence} is outside 1..5"
    if min(verdict.prompt_tokens, verdict.completion_tokens) < 0:
        return "token counts must not be negative"
    if verdict.cost_usd < 0 or verdict.latency_ms < 0:
        return "cost and latency must not be negative"
    return None
