"""``QueuedRequestExecutor``: takes bundles off a queue and answers every request once.

Whatever the mode, a bundle goes through the same steps: ``form_bundle`` (pure, in
``domain.lps``) decides which requests travel together, the mode's strategy talks to the
provider, and the executor checks that the bundle got exactly one outcome per request —
filling any gap with an ``INTERNAL_ERROR`` failure, so a bug in a strategy can cost
successes but never silence.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from application.lps.batch_api import BatchApiStrategy, JobPolling
from application.lps.observer import ExecutorStats, LPSObserver, NoOpObserver
from application.lps.per_call import PerRequestStrategy, SerialBundleStrategy
from application.lps.ports import BatchJobRef, JobStore, LLMProvider
from application.lps.runtime import Execution, ExecutionStrategy, Runtime, log, log_fields
from domain.backoff import Backoff
from domain.lps import (
    MAX_BUNDLE_SIZE,
    LPSErrorCode,
    QueuedRequest,
    QueueProcessingMode,
    RequestOutcome,
    form_bundle,
)

#: the mode used for a request without a batching hint when the executor follows hints
DEFAULT_QUEUE_MODE = QueueProcessingMode.SERIAL_BUNDLE


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BundleResult:
    """What one step of the executor did, in the same shape for every mode.

    ``outcomes`` holds exactly one outcome per request of ``bundle`` plus one ``EXPIRED``
    failure per request met expired on the way. ``held_back`` is the incompatible request
    that ended the bundle (not executed; it leads the next one); ``rest`` is everything not
    consumed, starting with ``held_back``. ``job_ref`` is set in ``batch_api`` mode once a
    job was scheduled.
    """

    mode: QueueProcessingMode
    bundle: tuple[QueuedRequest, ...]
    outcomes: tuple[RequestOutcome, ...]
    held_back: QueuedRequest | None = None
    rest: tuple[QueuedRequest, ...] = ()
    job_ref: BatchJobRef | None = None


class QueuedRequestExecutor:
    """Executes queued comparison requests against one provider.

    ``mode`` fixes the queue processing mode; ``None`` follows each bundle's mode hint
    (no hint → ``serial_bundle``). ``clock`` and ``sleep`` are injected
    so tests never wait; ``rng`` draws the backoff jitter (pass a seeded one for
    repeatable runs). ``jobs`` keeps each new batch job's ref, so that a restarted worker
    resumes the job when its requests are delivered again; ``on_job_scheduled`` receives
    each ref as well (for ``resume_job``).
    """

    def __init__(
        self,
        provider: LLMProvider,
        mode: QueueProcessingMode | None,
        *,
        bundle_cap: int = MAX_BUNDLE_SIZE,
        max_attempts: int = 3,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        observer: LPSObserver | None = None,
        job_polling: JobPolling | None = None,
        on_job_scheduled: Callable[[BatchJobRef], None] | None = None,
        jobs: JobStore | None = None,
    ) -> None:
        if not 1 <= bundle_cap <= MAX_BUNDLE_SIZE:
            raise ValueError(f"bundle_cap must lie in 1..{MAX_BUNDLE_SIZE}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.provider = provider
        self.mode = mode
        self.bundle_cap = bundle_cap
        self._runtime = Runtime(
            provider=provider,
            max_attempts=max_attempts,
            backoff=backoff if backoff is not None else Backoff(),
            rng=rng if rng is not None else random.Random(),
            clock=clock,
            sleep=sleep,
            observer=observer if observer is not None else NoOpObserver(),
            stats=ExecutorStats(),
        )
        self._batch_api = BatchApiStrategy(
            self._runtime, job_polling or JobPolling(), on_job_scheduled, jobs
        )
        self._strategies: dict[QueueProcessingMode, ExecutionStrategy] = {
            QueueProcessingMode.PER_REQUEST: PerRequestStrategy(self._runtime),
            QueueProcessingMode.SERIAL_BUNDLE: SerialBundleStrategy(self._runtime),
            QueueProcessingMode.BATCH_API: self._batch_api,
        }

    @property
    def stats(self) -> ExecutorStats:
        return self._runtime.stats

    def mode_for(self, request: QueuedRequest) -> QueueProcessingMode:
        if self.mode is not None:
            return self.mode
        return request.mode_hint or DEFAULT_QUEUE_MODE

    def process_next(self, queue: Sequence[QueuedRequest], now: datetime) -> BundleResult:
        """Form the next bundle from the head of ``queue`` and execute it."""
        formation = form_bundle(queue, now, self.bundle_cap)
        outcomes: list[RequestOutcome] = []
        for request in formation.expired:
            mode = self.mode_for(request)
            log.warning("lps.request_expired", **log_fields(mode, [request]))
            outcomes.append(RequestOutcome.expired(request, mode, self.provider.name, now))
        job_ref: BatchJobRef | None = None
        if formation.lead is not None:
            mode = self.mode_for(formation.lead)
            execution = self._dispatch(mode, formation.bundle)
            outcomes.extend(execution.outcomes)
            job_ref = execution.job_ref
        elif formation.expired:
            mode = self.mode_for(formation.expired[0])
        else:
            mode = self.mode or DEFAULT_QUEUE_MODE
        self._record(outcomes)
        return BundleResult(
            mode=mode,
            bundle=formation.bundle,
            outcomes=tuple(outcomes),
            held_back=formation.held_back,
            rest=formation.rest,
            job_ref=job_ref,
        )

    def drain(self, requests: Iterable[QueuedRequest], now: datetime) -> list[RequestOutcome]:
        """Process every request, bundle after bundle, and return all outcomes.

        Expiry is judged at ``now`` for the first bundle and at the injected clock (never
        earlier than ``now``) for the later ones.
        """
        queue: tuple[QueuedRequest, ...] = tuple(requests)
        outcomes: list[RequestOutcome] = []
        moment = now
        while queue:
            result = self.process_next(queue, moment)
            outcomes.extend(result.outcomes)
            queue = result.rest
            moment = max(now, self._runtime.clock())
        return outcomes

    def resume_job(self, job_ref: BatchJobRef, requests: Sequence[QueuedRequest]) -> BundleResult:
        """Finish a batch job scheduled earlier (perhaps by a process that has since died).

        ``requests`` are matched to the job by id. A request the job does not hold (or a
        repeat of one already matched) gets a ``NOT_IN_JOB`` failure, so it too is answered.
        """
        mode = QueueProcessingMode.BATCH_API
        in_job = set(job_ref.custom_ids)
        matched: list[QueuedRequest] = []
        outcomes: list[RequestOutcome] = []
        for request in requests:
            if request.request_id in in_job:
                in_job.discard(request.request_id)
                matched.append(request)
            else:
                outcomes.append(
                    RequestOutcome.failed_with(
                        request,
                        mode,
                        self.provider.name,
                        LPSErrorCode.NOT_IN_JOB,
                        f"job {job_ref.job_id} holds no (further) item for this request",
                        retryable=True,
                    )
                )
        bundle = tuple(matched)
        if bundle:
            log.info("lps.job_resumed", job_id=job_ref.job_id, **log_fields(mode, bundle))
            execution = self._guarded(
                mode, bundle, lambda: Execution(self._batch_api.finish(job_ref, bundle), job_ref)
            )
            outcomes.extend(execution.outcomes)
        self._record(outcomes)
        return BundleResult(mode=mode, bundle=bundle, outcomes=tuple(outcomes), job_ref=job_ref)

    def _dispatch(self, mode: QueueProcessingMode, bundle: tuple[QueuedRequest, ...]) -> Execution:
        stats = self._runtime.stats
        stats.bundles += 1
        stats.max_bundle_size = max(stats.max_bundle_size, len(bundle))
        self._runtime.observer.bundle_formed(mode, len(bundle))
        lead = bundle[0]
        log.info(
            "lps.bundle_dispatched",
            bundle_size=len(bundle),
            provider=lead.provider,
            **log_fields(mode, bundle),
        )
        strategy = self._strategies[mode]
        return self._guarded(mode, bundle, lambda: strategy.execute(bundle))

    def _guarded(
        self,
        mode: QueueProcessingMode,
        bundle: tuple[QueuedRequest, ...],
        run: Callable[[], Execution],
    ) -> Execution:
        """Run a strategy and make sure each request of ``bundle`` has exactly one outcome."""
        try:
            execution = run()
        except Exception:
            log.exception("lps.internal_error", **log_fields(mode, bundle))
            execution = Execution([])
        wanted = {r.request_id for r in bundle}
        seen: set[str] = set()
        kept: list[RequestOutcome] = []
        for outcome in execution.outcomes:
            if outcome.request_id in wanted and outcome.request_id not in seen:
                seen.add(outcome.request_id)
                kept.append(outcome)
            else:
                log.error(
                    "lps.outcome_discarded",
                    request_id=outcome.request_id,
                    **log_fields(mode, bundle),
                )
        for request in bundle:
            if request.request_id not in seen:
                kept.append(
                    RequestOutcome.failed_with(
                        request,
                        mode,
                        self.provider.name,
                        LPSErrorCode.INTERNAL_ERROR,
                        "LPS produced no outcome for this request",
                        retryable=True,
                    )
                )
        return Execution(kept, execution.job_ref)

    def _record(self, outcomes: Iterable[RequestOutcome]) -> None:
        for outcome in outcomes:
            result = outcome.result
            self._runtime.stats.outcomes[result] += 1
            self._runtime.observer.request_finished(outcome.queue_mode, result)
