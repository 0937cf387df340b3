"""The numerical engine behind ``domain.scoring``: the penalised Bradley-Terry optimum.

``scoring`` turns essay ids and results into ranked scores; this module only does the
arithmetic on integer essay indexes: fold results into pairs, minimise
``ridge·Σθ² + NLL(θ)`` with damped Newton steps, and invert the information for standard
errors. Pure and deterministic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

_STEP_TOLERANCE = 1e-10
"""Newton stops once no score moves by more than this (quadratic convergence means the
remaining error is far smaller)."""

_MAX_NEWTON_STEPS = 200
_SMALLEST_STEP_FRACTION = 2.0**-40
"""A line search that must shrink the Newton step this far has hit the rounding floor:
no representable move lowers the objective any more, so the current scores are final."""

SPARSE_ABOVE = 300
"""Above this many essays the Newton systems are solved sparse (conjugate gradients on
the comparison network's Laplacian): a batch's network has a few dozen comparisons per
essay, so the Hessian is mostly zeros and a dense solve would cost n³ for nothing."""

DENSE_COVARIANCE_UP_TO = 4000
"""Exact standard errors need the diagonal of an inverse: n³ time, n² memory (128 MB at
4,000 essays). Above this, each SE comes from its own essay's information alone (see
``standard_errors``)."""

_CG_TOLERANCE = 1e-11
"""Relative residual of each sparse Newton system; far below the step tolerance, so the
inexact solves converge to the same optimum as dense ones."""


_COUNT_BY_CODE_UP_TO = 256
"""Up to this many essays ``PairwiseCounts`` counts pairs in an array of all n² pair
codes (512 KiB at 256) instead of sorting the results' codes."""


