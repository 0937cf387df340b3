"""The teacher report's chart and quality section, from plain rows (no store needed)."""

from __future__ import annotations

import re

import pytest

from infrastructure.batch_views import stored_quality
from infrastructure.teacher_report import ReportData, ranking_chart, render_report

BAR = re.compile(r'<rect class="bar" data-essay="([^"]+)" data-sign="(\w+)" x="([\d.]+)" '
                 r'y="\d+" width="([\d.]+)"')  # fmt: skip
ZERO = re.compile(r'<line x1="([\d.]+)" y1="0" x2="[\d.]+" y2="\d+" class="axis"/>')


def ranking(essay: str, score: float, rank: int, se: float = 0.2) -> dict[str, object]:
    return {"essay_id": essay, "score": score, "se": se, "rank": rank, "comparisons": 6}


@pytest.mark.parametrize(
    ("scores", "expected_signs"),
    [
        ([1.5, 0.5, -0.5, -1.5], ["positive", "positive", "negative", "negative"]),
        ([2.0, 1.0], ["positive", "positive"]),  # all above zero: bars start at the zero line
        ([-0.3, -2.0], ["negative", "negative"]),  # all below: bars end at the zero line
    ],
)
def test_each_bar_runs_from_zero_to_its_score(
    scores: list[float], expected_signs: list[str]
) -> None:
    rows = [ranking(f"e{i}", s, i + 1) for i, s in enumerate(scores)]
    svg = ranking_chart(rows)
    zero_match = ZERO.search(svg)
    assert zero_match is not None
    zero = float(zero_match.group(1))
    bars = BAR.findall(svg)
    assert [b[0] for b in bars] == [r["essay_id"] for r in rows]  # one bar per essay
    assert [b[1] for b in bars] == expected_signs
    lengths = []
    for _, sign, x, width in bars:
        start, end = float(x), float(x) + float(width)
        touches_zero = start if sign == "positive" else end
        assert touches_zero == pytest.approx(zero, abs=0.11)
        lengths.append(float(width))
    # lengths are proportional to |score|, not to score minus the lowest score
    ratio = lengths[0] / abs(scores[0])
    for length, score in zip(lengths, scores, strict=True):
        assert length == pytest.approx(ratio * abs(score), abs=0.2)
    assert svg.count('class="se"') == len(scores)


def test_the_quality_section_shows_the_figures_stored_at_finalization() -> None:
    summary = {
        "batch_id": "b-1", "external_ref": "ref", "status": "scored", "essays": 2,
        "anchors": 0, "reliability": 0.812, "split_half": 0.754,
        "first_shown_win_rate": 0.56, "position_bias_ci_low": 0.41,
        "position_bias_ci_high": 0.7, "mean_se": 0.433, "max_se": 0.61,
        "never_compared": 0, "quality_flags": "se_inflated",
    }  # fmt: skip
    rows = [
        {**ranking("e1", 0.4, 1), "infit": 0.91, "outfit": 0.87, "misfit": 0},
        {**ranking("e2", -0.4, 2), "infit": 2.71, "outfit": 3.05, "misfit": 1},
    ]
    usage = {"comparisons": 4, "succeeded": 4, "failed": 0, "cost_usd": None}
    html = render_report(ReportData(summary, rows, [], usage, quality=stored_quality(summary)))
    quality = html.split("<h2>Quality</h2>")[1].split("<h2>")[0]
    for shown in ("0.812", "0.754", "0.560", "0.410–0.700", "0.433", "0.610", "se_inflated"):
        assert shown in quality
    assert "<td>1</td>" in quality  # one essay flagged as a misfit, from the stored flag
    table = html.split("<tbody>")[1].split("</tbody>")[0]
    assert "2.71" in table and "3.05" in table and table.count("misfit") == 1


def test_a_batch_without_stored_figures_says_the_misfits_were_computed() -> None:
    summary = {"batch_id": "b", "external_ref": "r", "status": "scored", "essays": 1,
               "anchors": 0, "reliability": None}  # fmt: skip
    assert stored_quality(summary) is None
    usage = {"comparisons": 0, "succeeded": 0, "failed": 0}
    html = render_report(ReportData(summary, [ranking("e1", 0.0, 1)], [], usage))
    assert "computed here" in html
