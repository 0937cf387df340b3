"""Service mode commands: ``serve``, ``lps-worker`` and ``submit``.

``serve`` and ``lps-worker`` are long-running processes configured only by ``CJLEDGER_*``
environment variables (``infrastructure.settings``); they log JSON lines and stop cleanly
on SIGTERM. ``submit`` registers and starts one batch from a JSON-lines file of essays;
the running ``serve`` process picks the first wave up from the event store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import structlog
import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from application.batches import RegisterBatch
from domain.batch import CommandRejected
from domain.policy import BatchPolicy
from domain.values import BatchingMode, Essay
from infrastructure.cli.app import app, fail
from infrastructure.logging import configure_logging
from infrastructure.messaging.validation import describe_validation_error
from infrastructure.persistence.bootstrap import open_batch_application
from infrastructure.persistence.store import BadDatabaseUrl, eventsourcing_env
from infrastructure.settings import Settings

log = structlog.get_logger("cjledger.cli")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        fail(f"invalid CJLEDGER_* setting: {describe_validation_error(error)}")


@app.command("serve")
def serve() -> None:
    """Run CJ: the outcome consumer, the outbox dispatcher and the deadline sweeper."""
    settings = load_settings()
    configure_logging(json_logs=True, level=settings.log_level)
    _run_process("serve", settings)


@app.command("lps-worker")
def lps_worker() -> None:
    """Run an LPS worker: execute comparison requests, publish one outcome per request."""
    settings = load_settings()
    configure_logging(json_logs=True, level=settings.log_level)
    _run_process("lps-worker", settings)


def _run_process(name: str, settings: Settings) -> None:
    # imported here so that ``submit`` and the other commands start without the broker stack
    from infrastructure.lps.providers import UnknownProvider

    try:
        asyncio.run(_main(name, settings))
    except (BadDatabaseUrl, UnknownProvider) as error:
        fail(str(error))
    except Exception as error:
        # no traceback: its locals would include the settings, credentials and all
        log.error("service_failed", service=name, error=f"{type(error).__name__}: {error}")
        fail(f"{name} stopped: {type(error).__name__}: {error}", code=1)
    _exit_without_waiting_for_abandoned_threads()


async def _main(name: str, settings: Settings) -> None:
    from infrastructure.lps.process import build_lps_worker
    from infrastructure.messaging.processes import build_serve
    from infrastructure.messaging.service import run_service

    if name == "serve":
        serve_process = build_serve(settings)
        try:
            await run_service(name, serve_process.components)
        finally:
            serve_process.close()
    else:
        worker_process = build_lps_worker(settings)
        await run_service(name, worker_process.components)


def _exit_without_waiting_for_abandoned_threads(grace: float = 2.0) -> None:
    """A provider call still running in a worker thread (its message already back in the
    queue) must not keep a stopped process alive. Idle pool threads end by themselves."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon]
    stuck = [name for name in stuck if name != threading.main_thread().name]
    if stuck:
        log.warning("abandoning_threads", threads=stuck)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# ---------------------------------------------------------------------- submit


class EssayLine(BaseModel):
    """One line of a submission file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    essay_id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    is_anchor: bool = False
    known_grade: str | None = None


def read_essays(path: Path) -> tuple[Essay, ...]:
    """Essays from a JSON-lines file; the content hash is the SHA-256 of the text.

    Texts are not stored: events carry ids and hashes only (see ``docs/messaging.md``).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        fail(f"no such file: {path}")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {path}: {error}")
    essays: list[Essay] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            fail(f"{path}:{number}: not valid JSON ({error.msg})")
        try:
            row = EssayLine.model_validate(data)
        except ValidationError as error:
            fail(f"{path}:{number}: {describe_validation_error(error)}")
        if row.essay_id in seen:
            fail(f"{path}:{number}: essay id {row.essay_id!r} appears twice")
        seen.add(row.essay_id)
        digest = hashlib.sha256(row.text.encode("utf-8")).hexdigest()
        essays.append(Essay(row.essay_id, f"sha256:{digest}", row.is_anchor, row.known_grade))
    if not essays:
        fail(f"{path}: no essays (one JSON object per line: essay_id, text)")
    return tuple(essays)


def default_ref(path: Path, essays: tuple[Essay, ...]) -> str:
    """Same file contents, same reference: submitting a file twice starts one batch."""
    digest = hashlib.sha256(
        "\n".join(f"{e.essay_id}:{e.content_hash}" for e in essays).encode()
    ).hexdigest()
    return f"{path.stem}-{digest[:16]}"


@app.command("submit")
def submit(
    file: Annotated[
        Path,
        typer.Argument(help="JSON lines: essay_id, text, is_anchor?, known_grade?", dir_okay=False),
    ],
    ref: Annotated[
        str | None, typer.Option(help="external batch reference (default: from the file)")
    ] = None,
    mode: Annotated[
        BatchingMode | None, typer.Option(help="batching mode requested by the batch")
    ] = None,
    budget: Annotated[
        int | None, typer.Option(min=1, help="comparison budget (lowers max_pairs_cap)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed for pairing")] = 0,
) -> None:
    """Register and start a batch from FILE; print its id. Idempotent per reference."""
    settings = load_settings()
    configure_logging(json_logs=settings.log_json, level="WARNING")
    essays = read_essays(file)
    command = RegisterBatch(
        external_ref=ref if ref is not None else default_ref(file, essays),
        essays=essays,
        requested_mode=mode,
        budget_override=budget,
        seed=seed,
        policy=BatchPolicy(max_pairs_cap=settings.max_pairs_cap),
    )
    try:
        env = eventsourcing_env(settings.database_url)
    except BadDatabaseUrl as bad:
        fail(str(bad))
    try:
        cj = open_batch_application(env, mode_setting=settings.batching_mode)
    except Exception as error:
        fail(f"cannot open the event store: {type(error).__name__}: {error}", code=1)
    try:
        batch_id = cj.submit(command)
    except (CommandRejected, ValueError) as rejected:
        fail(str(rejected))
    finally:
        cj.close()
    print(batch_id)
