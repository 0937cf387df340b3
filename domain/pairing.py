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
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from uuid import UUID, uuid5

import networkx as nx

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
    key_of,
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

CLOSENESS_LEVELS = 1000
"""Resolution of the score-closeness part of an edge weight."""

JITTER_LEVELS = 16
"""The seeded jitter only breaks ties between equally close pairs, never outranks them."""

FIT_LEVELS = 2
"""Between equally close pairs, prefer those whose orientation can balance both essays."""

AFFINITY_LEVELS = (CLOSENESS_LEVELS + 1) * FIT_LEVELS * JITTER_LEVELS

CANDIDATE_PARTNERS = 10
"""Per essay, the number of closest partners kept when a matching graph is dense."""


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
) -> tuple[Pair, ...]:
    """The pairs of wave ``wave_number``, oriented, with deterministic comparison ids.

    ``history`` holds every comparison asked so far with its status; ``scores`` the current
    Bradley-Terry scores (a missing essay counts as 0). At most ``max_pairs`` pairs are
    returned, never a self pair and never the same unordered pair twice.
    """
    essays = unique_sorted(essay_ids)
    if max_pairs <= 0 or len(essays) < 2:
        return ()
    rng = random.Random(f"{seed}:{wave_number}")
    chosen: list[tuple[Key, Oriented | None]]
    if generation_mode is GenerationMode.RESAMPLING:
        chosen = _resampling_pass(essays, history, max_pairs, rng)
    else:
        keys = _coverage_pairs(essays, history, scores, max_pairs, all_pairs_in_one_wave, rng)
        chosen = [(key, None) for key in keys]
    oriented = orient(chosen, history, rng)
    return tuple(
        Pair(comparison_id_for(batch_id, wave_number, index), a, b)
        for index, (a, b) in enumerate(oriented)
    )


# --- coverage ------------------------------------------------------------------------------


def _coverage_pairs(
    essays: list[str],
    history: Sequence[PairRecord],
    scores: Mapping[str, float],
    max_pairs: int,
    repeat_rounds: bool,
    rng: random.Random,
) -> list[Key]:
    """One matching round, or rounds until the cap when the wave is the batch's only one.

    Each round sees the counts of the rounds before it, so the essays that played least so
    far are the ones that get the remaining partners.
    """
    known = set(essays)
    blocked = blocked_keys(known, history)
    # A dict, not a set: it keeps the sorted order, so every later loop is deterministic.
    eligible = {key: None for key in _all_keys(essays) if key not in blocked}
    counts = appearances(known, history)
    balance = balances(history)
    chosen: list[Key] = []
    while eligible and len(chosen) < max_pairs:
        matched = _matching_round(list(eligible), counts, balance, scores, rng)
        for key in matched[: max_pairs - len(chosen)]:
            chosen.append(key)
            del eligible[key]
            counts[key[0]] += 1
            counts[key[1]] += 1
        if not repeat_rounds:
            break
    return chosen


