"""The long-running processes tune the garbage collector once start-up is done."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from infrastructure.cli.service_cmd import GC_THRESHOLDS, _tune_gc


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

    _tune_gc()

    # frozen = in the permanent generation, which no collection walks
    assert gc.get_freeze_count() > 0
    assert not any(o is alive_at_start_up for o in gc.get_objects())
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # the interpreter's default


@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_after_start_up_are_still_collected() -> None:
    _tune_gc()

    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2
