"""From CJ's ``ComparisonRequest`` to the LPS queue's ``QueuedRequest``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from application.ports import ComparisonRequest
from domain.lps import OverrideValue, QueuedRequest, normalise_overrides
from domain.values import BatchingMode


def queued_request_from(
    request: ComparisonRequest,
    now: datetime,
    *,
    overrides: Mapping[str, OverrideValue] | None = None,
    attempt_count: int = 0,
) -> QueuedRequest:
    """Enqueue ``request`` at ``now``; it lives until the comparison's deadline.

    A request that arrives after its deadline gets a zero time to live, so the executor
    answers it with ``EXPIRED`` instead of spending a provider call on it.
    """
    return QueuedRequest(
        request_id=request.comparison_id,
        batch_id=request.batch_id,
        essay_a=request.essay_a,
        essay_b=request.essay_b,
        provider=request.provider,
        model=request.model,
        enqueued_at=now,
        time_to_live=max(timedelta(0), request.deadline_at - now),
        correlation_id=request.correlation_id,
        overrides=normalise_overrides(overrides),
        batching_hint=BatchingMode(request.batching_mode),
        preferred_bundle_size=request.preferred_bundle_size,
        attempt_count=attempt_count,
    )
