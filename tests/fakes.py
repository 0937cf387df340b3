"""Small honest fakes shared by the tests."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

from application.batches import BatchApplication, RegisterBatch
from application.dispatcher import OutboxDispatcher
from application.ports import ComparisonRequest
from domain.policy import BatchPolicy
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    Essay,
    FailureDetails,
    SuccessDetails,
)
from infrastructure.embedded import InProcessTransport, run_until_idle
from infrastructure.persistence.positions import position_store_for


class ThetaJudge:
    """Prefers the essay with the higher latent quality, with logistic noise."""

    def __init__(self, thetas: dict[str, float], failure_rate: float = 0.0, seed: int = 0):
        self.thetas = thetas
        self.failure_rate = failure_rate
        self.seed = seed

    def outcome(self, request: ComparisonRequest) -> ComparisonOutcome:
        rng = random.Random(f"{self.seed}:{request.comparison_id}")
        if rng.random() < self.failure_rate:
            return ComparisonOutcome(
                request.comparison_id,
                failure=FailureDetails("PROVIDER_ERROR", "simulated failure", False),
            )
        margin = self.thetas.get(request.essay_a, 0.0) - self.thetas.get(request.essay_b, 0.0)
        winner = request.essay_a if rng.random() < 1 / (1 + math.exp(-margin)) else request.essay_b
        return ComparisonOutcome(
            request.comparison_id,
            success=SuccessDetails(winner, 3, "fake", "simulated", "fake-judge"),
        )

    def __call__(
        self, requests: Sequence[ComparisonRequest]
    ) -> list[tuple[UUID, ComparisonOutcome]]:
        return [(UUID(r.batch_id), self.outcome(r)) for r in requests]


def essays(n: int, anchors: int = 0) -> tuple[Essay, ...]:
    return tuple(Essay(f"essay-{i:02d}", f"hash-{i:02d}", is_anchor=i < anchors) for i in range(n))


def thetas_for(n: int, seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    return {f"essay-{i:02d}": rng.gauss(0.0, 1.5) for i in range(n)}


class StepClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def run_batch(
    app: BatchApplication,
    n: int = 8,
    mode: BatchingMode | None = None,
    failure_rate: float = 0.0,
    budget: int | None = None,
    ref: str = "batch-1",
    seed: int = 5,
    policy: BatchPolicy | None = None,
    allow_sparse: bool = False,
) -> UUID:
    """Submit a batch and drive it to its end through the dispatcher and a fake judge."""
    batch_id = app.submit(
        RegisterBatch(
            ref,
            essays(n),
            requested_mode=mode,
            budget_override=budget,
            seed=seed,
            policy=policy or BatchPolicy(),
            allow_sparse=allow_sparse,
        )
    )
    transport = InProcessTransport()
    dispatcher = OutboxDispatcher(app, transport, position_store_for(app))
    run_until_idle(app, dispatcher, transport, ThetaJudge(thetas_for(n), failure_rate))
    return batch_id
