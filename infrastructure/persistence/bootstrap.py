"""Opening the stores safely when several processes start at once.

Two processes creating tables, schemas or functions in a fresh PostgreSQL database race
even with ``IF NOT EXISTS`` / ``OR REPLACE`` (both see "missing", one fails on the
catalogue's unique index or with ``tuple concurrently updated``). So every start-up DDL
runs under ``ddl_lock``: one advisory lock per database schema, held on a connection of its
own, so processes create their tables one after the other (each finds the others' work
done). PostgreSQL releases the lock if the holder dies. The lock is re-entrant within a
thread: code that already holds it (opening the application, then its read models) must
not wait for itself on a second connection. Stores in other schemas never wait for it.
``retry_schema_race`` stays as a second line for DDL that other code runs outside the lock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import structlog
from eventsourcing.persistence import IntegrityError, OperationalError, ProgrammingError

from application.batches import BatchApplication
from infrastructure.persistence.store import ensure_schema, postgres_conninfo

#: advisory lock key prefix (``hashtext`` of it and the schema) serialising start-up DDL
DDL_LOCK_KEY = "cjledger.ddl"

_held = threading.local()

T = TypeVar("T")
log = structlog.get_logger("cjledger.persistence")

SCHEMA_RACE_ERRORS: tuple[type[Exception], ...] = (
    IntegrityError,
    ProgrammingError,
    OperationalError,
)
try:  # psycopg errors that escape the library's mapping during DDL
    import psycopg

    SCHEMA_RACE_ERRORS += (
        psycopg.errors.UniqueViolation,
        psycopg.errors.DuplicateObject,
        psycopg.errors.DuplicateTable,
    )
except ImportError:  # pragma: no cover
    pass


def retry_schema_race(create: Callable[[], T], attempts: int = 5) -> T:
    """Run ``create``; on a concurrent-DDL conflict wait a moment and run it again."""
    for attempt in range(1, attempts + 1):
        try:
            return create()
        except SCHEMA_RACE_ERRORS as error:
            if attempt == attempts:
                raise
            log.info("schema_creation_raced_retrying", attempt=attempt, error=str(error))
            time.sleep(0.05 * attempt + random.random() * 0.1)
    raise AssertionError("unreachable")


@contextmanager
def ddl_lock(env: dict[str, str]) -> Iterator[None]:
    """Hold the schema's start-up DDL lock (PostgreSQL only; a no-op elsewhere)."""
    if not env.get("PERSISTENCE_MODULE", "").endswith("postgres"):
        yield
        return
    key = ddl_lock_key(env)
    held: set[str] = _held.__dict__.setdefault("keys", set())
    if key in held:  # this thread holds it already
        yield
        return
    import psycopg

    with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
        started = time.monotonic()
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        waited = time.monotonic() - started
        if waited > 1.0:
            log.info("ddl_lock_waited", seconds=round(waited, 2))
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def ddl_lock_key(env: dict[str, str]) -> str:
    """One lock per schema: stores in other schemas of the database never wait for it."""
    schema = env.get("POSTGRES_SCHEMA", "").strip() or "public"
    return f"{DDL_LOCK_KEY}:{schema}"


def open_batch_application(env: dict[str, str], **kwargs: Any) -> BatchApplication:
    """Create the configured PostgreSQL schema and tables if needed (under ``ddl_lock``),
    then open the application."""
    with ddl_lock(env):
        retry_schema_race(lambda: ensure_schema(env))
        return retry_schema_race(lambda: BatchApplication(env=env, **kwargs))
