"""Bundle formation, table-tested: who leads, what limits a bundle, what ends it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.lps import (
    MAX_BUNDLE_SIZE,
    QueueProcessingMode,
    bundle_limit,
    form_bundle,
    is_compatible,
)
from tests.unit.lps.support import T0, make_request

NOW = T0 + timedelta(hours=1)
LIVE = timedelta(hours=4)
DEAD = timedelta(minutes=30)  # enqueued at T0, so expired at NOW


@pytest.mark.parametrize(
    ("other", "compatible"),
    [
        ({}, True),
        ({"model": "another-model"}, True),
        ({"batch_id": "batch-2"}, True),
        ({"provider": "openai"}, False),
        ({"overrides": {"temperature": 0.5}}, False),
        ({"hint": QueueProcessingMode.PER_REQUEST}, False),
        ({"hint": None}, False),
        ({"size": 3}, True),
    ],
)
def test_compatibility_rule(other, compatible):
    lead = make_request("lead", overrides={})
    assert is_compatible(lead, make_request("other", **other)) is compatible


def test_two_absent_hints_are_equal_and_overrides_compare_by_content():
    lead = make_request("lead", hint=None, overrides={"a": 1, "b": "x"})
    other = make_request("other", hint=None, overrides=[("b", "x"), ("a", 1)])
    assert is_compatible(lead, other)


@pytest.mark.parametrize(
    ("hint", "cap", "limit"),
    [
        (8, 64, 8),
        (1, 64, 1),
        (64, 64, 64),
        (64, 10, 10),
        (5, 10, 5),
        (None, 64, 64),
        (None, 12, 12),
        (0, 20, 20),
        (-3, 20, 20),
        (65, 20, 20),
        (1000, 64, 64),
        (True, 20, 20),  # a bool is not a bundle size
    ],
)
def test_bundle_limit_is_min_of_valid_hint_and_cap(hint, cap, limit):
    assert bundle_limit(make_request("lead", size=hint), cap) == limit


@pytest.mark.parametrize("cap", [0, -1, MAX_BUNDLE_SIZE + 1])
def test_a_cap_outside_1_to_64_is_rejected(cap):
    with pytest.raises(ValueError):
        form_bundle([make_request("a")], NOW, cap)


# Scenario table. Each queue entry is "id" (live, compatible), "id!" (expired),
# "id:openai" (another provider) or "id:per" (another batching hint).
SCENARIOS = [
    # name, queue, lead's size hint, cap, bundle, expired, held back, rest
    ("all fit", "a b c", 8, 64, "a b c", "", None, ""),
    ("limit from hint", "a b c d", 2, 64, "a b", "", None, "c d"),
    ("limit from cap", "a b c d", 8, 3, "a b c", "", None, "d"),
    ("absent hint uses cap", "a b c d", None, 2, "a b", "", None, "c d"),
    ("invalid hint uses cap", "a b c d", 0, 3, "a b c", "", None, "d"),
    ("incompatible is held back", "a b x:openai c", 8, 64, "a b", "", "x", "x c"),
    ("other hint is held back", "a x:per b", 8, 64, "a", "", "x", "x b"),
    ("expired does not count", "a y! b c", 2, 64, "a b", "y", None, "c"),
    ("expired lead is skipped", "y! a b", 8, 64, "a b", "y", None, ""),
    ("all expired", "y! z!", 8, 64, "", "y z", None, ""),
    ("expired before a held back", "a y! x:openai", 8, 64, "a", "y", "x", "x"),
    ("full bundle stops before an expired", "a b y!", 2, 64, "a b", "", None, "y"),
    ("duplicate id is held back", "a b a", 8, 64, "a b", "", "a", "a"),
    ("empty queue", "", 8, 64, "", "", None, ""),
    ("per-request hint of one", "a b", 1, 64, "a", "", None, "b"),
]


def _queue(spec: str, lead_size: int | None):
    queue = []
    for token in spec.split():
        name, _, variant = token.partition(":")
        expired = name.endswith("!")
        name = name.rstrip("!")
        kwargs = {"size": lead_size, "ttl": DEAD if expired else LIVE}
        if variant == "openai":
            kwargs["provider"] = "openai"
        if variant == "per":
            kwargs["hint"] = QueueProcessingMode.PER_REQUEST
        queue.append(make_request(name, **kwargs))
    return queue


@pytest.mark.parametrize(
    ("name", "queue", "size", "cap", "bundle", "expired", "held_back", "rest"),
    SCENARIOS,
    ids=[s[0] for s in SCENARIOS],
)
def test_form_bundle(name, queue, size, cap, bundle, expired, held_back, rest):
    formation = form_bundle(_queue(queue, size), NOW, cap)
    assert [r.request_id for r in formation.bundle] == bundle.split()
    assert [r.request_id for r in formation.expired] == expired.split()
    assert (formation.held_back.request_id if formation.held_back else None) == held_back
    assert [r.request_id for r in formation.rest] == rest.split()


def test_form_bundle_consumes_every_request_exactly_once():
    queue = _queue("y! a b x:openai c z! d", 2)
    seen = []
    while queue:
        formation = form_bundle(queue, NOW, 64)
        seen += [r.request_id for r in formation.bundle + formation.expired]
        queue = list(formation.rest)
    assert sorted(seen) == sorted(["y", "a", "b", "x", "c", "z", "d"])


def test_the_limit_comes_from_the_lead_not_from_later_requests():
    queue = [make_request("a", size=2), make_request("b", size=64), make_request("c", size=64)]
    formation = form_bundle(queue, NOW, 64)
    assert formation.limit == 2
    assert [r.request_id for r in formation.bundle] == ["a", "b"]
