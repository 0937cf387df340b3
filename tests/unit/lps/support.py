"""Small honest fakes for the LPS tests: a clock that only moves when slept on, a
request factory, a provider that fails on cue, and an observer that remembers calls."""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from application.lps import (
    BatchJobStatus,
    ItemResult,
    JobPolling,
    ProviderItem,
    ProviderVerdict,
    QueuedRequestExecutor,
)
from domain.backoff import Backoff
from domain.lps import QueuedRequest, QueueProcessingMode, RequestOutcome
from infrastructure.lps.simulated_judge import SimulatedJudge
from infrastructure.lps.simulated_provider import SimulatedProvider

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ESSAYS = [f"e{i}" for i in range(12)]


class FakeClock:
    """Time stands still until someone sleeps; sleeping moves it forward exactly."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def make_request(
    request_id: str,
    *,
    essay_a: str | None = None,
    essay_b: str | None = None,
    batch_id: str = "batch-1",
    provider: str = "simulated",
    model: str = "sim-1",
    overrides: Any = (),
    hint: QueueProcessingMode | None = QueueProcessingMode.SERIAL_BUNDLE,
    size: int | None = 64,
    enqueued_at: datetime = T0,
    ttl: timedelta = timedelta(hours=4),
    attempts: int = 0,
) -> QueuedRequest:
    # a stable, id-derived pair of distinct essays
    h = zlib.crc32(request_id.encode())
    first = h % len(ESSAYS)
    second = (first + 1 + (h // len(ESSAYS)) % (len(ESSAYS) - 1)) % len(ESSAYS)
    a = essay_a or ESSAYS[first]
    b = essay_b or ESSAYS[second]
    return QueuedRequest(
        request_id=request_id,
        batch_id=batch_id,
        essay_a=a,
        essay_b=b,
        provider=provider,
        model=model,
        enqueued_at=enqueued_at,
        time_to_live=ttl,
        correlation_id=f"corr-{batch_id}",
        overrides=overrides,
        mode_hint=hint,
        preferred_bundle_size=size,
        attempt_count=attempts,
    )


def requests(count: int, prefix: str = "c", **kwargs: Any) -> list[QueuedRequest]:
    return [make_request(f"{prefix}{i}", **kwargs) for i in range(count)]


def judge(seed: int = 7, failure_rate: float = 0.0) -> SimulatedJudge:
    thetas = {essay: (i - 6) / 3 for i, essay in enumerate(ESSAYS)}
    return SimulatedJudge(thetas, seed=seed, failure_rate=failure_rate)


def simulated(clock: FakeClock, **knobs: Any) -> SimulatedProvider:
    knobs.setdefault("job_delay", timedelta(seconds=90))
    return SimulatedProvider(judge(), clock=clock, **knobs)


def executor(
    provider: Any,
    mode: QueueProcessingMode | None,
    clock: FakeClock,
    **kwargs: Any,
) -> QueuedRequestExecutor:
    kwargs.setdefault("backoff", Backoff(base_seconds=1.0, max_seconds=8.0, jitter=0.0))
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault(
        "job_polling", JobPolling(poll_interval=timedelta(seconds=30), timeout=timedelta(hours=1))
    )
    kwargs.setdefault("sleep", clock.sleep)
    return QueuedRequestExecutor(provider, mode, clock=clock, **kwargs)


def outcome_counts(outcomes: Iterable[RequestOutcome]) -> Counter[str]:
    return Counter(o.request_id for o in outcomes)


def assert_one_outcome_each(
    outcomes: Sequence[RequestOutcome], queued: Sequence[QueuedRequest]
) -> None:
    assert outcome_counts(outcomes) == Counter(r.request_id for r in queued)


def by_id(outcomes: Iterable[RequestOutcome]) -> dict[str, RequestOutcome]:
    result: dict[str, RequestOutcome] = {}
    for outcome in outcomes:
        assert outcome.request_id not in result, f"two outcomes for {outcome.request_id}"
        result[outcome.request_id] = outcome
    return result


def codes(outcomes: Iterable[RequestOutcome]) -> Counter[str]:
    return Counter(o.failure.error_code if o.failure else "success" for o in outcomes)


@dataclass
class RecordingObserver:
    """Remembers every observer call, as (method, mode value, *details)."""

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def request_finished(self, mode: QueueProcessingMode, result: str) -> None:
        self.events.append(("request_finished", mode.value, result))

    def bundle_formed(self, mode: QueueProcessingMode, size: int) -> None:
        self.events.append(("bundle_formed", mode.value, size))

    def provider_called(self, mode: QueueProcessingMode, call: str) -> None:
        self.events.append(("provider_called", mode.value, call))

    def job_finished(
        self, mode: QueueProcessingMode, status: str, items: int, duration_seconds: float
    ) -> None:
        self.events.append(("job_finished", mode.value, status, items, duration_seconds))

    def retry_scheduled(self, mode: QueueProcessingMode, error_code: str) -> None:
        self.events.append(("retry_scheduled", mode.value, error_code))

    def of(self, method: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == method]


class FlakyProvider:
    """Wraps a provider; the named methods raise the queued errors first, then delegate."""

    def __init__(self, inner: SimulatedProvider, **errors: list[Exception]) -> None:
        self.inner = inner
        self.errors = {name: list(queue) for name, queue in errors.items()}
        self.name = inner.name

    def _maybe_raise(self, method: str) -> None:
        queue = self.errors.get(method)
        if queue:
            raise queue.pop(0)

    def compare(self, item: ProviderItem) -> ProviderVerdict:
        self._maybe_raise("compare")
        return self.inner.compare(item)

    def compare_bundle(self, items: Sequence[ProviderItem]) -> Sequence[ItemResult]:
        self._maybe_raise("compare_bundle")
        return self.inner.compare_bundle(items)

    def schedule_job(self, items: Sequence[ProviderItem]) -> str:
        self._maybe_raise("schedule_job")
        return self.inner.schedule_job(items)

    def job_status(self, job_id: str) -> BatchJobStatus:
        self._maybe_raise("job_status")
        return self.inner.job_status(job_id)

    def collect_results(
        self, job_id: str, items: Sequence[ProviderItem] = ()
    ) -> Sequence[ItemResult]:
        self._maybe_raise("collect_results")
        return self.inner.collect_results(job_id, items)


class ScriptedBundleProvider:
    """Answers bundled calls with whatever results the test hands it."""

    name = "scripted"

    def __init__(self, results: Sequence[ItemResult] | Any) -> None:
        self.results = results
        self.calls = 0

    def compare(self, item: ProviderItem) -> ProviderVerdict:
        raise AssertionError("not used")

    def compare_bundle(self, items: Sequence[ProviderItem]) -> Sequence[ItemResult]:
        self.calls += 1
        return self.results  # type: ignore[no-any-return]

    def schedule_job(self, items: Sequence[ProviderItem]) -> str:
        raise AssertionError("not used")

    def job_status(self, job_id: str) -> BatchJobStatus:
        raise AssertionError("not used")

    def collect_results(
        self, job_id: str, items: Sequence[ProviderItem] = ()
    ) -> Sequence[ItemResult]:
        raise AssertionError("not used")
