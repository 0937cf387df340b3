"""``cjledger run``: a school's own essays, ranked end to end on the embedded store.

One batch, in-process: the essays file is registered (texts, ids, instructions and rubric
into the content store; refs and keyed hashes into the events), the outbox dispatcher
fills each request from the content store, the real LPS executor answers it, and the
outcomes are recorded through the same use case the broker consumer calls. The output is
the demo's: rankings by the school's ids, the decision trail, usage and cost.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from infrastructure.cli.app import app, fail
from infrastructure.cli.common import open_app
from infrastructure.cli.errors import load_settings
from infrastructure.cli.registration import (
    AllowSparseOption,
    BudgetOption,
    InstructionsOption,
    ModelOption,
    ModeOption,
    ProviderOption,
    RubricOption,
    SeedOption,
)

if TYPE_CHECKING:
    from application.batches import BatchApplication
    from infrastructure.lps.embedded import EmbeddedLPS
    from infrastructure.settings import Settings

DEFAULT_STORE = Path(".cjledger/run.db")


def embedded_lps(
    cj: BatchApplication,
    batch_id_text: str,
    settings: Settings,
    provider: str,
    model: str,
    seed: int,
) -> EmbeddedLPS:
    """The in-process LPS for this batch's provider, built by the provider factory from
    settings; the simulated judge (offline) prefers essays with more distinct words."""
    from infrastructure.lps.embedded import EmbeddedLPS
    from infrastructure.lps.providers import UnknownProvider
    from infrastructure.lps.simulated_judge import SimulatedJudge, thetas_from_texts

    chosen = settings.model_copy(update={"lps_provider": provider, "lps_model": model})
    judge = None
    if provider.strip().lower() == "simulated":
        content = cj.require_content()
        refs = list((content.external_ids(batch_id_text) or {}).keys())
        judge = SimulatedJudge(thetas_from_texts(content.essay_texts(batch_id_text, refs)), seed)
    try:
        return EmbeddedLPS(judge, settings=chosen, seed=seed)
    except UnknownProvider as unknown:
        fail(str(unknown))


@app.command("run")
def run(
    essays_file: Annotated[
        Path,
        typer.Argument(
            metavar="ESSAYS.jsonl",
            help="JSON lines: essay_id, text, is_anchor?, known_grade?",
            dir_okay=False,
        ),
    ],
    instructions: InstructionsOption = None,
    rubric: RubricOption = None,
    provider: ProviderOption = None,
    model: ModelOption = None,
    mode: ModeOption = None,
    budget: BudgetOption = None,
    allow_sparse: AllowSparseOption = False,
    seed: SeedOption = 0,
    store: Annotated[
        Path, typer.Option("--store", dir_okay=False, help="SQLite store file")
    ] = DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """Rank the essays in ESSAYS.jsonl: one batch, end to end, in this process."""
    from application.batches import BatchConflict
    from domain.batch import CommandRejected, SparseBudget
    from infrastructure.cli.batch_output import render_batch, run_embedded
    from infrastructure.cli.essay_file import read_essays, read_text_file
    from infrastructure.cli.registration import registration
    from infrastructure.logging import configure_logging

    configure_logging(json_logs=False, level="WARNING")
    settings = load_settings()
    command = registration(
        settings,
        external_ref=f"run:{secrets.token_hex(8)}",
        essays=read_essays(essays_file),
        instructions=read_text_file(instructions, "instructions"),
        rubric=read_text_file(rubric, "rubric"),
        provider=provider,
        model=model,
        mode=mode,
        budget=budget,
        seed=seed,
        allow_sparse=allow_sparse,
    )
    with open_app(store, must_exist=False) as cj:
        try:
            batch_id = cj.submit(command)
        except SparseBudget as sparse:
            fail(f"{sparse}: pass --budget {sparse.smallest}, or --allow-sparse to run it anyway")
        except (BatchConflict, CommandRejected) as rejected:
            fail(str(rejected))
        lps = embedded_lps(cj, str(batch_id), settings, command.provider, command.model, seed)
        report, document = run_embedded(cj, batch_id, lps)
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        render_batch(report, document, store)
