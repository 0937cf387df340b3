"""A page folded and written set-based gives exactly the rows of one statement per event.

``apply_page`` (what the runner uses) and ``apply`` (one event, one statement: the
library's ``process_event`` path) are fed the same events into two generations of the
same read model, on SQLite and PostgreSQL; every row of every table must be equal, float
for float. The events are real ones from run batches, in random orders (not only the
log's: an outcome before its request, a batch's events before its registration) and cut
into random pages. The runner's one pass per page is checked too: it uses a bounded
number of set-based statements per page, whatever the page holds, and moves every read
model's position in one transaction.
"""

from __future__ import annotations

import random
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.batches import BatchApplication
from domain.batch import CJBatch
from domain.values import BatchingMode
from projections.catalogue import PROJECTIONS, plain
from projections.runner import ReadModelRunner
from projections.store import ReadModelStoreMixin, column_types
from tests.conftest import AppFactory
from tests.fakes import run_batch
from tests.unit.test_content_store import NAMES, QuotingJudge, drive, register
from tests.unit.test_projections import assert_read_models_match_log

_refs = count()

KEYS = {
    "batch_summary": ("batch_id",),
    "rankings": ("batch_id", "essay_id"),
    "comparisons": ("comparison_id",),
    "decision_audit": ("batch_id", "version"),
}


def log_events(app: BatchApplication) -> list[Any]:
    return [
        app.mapper.to_domain_event(n)
        for n in app.recorder.select_notifications(start=None, limit=100_000)
    ]


def rows(store: ReadModelStoreMixin, name: str, generation: int) -> dict[str, list[Any]]:
    projection = PROJECTIONS[name]
    result = {}
    for base, table in store.tables_for(generation, projection.ddl).items():
        order = ", ".join(KEYS[base])
        result[base] = store.select(f"SELECT * FROM {table} ORDER BY {order}")
    return result


def apply_both_ways(
    runner: ReadModelRunner, events: list[Any], pages: list[int]
) -> dict[str, tuple[Any, Any]]:
    """Each read model: (rows from ``apply_page`` over ``pages``, rows from ``apply``)."""
    store = runner.store
    found = {}
    for name, projection in runner.projections.items():
        by_page, by_event = 10, 11
        for generation in (by_page, by_event):
            store.create_generation(name, generation, projection.ddl, projection.indexes)
        handled = [e for e in events if isinstance(e, projection.handles)]
        page_tables = store.tables_for(by_page, projection.ddl)
        start = 0
        for size in [*pages, len(events)]:
            page = events[start : start + size]
            start += size
            with store.write_transaction() as c:
                projection.apply_page(
                    store, c, page_tables, [e for e in page if isinstance(e, projection.handles)]
                )
        event_tables = store.tables_for(by_event, projection.ddl)
        with store.write_transaction() as c:
            for event in handled:
                projection.apply(store, c, event_tables, event)
        found[name] = (rows(store, name, by_page), rows(store, name, by_event))
    return found


def shuffled(events: list[Any], rng: random.Random, keep_batch_order: bool) -> list[Any]:
    """A random interleaving: every batch's events in their order (as batches running at
    once leave them), or in any order at all."""
    if not keep_batch_order:
        order = events[:]
        rng.shuffle(order)
        return order
    lanes: dict[Any, list[Any]] = {}
    for event in events:
        lanes.setdefault(event.originator_id, []).append(event)
    queues = [list(reversed(lane)) for lane in lanes.values()]
    out = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop())
        if not queue:
            queues.remove(queue)
    return out


@pytest.fixture
def logged(make_app: AppFactory) -> tuple[BatchApplication, list[Any]]:
    """A log of a few batches of every kind (failures, modes, a sparse budget, an
    erased essay)."""
    app = make_app()
    run_batch(app, n=6, ref=f"pages-{next(_refs)}", failure_rate=0.3, seed=3)
    run_batch(app, n=9, ref=f"pages-{next(_refs)}", mode=BatchingMode.PER_REQUEST, seed=4)
    run_batch(app, n=5, ref=f"pages-{next(_refs)}", budget=5, allow_sparse=True, seed=5)
    run_batch(app, n=2, ref=f"pages-{next(_refs)}", seed=6)
    erased = register(app, ref=f"pages-{next(_refs)}")
    drive(app, QuotingJudge())
    app.erase_essay(erased, NAMES[1], "a parent's request")
    run_batch(app, n=4, ref=f"pages-{next(_refs)}", seed=7)
    return app, log_events(app)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    keep_batch_order=st.booleans(),
    pages=st.lists(st.integers(min_value=1, max_value=60), min_size=0, max_size=8),
)
def test_a_page_fold_gives_the_rows_of_one_statement_per_event(
    make_app: AppFactory,
    logged: tuple[BatchApplication, list[Any]],
    seed: int,
    keep_batch_order: bool,
    pages: list[int],
) -> None:
    app, events = logged
    assert any(isinstance(e, CJBatch.EssayErased) for e in events)
    ordered = shuffled(events, random.Random(seed), keep_batch_order)
    runner = ReadModelRunner(app)
    for name, (by_page, by_event) in apply_both_ways(runner, ordered, pages).items():
        assert by_page == by_event, name
        if keep_batch_order:
            assert any(by_event.values()), f"{name} got no rows"


