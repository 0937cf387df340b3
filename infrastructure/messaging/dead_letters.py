"""Dead letters with a reason a person can read.

A consumer that refuses a message (malformed, against the schema, or naming something CJ
never asked for) republishes the original body, unchanged, to the dead-letter exchange
with the reason in headers, waits for the broker's confirm, and only then acknowledges
the original. A crash in between leaves a duplicate in the dead-letter queue, never a
lost message. Messages RabbitMQ dead-letters by itself (a ``reject``) reach the same queue
through the work queue's ``x-dead-letter-exchange`` argument; those carry ``x-death``
instead of our headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from faststream.rabbit import RabbitBroker

from infrastructure.messaging.topology import Topology

CODE_HEADER = "x-cjledger-code"
REASON_HEADER = "x-cjledger-reason"
SOURCE_QUEUE_HEADER = "x-cjledger-source-queue"
DEAD_LETTERED_AT_HEADER = "x-cjledger-dead-lettered-at"

REASON_MAX_CHARS = 2000


class Delivery(Protocol):
    """What a consumer needs from one received message (FastStream's ``RabbitMessage``
    has this shape; unit tests use a small fake)."""

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def message_id(self) -> str: ...

    @property
    def correlation_id(self) -> str: ...

    async def ack(self) -> None: ...

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None: ...


class DeadLetterSink(Protocol):
    async def send(self, delivery: Delivery, code: str, reason: str) -> None:
        """Store ``delivery`` as a dead letter; return only once the broker confirmed it."""
        ...


class RabbitDeadLetters:
    """Publishes refused messages to ``{queue}.dead`` through the dead-letter exchange."""

    def __init__(
        self, broker: RabbitBroker, topology: Topology, source_queue: str, timeout: float
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.source_queue = source_queue
        self.timeout = timeout

    async def send(self, delivery: Delivery, code: str, reason: str) -> None:
        headers = {
            key: value
            for key, value in delivery.headers.items()
            if not key.startswith("x-cjledger-") and key != "x-death"
        }
        headers.update(
            {
                CODE_HEADER: code,
                REASON_HEADER: reason[:REASON_MAX_CHARS],
                SOURCE_QUEUE_HEADER: self.source_queue,
                DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
            }
        )
        await self.broker.publish(
            delivery.body,
            exchange=self.topology.dead_letter_exchange,
            routing_key=self.source_queue,
            persist=True,
            mandatory=True,
            timeout=self.timeout,
            headers=headers,
            message_id=delivery.message_id or None,
            correlation_id=delivery.correlation_id or None,
        )
