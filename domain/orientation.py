"""Orientation: which essay of each pair is shown first (as A).

Judges, human or LLM, favour one position; an essay always shown first would carry that
bias into its score. Pair generation decides *which* essays meet; this module decides who
is shown first so that each essay's A and B appearances stay balanced across the batch.
Pure and deterministic: its only randomness is the RNG the caller passes in.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence

from domain.pair_records import Key, Oriented, PairRecord


def orient(
    chosen: list[tuple[Key, Oriented | None]], history: Sequence[PairRecord], rng: random.Random
) -> list[Oriented]:
    """Decide who is shown first, keeping every essay's A and B appearances balanced.

    Judges (human or LLM) favour one position; an essay always shown first would carry that
    bias into its score. Greedily, the essay with the lower A-minus-B balance is shown
    first (seeded coin on a tie); a forced orientation (resampling's missing one) is kept.
    Greedy alone can leave an essay two off when a wave holds several rounds, so
    ``_rebalance`` then flips free pairs along paths until no flip helps.
    """
    balance = balances(history)
    oriented: list[Oriented] = []
    for (x, y), forced in chosen:
        if forced is not None:
            a, b = forced
        elif balance[x] < balance[y] or (balance[x] == balance[y] and rng.random() < 0.5):
            a, b = x, y
        else:
            a, b = y, x
        balance[a] += 1
        balance[b] -= 1
        oriented.append((a, b))
    _rebalance(oriented, [forced is None for _, forced in chosen], balance)
    return oriented


def _rebalance(oriented: list[Oriented], flippable: list[bool], balance: Counter[str]) -> None:
    """Flip directed paths of free pairs from an over-A essay to an over-B one.

    Reversing a path s -> ... -> t (each pair shown with the earlier essay as A) moves
    two units of balance from s to t and leaves the essays in between unchanged. We only
    flip when the ends differ by three or more, which strictly lowers the sum of squared
    balances, so the loop ends. When it ends, an essay with balance >= 2 reaches only
    essays with balance >= 0 along the wave's pairs; the wave's pairs point *into* that
    reachable set, so, starting from an empty history, its balances would sum to at most
    zero: a contradiction (symmetrically for balance <= -2). Hence a wave on a fresh batch
    leaves every |A - B| <= 1.
    """
    while True:
        path = _improving_path(oriented, flippable, balance)
        if path is None:
            return
        for index in path:
            a, b = oriented[index]
            oriented[index] = (b, a)
            balance[a] -= 2
            balance[b] += 2


def _improving_path(
    oriented: list[Oriented], flippable: list[bool], balance: Counter[str]
) -> list[int] | None:
    outgoing: dict[str, list[tuple[int, str]]] = {}
    for index, (a, b) in enumerate(oriented):
        if flippable[index]:
            outgoing.setdefault(a, []).append((index, b))
            outgoing.setdefault(b, [])
    if not outgoing:
        return None
    lowest = min(balance[essay] for essay in outgoing)
    for source in sorted(outgoing, key=lambda essay: (-balance[essay], essay)):
        if balance[source] - lowest < 3:
            return None
        reached: dict[str, tuple[int, str] | None] = {source: None}
        frontier = deque([source])
        while frontier:
            essay = frontier.popleft()
            if balance[source] - balance[essay] >= 3:
                return _path_to(essay, reached)
            for index, other in outgoing[essay]:
                if other not in reached:
                    reached[other] = (index, essay)
                    frontier.append(other)
    return None


def _path_to(end: str, reached: Mapping[str, tuple[int, str] | None]) -> list[int]:
    path: list[int] = []
    step = reached[end]
    while step is not None:
        index, previous = step
        path.append(index)
        step = reached[previous]
    return path


def balances(history: Sequence[PairRecord]) -> Counter[str]:
    """Each essay's A appearances minus its B appearances."""
    balance: Counter[str] = Counter()
    for record in history:
        balance[record.essay_a] += 1
        balance[record.essay_b] -= 1
    return balance
