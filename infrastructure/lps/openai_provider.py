"""OpenAI-compatible Chat Completions (OpenAI, OpenRouter, vLLM, Ollama, llama.cpp …)
through the official ``openai`` SDK: per call, and as an OpenAI Batch job.

Per call: one ``chat.completions.create`` per comparison, asking for the verdict as a
JSON-schema structured output (``openai_structured_output`` turns that off for servers
without it). A bundle is the same calls, up to ``concurrency`` at once.

Batch job: the bundle's requests become a JSONL file (``files.create``, purpose
``batch``), then ``batches.create`` for ``/v1/chat/completions`` with the 24 h window.
Polling maps the batch status; collecting downloads the output file and the error file
and maps each line back by ``custom_id``. An ``expired`` batch is collected like a
completed one: what finished counts, the rest fail with the provider's reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import openai

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

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
_ERRORS = SdkErrors.of(openai)

_STATUS = {
    "validating": BatchJobStatus.PENDING,
    "in_progress": BatchJobStatus.RUNNING,
    "finalizing": BatchJobStatus.RUNNING,
    "cancelling": BatchJobStatus.RUNNING,
    "completed": BatchJobStatus.COMPLETED,
    # an expired batch may hold finished items: collect them, fail the rest with a reason
    "expired": BatchJobStatus.COMPLETED,
    "failed": BatchJobStatus.FAILED,
    "cancelled": BatchJobStatus.CANCELLED,
}


class OpenAIProvider(SdkJudge):
    def __init__(
        self,
        client: openai.OpenAI,
        options: JudgeOptions,
        *,
        structured_output: bool = True,
        name: str = "openai",
    ) -> None:
        super().__init__(options, name)
        self.client = client
        self.structured_output = structured_output

    # ------------------------------------------------------------------ per call

    def body(self, item: ProviderItem) -> dict[str, Any]:
        """The Chat Completions request for one comparison (also one batch JSONL line)."""
        prompt = self.template.render(item)
        body: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            **self.sampling(item),
        }
        if self.structured_output:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA},
            }
        return body

    def compare(self, item: ProviderItem) -> ProviderVerdict:
        body = self.body(item)
        started = time.perf_counter()
        completion = calling(
            lambda: self.client.chat.completions.create(**body), _ERRORS, self.redact
        )
        latency_ms = (time.perf_counter() - started) * 1000.0
        return self.verdict(completion.model_dump(), item, latency_ms)

    def verdict(
        self, completion: dict[str, Any], item: ProviderItem, latency_ms: float = 0.0
    ) -> ProviderVerdict:
        """Read one chat completion (SDK object dumped, or a batch output body)."""
        usage = completion.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        choices = completion.get("choices") or []
        message = (choices[0].get("message") or {}) if choices else {}
        content = message.get("content")
        if content is None and message.get("refusal"):
            content = str(message["refusal"])
        return self.priced_verdict(
            content,
            item,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            reported_model=completion.get("model"),
            latency_ms=latency_ms,
        )

    # ------------------------------------------------------------------ batch job

    def schedule_job(self, items: Sequence[ProviderItem]) -> str:
        lines = [
            json.dumps(
                {"custom_id": i.custom_id, "method": "POST", "url": ENDPOINT, "body": self.body(i)}
            )
            for i in items
        ]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        uploaded = calling(
            lambda: self.client.files.create(
                file=("cjledger-batch.jsonl", data, "application/jsonl"), purpose="batch"
            ),
            _ERRORS,
            self.redact,
        )
        batch = calling(
            lambda: self.client.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window=COMPLETION_WINDOW,
            ),
            _ERRORS,
            self.redact,
        )
        return str(batch.id)

    def job_status(self, job_id: str) -> BatchJobStatus:
        batch = calling(lambda: self.client.batches.retrieve(job_id), _ERRORS, self.redact)
        status = _STATUS.get(str(batch.status))
        if status is None:
            raise ProviderError(f"batch {job_id} has an unknown status {batch.status!r}")
        return status

    def collect_results(
        self, job_id: str, items: Sequence[ProviderItem] = ()
    ) -> Sequence[ItemResult]:
        batch = calling(lambda: self.client.batches.retrieve(job_id), _ERRORS, self.redact)
        by_id = {i.custom_id: i for i in items}
        results: list[ItemResult] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                text = calling(
                    lambda f=file_id: self.client.files.content(f).text, _ERRORS, self.redact
                )
                results.extend(self._read_line(line, by_id) for line in _lines(text))
        return results

    def _read_line(self, line: dict[str, Any], items: dict[str, ProviderItem]) -> ItemResult:
        custom_id = str(line.get("custom_id", ""))
        error = line.get("error")
        response = line.get("response") or {}
        if error:
            code = str(error.get("code") or "batch_item_error")
            message = str(error.get("message") or code)
            return _failure(custom_id, code, self.redact(message), retryable=True)
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        if status != 200:
            detail = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            return _failure(
                custom_id,
                f"HTTP_{status}",
                self.redact(str(detail or f"the item failed with HTTP {status}")),
                retryable=status == 429 or status >= 500,
            )
        item = items.get(custom_id)
        if item is None:
            return _failure(custom_id, "RESULT_UNMATCHED", "no request is known for this id", True)
        try:
            return ItemResult(custom_id, verdict=self.verdict(body, item))
        except InvalidAnswerError as invalid:
            return ItemResult(custom_id, failure=invalid.as_failure())


def _failure(custom_id: str, code: str, message: str, retryable: bool) -> ItemResult:
    return ItemResult(custom_id, failure=ProviderFailure(code, message, retryable))


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for raw in text.splitlines():
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue  # a torn line names no custom id; its item ends up RESULT_MISSING
    return out
