"""What the API and the CLI read commands both show: usage totals, CSV, report data."""

from __future__ import annotations

import csv
import io
from typing import Any
from uuid import UUID

from domain.batch import CJBatch
from infrastructure.bootstrap import System
from infrastructure.teacher_report import ReportData


def batch_id_for(reference: str) -> UUID:
    """A batch id from its id or its external reference."""
    try:
        return UUID(reference)
    except ValueError:
        return CJBatch.create_id(reference)


def usage(comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over a batch's comparisons: what the judging cost."""
    done = [c for c in comparisons if c["outcome"] != "pending"]
    latencies = [c["latency_ms"] for c in done if c.get("latency_ms") is not None]
    costs = [c["cost_usd"] for c in done if c.get("cost_usd") is not None]
    return {
        "comparisons": len(comparisons),
        "succeeded": sum(1 for c in done if c["outcome"] == "success"),
        "failed": sum(1 for c in done if c["outcome"] == "failure"),
        "cost_usd": round(sum(costs), 6) if costs else None,
        "mean_latency_ms": round(sum(latencies) / len(latencies), 1) if latencies else None,
    }


def stored_quality(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The quality figures recorded at finalization (policy version 2 on), from the
    summary's columns; ``None`` for a batch finalized without them (or not yet)."""
    if summary.get("quality_flags") is None:
        return None
    flags = summary["quality_flags"]
    return {
        "ssr": summary.get("reliability"),
        "split_half": summary.get("split_half"),
        "position_bias": {
            "first_shown_win_rate": summary.get("first_shown_win_rate"),
            "ci_low": summary.get("position_bias_ci_low"),
            "ci_high": summary.get("position_bias_ci_high"),
        },
        "mean_se": summary.get("mean_se"),
        "max_se": summary.get("max_se"),
        "never_compared": summary.get("never_compared"),
        "flags": [f for f in flags.split(",") if f],
    }


def rankings_as_csv(rows: list[dict[str, Any]]) -> str:
    """Rank, the school's essay id (the ref when unknown or erased), score, SE,
    comparisons, and the essay's ref."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = ["rank", "essay_id", "score", "se", "comparisons"]
    writer.writerow([*columns, "essay_ref"])
    for row in rows:
        shown = {**row, "essay_id": row.get("external_id") or row["essay_id"]}
        writer.writerow([*(shown[c] for c in columns), row["essay_id"]])
    return out.getvalue()


def report_data(system: System, batch_id: str, summary: dict[str, Any]) -> ReportData:
    models = system.read_models
    comparisons = models.comparisons(batch_id)
    return ReportData(
        summary=summary,
        rankings=models.rankings(batch_id),
        decisions=models.decisions(batch_id),
        usage=usage(comparisons),
        comparisons=comparisons,
        quality=stored_quality(summary),
    )
