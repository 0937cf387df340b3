"""Exponential backoff with jitter, as a pure function of the retry number.

The random part is passed in as a fraction in [0, 1), so the caller decides where the
randomness comes from (a seeded ``random.Random`` in production and in tests alike).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``n`` (1 = first retry): ``base · 2^(n-1)``, capped at ``max``,
    of which the ``jitter`` share is randomised (0 = fixed delays, 1 = "full jitter")."""

    base_seconds: float = 0.5
    max_seconds: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_seconds < 0 or self.max_seconds < 0:
            raise ValueError("backoff delays must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must lie in [0, 1]")

    def delay(self, retry_number: int, random_fraction: float) -> float:
        if retry_number < 1:
            raise ValueError("retry_number starts at 1")
        if not 0.0 <= random_fraction <= 1.0:
            raise ValueError("random_fraction must lie in [0, 1]")
        exponential = min(self.max_seconds, self.base_seconds * 2.0 ** min(retry_number - 1, 64))
        return exponential * (1.0 - self.jitter + self.jitter * random_fraction)
