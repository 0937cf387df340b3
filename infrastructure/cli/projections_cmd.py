"""``cjledger projections``: run, inspect and rebuild the read models.

The store is ``--store FILE`` (SQLite) or ``CJLEDGER_DATABASE_URL``; on PostgreSQL a
named schema is created on first use, like the tables.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from infrastructure.cli.app import PLAIN_HELP, app, fail
from infrastructure.cli.common import (
    StoreOption,
    database_url,
    make_console,
    open_system,
    progress_bar,
)

if TYPE_CHECKING:
    from infrastructure.bootstrap import System
    from projections.runner import ReadModelRunner

projections_app = typer.Typer(
    help="Read models: follow the log, report lag, rebuild.",
    no_args_is_help=True,
    rich_markup_mode=PLAIN_HELP,
)
app.add_typer(projections_app, name="projections")


@contextmanager
def _open_store(store: Path | None) -> Iterator[System]:
    import psycopg

    from infrastructure.persistence.bootstrap import ddl_lock
    from infrastructure.persistence.store import BadDatabaseUrl, ensure_schema, eventsourcing_env

    if store is None:
        try:
            env = eventsourcing_env(database_url(None))
            with ddl_lock(env):
                ensure_schema(env)
        except BadDatabaseUrl:
            pass  # open_system reports it
        except psycopg.Error as error:
            fail(f"cannot reach the database: {str(error).strip().splitlines()[0]}", code=1)
    with open_system(store) as system:
        yield system


def _runner(system: System, names: list[str] | None = None) -> ReadModelRunner:
    from projections.runner import UnknownProjection

    try:
        return system.runner(names)
    except (UnknownProjection, ValueError) as error:
        fail(str(error))


@projections_app.command("run")
def run(
    store: StoreOption = None,
    once: Annotated[bool, typer.Option("--once", help="catch up, then exit")] = False,
    poll_interval: Annotated[float, typer.Option(min=0.01, max=60.0)] = 0.2,
    page_size: Annotated[int, typer.Option(min=1, max=10_000)] = 500,
) -> None:
    """Catch every projection up with the log, then keep following it (until SIGTERM)."""
    from infrastructure.gc_tuning import tune_gc
    from infrastructure.logging import configure_logging

    configure_logging(json_logs=not once, level="INFO")
    with _open_store(store) as system:
        runner = _runner(system)
        runner.poll_interval = poll_interval
        runner.page_size = page_size
        tune_gc()
        if once:
            seen = runner.run_once()
            make_console().print(f"caught up: {seen} notifications read")
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            runner.stop(timeout=0)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        runner.run_forever()


@projections_app.command("status")
def status(
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Per projection: active generation, position, head of the log, lag and failure.

    Exits 1 (after printing the table) if a read model cannot apply an event."""
    from rich.table import Table

    from infrastructure.logging import configure_logging

    configure_logging(json_logs=False, level="WARNING")
    with _open_store(store) as system:
        rows = _runner(system).status()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "projection": r.name,
                        "generation": r.generation,
                        "position": r.position,
                        "head": r.head,
                        "lag": r.lag,
                        "failure": r.failure,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
    else:
        table = Table(title="projections")
        for column in ("projection", "generation", "position", "head", "lag", "failure"):
            table.add_column(
                column, justify="right" if column not in ("projection", "failure") else "left"
            )
        for r in rows:
            table.add_row(
                r.name, str(r.generation), str(r.position), str(r.head), str(r.lag), r.failure or ""
            )
        make_console().print(table)
    failing = [r for r in rows if r.failure]
    if failing:
        first = failing[0]
        more = f" (and {len(failing) - 1} more)" if len(failing) > 1 else ""
        fail(f"read model {first.name} is stuck at {first.failure}{more}", code=1)


@projections_app.command("rebuild")
def rebuild(
    name: Annotated[str | None, typer.Argument(help="one projection; all when omitted")] = None,
    store: StoreOption = None,
) -> None:
    """Replay the log into a fresh copy beside the live view, then switch to it."""
    from infrastructure.gc_tuning import tune_gc
    from infrastructure.logging import configure_logging
    from projections.catalogue import PROJECTIONS
    from projections.runner import RebuildInProgress

    if name is not None and name not in PROJECTIONS:
        fail(f"unknown projection {name!r}; known: {', '.join(PROJECTIONS)}")
    names = [name] if name else list(PROJECTIONS)
    configure_logging(json_logs=False, level="WARNING")
    console = make_console()
    with _open_store(store) as system:
        runner = _runner(system, names)
        tune_gc()
        with progress_bar(console) as progress:
            for projection in names:
                task = progress.add_task(f"rebuild {projection}", total=runner.head() or 1)

                def advance(position: int, head: int, task: int = task) -> None:
                    progress.update(task, completed=position, total=max(head, 1))

                try:
                    result = runner.rebuild(projection, progress=advance)
                except RebuildInProgress as busy:
                    progress.stop()
                    fail(f"{busy}; try again when it has finished", code=1)
                progress.update(task, completed=result.position, total=max(result.head, 1))
        for s in runner.status():
            console.print(
                f"{s.name}: rebuilt as generation {s.generation}, "
                f"position {s.position}, lag {s.lag}"
            )
