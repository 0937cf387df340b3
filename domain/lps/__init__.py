"""The LLM provider service's pure model: queued requests, bundling, outcomes.

Nothing here performs I/O or reads a clock; the executor in ``application.lps`` passes
``now`` in and carries out what these functions decide.
"""

from domain.lps.bundling import (
    MAX_BUNDLE_SIZE,
    BundleFormation,
    bundle_limit,
    form_bundle,
    is_compatible,
)
from domain.lps.outcomes import (
    JUSTIFICATION_MAX_CHARS,
    LPSErrorCode,
    RequestFailure,
    RequestOutcome,
    Verdict,
    truncate_justification,
)
from domain.lps.requests import (
    OverrideItems,
    OverrideValue,
    QueuedRequest,
    QueueProcessingMode,
    normalise_overrides,
)

__all__ = [
    "JUSTIFICATION_MAX_CHARS",
    "MAX_BUNDLE_SIZE",
    "BundleFormation",
    "LPSErrorCode",
    "OverrideItems",
    "OverrideValue",
    "QueueProcessingMode",
    "QueuedRequest",
    "RequestFailure",
    "RequestOutcome",
    "Verdict",
    "bundle_limit",
    "form_bundle",
    "is_compatible",
    "normalise_overrides",
    "truncate_justification",
]
