"""Operating the read models: rebuild beside the live view, follow the log, refuse bad pages.

Every test runs on SQLite and on PostgreSQL (``make_app`` → ``store_env``).
"""

from __future__ import annotations

import threading
import time
from itertools import count
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from application.batches import BatchApplication
from projections.catalogue import PROJECTIONS
from projections.queries import ReadModels
from projections.runner import ProjectionFailed, ReadModelRunner, RebuildInProgress
from projections.store import table_name, tracking_key
from tests.conftest import AppFactory
from tests.fakes import run_batch
from tests.unit.test_projections import assert_read_models_match_log

_refs = count()


def dump(runner: ReadModelRunner) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read model's active tables, in a stable order."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for name, projection in runner.projections.items():
        generation = runner.store.active_generation(name)
        assert generation is not None
        for base in projection.ddl:
            table = runner.store.qualify(table_name(base, generation))
            selected = runner.store.select(f"SELECT * FROM {table}")
            rows[base] = sorted(tuple(sorted(r.items())) for r in selected)
    return rows


def batches(app: BatchApplication, k: int = 3, n: int = 6) -> list[Any]:
    return [run_batch(app, n=n, ref=f"ops-{next(_refs)}", failure_rate=0.2) for _ in range(k)]


def test_a_rebuilt_read_model_is_identical_to_the_incrementally_built_one(
    make_app: AppFactory,
) -> None:
    app = make_app()
    runner = ReadModelRunner(app, page_size=13)
    for _ in range(3):  # built incrementally, a batch at a time
        batches(app, k=1)
        runner.run_once()
    incremental = dump(runner)
    for name in PROJECTIONS:
        before = runner.store.active_generation(name)
        status = runner.rebuild(name)
        assert (status.generation, status.lag) == (before + 1, 0)  # type: ignore[operator]
    assert dump(runner) == incremental


def test_readers_keep_the_old_complete_view_until_the_switch(make_app: AppFactory) -> None:
    app = make_app()
    ids = batches(app, k=2)
    runner = ReadModelRunner(app, page_size=5)
    runner.run_once()
    models = ReadModels(runner.store)
    complete = {str(b): (models.batch_summary(str(b)), models.comparisons(str(b))) for b in ids}
    pages_seen: list[int] = []

    def reader_during_rebuild(position: int, head: int) -> None:
        pages_seen.append(position)
        for b, view in complete.items():
            assert (models.batch_summary(b), models.comparisons(b)) == view

    runner.rebuild("comparisons", progress=reader_during_rebuild)
    runner.rebuild("batch_summary", progress=reader_during_rebuild)
    assert len(pages_seen) > 10, "the readers looked many times while it was half built"
    assert {b: (models.batch_summary(b), models.comparisons(b)) for b in complete} == complete


def test_the_switch_waits_until_the_new_generation_has_everything_the_live_one_has(
    make_app: AppFactory,
) -> None:
    """Readers never step back: a new generation behind the live one is not switched to."""
    app = make_app()
    batches(app, k=1)
    runner = ReadModelRunner(app)
    runner.run_once()
    projection = runner.projections["decision_audit"]
    runner.store.create_generation("decision_audit", 2, projection.ddl, projection.indexes)
    assert runner.store.switch_if_caught_up("decision_audit", 1, 2, projection.ddl) is False
    assert runner.store.active_generation("decision_audit") == 1
    runner.catch_up("decision_audit", generation=2)
    assert runner.store.switch_if_caught_up("decision_audit", 1, 2, projection.ddl) is True
    assert runner.store.active_generation("decision_audit") == 2
    # already done:
    assert runner.store.switch_if_caught_up("decision_audit", 1, 2, projection.ddl) is False


def test_one_rebuild_of_a_read_model_at_a_time(make_app: AppFactory) -> None:
    app = make_app()
    batches(app, k=1)
    first = ReadModelRunner(app, page_size=5)
    second = ReadModelRunner(app)
    first.run_once()
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_progress(position: int, head: int) -> None:
        inside.set()
        release.wait(10)

    def rebuild_slowly() -> None:
        try:
            first.rebuild("rankings", progress=slow_progress)
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=rebuild_slowly)
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(RebuildInProgress):
            second.rebuild("rankings")
        second.rebuild("decision_audit")  # another read model is not held up
    finally:
        release.set()
        thread.join(10)
    assert errors == []
    assert second.store.active_generation("rankings") == 2
    second.rebuild("rankings")  # the lock was released
    assert second.store.active_generation("rankings") == 3


