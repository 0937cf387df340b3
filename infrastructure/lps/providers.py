"""The one place that turns settings into an LLM provider for LPS.

Both the ``lps-worker`` process and the embedded executor (``demo``, ``run``) build their
provider here, so a provider named in ``CJLEDGER_LPS_PROVIDER`` behaves the same in either.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from application.lps import LLMProvider
from infrastructure.lps.simulated_judge import SeededSimulatedJudge, SimulatedJudge
from infrastructure.lps.simulated_provider import SimulatedProvider
from infrastructure.settings import Settings

PROVIDERS = ("simulated",)


class UnknownProvider(ValueError):
    pass


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_provider(
    settings: Settings,
    *,
    judge: SimulatedJudge | None = None,
    clock: Callable[[], datetime] = _utc_now,
    job_delay: timedelta | None = None,
) -> LLMProvider:
    """The provider ``settings.lps_provider`` names.

    ``judge`` replaces the seeded simulated judge (the demo knows its essays' qualities);
    ``clock`` and ``job_delay`` drive simulated batch jobs.
    """
    name = settings.lps_provider
    if name == "simulated":
        return SimulatedProvider(
            judge
            or SeededSimulatedJudge(
                {},
                seed=settings.lps_simulation_seed,
                failure_rate=settings.lps_simulated_failure_rate,
            ),
            clock=clock,
            job_delay=job_delay
            if job_delay is not None
            else timedelta(seconds=settings.lps_simulated_job_delay_seconds),
        )
    raise UnknownProvider(f"unknown LPS provider {name!r}; choose one of {', '.join(PROVIDERS)}")
