"""The stores ``CJLEDGER_DATABASE_URL`` opens, against the real servers.

Tests that take ``store_env`` run on SQLite and on PostgreSQL; the others are about
PostgreSQL only (its schema, its tables, the library's connection pool).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from eventsourcing.postgres import PostgresApplicationRecorder

from application.batches import BatchApplication, RegisterBatch
from application.dispatcher import OutboxDispatcher
from domain.batch import CJBatch
from domain.policy import BatchPolicy
from domain.values import BatchingMode, ComparisonOutcome, Pair, SuccessDetails
from infrastructure.embedded import InProcessTransport
from infrastructure.persistence.content import CONTENT_TABLES
from infrastructure.persistence.positions import TABLE, position_store_for
from infrastructure.persistence.store import ensure_schema, eventsourcing_env
from tests.conftest import TEST_POSTGRES_URL, drop_schema, postgres_dsn
from tests.fakes import essays, run_batch


@pytest.fixture
def unused_schema() -> Iterator[str]:
    """The name of a schema that does not exist yet; dropped afterwards if it was created."""
    try:
        psycopg.connect(postgres_dsn()).close()
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at {TEST_POSTGRES_URL}: {error}")
    schema = f"cjt_{uuid.uuid4().hex}"
    yield schema
    drop_schema(schema)


def tables_in(schema: str) -> set[str]:
    with psycopg.connect(postgres_dsn()) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {row[0] for row in rows}


def open_wave(app: BatchApplication, ref: str, n: int, cap: int) -> tuple[uuid.UUID, list[Pair]]:
    """A batch whose one wave asks for every pair up to ``cap``."""
    batch_id = app.submit(
        RegisterBatch(
            ref,
            essays(n),
            requested_mode=BatchingMode.PROVIDER_BATCH_API,
            policy=BatchPolicy(max_pairs_cap=cap),
        )
    )
    return batch_id, [r.pair for r in app.get_batch(batch_id).comparisons.values()]


def win(pair: Pair) -> ComparisonOutcome:
    return ComparisonOutcome(pair.comparison_id, SuccessDetails(pair.essay_a, 3, "j", "sim", "m"))


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.integration
def test_the_first_start_creates_the_schema_and_every_table_in_it(unused_schema: str) -> None:
    env = eventsourcing_env(f"{TEST_POSTGRES_URL}?schema={unused_schema}")
    ensure_schema(env)
    ensure_schema(env)  # a second process starting does no harm
    with BatchApplication(env=env) as app:
        batch_id = run_batch(app, n=4, ref="first-start")
        position_store_for(app)
        assert app.get_batch(batch_id).is_finalized
    assert tables_in(unused_schema) == {
        "cjbatches_events",
        "cjbatches_snapshots",
        TABLE,
        *CONTENT_TABLES,  # the content store lives beside the events
    }
    with BatchApplication(env=env) as reopened:  # tables exist: opening again just works
        assert reopened.get_batch(batch_id).is_finalized


@pytest.mark.integration
def test_an_unreachable_server_fails_fast_with_the_reason() -> None:
    env = eventsourcing_env("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2")
    with pytest.raises(psycopg.OperationalError):
        ensure_schema(env)


@pytest.mark.integration
def test_the_library_pool_is_sized_from_the_url(postgres_url: str) -> None:
    with BatchApplication(env=eventsourcing_env(postgres_url)) as default:
        assert isinstance(default.recorder, PostgresApplicationRecorder)
        pool = default.recorder.datastore.pool
        assert (pool.min_size, pool.max_size, pool.timeout) == (4, 10, 10)
    with BatchApplication(
        env=eventsourcing_env(f"{postgres_url}&pool_size=1&max_overflow=2&connect_timeout=3")
    ) as small:
        assert isinstance(small.recorder, PostgresApplicationRecorder)
        pool = small.recorder.datastore.pool
        assert (pool.min_size, pool.max_size, pool.timeout) == (1, 3, 3)


@pytest.mark.integration
def test_a_pool_of_two_connections_serves_eight_threads(postgres_url: str) -> None:
    """Writers and readers queue for a connection; none of them fails."""
    env = eventsourcing_env(f"{postgres_url}&pool_size=2&max_overflow=0")
    with BatchApplication(env=env) as app:
        batch_id, pairs = open_wave(app, "pooled", n=12, cap=64)
        errors: list[BaseException] = []

        def record(share: list[Pair]) -> None:
            try:
                for pair in share:
                    app.record_outcome(batch_id, win(pair))
                    app.recorder.max_notification_id()
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=record, args=(pairs[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        batch = app.get_batch(batch_id)
        assert batch.successes == len(pairs)
        assert batch.is_finalized


@pytest.mark.integration
def test_two_schemas_on_one_server_hold_separate_logs(
    postgres_schema: str, unused_schema: str
) -> None:
    one = eventsourcing_env(f"{TEST_POSTGRES_URL}?schema={postgres_schema}")
    other = eventsourcing_env(f"{TEST_POSTGRES_URL}?schema={unused_schema}")
    ensure_schema(other)
    with BatchApplication(env=one) as a, BatchApplication(env=other) as b:
        run_batch(a, n=4, ref="only-in-one")
        position_store_for(a).set("outbox", 7)
        assert a.recorder.max_notification_id()
        assert b.recorder.max_notification_id() is None
        assert position_store_for(b).get("outbox") == 0
    assert TABLE in tables_in(postgres_schema)


# --------------------------------------------------------------------------- both stores


def test_processes_sharing_a_store_see_each_others_events(store_env: dict[str, str]) -> None:
    """Each process caches the batch; each command first catches up on the other's appends."""
    with BatchApplication(env=store_env) as one, BatchApplication(env=store_env) as other:
        batch_id, pairs = open_wave(one, "shared", n=8, cap=20)
        for index, pair in enumerate(pairs):
            (one if index % 2 else other).record_outcome(batch_id, win(pair))
        assert one.get_batch(batch_id).__dict__ == other.get_batch(batch_id).__dict__
        assert one.get_batch(batch_id).is_finalized
        assert one.recorder.max_notification_id() == other.recorder.max_notification_id()


def test_the_outbox_position_survives_an_application_restart(store_env: dict[str, str]) -> None:
    with BatchApplication(env=store_env) as first:
        first.submit(RegisterBatch("before-restart", essays(6), seed=1))
        transport = InProcessTransport()
        dispatcher = OutboxDispatcher(first, transport, position_store_for(first))
        sent_before = dispatcher.pump()
        position = dispatcher.position
        assert sent_before == len(transport.take_all()) > 0
        assert position > 0

    with BatchApplication(env=store_env) as restarted:
        transport = InProcessTransport()
        dispatcher = OutboxDispatcher(restarted, transport, position_store_for(restarted))
        assert dispatcher.position == position
        assert dispatcher.pump() == 0, "nothing already sent is sent again"
        restarted.submit(RegisterBatch("after-restart", essays(4), seed=1))
        assert dispatcher.pump() > 0
        sent = {request.batch_id for request in transport.take_all()}
        assert sent == {str(CJBatch.create_id("after-restart"))}
        assert dispatcher.position > position


def test_a_position_never_moves_backwards(store_env: dict[str, str]) -> None:
    with BatchApplication(env=store_env) as app:
        positions = position_store_for(app)
        assert positions.get("outbox") == 0
        positions.set("outbox", 12)
        positions.set("outbox", 5)  # a slower, older dispatcher finishing late
        positions.set("other", 3)
        assert (positions.get("outbox"), positions.get("other")) == (12, 3)
        assert position_store_for(app).get("outbox") == 12  # creating it again keeps the rows
