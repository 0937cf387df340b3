"""``cjledger demo``: one synthetic batch, run to its end on the embedded store.

Synthetic essays get latent qualities θ drawn from the seed; they go through the content
store like a school's essays, the simulated judge compares them through the real LPS
executor, and the batch runs through the real dispatcher and application. The output is
``run``'s (``infrastructure.cli.batch_output``) plus what only a synthetic batch knows:
the true ranks and Spearman's ρ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from domain.values import BatchingMode
from infrastructure.cli.app import app, fail
from infrastructure.cli.common import open_system
from infrastructure.limits import MAX_COUNT, MAX_SEED, MIN_SEED

if TYPE_CHECKING:
    from application.reports import BatchReport

DEFAULT_STORE = Path(".cjledger/demo.db")


@app.command("demo")
def demo(
    essays: Annotated[int, typer.Option(min=1, max=10_000, help="number of synthetic essays")] = 24,
    mode: Annotated[
        BatchingMode | None, typer.Option(help="batching mode requested by the batch")
    ] = None,
    budget: Annotated[
        int | None, typer.Option(min=1, max=MAX_COUNT, help="comparison budget (max_pairs_cap)")
    ] = None,
    failure_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="probability that a judge call fails")
    ] = 0.0,
    seed: Annotated[
        int, typer.Option(min=MIN_SEED, max=MAX_SEED, help="seed for θ, pairing and the judge")
    ] = 7,
    spread: Annotated[
        float,
        typer.Option(min=0.0, max=10.0, help="standard deviation of the latent quality θ"),
    ] = 1.5,
    store: Annotated[
        Path, typer.Option("--store", dir_okay=False, help="SQLite event store file")
    ] = DEFAULT_STORE,
    outage: Annotated[
        str | None,
        typer.Option(
            metavar="WAVE[,WAVE...]",
            help="simulate a provider outage: every comparison of these waves fails",
        ),
    ] = None,
    allow_sparse: Annotated[
        bool,
        typer.Option(
            "--allow-sparse",
            help="accept a budget too small for every essay to get min_appearances comparisons",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """Run one batch end to end with the in-process simulated judge."""
    from application.batches import BatchConflict, RegisterBatch
    from application.content import EssaySubmission
    from domain.batch import SparseBudget
    from domain.policy import BatchPolicy
    from infrastructure.cli.batch_output import render_batch, run_embedded
    from infrastructure.embedded import with_outage
    from infrastructure.logging import configure_logging
    from infrastructure.lps.embedded import EmbeddedLPS
    from infrastructure.lps.simulated_judge import SimulatedJudge, draw_thetas
    from infrastructure.settings import Settings

    configure_logging(json_logs=False, level="WARNING")
    outage_waves = parse_waves(outage)
    essay_ids = [f"essay-{i:03d}" for i in range(1, essays + 1)]
    thetas = draw_thetas(essay_ids, seed, spread)
    policy = BatchPolicy() if budget is None else BatchPolicy(max_pairs_cap=budget)
    command = RegisterBatch(
        # Same options, same batch: re-running a demo shows (or resumes) the stored batch.
        external_ref=(
            f"demo:essays={essays}:mode={mode.value if mode else 'default'}:budget={budget}:"
            f"failure_rate={failure_rate}:seed={seed}:spread={spread}"
            + (f":outage={','.join(map(str, sorted(outage_waves)))}" if outage_waves else "")
            + (":sparse" if allow_sparse else "")
        ),
        submissions=tuple(
            EssaySubmission(eid, f"Synthetic essay {eid} (latent quality {thetas[eid]:+.2f}).")
            for eid in essay_ids
        ),
        provider="simulated",
        model="simulated-judge-1",
        requested_mode=mode,
        seed=seed,
        policy=policy,
        allow_sparse=allow_sparse,
        ref_seed=seed,  # the same refs, hence the same pairs, in every fresh store
    )
    with open_system(store, must_exist=False) as system:
        cj = system.app
        try:
            batch_id = cj.submit(command)
        except SparseBudget as sparse:
            fail(f"{sparse}: pass --budget {sparse.smallest}, or --allow-sparse to run it anyway")
        except BatchConflict as conflict:
            fail(str(conflict))
        # the demo's essays are synthetic with known qualities: its judge is the simulated
        # one, and it sees the refs the events carry, so θ is looked up through them
        resolve = cj.external_ids(batch_id)
        judge_thetas = {
            e.essay_id: thetas.get(resolve(e.essay_id), 0.0) for e in cj.get_batch(batch_id).essays
        }
        lps = EmbeddedLPS(
            SimulatedJudge(judge_thetas, seed=seed, failure_rate=failure_rate),
            settings=Settings(lps_provider="simulated"),
        )
        report, document = run_embedded(
            cj, batch_id, lps, wrap=lambda execute: with_outage(execute, outage_waves)
        )
    document["spearman"] = spearman(report, thetas)
    if as_json:
        print(json.dumps(document, indent=2))
        return
    true_rank = {
        eid: rank for rank, eid in enumerate(sorted(thetas, key=lambda e: -thetas[e]), start=1)
    }
    rho = document["spearman"]
    render_batch(
        report,
        document,
        store,
        truth=true_rank,
        extra=f"Spearman ρ vs latent θ: {'-' if rho is None else f'{rho:.3f}'}   ",
    )


def parse_waves(value: str | None) -> frozenset[int]:
    """``--outage 2`` or ``--outage 2,5``: wave numbers from 1."""
    if value is None:
        return frozenset()
    try:
        waves = frozenset(int(part) for part in value.split(","))
    except ValueError:
        fail(f"--outage takes wave numbers separated by commas (e.g. 2,5), got {value!r}")
    if not waves or min(waves) < 1:
        fail(f"--outage wave numbers start at 1, got {value!r}")
    return waves


def spearman(report: BatchReport, thetas: dict[str, float]) -> float | None:
    known = [r for r in report.rankings if r.essay_id in thetas]  # erased ones are not
    if len(known) < 2 or len({r.score for r in known}) < 2:
        return None  # undefined when every essay has the same score
    from scipy.stats import spearmanr  # imported here: it costs every other command 1.5 s

    rho = spearmanr([thetas[r.essay_id] for r in known], [r.score for r in known]).statistic
    return float(rho)
