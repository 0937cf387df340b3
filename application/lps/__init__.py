"""LPS use case: execute queued comparison requests against an LLM provider.

``QueuedRequest``s come from request messages (``ComparisonRequestV1.to_queued`` in
``infrastructure.messaging.contracts``, the one place that builds them); then
``QueuedRequestExecutor(provider, mode).drain(requests, now)``.
"""

from application.lps.batch_api import JobPolling
from application.lps.executor import DEFAULT_QUEUE_MODE, BundleResult, QueuedRequestExecutor
from application.lps.observer import ExecutorStats, LPSObserver, NoOpObserver
from application.lps.ports import (
    BatchJobProvider,
    BatchJobRef,
    BatchJobStatus,
    InvalidAnswerError,
    ItemResult,
    JobStore,
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
    "InvalidAnswerError",
    "ItemResult",
    "JobPolling",
    "JobStore",
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
]
