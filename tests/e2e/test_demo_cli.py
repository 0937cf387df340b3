"""The ``cjledger`` CLI as an operator uses it: demo runs, history, bad arguments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infrastructure.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def demo_json(capsys: pytest.CaptureFixture[str], store: Path, *args: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "demo", "--json", "--store", str(store), *args)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def test_default_demo_ranks_close_to_the_truth(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db")
    assert doc["status"] == "scored"
    assert doc["spearman"] >= 0.8
    assert len(doc["rankings"]) == 24
    assert [r["rank"] for r in doc["rankings"]] == list(range(1, 25))
    assert doc["mode"] == "serial_bundle"
    assert doc["decisions"][-1]["decision"] == "FINALIZE_SCORING"
    requested = sum(w["pairs"] for w in doc["waves"])
    assert sum(doc["lps"]["outcomes"].values()) == requested
    assert doc["lps"]["max_bundle_size"] <= 64


def test_provider_batch_demo_is_one_wave_through_batch_jobs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db", "--mode", "provider_batch_api")
    (wave,) = doc["waves"]
    (decision,) = doc["decisions"]
    assert wave["pairs"] == min(120, 24 * 23 // 2)
    assert decision["decision"] == "FINALIZE_SCORING"
    assert doc["lps"]["jobs"] >= 1
    assert doc["lps"]["per_call_provider_calls"] == 0
    assert doc["lps"]["queue_processing_mode"] == "batch_api"
    assert sum(doc["lps"]["outcomes"].values()) == wave["pairs"]


def test_provider_batch_demo_with_a_large_budget_still_stops_after_one_wave(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = demo_json(
        capsys,
        tmp_path / "s.db",
        "--mode",
        "provider_batch_api",
        "--budget",
        "400",
        "--essays",
        "40",
    )
    (wave,) = doc["waves"]
    (decision,) = doc["decisions"]
    assert wave["pairs"] == 400
    assert decision["decision"] == "FINALIZE_SCORING"
    assert all(
        d["decision"] not in ("RESAMPLE", "REQUEST_MORE_COMPARISONS") for d in doc["decisions"]
    )


def test_provider_batch_demo_with_budget_left_shows_the_guard(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db", "--mode", "provider_batch_api", "--essays", "6")
    (decision,) = doc["decisions"]
    assert decision["guard"] == "provider_batch_single_wave"
    assert decision["raw_decision"] in ("RESAMPLE", "REQUEST_MORE_COMPARISONS")
    assert decision["decision"] == "FINALIZE_SCORING"


def test_three_essay_demo_covers_then_resamples(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db", "--essays", "3")
    waves = doc["waves"]
    assert [(w["generation_mode"], w["pairs"]) for w in waves[:3]] == [("coverage", 1)] * 3
    assert all(w["generation_mode"] == "resampling" for w in waves[3:])
    kinds = [d["decision"] for d in doc["decisions"]]
    # One RESAMPLE decision per resampling wave; the batch stops at the fourth pass or
    # earlier, for stability, and says which.
    assert kinds.count("RESAMPLE") == len(waves) - 3 >= 1
    if kinds.count("RESAMPLE") == 4:
        assert doc["decisions"][-1]["reason"] == "small_net_passes_exhausted"
    else:
        assert doc["decisions"][-1]["reason"] == "stable"
    assert kinds[-1] == "FINALIZE_SCORING"


@pytest.mark.parametrize(("failure_rate", "at_most"), [("1.0", 36), ("0.3", 119)])
def test_failing_judge_fails_the_batch_once_its_success_rate_is_unreachable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, failure_rate: str, at_most: int
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db", "--failure-rate", failure_rate)
    assert doc["status"] == "failed"
    assert doc["failure_reason"] == "success_rate_unreachable"
    assert doc["decisions"][-1]["reason"] == "success_rate_unreachable"
    assert sum(w["pairs"] for w in doc["waves"]) <= at_most
    assert doc["decisions"][-1]["failures"] > (1 - 0.8) * 120


def test_no_stable_decision_follows_a_provider_outage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db", "--essays", "24", "--outage", "2")
    after = doc["decisions"][1]
    assert after["wave"] == 2 and after["failures"] == 12
    assert after["reason"] != "stable"
    assert after["decision"] in ("REQUEST_MORE_COMPARISONS", "FINALIZE_FAILURE")


QUALITY_KEYS = {
    "ssr",
    "split_half",
    "position_bias",
    "mean_se",
    "max_se",
    "never_compared",
    "flags",
    "essays",
}


def test_demo_json_reports_the_quality_figures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db")
    quality = doc["quality"]
    assert set(quality) == QUALITY_KEYS
    assert set(quality["position_bias"]) == {"first_shown_win_rate", "ci_low", "ci_high"}
    assert quality["ssr"] == doc["reliability"] and 0 < quality["ssr"] <= 1
    assert 0 < quality["split_half"] <= 1
    bias = quality["position_bias"]
    assert bias["ci_low"] <= 0.5 <= bias["ci_high"]  # the simulated judge is unbiased
    assert len(quality["essays"]) == 24
    for essay in quality["essays"]:
        assert set(essay) == {"essay_id", "comparisons", "infit", "outfit", "misfit"}
        assert essay["infit"] > 0 and essay["outfit"] > 0
    assert quality["never_compared"] == 0
    assert isinstance(quality["flags"], list)
    assert quality["max_se"] >= quality["mean_se"] > 0


def test_a_budget_too_small_for_the_essays_is_refused_naming_the_smallest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run_cli(capsys, "demo", "--store", str(tmp_path / "s.db"), "--essays", "300")
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "smallest budget that can is 300" in err and "--budget 300" in err
    doc = demo_json(capsys, tmp_path / "s.db", "--essays", "300", "--budget", "300")
    assert doc["status"] == "scored" and not doc["sparse"]
    assert doc["quality"]["never_compared"] == 0


def test_a_sparse_demo_runs_when_accepted_and_is_flagged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db", "--essays", "300", "--allow-sparse")
    assert doc["sparse"]
    assert "sparse_budget" in doc["quality"]["flags"]
    assert doc["quality"]["never_compared"] == 300 - 2 * 120


@pytest.mark.parametrize("mode", ["per_request", "serial_bundle"])
def test_lps_figures_add_up_per_mode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str
) -> None:
    doc = demo_json(capsys, tmp_path / "s.db", "--mode", mode, "--essays", "200", "--budget", "300")
    requested = sum(w["pairs"] for w in doc["waves"])
    lps = doc["lps"]
    assert sum(lps["outcomes"].values()) == requested
    if mode == "per_request":
        assert lps["per_call_provider_calls"] == requested
        assert lps["max_bundle_size"] == 1
    else:
        assert lps["max_bundle_size"] == 64
        assert lps["per_call_provider_calls"] == lps["bundles"] < requested


def test_same_options_replay_the_same_batch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first = demo_json(capsys, tmp_path / "s.db", "--essays", "8")
    again = demo_json(capsys, tmp_path / "s.db", "--essays", "8")
    assert again["batch_id"] == first["batch_id"]
    assert again["rankings"] == first["rankings"]


def test_history_lists_events_and_state_at_a_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    doc = demo_json(capsys, store, "--essays", "4")
    code, out, _ = run_cli(
        capsys, "batches", "history", doc["batch_id"], "--store", str(store), "--json"
    )
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == doc["event_count"]
    assert rows[0]["type"] == "BatchRegistered" and rows[-1]["type"] == "Finalized"
    assert [r["version"] for r in rows] == list(range(1, len(rows) + 1))
    code, out, _ = run_cli(
        capsys,
        "batches",
        "history",
        doc["batch_id"],
        "--store",
        str(store),
        "--at-version",
        "3",
        "--json",
    )
    state = json.loads(out)
    assert (state["version"], state["waves"], state["phase"]) == (3, 1, "running")


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--essays", "0"],
        ["demo", "--mode", "bogus"],
        ["demo", "--failure-rate", "1.5"],
        ["demo", "--outage", "two"],
        ["demo", "--outage", "0"],
        ["demo", "--no-such-option"],
        ["batches", "history", "not-a-uuid"],
        ["batches", "history", "1eb39360-606c-5c29-82c4-b229c0927ca3", "--store", "/nope.db"],
        ["no-such-command"],
    ],
)
def test_bad_arguments_give_one_line_and_a_non_zero_exit(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = run_cli(capsys, *args)
    assert code != 0
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
