"""The composition root: where settings become the running system.

Every entry point — each CLI command, ``serve``, ``lps-worker``, ``api``, the benchmarks
and the tests — builds what it needs from one ``System``: the batch application on the
configured store, the read models beside it (store, queries, runner), the outbox
dispatcher's positions, and (in ``infrastructure.messaging.processes``) the broker
transport and LLM providers. Nothing else constructs these, so a setting means the same
thing in every process.

Parts are built lazily: ``cjledger batches show`` opens the store and the read models,
never a broker; ``lps-worker`` never opens a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from application.batches import BatchApplication
from application.ports import PositionStore
from infrastructure.persistence.bootstrap import (
    ddl_lock,
    open_batch_application,
    retry_schema_race,
)
from infrastructure.persistence.positions import position_store_for
from infrastructure.persistence.store import eventsourcing_env
from infrastructure.settings import Settings
from projections.queries import ReadModels
from projections.runner import ReadModelRunner
from projections.store import ReadModelStoreMixin, store_for


@dataclass
class System:
    """One process's parts, built on first use from ``settings`` and closed together."""

    settings: Settings = field(default_factory=Settings)
    store_env: dict[str, str] | None = None
    """The event store's ``eventsourcing`` environment, when not from the database URL."""
    app_options: dict[str, Any] = field(default_factory=dict)
    """Extra arguments of the batch application (a test's clock)."""

    @cached_property
    def env(self) -> dict[str, str]:
        """The event store's environment (from ``CJLEDGER_DATABASE_URL`` by default)."""
        if self.store_env is not None:
            return dict(self.store_env)
        return eventsourcing_env(self.settings.database_url)

    @property
    def has_sql_store(self) -> bool:
        """Read models and positions live in SQL tables; the in-memory store has none."""
        return not self.env.get("PERSISTENCE_MODULE", "").endswith("popo")

    @cached_property
    def app(self) -> BatchApplication:
        from infrastructure.metrics import batch_observer

        options = {
            "mode_setting": self.settings.batching_mode,
            "observer": batch_observer(),
            **self.app_options,
        }
        return open_batch_application(self.env, **options)

    @cached_property
    def read_model_store(self) -> ReadModelStoreMixin:
        app = self.app  # opened first: opening takes the DDL lock itself (not reentrant)
        with ddl_lock(self.env):
            return retry_schema_race(lambda: store_for(app))

    def runner(self, names: list[str] | None = None, **kwargs: Any) -> ReadModelRunner:
        """A read-model runner on this store (creates the read models' tables on first use)."""
        app, store = self.app, self.read_model_store
        with ddl_lock(self.env):
            return retry_schema_race(lambda: ReadModelRunner(app, names, store=store, **kwargs))

    @cached_property
    def read_models(self) -> ReadModels:
        self.runner()  # the tables and views exist before anything reads them
        return ReadModels(self.read_model_store, head=self.head, external_ids=self.app.external_ids)

    def head(self) -> int:
        """The last notification id of the log."""
        return int(self.app.recorder.max_notification_id() or 0)

    @cached_property
    def positions(self) -> PositionStore:
        app = self.app
        with ddl_lock(self.env):
            return retry_schema_race(lambda: position_store_for(app))

    # -- the long-running processes (broker transport and LLM providers) ---------------
    # Built in ``infrastructure.messaging.processes`` from this system; imported lazily so
    # commands that never talk to a broker start without the messaging stack.

    def serve_process(self) -> Any:
        """``cjledger serve``: outcome consumer, outbox dispatcher over the broker
        transport, deadline sweeper and read-model runner (inside a running event loop)."""
        from infrastructure.messaging.processes import build_serve

        return build_serve(self.settings, system=self)

    def lps_worker_process(self) -> Any:
        """``cjledger lps-worker``: the configured providers behind the request queue."""
        from infrastructure.lps.process import build_lps_worker

        return build_lps_worker(self.settings)

    def close(self) -> None:
        if "app" in self.__dict__:
            self.app.close()

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def system_for_url(database_url: str, **settings: Any) -> System:
    """A ``System`` on ``database_url`` with every other setting from the environment."""
    return System(Settings(database_url=database_url, **settings))
