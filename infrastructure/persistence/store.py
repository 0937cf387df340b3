"""Store selection: one URL picks the ``eventsourcing`` persistence module and its settings.

``CJLEDGER_DATABASE_URL`` is the only store setting. ``sqlite:///PATH`` (the default) is the
embedded store, one file; ``postgresql://USER:PASSWORD@HOST:PORT/DBNAME?schema=S&...`` is
the service store. This module only translates the URL into the library's environment keys
(``eventsourcing_env``); the library creates its tables when an application first opens the
store. It does not create a PostgreSQL schema, which ``ensure_schema`` does.

The connection-pool defaults are chosen for this service, not taken from the library: every
append to the event table takes a table lock, so more connections never add write
throughput; a process needs a few for concurrent reads and one per writer, and several
processes share one server's ``max_connections``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

import psycopg
from psycopg import sql

from infrastructure.persistence.content import RECORDER_TOPICS
from infrastructure.persistence.postgres import POSTGRES_LIBPQ_OPTIONS


class BadDatabaseUrl(ValueError):
    pass


# Query options that belong to cjledger and the library's pool, not to libpq; they are
# taken out of the URL before libpq parses the rest. Values are checked by the library
# when the store is opened.
POSTGRES_OPTIONS = {
    "schema": "POSTGRES_SCHEMA",
    "pool_size": "POSTGRES_POOL_SIZE",
    "max_overflow": "POSTGRES_MAX_OVERFLOW",
    "max_waiting": "POSTGRES_MAX_WAITING",
    "conn_max_age": "POSTGRES_CONN_MAX_AGE",
    "pre_ping": "POSTGRES_PRE_PING",
    "lock_timeout": "POSTGRES_LOCK_TIMEOUT",
    "idle_in_transaction_session_timeout": "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT",
}

# libpq keywords the library's own settings carry; every other libpq option in the URL
# (sslmode, sslrootcert, keepalives_idle, application_name, options, ...) is kept, as a
# libpq connection string, in ``POSTGRES_LIBPQ_OPTIONS`` and reaches every connection: the
# library's pool through ``infrastructure.persistence.postgres``, every other connection
# through ``postgres_connect_kwargs``.
LIBPQ_AS_LIBRARY_SETTING = {
    "dbname": "POSTGRES_DBNAME",
    "host": "POSTGRES_HOST",
    "port": "POSTGRES_PORT",
    "user": "POSTGRES_USER",
    "password": "POSTGRES_PASSWORD",
    "connect_timeout": "POSTGRES_CONNECT_TIMEOUT",
}
# The persistence module of a postgresql URL: the library's, with the URL's libpq options.
POSTGRES_MODULE = "infrastructure.persistence.postgres"

# libpq options it reads as integers, checked here because libpq itself only parses them
# once a TCP connection is being made (a typo would surface as a failed connection).
LIBPQ_INTEGER_OPTIONS = (
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
# A socket directory that cannot exist: libpq checks a connection's options, then fails
# to reach it without touching the network (``_check_with_libpq``).
_NO_SERVER = "/nonexistent/cjledger-libpq-option-check"

# Defaults for a URL that does not name them (the library's own are in brackets).
POSTGRES_DEFAULTS = {
    "POSTGRES_POOL_SIZE": "4",  # connections kept open per application instance [5]
    "POSTGRES_MAX_OVERFLOW": "6",  # extra connections under a burst [10]
    "POSTGRES_CONNECT_TIMEOUT": "10",  # seconds to get a connection, also from the pool [30]
}

SQLITE_LOCK_TIMEOUT = "30"  # seconds a writer waits for another writer's transaction


def eventsourcing_env(database_url: str) -> dict[str, str]:
    """Translate ``CJLEDGER_DATABASE_URL`` into the library's environment keys.

    * ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the file's
      directory is created if missing); ``sqlite:///:memory:`` (private to one application
      instance) or ``sqlite:///file:NAME?mode=memory&cache=shared`` (shared in a process).
    * ``postgresql://user:password@host:port/dbname?option=value&...`` (or ``postgres://``);
      the options are the keys of ``POSTGRES_OPTIONS``; percent-escapes are decoded.
    * ``memory://``: plain Python objects, for tests.

    Raises ``BadDatabaseUrl`` for anything else, naming what is wrong. Every store gets
    the recorder that keeps the content store beside its events
    (``infrastructure.persistence.content``).
    """
    env = _store_env(database_url)
    module = env["PERSISTENCE_MODULE"]
    recorder = RECORDER_TOPICS["eventsourcing.postgres" if module == POSTGRES_MODULE else module]
    return {**env, "APPLICATION_RECORDER_TOPIC": recorder}


def _store_env(database_url: str) -> dict[str, str]:
    url = urlparse(database_url)
    if url.scheme == "memory":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if url.scheme == "sqlite":
        return _sqlite_env(database_url, url.netloc, unquote(url.path), url.query)
    if url.scheme in ("postgresql", "postgres"):
        return _postgres_env(database_url)
    raise BadDatabaseUrl(
        f"unsupported database URL {database_url!r}: use sqlite:///PATH or postgresql://..."
    )


def _sqlite_env(database_url: str, netloc: str, path: str, query: str) -> dict[str, str]:
    if netloc:
        raise BadDatabaseUrl(f"a sqlite URL has no host (use three slashes): {database_url!r}")
    path = path.removeprefix("/")  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
    if not path:
        raise BadDatabaseUrl(f"a sqlite URL must name a file: {database_url!r}")
    if query:
        if not path.startswith("file:"):
            raise BadDatabaseUrl(f"only a sqlite file: URI takes options: {database_url!r}")
        path = f"{path}?{query}"  # e.g. file:name?mode=memory&cache=shared
    if path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": path,
        "SQLITE_LOCK_TIMEOUT": SQLITE_LOCK_TIMEOUT,
    }


def _postgres_env(database_url: str) -> dict[str, str]:
    url = urlparse(database_url)
    ours = [
        (k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k in POSTGRES_OPTIONS
    ]
    libpq_query = "&".join(
        part
        for part in url.query.split("&")
        if part and part.split("=", 1)[0] not in POSTGRES_OPTIONS
    )
    base = database_url.split("?", 1)[0]
    libpq_url = f"{base}?{libpq_query}" if libpq_query else base
    try:
        parsed = psycopg.conninfo.conninfo_to_dict(libpq_url)
    except psycopg.ProgrammingError as error:
        raise BadDatabaseUrl(f"bad postgresql URL: {error}") from None
    dbname = str(parsed.get("dbname") or "")
    if not dbname or "/" in dbname:
        raise BadDatabaseUrl(f"a postgresql URL must name one database: {database_url!r}")
    port = str(parsed.get("port") or "5432")
    if not port.isdigit():
        raise BadDatabaseUrl(f"bad port in {database_url!r}")
    options = {
        key: str(value)
        for key, value in parsed.items()
        if key not in LIBPQ_AS_LIBRARY_SETTING and value is not None
    }
    timeout = str(parsed.get("connect_timeout") or POSTGRES_DEFAULTS["POSTGRES_CONNECT_TIMEOUT"])
    _check_integers({**options, "connect_timeout": timeout})
    _check_with_libpq({**options, "port": port})
    env = {
        "PERSISTENCE_MODULE": POSTGRES_MODULE,
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": str(parsed.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": port,
        "POSTGRES_USER": str(parsed.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(parsed.get("password") or ""),
        **POSTGRES_DEFAULTS,
        "POSTGRES_CONNECT_TIMEOUT": timeout.strip(),
        # always set, so that a stray variable in os.environ cannot add options
        POSTGRES_LIBPQ_OPTIONS: psycopg.conninfo.make_conninfo(**options),
    }
    for key, value in ours:
        env[POSTGRES_OPTIONS[key]] = value
    return env


def _check_integers(options: dict[str, str]) -> None:
    for key in (*LIBPQ_INTEGER_OPTIONS, "connect_timeout"):
        if key in options and not _INTEGER.fullmatch(options[key]):
            raise BadDatabaseUrl(
                f"bad postgresql URL: invalid integer value {options[key]!r} "
                f"for connection option {key!r}"
            )


def _check_with_libpq(options: dict[str, str]) -> None:
    """Refuse option values libpq refuses (``sslmode=requir``, an unknown ``service``, ...).

    libpq checks a connection's options before it connects; aimed at a socket directory
    that does not exist, the attempt then fails at once and touches no network, so any
    other failure is libpq refusing an option.
    """
    probe = {
        **{k: v for k, v in options.items() if k not in ("host", "hostaddr")},
        "host": _NO_SERVER,
        "dbname": "probe",
    }
    attempt = psycopg.pq.PGconn.connect_start(psycopg.conninfo.make_conninfo(**probe).encode())
    try:
        if attempt.status == psycopg.pq.ConnStatus.BAD:
            message = attempt.get_error_message()
            if _NO_SERVER not in message:
                raise BadDatabaseUrl(f"bad postgresql URL: {message.strip().splitlines()[0]}")
    finally:
        attempt.finish()


def libpq_options(env: dict[str, str]) -> dict[str, str]:
    """The libpq options of the URL that the library has no setting for (sslmode, ...)."""
    options = env.get(POSTGRES_LIBPQ_OPTIONS) or ""
    return {key: str(value) for key, value in psycopg.conninfo.conninfo_to_dict(options).items()}


def postgres_connect_kwargs(
    env: dict[str, str], connect_timeout: int | None = None
) -> dict[str, Any]:
    """``psycopg.connect`` keyword arguments for the server an ``eventsourcing_env`` names,
    with every libpq option of its URL: for connections the library's pool does not make
    (schema creation, the DDL lock, the dispatcher's lease)."""
    timeout = connect_timeout or int(env.get("POSTGRES_CONNECT_TIMEOUT") or 10)
    kwargs: dict[str, Any] = {
        "host": env["POSTGRES_HOST"],
        "port": env.get("POSTGRES_PORT", "5432"),
        "dbname": env["POSTGRES_DBNAME"],
        "user": env["POSTGRES_USER"],
        **libpq_options(env),
        "connect_timeout": timeout,
    }
    if env.get("POSTGRES_PASSWORD"):
        kwargs["password"] = env["POSTGRES_PASSWORD"]
    return kwargs


def postgres_conninfo(env: dict[str, str], connect_timeout: int | None = None) -> str:
    """``postgres_connect_kwargs`` as one libpq connection string."""
    return psycopg.conninfo.make_conninfo(**postgres_connect_kwargs(env, connect_timeout))


def ensure_schema(env: dict[str, str]) -> None:
    """Create the PostgreSQL schema the environment names, if it does not exist yet.

    The library creates its tables on first start, but only in a schema that exists. This
    uses one plain connection, so it doubles as a reachability check: an unreachable
    server fails at once with ``psycopg.OperationalError`` (the library's pool would keep
    retrying for its whole connect timeout). A no-op for other stores.
    """
    if not env.get("PERSISTENCE_MODULE", "").endswith("postgres"):
        return
    schema = env.get("POSTGRES_SCHEMA", "").strip() or "public"
    with psycopg.connect(postgres_conninfo(env), autocommit=True) as conn:
        if schema != "public":
            statement = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            conn.execute(statement)
