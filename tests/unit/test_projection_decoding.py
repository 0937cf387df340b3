"""The runner's fast decoder gives exactly the events the application's mapper gives.

Equal is not enough (``1 == 1.0 == True``, a list equals nothing but a list): events are
compared value by value *and* type by type. Checked over every event of real runs (every
event type, failing judges, every batching mode, a sparse budget, erased content), over
the rows an earlier release stored (older class versions go to the mapper, which upcasts
them), over value data in shapes the fast path does not expect (it must then leave the
value to the mapper, never build something else), and through the read models: the rows
built from fast-decoded events are those built from the mapper's.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import Enum
from itertools import count
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import JSONTranscoder, StoredEvent
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from application.batches import (
    FORMER_VALUE_NAMES,
    RENAMED_VALUE_FIELDS,
    VALUE_DATACLASSES,
    VALUE_ENUMS,
    BatchApplication,
)
from application.serialization import register_value_types
from domain.batch import CJBatch
from domain.continuation import ContinuationContext, ScorePoint
from domain.values import BatchingMode
from projections.catalogue import COMPARISON_COLUMNS, PROJECTIONS, context_json
from projections.catalogue import _requested_rows as requested_rows
from projections.decoding import NotificationDecoder, wrapped_value_builders
from projections.runner import ReadModelRunner
from tests.conftest import AppFactory
from tests.fakes import run_batch
from tests.fixtures.stored_events import FIXTURE
from tests.unit.test_content_store import NAMES, QuotingJudge, drive, register
from tests.unit.test_projection_pages import rows
from tests.unit.test_projections import assert_read_models_match_log
from tests.unit.test_serialization import SAMPLES

_refs = count()
TOPICS = frozenset(topic for p in PROJECTIONS.values() for topic in p.topics)


def assert_same(fast: Any, slow: Any, path: str = "event") -> None:
    """Equal and of the same types, all the way down."""
    assert type(fast) is type(slow), f"{path}: {type(fast).__name__} != {type(slow).__name__}"
    if isinstance(slow, list | tuple):
        assert len(fast) == len(slow), path
        for index, (f, s) in enumerate(zip(fast, slow, strict=True)):
            assert_same(f, s, f"{path}[{index}]")
    elif isinstance(slow, dict):
        assert list(fast) == list(slow), path
        for key in slow:
            assert_same(fast[key], slow[key], f"{path}.{key}")
    elif hasattr(slow, "__dict__") and not isinstance(slow, Enum):
        assert_same(vars(fast), vars(slow), path)
    elif isinstance(slow, float) and slow != slow:
        assert fast != fast, path  # NaN
    else:
        assert fast == slow, path


def notifications(app: BatchApplication) -> list[Any]:
    return list(app.recorder.select_notifications(start=None, limit=100_000))


@pytest.fixture
def logged(make_app: AppFactory) -> BatchApplication:
    """Batches of every kind: failing judges, each batching mode, a sparse budget, a
    small net, an erased essay (its answers deleted from the content store)."""
    app = make_app()
    run_batch(app, n=6, ref=f"decoding-{next(_refs)}", failure_rate=0.3, seed=3)
    for mode in BatchingMode:
        run_batch(app, n=7, ref=f"decoding-{next(_refs)}", mode=mode, seed=4)
    run_batch(app, n=5, ref=f"decoding-{next(_refs)}", budget=5, allow_sparse=True, seed=5)
    run_batch(app, n=3, ref=f"decoding-{next(_refs)}", failure_rate=1.0, seed=8)
    run_batch(app, n=1, ref=f"decoding-{next(_refs)}", seed=6)
    erased = register(app, ref=f"decoding-{next(_refs)}")
    drive(app, QuotingJudge())
    app.erase_essay(erased, NAMES[1], "a parent's request")
    return app


def test_every_event_of_real_runs_decodes_as_the_mapper_decodes_it(
    logged: BatchApplication,
) -> None:
    decoder = NotificationDecoder(logged.mapper, TOPICS)
    handled = [n for n in notifications(logged) if n.topic in TOPICS]
    for notification in handled:
        assert_same(decoder(notification), logged.mapper.to_domain_event(notification))
    kinds = {n.topic for n in handled}
    assert kinds == TOPICS, "every event type the read models take is in the log"
    assert decoder.fast == len(handled) and decoder.slow == 0, "none needed the mapper"


def test_a_runner_decodes_without_the_mapper_and_folds_the_same_read_models(
    make_app: AppFactory,
) -> None:
    app = make_app()
    ids = [
        run_batch(app, n=8, ref=f"decoding-{next(_refs)}", failure_rate=0.2, mode=mode)
        for mode in (None, BatchingMode.PROVIDER_BATCH_API)
    ]
    runner = ReadModelRunner(app, page_size=11)
    runner.run_once()
    assert isinstance(runner.decode, NotificationDecoder)
    assert runner.decode.fast == runner.head() and runner.decode.slow == 0
    assert_read_models_match_log(app, runner, ids)


def test_read_models_from_fast_events_equal_those_from_the_mappers(
    logged: BatchApplication,
) -> None:
    runner = ReadModelRunner(logged)
    decoder = NotificationDecoder(logged.mapper, TOPICS)
    log = [n for n in notifications(logged) if n.topic in TOPICS]
    store = runner.store
    for name, projection in runner.projections.items():
        built = {}
        for generation, decode in ((40, decoder), (41, logged.mapper.to_domain_event)):
            store.create_generation(name, generation, projection.ddl, projection.indexes)
            events = [decode(n) for n in log if n.topic in projection.topics]
            with store.write_transaction() as c:
                tables = store.tables_for(generation, projection.ddl)
                projection.apply_page(store, c, tables, events)
            built[generation] = rows(store, name, generation)
        assert built[40] == built[41], name
        assert any(built[40].values()), name


def test_the_folds_write_what_the_events_say(logged: BatchApplication) -> None:
    """The catalogue's shortcuts for decoded events: a decision's context is written as
    ``json.dumps(asdict(...), sort_keys=True)`` would write it, and a requested
    comparison's row holds the columns in the table's order (it is written as is)."""
    decoder = NotificationDecoder(logged.mapper, TOPICS)
    events = [decoder(n) for n in notifications(logged) if n.topic in TOPICS]
    decisions = [e for e in events if isinstance(e, CJBatch.ContinuationDecided)]
    assert decisions
    for event in decisions:
        expected = json.dumps(asdict(event.context), sort_keys=True)
        assert context_json(event.context) == expected
    requested = [e for e in events if isinstance(e, CJBatch.ComparisonsRequested)]
    for event in requested:
        for row in requested_rows(event):
            assert tuple(row) == COMPARISON_COLUMNS


def insert_rows(app: BatchApplication, stored: list[dict[str, Any]]) -> None:
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=UUID(row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=row["state"].encode("utf-8"),
            )
            for row in stored
        ]
    )


def test_events_an_earlier_release_stored_decode_as_the_mapper_upcasts_them(
    make_app: AppFactory,
) -> None:
    app = make_app()
    insert_rows(app, json.loads(FIXTURE.read_text())["rows"])
    decoder = NotificationDecoder(app.mapper, TOPICS)
    for notification in notifications(app):
        assert_same(decoder(notification), app.mapper.to_domain_event(notification))
    assert decoder.slow > 0, "older class versions are the mapper's to upcast"
    assert decoder.fast > 0, "events still of today's version need no upcasting"


def stored(app: BatchApplication, event_class: type, state: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        originator_id=UUID(int=7),
        originator_version=3,
        topic=get_topic(event_class),
        state=json.dumps(state).encode("utf-8"),
    )


def completed_state(**success: Any) -> dict[str, Any]:
    details = {
        "winner_id": "e1",
        "confidence": 3,
        "justification": "",
        "provider": "simulated",
        "model": "fake",
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "cost_usd": 0.25,
        "latency_ms": 12.5,
        **success,
    }
    return {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2026-01-01T00:00:00+00:00"},
        "outcome": {
            "_type_": "domain.values:ComparisonOutcome",
            "_data_": {"comparison_id": "c1", "success": details, "failure": None},
        },
        "justification_ref": None,
        "class_version": 2,
    }


@pytest.mark.parametrize(
    ("state", "fast"),
    [
        (completed_state(), True),
        (completed_state(cost_usd=0, latency_ms=3), True),  # ints where floats are typed
        (completed_state(confidence="3"), False),  # pydantic reads the number in a string
        (completed_state(confidence=3.0), False),
        (completed_state(confidence=True), False),
        (completed_state(comment="extra"), False),
        ({**completed_state(), "class_version": 3}, False),  # a future version
        ({**completed_state(), "class_version": 1}, False),  # upcast by the mapper
        ({**completed_state(), "note": {"_type_": "unknown:Type", "_data_": 1}}, False),
        ({**completed_state(), "extra": [1, {"a": [2]}]}, True),
    ],
)
def test_data_of_an_unexpected_shape_is_left_to_the_mapper(
    make_app: AppFactory, state: dict[str, Any], fast: bool
) -> None:
    app = make_app()
    decoder = NotificationDecoder(app.mapper, TOPICS)
    notification = stored(app, CJBatch.ComparisonCompleted, state)
    try:
        expected = app.mapper.to_domain_event(notification)
    except Exception as error:
        with pytest.raises(type(error)):
            decoder(notification)
    else:
        assert_same(decoder(notification), expected)
    assert (decoder.fast, decoder.slow) == ((1, 0) if fast else (0, 1))


def test_a_compressing_or_encrypting_mapper_is_always_asked(
    store_env: dict[str, str],
) -> None:
    with BatchApplication(env={**store_env, "COMPRESSOR_TOPIC": "zlib"}) as app:
        decoder = NotificationDecoder(app.mapper, TOPICS)
        assert decoder.topics == frozenset()
        run_batch(app, n=3, ref=f"decoding-{next(_refs)}")
        for notification in notifications(app):
            if notification.topic in TOPICS:
                assert_same(decoder(notification), app.mapper.to_domain_event(notification))
        assert decoder.fast == 0 and decoder.slow > 0


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    extra=JSON_VALUES,
    cost=st.one_of(st.floats(), st.integers(min_value=-(2**80), max_value=2**80)),
    seed=st.integers(min_value=-(2**80), max_value=2**80),
)
def test_any_json_an_event_holds_is_read_as_the_standard_parser_reads_it(
    extra: Any, cost: Any, seed: int
) -> None:
    """Integers beyond 64 bits, NaN, infinities, any text: where the fast parser reads a
    number otherwise than ``json.loads`` would, the event goes to the mapper."""
    app = IN_MEMORY_APP
    decoder = NotificationDecoder(app.mapper, TOPICS)
    state = {**completed_state(cost_usd=cost), "extra": extra, "seed": seed, "listed": [seed]}
    notification = stored(app, CJBatch.ComparisonCompleted, state)
    assert_same(decoder(notification), app.mapper.to_domain_event(notification))


# ---------------------------------------------------------------- wrapped values


def transcoder() -> JSONTranscoder:
    t = JSONTranscoder()
    register_value_types(
        t,
        VALUE_DATACLASSES,
        VALUE_ENUMS,
        former_names=FORMER_VALUE_NAMES,
        renamed_fields=RENAMED_VALUE_FIELDS,
    )
    return t


TRANSCODER = transcoder()
IN_MEMORY_APP = BatchApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
BUILDERS = wrapped_value_builders(TRANSCODER)
WRAPPED = [json.loads(TRANSCODER.encode(value)) for value in SAMPLES]


def test_every_value_type_of_the_events_has_a_fast_builder() -> None:
    """All but ``ComparisonRecord`` (snapshots only; pydantic reads its datetimes its own
    way, so the mapper does)."""
    missing = {name for name in TRANSCODER.names if name not in BUILDERS}
    assert missing == {"domain.batch:ComparisonRecord"}


@pytest.mark.parametrize("wrapped", WRAPPED, ids=lambda w: w["_type_"])
def test_each_sample_value_is_built_as_its_transcoding_decodes_it(wrapped: dict[str, Any]) -> None:
    if wrapped["_type_"] not in BUILDERS:
        return
    built = BUILDERS[wrapped["_type_"]](wrapped["_data_"])
    assert_same(built, TRANSCODER.decode(json.dumps(wrapped).encode()))


def test_contexts_stored_under_former_names_and_field_names_are_built() -> None:
    context = ContinuationContext(
        2, 4, 30, 8, 8, 7, 1, 0, 3, 0.5, 0, False, 0.25, (ScorePoint("e1", 1.0),)
    )
    data = json.loads(TRANSCODER.encode(context))["_data_"]
    data["callbacks_received"] = data.pop("outcomes")
    data["pending_callbacks"] = data.pop("open_comparisons")
    for field in ("new_successes", "pairs_given_up", "pairing_found_nothing", "ssr"):
        del data[field]  # version 1 of the policy stored none of these
    for name in ("domain.values:ContinuationContext", get_topic(ContinuationContext)):
        wrapped = json.dumps({"_type_": name, "_data_": data}).encode()
        assert_same(BUILDERS[name](data), TRANSCODER.decode(wrapped))


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["lps", "coverage", "WAIT", "scored", "serial_bundle"]),
)


@settings(max_examples=400, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(WRAPPED) - 1),
    changes=st.lists(st.tuples(st.integers(min_value=0, max_value=30), JUNK), max_size=3),
    dropped=st.lists(st.integers(min_value=0, max_value=30), max_size=2),
    extra=st.booleans(),
)
def test_value_data_is_built_as_its_transcoding_decodes_it_or_left_to_it(
    index: int, changes: list[tuple[int, Any]], dropped: list[int], extra: bool
) -> None:
    """Sample values' data with fields changed to values of any JSON type, fields left out
    and keys added: whatever the fast builder returns is what the transcoding gives;
    when it cannot say, it raises (and the mapper decodes the event)."""
    wrapped = WRAPPED[index]
    build = BUILDERS.get(wrapped["_type_"])
    data = wrapped["_data_"]
    if build is None or not isinstance(data, dict):
        return
    data = dict(data)
    names = list(data)
    for position, value in changes:
        data[names[position % len(names)]] = value
    for position in dropped:
        data.pop(names[position % len(names)], None)
    if extra:
        data["unexpected"] = 1
    encoded = json.dumps({"_type_": wrapped["_type_"], "_data_": data}).encode()
    try:
        expected = TRANSCODER.decode(encoded)
    except Exception:
        expected = None  # the mapper refuses it: the builder must not build anything
    try:
        built = build(json.loads(encoded)["_data_"])
    except Exception:
        return
    assert expected is not None, "built a value the transcoding refuses"
    assert_same(built, expected)
