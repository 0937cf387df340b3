"""Bundle formation: which queued requests share one provider call or batch job.

The same rule serves every queue processing mode, so a bundle means the same thing
whether it becomes one call per request, one bundled call, or one provider batch job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.lps.requests import QueuedRequest

MAX_BUNDLE_SIZE = 64


def is_compatible(lead: QueuedRequest, other: QueuedRequest) -> bool:
    """Requests may share a call only if nothing about the call would differ between them.

    Same provider, equal overrides and equal batching hints (two absent hints are equal).
    The model is not part of the rule: it travels with each item.
    """
    return (
        lead.provider == other.provider
        and lead.overrides == other.overrides
        and lead.mode_hint == other.mode_hint
    )


def _check_cap(cap: int) -> None:
    if not 1 <= cap <= MAX_BUNDLE_SIZE:
        raise ValueError(f"bundle cap must lie in 1..{MAX_BUNDLE_SIZE}")


def bundle_limit(lead: QueuedRequest, cap: int) -> int:
    """How many requests the bundle led by ``lead`` may hold.

    The lead's preferred size counts only if it is an int in 1..64; otherwise the
    configured cap alone applies. The cap itself never exceeds ``MAX_BUNDLE_SIZE``.
    """
    _check_cap(cap)
    hint = lead.preferred_bundle_size
    if isinstance(hint, int) and not isinstance(hint, bool) and 1 <= hint <= MAX_BUNDLE_SIZE:
        return min(hint, cap)
    return cap


@dataclass(frozen=True)
class BundleFormation:
    """The result of taking one bundle off the head of a queue.

    ``bundle`` may be empty only when every request looked at had expired.
    ``held_back`` is the request that ended the bundle by being incompatible with its lead
    (or by repeating an id already in it); it leads the next bundle. ``rest`` is everything
    not consumed, in queue order, starting with ``held_back`` when there is one.
    """

    bundle: tuple[QueuedRequest, ...]
    expired: tuple[QueuedRequest, ...]
    held_back: QueuedRequest | None
    rest: tuple[QueuedRequest, ...]
    limit: int

    @property
    def lead(self) -> QueuedRequest | None:
        return self.bundle[0] if self.bundle else None


def form_bundle(queue: Sequence[QueuedRequest], now: datetime, cap: int) -> BundleFormation:
    """Take the next bundle off the head of ``queue``.

    The first live request leads. Expired requests met on the way are set aside (they get
    an ``EXPIRED`` outcome) and do not count toward the limit. An incompatible request, or
    one whose id is already in the bundle (custom ids must be unique within a provider
    batch job), stops the bundle and is held back. A full bundle stops before looking at
    the next request, which stays in ``rest``.
    """
    _check_cap(cap)
    bundle: list[QueuedRequest] = []
    expired: list[QueuedRequest] = []
    ids: set[str] = set()
    limit = cap
    index = 0
    held_back: QueuedRequest | None = None
    while index < len(queue):
        request = queue[index]
        if bundle and len(bundle) >= limit:
            break
        if request.is_expired(now):
            expired.append(request)
            index += 1
            continue
        if not bundle:
            limit = bundle_limit(request, cap)
        elif not is_compatible(bundle[0], request) or request.request_id in ids:
            held_back = request
            break
        bundle.append(request)
        ids.add(request.request_id)
        index += 1
    return BundleFormation(
        bundle=tuple(bundle),
        expired=tuple(expired),
        held_back=held_back,
        rest=tuple(queue[index:]),
        limit=limit,
    )
