"""A comparison's deadline: a provider batch API's 24 h window (plus a margin) in
``provider_batch_api`` mode, the ordinary comparison deadline otherwise."""

from __future__ import annotations

import pytest

from domain.policy import BatchPolicy
from domain.values import BatchingMode

HOUR = 3600.0
LONG = BatchPolicy(comparison_deadline_seconds=40 * HOUR)


@pytest.mark.parametrize(
    ("policy", "mode", "seconds"),
    [
        (BatchPolicy(), BatchingMode.PER_REQUEST, 4 * HOUR),
        (BatchPolicy(), BatchingMode.SERIAL_BUNDLE, 4 * HOUR),
        (BatchPolicy(), None, 4 * HOUR),
        (BatchPolicy(), BatchingMode.PROVIDER_BATCH_API, 26 * HOUR),
        (LONG, BatchingMode.PROVIDER_BATCH_API, 40 * HOUR),  # never shorter than ordinary
    ],
)
def test_the_deadline_follows_the_batching_mode(policy, mode, seconds):
    assert policy.deadline_seconds_for(mode) == seconds
