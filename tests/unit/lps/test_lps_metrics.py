"""Prometheus metrics, read back from a private registry, labelled by queue mode."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from application.lps import BatchJobStatus, RateLimitedError
from domain.lps import QueueProcessingMode
from infrastructure.metrics import REGISTRY, PrometheusLPSObserver, lps_observer
from tests.unit.lps.support import (
    FakeClock,
    FlakyProvider,
    executor,
    make_request,
    requests,
    simulated,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("mode", list(QueueProcessingMode))
def test_requests_are_counted_by_result_and_queue_mode(registry, mode):
    clock = FakeClock()
    clock.advance(hours=1)
    provider = simulated(clock, fail_items={"c1"})
    queued = [*requests(4), make_request("old", ttl=timedelta(minutes=1))]
    executor(provider, mode, clock, observer=lps_observer(registry)).drain(queued, clock())
    m = mode.value
    assert sample(registry, "lps_requests_total", queue_processing_mode=m, result="success") == 3
    assert sample(registry, "lps_requests_total", queue_processing_mode=m, result="failure") == 1
    assert sample(registry, "lps_requests_total", queue_processing_mode=m, result="expired") == 1
    assert sample(registry, "lps_bundle_size_count", queue_processing_mode=m) == 1
    assert sample(registry, "lps_bundle_size_sum", queue_processing_mode=m) == 4


def test_provider_calls_are_counted_per_port_method(registry):
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(seconds=45))
    ex = executor(provider, QueueProcessingMode.BATCH_API, clock, observer=lps_observer(registry))
    ex.drain(requests(3), clock())
    calls = {
        call: sample(
            registry, "lps_provider_calls_total", queue_processing_mode="batch_api", call=call
        )
        for call in ("schedule_job", "job_status", "collect_results", "compare")
    }
    assert calls == {"schedule_job": 1, "job_status": 3, "collect_results": 1, "compare": 0}


def test_jobs_are_counted_by_status_with_items_and_duration(registry):
    clock = FakeClock()
    observer = lps_observer(registry)
    done = simulated(clock, job_delay=timedelta(seconds=60))
    executor(done, QueueProcessingMode.BATCH_API, clock, observer=observer).drain(
        requests(5), clock()
    )
    failed = simulated(clock, job_final_status=BatchJobStatus.FAILED)
    executor(failed, QueueProcessingMode.BATCH_API, clock, observer=observer).drain(
        requests(2, prefix="f"), clock()
    )
    m = {"queue_processing_mode": "batch_api"}
    assert registry.get_sample_value("lps_batch_jobs_total", {**m, "status": "completed"}) == 1
    assert registry.get_sample_value("lps_batch_jobs_total", {**m, "status": "failed"}) == 1
    assert registry.get_sample_value("lps_batch_job_items_sum", m) == 7
    assert registry.get_sample_value("lps_batch_job_duration_seconds_sum", m) == pytest.approx(
        60 + 90
    )
    assert registry.get_sample_value("lps_requests_total", {**m, "result": "failure"}) == 2


def test_retries_are_counted_by_error_code(registry):
    clock = FakeClock()
    provider = FlakyProvider(simulated(clock), compare_bundle=[RateLimitedError("429")] * 2)
    ex = executor(
        provider, QueueProcessingMode.SERIAL_BUNDLE, clock, observer=lps_observer(registry)
    )
    ex.drain(requests(3), clock())
    labels = {"queue_processing_mode": "serial_bundle", "error_code": "RATE_LIMITED"}
    assert registry.get_sample_value("lps_retries_total", labels) == 6  # 3 requests x 2 retries


def test_one_observer_per_registry_and_the_module_registry_is_not_the_global_one(registry):
    assert lps_observer(registry) is lps_observer(registry)
    assert lps_observer() is lps_observer(REGISTRY)
    assert isinstance(lps_observer(), PrometheusLPSObserver)
    from prometheus_client import REGISTRY as GLOBAL

    assert REGISTRY is not GLOBAL
    assert (
        GLOBAL.get_sample_value(
            "lps_requests_total", {"queue_processing_mode": "per_request", "result": "success"}
        )
        is None
    )
