"""Opening the store while another process records outcomes must not deadlock.

A writer takes the content tables first (its rows go in before the library locks the
events table). The recorder's start-up DDL therefore must never hold a lock on the events
table while it waits for a content table.
"""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

from application.batches import BatchApplication
from infrastructure.persistence.content import ANSWERS_TABLE
from infrastructure.persistence.store import eventsourcing_env, postgres_conninfo

pytestmark = pytest.mark.integration


def test_start_up_ddl_waits_for_a_writer_instead_of_deadlocking(postgres_url: str) -> None:
    env = eventsourcing_env(postgres_url)
    schema = env["POSTGRES_SCHEMA"]
    with BatchApplication(env=env) as app:  # the tables exist, as for a running service
        events_table = app.recorder.events_table_name  # type: ignore[attr-defined]

    errors: list[BaseException] = []
    opened = threading.Event()

    def open_store() -> None:
        try:
            BatchApplication(env=env).close()
            opened.set()
        except BaseException as error:  # surfaced below
            errors.append(error)

    with psycopg.connect(postgres_conninfo(env), autocommit=False) as writer:
        # The writer's order: a content row first, then the events table's lock.
        writer.execute(
            sql.SQL(
                "INSERT INTO {}.{} (comparison_id, batch_id, essay_a, essay_b, justification)"
                " VALUES ('c1', 'b1', 'a', 'b', '')"
            ).format(sql.Identifier(schema), sql.Identifier(ANSWERS_TABLE))
        )
        opener = threading.Thread(target=open_store, daemon=True)
        opener.start()
        opener.join(2.0)  # let the DDL run into the writer's row lock
        writer.execute(
            sql.SQL("LOCK TABLE {}.{} IN EXCLUSIVE MODE").format(
                sql.Identifier(schema), sql.Identifier(events_table)
            )
        )
        writer.commit()
    opener.join(30)
    assert errors == []
    assert opened.is_set()
