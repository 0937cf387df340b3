"""The start-up DDL lock: re-entrant within a thread, one per schema."""

from __future__ import annotations

import threading

import pytest

from infrastructure.persistence.bootstrap import ddl_lock
from infrastructure.persistence.store import eventsourcing_env

pytestmark = pytest.mark.integration


def _in_thread(target: object, seconds: float = 20.0) -> bool:
    """Run ``target`` in a thread; ``True`` if it finished in time."""
    thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_thread_that_holds_the_lock_takes_it_again_without_waiting(postgres_url: str) -> None:
    env = eventsourcing_env(postgres_url)

    def nested() -> None:
        with ddl_lock(env), ddl_lock(env):
            pass

    assert _in_thread(nested), "nested ddl_lock waited for itself"


def test_a_store_in_another_schema_does_not_wait_for_the_lock(
    postgres_url: str, postgres_schema: str
) -> None:
    env = eventsourcing_env(postgres_url)
    other = {**env, "POSTGRES_SCHEMA": f"{postgres_schema}_other"}
    entered = threading.Event()

    def other_schema() -> None:
        with ddl_lock(other):
            entered.set()

    with ddl_lock(env):
        assert _in_thread(other_schema)
    assert entered.is_set()


def test_another_thread_waits_until_the_holder_releases(postgres_url: str) -> None:
    env = eventsourcing_env(postgres_url)
    entered = threading.Event()

    def contender() -> None:
        with ddl_lock(env):
            entered.set()

    thread = threading.Thread(target=contender, daemon=True)
    with ddl_lock(env):
        thread.start()
        assert not entered.wait(1.0), "a second holder got the lock"
    thread.join(20)
    assert entered.is_set()
