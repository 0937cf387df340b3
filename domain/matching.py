"""One coverage round: which essays meet, every essay at most once, at near-linear cost.

A round is a matching in the graph of *available* pairs (never asked, or asked and only
ever failed). That graph has about n²/2 edges, so a round must never build it, nor hand it
to an exact matching algorithm (the blossom algorithm is cubic; at 3,000 essays it took a
minute and gigabytes). Instead each round looks at a few candidate partners per essay and
widens only for the essays still unmatched:

1. **Candidates.** Essays are ordered by current score (a seeded coin breaks ties, so a
   fresh batch, where every score is 0, starts from a random order). Each essay takes its
   ``NEIGHBOURS`` nearest available successors in that order, plus ``RANDOM_PARTNERS``
   seeded random partners, which keep the comparison network well mixed.
2. **Greedy.** Candidate pairs are taken best weight first whenever both essays are still
   free. The weight has the same two tiers as before: the upper tier is the essays' *need*
   (fewer comparisons so far, more need; with an odd count the most-compared essay has
   none, so it is the one left out), the lower tier prefers close scores, then pairs whose
   A/B balances can both be evened out, then a seeded jitter.
3. **Widening.** The essays left unmatched get candidates among themselves (their nearest
   unmatched successors in score order) and the greedy runs again, while that helps.
4. **Closing.** A last scan over the unmatched essays, in score order, pairs any two that
   may still meet. After it no two idle essays could have played: the round is maximal.
5. **Repair.** A pair matched across a large score gap is swapped with another such pair
   when both new pairs are available and closer: the greedy had to take them only because
   nearer partners were not among the candidates.

Cost: every step is linear in the number of candidate pairs, plus, for each essay, the
blocked pairs its scans step over, which the history bounds: O(n·k + history), with k the
number of candidates per essay, and a sort.

Everything works on integer essay indexes (positions in the id-sorted list) and integer
weights, so the result depends on neither string hashing nor float rounding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

NEIGHBOURS = 3
"""Nearest available successors in score order each essay takes as candidates."""

RANDOM_PARTNERS = 2
"""Seeded random candidates per essay (bounded: never more, whatever the batch size)."""

WIDENING_ROUNDS = 3
"""Greedy passes over the still-unmatched essays before the closing scan."""

CLOSENESS_LEVELS = 1000
"""Resolution of the score-closeness part of an edge weight."""

JITTER_LEVELS = 16
"""The seeded jitter only breaks ties between equally close pairs, never outranks them."""

FIT_LEVELS = 2
"""Between equally close pairs, prefer those whose orientation can balance both essays."""

AFFINITY_LEVELS = (CLOSENESS_LEVELS + 1) * FIT_LEVELS * JITTER_LEVELS


@dataclass
class RoundInput:
    """What a round needs, indexed by essay position in the id-sorted essay list.

    ``blocked`` holds codes ``i * n + j`` (``i < j``) of pairs that may not be asked;
    ``blocked_degree[i]`` counts the blocked pairs essay ``i`` is in. The caller updates
    ``blocked``, ``blocked_degree`` and ``counts`` between rounds.
    """

    n: int
    scores: list[float]
    counts: list[int]
    balance: list[int]
    blocked: set[int]
    blocked_degree: list[int]

    def available(self, i: int, j: int) -> bool:
        return (i * self.n + j if i < j else j * self.n + i) not in self.blocked


def matching_round(data: RoundInput, rng: random.Random) -> list[tuple[int, int]]:
    """A maximal set of available pairs, every essay at most once, best pairs first.

    Pairs come back as ``(i, j)`` with ``i < j``, sorted by descending weight (then by
    index), so a caller that must cut the round at a cap keeps the most useful pairs.
    """
    n = data.n
    vertices = [i for i in range(n) if data.blocked_degree[i] < n - 1]
    if len(vertices) < 2:
        return []
    sit_out = _most_compared(vertices, data.counts, rng) if len(vertices) % 2 else None
    top = max(data.counts[i] for i in vertices)
    need = [0] * n
    for i in vertices:
        need[i] = 0 if i == sit_out else top + 1 - data.counts[i]
    need_unit = (len(vertices) // 2 + 1) * AFFINITY_LEVELS  # outweighs any lower-tier sum
    coin = {i: rng.random() for i in vertices}
    order = sorted(vertices, key=lambda i: (data.scores[i], coin[i]))
    finite = finite_scores(data.scores)
    balance = data.balance
    jitter = rng.randrange

    weights: dict[int, int] = {}

    def weigh(codes: list[int]) -> list[tuple[int, int]]:
        """(-weight, code) for each candidate, the weight computed once per pair, in code
        order (each new pair draws its jitter in that order). The affinity: score
        closeness first; then orientation fit; then seeded jitter."""
        weighted = []
        for code in codes:
            weight = weights.get(code)
            if weight is None:
                i, j = divmod(code, n)
                a, b = balance[i], balance[j]
                fits = 0 if (a > 0 and b > 0) or (a < 0 and b < 0) else 1
                closeness = round(CLOSENESS_LEVELS / (1.0 + abs(finite[i] - finite[j])))
                affinity = (closeness * FIT_LEVELS + fits) * JITTER_LEVELS + jitter(JITTER_LEVELS)
                weight = weights[code] = (need[i] + need[j]) * need_unit + affinity
            weighted.append((-weight, code))
        return weighted

    partner: dict[int, int] = {}
    _greedy(weigh(_candidates(data, order, rng, RANDOM_PARTNERS)), partner, n)
    for _ in range(WIDENING_ROUNDS):
        unmatched = [i for i in order if i not in partner]
        if len(unmatched) < 2:
            break
        before = len(partner)
        _greedy(weigh(_candidates(data, unmatched, rng, 0)), partner, n)
        if len(partner) == before:
            break
    _close(data, [i for i in order if i not in partner], partner)
    pairs = {(min(i, j), max(i, j)) for i, j in partner.items()}
    _repair_far_pairs(data, finite, pairs, partner)
    return sorted(pairs, key=lambda p: (-_weight_of(weights, n, finite, need, need_unit, p), p))


def _most_compared(vertices: list[int], counts: list[int], rng: random.Random) -> int:
    most = max(counts[i] for i in vertices)
    return rng.choice([i for i in vertices if counts[i] == most])


def finite_scores(scores: Sequence[float]) -> list[float]:
    """Each score, or 0 where it is not finite (a missing fit must not poison closeness)."""
    return [value if math.isfinite(value) else 0.0 for value in scores]


def _closeness(finite: Sequence[float], i: int, j: int) -> int:
    return round(CLOSENESS_LEVELS / (1.0 + abs(finite[i] - finite[j])))


def _weight_of(
    weights: dict[int, int],
    n: int,
    finite: Sequence[float],
    need: list[int],
    unit: int,
    pair: tuple[int, int],
) -> int:
    """The weight a pair was matched at; pairs found by the closing scan or the repair
    were never weighed with jitter, so they rank by need and closeness alone."""
    i, j = pair
    weight = weights.get(i * n + j)
    if weight is not None:
        return weight
    return (need[i] + need[j]) * unit + _closeness(finite, i, j) * FIT_LEVELS * JITTER_LEVELS


def _candidates(
    data: RoundInput, order: Sequence[int], rng: random.Random, random_partners: int
) -> list[int]:
    """Codes of each essay's nearest available successors in ``order``, plus random ones.

    A successor scan steps over at most ``blocked_degree`` blocked partners before it has
    found its ``NEIGHBOURS``, so the scans together cost O(len(order)·k + history).
    """
    n = data.n
    blocked = data.blocked
    draw = rng.randrange
    codes: set[int] = set()
    size = len(order)
    for position, i in enumerate(order):
        found = 0
        other = position + 1
        while found < NEIGHBOURS and other < size:
            j = order[other]
            code = i * n + j if i < j else j * n + i
            if code not in blocked:
                codes.add(code)
                found += 1
            other += 1
        for _ in range(random_partners):
            j = order[draw(size)]
            if j != i:
                code = i * n + j if i < j else j * n + i
                if code not in blocked:
                    codes.add(code)
    return sorted(codes)


def _greedy(weighted: list[tuple[int, int]], partner: dict[int, int], n: int) -> None:
    """Take candidate pairs, ``(-weight, code)``, best first while both essays are free."""
    weighted.sort()
    for _, code in weighted:
        i, j = divmod(code, n)
        if i not in partner and j not in partner:
            partner[i] = j
            partner[j] = i


def _close(data: RoundInput, unmatched: list[int], partner: dict[int, int]) -> None:
    """Pair any two unmatched essays that may still meet, nearest in score order first.

    ``following[p]`` points at the next position that may still be unmatched (path
    halving keeps the jumps short), so a scan only ever steps over blocked partners.
    """
    size = len(unmatched)
    following = list(range(1, size + 2))

    def next_free(position: int) -> int:
        while position < size and unmatched[position] in partner:
            following[position] = following[following[position]]
            position = following[position]
        return position

    for position, i in enumerate(unmatched):
        if i in partner:
            continue
        other = next_free(position + 1)
        while other < size:
            j = unmatched[other]
            if data.available(i, j):
                partner[i] = j
                partner[j] = i
                break
            other = next_free(other + 1)


def _repair_far_pairs(
    data: RoundInput,
    finite: Sequence[float],
    pairs: set[tuple[int, int]],
    partner: dict[int, int],
) -> None:
    """Swap partners between two far pairs when both new pairs are closer.

    Two essays left over at opposite ends of a score gap can only meet each other; with
    two such pairs over the same gap, swapping makes both pairs close again. Only pairs
    below the median closeness are considered, each a bounded number of times.
    """
    if len(pairs) < 2:
        return
    closeness = {pair: _closeness(finite, *pair) for pair in pairs}
    typical = sorted(closeness.values())[len(closeness) // 2]
    far = sorted((pair for pair in pairs if closeness[pair] < typical), key=closeness.__getitem__)
    for first_index, first in enumerate(far):
        if first not in pairs:
            continue
        for second in far[first_index + 1 : first_index + 1 + 2 * NEIGHBOURS]:
            if second not in pairs:
                continue
            swapped = _better_swap(
                data, finite, first, second, closeness[first] + closeness[second]
            )
            if swapped is not None:
                pairs.discard(first)
                pairs.discard(second)
                for i, j in swapped:
                    pairs.add((i, j))
                    partner[i] = j
                    partner[j] = i
                break


def _better_swap(
    data: RoundInput,
    finite: Sequence[float],
    first: tuple[int, int],
    second: tuple[int, int],
    current: int,
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    (a, b), (c, d) = first, second
    for x, y in (((a, c), (b, d)), ((a, d), (b, c))):
        if not (data.available(*x) and data.available(*y)):
            continue
        if _closeness(finite, *x) + _closeness(finite, *y) > current:
            return (min(x), max(x)), (min(y), max(y))
    return None
