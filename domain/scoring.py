"""Bradley-Terry scoring of a CJ batch: scores, standard errors, ranks and reliability.

Each successful comparison says "the judge preferred W to L". Bradley-Terry models that as
``P(W beats L) = 1 / (1 + exp(-(θ_W - θ_L)))`` and we estimate the abilities ``θ`` by
maximising the likelihood of everything the judges said. Scores are on the natural-log
(logit) scale: a difference of 1.0 means the better essay wins about 73% of the time.

Plain maximum likelihood breaks on real batches. An essay that won every comparison has
no finite maximum (its score can always rise a little further), and an essay nobody has
compared yet is not identified at all. A small L2 ridge — a Gaussian prior centred on the
average essay — keeps every score finite and pulls the unobserved ones to 0, while barely
moving essays with plenty of evidence. The penalty is exactly the one ``choix`` (the
field's reference implementation) uses, so our numbers can be checked against it.

This module is pure: no I/O, no clock, no randomness. The same essays and results always
give the same ``ScoringResult``, whatever order they arrive in, so a replayed batch scores
identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from domain.bradley_terry import fit, fit_many, standard_errors
from domain.values import EssayScore, ScoringResult

DEFAULT_RIDGE = 0.01
"""Default strength of the L2 penalty ``ridge·Σθ²`` added to the negative log-likelihood.

It is the MAP estimate under a Gaussian prior of variance ``1/(2·ridge)`` (50 logits² at 0.01):
weak enough that ten comparisons outweigh it, strong enough that an essay which won (or
lost) everything lands a few logits from the pack instead of at infinity.
"""

MIN_RIDGE = 1e-10
"""Smallest ridge we accept. The ridge is the only curvature holding an essay that won
everything (or two groups never compared with each other); much below this it drowns in
the rounding error of the other Hessian entries and the Newton system turns singular."""

_TIE_DECIMALS = 9
"""Scores equal to this many decimals count as tied when ranking: differences smaller
than the solver's accuracy are rounding noise: such essays share a rank (listed by id)."""


def fit_bradley_terry(
    essay_ids: Sequence[str],
    results: Sequence[tuple[str, str]],
    ridge: float = DEFAULT_RIDGE,
    *,
    initial: Mapping[str, float] | None = None,
    with_standard_errors: bool = True,
) -> ScoringResult:
    """Score ``essay_ids`` from ``(winner_id, loser_id)`` results of successful comparisons.

    Minimises ``ridge·Σθ² + Σ log(1 + exp(-(θ_winner - θ_loser)))`` with damped Newton
    steps on the exact gradient and Hessian. That objective is the one
    ``choix.opt_pairwise(n, data, alpha=ridge)`` minimises, so the two agree.

    The penalised optimum is already mean-centred (the likelihood only sees differences,
    so its gradient sums to zero and the ridge term must too); we centre again only to
    remove rounding drift. Every essay therefore scores relative to the batch average.

    Standard errors come from the Fisher information ``H`` (the Hessian of the penalised
    objective at the optimum). The plain inverse ``H⁻¹`` would report the uncertainty of
    the batch's overall location too, which the data never informs — only the prior does,
    with variance ``1/(2·ridge)`` — and that would swamp every SE. Centring fixes the location
    by convention, so we report the covariance of the centred scores, ``P·H⁻¹·P`` with
    ``P = I - 11ᵀ/n``: the constrained covariance (the pseudo-inverse of ``H`` restricted
    to sum-zero scores). With no results at all it is ``P/(2·ridge)``, finite thanks to the
    ridge; a lone essay scores exactly 0 with SE 0. Above ``DENSE_COVARIANCE_UP_TO``
    essays the SEs use each essay's own information only (see
    ``domain.bradley_terry.standard_errors``).

    ``initial`` (scores by essay id, e.g. the previous wave's) warm-starts the solver; the
    optimum is unique, so it changes how fast the fit gets there, never where. With
    ``with_standard_errors=False`` the SEs are skipped — they cost far more than the
    scores on a large batch — and every ``se`` is NaN and ``reliability`` is ``None``:
    the continuation rules read scores only; finalization asks for SEs.

    ``scores`` come back best first (ties listed by essay id). Ranks run from 1; tied
    scores share a rank (competition ranking: 1, 2, 2, 4), and
    ``comparisons`` counts the successful comparisons each essay took part in.
    ``reliability`` is the scale separation reliability (see
    ``scale_separation_reliability``).

    Raises ``ValueError`` for duplicate essay ids, results naming an essay outside
    ``essay_ids``, an essay compared with itself, or a ridge that is not finite or is
    below ``MIN_RIDGE`` (without a ridge the estimate may not exist).
    """
    if not (np.isfinite(ridge) and ridge >= MIN_RIDGE):
        raise ValueError(f"ridge must be a finite number >= {MIN_RIDGE:g}, got {ridge!r}")
    ids = _canonical_ids(essay_ids)
    winners, losers = _index_results(ids, results)

    n = len(ids)
    start = None if initial is None else np.array([initial.get(i, 0.0) for i in ids])
    theta = fit(n, winners, losers, ridge, start)
    if with_standard_errors:
        ses = standard_errors(n, winners, losers, theta, ridge)
        reliability = scale_separation_reliability(theta, ses)
    else:
        ses, reliability = np.full(n, np.nan), None
    comparisons = np.bincount(winners, minlength=n) + np.bincount(losers, minlength=n)

    # Python floats and ints (``tolist``: the same values, cheaper to read one by one)
    thetas, se_list, counts = theta.tolist(), ses.tolist(), comparisons.tolist()
    tied = [round(t, _TIE_DECIMALS) for t in thetas]
    order = sorted(range(n), key=lambda i: (-tied[i], ids[i]))
    ranks = competition_ranks([tied[i] for i in order])
    scores = tuple(
        EssayScore(
            essay_id=ids[i],
            score=thetas[i] + 0.0,  # + 0.0 turns a -0.0 into 0.0
            se=se_list[i],
            rank=rank,
            comparisons=counts[i],
        )
        for rank, i in zip(ranks, order, strict=True)
    )
    return ScoringResult(scores=scores, reliability=reliability)


