"""The CJ batch application: the use cases every adapter (CLI, HTTP, broker) calls.

Each command is a unit of work (``UnitOfWork``, run by ``run_unit_of_work``): it loads the
batches, lets the domain workflow change them, and saves every resulting event in **one**
atomic append. Optimistic concurrency on the aggregate does the rest: if
two workers record the last two outcomes of a wave at once, one save fails with
``IntegrityError``; that worker reloads the batch, re-applies its outcome (now a duplicate
or a plain late arrival) and does nothing extra, so only one next wave is ever requested.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar, cast
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.domain import DomainEventProtocol, MutableOrImmutableAggregate
from eventsourcing.persistence import EventStore, IntegrityError, JSONTranscoder, Recording
from eventsourcing.utils import get_topic, resolve_topic

from application.content import (
    CONTENT_WRITES_KWARG,
    ContentStore,
    ContentStoreUnavailable,
    ContentWrite,
    EraseEssay,
    EssayContent,
    EssaySubmission,
    ExternalIdResolver,
    RegisterContent,
    StoreAnswer,
    UnknownEssay,
    keyed_hash,
    new_ref,
    new_secret,
)
from application.notification_log import scan_log
from application.ports import BatchObserver, NoObserver
from application.serialization import TupleRestoringMapper, register_value_types
from application.snapshot_store import SNAPSHOTS_KEPT, SnapshotCompressor, prune_snapshots
from domain import workflow
from domain.batch import (
    BatchPhase,
    CJBatch,
    CommandRejected,
    ComparisonRecord,
    OutcomeRejected,
    WaveRecord,
)
from domain.continuation import LEGACY_CONTEXT_FIELDS, ContinuationContext, DecisionKind
from domain.policy import BatchPolicy
from domain.quality import BatchQuality
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    Essay,
    EssayScore,
    FailureSource,
    FinalStatus,
    GenerationMode,
    Pair,
)

log = structlog.get_logger("cjledger.batches")

VALUE_DATACLASSES: tuple[type[Any], ...] = (
    Essay,
    Pair,
    BatchPolicy,
    ComparisonOutcome,
    ContinuationContext,
    EssayScore,
    ComparisonRecord,
    WaveRecord,
    BatchQuality,
)
VALUE_ENUMS: tuple[type[Enum], ...] = (
    BatchingMode,
    GenerationMode,
    DecisionKind,
    FinalStatus,
    FailureSource,
    BatchPhase,
)
FORMER_VALUE_NAMES: dict[str, type[Any]] = {
    # Moved to domain.continuation, where the decision lives (policy version 1 stored these).
    "domain.values:DecisionKind": DecisionKind,
    "domain.values:ContinuationContext": ContinuationContext,
}
RENAMED_VALUE_FIELDS: dict[type[Any], dict[str, str]] = {
    ContinuationContext: LEGACY_CONTEXT_FIELDS,
}


@dataclass(frozen=True)
class WaveClosing:
    """One wave closing in this process: which wave, what was decided, what it cost."""

    batch_id: UUID
    wave: int
    decision: str
    essays: int
    seconds: float


_ENDINGS = (DecisionKind.FINALIZE_SCORING, DecisionKind.FINALIZE_FAILURE)


class BatchNotFound(LookupError):
    code = "unknown_batch"


class BatchConflict(ValueError):
    """An external reference submitted again with different essays or options."""

    code = "batch_conflict"

    def __init__(self, batch_id: UUID, external_ref: str, differences: list[str]) -> None:
        super().__init__(
            f"external reference {external_ref!r} is already batch {batch_id} with different "
            f"{', '.join(differences)}; submit the same request again or use a new reference"
        )
        self.batch_id = batch_id


def submission_differences(
    batch: CJBatch,
    cmd: RegisterBatch,
    policy: BatchPolicy,
    essays: tuple[Essay, ...] | None = None,
) -> list[str]:
    """What the caller asks for differently from the batch already registered
    (``essays``: the submissions as the log would carry them, if they were submissions)."""
    asked = {
        "essays": tuple(cmd.essays) if essays is None else essays,
        "requested mode": cmd.requested_mode,
        "provider": cmd.provider,
        "model": cmd.model,
        "seed": cmd.seed,
        "budget": policy.max_pairs_cap,
    }
    registered = {
        "essays": batch.essays,
        "requested mode": batch.requested_mode,
        "provider": batch.provider,
        "model": batch.model,
        "seed": batch.seed,
        "budget": batch.policy.max_pairs_cap,
    }
    return [name for name, value in asked.items() if registered[name] != value]


class ConcurrencyExhausted(RuntimeError):
    """Optimistic-concurrency retries ran out; the caller should retry later."""


@dataclass(frozen=True)
class RegisterBatch:
    """Register a batch. A school's essays come as ``submissions`` (external id + text),
    which the application turns into opaque refs and keyed hashes, keeping texts, ids,
    instructions and rubric in the content store. ``essays`` (refs and hashes made
    elsewhere, no content) remains for synthetic batches and tests."""

    external_ref: str
    essays: tuple[Essay, ...] = ()
    provider: str = "simulated"
    model: str = "simulated-judge-1"
    requested_mode: BatchingMode | None = None
    budget_override: int | None = None
    seed: int = 0
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    allow_sparse: bool = False
    submissions: tuple[EssaySubmission, ...] = ()
    instructions: str = ""
    rubric: str = ""
    ref_seed: int | None = None
    """Draw the essay refs from this seed instead of the system's randomness, so that a
    synthetic batch (the demo) pairs the same way in every fresh store."""


@dataclass(frozen=True)
class ErasureResult:
    batch_id: UUID
    essay_ref: str
    answers_erased: int


OutcomeItem = tuple[UUID, ComparisonOutcome] | tuple[UUID, ComparisonOutcome, str | None]
"""An outcome for a batch, optionally with the provider's raw answer (kept in the content
store with the justification, never in the event)."""


class RecordStatus(Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class RecordResult:
    status: RecordStatus
    code: str | None = None
    reason: str | None = None


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


T = TypeVar("T")


class UnitOfWork:
    """The batches one command works on: loaded from the (cached) store, changed by the
    domain workflow, then saved together in one atomic append by ``commit``.

    Loading returns the cached batch itself, not a copy (see ``BatchApplication``); the
    command holds the batch locks meanwhile, and ``run_unit_of_work`` evicts whatever a
    failed command touched, so the cache only ever holds stored state.
    """

    def __init__(self, app: BatchApplication) -> None:
        self.app = app
        self._loaded: dict[UUID, CJBatch] = {}
        self._added: dict[UUID, CJBatch] = {}
        self._content: list[ContentWrite] = []

    @property
    def touched(self) -> list[UUID]:
        return [*self._loaded, *self._added]

    def load(self, batch_id: UUID) -> CJBatch | None:
        """The batch (``None`` if it does not exist), as the store holds it now."""
        if batch_id in self._loaded:
            return self._loaded[batch_id]
        try:
            batch: CJBatch = self.app.repository.get(batch_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return None
        self._loaded[batch_id] = batch
        return batch

    def load_many(self, batch_ids: Iterable[UUID]) -> None:
        """Bring every cached batch among ``batch_ids`` up to date with one query, so a
        consumer's group that touches thirty batches does not make thirty round trips
        (``load`` then returns them as they are). Needs a store that can select several
        aggregates' new events at once (PostgreSQL here); elsewhere ``load`` catches each
        batch up by itself."""
        cache = self.app.repository.cache
        select_after = getattr(self.app.recorder, "select_events_after", None)
        if cache is None or select_after is None:
            return
        cached: dict[UUID, CJBatch] = {}
        for batch_id in batch_ids:
            if batch_id not in self._loaded:
                with suppress(KeyError):
                    cached[batch_id] = cast(CJBatch, cache.get(batch_id))
        if not cached:
            return
        newer = select_after({batch_id: batch.version for batch_id, batch in cached.items()})
        mapper = self.app.mapper
        for batch_id, batch in cached.items():
            events = [mapper.to_domain_event(stored) for stored in newer.get(batch_id, ())]
            if events:  # the cached batch itself, changed in place (versions checked)
                project_aggregate(batch, events)
            self._loaded[batch_id] = batch

    def add(self, batch: CJBatch) -> None:
        """A batch created by this command."""
        self._added[batch.id] = batch

    def write_content(self, *writes: ContentWrite) -> None:
        """Content-store rows to write in the transaction of this unit's events."""
        self._content.extend(writes)

    def commit(self) -> None:
        """Save every changed batch in one append (``IntegrityError`` on a lost race)."""
        changed = [b for b in (*self._loaded.values(), *self._added.values()) if b.pending_events]
        if not changed:
            return
        recorded = [(b.mode, list(b.pending_events)) for b in changed]
        self.app.save(*changed, **{CONTENT_WRITES_KWARG: self._content})
        for mode, events in recorded:
            self.app.observer.events_recorded(mode, events)
        cache = self.app.repository.cache
        if cache is not None:
            for batch in self._added.values():
                cache.put(batch.id, batch)  # exactly what was just stored


