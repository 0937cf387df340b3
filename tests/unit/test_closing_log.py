"""Wave closings store exactly the events they stored before they were optimised: every
batch of a mixed set (see ``tests/fixtures/closing_log.py``) hashes to its recorded
digest, byte for byte."""

from __future__ import annotations

import json

from tests.fixtures.closing_log import DIGESTS, digests


def test_every_batch_stores_the_events_it_stored_before() -> None:
    expected = json.loads(DIGESTS.read_text())
    found = digests()
    assert sorted(found) == sorted(expected)
    changed = sorted(ref for ref in expected if found[ref] != expected[ref])
    assert changed == []
