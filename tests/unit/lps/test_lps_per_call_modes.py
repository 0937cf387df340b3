"""per_request and serial_bundle: calls per bundle, mapping back, sibling isolation."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from application.lps import ItemResult, ProviderError, ProviderFailure, ProviderVerdict
from domain.lps import JUSTIFICATION_MAX_CHARS, QueueProcessingMode
from tests.unit.lps.support import (
    FakeClock,
    ScriptedBundleProvider,
    assert_one_outcome_each,
    by_id,
    codes,
    executor,
    make_request,
    requests,
    simulated,
)

PER_REQUEST = QueueProcessingMode.PER_REQUEST
SERIAL = QueueProcessingMode.SERIAL_BUNDLE


def test_per_request_makes_one_provider_call_per_request():
    clock = FakeClock()
    provider = simulated(clock)
    queued = requests(5)
    outcomes = executor(provider, PER_REQUEST, clock).drain(queued, clock())
    assert_one_outcome_each(outcomes, queued)
    assert provider.calls == ["compare"] * 5
    assert all(o.succeeded and o.queue_mode is PER_REQUEST for o in outcomes)


def test_per_request_failure_of_one_request_leaves_the_others_alone():
    clock = FakeClock()
    provider = simulated(clock, fail_items={"c2"})
    queued = requests(4)
    outcomes = by_id(executor(provider, PER_REQUEST, clock).drain(queued, clock()))
    assert not outcomes["c2"].succeeded
    assert outcomes["c2"].failure.error_code == "SIMULATED_ITEM_FAILURE"
    assert not outcomes["c2"].failure.retryable
    assert all(outcomes[i].succeeded for i in ("c0", "c1", "c3"))


def test_serial_bundle_makes_one_call_per_bundle_and_maps_results_back():
    clock = FakeClock()
    provider = simulated(clock)
    queued = requests(10, size=4)
    ex = executor(provider, SERIAL, clock)
    outcomes = ex.drain(queued, clock())
    assert_one_outcome_each(outcomes, queued)
    assert provider.calls == ["compare_bundle"] * 3  # 4 + 4 + 2
    assert (ex.stats.bundles, ex.stats.max_bundle_size, ex.stats.provider_calls) == (3, 4, 3)
    for request in queued:
        outcome = by_id(outcomes)[request.request_id]
        assert outcome.success.winner_id in (request.essay_a, request.essay_b)
        assert outcome.batch_id == request.batch_id
        assert outcome.correlation_id == request.correlation_id


def test_serial_bundle_an_incompatible_request_leads_the_next_bundle():
    clock = FakeClock()
    provider = simulated(clock)
    queued = [
        make_request("a"),
        make_request("b"),
        make_request("x", overrides={"temperature": 0.7}),
        make_request("c"),
    ]
    ex = executor(provider, SERIAL, clock)
    first = ex.process_next(queued, clock())
    assert [r.request_id for r in first.bundle] == ["a", "b"]
    assert first.held_back.request_id == "x"
    assert Counter(o.request_id for o in first.outcomes) == Counter({"a": 1, "b": 1})
    second = ex.process_next(first.rest, clock())
    assert [r.request_id for r in second.bundle] == ["x"]
    assert [r.request_id for r in second.rest] == ["c"]


def test_serial_bundle_one_failing_item_does_not_discard_sibling_successes():
    clock = FakeClock()
    provider = simulated(clock, fail_items={"c1", "c3"})
    queued = requests(5)
    outcomes = by_id(executor(provider, SERIAL, clock).drain(queued, clock()))
    assert provider.calls == ["compare_bundle"]  # item failures are not retryable here
    assert {i for i, o in outcomes.items() if o.succeeded} == {"c0", "c2", "c4"}
    assert outcomes["c1"].failure.error_code == "SIMULATED_ITEM_FAILURE"


def test_serial_bundle_a_missing_result_is_retried_then_fails_that_item_alone():
    clock = FakeClock()
    provider = simulated(clock, drop_items={"c2"})
    queued = requests(4)
    outcomes = by_id(executor(provider, SERIAL, clock, max_attempts=3).drain(queued, clock()))
    assert provider.calls == ["compare_bundle"] * 3
    assert outcomes["c2"].failure.error_code == "RESULT_MISSING"
    assert outcomes["c2"].failure.retryable
    assert sum(o.succeeded for o in outcomes.values()) == 3


def test_serial_bundle_a_result_for_an_unknown_id_is_ignored_and_logged():
    clock = FakeClock()
    verdict = ProviderVerdict(winner_id="e1", confidence=3, justification="ok")
    queued = [make_request("c0", essay_a="e1", essay_b="e2")]
    provider = ScriptedBundleProvider(
        [ItemResult("c0", verdict=verdict), ItemResult("stranger", verdict=verdict)]
    )
    with capture_logs() as logs:
        outcomes = executor(provider, SERIAL, clock).drain(queued, clock())
    assert_one_outcome_each(outcomes, queued)
    assert outcomes[0].succeeded
    unknown = [e for e in logs if e["event"] == "lps.result_unknown_id"]
    assert unknown and unknown[0]["custom_id"] == "stranger"
    assert unknown[0]["queue_processing_mode"] == "serial_bundle"


def test_serial_bundle_a_whole_call_failure_fails_every_request_once():
    clock = FakeClock()
    provider = simulated(clock, call_errors=[ProviderError("bad request")])
    queued = requests(3)
    outcomes = executor(provider, SERIAL, clock).drain(queued, clock())
    assert_one_outcome_each(outcomes, queued)
    assert codes(outcomes) == Counter({"PROVIDER_ERROR": 3})
    assert provider.calls == ["compare_bundle"]


@pytest.mark.parametrize(
    ("verdict", "problem"),
    [
        (ProviderVerdict(winner_id="e9", confidence=3, justification=""), "neither"),
        (ProviderVerdict(winner_id="e1", confidence=0, justification=""), "confidence"),
        (ProviderVerdict(winner_id="e1", confidence=6, justification=""), "confidence"),
        (
            ProviderVerdict(winner_id="e1", confidence=3, justification="", prompt_tokens=-1),
            "token",
        ),
    ],
)
def test_an_implausible_verdict_becomes_an_invalid_response_failure(verdict, problem):
    clock = FakeClock()
    queued = [make_request("c0", essay_a="e1", essay_b="e2")]
    provider = ScriptedBundleProvider([ItemResult("c0", verdict=verdict)])
    [outcome] = executor(provider, SERIAL, clock).drain(queued, clock())
    assert outcome.failure.error_code == "INVALID_RESPONSE"
    assert problem in outcome.failure.message
    assert not outcome.failure.retryable


def test_a_long_justification_is_truncated_not_dropped():
    clock = FakeClock()
    text = "because " * 200
    verdict = ProviderVerdict(winner_id="e1", confidence=4, justification=text)
    queued = [make_request("c0", essay_a="e1", essay_b="e2")]
    provider = ScriptedBundleProvider([ItemResult("c0", verdict=verdict)])
    [outcome] = executor(provider, SERIAL, clock).drain(queued, clock())
    assert len(outcome.success.justification) == JUSTIFICATION_MAX_CHARS
    assert outcome.success.justification.startswith("because because")


def test_an_item_failure_reported_by_the_provider_keeps_its_code_and_flag():
    clock = FakeClock()
    failure = ProviderFailure("CONTENT_FILTER", "refused", retryable=False)
    queued = [make_request("c0")]
    provider = ScriptedBundleProvider([ItemResult("c0", failure=failure)])
    [outcome] = executor(provider, SERIAL, clock).drain(queued, clock())
    assert (outcome.failure.error_code, outcome.failure.retryable) == ("CONTENT_FILTER", False)


def test_a_broken_provider_answer_still_yields_one_internal_error_per_request():
    clock = FakeClock()
    queued = requests(3)
    provider = ScriptedBundleProvider(42)  # not even iterable
    with capture_logs() as logs:
        outcomes = executor(provider, SERIAL, clock).drain(queued, clock())
    assert_one_outcome_each(outcomes, queued)
    assert codes(outcomes) == Counter({"INTERNAL_ERROR": 3})
    assert any(e["event"] == "lps.internal_error" for e in logs)


def test_an_executor_without_a_fixed_mode_follows_each_bundles_hint():
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(0))
    queued = [
        make_request("p0", hint=QueueProcessingMode.PER_REQUEST, size=1),
        make_request("p1", hint=QueueProcessingMode.PER_REQUEST, size=1),
        make_request("s0", hint=QueueProcessingMode.SERIAL_BUNDLE),
        make_request("s1", hint=QueueProcessingMode.SERIAL_BUNDLE),
        make_request("b0", hint=QueueProcessingMode.BATCH_API),
        make_request("n0", hint=None),
    ]
    outcomes = by_id(executor(provider, None, clock).drain(queued, clock()))
    modes = {i: o.queue_mode.value for i, o in outcomes.items()}
    assert modes == {
        "p0": "per_request",
        "p1": "per_request",
        "s0": "serial_bundle",
        "s1": "serial_bundle",
        "b0": "batch_api",
        "n0": "serial_bundle",
    }
    assert provider.calls.count("schedule_job") == 1


@pytest.mark.parametrize("mode", list(QueueProcessingMode))
def test_every_mode_returns_the_same_bundle_result_shape(mode):
    clock = FakeClock()
    provider = simulated(clock)
    queued = [*requests(3), make_request("x", provider="openai")]
    result = executor(provider, mode, clock).process_next(queued, clock())
    assert result.mode is mode
    assert [r.request_id for r in result.bundle] == ["c0", "c1", "c2"]
    assert sorted(o.request_id for o in result.outcomes) == ["c0", "c1", "c2"]
    assert result.held_back.request_id == "x"
    assert [r.request_id for r in result.rest] == ["x"]
    assert (result.job_ref is not None) is (mode is QueueProcessingMode.BATCH_API)


def test_per_request_a_garbage_answer_fails_only_its_own_request():
    clock = FakeClock()
    provider = simulated(clock)
    real_compare = provider.compare
    provider.compare = lambda item: None if item.custom_id == "c1" else real_compare(item)
    outcomes = by_id(executor(provider, PER_REQUEST, clock).drain(requests(3), clock()))
    assert outcomes["c1"].failure.error_code == "PROVIDER_ERROR"
    assert "not a verdict" in outcomes["c1"].failure.message
    assert outcomes["c0"].succeeded and outcomes["c2"].succeeded
