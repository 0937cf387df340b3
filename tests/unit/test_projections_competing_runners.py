"""Several runners on one log (one per ``serve`` process): every event applied exactly once.

Every test runs on SQLite and on PostgreSQL (``make_app`` → ``store_env``).
"""

from __future__ import annotations

import threading
import time
from itertools import count

from projections.catalogue import PROJECTIONS
from projections.runner import ReadModelRunner
from tests.conftest import AppFactory
from tests.fakes import run_batch
from tests.unit.test_projections import assert_read_models_match_log

_refs = count()


def test_a_page_read_from_a_stale_position_is_not_applied(make_app: AppFactory) -> None:
    """Runner B reads its position; runner A applies the first events and commits; B's
    page starts before A's end. The old check (only where a page ends) accepted B's page
    and counted A's events twice."""
    app = make_app()
    batch_id = run_batch(app, n=6, ref="stale-1")
    a = ReadModelRunner(app)
    b = ReadModelRunner(make_app())
    name = "batch_summary"
    generation = b._active(name)
    stale_position = b.store.position(name, generation)
    page = app.recorder.select_notifications(
        start=stale_position, limit=40, inclusive_of_start=False
    )
    first = app.recorder.select_notifications(start=0, limit=10, inclusive_of_start=False)
    assert a._apply_page(name, generation, 0, list(first)) is True

    assert b._apply_page(name, generation, stale_position, list(page)) is False
    assert b.store.position(name, generation) == first[-1].id, "the stale page changed nothing"

    b.run_once()
    assert_read_models_match_log(app, b, [batch_id])


def test_competing_runners_under_load_keep_every_read_model_equal_to_a_fold(
    make_app: AppFactory,
) -> None:
    """Three runners follow one log while two writers keep appending batches; once all
    have caught up, every read model equals a fold over the log."""
    seed_app = make_app()
    ids = [run_batch(seed_app, n=5, ref=f"load-{next(_refs)}", failure_rate=0.2)]
    runners = [ReadModelRunner(make_app(), page_size=50, poll_interval=0.001) for _ in range(3)]
    writers = [make_app() for _ in range(2)]
    written: list[list[object]] = [[] for _ in writers]

    def write(index: int) -> None:
        for _ in range(3):
            written[index].append(
                run_batch(writers[index], n=6, ref=f"load-{next(_refs)}", failure_rate=0.2)
            )

    for runner in runners:
        runner.start()
    try:
        threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        deadline = time.monotonic() + 60
        while any(any(r.lag().values()) for r in runners) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for runner in runners:
            runner.stop()
    assert [r.last_error for r in runners] == [None, None, None]
    assert runners[0].lag() == {name: 0 for name in PROJECTIONS}
    all_ids = ids + [b for batch_ids in written for b in batch_ids]  # type: ignore[misc]
    assert len(all_ids) == 7
    assert_read_models_match_log(seed_app, runners[0], all_ids)  # type: ignore[arg-type]