def test_a_rebuild_while_writers_and_the_live_runner_keep_going_ends_caught_up(
    make_app: AppFactory,
) -> None:
    app = make_app()
    ids = batches(app, k=2)
    live = ReadModelRunner(app, poll_interval=0.01)
    live.start()
    writer_app = make_app()
    try:
        writer = threading.Thread(target=lambda: ids.extend(batches(writer_app, k=3)))
        writer.start()
        rebuilder = ReadModelRunner(make_app(), page_size=7)
        for name in PROJECTIONS:
            rebuilder.rebuild(name)
        writer.join(60)
        deadline = time.monotonic() + 20
        while any(live.lag().values()) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        live.stop()
    assert live.last_error is None
    assert live.lag() == {name: 0 for name in PROJECTIONS}
    assert_read_models_match_log(app, live, ids)


def test_an_embedded_runner_follows_new_events_and_reports_its_lag(make_app: AppFactory) -> None:
    app = make_app()
    runner = ReadModelRunner(app, poll_interval=0.01)
    assert set(runner.lag()) == set(PROJECTIONS)
    runner.start()
    try:
        ids = batches(app, k=2)
        deadline = time.monotonic() + 20
        while any(runner.lag().values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runner.lag() == {name: 0 for name in PROJECTIONS}
    finally:
        runner.stop()
    assert runner._thread is None
    assert_read_models_match_log(app, runner, ids)


def test_a_page_whose_rows_are_refused_stops_that_read_model_but_not_the_others(
    make_app: AppFactory,
) -> None:
    app = make_app()
    (batch_id,) = batches(app, k=1)
    runner = ReadModelRunner(app)
    squatter = runner.store.qualify(table_name("rankings", 1))
    with runner.store.write_transaction() as c:
        runner.store.execute(
            c,
            f"INSERT INTO {squatter} (batch_id, essay_id, score, se, rank, comparisons) "
            "VALUES (?, 'essay-00', 0, 0, 1, 0)",
            (str(batch_id),),
        )
    with pytest.raises(ProjectionFailed, match="rankings cannot apply event") as failed:
        runner.run_once()  # raised, not retried forever
    assert "unique" in str(failed.value).lower()  # the row the squatter holds
    assert runner.store.position("rankings", 1) < failed.value.position, "refused event stands"
    lag = runner.lag()
    assert lag.pop("rankings") > 0
    assert lag == {"batch_summary": 0, "comparisons": 0, "decision_audit": 0}
    failures = {s.name: s.failure for s in runner.status()}
    assert failures.pop("rankings", "").startswith(f"event {failed.value.position}: ")
    assert set(failures.values()) == {None}


def test_the_library_projection_entry_point_processes_each_event_exactly_once(
    make_app: AppFactory,
) -> None:
    """``Projection.process_event(event, tracking)``, one event per transaction, gives the
    runner's result; offering an event again is refused and changes nothing."""
    app = make_app()
    ids = batches(app, k=2)
    runner = ReadModelRunner(app)  # tables only; the events go through process_event
    for notification in app.recorder.select_notifications(start=None, limit=10_000):
        event = app.mapper.to_domain_event(notification)
        for projection in runner.projections.values():
            projection.process_event(event, Tracking(app.name, notification.id))
    assert_read_models_match_log(app, runner, ids)
    before = dump(runner)
    last = app.recorder.select_notifications(start=None, limit=10_000)[-1]
    with pytest.raises(IntegrityError):
        runner.projections["batch_summary"].process_event(
            app.mapper.to_domain_event(last), Tracking(app.name, last.id)
        )
    assert dump(runner) == before
    assert runner.store.max_tracking_id(tracking_key("batch_summary", 1)) == last.id


def test_stable_views_follow_the_live_generation_across_rebuilds(make_app: AppFactory) -> None:
    """SQL users and the API read ``rm_<table>``; a rebuild moves it to the new generation."""
    app = make_app()
    ids = batches(app, k=2)
    runner = ReadModelRunner(app)
    runner.run_once()
    models = ReadModels(runner.store, head=runner.head)
    before = {str(b): (models.rankings(str(b)), models.decisions(str(b))) for b in ids}
    assert all(rankings and decisions for rankings, decisions in before.values())
    for name in PROJECTIONS:
        runner.rebuild(name)
        runner.rebuild(name)
    assert runner.store.active_generation("rankings") == 3
    view = runner.store.qualify("rm_rankings")
    assert len(runner.store.select(f"SELECT * FROM {view}")) == sum(
        len(r) for r, _ in before.values()
    )
    after = {str(b): (models.rankings(str(b)), models.decisions(str(b))) for b in ids}
    assert after == before
    freshness = models.freshness("rankings", "decision_audit")
    assert freshness.position == runner.head() and freshness.lag == 0


def test_a_store_made_before_views_existed_gets_them_on_the_live_generation(
    make_app: AppFactory,
) -> None:
    app = make_app()
    ids = batches(app, k=1)
    runner = ReadModelRunner(app)
    runner.run_once()
    runner.rebuild("rankings")
    with runner.store.write_transaction() as c:
        c.execute(f"DROP VIEW {runner.store.qualify('rm_rankings')}")
    ReadModelRunner(make_app())  # what an upgraded process does when it starts
    assert ReadModels(runner.store).rankings(str(ids[0]))
