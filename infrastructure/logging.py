"""structlog set-up: JSON lines in service mode, readable lines on a terminal.

Context bound with ``structlog.contextvars`` (batch id, comparison id, correlation id) is
merged into every line.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog
import structlog.tracebacks


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now (it may be swapped after configuration)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def log_json_setting() -> bool | None:
    """``CJLEDGER_LOG_JSON`` when set (true/false), else ``None``."""
    value = os.environ.get("CJLEDGER_LOG_JSON", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def configure_logging(*, json_logs: bool, level: str = "INFO") -> None:
    """``json_logs`` is each process's default (JSON for services, readable lines for
    operator commands); ``CJLEDGER_LOG_JSON`` overrides it in every process."""
    chosen = log_json_setting()
    json_logs = json_logs if chosen is None else chosen
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_logs:
        # No local variables in tracebacks: they can hold database and broker URLs.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        processors += [tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s", force=True)