def _matching_round(
    eligible: list[Key],
    counts: Mapping[str, int],
    balance: Mapping[str, int],
    scores: Mapping[str, float],
    rng: random.Random,
) -> list[Key]:
    """A maximum-cardinality matching over the eligible pairs, best pairs first.

    Edge weights have two tiers. The upper tier is the sum of both essays' *need* (fewer
    comparisons so far, more need); summed over a matching it depends only on *which*
    essays play, so it decides who sits out: the least needy. With an odd number of
    essays, the most-compared one (seeded tie break) gets no need at all, so it sits out
    whenever some largest matching leaves it out, and plays when sitting it out would cost
    a pair. The lower tier decides *who plays whom*: close scores first (they make the
    most informative comparisons), then pairs whose A/B balances can both be evened out,
    then a seeded jitter.
    """
    vertices = sorted({essay for key in eligible for essay in key})
    sit_out = _most_compared(vertices, counts, rng) if len(vertices) % 2 else None
    top = max(counts[essay] for essay in vertices)
    need = {essay: 0 if essay == sit_out else top + 1 - counts[essay] for essay in vertices}
    need_unit = (len(vertices) // 2 + 1) * AFFINITY_LEVELS  # outweighs any lower-tier sum
    affinity = {key: _affinity(key, scores, balance, rng) for key in eligible}
    weight = {key: (need[key[0]] + need[key[1]]) * need_unit + affinity[key] for key in eligible}

    if len(eligible) > CANDIDATE_PARTNERS * len(vertices):
        matched = _max_matching(vertices, _closest_partners(vertices, eligible, affinity), weight)
        if not _obviously_largest(matched, vertices, sit_out):
            matched = _max_matching(vertices, eligible, weight)
    else:
        matched = _max_matching(vertices, eligible, weight)
    return sorted(matched, key=lambda key: (-weight[key], key))


def _most_compared(vertices: list[str], counts: Mapping[str, int], rng: random.Random) -> str:
    most = max(counts[essay] for essay in vertices)
    return rng.choice([essay for essay in vertices if counts[essay] == most])


def _affinity(
    key: Key, scores: Mapping[str, float], balance: Mapping[str, int], rng: random.Random
) -> int:
    """Score closeness first; then orientation fit; then seeded jitter."""
    distance = abs(_score(scores, key[0]) - _score(scores, key[1]))
    closeness = round(CLOSENESS_LEVELS / (1.0 + distance))
    a, b = balance.get(key[0], 0), balance.get(key[1], 0)
    fits = 0 if (a > 0 and b > 0) or (a < 0 and b < 0) else 1
    return (closeness * FIT_LEVELS + fits) * JITTER_LEVELS + rng.randrange(JITTER_LEVELS)


def _score(scores: Mapping[str, float], essay: str) -> float:
    value = scores.get(essay, 0.0)
    return value if math.isfinite(value) else 0.0


def _closest_partners(
    vertices: list[str], eligible: list[Key], affinity: dict[Key, int]
) -> list[Key]:
    """A sparse subgraph: each essay's few closest partners.

    networkx's blossom algorithm is cubic in pure Python: on 100 essays the complete graph
    takes about a quarter of a second, ten partners per essay several times less. Far
    partners would rarely be matched anyway, since the weights prefer close scores.
    """
    partners: dict[str, list[str]] = {essay: [] for essay in vertices}
    for a, b in eligible:
        partners[a].append(b)
        partners[b].append(a)
    kept: set[Key] = set()
    for essay, others in partners.items():
        closest = heapq.nlargest(
            CANDIDATE_PARTNERS, others, key=lambda other: affinity[key_of(essay, other)]
        )
        kept.update(key_of(essay, other) for other in closest)
    return [key for key in eligible if key in kept]


def _obviously_largest(matched: set[Key], vertices: list[str], sit_out: str | None) -> bool:
    """Whether a matching of the sparse subgraph is as good as one of the full graph.

    With at most one essay left unmatched no larger matching exists (an augmenting path
    needs two unmatched ends), and if that essay is the one meant to sit out, the sparse
    subgraph lost nothing that matters. Otherwise the caller matches the full graph.
    """
    matched_essays = {essay for key in matched for essay in key}
    unmatched = [essay for essay in vertices if essay not in matched_essays]
    return not unmatched or unmatched == [sit_out]


def _max_matching(vertices: list[str], edges: Iterable[Key], weight: dict[Key, int]) -> set[Key]:
    """Maximum-weight matching among the maximum-cardinality ones (networkx, blossom).

    Nodes are integer positions rather than essay ids so that nothing inside networkx can
    depend on string hashing.
    """
    position = {essay: index for index, essay in enumerate(vertices)}
    graph = nx.Graph()
    graph.add_nodes_from(range(len(vertices)))
    for key in edges:
        graph.add_edge(position[key[0]], position[key[1]], weight=weight[key])
    matching = nx.max_weight_matching(graph, maxcardinality=True, weight="weight")
    return {key_of(vertices[int(u)], vertices[int(v)]) for u, v in matching}


# --- resampling ----------------------------------------------------------------------------


def _resampling_pass(
    essays: list[str], history: Sequence[PairRecord], max_pairs: int, rng: random.Random
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
        if key in pending:
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


# --- shared helpers ------------------------------------------------------------------------


def _all_keys(essays: list[str]) -> list[Key]:
    """All unordered pairs of a sorted list, in sorted order."""
    return [(a, b) for i, a in enumerate(essays) for b in essays[i + 1 :]]
