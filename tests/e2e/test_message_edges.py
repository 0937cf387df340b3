"""Poison at the edges: real ``serve`` / ``lps-worker`` processes, RabbitMQ and PostgreSQL.

Each poisoned message is refused at the edge — dead-lettered with its reason, nothing
stored — so it can never reach the event log and stop the read models of every batch
(a NUL in a text column, ``Infinity`` in a number). A header that is not UTF-8 is
dead-lettered once with sanitised headers, never retried in a loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any
from uuid import UUID

import aio_pika
import pamqp.encode
import pytest

from domain.batch import CJBatch
from infrastructure.cli.main import main as cli
from infrastructure.messaging.contracts import ComparisonRequestV1
from infrastructure.messaging.dead_letters import CODE_HEADER, REASON_HEADER, SANITISED_HEADER
from infrastructure.messaging.topology import OUTCOME_ROUTING_KEY, REQUEST_ROUTING_KEY, Topology
from tests.e2e.messaging_support import (
    BROKER_URL,
    Services,
    delete_topology,
    fresh_postgres_database,
    needs_postgres,
    needs_rabbitmq,
    new_prefix,
    open_store,
    service_env,
    take_all,
    valid_outcome,
    wait_until_finalized,
    write_essays,
)
from tests.e2e.test_cli_edges import assert_one_line_error, cjledger
from tests.e2e.test_messaging_processes import check_log

pytestmark = [pytest.mark.e2e, needs_rabbitmq, needs_postgres]


class NotUtf8(bytes):
    """A header value sent as an AMQP long string whose bytes are not UTF-8."""


@pytest.fixture
def not_utf8_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    original = pamqp.encode.encode_table_value

    def encode(value: Any) -> bytes:
        if isinstance(value, NotUtf8):
            return b"S" + len(value).to_bytes(4, "big") + bytes(value)
        return original(value)

    monkeypatch.setattr(pamqp.encode, "encode_table_value", encode)


async def _publish(prefix: str, routing_key: str, messages: list[tuple[bytes, dict[str, Any]]]):
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Topology(prefix).exchange_name)
        for body, headers in messages:
            await exchange.publish(
                aio_pika.Message(
                    body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=routing_key,
                mandatory=True,
            )


def publish(prefix: str, routing_key: str, messages: list[tuple[bytes, dict[str, Any]]]) -> None:
    asyncio.run(_publish(prefix, routing_key, messages))


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Services, str, str]]:
    prefix = new_prefix()
    with fresh_postgres_database() as database_url:
        env = service_env(database_url, prefix)
        for key, value in env.items():
            if key.startswith("CJLEDGER_"):
                monkeypatch.setenv(key, value)
        services = Services(tmp_path, env)
        try:
            yield services, database_url, prefix
        finally:
            services.stop_all()
            delete_topology(prefix)


def submit_file(path: Path, *args: str) -> UUID:
    """``cjledger submit`` in this process (the environment names the store)."""
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as done:
        cli(["submit", str(path), *args])
    assert done.value.code in (0, None), out.getvalue()
    return UUID(out.getvalue().strip())


def poisoned_outcomes(valid: dict[str, Any]) -> dict[str, bytes]:
    def body(**changes: Any) -> bytes:
        return json.dumps({**valid, **changes}).encode()

    return {
        "nul_in_model": body(model="judge\x00"),
        "nul_in_winner": body(winner_essay_id=valid["winner_essay_id"] + "\x00"),
        "bell_in_comparison_id": body(comparison_id="cmp\x07"),
        "overlong_comparison_id": body(comparison_id="c" * 5000),
        "infinite_latency": body().replace(b'"latency_ms": 0.0', b'"latency_ms": 1e999'),
        "nan_cost": body().replace(b'"cost_usd": 0.0', b'"cost_usd": NaN'),
        "huge_token_count": body(usage={"prompt_tokens": 10**30, "completion_tokens": 1}),
    }


def test_poisoned_outcomes_are_dead_lettered_and_every_read_model_keeps_up(
    stack: tuple[Services, str, str], tmp_path: Path, not_utf8_headers: None
) -> None:
    services, database_url, prefix = stack
    serve = services.serve()
    serve.wait_started()
    batch_id = submit_file(write_essays(tmp_path / "essays.jsonl", 8), "--budget", "16")
    poisoned = poisoned_outcomes(valid_outcome(database_url, batch_id))
    messages = [(body, {"x-case": name}) for name, body in poisoned.items()]
    not_utf8 = json.dumps({"status": "success"}).encode()
    messages.append((not_utf8, {"x-origin": NotUtf8(b"caf\xe9 \xff")}))
    publish(prefix, OUTCOME_ROUTING_KEY, messages)

    worker = services.lps_worker()
    wait_until_finalized(database_url, [batch_id], timeout=120)
    check_log(database_url, [batch_id])

    dead = take_all(Topology(prefix).outcomes_dead_letter_queue_name)
    by_body = {m.body: m for m in dead}
    assert set(by_body) == {*poisoned.values(), not_utf8}, "each refused exactly once"
    assert len(dead) == len(messages)
    for name, body in poisoned.items():
        assert by_body[body].headers[CODE_HEADER] == "schema_violation", name
        assert by_body[body].headers[REASON_HEADER], name
    sanitised = by_body[not_utf8].headers
    assert sanitised[SANITISED_HEADER] is True
    assert sanitised["x-origin"] == "caf\\xe9 \\xff"
    assert not serve.events("dead_letter_not_confirmed")

    app = open_store(database_url)
    try:
        stored = [
            e for e in app.batch_events(batch_id) if isinstance(e, CJBatch.ComparisonCompleted)
        ]
    finally:
        app.close()
    assert all("\x00" not in e.outcome.success.model for e in stored if e.outcome.success)

    deadline = time.monotonic() + 60
    while True:  # the read models follow the log to its head: nothing stalled them
        status = cjledger("projections", "status", "--json", CJLEDGER_DATABASE_URL=database_url)
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        if all(row["lag"] == 0 for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(row["lag"] == 0 for row in rows), rows
    assert serve.terminate() == 0 and worker.terminate() == 0


def test_poisoned_requests_are_dead_lettered_by_the_worker_once(
    stack: tuple[Services, str, str], not_utf8_headers: None
) -> None:
    services, _, prefix = stack
    worker = services.lps_worker()
    worker.wait_started()
    valid = ComparisonRequestV1(
        comparison_id="cmp-1",
        batch_id="batch-1",
        wave_number=1,
        essay_a="essay-a",
        essay_b="essay-b",
        provider="simulated",
        model="simulated-judge-1",
        requested_at="2026-01-01T00:00:00Z",
        deadline_at="2026-01-01T04:00:00Z",
        correlation_id="batch-1/wave-1",
    ).model_dump(mode="json")
    bad = {
        "nul_in_essay": json.dumps({**valid, "essay_a": "essay\x00a"}).encode(),
        "escape_in_provider": json.dumps({**valid, "provider": "sim\x1b[31m"}).encode(),
        "infinite_override": json.dumps({**valid, "overrides": {"temperature": 1e999}})
        .replace("Infinity", "1e999")
        .encode(),
    }
    messages = [(body, {"x-origin": NotUtf8(b"\xff\xfe")}) for body in bad.values()]
    publish(prefix, REQUEST_ROUTING_KEY, messages)

    deadline = time.monotonic() + 30
    dead: list[Any] = []
    while len(dead) < len(bad) and time.monotonic() < deadline:
        dead += take_all(Topology(prefix).requests_dead_letter_queue_name)
        time.sleep(0.5)
    time.sleep(2)  # anything retried in a loop would show up as more copies or more lines
    dead += take_all(Topology(prefix).requests_dead_letter_queue_name)
    assert sorted(m.body for m in dead) == sorted(bad.values())
    assert all(m.headers[CODE_HEADER] == "schema_violation" for m in dead)
    assert all(m.headers[SANITISED_HEADER] is True for m in dead)
    assert not worker.events("dead_letter_not_confirmed")
    assert worker.terminate() == 0


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ({"essay_id": "essay\x00one", "text": "An essay."}, "control characters"),
        ({"essay_id": "essay\u0085one", "text": "An essay."}, "control characters"),
        ({"essay_id": "e" * 300, "text": "An essay."}, "at most 200 characters"),
        ({"essay_id": "essay-1", "text": "An \x00essay."}, "NUL"),
    ],
)
def test_submit_refuses_ids_and_texts_no_store_can_hold(
    line: dict[str, str], complaint: str, tmp_path: Path
) -> None:
    path = tmp_path / "essays.jsonl"
    second = {"essay_id": "essay-2", "text": "Another essay."}
    path.write_text(json.dumps(line) + "\n" + json.dumps(second) + "\n")
    with fresh_postgres_database() as database_url:
        result = cjledger("submit", str(path), CJLEDGER_DATABASE_URL=database_url)
        message = assert_one_line_error(result, 2)
        assert complaint in message and ":1:" in message
        app = open_store(database_url)
        try:
            assert app.recorder.max_notification_id() in (None, 0)
        finally:
            app.close()
