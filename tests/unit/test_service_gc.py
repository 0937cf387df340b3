"""The long-running processes tune the garbage collector once start-up is done: serve,
lps-worker and the read-model commands that work through the log."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from application.batches import BatchApplication
from infrastructure.gc_tuning import GC_THRESHOLDS, tune_gc
from tests.fakes import run_batch
from tests.unit.test_projections_cli import run_cli


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_the_young_generation_collected_less_often() -> None:
    alive_at_start_up: list[object] = []  # a container: tracked by the collector
    gc.unfreeze()
    assert any(o is alive_at_start_up for o in gc.get_objects())

    tune_gc()

    # frozen = in the permanent generation, which no collection walks
    assert gc.get_freeze_count() > 0
    assert not any(o is alive_at_start_up for o in gc.get_objects())
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # the interpreter's default


@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_after_start_up_are_still_collected() -> None:
    tune_gc()

    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2


@pytest.fixture
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "events.db"
    with BatchApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    ) as app:
        run_batch(app, n=6, ref="gc")
    capsys.readouterr()
    return path


@pytest.mark.usefixtures("restored_gc")
@pytest.mark.parametrize("command", [("run", "--once"), ("rebuild", "rankings")])
def test_read_model_commands_work_through_the_log_with_the_collector_tuned(
    capsys: pytest.CaptureFixture[str], store: Path, command: tuple[str, ...]
) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)

    code, _, err = run_cli(capsys, "projections", *command, "--store", str(store))

    assert code == 0, err
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
