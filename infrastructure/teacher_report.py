"""The teacher report: one self-contained HTML page per batch.

No external assets, no scripts, no front-end build: the ranking chart is SVG drawn here
(one bar per essay from 0 to its score, left of the zero line when the score is
negative, with its ±1 SE whisker), followed by a table
of essays, the quality figures, usage and cost, and the decision timeline in plain
words. Everything shown comes from the read models; the quality figures stored at
finalization (SSR, split-half, position bias, SEs, never compared, flags, and each
essay's infit, outfit and misfit flag) are shown when the batch has them, otherwise the
report computes each essay's outfit (mean squared standardised residual of its judgements) from the
comparisons and flags essays above ``MISFIT_OUTFIT``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

from domain.quality import FLAGS

MISFIT_OUTFIT = 2.0

_REASONS = {
    "stable": "the scores had stopped moving",
    "budget_exhausted": "the comparison budget was used up",
    "callbacks_reached_cap": "every comparison the budget allows had been answered",
    "small_net_passes_exhausted": "the small set of essays had been compared enough times",
    "nothing_left_to_ask": "no further useful pair could be asked",
    "provider_batch_single_wave": "provider batch mode asks for one wave only",
    "low_success_rate": "too many comparisons failed",
    "zero_successes": "no comparison succeeded",
    "success_rate_unreachable": "too many comparisons had failed to reach the success rate",
}


@dataclass(frozen=True)
class ReportData:
    summary: dict[str, Any]
    rankings: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    usage: dict[str, Any]
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    quality: dict[str, Any] | None = None
    """Figures recorded at finalization (``batch_views.stored_quality``), if any."""


def outfit(rankings: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> dict[str, float]:
    """Per essay, the mean of (observed − expected)² / variance over its judgements."""
    score = {r["essay_id"]: r["score"] for r in rankings}
    sums: dict[str, list[float]] = {}
    for c in comparisons:
        a, b, winner = c["essay_a"], c["essay_b"], c.get("winner")
        if c["outcome"] != "success" or a not in score or b not in score or not winner:
            continue
        p_a = 1.0 / (1.0 + math.exp(score[b] - score[a]))
        variance = max(p_a * (1.0 - p_a), 1e-9)
        observed = 1.0 if winner == a else 0.0
        residual = (observed - p_a) ** 2 / variance
        for essay in (a, b):
            sums.setdefault(essay, []).append(residual)
    return {essay: sum(values) / len(values) for essay, values in sums.items()}


def decision_sentence(decision: dict[str, Any], asked: int | None = None) -> str:
    """One decision in plain words; ``asked``: pairs the next wave requested."""
    answered = decision["outcomes"]
    failed = decision["failures"]
    kind = decision["decision"]
    change = decision.get("max_score_change")
    head = f"After {answered} comparisons"
    if failed:
        head += f" ({failed} failed)"
    moving = (
        f"the scores were still moving (largest change {change:.3f})"
        if change is not None
        else "there was no earlier estimate to compare with"
    )
    reason = _REASONS.get(decision["reason"], decision["reason"].replace("_", " "))
    if kind == "REQUEST_MORE_COMPARISONS":
        more = f"{asked} more were asked" if asked else "more were asked"
        text = f"{head} {moving}, so {more}."
    elif kind == "RESAMPLE":
        text = f"{head} {moving}, so pairs already compared were asked again the other way round."
    elif kind == "FINALIZE_SCORING":
        text = f"{head} the batch was scored: {reason}."
    elif kind == "FINALIZE_FAILURE":
        text = f"{head} the batch failed: {reason}."
    else:
        text = f"{head}: {kind.lower()} ({reason})."
    if decision.get("guard"):
        raw = decision["raw_decision"].replace("_", " ").lower()
        text += f" (The rules said “{raw}”; the {decision['guard']} guard changed that.)"
    return text


def timeline_sentences(decisions: list[dict[str, Any]]) -> list[str]:
    """The decision trail in plain words, one sentence per decision."""
    submitted = [d["context"].get("pairs_submitted", 0) for d in decisions]
    return [decision_sentence(d, _next_wave(submitted, i)) for i, d in enumerate(decisions)]


def _next_wave(submitted: list[int], index: int) -> int | None:
    """Pairs requested between decision ``index`` and the next one."""
    if index + 1 >= len(submitted):
        return None
    return submitted[index + 1] - submitted[index]


def ranking_chart(rankings: list[dict[str, Any]]) -> str:
    """Horizontal bars, best first, each drawn from 0 to the essay's score (a negative
    score extends left of the zero line); whiskers show ±1 SE. The axis spans every
    whisker and 0, so a bar's length is the score itself, never score minus the lowest."""
    if not rankings:
        return "<p>No scores yet: the batch is not finalized.</p>"
    row, left, width = 22, 150, 520
    lows = [r["score"] - r["se"] for r in rankings]
    highs = [r["score"] + r["se"] for r in rankings]
    lo, hi = min(*lows, 0.0), max(*highs, 0.0)
    span = (hi - lo) or 1.0

    def x(value: float) -> float:
        return left + (value - lo) / span * width

    height = row * len(rankings) + 30
    zero = x(0.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{left + width + 20}" '
        f'height="{height}" aria-label="Scores with standard errors">',
    ]
    for i, r in enumerate(rankings):
        y = i * row + 4
        end = x(r["score"])
        start = min(zero, end)
        sign = "negative" if r["score"] < 0 else "positive"
        parts.append(
            f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">'
            f"{r['rank']}. {escape(_shown(r))}</text>"
        )
        parts.append(
            f'<rect class="bar" data-essay="{escape(str(r["essay_id"]))}" data-sign="{sign}" '
            f'x="{start:.1f}" y="{y}" width="{max(abs(end - zero), 1.0):.1f}" '
            f'height="{row - 8}"><title>{escape(_shown(r))}: {r["score"]:+.3f} '
            f"± {r['se']:.3f}</title></rect>"
        )
        cy = y + (row - 8) / 2
        parts.append(
            f'<line class="se" x1="{x(r["score"] - r["se"]):.1f}" y1="{cy:.1f}" '
            f'x2="{x(r["score"] + r["se"]):.1f}" y2="{cy:.1f}"/>'
        )
    parts.append(  # drawn after the bars so the zero line stays visible across them
        f'<line x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{height - 20}" class="axis"/>'
        f'<text x="{left}" y="{height - 5}">{lo:+.2f}</text>'
        f'<text x="{left + width}" y="{height - 5}" text-anchor="end">{hi:+.2f}</text>'
        f'<text x="{zero:.1f}" y="{height - 5}" text-anchor="middle">0</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _shown(row: dict[str, Any]) -> str:
    """The school's id of the essay when the read models resolved it, else its ref."""
    return str(row.get("external_id") or row["essay_id"])


def _is_misfit(row: dict[str, Any], fits: dict[str, float]) -> bool:
    if row.get("misfit") is not None:
        return bool(row["misfit"])
    return fits.get(row["essay_id"], 0.0) > MISFIT_OUTFIT


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "–"
    return escape(format(value, spec) if spec else str(value))


def _stored_quality_rows(quality: dict[str, Any], misfits: int) -> str:
    """The figures recorded at finalization, one table row each."""
    bias = quality.get("position_bias") or {}
    rate = bias.get("first_shown_win_rate")
    interval = (
        f" (95 % interval {bias['ci_low']:.3f}–{bias['ci_high']:.3f})"
        if bias.get("ci_low") is not None and bias.get("ci_high") is not None
        else ""
    )
    flags = quality.get("flags") or []
    shown_flags = (
        "<br>".join(f"{escape(f)}: {escape(FLAGS.get(f, f.replace('_', ' ')))}" for f in flags)
        or "none"
    )
    figures = [
        ("reliability (SSR)", _fmt(quality.get("ssr"), ".3f")),
        ("split-half reliability", _fmt(quality.get("split_half"), ".3f")),
        ("position bias (share won by the essay shown first)", _fmt(rate, ".3f") + interval),
        ("mean SE", _fmt(quality.get("mean_se"), ".3f")),
        ("max SE", _fmt(quality.get("max_se"), ".3f")),
        ("essays never compared", _fmt(quality.get("never_compared"))),
        ("essays flagged as misfits", str(misfits)),
        ("flags", shown_flags),
    ]
    return "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in figures)


def render_report(data: ReportData) -> str:
    s = data.summary
    stored = {r["essay_id"]: r.get("outfit") for r in data.rankings}
    if any(value is not None for value in stored.values()):  # figures from Finalized
        fits = {essay: value for essay, value in stored.items() if value is not None}
    else:
        fits = outfit(data.rankings, data.comparisons)
    rows = "".join(
        "<tr>"
        f"<td>{r['rank']}</td><td>{escape(_shown(r))}</td>"
        f"<td>{r['score']:+.3f}</td><td>{r['se']:.3f}</td><td>{r['comparisons']}</td>"
        f"<td>{_fmt(r.get('infit'), '.2f')}</td>"
        f"<td>{_fmt(fits.get(r['essay_id']), '.2f')}</td>"
        f"<td>{'misfit' if _is_misfit(r, fits) else ''}</td>"
        "</tr>"
        for r in data.rankings
    )
    timeline = "".join(f"<li>{escape(line)}</li>" for line in timeline_sentences(data.decisions))
    misfits = sum(1 for r in data.rankings if _is_misfit(r, fits))
    quality_rows = (
        _stored_quality_rows(data.quality, misfits)
        if data.quality
        else (
            "<tr><th>reliability (SSR)</th>"
            f"<td>{_fmt(s.get('reliability'), '.3f')}</td></tr>"
            f"<tr><th>essays flagged as misfits (outfit &gt; {MISFIT_OUTFIT}, computed "
            f"here: no figures were recorded at finalization)</th><td>{misfits}</td></tr>"
        )
    )
    u = data.usage
    status = escape(str(s["status"])) + (
        f" ({escape(str(s['failure_reason']))})" if s.get("failure_reason") else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Batch {escape(str(s["external_ref"]))} — cjledger report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left}}
