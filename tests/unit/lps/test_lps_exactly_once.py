"""The central guarantee, as a property: whatever fails, each request gets one outcome."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from application.lps import (
    BatchJobStatus,
    JobPolling,
    ProviderError,
    ProviderServerError,
    RateLimitedError,
)
from domain.lps import QueueProcessingMode
from infrastructure.lps.simulated_judge import SimulatedJudge
from infrastructure.lps.simulated_provider import SimulatedProvider
from infrastructure.metrics import lps_observer
from tests.unit.lps.support import ESSAYS, T0, FakeClock, executor, make_request

JOB_FAULTS = ["none", "failed", "cancelled", "never", "schedule", "status", "collect"]
CALL_ERRORS = [
    RateLimitedError("429"),
    ProviderServerError("down", status_code=503),
    TimeoutError(),
    ProviderError("bad request"),
]


@st.composite
def scenarios(draw):
    mode = draw(st.sampled_from([None, *QueueProcessingMode]))
    ids = draw(st.lists(st.sampled_from([f"c{i}" for i in range(25)]), max_size=30))
    queue = []
    for request_id in ids:  # ids may repeat: a redelivered request deserves an answer too
        queue.append(
            make_request(
                request_id,
                provider=draw(st.sampled_from(["simulated", "simulated", "openai"])),
                hint=draw(st.sampled_from([None, *QueueProcessingMode])),
                size=draw(st.sampled_from([None, 0, 1, 2, 5, 64, 300])),
                ttl=draw(st.sampled_from([timedelta(minutes=1), timedelta(hours=4)])),
                overrides=draw(st.sampled_from([{}, {"temperature": 0.2}])),
                attempts=draw(st.integers(0, 3)),
            )
        )
    return {
        "mode": mode,
        "queue": queue,
        "cap": draw(st.integers(1, 64)),
        "failure_rate": draw(st.sampled_from([0.0, 0.3, 1.0])),
        "fail_items": draw(st.sets(st.sampled_from(ids))) if ids else set(),
        "drop_items": draw(st.sets(st.sampled_from(ids))) if ids else set(),
        "unknown": draw(st.lists(st.sampled_from(["ghost", "c99"]), max_size=2)),
        "job_fault": draw(st.sampled_from(JOB_FAULTS)),
        "call_errors": draw(st.lists(st.sampled_from(CALL_ERRORS), max_size=6)),
        "max_attempts": draw(st.integers(1, 4)),
        "retryable_items": draw(st.booleans()),
        "start_late": draw(st.booleans()),
    }


def build_provider(clock: FakeClock, s: dict) -> SimulatedProvider:
    fault = s["job_fault"]
    judge = SimulatedJudge(
        {e: i / 4 for i, e in enumerate(ESSAYS)}, seed=3, failure_rate=s["failure_rate"]
    )
    return SimulatedProvider(
        judge,
        clock=clock,
        job_delay=timedelta(minutes=3),
        job_final_status={
            "failed": BatchJobStatus.FAILED,
            "cancelled": BatchJobStatus.CANCELLED,
        }.get(fault, BatchJobStatus.COMPLETED),
        never_finish=fault == "never",
        fail_items=s["fail_items"],
        drop_items=s["drop_items"],
        item_failures_retryable=s["retryable_items"],
        unknown_result_ids=s["unknown"],
        schedule_error=RateLimitedError("429") if fault == "schedule" else None,
        status_error=ProviderError("403") if fault == "status" else None,
        collect_error=ProviderServerError("gone") if fault == "collect" else None,
        call_errors=s["call_errors"],
    )


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_every_request_gets_exactly_one_outcome_whatever_fails(s):
    clock = FakeClock()
    if s["start_late"]:
        clock.advance(minutes=2)  # the one-minute requests are expired on arrival
    provider = build_provider(clock, s)
    registry = CollectorRegistry()
    ex = executor(
        provider,
        s["mode"],
        clock,
        bundle_cap=s["cap"],
        max_attempts=s["max_attempts"],
        observer=lps_observer(registry),
        job_polling=JobPolling(poll_interval=timedelta(minutes=1), timeout=timedelta(minutes=10)),
    )
    outcomes = ex.drain(s["queue"], clock())

    assert Counter(o.request_id for o in outcomes) == Counter(r.request_id for r in s["queue"])
    for outcome in outcomes:
        assert (outcome.success is None) != (outcome.failure is None)
    late = {r.request_id for r in s["queue"] if r.is_expired(T0 + timedelta(minutes=2))}
    if s["start_late"]:
        assert {o.request_id for o in outcomes if o.result == "expired"} >= late
    batch_job_broken = s["job_fault"] != "none"
    if batch_job_broken:
        assert not [
            o for o in outcomes if o.succeeded and o.queue_mode is QueueProcessingMode.BATCH_API
        ]
    assert sum(ex.stats.outcomes.values()) == len(s["queue"])
    counted = sum(
        registry.get_sample_value(
            "lps_requests_total", {"queue_processing_mode": m.value, "result": r}
        )
        or 0.0
        for m in QueueProcessingMode
        for r in ("success", "failure", "expired")
    )
    assert counted == len(s["queue"])
