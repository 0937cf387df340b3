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

from projections.catalogue import PROJECTIONS, ReadModelProjection
from projections.decoding import NotificationDecoder
from projections.read_ahead import Page, Pages
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
        # one notification -> the event its read models take (the hot decoding path)
        self.decode: Callable[[Any], Any] = NotificationDecoder(
            app.mapper, {topic for p in self.projections.values() for topic in p.topics}
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None
        self._failing = set(self.store.failures()) & set(self.projections)

    # ------------------------------------------------------------------ processing

    def head(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)

    def run_once(self) -> int:
        """Bring every projection up to the head of the log; return events read.

        Read models at the same position are caught up together: one pass over each page
        of the log feeds all of them, in one transaction that moves each one's tracking
        position. One that lags (a failing read model, a fresh generation) is caught up on
        its own to where the others are first. A read model whose page fails does not
        hold the others back: they are caught up first, then the first error is raised.
        """
        seen = 0
        errors: dict[str, Exception] = {}
        while not self._stop.is_set():
            live = {n: gp for n, gp in self._live().items() if n not in errors}
            if not live:
                break
            top = max(position for _, position in live.values())
            laggards = [n for n, (_, position) in live.items() if position < top]
            for name in laggards:
                try:
                    seen += self.catch_up(name, until=top)
                except Exception as error:
                    errors[name] = self._failed(name, error)
            if laggards:
                continue
            together = {n: generation for n, (generation, _) in live.items()}
            read, done = self._catch_up_together(together, top, errors)
            seen += read
            if done:
                break
        for name in self.projections:
            if name not in errors and name in self._failing:
                self.store.clear_failure(name)
                self._failing.discard(name)
        if errors:
            raise next(iter(errors.values()))
        return seen

    def _failed(self, name: str, error: Exception) -> Exception:
        if isinstance(error, ProjectionFailed):
            log.error(
                "projection_failed",
                projection=name,
                position=error.position,
                topic=error.topic,
                error=error.error,
            )
            self._remember_failure(name, error)
        else:
            log.warning("projection_page_failed", projection=name, error=str(error))
        return error

    def _live(self) -> dict[str, tuple[int, int]]:
        """(generation, position) of each of this runner's read models' live generation."""
        state = self.store.live_state()
        missing = [n for n in self.projections if n not in state]
        if missing:
            raise UnknownProjection(f"projection {missing[0]!r} has no tables yet")
        return {n: state[n] for n in self.projections}

    def _catch_up_together(
        self, generations: dict[str, int], position: int, errors: dict[str, Exception]
    ) -> tuple[int, bool]:
        """Apply the log after ``position`` to all of ``generations``' read models, a page
        at a time, each page in one transaction; return (events read, reached the head).

        Stops early (``False``) when the read models no longer share a position: another
        runner applied a page (``StalePage``) or a page failed. A failed page is then
        applied to each read model on its own (and, for the one that fails, event by
        event, to name the event), so one read model's failure holds no other back.

        Where the store allows it, the next page is read ahead while a page is being
        written (``read_ahead``); stopping early throws it away.
        """
        seen = 0
        pages = Pages(
            self._read,
            self._decoder(list(generations)),
            position,
            self.page_size,
            ahead=self.store.reads_ahead,
        )
        with pages:
            for page in pages:
                notifications = page.notifications
                try:
                    if page.error is not None:
                        raise page.error  # an event that cannot be decoded fails the page
                    applied = self._write_together(generations, position, page)
                except Exception as error:
                    if isinstance(error, TRANSIENT_ERRORS):
                        for name in generations:
                            errors[name] = self._failed(name, error)
                        return seen, False
                    if self._live_generations() != generations:
                        return seen, False  # a rebuild switched generations meanwhile
                    log.info("projection_page_apart", start=position, error=str(error))
                    for name, generation in generations.items():
                        try:
                            self._apply_page_or_find_the_event(
                                name, generation, position, notifications
                            )
                        except Exception as failure:
                            errors[name] = self._failed(name, failure)
                    return seen + len(notifications), False
                if not applied:
                    return seen, False
                seen += len(notifications)
                position = notifications[-1].id
                if self._stop.is_set():
                    return seen, True
        return seen, True

    def _read(self, start: int, stop: int | None = None) -> list[Any]:
        """The page of the log after ``start`` (up to ``stop``)."""
        return list(self.store.notifications(self.app.recorder, start, self.page_size, stop))

    def _live_generations(self) -> dict[str, int]:
        return {n: generation for n, (generation, _) in self._live().items()}

    def _decoder(self, names: list[str]) -> Callable[[list[Any]], dict[str, list[Any]]]:
        """Per page: each of ``names``' events, each notification decoded once (only those
        of a topic some read model handles)."""
        routes: dict[str, list[str]] = {}  # topic -> the read models that take it
        for name in names:
            for topic in self.projections[name].topics:
                routes.setdefault(topic, []).append(name)

        def decode_page(page: list[Any]) -> dict[str, list[Any]]:
            events: dict[str, list[Any]] = {name: [] for name in names}
            targets = {topic: [events[n] for n in takers] for topic, takers in routes.items()}
            decode = self.decode
            for notification in page:
                lists = targets.get(notification.topic)
                if lists:
                    event = decode(notification)
                    for target in lists:
                        target.append(event)
            return events

        return decode_page

    def _write_together(self, generations: dict[str, int], position: int, page: Page) -> bool:
        """One decoded page, every read model of ``generations``, one transaction: each
        read model's events folded and written set-based; ``False`` if a position had
        moved."""
        events: dict[str, list[Any]] = page.prepared
        end = page.notifications[-1].id
        try:
            with self.store.writing_together(list(generations.items()), position, end) as c:
                for name, generation in generations.items():
                    projection = self.projections[name]
                    tables = self.store.tables_for(generation, projection.ddl)
                    projection.apply_page(self.store, c, tables, events[name])
        except StalePage:
            log.debug("projection_page_stale", start=position, end=end)
            return False
        return True

    def _remember_failure(self, name: str, failure: ProjectionFailed) -> None:
        try:
            self.store.record_failure(name, self._active(name), failure.position, str(failure))
            self._failing.add(name)
        except Exception as error:  # the store may be what failed
            log.warning("projection_failure_not_recorded", projection=name, error=str(error))

    def catch_up(
        self,
        name: str,
        generation: int | None = None,
        progress: Progress | None = None,
        until: int | None = None,
    ) -> int:
        """Bring one read model (its live generation, or ``generation``) to the head of
        the log, or to ``until``; return events read."""
        seen = 0
        gen = 0
        while not self._stop.is_set():
            gen = generation if generation is not None else self._active(name)
            start = self.store.position(name, gen)
            if until is not None and start >= until:
                break
            notifications = self._read(start, until)
            if not notifications:
                break
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
        """Apply one page read after ``position`` to one read model, set-based; ``False``
        if the position had moved."""
        projection = self.projections[name]
        tables = self.store.tables_for(generation, projection.ddl)
        wanted = set(projection.topics)
        end = notifications[-1].id
        # an event that cannot be decoded fails the page like a refused row: the caller
        # then goes event by event, keeps those before it and names it
        decode = self.decode
        events = [decode(n) for n in notifications if n.topic in wanted]
        try:
            with self.store.writing(name, generation, end, start=position) as cursor:
                projection.apply_page(self.store, cursor, tables, events)
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
