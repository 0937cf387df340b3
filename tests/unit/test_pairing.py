"""Pair generation: coverage matching, resampling, orientation balance, determinism."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import matching, pairing
from domain.pairing import (
    PairRecord,
    PairStatus,
    comparison_id_for,
    count_available_pairs,
    generate_wave,
    success_coverage,
)
from domain.values import GenerationMode, Pair

BATCH_ID = "5b0e3c1e-8a52-4c1f-9d5e-0b7d2f9a6c11"
COVERAGE = GenerationMode.COVERAGE
RESAMPLING = GenerationMode.RESAMPLING
SUCCEEDED = PairStatus.SUCCEEDED
FAILED = PairStatus.FAILED
PENDING = PairStatus.PENDING


def essays(n: int) -> list[str]:
    return [f"e{i:02d}" for i in range(n)]


def wave(
    essay_ids: Sequence[str],
    history: Sequence[PairRecord] = (),
    *,
    mode: GenerationMode = COVERAGE,
    wave_number: int = 1,
    seed: int = 42,
    max_pairs: int = 1000,
    all_pairs: bool = False,
    scores: Mapping[str, float] | None = None,
) -> tuple[Pair, ...]:
    return generate_wave(
        batch_id=BATCH_ID,
        seed=seed,
        wave_number=wave_number,
        generation_mode=mode,
        essay_ids=essay_ids,
        history=history,
        scores=scores or {},
        max_pairs=max_pairs,
        all_pairs_in_one_wave=all_pairs,
    )


def records(pairs: Sequence[Pair], status: PairStatus = SUCCEEDED) -> list[PairRecord]:
    return [PairRecord(p.essay_a, p.essay_b, status) for p in pairs]


def rec(a: str, b: str, status: PairStatus = SUCCEEDED) -> PairRecord:
    return PairRecord(a, b, status)


def keys(pairs: Sequence[Pair]) -> set[tuple[str, str]]:
    return {p.key for p in pairs}


def balances(history: Sequence[PairRecord]) -> Counter[str]:
    balance: Counter[str] = Counter()
    for r in history:
        balance[r.essay_a] += 1
        balance[r.essay_b] -= 1
    return balance


def blocked(history: Sequence[PairRecord]) -> set[tuple[str, str]]:
    return {r.key for r in history if r.status is not FAILED}


# --- comparison ids --------------------------------------------------------------------------


def test_comparison_id_is_a_uuid5_of_batch_wave_and_index() -> None:
    first = comparison_id_for(BATCH_ID, 1, 0)
    assert UUID(first).version == 5
    assert first == comparison_id_for(BATCH_ID, 1, 0)
    assert first != comparison_id_for(BATCH_ID, 1, 1)
    assert first != comparison_id_for(BATCH_ID, 2, 0)


@given(st.uuids(), st.text())
def test_comparison_ids_are_the_standard_uuid5_text(batch: UUID, name: str) -> None:
    assert pairing.uuid5_text(batch.bytes, name) == str(uuid5(batch, name))


def test_wave_pairs_carry_ids_numbered_in_output_order() -> None:
    pairs = wave(essays(6))
    assert [p.comparison_id for p in pairs] == [
        comparison_id_for(BATCH_ID, 1, i) for i in range(len(pairs))
    ]


# --- counting tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "history", "expected"),
    [
        (0, [], 0),
        (1, [], 0),
        (2, [], 1),
        (4, [], 6),
        (4, [rec("e00", "e01", PENDING)], 5),
        (4, [rec("e00", "e01", SUCCEEDED)], 5),
        (4, [rec("e00", "e01", FAILED)], 6),
        (4, [rec("e00", "e01", FAILED), rec("e01", "e00", FAILED)], 6),
        (4, [rec("e00", "e01", FAILED), rec("e01", "e00", SUCCEEDED)], 5),
        (4, [rec("e00", "e01"), rec("e01", "e00")], 5),
        (4, [rec("e00", "e01"), rec("e02", "e03", PENDING), rec("e00", "e02", FAILED)], 4),
        (3, [rec("e00", "e09"), rec("e00", "e00")], 3),  # unknown essay, self pair: ignored
    ],
)
def test_count_available_pairs(n: int, history: list[PairRecord], expected: int) -> None:
    assert count_available_pairs(essays(n), history) == expected


@pytest.mark.parametrize(
    ("n", "history", "expected"),
    [
        (0, [], 0.0),
        (1, [], 0.0),
        (2, [], 0.0),
        (2, [rec("e00", "e01")], 1.0),
        (2, [rec("e00", "e01"), rec("e01", "e00")], 1.0),
        (3, [rec("e00", "e01", PENDING)], 0.0),
        (3, [rec("e00", "e01", FAILED)], 0.0),
        (3, [rec("e00", "e01"), rec("e01", "e02", FAILED)], 1 / 3),
        (4, [rec("e00", "e01"), rec("e02", "e03"), rec("e01", "e02")], 0.5),
        (3, [rec("e00", "e09"), rec("e00", "e00")], 0.0),
    ],
)
def test_success_coverage(n: int, history: list[PairRecord], expected: float) -> None:
    assert success_coverage(essays(n), history) == pytest.approx(expected)


# --- edge cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [COVERAGE, RESAMPLING])
@pytest.mark.parametrize(("n", "max_pairs"), [(0, 10), (1, 10), (5, 0), (5, -1)])
def test_nothing_to_generate_gives_an_empty_wave(
    mode: GenerationMode, n: int, max_pairs: int
) -> None:
    history = [rec("e00", "e01")] if n >= 2 else []
    assert wave(essays(n), history, mode=mode, max_pairs=max_pairs) == ()


def test_coverage_with_every_pair_answered_or_pending_is_empty() -> None:
    history = [rec("e00", "e01"), rec("e00", "e02", PENDING), rec("e01", "e02")]
    assert wave(essays(3), history) == ()
    assert wave(essays(3), history, all_pairs=True) == ()


def test_resampling_without_successes_is_empty() -> None:
    history = [rec("e00", "e01", FAILED), rec("e01", "e02", PENDING)]
    assert wave(essays(3), history, mode=RESAMPLING) == ()


# --- coverage: one matching round ----------------------------------------------------------------


@pytest.mark.parametrize(("n", "size"), [(2, 1), (3, 1), (4, 2), (5, 2), (24, 12), (25, 12)])
def test_first_coverage_wave_is_a_largest_matching(n: int, size: int) -> None:
    pairs = wave(essays(n))
    assert len(pairs) == size
    appearing = [e for p in pairs for e in (p.essay_a, p.essay_b)]
    assert len(appearing) == len(set(appearing))  # every essay at most once


def test_coverage_wave_is_capped() -> None:
    assert len(wave(essays(24), max_pairs=5)) == 5


def test_three_essays_take_three_single_pair_waves_covering_every_pair() -> None:
    history: list[PairRecord] = []
    for number in (1, 2, 3):
        pairs = wave(essays(3), history, wave_number=number)
        assert len(pairs) == 1
        history += records(pairs)
    assert success_coverage(essays(3), history) == 1.0
    assert wave(essays(3), history, wave_number=4) == ()


def test_odd_net_sits_out_the_most_compared_essay() -> None:
    history = [rec("e00", "e01", FAILED), rec("e02", "e00", FAILED)]  # e00: 2 comparisons
    pairs = wave(essays(5), history)
    assert len(pairs) == 2
    assert all(not p.involves("e00") for p in pairs)


@pytest.mark.parametrize("seed", range(5))
def test_odd_net_sit_out_tie_break_is_seeded_and_always_someone_most_compared(seed: int) -> None:
    history = [rec("e00", "e01", FAILED), rec("e02", "e03", FAILED)]
    pairs = wave(essays(5), history, seed=seed)
    playing = {e for p in pairs for e in (p.essay_a, p.essay_b)}
    (sitting_out,) = set(essays(5)) - playing
    assert sitting_out in {"e00", "e01", "e02", "e03"}


def test_most_compared_essay_plays_when_it_is_the_only_one_with_partners_left() -> None:
    history = [
        rec("e00", "e01"),
        rec("e00", "e02", FAILED),
        rec("e02", "e00", FAILED),
        rec("e01", "e02", FAILED),
        rec("e02", "e01", FAILED),
    ]
    pairs = wave(essays(3), history)
    assert len(pairs) == 1
    assert pairs[0].involves("e02")


def test_sitting_out_never_costs_a_pair() -> None:
    # Only x-a, x-d and b-c can still be asked; x is the most compared essay, but sitting
    # it out would leave a single pair where two are possible.
    x, a, b, c, d = "x", "a", "b", "c", "d"
    history = [rec(*pair) for pair in [(a, b), (a, c), (a, d), (b, d), (c, d), (x, b), (x, c)]]
    history += [rec(x, a, FAILED), rec(a, x, FAILED), rec(x, d, FAILED), rec(d, x, FAILED)]
    pairs = wave([x, a, b, c, d], history)
    assert len(pairs) == 2
    assert (b, c) in keys(pairs)


def test_coverage_asks_failed_only_pairs_again_but_not_pending_or_answered_ones() -> None:
    history = [rec("e00", "e01", FAILED), rec("e02", "e03", PENDING), rec("e00", "e02")]
    pairs = wave(essays(4), history, all_pairs=True)
    assert keys(pairs) == {("e00", "e01"), ("e00", "e03"), ("e01", "e02"), ("e01", "e03")}


def test_close_scores_are_paired() -> None:
    scores = {"e00": -3.0, "e01": -2.9, "e02": 0.0, "e03": 0.1, "e04": 2.0, "e05": 2.2}
    assert keys(wave(essays(6), scores=scores)) == {
        ("e00", "e01"),
        ("e02", "e03"),
        ("e04", "e05"),
    }


def test_two_far_apart_odd_clusters_still_pair_everyone() -> None:
    # Each essay's closest partners are the ten others of its own cluster; matching only
    # those would leave one essay of each cluster idle, so a cross pair must be found.
    ids = essays(22)
    scores = {e: 0.0 if i < 11 else 10.0 for i, e in enumerate(ids)}
    pairs = wave(ids, scores=scores)
    assert len(pairs) == 11
    assert sum(scores[p.essay_a] != scores[p.essay_b] for p in pairs) == 1


def test_repeated_coverage_waves_reach_full_coverage_without_repeats() -> None:
    ids = essays(9)
    history: list[PairRecord] = []
    for number in range(1, 50):
        pairs = wave(ids, history, wave_number=number)
        if not pairs:
            break
        assert not keys(pairs) & blocked(history)
        history += records(pairs)
    assert success_coverage(ids, history) == 1.0
    assert len(history) == 36


# --- coverage: provider batch (all pairs in one wave) -------------------------------------------


@pytest.mark.parametrize(
    ("n", "max_pairs", "expected"),
    [(3, 100, 3), (5, 100, 10), (6, 100, 15), (24, 100, 100), (24, 1000, 276), (40, 400, 400)],
)
def test_provider_wave_holds_min_of_cap_and_all_pairs(
    n: int, max_pairs: int, expected: int
) -> None:
    pairs = wave(essays(n), max_pairs=max_pairs, all_pairs=True)
    assert len(pairs) == expected
    assert len(keys(pairs)) == expected


def test_provider_wave_spreads_a_capped_wave_evenly() -> None:
    pairs = wave(essays(10), max_pairs=20, all_pairs=True)
    appearances = Counter(e for p in pairs for e in (p.essay_a, p.essay_b))
    assert set(appearances.values()) == {4}


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 24, 25])
def test_full_provider_wave_balances_every_essay_within_one(n: int) -> None:
    pairs = wave(essays(n), all_pairs=True)
    assert len(pairs) == n * (n - 1) // 2
    assert max(abs(v) for v in balances(records(pairs)).values()) <= 1


# --- orientation -------------------------------------------------------------------------------


def test_single_round_shows_first_the_essay_with_fewer_first_appearances() -> None:
    history = [rec("e00", "e01", FAILED), rec("e00", "e01", FAILED)]  # e00 +2, e01 -2
    (pair,) = wave(essays(2), history)
    assert (pair.essay_a, pair.essay_b) == ("e01", "e00")


@pytest.mark.parametrize("seed", range(8))
def test_coverage_rounds_never_show_first_the_more_first_shown_essay(seed: int) -> None:
    ids = essays(8)
    history: list[PairRecord] = []
    for number in range(1, 8):
        before = balances(history)
        pairs = wave(ids, history, wave_number=number, seed=seed)
        assert all(before[p.essay_a] <= before[p.essay_b] for p in pairs)
        history += records(pairs)


# --- resampling --------------------------------------------------------------------------------


def test_resampling_flips_the_orientation() -> None:
    pairs = wave(essays(3), [rec("e00", "e01"), rec("e02", "e01")], mode=RESAMPLING)
    assert {(p.essay_a, p.essay_b) for p in pairs} == {("e01", "e00"), ("e01", "e02")}


def test_resampling_reasks_every_answered_pair_once_and_nothing_else() -> None:
    history = [
        rec("e00", "e01"),
        rec("e01", "e00"),
        rec("e02", "e03"),
        rec("e00", "e02", FAILED),
        rec("e01", "e03", PENDING),
    ]
    pairs = wave(essays(4), history, mode=RESAMPLING)
    assert sorted(p.key for p in pairs) == [("e00", "e01"), ("e02", "e03")]
    assert ("e03", "e02") in {(p.essay_a, p.essay_b) for p in pairs}


def test_resampling_after_full_coverage_evens_out_every_essay() -> None:
    ids = essays(7)
    first = wave(ids, all_pairs=True)
    history = records(first)
    second = wave(ids, history, mode=RESAMPLING, wave_number=2)
    assert keys(second) == keys(first)
    assert {(p.essay_b, p.essay_a) for p in second} == {(p.essay_a, p.essay_b) for p in first}
    assert set(balances(history + records(second)).values()) == {0}


def test_capped_resampling_prefers_the_missing_orientation() -> None:
    history = [rec("e00", "e01"), rec("e01", "e00"), rec("e02", "e03")]
    (pair,) = wave(essays(4), history, mode=RESAMPLING, max_pairs=1)
    assert (pair.essay_a, pair.essay_b) == ("e03", "e02")


def test_capped_resampling_prefers_essays_with_fewest_appearances() -> None:
    history = [rec("e00", "e01"), rec("e00", "e02"), rec("e00", "e03"), rec("e04", "e05")]
    (pair,) = wave(essays(6), history, mode=RESAMPLING, max_pairs=1)
    assert pair.key == ("e04", "e05")


# --- determinism -------------------------------------------------------------------------------


def test_same_inputs_give_the_same_wave_whatever_the_input_order() -> None:
    ids = essays(12)
    history = [*records(wave(ids)), rec("e00", "e05", FAILED)]
    scores = {e: i / 10 for i, e in enumerate(ids)}
    for mode in (COVERAGE, RESAMPLING):
        expected = wave(ids, history, mode=mode, wave_number=2, scores=scores)
        assert expected
        again = wave(ids[::-1], history[::-1], mode=mode, wave_number=2, scores=scores)
        assert again == expected


def test_different_wave_numbers_can_give_different_waves() -> None:
    waves = {frozenset(keys(wave(essays(8), wave_number=number))) for number in range(1, 6)}
    assert len(waves) > 1


def test_different_seeds_can_give_different_waves() -> None:
    waves = {frozenset(keys(wave(essays(8), seed=seed))) for seed in range(5)}
    assert len(waves) > 1


# --- scale: candidates, never all pairs ----------------------------------------------------------


def count_weighed_pairs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pairs the rounds weighed: each round weighs every candidate pair it found, once."""
    weighed = [0]
    this_round: set[int] = set()
    original_round, original_candidates = matching.matching_round, matching._candidates

    def counting_round(*args: Any) -> list[tuple[int, int]]:
        this_round.clear()
        pairs = original_round(*args)
        weighed[0] += len(this_round)
        return pairs

    def counting_candidates(*args: Any) -> list[int]:
        codes = original_candidates(*args)
        this_round.update(codes)
        return codes

    monkeypatch.setattr(pairing, "matching_round", counting_round)
    monkeypatch.setattr(matching, "_candidates", counting_candidates)
    return weighed