def test_a_page_breaks_a_key_exactly_where_single_events_would(
    logged: tuple[BatchApplication, list[Any]],
) -> None:
    """Duplicates are written, not merged away: a page holding a second registration or
    a second finalization fails like its single events, so the runner can name them."""
    app, events = logged
    runner = ReadModelRunner(app)
    store = runner.store
    for name, kind in (
        ("batch_summary", CJBatch.BatchRegistered),
        ("rankings", CJBatch.Finalized),
        ("comparisons", CJBatch.ComparisonsRequested),
        ("decision_audit", CJBatch.ContinuationDecided),
    ):
        projection = runner.projections[name]
        store.create_generation(name, 20, projection.ddl, projection.indexes)
        tables = store.tables_for(20, projection.ddl)
        handled = [e for e in events if isinstance(e, projection.handles)]
        twice = next(e for e in handled if isinstance(e, kind))
        with (
            pytest.raises(Exception, match=r"(?i)unique|duplicate"),
            store.write_transaction() as c,
        ):
            projection.apply_page(store, c, tables, [*handled, twice])
        assert rows(store, name, 20) == {base: [] for base in projection.ddl}, "rolled back"


def test_a_decision_context_is_stored_as_asdict_would_give_it(
    logged: tuple[BatchApplication, list[Any]],
) -> None:
    import json
    from dataclasses import asdict

    _, events = logged
    decisions = [e for e in events if isinstance(e, CJBatch.ContinuationDecided)]
    assert decisions
    for event in decisions:
        assert json.dumps(plain(event.context), sort_keys=True) == json.dumps(
            asdict(event.context), sort_keys=True
        )


def test_column_types_read_every_column_of_each_read_model() -> None:
    for projection in PROJECTIONS.values():
        for columns in projection.ddl.values():
            names = column_types(columns)
            declared = [c for c in columns.split(", ") if not c.startswith("PRIMARY KEY")]
            declared = [c for c in declared if not c.endswith(")")]  # "essay_id)" of a key
            assert list(names) == [c.split()[0] for c in declared]


