"""Submission files: JSON lines of essays, validated line by line before anything is stored.

Imported only by ``cjledger submit`` (it needs pydantic, which other commands do not).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from domain.values import Essay
from infrastructure.cli.app import fail
from infrastructure.edge_types import Document, Identifier, Name
from infrastructure.messaging.validation import describe_validation_error


class EssayLine(BaseModel):
    """One line of a submission file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    essay_id: Identifier
    text: Document
    is_anchor: bool = False
    known_grade: Name | None = None


def read_essays(path: Path) -> tuple[Essay, ...]:
    """Essays from a JSON-lines file; the content hash is the SHA-256 of the text.

    Texts are not stored: events carry ids and hashes only (see ``docs/messaging.md``).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        fail(f"no such file: {path}")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {path}: {error}")
    essays: list[Essay] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            fail(f"{path}:{number}: not valid JSON ({error.msg})")
        try:
            row = EssayLine.model_validate(data)
        except ValidationError as error:
            fail(f"{path}:{number}: {describe_validation_error(error)}")
        if row.essay_id in seen:
            fail(f"{path}:{number}: essay id {row.essay_id!r} appears twice")
        seen.add(row.essay_id)
        digest = hashlib.sha256(row.text.encode("utf-8")).hexdigest()
        essays.append(Essay(row.essay_id, f"sha256:{digest}", row.is_anchor, row.known_grade))
    if not essays:
        fail(f"{path}: no essays (one JSON object per line: essay_id, text)")
    return tuple(essays)


def default_ref(path: Path, essays: tuple[Essay, ...]) -> str:
    """Same file contents, same reference: submitting a file twice starts one batch."""
    digest = hashlib.sha256(
        "\n".join(f"{e.essay_id}:{e.content_hash}" for e in essays).encode()
    ).hexdigest()
    return f"{path.stem}-{digest[:16]}"
