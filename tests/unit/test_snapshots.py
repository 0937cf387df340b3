"""Snapshots and the aggregate cache change how fast a batch loads, never what it is.

Every test runs on SQLite and on PostgreSQL (``store_env``). "Replayed" always means an
application with neither snapshots nor a cache: the batch is folded from event 1.
"""

from __future__ import annotations

import threading
import zlib
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from application.batches import BatchApplication, ConcurrencyExhausted, RegisterBatch
from application.dispatcher import InMemoryPositionStore, OutboxDispatcher
from application.snapshot_store import SNAPSHOTS_KEPT
from domain import workflow
from domain.batch import CJBatch
from domain.policy import BatchPolicy
from domain.values import BatchingMode, ComparisonOutcome, Pair, SuccessDetails
from infrastructure.embedded import InProcessTransport
from infrastructure.persistence.store import eventsourcing_env
from tests.fakes import StepClock, ThetaJudge, essays, run_batch, thetas_for

NO_CACHE = {"AGGREGATE_CACHE_MAXSIZE": ""}
REPLAY_ONLY = {**NO_CACHE, "IS_SNAPSHOTTING_ENABLED": "no"}


@pytest.fixture
def open_app(store_env: dict[str, str]) -> Any:
    """Open applications on the test's store with extra settings; all closed afterwards."""
    opened: list[BatchApplication] = []

    def factory(settings: dict[str, str] | None = None, **kwargs: Any) -> BatchApplication:
        app = BatchApplication(env={**store_env, **(settings or {})}, **kwargs)
        opened.append(app)
        return app

    yield factory
    for app in opened:
        app.close()


def win(pair: Pair) -> ComparisonOutcome:
    return ComparisonOutcome(pair.comparison_id, SuccessDetails(pair.essay_a, 4, "j", "sim", "m"))


def open_pairs(app: BatchApplication, batch_id: UUID) -> list[Pair]:
    return [r.pair for r in app.get_batch(batch_id).comparisons.values() if r.outcome is None]


def one_wave(app: BatchApplication, ref: str, n: int, cap: int) -> UUID:
    """A batch whose single wave asks for ``cap`` pairs: one event per outcome after it."""
    return app.submit(
        RegisterBatch(
            ref,
            essays(n),
            requested_mode=BatchingMode.PROVIDER_BATCH_API,
            policy=BatchPolicy(max_pairs_cap=cap),
        )
    )


def count_snapshots_taken(app: BatchApplication) -> list[int]:
    """The versions of every snapshot the application stores from now on."""
    assert app.snapshots is not None
    taken: list[int] = []
    original = app.snapshots.put

    def counting(events: Any, **kwargs: Any) -> Any:
        taken.extend(event.originator_version for event in events)
        return original(events, **kwargs)

    app.snapshots.put = counting  # type: ignore[method-assign]
    return taken


def snapshot_versions(app: BatchApplication, batch_id: UUID) -> list[int]:
    assert app.snapshots is not None
    return [s.originator_version for s in app.snapshots.get(batch_id)]


# --------------------------------------------------------------------------- equality


def test_a_batch_restored_from_a_snapshot_equals_the_replayed_batch_at_every_version(
    open_app: Any,
) -> None:
    writer = open_app({"SNAPSHOT_INTERVAL": "5"})
    batch_id = run_batch(writer, n=9, failure_rate=0.2)
    head = writer.get_batch(batch_id).version
    kept = snapshot_versions(writer, batch_id)
    assert len(kept) == SNAPSHOTS_KEPT and max(kept) > head - 5  # older ones pruned

    from_snapshots = open_app(NO_CACHE)
    replayed = open_app(REPLAY_ONLY)
    for version in range(1, head + 1):
        restored = from_snapshots.get_batch(batch_id, version=version)
        replay = replayed.get_batch(batch_id, version=version)
        assert vars(restored) == vars(replay), f"differs at version {version}"
        types = {key: type(value) for key, value in vars(restored).items()}
        assert types == {key: type(value) for key, value in vars(replay).items()}


