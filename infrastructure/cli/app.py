"""The Typer application objects that command modules attach to."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

app = typer.Typer(
    name="cjledger",
    help="Event-sourced comparative-judgement batches: run, audit, replay, rebuild.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
batches_app = typer.Typer(help="Inspect batches in the event store.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr and a non-zero exit: how every command reports bad input."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)
