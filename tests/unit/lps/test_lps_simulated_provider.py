"""The simulated provider's own behaviour: job timing on the injected clock, and its knobs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.lps import BatchJobStatus, ProviderError, ProviderItem, RateLimitedError
from tests.unit.lps.support import FakeClock, simulated

ITEMS = [ProviderItem(f"c{i}", "e1", f"e{i + 2}", "sim-1") for i in range(3)]


def test_a_job_completes_after_its_delay_on_the_injected_clock():
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(minutes=2))
    job_id = provider.schedule_job(ITEMS)
    assert provider.job_status(job_id) is BatchJobStatus.RUNNING
    clock.advance(seconds=119)
    assert provider.job_status(job_id) is BatchJobStatus.RUNNING
    clock.advance(seconds=1)
    assert provider.job_status(job_id) is BatchJobStatus.COMPLETED
    assert [r.custom_id for r in provider.collect_results(job_id)] == ["c0", "c1", "c2"]


def test_results_match_the_per_call_answers():
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(0))
    job_id = provider.schedule_job(ITEMS)
    batch = {r.custom_id: r.verdict for r in provider.collect_results(job_id)}
    bundle = {r.custom_id: r.verdict for r in provider.compare_bundle(ITEMS)}
    single = {item.custom_id: provider.compare(item) for item in ITEMS}
    assert batch == bundle == single


def test_collecting_an_unfinished_job_raises():
    clock = FakeClock()
    provider = simulated(clock, never_finish=True)
    job_id = provider.schedule_job(ITEMS)
    clock.advance(days=3)
    assert provider.job_status(job_id) is BatchJobStatus.RUNNING
    with pytest.raises(ProviderError):
        provider.collect_results(job_id)


def test_an_unknown_job_is_an_error():
    with pytest.raises(ProviderError) as raised:
        simulated(FakeClock()).job_status("nope")
    assert raised.value.code == "JOB_NOT_FOUND"


def test_call_errors_are_raised_once_each_in_order():
    provider = simulated(FakeClock(), call_errors=[RateLimitedError("a"), TimeoutError()])
    with pytest.raises(RateLimitedError):
        provider.compare(ITEMS[0])
    with pytest.raises(TimeoutError):
        provider.compare_bundle(ITEMS)
    assert len(provider.compare_bundle(ITEMS)) == 3


def test_dropped_failed_and_unknown_items_shape_the_results():
    clock = FakeClock()
    provider = simulated(
        clock,
        job_delay=timedelta(0),
        drop_items={"c0"},
        fail_items={"c1"},
        unknown_result_ids=["zz"],
    )
    results = provider.collect_results(provider.schedule_job(ITEMS))
    assert [(r.custom_id, r.verdict is not None) for r in results] == [
        ("c1", False),
        ("c2", True),
        ("zz", True),
    ]


def test_only_final_statuses_can_be_configured():
    with pytest.raises(ValueError):
        simulated(FakeClock(), job_final_status=BatchJobStatus.RUNNING)
