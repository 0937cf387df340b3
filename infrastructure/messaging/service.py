"""Long-running service processes, assembled from small components.

A component is anything with ``async start()`` and ``async stop()``. ``run_service``
starts them in order, waits for SIGTERM or SIGINT, and stops them in reverse order, so a
component can rely on everything listed before it while it drains. ``serve`` and
``lps-worker`` (``infrastructure.cli.service_cmd``) are just two lists of components; the
HTTP API and the projection runner join ``serve`` by being appended to its list.

Shutdown order matters for the broker: stopping it first stops taking new messages and
waits (up to the graceful timeout) for the handlers in flight — which in turn wait for
the outcome recorder or the LPS worker, still running at that point. Messages that were
delivered but not acknowledged go back to their queue when the channel closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import re
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import aio_pika
import anyio
import psycopg
import structlog
from faststream.rabbit import RabbitBroker

from application.batches import BatchApplication
from application.dispatcher import OutboxDispatcher
from domain.backoff import Backoff
from infrastructure.messaging.topology import Topology, declare_topology
from infrastructure.persistence.store import postgres_connect_kwargs

log = structlog.get_logger("cjledger.service")


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_service(
    name: str,
    components: Sequence[Component],
    *,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Start ``components``, run until SIGTERM/SIGINT (or ``stop_event``), stop them all."""
    loop = asyncio.get_running_loop()
    stop = stop_event or asyncio.Event()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    started: list[Component] = []

    async def start_all() -> None:
        for component in components:
            await component.start()
            started.append(component)

    try:
        # SIGTERM is honoured while starting too (e.g. waiting for a broker that
        # accepted the connection and never answers): the start is cancelled.
        starting = asyncio.create_task(start_all(), name=f"{name}-start")
        stopping = asyncio.create_task(stop.wait(), name=f"{name}-stop-signal")
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("service_stopped_while_starting", service=name)
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        else:
            starting.result()  # a failed start raises here
            log.info("service_started", service=name, pid=os.getpid())
            await stopping
            log.info("service_stopping", service=name)
        stopping.cancel()
    finally:
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:
                log.exception("component_stop_failed", component=type(component).__name__)
        for signum in handled:
            loop.remove_signal_handler(signum)
        log.info("service_stopped", service=name)


