"""CJ → LPS: the outbox dispatcher's RabbitMQ transport.

``OutboxDispatcher.pump`` is synchronous and runs in a worker thread; the broker lives on
an asyncio loop. ``RabbitRequestTransport.send`` bridges the two: it schedules the
publishing coroutine on the loop and blocks until every message of the wave is confirmed
by RabbitMQ (persistent, mandatory — an unroutable message raises). Only then does
``send`` return and the dispatcher move its position; if anything fails, ``send`` raises,
the position stays, and the next pump publishes the wave again (at-least-once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from faststream.rabbit import RabbitBroker

from application.ports import ComparisonRequest
from infrastructure.messaging.broker import run_on_loop
from infrastructure.messaging.contracts import (
    ComparisonOutcomeV1,
    ComparisonRequestV1,
    ComparisonRequestV2,
)
from infrastructure.messaging.topology import (
    OUTCOME_ROUTING_KEY,
    REQUEST_ROUTING_KEY,
    Topology,
)

log = structlog.get_logger("cjledger.transport")

JSON = "application/json"


class MessagePublisher:
    """Publishes the two contracts, each message persistent, mandatory and confirmed."""

    def __init__(self, broker: RabbitBroker, topology: Topology, timeout: float = 10.0) -> None:
        self.broker = broker
        self.topology = topology
        self.timeout = timeout

    async def publish_request(self, message: ComparisonRequestV1) -> None:
        await self._publish(message, REQUEST_ROUTING_KEY)

    async def publish_outcome(self, message: ComparisonOutcomeV1) -> None:
        await self._publish(message, OUTCOME_ROUTING_KEY)

    async def _publish(
        self, message: ComparisonRequestV1 | ComparisonOutcomeV1, routing_key: str
    ) -> None:
        """Persistent, mandatory and confirmed: an unroutable or unconfirmed message raises."""
        await self.broker.publish(
            message.model_dump_json().encode(),
            exchange=self.topology.exchange,
            routing_key=routing_key,
            persist=True,
            mandatory=True,
            timeout=self.timeout,
            content_type=JSON,
            message_type=type(message).__name__,
            message_id=message.comparison_id,
            correlation_id=message.correlation_id,
            headers={"x-cjledger-batch-id": message.batch_id},
        )

    async def publish_requests(self, requests: Sequence[ComparisonRequest]) -> None:
        """Publish a wave concurrently; returns once all are confirmed, raises if any is not."""
        messages = [ComparisonRequestV2.from_request(r) for r in requests]
        results = await asyncio.gather(
            *(self.publish_request(m) for m in messages), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise RequestsNotConfirmed(len(failures), len(messages), failures[0])


class RequestsNotConfirmed(RuntimeError):
    def __init__(self, failed: int, total: int, first: BaseException) -> None:
        super().__init__(
            f"{failed} of {total} comparison requests were not confirmed by the broker "
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
            batch_id=requests[0].batch_id,
            correlation_id=requests[0].correlation_id,
            requests=len(requests),
        )
