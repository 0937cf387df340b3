"""How the executor reports what it did: an observer port for metrics, and plain counters.

The executor never imports a metrics library; ``infrastructure.metrics`` implements
``LPSObserver`` with Prometheus. ``NoOpObserver`` is the default.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from domain.lps import QueueProcessingMode


class LPSObserver(Protocol):
    def request_finished(self, mode: QueueProcessingMode, result: str) -> None:
        """One outcome was produced; ``result`` is ``success``, ``failure`` or ``expired``."""
        ...

    def bundle_formed(self, mode: QueueProcessingMode, size: int) -> None: ...

    def provider_called(self, mode: QueueProcessingMode, call: str) -> None:
        """``call`` is the port method: compare, compare_bundle, schedule_job, job_status,
        collect_results."""
        ...

    def job_finished(
        self, mode: QueueProcessingMode, status: str, items: int, duration_seconds: float
    ) -> None:
        """A provider batch job ended: completed, failed, cancelled, timed_out,
        schedule_failed, status_failed or collect_failed."""
        ...

    def retry_scheduled(self, mode: QueueProcessingMode, error_code: str) -> None: ...


class NoOpObserver:
    def request_finished(self, mode: QueueProcessingMode, result: str) -> None:
        pass

    def bundle_formed(self, mode: QueueProcessingMode, size: int) -> None:
        pass

    def provider_called(self, mode: QueueProcessingMode, call: str) -> None:
        pass

    def job_finished(
        self, mode: QueueProcessingMode, status: str, items: int, duration_seconds: float
    ) -> None:
        pass

    def retry_scheduled(self, mode: QueueProcessingMode, error_code: str) -> None:
        pass


def _zero_outcomes() -> dict[str, int]:
    return {"success": 0, "failure": 0, "expired": 0}


@dataclass
class ExecutorStats:
    """Running totals of one executor, for the demo's summary and for tests.

    ``provider_calls`` counts calls that carry work (compare, compare_bundle, schedule_job,
    collect_results), retries included; status polls are counted in ``job_polls``.
    """

    provider_calls: int = 0
    job_polls: int = 0
    bundles: int = 0
    max_bundle_size: int = 0
    jobs: int = 0
    jobs_resumed: int = 0
    #: provider port calls by name (compare, compare_bundle, schedule_job, job_status, …)
    calls_by_name: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    outcomes: dict[str, int] = field(default_factory=_zero_outcomes)

    def as_dict(self) -> dict[str, object]:
        return {
            "provider_calls": self.provider_calls,
            "job_polls": self.job_polls,
            "bundles": self.bundles,
            "max_bundle_size": self.max_bundle_size,
            "jobs": self.jobs,
            "retries": self.retries,
            "outcomes": dict(self.outcomes),
        }
