"""The options ``run`` and ``submit`` share, and the registration they both build."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from domain.values import BatchingMode
from infrastructure.cli.app import fail
from infrastructure.limits import MAX_COUNT, MAX_SEED, MIN_SEED

# Only what the commands' signatures need is imported here (``--help`` stays fast).
if TYPE_CHECKING:
    from application.batches import RegisterBatch
    from application.content import EssaySubmission
    from infrastructure.settings import Settings

SIMULATED_MODEL = "simulated-judge-1"

InstructionsOption = Annotated[
    Path | None,
    typer.Option(help="text file with the assignment's instructions", dir_okay=False),
]
RubricOption = Annotated[
    Path | None, typer.Option(help="text file with the marking rubric", dir_okay=False)
]
ProviderOption = Annotated[
    str | None,
    typer.Option(help="LLM provider (default: CJLEDGER_LPS_PROVIDER, else simulated)"),
]
ModelOption = Annotated[str | None, typer.Option(help="model name (default: CJLEDGER_LPS_MODEL)")]
ModeOption = Annotated[
    BatchingMode | None, typer.Option(help="batching mode requested by the batch")
]
AllowSparseOption = Annotated[
    bool,
    typer.Option(
        "--allow-sparse",
        help="accept a budget too small for every essay to get min_appearances comparisons",
    ),
]
BudgetOption = Annotated[
    int | None,
    typer.Option(min=1, max=MAX_COUNT, help="comparison budget (lowers max_pairs_cap)"),
]
SeedOption = Annotated[
    int, typer.Option(min=MIN_SEED, max=MAX_SEED, help="seed for pairing (signed 64-bit)")
]


def provider_and_model(
    settings: Settings, provider: str | None, model: str | None
) -> tuple[str, str]:
    chosen = (provider or settings.lps_provider).strip()
    if not chosen:
        fail("--provider must not be blank")
    if model is None:
        model = getattr(settings, "lps_model", None) or (
            SIMULATED_MODEL if chosen == "simulated" else None
        )
    if not model or not model.strip():
        fail(f"name the model of provider {chosen!r} with --model or CJLEDGER_LPS_MODEL")
    return chosen, model.strip()


def registration(
    settings: Settings,
    *,
    external_ref: str,
    essays: tuple[EssaySubmission, ...],
    instructions: str,
    rubric: str,
    provider: str | None,
    model: str | None,
    mode: BatchingMode | None,
    budget: int | None,
    seed: int,
    allow_sparse: bool = False,
) -> RegisterBatch:
    from application.batches import RegisterBatch
    from domain.policy import BatchPolicy

    chosen_provider, chosen_model = provider_and_model(settings, provider, model)
    return RegisterBatch(
        external_ref=external_ref,
        submissions=essays,
        instructions=instructions,
        rubric=rubric,
        provider=chosen_provider,
        model=chosen_model,
        requested_mode=mode,
        budget_override=budget,
        seed=seed,
        policy=BatchPolicy(max_pairs_cap=settings.max_pairs_cap),
        allow_sparse=allow_sparse,
    )
