"""kill -9 of ``lps-worker`` while an OpenAI batch job runs: the restarted worker polls the
stored job instead of submitting it again (the stub counts the jobs created), and every
request still gets exactly one outcome."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.values import BatchingMode
from infrastructure.messaging.contracts import ComparisonRequestV2, parse_outcome_message
from infrastructure.messaging.topology import REQUEST_ROUTING_KEY, Topology
from tests.e2e.messaging_support import (
    Services,
    delete_topology,
    needs_rabbitmq,
    new_prefix,
    publish_raw,
    service_env,
    take_all,
)
from tests.stubs.server import StubServer

pytestmark = [pytest.mark.e2e, needs_rabbitmq]
KEY = "sk-resume-test-key-0000"
BATCH_ID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    server.script.batch_polls = 10**9  # in progress until the test says otherwise
    yield server
    server.stop()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def request_bodies(count: int) -> list[bytes]:
    now = datetime.now(UTC)
    return [
        ComparisonRequestV2(
            comparison_id=f"00000000-0000-4000-8000-{i:012d}",
            batch_id=BATCH_ID,
            wave_number=1,
            essay_a=f"e{i}",
            essay_b=f"e{i + 1}",
            essay_a_text="x" * (10 + i),
            essay_b_text="y" * 12,
            provider="openai",
            model="judge-1",
            batching_mode=BatchingMode.PROVIDER_BATCH_API,
            preferred_bundle_size=count,
            requested_at=now,
            deadline_at=now + timedelta(hours=26),
            correlation_id=f"{BATCH_ID}/wave-1",
        )
        .model_dump_json()
        .encode()
        for i in range(count)
    ]


def test_a_killed_worker_resumes_its_provider_batch_job_instead_of_resubmitting(
    tmp_path: Path, stub: StubServer
) -> None:
    prefix = new_prefix()
    env = service_env(f"sqlite:///{tmp_path / 'unused.db'}", prefix)
    env.update(
        {
            "CJLEDGER_LPS_PROVIDER": "openai",
            "CJLEDGER_OPENAI_BASE_URL": stub.openai_base_url,
            "CJLEDGER_OPENAI_API_KEY": KEY,
            "CJLEDGER_LPS_STATE_PATH": str(tmp_path / "lps-state.db"),
            "CJLEDGER_LPS_JOB_POLL_SECONDS": "0.2",
            "CJLEDGER_LPS_GATHER_MS": "500",
            "CJLEDGER_LPS_CONCURRENCY": "1",
        }
    )
    services = Services(tmp_path, env)
    topology = Topology(prefix)
    try:
        first = services.lps_worker("lps-worker-1")
        first.wait_started(90)
        publish_raw(prefix, REQUEST_ROUTING_KEY, request_bodies(6))
        wait_for(lambda: stub.stats.batch_polls >= 2, 120, "the first worker to poll its job")
        assert stub.stats.openai_batches_created == 1
        first.kill()  # SIGKILL: no shutdown, no acks

        stub.script.batch_polls = 0  # the job is done from now on
        second = services.lps_worker("lps-worker-2")
        second.wait_started(90)
        outcomes: list[dict[str, object]] = []

        def all_answered() -> bool:
            outcomes.extend(o for m in take_all(topology.outcomes_queue_name) for o in m.items)
            return len({o["comparison_id"] for o in outcomes}) == 6

        wait_for(all_answered, 180, "six outcomes")
        assert stub.stats.openai_batches_created == 1  # polled again, never resubmitted
        assert stub.stats.files_created == 1
        assert second.events("lps.job_resumed")
        messages = [parse_outcome_message(json.dumps(o)) for o in outcomes]
        assert all(m.status == "success" for m in messages)
        for name in ("lps-worker-1", "lps-worker-2"):
            assert KEY not in (tmp_path / f"{name}.log").read_text()
    finally:
        services.stop_all()
        delete_topology(prefix)
