"""``cjledger projections run`` killed with SIGKILL mid-catch-up, then restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from application.batches import BatchApplication
from projections.runner import ReadModelRunner
from tests.fakes import run_batch
from tests.unit.test_projections import assert_read_models_match_log

ROOT = Path(__file__).resolve().parents[2]


def cli(store: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "infrastructure.cli.main",
        "projections",
        *args,
        "--store",
        str(store),
    ]


def test_sigkilled_runner_resumes_without_duplicates_or_gaps(tmp_path: Path) -> None:
    store = tmp_path / "events.db"
    app = BatchApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(store)}
    )
    batch_ids = [run_batch(app, n=12, ref=f"kill-{i}") for i in range(4)]
    head = app.recorder.max_notification_id()
    observer = ReadModelRunner(app)  # creates the tables; processes nothing yet

    process = subprocess.Popen(
        cli(store, "run", "--page-size", "1", "--poll-interval", "0.05"),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = [s.position for s in observer.status()]
            if max(positions) > head // 4:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    interrupted = observer.status()
    assert any(s.position < head for s in interrupted), "killed before it caught up"
    assert max(s.position for s in interrupted) > 0, "killed after it made progress"

    subprocess.run(
        cli(store, "run", "--once"),
        cwd=ROOT,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    assert all(s.lag == 0 for s in observer.status())
    assert_read_models_match_log(app, observer, batch_ids)
    app.close()
