"""Prometheus metrics for LPS, behind the application's ``LPSObserver`` port.

Metrics live in ``REGISTRY``, a registry this module owns (not prometheus_client's global
one), so tests and embedded runs never collide. Expose it with
``prometheus_client.generate_latest(REGISTRY)``. Every metric carries the
``queue_processing_mode`` label.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter, Histogram

from domain.lps import QueueProcessingMode

REGISTRY = CollectorRegistry()

MODE = "queue_processing_mode"
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_JOB_SECONDS_BUCKETS = (1, 5, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400)


class PrometheusLPSObserver:
    """Implements ``application.lps.LPSObserver``. Use ``lps_observer()`` to share one per
    registry: creating two on the same registry would register every metric twice."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "lps_requests",
            "Outcomes produced, by result (success, failure, expired).",
            [MODE, "result"],
            registry=registry,
        )
        self.bundle_size = Histogram(
            "lps_bundle_size",
            "Requests per bundle.",
            [MODE],
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.provider_calls = Counter(
            "lps_provider_calls",
            "Provider calls, by port method, retries included.",
            [MODE, "call"],
            registry=registry,
        )
        self.jobs = Counter(
            "lps_batch_jobs",
            "Provider batch jobs that ended, by final status.",
            [MODE, "status"],
            registry=registry,
        )
        self.job_items = Histogram(
            "lps_batch_job_items",
            "Requests per provider batch job.",
            [MODE],
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.job_duration = Histogram(
            "lps_batch_job_duration_seconds",
            "Time from scheduling a batch job to its end.",
            [MODE],
            buckets=_JOB_SECONDS_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "lps_retries",
            "Retries scheduled, by the error code that caused them.",
            [MODE, "error_code"],
            registry=registry,
        )

    def request_finished(self, mode: QueueProcessingMode, result: str) -> None:
        self.requests.labels(mode.value, result).inc()

    def bundle_formed(self, mode: QueueProcessingMode, size: int) -> None:
        self.bundle_size.labels(mode.value).observe(size)

    def provider_called(self, mode: QueueProcessingMode, call: str) -> None:
        self.provider_calls.labels(mode.value, call).inc()

    def job_finished(
        self, mode: QueueProcessingMode, status: str, items: int, duration_seconds: float
    ) -> None:
        self.jobs.labels(mode.value, status).inc()
        self.job_items.labels(mode.value).observe(items)
        self.job_duration.labels(mode.value).observe(duration_seconds)

    def retry_scheduled(self, mode: QueueProcessingMode, error_code: str) -> None:
        self.retries.labels(mode.value, error_code).inc()


_observers: WeakKeyDictionary[CollectorRegistry, PrometheusLPSObserver] = WeakKeyDictionary()


def lps_observer(registry: CollectorRegistry | None = None) -> PrometheusLPSObserver:
    """The observer for ``registry`` (default: this module's ``REGISTRY``), created once."""
    target = registry if registry is not None else REGISTRY
    observer = _observers.get(target)
    if observer is None:
        observer = PrometheusLPSObserver(target)
        _observers[target] = observer
    return observer
