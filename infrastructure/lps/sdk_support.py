"""What the OpenAI and Anthropic providers share: turning an SDK's exceptions into the
provider port's errors, keeping the API key out of every message, and pricing usage.

Retries, timeouts and Retry-After are the SDKs' own (``max_retries``, ``timeout``); an
error reaches this module only once the SDK has given up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from application.lps import (
    ItemResult,
    ProviderConnectionError,
    ProviderError,
    ProviderItem,
    ProviderServerError,
    ProviderTimeoutError,
    ProviderVerdict,
    RateLimitedError,
    classify_error,
)
from infrastructure.lps.prompt import PromptTemplate, read_answer
from infrastructure.settings import ModelPrice

T = TypeVar("T")
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Redactor:
    """Replaces every secret it knows with ``[redacted]``."""

    secrets: tuple[str, ...]

    @classmethod
    def of(cls, *secrets: str | None) -> Redactor:
        return cls(tuple(s for s in secrets if s and len(s) >= 1))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


@dataclass(frozen=True)
class SdkErrors:
    """The exception classes of one SDK (both SDKs name them alike)."""

    rate_limit: type[BaseException]
    timeout: type[BaseException]
    connection: type[BaseException]
    status: type[BaseException]
    base: type[BaseException]

    @classmethod
    def of(cls, module: Any) -> SdkErrors:
        return cls(
            rate_limit=module.RateLimitError,
            timeout=module.APITimeoutError,
            connection=module.APIConnectionError,
            status=module.APIStatusError,
            base=module.APIError,
        )


def translate(error: BaseException, errors: SdkErrors, redact: Redactor) -> ProviderError:
    """The port's error for an SDK exception, its message free of the API key."""
    text = redact(f"{type(error).__name__}: {error}")
    # APITimeoutError subclasses APIConnectionError in both SDKs: test it first
    if isinstance(error, errors.timeout):
        return ProviderTimeoutError(text)
    if isinstance(error, errors.connection):
        return ProviderConnectionError(text)
    if isinstance(error, errors.rate_limit):
        return RateLimitedError(text)
    if isinstance(error, errors.status):
        status = int(getattr(error, "status_code", 0) or 0)
        if status >= 500:
            return ProviderServerError(text, status_code=status)
        return ProviderError(text, code=f"HTTP_{status}", retryable=status in (408, 409))
    return ProviderError(text)


def calling(fn: Callable[[], T], errors: SdkErrors, redact: Redactor) -> T:
    """Run one SDK call; its errors come out as the port's (the key redacted)."""
    try:
        return fn()
    except ProviderError:
        raise
    except errors.base as error:
        raise translate(error, errors, redact) from None


@dataclass(frozen=True)
class PriceTable:
    """Estimated cost in USD by model; a model without a price costs 0 (unknown)."""

    prices: Mapping[str, ModelPrice]

    def cost(self, models: Iterable[str | None], input_tokens: int, output_tokens: int) -> float:
        for model in models:
            if model and model in self.prices:
                return round(self.prices[model].cost(input_tokens, output_tokens), 8)
        if "*" in self.prices:
            return round(self.prices["*"].cost(input_tokens, output_tokens), 8)
        return 0.0


def compare_each(
    compare: Callable[[ProviderItem], ProviderVerdict],
    items: Sequence[ProviderItem],
    concurrency: int,
) -> list[ItemResult]:
    """A bundle for an API without bundled calls: one call per item, ``concurrency`` at
    once; an item's failure is its own."""

    def one(item: ProviderItem) -> ItemResult:
        try:
            return ItemResult(item.custom_id, verdict=compare(item))
        except Exception as error:
            return ItemResult(item.custom_id, failure=classify_error(error))

    if concurrency <= 1 or len(items) <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
        return list(pool.map(one, items))


@dataclass(frozen=True)
class JudgeOptions:
    """What every SDK-backed judge is configured with."""

    template: PromptTemplate
    prices: PriceTable
    redact: Redactor
    temperature: float | None = 0.0
    max_tokens: int = 600
    concurrency: int = 4
    #: when set, asked for instead of the model a request names
    model: str | None = None


class SdkJudge:
    """The shared half of the OpenAI and Anthropic providers: sampling settings, bundles
    as concurrent single calls, and turning a read answer into a priced verdict."""

    def __init__(self, options: JudgeOptions, name: str) -> None:
        self.options = options
        self.template = options.template
        self.redact = options.redact
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def compare(self, item: ProviderItem) -> ProviderVerdict:
        raise NotImplementedError

    def compare_bundle(self, items: Sequence[ProviderItem]) -> Sequence[ItemResult]:
        return compare_each(self.compare, items, self.options.concurrency)

    def sampling(self, item: ProviderItem) -> dict[str, Any]:
        """Model, max tokens and temperature for one request (a request's overrides win)."""
        fields: dict[str, Any] = {
            "model": self.options.model or item.model,
            "max_tokens": self.options.max_tokens,
        }
        if self.options.temperature is not None:
            fields["temperature"] = self.options.temperature
        for key, value in item.overrides:
            if key in ("temperature", "max_tokens"):
                fields[key] = value
        return fields

    def priced_verdict(
        self,
        answer: str | dict[str, Any] | None,
        item: ProviderItem,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        reported_model: str | None,
        latency_ms: float,
    ) -> ProviderVerdict:
        """Read ``answer`` strictly (``InvalidAnswerError`` otherwise) into a verdict."""
        version = self.template.version
        read = read_answer(
            answer,
            item,
            version=version,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        model = reported_model or item.model
        return ProviderVerdict(
            winner_id=read.winner_id,
            confidence=read.confidence,
            justification=read.justification,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=self.options.prices.cost(
                [model, item.model], prompt_tokens, completion_tokens
            ),
            latency_ms=latency_ms,
            raw_answer=answer if isinstance(answer, str) or answer is None else json.dumps(answer),
            prompt_template_version=version,
            model=model,
        )