@pytest.mark.parametrize("all_pairs", [False, True])
def test_a_round_weighs_a_few_candidates_per_essay_never_all_pairs(
    monkeypatch: pytest.MonkeyPatch, all_pairs: bool
) -> None:
    n = 1200
    weighed = count_weighed_pairs(monkeypatch)
    scores = {e: (i % 37) / 5 for i, e in enumerate(essays(n))}
    pairs = wave(essays(n), scores=scores, max_pairs=2 * n if all_pairs else n, all_pairs=all_pairs)
    rounds = 4 if all_pairs else 1
    assert len(pairs) == rounds * n // 2
    per_round = (matching.NEIGHBOURS + matching.RANDOM_PARTNERS) * n
    assert weighed[0] <= 2 * rounds * per_round  # n²/2 would be 719,400


def test_later_waves_of_a_large_batch_stay_maximal_and_pair_close_scores() -> None:
    ids = [f"e{i:04d}" for i in range(400)]
    rng = random.Random(3)
    ability = {e: rng.gauss(0.0, 2.0) for e in ids}
    history: list[PairRecord] = []
    for number in range(1, 9):
        pairs = wave(ids, history, wave_number=number, scores=ability)
        assert not keys(pairs) & blocked(history)
        playing = {e for p in pairs for e in (p.essay_a, p.essay_b)}
        idle = sorted(set(ids) - playing)
        assert len(idle) <= 1 or all(
            (a, b) in blocked(history) for a in idle for b in idle if a < b
        )
        gaps = sorted(abs(ability[p.essay_a] - ability[p.essay_b]) for p in pairs)
        assert gaps[len(gaps) // 2] < 0.2  # random partners would differ by ~2.3
        history += records(pairs)


def test_a_large_provider_wave_balances_every_essay_within_one() -> None:
    pairs = wave(essays(300), max_pairs=2000, all_pairs=True)
    assert len(pairs) == 2000
    assert max(abs(v) for v in balances(records(pairs)).values()) <= 1


# --- invariants (hypothesis) -------------------------------------------------------------------

ESSAY_POOL = essays(11)


@dataclass(frozen=True)
class Scenario:
    essay_ids: list[str]
    history: list[PairRecord]
    scores: dict[str, float]
    mode: GenerationMode
    all_pairs: bool
    max_pairs: int
    seed: int
    wave_number: int

    def run(self, mode: GenerationMode | None = None) -> tuple[Pair, ...]:
        return wave(
            self.essay_ids,
            self.history,
            mode=mode or self.mode,
            wave_number=self.wave_number,
            seed=self.seed,
            max_pairs=self.max_pairs,
            all_pairs=self.all_pairs,
            scores=self.scores,
        )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ids = ESSAY_POOL[: draw(st.integers(min_value=0, max_value=len(ESSAY_POOL)))]
    history: list[PairRecord] = []
    if len(ids) >= 2:
        record = st.builds(
            PairRecord, st.sampled_from(ids), st.sampled_from(ids), st.sampled_from(PairStatus)
        )
        history = draw(st.lists(record.filter(lambda r: r.essay_a != r.essay_b), max_size=40))
    score = st.floats(min_value=-5, max_value=5, allow_nan=False)
    return Scenario(
        essay_ids=ids,
        history=history,
        scores=draw(st.dictionaries(st.sampled_from(ESSAY_POOL), score, max_size=len(ids))),
        mode=draw(st.sampled_from(GenerationMode)),
        all_pairs=draw(st.booleans()),
        max_pairs=draw(st.integers(min_value=-1, max_value=60)),
        seed=draw(st.integers(min_value=0, max_value=2**32)),
        wave_number=draw(st.integers(min_value=1, max_value=20)),
    )


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_every_wave_is_well_formed_and_reproducible(s: Scenario) -> None:
    pairs = s.run()
    assert pairs == s.run()
    assert len(pairs) <= max(0, s.max_pairs)
    assert all(p.essay_a != p.essay_b for p in pairs)
    assert all(p.essay_a in s.essay_ids and p.essay_b in s.essay_ids for p in pairs)
    assert len(keys(pairs)) == len(pairs)
    assert [p.comparison_id for p in pairs] == [
        comparison_id_for(BATCH_ID, s.wave_number, i) for i in range(len(pairs))
    ]


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_coverage_asks_only_available_pairs_and_as_many_as_it_can(s: Scenario) -> None:
    pairs = s.run(COVERAGE)
    cap = max(0, s.max_pairs)
    assert not keys(pairs) & blocked(s.history)
    if s.all_pairs:
        assert len(pairs) == min(cap, count_available_pairs(s.essay_ids, s.history))
        return
    playing = {e for p in pairs for e in (p.essay_a, p.essay_b)}
    assert len(playing) == 2 * len(pairs)  # one round: every essay at most once
    if len(pairs) < cap:  # not cut by the cap, so no two idle essays could have played
        idle = [e for e in s.essay_ids if e not in playing]
        idle_pairs = {(a, b) for a in idle for b in idle if a < b}
        assert idle_pairs <= blocked(s.history)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_resampling_reasks_answered_pairs_in_the_missing_orientation(s: Scenario) -> None:
    pairs = s.run(RESAMPLING)
    answered = {r.key for r in s.history if r.status is SUCCEEDED}
    pending = {r.key for r in s.history if r.status is PENDING}
    assert keys(pairs) <= answered - pending
    assert len(pairs) == min(max(0, s.max_pairs), len(answered - pending))
    asked = {(r.essay_a, r.essay_b) for r in s.history}
    # Each pair is shown the other way round from an earlier asking (a one-way pair flips).
    assert all((p.essay_b, p.essay_a) in asked for p in pairs)
