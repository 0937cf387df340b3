"""Catch-up reads the log a page ahead of its writes, and that changes nothing it guarantees.

On PostgreSQL the runner reads page n+1 in a thread of its own while page n is written;
SQLite reads one page after the other in the caller's thread. Either way: each event
applied exactly once, a stale page (another runner moved the position) is thrown away
with whatever was read after it, a page that fails is applied read model by read model,
``stop()`` ends the catch-up after the page being written, and a failed read is raised
after the pages before it are committed. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from typing import Any

import psycopg
import pytest

from application.batches import BatchApplication
from domain.batch import CJBatch
from projections.read_ahead import READER_THREAD
from projections.runner import ProjectionFailed, ReadModelRunner
from tests.conftest import AppFactory
from tests.fakes import run_batch
from tests.unit.test_projections import assert_read_models_match_log

_refs = count()
PAGE = 10


def logged(app: BatchApplication, batches: int = 3) -> list[Any]:
    return [
        run_batch(app, n=6, ref=f"ahead-{next(_refs)}", failure_rate=0.2, seed=i)
        for i in range(batches)
    ]


def readers_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == READER_THREAD]


class Recorder:
    """Wraps a runner's store: records each read of the log (the thread, where it starts)
    and lets a test act just before each page's writing transaction."""

    def __init__(self, runner: ReadModelRunner, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: list[tuple[str, int]] = []
        self.writes: list[int] = []  # where each page written (or tried) starts
        self.before_write: Any = None
        store = runner.store
        read, write = store.notifications, store.writing_together

        def notifications(recorder: Any, start: int, limit: int, stop: int | None = None) -> Any:
            self.reads.append((threading.current_thread().name, start))
            return read(recorder, start, limit, stop)

        @contextmanager
        def writing_together(targets: Any, start: int, position: int) -> Iterator[Any]:
            self.writes.append(start)
            if self.before_write is not None:
                self.before_write(len(self.writes), start, position)
            with write(targets, start, position) as c:
                yield c

        monkeypatch.setattr(store, "notifications", notifications)
        monkeypatch.setattr(store, "writing_together", writing_together)


def test_the_runners_read_of_the_log_is_the_librarys(make_app: AppFactory) -> None:
    app = make_app()
    logged(app, batches=1)
    runner = ReadModelRunner(app)
    head = runner.head()
    for start, limit, stop in ((0, 1000, None), (3, 7, None), (5, 1000, head - 2), (head, 5, None)):
        ours = runner.store.notifications(app.recorder, start, limit, stop)
        library = app.recorder.select_notifications(
            start=start, limit=limit, stop=stop, inclusive_of_start=False
        )
        fields = ("id", "originator_id", "originator_version", "topic")
        assert [tuple(getattr(n, f) for f in fields) for n in ours] == [
            tuple(getattr(n, f) for f in fields) for n in library
        ]
        assert [bytes(n.state) for n in ours] == [bytes(n.state) for n in library]
        assert [runner.decode(n) for n in ours] == [runner.decode(n) for n in library]


def test_the_next_page_is_read_while_a_page_is_written_on_postgresql(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    ids = logged(app)
    runner = ReadModelRunner(app, page_size=PAGE)
    recorder = Recorder(runner, monkeypatch)
    next_page_read = threading.Event()
    read = runner.store.notifications

    def notifications(recorder_: Any, start: int, limit: int, stop: int | None = None) -> Any:
        if start == PAGE:  # the second page: the first one ends at position PAGE
            next_page_read.set()
        return read(recorder_, start, limit, stop)

    monkeypatch.setattr(runner.store, "notifications", notifications)

    def before_write(page: int, start: int, end: int) -> None:
        if page == 1 and runner.store.reads_ahead:  # the reader gets there meanwhile
            assert next_page_read.wait(30), "page 2 was not read while page 1 was written"

    recorder.before_write = before_write
    interval = sys.getswitchinterval()
    assert runner.run_once() == runner.head()
    threads = {thread for thread, _ in recorder.reads}
    if runner.store.reads_ahead:
        assert threads == {"MainThread", READER_THREAD}
        assert [start for thread, start in recorder.reads if thread == "MainThread"] == [0]
    else:
        assert threads == {"MainThread"}
    assert recorder.writes == sorted(set(recorder.writes)), "each page written once, in order"
    assert readers_alive() == []
    assert sys.getswitchinterval() == interval, "the GIL switch interval is given back"
    assert_read_models_match_log(app, runner, ids)


def test_a_stale_page_throws_away_what_was_read_after_it(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another runner applies the first events while this one is about to write its first
    page: that page and every page read ahead of it are dropped, and catching up resumes
    from where the other runner committed; every event is applied once."""
    app = make_app()
    ids = logged(app)
    runner = ReadModelRunner(app, page_size=PAGE)
    other = ReadModelRunner(make_app(), page_size=PAGE)
    recorder = Recorder(runner, monkeypatch)
    moved_to = 2 * PAGE + 5  # inside this runner's third page

    def before_write(page: int, start: int, end: int) -> None:
        if page == 1:
            for name in other.projections:
                other.catch_up(name, until=moved_to)

    recorder.before_write = before_write
    runner.run_once()
    assert recorder.writes[:2] == [0, moved_to], "the stale page, then from the other's end"
    assert any(start == moved_to for _, start in recorder.reads), "read again from there"
    assert {s.lag for s in runner.status()} == {0}
    assert readers_alive() == []
    assert_read_models_match_log(app, runner, ids)


def test_stop_ends_the_catch_up_after_the_page_being_written(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    ids = logged(app)
    runner = ReadModelRunner(app, page_size=PAGE)
    recorder = Recorder(runner, monkeypatch)
    third: list[int] = []

    def before_write(page: int, start: int, end: int) -> None:
        if page == 3:
            third.append(end)
            runner.stop()

    recorder.before_write = before_write
    assert runner.run_once() == 3 * PAGE
    assert {s.position for s in runner.status()} == {third[0]}, "nothing after the third page"
    assert len(recorder.writes) == 3
    assert readers_alive() == []
    ReadModelRunner(app, page_size=PAGE).run_once()
    assert_read_models_match_log(app, runner, ids)


def test_an_event_that_cannot_be_decoded_stops_only_the_read_models_that_take_it(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page holding it is applied to each read model on its own: those that take the
    event stop before it, named in ``status``; the others catch up to the head."""
    app = make_app()
    ids = logged(app)
    runner = ReadModelRunner(app, page_size=PAGE)
    completed = [
        n.id
        for n in app.recorder.select_notifications(start=None, limit=10_000)
        if n.topic.endswith("ComparisonCompleted")
    ]
    bad = next(i for i in completed if i > 4 * PAGE)
    decode = runner.decode

    def refusing(notification: Any) -> Any:
        if notification.id == bad:
            raise ValueError("cannot decode this one")
        return decode(notification)

    monkeypatch.setattr(runner, "decode", refusing)
    with pytest.raises(ProjectionFailed, match="cannot decode this one") as failed:
        runner.run_once()
    assert failed.value.position == bad
    status = {s.name: s for s in runner.status()}
    takers = {
        name for name, p in runner.projections.items() if CJBatch.ComparisonCompleted in p.handles
    }
    assert takers == {"batch_summary", "comparisons"}
    for name, s in status.items():
        if name in takers:
            assert s.position == bad - 1 and (s.failure or "").startswith(f"event {bad}: ")
        else:
            assert s.lag == 0 and s.failure is None
    assert readers_alive() == []
    monkeypatch.setattr(runner, "decode", decode)
    runner.run_once()
    assert {(s.lag, s.failure) for s in runner.status()} == {(0, None)}
    assert_read_models_match_log(app, runner, ids)


def test_a_failed_read_is_raised_after_the_pages_before_it_are_written(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database goes away while the third page is read (ahead, on PostgreSQL): the
    runner raises it, as a failed read always did, with the first two pages committed; the
    next pass carries on from there."""
    app = make_app()
    ids = logged(app)
    runner = ReadModelRunner(app, page_size=PAGE)
    read = runner.store.notifications
    failed_once: list[int] = []

    def notifications(recorder: Any, start: int, limit: int, stop: int | None = None) -> Any:
        if start == 2 * PAGE and not failed_once:
            failed_once.append(start)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return read(recorder, start, limit, stop)

    monkeypatch.setattr(runner.store, "notifications", notifications)
    with pytest.raises(psycopg.OperationalError, match="server closed"):
        runner.run_once()
    assert {s.position for s in runner.status()} == {2 * PAGE}
    assert readers_alive() == []
    runner.run_once()
    assert {s.lag for s in runner.status()} == {0}
    assert_read_models_match_log(app, runner, ids)
