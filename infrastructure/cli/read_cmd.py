"""``cjledger batches list|show|rankings|decisions|report`` and ``cjledger api``.

The read commands answer from the read models (on an embedded store they first catch the
read models up with the log, so they work right after ``demo --store FILE``). A batch is
named by its id or by its external reference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from infrastructure.cli.app import app, batches_app, fail
from infrastructure.cli.common import StoreOption, make_console, open_system

# Heavy modules are imported inside the commands: ``cjledger --help`` stays fast.
if TYPE_CHECKING:
    from infrastructure.bootstrap import System

BatchArgument = Annotated[str, typer.Argument(help="the batch id, or its external reference")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]


def _caught_up(system: System) -> System:
    if system.env.get("PERSISTENCE_MODULE", "").endswith("sqlite"):
        system.runner().run_once()  # embedded: nothing else keeps the read models current
    return system


def _summary(system: System, batch: str) -> dict[str, Any]:
    from infrastructure.batch_views import batch_id_for

    batch_id = str(batch_id_for(batch))
    summary = system.read_models.batch_summary(batch_id)
    if summary is None:
        fail(f"batch {batch} does not exist")
    return summary


@batches_app.command("list")
def list_batches(
    store: StoreOption = None,
    status: Annotated[str | None, typer.Option(help="only batches with this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Batches, newest first."""
    from rich.table import Table

    from infrastructure.logging import configure_logging

    configure_logging(json_logs=False, level="WARNING")
    with open_system(store) as system:
        rows = _caught_up(system).read_models.batch_page(status=status, limit=limit).rows
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="batches")
    columns = ("batch_id", "external_ref", "status", "mode", "essays", "successes")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    make_console().print(table)


@batches_app.command("show")
def show(batch: BatchArgument, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """One batch's summary and usage."""
    from rich.table import Table

    from infrastructure.batch_views import usage
    from infrastructure.logging import configure_logging

    configure_logging(json_logs=False, level="WARNING")
    with open_system(store) as system:
        summary = _summary(_caught_up(system), batch)
        document = {
            **summary,
            "usage": usage(system.read_models.comparisons(summary["batch_id"])),
        }
    if as_json:
        print(json.dumps(document, indent=2))
        return
    table = Table(title=f"batch {summary['batch_id']}", show_header=False)
    for key, value in document.items():
        table.add_row(key, str(value))
    make_console().print(table)


@batches_app.command("rankings")
def rankings(
    batch: BatchArgument,
    store: StoreOption = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="print CSV")] = False,
    as_json: JsonOption = False,
) -> None:
    """A finalized batch's scores, standard errors and ranks."""
    from rich.table import Table

    from infrastructure.batch_views import rankings_as_csv
    from infrastructure.logging import configure_logging

    configure_logging(json_logs=False, level="WARNING")
    with open_system(store) as system:
        summary = _summary(_caught_up(system), batch)
        rows = system.read_models.rankings(summary["batch_id"])
    if as_csv:
        print(rankings_as_csv(rows), end="")
        return
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        fail(f"batch {summary['batch_id']} has no rankings (status {summary['status']})", 1)
    table = Table(title=f"Rankings — batch {summary['batch_id']}")
    for column in ("rank", "essay", "score", "SE", "comparisons"):
        table.add_column(column, justify="left" if column == "essay" else "right")
    for r in rows:
        table.add_row(
            str(r["rank"]), r.get("external_id") or r["essay_id"], f"{r['score']:+.3f}",
            f"{r['se']:.3f}",
            str(r["comparisons"]),
        )  # fmt: skip
    make_console().print(table)


@batches_app.command("decisions")
def decisions(batch: BatchArgument, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """The decision trail: every continuation decision, its reason and guard."""
    from rich.table import Table

    from infrastructure.logging import configure_logging
    from infrastructure.teacher_report import timeline_sentences

    configure_logging(json_logs=False, level="WARNING")
    with open_system(store) as system:
        summary = _summary(_caught_up(system), batch)
        rows = system.read_models.decisions(summary["batch_id"])
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    trail = Table(title=f"Decision trail — batch {summary['batch_id']} (mode {summary['mode']})")
    for column in (
        "wave", "decision", "reason", "outcomes", "success rate", "max score change", "guard",
    ):  # fmt: skip
        trail.add_column(column)
    for d in rows:
        rate = "-" if d["success_rate"] is None else f"{d['success_rate']:.2f}"
        change = "-" if d["max_score_change"] is None else f"{d['max_score_change']:.4f}"
        guard = f"{d['guard']} (raw {d['raw_decision']})" if d["guard"] else ""
        trail.add_row(
            str(d["wave"]), d["decision"], d["reason"], str(d["outcomes"]), rate,
            change, guard,
        )  # fmt: skip
    console = make_console()
    console.print(trail)
    for sentence in timeline_sentences(rows):
        console.print(f"• {sentence}")


@batches_app.command("report")
def report(
    batch: BatchArgument,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="HTML file to write")],
    store: StoreOption = None,
) -> None:
    """Write the teacher report: one self-contained HTML file."""
    from infrastructure.batch_views import report_data
    from infrastructure.logging import configure_logging
    from infrastructure.teacher_report import render_report

    configure_logging(json_logs=False, level="WARNING")
    with open_system(store) as system:
        summary = _summary(_caught_up(system), batch)
        html = render_report(report_data(system, summary["batch_id"], summary))
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {out}: {error}", 1)
    print(out)


@app.command("api")
def api(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    store: StoreOption = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) on the configured store or --store FILE."""
    import uvicorn

    from infrastructure.api import create_api
    from infrastructure.logging import configure_logging

    with open_system(store) as system:
        configure_logging(json_logs=system.settings.log_json, level=system.settings.log_level)
        uvicorn.run(create_api(system), host=host, port=port, log_config=None)
