"""Queued requests and queue processing modes (their mapping from CJ batching modes is the
contract's: ``tests/unit/lps/test_lps_contracts.py``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.lps import QueueProcessingMode, normalise_overrides
from infrastructure.messaging.contracts import ComparisonRequestV1
from tests.unit.lps.support import T0, make_request


def test_queue_mode_values_are_the_documented_names():
    assert [m.value for m in QueueProcessingMode] == ["per_request", "serial_bundle", "batch_api"]
    assert not isinstance(QueueProcessingMode.BATCH_API, str)


def test_overrides_are_sorted_so_equal_settings_compare_equal():
    one = make_request("c1", overrides={"temperature": 0.0, "max_tokens": 300})
    two = make_request("c2", overrides=[("max_tokens", 300), ("temperature", 0.0)])
    assert one.overrides == two.overrides == (("max_tokens", 300), ("temperature", 0.0))


def test_overrides_with_a_repeated_key_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        normalise_overrides([("temperature", 0.0), ("temperature", 1.0)])


def test_absent_overrides_normalise_to_empty():
    assert normalise_overrides(None) == ()


@pytest.mark.parametrize(
    ("elapsed", "expired"),
    [
        (timedelta(0), False),
        (timedelta(minutes=59, seconds=59), False),
        (timedelta(hours=1), True),
        (timedelta(hours=2), True),
    ],
)
def test_a_request_expires_when_its_time_to_live_has_elapsed(elapsed, expired):
    request = make_request("c1", ttl=timedelta(hours=1))
    assert request.expires_at == T0 + timedelta(hours=1)
    assert request.is_expired(T0 + elapsed) is expired


def test_a_request_needs_two_different_essays():
    with pytest.raises(ValueError):
        make_request("c1", essay_a="e1", essay_b="e1")


def test_attempt_count_cannot_be_negative():
    with pytest.raises(ValueError):
        make_request("c1", attempts=-1)


def test_the_comparison_id_survives_the_queue_and_names_the_outcome():
    """CJ's comparison id becomes the queued request's id and comes back on its outcome."""
    message = ComparisonRequestV1(
        comparison_id="cmp-9",
        batch_id="batch-1",
        wave_number=1,
        essay_a="e1",
        essay_b="e2",
        provider="simulated",
        model="sim-1",
        requested_at=T0,
        deadline_at=T0 + timedelta(hours=1),
        correlation_id="corr-1",
    )
    queued = message.to_queued(T0)
    assert queued.request_id == "cmp-9"
    assert make_request("cmp-8").request_id == "cmp-8" != queued.request_id
