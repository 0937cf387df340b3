"""Service mode commands: ``serve``, ``lps-worker`` and ``submit``.

``serve`` and ``lps-worker`` are long-running processes configured only by ``CJLEDGER_*``
environment variables (``infrastructure.settings``); they log JSON lines and stop cleanly
on SIGTERM. ``submit`` registers and starts one batch from a JSON-lines file of essays;
the running ``serve`` process picks the first wave up from the event store.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from infrastructure.cli.app import app, fail
from infrastructure.cli.errors import load_settings
from infrastructure.cli.registration import (
    AllowSparseOption,
    BudgetOption,
    InstructionsOption,
    ModelOption,
    ModeOption,
    ProviderOption,
    RubricOption,
    SeedOption,
)

if TYPE_CHECKING:
    from infrastructure.settings import Settings

__all__ = ["load_settings"]


def _log() -> Any:
    import structlog

    return structlog.get_logger("cjledger.cli")


@app.command("serve")
def serve() -> None:
    """Run CJ: the outcome consumer, the outbox dispatcher and the deadline sweeper."""
    from infrastructure.logging import configure_logging

    settings = load_settings()
    configure_logging(json_logs=True, level=settings.log_level)
    _run_process("serve", settings)


@app.command("lps-worker")
def lps_worker() -> None:
    """Run an LPS worker: execute comparison requests, publish one outcome per request."""
    from infrastructure.logging import configure_logging

    settings = load_settings()
    configure_logging(json_logs=True, level=settings.log_level)
    _run_process("lps-worker", settings)


def _run_process(name: str, settings: Settings) -> None:
    # imported here so that ``submit`` and the other commands (and ``--help``) start without
    # the broker stack or asyncio
    import asyncio

    from infrastructure.lps.providers import UnknownProvider
    from infrastructure.persistence.store import BadDatabaseUrl

    log = _log()

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
    from infrastructure.bootstrap import System
    from infrastructure.gc_tuning import tune_gc
    from infrastructure.messaging.service import run_service

    with System(settings) as system:
        process = system.serve_process() if name == "serve" else system.lps_worker_process()
        components = list(process.components)
        tune_gc()
        if settings.metrics_port is not None:
            from infrastructure.metrics import MetricsServer

            components.insert(0, MetricsServer(settings.metrics_port, settings.metrics_host))
        await run_service(name, components)


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
        _log().warning("abandoning_threads", threads=stuck)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# ---------------------------------------------------------------------- submit


@app.command("submit")
def submit(
    file: Annotated[
        Path,
        typer.Argument(help="JSON lines: essay_id, text, is_anchor?, known_grade?", dir_okay=False),
    ],
    instructions: InstructionsOption = None,
    rubric: RubricOption = None,
    provider: ProviderOption = None,
    model: ModelOption = None,
    mode: ModeOption = None,
    budget: BudgetOption = None,
    ref: Annotated[
        str | None, typer.Option(help="external batch reference (default: from the file)")
    ] = None,
    seed: SeedOption = 0,
    allow_sparse: AllowSparseOption = False,
) -> None:
    """Register and start a batch from FILE in service mode; print its id.

    Texts, the school's essay ids, instructions and rubric go to the content store; the
    events carry opaque refs and keyed hashes. Idempotent per reference.
    """
    from domain.batch import CommandRejected, SparseBudget
    from infrastructure.bootstrap import System
    from infrastructure.cli.essay_file import default_ref, read_essays, read_text_file
    from infrastructure.cli.registration import registration
    from infrastructure.logging import configure_logging
    from infrastructure.persistence.store import BadDatabaseUrl

    settings = load_settings()
    configure_logging(json_logs=settings.log_json, level="WARNING")
    command = registration(
        settings,
        external_ref=ref if ref is not None else default_ref(file),
        essays=read_essays(file),
        instructions=read_text_file(instructions, "instructions"),
        rubric=read_text_file(rubric, "rubric"),
        provider=provider,
        model=model,
        mode=mode,
        budget=budget,
        seed=seed,
        allow_sparse=allow_sparse,
    )
    with System(settings) as system:
        try:
            cj = system.app
        except BadDatabaseUrl as bad:
            fail(str(bad))
        except Exception as error:
            fail(f"cannot open the event store: {type(error).__name__}: {error}", code=1)
        try:
            batch_id = cj.submit(command)
        except SparseBudget as sparse:
            fail(f"{sparse}: pass --budget {sparse.smallest}, or --allow-sparse to run it anyway")
        except (CommandRejected, ValueError) as rejected:
            fail(str(rejected))
    print(batch_id)
