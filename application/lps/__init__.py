"""LPS use case: execute queued comparison requests against an LLM provider.

Build ``QueuedRequest``s with ``queued_request_from`` (or ``ComparisonRequestV1.to_queued``),
then ``QueuedRequestExecutor(provider, mode).drain(requests, now)``.
"""

from application.lps.batch_api import JobPolling
from application.lps.executor import DEFAULT_QUEUE_MODE, BundleResult, QueuedRequestExecutor
from application.lps.intake import queued_request_from
from application.lps.observer import ExecutorStats, LPSObserver, NoOpObserver
from application.lps.ports import (
    BatchJobProvider,
    BatchJobRef,
    BatchJobStatus,
    ItemResult,
    LLMProvider,
    PerCallProvider,
    ProviderConnectionError,
    ProviderError,
    ProviderFailure,
    ProviderItem,
    ProviderServerError,
    ProviderTimeoutError,
    ProviderVerdict,
    RateLimitedError,
    classify_error,
)

__all__ = [
    "DEFAULT_QUEUE_MODE",
    "BatchJobProvider",
    "BatchJobRef",
    "BatchJobStatus",
    "BundleResult",
    "ExecutorStats",
    "ItemResult",
    "JobPolling",
    "LLMProvider",
    "LPSObserver",
    "NoOpObserver",
    "PerCallProvider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderFailure",
    "ProviderItem",
    "ProviderServerError",
    "ProviderTimeoutError",
    "ProviderVerdict",
    "QueuedRequestExecutor",
    "RateLimitedError",
    "classify_error",
    "queued_request_from",
]
