"""The runner reads the log through its store: on PostgreSQL as tuples in binary format,
and what it reads is what the library's ``select_notifications`` gives."""

from __future__ import annotations

from itertools import count
from typing import Any

from application.batches import BatchApplication
from projections.runner import ReadModelRunner
from tests.conftest import AppFactory
from tests.fakes import run_batch

_refs = count()


def logged(app: BatchApplication, batches: int = 3) -> list[Any]:
    return [
        run_batch(app, n=6, ref=f"ahead-{next(_refs)}", failure_rate=0.2, seed=i)
        for i in range(batches)
    ]


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
