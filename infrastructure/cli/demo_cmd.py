"""``cjledger demo``: one synthetic batch, run to its end on the embedded store.

Synthetic essays get latent qualities θ drawn from the seed; the simulated judge compares
them through the real LPS executor; the batch runs through the real dispatcher and
application. The output shows the rankings next to the truth and the decision trail.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from domain.values import BatchingMode
from infrastructure.cli.app import app, fail
from infrastructure.cli.common import make_console, open_app

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
        int | None, typer.Option(min=1, help="comparison budget (max_pairs_cap)")
    ] = None,
    failure_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="probability that a judge call fails")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="seed for θ, pairing and the judge")] = 7,
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
    from application.dispatcher import OutboxDispatcher
    from application.reports import build_report
    from domain.batch import SparseBudget
    from domain.policy import BatchPolicy
    from domain.values import Essay
    from infrastructure.embedded import (
        InProcessTransport,
        run_until_idle,
        through_contract,
        with_outage,
    )
    from infrastructure.logging import configure_logging
    from infrastructure.lps.embedded import EmbeddedLPS
    from infrastructure.lps.simulated_judge import SimulatedJudge, draw_thetas
    from infrastructure.persistence.positions import position_store_for
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
        essays=tuple(Essay(eid, f"sha256:demo-{seed}-{eid}") for eid in essay_ids),
        provider="simulated",
        model="simulated-judge-1",
        requested_mode=mode,
        seed=seed,
        policy=policy,
        allow_sparse=allow_sparse,
    )
    # the demo's essays are synthetic with known qualities: its judge is the simulated one
    lps = EmbeddedLPS(
        SimulatedJudge(thetas, seed=seed, failure_rate=failure_rate),
        settings=Settings(lps_provider="simulated"),
    )
    with open_app(store, must_exist=False) as cj:
        try:
            batch_id = cj.submit(command)
        except SparseBudget as sparse:
            fail(f"{sparse}: pass --budget {sparse.smallest}, or --allow-sparse to run it anyway")
        except BatchConflict as conflict:
            fail(str(conflict))
        transport = InProcessTransport()
        dispatcher = OutboxDispatcher(cj, transport, position_store_for(cj))
        execute = with_outage(through_contract(lps.execute), outage_waves)
        run_until_idle(cj, dispatcher, transport, execute)
        report = build_report(cj.batch_events(batch_id))
        document = demo_document(report, thetas, lps.stats())
        document["wave_closings"] = [
            {"wave": c.wave, "decision": c.decision, "seconds": round(c.seconds, 4)}
            for c in cj.wave_closings
            if c.batch_id == batch_id
        ]
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        render(report, document, thetas, store)


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
    if len(report.rankings) < 2 or len({r.score for r in report.rankings}) < 2:
        return None  # undefined when every essay has the same score
    from scipy.stats import spearmanr  # imported here: it costs every other command 1.5 s

    rho = spearmanr(
        [thetas[r.essay_id] for r in report.rankings], [r.score for r in report.rankings]
    ).statistic
    return float(rho)


def demo_document(
    report: BatchReport, thetas: dict[str, float], lps_stats: dict[str, Any]
) -> dict[str, Any]:
    return {
        "batch_id": report.batch_id,
        "status": report.status,
        "mode": report.mode,
        "mode_source": report.mode_source,
        "failure_reason": report.failure_reason,
        "decisions": [
            {
                "wave": d.wave,
                "decision": d.decision,
                "raw_decision": d.raw_decision,
                "guard": d.guard,
                "reason": d.reason,
                "outcomes": d.outcomes,
                "successes": d.successes,
                "failures": d.failures,
                "pairs_submitted": d.pairs_submitted,
                "max_score_change": d.max_score_change,
            }
            for d in report.decisions
        ],
        "waves": [asdict(w) for w in report.waves],
        "rankings": [
            {"essay_id": r.essay_id, "score": r.score, "se": r.se, "rank": r.rank}
            for r in report.rankings
        ],
        "reliability": report.reliability,
        "sparse": report.sparse,
        "quality": None if report.quality is None else asdict(report.quality),
        "spearman": spearman(report, thetas),
        "event_count": report.event_count,
        "lps": lps_stats,
    }


def render(
    report: BatchReport, document: dict[str, Any], thetas: dict[str, float], store: Path
) -> None:
    from rich.table import Table

    console = make_console()
    true_rank = {
        eid: rank for rank, eid in enumerate(sorted(thetas, key=lambda e: -thetas[e]), start=1)
    }
    rankings = Table(title=f"Rankings — batch {report.batch_id}")
    for column in ("rank", "essay", "score", "SE", "true rank"):
        rankings.add_column(column, justify="right" if column != "essay" else "left")
    for r in report.rankings:
        rankings.add_row(
            str(r.rank), r.essay_id, f"{r.score:+.3f}", f"{r.se:.3f}", str(true_rank[r.essay_id])
        )
    console.print(rankings)

    trail = Table(title=f"Decision trail — mode {report.mode} ({report.mode_source})")
    for column in (
        "wave",
        "decision",
        "reason",
        "outcomes",
        "success rate",
        "max score change",
        "closing s",
        "guard",
    ):
        trail.add_column(column)
    closing_seconds = {c["wave"]: c["seconds"] for c in document["wave_closings"]}
    for d in report.decisions:
        rate = "-" if d.success_rate is None else f"{d.success_rate:.2f}"
        change = "-" if d.max_score_change is None else f"{d.max_score_change:.4f}"
        guard = f"{d.guard} (raw {d.raw_decision})" if d.guard else ""
        closing = closing_seconds.get(d.wave)
        trail.add_row(
            str(d.wave),
            d.decision,
            d.reason,
            str(d.outcomes),
            rate,
            change,
            "-" if closing is None else f"{closing:.3f}",
            guard,
        )
    console.print(trail)
    closings = document["wave_closings"]
    if closings:
        seconds = [c["seconds"] for c in closings]
        console.print(
            f"Wave closings (fit + decide + plan, this run): {len(closings)}, "
            f"min {min(seconds):.3f} s, median {sorted(seconds)[len(seconds) // 2]:.3f} s, "
            f"max {max(seconds):.3f} s, total {sum(seconds):.2f} s"
        )

    rho = document["spearman"]
    reliability = document["reliability"]
    lps = document["lps"]
    console.print(
        f"Spearman ρ vs latent θ: {'-' if rho is None else f'{rho:.3f}'}   "
        f"reliability: {'-' if reliability is None else f'{reliability:.3f}'}   "
        f"events: {report.event_count}"
    )
    console.print(
        f"LPS ({lps['queue_processing_mode']}): {lps['per_call_provider_calls']} per-call "
        f"provider calls, {lps['bundles']} bundles (max {lps['max_bundle_size']}), "
        f"{lps['jobs']} batch jobs; outcomes {lps['outcomes']}"
    )
    quality = report.quality
    if quality is not None:
        bias = quality.position_bias
        split = "-" if quality.split_half is None else f"{quality.split_half:.3f}"
        first = (
            "-"
            if bias.first_shown_win_rate is None
            else f"{bias.first_shown_win_rate:.3f} [{bias.ci_low:.3f}, {bias.ci_high:.3f}]"
        )
        misfits = [e.essay_id for e in quality.essays if e.misfit]
        console.print(
            f"Quality: split-half {split}   first-shown win rate {first}   "
            f"mean SE {quality.mean_se:.3f}   never compared {quality.never_compared}   "
            f"misfits {', '.join(misfits) or 'none'}   flags {', '.join(quality.flags) or 'none'}"
        )
    status = report.status + (f" ({report.failure_reason})" if report.failure_reason else "")
    console.print(f"[bold]Final status: {status}[/bold]")
    console.print(f"Audit it: cjledger batches history {report.batch_id} --store {store}")
