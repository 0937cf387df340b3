"""decide() and apply_mode_guards(): every rule of DESIGN.md, in order, as a table."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.batching import resolve_batching_mode
from domain.continuation import (
    ContinuationContext,
    DecisionKind,
    apply_mode_guards,
    decide,
    when_pairing_finds_nothing,
)
from domain.policy import BatchPolicy, as_recorded
from domain.values import BatchingMode

POLICY = BatchPolicy()
POLICY_V1 = as_recorded(BatchPolicy(policy_version=1))

# A regular 24-essay net after its first 12-pair wave, all successful: nothing is decided
# by this baseline; each row below changes what its rule needs.
BASE = ContinuationContext(
    wave_number=1,
    essay_count=24,
    budget=120,
    pairs_submitted=12,
    outcomes=12,
    successes=12,
    failures=0,
    open_comparisons=0,
    pairs_available=264,
    success_coverage=12 / 276,
    resampling_passes_used=0,
    is_small_net=False,
    max_score_change=None,
    new_successes=12,
)
SMALL = replace(
    BASE,
    essay_count=3,
    pairs_submitted=3,
    outcomes=3,
    successes=3,
    pairs_available=0,
    success_coverage=1.0,
    is_small_net=True,
)

D = DecisionKind

CASES = [
    # id, context, expected kind, expected reason
    (
        "pending_wins_over_everything",
        replace(BASE, open_comparisons=1, successes=0),
        D.WAIT,
        "open_comparisons",
    ),
    (
        "first_evaluation_never_stable",
        replace(BASE, successes=60, outcomes=60, pairs_submitted=60),
        D.REQUEST_MORE_COMPARISONS,
        "more_pairs_available",
    ),
    (
        "zero_successes_at_cap",
        replace(BASE, successes=0, failures=120, outcomes=120, pairs_submitted=120),
        D.FINALIZE_FAILURE,
        "zero_successes",
    ),
    (
        "low_success_rate_at_cap",
        replace(BASE, successes=90, failures=30, outcomes=120, pairs_submitted=120),
        D.FINALIZE_FAILURE,
        "low_success_rate",
    ),
    (
        "low_success_rate_below_cap_keeps_asking",
        replace(BASE, successes=5, failures=7),
        D.REQUEST_MORE_COMPARISONS,
        "more_pairs_available",
    ),
    (
        "zero_successes_below_cap_keeps_asking",
        replace(BASE, successes=0, failures=12),
        D.REQUEST_MORE_COMPARISONS,
        "more_pairs_available",
    ),
    (
        "low_success_rate_with_nothing_left_fails",
        replace(BASE, successes=5, failures=7, pairs_available=0),
        D.FINALIZE_FAILURE,
        "low_success_rate",
    ),
    (
        "low_success_rate_small_net_passes_used_fails",
        replace(
            SMALL,
            successes=10,
            failures=5,
            outcomes=15,
            pairs_submitted=15,
            resampling_passes_used=4,
        ),
        D.FINALIZE_FAILURE,
        "low_success_rate",
    ),
    (
        "exactly_min_success_rate_is_not_low",
        replace(BASE, successes=96, failures=24, outcomes=120, pairs_submitted=120),
        D.FINALIZE_SCORING,
        "callbacks_reached_cap",
    ),
    (
        "stable_at_threshold_inclusive",
        replace(BASE, max_score_change=0.025),
        D.FINALIZE_SCORING,
        "stable",
    ),
    (
        "just_above_threshold_not_stable",
        replace(BASE, max_score_change=0.0251),
        D.REQUEST_MORE_COMPARISONS,
        "more_pairs_available",
    ),
    (
        "stability_needs_min_successes",
        replace(BASE, successes=11, failures=1, max_score_change=0.0),
        D.REQUEST_MORE_COMPARISONS,
        "more_pairs_available",
    ),
    (
        "callbacks_reached_cap",
        replace(BASE, outcomes=120, successes=120, pairs_submitted=120, max_score_change=1.0),
        D.FINALIZE_SCORING,
        "callbacks_reached_cap",
    ),
    (
        "budget_exhausted_before_callbacks_reach_it",
        replace(BASE, pairs_submitted=120, outcomes=110, successes=110, max_score_change=1.0),
        D.FINALIZE_SCORING,
        "budget_exhausted",
    ),
    (
        "small_net_passes_used_up",
        replace(SMALL, resampling_passes_used=4, max_score_change=0.5),
        D.FINALIZE_SCORING,
        "small_net_passes_exhausted",
    ),
    (
        "small_net_full_coverage_resamples",
        replace(SMALL, resampling_passes_used=1, max_score_change=0.5),
        D.RESAMPLE,
        "small_net_resampling",
    ),
    (
        "small_net_without_full_coverage_asks_more",
        replace(SMALL, success_coverage=2 / 3, pairs_available=1),
        D.REQUEST_MORE_COMPARISONS,
        "more_pairs_available",
    ),
    (
        "regular_net_full_coverage_resamples_once",
        replace(BASE, essay_count=6, success_coverage=1.0, pairs_available=0, max_score_change=0.3),
        D.RESAMPLE,
        "regular_resampling",
    ),
    (
        "regular_net_pass_used_then_nothing_left",
        replace(
            BASE,
            essay_count=6,
            success_coverage=1.0,
            pairs_available=0,
            resampling_passes_used=1,
            max_score_change=0.3,
        ),
        D.FINALIZE_SCORING,
        "nothing_left_to_ask",
    ),
    (
        "regular_net_partial_coverage_no_resampling",
        replace(BASE, success_coverage=0.99, pairs_available=0, max_score_change=0.3),
        D.FINALIZE_SCORING,
        "nothing_left_to_ask",
    ),
    (
        "stable_beats_resampling",
        replace(
            SMALL,
            successes=12,
            outcomes=12,
            pairs_submitted=12,
            resampling_passes_used=3,
            max_score_change=0.01,
        ),
        D.FINALIZE_SCORING,
        "stable",
    ),
]


@pytest.mark.parametrize(
    ("ctx", "kind", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide_applies_rules_in_order(
    ctx: ContinuationContext, kind: DecisionKind, reason: str
) -> None:
    decision = decide(ctx, POLICY)
    assert (decision.kind, decision.reason.value) == (kind, reason)


@st.composite
def closed_waves(draw: st.DrawFn) -> ContinuationContext:
    """Any consistent context of a wave that has closed."""
    n = draw(st.integers(2, 40))
    budget = draw(st.integers(1, 300))
    submitted = draw(st.integers(1, budget + 5))
    successes = draw(st.integers(0, submitted))
    all_pairs = n * (n - 1) // 2
    return ContinuationContext(
        wave_number=draw(st.integers(1, 30)),
        essay_count=n,
        budget=budget,
        pairs_submitted=submitted,
        outcomes=submitted,
        successes=successes,
        failures=submitted - successes,
        open_comparisons=0,
        pairs_available=draw(st.integers(0, all_pairs)),
        success_coverage=draw(st.sampled_from([0.0, 0.5, 0.99, 1.0])),
        resampling_passes_used=draw(st.integers(0, 5)),
        is_small_net=n <= POLICY.small_net_max_essays,
        max_score_change=draw(st.one_of(st.none(), st.floats(0.0, 3.0))),
        new_successes=draw(st.integers(0, successes)),
        pairing_found_nothing=draw(st.booleans()),
    )


@settings(max_examples=500, deadline=None)
@given(closed_waves(), st.sampled_from(list(BatchingMode)), st.sampled_from([POLICY, POLICY_V1]))
def test_a_batch_is_never_left_idle(
    ctx: ContinuationContext, mode: BatchingMode, policy: BatchPolicy
) -> None:
    """A closed wave ends in a finalize, or in a wave that has budget and something to
    ask; and when pairing then finds nothing, the fallback finalizes."""
    guarded = apply_mode_guards(decide(ctx, policy), mode, ctx, policy)
    final = guarded.final
    assert final.kind is not DecisionKind.WAIT
    if final.kind is DecisionKind.REQUEST_MORE_COMPARISONS:
        assert ctx.budget_left > 0 and ctx.pairs_available > 0
        assert not ctx.pairing_found_nothing
    if final.kind is DecisionKind.RESAMPLE:
        assert ctx.budget_left > 0 and not ctx.pairing_found_nothing
    if final.kind is DecisionKind.FINALIZE_FAILURE:
        assert ctx.success_rate is not None and ctx.success_rate < 1.0
    _, fallback = when_pairing_finds_nothing(ctx, mode, policy)
    assert fallback.final.kind in (DecisionKind.FINALIZE_SCORING, DecisionKind.FINALIZE_FAILURE)


# Rules that changed with policy version 2: what version 1 decided (still what a batch
# registered under it decides) and what version 2 decides.
V2_CASES = [
    # id, context, (v1 kind, v1 reason), (v2 kind, v2 reason)
    (
        "failed_wave_leaves_scores_unchanged_not_stable",
        replace(
            BASE,
            wave_number=2,
            pairs_submitted=24,
            outcomes=24,
            successes=12,
            failures=12,
            new_successes=0,
            max_score_change=0.0,
        ),
        (D.FINALIZE_SCORING, "stable"),
        (D.REQUEST_MORE_COMPARISONS, "more_pairs_available"),
    ),
    (
        "stable_needs_the_success_rate",
        replace(
            BASE, outcomes=20, successes=15, failures=5, new_successes=3, max_score_change=0.01
        ),
        (D.FINALIZE_SCORING, "stable"),
        (D.REQUEST_MORE_COMPARISONS, "more_pairs_available"),
    ),
    (
        "stable_with_new_successes_and_the_rate",
        replace(
            BASE, outcomes=20, successes=16, failures=4, new_successes=1, max_score_change=0.01
        ),
        (D.FINALIZE_SCORING, "stable"),
        (D.FINALIZE_SCORING, "stable"),
    ),
    (
        "failures_beyond_what_the_budget_can_absorb_fail_at_once",
        replace(BASE, pairs_submitted=36, outcomes=36, successes=11, failures=25),
        (D.REQUEST_MORE_COMPARISONS, "more_pairs_available"),
        (D.FINALIZE_FAILURE, "success_rate_unreachable"),
    ),
    (
        "failures_exactly_at_the_limit_keep_asking",
        replace(BASE, pairs_submitted=36, outcomes=36, successes=12, failures=24),
        (D.REQUEST_MORE_COMPARISONS, "more_pairs_available"),
        (D.REQUEST_MORE_COMPARISONS, "more_pairs_available"),
    ),
    (
        "zero_successes_unreachable_before_cap",
        replace(BASE, pairs_submitted=36, outcomes=36, successes=0, failures=36),
        (D.REQUEST_MORE_COMPARISONS, "more_pairs_available"),
        (D.FINALIZE_FAILURE, "success_rate_unreachable"),
    ),
    (
        "cap_reason_still_wins_at_the_cap",
        replace(BASE, pairs_submitted=120, outcomes=120, successes=0, failures=120),
        (D.FINALIZE_FAILURE, "zero_successes"),
        (D.FINALIZE_FAILURE, "zero_successes"),
    ),
    (
        "pairing_found_nothing_is_a_cap_for_the_success_rate",
        replace(BASE, successes=5, failures=7, pairing_found_nothing=True),
        (D.FINALIZE_FAILURE, "low_success_rate"),
        (D.FINALIZE_FAILURE, "low_success_rate"),
    ),
    (
        "pairing_found_nothing_never_asks_again",
        replace(SMALL, max_score_change=0.5, pairing_found_nothing=True),
        (D.FINALIZE_SCORING, "nothing_left_to_ask"),
        (D.FINALIZE_SCORING, "nothing_left_to_ask"),
    ),
]


@pytest.mark.parametrize(
    ("ctx", "v1", "v2"), [c[1:] for c in V2_CASES], ids=[c[0] for c in V2_CASES]
)
def test_policy_version_2_rules_and_version_1_unchanged(
    ctx: ContinuationContext,
    v1: tuple[DecisionKind, str],
    v2: tuple[DecisionKind, str],
) -> None:
    old, new = decide(ctx, POLICY_V1), decide(ctx, POLICY)
    assert (old.kind, old.reason.value) == v1
    assert (new.kind, new.reason.value) == v2


RELIABILITY = replace(POLICY, reliability_target=0.8)


@pytest.mark.parametrize(
    ("policy", "ssr", "split_half", "expected"),
    [
        (POLICY, 0.95, 0.95, "more_pairs_available"),  # off by default
        (RELIABILITY, 0.85, 0.80, "reliability_reached"),  # both reach the target
        (RELIABILITY, 0.90, 0.79, "more_pairs_available"),  # split-half short
        (RELIABILITY, 0.79, 0.95, "more_pairs_available"),  # SSR short
        (RELIABILITY, 0.95, None, "more_pairs_available"),  # not estimated
    ],
)
def test_reliability_stopping_rule(
    policy: BatchPolicy, ssr: float, split_half: float | None, expected: str
) -> None:
    ctx = replace(BASE, max_score_change=0.5, ssr=ssr, split_half=split_half)
    assert decide(ctx, policy).reason.value == expected


@pytest.mark.parametrize(
    ("mode", "ctx", "kind", "reason"),
    [
        (BatchingMode.SERIAL_BUNDLE, BASE, D.FINALIZE_SCORING, "nothing_left_to_ask"),
        (
            BatchingMode.SERIAL_BUNDLE,
            replace(BASE, successes=5, failures=7),
            D.FINALIZE_FAILURE,
            "low_success_rate",
        ),
        (
            BatchingMode.PER_REQUEST,
            replace(SMALL, max_score_change=0.5),
            D.FINALIZE_SCORING,
            "nothing_left_to_ask",
        ),
    ],
)
def test_when_pairing_finds_nothing_the_rules_still_apply(
    mode: BatchingMode, ctx: ContinuationContext, kind: DecisionKind, reason: str
) -> None:
    exhausted, guarded = when_pairing_finds_nothing(ctx, mode, POLICY)
    assert exhausted.pairing_found_nothing
    assert (guarded.final.kind, guarded.final.reason.value) == (kind, reason)
    assert guarded.raw == decide(exhausted, POLICY)


GUARD_CASES = [
    # id, mode, context, expected final, expected reason, guard expected
    (
        "provider_batch_single_wave_with_budget_left_finalizes",
        BatchingMode.PROVIDER_BATCH_API,
        replace(SMALL, budget=120, resampling_passes_used=0, max_score_change=None),
        D.FINALIZE_SCORING,
        "provider_batch_single_wave",
        True,
    ),
    (
        "provider_batch_outcomes_at_cap_finalize_without_the_guard",
        BatchingMode.PROVIDER_BATCH_API,
        replace(BASE, pairs_submitted=120, outcomes=120, successes=120, max_score_change=None),
        D.FINALIZE_SCORING,
        "callbacks_reached_cap",
        False,
    ),
    (
        "provider_batch_unstable_scores_still_no_new_wave",
        BatchingMode.PROVIDER_BATCH_API,
        replace(BASE, max_score_change=0.9, successes=12),
        D.FINALIZE_SCORING,
        "provider_batch_single_wave",
        True,
    ),
    (
        "provider_batch_low_success_treated_as_cap_fails",
        BatchingMode.PROVIDER_BATCH_API,
        replace(BASE, successes=6, failures=6),
        D.FINALIZE_FAILURE,
        "low_success_rate",
        True,
    ),
    (
        "provider_batch_zero_successes_fails",
        BatchingMode.PROVIDER_BATCH_API,
        replace(BASE, successes=0, failures=12),
        D.FINALIZE_FAILURE,
        "zero_successes",
        True,
    ),
    (
        "provider_batch_leaves_finalize_alone",
        BatchingMode.PROVIDER_BATCH_API,
        replace(BASE, outcomes=120, successes=120, pairs_submitted=120),
        D.FINALIZE_SCORING,
        "callbacks_reached_cap",
        False,
    ),
    (
        "serial_bundle_keeps_more_waves",
        BatchingMode.SERIAL_BUNDLE,
        BASE,
        D.REQUEST_MORE_COMPARISONS,
        "more_pairs_available",
        False,
    ),
    (
        "per_request_keeps_resampling",
        BatchingMode.PER_REQUEST,
        replace(SMALL, max_score_change=0.4),
        D.RESAMPLE,
        "small_net_resampling",
        False,
    ),
]


@pytest.mark.parametrize(
    ("mode", "ctx", "kind", "reason", "guarded"),
    [c[1:] for c in GUARD_CASES],
    ids=[c[0] for c in GUARD_CASES],
)
def test_mode_guards(
    mode: BatchingMode, ctx: ContinuationContext, kind: DecisionKind, reason: str, guarded: bool
) -> None:
    raw = decide(ctx, POLICY)
    result = apply_mode_guards(raw, mode, ctx, POLICY)
    assert (result.final.kind, result.final.reason.value) == (kind, reason)
    assert result.raw == raw
    assert (result.guard is not None) == guarded


def test_provider_batch_mode_never_yields_another_wave() -> None:
    for _, ctx, *_ in CASES:
        result = apply_mode_guards(
            decide(ctx, POLICY), BatchingMode.PROVIDER_BATCH_API, ctx, POLICY
        )
        assert result.final.kind not in (D.RESAMPLE, D.REQUEST_MORE_COMPARISONS)


MODE_CASES = [
    # id, requested, setting, provider, expected mode, expected source
    (
        "no_recorded_mode_defaults_to_serial_bundle",
        None,
        None,
        "openai",
        BatchingMode.SERIAL_BUNDLE,
        "default",
    ),
    (
        "request_wins",
        BatchingMode.PER_REQUEST,
        BatchingMode.SERIAL_BUNDLE,
        "openai",
        BatchingMode.PER_REQUEST,
        "request",
    ),
    (
        "setting_when_request_silent",
        None,
        BatchingMode.PER_REQUEST,
        "openai",
        BatchingMode.PER_REQUEST,
        "settings",
    ),
    (
        "provider_batch_allowed",
        BatchingMode.PROVIDER_BATCH_API,
        None,
        "anthropic",
        BatchingMode.PROVIDER_BATCH_API,
        "request",
    ),
    (
        "provider_batch_unsupported_falls_back_to_setting",
        BatchingMode.PROVIDER_BATCH_API,
        BatchingMode.PER_REQUEST,
        "mistral",
        BatchingMode.PER_REQUEST,
        "fallback:provider_batch_api_unsupported_by_mistral",
    ),
    (
        "provider_batch_unsupported_setting_too_falls_back_to_serial",
        BatchingMode.PROVIDER_BATCH_API,
        BatchingMode.PROVIDER_BATCH_API,
        "mistral",
        BatchingMode.SERIAL_BUNDLE,
        "fallback:provider_batch_api_unsupported_by_mistral",
    ),
    (
        "provider_batch_setting_unsupported_falls_back_to_serial",
        None,
        BatchingMode.PROVIDER_BATCH_API,
        "mistral",
        BatchingMode.SERIAL_BUNDLE,
        "fallback:provider_batch_api_unsupported_by_mistral",
    ),
]


@pytest.mark.parametrize(
    ("requested", "setting", "provider", "mode", "source"),
    [c[1:] for c in MODE_CASES],
    ids=[c[0] for c in MODE_CASES],
)
def test_batching_mode_resolution(
    requested: BatchingMode | None,
    setting: BatchingMode | None,
    provider: str,
    mode: BatchingMode,
    source: str,
) -> None:
    assert resolve_batching_mode(requested, setting, provider, POLICY) == (mode, source)


@pytest.mark.parametrize(
    ("setting", "override", "expected"),
    [(120, None, 120), (120, 400, 120), (120, 50, 50), (500, 400, 400)],
)
def test_budget_override_is_clamped(setting: int, override: int | None, expected: int) -> None:
    policy = BatchPolicy(max_pairs_cap=setting).with_budget_override(override)
    assert policy.max_pairs_cap == expected
