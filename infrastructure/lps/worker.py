"""The LPS worker: comparison requests in, exactly one confirmed outcome per request out.

A message holds one request, or a bundle of them (``contracts.bundle_items``, what CJ's
dispatcher sends for a ``serial_bundle`` wave); a bundle's items are taken one by one,
each settled alone, and the message is acknowledged once all of them are (``bundles``).
Each request joins the worker's intake; the worker's loop *gathers* what is waiting — it
waits briefly (``gather_window``) until it has as many requests as the lead request's
bundle may hold — and hands the group to a ``QueuedRequestExecutor`` in a worker thread.
The executor forms bundles for the queue processing mode and answers every request once.
The group's outcomes are then published together (one persistent, confirmed message: a
bundle of outcomes when there are several), and only after that confirm are the requests
acknowledged; one log line per group names its batches, waves and comparisons. If the
publish fails the requests are requeued after a backoff: an outcome may be sent twice
(CJ ignores the second), a request is never dropped.

A request whose comparison id is already in flight joins the first one instead of
calling the provider again, and is acknowledged with it. A request answered recently
(e.g. re-sent by a restarted dispatcher) gets the remembered outcome republished.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import structlog
from pydantic import ValidationError

from application.lps import QueuedRequestExecutor
from domain.backoff import Backoff
from domain.lps import MAX_BUNDLE_SIZE, QueuedRequest, QueueProcessingMode, bundle_limit
from infrastructure.messaging.bundles import BundleItem, split_bundle
from infrastructure.messaging.contracts import (
    REQUEST_BUNDLE,
    BundleRefused,
    ComparisonOutcomeV1,
    ComparisonOutcomeV2,
    ComparisonRequestV1,
    bundle_items,
    parse_request,
    parse_request_data,
)
from infrastructure.messaging.dead_letters import (
    DeadLetterSink,
    Delivery,
    UnpublishableDeadLetter,
)
from infrastructure.messaging.validation import describe_validation_error

log = structlog.get_logger("cjledger.lps_worker")

PublishOutcome = Callable[[ComparisonOutcomeV1], Awaitable[None]]
PublishOutcomes = Callable[[Sequence[ComparisonOutcomeV1]], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Request:
    message: ComparisonRequestV1
    confirmed: asyncio.Future[bool]

    @property
    def comparison_id(self) -> str:
        return self.message.comparison_id


@dataclass
class WorkerStats:
    requests: int = 0
    joined_in_flight: int = 0
    answered_from_memory: int = 0
    executions: int = 0
    outcomes_published: int = 0
    publish_failures: int = 0
    dead_lettered: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class LpsWorker:
    """Gathers requests, runs them through executors (one per lane), publishes outcomes.

    ``executors`` are the lanes: up to that many groups execute at once, each executor
    used by one group at a time (executors and simulated providers are not shared
    between threads).
    """

    executors: Sequence[QueuedRequestExecutor]
    publish_outcome: PublishOutcome
    dead_letters: DeadLetterSink
    gather_window: float = 0.02
    bundle_cap: int = MAX_BUNDLE_SIZE
    clock: Callable[[], datetime] = utc_now
    backoff: Backoff = field(default_factory=lambda: Backoff(base_seconds=0.5, max_seconds=30))
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    remember: int = 10_000
    #: publishes several outcomes as one confirmed message (a bundle); without it, each
    #: outcome goes alone through ``publish_outcome``
    publish_outcomes: PublishOutcomes | None = None
    stats: WorkerStats = field(default_factory=WorkerStats)

    def __post_init__(self) -> None:
        if not self.executors:
            raise ValueError("the worker needs at least one executor")
        self._waiting: list[_Request] = []
        self._in_flight: dict[str, _Request] = {}
        self._answered: OrderedDict[str, ComparisonOutcomeV1] = OrderedDict()
        self._arrived = asyncio.Event()
        self._idle: asyncio.Queue[QueuedRequestExecutor] = asyncio.Queue()
        for executor in self.executors:
            self._idle.put_nowait(executor)
        self._loop_task: asyncio.Task[None] | None = None
        self._executions: set[asyncio.Task[None]] = set()
        self._rng = random.Random()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._gather_loop(), name="lps-gather")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._executions) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop_task = None
        for request in [*self._waiting, *self._in_flight.values()]:
            if not request.confirmed.done():
                request.confirmed.set_result(False)
        self._waiting.clear()
        self._in_flight.clear()

    # ------------------------------------------------------------------ intake

    async def handle(self, delivery: Delivery) -> None:
        """Take one message: a single request, or a bundle whose items are taken one by
        one (each settled alone, the message once all are, see ``bundles``)."""
        try:
            items = bundle_items(delivery.body, REQUEST_BUNDLE)
        except BundleRefused as refused:
            await self._dead_letter(delivery, refused.code, refused.reason)
            return
        except Exception:
            log.exception("request_handling_failed", message_id=delivery.message_id)
            await self._requeue_later(delivery)
            return
        if items is None:
            await self._handle_one(delivery, partial(parse_request, delivery.body))
            return
        await self._handle_bundle(split_bundle(delivery, items))

    async def _handle_bundle(self, items: list[BundleItem]) -> None:
        """Every item joins the intake at once; one wait for all their confirms (no task
        per item); the rare item that needs more (a dead letter, a remembered answer, a
        parse that failed unexpectedly) goes through the single-message path."""
        waiting: list[tuple[BundleItem, asyncio.Future[bool]]] = []
        others = []
        for item in items:
            try:
                message = parse_request_data(item.data)
            except Exception:
                others.append(self._handle_one(item, partial(parse_request_data, item.data)))
                continue
            confirmed = self._join(message)
            if confirmed is None:
                others.append(self._handle_one(item, lambda message=message: message))
            else:
                self.stats.requests += 1
                waiting.append((item, confirmed))
        if waiting:
            await asyncio.wait([confirmed for _, confirmed in waiting])
        requeue = []
        for item, confirmed in waiting:
            if confirmed.result():
                await item.ack()
            else:
                requeue.append(self._requeue_later(item))
        await asyncio.gather(*others, *requeue)

    async def _handle_one(
        self, delivery: Delivery, parse: Callable[[], ComparisonRequestV1]
    ) -> None:
        try:
            await self._handle(delivery, parse)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("request_handling_failed", message_id=delivery.message_id)
            await self._requeue_later(delivery)

    async def _handle(self, delivery: Delivery, parse: Callable[[], ComparisonRequestV1]) -> None:
        try:
            message = parse()
        except ValidationError as error:
            malformed = any(e["type"] == "json_invalid" for e in error.errors())
            code = "malformed_json" if malformed else "schema_violation"
            await self._dead_letter(delivery, code, describe_validation_error(error))
            return
        self.stats.requests += 1
        confirmed = await self._answer(message)
        if confirmed:
            await delivery.ack()
        else:
            with structlog.contextvars.bound_contextvars(
                batch_id=message.batch_id,
                comparison_id=message.comparison_id,
                correlation_id=message.correlation_id,
            ):
                await self._requeue_later(delivery)

    async def _answer(self, message: ComparisonRequestV1) -> bool:
        remembered = self._answered.get(message.comparison_id)
        if remembered is not None:
            self.stats.answered_from_memory += 1
            log.info("request_answered_from_memory", **_ids(message))
            return await self._publish(remembered)
        confirmed = self._join(message)
        assert confirmed is not None
        return await asyncio.shield(confirmed)

    def _join(self, message: ComparisonRequestV1) -> asyncio.Future[bool] | None:
        """Add the request to the intake (or to the same comparison already in flight);
        the future says whether its outcome was confirmed. ``None``: it was answered
        recently, and the remembered outcome has to be published again (``_answer``)."""
        if message.comparison_id in self._answered:
            return None
        request = self._in_flight.get(message.comparison_id)
        if request is None:
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            request = _Request(message, future)
            self._in_flight[message.comparison_id] = request
            self._waiting.append(request)
            self._arrived.set()
        else:
            self.stats.joined_in_flight += 1
            log.info("request_joined_in_flight_duplicate", **_ids(message))
        return request.confirmed

    # ------------------------------------------------------------------ gathering

    async def _gather_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            executor = await self._idle.get()
            await self._arrived.wait()
            if not self._waiting:
                self._arrived.clear()
                self._idle.put_nowait(executor)
                continue
            limit = self._gather_limit(executor, self._waiting[0].message)
            deadline = loop.time() + self.gather_window
            while len(self._waiting) < limit:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            group = self._waiting[:limit]
            del self._waiting[:limit]
            if self._waiting:
                self._arrived.set()  # the rest leads the next group
            else:
                self._arrived.clear()
            task = asyncio.create_task(self._execute(executor, group))
            self._executions.add(task)
            task.add_done_callback(self._executions.discard)

    def _gather_limit(self, executor: QueuedRequestExecutor, lead: ComparisonRequestV1) -> int:
        """How many requests the lead's bundle may hold (1 in ``per_request`` mode)."""
        try:
            queued = lead.to_queued(self.clock())
        except ValueError:
            return 1  # it will fail again in the executor, alone, and be requeued

        if executor.mode_for(queued) is QueueProcessingMode.PER_REQUEST:
            return 1
        return bundle_limit(queued, min(self.bundle_cap, executor.bundle_cap))

    # ------------------------------------------------------------------ execution

    async def _execute(self, executor: QueuedRequestExecutor, group: list[_Request]) -> None:
        self.stats.executions += 1
        results = [False] * len(group)
        try:
            outcomes = await self._run_executor(executor, group)
            results = await self._publish_group(group, outcomes)
        except Exception:
            log.exception("lps_group_failed", requests=len(group))
        finally:
            # every handler waiting on this group hears back: ack, or requeue after a backoff
            for request, confirmed in zip(group, results, strict=True):
                self._in_flight.pop(request.comparison_id, None)
                if not request.confirmed.done():
                    request.confirmed.set_result(confirmed)

    async def _run_executor(
        self, executor: QueuedRequestExecutor, group: list[_Request]
    ) -> dict[str, ComparisonOutcomeV1]:
        now = self.clock()
        queued = [r.message.to_queued(now) for r in group]
        queued.sort(key=_compatibility_key)  # compatible requests side by side bundle together
        try:
            outcomes = await anyio.to_thread.run_sync(
                executor.drain, queued, now, abandon_on_cancel=True
            )
        finally:
            self._idle.put_nowait(executor)
        messages: dict[str, ComparisonOutcomeV1] = {}
        for outcome in outcomes:
            try:
                messages[outcome.request_id] = ComparisonOutcomeV2.from_outcome(outcome)
            except ValueError:
                log.exception("outcome_not_expressible", comparison_id=outcome.request_id)
        return messages

    async def _publish_group(
        self, group: list[_Request], outcomes: dict[str, ComparisonOutcomeV1]
    ) -> list[bool]:
        """Publish the group's outcomes together (one bundle message when there are
        several); whether each request's outcome was confirmed."""
        messages = [outcomes[r.comparison_id] for r in group if r.comparison_id in outcomes]
        if not messages:
            return [False] * len(group)
        if len(messages) == 1 or self.publish_outcomes is None:
            published = await asyncio.gather(*(self._publish(m) for m in messages))
            confirmed = dict(zip((m.comparison_id for m in messages), published, strict=True))
        else:
            ok = await self._publish_many(messages)
            confirmed = {m.comparison_id: ok for m in messages}
        for message in messages:
            if confirmed[message.comparison_id]:
                self._remember(message)
        log.info(
            "outcomes_published",
            outcomes=len(messages),
            confirmed=sum(confirmed.values()),
            failures=sum(1 for m in messages if m.status != "success"),
            queue_processing_mode=messages[0].queue_processing_mode.value,
            batch_ids=sorted({m.batch_id for m in messages}),
            correlation_ids=sorted({m.correlation_id for m in messages}),
            comparison_ids=[m.comparison_id for m in messages],
        )
        return [confirmed.get(r.comparison_id, False) for r in group]

    async def _publish_many(self, messages: list[ComparisonOutcomeV1]) -> bool:
        assert self.publish_outcomes is not None
        try:
            await self.publish_outcomes(messages)
        except Exception as error:
            self.stats.publish_failures += 1
            log.warning(
                "outcomes_not_confirmed",
                outcomes=len(messages),
                batch_ids=sorted({m.batch_id for m in messages}),
                error=f"{type(error).__name__}: {error}",
            )
            return False
        self.stats.outcomes_published += len(messages)
        return True

    async def _publish(self, outcome: ComparisonOutcomeV1) -> bool:
        try:
            await self.publish_outcome(outcome)
        except Exception as error:
            self.stats.publish_failures += 1
            log.warning(
                "outcome_not_confirmed",
                error=f"{type(error).__name__}: {error}",
                **_ids(outcome),
            )
            return False
        self.stats.outcomes_published += 1
        return True

    def _remember(self, outcome: ComparisonOutcomeV1) -> None:
        self._answered[outcome.comparison_id] = outcome
        self._answered.move_to_end(outcome.comparison_id)
        while len(self._answered) > self.remember:
            self._answered.popitem(last=False)

    # ------------------------------------------------------------------ settling

    async def _dead_letter(self, delivery: Delivery, code: str, reason: str) -> None:
        log.warning(
            "request_dead_lettered", code=code, reason=reason, message_id=delivery.message_id
        )
        try:
            await self.dead_letters.send(delivery, code, reason)
        except UnpublishableDeadLetter as error:
            log.warning("request_rejected_to_broker_dead_letters", error=str(error))
            self.stats.dead_lettered += 1
            await delivery.reject(requeue=False)
            return
        except Exception as error:
            log.error("dead_letter_not_confirmed", error=f"{type(error).__name__}: {error}")
            await self._requeue_later(delivery)
            return
        self.stats.dead_lettered += 1
        await delivery.ack()

    async def _requeue_later(self, delivery: Delivery) -> None:
        await self.sleep(self.backoff.delay(1, self._rng.random()))
        await delivery.nack(requeue=True)


def _ids(message: ComparisonRequestV1 | ComparisonOutcomeV1) -> dict[str, str]:
    return {
        "batch_id": message.batch_id,
        "comparison_id": message.comparison_id,
        "correlation_id": message.correlation_id,
    }


def _compatibility_key(request: QueuedRequest) -> tuple[str, str, str]:
    hint = request.mode_hint.value if request.mode_hint else ""
    return (request.provider, hint, repr(request.overrides))
