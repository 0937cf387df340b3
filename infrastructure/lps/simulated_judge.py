"""A simulated comparative judge built on the Bradley-Terry model.

Each essay has a latent quality θ. Shown essays A and B, the judge prefers A with
probability logistic(θ_A - θ_B + position_bias) — the bias models the well-known
tendency of LLM judges to favour whichever essay they read first. Every draw comes from
``random.Random(f"{seed}:{comparison_id}")``, so the same comparison id always gets the
same answer, in any process and in any order (Python's ``hash()`` is salted per process
and would not do).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping

from application.lps.ports import ProviderError, ProviderVerdict

# price per token of a small hosted model, to give the demo plausible costs
_PROMPT_USD_PER_TOKEN = 0.15e-6
_COMPLETION_USD_PER_TOKEN = 0.60e-6
# |margin| thresholds for confidence 2, 3, 4 and 5
_CONFIDENCE_STEPS = (0.3, 0.8, 1.5, 2.5)


def logistic(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def draw_thetas(essay_ids: Iterable[str], seed: int, spread: float = 1.0) -> dict[str, float]:
    """A normal θ per essay with standard deviation ``spread`` (logit scale), drawn from
    (seed, essay id) — independent of order."""
    return {
        essay_id: random.Random(f"{seed}:theta:{essay_id}").gauss(0.0, spread)
        for essay_id in essay_ids
    }


def confidence_for(margin: float) -> int:
    """1..5: the clearer the quality gap the judge perceives, the surer it says it is."""
    return 1 + sum(1 for step in _CONFIDENCE_STEPS if abs(margin) >= step)


class SimulatedJudge:
    """Judges pairs of essays from known θs; unknown essays count as θ = 0."""

    def __init__(
        self,
        thetas: Mapping[str, float],
        seed: int,
        position_bias: float = 0.1,
        failure_rate: float = 0.0,
        *,
        failures_retryable: bool = False,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must lie in [0, 1]")
        self.thetas = dict(thetas)
        self.seed = seed
        self.position_bias = position_bias
        self.failure_rate = failure_rate
        self.failures_retryable = failures_retryable

    def theta(self, essay_id: str) -> float:
        return self.thetas.get(essay_id, 0.0)

    def margin(self, essay_a: str, essay_b: str) -> float:
        return self.theta(essay_a) - self.theta(essay_b) + self.position_bias

    def probability_a_wins(self, essay_a: str, essay_b: str) -> float:
        return logistic(self.margin(essay_a, essay_b))

    def judge(self, comparison_id: str, essay_a: str, essay_b: str) -> ProviderVerdict:
        """The verdict for this comparison; raises ``ProviderError`` for a simulated failure."""
        rng = random.Random(f"{self.seed}:{comparison_id}")
        if rng.random() < self.failure_rate:
            raise ProviderError(
                f"simulated judge failure for comparison {comparison_id}",
                code="SIMULATED_FAILURE",
                retryable=self.failures_retryable,
            )
        margin = self.margin(essay_a, essay_b)
        a_wins = rng.random() < logistic(margin)
        winner, loser = (essay_a, essay_b) if a_wins else (essay_b, essay_a)
        confidence = confidence_for(margin)
        prompt_tokens = 900 + rng.randint(0, 300)
        completion_tokens = 60 + 10 * confidence + rng.randint(0, 40)
        cost = prompt_tokens * _PROMPT_USD_PER_TOKEN + completion_tokens * _COMPLETION_USD_PER_TOKEN
        latency_ms = 400.0 + 12.0 * completion_tokens + rng.uniform(0.0, 200.0)
        return ProviderVerdict(
            winner_id=winner,
            confidence=confidence,
            justification=(
                f"Essay {winner} argues more convincingly than essay {loser} "
                f"(simulated judge, confidence {confidence}/5)."
            ),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=round(cost, 8),
            latency_ms=round(latency_ms, 1),
        )


class SeededSimulatedJudge(SimulatedJudge):
    """The simulated judge for a worker that has never seen the essays.

    Each essay's latent quality θ is drawn from ``(seed, essay id)`` on first use — the
    same draw as ``draw_thetas`` — so every worker process, in any order, judges alike.
    """

    def theta(self, essay_id: str) -> float:
        theta = self.thetas.get(essay_id)
        if theta is None:
            theta = random.Random(f"{self.seed}:theta:{essay_id}").gauss(0.0, 1.0)
            self.thetas[essay_id] = theta
        return theta


def thetas_from_texts(texts: Mapping[str, str]) -> dict[str, float]:
    """θ for essays the simulated judge reads: the log of the number of distinct words,
    centred. A stand-in for quality that lets ``run`` rank real essays offline."""
    raw = {key: math.log(1 + len(set(text.lower().split()))) for key, text in texts.items()}
    mean = sum(raw.values()) / len(raw) if raw else 0.0
    return {key: value - mean for key, value in raw.items()}