class PairwiseCounts:
    """Results folded into one row per distinct unordered pair ``first < second``.

    The likelihood only depends on how often each side of each pair won, so the solver
    works on at most ``min(results, n²/2)`` rows instead of one per comparison, and the
    order in which results arrived cannot matter.
    """

    def __init__(self, n: int, winners: NDArray[np.intp], losers: NDArray[np.intp]) -> None:
        first = np.minimum(winners, losers)
        second = np.maximum(winners, losers)
        codes = first * n + second
        first_won = (winners == first).astype(np.float64)
        if n <= _COUNT_BY_CODE_UP_TO:
            # Count per code over all n² codes and keep the codes that occur: the same
            # sorted keys and (whole-number, hence exact) sums as ``np.unique`` below,
            # without its sort, which small batches pay at every fit.
            per_code = np.bincount(codes, minlength=n * n)
            keys = np.flatnonzero(per_code)
            total = per_code[keys]
            wins = np.bincount(codes, weights=first_won, minlength=n * n)[keys]
        else:
            keys, inverse = np.unique(codes, return_inverse=True)
            total = np.bincount(inverse, minlength=len(keys))
            wins = np.bincount(inverse, weights=first_won, minlength=len(keys))
        self.n = n
        self.first: NDArray[np.intp] = (keys // n).astype(np.intp)
        self.second: NDArray[np.intp] = (keys % n).astype(np.intp)
        self.total: NDArray[np.float64] = total.astype(np.float64)
        self.first_wins: NDArray[np.float64] = wins.astype(np.float64)
        self.second_wins: NDArray[np.float64] = self.total - self.first_wins
        self._flat: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None

    def differences(self, theta: NDArray[np.float64]) -> NDArray[np.float64]:
        return theta[self.first] - theta[self.second]

    def at(self, theta: NDArray[np.float64]) -> Point:
        """What the objective's pieces need at ``theta``, computed once per Newton step."""
        return Point(self, theta)

    def loss_change(self, theta: NDArray[np.float64], move: NDArray[np.float64]) -> float:
        """``NLL(theta + move) - NLL(theta)``, computed without cancellation.

        Near the optimum the two totals agree to more digits than a float holds, so their
        difference would be pure rounding noise and a line search on it would stall. Each
        pair's change ``softplus(x + Δ) - softplus(x)`` equals ``log1p(expm1(Δ)·sigmoid(x))``,
        which stays accurate however small ``Δ`` is.
        """
        d = self.differences(theta)
        dd = self.differences(move)
        # The first essay's wins cost softplus(-d), the second essay's softplus(d).
        change = self.first_wins * _softplus_change(-d, -dd) + self.second_wins * (
            _softplus_change(d, dd)
        )
        return float(np.sum(change))

    def gradient_and_information(
        self, theta: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Gradient of the unpenalised negative log-likelihood, and each pair's information.

        The Hessian is the graph Laplacian of the comparison network weighted by
        ``p(1-p)`` per comparison (the pair's information): close matches carry the most.
        """
        p = _sigmoid(self.differences(theta))
        per_pair = self.total * p - self.first_wins
        gradient = _weighted_degree(self.first, per_pair, self.n) - _weighted_degree(
            self.second, per_pair, self.n
        )
        return gradient, self.total * p * (1.0 - p)

    def degrees(self, information: NDArray[np.float64]) -> NDArray[np.float64]:
        """The Hessian's diagonal: each essay's summed information."""
        return _weighted_degree(self.first, information, self.n) + _weighted_degree(
            self.second, information, self.n
        )

    def dense_hessian(self, information: NDArray[np.float64]) -> NDArray[np.float64]:
        """The Hessian of the likelihood as an n×n array: the degrees on the diagonal,
        minus each pair's information off it (flat indexes, as ``np.diag`` fills)."""
        n = self.n
        if self._flat is None:
            self._flat = (self.first * n + self.second, self.second * n + self.first)
        upper, lower = self._flat
        hessian = np.zeros(n * n)
        hessian[:: n + 1] = self.degrees(information)
        off_diagonal = -information
        hessian[upper] = off_diagonal
        hessian[lower] = off_diagonal
        return hessian.reshape(n, n)

    def sparse_hessian(self, information: NDArray[np.float64], ridge: float) -> sparse.csr_matrix:
        """The penalised Hessian as a sparse matrix: O(pairs) memory, whatever n is."""
        rows = np.concatenate([self.first, self.second, np.arange(self.n)])
        cols = np.concatenate([self.second, self.first, np.arange(self.n)])
        values = np.concatenate([-information, -information, self.degrees(information) + 2 * ridge])
        return sparse.csr_matrix((values, (rows, cols)), shape=(self.n, self.n))


class Point:
    """One point ``theta`` of a fit, with the per-pair values every evaluation there
    shares: the score differences and both sigmoids (computed from one ``exp``).

    A Newton step evaluates the gradient and information at ``theta`` and then the
    objective change of one or more trial moves from it (the line search); with the
    shared values each of those costs a fraction of what recomputing them did. Every
    figure equals, bit for bit, what ``PairwiseCounts.gradient_and_information`` and
    ``PairwiseCounts.loss_change`` compute.
    """

    def __init__(self, counts: PairwiseCounts, theta: NDArray[np.float64]) -> None:
        self.counts = counts
        self.theta = theta
        d = counts.differences(theta)
        e = np.exp(-np.abs(d))
        one_plus_e = 1.0 + e
        up, down = 1.0 / one_plus_e, e / one_plus_e
        self.d = d
        self.sigmoid = np.where(d >= 0, up, down)  # _sigmoid(d)
        self.sigmoid_of_negated = np.where(d <= 0, up, down)  # _sigmoid(-d)
        self._softplus: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None

    def gradient_and_information(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        counts = self.counts
        p = self.sigmoid
        expected_first_wins = counts.total * p
        per_pair = expected_first_wins - counts.first_wins
        gradient = _weighted_degree(counts.first, per_pair, counts.n) - _weighted_degree(
            counts.second, per_pair, counts.n
        )
        return gradient, expected_first_wins * (1.0 - p)

    def loss_change(self, move: NDArray[np.float64]) -> float:
        """``PairwiseCounts.loss_change(theta, move)``."""
        return float(self.pair_changes(self.counts.differences(move)).sum())

    def pair_changes(self, dd: NDArray[np.float64]) -> NDArray[np.float64]:
        """Each pair's loss change when its difference moves by ``dd``. The
        cancellation-free form applies where a pair's difference moves by less than 1
        (``_softplus_change``); only if some pair moves further are the direct
        differences of softplus computed."""
        counts = self.counts
        small = np.abs(dd) < 1.0
        first = np.log1p(np.expm1(np.where(small, -dd, 0.0)) * self.sigmoid_of_negated)
        second = np.log1p(np.expm1(np.where(small, dd, 0.0)) * self.sigmoid)
        if not small.all():
            if self._softplus is None:
                self._softplus = (np.logaddexp(0.0, -self.d), np.logaddexp(0.0, self.d))
            of_negated, of_d = self._softplus
            first = np.where(small, first, np.logaddexp(0.0, -self.d + -dd) - of_negated)
            second = np.where(small, second, np.logaddexp(0.0, self.d + dd) - of_d)
        change: NDArray[np.float64] = counts.first_wins * first + counts.second_wins * second
        return change


def _mean(values: NDArray[np.float64]) -> float:
    """``float(np.mean(values))`` of a 1-D array, bit for bit (the same pairwise sum,
    divided by the count), without ``np.mean``'s dispatch, which a small fit pays
    dozens of times."""
    return float(values.sum()) / len(values)


def _weighted_degree(
    index: NDArray[np.intp], weights: NDArray[np.float64], n: int
) -> NDArray[np.float64]:
    """Sum of ``weights`` per essay index: the scatter step of gradient and Hessian."""
    return np.asarray(np.bincount(index, weights=weights, minlength=n), dtype=np.float64)


def _softplus_change(x: NDArray[np.float64], delta: NDArray[np.float64]) -> NDArray[np.float64]:
    """``log(1 + e^(x + delta)) - log(1 + e^x)``, accurate for small and large ``delta``."""
    small = np.abs(delta) < 1.0
    accurate = np.log1p(np.expm1(np.where(small, delta, 0.0)) * _sigmoid(x))
    direct = np.logaddexp(0.0, x + delta) - np.logaddexp(0.0, x)
    return np.where(small, accurate, direct)


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Logistic function without overflow warnings for large ``|x|``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def fit(
    n: int,
    winners: NDArray[np.intp],
    losers: NDArray[np.intp],
    ridge: float,
    start: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Damped Newton on the strictly convex penalised objective, from 0 or ``start``.

    The ridge makes the Hessian positive definite everywhere, so each Newton system has a
    unique solution and backtracking (Armijo on the exact objective change) guarantees
    descent. Near the optimum full steps pass the test and converge quadratically,
    typically in under ten iterations; an essay that won everything instead walks out
    about one logit per step until the ridge holds it. A warm ``start`` (the previous
    wave's scores) only saves steps: the optimum is unique, so it is the same one.
    """
    theta: NDArray[np.float64] = np.zeros(n)
    if n == 0 or len(winners) == 0:
        return theta
    if start is not None and np.all(np.isfinite(start)):
        theta = np.asarray(start, dtype=np.float64) - float(np.mean(start))
    counts = PairwiseCounts(n, winners, losers)

    def objective_change(at: Point, move: NDArray[np.float64]) -> float:
        return at.loss_change(move) + ridge * float(move @ (2.0 * at.theta + move))

    for _ in range(_MAX_NEWTON_STEPS):
        point = counts.at(theta)
        gradient, information = point.gradient_and_information()
        gradient += 2.0 * ridge * theta
        step = _newton_step(counts, information, gradient, ridge)
        # Every comparison pushes its two essays equally and oppositely, so the optimum has
        # mean 0 and, from a mean-0 start, the exact Newton step has mean 0 too. Only
        # rounding puts a mean into it — amplified by 1/(2·ridge) along the flat "shift
        # everyone" direction, enough to stall convergence at tiny ridges. Drop it.
        step -= _mean(step)
        if float(np.abs(step).max()) < _STEP_TOLERANCE:
            # Too small for the objective to register, so skip the line search.
            theta = theta - step
            return theta - _mean(theta)
        decrement = float(gradient @ step)  # predicted decrease of a full step, times two
        fraction = 1.0
        while objective_change(point, -fraction * step) > -0.25 * fraction * decrement:
            fraction *= 0.5
            if fraction < _SMALLEST_STEP_FRACTION:
                return theta - _mean(theta)
        theta = theta - fraction * step
    raise ArithmeticError(  # unreachable for a strictly convex objective; guards a bug
        f"Bradley-Terry fit did not converge in {_MAX_NEWTON_STEPS} Newton steps"
    )


def _newton_step(
    counts: PairwiseCounts,
    information: NDArray[np.float64],
    gradient: NDArray[np.float64],
    ridge: float,
) -> NDArray[np.float64]:
    """Solve ``H·step = gradient``: dense for small batches, sparse above ``SPARSE_ABOVE``.

    The sparse route runs conjugate gradients (the Hessian is symmetric positive definite)
    and falls back to a sparse LU factorisation if they stall, which only a near-singular
    system (a tiny ridge on a disconnected network) can make them do.
    """
    n = counts.n
    if n <= SPARSE_ABOVE:
        hessian = counts.dense_hessian(information)
        hessian.reshape(-1)[:: n + 1] += 2.0 * ridge  # the diagonal (a view: contiguous)
        return np.asarray(np.linalg.solve(hessian, gradient), np.float64)
    hessian = counts.sparse_hessian(information, ridge)
    step, status = sparse_linalg.cg(hessian, gradient, rtol=_CG_TOLERANCE, atol=0.0, maxiter=n)
    if status != 0:
        step = sparse_linalg.spsolve(hessian.tocsc(), gradient)
    return np.asarray(step, np.float64)


def standard_errors(
    n: int,
    winners: NDArray[np.intp],
    losers: NDArray[np.intp],
    theta: NDArray[np.float64],
    ridge: float,
) -> NDArray[np.float64]:
    """The standard error of each mean-centred score.

    Exact up to ``DENSE_COVARIANCE_UP_TO`` essays: the square roots of the diagonal of
    ``P·H⁻¹·P`` (see ``centred_covariance``). Above it, ``1/sqrt(H_ii)``: the SE an essay
    would have if every other score were known, in O(pairs). It ignores the opponents'
    own uncertainty, so it mostly comes out smaller than the exact SE: on simulated
    batches of 1,000–2,000 essays with 10–20 comparisons each, by 2–4 % at the median and
    up to ~20 % for the essays with fewest comparisons (never more than 0.1 % larger).
    """
    if n > DENSE_COVARIANCE_UP_TO and len(winners):
        counts = PairwiseCounts(n, winners, losers)
        _, information = counts.gradient_and_information(theta)
        return np.asarray(1.0 / np.sqrt(counts.degrees(information) + 2.0 * ridge), np.float64)
    covariance = centred_covariance(n, winners, losers, theta, ridge)
    return np.sqrt(np.clip(np.diag(covariance), 0.0, None))


def centred_covariance(
    n: int,
    winners: NDArray[np.intp],
    losers: NDArray[np.intp],
    theta: NDArray[np.float64],
    ridge: float,
) -> NDArray[np.float64]:
    """``P·H⁻¹·P``, the covariance of the mean-centred scores.

    ``H`` has ``1`` (shift every score equally) as an eigenvector with eigenvalue
    ``2·ridge``. Swapping that eigenvalue for ``c = max(1, 2·ridge)`` gives
    ``A = H + (c - 2·ridge)·11ᵀ/n``, whose inverse is ``P·H⁻¹·P + 11ᵀ/(c·n)``. Subtracting
    the known second term recovers the centred covariance without ever inverting a tiny
    ``2·ridge`` (which would cost precision for small ridges).
    """
    if n == 0:
        return np.zeros((0, 0))
    if len(winners) == 0:
        hessian = np.zeros((n, n))
    else:
        counts = PairwiseCounts(n, winners, losers)
        hessian = counts.dense_hessian(counts.gradient_and_information(theta)[1])
    hessian[np.diag_indices(n)] += 2.0 * ridge
    swapped_eigenvalue = max(1.0, 2.0 * ridge)
    swapped = hessian + (swapped_eigenvalue - 2.0 * ridge) / n
    return np.asarray(np.linalg.inv(swapped) - 1.0 / (swapped_eigenvalue * n), dtype=np.float64)


def fit_many(
    n: int,
    problems: list[tuple[NDArray[np.intp], NDArray[np.intp]]],
    ridge: float,
) -> list[NDArray[np.float64]]:
    """``fit(n, winners, losers, ridge)`` for several result sets over the same ``n``
    essays at once (split-half reliability fits twenty halves), from 0.

    Each Newton step runs every still-unfinished fit in the same array operations: the
    pairs of all fits are laid end to end and index one flat ``theta`` of ``k·n``
    scores, so a fit's elementwise arithmetic and per-essay sums (``bincount`` adds in
    the same order) are exactly its own; the Newton systems are solved as one stack; the
    sums and dot products that end in a single number are taken per fit, on its own
    slice. The fits therefore take the very steps ``fit`` takes, to the same scores,
    while numpy's fixed cost per operation is paid once per step instead of once per fit
    (for small batches that cost is most of a fit). Above ``SPARSE_ABOVE`` essays the
    fits simply run one after the other.
    """
    k = len(problems)
    if n == 0 or k == 0:
        return [np.zeros(n) for _ in problems]
    if n > SPARSE_ABOVE or k == 1:
        return [fit(n, w, lo, ridge) for w, lo in problems]
    every = [PairwiseCounts(n, w, lo) for w, lo in problems]
    sizes = [len(c.first) for c in every]
    bounds = np.cumsum([0, *sizes])
    offset = np.repeat(np.arange(k) * n, sizes)
    first = np.concatenate([c.first for c in every]) + offset
    second = np.concatenate([c.second for c in every]) + offset
    total = np.concatenate([c.total for c in every])
    first_wins = np.concatenate([c.first_wins for c in every])
    second_wins = np.concatenate([c.second_wins for c in every])
    flat = PairwiseCounts.__new__(PairwiseCounts)  # the k fits as one flat network
    flat.n, flat.first, flat.second = k * n, first, second
    flat.total, flat.first_wins, flat.second_wins = total, first_wins, second_wins
    flat._flat = None

    theta = np.zeros(k * n)
    results: list[NDArray[np.float64] | None] = [
        np.zeros(n) if sizes[i] == 0 else None for i in range(k)
    ]
    rows = np.arange(k)
    diagonal = np.arange(n)
    local_first = np.concatenate([c.first for c in every])
    local_second = np.concatenate([c.second for c in every])
    owner = np.repeat(rows, sizes)

    def own(values: NDArray[np.float64], i: int) -> NDArray[np.float64]:
        return values[bounds[i] : bounds[i + 1]]

    for _ in range(_MAX_NEWTON_STEPS):
        active = [i for i in range(k) if results[i] is None]
        if not active:
            return [r for r in results if r is not None]
        point = flat.at(theta)
        gradient, information = point.gradient_and_information()
        gradient += 2.0 * ridge * theta
        # Each fit's dense Hessian, as ``dense_hessian`` builds it, then one stacked solve.
        degrees = flat.degrees(information).reshape(k, n)
        hessians = np.zeros((k, n, n))
        hessians[:, diagonal, diagonal] = degrees
        hessians[owner, local_first, local_second] = -information
        hessians[owner, local_second, local_first] = -information
        hessians[:, diagonal, diagonal] += 2.0 * ridge
        steps = np.linalg.solve(hessians, gradient.reshape(k, n)[:, :, None])[:, :, 0]
        # Each row minus its mean: sums along the contiguous last axis are the very
        # pairwise sums ``_mean`` takes of one row (the test that fit_many equals fit
        # bit for bit holds it to that).
        steps = steps - (steps.sum(axis=1) / n)[:, None]
        largest = np.abs(steps).max(axis=1)  # exact, whatever the order
        moving: dict[int, tuple[float, float]] = {}  # fit -> (fraction, decrement)
        for i in active:
            step = steps[i]
            if float(largest[i]) < _STEP_TOLERANCE:
                done = theta[i * n : (i + 1) * n] - step
                results[i] = done - _mean(done)
            else:
                moving[i] = (1.0, float(gradient[i * n : (i + 1) * n] @ step))
        # The line searches: every fit still searching tries its next fraction together.
        searching = dict(moving)
        while searching:
            move = np.zeros(k * n)
            for i, (fraction, _) in searching.items():
                move[i * n : (i + 1) * n] = -fraction * steps[i]
            dd = flat.differences(move)
            changes = point.pair_changes(dd)
            for i, (fraction, decrement) in list(searching.items()):
                at = theta[i * n : (i + 1) * n]
                m = move[i * n : (i + 1) * n]
                change = float(own(changes, i).sum()) + ridge * float(m @ (2.0 * at + m))
                if change > -0.25 * fraction * decrement:
                    fraction *= 0.5
                    if fraction < _SMALLEST_STEP_FRACTION:
                        results[i] = at - _mean(at)
                        del searching[i]
                        del moving[i]
                    else:
                        searching[i] = (fraction, decrement)
                else:
                    moving[i] = (fraction, decrement)
                    del searching[i]
        for i, (fraction, _) in moving.items():
            theta[i * n : (i + 1) * n] = theta[i * n : (i + 1) * n] - fraction * steps[i]
    raise ArithmeticError(  # unreachable for a strictly convex objective; guards a bug
        f"Bradley-Terry fit did not converge in {_MAX_NEWTON_STEPS} Newton steps"
    )
