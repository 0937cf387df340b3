"""Keeps the read models up to date: catch up, follow, report lag, rebuild beside.

The runner pulls pages of notifications from the event store (SQLite has no
subscriptions, and a pull loop with a short poll interval behaves the same on
PostgreSQL without the risk of a lost NOTIFY stalling it). Each page is applied to a
projection in one transaction that also moves its tracking position. A crash anywhere
rolls back that page; the next run resumes from the committed position, so rows are
never duplicated or lost.

Embedding: ``start()`` follows the log in a daemon thread, ``stop()`` ends it,
``run_once()`` catches up synchronously, ``lag()`` and ``status()`` report how far each
read model is behind the head of the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from eventsourcing.persistence import InterfaceError, OperationalError

from application.notification_log import follow_log
from projections.catalogue import PROJECTIONS, ReadModelProjection
from projections.store import ReadModelStoreMixin, RebuildInProgress, StalePage, store_for

__all__ = [
    "ProjectionFailed",
    "ProjectionStatus",
    "ReadModelRunner",
    "RebuildInProgress",
    "UnknownProjection",
]

log = structlog.get_logger("cjledger.projections")

#: the database is away or busy: retry the page later, it is not the event's fault
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)

Progress = Callable[[int, int], None]
"""Called with (position reached, head of the log) after every page."""


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    generation: int
    position: int
    head: int
    failure: str | None = None  # the event it cannot apply, and why

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


class UnknownProjection(LookupError):
    pass


class ProjectionFailed(Exception):
    """A read model cannot apply one event. Its page rolled back; the other read models
    are not held back, and the failure is stored for ``projections status``."""

    def __init__(self, projection: str, position: int, topic: str, error: Exception) -> None:
        self.projection = projection
        self.position = position
        self.topic = topic
        lines = str(error).strip().splitlines()
        self.error = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        super().__init__(
            f"read model {projection} cannot apply event {position} ({topic}): {self.error}"
        )


class ReadModelRunner:
    """Applies the log to the read models (all of them, or ``names``), page by page.

    Shares ``app``'s database: the read models live beside the events. Creates the read
    models' tables on first use. Several runners on one store (one per ``serve`` process)
    are safe: a page is applied only if it starts exactly at the committed position
    (checked inside its writing transaction), so every event is applied once.
    """

    def __init__(
        self,
        app: Any,
        names: Iterable[str] | None = None,
        *,
        store: ReadModelStoreMixin | None = None,
        page_size: int = 500,
        poll_interval: float = 0.2,
    ) -> None:
        wanted = list(PROJECTIONS) if names is None else list(names)
        unknown = [n for n in wanted if n not in PROJECTIONS]
        if unknown:
            raise UnknownProjection(
                f"unknown projection {unknown[0]!r}; known: {', '.join(PROJECTIONS)}"
            )
        self.app = app
        self.store = store or store_for(app)
        self.page_size = page_size
        self.poll_interval = poll_interval
        self.projections: dict[str, ReadModelProjection] = {
            name: PROJECTIONS[name](view=self.store) for name in wanted
        }
        for name, projection in self.projections.items():
            if self.store.active_generation(name) is None:
                self.store.ensure_first_generation(name, projection.ddl, projection.indexes)
            else:
                self.store.ensure_views(name, projection.ddl)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None
        self._failing = set(self.store.failures()) & set(self.projections)

    # ------------------------------------------------------------------ processing

    def head(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)

    def run_once(self) -> int:
        """Bring every projection up to the head of the log; return events seen.

        A read model whose page fails does not hold the others back: they are caught up
        first, then the first error is raised.
        """
        seen = 0
        errors: list[Exception] = []
        for name in self.projections:
            try:
                seen += self.catch_up(name)
            except ProjectionFailed as failure:
                log.error(
                    "projection_failed",
                    projection=name,
                    position=failure.position,
                    topic=failure.topic,
                    error=failure.error,
                )
                self._remember_failure(name, failure)
                errors.append(failure)
                continue
            except Exception as error:
                log.warning("projection_page_failed", projection=name, error=str(error))
                errors.append(error)
                continue
            if name in self._failing:
                self.store.clear_failure(name)
                self._failing.discard(name)
        if errors:
            raise errors[0]
        return seen

    def _remember_failure(self, name: str, failure: ProjectionFailed) -> None:
        try:
            self.store.record_failure(name, self._active(name), failure.position, str(failure))
            self._failing.add(name)
        except Exception as error:  # the store may be what failed
            log.warning("projection_failure_not_recorded", projection=name, error=str(error))

    def catch_up(
        self, name: str, generation: int | None = None, progress: Progress | None = None
    ) -> int:
        seen = 0
        gen = 0

        def position() -> int:
            nonlocal gen
            gen = generation if generation is not None else self._active(name)
            return self.store.position(name, gen)

        pages = follow_log(
            self.app.recorder, position, page_size=self.page_size, stop=self._stop.is_set
        )
        for start, notifications in pages:
            try:
                if not self._apply_page_or_find_the_event(name, gen, start, notifications):
                    continue
            except Exception:
                if generation is None and self._active(name) != gen:
                    # A rebuild switched readers to a new generation (and may have dropped
                    # this one) while the page was applied: carry on with the new one.
                    continue
                raise
            seen += len(notifications)
            if progress is not None:
                progress(notifications[-1].id, self.head())
        return seen

    def _apply_page_or_find_the_event(
        self, name: str, generation: int, position: int, notifications: list[Any]
    ) -> bool:
        """Apply a page; if it fails for a reason other than the database being away,
        apply its events one by one, so those before the bad one are kept and the bad one
        is named (``ProjectionFailed``). On PostgreSQL a page's statements are pipelined,
        so an error surfaces at the commit, not at the event that caused it."""
        try:
            return self._apply_page(name, generation, position, notifications)
        except ProjectionFailed:
            raise
        except Exception as error:
            if isinstance(error, TRANSIENT_ERRORS):
                raise
            if len(notifications) == 1:
                topic = notifications[0].topic.rsplit(":", 1)[-1]
                raise ProjectionFailed(name, notifications[0].id, topic, error) from error
        for notification in notifications:
            if not self._apply_page_or_find_the_event(name, generation, position, [notification]):
                return False
            position = notification.id
        return True

    def _apply_page(
        self, name: str, generation: int, position: int, notifications: list[Any]
    ) -> bool:
        """Apply one page read after ``position``; ``False`` if the position had moved."""
        projection = self.projections[name]
        tables = self.store.tables_for(generation, projection.ddl)
        wanted = set(projection.topics)
        end = notifications[-1].id
        try:
            with self.store.writing(name, generation, end, start=position) as cursor:
                for notification in notifications:
                    if notification.topic in wanted:
                        try:
                            event = self.app.mapper.to_domain_event(notification)
                            projection.apply(self.store, cursor, tables, event)
                        except Exception as error:
                            topic = notification.topic.rsplit(":", 1)[-1]
                            raise ProjectionFailed(name, notification.id, topic, error) from error
        except StalePage:
            # Another runner moved the position after we read it: the page is re-read
            # from where it committed, so no event is applied twice or skipped.
            log.debug("projection_page_stale", projection=name, start=position, end=end)
            return False
        return True

    def _active(self, name: str) -> int:
        generation = self.store.active_generation(name)
        if generation is None:
            raise UnknownProjection(f"projection {name!r} has no tables yet")
        return generation

    # ------------------------------------------------------------------ following

    def start(self) -> None:
        """Follow the log in a background thread until ``stop()``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="projections", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_forever(self) -> None:
        self._follow()

    def _follow(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                processed = self.run_once()
                self.last_error = None
                backoff = self.poll_interval
            except Exception as error:  # keep following; the page rolled back
                self.last_error = error
                log.exception("projection_runner_error", error=str(error))
                processed = 0
                backoff = min(backoff * 2, 5.0)
            if not processed:
                self._stop.wait(backoff)

    # ------------------------------------------------------------------ operating

    def lag(self) -> dict[str, int]:
        """Per read model: how many notifications of the log it has not applied yet."""
        return {s.name: s.lag for s in self.status()}

    def status(self) -> list[ProjectionStatus]:
        head = self.head()
        failures = self.store.failures()
        result = []
        for name in self.projections:
            generation = self._active(name)
            position = self.store.position(name, generation)
            result.append(ProjectionStatus(name, generation, position, head, failures.get(name)))
        return result

    def rebuild(self, name: str, progress: Progress | None = None) -> ProjectionStatus:
        """Replay the whole log into a fresh generation, then switch readers to it.

        Readers keep querying the old, complete generation until the new one has applied
        everything the old one has; the switch is one row update. Writers and the live
        runner keep going meanwhile. Only one rebuild of a read model runs at a time
        (``RebuildInProgress`` otherwise); an interrupted rebuild leaves the old
        generation active and untouched.
        """
        if name not in self.projections:
            raise UnknownProjection(f"unknown projection {name!r}")
        projection = self.projections[name]
        started = time.perf_counter()
        with self.store.rebuild_lock(name):
            old = self._active(name)
            new = old + 1
            self.store.create_generation(name, new, projection.ddl, projection.indexes)
            while True:
                self.catch_up(name, generation=new, progress=progress)
                if self._stop.is_set():
                    raise InterruptedError(f"rebuild of {name} stopped before the switch")
                if self.store.switch_if_caught_up(name, old, new, projection.ddl):
                    break
            self.catch_up(name, generation=new, progress=progress)  # writes that raced it
            self.store.drop_generation(old, projection.ddl)
        status = ProjectionStatus(name, new, self.store.position(name, new), self.head())
        log.info(
            "projection_rebuilt",
            projection=name,
            generation=new,
            position=status.position,
            seconds=round(time.perf_counter() - started, 3),
        )
        return status
