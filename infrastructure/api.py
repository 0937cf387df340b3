"""The HTTP API (FastAPI): queries on the read models, the event log, and submission.

Routes are thin: parse, call the read models or the use case, map the result or error to
a status. Every read says how fresh it is (``freshness``: the position its read models
have reached, the head of the log and the lag between them; also the
``X-Read-Model-Position`` / ``X-Read-Model-Lag`` headers). Errors are JSON with a precise
``detail`` and never a stack trace: 404 unknown batch, 422 field by field, 413 body too
large, 401/403 for a missing/wrong bearer token.

Writes (``POST``) need ``CJLEDGER_API_TOKEN``; reads are open unless
``CJLEDGER_API_READ_TOKEN`` is set (the write token also reads).

Every path and query parameter is an edge type (``infrastructure.api_schema``): a NUL
byte, a control character, an over-long id or a forged cursor is a 422 naming the
parameter. A batch id that is not a UUID names no batch: 404. Each route documents its
response body and its errors in the OpenAPI schema (``/docs``) without validating the
body again at run time.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from application.batches import BatchConflict, BatchNotFound
from application.event_json import event_document, state_summary
from domain.batch import CommandRejected, SparseBudget
from infrastructure import api_schema as doc
from infrastructure.api_schema import (
    BatchIdPath,
    CursorQuery,
    ExternalIdPath,
    ModeQuery,
    OutcomeQuery,
    StatusQuery,
    VersionQuery,
    errors,
    limit_query,
)
from infrastructure.batch_views import rankings_as_csv, report_data, stored_quality, usage
from infrastructure.bootstrap import System
from infrastructure.edge_types import MAX_COUNT, printable_identifier
from infrastructure.submission import BatchSubmission, DuplicateEssay, register_command
from infrastructure.teacher_report import render_report
from projections.queries import BadCursor, Freshness, decode_cursor

log = structlog.get_logger("cjledger.api")

_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token_matches(given: str, expected: SecretStr | None) -> bool:
    return expected is not None and hmac.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413, whether or not it declares its
    length: a body is read (up to the limit) before the route sees it, so a chunked body
    is counted as it arrives and never reaches the parser when too large."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def create_api(system: System) -> FastAPI:
    """The API over ``system``'s store and read models. With ``api_follow`` (default) on
    a SQL store, the process also runs a read-model runner, so a store written by
    ``demo --store FILE`` is served without any other command."""
    settings = system.settings
    models = system.read_models
    follower: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.api_follow and system.has_sql_store:
            runner = system.runner(poll_interval=0.2)
            runner.run_once()
            runner.start()
            follower["runner"] = runner
        try:
            yield
        finally:
            if "runner" in follower:
                follower["runner"].stop()

    api = FastAPI(
        title="cjledger",
        summary="Comparative-judgement batches: results, decisions, audit trail.",
        version="1",
        lifespan=lifespan,
    )

    # -------------------------------------------------------------- errors

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()
        ]
        return JSONResponse({"detail": fields}, status_code=422)

    @api.exception_handler(BatchNotFound)
    async def _missing(_: Request, error: BatchNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @api.exception_handler(BadCursor)
    async def _bad_cursor(_: Request, error: BadCursor) -> JSONResponse:
        detail = [{"loc": ["query", "cursor"], "msg": str(error), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    @api.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.error("api_request_failed", error=f"{type(error).__name__}: {error}")
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)

    # -------------------------------------------------------------- auth

    async def can_read(credentials: Credentials) -> None:  # no I/O: no threadpool hop
        if settings.api_read_token is None:
            return
        if credentials is None:
            raise _unauthorized("a bearer token is required to read")
        if not (
            _token_matches(credentials.credentials, settings.api_read_token)
            or _token_matches(credentials.credentials, settings.api_token)
        ):
            raise HTTPException(403, "this token may not read")

    async def can_write(credentials: Credentials) -> None:
        if credentials is None:
            raise _unauthorized("a bearer token is required to write")
        if settings.api_token is None:
            raise HTTPException(403, "writes are disabled: CJLEDGER_API_TOKEN is not set")
        if not _token_matches(credentials.credentials, settings.api_token):
            raise HTTPException(403, "this token may not write")

    Read = Depends(can_read)
    Write = Depends(can_write)

    # -------------------------------------------------------------- helpers

    def batch_uuid(batch_id: str) -> UUID:
        try:
            return UUID(batch_id)
        except ValueError:
            raise BatchNotFound(f"batch {batch_id} does not exist") from None

    def canonical(batch_id: str) -> str:
        """The id as the read models store it (``ABC…`` and ``{abc…}`` name ``abc…``)."""
        return str(batch_uuid(batch_id))

    def summary_or_404(batch_id: str) -> dict[str, Any]:
        summary = models.batch_summary(canonical(batch_id))
        if summary is None:
            if _in_log(batch_id):
                raise HTTPException(
                    404, f"batch {batch_id} is in the log but not yet in the read models"
                )
            raise BatchNotFound(f"batch {batch_id} does not exist")
        return summary

    def _in_log(batch_id: str) -> bool:
        try:
            system.app.batch_events(batch_uuid(batch_id))
        except BatchNotFound:
            return False
        return True

    head_max_age = settings.api_head_cache_seconds

    def fresh(response: Response, *projections: str) -> dict[str, int]:
        freshness = models.freshness(*projections, max_age=head_max_age)
        return _with_freshness_headers(response, freshness)

    READ_ERRORS = errors(401, 403, 404, 422)

    # -------------------------------------------------------------- health

    @api.get(
        "/healthz", tags=["health"], response_model=None, responses={200: {"model": doc.Health}}
    )
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get(
        "/readyz",
        tags=["health"],
        responses={
            200: {"model": doc.Readiness, "description": "ready"},
            503: {"model": doc.Readiness, "description": "unready: store down or lag too high"},
        },
    )
    def readyz() -> JSONResponse:
        """The store answers and the read models lag at most ``api_ready_max_lag``."""
        try:
            freshness = models.freshness()
        except Exception as error:
            detail = f"store unreachable: {type(error).__name__}"
            return JSONResponse({"status": "unready", "detail": detail}, status_code=503)
        body = {"status": "ready", "freshness": _freshness(freshness)}
        if freshness.lag > settings.api_ready_max_lag:
            body["status"] = "unready"
            body["detail"] = f"read models lag {freshness.lag} > {settings.api_ready_max_lag}"
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    # -------------------------------------------------------------- reads

    @api.get(
        "/batches",
        dependencies=[Read],
        tags=["batches"],
        response_model=None,
        responses={200: {"model": doc.BatchPage}, **errors(401, 403, 422)},
    )
    def list_batches(
        response: Response,
        status: StatusQuery = None,
        mode: ModeQuery = None,
        limit: Annotated[int, limit_query(50, 500)] = 50,
        cursor: CursorQuery = None,
    ) -> dict[str, Any]:
        """Batches, newest first, a page at a time."""
        page = models.batch_page(
            status=status,
            mode=mode.value if mode else None,
            limit=limit,
            cursor=_checked_cursor(cursor, str, str),
        )
        return {
            "items": page.rows,
            "next_cursor": page.next_cursor,
            "freshness": fresh(response, "batch_summary"),
        }

    @api.get(
        "/batches/{batch_id}",
        dependencies=[Read],
        tags=["batches"],
        response_model=None,
        responses={200: {"model": doc.BatchDetail}, **READ_ERRORS},
    )
    def get_batch(batch_id: BatchIdPath, response: Response) -> dict[str, Any]:
        """A batch's summary, with its usage (tokens, cost, latency) and quality figures."""
        summary = summary_or_404(batch_id)
        return {
            **summary,
            "usage": usage(models.comparisons(summary["batch_id"])),
            "quality": stored_quality(summary),
            "freshness": fresh(response, "batch_summary", "comparisons"),
        }

    @api.get(
        "/batches/{batch_id}/rankings",
        dependencies=[Read],
        tags=["batches"],
        response_class=JSONResponse,
        responses={200: {"model": doc.Rankings}, **READ_ERRORS},
    )
    def rankings(batch_id: BatchIdPath) -> Response:
        """Scores, standard errors and ranks (empty until the batch is finalized).

        The hot read: one statement returns the rows with the read model's position, the
        log's head comes from a cache at most ``api_head_cache_seconds`` old, and the
        body is encoded once (the rows are plain JSON values; the schema above is
        documentation, not checked again per request)."""
        batch_id = canonical(batch_id)
        items, freshness = models.rankings_and_freshness(batch_id, max_age=head_max_age)
        if not items:  # rows exist only for a known batch: the hot path skips this check
            summary_or_404(batch_id)
        body = {"batch_id": batch_id, "items": items, "freshness": _freshness(freshness)}
        response = JSONResponse(body)
        _with_freshness_headers(response, freshness)
        return response

    @api.get(
        "/batches/{batch_id}/rankings.csv",
        dependencies=[Read],
        tags=["batches"],
        response_class=Response,
        responses={
            200: {
                "content": {"text/csv": {"schema": {"type": "string"}}},
                "description": "rank,essay_id,score,se,comparisons,essay_ref (best first)",
            },
            **errors(401, 403, 404, 422, json_route=False),
        },
    )
    def rankings_csv(batch_id: BatchIdPath) -> Response:
        """The rankings as CSV, essays named by the school's ids."""
        batch_id = summary_or_404(batch_id)["batch_id"]
        body = rankings_as_csv(models.rankings(batch_id))
        response = Response(body, media_type="text/csv; charset=utf-8")
        fresh(response, "rankings")
        return response

    @api.get(
        "/batches/{batch_id}/comparisons",
        dependencies=[Read],
        tags=["batches"],
        response_model=None,
        responses={200: {"model": doc.ComparisonPage}, **READ_ERRORS},
    )
    def comparisons(
        batch_id: BatchIdPath,
        response: Response,
        outcome: OutcomeQuery = None,
        limit: Annotated[int, limit_query(100, 1000)] = 100,
        cursor: CursorQuery = None,
    ) -> dict[str, Any]:
        """Requested comparisons in wave order, a page at a time."""
        batch_id = summary_or_404(batch_id)["batch_id"]
        page = models.comparison_page(
            batch_id, limit=limit, cursor=_checked_cursor(cursor, int, int), outcome=outcome
        )
        return {
            "items": page.rows,
            "next_cursor": page.next_cursor,
            "freshness": fresh(response, "comparisons"),
        }

    @api.get(
        "/batches/{batch_id}/decisions",
        dependencies=[Read],
        tags=["batches"],
        response_model=None,
        responses={200: {"model": doc.Decisions}, **READ_ERRORS},
    )
    def decisions(batch_id: BatchIdPath, response: Response) -> dict[str, Any]:
        """Every continuation decision with its full context, raw decision, guard, reason."""
        batch_id = summary_or_404(batch_id)["batch_id"]
        return {
            "batch_id": batch_id,
            "items": models.decisions(batch_id),
            "freshness": fresh(response, "decision_audit"),
        }

    @api.get(
        "/batches/{batch_id}/events",
        dependencies=[Read],
        tags=["audit"],
        response_model=None,
        responses={200: {"model": doc.StoredEvents}, **READ_ERRORS},
    )
    def events(batch_id: BatchIdPath) -> dict[str, Any]:
        """The batch's stored events with their full payloads, from the event store."""
        stored = system.app.batch_events(batch_uuid(batch_id))
        return {
            "batch_id": canonical(batch_id),
            "items": [event_document(e) for e in stored],
            "freshness": _store_freshness(system),
        }

    @api.get(
        "/batches/{batch_id}/state",
        dependencies=[Read],
        tags=["audit"],
        response_model=None,
        responses={200: {"model": doc.BatchState}, **READ_ERRORS},
    )
    def state(batch_id: BatchIdPath, version: VersionQuery = None) -> dict[str, Any]:
        """The batch's state at ``version`` (default: now), rebuilt from the event store."""
        batch_id_uuid = batch_uuid(batch_id)
        head = len(system.app.batch_events(batch_id_uuid))
        if version is not None and version > head:
            detail = [
                {
                    "loc": ["query", "version"],
                    "msg": f"batch has {head} events; version must be at most {head}",
                    "type": "value_error",
                }
            ]
            raise HTTPException(422, detail)
        batch = system.app.get_batch(batch_id_uuid, version=version)
        return {**state_summary(batch), "freshness": _store_freshness(system)}

    @api.get(
        "/batches/{batch_id}/report",
        dependencies=[Read],
        tags=["batches"],
        response_class=HTMLResponse,
        responses={
            200: {"description": "one self-contained HTML page (no scripts, no links)"},
            **errors(401, 403, 404, 422, json_route=False),
        },
    )
    def report(batch_id: BatchIdPath) -> HTMLResponse:
        """The teacher report: one self-contained HTML page."""
        summary = summary_or_404(batch_id)
        data = report_data(system, summary["batch_id"], summary)
        response = HTMLResponse(render_report(data))
        fresh(response)
        return response

    # -------------------------------------------------------------- writes

    @api.post(
        "/batches",
        dependencies=[Write],
        status_code=202,
        tags=["batches"],
        response_model=None,
        responses={
            202: {"model": doc.Submitted, "description": "registered; `Location` names it"},
            **errors(401, 403, 409, 413, 422),
        },
    )
    def submit(body: BatchSubmission, response: Response) -> dict[str, Any]:
        """Register and start a batch (the same validation as ``cjledger submit``)."""
        try:
            command = register_command(settings, body)
        except DuplicateEssay as duplicate:
            loc = ["body", "essays", duplicate.index, "essay_id"]
            detail = [{"loc": loc, "msg": str(duplicate), "type": "value_error"}]
            raise HTTPException(422, detail) from None
        try:
            batch_id = system.app.submit(command)
        except SparseBudget as sparse:
            msg = f"{sparse}: set budget to {sparse.smallest}, or allow_sparse to run it anyway"
            raise HTTPException(
                422, [{"loc": ["body", "budget"], "msg": msg, "type": "value_error"}]
            ) from None
        except BatchConflict as conflict:
            raise HTTPException(409, str(conflict)) from None
        except (CommandRejected, ValueError) as rejected:
            detail = [{"loc": ["body"], "msg": str(rejected), "type": "value_error"}]
            raise HTTPException(422, detail) from None
        response.headers["Location"] = f"/batches/{batch_id}"
        return {"batch_id": str(batch_id), "external_ref": command.external_ref}

    @api.post(
        "/batches/{batch_id}/essays/{external_id}/erase",
        dependencies=[Write],
        tags=["admin"],
        response_model=None,
        responses={200: {"model": doc.Erased}, **errors(401, 403, 404, 409, 413, 422, 503)},
    )
    def erase(
        batch_id: BatchIdPath, external_id: ExternalIdPath, body: EraseRequest
    ) -> dict[str, Any]:
        """Erase one essay: its text, external id and judge answers leave the content
        store; ``EssayErased`` is appended. Decisions and scores stay and replay."""
        from application.content import ContentStoreUnavailable, UnknownEssay

        try:
            result = system.app.erase_essay(batch_uuid(batch_id), external_id, body.reason)
        except UnknownEssay as unknown:
            raise HTTPException(404, str(unknown)) from None
        except ContentStoreUnavailable as unavailable:
            raise HTTPException(503, str(unavailable)) from None
        except CommandRejected as rejected:
            raise HTTPException(409, str(rejected)) from None
        return {
            "batch_id": str(result.batch_id),
            "essay_ref": result.essay_ref,
            "answers_erased": result.answers_erased,
        }

    api.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    return api