def test_the_snapshot_row_names_the_tuple_fields_it_restores(open_app: Any) -> None:
    app = open_app({"SNAPSHOT_INTERVAL": "1"})
    batch_id = one_wave(app, "tuples", n=4, cap=6)
    assert app.snapshots is not None
    (row,) = app.snapshots.recorder.select_events(batch_id, desc=True, limit=1)
    stored = app.mapper.transcoder.decode(zlib.decompress(row.state))
    assert stored["state_tuple_fields"] == ["essays", "final_scores"]
    restored = open_app(NO_CACHE).get_batch(batch_id)
    assert isinstance(restored.essays, tuple)
    assert isinstance(restored.waves, list)


# --------------------------------------------------------------------------- behaviour


def drive(app: BatchApplication, ref: str) -> UUID:
    """Run a batch to its end, one outcome per command, with a deterministic judge."""
    batch_id = app.submit(
        RegisterBatch(ref, essays(7), requested_mode=BatchingMode.PER_REQUEST, seed=4)
    )
    transport = InProcessTransport()
    dispatcher = OutboxDispatcher(app, transport, InMemoryPositionStore())
    judge = ThetaJudge(thetas_for(7), failure_rate=0.25)
    while dispatcher.pump() or transport.queue:
        for batch_uuid, outcome in judge(transport.take_all()):
            app.record_outcome(batch_uuid, outcome)
    return batch_id


def history(app: BatchApplication, batch_id: UUID) -> list[tuple[str, int, dict[str, Any]]]:
    return [
        (
            type(e).__name__,
            e.originator_version,
            {k: v for k, v in vars(e).items() if k != "timestamp"},
        )
        for e in app.batch_events(batch_id)
    ]


def test_a_batch_run_from_snapshots_records_exactly_what_a_replayed_batch_records(
    open_app: Any, tmp_path: Path
) -> None:
    """Without a cache and with a snapshot every 3 events, every command of this run
    restores the batch from a snapshot; the reference run replays every command from event
    1. Same judge, same clock: the logs must be identical but for wall-clock timestamps."""
    from_snapshots = open_app({**NO_CACHE, "SNAPSHOT_INTERVAL": "3"}, clock=StepClock())
    taken = count_snapshots_taken(from_snapshots)
    batch_id = drive(from_snapshots, "restored")
    assert len(taken) > 10

    reference_env = {**eventsourcing_env(f"sqlite:///{tmp_path / 'ref.db'}"), **REPLAY_ONLY}
    with BatchApplication(env=reference_env, clock=StepClock()) as reference:
        reference_id = drive(reference, "restored")
        assert history(from_snapshots, batch_id) == history(reference, reference_id)
        final = from_snapshots.get_batch(batch_id)
        assert final.is_finalized
        assert _without_clock(final) == _without_clock(reference.get_batch(reference_id))


def _without_clock(batch: CJBatch) -> dict[str, Any]:
    return {k: v for k, v in vars(batch).items() if k not in ("_created_on", "_modified_on")}


def test_a_restarted_process_continues_a_batch_from_its_snapshot(open_app: Any) -> None:
    first = open_app({"SNAPSHOT_INTERVAL": "10"})
    batch_id = one_wave(first, "restart", n=10, cap=30)
    pairs = open_pairs(first, batch_id)
    for pair in pairs[:20]:
        first.record_outcome(batch_id, win(pair))
    first.close()

    restarted = open_app({"SNAPSHOT_INTERVAL": "10"})
    for pair in pairs[20:]:
        restarted.record_outcome(batch_id, win(pair))
    replayed = open_app(REPLAY_ONLY).get_batch(batch_id)
    assert replayed.is_finalized
    assert replayed.successes == 30
    assert vars(restarted.get_batch(batch_id)) == vars(replayed)


# --------------------------------------------------------------------------- when


