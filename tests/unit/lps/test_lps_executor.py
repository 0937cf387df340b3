"""The executor as a whole: drain, stats for the demo, structured log events."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from application.lps import QueuedRequestExecutor
from domain.lps import QueueProcessingMode
from tests.unit.lps.support import (
    T0,
    FakeClock,
    assert_one_outcome_each,
    executor,
    make_request,
    requests,
    simulated,
)


def test_drain_answers_a_mixed_queue_once_per_request_and_keeps_stats():
    clock = FakeClock()
    clock.advance(hours=1)
    provider = simulated(clock, fail_items={"c3"})
    queued = [
        *requests(5, size=3),
        make_request("old", ttl=timedelta(minutes=5)),
        make_request("x", provider="openai", size=3),
        *requests(2, prefix="d", size=3),
    ]
    ex = executor(provider, QueueProcessingMode.SERIAL_BUNDLE, clock)
    outcomes = ex.drain(queued, clock())
    assert_one_outcome_each(outcomes, queued)
    # bundles: c0-c2 | c3 c4 (old expired on the way) | x | d0 d1
    assert provider.calls == ["compare_bundle"] * 4
    stats = ex.stats.as_dict()
    assert stats["bundles"] == 4
    assert stats["max_bundle_size"] == 3
    assert stats["provider_calls"] == 4
    assert stats["jobs"] == 0
    assert stats["outcomes"] == {"success": 7, "failure": 1, "expired": 1}
    json.dumps(stats)  # the demo prints it


def test_drain_of_nothing_does_nothing():
    clock = FakeClock()
    ex = executor(simulated(clock), QueueProcessingMode.PER_REQUEST, clock)
    assert ex.drain([], clock()) == []
    assert ex.stats.bundles == 0


def test_drain_judges_later_bundles_at_the_clocks_time():
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(minutes=20))
    queued = [make_request("a"), make_request("x", provider="openai", ttl=timedelta(minutes=10))]
    outcomes = executor(provider, QueueProcessingMode.BATCH_API, clock).drain(queued, clock())
    result = {o.request_id: o.result for o in outcomes}
    assert result == {"a": "success", "x": "expired"}


def test_log_events_carry_the_queue_mode_and_the_ids():
    clock = FakeClock()
    provider = simulated(clock)
    queued = requests(2, batch_id="b-42")
    with capture_logs() as logs:
        executor(provider, QueueProcessingMode.BATCH_API, clock).drain(queued, clock())
    events = {e["event"]: e for e in logs}
    for name in ("lps.bundle_dispatched", "lps.job_scheduled", "lps.job_completed"):
        event = events[name]
        assert event["queue_processing_mode"] == "batch_api"
        assert event["batch_ids"] == ["b-42"]
        assert event["comparison_ids"] == ["c0", "c1"]
        assert event["correlation_ids"] == ["corr-b-42"]
    assert events["lps.job_scheduled"]["job_id"] == events["lps.job_completed"]["job_id"]


@pytest.mark.parametrize(("cap", "attempts"), [(0, 3), (65, 3), (10, 0)])
def test_invalid_executor_settings_are_rejected(cap, attempts):
    clock = FakeClock()
    with pytest.raises(ValueError):
        QueuedRequestExecutor(simulated(clock), None, bundle_cap=cap, max_attempts=attempts)


def test_the_configured_cap_bounds_every_bundle():
    clock = FakeClock()
    provider = simulated(clock)
    queued = requests(10, size=64)
    ex = executor(provider, QueueProcessingMode.SERIAL_BUNDLE, clock, bundle_cap=4)
    ex.drain(queued, clock())
    assert ex.stats.max_bundle_size == 4 and ex.stats.bundles == 3


def test_a_per_request_hint_gives_single_request_bundles():
    clock = FakeClock()
    provider = simulated(clock)
    queued = requests(3, hint=QueueProcessingMode.PER_REQUEST, size=1)
    ex = executor(provider, None, clock)
    outcomes = ex.drain(queued, clock())
    assert Counter(o.queue_mode for o in outcomes) == Counter({QueueProcessingMode.PER_REQUEST: 3})
    assert ex.stats.bundles == 3 and provider.calls == ["compare"] * 3


def test_the_executor_needs_no_clock_of_its_own_for_expiry_at_drain_time():
    clock = FakeClock()
    ex = executor(simulated(clock), QueueProcessingMode.PER_REQUEST, clock)
    [outcome] = ex.drain([make_request("c0", ttl=timedelta(hours=1))], T0 + timedelta(hours=2))
    assert outcome.result == "expired"
