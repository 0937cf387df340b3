"""libpq options of ``CJLEDGER_DATABASE_URL`` in real ``serve`` and ``lps-worker`` processes.

While a batch runs through the service, every session the processes hold on the server
(the store's pool, the read models, the content store, the dispatcher's lease) carries the
``application_name`` of the URL, beside options no ``PG*`` variable could carry.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.e2e.messaging_support import (
    PG_URL,
    Services,
    delete_topology,
    fresh_postgres_database,
    needs_postgres,
    needs_rabbitmq,
    new_prefix,
    service_env,
    wait_until_finalized,
)
from tests.e2e.test_messaging_processes import Run, check_log

pytestmark = [pytest.mark.e2e, needs_rabbitmq, needs_postgres]


def sessions_of(database: str) -> list[tuple[str, bool]]:
    """(application_name, holds an advisory lock) of each client session on ``database``."""
    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
            " AND l.locktype = 'advisory' AND l.granted)"
            " FROM pg_stat_activity a WHERE a.datname = %s AND a.backend_type = 'client backend'",
            (database,),
        ).fetchall()
    return [(str(name), bool(locked)) for name, locked in rows]


def test_serve_and_submit_run_a_batch_with_every_libpq_option_of_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = new_prefix()
    tag = f"cjl-test-{uuid.uuid4().hex[:12]}"
    with fresh_postgres_database() as base_url:
        database = base_url.rsplit("/", 1)[1]
        url = (
            f"{base_url}?keepalives=1&keepalives_idle=30&application_name={tag}"
            "&sslmode=disable&connect_timeout=5"
        )
        env = service_env(url, prefix)
        for key, value in env.items():
            if key.startswith("CJLEDGER_"):
                monkeypatch.setenv(key, value)
        run = Run(Services(tmp_path, env), url, prefix, tmp_path)
        try:
            serve = run.services.serve()
            worker = run.services.lps_worker()
            serve.wait_started()
            worker.wait_started()
            batch_id = run.submit(8, "--mode", "serial_bundle", "--budget", "16")
            wait_until_finalized(url, [batch_id], timeout=90)
            check_log(url, [batch_id])

            deadline = time.monotonic() + 30
            sessions = sessions_of(database)
            while not any(locked for _, locked in sessions) and time.monotonic() < deadline:
                time.sleep(0.2)  # the dispatcher's lease is taken on its first pump
                sessions = sessions_of(database)
            assert sessions, "the service holds no connection to its database"
            assert {name for name, _ in sessions} == {tag}, sessions
            assert any(locked for _, locked in sessions), "no session holds the lease"
            assert serve.terminate() == 0 and worker.terminate() == 0
        finally:
            run.services.stop_all()
            delete_topology(prefix)
