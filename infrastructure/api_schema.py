"""What the HTTP API documents: its parameters, its response bodies and its errors.

Parameters are the edge types of ``infrastructure.edge_types`` (printable identifiers of
sane length, bounded counts, enumerated filters), so a NUL byte or a forged cursor is a
422 naming the parameter, never a query that fails inside the database.

The response models describe the bodies for ``/docs`` and ``/openapi.json`` only: routes
return plain dicts (or an encoded ``JSONResponse`` on the hot rankings read), so nothing
is validated twice at run time. ``tests/unit/test_api.py`` validates real responses
against the documented models (``extra="forbid"``), so the documentation cannot drift
from what the API returns.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from domain.values import BatchingMode
from infrastructure.edge_types import MAX_COUNT, Identifier

# ------------------------------------------------------------------ parameters

BatchIdPath = Annotated[Identifier, Path(description="the batch's id (a UUID)")]
ExternalIdPath = Annotated[Identifier, Path(description="the school's id of the essay")]
#: the values ``batch_summary.status`` takes: registered, running, then a final status
BatchStatus = Literal["registered", "running", "scored", "failed", "insufficient_essays"]
StatusQuery = Annotated[BatchStatus | None, Query(description="only batches in this status")]
ModeQuery = Annotated[BatchingMode | None, Query(description="only batches in this mode")]
CursorQuery = Annotated[Identifier | None, Query(description="`next_cursor` of the previous page")]
OutcomeQuery = Annotated[
    Literal["pending", "success", "failure"] | None,
    Query(description="only comparisons with this outcome"),
]
VersionQuery = Annotated[
    int | None, Query(ge=1, le=MAX_COUNT, description="the batch's version (default: now)")
]


def limit_query(default: int, most: int) -> Any:
    return Query(ge=1, le=most, description=f"page size (at most {most})")


# ------------------------------------------------------------------ errors


class _Documented(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorMessage(_Documented):
    """401, 403, 404, 409, 413, 500, 503: what went wrong, in one sentence."""

    detail: str


class FieldError(_Documented):
    loc: list[str | int] = Field(description='where: ["query", "limit"], ["body", "essays", 0]')
    msg: str
    type: str


class FieldErrors(_Documented):
    """422: one entry per refused field."""

    detail: list[FieldError]


def errors(*statuses: int, json_route: bool = True) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries for a route's error statuses. Errors are JSON on every
    route; on a CSV or HTML route (``json_route=False``) the schemas are referenced by
    name, or FastAPI would file them under the route's own media type."""
    described = {
        401: "no bearer token",
        403: "a token that may not do this",
        404: "no such batch (or essay)",
        409: "the batch refuses the command",
        413: "request body too large",
        422: "a parameter or body field is refused",
        503: "the store or the content store is unavailable",
    }
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = FieldErrors if status == 422 else ErrorMessage
        if json_route:
            responses[status] = {"model": model, "description": described[status]}
        else:
            schema = {"$ref": f"#/components/schemas/{model.__name__}"}
            responses[status] = {
                "content": {"application/json": {"schema": schema}},
                "description": described[status],
            }
    return responses


# ------------------------------------------------------------------ bodies


class Freshness(_Documented):
    """How current a read is: the log position the read models applied, the log's head
    (cached for at most ``CJLEDGER_API_HEAD_CACHE_SECONDS``) and the difference."""

    position: int
    head: int
    lag: int


class Health(_Documented):
    status: Literal["ok"]


class Readiness(_Documented):
    status: Literal["ready", "unready"]
    freshness: Freshness | None = None
    detail: str | None = None


