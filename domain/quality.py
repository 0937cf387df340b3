"""Quality figures of a finished batch: can this ranking be trusted?

Computed once, at finalization, from the successful comparisons and the final
Bradley–Terry scores, and stored in ``Finalized`` so the audit log says how good the
ranking was, not only what it was.

Per essay: the comparisons it took part in, and the **infit** and **outfit**
mean-squares — how well the judge's verdicts about it fit the model. For one comparison
the model expects the essay to win with probability ``p = σ(θ_self − θ_other)``; the
verdict ``x`` (1 = won) leaves a residual ``x − p`` of variance ``p(1 − p)``. Outfit is the
mean squared *standardised* residual (sensitive to a few surprising verdicts), infit the
information-weighted one, ``Σ(x − p)² / Σp(1 − p)``. Both are 1 when the verdicts fit. An
essay is flagged as **misfitting** when its infit lies more than 2 SD above the batch mean,
as CJ practice does.

Per batch:

* **SSR**, the scale-separation reliability (``domain.scoring``).
* **Split-half reliability**: the comparisons are split at random into two halves, each
  half is scored on its own, the two score vectors are correlated (Pearson) and the
  correlation is stepped up to full length with Spearman–Brown (``2r / (1 + r)``); the
  result is averaged over ``SPLITS`` seeded splits. Adaptive pairing makes the SEs, hence
  SSR, look better than they are; two independent halves agreeing cannot be inflated
  that way.
* **Position bias**: the share of successful comparisons won by the essay shown first,
  with a 95 % Wilson interval. An unbiased judge's interval contains 0.5.
* Mean and max SE, essays never compared, and flags (``FLAGS``).

Pure: the only randomness is an RNG seeded with the batch seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from domain.scoring import fit_subsets_many
from domain.values import ScoringResult

SPLITS = 10
"""Seeded random splits averaged by the split-half reliability."""

MISFIT_SD = 2.0
"""An essay misfits when its infit exceeds the batch mean by more than this many SDs."""

SE_INFLATED = 1.0
"""Mean SE (logits) from which the scores are too uncertain to rank on: a 95 % interval
of ±2 logits is wider than the spread of most real batches."""

Z_95 = 1.959963984540054

FLAGS = {
    "se_inflated": f"mean SE of at least {SE_INFLATED} logit",
    "coverage_sparse": "an essay has fewer successful comparisons than min_appearances",
    "isolated_items": "an essay was never compared, or the comparisons fall apart into "
    "groups never compared with each other",
    "sparse_budget": "the batch was accepted with a budget below n·min_appearances/2",
}


@dataclass(frozen=True)
class PositionBias:
    first_shown_win_rate: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class EssayQuality:
    essay_id: str
    comparisons: int
    infit: float | None
    outfit: float | None
    misfit: bool


@dataclass(frozen=True)
class BatchQuality:
    ssr: float | None
    split_half: float | None
    position_bias: PositionBias
    mean_se: float | None
    max_se: float | None
    never_compared: int
    flags: tuple[str, ...]
    essays: tuple[EssayQuality, ...]


@dataclass(frozen=True)
class Verdict:
    """One successful comparison as shown: A first, B second, and who won."""

    essay_a: str
    essay_b: str
    winner: str

    @property
    def loser(self) -> str:
        return self.essay_b if self.winner == self.essay_a else self.essay_a


def assess(
    scoring: ScoringResult,
    verdicts: Sequence[Verdict],
    *,
    ridge: float,
    seed: int,
    min_appearances: int = 0,
    sparse_budget: bool = False,
) -> BatchQuality:
    """Every quality figure of a batch scored as ``scoring`` from ``verdicts``."""
    ids = [s.essay_id for s in scoring.scores]
    theta = scoring.score_map()
    fits = essay_fit(theta, verdicts)
    infits = [f for f, _ in fits.values() if f is not None]
    limit = None
    if len(infits) >= 2:
        spread = float(np.std(infits, ddof=1))
        if spread > 0:
            limit = float(np.mean(infits)) + MISFIT_SD * spread
    essays = tuple(
        EssayQuality(
            essay_id=s.essay_id,
            comparisons=s.comparisons,
            infit=fits[s.essay_id][0],
            outfit=fits[s.essay_id][1],
            misfit=limit is not None and (fits[s.essay_id][0] or 0.0) > limit,
        )
        for s in scoring.scores
    )
    ses = [s.se for s in scoring.scores]
    mean_se = float(np.mean(ses)) if ses else None
    never = sum(1 for s in scoring.scores if s.comparisons == 0)
    flags = []
    if mean_se is not None and mean_se >= SE_INFLATED:
        flags.append("se_inflated")
    if any(s.comparisons < min_appearances for s in scoring.scores):
        flags.append("coverage_sparse")
    if never or not connected(ids, verdicts):
        flags.append("isolated_items")
    if sparse_budget:
        flags.append("sparse_budget")
    return BatchQuality(
        ssr=scoring.reliability,
        split_half=split_half_reliability(ids, verdicts, ridge=ridge, seed=seed),
        position_bias=position_bias(verdicts),
        mean_se=mean_se,
        max_se=max(ses) if ses else None,
        never_compared=never,
        flags=tuple(flags),
        essays=essays,
    )


def essay_fit(
    theta: dict[str, float], verdicts: Sequence[Verdict]
) -> dict[str, tuple[float | None, float | None]]:
    """(infit, outfit) mean-squares of every essay; ``None`` for an essay never compared."""
    squared: dict[str, float] = dict.fromkeys(theta, 0.0)
    information: dict[str, float] = dict.fromkeys(theta, 0.0)
    standardised: dict[str, float] = dict.fromkeys(theta, 0.0)
    count: dict[str, int] = dict.fromkeys(theta, 0)
    for v in verdicts:
        for essay, other in ((v.essay_a, v.essay_b), (v.essay_b, v.essay_a)):
            p = 1.0 / (1.0 + math.exp(-(theta[essay] - theta[other])))
            x = 1.0 if v.winner == essay else 0.0
            w = p * (1.0 - p)
            squared[essay] += (x - p) ** 2
            information[essay] += w
            standardised[essay] += (x - p) ** 2 / w if w > 0 else 0.0
            count[essay] += 1
    return {
        essay: (
            (squared[essay] / information[essay], standardised[essay] / count[essay])
            if count[essay] and information[essay] > 0
            else (None, None)
        )
        for essay in theta
    }


def split_half_reliability(
    essay_ids: Sequence[str], verdicts: Sequence[Verdict], *, ridge: float, seed: int
) -> float | None:
    """Mean Spearman–Brown-corrected correlation of the scores of two random halves.

    ``None`` when it cannot be estimated: fewer than three essays or four comparisons, or
    every split gave a half with no spread in its scores.
    """
    if len(essay_ids) < 3 or len(verdicts) < 4:
        return None
    results = [(v.winner, v.loser) for v in verdicts]
    halves: list[list[int]] = []
    for split in range(SPLITS):
        order = list(range(len(results)))
        random.Random(f"{seed}:split-half:{split}").shuffle(order)
        half = len(order) // 2
        halves.append(order[:half])
        halves.append(order[half:])
    # all twenty halves at once, each score vector in ``essay_ids`` order
    fitted = fit_subsets_many(essay_ids, results, halves, ridge)
    corrected = []
    for split in range(SPLITS):
        x, y = fitted[2 * split], fitted[2 * split + 1]
        if np.std(x) == 0 or np.std(y) == 0:
            continue
        r = float(np.corrcoef(x, y)[0, 1])
        corrected.append(2 * r / (1 + r) if r > -1 else -1.0)
    return float(np.mean(corrected)) if corrected else None


def position_bias(verdicts: Sequence[Verdict]) -> PositionBias:
    """Share of verdicts won by the essay shown first, with its 95 % Wilson interval."""
    n = len(verdicts)
    if n == 0:
        return PositionBias(None, None, None)
    wins = sum(1 for v in verdicts if v.winner == v.essay_a)
    rate = wins / n
    z2 = Z_95 * Z_95
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return PositionBias(rate, max(0.0, centre - half), min(1.0, centre + half))


def connected(essay_ids: Sequence[str], verdicts: Sequence[Verdict]) -> bool:
    """Whether the successful comparisons link every essay to every other."""
    if len(essay_ids) < 2:
        return True
    parent = {e: e for e in essay_ids}

    def root(e: str) -> str:
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    for v in verdicts:
        parent[root(v.essay_a)] = root(v.essay_b)
    return len({root(e) for e in essay_ids}) == 1
