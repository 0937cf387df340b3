"""The OpenAI and Anthropic providers, driven through the official SDKs against the local
stub server, end to end through the LPS executor: every request gets exactly one outcome,
answers are read strictly, and the API key never leaves the SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from application.lps import JobPolling, QueuedRequestExecutor
from domain.lps import QueueProcessingMode, RequestOutcome
from domain.values import BatchingMode
from infrastructure.lps.providers import UnknownProvider, build_provider
from infrastructure.messaging.contracts import ComparisonOutcomeV2, ComparisonRequestV2
from infrastructure.settings import ModelPrice, Settings
from tests.stubs.server import Fault, StubServer

PLANTED_KEY = "sk-planted-3f9a7c21-never-log-me"
NOW = datetime.now(UTC)
TEXTS = {
    "e1": "Short essay.",
    "e2": "A much longer essay that develops its argument over several sentences.",
    "e3": "A middling essay with some development.",
    "e4": "Tiny.",
}
PAIRS = [("c1", "e1", "e2"), ("c2", "e3", "e4"), ("c3", "e2", "e3"), ("c4", "e4", "e1")]
PER_REQUEST = QueueProcessingMode.PER_REQUEST
SERIAL = QueueProcessingMode.SERIAL_BUNDLE
BATCH = QueueProcessingMode.BATCH_API
APIS = ["openai", "anthropic"]


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


def settings_for(api: str, stub: StubServer, **changes: Any) -> Settings:
    fields: dict[str, Any] = {
        "lps_provider": api,
        "openai_base_url": stub.openai_base_url,
        "openai_api_key": PLANTED_KEY,
        "anthropic_base_url": stub.anthropic_base_url,
        "anthropic_api_key": PLANTED_KEY,
        "lps_request_timeout_seconds": 5.0,
        "lps_sdk_max_retries": 0,
        "lps_concurrency": 2,
        "lps_prices": {"*": ModelPrice(input=2.0, output=10.0)},
    }
    fields.update(changes)
    return Settings(**fields)


def request(comparison_id: str, a: str, b: str, mode: BatchingMode) -> ComparisonRequestV2:
    return ComparisonRequestV2(
        comparison_id=comparison_id,
        batch_id="11111111-2222-3333-4444-555555555555",
        wave_number=1,
        essay_a=a,
        essay_b=b,
        essay_a_text=TEXTS[a],
        essay_b_text=TEXTS[b],
        instructions="Write about rivers.",
        rubric="Argument, evidence, style.",
        provider="any",
        model="judge-1",
        batching_mode=mode,
        preferred_bundle_size=8,
        requested_at=NOW,
        deadline_at=NOW + timedelta(hours=30),
        correlation_id="corr-1",
    )


def run(
    api: str,
    stub: StubServer,
    mode: QueueProcessingMode,
    pairs: list[tuple[str, str, str]] = PAIRS,
    max_attempts: int = 1,
    **changes: Any,
) -> dict[str, RequestOutcome]:
    provider = build_provider(settings_for(api, stub, **changes))
    executor = QueuedRequestExecutor(
        provider,
        mode,
        max_attempts=max_attempts,
        sleep=lambda _: None,
        job_polling=JobPolling(poll_interval=timedelta(milliseconds=5)),
    )
    queued = [
        request(cid, a, b, BatchingMode.SERIAL_BUNDLE).to_queued(datetime.now(UTC))
        for cid, a, b in pairs
    ]
    outcomes = executor.drain(queued, datetime.now(UTC))
    assert sorted(o.request_id for o in outcomes) == sorted(cid for cid, _, _ in pairs)
    return {o.request_id: o for o in outcomes}


def longer(a: str, b: str) -> str:
    return a if len(TEXTS[a]) >= len(TEXTS[b]) else b


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", [PER_REQUEST, SERIAL, BATCH])
def test_the_stubs_answers_become_the_winners_with_usage_and_template_version(
    api: str, stub: StubServer, mode: QueueProcessingMode
) -> None:
    outcomes = run(api, stub, mode)
    for cid, a, b in PAIRS:
        verdict = outcomes[cid].success
        assert verdict is not None, outcomes[cid].failure
        assert verdict.winner_id == longer(a, b)
        assert verdict.confidence == 4
        assert verdict.model == "stub-judge-1"
        assert verdict.prompt_template_version == "cj-pair-1"
        assert verdict.raw_answer is not None and '"winner"' in verdict.raw_answer
    prompt = sum(o.success.prompt_tokens for o in outcomes.values() if o.success)
    completion = sum(o.success.completion_tokens for o in outcomes.values() if o.success)
    assert (prompt, completion) == (stub.stats.prompt_tokens, stub.stats.completion_tokens)
    cost = sum(o.success.cost_usd for o in outcomes.values() if o.success)
    assert cost == pytest.approx((prompt * 2.0 + completion * 10.0) / 1e6)


@pytest.mark.parametrize("api", APIS)
def test_the_prompt_carries_instructions_rubric_and_both_texts_in_orientation(
    api: str, stub: StubServer
) -> None:
    run(api, stub, PER_REQUEST, pairs=[("c1", "e1", "e2")])
    (prompt,) = stub.state.stats.prompts
    assert "Write about rivers." in prompt and "Argument, evidence, style." in prompt
    assert prompt.index(TEXTS["e1"]) < prompt.index(TEXTS["e2"])


def test_openai_batch_goes_through_files_and_batches(stub: StubServer) -> None:
    run("openai", stub, BATCH)
    assert stub.stats.files_created == 1 and stub.stats.openai_batches_created == 1
    assert stub.stats.chat_calls == 0
    batch = next(iter(stub.state.batches.values()))
    assert (batch["endpoint"], batch["window"]) == ("/v1/chat/completions", "24h")


def test_anthropic_batch_goes_through_message_batches(stub: StubServer) -> None:
    run("anthropic", stub, BATCH)
    assert stub.stats.anthropic_batches_created == 1 and stub.stats.messages_calls == 0


@pytest.mark.parametrize("api", APIS)
def test_a_429_with_retry_after_is_retried_by_the_sdk(api: str, stub: StubServer) -> None:
    stub.script.per_call.append(Fault(status=429, headers={"Retry-After": "0"}))
    outcomes = run(api, stub, PER_REQUEST, pairs=PAIRS[:1], lps_sdk_max_retries=2)
    assert outcomes["c1"].succeeded
    assert stub.stats.chat_calls + stub.stats.messages_calls == 2


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        (Fault(status=500), "SERVER_ERROR", True),
        (Fault(status=429), "RATE_LIMITED", True),
        (Fault(status=400), "HTTP_400", False),
        (Fault(delay=1.5), "TIMEOUT", True),
    ],
    ids=["500", "429", "400", "timeout"],
)
def test_provider_errors_become_failures_with_a_code(
    api: str, stub: StubServer, fault: Fault, code: str, retryable: bool
) -> None:
    stub.script.per_call.append(fault)
    outcomes = run(api, stub, PER_REQUEST, pairs=PAIRS[:1], lps_request_timeout_seconds=0.5)
    failure = outcomes["c1"].failure
    assert failure is not None
    assert (failure.error_code, failure.retryable) == (code, retryable)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    "fault",
    [
        Fault(content='{"winner": "A", "confidence": 4'),  # malformed JSON
        Fault(content="Essay A is clearly better."),  # not JSON at all
        Fault(answer={"winner": "C", "confidence": 3, "justification": "neither"}),
        Fault(answer={"winner": "A", "confidence": 9, "justification": "sure"}),
        Fault(answer={"winner": "A", "confidence": "4", "justification": "x"}),
        Fault(answer={"confidence": 3, "justification": "no winner named"}),
        Fault(content=""),
    ],
    ids=[
        "malformed",
        "not-json",
        "winner-C",
        "confidence-9",
        "confidence-str",
        "no-winner",
        "empty",
    ],
)
def test_an_answer_that_is_not_a_verdict_is_invalid_never_a_default_winner(
    api: str, stub: StubServer, fault: Fault
) -> None:
    stub.script.per_call.append(fault)
    outcomes = run(api, stub, PER_REQUEST, pairs=PAIRS[:1], max_attempts=3)
    outcome = outcomes["c1"]
    assert outcome.success is None and outcome.failure is not None
    assert (outcome.failure.error_code, outcome.failure.retryable) == ("invalid_answer", False)
    expected = fault.content if fault.content is not None else json.dumps(fault.answer)
    assert outcome.failure.raw_answer == expected
    assert outcome.failure.prompt_template_version == "cj-pair-1"
    assert outcome.failure.prompt_tokens > 0
    assert stub.stats.chat_calls + stub.stats.messages_calls == 1  # not asked again
    message = ComparisonOutcomeV2.from_outcome(outcome)
    assert message.raw_answer == expected and message.winner_essay_id is None


@pytest.mark.parametrize("api", APIS)
def test_a_partial_batch_answers_the_missing_item_with_a_failure(
    api: str, stub: StubServer
) -> None:
    stub.script.batch_drop = {"c2"}
    stub.script.batch_errors = {"c3"}
    stub.script.batch_faults = {"c4": Fault(answer={"winner": "Z"})}
    outcomes = run(api, stub, BATCH)
    assert outcomes["c1"].succeeded
    assert outcomes["c2"].failure is not None
    assert outcomes["c2"].failure.error_code == "RESULT_MISSING"
    assert outcomes["c3"].failure is not None
    assert outcomes["c4"].failure is not None
    assert outcomes["c4"].failure.error_code == "invalid_answer"


@pytest.mark.parametrize(("api", "reason"), [("openai", "batch_expired"), ("anthropic", "expired")])
def test_an_expired_batch_keeps_what_finished_and_fails_the_rest_with_the_reason(
    api: str, reason: str, stub: StubServer
) -> None:
    stub.script.batch_outcome = "expired"
    outcomes = run(api, stub, BATCH)
    assert outcomes["c1"].succeeded and outcomes["c3"].succeeded
    for cid in ("c2", "c4"):
        failure = outcomes[cid].failure
        assert failure is not None and failure.error_code == reason and failure.retryable


@pytest.mark.parametrize(("api", "code"), [("openai", "JOB_CANCELLED"), ("anthropic", "canceled")])
def test_a_cancelled_batch_fails_every_request_once(api: str, code: str, stub: StubServer) -> None:
    stub.script.batch_outcome = "cancelled"
    outcomes = run(api, stub, BATCH)
    assert {o.failure.error_code for o in outcomes.values() if o.failure} == {code}
    assert not any(o.succeeded for o in outcomes.values())


def test_a_failed_openai_batch_fails_every_request_once(stub: StubServer) -> None:
    stub.script.batch_outcome = "failed"
    outcomes = run("openai", stub, BATCH)
    assert {o.failure.error_code for o in outcomes.values() if o.failure} == {"JOB_FAILED"}


@pytest.mark.parametrize("api", APIS)
def test_the_api_key_never_appears_in_logs_errors_or_messages(api: str, stub: StubServer) -> None:
    stub.script.per_call.extend([Fault(status=401), Fault(status=500), Fault(content="nope")])
    with capture_logs() as logs:
        outcomes = run(api, stub, PER_REQUEST)
    assert any(PLANTED_KEY in h for h in stub.stats.auth_headers)  # the key was really used
    messages = [ComparisonOutcomeV2.from_outcome(o).model_dump_json() for o in outcomes.values()]
    everything = json.dumps(logs, default=str) + "".join(messages) + repr(outcomes)
    assert any(o.failure for o in outcomes.values())
    assert PLANTED_KEY not in everything
    assert PLANTED_KEY not in repr(settings_for(api, stub))


def test_a_provider_without_a_key_is_refused_with_a_clear_message(stub: StubServer) -> None:
    with pytest.raises(UnknownProvider, match="CJLEDGER_OPENAI_API_KEY"):
        build_provider(settings_for("openai", stub, openai_api_key=None))
