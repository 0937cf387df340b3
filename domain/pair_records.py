"""What pair generation knows about the comparisons asked so far.

A batch's history, seen from pairing: each comparison as two essay ids and a status. The
helpers here fold that history into the sets and counts both coverage and resampling need
(which pairs are blocked, how often each essay played, how coverage stands). Everything is
keyed by essay id strings and ignores records about essays outside the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

Key = tuple[str, str]
"""An unordered pair as a sorted tuple, like ``Pair.key``."""

Oriented = tuple[str, str]
"""An ordered pair: (essay shown as A, essay shown as B)."""


class PairStatus(Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class PairRecord:
    """One comparison asked so far and where it stands; a pair asked twice appears twice."""

    essay_a: str
    essay_b: str
    status: PairStatus

    @property
    def key(self) -> Key:
        return key_of(self.essay_a, self.essay_b)


def count_available_pairs(
    essay_ids: Sequence[str],
    history: Sequence[PairRecord],
    unavailable: frozenset[Key] = frozenset(),
) -> int:
    """Unordered pairs coverage may still ask: never asked, or asked but only ever failed.

    A pair with a pending comparison is not available (its answer is on the way), nor is a
    pair with a success (coverage wants each pair answered once; re-asking is resampling),
    nor one the caller declares ``unavailable`` (e.g. given up after repeated failures).
    """
    essays = unique_sorted(essay_ids)
    known = set(essays)
    closed = blocked_keys(known, history) | {k for k in unavailable if set(k) <= known}
    return pair_count(len(essays)) - len(closed)


def success_coverage(
    essay_ids: Sequence[str],
    history: Sequence[PairRecord],
    unavailable: frozenset[Key] = frozenset(),
) -> float:
    """Fraction of the askable unordered pairs (all n(n-1)/2 but the ``unavailable`` ones
    without a success) that have at least one successful outcome."""
    essays = unique_sorted(essay_ids)
    known = set(essays)
    succeeded = _keys_between(known, history, PairStatus.SUCCEEDED, True)
    lost = {k for k in unavailable if set(k) <= known and k not in succeeded}
    total = pair_count(len(essays)) - len(lost)
    if total <= 0:
        return 0.0
    return len(succeeded) / total


def unique_sorted(essay_ids: Sequence[str]) -> list[str]:
    return sorted(set(essay_ids))


def pair_count(essay_count: int) -> int:
    return essay_count * (essay_count - 1) // 2


def key_of(a: str, b: str) -> Key:
    return (a, b) if a < b else (b, a)


def is_between(record: PairRecord, known: set[str]) -> bool:
    """A record about two distinct essays of this batch (anything else is ignored)."""
    return record.essay_a != record.essay_b and record.essay_a in known and record.essay_b in known


def blocked_keys(known: set[str], history: Sequence[PairRecord]) -> set[Key]:
    """Pairs coverage must not ask: one comparison is pending or has already succeeded."""
    return _keys_between(known, history, PairStatus.FAILED, False)


def _keys_between(
    known: set[str], history: Sequence[PairRecord], status: PairStatus, wanted: bool
) -> set[Key]:
    """The keys of the records between two essays of ``known`` whose status is
    (``wanted``) or is not (``not wanted``) ``status``; ``is_between`` and ``key``
    inlined, since every wave closing folds the whole history several times."""
    keys: set[Key] = set()
    add = keys.add
    for record in history:
        if (record.status is status) is wanted:
            a, b = record.essay_a, record.essay_b
            if a != b and a in known and b in known:
                add((a, b) if a < b else (b, a))
    return keys


def appearances(known: set[str], history: Sequence[PairRecord]) -> Counter[str]:
    """How many comparisons each essay has been in, whatever their status."""
    counts: Counter[str] = Counter({essay: 0 for essay in known})
    for record in history:
        a, b = record.essay_a, record.essay_b
        if a != b and a in known and b in known:  # is_between
            counts[a] += 1
            counts[b] += 1
    return counts