def fit_scores_many(
    essay_ids: Sequence[str],
    result_sets: Sequence[Sequence[tuple[str, str]]],
    ridge: float = DEFAULT_RIDGE,
) -> list[dict[str, float]]:
    """The scores ``fit_bradley_terry(..., with_standard_errors=False)`` gives for each
    of several result sets over the same essays, by essay id, without ranks or per-essay
    records. The sets are fitted together (``domain.bradley_terry.fit_many``): the very
    same numbers, a fraction of the cost when there are many small fits (split-half
    reliability fits twenty halves)."""
    if not (np.isfinite(ridge) and ridge >= MIN_RIDGE):
        raise ValueError(f"ridge must be a finite number >= {MIN_RIDGE:g}, got {ridge!r}")
    ids = _canonical_ids(essay_ids)
    problems = [_index_results(ids, results) for results in result_sets]
    return [
        {essay_id: float(t) + 0.0 for essay_id, t in zip(ids, theta, strict=True)}
        for theta in fit_many(len(ids), problems, ridge)
    ]


def fit_subsets_many(
    essay_ids: Sequence[str],
    results: Sequence[tuple[str, str]],
    subsets: Sequence[Sequence[int]],
    ridge: float = DEFAULT_RIDGE,
) -> list[NDArray[np.float64]]:
    """``fit_scores_many(essay_ids, [[results[i] for i in subset] for subset in subsets])``
    as arrays in ``essay_ids`` order (the values the dicts hold, bit for bit), with the
    results indexed once instead of once per subset (split-half reliability fits twenty
    halves of the same results)."""
    if not (np.isfinite(ridge) and ridge >= MIN_RIDGE):
        raise ValueError(f"ridge must be a finite number >= {MIN_RIDGE:g}, got {ridge!r}")
    ids = _canonical_ids(essay_ids)
    winners, losers = _index_results(ids, results)
    problems = []
    for subset in subsets:
        chosen = np.asarray(subset, dtype=np.intp)
        problems.append((winners[chosen], losers[chosen]))
    position = {essay_id: i for i, essay_id in enumerate(ids)}
    order = np.array([position[essay_id] for essay_id in essay_ids], dtype=np.intp)
    return [(theta + 0.0)[order] for theta in fit_many(len(ids), problems, ridge)]


def competition_ranks(scores_best_first: Sequence[float]) -> list[int]:
    """Competition ranking ("1224"): tied scores share the best rank among them and the
    next score's rank counts everyone above it."""
    ranks: list[int] = []
    for position, score in enumerate(scores_best_first, start=1):
        tie = position > 1 and score == scores_best_first[position - 2]
        ranks.append(ranks[-1] if tie else position)
    return ranks


def scale_separation_reliability(
    scores: NDArray[np.float64], ses: NDArray[np.float64]
) -> float | None:
    """``(observed variance - mean squared SE) / observed variance``, clamped to [0, 1].

    SSR is the CJ analogue of Cronbach's alpha: the share of the spread in scores that is
    true difference between essays rather than measurement error. The observed variance
    is the sample variance (``ddof=1``), as CJ tools report it.

    It is ``None`` for fewer than two essays or when every score is equal (e.g. no results
    yet): with no spread there is nothing to be reliable about, which is different from
    being unreliable. When the error exceeds the spread the raw formula goes negative; a
    negative share means "no reliable separation", so we report 0. It cannot reach 1
    while any SE is positive, but we clamp both ends so callers can rely on the range.
    """
    if len(scores) < 2:
        return None
    observed = float(np.var(scores, ddof=1))
    if not observed > 0.0:
        return None
    error = float(np.mean(ses**2))
    return min(1.0, max(0.0, (observed - error) / observed))


def _canonical_ids(essay_ids: Sequence[str]) -> list[str]:
    """Sorted ids, so the arithmetic (and its rounding) never depends on input order."""
    seen: set[str] = set()
    for essay_id in essay_ids:
        if essay_id in seen:
            raise ValueError(f"essay id {essay_id!r} appears more than once in essay_ids")
        seen.add(essay_id)
    return sorted(seen)


def _index_results(
    ids: list[str], results: Sequence[tuple[str, str]]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    index = {essay_id: i for i, essay_id in enumerate(ids)}
    try:  # the common case at list speed; anything wrong is found and named below
        winners = np.array([index[winner] for winner, _ in results], dtype=np.intp)
        losers = np.array([index[loser] for _, loser in results], dtype=np.intp)
        if not (winners == losers).any():
            return winners, losers
    except KeyError:
        pass
    winners = np.empty(len(results), dtype=np.intp)
    losers = np.empty(len(results), dtype=np.intp)
    for k, (winner, loser) in enumerate(results):
        if winner not in index:
            raise ValueError(f"result {k} names unknown winner {winner!r}")
        if loser not in index:
            raise ValueError(f"result {k} names unknown loser {loser!r}")
        if winner == loser:
            raise ValueError(f"result {k} compares essay {winner!r} with itself")
        winners[k] = index[winner]
        losers[k] = index[loser]
    return winners, losers
