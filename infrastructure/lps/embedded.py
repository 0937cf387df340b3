"""The in-process LPS of embedded mode: the real executor over the provider the settings
name (``build_provider``: simulated, openai or anthropic).

Nothing is short-circuited: request messages become ``QueuedRequest``s, go through bundle
formation and the queue mode's strategy (provider batch jobs included), and come back as
``ComparisonOutcomeV2`` messages — the same path a broker message takes. Batch jobs run on
a virtual clock that the executor's "sleep" advances when the provider is simulated, so a
demo does not wait for simulated polling intervals; a real provider's jobs are polled on
the real clock every ``lps_job_poll_seconds``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from application.lps import JobPolling, QueuedRequestExecutor
from application.lps.executor import utc_now
from domain.lps import QueueProcessingMode
from infrastructure.lps.providers import build_provider
from infrastructure.lps.simulated_judge import SimulatedJudge
from infrastructure.messaging.contracts import (
    ComparisonOutcomeV1,
    ComparisonOutcomeV2,
    ComparisonRequestV1,
)
from infrastructure.metrics import lps_observer
from infrastructure.settings import Settings


class VirtualClock:
    """Starts at the real time and moves only when something sleeps."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def catch_up(self) -> None:
        self.now = max(self.now, datetime.now(UTC))


class EmbeddedLPS:
    """Executes comparison requests in-process and reports what it did."""

    def __init__(
        self,
        judge: SimulatedJudge | None = None,
        *,
        settings: Settings | None = None,
        seed: int = 0,
        **simulated_knobs: Any,
    ) -> None:
        settings = settings or Settings()
        self.settings = settings
        simulated = settings.lps_provider.strip().lower() == "simulated"
        self.clock = VirtualClock()
        self.provider = build_provider(
            settings,
            judge=judge,
            clock=self.clock,
            job_delay=simulated_knobs.pop("job_delay", timedelta(seconds=30)),
            **simulated_knobs,
        )
        polling = JobPolling(
            poll_interval=timedelta(seconds=settings.lps_job_poll_seconds),
            timeout=timedelta(seconds=settings.lps_job_timeout_seconds),
        )
        self.executor = QueuedRequestExecutor(
            self.provider,
            None,  # follow each request's batching-mode hint
            max_attempts=settings.lps_max_attempts,
            rng=random.Random(seed),
            clock=self.clock if simulated else utc_now,
            sleep=self.clock.sleep if simulated else time.sleep,
            observer=lps_observer(),
            job_polling=polling if not simulated else None,
        )
        self.queue_modes: set[QueueProcessingMode] = set()

    def execute(self, messages: Sequence[ComparisonRequestV1]) -> list[ComparisonOutcomeV1]:
        self.clock.catch_up()
        now = self.clock()
        queued = [m.to_queued(now) for m in messages]
        self.queue_modes.update(self.executor.mode_for(q) for q in queued)
        outcomes = self.executor.drain(queued, now)
        return [ComparisonOutcomeV2.from_outcome(o) for o in outcomes]

    def stats(self) -> dict[str, Any]:
        stats = self.executor.stats.as_dict()
        modes = sorted(m.value for m in self.queue_modes)
        calls = self.executor.stats.calls_by_name
        return {
            "queue_processing_mode": modes[0] if len(modes) == 1 else modes,
            "provider_calls": stats["provider_calls"],
            # calls of the per-call interface (one per request or per bundle); a wave that
            # went through provider batch jobs has none
            "per_call_provider_calls": calls["compare"] + calls["compare_bundle"],
            "job_calls": {
                "schedule_job": calls["schedule_job"],
                "job_status": calls["job_status"],
                "collect_results": calls["collect_results"],
            },
            "bundles": stats["bundles"],
            "max_bundle_size": stats["max_bundle_size"],
            "jobs": stats["jobs"],
            "job_polls": stats.get("job_polls", 0),
            "retries": stats.get("retries", 0),
            "outcomes": stats["outcomes"],
            "provider": self.provider.name,
        }
