"""Every libpq option of ``CJLEDGER_DATABASE_URL`` reaches every connection, on the real server.

The library's pool, the schema creation, the DDL lock and the dispatcher's lease each open
connections of their own; an option that reached only some of them (``keepalives_idle``
has no ``PG*`` variable, so an environment-variable route cannot carry it) would show here.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest

from infrastructure.messaging.service import PostgresAdvisoryLease, lease_for
from infrastructure.persistence.bootstrap import open_batch_application
from infrastructure.persistence.store import ensure_schema, eventsourcing_env
from tests.conftest import TEST_POSTGRES_URL, postgres_dsn

pytestmark = pytest.mark.integration


def url_with(schema: str, application_name: str, **extra: str) -> str:
    options = {
        "schema": schema,
        "keepalives": "1",
        "keepalives_idle": "37",
        "keepalives_interval": "7",
        "application_name": application_name,
        "sslmode": "disable",
        "connect_timeout": "5",
        **extra,
    }
    return f"{TEST_POSTGRES_URL}?" + "&".join(f"{k}={quote(v)}" for k, v in options.items())


def sessions_named(application_name: str) -> list[tuple[int, bool]]:
    """(pid, holds an advisory lock) of each server session with that application_name."""
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.pid, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
            " AND l.locktype = 'advisory' AND l.granted)"
            " FROM pg_stat_activity a WHERE a.application_name = %s",
            (application_name,),
        ).fetchall()
    return [(int(pid), bool(locked)) for pid, locked in rows]


@pytest.fixture
def tag() -> str:
    return f"cjl-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def unchanged_process_environment() -> Iterator[None]:
    def ours() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}

    before = ours()
    yield
    assert ours() == before, "opening the store changed os.environ"


def test_the_library_pool_connects_with_every_option_of_the_url(
    postgres_schema: str, tag: str, unchanged_process_environment: None
) -> None:
    env = eventsourcing_env(url_with(postgres_schema, tag, options="-c statement_timeout=4321"))
    app = open_batch_application(env)
    try:
        with app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            assert conn.execute("SHOW application_name").fetchone()["application_name"] == tag
            timeout = conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"]
            assert timeout == "4321ms"  # libpq's `options` reached the server
            assert conn.execute("SHOW ssl").fetchone()["ssl"] == "off"
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            try:  # keepalives* have no PG* variable: only the pool's own arguments carry them
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 37
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
            finally:
                sock.close()
            pid = conn.info.backend_pid
        assert pid in {session for session, _ in sessions_named(tag)}
    finally:
        app.close()


def test_the_schema_is_created_on_a_connection_with_the_url_options(tag: str) -> None:
    schema = f"cjt_{uuid.uuid4().hex}"
    read_only = "-c default_transaction_read_only=on"
    env = eventsourcing_env(url_with(schema, tag, options=read_only))
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        ensure_schema(env)  # the option reached this connection: CREATE SCHEMA is refused
    ensure_schema(eventsourcing_env(url_with(schema, tag)))
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}"')


def test_the_dispatcher_lease_holds_its_lock_on_a_connection_with_the_url_options(
    postgres_schema: str, tag: str, unchanged_process_environment: None
) -> None:
    lease = lease_for(eventsourcing_env(url_with(postgres_schema, tag)), "dispatcher")
    assert isinstance(lease, PostgresAdvisoryLease)
    try:
        assert lease.acquire()
        sessions = sessions_named(tag)
        assert len(sessions) == 1, sessions
        assert sessions[0][1], "the session with the URL's application_name holds no lock"
    finally:
        lease.release()
