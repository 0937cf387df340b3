"""Shared fixtures. ``store_env`` runs a test once per event store (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from application.batches import BatchApplication

AppFactory = Callable[..., BatchApplication]


@pytest.fixture(params=["sqlite"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """eventsourcing environment for a fresh, private store of each kind."""
    if request.param == "sqlite":
        yield {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(tmp_path / "events.db"),
        }


@pytest.fixture
def make_app(store_env: dict[str, str]) -> Iterator[AppFactory]:
    """Build application instances on the test's store; all are closed afterwards."""
    apps: list[BatchApplication] = []

    def factory(**kwargs: Any) -> BatchApplication:
        app = BatchApplication(env=dict(store_env), **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that configures logging (the CLI does) must not leak it into the next."""
    yield
    structlog.reset_defaults()
