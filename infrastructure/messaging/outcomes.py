"""The CJ outcome consumer: validate → record (many at once) → acknowledge.

Write throughput comes from batching, not from more writers: the message handler only
parses the outcome and puts it in line; the consumer's recording loop takes whatever is
waiting (up to ``max_items``; an idle loop first waits at most ``max_wait`` seconds for
more, a backlog gathered during the last recording goes at once), records the
lot with a single ``BatchApplication.record_outcomes`` call — one transaction — and then
settles each message by its own result. Acknowledgements go out only after the commit.
(Handlers do not wait for their result: a suspended handler per message cost more CPU
than recording the outcome, see ``bench/bench_broker.py``.)

How each message is settled:

* recorded or duplicate → ack;
* malformed JSON, a schema violation, an unknown batch or comparison, a winner outside
  the pair → dead letter with the reason (``dead_letters``), nothing stored; a bad message
  in a group is reported alone and never blocks its neighbours;
* the store is unreachable (or optimistic-concurrency retries ran out) → held for a
  backoff that grows with consecutive failures, then requeued: never acknowledged, so
  never lost;
* an unexpected error → the group is split and each outcome recorded alone, so only the
  outcome that still fails on its own is dead-lettered (``internal_error``).

A message may also be a bundle of outcomes (``contracts.bundle_items``, what
``lps-worker`` sends for a group it executed): each item is taken and settled exactly like
a single message — a bad item dead-lettered alone with its reason, its neighbours
recorded — and the message is acknowledged once all its items are (``bundles``); if any
item has to be requeued, the whole message is, and its recorded items come back as
duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

import anyio
import psycopg
import structlog
from eventsourcing.persistence import InterfaceError, OperationalError
from pydantic import ValidationError

from application.batches import ConcurrencyExhausted, OutcomeItem, RecordResult, RecordStatus
from domain.backoff import Backoff
from domain.values import ComparisonOutcome
from infrastructure.messaging.bundles import split_bundle
from infrastructure.messaging.contracts import (
    OUTCOME_BUNDLE,
    BundleRefused,
    ComparisonOutcomeV1,
    bundle_items,
    parse_outcome_data,
    parse_outcome_message,
    raw_answer_of,
)
from infrastructure.messaging.dead_letters import (
    DeadLetterSink,
    Delivery,
    UnpublishableDeadLetter,
)
from infrastructure.messaging.validation import describe_validation_error

log = structlog.get_logger("cjledger.outcomes")

RecordOutcomes = Callable[[Sequence[OutcomeItem]], list[RecordResult]]

#: failures that say "try again later", not "this message is wrong"
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    ConcurrencyExhausted,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True)
class Refusal:
    code: str
    reason: str


@dataclass(frozen=True)
class ParsedOutcome:
    batch_id: UUID
    outcome: ComparisonOutcome
    message: ComparisonOutcomeV1


def parse_outcome(body: bytes) -> ParsedOutcome | Refusal:
    """Turn a message body into CJ's outcome, or say precisely why it cannot be one."""
    return _parsed(parse_outcome_message, body)


def parse_outcome_item(data: Any) -> ParsedOutcome | Refusal:
    """The same for one already decoded item of a bundle."""
    return _parsed(parse_outcome_data, data)


def _parsed(parse: Callable[[Any], ComparisonOutcomeV1], raw: Any) -> ParsedOutcome | Refusal:
    try:
        message = parse(raw)
    except ValidationError as error:
        errors = error.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            return Refusal("malformed_json", f"the body is not valid JSON: {errors[0]['msg']}")
        if any(e["type"] in ("union_tag_invalid", "union_tag_not_found") for e in errors):
            return Refusal(
                "unsupported_schema_version",
                "this consumer reads ComparisonOutcome schema_version 1 or 2 only",
            )
        return Refusal("schema_violation", describe_validation_error(error))
    try:
        batch_id = UUID(message.batch_id)
    except ValueError:
        return Refusal("unknown_batch", f"batch id {message.batch_id!r} is not a UUID")
    try:
        outcome = message.to_domain()
    except ValueError as error:
        return Refusal("schema_violation", str(error))
    return ParsedOutcome(batch_id, outcome, message)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT_ERRORS)


