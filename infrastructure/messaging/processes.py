"""Wiring: the component list of ``cjledger serve``.

The builder runs inside the process's event loop (the dispatcher's transport needs it)
and reads everything from ``Settings``. Nothing here holds a rule of CJ; it only connects
the use cases to the broker. ``lps-worker`` is wired in ``infrastructure.lps.process``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from faststream.rabbit import RabbitBroker

from application.batches import BatchApplication
from application.dispatcher import OutboxDispatcher
from infrastructure.bootstrap import System
from infrastructure.messaging.broker import make_broker, subscribe
from infrastructure.messaging.dead_letters import RabbitDeadLetters
from infrastructure.messaging.outcomes import OutcomeConsumer
from infrastructure.messaging.service import (
    BrokerComponent,
    Component,
    DispatcherLoop,
    SweeperLoop,
    lease_for,
)
from infrastructure.messaging.topology import Topology
from infrastructure.messaging.transport import MessagePublisher, RabbitRequestTransport
from infrastructure.persistence.store import eventsourcing_env
from infrastructure.settings import Settings
from projections.runner import ReadModelRunner

DISPATCHER_NAME = "outbox"


def service_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment of a long-running CJ process."""
    # The batch application brings its own aggregate cache and snapshots (see
    # application/batches.py): commands work on the cached batch without a deep copy.
    return eventsourcing_env(settings.database_url)


@dataclass
class ServeProcess:
    app: BatchApplication
    broker: RabbitBroker
    topology: Topology
    consumer: OutcomeConsumer
    dispatcher_loop: DispatcherLoop
    components: list[Component] = field(default_factory=list)

    def close(self) -> None:
        self.app.close()


def build_serve(
    settings: Settings, app: BatchApplication | None = None, system: System | None = None
) -> ServeProcess:
    """CJ's service: outcome consumer, outbox dispatcher and deadline sweeper."""
    system = system or System(settings)
    if app is not None:
        system.app = app  # a test's own application instance
    env = system.env
    app = system.app
    topology = Topology(settings.queue_prefix)
    broker = make_broker(
        settings.broker_url,
        prefetch=settings.outcome_prefetch,
        graceful_timeout=settings.shutdown_timeout_seconds,
    )
    backoff = settings.retry_backoff()
    publisher = MessagePublisher(broker, topology, timeout=settings.publish_timeout_seconds)
    transport = RabbitRequestTransport(
        publisher, asyncio.get_running_loop(), timeout=settings.publish_timeout_seconds * 6
    )
    positions = system.positions
    dispatcher = OutboxDispatcher(app, transport, positions, name=DISPATCHER_NAME)
    dispatcher_loop = DispatcherLoop(
        dispatcher,
        lease_for(env, DISPATCHER_NAME),
        interval=settings.dispatch_interval_seconds,
        backoff=backoff,
    )
    consumer = OutcomeConsumer(
        app.record_outcomes,
        RabbitDeadLetters(
            broker, topology, topology.outcomes_queue_name, settings.publish_timeout_seconds
        ),
        max_items=settings.outcome_batch_size,
        max_wait=settings.outcome_batch_wait_ms / 1000.0,
        backoff=backoff,
        on_recorded=dispatcher_loop.wake,  # a recorded outcome may have opened a new wave
    )
    subscribe(broker, topology.outcomes_queue, topology.exchange, consumer.handle)
    sweeper = SweeperLoop(
        app, interval=settings.sweep_interval_seconds, on_closed=dispatcher_loop.wake
    )
    components: list[Component] = [
        consumer,
        BrokerComponent(
            broker,
            topology,
            before_close=[consumer.drain],
            connect_timeout=settings.broker_connect_timeout_seconds,
            backoff=backoff,
            url=settings.broker_url,
        ),
        dispatcher_loop,
        sweeper,
    ]
    # Read models live in SQL tables; the in-memory store (tests) has none.
    if settings.serve_projections and system.has_sql_store:
        components.append(ProjectionComponent(system.runner()))
    return ServeProcess(app, broker, topology, consumer, dispatcher_loop, components)


class ProjectionComponent:
    """The read-model runner, following the log in its own thread while serve runs."""

    def __init__(self, runner: ReadModelRunner) -> None:
        self.runner = runner

    async def start(self) -> None:
        self.runner.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.runner.stop)
