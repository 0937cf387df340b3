"""How ``demo`` and ``run`` show a finished batch: one JSON shape, one set of tables.

Both commands run a batch end to end on the embedded store and end the same way: the
rankings (by the school's essay ids, resolved through the content store), the decision
trail, usage and cost, and how LPS executed the requests. ``demo`` adds what only a
synthetic batch knows (the true ranks and Spearman's ρ) through ``truth`` and ``extra``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.table import Table

from application.batches import BatchApplication
from application.dispatcher import OutboxDispatcher
from application.reports import BatchReport, build_report
from infrastructure.cli.common import make_console
from infrastructure.embedded import Executor, InProcessTransport, run_until_idle, through_contract
from infrastructure.lps.embedded import EmbeddedLPS
from infrastructure.persistence.positions import position_store_for


def run_embedded(
    cj: BatchApplication,
    batch_id: UUID,
    lps: EmbeddedLPS,
    wrap: Callable[[Executor], Executor] | None = None,
) -> tuple[BatchReport, dict[str, Any]]:
    """Pump the batch through the in-process LPS until it settles; report on it.
    ``wrap`` may stand between CJ and LPS (the demo's simulated outages)."""
    transport = InProcessTransport()
    dispatcher = OutboxDispatcher(cj, transport, position_store_for(cj))
    execute = through_contract(lps.execute)
    run_until_idle(cj, dispatcher, transport, wrap(execute) if wrap else execute)
    report = build_report(cj.batch_events(batch_id), cj.external_ids(batch_id))
    document = batch_document(report, lps.stats())
    document["wave_closings"] = [
        {"wave": c.wave, "decision": c.decision, "seconds": round(c.seconds, 4)}
        for c in cj.wave_closings
        if c.batch_id == batch_id
    ]
    return report, document


def batch_document(report: BatchReport, lps_stats: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document of a finished batch (``--json``)."""
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
        "event_count": report.event_count,
        "usage": {
            "prompt_tokens": report.usage.prompt_tokens,
            "completion_tokens": report.usage.completion_tokens,
            "cost_usd": round(report.usage.cost_usd, 8),
            "judged_comparisons": report.usage.judged_comparisons,
        },
        "lps": dict(lps_stats),
    }


def render_batch(
    report: BatchReport,
    document: Mapping[str, Any],
    store: Path,
    *,
    truth: Mapping[str, int] | None = None,
    extra: str = "",
) -> None:
    """Rankings table, decision trail and a summary; ``truth`` adds a "true rank" column."""
    console = make_console()
    rankings = Table(title=f"Rankings — batch {report.batch_id}")
    columns = ["rank", "essay", "score", "SE", "comparisons"]
    if truth is not None:
        columns.append("true rank")
    for column in columns:
        rankings.add_column(column, justify="left" if column == "essay" else "right")
    for r in report.rankings:
        row = [str(r.rank), r.essay_id, f"{r.score:+.3f}", f"{r.se:.3f}", str(r.comparisons)]
        if truth is not None:
            row.append(str(truth.get(r.essay_id, "-")))
        rankings.add_row(*row)
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
    closing_seconds = {c["wave"]: c["seconds"] for c in document.get("wave_closings", ())}
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
    closings = document.get("wave_closings") or []
    if closings:
        seconds = [c["seconds"] for c in closings]
        console.print(
            f"Wave closings (fit + decide + plan, this run): {len(closings)}, "
            f"min {min(seconds):.3f} s, median {sorted(seconds)[len(seconds) // 2]:.3f} s, "
            f"max {max(seconds):.3f} s, total {sum(seconds):.2f} s"
        )

    reliability = document["reliability"]
    usage = document["usage"]
    lps = document["lps"]
    console.print(
        f"{extra}reliability: {'-' if reliability is None else f'{reliability:.3f}'}   "
        f"events: {report.event_count}"
    )
    console.print(
        f"Usage: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion "
        f"tokens over {usage['judged_comparisons']} judged comparisons, "
        f"estimated cost ${usage['cost_usd']:.4f}"
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
    console.print(f"Audit it: cjledger batches decisions {report.batch_id} --store {store}")
    console.print(f"   events: cjledger batches history {report.batch_id} --store {store} --json")
    console.print(f"   verify: cjledger batches verify {report.batch_id} --store {store}")
    console.print(f"   serve it: cjledger api --store {store}")
