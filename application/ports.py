"""Ports: what the CJ application needs from the outside world, as Protocols.

The dispatcher hands ``ComparisonRequest``s to a ``RequestTransport``; whatever executes
them (the in-process LPS in embedded mode, RabbitMQ in service mode) sends outcomes back
through ``BatchApplication.record_outcomes`` — one entry point for every transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.values import BatchingMode


@dataclass(frozen=True)
class ComparisonRequest:
    """One comparison for LPS to execute, derived from a stored ``ComparisonsRequested``."""

    comparison_id: str
    batch_id: str
    wave_number: int
    essay_a: str
    essay_b: str
    provider: str
    model: str
    batching_mode: BatchingMode
    preferred_bundle_size: int
    requested_at: datetime
    deadline_at: datetime
    correlation_id: str
    # filled from the content store as the request leaves (never stored in an event)
    essay_a_text: str = ""
    essay_b_text: str = ""
    instructions: str = ""
    rubric: str = ""


class RequestTransport(Protocol):
    """Delivers comparison requests to LPS. Must raise if delivery is not confirmed."""

    def send(self, requests: Sequence[ComparisonRequest]) -> None: ...


class PositionStore(Protocol):
    """Remembers how far a log follower (the outbox dispatcher) has got."""

    def get(self, name: str) -> int: ...

    def set(self, name: str, position: int) -> None: ...


class BatchObserver(Protocol):
    """Told about events once they are stored (metrics). Must not raise."""

    def events_recorded(self, mode: BatchingMode | None, events: Sequence[Any]) -> None: ...


class NoObserver:
    def events_recorded(self, mode: BatchingMode | None, events: Sequence[Any]) -> None:
        pass