class EraseRequest(BaseModel):
    """Why the essay is erased (kept in the audit trail)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, pattern=r"\S")


def _checked_cursor(cursor: str | None, *kinds: type) -> str | None:
    """``cursor`` if it decodes to values of ``kinds`` a query can take as they are: the
    cursor is opaque to clients but travels through their hands, so a forged one (a NUL
    inside, a float where the page key is an integer) is refused here, not by the
    database."""
    if cursor is None:
        return None
    for value, kind in zip(decode_cursor(cursor, len(kinds)), kinds, strict=True):
        if kind is int:
            fits = type(value) is int and 0 <= value <= MAX_COUNT
        else:
            try:
                fits = isinstance(value, str) and 0 < len(value) <= 200
                fits = fits and printable_identifier(value) == value
            except ValueError:
                fits = False
        if not fits:
            raise BadCursor("cursor is not one this service handed out")
    return cursor


def _freshness(freshness: Freshness) -> dict[str, int]:
    return {"position": freshness.position, "head": freshness.head, "lag": freshness.lag}


def _with_freshness_headers(response: Response, freshness: Freshness) -> dict[str, int]:
    """Puts the position and lag into the headers; returns them for the body."""
    response.headers["X-Read-Model-Position"] = str(freshness.position)
    response.headers["X-Read-Model-Lag"] = str(freshness.lag)
    return _freshness(freshness)


def _store_freshness(system: System) -> dict[str, int]:
    """Reads straight from the event store are as fresh as the log itself."""
    head = system.head()
    return {"position": head, "head": head, "lag": 0}
