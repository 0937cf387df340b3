"""Dead letters with a reason a person can read.

A consumer that refuses a message (malformed, against the schema, or naming something CJ
never asked for) republishes the original body, unchanged, to the dead-letter exchange
with the reason in headers (for an item of a bundle: that item alone, see ``bundles``),
waits for the broker's confirm, and only then acknowledges the original. A crash in
between leaves a duplicate in the dead-letter queue, never a lost message. Messages
RabbitMQ dead-letters by itself (a ``reject``) reach the same queue through the work
queue's ``x-dead-letter-exchange`` argument; those carry ``x-death`` instead of our
headers.

Headers are copied as far as AMQP can carry them again: a header that arrived as a
string that is not UTF-8 (the client library hands it over as ``bytes``, which it then
cannot send) is re-encoded with backslash escapes, and the dead letter is marked
``x-cjledger-headers-sanitised``. If a message still cannot be republished, the consumer
rejects it once (``UnpublishableDeadLetter``) and RabbitMQ dead-letters it itself — a
refused message is never retried in a loop.
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
SANITISED_HEADER = "x-cjledger-headers-sanitised"

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

    async def reject(self, requeue: bool = False) -> None: ...


class UnpublishableDeadLetter(Exception):
    """The message cannot be published again as it is (the broker never saw it fail):
    the consumer rejects it and RabbitMQ dead-letters it through the queue's DLX."""


def sanitise_header_value(value: Any) -> tuple[Any, bool]:
    """``value`` in a form AMQP can send, and whether anything had to change."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace"), True
    if isinstance(value, dict):
        changed = False
        table = {}
        for key, item in value.items():
            table[key], item_changed = sanitise_header_value(item)
            changed |= item_changed
        return table, changed
    if isinstance(value, list | tuple):
        items = [sanitise_header_value(item) for item in value]
        return [item for item, _ in items], any(c for _, c in items)
    return value, False


def sanitised_headers(headers: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    table, changed = sanitise_header_value(dict(headers))
    return table, changed


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
        headers, sanitised = sanitised_headers(
            {
                key: value
                for key, value in delivery.headers.items()
                if not key.startswith("x-cjledger-") and key != "x-death"
            }
        )
        if sanitised:
            headers[SANITISED_HEADER] = True
        headers.update(
            {
                CODE_HEADER: code,
                REASON_HEADER: reason[:REASON_MAX_CHARS],
                SOURCE_QUEUE_HEADER: self.source_queue,
                DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
            }
        )
        # an item of a bundle says which one it was (``bundles.BundleItem``)
        headers.update(getattr(delivery, "dead_letter_headers", {}))
        try:
            await self._publish(delivery, headers)
        except (TypeError, ValueError, UnicodeError) as error:
            raise UnpublishableDeadLetter(f"{type(error).__name__}: {error}") from error

    async def _publish(self, delivery: Delivery, headers: dict[str, Any]) -> None:
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
