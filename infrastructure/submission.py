"""``POST /batches``: the body, validated as ``cjledger submit`` validates an essays file.

Each essay is the essays file's ``EssayLine`` (the same field rules); ids must be unique
within a batch. Texts and the school's essay ids go to the content store through the
same ``RegisterBatch`` the CLI builds; the events carry opaque refs only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from application.batches import RegisterBatch
from application.content import EssaySubmission
from domain.policy import BatchPolicy
from domain.values import BatchingMode
from infrastructure.cli.essay_file import EssayLine
from infrastructure.edge_types import MAX_COUNT, OptionalDocument, Reference, Seed
from infrastructure.settings import Settings

SIMULATED_MODEL = "simulated-judge-1"


class DuplicateEssay(ValueError):
    def __init__(self, index: int, essay_id: str) -> None:
        super().__init__(f"essay id {essay_id!r} appears twice")
        self.index = index
        self.essay_id = essay_id


class BatchSubmission(BaseModel):
    """The body of ``POST /batches``."""

    model_config = ConfigDict(extra="forbid")

    external_ref: Reference | None = None
    essays: list[EssayLine] = Field(min_length=1)
    instructions: OptionalDocument = ""
    rubric: OptionalDocument = ""
    mode: BatchingMode | None = None
    budget: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    seed: Seed = 0
    allow_sparse: bool = False

    def submissions(self) -> tuple[EssaySubmission, ...]:
        """The essays; ``DuplicateEssay`` names the first repeated id."""
        seen: set[str] = set()
        for index, line in enumerate(self.essays):
            if line.essay_id in seen:
                raise DuplicateEssay(index, line.essay_id)
            seen.add(line.essay_id)
        return tuple(
            EssaySubmission(e.essay_id, e.text, e.is_anchor, e.known_grade) for e in self.essays
        )


def default_ref(essays: Sequence[EssaySubmission]) -> str:
    """Same essays, same reference (a digest that names no essay)."""
    digest = hashlib.sha256()
    for e in essays:
        digest.update(f"{e.external_id}\0{e.text}\0".encode())
    return f"api-{digest.hexdigest()[:16]}"


def register_command(settings: Settings, body: BatchSubmission) -> RegisterBatch:
    essays = body.submissions()
    provider = settings.lps_provider
    model = getattr(settings, "lps_model", None) or SIMULATED_MODEL
    return RegisterBatch(
        external_ref=body.external_ref or default_ref(essays),
        submissions=essays,
        instructions=body.instructions,
        rubric=body.rubric,
        provider=provider,
        model=model,
        requested_mode=body.mode,
        budget_override=body.budget,
        seed=body.seed,
        policy=BatchPolicy(max_pairs_cap=settings.max_pairs_cap),
        allow_sparse=body.allow_sparse,
    )
