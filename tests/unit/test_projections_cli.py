"""``cjledger projections status | run | rebuild`` as an operator types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from application.batches import BatchApplication
from infrastructure.cli.main import main
from projections.catalogue import PROJECTIONS
from projections.runner import ReadModelRunner
from tests.fakes import run_batch
from tests.unit.test_projections import assert_read_models_match_log


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.fixture
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "events.db"
    app = BatchApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    for i in range(2):
        run_batch(app, n=6, ref=f"cli-{i}")
    app.close()
    capsys.readouterr()  # the batches' own log lines
    return path


def status(capsys: pytest.CaptureFixture[str], store: Path) -> dict[str, dict[str, int]]:
    code, out, err = run_cli(capsys, "projections", "status", "--json", "--store", str(store))
    assert code == 0, err
    return {row.pop("projection"): row for row in json.loads(out)}


def test_status_shows_position_head_and_lag_of_every_read_model(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    before = status(capsys, store)
    assert set(before) == set(PROJECTIONS)
    head = before["batch_summary"]["head"]
    assert head > 0
    assert all(
        r == {"generation": 1, "position": 0, "head": head, "lag": head, "failure": None}
        for r in before.values()
    )

    code, out, err = run_cli(capsys, "projections", "run", "--once", "--store", str(store))
    assert code == 0, err
    assert all(r["lag"] == 0 and r["position"] == head for r in status(capsys, store).values())

    code, out, _ = run_cli(capsys, "projections", "status", "--store", str(store))
    assert code == 0 and "decision_audit" in out and "lag" in out


def test_rebuild_one_read_model_switches_it_to_a_new_generation_caught_up(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    run_cli(capsys, "projections", "run", "--once", "--store", str(store))
    code, out, err = run_cli(capsys, "projections", "rebuild", "comparisons", "--store", str(store))
    assert code == 0, err
    assert "comparisons: rebuilt as generation 2" in out
    after = status(capsys, store)
    assert after["comparisons"]["generation"] == 2 and after["comparisons"]["lag"] == 0
    assert after["rankings"]["generation"] == 1

    app = BatchApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(store)}
    )
    try:
        batch_ids = [
            e.originator_id
            for e in app.recorder.select_notifications(None, 10_000)
            if e.originator_version == 1
        ]
        assert_read_models_match_log(app, ReadModelRunner(app), batch_ids)
    finally:
        app.close()


def test_rebuild_without_a_name_rebuilds_them_all(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, _, err = run_cli(capsys, "projections", "rebuild", "--store", str(store))
    assert code == 0, err
    assert {r["generation"] for r in status(capsys, store).values()} == {2}


def test_an_unknown_read_model_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, out, err = run_cli(capsys, "projections", "rebuild", "leaderboard", "--store", str(store))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "unknown projection 'leaderboard'" in err


def test_a_missing_store_is_one_line_and_a_non_zero_exit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "projections", "status", "--store", str(tmp_path / "no.db"))
    assert code != 0
    assert err.count("\n") == 1 and "no event store" in err
