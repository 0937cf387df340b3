"""The CJ batch aggregate and its events.

Commands (plain methods) validate and then trigger an event; the ``@event`` bodies only
apply state, because they run again on every replay. The workflow that decides what
happens after a wave lives in ``domain.workflow``; this module only knows how a batch
changes when each event happens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.algorithms import (
    DECISION_ALGORITHM_VERSION,
    PAIRING_ALGORITHM_VERSION,
    SCORING_ALGORITHM_VERSION,
    UNSTAMPED,
)
from domain.continuation import ContinuationContext, DecisionKind, GuardedDecision
from domain.pairing import PairRecord, PairStatus
from domain.policy import BatchPolicy, as_recorded
from domain.quality import BatchQuality, Verdict
from domain.values import (
    BatchingMode,
    ComparisonOutcome,
    Essay,
    EssayScore,
    FinalStatus,
    GenerationMode,
    Pair,
    essay_id_problem,
)

BATCH_NAMESPACE = UUID("6f1c2a52-6a0e-4c1b-9a43-2f4e8d0c7b11")


class OutcomeRejected(ValueError):
    """An outcome that cannot belong to this batch. Nothing is recorded."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class CommandRejected(ValueError):
    """A command that does not fit the batch's current state."""


class SparseBudget(CommandRejected):
    """The budget cannot give every essay ``min_appearances`` comparisons."""

    def __init__(self, budget: int, essays: int, appearances: int, smallest: int) -> None:
        super().__init__(
            f"a budget of {budget} comparisons cannot give each of the {essays} essays "
            f"{appearances} comparisons; the smallest budget that can is {smallest}"
        )
        self.smallest = smallest


class BatchPhase(Enum):
    REGISTERED = "registered"
    RUNNING = "running"
    FINALIZED = "finalized"


@dataclass(frozen=True)
class ComparisonRecord:
    """What the batch knows about one requested comparison."""

    pair: Pair
    wave_number: int
    generation_mode: GenerationMode
    requested_at: datetime
    deadline_at: datetime
    outcome: ComparisonOutcome | None = None


@dataclass(frozen=True)
class WaveRecord:
    number: int
    generation_mode: GenerationMode
    comparison_ids: tuple[str, ...]