class BatchSummary(_Documented):
    """One row of the ``batch_summary`` read model."""

    batch_id: str
    external_ref: str
    status: BatchStatus
    mode: BatchingMode | None
    mode_source: str | None
    provider: str | None
    model: str | None
    essays: int
    anchors: int
    budget: int
    comparisons_requested: int
    successes: int
    failures: int
    waves: int
    decisions: int
    last_decision: str | None
    last_reason: str | None
    failure_reason: str | None
    reliability: float | None
    created_at: str
    updated_at: str
    finalized_at: str | None
    sparse: int
    split_half: float | None
    first_shown_win_rate: float | None
    position_bias_ci_low: float | None
    position_bias_ci_high: float | None
    mean_se: float | None
    max_se: float | None
    never_compared: int | None
    quality_flags: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    essays_erased: int


class BatchPage(_Documented):
    items: list[BatchSummary]
    next_cursor: str | None
    freshness: Freshness


class Usage(_Documented):
    comparisons: int
    succeeded: int
    failed: int
    cost_usd: float | None
    mean_latency_ms: float | None


class PositionBias(_Documented):
    first_shown_win_rate: float | None
    ci_low: float | None
    ci_high: float | None


class Quality(_Documented):
    """The quality figures stored at finalization (``null`` before, or for batches
    finalized by a policy that did not record them)."""

    ssr: float | None
    split_half: float | None
    position_bias: PositionBias
    mean_se: float | None
    max_se: float | None
    never_compared: int | None
    flags: list[str]


class BatchDetail(BatchSummary):
    usage: Usage
    quality: Quality | None
    freshness: Freshness


class Ranking(_Documented):
    batch_id: str
    essay_id: str = Field(description="the essay's ref in the log")
    external_id: str | None = Field(
        default=None, description="the school's id (null once the essay is erased)"
    )
    score: float
    se: float
    rank: int
    comparisons: int
    infit: float | None
    outfit: float | None
    misfit: int | None


class Rankings(_Documented):
    batch_id: str
    items: list[Ranking] = Field(description="best first; empty until the batch is finalized")
    freshness: Freshness


class Comparison(_Documented):
    comparison_id: str
    batch_id: str
    wave: int
    pair_index: int
    generation_mode: str
    essay_a: str
    essay_b: str
    outcome: Literal["pending", "success", "failure"]
    winner: str | None
    confidence: int | None
    error_code: str | None
    error_source: str | None
    provider: str | None
    model: str | None
    latency_ms: float | None
    cost_usd: float | None
    requested_at: str
    deadline_at: str
    completed_at: str | None
    essay_a_external_id: str | None = None
    essay_b_external_id: str | None = None
    winner_external_id: str | None = None


class ComparisonPage(_Documented):
    items: list[Comparison]
    next_cursor: str | None
    freshness: Freshness


class Decision(_Documented):
    batch_id: str
    version: int
    wave: int
    decision: str
    reason: str
    raw_decision: str
    raw_reason: str
    guard: str | None
    policy_version: int
    outcomes: int
    successes: int
    failures: int
    success_rate: float | None
    max_score_change: float | None
    context: dict[str, Any] = Field(description="everything the decision was taken on")
    decided_at: str


class Decisions(_Documented):
    batch_id: str
    items: list[Decision]
    freshness: Freshness


class StoredEvent(_Documented):
    version: int
    timestamp: str
    type: str
    class_version: int
    payload: dict[str, Any]


class StoredEvents(_Documented):
    batch_id: str
    items: list[StoredEvent]
    freshness: Freshness = Field(description="lag 0: read from the event store itself")


class BatchState(_Documented):
    batch_id: str
    version: int
    external_ref: str
    phase: str
    mode: BatchingMode | None
    mode_source: str | None
    essays: int
    waves: int
    pairs_submitted: int
    open_comparisons: int
    successes: int
    failures: int
    resampling_passes_used: int
    decisions: int
    last_decision: str | None
    final_status: str | None
    failure_reason: str | None
    freshness: Freshness


class Submitted(_Documented):
    batch_id: str
    external_ref: str


class Erased(_Documented):
    batch_id: str
    essay_ref: str
    answers_erased: int
