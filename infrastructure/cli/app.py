"""The Typer application objects that command modules attach to."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

# Plain help text (``rich_markup_mode=None``): Typer's Rich help formatter imports
# markdown and syntax highlighting, which tripled the start-up time of ``--help``.
PLAIN_HELP = None

app = typer.Typer(
    name="cjledger",
    rich_markup_mode=PLAIN_HELP,
    help="Event-sourced comparative-judgement batches: run, audit, replay, rebuild.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
batches_app = typer.Typer(
    help="Inspect batches in the event store.", no_args_is_help=True, rich_markup_mode=PLAIN_HELP
)
app.add_typer(batches_app, name="batches")
essays_app = typer.Typer(help="Manage the essays of a batch (erasure).", no_args_is_help=True)
app.add_typer(essays_app, name="essays")


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr and a non-zero exit: how every command reports bad input."""
    from infrastructure.cli.errors import redact

    print(f"error: {redact(message)}", file=sys.stderr)
    raise typer.Exit(code)
