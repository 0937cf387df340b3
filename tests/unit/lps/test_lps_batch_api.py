"""batch_api: one provider batch job per bundle, and what happens when any step fails."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from application.lps import (
    BatchJobRef,
    BatchJobStatus,
    JobPolling,
    ProviderError,
    ProviderServerError,
    RateLimitedError,
)
from domain.lps import QueueProcessingMode
from tests.unit.lps.support import (
    T0,
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

BATCH = QueueProcessingMode.BATCH_API


class ProcessDied(BaseException):
    """Stands for the process being killed: nothing in the executor may catch it."""


def run(provider, clock, queued, **kwargs):
    observer = RecordingObserver()
    ex = executor(provider, BATCH, clock, observer=observer, **kwargs)
    outcomes = ex.drain(queued, clock())
    assert_one_outcome_each(outcomes, queued)
    return ex, observer, outcomes


def assert_no_success_anywhere(ex, observer, outcomes):
    """No success outcome, counter or observer call: no success handler ran."""
    assert not any(o.succeeded for o in outcomes)
    assert ex.stats.outcomes["success"] == 0
    assert not [e for e in observer.of("request_finished") if e[2] == "success"]


def test_a_bundle_becomes_one_job_that_is_polled_collected_and_mapped_back():
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(seconds=90))
    queued = requests(6)
    ex, observer, outcomes = run(provider, clock, queued)
    assert all(o.succeeded and o.queue_mode is BATCH for o in outcomes)
    assert provider.calls == ["schedule_job"] + ["job_status"] * 4 + ["collect_results"]
    assert clock.sleeps == [30.0, 30.0, 30.0]
    assert (ex.stats.jobs, ex.stats.job_polls, ex.stats.provider_calls) == (1, 4, 2)
    [job] = observer.of("job_finished")
    assert job[1:4] == ("batch_api", "completed", 6)
    assert job[4] == pytest.approx(90.0)


def test_results_are_mapped_back_by_custom_id_whatever_their_order():
    clock = FakeClock()
    provider = simulated(clock)
    queued = requests(5)
    original = provider.collect_results
    provider.collect_results = lambda job_id, items=(): list(reversed(original(job_id, items)))
    _, _, outcomes = run(provider, clock, queued)
    for request in queued:
        verdict = provider.judge.judge(request.request_id, request.essay_a, request.essay_b)
        assert by_id(outcomes)[request.request_id].success.winner_id == verdict.winner_id


def test_schedule_job_raising_fails_every_request_once_and_nothing_succeeds():
    clock = FakeClock()
    provider = simulated(clock, schedule_error=ProviderError("malformed batch file"))
    queued = requests(4)
    ex, observer, outcomes = run(provider, clock, queued)
    assert codes(outcomes) == Counter({"JOB_SCHEDULE_FAILED": 4})
    assert "malformed batch file" in outcomes[0].failure.message
    assert provider.calls == ["schedule_job"]
    assert_no_success_anywhere(ex, observer, outcomes)
    assert [e[2] for e in observer.of("job_finished")] == ["schedule_failed"]
    assert ex.stats.jobs == 0


def test_a_retryable_schedule_error_is_retried_then_fails_once_per_request():
    clock = FakeClock()
    provider = simulated(clock, schedule_error=RateLimitedError("429"))
    queued = requests(3)
    ex, observer, outcomes = run(provider, clock, queued, max_attempts=3)
    assert provider.calls == ["schedule_job"] * 3
    assert codes(outcomes) == Counter({"JOB_SCHEDULE_FAILED": 3})
    assert all(o.failure.retryable for o in outcomes)
    assert_no_success_anywhere(ex, observer, outcomes)


def test_a_transient_schedule_error_does_not_stop_the_job():
    clock = FakeClock()
    provider = FlakyProvider(simulated(clock), schedule_job=[ProviderServerError("down")])
    queued = requests(3)
    ex, _, outcomes = run(provider, clock, queued)
    assert all(o.succeeded for o in outcomes)
    assert ex.stats.retries == 1 and ex.stats.jobs == 1


def test_collect_results_raising_fails_every_request_once_and_nothing_succeeds():
    clock = FakeClock()
    provider = simulated(clock, collect_error=ProviderError("output file gone"))
    queued = requests(4)
    ex, observer, outcomes = run(provider, clock, queued)
    assert codes(outcomes) == Counter({"JOB_COLLECT_FAILED": 4})
    assert provider.calls.count("collect_results") == 1
    assert_no_success_anywhere(ex, observer, outcomes)
    assert [e[2] for e in observer.of("job_finished")] == ["collect_failed"]


def test_a_transient_collect_error_is_retried():
    clock = FakeClock()
    provider = FlakyProvider(simulated(clock), collect_results=[TimeoutError()])
    _, _, outcomes = run(provider, clock, requests(3))
    assert all(o.succeeded for o in outcomes)


@pytest.mark.parametrize(
    ("final_status", "code", "label"),
    [
        (BatchJobStatus.FAILED, "JOB_FAILED", "failed"),
        (BatchJobStatus.CANCELLED, "JOB_CANCELLED", "cancelled"),
    ],
)
def test_a_job_that_ends_badly_fails_every_request_once_and_is_never_collected(
    final_status, code, label
):
    clock = FakeClock()
    provider = simulated(clock, job_final_status=final_status)
    queued = requests(5)
    ex, observer, outcomes = run(provider, clock, queued)
    assert codes(outcomes) == Counter({code: 5})
    assert "collect_results" not in provider.calls
    assert_no_success_anywhere(ex, observer, outcomes)
    assert [e[2] for e in observer.of("job_finished")] == [label]


def test_a_job_that_never_finishes_times_out_and_fails_every_request_once():
    clock = FakeClock()
    provider = simulated(clock, never_finish=True)
    queued = requests(3)
    polling = JobPolling(poll_interval=timedelta(minutes=5), timeout=timedelta(minutes=30))
    with capture_logs() as logs:
        ex, observer, outcomes = run(provider, clock, queued, job_polling=polling)
    assert codes(outcomes) == Counter({"JOB_TIMEOUT": 3})
    assert clock.now - T0 == timedelta(minutes=30)
    assert provider.calls.count("job_status") == 7
    assert "collect_results" not in provider.calls
    assert_no_success_anywhere(ex, observer, outcomes)
    [failed] = [e for e in logs if e["event"] == "lps.job_failed"]
    assert failed["job_status"] == "timed_out"
    assert failed["queue_processing_mode"] == "batch_api"


def test_polling_is_bounded_even_if_the_clock_never_moves():
    clock = FakeClock()
    provider = simulated(clock, never_finish=True)
    polling = JobPolling(poll_interval=timedelta(seconds=10), timeout=timedelta(seconds=60))
    ex = executor(provider, BATCH, clock, job_polling=polling, sleep=lambda seconds: None)
    outcomes = ex.drain(requests(2), clock())
    assert codes(outcomes) == Counter({"JOB_TIMEOUT": 2})
    assert provider.calls.count("job_status") == polling.max_polls == 7


def test_a_status_error_that_is_not_retryable_fails_the_job():
    clock = FakeClock()
    provider = simulated(clock, status_error=ProviderError("forbidden"))
    ex, observer, outcomes = run(provider, clock, requests(2))
    assert codes(outcomes) == Counter({"JOB_STATUS_FAILED": 2})
    assert provider.calls.count("job_status") == 1
    assert_no_success_anywhere(ex, observer, outcomes)


def test_transient_status_errors_are_polled_through():
    clock = FakeClock()
    provider = FlakyProvider(simulated(clock), job_status=[ConnectionError(), TimeoutError()])
    _, _, outcomes = run(provider, clock, requests(2))
    assert all(o.succeeded for o in outcomes)


def test_a_missing_result_fails_that_item_alone():
    clock = FakeClock()
    provider = simulated(clock, drop_items={"c1"})
    queued = requests(4)
    _, observer, outcomes = run(provider, clock, queued)
    outcome = by_id(outcomes)
    assert outcome["c1"].failure.error_code == "RESULT_MISSING"
    assert {i for i, o in outcome.items() if o.succeeded} == {"c0", "c2", "c3"}
    assert provider.calls.count("schedule_job") == 1  # the job is not resubmitted
    assert [e[2] for e in observer.of("job_finished")] == ["completed"]


def test_a_result_for_an_unknown_id_is_ignored_and_logged():
    clock = FakeClock()
    provider = simulated(clock, unknown_result_ids=["ghost-1"])
    queued = requests(2)
    with capture_logs() as logs:
        _, _, outcomes = run(provider, clock, queued)
    assert all(o.succeeded for o in outcomes)
    [unknown] = [e for e in logs if e["event"] == "lps.result_unknown_id"]
    assert unknown["custom_id"] == "ghost-1"
    assert unknown["queue_processing_mode"] == "batch_api"
    assert unknown["batch_ids"] == ["batch-1"]


def test_partial_success_keeps_the_successes():
    clock = FakeClock()
    provider = simulated(clock, fail_items={"c0", "c3"})
    queued = requests(6)
    _, _, outcomes = run(provider, clock, queued)
    assert codes(outcomes) == Counter({"success": 4, "SIMULATED_ITEM_FAILURE": 2})


def test_expired_requests_get_an_expired_outcome_and_are_not_sent():
    clock = FakeClock()
    clock.advance(hours=1)
    provider = simulated(clock)
    queued = [make_request("old", ttl=timedelta(minutes=10)), *requests(2)]
    ex, observer, outcomes = run(provider, clock, queued)
    assert by_id(outcomes)["old"].failure.error_code == "EXPIRED"
    assert ex.stats.outcomes == {"success": 2, "failure": 0, "expired": 1}
    assert [e[3] for e in observer.of("job_finished")] == [2]


def test_the_job_ref_is_handed_to_the_hook_and_survives_json():
    clock = FakeClock()
    saved: list[str] = []
    provider = simulated(clock)
    ex = executor(provider, BATCH, clock, on_job_scheduled=lambda ref: saved.append(ref.to_json()))
    result = ex.process_next(requests(3), clock())
    [text] = saved
    ref = BatchJobRef.from_json(text)
    assert ref == result.job_ref
    assert ref.custom_ids == ("c0", "c1", "c2")
    assert ref.submitted_at == T0
    assert ref.provider == "simulated"


def test_a_failing_hook_does_not_cost_any_outcome():
    clock = FakeClock()

    def broken_store(ref):
        raise OSError("disk full")

    with capture_logs() as logs:
        _, _, outcomes = run(simulated(clock), clock, requests(3), on_job_scheduled=broken_store)
    assert all(o.succeeded for o in outcomes)
    assert any(e["event"] == "lps.job_ref_not_saved" for e in logs)


def test_a_job_can_be_resumed_by_a_new_executor_after_a_restart():
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(minutes=10))
    queued = requests(4)
    saved: list[str] = []

    def save_then_die(ref: BatchJobRef) -> None:
        saved.append(ref.to_json())
        raise ProcessDied

    first = executor(provider, BATCH, clock, on_job_scheduled=save_then_die)
    with pytest.raises(ProcessDied):
        first.process_next(queued, clock())

    clock.advance(minutes=15)
    second = executor(provider, BATCH, clock)
    result = second.resume_job(BatchJobRef.from_json(saved[0]), queued)
    assert_one_outcome_each(result.outcomes, queued)
    assert all(o.succeeded for o in result.outcomes)
    assert provider.calls.count("schedule_job") == 1
    assert second.stats.outcomes["success"] == 4


def test_resume_answers_requests_the_job_does_not_hold():
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(0))
    queued = requests(2)
    ref = executor(provider, BATCH, clock).process_next(queued, clock()).job_ref
    stranger = make_request("stranger")
    result = executor(provider, BATCH, clock).resume_job(ref, [*queued, stranger, queued[0]])
    assert Counter(o.request_id for o in result.outcomes) == Counter(
        {"c0": 2, "c1": 1, "stranger": 1}
    )
    failures = [o for o in result.outcomes if not o.succeeded]
    assert {o.failure.error_code for o in failures} == {"NOT_IN_JOB"}
    assert len(failures) == 2


def test_a_resumed_job_keeps_its_original_timeout():
    clock = FakeClock()
    provider = simulated(clock, never_finish=True)
    polling = JobPolling(poll_interval=timedelta(minutes=1), timeout=timedelta(minutes=30))
    ref = BatchJobRef(
        job_id="simjob-0001", provider="simulated", custom_ids=("c0",), submitted_at=T0
    )
    provider.schedule_job([])  # creates simjob-0001
    clock.advance(hours=1)
    result = executor(provider, BATCH, clock, job_polling=polling).resume_job(
        ref, [make_request("c0")]
    )
    assert [o.failure.error_code for o in result.outcomes] == ["JOB_TIMEOUT"]
    assert provider.calls.count("job_status") == 1


def test_a_job_ref_with_an_unknown_version_or_naive_time_is_rejected():
    ref = BatchJobRef("j", "simulated", ("a",), T0)
    with pytest.raises(ValueError, match="version"):
        BatchJobRef.from_json(ref.to_json().replace('"version": 1', '"version": 2'))
    with pytest.raises(ValueError, match="timezone"):
        BatchJobRef.from_json(ref.to_json().replace("+00:00", ""))
