"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from infrastructure.cli.app import fail

# Only what a command's signature needs is imported at module level: ``cjledger --help``
# must not pay for numpy, networkx, psycopg or pydantic (see tests/unit/test_cli_startup.py).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from application.batches import BatchApplication
    from infrastructure.bootstrap import System
    from infrastructure.settings import Settings

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="SQLite event store file (default: CJLEDGER_DATABASE_URL)",
        dir_okay=False,
    ),
]


def database_url(store: Path | None, settings: Settings | None = None) -> str:
    if store is not None:
        return f"sqlite:///{store}"
    if settings is None:
        from infrastructure.cli.errors import load_settings

        settings = load_settings()
    return settings.database_url


@contextmanager
def open_system(store: Path | None, *, must_exist: bool = True) -> Iterator[System]:
    """The composition root on ``--store`` or the configured database."""
    from infrastructure.bootstrap import System
    from infrastructure.persistence.store import BadDatabaseUrl, eventsourcing_env

    if store is not None and must_exist and not store.exists():
        fail(f"no event store at {store}")
    settings = load_settings_for(store)
    try:
        env = eventsourcing_env(settings.database_url)
    except BadDatabaseUrl as bad:
        fail(str(bad))
    if store is None and must_exist and env.get("PERSISTENCE_MODULE", "").endswith("sqlite"):
        path = Path(env["SQLITE_DBNAME"])
        if not path.exists():
            fail(f"no event store at {path} (set CJLEDGER_DATABASE_URL or pass --store)")
    with System(settings) as system:
        yield system


def load_settings_for(store: Path | None) -> Settings:
    """The settings, with ``--store FILE`` (when given) as the database."""
    from infrastructure.cli.errors import load_settings

    settings = load_settings()
    if store is None:
        return settings
    return settings.model_copy(update={"database_url": database_url(store)})


@contextmanager
def open_app(store: Path | None, *, must_exist: bool = True) -> Iterator[BatchApplication]:
    """Open the batch application on ``--store`` or the configured database."""
    with open_system(store, must_exist=must_exist) as system:
        yield system.app


def make_console() -> Console:
    """A Rich console; logs and pipes get a wide fixed width so tables stay unwrapped."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def progress_bar(console: Console, **options: Any) -> Progress:
    """The progress bar long operator commands show: what, bar, done/total, elapsed."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        **options,
    )
