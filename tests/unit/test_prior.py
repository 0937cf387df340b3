"""The policy's Bradley–Terry ridge: versioned, and still choix's penalised objective."""

from __future__ import annotations

import random

import choix
import numpy as np
import pytest

from domain.policy import VERSION_1_VALUES, BatchPolicy, as_recorded
from domain.scoring import fit_bradley_terry

RIDGE = BatchPolicy().ridge


def test_version_2_chose_its_ridge_and_version_1_keeps_its_own() -> None:
    assert BatchPolicy().policy_version == 2
    assert RIDGE == 0.2
    assert as_recorded(BatchPolicy(policy_version=1)).ridge == VERSION_1_VALUES["ridge"] == 0.01


@pytest.mark.parametrize(
    ("seed", "n", "m", "everything_to_first"),
    [(1, 24, 120, False), (2, 100, 500, False), (3, 12, 60, True), (4, 300, 1500, False)],
)
def test_scores_at_the_policy_ridge_agree_with_choix(
    seed: int, n: int, m: int, everything_to_first: bool
) -> None:
    rng = random.Random(seed)
    data = []
    for _ in range(m):
        a, b = rng.sample(range(n), 2)
        if everything_to_first and b == 0:
            a, b = b, a
        data.append((a, b))
    ids = [f"e{i:03d}" for i in range(n)]
    result = fit_bradley_terry(
        ids, [(ids[winner], ids[loser]) for winner, loser in data], RIDGE
    ).score_map()
    ours = np.array([result[e] for e in ids])
    reference = choix.opt_pairwise(n, data, alpha=RIDGE, tol=1e-10)
    np.testing.assert_allclose(ours, reference - reference.mean(), rtol=0, atol=1e-6)
