"""One AMQP message, many items: each item settled on its own, the message once at the end.

A consumer that receives a bundle (``contracts.bundle_items``) wraps each item in a
``BundleItem``. To the consumer a ``BundleItem`` is an ordinary ``Delivery``: it acks
it, requeues it, dead-letters it with a reason. The item only reports its verdict to the
``BundleSettlement`` of its message. Once every item has one, the message is settled:

* every item acked (recorded, answered, a duplicate, or dead-lettered alone) → ack;
* any item to be requeued → the whole message goes back to the queue. Its items that
  were already done come back as duplicates, which every consumer ignores per comparison
  id. So an item is never lost, and its neighbours are never dropped with it;
* any item rejected (its dead letter could not be published) and none requeued → the
  message is rejected, and RabbitMQ dead-letters the whole bundle itself.

A dead letter of one item carries that item alone as its body, the bundle message's
headers, and ``x-cjledger-bundle-item`` (its index in the bundle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from functools import cached_property
from typing import Any

from infrastructure.messaging.dead_letters import Delivery

BUNDLE_ITEM_HEADER = "x-cjledger-bundle-item"


class Verdict(Enum):
    ACK = "ack"
    REQUEUE = "requeue"
    REJECT = "reject"


class BundleSettlement:
    """Collects one verdict per item; settles the message when the last one arrives."""

    def __init__(self, delivery: Delivery, items: int) -> None:
        self.delivery = delivery
        self.pending = items
        self.verdicts: list[Verdict] = []

    async def report(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)
        self.pending -= 1
        if self.pending:
            return
        if Verdict.REQUEUE in self.verdicts:
            await self.delivery.nack(requeue=True)
        elif Verdict.REJECT in self.verdicts:
            await self.delivery.reject(requeue=False)
        else:
            await self.delivery.ack()


class BundleItem:
    """One item of a bundle, shaped like a ``Delivery``; ``data`` is the decoded item."""

    def __init__(
        self, settlement: BundleSettlement, index: int, data: Any, message_id: str = ""
    ) -> None:
        self.settlement = settlement
        self.index = index
        self.data = data
        self._message_id = message_id
        self._done = False

    @cached_property
    def body(self) -> bytes:
        """The item as a message of its own (only needed for its dead letter)."""
        return json.dumps(self.data, ensure_ascii=False, separators=(",", ":")).encode()

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.settlement.delivery.headers

    @property
    def dead_letter_headers(self) -> dict[str, Any]:
        return {BUNDLE_ITEM_HEADER: self.index}

    @property
    def message_id(self) -> str:
        return self._message_id or f"{self.settlement.delivery.message_id}#{self.index}"

    @property
    def correlation_id(self) -> str:
        if isinstance(self.data, dict) and isinstance(self.data.get("correlation_id"), str):
            return str(self.data["correlation_id"])
        return self.settlement.delivery.correlation_id

    async def _report(self, verdict: Verdict) -> None:
        if self._done:
            return  # settled once, like a real message
        self._done = True
        await self.settlement.report(verdict)

    async def ack(self) -> None:
        await self._report(Verdict.ACK)

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        await self._report(Verdict.REQUEUE if requeue else Verdict.REJECT)

    async def reject(self, requeue: bool = False) -> None:
        await self._report(Verdict.REQUEUE if requeue else Verdict.REJECT)


def split_bundle(delivery: Delivery, items: list[Any]) -> list[BundleItem]:
    """The items of ``delivery`` (a bundle), each reporting to one settlement."""
    settlement = BundleSettlement(delivery, len(items))
    return [
        BundleItem(settlement, index, data, _comparison_id(data))
        for index, data in enumerate(items)
    ]


def _comparison_id(data: Any) -> str:
    if isinstance(data, dict):
        value = data.get("comparison_id")
        if isinstance(value, str) and value.isprintable() and len(value) <= 200:
            return value
    return ""
