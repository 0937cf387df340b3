"""Pair generation: which essays are compared next, and which one is shown first.

A wave must be reproducible from the log alone: replaying a batch regenerates exactly the
waves it stored, so this module is pure. Its only randomness comes from an RNG seeded with
the batch seed and the wave number, essays are handled in sorted order (the input order of
ids and of the history does not matter), and the matching works on integer weights, so the
result does not depend on float rounding or on hash randomisation.

Two generation modes (DESIGN.md, "Pair generation"):

* **Coverage** asks pairs nobody has an answer for yet. One wave is one matching round
  (every essay at most once, about n/2 pairs); a provider batch job instead takes repeated
  rounds in one wave, because it never gets a second wave.
* **Resampling** re-asks pairs that already have a successful judgement, preferably in the
  orientation the judge has not seen, to wash out position bias.

Whatever the mode, each essay's A (shown first) and B appearances are kept balanced.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from hashlib import sha1
from uuid import UUID, uuid5

from domain.matching import RoundInput, matching_round
from domain.orientation import balances, orient
from domain.pair_records import (
    Key,
    Oriented,
    PairRecord,
    PairStatus,
    appearances,
    blocked_keys,
    count_available_pairs,
    is_between,
    success_coverage,
    unique_sorted,
)
from domain.values import GenerationMode, Pair

__all__ = [
    "PairRecord",
    "PairStatus",
    "comparison_id_for",
    "count_available_pairs",
    "generate_wave",
    "success_coverage",
]


def comparison_id_for(batch_id: str, wave_number: int, index: int) -> str:
    """Name-based (uuid5) so that regenerating a wave gives its comparisons the same ids."""
    return str(uuid5(UUID(batch_id), f"wave-{wave_number}-{index}"))


def generate_wave(
    *,
    batch_id: str,
    seed: int,
    wave_number: int,
    generation_mode: GenerationMode,
    essay_ids: Sequence[str],
    history: Sequence[PairRecord],
    scores: Mapping[str, float],
    max_pairs: int,
    all_pairs_in_one_wave: bool,
    unavailable: frozenset[Key] = frozenset(),
) -> tuple[Pair, ...]:
    """The pairs of wave ``wave_number``, oriented, with deterministic comparison ids.

    ``history`` holds every comparison asked so far with its status; ``scores`` the current
    Bradley-Terry scores (a missing essay counts as 0). At most ``max_pairs`` pairs are
    returned, never a self pair and never the same unordered pair twice, and never a pair
    in ``unavailable`` (pairs the batch gave up on).
    """
    essays = unique_sorted(essay_ids)
    if max_pairs <= 0 or len(essays) < 2:
        return ()
    rng = random.Random(f"{seed}:{wave_number}")
    balance = balances(history)  # read by coverage, then updated by ``orient``
    chosen: list[tuple[Key, Oriented | None]]
    if generation_mode is GenerationMode.RESAMPLING:
        chosen = _resampling_pass(essays, history, max_pairs, rng, unavailable)
    else:
        keys = _coverage_pairs(
            essays, history, balance, scores, max_pairs, all_pairs_in_one_wave, rng, unavailable
        )
        chosen = [(key, None) for key in keys]
    oriented = orient(chosen, history, rng, balance)
    namespace = UUID(batch_id).bytes  # parsed once per wave
    return tuple(
        Pair(uuid5_text(namespace, f"wave-{wave_number}-{index}"), a, b)
        for index, (a, b) in enumerate(oriented)
    )


def uuid5_text(namespace: bytes, name: str) -> str:
    """``str(uuid5(UUID(bytes=namespace), name))``, the same text without building two
    ``UUID`` objects per comparison: the SHA-1 of namespace and name, cut to 16 bytes,
    with the RFC 4122 variant and version 5 set (as ``uuid.UUID(..., version=5)`` does)."""
    value = int.from_bytes(sha1(namespace + name.encode("utf-8")).digest()[:16], "big")
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)
    value = (value & ~(0xF000 << 64)) | (5 << 76)
    hex_ = f"{value:032x}"
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


# --- coverage ------------------------------------------------------------------------------


def _coverage_pairs(
    essays: list[str],
    history: Sequence[PairRecord],
    balance_of: Mapping[str, int],
    scores: Mapping[str, float],
    max_pairs: int,
    repeat_rounds: bool,
    rng: random.Random,
    unavailable: frozenset[Key] = frozenset(),
) -> list[Key]:
    """One matching round, or rounds until the cap when the wave is the batch's only one.

    Each round sees the counts of the rounds before it, so the essays that played least so
    far are the ones that get the remaining partners.
    """
    n = len(essays)
    position = {essay: index for index, essay in enumerate(essays)}
    known = set(essays)
    data = RoundInput(
        n=n,
        scores=[scores.get(essay, 0.0) for essay in essays],
        counts=[0] * n,
        balance=[0] * n,
        blocked=set(),
        blocked_degree=[0] * n,
    )
    for essay, count in appearances(known, history).items():
        data.counts[position[essay]] = count
    for essay, balance in balance_of.items():  # ``balances(history)``
        if essay in position:
            data.balance[position[essay]] = balance
    blocked, degree = data.blocked, data.blocked_degree
    for a, b in blocked_keys(known, history) | {k for k in unavailable if set(k) <= known}:
        i, j = position[a], position[b]  # _block, inlined: a long history blocks many pairs
        blocked.add(i * n + j if i < j else j * n + i)
        degree[i] += 1
        degree[j] += 1
    chosen: list[Key] = []
    while len(chosen) < max_pairs:
        matched = matching_round(data, rng)
        if not matched:
            break
        for i, j in matched[: max_pairs - len(chosen)]:
            chosen.append((essays[i], essays[j]))
            _block(data, i, j)
            data.counts[i] += 1
            data.counts[j] += 1
        if not repeat_rounds:
            break
    return chosen


def _block(data: RoundInput, i: int, j: int) -> None:
    data.blocked.add(i * data.n + j if i < j else j * data.n + i)
    data.blocked_degree[i] += 1
    data.blocked_degree[j] += 1


# --- resampling ----------------------------------------------------------------------------


def _resampling_pass(
    essays: list[str],
    history: Sequence[PairRecord],
    max_pairs: int,
    rng: random.Random,
    unavailable: frozenset[Key] = frozenset(),
) -> list[tuple[Key, Oriented | None]]:
    """Every pair with a success, once, in the order that helps most if the cap cuts it.

    A pair whose reverse orientation was never asked comes first and is asked that way (the
    second judgement then also cancels position bias); after that, pairs of essays with
    the fewest appearances (counting this pass so far), seeded tie break. A pair still
    waiting for an outcome is not asked again.
    """
    known = set(essays)
    relevant = [record for record in history if is_between(record, known)]
    succeeded = sorted({r.key for r in relevant if r.status is PairStatus.SUCCEEDED})
    pending = {r.key for r in relevant if r.status is PairStatus.PENDING}
    asked = {(r.essay_a, r.essay_b) for r in relevant}
    counts = appearances(known, history)

    queue: list[tuple[int, int, float, Key, Oriented | None]] = []
    for key in succeeded:
        if key in pending or key in unavailable:
            continue
        a, b = key
        forced: Oriented | None = None
        if (a, b) not in asked:
            forced = (a, b)
        elif (b, a) not in asked:
            forced = (b, a)
        both_seen = 1 if forced is None else 0
        queue.append((both_seen, counts[a] + counts[b], rng.random(), key, forced))
    heapq.heapify(queue)

    chosen: list[tuple[Key, Oriented | None]] = []
    while queue and len(chosen) < max_pairs:
        both_seen, stale, jitter, key, forced = heapq.heappop(queue)
        fresh = counts[key[0]] + counts[key[1]]
        if fresh != stale:  # counts only grow, so re-queueing keeps the heap honest
            heapq.heappush(queue, (both_seen, fresh, jitter, key, forced))
            continue
        chosen.append((key, forced))
        counts[key[0]] += 1
        counts[key[1]] += 1
    return chosen
