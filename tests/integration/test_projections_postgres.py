"""Read models on the real PostgreSQL server: SIGKILL mid-catch-up, competing runners, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from application.batches import BatchApplication
from infrastructure.cli.main import main
from infrastructure.persistence.store import eventsourcing_env
from projections.catalogue import PROJECTIONS
from projections.runner import ReadModelRunner
from tests.fakes import run_batch
from tests.unit.test_projections import assert_read_models_match_log

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_a_sigkilled_runner_resumes_without_duplicates_or_gaps(postgres_url: str) -> None:
    with BatchApplication(env=eventsourcing_env(postgres_url)) as app:
        batch_ids = [run_batch(app, n=12, ref=f"kill-{i}", failure_rate=0.1) for i in range(4)]
        head = app.recorder.max_notification_id() or 0
        observer = ReadModelRunner(app)  # creates the tables, applies nothing
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infrastructure.cli.main",
                "projections",
                "run",
                "--page-size",
                "1",
                "--poll-interval",
                "0.05",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "CJLEDGER_DATABASE_URL": postgres_url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # A loaded machine may take long to start the process: wait for progress, not
            # for a fixed time, so the kill lands mid-catch-up.
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if max(s.position for s in observer.status()) > head // 4:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the runner made no progress within 180 s")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
        interrupted = observer.status()
        assert any(s.position < head for s in interrupted), "killed before it caught up"
        assert max(s.position for s in interrupted) > 0, "killed after it made progress"

        ReadModelRunner(app).run_once()  # a restarted runner
        assert observer.lag() == {name: 0 for name in PROJECTIONS}
        assert_read_models_match_log(app, observer, batch_ids)


def test_competing_runners_apply_every_page_exactly_once(postgres_url: str) -> None:
    """Several ``serve`` processes each run a runner: they race for the same pages."""
    env = eventsourcing_env(postgres_url)
    with BatchApplication(env=env) as app:
        batch_ids = [run_batch(app, n=10, ref=f"race-{i}") for i in range(3)]
        apps = [BatchApplication(env=env) for _ in range(3)]
        try:
            runners = [ReadModelRunner(a, page_size=3) for a in apps]
            errors: list[BaseException] = []

            def catch_up(runner: ReadModelRunner) -> None:
                try:
                    runner.run_once()
                except BaseException as error:  # surfaced below
                    errors.append(error)

            threads = [threading.Thread(target=catch_up, args=(r,)) for r in runners]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert errors == []
            assert runners[0].lag() == {name: 0 for name in PROJECTIONS}
            assert_read_models_match_log(app, runners[0], batch_ids)
        finally:
            for a in apps:
                a.close()


def test_operator_commands_use_the_configured_postgresql_store(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with BatchApplication(env=eventsourcing_env(postgres_url)) as app:
        run_batch(app, n=6, ref="cli-pg")
        head = app.recorder.max_notification_id()
    capsys.readouterr()
    monkeypatch.setenv("CJLEDGER_DATABASE_URL", postgres_url)

    def cli(*args: str) -> str:
        with pytest.raises(SystemExit) as done:
            main(["projections", *args])
        out, err = capsys.readouterr()
        assert done.value.code in (0, None), err
        return out

    cli("run", "--once")
    cli("rebuild", "rankings")
    rows = {r["projection"]: r for r in json.loads(cli("status", "--json"))}
    assert rows["rankings"]["generation"] == 2
    assert {r["position"] for r in rows.values()} == {head}
    assert {r["lag"] for r in rows.values()} == {0}
