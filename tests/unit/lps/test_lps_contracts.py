"""The CJ <-> LPS message contracts: versioned, validated, converted once at the edge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from application.ports import ComparisonRequest
from domain.lps import JUSTIFICATION_MAX_CHARS, QueueProcessingMode, RequestOutcome, Verdict
from domain.values import BatchingMode, ComparisonOutcome, FailureSource, SuccessDetails
from infrastructure.messaging.contracts import (
    ComparisonOutcomeV1,
    ComparisonOutcomeV2,
    ComparisonRequestV1,
    ComparisonRequestV2,
    parse_outcome_message,
    parse_request,
    queue_mode_for,
)
from tests.unit.lps.support import T0, make_request

REQUEST = make_request("cmp-1", essay_a="e1", essay_b="e2", batch_id="b-1")


def success_outcome(justification: str = "A is clearer.") -> RequestOutcome:
    return RequestOutcome.succeeded_with(
        REQUEST,
        QueueProcessingMode.SERIAL_BUNDLE,
        "simulated",
        Verdict(
            winner_id="e1",
            confidence=4,
            justification=justification,
            provider="simulated",
            model="sim-1",
            prompt_tokens=1000,
            completion_tokens=80,
            cost_usd=0.0002,
            latency_ms=812.5,
        ),
    )


def failure_outcome() -> RequestOutcome:
    return RequestOutcome.failed_with(
        REQUEST, QueueProcessingMode.BATCH_API, "simulated", "JOB_FAILED", "the job failed", True
    )


def outcome_payload(**changes):
    payload = ComparisonOutcomeV1.from_outcome(success_outcome()).model_dump(mode="json")
    payload.update(changes)
    return payload


def test_a_success_round_trips_through_json_and_converts_to_the_domain():
    message = ComparisonOutcomeV1.from_outcome(success_outcome())
    again = ComparisonOutcomeV1.model_validate_json(message.model_dump_json())
    assert again == message
    assert again.schema_version == 1
    assert again.queue_processing_mode is QueueProcessingMode.SERIAL_BUNDLE
    assert (again.request_id, again.comparison_id, again.batch_id) == ("cmp-1", "cmp-1", "b-1")
    assert again.to_domain() == ComparisonOutcome(
        "cmp-1",
        success=SuccessDetails(
            "e1", 4, "A is clearer.", "simulated", "sim-1", 1000, 80, 0.0002, 812.5
        ),
    )


def test_a_failure_converts_to_a_domain_failure_attributed_to_lps():
    message = ComparisonOutcomeV1.from_outcome(failure_outcome())
    assert message.status == "failure" and message.winner_essay_id is None
    domain = message.to_domain()
    assert domain.failure.source is FailureSource.LPS
    assert (domain.failure.error_code, domain.failure.retryable) == ("JOB_FAILED", True)
    assert message.queue_mode is QueueProcessingMode.BATCH_API


def test_a_long_justification_is_truncated_by_the_validator_not_rejected():
    message = ComparisonOutcomeV1.model_validate(outcome_payload(justification="x" * 2000))
    assert len(message.justification) == JUSTIFICATION_MAX_CHARS
    assert message.justification.endswith("…")
    assert message.to_domain().success.justification == message.justification


@pytest.mark.parametrize(
    "changes",
    [
        {"winner_essay_id": None},
        {"confidence": None},
        {"confidence": 0},
        {"confidence": 6},
        {"error": {"code": "X", "message": "m", "retryable": False}},
        {"status": "failure"},  # a failure without an error (and with a winner)
        {"status": "failure", "winner_essay_id": None},
        {"schema_version": 2},
        {"queue_processing_mode": "provider_batch_api"},
        {"cost_usd": -1.0},
        {"usage": {"prompt_tokens": -1, "completion_tokens": 0}},
        {"surprise": True},
    ],
)
def test_malformed_outcomes_are_rejected(changes):
    with pytest.raises(ValidationError):
        ComparisonOutcomeV1.model_validate(outcome_payload(**changes))


def comparison_request(**changes) -> ComparisonRequest:
    fields = {
        "comparison_id": "cmp-1",
        "batch_id": "b-1",
        "wave_number": 2,
        "essay_a": "e1",
        "essay_b": "e2",
        "provider": "simulated",
        "model": "sim-1",
        "batching_mode": BatchingMode.PROVIDER_BATCH_API,
        "preferred_bundle_size": 16,
        "requested_at": T0,
        "deadline_at": T0 + timedelta(hours=4),
        "correlation_id": "corr-1",
    }
    fields.update(changes)
    return ComparisonRequest(**fields)


def test_a_request_message_round_trips_and_becomes_a_queued_request():
    message = ComparisonRequestV1.from_request(comparison_request(), overrides={"temperature": 0})
    again = ComparisonRequestV1.model_validate_json(message.model_dump_json())
    assert again == message
    queued = again.to_queued(T0 + timedelta(hours=1))
    assert queued.request_id == "cmp-1"
    assert queued.mode_hint is QueueProcessingMode.BATCH_API
    assert queued.preferred_bundle_size == 16
    assert queued.overrides == (("temperature", 0),)
    assert queued.expires_at == T0 + timedelta(hours=4)
    assert queued.time_to_live == timedelta(hours=3)


@pytest.mark.parametrize(
    ("batching_mode", "queue_mode"),
    [
        (BatchingMode.PER_REQUEST, QueueProcessingMode.PER_REQUEST),
        (BatchingMode.SERIAL_BUNDLE, QueueProcessingMode.SERIAL_BUNDLE),
        (BatchingMode.PROVIDER_BATCH_API, QueueProcessingMode.BATCH_API),
    ],
)
def test_each_batching_mode_maps_to_its_queue_mode(batching_mode, queue_mode):
    assert queue_mode_for(batching_mode) is queue_mode
    message = ComparisonRequestV1.from_request(comparison_request(batching_mode=batching_mode))
    assert message.batching_mode is batching_mode
    assert message.to_queued(T0).mode_hint is queue_mode


def test_the_batching_mode_travels_as_its_value_in_json():
    message = ComparisonRequestV1.from_request(comparison_request())
    assert '"batching_mode":"provider_batch_api"' in message.model_dump_json()


def test_a_request_past_its_deadline_is_queued_already_expired():
    now = T0 + timedelta(hours=5)
    queued = ComparisonRequestV1.from_request(comparison_request()).to_queued(now)
    assert queued.time_to_live == timedelta(0)
    assert queued.is_expired(now)


def test_an_out_of_range_bundle_hint_is_accepted_and_left_to_bundling():
    message = ComparisonRequestV1.from_request(comparison_request(preferred_bundle_size=500))
    assert message.to_queued(T0).preferred_bundle_size == 500


@pytest.mark.parametrize(
    "changes",
    [
        {"batching_mode": "turbo"},
        {"essay_b": "e1"},
        {"deadline_at": datetime(2026, 1, 5, 13, 0)},  # naive
        {"schema_version": 2},
        {"comparison_id": ""},
        {"wave_number": -1},
    ],
)
def test_malformed_requests_are_rejected(changes):
    payload = ComparisonRequestV1.from_request(comparison_request()).model_dump()
    payload.update(changes)
    with pytest.raises(ValidationError):
        ComparisonRequestV1.model_validate(payload)


def test_an_absent_batching_mode_gives_no_hint():
    payload = ComparisonRequestV1.from_request(comparison_request()).model_dump()
    payload["batching_mode"] = None
    assert ComparisonRequestV1.model_validate(payload).to_queued(T0).mode_hint is None


def test_aware_datetimes_are_kept_in_utc():
    message = ComparisonRequestV1.from_request(comparison_request())
    assert message.requested_at.tzinfo is not None
    assert message.deadline_at == datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


def test_a_v2_request_carries_the_texts_to_the_queued_request_and_hides_them_from_repr():
    request = comparison_request(
        essay_a_text="Alpha text", essay_b_text="Beta text", instructions="Argue.", rubric="R1"
    )
    message = ComparisonRequestV2.from_request(request)
    again = parse_request(message.model_dump_json())
    assert isinstance(again, ComparisonRequestV2) and again.schema_version == 2
    queued = again.to_queued(T0)
    assert (queued.essay_a_text, queued.essay_b_text) == ("Alpha text", "Beta text")
    assert (queued.instructions, queued.rubric) == ("Argue.", "R1")
    assert "Alpha text" not in repr(queued)


def test_a_v1_request_is_still_accepted_with_empty_texts():
    body = ComparisonRequestV1.from_request(comparison_request()).model_dump_json()
    queued = parse_request(body).to_queued(T0)
    assert (queued.essay_a_text, queued.instructions) == ("", "")


def test_an_unknown_request_version_is_rejected():
    payload = ComparisonRequestV1.from_request(comparison_request()).model_dump(mode="json")
    payload["schema_version"] = 3
    with pytest.raises(ValidationError):
        parse_request(json.dumps(payload))


def test_a_v2_outcome_keeps_the_raw_answer_of_an_invalid_answer_and_its_tokens():
    outcome = RequestOutcome.failed_with(
        REQUEST,
        QueueProcessingMode.PER_REQUEST,
        "openai",
        "invalid_answer",
        "winner 'C' is not A or B",
        False,
        raw_answer='{"winner": "C"}',
        prompt_template_version="cj-pair-1",
        prompt_tokens=120,
        completion_tokens=9,
    )
    message = parse_outcome_message(ComparisonOutcomeV2.from_outcome(outcome).model_dump_json())
    assert isinstance(message, ComparisonOutcomeV2)
    assert message.status == "failure" and message.error.code == "invalid_answer"
    assert message.raw_answer == '{"winner": "C"}' and message.raw == message.raw_answer
    assert message.prompt_template_version == "cj-pair-1"
    assert (message.usage.prompt_tokens, message.usage.completion_tokens) == (120, 9)
    assert message.to_domain().failure.error_code == "invalid_answer"


def test_a_v2_success_records_the_template_version_and_the_answering_model():
    verdict = Verdict(
        "e2",
        3,
        "B argues better",
        "openai",
        "gpt-x-2026",
        50,
        7,
        raw_answer='{"winner":"B"}',
        prompt_template_version="cj-pair-1",
    )
    outcome = RequestOutcome.succeeded_with(
        REQUEST, QueueProcessingMode.PER_REQUEST, "openai", verdict
    )
    message = ComparisonOutcomeV2.from_outcome(outcome)
    assert (message.model, message.prompt_template_version) == ("gpt-x-2026", "cj-pair-1")
    assert message.to_domain().success.winner_id == "e2"
