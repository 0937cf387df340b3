"""The teacher report in a real browser: headless Chromium (Debian's ``chromium``).

Chromium loads the report file, prints the DOM it built (``--dump-dom``), logs every
console message to stderr (``--enable-logging=stderr``) and saves a screenshot into the
test's temporary directory (the artifact to look at). ``make test`` installs chromium
when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from infrastructure.cli.main import main

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]
CONSOLE = re.compile(r":CONSOLE[:(]\d+|Uncaught", re.IGNORECASE)


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={page.parent / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def test_the_harness_sees_a_console_error(tmp_path: Path) -> None:
    """The check below can fail: a page that logs an error is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('boom')</script></body></html>")
    result = chromium(page, "--dump-dom")
    assert any("boom" in line for line in console_messages(result.stderr)), result.stderr


def test_the_report_renders_one_bar_per_essay_without_console_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "events.db"
    with pytest.raises(SystemExit) as done:
        main(["demo", "--store", str(store), "--essays", "12", "--json"])
    assert done.value.code in (0, None)
    batch_id = json.loads(capsys.readouterr().out)["batch_id"]
    report = tmp_path / "report.html"
    with pytest.raises(SystemExit) as done:
        main(["batches", "report", batch_id, "--store", str(store), "--out", str(report)])
    assert done.value.code in (0, None)

    dom = chromium(report, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    assert console_messages(dom.stderr) == []
    bars = re.findall(r'<rect class="bar" data-essay="([^"]+)"', dom.stdout)
    assert len(bars) == 12 and len(set(bars)) == 12
    assert "<svg" in dom.stdout and "How the batch decided" in dom.stdout

    screenshot = tmp_path / "report.png"
    shot = chromium(report, f"--screenshot={screenshot}", "--window-size=1000,1400")
    assert shot.returncode == 0, shot.stderr
    assert screenshot.stat().st_size > 10_000  # kept under the test's tmp dir as the artifact
