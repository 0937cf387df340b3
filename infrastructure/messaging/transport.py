"""CJ → LPS: the outbox dispatcher's RabbitMQ transport.

``OutboxDispatcher.pump`` is synchronous and runs in a worker thread; the broker lives on
an asyncio loop. ``RabbitRequestTransport.send`` bridges the two: it schedules the
publishing coroutine on the loop and blocks until every message of the wave is confirmed
by RabbitMQ (persistent, mandatory — an unroutable message raises). Only then does
``send`` return and the dispatcher move its position; if anything fails, ``send`` raises,
the position stays, and the next pump publishes the waves again (at-least-once).

A ``serial_bundle`` wave travels as bundles (``contracts.bundle_body``) of up to
``REQUEST_BUNDLE_MAX`` requests per message; other waves one request per message, as the
LPS worker executes those one by one (``per_request``) or hands them to a provider batch
job whose own size does not depend on messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from faststream.rabbit import RabbitBroker

from application.ports import ComparisonRequest
from domain.values import BatchingMode
from infrastructure.messaging.broker import run_on_loop
from infrastructure.messaging.contracts import (
    OUTCOME_BUNDLE,
    OUTCOME_BUNDLE_TYPE,
    REQUEST_BUNDLE,
    REQUEST_BUNDLE_TYPE,
    ComparisonOutcomeV1,
    ComparisonRequestV1,
    ComparisonRequestV2,
    bundle_body,
)
from infrastructure.messaging.topology import (
    OUTCOME_ROUTING_KEY,
    REQUEST_ROUTING_KEY,
    Topology,
)

log = structlog.get_logger("cjledger.transport")

JSON = "application/json"

#: most requests of a ``serial_bundle`` wave carried by one message (one full LPS bundle)
REQUEST_BUNDLE_MAX = 64


class MessagePublisher:
    """Publishes the contracts, each message persistent, mandatory and confirmed.

    A ``serial_bundle`` wave travels as bundles of up to ``REQUEST_BUNDLE_MAX`` requests
    per message (``contracts.bundle_body``); other waves one request per message. All the
    messages of a wave are published at once and their confirms awaited together.
    """

    def __init__(self, broker: RabbitBroker, topology: Topology, timeout: float = 10.0) -> None:
        self.broker = broker
        self.topology = topology
        self.timeout = timeout

    async def publish_request(self, message: ComparisonRequestV1) -> None:
        await self._publish(message, REQUEST_ROUTING_KEY)

    async def publish_outcome(self, message: ComparisonOutcomeV1) -> None:
        await self._publish(message, OUTCOME_ROUTING_KEY)

    async def publish_outcomes(self, messages: Sequence[ComparisonOutcomeV1]) -> None:
        """Several outcomes as one bundle message (a single one goes alone)."""
        if len(messages) == 1:
            await self.publish_outcome(messages[0])
            return
        await self._publish_bundle(messages, OUTCOME_BUNDLE, OUTCOME_ROUTING_KEY)

    async def _publish(
        self, message: ComparisonRequestV1 | ComparisonOutcomeV1, routing_key: str
    ) -> None:
        """Persistent, mandatory and confirmed: an unroutable or unconfirmed message raises."""
        await self._send(
            message.model_dump_json().encode(),
            routing_key,
            message_type=type(message).__name__,
            message_id=message.comparison_id,
            correlation_id=message.correlation_id,
            batch_id=message.batch_id,
        )

    async def _publish_bundle(
        self,
        messages: Sequence[ComparisonRequestV1 | ComparisonOutcomeV1],
        kind: str,
        routing_key: str,
    ) -> None:
        first = messages[0]
        await self._send(
            bundle_body(kind, messages),
            routing_key,
            message_type=REQUEST_BUNDLE_TYPE if kind == REQUEST_BUNDLE else OUTCOME_BUNDLE_TYPE,
            message_id=f"{first.comparison_id}+{len(messages) - 1}",
            correlation_id=first.correlation_id,
            batch_id=first.batch_id,
        )

    async def _send(
        self,
        body: bytes,
        routing_key: str,
        *,
        message_type: str,
        message_id: str,
        correlation_id: str,
        batch_id: str,
    ) -> None:
        await self.broker.publish(
            body,
            exchange=self.topology.exchange,
            routing_key=routing_key,
            persist=True,
            mandatory=True,
            timeout=self.timeout,
            content_type=JSON,
            message_type=message_type,
            message_id=message_id,
            correlation_id=correlation_id,
            headers={"x-cjledger-batch-id": batch_id},
        )

    async def publish_requests(self, requests: Sequence[ComparisonRequest]) -> None:
        """Publish waves (of one or more batches) concurrently; return once every message
        is confirmed, raise if any is not. A bundle holds requests of one wave only."""
        messages = [ComparisonRequestV2.from_request(r) for r in requests]
        waves: dict[str, list[ComparisonRequestV2]] = {}
        sends = []
        for message in messages:
            if message.batching_mode is BatchingMode.SERIAL_BUNDLE:
                waves.setdefault(message.correlation_id, []).append(message)
            else:
                sends.append(self.publish_request(message))
        sends += [
            self._publish_bundle(
                wave[i : i + REQUEST_BUNDLE_MAX], REQUEST_BUNDLE, REQUEST_ROUTING_KEY
            )
            for wave in waves.values()
            for i in range(0, len(wave), REQUEST_BUNDLE_MAX)
        ]
        results = await asyncio.gather(*sends, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise RequestsNotConfirmed(len(failures), len(sends), failures[0])


class RequestsNotConfirmed(RuntimeError):
    def __init__(self, failed: int, total: int, first: BaseException) -> None:
        super().__init__(
            f"{failed} of {total} request messages were not confirmed by the broker "
            f"(first error: {type(first).__name__}: {first})"
        )


class RabbitRequestTransport:
    """The ``RequestTransport`` port on RabbitMQ, for the synchronous dispatcher."""

    def __init__(
        self,
        publisher: MessagePublisher,
        loop: asyncio.AbstractEventLoop,
        timeout: float = 60.0,
    ) -> None:
        self.publisher = publisher
        self.loop = loop
        self.timeout = timeout

    def send(self, requests: Sequence[ComparisonRequest]) -> None:
        if not requests:
            return
        run_on_loop(self.loop, self.publisher.publish_requests(list(requests)), self.timeout)
        log.debug(
            "requests_published",
            batch_ids=sorted({r.batch_id for r in requests}),
            correlation_ids=sorted({r.correlation_id for r in requests}),
            requests=len(requests),
        )
