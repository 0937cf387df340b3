"""``cjledger batches history``: a batch's events, or its state at any version."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from infrastructure.cli.app import batches_app, fail
from infrastructure.cli.common import StoreOption, make_console, open_app

if TYPE_CHECKING:
    from application.batches import BatchApplication


@batches_app.command("history")
def history(
    batch_id: Annotated[str, typer.Argument(help="the batch id (a UUID)")],
    store: StoreOption = None,
    at_version: Annotated[
        int | None,
        typer.Option("--at-version", min=1, help="show the batch's state at this version"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List a batch's events (version, time, type, summary) or its state at a version."""
    from application.batches import BatchNotFound

    try:
        batch_uuid = UUID(batch_id)
    except ValueError:
        fail(f"batch id {batch_id!r} is not a UUID")
    with open_app(store) as app:
        try:
            events = app.batch_events(batch_uuid)
        except BatchNotFound as missing:
            fail(str(missing))
        if at_version is not None:
            _show_state(app, batch_uuid, at_version, len(events), as_json)
            return
        _show_events(events, as_json, app.external_ids(batch_uuid))


def _show_events(events: list[Any], as_json: bool, resolve: Callable[[str], str]) -> None:
    from rich.table import Table

    from application.event_json import event_document
    from application.reports import summarize_event

    if as_json:  # everything each event carries, for auditors and scripts
        print(json.dumps([event_document(e) for e in events], indent=2))
        return

    rows = [
        {
            "version": e.originator_version,
            "timestamp": e.timestamp.isoformat(),
            "type": type(e).__name__,
            "summary": summarize_event(e, resolve),
        }
        for e in events
    ]
    table = Table(title=f"batch {events[0].originator_id}")
    for column in ("version", "timestamp", "type", "summary"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["version"]), row["timestamp"], row["type"], row["summary"])
    make_console().print(table)


def _show_state(
    app: BatchApplication, batch_id: UUID, version: int, head: int, as_json: bool
) -> None:
    if version > head:
        fail(f"batch {batch_id} has {head} events; --at-version must be at most {head}")
    from rich.table import Table

    batch = app.get_batch(batch_id, version=version)
    from application.event_json import state_summary

    state = state_summary(batch)
    if as_json:
        print(json.dumps(state, indent=2))
        return
    table = Table(title=f"batch {batch_id} at version {version} of {head}", show_header=False)
    for key, value in state.items():
        table.add_row(key, str(value))
    make_console().print(table)
