"""Wiring of ``cjledger lps-worker``: executors over the configured provider, the worker,
and its broker subscription. Reads everything from ``Settings``; holds no rule of LPS."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from faststream.rabbit import RabbitBroker

from application.lps import JobPolling, JobStore, QueuedRequestExecutor
from domain.lps import QueueProcessingMode
from infrastructure.lps.job_store import SqliteJobStore
from infrastructure.lps.providers import build_provider
from infrastructure.lps.worker import LpsWorker
from infrastructure.messaging.broker import make_broker, subscribe
from infrastructure.messaging.dead_letters import RabbitDeadLetters
from infrastructure.messaging.service import BrokerComponent, Component
from infrastructure.messaging.topology import Topology
from infrastructure.messaging.transport import MessagePublisher
from infrastructure.metrics import lps_observer
from infrastructure.settings import Settings


def make_executor(
    settings: Settings, lane: int = 0, jobs: JobStore | None = None
) -> QueuedRequestExecutor:
    """One executor over its own provider (executors are not shared between threads);
    ``jobs`` (shared by the lanes) remembers provider batch jobs across restarts."""
    mode = QueueProcessingMode(settings.lps_queue_mode) if settings.lps_queue_mode else None
    return QueuedRequestExecutor(
        build_provider(settings),
        mode,
        bundle_cap=settings.lps_bundle_cap,
        max_attempts=settings.lps_max_attempts,
        rng=random.Random(f"{settings.lps_simulation_seed}:lane:{lane}"),
        observer=lps_observer(),
        job_polling=JobPolling(
            poll_interval=timedelta(seconds=settings.lps_job_poll_seconds),
            timeout=timedelta(seconds=settings.lps_job_timeout_seconds),
        ),
        jobs=jobs,
    )


@dataclass
class LpsWorkerProcess:
    worker: LpsWorker
    broker: RabbitBroker
    topology: Topology
    components: list[Component] = field(default_factory=list)


def build_lps_worker(settings: Settings) -> LpsWorkerProcess:
    topology = Topology(settings.queue_prefix)
    broker = make_broker(
        settings.broker_url,
        prefetch=settings.lps_prefetch,
        graceful_timeout=settings.shutdown_timeout_seconds,
    )
    publisher = MessagePublisher(broker, topology, timeout=settings.publish_timeout_seconds)
    jobs = SqliteJobStore(settings.lps_state_path)
    worker = LpsWorker(
        executors=[make_executor(settings, lane, jobs) for lane in range(settings.lps_concurrency)],
        publish_outcome=publisher.publish_outcome,
        publish_outcomes=publisher.publish_outcomes,
        dead_letters=RabbitDeadLetters(
            broker, topology, topology.requests_queue_name, settings.publish_timeout_seconds
        ),
        gather_window=settings.lps_gather_ms / 1000.0,
        bundle_cap=settings.lps_bundle_cap,
        backoff=settings.retry_backoff(),
    )

    subscribe(broker, topology.requests_queue, topology.exchange, worker.handle)

    components: list[Component] = [
        worker,
        BrokerComponent(
            broker,
            topology,
            connect_timeout=settings.broker_connect_timeout_seconds,
            url=settings.broker_url,
        ),
    ]
    return LpsWorkerProcess(worker, broker, topology, components)
