"""Every exchange, queue and routing key CJ and LPS use, named from one prefix.

Both processes declare the whole topology when they start (declaring is idempotent when
the arguments match), so a publish never depends on which side came up first, and a test
run that picks its own prefix never meets another run's messages.

```
{prefix}.comparisons        direct exchange
    request.v1   ──▶ {prefix}.lps.requests      (LPS workers compete for it)
    outcome.v1   ──▶ {prefix}.cj.outcomes       (serve processes compete for it)
{prefix}.dead-letters       direct exchange
    {prefix}.lps.requests ──▶ {prefix}.lps.requests.dead
    {prefix}.cj.outcomes  ──▶ {prefix}.cj.outcomes.dead
```

Each work queue names the dead-letter exchange in its arguments, so a message RabbitMQ
itself rejects lands in the same dead-letter queue as the ones our consumers refuse with a
reason (see ``dead_letters``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas.queue import ClassicQueueArgs

REQUEST_ROUTING_KEY = "request.v1"
OUTCOME_ROUTING_KEY = "outcome.v1"

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")


@dataclass(frozen=True)
class Topology:
    """The names derived from one prefix (``CJLEDGER_QUEUE_PREFIX``)."""

    prefix: str = "cjledger"

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(
                f"queue prefix {self.prefix!r} must be 1-101 letters, digits, '.', '_' or '-'"
            )

    # -- names --------------------------------------------------------------------------

    @property
    def exchange_name(self) -> str:
        return f"{self.prefix}.comparisons"

    @property
    def dead_letter_exchange_name(self) -> str:
        return f"{self.prefix}.dead-letters"

    @property
    def requests_queue_name(self) -> str:
        return f"{self.prefix}.lps.requests"

    @property
    def outcomes_queue_name(self) -> str:
        return f"{self.prefix}.cj.outcomes"

    @staticmethod
    def dead_letter_queue_name(queue_name: str) -> str:
        return f"{queue_name}.dead"

    @property
    def requests_dead_letter_queue_name(self) -> str:
        return self.dead_letter_queue_name(self.requests_queue_name)

    @property
    def outcomes_dead_letter_queue_name(self) -> str:
        return self.dead_letter_queue_name(self.outcomes_queue_name)

    # -- FastStream objects -------------------------------------------------------------

    @property
    def exchange(self) -> RabbitExchange:
        return RabbitExchange(self.exchange_name, type=ExchangeType.DIRECT, durable=True)

    @property
    def dead_letter_exchange(self) -> RabbitExchange:
        return RabbitExchange(
            self.dead_letter_exchange_name, type=ExchangeType.DIRECT, durable=True
        )

    def _work_queue(self, name: str, routing_key: str) -> RabbitQueue:
        arguments: ClassicQueueArgs = {
            "x-dead-letter-exchange": self.dead_letter_exchange_name,
            # routed by the work queue's own name, so each consumer has its own dead letters
            "x-dead-letter-routing-key": name,
        }
        return RabbitQueue(name, durable=True, routing_key=routing_key, arguments=arguments)

    @property
    def requests_queue(self) -> RabbitQueue:
        return self._work_queue(self.requests_queue_name, REQUEST_ROUTING_KEY)

    @property
    def outcomes_queue(self) -> RabbitQueue:
        return self._work_queue(self.outcomes_queue_name, OUTCOME_ROUTING_KEY)

    def dead_letter_queue(self, work_queue_name: str) -> RabbitQueue:
        return RabbitQueue(
            self.dead_letter_queue_name(work_queue_name),
            durable=True,
            routing_key=work_queue_name,
        )

    @property
    def all_queue_names(self) -> tuple[str, ...]:
        return (
            self.requests_queue_name,
            self.outcomes_queue_name,
            self.requests_dead_letter_queue_name,
            self.outcomes_dead_letter_queue_name,
        )

    @property
    def all_exchange_names(self) -> tuple[str, ...]:
        return (self.exchange_name, self.dead_letter_exchange_name)


async def declare_topology(broker: RabbitBroker, topology: Topology) -> None:
    """Declare both exchanges, the two work queues and their dead-letter queues, bound.

    The broker must be connected. Safe to call from every process at every start.
    """
    exchange = await broker.declare_exchange(topology.exchange)
    dead_letter_exchange = await broker.declare_exchange(topology.dead_letter_exchange)
    for work_queue in (topology.requests_queue, topology.outcomes_queue):
        queue = await broker.declare_queue(work_queue)
        await queue.bind(exchange, routing_key=work_queue.routing())
        dead = topology.dead_letter_queue(work_queue.name)
        dead_queue = await broker.declare_queue(dead)
        await dead_queue.bind(dead_letter_exchange, routing_key=dead.routing())
