"""Batching-mode resolution: request → service setting → ``serial_bundle``.

Resolved once, right after registration, and recorded in ``BatchingModeSet``; from then on
the batch reads its mode from its own log, never from settings again.
"""

from __future__ import annotations

from domain.policy import BatchPolicy
from domain.values import BatchingMode, BatchingModeResolution

DEFAULT_MODE = BatchingMode.SERIAL_BUNDLE


def resolve_batching_mode(
    requested: BatchingMode | None,
    setting: BatchingMode | None,
    provider: str,
    policy: BatchPolicy,
) -> tuple[BatchingMode, str]:
    """Return the effective mode and where it came from."""
    if requested is not None:
        mode, source = requested, "request"
    elif setting is not None:
        mode, source = setting, "settings"
    else:
        return DEFAULT_MODE, "default"

    if mode is BatchingMode.PROVIDER_BATCH_API and not provider_supports_batch_api(
        provider, policy
    ):
        why = f"provider_batch_api_unsupported_by_{provider}"
        if source == "request" and setting not in (None, BatchingMode.PROVIDER_BATCH_API):
            assert setting is not None
            return setting, f"fallback:{why}"
        return DEFAULT_MODE, f"fallback:{why}"
    return mode, source


def provider_supports_batch_api(provider: str, policy: BatchPolicy) -> bool:
    return provider.lower() in policy.provider_batch_allowed_providers


def preferred_bundle_size(mode: BatchingMode, wave_size: int, policy: BatchPolicy) -> int:
    """The bundle-size hint CJ sends LPS for a wave of ``wave_size`` requests."""
    if mode is BatchingMode.PER_REQUEST:
        return 1
    return max(1, min(wave_size, policy.bundle_size_cap))


def resolve(
    requested: BatchingMode | None,
    setting: BatchingMode | None,
    provider: str,
    policy: BatchPolicy,
    first_wave_size: int,
) -> BatchingModeResolution:
    mode, source = resolve_batching_mode(requested, setting, provider, policy)
    return BatchingModeResolution(
        mode=mode,
        source=source,
        preferred_bundle_size=preferred_bundle_size(mode, first_wave_size, policy),
    )
