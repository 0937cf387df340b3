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

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlparse

import psycopg
from psycopg import sql

from infrastructure.persistence.content import RECORDER_TOPICS


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
# (sslmode, sslrootcert, application_name, options, ...) is kept as ``PG_OPTION_<name>``
# and reaches every connection (``libpq_environment``, ``postgres_conninfo``).
LIBPQ_AS_LIBRARY_SETTING = {
    "dbname": "POSTGRES_DBNAME",
    "host": "POSTGRES_HOST",
    "port": "POSTGRES_PORT",
    "user": "POSTGRES_USER",
    "password": "POSTGRES_PASSWORD",
    "connect_timeout": "POSTGRES_CONNECT_TIMEOUT",
}
LIBPQ_OPTION_PREFIX = "PG_OPTION_"

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
    return {**env, "APPLICATION_RECORDER_TOPIC": RECORDER_TOPICS[env["PERSISTENCE_MODULE"]]}


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
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": str(parsed.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": port,
        "POSTGRES_USER": str(parsed.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(parsed.get("password") or ""),
        **POSTGRES_DEFAULTS,
    }
    for key, value in parsed.items():
        if key in LIBPQ_AS_LIBRARY_SETTING:
            if key == "connect_timeout":
                env["POSTGRES_CONNECT_TIMEOUT"] = str(value)
        elif value is not None:
            env[f"{LIBPQ_OPTION_PREFIX}{key}"] = str(value)
    for key, value in ours:
        env[POSTGRES_OPTIONS[key]] = value
    return env


def libpq_options(env: dict[str, str]) -> dict[str, str]:
    """The libpq options of the URL that the library has no setting for (sslmode, ...)."""
    return {
        key.removeprefix(LIBPQ_OPTION_PREFIX): value
        for key, value in env.items()
        if key.startswith(LIBPQ_OPTION_PREFIX)
    }


def libpq_environment(env: dict[str, str]) -> dict[str, str]:
    """``PG*`` environment variables that carry ``libpq_options`` to every connection.

    The library's connection pool passes only host, port, database, user and password;
    libpq reads every other option from its documented environment variable, so the
    process exports them before the pool connects. An option without one is refused.
    """
    envvars = {
        opt.keyword.decode(): opt.envvar.decode()
        for opt in psycopg.pq.Conninfo.get_defaults()
        if opt.envvar
    }
    exported = {}
    for key, value in libpq_options(env).items():
        if key not in envvars:
            raise BadDatabaseUrl(
                f"postgresql URL option {key!r} cannot be passed to the event store's pool"
            )
        exported[envvars[key]] = value
    return exported


def postgres_conninfo(env: dict[str, str], connect_timeout: int | None = None) -> str:
    """A psycopg connection string for the server an ``eventsourcing_env`` names."""
    timeout = connect_timeout or int(env.get("POSTGRES_CONNECT_TIMEOUT") or 10)
    return psycopg.conninfo.make_conninfo(
        host=env["POSTGRES_HOST"],
        port=env.get("POSTGRES_PORT", "5432"),
        dbname=env["POSTGRES_DBNAME"],
        user=env["POSTGRES_USER"],
        password=env.get("POSTGRES_PASSWORD") or None,
        connect_timeout=timeout,
        **libpq_options(env),
    )


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
