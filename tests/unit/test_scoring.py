"""Bradley-Terry scoring: agreement with choix, then the properties CJ relies on."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import choix
import numpy as np
import pytest
from choix.opt import PairwiseFcts
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import bradley_terry
from domain.scoring import (
    DEFAULT_RIDGE,
    MIN_RIDGE,
    competition_ranks,
    fit_bradley_terry,
    scale_separation_reliability,
)
from domain.values import ScoringResult

Comparisons = list[tuple[int, int]]
"""Results as choix takes them: (winner index, loser index)."""


def simulate(
    seed: int, n_essays: int, n_comparisons: int, spread: float = 1.5
) -> tuple[list[str], Comparisons]:
    """Random pairs judged by a true Bradley-Terry model, as (winner_idx, loser_idx)."""
    rng = np.random.default_rng(seed)
    ability = rng.normal(0.0, spread, n_essays)
    data: Comparisons = []
    for _ in range(n_comparisons):
        i, j = (int(k) for k in rng.choice(n_essays, size=2, replace=False))
        first_wins = rng.random() < 1.0 / (1.0 + math.exp(-(ability[i] - ability[j])))
        data.append((i, j) if first_wins else (j, i))
    return [f"essay-{i:03d}" for i in range(n_essays)], data


def named(ids: list[str], data: Comparisons) -> list[tuple[str, str]]:
    return [(ids[w], ids[loser]) for w, loser in data]


def scores_in_id_order(result: ScoringResult, ids: list[str]) -> np.ndarray:
    by_id = result.score_map()
    return np.array([by_id[i] for i in ids])


def ses_in_id_order(result: ScoringResult, ids: list[str]) -> np.ndarray:
    by_id = {s.essay_id: s.se for s in result.scores}
    return np.array([by_id[i] for i in ids])


def unchanged(data: Comparisons) -> Comparisons:
    return data


def all_wins_for_first(data: Comparisons) -> Comparisons:
    """Make essay 0 win every comparison it took part in."""
    return [(0, w + loser) if 0 in (w, loser) else (w, loser) for w, loser in data]


def add_unseen_essay(ids: list[str]) -> list[str]:
    return [*ids, "never-compared"]


CHOIX_CASES = [
    pytest.param(1, 5, 20, DEFAULT_RIDGE, unchanged, id="tiny"),
    pytest.param(2, 24, 300, DEFAULT_RIDGE, unchanged, id="24-essays"),
    pytest.param(3, 40, 1000, DEFAULT_RIDGE, unchanged, id="40-essays"),
    pytest.param(4, 100, 2500, DEFAULT_RIDGE, unchanged, id="100-essays"),
    pytest.param(5, 12, 80, DEFAULT_RIDGE, all_wins_for_first, id="one-essay-wins-all"),
    pytest.param(6, 12, 80, 0.001, all_wins_for_first, id="wins-all-weak-ridge"),
    pytest.param(7, 30, 200, 0.5, unchanged, id="strong-ridge"),
    pytest.param(8, 8, 6, DEFAULT_RIDGE, unchanged, id="sparse-disconnected"),
]


@pytest.mark.parametrize(("seed", "n_essays", "n_comparisons", "ridge", "tweak"), CHOIX_CASES)
def test_scores_agree_with_choix_after_centring(
    seed: int,
    n_essays: int,
    n_comparisons: int,
    ridge: float,
    tweak: Callable[[Comparisons], Comparisons],
) -> None:
    ids, data = simulate(seed, n_essays, n_comparisons)
    data = tweak(data)

    ours = scores_in_id_order(fit_bradley_terry(ids, named(ids, data), ridge=ridge), ids)
    # choix's default tol=1e-5 can stop ~1.5e-6 short of its own optimum (24 essays, 300
    # comparisons, seed 0 in the bench), so we hold it to a tolerance that converges.
    reference = choix.opt_pairwise(n_essays, data, alpha=ridge, tol=1e-10)

    np.testing.assert_allclose(ours, reference - reference.mean(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("seed", "n_essays", "n_comparisons", "ridge", "tweak"), CHOIX_CASES)
def test_standard_errors_are_the_centred_inverse_of_choix_hessian(
    seed: int,
    n_essays: int,
    n_comparisons: int,
    ridge: float,
    tweak: Callable[[Comparisons], Comparisons],
) -> None:
    ids, data = simulate(seed, n_essays, n_comparisons)
    data = tweak(data)

    result = fit_bradley_terry(ids, named(ids, data), ridge=ridge)
    optimum = choix.opt_pairwise(n_essays, data, alpha=ridge, tol=1e-10)
    hessian = PairwiseFcts(data, ridge).hessian(optimum)
    centring = np.eye(n_essays) - 1.0 / n_essays
    covariance = centring @ np.linalg.inv(hessian) @ centring

    np.testing.assert_allclose(
        ses_in_id_order(result, ids), np.sqrt(np.diag(covariance)), rtol=1e-6, atol=1e-9
    )


def test_ranks_follow_scores_with_best_first() -> None:
    # a beats b beats c beats d, each by 3-1.
    results = []
    for better, worse in [("a", "b"), ("b", "c"), ("c", "d")]:
        results += [(better, worse)] * 3 + [(worse, better)]

    result = fit_bradley_terry(["d", "b", "a", "c"], results)

    assert [s.essay_id for s in result.scores] == ["a", "b", "c", "d"]
    assert [s.rank for s in result.scores] == [1, 2, 3, 4]
    assert [s.score for s in result.scores] == sorted(
        (s.score for s in result.scores), reverse=True
    )


@pytest.mark.parametrize(
    ("results", "expected_order"),
    [
        pytest.param([("b", "a"), ("a", "b")], ["a", "b", "c"], id="split-pair-ties"),
        pytest.param([("c", "a"), ("a", "b"), ("b", "c")], ["a", "b", "c"], id="cycle-ties"),
        pytest.param([], ["a", "b", "c"], id="no-results"),
    ],
)
def test_tied_scores_share_a_rank_and_are_listed_by_essay_id(
    results: list[tuple[str, str]], expected_order: list[str]
) -> None:
    result = fit_bradley_terry(["c", "b", "a"], results)

    assert [s.essay_id for s in result.scores] == expected_order
    assert [s.rank for s in result.scores] == [1, 1, 1]


def test_ties_use_competition_ranking() -> None:
    # a beats b and c once each; b and c are symmetric, hence tied; d loses to all three.
    results = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d")]

    result = fit_bradley_terry(["d", "c", "b", "a"], results)

    assert [(s.essay_id, s.rank) for s in result.scores] == [
        ("a", 1),
        ("b", 2),
        ("c", 2),
        ("d", 4),
    ]


@pytest.mark.parametrize(
    ("scores", "ranks"),
    [
        ([], []),
        ([3.0], [1]),
        ([3.0, 2.0, 1.0], [1, 2, 3]),
        ([3.0, 2.0, 2.0, 1.0], [1, 2, 2, 4]),
        ([1.0, 1.0, 1.0], [1, 1, 1]),
        ([5.0, 5.0, 0.0, 0.0, -1.0], [1, 1, 3, 3, 5]),
    ],
)
def test_competition_ranks(scores: list[float], ranks: list[int]) -> None:
    assert competition_ranks(scores) == ranks


def test_comparisons_count_every_success_an_essay_took_part_in() -> None:
    results = [("a", "b"), ("b", "a"), ("a", "c"), ("a", "b")]

    counts = {
        s.essay_id: s.comparisons for s in fit_bradley_terry(["a", "b", "c", "d"], results).scores
    }

    assert counts == {"a": 4, "b": 3, "c": 1, "d": 0}


def test_standard_error_shrinks_for_essays_with_more_comparisons() -> None:
    # "busy" and "quiet" both win exactly half their games against the same opponents,
    # so they score alike; only the amount of evidence differs.
    opponents = [f"o{i}" for i in range(6)]
    results = []
    for k, opponent in enumerate(opponents):
        results += [("busy", opponent), (opponent, "busy")] * 3
        if k < 2:
            results += [("quiet", opponent), (opponent, "quiet")]
    for a, b in itertools.pairwise(opponents):
        results += [(a, b), (b, a)]

    result = {
        s.essay_id: s for s in fit_bradley_terry(["busy", "quiet", *opponents], results).scores
    }

    assert result["busy"].comparisons > result["quiet"].comparisons
    assert result["busy"].se < result["quiet"].se


def test_reliability_rises_as_comparisons_accumulate() -> None:
    reliabilities = []
    for n_comparisons in (60, 200, 600, 2000):
        ids, data = simulate(seed=11, n_essays=30, n_comparisons=n_comparisons)
        reliability = fit_bradley_terry(ids, named(ids, data)).reliability
        assert reliability is not None
        reliabilities.append(reliability)

    assert reliabilities == sorted(reliabilities)
    assert 0.0 <= reliabilities[0] < reliabilities[-1] <= 1.0


@pytest.mark.parametrize(
    ("scores", "ses", "expected"),
    [
        pytest.param([0.0], [1.0], None, id="single-essay"),
        pytest.param([0.5, 0.5], [0.1, 0.1], None, id="no-spread"),
        pytest.param([-1.0, 1.0], [10.0, 10.0], 0.0, id="error-swamps-spread-clamps-to-0"),
        pytest.param([-1.0, 1.0], [0.0, 0.0], 1.0, id="no-error"),
        pytest.param([-1.0, 1.0], [1.0, 1.0], 0.5, id="half-error"),
    ],
)
def test_scale_separation_reliability(
    scores: list[float], ses: list[float], expected: float | None
) -> None:
    assert scale_separation_reliability(np.array(scores), np.array(ses)) == expected


def test_no_results_give_zero_scores_finite_ses_and_no_reliability() -> None:
    result = fit_bradley_terry(["a", "b", "c", "d"], [])

    assert all(s.score == 0.0 for s in result.scores)
    # Only the ridge informs the scores: centred prior variance (1 - 1/n) / (2·alpha).
    expected_se = math.sqrt((1 - 1 / 4) / (2 * DEFAULT_RIDGE))
    assert all(s.se == pytest.approx(expected_se) for s in result.scores)
    assert result.reliability is None


def test_uncompared_essay_stays_at_the_batch_average() -> None:
    ids, data = simulate(seed=21, n_essays=10, n_comparisons=120)
    ids = add_unseen_essay(ids)

    result = {s.essay_id: s for s in fit_bradley_terry(ids, named(ids, data)).scores}

    assert result["never-compared"].score == pytest.approx(0.0, abs=1e-9)
    assert result["never-compared"].comparisons == 0
    assert result["never-compared"].se > max(s.se for s in result.values() if s.comparisons)


def test_an_essay_that_won_everything_gets_a_finite_top_score() -> None:
    ids, data = simulate(seed=22, n_essays=10, n_comparisons=100)

    result = fit_bradley_terry(ids, named(ids, all_wins_for_first(data)))

    top = result.scores[0]
    assert top.essay_id == ids[0]
    assert math.isfinite(top.score)
    assert math.isfinite(top.se)


@pytest.mark.parametrize(
    ("essay_ids", "results", "ridge", "message"),
    [
        pytest.param(["a", "b"], [("a", "x")], DEFAULT_RIDGE, "result 0 names unknown loser 'x'"),
        pytest.param(
            ["a", "b"], [("a", "b"), ("x", "b")], DEFAULT_RIDGE, "result 1 names unknown winner 'x'"
        ),
        pytest.param(
            ["a", "b"], [("a", "a")], DEFAULT_RIDGE, "result 0 compares essay 'a' with itself"
        ),
        pytest.param(["a", "b", "a"], [], DEFAULT_RIDGE, "essay id 'a' appears more than once"),
        pytest.param(["a", "b"], [], 0.0, r"ridge must be a finite number >= 1e-10, got 0\.0"),
        pytest.param(["a", "b"], [], -0.1, "ridge must be a finite number >= 1e-10"),
        pytest.param(["a", "b"], [], 1e-11, "ridge must be a finite number >= 1e-10"),
        pytest.param(["a", "b"], [], math.nan, "ridge must be a finite number >= 1e-10"),
        pytest.param(["a", "b"], [], math.inf, "ridge must be a finite number >= 1e-10"),
    ],
)
def test_invalid_input_is_rejected_precisely(
    essay_ids: list[str], results: list[tuple[str, str]], ridge: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_bradley_terry(essay_ids, results, ridge=ridge)


@pytest.mark.parametrize(
    ("essay_ids", "expected_scores"),
    [
        pytest.param([], (), id="empty-batch"),
        pytest.param(["solo"], (("solo", 0.0, 0.0, 1, 0),), id="single-essay"),
    ],
)
def test_degenerate_batches(essay_ids: list[str], expected_scores: tuple[object, ...]) -> None:
    result = fit_bradley_terry(essay_ids, [])

    assert tuple((s.essay_id, s.score, s.se, s.rank, s.comparisons) for s in result.scores) == (
        expected_scores
    )
    assert result.reliability is None


def test_output_does_not_depend_on_input_order() -> None:
    ids, data = simulate(seed=31, n_essays=20, n_comparisons=150)
    results = named(ids, data)
    shuffler = random.Random(0)
    shuffled_ids, shuffled_results = ids[:], results[:]
    shuffler.shuffle(shuffled_ids)
    shuffler.shuffle(shuffled_results)

    first = fit_bradley_terry(ids, results)

    assert fit_bradley_terry(ids, results) == first
    assert fit_bradley_terry(shuffled_ids, shuffled_results) == first


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]]]:
    n = draw(st.integers(min_value=2, max_value=8))
    ids = [f"e{i}" for i in range(n)]
    pair = st.tuples(st.sampled_from(ids), st.sampled_from(ids)).filter(lambda p: p[0] != p[1])
    return ids, draw(st.lists(pair, max_size=40))


RIDGES = st.sampled_from([MIN_RIDGE, 1e-6, 0.001, DEFAULT_RIDGE, 0.1, 1.0, 1e6])


@settings(max_examples=300, deadline=None)
@given(batches(), RIDGES)
def test_fit_properties_hold_for_any_batch_and_ridge(
    batch: tuple[list[str], list[tuple[str, str]]], ridge: float
) -> None:
    ids, results = batch

    result = fit_bradley_terry(ids, results, ridge=ridge)
    scores = [s.score for s in result.scores]

    assert sorted(s.essay_id for s in result.scores) == ids
    assert [s.rank for s in result.scores] == competition_ranks([round(x, 9) for x in scores])
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(scores))
    assert abs(sum(scores)) < 1e-9
    assert all(math.isfinite(s.score) and math.isfinite(s.se) and s.se > 0 for s in result.scores)
    assert sum(s.comparisons for s in result.scores) == 2 * len(results)
    assert result.reliability is None or 0.0 <= result.reliability <= 1.0


@settings(max_examples=100, deadline=None)
@given(batches())
def test_reversing_every_judgement_mirrors_the_scores(
    batch: tuple[list[str], list[tuple[str, str]]],
) -> None:
    ids, results = batch

    forward = fit_bradley_terry(ids, results).score_map()
    backward = fit_bradley_terry(ids, [(loser, winner) for winner, loser in results]).score_map()

    for essay_id in ids:
        assert backward[essay_id] == pytest.approx(-forward[essay_id], abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(batches(), RIDGES)
def test_any_batch_minimises_choix_objective(
    batch: tuple[list[str], list[tuple[str, str]]], ridge: float
) -> None:
    # We check optimality under choix's own objective rather than closeness to its answer:
    # on flat, weakly penalised problems choix's Newton-CG stops ~1e-6 short (one win
    # between two essays at ridge 0.001 is enough), while its gradient tells the truth.
    ids, results = batch
    index = {essay_id: i for i, essay_id in enumerate(ids)}
    data = [(index[w], index[loser]) for w, loser in results]
    choix_objective = PairwiseFcts(data, ridge)

    ours = scores_in_id_order(fit_bradley_terry(ids, results, ridge=ridge), ids)
    reference = choix.opt_pairwise(len(ids), data, alpha=ridge)

    assert np.max(np.abs(choix_objective.gradient(ours.copy()))) < 1e-9
    assert choix_objective.objective(ours) <= choix_objective.objective(reference) + 1e-12


def test_tiny_ridge_with_an_unbeaten_essay_still_converges() -> None:
    """Found by hypothesis: at ridge 1e-10 rounding along the flat 'shift everyone'
    direction stalled Newton; the step is now kept mean-free."""
    results = [
        ("e0", "e1"),
        ("e0", "e4"),
        ("e0", "e4"),
        ("e1", "e0"),
        ("e1", "e0"),
        ("e1", "e0"),
        ("e1", "e3"),
        ("e1", "e3"),
        ("e1", "e4"),
        ("e1", "e4"),
        ("e2", "e0"),
        ("e2", "e1"),
        ("e2", "e3"),
        ("e3", "e0"),
        ("e4", "e1"),
        ("e4", "e1"),
        ("e4", "e3"),
        ("e4", "e3"),
    ]
    result = fit_bradley_terry(["e0", "e1", "e2", "e3", "e4"], results, ridge=1e-10)
    assert result.scores[0].essay_id == "e2"
    assert abs(sum(s.score for s in result.scores)) < 1e-9


# --- large batches: sparse solves, warm starts, standard errors on demand --------------------


def test_sparse_solver_above_a_few_hundred_essays_agrees_with_choix() -> None:
    n = bradley_terry.SPARSE_ABOVE + 100
    ids, data = simulate(11, n, 20 * n)
    ours = scores_in_id_order(fit_bradley_terry(ids, named(ids, data)), ids)
    reference = choix.opt_pairwise(n, data, alpha=DEFAULT_RIDGE, tol=1e-10)
    np.testing.assert_allclose(ours, reference - reference.mean(), rtol=0, atol=1e-6)


def test_sparse_solver_handles_a_disconnected_network_with_a_tiny_ridge() -> None:
    n = 2 * (bradley_terry.SPARSE_ABOVE // 2) + 50  # even: every essay on an island
    ids, _ = simulate(12, n, 0)
    data = [(i, i + 1) for i in range(0, n - 1, 2)]  # one comparison per essay: n/2 islands
    ridge = 1e-6
    ours = scores_in_id_order(fit_bradley_terry(ids, named(ids, data), ridge=ridge), ids)
    # Each island (winner +x, loser -x) minimises log(1 + e^(-2x)) + 2·ridge·x², whose
    # derivative -2/(1 + e^(2x)) + 4·ridge·x is increasing in x: bisect for its root.
    low, high = 0.0, 50.0
    for _ in range(200):
        middle = (low + high) / 2
        if -2.0 / (1.0 + math.exp(2.0 * middle)) + 4.0 * ridge * middle < 0:
            low = middle
        else:
            high = middle
    expected = np.array([low if i % 2 == 0 else -low for i in range(n)])
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize(("n_essays", "n_comparisons"), [(40, 600), (500, 6000)])
def test_a_warm_start_reaches_the_same_optimum(n_essays: int, n_comparisons: int) -> None:
    ids, data = simulate(13, n_essays, n_comparisons)
    cold = fit_bradley_terry(ids, named(ids, data))
    earlier = fit_bradley_terry(ids, named(ids, data[: n_comparisons // 2])).score_map()
    far_off = {essay: 5.0 * (-1) ** i for i, essay in enumerate(ids)}
    for start in (earlier, far_off, cold.score_map()):
        warm = fit_bradley_terry(ids, named(ids, data), initial=start)
        np.testing.assert_allclose(
            scores_in_id_order(warm, ids), scores_in_id_order(cold, ids), rtol=0, atol=1e-9
        )
        assert [s.essay_id for s in warm.scores] == [s.essay_id for s in cold.scores]


def test_scores_without_standard_errors_are_the_same_scores() -> None:
    ids, data = simulate(14, 30, 300)
    full = fit_bradley_terry(ids, named(ids, data))
    bare = fit_bradley_terry(ids, named(ids, data), with_standard_errors=False)
    assert [(s.essay_id, s.score, s.rank) for s in bare.scores] == [
        (s.essay_id, s.score, s.rank) for s in full.scores
    ]
    assert all(math.isnan(s.se) for s in bare.scores)
    assert bare.reliability is None
    assert full.reliability is not None


def test_above_the_dense_limit_standard_errors_come_from_each_essays_information(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids, data = simulate(15, 400, 6000)
    exact = ses_in_id_order(fit_bradley_terry(ids, named(ids, data)), ids)
    monkeypatch.setattr(bradley_terry, "DENSE_COVARIANCE_UP_TO", 100)
    approximate = ses_in_id_order(fit_bradley_terry(ids, named(ids, data)), ids)
    assert np.all(approximate <= 1.01 * exact)
    assert np.all(approximate >= 0.75 * exact)
    assert np.median(approximate / exact) > 0.95


@pytest.mark.parametrize("n", [3, 24, 100])
def test_fitting_many_result_sets_together_gives_each_fit_bit_for_bit(n: int) -> None:
    """Split-half reliability fits its halves together; every fit must equal, to the
    last bit, the one ``fit`` makes alone: sparse and dense sets, empty ones, an essay
    that won everything (a long walk out under the line search), a tiny ridge."""
    rng = np.random.default_rng(n)
    for ridge in (0.2, 1e-6):
        problems = []
        for size in (0, 1, n, 3 * n, 6 * n):
            winners = rng.integers(0, n, size)
            losers = rng.integers(0, n, size)
            keep = winners != losers
            problems.append((winners[keep].astype(np.intp), losers[keep].astype(np.intp)))
        champion = np.arange(1, n, dtype=np.intp)
        problems.append((np.zeros(n - 1, dtype=np.intp), champion))
        together = bradley_terry.fit_many(n, problems, ridge)
        assert len(together) == len(problems)
        for (winners, losers), theta in zip(problems, together, strict=True):
            alone = bradley_terry.fit(n, winners, losers, ridge)
            assert np.array_equal(theta, alone)


@pytest.mark.parametrize("n", [2, 24, 256])
def test_pair_counts_by_code_equal_the_sorted_unique_counts(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches count pairs over all n² codes instead of sorting: the same pairs in
    the same order with the same counts, hence the same fits, bit for bit."""
    rng = np.random.default_rng(n)
    winners = rng.integers(0, n, 8 * n)
    losers = rng.integers(0, n, 8 * n)
    keep = winners != losers
    winners, losers = winners[keep].astype(np.intp), losers[keep].astype(np.intp)
    by_code = bradley_terry.PairwiseCounts(n, winners, losers)
    monkeypatch.setattr(bradley_terry, "_COUNT_BY_CODE_UP_TO", 0)
    by_sorting = bradley_terry.PairwiseCounts(n, winners, losers)
    for field in ("first", "second", "total", "first_wins", "second_wins"):
        a, b = getattr(by_code, field), getattr(by_sorting, field)
        assert a.dtype == b.dtype
        assert np.array_equal(a, b)
