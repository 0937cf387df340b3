"""``cjledger batches verify``: re-derive decisions, waves and scores from the log alone."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from infrastructure.cli.app import batches_app, fail
from infrastructure.cli.common import StoreOption, make_console, open_system, progress_bar

# Heavy modules are imported inside the command: ``cjledger --help`` stays fast.
if TYPE_CHECKING:
    from application.verification import Divergence, WhatIf


def _read_policy(path: Path) -> dict[str, Any]:
    from application.verification import policy_overrides

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"no such file: {path}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        fail(f"cannot read policy {path}: {error}")
    if not isinstance(document, dict):
        fail(f"{path}: a policy is a JSON object of BatchPolicy fields")
    try:
        return policy_overrides(document)
    except ValueError as bad:
        fail(f"{path}: {bad}")


@batches_app.command("verify")
def verify(
    batch: Annotated[str | None, typer.Argument(help="batch id or external reference")] = None,
    all_batches: Annotated[bool, typer.Option("--all", help="every batch in the log")] = False,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", dir_okay=False, help="what-if: JSON of policy fields to change"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    store: StoreOption = None,
) -> None:
    """Re-derive every decision, wave and finalization; exit 1 on any divergence.

    Differences in events stamped by another algorithm version than today's are listed
    apart as algorithm changes, with a warning, and alone do not fail (exit 0).

    With --policy FILE, list instead the batches another policy would have stopped
    earlier, later or with another outcome.
    """
    from application.batches import BatchNotFound
    from application.verification import DIVERGENCE, batch_ids, verify_batch, what_if
    from infrastructure.batch_views import batch_id_for
    from infrastructure.logging import configure_logging

    if (batch is None) == (not all_batches):
        fail("name one batch or pass --all")
    overrides = _read_policy(policy) if policy is not None else None
    configure_logging(json_logs=False, level="WARNING")
    console = make_console()
    divergences: list[Divergence] = []
    changes: list[WhatIf] = []
    with open_system(store) as system:
        app = system.app
        ids = batch_ids(app) if all_batches else [batch_id_for(batch or "")]
        with progress_bar(console, transient=True, disable=as_json) as progress:
            task = progress.add_task("verify" if overrides is None else "what-if", total=len(ids))
            for batch_id in ids:
                try:
                    events = app.batch_events(batch_id)
                except BatchNotFound as missing:
                    fail(str(missing))
                if overrides is None:
                    divergences.extend(verify_batch(events))
                else:
                    change = what_if(events, overrides)
                    if change is not None:
                        changes.append(change)
                progress.advance(task)
    if overrides is not None:
        _print_what_if(changes, len(ids), as_json)
        return
    real = [d for d in divergences if d.classification == DIVERGENCE]
    changed = [d for d in divergences if d.classification != DIVERGENCE]
    _print_divergences(real, changed, len(ids), as_json)
    if real:
        raise typer.Exit(1)


def _print_divergences(
    real: list[Divergence], changed: list[Divergence], checked: int, as_json: bool
) -> None:
    from rich.table import Table

    if as_json:
        document = {
            "batches": checked,
            "divergences": [asdict(d) for d in real],
            "algorithm_changed": [asdict(d) for d in changed],
        }
        print(json.dumps(document, indent=2, default=str))
        return
    console = make_console()
    columns = ("batch", "version", "event", "field", "recorded", "derived")
    if changed:
        table = Table(title="algorithm changed: recorded by another algorithm version")
        for column in (*columns, "algorithm recorded→current"):
            table.add_column(column, overflow="fold")
        for d in changed:
            table.add_row(
                d.batch_id, str(d.version), d.event, d.field, str(d.recorded), str(d.derived),
                f"{d.recorded_algorithm}→{d.current_algorithm}",
            )  # fmt: skip
        console.print(table)
    if real:
        table = Table(title="divergences: recorded vs derived from the log")
        for column in columns:
            table.add_column(column, overflow="fold")
        for d in real:
            table.add_row(
                d.batch_id, str(d.version), d.event, d.field, str(d.recorded), str(d.derived)
            )
        console.print(table)
    if changed:
        console.print(
            f"warning: {len(changed)} difference(s) in events recorded by another algorithm "
            "version (a deliberate change of algorithm, not tampering; 0 means unstamped)"
        )
    console.print(f"{checked} batch(es) verified, {len(real)} divergence(s)")


def _print_what_if(changes: list[WhatIf], checked: int, as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print(json.dumps({"batches": checked, "changed": [asdict(c) for c in changes]}, indent=2))
        return
    console = make_console()
    if changes:
        table = Table(title="batches the other policy decides differently")
        for column in ("batch", "change", "wave", "after outcomes", "recorded", "would be"):
            table.add_column(column, overflow="fold")
        for c in changes:
            table.add_row(c.batch_id, c.change, str(c.wave), str(c.outcomes), c.recorded, c.derived)
        console.print(table)
    console.print(f"{checked} batch(es) replayed, {len(changes)} would change")
