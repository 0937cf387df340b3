"""The FastStream broker, configured once for every cjledger process.

Two settings matter for correctness, and both differ from FastStream's defaults:

* the default channel raises when RabbitMQ returns a mandatory message
  (``on_return_raises``), so a publish to a key with no queue bound is an error, not a
  silent drop; publisher confirms stay on, so every ``publish`` waits for the broker;
* every publish in this package passes ``persist=True`` (delivery mode 2), so a message
  in a durable queue survives a broker restart.

Throughput: FastStream's per-message machinery (dependency injection, its logging
middleware, JSON decoding) cost more than recording the outcome did — about 1,600
acknowledged messages per second on two cores, against 7,000 without it. Our handlers
read the raw body and parse it once with the pydantic contract, settle every message
themselves and log what they decided, so ``subscribe`` turns all three off: the broker
is built with ``apply_types=False`` and no FastStream logger, and the decoder hands over
the body untouched. Connection problems are still logged by aio-pika (stdlib logging).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitBroker, RabbitExchange, RabbitMessage, RabbitQueue

T = TypeVar("T")


def make_broker(
    url: str,
    *,
    prefetch: int,
    graceful_timeout: float = 15.0,
) -> RabbitBroker:
    """A broker whose consumers hold at most ``prefetch`` unacknowledged messages each."""
    return RabbitBroker(
        url,
        default_channel=Channel(
            prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True
        ),
        graceful_timeout=graceful_timeout,
        apply_types=False,
        logger=None,
    )


def subscribe(
    broker: RabbitBroker,
    queue: RabbitQueue,
    exchange: RabbitExchange,
    handle: Callable[[RabbitMessage], Awaitable[None]],
) -> None:
    """Call ``handle`` with every message of ``queue``; ``handle`` acks or nacks it."""

    async def raw_body(message: StreamMessage[Any]) -> bytes:
        return message.body

    @broker.subscriber(queue, exchange, ack_policy=AckPolicy.MANUAL, decoder=raw_body)
    async def on_message(_body: bytes) -> None:
        await handle(broker.context.get_local("message"))


class LoopThread:
    """An asyncio event loop in a daemon thread, for synchronous code that needs a broker.

    ``call(coro)`` runs a coroutine on the loop and blocks until it finishes. It must not
    be called from the loop's own thread (that would wait for itself).
    """

    def __init__(self, name: str = "cjledger-broker-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return run_on_loop(self.loop, coro, timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


def run_on_loop(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float | None
) -> T:
    """Run ``coro`` on ``loop`` from another thread and wait for its result."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("run_on_loop was called from the loop's own thread")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise
