"""Opening the stores safely when several processes start at once.

Two processes creating tables in a fresh PostgreSQL database can race even with
``CREATE ... IF NOT EXISTS`` (both see "missing", one fails on the catalogue's unique
index). The loser simply tries again: by then the other has created everything.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from eventsourcing.persistence import IntegrityError, OperationalError, ProgrammingError

from application.batches import BatchApplication
from infrastructure.persistence.store import ensure_schema

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


def open_batch_application(env: dict[str, str], **kwargs: Any) -> BatchApplication:
    """Create the configured PostgreSQL schema if needed, then open the application."""
    retry_schema_race(lambda: ensure_schema(env))
    return retry_schema_race(lambda: BatchApplication(env=env, **kwargs))