class BatchApplication(Application[UUID]):
    """Registers, starts and advances CJ batches.

    Recording an outcome costs the same on a batch's 5,000th event as on its 50th, so the
    cost of loading a batch must not grow with its history:

    * **Aggregate cache** (env ``AGGREGATE_CACHE_MAXSIZE``, LRU, per process). A command
      works on the cached batch itself, fast-forwarded by whatever other processes appended
      since it was last seen. It does not work on a copy, as the library would by default:
      deep-copying a batch costs more than replaying it. Instead each batch has a lock (one
      of ``lock_stripes``) held from load to save, and a command that fails or loses an
      optimistic-concurrency race evicts the batches it touched, so the cache only ever
      holds stored state. ``get_batch`` still returns a private copy.
    * **Snapshots** (env ``SNAPSHOT_INTERVAL``; ``IS_SNAPSHOTTING_ENABLED=no`` turns them
      off). When a save moves a batch across a multiple of the interval, the batch just
      saved is stored as a snapshot. A process that has not cached a batch loads the latest
      snapshot and the events after it. Snapshots are compressed and only the latest
      ``SNAPSHOTS_KEPT`` of a batch are kept (``application.snapshot_store``).
      The library's own ``snapshotting_intervals`` would
      rebuild the batch from the store a second time for each snapshot, and would fail the
      command if the snapshot could not be written after its events were.
    """

    name = "CJBatches"
    env = {
        "MAPPER_TOPIC": get_topic(TupleRestoringMapper),
        "AGGREGATE_CACHE_MAXSIZE": "64",
        "SNAPSHOT_INTERVAL": "500",
    }
    is_snapshotting_enabled = True
    max_save_attempts = 10
    lock_stripes = 64

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        mode_setting: BatchingMode | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        super().__init__(env)
        self.observer: BatchObserver = observer or NoObserver()
        self.clock = clock
        self.mode_setting = mode_setting
        self.snapshot_interval = int(self.env.get("SNAPSHOT_INTERVAL") or 0)
        self._batch_locks = tuple(threading.RLock() for _ in range(self.lock_stripes))
        self.wave_closings: deque[WaveClosing] = deque(maxlen=1000)

    def construct_recorder(self) -> Any:
        """The library's in-memory factory ignores ``APPLICATION_RECORDER_TOPIC``; honour it
        there too, so every store can carry the content tables' recorder."""
        topic = self.env.get("APPLICATION_RECORDER_TOPIC")
        if topic and self.env.get("PERSISTENCE_MODULE", "eventsourcing.popo").endswith("popo"):
            return resolve_topic(topic)()
        return super().construct_recorder()

    @property
    def content(self) -> ContentStore | None:
        """The content store beside the events (``None`` for a store opened without it)."""
        content: ContentStore | None = getattr(self.recorder, "content", None)
        return content

    def require_content(self) -> ContentStore:
        content = self.content
        if content is None:
            raise ContentStoreUnavailable(
                "this event store was opened without its content tables "
                "(open it through infrastructure.persistence.store.eventsourcing_env)"
            )
        return content

    def external_ids(self, batch_id: UUID) -> ExternalIdResolver:
        """Resolves the batch's essay refs to the school's ids (``[erased]`` when gone)."""
        return ExternalIdResolver.for_batch(self.content, str(batch_id))

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_value_types(
            transcoder,
            VALUE_DATACLASSES,
            VALUE_ENUMS,
            former_names=FORMER_VALUE_NAMES,
            renamed_fields=RENAMED_VALUE_FIELDS,
        )

    def save(
        self,
        *objs: MutableOrImmutableAggregate[UUID] | DomainEventProtocol[UUID] | None,
        **kwargs: Any,
    ) -> list[Recording[UUID]]:
        """Append the pending events of ``objs`` in one transaction, then snapshot every
        batch whose version crossed a multiple of the snapshot interval."""
        batches = {obj.id: obj for obj in objs if isinstance(obj, CJBatch)}
        saved_version = {bid: b.version - len(b.pending_events) for bid, b in batches.items()}
        recordings = super().save(*objs, **kwargs)
        interval = self.snapshot_interval
        if self.snapshots is not None and interval > 0:
            for batch_id, batch in batches.items():
                if batch.version // interval > saved_version[batch_id] // interval:
                    self._store_snapshot(batch)
        return recordings

    def construct_snapshot_store(self) -> EventStore[UUID]:
        """Snapshots get a mapper of their own that compresses (see ``snapshot_store``)."""
        return self.factory.event_store(
            mapper=type(self.mapper)(
                transcoder=self.mapper.transcoder,
                compressor=SnapshotCompressor(),
                cipher=self.mapper.cipher,
            ),
            recorder=self.factory.aggregate_recorder(purpose="snapshots"),
        )

    def _store_snapshot(self, batch: CJBatch) -> None:
        assert self.snapshots is not None
        try:
            self.snapshots.put([CJBatch.Snapshot.take(batch)])
        except IntegrityError:
            return  # this very version was snapshotted already (by hand, or by another process)
        except Exception as error:  # the events are stored; a missing snapshot only costs time
            log.warning("snapshot_failed", batch_id=str(batch.id), error=str(error))
            return
        try:
            prune_snapshots(self.snapshots.recorder, batch.id, SNAPSHOTS_KEPT)
        except Exception as error:  # an old snapshot left behind only costs space
            log.warning("snapshot_prune_failed", batch_id=str(batch.id), error=str(error))

    # ------------------------------------------------------------------ commands

    def submit(self, cmd: RegisterBatch) -> UUID:
        """Register and start a batch in one append. Idempotent per external reference."""
        batch_id = CJBatch.create_id(cmd.external_ref)

        policy = cmd.policy.with_budget_override(cmd.budget_override)

        def register(uow: UnitOfWork) -> CJBatch | None:
            existing = uow.load(batch_id)
            if existing is not None:
                # Registered before (or by another process a moment ago): the same request
                # is a no-op; a different one under the same reference is refused.
                differences = submission_differences(
                    existing, cmd, policy, self._as_registered(existing, cmd)
                )
                if differences:
                    raise BatchConflict(batch_id, cmd.external_ref, differences)
                log.info("batch_already_registered", batch_id=str(batch_id))
                return None
            essays, writes = self._essays_and_content(batch_id, cmd)
            batch = CJBatch.register(
                external_ref=cmd.external_ref,
                essays=essays,
                policy=policy,
                requested_mode=cmd.requested_mode,
                provider=cmd.provider,
                model=cmd.model,
                seed=cmd.seed,
                allow_sparse=cmd.allow_sparse,
            )
            workflow.start_batch(batch, self.mode_setting, self.clock())
            uow.add(batch)
            uow.write_content(*writes)
            return batch

        batch = self.run_unit_of_work([batch_id], register)
        if batch is not None:
            log.info(
                "batch_submitted",
                batch_id=str(batch_id),
                external_ref=cmd.external_ref,
                mode=batch.mode.value if batch.mode else None,
            )
        return batch_id

    def _essays_and_content(
        self, batch_id: UUID, cmd: RegisterBatch
    ) -> tuple[tuple[Essay, ...], list[ContentWrite]]:
        """The essays the log will carry, and the content rows that go with them."""
        if not cmd.submissions:
            return tuple(cmd.essays), []
        if cmd.essays:
            raise CommandRejected("give a batch either submissions or essays, not both")
        seen: set[str] = set()
        for submission in cmd.submissions:
            if submission.external_id in seen:
                raise CommandRejected(f"essay id {submission.external_id!r} appears twice")
            seen.add(submission.external_id)
        self.require_content()
        secret = new_secret()
        rng = None if cmd.ref_seed is None else random.Random(f"{cmd.ref_seed}:essay-refs")
        refs = [new_ref(rng) for _ in cmd.submissions]
        essays = tuple(
            Essay(ref, keyed_hash(secret, s.text), s.is_anchor, s.known_grade)
            for ref, s in zip(refs, cmd.submissions, strict=True)
        )
        content = RegisterContent(
            batch_id=str(batch_id),
            secret=secret,
            instructions=cmd.instructions,
            rubric=cmd.rubric,
            essays=tuple(
                EssayContent(ref, s.external_id, s.text)
                for ref, s in zip(refs, cmd.submissions, strict=True)
            ),
        )
        return essays, [content]

    def _as_registered(self, batch: CJBatch, cmd: RegisterBatch) -> tuple[Essay, ...] | None:
        """A resubmission's essays as ``batch`` carries them: same school ids (in order),
        texts hashed with the batch's secret. ``None`` when ``cmd`` has no submissions."""
        if not cmd.submissions:
            return None
        content = self.require_content()
        secret = content.secret(str(batch.id))
        external = content.external_ids(str(batch.id)) or {}
        if secret is None or len(batch.essays) != len(cmd.submissions):
            return ()  # differs: the batch has no content, or another number of essays
        essays = []
        for registered, s in zip(batch.essays, cmd.submissions, strict=True):
            if external.get(registered.essay_id) != s.external_id:
                return ()  # another essay (or one erased since): not the same request
            essays.append(
                Essay(registered.essay_id, keyed_hash(secret, s.text), s.is_anchor, s.known_grade)
            )
        return tuple(essays)

    def erase_essay(self, batch_id: UUID, external_id: str, reason: str) -> ErasureResult:
        """Erase one essay: its text, its external id and every justification and raw
        answer of the comparisons it took part in leave the content store, and
        ``EssayErased`` is appended, all in one transaction. Decisions never read text,
        so the batch replays to the same decisions afterwards."""
        content = self.require_content()

        def erase(uow: UnitOfWork) -> ErasureResult:
            batch = uow.load(batch_id)
            if batch is None:
                raise BatchNotFound(f"batch {batch_id} does not exist")
            ref = ExternalIdResolver.for_batch(content, str(batch_id)).ref_for(external_id)
            if ref is None:
                raise UnknownEssay(
                    f"batch {batch_id} has no essay {external_id!r} "
                    "(never submitted, or already erased)"
                )
            batch.erase_essay(ref, reason, self.clock())
            uow.write_content(EraseEssay(str(batch_id), ref))
            answers = sum(
                1
                for cid in content.answers(str(batch_id))
                if cid in batch.comparisons and batch.comparisons[cid].pair.involves(ref)
            )
            return ErasureResult(batch_id, ref, answers)

        result = self.run_unit_of_work([batch_id], erase)
        log.info("essay_erased", batch_id=str(batch_id), essay_ref=result.essay_ref)
        return result

    def record_outcome(self, batch_id: UUID, outcome: ComparisonOutcome) -> bool:
        """Record one outcome. ``False`` for a duplicate; raises for a rejected outcome."""
        (result,) = self.record_outcomes([(batch_id, outcome)])
        if result.status is RecordStatus.REJECTED:
            if result.code == BatchNotFound.code:
                raise BatchNotFound(result.reason)
            raise OutcomeRejected(result.code or "rejected", result.reason or "rejected")
        return result.status is RecordStatus.RECORDED

    def record_outcomes(
        self,
        items: Sequence[OutcomeItem],
        raw_answers: Mapping[str, str | None] | None = None,
    ) -> list[RecordResult]:
        """Record many outcomes in one transaction; each gets its own result.

        A rejected outcome is reported alone and never blocks its neighbours. The judge's
        justification (and its raw answer, from ``raw_answers`` by comparison id) go to the
        content store in the same transaction as the ``ComparisonCompleted`` that refers
        to them; the event itself carries neither.
        """
        answers = raw_answers or {}
        by_batch: dict[UUID, list[int]] = {}
        for index, item in enumerate(items):
            batch_id = item[0]
            by_batch.setdefault(batch_id, []).append(index)

        def record(uow: UnitOfWork) -> list[RecordResult]:
            results: list[RecordResult | None] = [None] * len(items)
            now = self.clock()
            uow.load_many(by_batch)
            for batch_id, indexes in by_batch.items():
                batch = uow.load(batch_id)
                for i in indexes:
                    results[i] = (
                        RecordResult(
                            RecordStatus.REJECTED,
                            BatchNotFound.code,
                            f"batch {batch_id} does not exist",
                        )
                        if batch is None
                        else self._apply_outcome(uow, batch, items[i], answers, now)
                    )
            return [r for r in results if r is not None]

        return self.run_unit_of_work(by_batch, record)

    def close_overdue(self, now: datetime | None = None) -> int:
        """Close every overdue comparison of every open batch with a deadline failure."""
        now = now or self.clock()
        closed = 0
        for batch_id in self.open_batch_ids():

            def close(uow: UnitOfWork, batch_id: UUID = batch_id) -> list[str]:
                batch = uow.load(batch_id)
                return workflow.close_overdue(batch, now) if batch is not None else []

            try:
                ids = self.run_unit_of_work([batch_id], close)
            except Exception as error:  # one bad batch must not stop the sweep of the rest
                log.exception(
                    "deadline_sweep_failed",
                    batch_id=str(batch_id),
                    error=f"{type(error).__name__}: {error}",
                )
                continue
            if ids:
                closed += len(ids)
                log.info(
                    "comparisons_closed_by_deadline", batch_id=str(batch_id), comparisons=len(ids)
                )
        return closed

    def run_unit_of_work(self, batch_ids: Iterable[UUID], work: Callable[[UnitOfWork], T]) -> T:
        """Load → workflow → commit, retried on a lost optimistic-concurrency race.

        ``work`` loads batches through the unit of work, lets the domain change them and
        returns its result; every batch it loaded or added that has new events is then
        saved in **one** atomic append. If another process appended to one of them first,
        the save fails, the batches are evicted from the cache and ``work`` runs again on
        fresh state (where the outcome it applied is now a duplicate or a late arrival).
        """
        ids = list(batch_ids)
        for _attempt in range(self.max_save_attempts):
            with self._locked(ids):
                uow = UnitOfWork(self)
                try:
                    result = work(uow)
                    uow.commit()
                except IntegrityError:
                    self._evict([*ids, *uow.touched])
                    log.info("save_conflict_retrying", batches=len(ids))
                    continue
                except BaseException:
                    # What was loaded may hold unsaved changes: rebuild it from the store.
                    self._evict([*ids, *uow.touched])
                    raise
            return result
        raise ConcurrencyExhausted(f"gave up after {self.max_save_attempts} conflicting saves")

    # ------------------------------------------------------------------ queries

    def get_batch(self, batch_id: UUID, version: int | None = None) -> CJBatch:
        """A private copy of the batch (at ``version``): the caller may do anything with it."""
        try:
            with self._locked([batch_id]):  # never copy a cached batch a command is changing
                batch: CJBatch = self.repository.get(batch_id, version=version)
        except AggregateNotFoundError:
            raise BatchNotFound(f"batch {batch_id} does not exist") from None
        return batch

    def batch_events(self, batch_id: UUID) -> list[DomainEventProtocol[UUID]]:
        events = list(self.repository.event_store.get(batch_id))
        if not events:
            raise BatchNotFound(f"batch {batch_id} does not exist")
        return events

    def open_batch_ids(self) -> list[UUID]:
        """Batches registered and not yet finalized, read from the notification log."""
        registered: dict[UUID, None] = {}
        finalized: set[UUID] = set()
        topics = [get_topic(CJBatch.BatchRegistered), get_topic(CJBatch.Finalized)]
        for notification in self.iter_notifications(topics):
            if notification.topic == topics[0]:
                registered[notification.originator_id] = None
            else:
                finalized.add(notification.originator_id)
        return [b for b in registered if b not in finalized]

    def iter_notifications(
        self, topics: Sequence[str] = (), start: int = 0, page: int = 1000
    ) -> Iterable[Any]:
        return scan_log(self.recorder, topics, start, page)

    # ------------------------------------------------------------------ helpers

    @contextmanager
    def _locked(self, batch_ids: Iterable[UUID]) -> Iterator[None]:
        """Hold the locks of these batches (stripes taken in one global order: no deadlock)."""
        stripes = sorted({batch_id.int % len(self._batch_locks) for batch_id in batch_ids})
        with ExitStack() as stack:
            for stripe in stripes:
                stack.enter_context(self._batch_locks[stripe])
            yield

    def _evict(self, batch_ids: Iterable[UUID]) -> None:
        cache = self.repository.cache
        if cache is None:
            return
        for batch_id in batch_ids:
            with suppress(KeyError):
                cache.get(batch_id, evict=True)

    def _apply_outcome(
        self,
        uow: UnitOfWork,
        batch: CJBatch,
        item: OutcomeItem,
        raw_answers: Mapping[str, str | None],
        now: datetime,
    ) -> RecordResult:
        """Record one outcome with its prose moved out of the event into the content store
        (dropped, never stored, when it concerns an essay erased meanwhile). The raw answer
        is the one that came with this outcome (a duplicate's never replaces it), else the
        one ``raw_answers`` holds for its comparison."""
        outcome = item[1]
        raw_answer = item[2] if len(item) > 2 else None
        if raw_answer is None:
            raw_answer = raw_answers.get(outcome.comparison_id)
        justification = outcome.success.justification if outcome.success else ""
        if outcome.success is not None and justification:
            outcome = replace(outcome, success=replace(outcome.success, justification=""))
        keep = bool(justification or raw_answer) and self.content is not None
        keep = keep and not batch.pair_involves_erased(outcome.comparison_id)
        ref = outcome.comparison_id if keep else None
        decisions_before = batch.decision_count
        started = time.perf_counter()
        try:
            recorded = workflow.record_outcome(batch, outcome, now, justification_ref=ref)
        except OutcomeRejected as rejected:
            return RecordResult(RecordStatus.REJECTED, rejected.code, str(rejected))
        if batch.decision_count > decisions_before:
            self._wave_closed(batch, time.perf_counter() - started)
        if not recorded:
            return RecordResult(RecordStatus.DUPLICATE)
        if ref is not None:
            pair = batch.comparisons[outcome.comparison_id].pair
            uow.write_content(
                StoreAnswer(
                    str(batch.id), ref, pair.essay_a, pair.essay_b, justification, raw_answer
                )
            )
        return RecordResult(RecordStatus.RECORDED)

    def _wave_closed(self, batch: CJBatch, seconds: float) -> None:
        """Note what closing a wave cost (fit, decide, plan the next wave; before the save).

        Kept for the last ``wave_closings.maxlen`` closings in this process (the demo lists
        them) and logged: the one cost that grows with a batch's size.
        """
        closing = WaveClosing(
            batch_id=batch.id,
            wave=len(batch.waves) - (0 if batch.last_decision in _ENDINGS else 1),
            decision=batch.last_decision.value if batch.last_decision else "",
            essays=len(batch.essays),
            seconds=seconds,
        )
        self.wave_closings.append(closing)
        log.info(
            "wave_closed",
            batch_id=str(batch.id),
            wave=closing.wave,
            decision=closing.decision,
            essays=closing.essays,
            seconds=round(seconds, 4),
        )