class BrokerComponent:
    """Connects, declares the topology, then starts the subscribers registered on it.

    On stop, the subscribers stop taking messages first; then each ``before_close`` hook
    runs (a consumer settling what it already received) while the channel is still open
    for its acknowledgements; then the connection closes, returning anything unsettled.
    """

    def __init__(
        self,
        broker: RabbitBroker,
        topology: Topology,
        before_close: Sequence[Callable[[], Awaitable[None]]] = (),
        *,
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
        url: str = "",
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.before_close = list(before_close)
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff(base_seconds=1.0, max_seconds=30.0)
        self.url = url
        self.where = re.sub(r"//[^@/]*@", "//", url)  # host, port, vhost; no credentials

    async def start(self) -> None:
        await self._connect()
        await asyncio.wait_for(declare_topology(self.broker, self.topology), self.connect_timeout)
        await self.broker.start()
        log.info("broker_started", exchange=self.topology.exchange_name)

    async def _connect(self) -> None:
        """Connect, each attempt bounded by ``connect_timeout``; until connected (or the
        service is stopped), say what it is waiting for and try again after a backoff."""
        attempt = 0
        rng = random.Random()
        while True:
            attempt += 1
            try:
                await self._probe()
                await asyncio.wait_for(self.broker.connect(), self.connect_timeout)
                return
            except Exception as error:  # refused, unresolvable, silent, bad credentials
                delay = self.backoff.delay(attempt, rng.random())
                log.warning(
                    "waiting_for_broker",
                    broker=self.where,
                    attempt=attempt,
                    connect_timeout_seconds=self.connect_timeout,
                    retry_in_seconds=round(delay, 2),
                    error=f"{type(error).__name__}: {error}"[:300],
                )
                await asyncio.sleep(delay)

    async def _probe(self) -> None:
        """One plain (not self-reconnecting) AMQP handshake: a silent or refusing broker
        fails it within ``connect_timeout`` and leaves no reconnect task behind, which
        the broker's own robust connection would (and so keep a stopped process alive)."""
        if not self.url:
            return
        connection = await aio_pika.connect(self.url, timeout=self.connect_timeout)
        await connection.close()

    async def stop(self) -> None:
        for subscriber in self.broker.subscribers:
            await subscriber.stop()
        for hook in self.before_close:
            try:
                await hook()
            except Exception:
                log.exception("broker_before_close_failed")
        await self.broker.stop()


# ---------------------------------------------------------------------- dispatcher lease


class Lease(Protocol):
    """Who may run the outbox dispatcher. ``acquire`` never blocks and may be called
    again while held; it returns whether this process holds the lease now."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class SoleLease:
    """For stores only one process can use (in-memory): always held."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


class FileLease:
    """An exclusive ``flock`` beside the SQLite file, released when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class PostgresAdvisoryLease:
    """A session-level advisory lock on a connection of its own.

    The lock lives as long as the connection: if the process dies, PostgreSQL releases it
    and another ``serve`` takes over the dispatcher within one dispatch interval. The
    connection is checked on every ``acquire``; if it broke, the lease is lost and the
    next call tries to win it again.
    """

    def __init__(self, connect_kwargs: dict[str, Any], key: str) -> None:
        self.connect_kwargs = connect_kwargs
        self.key = key
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                log.warning("dispatcher_lease_lost", key=self.key)
                self._close()
        conn = psycopg.connect(autocommit=True, **self.connect_kwargs)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.key,)).fetchone()
        except psycopg.Error:
            conn.close()
            raise
        if row is not None and row[0]:
            self._conn = conn
            log.info("dispatcher_lease_acquired", key=self.key)
            return True
        conn.close()
        return False

    def release(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def lease_for(es_env: dict[str, str], name: str) -> Lease:
    """The dispatcher lease that fits the store named by an eventsourcing environment."""
    module = es_env.get("PERSISTENCE_MODULE", "")
    if module.endswith("postgres"):
        kwargs = postgres_connect_kwargs(es_env, connect_timeout=5)  # every libpq option
        schema = es_env.get("POSTGRES_SCHEMA", "public")
        return PostgresAdvisoryLease(kwargs, f"cjledger.{name}:{schema}")
    if module.endswith("sqlite"):
        db = es_env.get("SQLITE_DBNAME", "")
        if db and db != ":memory:" and not db.startswith("file:"):
            return FileLease(Path(f"{db}.{name}.lock"))
    return SoleLease()


# ---------------------------------------------------------------------- periodic loops


class DispatcherLoop:
    """Runs ``OutboxDispatcher.pump`` whenever woken, and at least every ``interval``.

    Only the process holding the lease pumps, so two ``serve`` processes do not both
    publish every wave (both would be harmless, only wasteful). A failed pump (broker
    down, publish not confirmed) leaves the position where it was and is retried after a
    backoff.
    """

    def __init__(
        self,
        dispatcher: OutboxDispatcher,
        lease: Lease,
        *,
        interval: float,
        backoff: Backoff,
    ) -> None:
        self.dispatcher = dispatcher
        self.lease = lease
        self.interval = interval
        self.backoff = backoff
        self.pumps = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task  # a pump in progress finishes; the broker is still up
            self._task = None
        await anyio.to_thread.run_sync(self.lease.release)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            delay = self.interval
            try:
                if await anyio.to_thread.run_sync(self.lease.acquire):
                    await anyio.to_thread.run_sync(self.dispatcher.pump)
                    self.pumps += 1
                failures = 0
            except Exception as error:
                failures += 1
                delay = self.backoff.delay(failures, self._rng.random())
                log.warning(
                    "dispatch_failed",
                    consecutive_failures=failures,
                    retry_in_seconds=round(delay, 2),
                    error=f"{type(error).__name__}: {error}",
                )
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)


class SweeperLoop:
    """Closes overdue comparisons every ``interval`` (``BatchApplication.close_overdue``)."""

    def __init__(
        self,
        app: BatchApplication,
        *,
        interval: float,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.interval = interval
        self.on_closed = on_closed
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deadline-sweeper")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
            if self._stop.is_set():
                break
            try:
                closed = await anyio.to_thread.run_sync(self.app.close_overdue)
            except Exception as error:
                log.warning("deadline_sweep_failed", error=f"{type(error).__name__}: {error}")
                continue
            if closed:
                log.info("deadline_sweep_closed", comparisons=closed)
                if self.on_closed is not None:
                    self.on_closed()
