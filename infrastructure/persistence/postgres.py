"""The library's PostgreSQL persistence, with every libpq option of the database URL.

``eventsourcing``'s PostgreSQL datastore builds its connection pool from host, port,
database, user and password only, so an option such as ``sslmode``, ``keepalives_idle``
or ``application_name`` in ``CJLEDGER_DATABASE_URL`` would never reach its connections.
``eventsourcing_env`` names this module as the persistence module (``PERSISTENCE_MODULE``);
its one factory is the library's, plus one step: before the pool opens its first
connection, the options of ``POSTGRES_LIBPQ_OPTIONS`` (a libpq connection string) and the
connect timeout join the keyword arguments the pool connects with. Nothing travels through
``os.environ``, so two stores in one process keep their own options.

The module holds exactly one infrastructure factory class: the library finds the factory
of a persistence module by scanning the module for one.
"""

from __future__ import annotations

import eventsourcing.postgres as library_postgres
from eventsourcing.utils import Environment, EnvType
from psycopg.conninfo import conninfo_to_dict

POSTGRES_LIBPQ_OPTIONS = "POSTGRES_LIBPQ_OPTIONS"


class PostgresFactory(library_postgres.PostgresFactory):
    """``eventsourcing.postgres.PostgresFactory`` whose pool connects with the URL's libpq
    options (the library's own settings are read exactly as the library reads them)."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        kwargs = self.datastore.pool.kwargs
        if not isinstance(kwargs, dict):  # pragma: no cover - the library passes a dict
            raise TypeError("the library's pool no longer takes a dict of connect arguments")
        kwargs.update(conninfo_to_dict(self.env.get(POSTGRES_LIBPQ_OPTIONS) or ""))
        # the pool's wait for a connection also bounds each new connection (libpq's own
        # default is to wait for the operating system's TCP timeout)
        kwargs.setdefault("connect_timeout", max(int(self.datastore.pool.timeout), 1))
