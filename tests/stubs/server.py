"""A local stand-in for the OpenAI and Anthropic HTTP APIs, driven by the official SDKs.

One threaded HTTP server on 127.0.0.1 answers both APIs' shapes:

* OpenAI: ``POST /v1/chat/completions``, ``POST /v1/files``, ``GET /v1/files/{id}/content``,
  ``POST /v1/batches``, ``GET /v1/batches/{id}``;
* Anthropic: ``POST /v1/messages``, ``POST /v1/messages/batches``,
  ``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results``;
* ``GET /_stub/stats``: what it was asked and what usage it reported (JSON).

The judge is a rule anyone can check: the longer essay (more characters) wins, with
confidence 4; equal lengths go to A. Usage is derived from the prompt's length, so a test
can sum what the server reported. Faults are scripted: ``script.per_call`` is a queue of
``Fault``s consumed one per chat/messages call (a status with headers, a delay, a raw
answer text, a given answer object), and ``script.batch_*`` decide how batches end.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ESSAY = re.compile(r"Essay (A|B):\n<<<\n(.*?)\n>>>", re.S)


@dataclass
class Fault:
    """One scripted misbehaviour of the next model call."""

    status: int | None = None  # answer with this HTTP status (an error body)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "1"}
    delay: float = 0.0  # seconds to wait before answering (beyond a client's timeout)
    content: str | None = None  # the model's answer text, verbatim (malformed, non-JSON…)
    answer: dict[str, Any] | None = None  # the model's answer object (e.g. winner "C")


@dataclass
class Script:
    per_call: deque[Fault] = field(default_factory=deque)
    #: how a batch ends: completed | expired | cancelled | failed
    batch_outcome: str = "completed"
    #: status polls a batch stays in progress before it ends
    batch_polls: int = 1
    #: custom ids left out of a finished batch's results (partial results)
    batch_drop: set[str] = field(default_factory=set)
    #: custom ids that end as an item error (OpenAI error file / Anthropic "errored")
    batch_errors: set[str] = field(default_factory=set)
    #: answers by custom id inside batches (e.g. an invalid answer for one item)
    batch_faults: dict[str, Fault] = field(default_factory=dict)


@dataclass
class Stats:
    chat_calls: int = 0
    messages_calls: int = 0
    files_created: int = 0
    openai_batches_created: int = 0
    anthropic_batches_created: int = 0
    batch_polls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    auth_headers: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)


def judge(prompt: str) -> dict[str, Any]:
    """The stub's verdict: the longer essay wins."""
    essays = dict(ESSAY.findall(prompt))
    a, b = essays.get("A", ""), essays.get("B", "")
    winner = "A" if len(a) >= len(b) else "B"
    return {
        "winner": winner,
        "confidence": 4,
        "justification": f"Essay {winner} develops its argument further.",
    }


def usage_for(prompt: str) -> tuple[int, int]:
    return max(1, len(prompt) // 4), 25


class StubState:
    def __init__(self) -> None:
        self.script = Script()
        self.stats = Stats()
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids):06d}"

    def take_fault(self) -> Fault | None:
        with self.lock:
            return self.script.per_call.popleft() if self.script.per_call else None

    def answer(self, prompt: str, fault: Fault | None) -> tuple[str | dict[str, Any], int, int]:
        """The model's answer (text or object) and the usage reported for it."""
        prompt_tokens, completion_tokens = usage_for(prompt)
        with self.lock:
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
            self.stats.prompts.append(prompt)
        if fault is not None and fault.content is not None:
            return fault.content, prompt_tokens, completion_tokens
        if fault is not None and fault.answer is not None:
            return fault.answer, prompt_tokens, completion_tokens
        return judge(prompt), prompt_tokens, completion_tokens


# ---------------------------------------------------------------------- response shapes


