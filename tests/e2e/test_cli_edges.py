"""The CLI as an operator meets it: bad settings, unreachable servers, fast ``--help``.

Every command reports a failure as one line on stderr — never a traceback, never a
password — and exits 2 when it cannot run as configured, 1 when it ran and failed.
Each case runs ``cjledger`` as a real process against the real PostgreSQL server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import TEST_POSTGRES_URL
from tests.e2e.messaging_support import ROOT, needs_postgres

pytestmark = pytest.mark.e2e

SECRET = "Sup3r-secret-pw"
HEAVY_MODULES = ("numpy", "networkx", "psycopg", "scipy", "eventsourcing", "pydantic", "asyncio")


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


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        # a budget past a read model's integer column stalled batch_summary on PostgreSQL
        (["run", "{essays}", "--store", "{store}", "--budget", str(2**31)], {}, "--budget"),
        (
            ["run", "{essays}", "--store", "{store}"],
            {"CJLEDGER_MAX_PAIRS_CAP": str(2**31)},
            "max_pairs_cap",
        ),
        (["demo", "--store", "{store}", "--budget", str(2**31)], {}, "--budget"),
        # a seed is a signed 64-bit integer, not thousands of digits in an event
        (["run", "{essays}", "--store", "{store}", "--seed", str(2**63)], {}, "--seed"),
        (["run", "{essays}", "--store", "{store}", "--seed", str(-(2**63) - 1)], {}, "--seed"),
        (["demo", "--store", "{store}", "--seed", str(2**63)], {}, "--seed"),
    ],
)
def test_numbers_out_of_range_are_usage_errors_and_store_nothing(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    essays = tmp_path / "essays.jsonl"
    essays.write_text('{"essay_id": "a", "text": "x"}\n{"essay_id": "b", "text": "y"}\n')
    store = tmp_path / "events.db"
    filled = [a.format(essays=essays, store=store) for a in args]
    line = assert_one_line_error(cjledger(*filled, **env), 2)
    assert named in line
    assert not store.exists()


@needs_postgres
@pytest.mark.parametrize(
    "args", [["batches", "history", str(uuid.uuid4())], ["projections", "status"]]
)
def test_an_unreachable_database_is_a_runtime_error_without_the_password(args: list[str]) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:1/cj?connect_timeout=2"
    line = assert_one_line_error(cjledger(*args, CJLEDGER_DATABASE_URL=url), 1)
    assert "127.0.0.1" in line


@pytest.mark.parametrize(
    ("option", "named", "command"),
    [
        ("no_such_option=1", "no_such_option", "batches"),
        ("keepalive=1", "keepalive", "batches"),  # keepalives, misspelt
        ("sslmode=requir", "requir", "batches"),  # a value libpq refuses
        ("keepalives_idle=soon", "keepalives_idle", "batches"),
        (f"sslpassword={SECRET}&sslmode=requir", "requir", "serve"),  # the key's password too
    ],
)
def test_a_bad_url_option_is_a_usage_error_without_the_password(
    option: str, named: str, command: str
) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1/cj?{option}"
    args = ["batches", "history", str(uuid.uuid4())] if command == "batches" else [command]
    line = assert_one_line_error(cjledger(*args, CJLEDGER_DATABASE_URL=url), 2)
    assert named in line


@needs_postgres
def test_libpq_options_in_the_url_reach_the_server(tmp_path: Path) -> None:
    schema = f"cjt_{uuid.uuid4().hex}"
    url = (
        f"{TEST_POSTGRES_URL}?schema={schema}&sslmode=disable&application_name=cj-edge-test"
        "&keepalives=1&keepalives_idle=30&tcp_user_timeout=10000"  # no PG* variable for these
    )
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


class SilentBroker:
    """A TCP server on a free loopback port that accepts connections and never answers."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.server.accept()
                self.accepted.append(connection)

    def close(self) -> None:
        for connection in self.accepted:
            connection.close()
        self.server.close()


@pytest.mark.parametrize("command", ["serve", "lps-worker"])
def test_a_broker_that_never_answers_is_waited_for_aloud_and_sigterm_still_stops(
    command: str, tmp_path: Path
) -> None:
    broker = SilentBroker()
    password = "br0ker-Secret"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CJLEDGER_")}
    env.update(
        {
            "CJLEDGER_BROKER_URL": f"amqp://guest:{password}@127.0.0.1:{broker.port}/",
            "CJLEDGER_BROKER_CONNECT_TIMEOUT_SECONDS": "1",
            "CJLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'events.db'}",
            "CJLEDGER_RETRY_BACKOFF_MAX_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "infrastructure.cli.main", command],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        waiting: list[dict[str, object]] = []
        while len(waiting) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            waiting = [
                line
                for line in map(_json_or_none, log_path.read_text().splitlines())
                if line and line.get("event") == "waiting_for_broker"
            ]
        assert len(waiting) >= 2, log_path.read_text()
        assert waiting[0]["broker"] == f"amqp://127.0.0.1:{broker.port}/"
        assert broker.accepted, "the process never reached the silent broker"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log_path.read_text()
        assert password not in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        broker.close()


def _json_or_none(line: str) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


@needs_postgres
def test_sixteen_processes_starting_at_once_on_a_fresh_database_all_start(
    tmp_path: Path,
) -> None:
    """Schema, tables and the library's functions are created under one advisory lock,
    so no process fails with ``tuple concurrently updated`` or a duplicate key."""
    from tests.e2e.messaging_support import fresh_postgres_database

    with fresh_postgres_database() as database_url:
        url = f"{database_url}?schema=cj_race"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CJLEDGER_")}
        env = {**clean, "CJLEDGER_DATABASE_URL": url}
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "infrastructure.cli.main", "projections", "run", "--once"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(16)
        ]
        outputs = [process.communicate(timeout=300)[0] for process in processes]
        failed = [
            out for process, out in zip(processes, outputs, strict=True) if process.returncode
        ]
        assert not failed, failed[0]
        assert all("caught up" in out for out in outputs)
