"""``cjledger essays erase``: remove one student's essay from a batch, keep the audit trail."""

from __future__ import annotations

import json
from typing import Annotated
from uuid import UUID

import typer

from infrastructure.cli.app import essays_app, fail
from infrastructure.cli.common import StoreOption, open_app


@essays_app.command("erase")
def erase(
    batch_id: Annotated[str, typer.Argument(help="the batch id (a UUID)")],
    external_id: Annotated[str, typer.Argument(help="the school's id of the essay")],
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit trail)")],
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Delete an essay's text, its external id and every justification and raw answer of
    its comparisons; append EssayErased to the batch. Decisions and scores stay as they
    were and replay identically."""
    from application.batches import BatchNotFound
    from application.content import ContentStoreUnavailable, UnknownEssay
    from domain.batch import CommandRejected
    from infrastructure.logging import configure_logging

    configure_logging(json_logs=False, level="WARNING")
    try:
        batch_uuid = UUID(batch_id)
    except ValueError:
        fail(f"batch id {batch_id!r} is not a UUID")
    if not reason.strip():
        fail("--reason must not be blank")
    with open_app(store) as app:
        try:
            result = app.erase_essay(batch_uuid, external_id, reason)
        except (BatchNotFound, UnknownEssay, CommandRejected, ContentStoreUnavailable) as error:
            fail(str(error))
    if as_json:
        print(
            json.dumps(
                {
                    "batch_id": str(result.batch_id),
                    "essay_ref": result.essay_ref,
                    "answers_erased": result.answers_erased,
                }
            )
        )
    else:
        print(
            f"erased essay {result.essay_ref} of batch {result.batch_id}: text, external id "
            f"and {result.answers_erased} judge answer(s) deleted; EssayErased recorded"
        )