def chat_completion(state: StubState, body: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
    prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    answer, prompt_tokens, completion_tokens = state.answer(prompt, fault)
    content = answer if isinstance(answer, str) else json.dumps(answer)
    return {
        "id": state.next_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"stub-{body.get('model', 'model')}",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_message(
    state: StubState, params: dict[str, Any], fault: Fault | None
) -> dict[str, Any]:
    prompt = (
        str(params.get("system", ""))
        + "\n"
        + "\n".join(str(m.get("content", "")) for m in params.get("messages", []))
    )
    answer, prompt_tokens, completion_tokens = state.answer(prompt, fault)
    if isinstance(answer, str):
        content = [{"type": "text", "text": answer}]
    else:
        content = [
            {
                "type": "tool_use",
                "id": state.next_id("toolu"),
                "name": "record_verdict",
                "input": answer,
            }
        ]
    return {
        "id": state.next_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": f"stub-{params.get('model', 'model')}",
        "content": content,
        "stop_reason": "tool_use" if not isinstance(answer, str) else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
    }


def openai_error(status: int) -> dict[str, Any]:
    return {"error": {"message": f"stub says {status}", "type": "stub_error", "code": None}}


def anthropic_error(status: int) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": f"stub says {status}"}}


# ---------------------------------------------------------------------- the server


class Handler(BaseHTTPRequestHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def state(self) -> StubState:
        return self.server.state

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _note_auth(self) -> None:
        auth = self.headers.get("Authorization") or self.headers.get("x-api-key") or ""
        with self.state.lock:
            self.state.stats.auth_headers.append(auth)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/_stub/stats":
            stats = self.state.stats
            self._send(200, {k: v for k, v in stats.__dict__.items() if k != "prompts"})
            return
        self._note_auth()
        if m := re.fullmatch(r"/v1/files/([^/]+)/content", path):
            data = self.state.files.get(m.group(1))
            if data is None:
                self._send(404, openai_error(404))
            else:
                self._send(200, data, content_type="application/octet-stream")
            return
        if m := re.fullmatch(r"/v1/batches/([^/]+)", path):
            self._send(200, self._openai_batch(m.group(1), poll=True))
            return
        if m := re.fullmatch(r"/v1/messages/batches/([^/]+)/results", path):
            self._send(
                200, self.state.files[f"results-{m.group(1)}"], content_type="application/binary"
            )
            return
        if m := re.fullmatch(r"/v1/messages/batches/([^/]+)", path):
            self._send(200, self._anthropic_batch(m.group(1), poll=True))
            return
        self._send(404, openai_error(404))

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        raw = self._body()
        self._note_auth()
        if path == "/v1/chat/completions":
            with self.state.lock:
                self.state.stats.chat_calls += 1
            fault = self.state.take_fault()
            if self._fault_response(fault, openai_error):
                return
            self._send(200, chat_completion(self.state, json.loads(raw), fault))
            return
        if path == "/v1/messages":
            with self.state.lock:
                self.state.stats.messages_calls += 1
            fault = self.state.take_fault()
            if self._fault_response(fault, anthropic_error):
                return
            self._send(200, anthropic_message(self.state, json.loads(raw), fault))
            return
        if path == "/v1/files":
            self._send(200, self._create_file(raw))
            return
        if path == "/v1/batches":
            self._send(200, self._create_openai_batch(json.loads(raw)))
            return
        if path == "/v1/messages/batches":
            self._send(200, self._create_anthropic_batch(json.loads(raw)))
            return
        self._send(404, openai_error(404))

    def _fault_response(self, fault: Fault | None, error_body: Any) -> bool:
        if fault is None:
            return False
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status is not None:
            self._send(fault.status, error_body(fault.status), headers=fault.headers)
            return True
        return False

    # -- OpenAI files and batches

    def _create_file(self, raw: bytes) -> dict[str, Any]:
        content_type = self.headers.get("Content-Type", "")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
        )
        data = b""
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                data = part.get_payload(decode=True) or b""
        file_id = self.state.next_id("file")
        with self.state.lock:
            self.state.files[file_id] = data
            self.state.stats.files_created += 1
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": 0,
            "filename": "batch.jsonl",
            "purpose": "batch",
            "status": "processed",
        }

    def _create_openai_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_id = self.state.next_id("batch")
        with self.state.lock:
            self.state.stats.openai_batches_created += 1
            self.state.batches[batch_id] = {
                "api": "openai",
                "input_file_id": body["input_file_id"],
                "polls": 0,
                "endpoint": body.get("endpoint"),
                "window": body.get("completion_window"),
            }
        return self._openai_batch(batch_id, poll=False)

    def _openai_batch(self, batch_id: str, poll: bool) -> dict[str, Any]:
        state, script = self.state, self.state.script
        with state.lock:
            batch = state.batches[batch_id]
            if poll:
                batch["polls"] += 1
                state.stats.batch_polls += 1
            done = batch["polls"] >= script.batch_polls
        status = "in_progress"
        out: dict[str, Any] = {}
        if done:
            status = script.batch_outcome
            if status in ("completed", "expired") and "output_file_id" not in batch:
                self._finish_openai_batch(batch_id, batch, expired=status == "expired")
            out = {k: batch.get(k) for k in ("output_file_id", "error_file_id")}
        return {
            "id": batch_id,
            "object": "batch",
            "endpoint": batch["endpoint"],
            "input_file_id": batch["input_file_id"],
            "completion_window": batch["window"],
            "created_at": 0,
            "status": status,
            **out,
        }

    def _finish_openai_batch(self, batch_id: str, batch: dict[str, Any], expired: bool) -> None:
        script = self.state.script
        lines = [
            json.loads(x)
            for x in self.state.files[batch["input_file_id"]].splitlines()
            if x.strip()
        ]
        output, errors = [], []
        for index, line in enumerate(lines):
            custom_id = line["custom_id"]
            if custom_id in script.batch_drop:
                continue
            if expired and index % 2 == 1:
                errors.append(
                    {
                        "id": f"r{index}",
                        "custom_id": custom_id,
                        "response": None,
                        "error": {
                            "code": "batch_expired",
                            "message": "This request could not be executed "
                            "before the completion window expired.",
                        },
                    }
                )
                continue
            if custom_id in script.batch_errors:
                errors.append(
                    {
                        "id": f"r{index}",
                        "custom_id": custom_id,
                        "response": {"status_code": 400, "body": openai_error(400)},
                        "error": None,
                    }
                )
                continue
            fault = script.batch_faults.get(custom_id)
            body = chat_completion(self.state, line["body"], fault)
            output.append(
                {
                    "id": f"r{index}",
                    "custom_id": custom_id,
                    "response": {"status_code": 200, "body": body},
                    "error": None,
                }
            )
        for key, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                file_id = self.state.next_id("file")
                self.state.files[file_id] = "\n".join(json.dumps(r) for r in rows).encode()
                batch[key] = file_id
            else:
                batch[key] = None

    # -- Anthropic message batches

    def _create_anthropic_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_id = self.state.next_id("msgbatch")
        with self.state.lock:
            self.state.stats.anthropic_batches_created += 1
            self.state.batches[batch_id] = {
                "api": "anthropic",
                "requests": body["requests"],
                "polls": 0,
            }
        return self._anthropic_batch(batch_id, poll=False)

    def _anthropic_batch(self, batch_id: str, poll: bool) -> dict[str, Any]:
        state, script = self.state, self.state.script
        with state.lock:
            batch = state.batches[batch_id]
            if poll:
                batch["polls"] += 1
                state.stats.batch_polls += 1
            done = batch["polls"] >= script.batch_polls
        results_url = None
        if done:
            key = f"results-{batch_id}"
            if key not in state.files:
                state.files[key] = self._anthropic_results(batch["requests"])
            host, port = self.server.server_address[:2]
            results_url = f"http://{host}:{port}/v1/messages/batches/{batch_id}/results"
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended" if done else "in_progress",
            "request_counts": {
                "processing": 0 if done else len(batch["requests"]),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T01:00:00Z" if done else None,
            "results_url": results_url,
        }

    def _anthropic_results(self, requests: list[dict[str, Any]]) -> bytes:
        script = self.state.script
        rows = []
        for index, request in enumerate(requests):
            custom_id = request["custom_id"]
            if custom_id in script.batch_drop:
                continue
            if script.batch_outcome == "cancelled":
                result: dict[str, Any] = {"type": "canceled"}
            elif script.batch_outcome == "expired" and index % 2 == 1:
                result = {"type": "expired"}
            elif custom_id in script.batch_errors:
                result = {"type": "errored", "error": anthropic_error(500)}
            else:
                fault = script.batch_faults.get(custom_id)
                message = anthropic_message(self.state, request["params"], fault)
                result = {"type": "succeeded", "message": message}
            rows.append({"custom_id": custom_id, "result": result})
        return "\n".join(json.dumps(r) for r in rows).encode()


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.state = StubState()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def script(self) -> Script:
        return self.state.script

    @property
    def stats(self) -> Stats:
        return self.state.stats

    def start(self) -> StubServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main(argv: list[str] | None = None) -> None:
    """Run the stub as a process (for showing the acceptance commands by hand)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--batch-polls", type=int, default=1, help="status polls a batch stays in progress"
    )
    parser.add_argument(
        "--batch-outcome",
        default="completed",
        choices=["completed", "expired", "cancelled", "failed"],
    )
    args = parser.parse_args(argv)
    server = StubServer(args.port)
    server.script.batch_polls = args.batch_polls
    server.script.batch_outcome = args.batch_outcome
    print(
        f"stub listening on http://127.0.0.1:{server.port} "
        f"(OpenAI base {server.openai_base_url}, Anthropic base {server.anthropic_base_url})",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
