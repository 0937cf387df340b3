"""The batch policy: every threshold the workflow uses, resolved once per batch.

A batch records its own resolved copy in ``BatchRegistered`` so that replaying a log never
depends on today's settings.

Policy versions (``policy_version``; a batch keeps the version it was registered under):

1. The original service's rules.
2. Stability needs new evidence and the success rate; a batch fails as soon as its
   success rate can no longer be met (``success_rate_unreachable``); a pair that failed
   ``max_attempts_per_pair`` times is given up; a batch whose budget cannot give every
   essay ``min_appearances`` comparisons is refused unless accepted as sparse; the
   Bradley–Terry ridge is chosen on evidence (``docs/continuation.md``); an optional
   ``reliability_target`` stopping rule (off by default).

Events written under version 1 carry no value for the fields version 2 added; the batch's
upcaster fills them with ``VERSION_1_VALUES``, which reproduce the version-1 behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from domain.values import BatchingMode

POLICY_VERSION = 2

DEFAULT_RIDGE = 0.2
"""The Bradley–Terry ridge of policy version 2: a Gaussian prior of variance
``1/(2·0.2) = 2.5`` (SD 1.6 logits), about the spread of real CJ scales. On simulated
batches (``bench/bench_prior.py``; table in ``docs/continuation.md``) it has the lowest
RMSE against the true abilities averaged over SD 1–2, 24–300 essays and 5–10 appearances
per essay, about half that of version 1's 0.01, with the same rank correlation."""

VERSION_1_VALUES: dict[str, Any] = {
    "max_attempts_per_pair": 0,
    "min_appearances": 0,
    "ridge": 0.01,
    "reliability_target": None,
}
"""What the fields added by version 2 mean for a version-1 policy (0: no limit)."""

#: OpenAI Batch and Anthropic Message Batches promise results within 24 h; 2 h of margin
#: covers polling, collecting and the outcome's way back
PROVIDER_BATCH_WINDOW_SECONDS = 24 * 3600.0
PROVIDER_BATCH_DEADLINE_SECONDS = PROVIDER_BATCH_WINDOW_SECONDS + 2 * 3600.0


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
    max_attempts_per_pair: int = 3
    min_appearances: int = 2
    ridge: float = DEFAULT_RIDGE
    reliability_target: float | None = None

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
        if self.max_attempts_per_pair < 0 or self.min_appearances < 0:
            raise ValueError("max_attempts_per_pair and min_appearances must not be negative")
        if not (math.isfinite(self.ridge) and self.ridge > 0):
            raise ValueError("ridge must be a positive number")
        if self.reliability_target is not None and not 0.0 < self.reliability_target <= 1.0:
            raise ValueError("reliability_target must lie in (0, 1]")

    def deadline_seconds_for(self, mode: BatchingMode | None) -> float:
        """How long a requested comparison may take: a provider batch API's window plus a
        margin in ``provider_batch_api`` mode, ``comparison_deadline_seconds`` otherwise.

        The window is a constant of the providers, not a stored policy field: the deadline
        itself is recorded on each ``ComparisonsRequested``, so replays never recompute it.
        """
        if mode is BatchingMode.PROVIDER_BATCH_API:
            return max(self.comparison_deadline_seconds, PROVIDER_BATCH_DEADLINE_SECONDS)
        return self.comparison_deadline_seconds

    def with_budget_override(self, override: int | None) -> BatchPolicy:
        """A request may lower the comparison budget, never raise it."""
        if override is None:
            return self
        if override < 1:
            raise ValueError("budget override must be at least 1")
        return replace(self, max_pairs_cap=min(self.max_pairs_cap, override))

    def smallest_budget(self, essay_count: int) -> int:
        """The smallest budget that gives each essay ``min_appearances`` comparisons."""
        return math.ceil(essay_count * self.min_appearances / 2)

    @property
    def fails_early(self) -> bool:
        return self.policy_version >= 2

    @property
    def stability_needs_new_evidence(self) -> bool:
        return self.policy_version >= 2


def as_recorded(policy: BatchPolicy) -> BatchPolicy:
    """A policy decoded from an event, with the fields its version did not have set to
    what that version meant."""
    if policy.policy_version >= 2:
        return policy
    return replace(policy, **VERSION_1_VALUES)
