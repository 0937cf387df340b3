"""Embedded mode: one process, a SQLite store, and LPS wired in-process.

The outbox dispatcher is the same one service mode uses; only the transport differs. Here
the transport queues requests in memory, and ``run_until_idle`` alternates: dispatch the
stored waves → let the in-process LPS executor answer them → record the outcomes through
``BatchApplication.record_outcomes`` (the entry point the broker consumer also uses).
Requests and outcomes cross to and from LPS as the same contract messages the broker
carries, so LPS sees nothing of CJ's types here either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import structlog

from application.batches import BatchApplication, OutcomeItem, RecordStatus
from application.dispatcher import OutboxDispatcher
from application.ports import ComparisonRequest
from domain.values import ComparisonOutcome, FailureDetails
from infrastructure.messaging.contracts import (
    ComparisonOutcomeV1,
    ComparisonRequestV1,
    ComparisonRequestV2,
    raw_answer_of,
)

log = structlog.get_logger("cjledger.embedded")

Executor = Callable[[Sequence[ComparisonRequest]], list[OutcomeItem]]
#: an in-process LPS: request messages in, one outcome message per request out
MessageExecutor = Callable[[Sequence[ComparisonRequestV1]], Sequence[ComparisonOutcomeV1]]


def through_contract(execute: MessageExecutor) -> Executor:
    """Let an in-process LPS answer CJ's requests, translating both ways through the
    message contract exactly as the broker path does (LPS never sees CJ's types)."""

    def run(requests: Sequence[ComparisonRequest]) -> list[OutcomeItem]:
        answers = execute([ComparisonRequestV2.from_request(r) for r in requests])
        return [(UUID(m.batch_id), m.to_domain(), raw_answer_of(m)) for m in answers]

    return run


def with_outage(execute: Executor, waves: frozenset[int]) -> Executor:
    """A provider outage during ``waves``: every comparison of those waves fails (the
    provider is never reached); other waves go to ``execute`` as usual."""
    if not waves:
        return execute

    def run(requests: Sequence[ComparisonRequest]) -> list[OutcomeItem]:
        down = [r for r in requests if r.wave_number in waves]
        answers = (
            execute([r for r in requests if r.wave_number not in waves])
            if len(down) < len(requests)
            else []
        )
        return answers + [
            (
                UUID(r.batch_id),
                ComparisonOutcome(
                    r.comparison_id,
                    failure=FailureDetails(
                        "PROVIDER_UNAVAILABLE",
                        f"simulated provider outage during wave {r.wave_number}",
                        retryable=False,
                    ),
                ),
            )
            for r in down
        ]

    return run


@dataclass
class InProcessTransport:
    """Accepts requests into a local queue; delivery is confirmed once queued."""

    queue: list[ComparisonRequest] = field(default_factory=list)

    def send(self, requests: Sequence[ComparisonRequest]) -> None:
        self.queue.extend(requests)

    def take_all(self) -> list[ComparisonRequest]:
        taken, self.queue = self.queue, []
        return taken


@dataclass
class EmbeddedRunStats:
    rounds: int = 0
    requests_sent: int = 0
    outcomes_recorded: int = 0
    duplicates: int = 0
    rejected: int = 0


def run_until_idle(
    app: BatchApplication,
    dispatcher: OutboxDispatcher,
    transport: InProcessTransport,
    execute: Executor,
    max_rounds: int = 10_000,
) -> EmbeddedRunStats:
    """Pump waves through LPS until nothing is left to send or answer."""
    stats = EmbeddedRunStats()
    for _ in range(max_rounds):
        sent = dispatcher.pump()
        stats.requests_sent += sent
        requests = transport.take_all()
        if not requests:
            return stats
        stats.rounds += 1
        outcomes = execute(requests)
        for result in app.record_outcomes(outcomes):
            if result.status is RecordStatus.RECORDED:
                stats.outcomes_recorded += 1
            elif result.status is RecordStatus.DUPLICATE:
                stats.duplicates += 1
            else:
                stats.rejected += 1
                log.warning("outcome_rejected", code=result.code, reason=result.reason)
    raise RuntimeError(f"the embedded run did not settle within {max_rounds} rounds")