@dataclass
class ConsumerStats:
    groups: int = 0
    outcomes: int = 0
    recorded: int = 0
    duplicates: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    transient_failures: int = 0
    largest_group: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Waiting:
    delivery: Delivery
    parsed: ParsedOutcome
    item: OutcomeItem
    settled: bool = False  # acked, or handed to a task that dead-letters or requeues it

    @property
    def ids(self) -> dict[str, str]:
        """What a log line about this outcome names (built only when one is written)."""
        return {
            "batch_id": str(self.parsed.batch_id),
            "comparison_id": self.parsed.outcome.comparison_id,
            "correlation_id": self.parsed.message.correlation_id,
        }


def _batch_ids(group: Sequence[_Waiting]) -> list[str]:
    return [str(batch_id) for batch_id in sorted({w.parsed.batch_id for w in group})]


class OutcomeConsumer:
    """Settles each outcome message: ack, dead letter with a reason, or requeue later.

    ``handle`` is the broker handler. ``start`` runs the recording loop; ``drain`` (the
    broker has stopped delivering) records what is still waiting and settles everything
    it can; ``stop`` ends the loop — anything left unsettled goes back to the queue when
    the channel closes.
    """

    def __init__(
        self,
        record_outcomes: RecordOutcomes,
        dead_letters: DeadLetterSink,
        *,
        max_items: int = 1000,
        max_wait: float = 0.005,
        backoff: Backoff | None = None,
        on_recorded: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.record_outcomes = record_outcomes
        self.dead_letters = dead_letters
        self.max_items = max_items
        self.max_wait = max_wait
        self.backoff = backoff or Backoff(base_seconds=0.5, max_seconds=30.0)
        self.on_recorded = on_recorded
        self.rng = rng or random.Random()
        self.stats = ConsumerStats()
        self.consecutive_failures = 0
        self._waiting: list[_Waiting] = []
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outcome-recorder")

    async def drain(self) -> None:
        """Record and settle everything received so far; requeue what waits for a retry."""
        self._closing.set()
        while self._waiting or not self._idle.is_set():
            self._arrived.set()
            await self._idle.wait()
            await asyncio.sleep(0)
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._settling):
            task.cancel()

    # ------------------------------------------------------------------ intake

    async def handle(self, delivery: Delivery) -> None:
        """Take one message: a single outcome, or a bundle whose items are taken one by
        one (each settled alone, the message once all are, see ``bundles``)."""
        try:
            items = bundle_items(delivery.body, OUTCOME_BUNDLE)
        except BundleRefused as refused:
            self._settle_later(self._dead_letter(delivery, refused.code, refused.reason, {}))
            return
        if items is None:
            self._take(delivery, partial(parse_outcome, delivery.body))
            return
        for item in split_bundle(delivery, items):
            self._take(item, partial(parse_outcome_item, item.data))

    def _take(self, delivery: Delivery, parse: Callable[[], ParsedOutcome | Refusal]) -> None:
        try:
            parsed = parse()
            if isinstance(parsed, Refusal):
                self._settle_later(self._dead_letter(delivery, parsed.code, parsed.reason, {}))
                return
            item = (parsed.batch_id, parsed.outcome, raw_answer_of(parsed.message))
        except Exception:
            # a bug here must not leave the message unsettled until the channel closes
            log.exception("outcome_handling_failed", message_id=delivery.message_id)
            self._settle_later(self._requeue_later(delivery))
            return
        self._waiting.append(_Waiting(delivery, parsed, item))
        # wake the loop for the first item, and again once a group is full
        if len(self._waiting) == 1 or len(self._waiting) >= self.max_items:
            self._arrived.set()

    # ------------------------------------------------------------------ recording

    async def _run(self) -> None:
        backlog = False  # outcomes arrived while the last group was being recorded
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            self._idle.clear()
            group: list[_Waiting] = []
            try:
                if (
                    not backlog
                    and len(self._waiting) < self.max_items
                    and self.max_wait > 0
                    and not self._closing.is_set()
                ):
                    # An idle consumer lets the group fill for a moment (woken early only
                    # when it is full). A backlog does not wait: the outcomes gathered
                    # while the last group was being recorded, which took longer.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), self.max_wait)
                    self._arrived.clear()
                group = self._waiting[: self.max_items]
                del self._waiting[: self.max_items]
                if self._waiting:
                    self._arrived.set()  # more is waiting: the next group starts at once
                if group:
                    await self._record_group(group)
            except Exception:
                # never let the loop die: unsettled messages would wait for a restart
                log.exception("outcome_group_failed", outcomes=len(group))
                for waiting in group:
                    if not waiting.settled:
                        self._settle_later(self._requeue_later(waiting.delivery))
            finally:
                backlog = bool(self._waiting)
                self._idle.set()

    async def _record_group(self, group: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            results = await anyio.to_thread.run_sync(self.record_outcomes, [w.item for w in group])
        except Exception as error:
            if is_transient(error):
                self._transient_failure(group, error)
            elif len(group) > 1:
                log.warning(
                    "outcome_group_failed_recording_alone",
                    outcomes=len(group),
                    error=f"{type(error).__name__}: {error}",
                )
                for waiting in group:
                    await self._record_group([waiting])
            else:
                reason = f"{type(error).__name__}: {error}"
                group[0].settled = True
                self._settle_later(
                    self._dead_letter(group[0].delivery, "internal_error", reason, group[0].ids)
                )
            return
        self.consecutive_failures = 0
        for waiting, result in zip(group, results, strict=True):
            if result.status is RecordStatus.REJECTED:
                code = result.code or "rejected"
                reason = result.reason or "rejected by CJ"
                waiting.settled = True
                self._settle_later(self._dead_letter(waiting.delivery, code, reason, waiting.ids))
            else:
                await _ack(waiting)
        self._count(results)
        log.info(
            "outcomes_recorded",
            outcomes=len(group),
            recorded=sum(1 for r in results if r.status is RecordStatus.RECORDED),
            duplicates=sum(1 for r in results if r.status is RecordStatus.DUPLICATE),
            rejected=sum(1 for r in results if r.status is RecordStatus.REJECTED),
            batch_ids=_batch_ids(group),
            seconds=round(time.perf_counter() - started, 4),
        )
        if self.on_recorded is not None and any(r.status is RecordStatus.RECORDED for r in results):
            self.on_recorded()

    def _transient_failure(self, group: list[_Waiting], error: Exception) -> None:
        self.consecutive_failures += 1
        self.stats.transient_failures += 1
        log.warning(
            "outcome_group_requeued",
            outcomes=len(group),
            consecutive_failures=self.consecutive_failures,
            error=f"{type(error).__name__}: {error}",
            batch_ids=_batch_ids(group),
        )
        for waiting in group:
            waiting.settled = True
            self._settle_later(self._requeue_later(waiting.delivery))

    def _count(self, results: Sequence[RecordResult]) -> None:
        stats = self.stats
        stats.groups += 1
        stats.outcomes += len(results)
        stats.largest_group = max(stats.largest_group, len(results))
        for result in results:
            if result.status is RecordStatus.RECORDED:
                stats.recorded += 1
            elif result.status is RecordStatus.DUPLICATE:
                stats.duplicates += 1
            else:
                stats.rejected += 1

    # ------------------------------------------------------------------ settling

    def _settle_later(self, settle: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(settle)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _dead_letter(
        self, delivery: Delivery, code: str, reason: str, ids: dict[str, str]
    ) -> None:
        log.warning(
            "outcome_dead_lettered",
            code=code,
            reason=reason,
            message_id=delivery.message_id,
            **ids,
        )
        try:
            await self.dead_letters.send(delivery, code, reason)
        except UnpublishableDeadLetter as error:
            log.warning("outcome_rejected_to_broker_dead_letters", error=str(error), **ids)
            self.stats.dead_lettered += 1
            await delivery.reject(requeue=False)
            return
        except Exception as error:
            log.error(
                "dead_letter_not_confirmed",
                code=code,
                error=f"{type(error).__name__}: {error}",
                **ids,
            )
            await self._requeue_later(delivery)
            return
        self.stats.dead_lettered += 1
        await delivery.ack()

    async def _requeue_later(self, delivery: Delivery) -> None:
        """Hold the message for a backoff (cut short by ``drain``), then requeue it."""
        delay = self.backoff.delay(max(1, self.consecutive_failures), self.rng.random())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)
        self.stats.requeued += 1
        await delivery.nack(requeue=True)


async def _ack(waiting: _Waiting) -> None:
    waiting.settled = True
    try:
        await waiting.delivery.ack()
    except Exception as error:
        # the outcome is stored; if the channel is gone, the redelivery is a duplicate
        log.warning("ack_failed", error=f"{type(error).__name__}: {error}", **waiting.ids)
