"""A comparison request as it waits in an LPS queue, and the queue processing modes.

CJ speaks of *batching modes* (what it asked for); LPS speaks of *queue processing modes*
(how it executes). LPS knows only its own vocabulary: the two meet in the message
contract (``infrastructure.messaging.contracts.queue_mode_for``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

OverrideValue = str | int | float | bool | None
OverrideItems = tuple[tuple[str, OverrideValue], ...]


class QueueProcessingMode(Enum):
    """How LPS executes a bundle of compatible requests."""

    PER_REQUEST = "per_request"
    SERIAL_BUNDLE = "serial_bundle"
    BATCH_API = "batch_api"


def normalise_overrides(
    overrides: Mapping[str, OverrideValue] | Iterable[tuple[str, OverrideValue]] | None,
) -> OverrideItems:
    """Overrides as key-sorted items, so that equal settings compare equal however given.

    A key given twice is rejected: silently keeping one of two values would hide a bug in
    whoever built the request.
    """
    if overrides is None:
        return ()
    items = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides)
    keys = [key for key, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError("override keys must be unique")
    return tuple(sorted(items, key=lambda item: item[0]))


@dataclass(frozen=True)
class QueuedRequest:
    """One comparison waiting to be executed by LPS.

    ``request_id`` is the comparison id: CJ records at most one outcome per comparison, so
    the id doubles as the idempotency key and as the custom id of a provider batch item.
    ``attempt_count`` is how many provider attempts were already spent on the request
    (non-zero when a request is redelivered); they count toward the retry limit.
    ``overrides`` are normalised (sorted by key) on construction. ``mode_hint`` is the queue
    processing mode the sender asked for (``None``: the executor's default).
    """

    request_id: str
    batch_id: str
    essay_a: str
    essay_b: str
    provider: str
    model: str
    enqueued_at: datetime
    time_to_live: timedelta
    correlation_id: str
    overrides: OverrideItems = ()
    mode_hint: QueueProcessingMode | None = None
    preferred_bundle_size: int | None = None
    attempt_count: int = 0
    # what the judge reads; kept out of ``repr`` so a logged request never shows student text
    essay_a_text: str = field(default="", repr=False)
    essay_b_text: str = field(default="", repr=False)
    instructions: str = field(default="", repr=False)
    rubric: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.essay_a == self.essay_b:
            raise ValueError("a comparison needs two different essays")
        if self.attempt_count < 0:
            raise ValueError("attempt_count must not be negative")
        object.__setattr__(self, "overrides", normalise_overrides(self.overrides))

    @property
    def comparison_id(self) -> str:
        return self.request_id

    @property
    def expires_at(self) -> datetime:
        return self.enqueued_at + self.time_to_live

    def is_expired(self, now: datetime) -> bool:
        """Expired once its time to live has fully elapsed (the deadline itself included)."""
        return now >= self.expires_at

    def with_attempts(self, attempt_count: int) -> QueuedRequest:
        return replace(self, attempt_count=attempt_count)
