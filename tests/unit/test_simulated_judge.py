"""The simulated judge: deterministic per (seed, comparison id), Bradley-Terry in law."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys

import pytest

from application.lps import ProviderError
from infrastructure.lps.simulated_judge import SimulatedJudge, confidence_for, draw_thetas, logistic

THETAS = {"strong": 1.5, "middle": 0.0, "weak": -1.5}


def test_the_same_comparison_gets_the_same_verdict_every_time():
    one = SimulatedJudge(THETAS, seed=5)
    two = SimulatedJudge(THETAS, seed=5)
    assert one.judge("cmp-1", "strong", "weak") == two.judge("cmp-1", "strong", "weak")
    # order of calls does not matter
    first = [one.judge(f"cmp-{i}", "middle", "weak") for i in range(20)]
    second = [two.judge(f"cmp-{i}", "middle", "weak") for i in reversed(range(20))][::-1]
    assert first == second


def test_another_seed_gives_other_verdicts():
    a = [SimulatedJudge(THETAS, seed=1).judge(f"c{i}", "middle", "weak") for i in range(50)]
    b = [SimulatedJudge(THETAS, seed=2).judge(f"c{i}", "middle", "weak") for i in range(50)]
    assert a != b


def test_verdicts_do_not_depend_on_pythons_hash_seed():
    code = (
        "from infrastructure.lps.simulated_judge import SimulatedJudge, draw_thetas;"
        "t = draw_thetas(['a', 'b'], 9);"
        "print([SimulatedJudge(t, 9).judge(f'c{i}', 'a', 'b').winner_id for i in range(30)], t)"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


@pytest.mark.parametrize(
    ("a", "b", "bias"),
    [("strong", "weak", 0.1), ("weak", "strong", 0.1), ("middle", "middle2", 0.5)],
)
def test_a_wins_with_the_bradley_terry_probability(a, b, bias):
    judge = SimulatedJudge({**THETAS, "middle2": 0.0}, seed=11, position_bias=bias)
    expected = logistic(judge.theta(a) - judge.theta(b) + bias)
    assert judge.probability_a_wins(a, b) == pytest.approx(expected)
    n = 4000
    wins = sum(judge.judge(f"c{i}", a, b).winner_id == a for i in range(n))
    tolerance = 4 * math.sqrt(expected * (1 - expected) / n)
    assert abs(wins / n - expected) < tolerance


def test_position_bias_favours_the_essay_shown_first():
    judge = SimulatedJudge({"x": 0.0, "y": 0.0}, seed=3, position_bias=0.8)
    wins = sum(judge.judge(f"c{i}", "x", "y").winner_id == "x" for i in range(2000))
    assert wins / 2000 > 0.6


def test_unknown_essays_count_as_theta_zero():
    judge = SimulatedJudge({}, seed=1, position_bias=0.0)
    assert judge.theta("who") == 0.0
    assert judge.probability_a_wins("who", "what") == 0.5


def test_failure_rate_one_always_fails_and_zero_never_does():
    failing = SimulatedJudge(THETAS, seed=1, failure_rate=1.0)
    with pytest.raises(ProviderError) as raised:
        failing.judge("c1", "strong", "weak")
    assert raised.value.code == "SIMULATED_FAILURE"
    assert not raised.value.retryable
    healthy = SimulatedJudge(THETAS, seed=1, failure_rate=0.0)
    assert all(healthy.judge(f"c{i}", "strong", "weak") for i in range(200))


def test_failures_happen_at_roughly_the_configured_rate_and_can_be_retryable():
    judge = SimulatedJudge(THETAS, seed=4, failure_rate=0.2, failures_retryable=True)
    failed = 0
    for i in range(2000):
        try:
            judge.judge(f"c{i}", "strong", "weak")
        except ProviderError as error:
            assert error.retryable
            failed += 1
    assert 0.17 < failed / 2000 < 0.23


def test_a_failure_rate_outside_zero_to_one_is_rejected():
    with pytest.raises(ValueError):
        SimulatedJudge(THETAS, seed=1, failure_rate=1.5)


def test_confidence_rises_with_the_margin():
    margins = [0.0, 0.2, 0.3, 0.8, 1.5, 2.5, 9.0, -9.0]
    assert [confidence_for(m) for m in margins] == [1, 1, 2, 3, 4, 5, 5, 5]
    judge = SimulatedJudge(THETAS, seed=1, position_bias=0.0)
    assert judge.judge("c1", "strong", "weak").confidence == 5
    assert judge.judge("c1", "middle", "middle").confidence == 1


def test_a_verdict_has_plausible_usage_cost_latency_and_a_short_justification():
    verdict = SimulatedJudge(THETAS, seed=1).judge("c1", "strong", "weak")
    assert verdict.winner_id in ("strong", "weak")
    assert verdict.winner_id in verdict.justification
    assert len(verdict.justification) <= 500
    assert verdict.prompt_tokens > 0 and verdict.completion_tokens > 0
    assert verdict.cost_usd > 0 and verdict.latency_ms > 0


def test_draw_thetas_is_deterministic_order_independent_and_standard_normal():
    ids = [f"essay-{i}" for i in range(3000)]
    thetas = draw_thetas(ids, seed=42)
    assert thetas == draw_thetas(list(reversed(ids)), seed=42)
    assert thetas != draw_thetas(ids, seed=43)
    values = list(thetas.values())
    assert abs(statistics.fmean(values)) < 0.1
    assert abs(statistics.pstdev(values) - 1.0) < 0.1
