"""Exponential backoff with jitter."""

from __future__ import annotations

import random

import pytest

from domain.backoff import Backoff


def test_delays_double_and_are_capped_without_jitter():
    backoff = Backoff(base_seconds=0.5, max_seconds=3.0, jitter=0.0)
    assert [backoff.delay(n, 0.9) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_randomises_only_its_share_of_the_delay():
    backoff = Backoff(base_seconds=2.0, max_seconds=60.0, jitter=0.5)
    assert backoff.delay(1, 0.0) == 1.0
    assert backoff.delay(1, 1.0) == 2.0
    rng = random.Random(3)
    for n in range(1, 8):
        exponential = min(60.0, 2.0 * 2 ** (n - 1))
        assert exponential / 2 <= backoff.delay(n, rng.random()) <= exponential


def test_a_huge_retry_number_does_not_overflow():
    assert Backoff(max_seconds=30.0, jitter=0.0).delay(10_000, 0.5) == 30.0


@pytest.mark.parametrize(
    "kwargs", [{"base_seconds": -1.0}, {"max_seconds": -1.0}, {"jitter": 1.5}, {"jitter": -0.1}]
)
def test_invalid_backoff_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


@pytest.mark.parametrize(("n", "fraction"), [(0, 0.5), (1, 1.5), (1, -0.1)])
def test_invalid_delay_arguments_are_rejected(n, fraction):
    with pytest.raises(ValueError):
        Backoff().delay(n, fraction)
