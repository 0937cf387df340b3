"""Retries: retryable errors back off and try again up to the limit; others fail at once."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from application.lps import (
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitedError,
    classify_error,
)
from domain.backoff import Backoff
from domain.lps import QueueProcessingMode
from tests.unit.lps.support import (
    FakeClock,
    FlakyProvider,
    RecordingObserver,
    assert_one_outcome_each,
    by_id,
    codes,
    executor,
    make_request,
    requests,
    simulated,
)

PER_CALL_MODES = [QueueProcessingMode.PER_REQUEST, QueueProcessingMode.SERIAL_BUNDLE]
CALL = {
    QueueProcessingMode.PER_REQUEST: "compare",
    QueueProcessingMode.SERIAL_BUNDLE: "compare_bundle",
}


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (RateLimitedError("slow down"), "RATE_LIMITED", True),
        (ProviderTimeoutError("late"), "TIMEOUT", True),
        (ProviderConnectionError("reset"), "CONNECTION_ERROR", True),
        (ProviderServerError("oops", status_code=503), "SERVER_ERROR", True),
        (TimeoutError(), "TIMEOUT", True),
        (ConnectionResetError("reset by peer"), "CONNECTION_ERROR", True),
        (ProviderError("bad request"), "PROVIDER_ERROR", False),
        (ProviderError("quota", code="QUOTA", retryable=False), "QUOTA", False),
        (ValueError("parse"), "PROVIDER_ERROR", False),
    ],
)
def test_errors_are_classified(error, code, retryable):
    failure = classify_error(error)
    assert (failure.code, failure.retryable) == (code, retryable)


@pytest.mark.parametrize("mode", PER_CALL_MODES)
def test_a_retryable_error_is_retried_with_exponential_backoff_until_it_works(mode):
    clock = FakeClock()
    inner = simulated(clock)
    errors = [RateLimitedError("429"), ProviderServerError("boom", status_code=502)]
    provider = FlakyProvider(inner, **{CALL[mode]: errors})
    observer = RecordingObserver()
    queued = [make_request("c0")]
    ex = executor(provider, mode, clock, max_attempts=3, observer=observer)
    [outcome] = ex.drain(queued, clock())
    assert outcome.succeeded
    assert clock.sleeps == [1.0, 2.0]  # base 1 s, doubling, no jitter
    assert ex.stats.retries == 2
    assert ex.stats.provider_calls == 3
    assert [e[2] for e in observer.of("retry_scheduled")] == ["RATE_LIMITED", "SERVER_ERROR"]


@pytest.mark.parametrize("mode", PER_CALL_MODES)
def test_retries_stop_at_the_limit_with_exactly_one_failure(mode):
    clock = FakeClock()
    provider = FlakyProvider(simulated(clock), **{CALL[mode]: [TimeoutError()] * 100})
    queued = requests(3)
    ex = executor(provider, mode, clock, max_attempts=4)
    outcomes = ex.drain(queued, clock())
    assert_one_outcome_each(outcomes, queued)
    assert codes(outcomes) == Counter({"TIMEOUT": 3})
    assert all(o.failure.retryable for o in outcomes)
    calls_per_round = 3 if mode is QueueProcessingMode.PER_REQUEST else 1
    assert ex.stats.provider_calls == 4 * calls_per_round
    assert len(clock.sleeps) == 3


@pytest.mark.parametrize("mode", PER_CALL_MODES)
def test_a_non_retryable_error_fails_at_once(mode):
    clock = FakeClock()
    provider = FlakyProvider(simulated(clock), **{CALL[mode]: [ProviderError("invalid model")]})
    [outcome] = executor(provider, mode, clock, max_attempts=5).drain([make_request("c0")], clock())
    assert outcome.failure.error_code == "PROVIDER_ERROR"
    assert not outcome.failure.retryable
    assert clock.sleeps == []


def test_only_the_retryable_items_of_a_bundle_are_asked_again():
    clock = FakeClock()
    provider = simulated(clock, fail_items={"c1"}, item_failures_retryable=True)
    queued = requests(4)
    ex = executor(provider, QueueProcessingMode.SERIAL_BUNDLE, clock, max_attempts=3)
    outcomes = by_id(ex.drain(queued, clock()))
    assert provider.calls == ["compare_bundle"] * 3
    assert ex.stats.retries == 2
    assert outcomes["c1"].failure.error_code == "SIMULATED_ITEM_FAILURE"
    assert sum(o.succeeded for o in outcomes.values()) == 3


def test_a_request_that_expires_while_waiting_to_retry_gets_an_expired_outcome():
    clock = FakeClock()
    provider = FlakyProvider(simulated(clock), compare=[RateLimitedError("429")] * 5)
    request = make_request("c0", ttl=timedelta(seconds=5))
    ex = executor(
        provider,
        QueueProcessingMode.PER_REQUEST,
        clock,
        max_attempts=5,
        backoff=Backoff(base_seconds=10.0, jitter=0.0),
    )
    [outcome] = ex.drain([request], clock())
    assert outcome.failure.error_code == "EXPIRED"
    assert outcome.result == "expired"
    assert ex.stats.provider_calls == 1
    assert ex.stats.outcomes == {"success": 0, "failure": 0, "expired": 1}


def test_attempts_already_spent_count_toward_the_limit():
    clock = FakeClock()
    provider = FlakyProvider(simulated(clock), compare=[RateLimitedError("429")] * 5)
    request = make_request("c0", attempts=2)
    ex = executor(provider, QueueProcessingMode.PER_REQUEST, clock, max_attempts=3)
    [outcome] = ex.drain([request], clock())
    assert outcome.failure.error_code == "RATE_LIMITED"
    assert ex.stats.provider_calls == 1


def test_jitter_comes_from_the_injected_rng():
    def sleeps(seed: int) -> list[float]:
        clock = FakeClock()
        provider = FlakyProvider(simulated(clock), compare=[RateLimitedError("429")] * 3)
        ex = executor(
            provider,
            QueueProcessingMode.PER_REQUEST,
            clock,
            max_attempts=4,
            backoff=Backoff(base_seconds=1.0, max_seconds=60.0, jitter=1.0),
            rng=random.Random(seed),
        )
        ex.drain([make_request("c0")], clock())
        return clock.sleeps

    assert sleeps(11) == sleeps(11)
    assert sleeps(11) != sleeps(12)
    assert all(0 <= s <= 2**i for i, s in enumerate(sleeps(11)))
