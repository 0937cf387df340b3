"""``CJLEDGER_LOG_JSON`` is honoured by every process, whatever its own default."""

from __future__ import annotations

import json

import pytest
import structlog

from infrastructure.logging import configure_logging


@pytest.mark.parametrize(("setting", "default", "json_lines"), [
    ("true", False, True),   # an operator command asked for JSON
    ("false", True, False),  # a service asked for readable lines
    ("", True, True),        # unset: the process's default
    ("", False, False),
])  # fmt: skip
def test_the_setting_overrides_the_process_default(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    default: bool,
    json_lines: bool,
) -> None:
    monkeypatch.setenv("CJLEDGER_LOG_JSON", setting)
    configure_logging(json_logs=default, level="INFO")
    structlog.get_logger("test").info("hello", batch_id="b-1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    if json_lines:
        assert json.loads(line)["batch_id"] == "b-1"
    else:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
