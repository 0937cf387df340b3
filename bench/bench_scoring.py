"""Bradley-Terry fits against choix: ``ilsr_pairwise`` and ``opt_pairwise``, 24–3,000 essays.

Each case simulates a batch with known abilities (seeded) and 20 successful comparisons per
essay, as a CJ batch ends up with. Timed, three repeats each, BLAS on one thread:

* ``fit_bradley_terry(..., with_standard_errors=False)``: what a wave closing pays (the
  continuation reads scores only), from a cold start (no warm start: fair to choix);
* the same with standard errors: what finalization pays;
* ``choix.ilsr_pairwise(n, data, alpha=ridge)`` and ``choix.opt_pairwise(n, data,
  alpha=ridge)`` at their default tolerances, on ready-made integer data.

Our timing includes validating string ids and folding results; choix's does not. Accuracy:
the largest |gradient| of the penalised objective at our scores (0 at the exact optimum),
and up to 200 essays the largest score difference from ``opt_pairwise`` at ``tol=1e-10``.

Target (issue 11): fit ÷ ilsr_pairwise ≤ 0.5 at 1,000 essays / 20,000 comparisons.
"""

from __future__ import annotations

import math
import os
import statistics

import choix
import numpy as np

from bench.harness import Target, emit, progress, repeat
from domain.bradley_terry import PairwiseCounts
from domain.scoring import DEFAULT_RIDGE, fit_bradley_terry

CASES = [
    (int(n), 20 * int(n))
    for n in os.environ.get("CJLEDGER_BENCH_SCORING_ESSAYS", "24 200 1000 3000").split()
]
TARGET_CASE = (1000, 20000)
TARGET_RATIO = 0.5
ACCURACY_REFERENCE_UP_TO = 200


def simulate(seed: int, n_essays: int, n_comparisons: int) -> list[tuple[int, int]]:
    """Random pairs judged by a true Bradley-Terry model, as (winner_idx, loser_idx)."""
    rng = np.random.default_rng(seed)
    ability = rng.normal(0.0, 1.5, n_essays)
    data = []
    for _ in range(n_comparisons):
        i, j = (int(k) for k in rng.choice(n_essays, size=2, replace=False))
        first_wins = rng.random() < 1.0 / (1.0 + math.exp(-(ability[i] - ability[j])))
        data.append((i, j) if first_wins else (j, i))
    return data


def optimality_residual(n: int, data: list[tuple[int, int]], scores: np.ndarray) -> float:
    """Largest |∂/∂θ_i| of ``ridge·Σθ² + NLL`` at ``scores`` (the optimum has 0)."""
    winners = np.array([w for w, _ in data], dtype=np.intp)
    losers = np.array([loser for _, loser in data], dtype=np.intp)
    gradient, _ = PairwiseCounts(n, winners, losers).gradient_and_information(scores)
    return float(np.max(np.abs(gradient + 2.0 * DEFAULT_RIDGE * scores)))


def main() -> None:
    cases = []
    targets = []
    for seed, (n, m) in enumerate(CASES):
        progress(f"scoring: {n} essays, {m} comparisons")
        data = simulate(seed, n, m)
        ids = [f"essay-{i:05d}" for i in range(n)]
        results = [(ids[w], ids[loser]) for w, loser in data]

        fit = repeat(lambda: fit_bradley_terry(ids, results, with_standard_errors=False))  # noqa: B023
        with_se = repeat(lambda: fit_bradley_terry(ids, results))  # noqa: B023
        ilsr = repeat(lambda: choix.ilsr_pairwise(n, data, alpha=DEFAULT_RIDGE))  # noqa: B023
        opt = repeat(lambda: choix.opt_pairwise(n, data, alpha=DEFAULT_RIDGE))  # noqa: B023

        by_id = fit_bradley_terry(ids, results, with_standard_errors=False).score_map()
        ours = np.array([by_id[essay] for essay in ids])
        case: dict[str, object] = {
            "essays": n,
            "comparisons": m,
            "fit_s_median": statistics.median(fit),
            "fit_with_se_s_median": statistics.median(with_se),
            "ilsr_pairwise_s_median": statistics.median(ilsr),
            "opt_pairwise_s_median": statistics.median(opt),
            "fit_over_ilsr": statistics.median(fit) / statistics.median(ilsr),
            "fit_over_opt": statistics.median(fit) / statistics.median(opt),
            "max_abs_gradient_at_our_scores": optimality_residual(n, data, ours),
        }
        if n <= ACCURACY_REFERENCE_UP_TO:
            reference = choix.opt_pairwise(n, data, alpha=DEFAULT_RIDGE, tol=1e-10)
            case["max_abs_diff_vs_opt_pairwise_tol_1e-10"] = float(
                np.max(np.abs(ours - (reference - reference.mean())))
            )
        cases.append(case)

        ilsr_median = statistics.median(ilsr)
        label = f"{n} essays/{m // 1000}k" if m >= 1000 else f"{n} essays/{m}"
        is_target = (n, m) == TARGET_CASE
        targets.append(
            Target.at_most(
                f"fit ÷ ilsr_pairwise @{label}",
                TARGET_RATIO if is_target else None,
                [sample / ilsr_median for sample in fit],
                unit="×",
            )
        )
        targets.append(
            Target.at_most(
                f"fit+SE ÷ ilsr_pairwise @{label}",
                None,
                [sample / ilsr_median for sample in with_se],
                unit="×",
            )
        )
        targets.append(Target.at_most(f"fit @{label}", None, fit))
        targets.append(Target.at_most(f"ilsr_pairwise @{label}", None, ilsr))
        targets.append(Target.at_most(f"opt_pairwise @{label}", None, opt))
    emit("scoring", targets, {"ridge": DEFAULT_RIDGE, "cases": cases})


if __name__ == "__main__":
    main()
