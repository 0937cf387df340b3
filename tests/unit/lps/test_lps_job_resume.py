"""A provider batch job outlives the worker that scheduled it: the job id is stored when
the job is scheduled, and a worker that gets the same requests again resumes the job
instead of submitting (and paying for) it a second time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from domain.lps import QueueProcessingMode
from infrastructure.lps.job_store import SqliteJobStore
from tests.unit.lps.support import FakeClock, executor, requests, simulated

BATCH = QueueProcessingMode.BATCH_API


class Killed(BaseException):
    """Stands for kill -9: nothing in the executor catches it."""


def test_a_restarted_executor_resumes_the_stored_job_and_schedules_none(tmp_path: Path):
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(seconds=90))
    store = SqliteJobStore(tmp_path / "lps-state.db")
    queued = requests(5)

    def die(_: float) -> None:
        raise Killed

    first = executor(provider, BATCH, clock, jobs=store, sleep=die)
    with pytest.raises(Killed):
        first.drain(queued, clock())
    assert provider.calls.count("schedule_job") == 1
    assert store.jobs() == [(store.jobs()[0][0], False)]

    second = executor(provider, BATCH, clock, jobs=SqliteJobStore(tmp_path / "lps-state.db"))
    outcomes = second.drain(queued, clock())
    assert provider.calls.count("schedule_job") == 1  # resumed, not resubmitted
    assert sorted(o.request_id for o in outcomes) == sorted(r.request_id for r in queued)
    assert all(o.succeeded for o in outcomes)
    assert second.stats.jobs_resumed == 1 and second.stats.jobs == 0
    assert [finished for _, finished in store.jobs()] == [True]


def test_requests_redelivered_in_two_groups_finish_the_job_once_both_are_answered(
    tmp_path: Path,
):
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(seconds=90))
    store = SqliteJobStore(tmp_path / "state.db")
    queued = requests(4)

    def die(_: float) -> None:
        raise Killed

    with pytest.raises(Killed):
        executor(provider, BATCH, clock, jobs=store, sleep=die).drain(queued, clock())
    again = executor(provider, BATCH, clock, jobs=store)
    assert all(o.succeeded for o in again.drain(queued[:2], clock()))
    assert [finished for _, finished in store.jobs()] == [False]
    assert all(o.succeeded for o in again.drain(queued[2:], clock()))
    assert [finished for _, finished in store.jobs()] == [True]
    assert provider.calls.count("schedule_job") == 1


def test_a_finished_job_is_not_resumed_for_a_new_request_with_the_same_id(tmp_path: Path):
    clock = FakeClock()
    provider = simulated(clock, job_delay=timedelta(seconds=1))
    store = SqliteJobStore(tmp_path / "state.db")
    queued = requests(2)
    run = executor(provider, BATCH, clock, jobs=store)
    run.drain(queued, clock())
    run.drain(queued, clock())
    assert provider.calls.count("schedule_job") == 2


def test_jobs_of_another_provider_are_not_resumed(tmp_path: Path):
    from application.lps import BatchJobRef

    store = SqliteJobStore(tmp_path / "state.db")
    clock = FakeClock()
    store.save(BatchJobRef("other-1", "openai", ("c0", "c1"), clock()))
    assert store.open_jobs("simulated", ["c0"]) == []
    assert [r.job_id for r in store.open_jobs("openai", ["c1", "zz"])] == ["other-1"]
