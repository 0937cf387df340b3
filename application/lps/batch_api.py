"""The ``batch_api`` mode: one provider batch job per bundle.

Lifecycle: ``schedule_job`` → poll ``job_status`` every ``poll_interval`` until the job
ends or ``timeout`` (counted from submission) passes → ``collect_results`` → map each
result back by custom id. Calls to the provider are retried when the error is
retryable; the job itself is never resubmitted. Whatever goes wrong before results are
in hand fails every request of the job once, and no success is produced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from application.lps.ports import (
    BatchJobRef,
    BatchJobStatus,
    ItemResult,
    JobStore,
    ProviderFailure,
    classify_error,
)
from application.lps.runtime import Execution, Runtime, log, log_fields, provider_item
from domain.lps import LPSErrorCode, QueuedRequest, QueueProcessingMode, RequestOutcome


@dataclass(frozen=True)
class JobPolling:
    """How often to ask a provider about a batch job, and how long to wait in total."""

    poll_interval: timedelta = timedelta(seconds=30)
    timeout: timedelta = timedelta(hours=2)

    def __post_init__(self) -> None:
        if self.poll_interval <= timedelta(0) or self.timeout <= timedelta(0):
            raise ValueError("poll_interval and timeout must be positive")

    @property
    def max_polls(self) -> int:
        """A hard bound on polls, so waiting ends even if the clock stands still."""
        return math.ceil(self.timeout / self.poll_interval) + 1


@dataclass(frozen=True)
class _JobEnd:
    """How waiting for a job ended: ``status`` is the metrics label."""

    status: str
    failure: ProviderFailure | None = None
    code: LPSErrorCode | None = None


_COMPLETED = _JobEnd("completed")


class BatchApiStrategy:
    mode = QueueProcessingMode.BATCH_API

    def __init__(
        self,
        runtime: Runtime,
        polling: JobPolling,
        on_job_scheduled: Callable[[BatchJobRef], None] | None = None,
        jobs: JobStore | None = None,
    ) -> None:
        self.runtime = runtime
        self.polling = polling
        self.on_job_scheduled = on_job_scheduled
        self.jobs = jobs

    def execute(self, bundle: tuple[QueuedRequest, ...]) -> Execution:
        """Resume the stored jobs that hold requests of ``bundle``; schedule one new job
        for the rest (if any)."""
        resumed, rest = self._resume_stored(bundle)
        if not rest:
            return Execution(resumed)
        execution = self._schedule(rest)
        return Execution(resumed + execution.outcomes, execution.job_ref)

    def _resume_stored(
        self, bundle: tuple[QueuedRequest, ...]
    ) -> tuple[list[RequestOutcome], tuple[QueuedRequest, ...]]:
        if self.jobs is None:
            return [], bundle
        outcomes: list[RequestOutcome] = []
        rest = list(bundle)
        try:
            refs = self.jobs.open_jobs(self.runtime.provider.name, [r.request_id for r in rest])
        except Exception:
            log.exception("lps.job_store_unreadable", **log_fields(self.mode, bundle))
            return [], bundle
        for ref in refs:
            held = set(ref.custom_ids)
            matched = [r for r in rest if r.request_id in held]
            if not matched:
                continue
            rest = [r for r in rest if r.request_id not in held]
            self.runtime.stats.jobs_resumed += 1
            log.info("lps.job_resumed", job_id=ref.job_id, **log_fields(self.mode, matched))
            outcomes.extend(self.finish(ref, matched))
            self._answered(ref, matched)
        return outcomes, tuple(rest)

    def _answered(self, ref: BatchJobRef, requests: Sequence[QueuedRequest]) -> None:
        if self.jobs is None:
            return
        try:
            self.jobs.answered(ref.job_id, [r.request_id for r in requests])
        except Exception:
            log.exception("lps.job_store_not_updated", job_id=ref.job_id)

    def _schedule(self, bundle: tuple[QueuedRequest, ...]) -> Execution:
        runtime = self.runtime
        fields = log_fields(self.mode, bundle)
        items = [provider_item(r) for r in bundle]
        scheduled = runtime.call_with_retries(
            self.mode, "schedule_job", runtime.provider.schedule_job, items, fields=fields
        )
        if isinstance(scheduled, ProviderFailure):
            end = _JobEnd("schedule_failed", scheduled, LPSErrorCode.JOB_SCHEDULE_FAILED)
            return Execution(self._fail_all(bundle, end, job_id=None, duration=0.0))
        ref = BatchJobRef(
            job_id=scheduled,
            provider=runtime.provider.name,
            custom_ids=tuple(r.request_id for r in bundle),
            submitted_at=runtime.clock(),
        )
        runtime.stats.jobs += 1
        log.info("lps.job_scheduled", job_id=ref.job_id, items=len(bundle), **fields)
        for keep in (self.jobs.save if self.jobs else None, self.on_job_scheduled):
            if keep is None:
                continue
            try:
                keep(ref)
            except Exception:
                # the job can still finish in this process; it just cannot be resumed
                log.exception("lps.job_ref_not_saved", job_id=ref.job_id, **fields)
        outcomes = self.finish(ref, bundle)
        self._answered(ref, bundle)
        return Execution(outcomes, job_ref=ref)

    def finish(self, ref: BatchJobRef, requests: Sequence[QueuedRequest]) -> list[RequestOutcome]:
        """Wait for a scheduled job and turn its results into one outcome per request."""
        end = self._wait(ref)
        if end is not _COMPLETED:
            return self._fail_all(requests, end, ref.job_id, self._elapsed(ref))
        collected = self.runtime.call_with_retries(
            self.mode,
            "collect_results",
            self.runtime.provider.collect_results,
            ref.job_id,
            [provider_item(r) for r in requests],
            fields={"job_id": ref.job_id, **log_fields(self.mode, requests)},
        )
        if isinstance(collected, ProviderFailure):
            end = _JobEnd("collect_failed", collected, LPSErrorCode.JOB_COLLECT_FAILED)
            return self._fail_all(requests, end, ref.job_id, self._elapsed(ref))
        return self._map_back(ref, requests, collected)

    def _wait(self, ref: BatchJobRef) -> _JobEnd:
        runtime = self.runtime
        deadline = ref.submitted_at + self.polling.timeout
        status_errors = 0
        for _ in range(self.polling.max_polls):
            try:
                status = runtime.call(
                    self.mode, "job_status", runtime.provider.job_status, ref.job_id
                )
            except Exception as error:
                failure = classify_error(error)
                status_errors += 1
                if not failure.retryable or status_errors >= runtime.max_attempts:
                    return _JobEnd("status_failed", failure, LPSErrorCode.JOB_STATUS_FAILED)
            else:
                status_errors = 0
                if status is BatchJobStatus.COMPLETED:
                    return _COMPLETED
                if status is BatchJobStatus.FAILED:
                    return _job_end("failed", LPSErrorCode.JOB_FAILED, "the job failed")
                if status is BatchJobStatus.CANCELLED:
                    return _job_end(
                        "cancelled", LPSErrorCode.JOB_CANCELLED, "the job was cancelled"
                    )
            if runtime.clock() >= deadline:
                break
            runtime.sleep(self.polling.poll_interval.total_seconds())
        return _job_end(
            "timed_out",
            LPSErrorCode.JOB_TIMEOUT,
            f"the job did not finish within {self.polling.timeout}",
        )

    def _map_back(
        self, ref: BatchJobRef, requests: Sequence[QueuedRequest], results: Sequence[ItemResult]
    ) -> list[RequestOutcome]:
        runtime = self.runtime
        by_id = runtime.map_results(self.mode, requests, results)
        outcomes = [runtime.outcome(r, self.mode, by_id[r.request_id]) for r in requests]
        duration = self._elapsed(ref)
        runtime.observer.job_finished(self.mode, "completed", len(requests), duration)
        log.info(
            "lps.job_completed",
            job_id=ref.job_id,
            items=len(requests),
            succeeded=sum(1 for o in outcomes if o.succeeded),
            duration_seconds=round(duration, 3),
            **log_fields(self.mode, requests),
        )
        return outcomes

    def _fail_all(
        self,
        requests: Sequence[QueuedRequest],
        end: _JobEnd,
        job_id: str | None,
        duration: float,
    ) -> list[RequestOutcome]:
        assert end.failure is not None and end.code is not None
        self.runtime.observer.job_finished(self.mode, end.status, len(requests), duration)
        log.warning(
            "lps.job_failed",
            job_id=job_id,
            job_status=end.status,
            error_code=end.failure.code,
            error=end.failure.message,
            **log_fields(self.mode, requests),
        )
        return [self.runtime.failed(r, self.mode, end.failure, end.code) for r in requests]

    def _elapsed(self, ref: BatchJobRef) -> float:
        return max(0.0, (self.runtime.clock() - ref.submitted_at).total_seconds())


def _job_end(status: str, code: LPSErrorCode, message: str) -> _JobEnd:
    # a job that failed as a whole says nothing against its items: asking again may work
    return _JobEnd(status, ProviderFailure(code.value, message, retryable=True), code)