class CJBatch(Aggregate):
    """One comparative-judgement batch, from registration to its final scores."""

    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Snapshot state of a batch registered before policy version 2."""
        state["policy"] = as_recorded(state["policy"])
        state.setdefault("sparse", False)
        state.setdefault("quality", None)

    erased_essays: tuple[str, ...] = ()
    """Refs of erased essays (a class default: batches stored before erasure existed,
    and their snapshots, have none)."""

    class BatchRegistered(Aggregate.Created):
        class_version = 2
        external_ref: str
        essays: tuple[Essay, ...]
        policy: BatchPolicy
        requested_mode: BatchingMode | None
        provider: str
        model: str
        seed: int
        sparse: bool

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """v1 had no sparse batches; its policy lacks the fields version 2 added."""
            state["policy"] = as_recorded(state["policy"])
            state["sparse"] = False

    class BatchingModeSet(Aggregate.Event):
        class_version = 1
        mode: BatchingMode
        source: str
        preferred_bundle_size: int

    class ComparisonsRequested(Aggregate.Event):
        """Version 2 stamps ``algorithm_version`` (the pairing algorithm's, see
        ``domain.algorithms``); version 1 events read as ``UNSTAMPED``."""

        class_version = 2
        wave_number: int
        generation_mode: GenerationMode
        pairs: tuple[Pair, ...]
        batching_mode: BatchingMode
        preferred_bundle_size: int
        provider: str
        model: str
        requested_at: datetime
        deadline_at: datetime
        algorithm_version: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["algorithm_version"] = UNSTAMPED

    class ComparisonCompleted(Aggregate.Event):
        """Version 2 keeps the judge's prose out of the log: the outcome's justification
        is empty and ``justification_ref`` names the content-store row holding it and the
        raw answer (``None`` when there was nothing to keep). Version 1 events keep the
        justification text they were stored with."""

        class_version = 2
        outcome: ComparisonOutcome
        justification_ref: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["justification_ref"] = None

    class EssayErased(Aggregate.Event):
        """An essay's text, external id and the answers about it were deleted from the
        content store. The ref and hash stay in the log, so every decision replays."""

        class_version = 1
        essay_ref: str
        reason: str
        erased_at: datetime

    class ContinuationDecided(Aggregate.Event):
        """Version 2 stamps ``algorithm_version`` (the decision algorithm's, see
        ``domain.algorithms``); version 1 events read as ``UNSTAMPED``."""

        class_version = 2
        decision: DecisionKind
        reason: str
        context: ContinuationContext
        raw_decision: DecisionKind
        raw_reason: str
        guard: str | None
        policy_version: int
        algorithm_version: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["algorithm_version"] = UNSTAMPED

    class Finalized(Aggregate.Event):
        """Version 3 stamps ``algorithm_version`` (the scoring algorithm's, see
        ``domain.algorithms``); earlier events read as ``UNSTAMPED``."""

        class_version = 3
        status: FinalStatus
        scores: tuple[EssayScore, ...]
        reliability: float | None
        failure_reason: str | None
        failure_details: str | None
        quality: BatchQuality | None
        algorithm_version: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """v1 recorded no quality figures."""
            state["quality"] = None

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["algorithm_version"] = UNSTAMPED

    # ------------------------------------------------------------------ registration

    @staticmethod
    def create_id(external_ref: str, **_: Any) -> UUID:
        """Deterministic: registering the same external reference twice names one batch."""
        return uuid5(BATCH_NAMESPACE, external_ref)

    @classmethod
    def register(
        cls,
        *,
        external_ref: str,
        essays: tuple[Essay, ...],
        policy: BatchPolicy,
        requested_mode: BatchingMode | None,
        provider: str,
        model: str,
        seed: int,
        allow_sparse: bool = False,
    ) -> CJBatch:
        """Register a batch. Refuses empty references, bad or repeated essay ids, and a
        budget too small for every essay to get ``min_appearances`` comparisons unless
        ``allow_sparse`` (the batch is then flagged sparse in its results)."""
        if not external_ref.strip():
            raise CommandRejected("external_ref must not be empty")
        ids = [e.essay_id for e in essays]
        for essay_id in ids:
            problem = essay_id_problem(essay_id)
            if problem is not None:
                raise CommandRejected(problem)
        if len(set(ids)) != len(ids):
            raise CommandRejected("essay ids must be unique within a batch")
        smallest = policy.smallest_budget(len(ids))
        sparse = policy.max_pairs_cap < smallest
        if sparse and not allow_sparse:
            raise SparseBudget(policy.max_pairs_cap, len(ids), policy.min_appearances, smallest)
        return cls._create(
            cls.BatchRegistered,
            external_ref=external_ref,
            essays=tuple(essays),
            policy=policy,
            requested_mode=requested_mode,
            provider=provider,
            model=model,
            seed=seed,
            sparse=sparse,
        )

    @event(BatchRegistered)
    def __init__(
        self,
        external_ref: str,
        essays: tuple[Essay, ...],
        policy: BatchPolicy,
        requested_mode: BatchingMode | None,
        provider: str,
        model: str,
        seed: int,
        sparse: bool,
    ) -> None:
        self.external_ref = external_ref
        self.essays = tuple(essays)
        self.policy = policy
        self.requested_mode = requested_mode
        self.provider = provider
        self.model = model
        self.seed = seed
        self.sparse = sparse
        self.phase = BatchPhase.REGISTERED
        self.mode: BatchingMode | None = None
        self.mode_source: str | None = None
        self.preferred_bundle_size = 1
        self.comparisons: dict[str, ComparisonRecord] = {}
        self.waves: list[WaveRecord] = []
        self.open_comparisons = 0
        self.successes = 0
        self.failures = 0
        self.resampling_passes_used = 0
        self.decision_count = 0
        self.last_decision: DecisionKind | None = None
        self.last_scores: dict[str, float] | None = None
        self.final_status: FinalStatus | None = None
        self.final_scores: tuple[EssayScore, ...] = ()
        self.reliability: float | None = None
        self.failure_reason: str | None = None
        self.quality: BatchQuality | None = None

    # ------------------------------------------------------------------ commands

    def set_batching_mode(
        self, mode: BatchingMode, source: str, preferred_bundle_size: int
    ) -> None:
        if self.phase is not BatchPhase.REGISTERED or self.mode is not None:
            raise CommandRejected("the batching mode is set once, before the first wave")
        self._mode_set(mode=mode, source=source, preferred_bundle_size=preferred_bundle_size)

    def request_comparisons(
        self,
        wave_number: int,
        generation_mode: GenerationMode,
        pairs: tuple[Pair, ...],
        preferred_bundle_size: int,
        now: datetime,
    ) -> None:
        if self.phase is BatchPhase.FINALIZED:
            raise CommandRejected("a finalized batch asks for nothing more")
        if self.mode is None:
            raise CommandRejected("set the batching mode before the first wave")
        if self.open_comparisons:
            raise CommandRejected("the previous wave is still open")
        if wave_number != len(self.waves) + 1:
            raise CommandRejected(f"expected wave {len(self.waves) + 1}, got {wave_number}")
        if not pairs:
            raise CommandRejected("a wave holds at least one pair")
        essay_ids = self.essay_ids
        for pair in pairs:
            if pair.comparison_id in self.comparisons:
                raise CommandRejected(f"comparison {pair.comparison_id} was already requested")
            if pair.essay_a == pair.essay_b or not {pair.essay_a, pair.essay_b} <= essay_ids:
                raise CommandRejected(f"pair {pair.comparison_id} names unknown or equal essays")
        self._comparisons_requested(
            wave_number=wave_number,
            generation_mode=generation_mode,
            pairs=tuple(pairs),
            batching_mode=self.mode,
            preferred_bundle_size=preferred_bundle_size,
            provider=self.provider,
            model=self.model,
            requested_at=now,
            deadline_at=now + timedelta(seconds=self.policy.deadline_seconds_for(self.mode)),
            algorithm_version=PAIRING_ALGORITHM_VERSION,
        )

    def check_outcome(self, outcome: ComparisonOutcome) -> bool:
        """Validate an outcome; ``False`` means it is a harmless duplicate."""
        record = self.comparisons.get(outcome.comparison_id)
        if record is None:
            raise OutcomeRejected(
                "unknown_comparison",
                f"comparison {outcome.comparison_id} was never requested by batch {self.id}",
            )
        if outcome.success is not None and not record.pair.involves(outcome.success.winner_id):
            raise OutcomeRejected(
                "winner_not_in_pair",
                f"winner {outcome.success.winner_id} is neither {record.pair.essay_a} nor "
                f"{record.pair.essay_b} (comparison {outcome.comparison_id})",
            )
        if outcome.success is not None and not 1 <= outcome.success.confidence <= 5:
            raise OutcomeRejected(
                "confidence_out_of_range",
                f"confidence {outcome.success.confidence} is outside 1..5",
            )
        return record.outcome is None

    def record_outcome(
        self, outcome: ComparisonOutcome, justification_ref: str | None = None
    ) -> bool:
        """Record the first outcome of a comparison; later duplicates change nothing."""
        if not self.check_outcome(outcome):
            return False
        self._comparison_completed(outcome=outcome, justification_ref=justification_ref)
        return True

    def erase_essay(self, essay_ref: str, reason: str, now: datetime) -> None:
        if essay_ref not in self.essay_ids:
            raise CommandRejected(f"essay {essay_ref} is not part of batch {self.id}")
        if essay_ref in self.erased_essays:
            raise CommandRejected(f"essay {essay_ref} was already erased")
        if not reason.strip():
            raise CommandRejected("an erasure needs a reason")
        self._essay_erased(essay_ref=essay_ref, reason=reason, erased_at=now)

    def pair_involves_erased(self, comparison_id: str) -> bool:
        record = self.comparisons.get(comparison_id)
        return record is not None and any(record.pair.involves(ref) for ref in self.erased_essays)

    def record_decision(self, decision: GuardedDecision, context: ContinuationContext) -> None:
        """Record what was decided after a wave; reasons and guard are stored as their codes."""
        if self.phase is BatchPhase.FINALIZED or self.mode is None or self.open_comparisons:
            raise CommandRejected("decisions are taken when a wave has closed")
        if decision.final.kind is DecisionKind.WAIT:
            raise CommandRejected("waiting is not a decision to record")
        self._continuation_decided(
            decision=decision.final.kind,
            reason=decision.final.reason.value,
            context=context,
            raw_decision=decision.raw.kind,
            raw_reason=decision.raw.reason.value,
            guard=None if decision.guard is None else decision.guard.value,
            policy_version=self.policy.policy_version,
            algorithm_version=DECISION_ALGORITHM_VERSION,
        )

    def finalize(
        self,
        status: FinalStatus,
        scores: tuple[EssayScore, ...] = (),
        reliability: float | None = None,
        failure_reason: str | None = None,
        failure_details: str | None = None,
        quality: BatchQuality | None = None,
    ) -> None:
        if self.phase is BatchPhase.FINALIZED:
            raise CommandRejected("the batch is already finalized")
        self._finalized(
            status=status,
            scores=tuple(scores),
            reliability=reliability,
            failure_reason=failure_reason,
            failure_details=failure_details,
            quality=quality,
            algorithm_version=SCORING_ALGORITHM_VERSION,
        )

    # ------------------------------------------------------------------ appliers

    @event(BatchingModeSet)
    def _mode_set(self, mode: BatchingMode, source: str, preferred_bundle_size: int) -> None:
        self.mode = mode
        self.mode_source = source
        self.preferred_bundle_size = preferred_bundle_size

    @event(ComparisonsRequested)
    def _comparisons_requested(
        self,
        wave_number: int,
        generation_mode: GenerationMode,
        pairs: tuple[Pair, ...],
        batching_mode: BatchingMode,
        preferred_bundle_size: int,
        provider: str,
        model: str,
        requested_at: datetime,
        deadline_at: datetime,
        algorithm_version: int,
    ) -> None:
        for pair in pairs:
            self.comparisons[pair.comparison_id] = ComparisonRecord(
                pair=pair,
                wave_number=wave_number,
                generation_mode=generation_mode,
                requested_at=requested_at,
                deadline_at=deadline_at,
            )
        self.waves.append(
            WaveRecord(wave_number, generation_mode, tuple(p.comparison_id for p in pairs))
        )
        self.open_comparisons = len(pairs)
        if generation_mode is GenerationMode.RESAMPLING:
            self.resampling_passes_used += 1
        self.phase = BatchPhase.RUNNING

    @event(EssayErased)
    def _essay_erased(self, essay_ref: str, reason: str, erased_at: datetime) -> None:
        self.erased_essays = (*self.erased_essays, essay_ref)

    @event(ComparisonCompleted)
    def _comparison_completed(
        self, outcome: ComparisonOutcome, justification_ref: str | None
    ) -> None:
        record = self.comparisons[outcome.comparison_id]
        self.comparisons[outcome.comparison_id] = replace(record, outcome=outcome)
        if record.wave_number == len(self.waves):
            self.open_comparisons -= 1
        if outcome.success is not None:
            self.successes += 1
        else:
            self.failures += 1

    @event(ContinuationDecided)
    def _continuation_decided(
        self,
        decision: DecisionKind,
        reason: str,
        context: ContinuationContext,
        raw_decision: DecisionKind,
        raw_reason: str,
        guard: str | None,
        policy_version: int,
        algorithm_version: int,
    ) -> None:
        self.decision_count += 1
        self.last_decision = decision
        self.last_scores = {p.essay_id: p.score for p in context.scores}

    @event(Finalized)
    def _finalized(
        self,
        status: FinalStatus,
        scores: tuple[EssayScore, ...],
        reliability: float | None,
        failure_reason: str | None,
        failure_details: str | None,
        quality: BatchQuality | None,
        algorithm_version: int,
    ) -> None:
        self.phase = BatchPhase.FINALIZED
        self.final_status = status
        self.final_scores = tuple(scores)
        self.reliability = reliability
        self.quality = quality
        self.failure_reason = failure_reason

    # ------------------------------------------------------------------ queries

    @property
    def essay_ids(self) -> frozenset[str]:
        return frozenset(e.essay_id for e in self.essays)

    @property
    def is_finalized(self) -> bool:
        return self.phase is BatchPhase.FINALIZED

    @property
    def wave_is_closed(self) -> bool:
        return self.phase is BatchPhase.RUNNING and self.open_comparisons == 0

    @property
    def pairs_submitted(self) -> int:
        return len(self.comparisons)

    @property
    def outcomes(self) -> int:
        """Successes plus failures: every comparison that has an answer."""
        return self.successes + self.failures

    def pair_history(self) -> list[PairRecord]:
        pending, succeeded, failed = PairStatus.PENDING, PairStatus.SUCCEEDED, PairStatus.FAILED
        history = []
        for record in self.comparisons.values():
            outcome = record.outcome
            if outcome is None:
                status = pending
            elif outcome.success is not None:
                status = succeeded
            else:
                status = failed
            pair = record.pair
            history.append(PairRecord(pair.essay_a, pair.essay_b, status))
        return history

    def verdicts(self) -> list[Verdict]:
        """Every successful comparison as shown (A first) with its winner, in request order."""
        verdicts = []
        for record in self.comparisons.values():
            outcome = record.outcome
            if outcome is not None and outcome.success is not None:
                pair = record.pair
                verdicts.append(Verdict(pair.essay_a, pair.essay_b, outcome.success.winner_id))
        return verdicts

    def successes_in_last_wave(self) -> int:
        if not self.waves:
            return 0
        return sum(
            1
            for cid in self.waves[-1].comparison_ids
            if (outcome := self.comparisons[cid].outcome) is not None
            and outcome.success is not None
        )

    def successful_results(self) -> list[tuple[str, str]]:
        """(winner, loser) of every successful comparison, in request order."""
        results = []
        for record in self.comparisons.values():
            outcome = record.outcome
            if outcome is not None and (success := outcome.success) is not None:
                pair = record.pair
                winner = success.winner_id
                results.append((winner, pair.essay_b if winner == pair.essay_a else pair.essay_a))
        return results

    def overdue_comparisons(self, now: datetime) -> list[str]:
        return [
            cid
            for cid, record in self.comparisons.items()
            if record.outcome is None and now >= record.deadline_at
        ]
