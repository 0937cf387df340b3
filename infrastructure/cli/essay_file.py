"""Reading a school's essays file (``run`` and ``submit``): JSON lines, checked strictly.

Imported only by those commands (it needs pydantic, which other commands do not).

One object per line: ``{"essay_id": str, "text": str, "is_anchor"?: bool,
"known_grade"?: str}``. A UTF-8 byte-order mark is accepted; blank lines are skipped.
Anything else stops the command with one line naming the file and the line number,
before anything is stored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from application.content import EssaySubmission
from infrastructure.cli.app import fail
from infrastructure.edge_types import Document, Identifier, Name
from infrastructure.messaging.validation import describe_validation_error


class EssayLine(BaseModel):
    """One line of an essays file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    essay_id: Identifier
    text: Document
    is_anchor: bool = False
    known_grade: Name | None = None

    @field_validator("text")
    @classmethod
    def _some_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be blank")
        return value


def read_text_file(path: Path | None, what: str) -> str:
    """An optional instructions or rubric file, as text (``""`` when not given).

    A NUL character anywhere is refused with the line it is on.
    """
    if path is None:
        return ""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        fail(f"no such {what} file: {path}")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {what} file {path}: {error}")
    if "\x00" in text:  # no text column can hold it: refuse before anything is stored
        line = text.count("\n", 0, text.index("\x00")) + 1
        fail(f"{path}:{line}: the {what} file contains a NUL character")
    return text


def read_essays(path: Path) -> tuple[EssaySubmission, ...]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        fail(f"no such file: {path}")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {path}: {error}")
    essays: list[EssaySubmission] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            fail(f"{path}:{number}: not valid JSON ({error.msg})")
        if not isinstance(data, dict):
            fail(f"{path}:{number}: expected a JSON object with essay_id and text")
        try:
            row = EssayLine.model_validate(data)
        except ValidationError as error:
            fail(f"{path}:{number}: {describe_validation_error(error)}")
        if row.essay_id in seen:
            fail(f"{path}:{number}: essay id {row.essay_id!r} appears twice")
        seen.add(row.essay_id)
        essays.append(EssaySubmission(row.essay_id, row.text, row.is_anchor, row.known_grade))
    if not essays:
        fail(f"{path}: no essays (one JSON object per line: essay_id, text)")
    return tuple(essays)


def default_ref(path: Path) -> str:
    """Same file, same reference: submitting a file twice starts one batch. The file's
    name and a digest of its bytes, which names no essay and matches no single text."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        fail(f"cannot read {path}: {error}")
    return f"{path.stem}-{digest[:16]}"