def test_a_snapshot_is_taken_by_each_save_that_crosses_a_multiple_of_the_interval(
    open_app: Any,
) -> None:
    app = open_app({"SNAPSHOT_INTERVAL": "10"}, clock=StepClock())
    taken = count_snapshots_taken(app)
    batch_id = drive(app, "crossing")  # one outcome per save: a save spans at most 3 events
    head = app.get_batch(batch_id).version
    assert [v // 10 for v in taken] == list(range(1, head // 10 + 1))
    assert snapshot_versions(app, batch_id) == taken[-SNAPSHOTS_KEPT:]


def test_snapshots_can_be_switched_off(open_app: Any) -> None:
    app = open_app({"IS_SNAPSHOTTING_ENABLED": "no", "SNAPSHOT_INTERVAL": "2"})
    assert app.snapshots is None
    assert run_batch(app, n=5)


def test_a_snapshot_that_cannot_be_written_never_fails_the_command(
    open_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_app({"SNAPSHOT_INTERVAL": "1"})
    batch_id = one_wave(app, "no-snapshots", n=5, cap=6)
    pair = open_pairs(app, batch_id)[0]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("snapshot table unavailable")

    assert app.snapshots is not None
    monkeypatch.setattr(app.snapshots, "put", broken)
    assert app.record_outcome(batch_id, win(pair)) is True
    assert open_app(REPLAY_ONLY).get_batch(batch_id).successes == 1


# --------------------------------------------------------------------------- size and retention


def test_snapshots_are_stored_compressed_and_only_the_latest_are_kept(open_app: Any) -> None:
    app = open_app({"SNAPSHOT_INTERVAL": "4"})
    batch_id = one_wave(app, "compressed", n=12, cap=40)
    for pair in open_pairs(app, batch_id)[:30]:
        app.record_outcome(batch_id, win(pair))
    assert app.snapshots is not None
    rows = app.snapshots.recorder.select_events(batch_id)
    assert [row.originator_version for row in rows] == [28, 32]
    batch = app.get_batch(batch_id)
    plain = app.mapper.to_stored_event(CJBatch.Snapshot.take(batch)).state
    (latest,) = app.snapshots.recorder.select_events(batch_id, desc=True, limit=1)
    assert not latest.state.startswith(b"{")
    assert len(latest.state) * 3 < len(plain)


def test_an_uncompressed_snapshot_of_an_earlier_release_is_still_read(open_app: Any) -> None:
    writer = open_app({"IS_SNAPSHOTTING_ENABLED": "no"})
    batch_id = one_wave(writer, "old-snapshot", n=8, cap=20)
    for pair in open_pairs(writer, batch_id)[:10]:
        writer.record_outcome(batch_id, win(pair))
    at_version = writer.get_batch(batch_id).version
    reader = open_app(NO_CACHE)
    assert reader.snapshots is not None
    # What the previous release stored: the events' mapper, no compression.
    old_row = reader.mapper.to_stored_event(CJBatch.Snapshot.take(writer.get_batch(batch_id)))
    assert old_row.state.startswith(b"{")
    reader.snapshots.recorder.insert_events([old_row])

    for pair in open_pairs(writer, batch_id)[:3]:
        writer.record_outcome(batch_id, win(pair))
    restored = reader.get_batch(batch_id)
    replayed = open_app(REPLAY_ONLY).get_batch(batch_id)
    assert restored.version == at_version + 3
    assert vars(restored) == vars(replayed)


# --------------------------------------------------------------------------- flat cost


def count_decoded(app: BatchApplication, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the topic of every row the application decodes from now on."""
    decoded: list[str] = []
    assert app.snapshots is not None
    for mapper in (app.mapper, app.snapshots.mapper):  # snapshots have a mapper of their own
        original = mapper.to_domain_event

        def counting(stored: Any, original: Any = original) -> Any:
            decoded.append(stored.topic)
            return original(stored)

        monkeypatch.setattr(mapper, "to_domain_event", counting)
    return decoded


def test_recording_an_outcome_reads_nothing_back_however_long_the_history(
    open_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_app({"SNAPSHOT_INTERVAL": "50"})
    batch_id = one_wave(app, "flat", n=16, cap=120)
    pairs = open_pairs(app, batch_id)
    decoded = count_decoded(app, monkeypatch)
    per_outcome = []
    for pair in pairs[:110]:
        before = len(decoded)
        app.record_outcome(batch_id, win(pair))
        per_outcome.append(len(decoded) - before)
    assert set(per_outcome) == {0}, "the cached batch is current: nothing to catch up on"


def test_a_process_without_the_batch_reads_one_snapshot_and_a_bounded_tail(
    open_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_app({"SNAPSHOT_INTERVAL": "20"})
    batch_id = one_wave(writer, "cold", n=16, cap=120)
    pairs = open_pairs(writer, batch_id)
    for pair in pairs[:95]:
        writer.record_outcome(batch_id, win(pair))
    assert writer.get_batch(batch_id).version == 98

    cold = open_app({**NO_CACHE, "SNAPSHOT_INTERVAL": "20"})
    decoded = count_decoded(cold, monkeypatch)
    cold.record_outcome(batch_id, win(pairs[95]))
    assert decoded[0] == "eventsourcing.domain:Snapshot"
    assert len(decoded) == 1 + (98 - 80), "the snapshot at 80, then events 81..98"


# --------------------------------------------------------------------------- the cache


def test_a_conflicting_save_evicts_the_cached_batch_and_retries_on_stored_state(
    open_app: Any,
) -> None:
    one, other = open_app(), open_app()
    batch_id = one_wave(one, "conflict", n=6, cap=10)
    first, second, third = open_pairs(one, batch_id)[:3]
    one.record_outcome(batch_id, win(first))  # the batch is now cached in ``one``

    real_save = one.save
    interleaved: list[bool] = []

    def another_writer_goes_first(*objs: Any, **kwargs: Any) -> Any:
        if not interleaved:  # between our load and our save, another process appends
            interleaved.append(True)
            other.record_outcome(batch_id, win(second))
        return real_save(*objs, **kwargs)

    one.save = another_writer_goes_first
    assert one.record_outcome(batch_id, win(third)) is True
    stored = open_app(REPLAY_ONLY).get_batch(batch_id)
    assert stored.successes == 3
    assert vars(one.get_batch(batch_id)) == vars(stored)


def test_a_group_catches_up_batches_another_process_changed_without_a_conflict(
    open_app: Any,
) -> None:
    """Two processes share three batches. One records a group over all three after the
    other appended to two of them: its cached batches are brought up to date before the
    outcomes apply (on PostgreSQL with one query for the whole group), so the save
    succeeds at once and every batch equals its replay."""
    one, other = open_app(), open_app()
    ids = [one_wave(one, f"shared-{i}", n=6, cap=10) for i in range(3)]
    pairs = {batch_id: open_pairs(one, batch_id) for batch_id in ids}
    one.record_outcomes([(batch_id, win(pairs[batch_id][0])) for batch_id in ids])  # cached
    other.record_outcomes([(batch_id, win(pairs[batch_id][1])) for batch_id in ids[:2]])

    saves: list[int] = []
    real_save = one.save

    def counting_save(*objs: Any, **kwargs: Any) -> Any:
        saves.append(len(objs))
        return real_save(*objs, **kwargs)

    one.save = counting_save
    selects: list[Any] = []
    real_select = one.recorder.select_events

    def counting_select(*args: Any, **kwargs: Any) -> Any:
        selects.append(args)
        return real_select(*args, **kwargs)

    one.recorder.select_events = counting_select
    results = one.record_outcomes([(batch_id, win(pairs[batch_id][2])) for batch_id in ids])
    assert [r.status.value for r in results] == ["recorded"] * 3
    assert saves == [3], "one save, no lost race to retry"
    if hasattr(one.recorder, "select_events_after"):  # PostgreSQL: one query for the group
        assert selects == []
    replayed = open_app(REPLAY_ONLY)
    for batch_id in ids:
        stored = replayed.get_batch(batch_id)
        assert stored.successes == (3 if batch_id in ids[:2] else 2)
        assert vars(one.get_batch(batch_id)) == vars(stored)


def test_a_save_that_keeps_failing_leaves_the_cache_holding_only_stored_state(
    open_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_app()
    batch_id = one_wave(app, "exhausted", n=6, cap=10)
    first, second = open_pairs(app, batch_id)[:2]
    app.record_outcome(batch_id, win(first))
    before = vars(app.get_batch(batch_id))

    def conflict(*objs: Any, **kwargs: Any) -> Any:
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(app, "save", conflict)
    with pytest.raises(ConcurrencyExhausted):
        app.record_outcome(batch_id, win(second))
    monkeypatch.undo()
    assert vars(app.get_batch(batch_id)) == before
    assert app.record_outcome(batch_id, win(second)) is True
    assert app.get_batch(batch_id).successes == 2


def test_a_command_that_fails_midway_leaves_nothing_unsaved_in_the_cache(
    open_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_app()
    batch_id = app.submit(RegisterBatch("midway", essays(4), seed=1))
    pairs = open_pairs(app, batch_id)
    app.record_outcome(batch_id, win(pairs[0]))
    before = vars(app.get_batch(batch_id))

    def bug(batch: CJBatch, now: Any) -> None:
        raise RuntimeError("a bug after the outcome was applied in memory")

    monkeypatch.setattr(workflow, "continue_after_wave", bug)
    with pytest.raises(RuntimeError):
        app.record_outcome(batch_id, win(pairs[1]))
    assert vars(app.get_batch(batch_id)) == before
    monkeypatch.undo()
    assert app.record_outcome(batch_id, win(pairs[1])) is True


def test_the_copy_a_query_returns_is_not_the_cached_batch(open_app: Any) -> None:
    app = open_app()
    batch_id = one_wave(app, "copies", n=5, cap=6)
    copy = app.get_batch(batch_id)
    copy.comparisons.clear()
    copy.waves.append("garbage")
    assert len(app.get_batch(batch_id).comparisons) == 6
    assert app.record_outcome(batch_id, win(open_pairs(app, batch_id)[0])) is True


def test_threads_sharing_one_application_lose_no_outcome(open_app: Any) -> None:
    app = open_app()
    batch_ids = [one_wave(app, f"threads-{i}", n=12, cap=40) for i in range(3)]
    work = [(b, p) for b in batch_ids for p in open_pairs(app, b)]
    errors: list[BaseException] = []

    def record(share: list[tuple[UUID, Pair]]) -> None:
        try:
            for batch_id, pair in share:
                app.record_outcome(batch_id, win(pair))
                app.get_batch(batch_id)  # queries copy the cached batch meanwhile
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=record, args=(work[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    replay = open_app(REPLAY_ONLY)
    for batch_id in batch_ids:
        replayed = replay.get_batch(batch_id)
        assert replayed.successes == 40
        assert replayed.is_finalized
        assert vars(app.get_batch(batch_id)) == vars(replayed)


def test_a_query_waits_for_the_command_changing_the_batch(
    open_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query never copies a cached batch halfway through a command's changes."""
    app = open_app()
    batch_id = one_wave(app, "query-waits", n=6, cap=10)
    pair = open_pairs(app, batch_id)[0]
    inside, release = threading.Event(), threading.Event()
    real_continue = workflow.continue_after_wave

    def slow_continue(batch: CJBatch, now: Any) -> Any:
        inside.set()  # the outcome is applied in memory, not yet saved
        release.wait(timeout=10)
        return real_continue(batch, now)

    monkeypatch.setattr(workflow, "continue_after_wave", slow_continue)
    command = threading.Thread(target=app.record_outcome, args=(batch_id, win(pair)))
    command.start()
    assert inside.wait(timeout=10)
    seen: list[int] = []
    query = threading.Thread(target=lambda: seen.append(app.get_batch(batch_id).successes))
    query.start()
    query.join(timeout=0.3)
    assert query.is_alive(), "the query waited for the command"
    release.set()
    command.join(timeout=10)
    query.join(timeout=10)
    assert seen == [1]
