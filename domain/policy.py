"""The batch policy: every threshold the workflow uses, resolved once per batch.

A batch records its own resolved copy in ``BatchRegistered`` so that replaying a log never
depends on today's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

POLICY_VERSION = 1


@dataclass(frozen=True)
class BatchPolicy:
    max_pairs_cap: int = 120
    min_success_rate: float = 0.8
    stability_threshold: float = 0.025
    min_successes_for_stability: int = 12
    small_net_max_essays: int = 3
    small_net_resampling_passes: int = 4
    regular_resampling_passes: int = 1
    regular_resampling_min_coverage: float = 1.0
    bundle_size_cap: int = 64
    comparison_deadline_seconds: float = 4 * 3600.0
    provider_batch_allowed_providers: tuple[str, ...] = ("openai", "anthropic", "simulated")
    policy_version: int = POLICY_VERSION

    def __post_init__(self) -> None:
        if self.max_pairs_cap < 1:
            raise ValueError("max_pairs_cap must be at least 1")
        if not 0.0 <= self.min_success_rate <= 1.0:
            raise ValueError("min_success_rate must lie in [0, 1]")
        if self.stability_threshold < 0:
            raise ValueError("stability_threshold must not be negative")
        if not 1 <= self.bundle_size_cap <= 64:
            raise ValueError("bundle_size_cap must lie in 1..64")
        if self.comparison_deadline_seconds <= 0:
            raise ValueError("comparison_deadline_seconds must be positive")

    def with_budget_override(self, override: int | None) -> BatchPolicy:
        """A request may lower the comparison budget, never raise it."""
        if override is None:
            return self
        if override < 1:
            raise ValueError("budget override must be at least 1")
        return replace(self, max_pairs_cap=min(self.max_pairs_cap, override))
