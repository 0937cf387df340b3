"""``cjledger submit``: a batch from a JSON-lines file, or one clear line about the file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from uuid import UUID

import pytest

from application.batches import BatchApplication
from domain.values import BatchingMode
from infrastructure.cli.main import main
from infrastructure.persistence.store import eventsourcing_env


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("CJLEDGER_DATABASE_URL", url)
    return url


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def essays_file(tmp_path: Path, n: int = 4) -> Path:
    return write_lines(
        tmp_path / "essays.jsonl",
        [{"essay_id": f"e{i}", "text": f"Essay number {i}."} for i in range(n)],
    )


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_submit_prints_the_batch_id_and_keeps_texts_in_the_content_store(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Argument, evidence, style.")
    code, out, _ = run_cli(
        [
            *("submit", str(essays_file(tmp_path)), "--mode", "per_request"),
            *("--budget", "5", "--rubric", str(rubric)),
        ],
        capsys,
    )
    assert code == 0
    batch_id = UUID(out.strip())
    app = BatchApplication(env=eventsourcing_env(store))
    batch = app.get_batch(batch_id)
    assert batch.mode is BatchingMode.PER_REQUEST
    assert batch.policy.max_pairs_cap == 5
    content = app.require_content()
    external = content.external_ids(str(batch_id))
    assert external is not None and sorted(external.values()) == ["e0", "e1", "e2", "e3"]
    ref = batch.essays[2].essay_id
    assert external[ref] == "e2" and ref != "e2"  # an opaque ref, not the school's id
    assert content.essay_texts(str(batch_id), [ref]) == {ref: "Essay number 2."}
    unkeyed = hashlib.sha256(b"Essay number 2.").hexdigest()
    assert batch.essays[2].content_hash.startswith("hmac-sha256:")
    assert unkeyed not in batch.essays[2].content_hash  # a guessed text cannot be matched
    texts = content.batch_texts(str(batch_id))
    assert texts is not None and texts.rubric == "Argument, evidence, style."
    assert batch.comparisons  # the first wave is stored, ready for the dispatcher
    app.close()


def test_a_byte_order_mark_is_accepted(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bom.jsonl"
    lines = [json.dumps({"essay_id": f"e{i}", "text": f"Text {i}."}) for i in range(3)]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    code, out, err = run_cli(["submit", str(path)], capsys)
    assert code == 0, err
    UUID(out.strip())


def test_submitting_the_same_file_twice_starts_one_batch(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = essays_file(tmp_path)
    first = run_cli(["submit", str(path)], capsys)[1]
    second = run_cli(["submit", str(path)], capsys)[1]
    third = run_cli(["submit", str(path), "--ref", "another"], capsys)[1]
    assert first == second != third


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], "essays.jsonl:1: not valid JSON"),
        ([{"essay_id": "e1"}], "essays.jsonl:1: text: Field required"),
        ([{"essay_id": "e1", "text": "x", "grade": "A"}], "grade: Extra inputs"),
        ([{"essay_id": "", "text": "x"}], "essay_id: String should have at least 1"),
        ([{"essay_id": "   ", "text": "x"}], "essay_id: Value error, must not start or end"),
        ([{"essay_id": "e\u0007", "text": "x"}], "must not contain control characters"),
        ([{"essay_id": "e1", "text": "x", "is_anchor": "yes"}], "is_anchor"),
        (
            [{"essay_id": "e1", "text": "x"}, "", {"essay_id": "e1", "text": "y"}],
            "essays.jsonl:3: essay id 'e1' appears twice",
        ),
        ([""], "no essays"),
        (['["e1", "x"]'], "essays.jsonl:1: expected a JSON object"),
        (
            [{"essay_id": "   ", "text": "x"}],
            "essays.jsonl:1: essay_id: Value error, must not start or end with whitespace",
        ),
        ([{"essay_id": "e\u0007", "text": "x"}], "control characters"),
        ([{"essay_id": "e1", "text": " "}], "text must not be blank"),
    ],
)
def test_a_bad_file_is_reported_in_one_line(
    tmp_path: Path,
    store: str,
    capsys: pytest.CaptureFixture[str],
    lines: list[object],
    message: str,
) -> None:
    path = write_lines(tmp_path / "essays.jsonl", lines)
    code, out, err = run_cli(["submit", str(path)], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_a_missing_file_is_reported_in_one_line(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["submit", str(tmp_path / "nope.jsonl")], capsys)
    assert code == 2
    assert err.strip().startswith("error: ")
    assert len(err.strip().splitlines()) == 1


def test_an_unknown_mode_is_a_usage_error(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["submit", str(essays_file(tmp_path)), "--mode", "fastest"], capsys)
    assert code == 2 and "fastest" in err


@pytest.mark.parametrize("option", ["--instructions", "--rubric"])
def test_a_nul_in_an_instructions_or_rubric_file_is_refused_naming_the_line(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("Argue a case.\nUse evidence\x00.\n")
    code, out, err = run_cli(["submit", str(essays_file(tmp_path)), option, str(texts)], capsys)
    what = option.removeprefix("--")
    assert code == 2
    assert err.strip() == f"error: {texts}:2: the {what} file contains a NUL character"
    assert out == ""
    app = BatchApplication(env=eventsourcing_env(store))
    assert list(app.recorder.select_notifications(start=1, limit=1)) == []  # nothing stored
    app.close()
