"""The one place that turns settings into an LLM provider for LPS.

The ``lps-worker`` process and the embedded executor (``demo``, ``run``) both build their
provider here, so ``CJLEDGER_LPS_PROVIDER`` (``simulated`` | ``openai`` | ``anthropic``)
behaves the same in either. The API key is read from settings (``SecretStr``) and handed
to the SDK client only; every error message passes a redactor that knows it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from application.lps import LLMProvider
from infrastructure.lps.prompt import default_template
from infrastructure.lps.sdk_support import JudgeOptions, PriceTable, Redactor
from infrastructure.lps.simulated_judge import SeededSimulatedJudge, SimulatedJudge
from infrastructure.lps.simulated_provider import SimulatedProvider
from infrastructure.settings import Settings

PROVIDERS = ("simulated", "openai", "anthropic")


class UnknownProvider(ValueError):
    """The settings name a provider that does not exist or cannot be used as configured."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_provider(
    settings: Settings,
    *,
    judge: SimulatedJudge | None = None,
    clock: Callable[[], datetime] = _utc_now,
    job_delay: timedelta | None = None,
    **simulated_knobs: Any,
) -> LLMProvider:
    """The provider ``settings.lps_provider`` names.

    ``judge`` replaces the seeded simulated judge (the demo knows its essays' qualities);
    ``clock``, ``job_delay`` and ``simulated_knobs`` (``SimulatedProvider``'s fault knobs)
    drive the simulated provider only.
    """
    name = settings.lps_provider.strip().lower()
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
            **simulated_knobs,
        )
    if name == "openai":
        return _openai(settings)
    if name == "anthropic":
        return _anthropic(settings)
    raise UnknownProvider(
        f"unknown LPS provider {settings.lps_provider!r}; choose one of {', '.join(PROVIDERS)}"
    )


def _key(settings: Settings, name: str) -> str:
    secret = settings.openai_api_key if name == "openai" else settings.anthropic_api_key
    if secret is None or not secret.get_secret_value():
        env = "OPENAI" if name == "openai" else "ANTHROPIC"
        raise UnknownProvider(
            f"the {name} provider needs an API key: set CJLEDGER_{env}_API_KEY (or {env}_API_KEY)"
        )
    return secret.get_secret_value()


def _options(settings: Settings, key: str) -> JudgeOptions:
    return JudgeOptions(
        template=default_template(),
        prices=PriceTable(settings.lps_prices),
        redact=Redactor.of(key),
        temperature=settings.lps_temperature,
        max_tokens=settings.lps_max_tokens,
        concurrency=settings.lps_concurrency,
        model=settings.lps_model,
    )


def _client_options(settings: Settings, key: str, base_url: str | None) -> dict[str, Any]:
    return {
        "api_key": key,
        "base_url": base_url,
        "timeout": settings.lps_request_timeout_seconds,
        "max_retries": settings.lps_sdk_max_retries,
    }


def _openai(settings: Settings) -> LLMProvider:
    import openai

    from infrastructure.lps.openai_provider import OpenAIProvider

    key = _key(settings, "openai")
    return OpenAIProvider(
        openai.OpenAI(**_client_options(settings, key, settings.openai_base_url)),
        _options(settings, key),
        structured_output=settings.openai_structured_output,
    )


def _anthropic(settings: Settings) -> LLMProvider:
    import anthropic

    from infrastructure.lps.anthropic_provider import AnthropicProvider

    key = _key(settings, "anthropic")
    return AnthropicProvider(
        anthropic.Anthropic(**_client_options(settings, key, settings.anthropic_base_url)),
        _options(settings, key),
    )
