"""Prometheus metrics: LPS behind ``LPSObserver``, CJ behind ``BatchObserver``.

Metrics live in ``REGISTRY``, a registry this module owns (not prometheus_client's global
one), so tests and embedded runs never collide. ``MetricsServer`` exposes it on
``CJLEDGER_METRICS_PORT`` (``/metrics`` and ``/healthz``) in ``serve`` and
``lps-worker``. Every LPS metric carries the ``queue_processing_mode`` label, every CJ
metric the ``batching_mode`` label.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from socketserver import ThreadingMixIn
from typing import Any
from weakref import WeakKeyDictionary
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from domain.batch import CJBatch
from domain.lps import QueueProcessingMode
from domain.values import BatchingMode

REGISTRY = CollectorRegistry()

MODE = "queue_processing_mode"
BATCHING_MODE = "batching_mode"
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


class PrometheusBatchObserver:
    """Implements ``application.ports.BatchObserver``: CJ metrics, every one labelled with
    the batch's ``batching_mode``. Use ``batch_observer()`` (one per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "cj_outcomes_recorded",
            "Comparison outcomes recorded, by result (success, failure).",
            [BATCHING_MODE, "result"],
            registry=registry,
        )
        self.decisions = Counter(
            "cj_decisions",
            "Continuation decisions, by kind and reason.",
            [BATCHING_MODE, "kind", "reason"],
            registry=registry,
        )
        self.waves = Counter(
            "cj_waves_requested",
            "Waves of comparisons requested, by generation mode.",
            [BATCHING_MODE, "generation_mode"],
            registry=registry,
        )
        self.finalized = Counter(
            "cj_batches_finalized",
            "Batches finalized, by final status.",
            [BATCHING_MODE, "status"],
            registry=registry,
        )

    def events_recorded(self, mode: BatchingMode | None, events: Sequence[Any]) -> None:
        label = mode.value if mode is not None else "none"
        for event in events:
            if isinstance(event, CJBatch.ComparisonCompleted):
                result = "success" if event.outcome.success is not None else "failure"
                self.outcomes.labels(label, result).inc()
            elif isinstance(event, CJBatch.ContinuationDecided):
                self.decisions.labels(label, event.decision.value, event.reason).inc()
            elif isinstance(event, CJBatch.ComparisonsRequested):
                self.waves.labels(label, event.generation_mode.value).inc()
            elif isinstance(event, CJBatch.Finalized):
                self.finalized.labels(label, event.status.value).inc()


_batch_observers: WeakKeyDictionary[CollectorRegistry, PrometheusBatchObserver] = (
    WeakKeyDictionary()
)


def batch_observer(registry: CollectorRegistry | None = None) -> PrometheusBatchObserver:
    """The CJ observer for ``registry`` (default: ``REGISTRY``), created once."""
    target = registry if registry is not None else REGISTRY
    observer = _batch_observers.get(target)
    if observer is None:
        observer = PrometheusBatchObserver(target)
        _batch_observers[target] = observer
    return observer


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` on ``port``, in a daemon thread;
    a service component (``start``/``stop``) of ``serve`` and ``lps-worker``."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", registry: CollectorRegistry | None = None
    ):
        self.host = host
        self.port = port
        self.registry = registry if registry is not None else REGISTRY
        self._server: WSGIServer | None = None

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(self.registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status": "ok"}']
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    async def start(self) -> None:
        self._server = make_server(
            self.host, self.port, self.app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would drown the service log
