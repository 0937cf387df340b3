"""The embedded pipeline through the real LPS executor, with a provider that misbehaves:
whatever fails, every requested comparison ends with exactly one ComparisonCompleted."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from application.batches import BatchApplication, RegisterBatch
from application.dispatcher import InMemoryPositionStore, OutboxDispatcher
from application.lps import BatchJobStatus
from domain.batch import CJBatch
from domain.pairing import comparison_id_for
from domain.values import BatchingMode
from infrastructure.embedded import InProcessTransport, run_until_idle, through_contract
from infrastructure.lps.embedded import EmbeddedLPS
from infrastructure.lps.simulated_judge import SimulatedJudge, draw_thetas
from infrastructure.settings import Settings
from tests.conftest import AppFactory
from tests.fakes import essays

REF = "lps-chaos"


def every_third_comparison() -> set[str]:
    batch_id = str(CJBatch.create_id(REF))
    return {
        comparison_id_for(batch_id, wave, index)
        for wave in range(1, 40)
        for index in range(0, 130, 3)
    }


SCENARIOS: list[tuple[str, BatchingMode, dict[str, Any]]] = [
    (
        "whole_jobs_fail",
        BatchingMode.PROVIDER_BATCH_API,
        {"job_final_status": BatchJobStatus.FAILED},
    ),
    (
        "jobs_cancelled",
        BatchingMode.PROVIDER_BATCH_API,
        {"job_final_status": BatchJobStatus.CANCELLED},
    ),
    ("jobs_never_finish", BatchingMode.PROVIDER_BATCH_API, {"never_finish": True}),
    ("job_drops_items", BatchingMode.PROVIDER_BATCH_API, {"drop_items": every_third_comparison()}),
    ("bundle_drops_items", BatchingMode.SERIAL_BUNDLE, {"drop_items": every_third_comparison()}),
    ("bundle_fails_items", BatchingMode.SERIAL_BUNDLE, {"fail_items": every_third_comparison()}),
    (
        "schedule_raises",
        BatchingMode.PROVIDER_BATCH_API,
        {"schedule_error": RuntimeError("provider down")},
    ),
    (
        "collect_raises",
        BatchingMode.PROVIDER_BATCH_API,
        {"collect_error": RuntimeError("results lost")},
    ),
]


@pytest.mark.parametrize(
    ("mode", "options"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_every_requested_comparison_completes_exactly_once(
    make_app: AppFactory, mode: BatchingMode, options: dict[str, Any]
) -> None:
    app: BatchApplication = make_app()
    ids = [e.essay_id for e in essays(12)]
    lps = EmbeddedLPS(
        SimulatedJudge(draw_thetas(ids, 3), seed=3),
        settings=Settings(lps_provider="simulated"),
        seed=3,
        **options,
    )
    batch_id = app.submit(RegisterBatch(REF, essays(12), requested_mode=mode, seed=3))
    transport = InProcessTransport()
    run_until_idle(
        app,
        OutboxDispatcher(app, transport, InMemoryPositionStore()),
        transport,
        through_contract(lps.execute),
    )

    events = app.batch_events(batch_id)
    requested = [
        p.comparison_id
        for e in events
        if isinstance(e, CJBatch.ComparisonsRequested)
        for p in e.pairs
    ]
    completed = Counter(
        e.outcome.comparison_id for e in events if isinstance(e, CJBatch.ComparisonCompleted)
    )
    assert requested, "at least one wave was asked for"
    assert set(completed) == set(requested)
    assert set(completed.values()) == {1}
    assert isinstance(events[-1], CJBatch.Finalized)
