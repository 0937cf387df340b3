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
    chosen: list[tuple[Key, Oriented | None]],
    history: Sequence[PairRecord],
    rng: random.Random,
    history_balance: Counter[str] | None = None,
) -> list[Oriented]:
    """Decide who is shown first, keeping every essay's A and B appearances balanced.

    Judges (human or LLM) favour one position; an essay always shown first would carry that
    bias into its score. Greedily, the essay with the lower A-minus-B balance is shown
    first (seeded coin on a tie); a forced orientation (resampling's missing one) is kept.
    Greedy alone can leave an essay two off when a wave holds several rounds, so
    ``_rebalance`` then flips free pairs along paths until no flip helps.

    A wave of several rounds on essays that are balanced so far (a provider batch's only
    wave) takes the linear-time route instead: an Euler-circuit orientation (see
    ``_euler_orientation``) leaves every essay within one of balanced by construction,
    where path flipping would cost a search of the whole wave per flip.

    ``history_balance``, if the caller has it, is ``balances(history)``; it is updated
    in place.
    """
    balance = balances(history) if history_balance is None else history_balance
    if _is_fresh_multi_round(chosen, balance):
        return _euler_orientation([key for key, _ in chosen], rng)
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


def _is_fresh_multi_round(chosen: list[tuple[Key, Oriented | None]], balance: Counter[str]) -> bool:
    essays = [essay for key, _ in chosen for essay in key]
    distinct = set(essays)
    return (
        len(distinct) < len(essays)
        and all(forced is None for _, forced in chosen)
        and all(balance[essay] == 0 for essay in distinct)
    )


def _euler_orientation(keys: list[Key], rng: random.Random) -> list[Oriented]:
    """Orient every pair along an Euler circuit: each essay ends within one of balanced.

    Essays in an odd number of pairs are joined to one extra vertex, so every degree is
    even and each connected part has a closed trail through all its pairs (Hierholzer).
    Walking a closed trail enters each vertex as often as it leaves it, so each essay is
    shown first in exactly half of its pairs, counting its link to the extra vertex: an
    essay with an even number of pairs ends at 0, one with an odd number at ±1. Each
    trail starts at a seeded coin's choice of direction; cost is linear in the pairs.
    """
    essays = sorted({essay for key in keys for essay in key})
    index = {essay: i for i, essay in enumerate(essays)}
    extra = len(essays)
    ends: list[tuple[int, int]] = [(index[a], index[b]) for a, b in keys]
    degree = Counter(v for edge in ends for v in edge)
    ends += [(v, extra) for v in range(extra) if degree[v] % 2]
    adjacent: list[list[tuple[int, int]]] = [[] for _ in range(extra + 1)]
    for edge, (u, v) in enumerate(ends):
        adjacent[u].append((edge, v))
        adjacent[v].append((edge, u))
    used = [False] * len(ends)
    cursor = [0] * (extra + 1)
    direction: list[tuple[int, int] | None] = [None] * len(ends)
    for start in range(extra + 1):
        reverse = rng.random() < 0.5
        stack = [start]
        while stack:
            v = stack[-1]
            edges = adjacent[v]
            while cursor[v] < len(edges) and used[edges[cursor[v]][0]]:
                cursor[v] += 1
            if cursor[v] == len(edges):
                stack.pop()
                continue
            edge, w = edges[cursor[v]]
            used[edge] = True
            direction[edge] = (w, v) if reverse else (v, w)
            stack.append(w)
    oriented: list[Oriented] = []
    for edge in range(len(keys)):
        step = direction[edge]
        assert step is not None  # every pair lies on some trail
        oriented.append((essays[step[0]], essays[step[1]]))
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
    balance: dict[str, int] = {}
    get = balance.get  # a plain dict: Counter's missing-key path is slow Python
    for record in history:
        a, b = record.essay_a, record.essay_b
        balance[a] = get(a, 0) + 1
        balance[b] = get(b, 0) - 1
    return Counter(balance)
