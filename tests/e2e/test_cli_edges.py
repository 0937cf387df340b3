"""The CLI as an operator meets it: bad settings, unreachable servers, fast ``--help``.

Every command reports a failure as one line on stderr — never a traceback, never a
password — and exits 2 when it cannot run as configured, 1 when it ran and failed.
Each case runs ``cjledger`` as a real process against the real PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import TEST_POSTGRES_URL
from tests.e2e.messaging_support import ROOT, needs_postgres

pytestmark = pytest.mark.e2e

SECRET = "Sup3r-secret-pw"
HEAVY_MODULES = ("numpy", "networkx", "psycopg", "scipy", "eventsourcing", "pydantic")


def cjledger(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CJLEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.cli.main", *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
    return lines[0]


def test_help_imports_nothing_that_needs_a_store_or_numbers() -> None:
    probe = (
        "import sys\n"
        "from infrastructure.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('LOADED', [m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "Usage: cjledger" in result.stdout
    assert "LOADED []" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["batches", "history", str(uuid.uuid4())],
        ["projections", "status"],
        ["submit", "essays.jsonl"],
        ["serve"],
    ],
)
def test_a_database_url_that_is_not_one_is_a_usage_error(args: list[str]) -> None:
    line = assert_one_line_error(cjledger(*args, CJLEDGER_DATABASE_URL="foo"), 2)
    assert "database_url" in line


def test_a_bogus_log_level_is_one_line_naming_the_setting() -> None:
    line = assert_one_line_error(cjledger("serve", CJLEDGER_LOG_LEVEL="bogus"), 2)
    assert "log_level must be one of" in line


@needs_postgres
@pytest.mark.parametrize(
    "args", [["batches", "history", str(uuid.uuid4())], ["projections", "status"]]
)
def test_an_unreachable_database_is_a_runtime_error_without_the_password(args: list[str]) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:1/cj?connect_timeout=2"
    line = assert_one_line_error(cjledger(*args, CJLEDGER_DATABASE_URL=url), 1)
    assert "127.0.0.1" in line


def test_a_bad_url_option_is_a_usage_error_without_the_password() -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1/cj?no_such_option=1"
    line = assert_one_line_error(
        cjledger("batches", "history", str(uuid.uuid4()), CJLEDGER_DATABASE_URL=url), 2
    )
    assert "no_such_option" in line


@needs_postgres
def test_libpq_options_in_the_url_reach_the_server(tmp_path: Path) -> None:
    schema = f"cjt_{uuid.uuid4().hex}"
    url = f"{TEST_POSTGRES_URL}?schema={schema}&sslmode=disable&application_name=cj-edge-test"
    try:
        result = cjledger("projections", "status", "--json", CJLEDGER_DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        assert {row["projection"] for row in json.loads(result.stdout)}
        refused = cjledger(
            "projections", "status", CJLEDGER_DATABASE_URL=url.replace("disable", "require")
        )
        # the local server has no TLS: sslmode=require really reached libpq
        line = assert_one_line_error(refused, 1)
        assert "SSL" in line
    finally:
        from tests.conftest import drop_schema

        drop_schema(schema)