svg text{{font-size:12px}} .bar{{fill:#4a7bb7}} .se{{stroke:#222;stroke-width:2}}
.bar[data-sign=negative]{{fill:#c0703a}} .axis{{stroke:#555}}
</style></head><body>
<h1>Ranking report</h1>
<table>
<tr><th>batch</th><td>{escape(str(s["batch_id"]))}</td></tr>
<tr><th>reference</th><td>{escape(str(s["external_ref"]))}</td></tr>
<tr><th>status</th><td>{status}</td></tr>
<tr><th>essays</th><td>{s["essays"]} ({s["anchors"]} anchors)</td></tr>
<tr><th>judge</th><td>{_fmt(s.get("provider"))} / {_fmt(s.get("model"))}</td></tr>
<tr><th>batching mode</th><td>{_fmt(s.get("mode"))}</td></tr>
<tr><th>finalized</th><td>{_fmt(s.get("finalized_at"))}</td></tr>
</table>
<h2>Scores</h2>
{ranking_chart(data.rankings)}
<table><thead><tr><th>rank</th><th>essay</th><th>score</th><th>SE</th><th>comparisons</th>
<th>infit</th><th>outfit</th><th>flag</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Quality</h2><table>{quality_rows}</table>
<h2>Usage and cost</h2><table>
<tr><th>comparisons asked</th><td>{u["comparisons"]}</td></tr>
<tr><th>answered / failed</th><td>{u["succeeded"]} / {u["failed"]}</td></tr>
<tr><th>cost (USD)</th><td>{_fmt(u.get("cost_usd"), ".4f")}</td></tr>
<tr><th>mean latency (ms)</th><td>{_fmt(u.get("mean_latency_ms"))}</td></tr>
</table>
<h2>How the batch decided</h2><ol>{timeline}</ol>
</body></html>
"""
