"""Store selection: one URL picks the ``eventsourcing`` persistence module and its settings."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse


class BadDatabaseUrl(ValueError):
    pass


def eventsourcing_env(database_url: str) -> dict[str, str]:
    """Translate ``CJLEDGER_DATABASE_URL`` into the library's environment keys.

    * ``sqlite:///relative/or/absolute.db`` (``sqlite:///:memory:`` for a private store)
    * ``postgresql://user:password@host:port/dbname[?schema=name]``
    * ``memory://`` — plain Python objects, for tests
    """
    url = urlparse(database_url)
    if url.scheme == "memory":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if url.scheme == "sqlite":
        path = unquote(url.path)
        if url.netloc:
            raise BadDatabaseUrl(f"sqlite URLs have no host: {database_url!r}")
        if path.startswith("/"):
            path = path[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
        if not path:
            raise BadDatabaseUrl(f"sqlite URL names no file: {database_url!r}")
        if path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    if url.scheme in ("postgresql", "postgres"):
        if not url.path.strip("/"):
            raise BadDatabaseUrl(f"postgresql URL names no database: {database_url!r}")
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(url.path.strip("/")),
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
        }
        for part in filter(None, url.query.split("&")):
            key, _, value = part.partition("=")
            if key == "schema":
                env["POSTGRES_SCHEMA"] = value
        return env
    raise BadDatabaseUrl(
        f"unsupported database URL {database_url!r}: use sqlite:///PATH or postgresql://..."
    )