class CountingStore:
    """Counts the statements a store is asked to run, by kind."""

    def __init__(self, store: ReadModelStoreMixin, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {}
        for method in ("insert_rows", "update_rows", "select_in", "execute", "execute_many"):
            original = getattr(store, method)

            def counted(*args: Any, _original: Any = original, _name: str = method) -> Any:
                self.calls[_name] = self.calls.get(_name, 0) + 1
                return _original(*args)

            monkeypatch.setattr(store, method, counted)


def test_one_pass_per_page_feeds_every_read_model_with_a_few_set_based_statements(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    ids = [run_batch(app, n=12, ref=f"pass-{next(_refs)}", failure_rate=0.1) for _ in range(3)]
    head = int(app.recorder.max_notification_id() or 0)
    runner = ReadModelRunner(app, page_size=head)  # the whole log in one page
    decoded = count()
    to_event = runner.decode

    def decode(notification: Any) -> Any:
        next(decoded)
        return to_event(notification)

    monkeypatch.setattr(runner, "decode", decode)
    counting = CountingStore(runner.store, monkeypatch)
    assert runner.run_once() == head
    assert next(decoded) == head, "each notification decoded once, for all read models"
    assert counting.calls.get("execute", 0) == 0 and counting.calls.get("execute_many", 0) == 0
    assert sum(counting.calls.values()) <= 8, counting.calls  # not one per event
    assert head > 100
    assert {s.position for s in runner.status()} == {head}
    assert_read_models_match_log(app, runner, ids)


def test_a_read_model_behind_the_others_is_caught_up_to_them_then_all_go_together(
    make_app: AppFactory,
) -> None:
    app = make_app()
    ids = [run_batch(app, n=7, ref=f"lag-{next(_refs)}") for _ in range(2)]
    runner = ReadModelRunner(app, page_size=9)
    head = runner.head()
    for name in ("batch_summary", "comparisons"):
        runner.catch_up(name, until=head // 3)
    runner.catch_up("decision_audit", until=head // 2)
    positions = {s.name: s.position for s in runner.status()}
    assert len(set(positions.values())) == 3, positions
    ids.append(run_batch(app, n=5, ref=f"lag-{next(_refs)}"))
    runner.run_once()
    assert {s.lag for s in runner.status()} == {0}
    assert_read_models_match_log(app, runner, ids)


def test_set_based_writes_keep_values_json_has_no_form_for(make_app: AppFactory) -> None:
    """Infinity (which a JSON document of rows could not carry) goes in through the
    set-based writes as it did one statement at a time."""
    app = make_app()
    runner = ReadModelRunner(app)
    store = runner.store
    projection = runner.projections["comparisons"]
    store.create_generation("comparisons", 30, projection.ddl, projection.indexes)
    table = store.tables_for(30, projection.ddl)["comparisons"]
    types = column_types(projection.ddl["comparisons"])
    names = list(types)
    row = dict.fromkeys(names)
    row.update(
        comparison_id="c-1",
        batch_id="b",
        wave=1,
        pair_index=0,
        generation_mode="coverage",
        essay_a="a",
        essay_b="b",
        outcome="pending",
        requested_at="t0",
        deadline_at="t1",
        latency_ms=float("inf"),
    )
    with store.write_transaction() as c:
        store.insert_rows(c, table, names, [[row[n] for n in names]], types)
        store.update_rows(
            c, table, ("comparison_id",), ("cost_usd",), [["c-1", float("-inf")]], types
        )
    (stored,) = store.select(f"SELECT latency_ms, cost_usd FROM {table}")
    assert stored == {"latency_ms": float("inf"), "cost_usd": float("-inf")}


def test_set_based_writes_keep_every_value_exactly(make_app: AppFactory) -> None:
    """Whatever a column holds comes back as it went in, through a multi-row insert and a
    set-based update: text a literal would need to quote or escape, empty text, NULLs,
    floats that have no short decimal form, the largest integers, and values psycopg must
    adapt itself (an integer in a text column)."""
    app = make_app()
    runner = ReadModelRunner(app)
    store = runner.store
    projection = runner.projections["comparisons"]
    store.create_generation("comparisons", 31, projection.ddl, projection.indexes)
    table = store.tables_for(31, projection.ddl)["comparisons"]
    types = column_types(projection.ddl["comparisons"])
    names = list(types)
    texts = ['a "quoted", {braced} \\ text', "", "NULL", "ünï — 文字 🙂", "x" * 5000, "c\td\ne"]
    floats = [0.1 + 0.2, -0.0, 1e-310, 1.7976931348623157e308, float("inf"), 5e-324]
    expected = []
    for index in range(len(texts)):
        row = dict.fromkeys(names)
        row.update(
            comparison_id=f"c-{index}",
            batch_id=texts[index],
            wave=[0, -1, 2**31 - 1, -(2**31), 7, 1][index],
            pair_index=index,
            generation_mode="coverage",
            essay_a=texts[-1 - index],
            essay_b=texts[index],
            provider=None if index % 2 else texts[index],
            outcome="pending",
            requested_at="t0",
            deadline_at="t1",
            latency_ms=floats[index],
            cost_usd=None if index % 3 else floats[-1 - index],
        )
        expected.append(row)
    with store.write_transaction() as c:
        store.insert_rows(c, table, names, [[row[n] for n in names] for row in expected], types)
    changes = [[f"c-{i}", texts[i][::-1], i * 10, floats[i] / 3] for i in range(len(texts))]
    with store.write_transaction() as c:
        store.update_rows(
            c, table, ("comparison_id",), ("winner", "confidence", "cost_usd"), changes, types
        )
        store.update_rows(
            c, table, ("comparison_id",), ("model",), [["c-0", 42], ["c-1", None]], types
        )
    for row, (_, winner, confidence, cost) in zip(expected, changes, strict=True):
        row.update(winner=winner, confidence=confidence, cost_usd=cost)
    expected[0]["model"] = "42"
    stored = store.select(f"SELECT * FROM {table} ORDER BY pair_index")
    assert stored == expected
