"""Which Bradley–Terry prior (ridge) recovers known abilities best? (issue 8, §5)

Simulated batches with known abilities θ ~ N(0, SD²): SD 1, 1.5 and 2; 24, 100 and 300
essays; 5 and 10 appearances per essay (random pairings, each essay in exactly that many
comparisons, judged by the Bradley–Terry model itself), ``SEEDS`` batches per cell. Each
batch is scored with ``fit_bradley_terry`` at every ridge in ``RIDGES`` and with
``choix.ilsr_pairwise`` (what the original service uses; its default ``alpha=0``, i.e.
no prior, and ``alpha=0.01``). Figures: RMSE of the centred scores against the centred
truth, and Spearman's rank correlation with the truth, averaged over the seeds.

    uv run python -m bench.bench_prior            # JSON line (``make bench`` entry)
    uv run python -m bench.bench_prior --table    # the Markdown table in docs/continuation.md

Accuracy, not time, is measured here; the chosen default is recorded in
``domain.policy.DEFAULT_RIDGE`` (policy version 2).
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import warnings
from collections.abc import Callable

import choix
import numpy as np
from scipy.stats import spearmanr

from bench.harness import emit, progress
from domain.scoring import fit_bradley_terry

SDS = (1.0, 1.5, 2.0)
SIZES = (24, 100, 300)
APPEARANCES = (5, 10)
SEEDS = 5
RIDGES = (0.001, 0.01, 0.05, 0.1, 0.2, 0.5)
ILSR_ALPHAS = (0.0, 0.01)

Method = Callable[[int, list[tuple[int, int]]], np.ndarray]


def simulate(n: int, k: int, sd: float, seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Abilities and (winner, loser) results: ``k`` random perfect matchings of ``n``."""
    rng = random.Random(f"prior:{n}:{k}:{sd}:{seed}")
    theta = np.array([rng.gauss(0.0, sd) for _ in range(n)])
    results = []
    for _ in range(k):
        order = list(range(n))
        rng.shuffle(order)
        for a, b in zip(order[::2], order[1::2], strict=True):
            a_wins = rng.random() < 1.0 / (1.0 + math.exp(-(theta[a] - theta[b])))
            results.append((a, b) if a_wins else (b, a))
    return theta, results


def ridge_method(ridge: float) -> Method:
    def fit(n: int, results: list[tuple[int, int]]) -> np.ndarray:
        ids = [f"e{i:04d}" for i in range(n)]
        scored = fit_bradley_terry(
            ids,
            [(ids[winner], ids[loser]) for winner, loser in results],
            ridge,
            with_standard_errors=False,
        ).score_map()
        return np.array([scored[e] for e in ids])

    return fit


def ilsr_method(alpha: float) -> Method:
    def fit(n: int, results: list[tuple[int, int]]) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(choix.ilsr_pairwise(n, results, alpha=alpha, max_iter=500))

    return fit


def methods() -> dict[str, Method]:
    found = {f"ridge {r:g}": ridge_method(r) for r in RIDGES}
    found.update({f"choix ILSR α={a:g}": ilsr_method(a) for a in ILSR_ALPHAS})
    return found


def measure() -> dict[str, dict[str, dict[str, float | None]]]:
    """``{cell: {method: {"rmse": .., "spearman": .., "failed": ..}}}``."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for sd in SDS:
        for n in SIZES:
            for k in APPEARANCES:
                cell = f"SD {sd:g}, {n} essays, {k}/essay"
                progress(cell)
                batches = [simulate(n, k, sd, seed) for seed in range(SEEDS)]
                table[cell] = {}
                for name, fit in methods().items():
                    rmses, rhos, failed = [], [], 0
                    for theta, results in batches:
                        try:
                            estimate = fit(n, results)
                        except (RuntimeError, ValueError, np.linalg.LinAlgError):
                            failed += 1
                            continue
                        if not np.all(np.isfinite(estimate)):
                            failed += 1
                            continue
                        error = (estimate - estimate.mean()) - (theta - theta.mean())
                        rmses.append(float(np.sqrt(np.mean(error**2))))
                        rhos.append(float(spearmanr(theta, estimate).statistic))
                    table[cell][name] = {
                        "rmse": statistics.fmean(rmses) if rmses else None,
                        "spearman": statistics.fmean(rhos) if rhos else None,
                        "failed": failed,
                    }
    return table


def overall(table: dict[str, dict[str, dict[str, float | None]]]) -> dict[str, float | None]:
    """Mean RMSE of each method over every cell; ``None`` for a method that failed on any
    batch (an average over the batches it managed would flatter it)."""
    names = next(iter(table.values())).keys()
    return {
        name: None
        if any(row[name]["failed"] for row in table.values())
        else statistics.fmean(float(row[name]["rmse"] or 0.0) for row in table.values())
        for name in names
    }


def markdown(table: dict[str, dict[str, dict[str, float | None]]]) -> str:
    names = list(next(iter(table.values())).keys())
    lines = [
        "| batch | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for cell, row in table.items():
        best = min((v["rmse"] for v in row.values() if v["rmse"] is not None), default=float("nan"))
        parts = []
        for name in names:
            v = row[name]
            if v["rmse"] is None:
                parts.append("failed")
                continue
            rmse = f"{v['rmse']:.3f}"
            if v["rmse"] == best:
                rmse = f"**{rmse}**"
            failed = f" ({v['failed']} failed)" if v["failed"] else ""
            parts.append(f"{rmse} / {v['spearman']:.3f}{failed}")
        lines.append(f"| {cell} | " + " | ".join(parts) + " |")
    means = overall(table)
    lines.append(
        "| **mean RMSE** | "
        + " | ".join("failed" if means[n] is None else f"{means[n]:.3f}" for n in names)
        + " |"
    )
    return "\n".join(lines)


def main() -> None:
    table = measure()
    means = overall(table)
    if "--table" in sys.argv:
        print(markdown(table))
        return
    emit(
        "prior",
        details={
            "cells": table,
            "mean_rmse": means,
            "best_on_average": min(
                (name for name in means if means[name] is not None),
                key=lambda name: means[name] or 0.0,
            ),
        },
    )


if __name__ == "__main__":
    main()
