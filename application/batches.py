"""The CJ batch application: the use cases every adapter (CLI, HTTP, broker) calls.

Each command loads a batch, lets the domain workflow mutate it, and saves every resulting
event in **one** atomic append. Optimistic concurrency on the aggregate does the rest: if
two workers record the last two outcomes of a wave at once, one save fails with
``IntegrityError``; that worker reloads the batch, re-applies its outcome (now a duplicate
or a plain late arrival) and does nothing extra, so only one next wave is ever requested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, JSONTranscoder
from eventsourcing.utils import get_topic

from application.serialization import TupleRestoringMapper, register_value_types
from domain import workflow
from domain.batch import BatchPhase, CJBatch, ComparisonRecord, OutcomeRejected, WaveRecord
from domain.policy import BatchPolicy
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    ContinuationContext,
    DecisionKind,
    Essay,
    EssayScore,
    FailureSource,
    FinalStatus,
    GenerationMode,
    Pair,
)

log = structlog.get_logger("cjledger.batches")

VALUE_DATACLASSES: tuple[type[Any], ...] = (
    Essay,
    Pair,
    BatchPolicy,
    ComparisonOutcome,
    ContinuationContext,
    EssayScore,
    ComparisonRecord,
    WaveRecord,
)
VALUE_ENUMS: tuple[type[Enum], ...] = (
    BatchingMode,
    GenerationMode,
    DecisionKind,
    FinalStatus,
    FailureSource,
    BatchPhase,
)


class BatchNotFound(LookupError):
    code = "unknown_batch"


class ConcurrencyExhausted(RuntimeError):
    """Optimistic-concurrency retries ran out; the caller should retry later."""


@dataclass(frozen=True)
class RegisterBatch:
    external_ref: str
    essays: tuple[Essay, ...]
    provider: str = "simulated"
    model: str = "simulated-judge-1"
    requested_mode: BatchingMode | None = None
    budget_override: int | None = None
    seed: int = 0
    policy: BatchPolicy = field(default_factory=BatchPolicy)


class RecordStatus(Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class RecordResult:
    status: RecordStatus
    code: str | None = None
    reason: str | None = None


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


class BatchApplication(Application[UUID]):
    """Registers, starts and advances CJ batches."""

    name = "CJBatches"
    env = {"MAPPER_TOPIC": get_topic(TupleRestoringMapper)}
    max_save_attempts = 10

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        mode_setting: BatchingMode | None = None,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self.mode_setting = mode_setting

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_value_types(transcoder, VALUE_DATACLASSES, VALUE_ENUMS)

    # ------------------------------------------------------------------ commands

    def submit(self, cmd: RegisterBatch) -> UUID:
        """Register and start a batch in one append. Idempotent per external reference."""
        batch_id = CJBatch.create_id(cmd.external_ref)
        if batch_id in self.repository:
            log.info("batch_already_registered", batch_id=str(batch_id))
            return batch_id
        batch = CJBatch.register(
            external_ref=cmd.external_ref,
            essays=tuple(cmd.essays),
            policy=cmd.policy.with_budget_override(cmd.budget_override),
            requested_mode=cmd.requested_mode,
            provider=cmd.provider,
            model=cmd.model,
            seed=cmd.seed,
        )
        workflow.start_batch(batch, self.mode_setting, self.clock())
        try:
            self.save(batch)
        except IntegrityError:
            # Someone registered the same reference a moment ago: same batch, no-op.
            return batch_id
        log.info(
            "batch_submitted",
            batch_id=str(batch_id),
            external_ref=cmd.external_ref,
            mode=batch.mode.value if batch.mode else None,
        )
        return batch_id

    def record_outcome(self, batch_id: UUID, outcome: ComparisonOutcome) -> bool:
        """Record one outcome. ``False`` for a duplicate; raises for a rejected outcome."""
        (result,) = self.record_outcomes([(batch_id, outcome)])
        if result.status is RecordStatus.REJECTED:
            if result.code == BatchNotFound.code:
                raise BatchNotFound(result.reason)
            raise OutcomeRejected(result.code or "rejected", result.reason or "rejected")
        return result.status is RecordStatus.RECORDED

    def record_outcomes(
        self, items: Sequence[tuple[UUID, ComparisonOutcome]]
    ) -> list[RecordResult]:
        """Record many outcomes in one transaction; each gets its own result.

        A rejected outcome is reported alone and never blocks its neighbours.
        """
        by_batch: dict[UUID, list[int]] = {}
        for index, (batch_id, _) in enumerate(items):
            by_batch.setdefault(batch_id, []).append(index)

        for _attempt in range(self.max_save_attempts):
            results: list[RecordResult | None] = [None] * len(items)
            changed: list[CJBatch] = []
            now = self.clock()
            for batch_id, indexes in by_batch.items():
                batch = self._get_or_none(batch_id)
                if batch is None:
                    for i in indexes:
                        results[i] = RecordResult(
                            RecordStatus.REJECTED,
                            BatchNotFound.code,
                            f"batch {batch_id} does not exist",
                        )
                    continue
                for i in indexes:
                    results[i] = self._apply_outcome(batch, items[i][1], now)
                if batch.pending_events:
                    changed.append(batch)
            try:
                if changed:
                    self.save(*changed)
            except IntegrityError:
                log.info("outcome_save_conflict_retrying", batches=len(changed))
                continue
            return [r for r in results if r is not None]
        raise ConcurrencyExhausted(f"gave up after {self.max_save_attempts} conflicting saves")

    def close_overdue(self, now: datetime | None = None) -> int:
        """Close every overdue comparison of every open batch with a deadline failure."""
        now = now or self.clock()
        closed = 0
        for batch_id in self.open_batch_ids():
            for _attempt in range(self.max_save_attempts):
                batch = self.get_batch(batch_id)
                ids = workflow.close_overdue(batch, now)
                if not ids:
                    break
                try:
                    self.save(batch)
                except IntegrityError:
                    continue
                closed += len(ids)
                log.info(
                    "comparisons_closed_by_deadline", batch_id=str(batch_id), comparisons=len(ids)
                )
                break
        return closed

    # ------------------------------------------------------------------ queries

    def get_batch(self, batch_id: UUID, version: int | None = None) -> CJBatch:
        try:
            batch: CJBatch = self.repository.get(batch_id, version=version)
        except AggregateNotFoundError:
            raise BatchNotFound(f"batch {batch_id} does not exist") from None
        return batch

    def batch_events(self, batch_id: UUID) -> list[DomainEventProtocol[UUID]]:
        events = list(self.repository.event_store.get(batch_id))
        if not events:
            raise BatchNotFound(f"batch {batch_id} does not exist")
        return events

    def open_batch_ids(self) -> list[UUID]:
        """Batches registered and not yet finalized, read from the notification log."""
        registered: dict[UUID, None] = {}
        finalized: set[UUID] = set()
        topics = [get_topic(CJBatch.BatchRegistered), get_topic(CJBatch.Finalized)]
        for notification in self.iter_notifications(topics):
            if notification.topic == topics[0]:
                registered[notification.originator_id] = None
            else:
                finalized.add(notification.originator_id)
        return [b for b in registered if b not in finalized]

    def iter_notifications(
        self, topics: Sequence[str] = (), start: int = 0, page: int = 1000
    ) -> Iterable[Any]:
        position = start
        while True:
            notifications = self.recorder.select_notifications(
                start=position, limit=page, topics=topics, inclusive_of_start=False
            )
            if not notifications:
                return
            yield from notifications
            position = notifications[-1].id

    # ------------------------------------------------------------------ helpers

    def _get_or_none(self, batch_id: UUID) -> CJBatch | None:
        try:
            return self.get_batch(batch_id)
        except BatchNotFound:
            return None

    @staticmethod
    def _apply_outcome(batch: CJBatch, outcome: ComparisonOutcome, now: datetime) -> RecordResult:
        try:
            recorded = workflow.record_outcome(batch, outcome, now)
        except OutcomeRejected as rejected:
            return RecordResult(RecordStatus.REJECTED, rejected.code, str(rejected))
        return RecordResult(RecordStatus.RECORDED if recorded else RecordStatus.DUPLICATE)
