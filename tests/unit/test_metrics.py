"""CJ metrics (labelled by batching mode) and the metrics/health port of the workers."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client import CollectorRegistry

from application.batches import BatchApplication
from domain.values import BatchingMode
from infrastructure.metrics import MetricsServer, batch_observer, lps_observer
from tests.fakes import run_batch


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_recorded_outcomes_decisions_waves_and_finalizations_are_counted_by_mode() -> None:
    registry = CollectorRegistry()
    app = BatchApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, observer=batch_observer(registry)
    )
    batch_id = run_batch(app, n=6, mode=BatchingMode.PER_REQUEST, failure_rate=0.2)
    events = app.batch_events(batch_id)
    mode = "per_request"
    completed = [e for e in events if type(e).__name__ == "ComparisonCompleted"]
    successes = sum(1 for e in completed if e.outcome.success is not None)
    assert sample(registry, "cj_outcomes_recorded_total", batching_mode=mode, result="success") == (
        successes
    )
    assert (
        sample(registry, "cj_outcomes_recorded_total", batching_mode=mode, result="failure")
        == len(completed) - successes
    )
    decisions = [e for e in events if type(e).__name__ == "ContinuationDecided"]
    final = decisions[-1]
    assert (
        sample(
            registry,
            "cj_decisions_total",
            batching_mode=mode,
            kind=final.decision.value,
            reason=final.reason,
        )
        >= 1
    )
    waves = [e for e in events if type(e).__name__ == "ComparisonsRequested"]
    counted = sum(
        sample(registry, "cj_waves_requested_total", batching_mode=mode, generation_mode=g)
        for g in ("coverage", "resampling")
    )
    assert counted == len(waves)
    (finalized,) = [e for e in events if type(e).__name__ == "Finalized"]
    status = finalized.status.value
    assert sample(registry, "cj_batches_finalized_total", batching_mode=mode, status=status) == 1


def test_the_metrics_port_serves_metrics_and_health() -> None:
    registry = CollectorRegistry()
    batch_observer(registry)
    lps_observer(registry)
    server = MetricsServer(0, registry=registry)

    async def scrape() -> tuple[str, str]:
        await server.start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"{base}/metrics").read().decode()
            )
            health = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"{base}/healthz").read().decode()
            )
        finally:
            await server.stop()
        return metrics, health

    metrics, health = asyncio.run(scrape())
    assert "cj_outcomes_recorded" in metrics and "lps_requests" in metrics
    assert health == '{"status": "ok"}'
