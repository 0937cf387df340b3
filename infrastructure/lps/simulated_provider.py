"""A simulated LLM provider: both port interfaces, backed by ``SimulatedJudge``.

Per-call methods answer at once. Batch jobs complete ``job_delay`` after submission as
measured on the injected clock, so a test's fake clock (advanced by the executor's fake
sleep) decides when a job is done. Every public attribute is a knob a test or the demo may
turn at any time: fail or cancel whole jobs, never finish them, drop or fail chosen items,
add results for ids nobody asked about, raise on schedule / status / collect, or raise
on the next per-call requests (``call_errors``, consumed one per call).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from application.lps.ports import (
    BatchJobStatus,
    ItemResult,
    ProviderError,
    ProviderFailure,
    ProviderItem,
    ProviderVerdict,
)
from infrastructure.lps.simulated_judge import SimulatedJudge

ITEM_FAILURE_CODE = "SIMULATED_ITEM_FAILURE"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Job:
    items: tuple[ProviderItem, ...]
    submitted_at: datetime


class SimulatedProvider:
    def __init__(
        self,
        judge: SimulatedJudge,
        *,
        clock: Callable[[], datetime] = _utc_now,
        name: str = "simulated",
        job_delay: timedelta = timedelta(seconds=60),
        job_final_status: BatchJobStatus = BatchJobStatus.COMPLETED,
        never_finish: bool = False,
        fail_items: Iterable[str] = (),
        drop_items: Iterable[str] = (),
        item_failures_retryable: bool = False,
        unknown_result_ids: Iterable[str] = (),
        schedule_error: Exception | None = None,
        status_error: Exception | None = None,
        collect_error: Exception | None = None,
        call_errors: Iterable[Exception] = (),
    ) -> None:
        if job_final_status not in (
            BatchJobStatus.COMPLETED,
            BatchJobStatus.FAILED,
            BatchJobStatus.CANCELLED,
        ):
            raise ValueError("job_final_status must be completed, failed or cancelled")
        self.judge = judge
        self.clock = clock
        self.name = name
        self.job_delay = job_delay
        self.job_final_status = job_final_status
        self.never_finish = never_finish
        self.fail_items = set(fail_items)
        self.drop_items = set(drop_items)
        self.item_failures_retryable = item_failures_retryable
        self.unknown_result_ids = list(unknown_result_ids)
        self.schedule_error = schedule_error
        self.status_error = status_error
        self.collect_error = collect_error
        self.call_errors: deque[Exception] = deque(call_errors)
        self.calls: list[str] = []
        self._jobs: dict[str, _Job] = {}

    # -- per call ---------------------------------------------------------------------

    def compare(self, item: ProviderItem) -> ProviderVerdict:
        self.calls.append("compare")
        self._raise_queued_call_error()
        if item.custom_id in self.fail_items:
            raise ProviderError(
                f"simulated failure for item {item.custom_id}",
                code=ITEM_FAILURE_CODE,
                retryable=self.item_failures_retryable,
            )
        return self.judge.judge(item.custom_id, item.essay_a, item.essay_b)

    def compare_bundle(self, items: Sequence[ProviderItem]) -> Sequence[ItemResult]:
        self.calls.append("compare_bundle")
        self._raise_queued_call_error()
        return self._results(items)

    # -- batch jobs -------------------------------------------------------------------

    def schedule_job(self, items: Sequence[ProviderItem]) -> str:
        self.calls.append("schedule_job")
        if self.schedule_error is not None:
            raise self.schedule_error
        job_id = f"simjob-{len(self._jobs) + 1:04d}"
        self._jobs[job_id] = _Job(items=tuple(items), submitted_at=self.clock())
        return job_id

    def job_status(self, job_id: str) -> BatchJobStatus:
        self.calls.append("job_status")
        if self.status_error is not None:
            raise self.status_error
        return self._status_of(self._job(job_id))

    def collect_results(
        self, job_id: str, items: Sequence[ProviderItem] = ()
    ) -> Sequence[ItemResult]:
        self.calls.append("collect_results")
        if self.collect_error is not None:
            raise self.collect_error
        job = self._job(job_id)
        if self._status_of(job) is not BatchJobStatus.COMPLETED:
            raise ProviderError(f"job {job_id} has no results", code="JOB_NOT_READY")
        results = list(self._results(job.items))
        for custom_id in self.unknown_result_ids:
            verdict = ProviderVerdict(winner_id="unknown", confidence=1, justification="")
            results.append(ItemResult(custom_id, verdict=verdict))
        return results

    @property
    def job_ids(self) -> list[str]:
        return list(self._jobs)

    def _status_of(self, job: _Job) -> BatchJobStatus:
        if self.never_finish or self.clock() < job.submitted_at + self.job_delay:
            return BatchJobStatus.RUNNING
        return self.job_final_status

    # -- helpers ----------------------------------------------------------------------

    def _job(self, job_id: str) -> _Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise ProviderError(f"no such job: {job_id}", code="JOB_NOT_FOUND") from None

    def _raise_queued_call_error(self) -> None:
        if self.call_errors:
            raise self.call_errors.popleft()

    def _results(self, items: Sequence[ProviderItem]) -> list[ItemResult]:
        results: list[ItemResult] = []
        for item in items:
            if item.custom_id in self.drop_items:
                continue
            if item.custom_id in self.fail_items:
                failure = ProviderFailure(
                    ITEM_FAILURE_CODE,
                    f"simulated failure for item {item.custom_id}",
                    self.item_failures_retryable,
                )
                results.append(ItemResult(item.custom_id, failure=failure))
                continue
            try:
                verdict = self.judge.judge(item.custom_id, item.essay_a, item.essay_b)
            except ProviderError as error:
                results.append(ItemResult(item.custom_id, failure=error.as_failure()))
            else:
                results.append(ItemResult(item.custom_id, verdict=verdict))
        return results
