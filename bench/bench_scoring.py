"""Time ``fit_bradley_terry`` against ``choix.opt_pairwise`` on batch-sized problems.

Run with ``uv run python bench/bench_scoring.py``. Prints one JSON object: per case the
median milliseconds per fit for each implementation (choix with its default settings), the
speed-up, and the largest score difference after centring (a benchmark that got faster by
getting wrong would show here). The difference is reported against choix at its default
``tol=1e-5``, which can stop ~1e-6 short of its optimum, and at ``tol=1e-10``.

Our timing includes everything a caller pays for: validating string ids, folding results
into pairs, the fit, standard errors, ranks and reliability. choix gets ready-made integer
data and returns bare scores, so the comparison flatters choix, not us.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable

import choix
import numpy as np

from domain.scoring import DEFAULT_RIDGE, fit_bradley_terry

# (essays, successful comparisons): 12-25 comparisons per essay, as CJ batches run.
CASES = [(24, 300), (40, 1000), (100, 2500)]
OUR_REPEATS = 51
CHOIX_REPEATS = 7


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


def median_ms(fit: Callable[[], object], repeats: int) -> float:
    fit()  # warm-up: imports, caches, first-call allocation
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit()
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)


def bench_case(seed: int, n_essays: int, n_comparisons: int) -> dict[str, float | int]:
    data = simulate(seed, n_essays, n_comparisons)
    ids = [f"essay-{i:03d}" for i in range(n_essays)]
    results = [(ids[w], ids[loser]) for w, loser in data]

    ours = fit_bradley_terry(ids, results).score_map()

    def max_abs_diff(tol: float) -> float:
        reference = choix.opt_pairwise(n_essays, data, alpha=DEFAULT_RIDGE, tol=tol)
        reference = reference - reference.mean()
        worst = max(abs(ours[ids[i]] - reference[i]) for i in range(n_essays))
        return float(f"{worst:.2e}")

    ours_ms = median_ms(lambda: fit_bradley_terry(ids, results), OUR_REPEATS)
    choix_ms = median_ms(
        lambda: choix.opt_pairwise(n_essays, data, alpha=DEFAULT_RIDGE), CHOIX_REPEATS
    )
    return {
        "essays": n_essays,
        "comparisons": n_comparisons,
        "ours_ms": round(ours_ms, 3),
        "choix_ms": round(choix_ms, 3),
        "speedup": round(choix_ms / ours_ms, 1),
        "max_abs_diff_vs_choix_default_tol": max_abs_diff(1e-5),
        "max_abs_diff_vs_choix_tol_1e-10": max_abs_diff(1e-10),
    }


def main() -> None:
    cases = [bench_case(seed, n, m) for seed, (n, m) in enumerate(CASES)]
    print(
        json.dumps(
            {
                "ridge": DEFAULT_RIDGE,
                "repeats": {"ours": OUR_REPEATS, "choix": CHOIX_REPEATS},
                "cases": cases,
            }
        )
    )


if __name__ == "__main__":
    main()
