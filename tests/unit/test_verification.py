"""``batches verify``: every decision, wave and finalization re-derived from the log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from application.batches import BatchApplication
from application.verification import CURRENT_ALGORITHM_VERSION, verify_batch, what_if
from domain import workflow
from domain.algorithms import PAIRING_ALGORITHM_VERSION
from domain.batch import CJBatch
from domain.policy import BatchPolicy
from domain.values import BatchingMode
from infrastructure.cli.main import main
from tests.conftest import AppFactory
from tests.fakes import run_batch


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.mark.parametrize(
    ("mode", "failure_rate", "n"),
    [
        (None, 0.0, 7),
        (BatchingMode.PER_REQUEST, 0.3, 6),
        (BatchingMode.PROVIDER_BATCH_API, 0.1, 8),
        (None, 0.9, 5),  # fails on its success rate
        (None, 0.0, 1),  # too few essays
    ],
)
def test_every_recorded_step_is_re_derived_without_divergence(
    make_app: AppFactory, mode: BatchingMode | None, failure_rate: float, n: int
) -> None:
    app = make_app()
    batch_id = run_batch(app, n=n, mode=mode, failure_rate=failure_rate, ref="verify-1")
    assert verify_batch(app.batch_events(batch_id)) == []


def _tamper_first_decision(db: Path) -> tuple[int, str]:
    """Change the reason of the first stored ContinuationDecided; return its version and
    the reason that was recorded."""
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT originator_id, originator_version, state FROM stored_events "
            "WHERE topic LIKE '%ContinuationDecided' ORDER BY originator_version LIMIT 1"
        ).fetchone()
        state = json.loads(row[2])
        original = state["reason"]
        state["reason"] = "tampered_reason"
        conn.execute(
            "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
            (json.dumps(state).encode(), row[0], row[1]),
        )
    return int(row[1]), original


def test_altering_one_stored_decision_reports_exactly_that_divergence_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "events.db"
    code, _, err = run_cli(capsys, "demo", "--store", str(db), "--essays", "8", "--json")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "batches", "verify", "--all", "--store", str(db), "--json")
    assert code == 0 and json.loads(out)["divergences"] == []

    version, original = _tamper_first_decision(db)
    code, out, _ = run_cli(capsys, "batches", "verify", "--all", "--store", str(db), "--json")
    assert code == 1
    (divergence,) = json.loads(out)["divergences"]
    assert divergence["version"] == version
    assert divergence["event"] == "ContinuationDecided"
    assert divergence["field"] == "reason"
    assert (divergence["recorded"], divergence["derived"]) == ("tampered_reason", original)
    code, out, _ = run_cli(capsys, "batches", "verify", "--all", "--store", str(db))
    assert code == 1 and "1 divergence(s)" in out and "tampered_reason" in out


def test_what_if_lists_the_batches_a_stricter_stability_threshold_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "events.db"
    app = BatchApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(db)}
    )
    stable = run_batch(app, n=24, seed=2, ref="y24-2", policy=BatchPolicy(max_pairs_cap=300))
    exhausted = run_batch(
        app, n=6, seed=1, ref="asks-everything", policy=BatchPolicy(max_pairs_cap=400)
    )
    stable_events, exhausted_events = app.batch_events(stable), app.batch_events(exhausted)
    app.close()
    last = [e for e in stable_events if type(e).__name__ == "ContinuationDecided"][-1]
    assert last.reason == "stable" and last.context.max_score_change > 0.005

    change = what_if(stable_events, {"stability_threshold": 0.005})
    assert change is not None and change.change == "stops later"
    assert (change.recorded, change.derived) == ("FINALIZE_SCORING", "RESAMPLE")
    assert what_if(exhausted_events, {"stability_threshold": 0.005}) is None
    looser = what_if(stable_events, {"stability_threshold": 0.5})
    assert looser is not None and looser.change == "stops earlier"

    policy = tmp_path / "strict.json"
    policy.write_text(json.dumps({"stability_threshold": 0.005}))
    capsys.readouterr()
    code, out, _ = run_cli(
        capsys, "batches", "verify", "--all", "--policy", str(policy), "--store", str(db), "--json"
    )
    assert code == 0
    assert [c["batch_id"] for c in json.loads(out)["changed"]] == [str(stable)]

    policy.write_text(json.dumps({"stability": 0.005}))
    code, _, err = run_cli(capsys, "batches", "verify", "--all", "--policy", str(policy))
    assert code == 2 and "unknown policy field 'stability'" in err


def test_verify_needs_one_batch_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "batches", "verify")
    assert code == 2 and "name one batch or pass --all" in err


def test_the_audit_hints_printed_by_demo_work_as_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex

    code, out, err = run_cli(capsys, "demo", "--store", str(tmp_path / "d.db"), "--essays", "6")
    assert code == 0, err
    hints = [
        line.split(": ", 1)[1]
        for line in out.splitlines()
        if line.strip().startswith(("Audit it:", "events:", "verify:"))
    ]
    assert len(hints) == 3
    for hint in hints:
        argv = shlex.split(hint)
        assert argv[0] == "cjledger"
        code, printed, err = run_cli(capsys, *argv[1:])
        assert code == 0, f"{hint}: {err}"
        assert printed.strip()


def test_waves_from_an_older_pairing_version_are_an_algorithm_change_not_a_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch recorded by another pairing algorithm (here: one that listed each wave's
    pairs in reverse) re-derives to other pairs. Under the same stamp that is a divergence;
    once today's pairing version is bumped it is reported as an algorithm change."""
    db = tmp_path / "events.db"
    app = BatchApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(db)}
    )
    with monkeypatch.context() as older:
        today = workflow.generate_wave
        older.setattr(workflow, "generate_wave", lambda **kw: tuple(reversed(today(**kw))))
        batch_id = run_batch(app, n=7, ref="older-pairing")
    events = app.batch_events(batch_id)
    app.close()
    waves = [e for e in events if isinstance(e, CJBatch.ComparisonsRequested)]
    assert {w.algorithm_version for w in waves} == {PAIRING_ALGORITHM_VERSION}
    capsys.readouterr()

    # Same version stamped as today's: the log disagrees with the code that wrote it.
    code, out, _ = run_cli(capsys, "batches", "verify", "--all", "--store", str(db), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["algorithm_changed"] == []
    assert report["divergences"]
    assert {d["event"] for d in report["divergences"]} == {"ComparisonsRequested"}

    # Today's pairing is one version on: the recorded waves came from the older algorithm.
    newer = PAIRING_ALGORITHM_VERSION + 1
    monkeypatch.setitem(CURRENT_ALGORITHM_VERSION, CJBatch.ComparisonsRequested, newer)
    code, out, _ = run_cli(capsys, "batches", "verify", "--all", "--store", str(db), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["divergences"] == []
    changed = report["algorithm_changed"]
    assert changed and {d["event"] for d in changed} == {"ComparisonsRequested"}
    assert any(d["field"].startswith("pairs[0]") for d in changed)
    assert all(
        (d["classification"], d["recorded_algorithm"], d["current_algorithm"])
        == ("algorithm_changed", PAIRING_ALGORITHM_VERSION, newer)
        for d in changed
    )
    code, out, _ = run_cli(capsys, "batches", "verify", "--all", "--store", str(db))
    assert code == 0
    assert "algorithm changed" in out and "warning:" in out and "0 divergence(s)" in out
