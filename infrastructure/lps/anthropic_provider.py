"""Anthropic Messages through the official ``anthropic`` SDK: per call, and as a Message
Batch.

The verdict is asked for as a forced tool call (``record_verdict``, whose input schema is
the answer's JSON schema), so a well-behaved model answers with structured input; a text
answer is still read strictly as JSON. Message Batches: ``messages.batches.create`` with
one ``custom_id`` per comparison, poll ``processing_status`` until ``ended``, then stream
``results``: ``succeeded`` items are read like a per-call answer; ``errored``,
``canceled`` and ``expired`` items become failures that say so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anthropic

from application.lps import (
    BatchJobStatus,
    InvalidAnswerError,
    ItemResult,
    ProviderError,
    ProviderFailure,
    ProviderItem,
    ProviderVerdict,
)
from infrastructure.lps.prompt import VERDICT_SCHEMA
from infrastructure.lps.sdk_support import JudgeOptions, SdkErrors, SdkJudge, calling

TOOL_NAME = "record_verdict"
_ERRORS = SdkErrors.of(anthropic)
_STATUS = {
    "in_progress": BatchJobStatus.RUNNING,
    "canceling": BatchJobStatus.RUNNING,
    "ended": BatchJobStatus.COMPLETED,
}
#: error types of an errored batch item that are worth asking again
_RETRYABLE_ERRORS = {"rate_limit_error", "overloaded_error", "api_error", "timeout_error"}


class AnthropicProvider(SdkJudge):
    def __init__(
        self, client: anthropic.Anthropic, options: JudgeOptions, *, name: str = "anthropic"
    ) -> None:
        super().__init__(options, name)
        self.client = client

    def params(self, item: ProviderItem) -> dict[str, Any]:
        """The Messages request for one comparison (also one Message Batch request)."""
        prompt = self.template.render(item)
        params: dict[str, Any] = {
            **self.sampling(item),
            "system": prompt.system,
            "messages": [{"role": "user", "content": prompt.user}],
            "tools": [
                {
                    "name": TOOL_NAME,
                    "description": "Record which essay is better, how sure, and why.",
                    "input_schema": VERDICT_SCHEMA,
                }
            ],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        }
        return params

    def compare(self, item: ProviderItem) -> ProviderVerdict:
        params = self.params(item)
        # sent as raw JSON fields: the SDK's typed signature need not list each of them
        known = {k: params.pop(k) for k in ("model", "max_tokens", "messages", "system")}
        started = time.perf_counter()
        message = calling(
            lambda: self.client.messages.create(**known, extra_body=params),
            _ERRORS,
            self.redact,
        )
        latency_ms = (time.perf_counter() - started) * 1000.0
        return self.verdict(message.model_dump(), item, latency_ms)

    def verdict(
        self, message: dict[str, Any], item: ProviderItem, latency_ms: float = 0.0
    ) -> ProviderVerdict:
        usage = message.get("usage") or {}
        prompt_tokens = int(usage.get("input_tokens") or 0)
        completion_tokens = int(usage.get("output_tokens") or 0)
        answer: str | dict[str, Any] | None = None
        texts: list[str] = []
        for block in message.get("content") or []:
            if block.get("type") == "tool_use" and block.get("name") == TOOL_NAME:
                answer = block.get("input")
                break
            if block.get("type") == "text":
                texts.append(str(block.get("text") or ""))
        if answer is None:
            answer = "".join(texts)
        return self.priced_verdict(
            answer,
            item,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            reported_model=message.get("model"),
            latency_ms=latency_ms,
        )

    # ------------------------------------------------------------------ message batches

    def schedule_job(self, items: Sequence[ProviderItem]) -> str:
        requests = [{"custom_id": i.custom_id, "params": self.params(i)} for i in items]
        batch = calling(
            lambda: self.client.messages.batches.create(requests=requests),  # type: ignore[arg-type]
            _ERRORS,
            self.redact,
        )
        return str(batch.id)

    def job_status(self, job_id: str) -> BatchJobStatus:
        batch = calling(lambda: self.client.messages.batches.retrieve(job_id), _ERRORS, self.redact)
        status = _STATUS.get(str(batch.processing_status))
        if status is None:
            raise ProviderError(
                f"message batch {job_id} has an unknown status {batch.processing_status!r}"
            )
        return status

    def collect_results(
        self, job_id: str, items: Sequence[ProviderItem] = ()
    ) -> Sequence[ItemResult]:
        by_id = {i.custom_id: i for i in items}
        entries = calling(
            lambda: [e.model_dump() for e in self.client.messages.batches.results(job_id)],
            _ERRORS,
            self.redact,
        )
        return [self._read(entry, by_id) for entry in entries]

    def _read(self, entry: dict[str, Any], items: dict[str, ProviderItem]) -> ItemResult:
        custom_id = str(entry.get("custom_id", ""))
        result = entry.get("result") or {}
        kind = result.get("type")
        if kind == "succeeded":
            item = items.get(custom_id)
            if item is None:
                return _failure(custom_id, "RESULT_UNMATCHED", "no request is known", True)
            try:
                return ItemResult(custom_id, verdict=self.verdict(result["message"], item))
            except InvalidAnswerError as invalid:
                return ItemResult(custom_id, failure=invalid.as_failure())
        if kind == "errored":
            error = (result.get("error") or {}).get("error") or {}
            code = str(error.get("type") or "errored")
            message = self.redact(str(error.get("message") or "the item errored"))
            return _failure(custom_id, code, message, code in _RETRYABLE_ERRORS)
        if kind == "canceled":
            return _failure(custom_id, "canceled", "the message batch was canceled", True)
        if kind == "expired":
            return _failure(
                custom_id, "expired", "the message batch expired before this item ran", True
            )
        return _failure(custom_id, "RESULT_UNREADABLE", f"unknown result type {kind!r}", True)


def _failure(custom_id: str, code: str, message: str, retryable: bool) -> ItemResult:
    return ItemResult(custom_id, failure=ProviderFailure(code, message, retryable))
