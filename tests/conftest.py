"""Shared fixtures. ``store_env`` runs a test once per event store: SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from hypothesis import settings
from psycopg import sql

from application.batches import BatchApplication
from infrastructure.bootstrap import System
from infrastructure.persistence.store import eventsourcing_env, postgres_conninfo

AppFactory = Callable[..., BatchApplication]

# Hypothesis's per-example deadline is a timed assertion: on a loaded two-core machine it
# fails tests whose behaviour is fine. Speed is measured by ``make bench``, not here.
settings.register_profile("cjledger", deadline=None)
settings.load_profile("cjledger")

# The server the PostgreSQL tests use. Every test gets a schema of its own in this database
# and drops it afterwards, so runs in parallel (or on a shared server) never collide.
TEST_POSTGRES_URL = os.environ.get(
    "CJLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def postgres_dsn() -> str:
    """A psycopg connection string for the test server."""
    return postgres_conninfo(eventsourcing_env(TEST_POSTGRES_URL), connect_timeout=5)


def drop_schema(schema: str) -> None:
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema no other test or run uses, dropped with all it holds afterwards.

    Skips the test when the server cannot be reached.
    """
    schema = f"cjt_{uuid.uuid4().hex}"
    try:
        conn = psycopg.connect(postgres_dsn(), autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at {TEST_POSTGRES_URL}: {error}")
    with conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        drop_schema(schema)


@pytest.fixture
def postgres_url(postgres_schema: str) -> str:
    """``CJLEDGER_DATABASE_URL`` of a private PostgreSQL store (the fresh schema)."""
    return f"{TEST_POSTGRES_URL}?schema={postgres_schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The eventsourcing environment of a fresh, private store of each kind, as
    ``CJLEDGER_DATABASE_URL`` would configure it: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield eventsourcing_env(f"sqlite:///{tmp_path / 'events.db'}")
    else:
        yield eventsourcing_env(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make_app(store_env: dict[str, str]) -> Iterator[AppFactory]:
    """Build application instances on the test's store; all are closed afterwards."""
    systems: list[System] = []

    def factory(**kwargs: Any) -> BatchApplication:
        system = System(store_env=store_env, app_options=kwargs)  # the composition root
        systems.append(system)
        return system.app

    yield factory
    for system in systems:
        system.close()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that configures logging (the CLI does) must not leak it into the next."""
    yield
    structlog.reset_defaults()
