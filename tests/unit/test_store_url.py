"""``CJLEDGER_DATABASE_URL`` picks the store: how each URL maps to the library's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrastructure.persistence.content import RECORDER_TOPICS
from infrastructure.persistence.postgres import POSTGRES_LIBPQ_OPTIONS
from infrastructure.persistence.store import (
    POSTGRES_DEFAULTS,
    POSTGRES_MODULE,
    BadDatabaseUrl,
    eventsourcing_env,
    libpq_options,
    postgres_connect_kwargs,
    postgres_conninfo,
)

SERVER = {
    "PERSISTENCE_MODULE": POSTGRES_MODULE,
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "5432",
    "POSTGRES_USER": "postgres",
    "POSTGRES_PASSWORD": "",
    "APPLICATION_RECORDER_TOPIC": RECORDER_TOPICS["eventsourcing.postgres"],
    **POSTGRES_DEFAULTS,
    POSTGRES_LIBPQ_OPTIONS: "",
}

POSTGRES_CASES = [
    ("postgresql://127.0.0.1/cj", {"POSTGRES_DBNAME": "cj"}),
    ("postgres://127.0.0.1/cj", {"POSTGRES_DBNAME": "cj"}),
    ("postgresql:///cj", {"POSTGRES_DBNAME": "cj"}),
    (
        "postgresql://cj:s%40cret%2F1@db.internal:6543/ledger",
        {
            "POSTGRES_DBNAME": "ledger",
            "POSTGRES_HOST": "db.internal",
            "POSTGRES_PORT": "6543",
            "POSTGRES_USER": "cj",
            "POSTGRES_PASSWORD": "s@cret/1",
        },
    ),
    (
        "postgresql://127.0.0.1/cj?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=cj",
        {
            "POSTGRES_DBNAME": "cj",
            POSTGRES_LIBPQ_OPTIONS: "application_name=cj sslmode=verify-full "
            "sslrootcert=/etc/ca.pem",
        },
    ),
    (
        "postgresql://127.0.0.1/cj?schema=cj_v2",
        {"POSTGRES_DBNAME": "cj", "POSTGRES_SCHEMA": "cj_v2"},
    ),
    (
        "postgresql://127.0.0.1/cj?pool_size=2&max_overflow=0&max_waiting=50",
        {
            "POSTGRES_DBNAME": "cj",
            "POSTGRES_POOL_SIZE": "2",
            "POSTGRES_MAX_OVERFLOW": "0",
            "POSTGRES_MAX_WAITING": "50",
        },
    ),
    (
        "postgresql://127.0.0.1/cj?connect_timeout=3&pre_ping=y&conn_max_age=600"
        "&lock_timeout=5&idle_in_transaction_session_timeout=10",
        {
            "POSTGRES_DBNAME": "cj",
            "POSTGRES_CONNECT_TIMEOUT": "3",
            "POSTGRES_PRE_PING": "y",
            "POSTGRES_CONN_MAX_AGE": "600",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
        },
    ),
]


@pytest.mark.parametrize(("url", "expected"), POSTGRES_CASES, ids=[c[0] for c in POSTGRES_CASES])
def test_a_postgresql_url_names_the_server_the_schema_and_the_pool(
    url: str, expected: dict[str, str]
) -> None:
    assert eventsourcing_env(url) == {**SERVER, **expected}


@pytest.mark.parametrize(
    ("url", "dbname"),
    [
        ("sqlite:///events.db", "events.db"),
        ("sqlite:///data/cj/events.db", "data/cj/events.db"),
        ("sqlite:///:memory:", ":memory:"),
        (
            "sqlite:///file:shared?mode=memory&cache=shared",
            "file:shared?mode=memory&cache=shared",
        ),
    ],
)
def test_a_sqlite_url_names_a_file_relative_to_the_working_directory(
    url: str, dbname: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = eventsourcing_env(url)
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    assert env["SQLITE_DBNAME"] == dbname
    assert env["SQLITE_LOCK_TIMEOUT"] == "30"


def test_a_sqlite_url_with_four_slashes_is_absolute_and_its_directory_is_created(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "dir" / "events.db"
    assert eventsourcing_env(f"sqlite:///{path}")["SQLITE_DBNAME"] == str(path)
    assert path.parent.is_dir()


def test_a_memory_url_keeps_events_in_python_objects() -> None:
    assert eventsourcing_env("memory://") == {
        "PERSISTENCE_MODULE": "eventsourcing.popo",
        "APPLICATION_RECORDER_TOPIC": RECORDER_TOPICS["eventsourcing.popo"],
    }


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://127.0.0.1:5432", "must name one database"),
        ("postgresql://127.0.0.1/a/b", "must name one database"),
        ("postgresql://127.0.0.1:port/cj", "bad port"),
        ("postgresql://127.0.0.1/cj?poolsize=3", 'invalid URI query parameter: "poolsize"'),
        ("sqlite://host/events.db", "has no host"),
        ("sqlite:///", "must name a file"),
        ("sqlite:///events.db?mode=ro", "only a sqlite file: URI takes options"),
        ("mysql://127.0.0.1/cj", "unsupported database URL"),
        ("events.db", "unsupported database URL"),
    ],
)
def test_a_bad_url_is_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(BadDatabaseUrl, match=reason):
        eventsourcing_env(url)


def test_the_conninfo_reaches_the_server_the_url_names() -> None:
    env = eventsourcing_env("postgresql://cj:pw@db:6543/ledger?connect_timeout=4")
    info = dict(part.split("=", 1) for part in postgres_conninfo(env).split())
    assert info == {
        "host": "db",
        "port": "6543",
        "dbname": "ledger",
        "user": "cj",
        "password": "pw",
        "connect_timeout": "4",
    }


def test_every_libpq_option_of_the_url_reaches_each_connection() -> None:
    env = eventsourcing_env(
        "postgresql://cj@db/ledger?sslmode=require&sslrootcert=/ca.pem&keepalives_idle=5"
        "&sslpassword=k3y&tcp_user_timeout=9000&schema=s1&pool_size=2"
    )
    options = {
        "sslmode": "require",
        "sslrootcert": "/ca.pem",
        "keepalives_idle": "5",  # no PG* variable could carry these three
        "sslpassword": "k3y",
        "tcp_user_timeout": "9000",
    }
    assert libpq_options(env) == options
    info = dict(part.split("=", 1) for part in postgres_conninfo(env).split())
    assert {key: info[key] for key in options} == options
    assert "schema" not in info and "pool_size" not in info
    kwargs = postgres_connect_kwargs(env, connect_timeout=5)
    assert kwargs["connect_timeout"] == 5 and kwargs["sslpassword"] == "k3y"


def test_the_library_pool_connects_with_every_libpq_option() -> None:
    from eventsourcing.persistence import InfrastructureFactory

    env = eventsourcing_env(
        "postgresql://cj:pw@db:6543/ledger?keepalives=1&keepalives_idle=30"
        "&application_name=cj-test&connect_timeout=7&schema=s1"
    )
    factory = InfrastructureFactory.construct(env)  # the pool opens no connection yet
    try:
        kwargs = factory.datastore.pool.kwargs  # type: ignore[attr-defined]
        assert {key: kwargs[key] for key in ("host", "port", "dbname", "user", "password")} == {
            "host": "db",
            "port": "6543",
            "dbname": "ledger",
            "user": "cj",
            "password": "pw",
        }
        assert kwargs["keepalives"] == "1" and kwargs["keepalives_idle"] == "30"
        assert kwargs["application_name"] == "cj-test"
        assert kwargs["connect_timeout"] == 7
    finally:
        factory.close()


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        ("keepalive=1", 'invalid URI query parameter: "keepalive"'),
        ("sslmode=requir", 'invalid sslmode value: "requir"'),
        ("target_session_attrs=primary-ish", "invalid target_session_attrs value"),
        ("keepalives_idle=soon", "invalid integer value 'soon' for connection option"),
        ("connect_timeout=ten", "invalid integer value 'ten' for connection option"),
        ("service=no_such_service", 'definition of service "no_such_service" not found'),
    ],
)
def test_an_option_libpq_refuses_is_refused_before_any_connection(option: str, reason: str) -> None:
    with pytest.raises(BadDatabaseUrl, match=reason):
        eventsourcing_env(f"postgresql://cj:pw@db.invalid/ledger?{option}")
