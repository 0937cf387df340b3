"""The outbox dispatcher: comparison requests leave a batch only through its stored events.

It follows the store's notification log, turns every ``ComparisonsRequested`` event into
one ``ComparisonRequest`` per pair, hands them to a transport, and only then moves its
remembered position. A crash between the two re-sends the wave (at-least-once, and LPS and
``record_outcome`` are idempotent per comparison id); nothing is ever skipped, and no code
path sends a request that was not first stored as an event.

Events name essays by opaque refs only. As a wave leaves, the dispatcher copies the two
texts, the instructions and the rubric from the content store into each request, so LPS
needs no database. A request whose essay was erased before it left is not sent: it is
answered at once with the failure ``content_erased``, recorded like any other outcome.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.utils import get_topic

from application.batches import BatchApplication
from application.content import BatchTexts, ContentStore
from application.notification_log import follow_log
from application.ports import ComparisonRequest, PositionStore, RequestTransport
from domain.batch import CJBatch
from domain.values import ComparisonOutcome, FailureDetails, FailureSource

CONTENT_ERASED = "content_erased"

log = structlog.get_logger("cjledger.dispatcher")

BATCH_TEXTS_KEPT = 1024
"""Batches whose instructions and rubric the dispatcher keeps (a few KB each)."""

REQUESTED_TOPIC = get_topic(CJBatch.ComparisonsRequested)


def wave_correlation_id(event: Any) -> str:
    """What ties a wave's requests, outcomes and log lines together: ``<batch>/wave-<n>``."""
    return f"{event.originator_id}/wave-{event.wave_number}"


def requests_from_event(event: Any) -> list[ComparisonRequest]:
    """One request per pair of a ``ComparisonsRequested`` event; pure and deterministic."""
    batch_id = str(event.originator_id)
    correlation_id = wave_correlation_id(event)
    return [
        ComparisonRequest(
            comparison_id=pair.comparison_id,
            batch_id=batch_id,
            wave_number=event.wave_number,
            essay_a=pair.essay_a,
            essay_b=pair.essay_b,
            provider=event.provider,
            model=event.model,
            batching_mode=event.batching_mode,
            preferred_bundle_size=event.preferred_bundle_size,
            requested_at=event.requested_at,
            deadline_at=event.deadline_at,
            correlation_id=correlation_id,
        )
        for pair in event.pairs
    ]


class OutboxDispatcher:
    def __init__(
        self,
        app: BatchApplication,
        transport: RequestTransport,
        positions: PositionStore,
        name: str = "outbox",
        page_size: int = 200,
    ) -> None:
        self.app = app
        self.transport = transport
        self.positions = positions
        self.name = name
        self.page_size = page_size
        # a batch's instructions and rubric (or their absence) are stored with its
        # registration, in the same transaction, and never change: read once per batch
        self._batch_texts: dict[str, BatchTexts | None] = {}

    @property
    def position(self) -> int:
        return self.positions.get(self.name)

    def pump(self) -> int:
        """Send every stored wave not yet sent; return how many requests went out."""
        sent = 0
        pages = follow_log(
            self.app.recorder,
            lambda: self.positions.get(self.name),
            topics=[REQUESTED_TOPIC],
            page_size=self.page_size,
        )
        for _, notifications in pages:
            # every wave of the page (of any number of batches) goes out in one send,
            # confirmed together; then the position moves past the whole page
            waves = []
            for notification in notifications:
                event = self.app.mapper.to_domain_event(notification)
                assert isinstance(event, CJBatch.ComparisonsRequested)
                requests, erased = self.with_content(requests_from_event(event))
                waves.append((notification.id, event, requests, erased))
            outgoing = [request for _, _, requests, _ in waves for request in requests]
            if outgoing:
                self.transport.send(outgoing)
            for _, event, _, erased in waves:
                if erased:
                    self.answer_erased(event.originator_id, erased)
            if waves:
                self.positions.set(self.name, waves[-1][0])
            sent += len(outgoing)
            for position, event, requests, erased in waves:
                log.info(
                    "wave_dispatched",
                    batch_id=str(event.originator_id),
                    correlation_id=wave_correlation_id(event),
                    wave=event.wave_number,
                    requests=len(requests),
                    content_erased=len(erased),
                    position=position,
                )
        return sent

    def with_content(
        self, requests: list[ComparisonRequest]
    ) -> tuple[list[ComparisonRequest], list[ComparisonRequest]]:
        """The requests with their texts filled in, and those whose text is gone.

        A batch registered without content (synthetic essays) is sent as it is.
        """
        content = self.app.content
        if not requests or content is None:
            return requests, []
        batch_id = requests[0].batch_id
        texts = self._texts(content, batch_id)
        if texts is None:
            return requests, []
        refs = sorted({r.essay_a for r in requests} | {r.essay_b for r in requests})
        essays = content.essay_texts(batch_id, refs)
        ready, erased = [], []
        for request in requests:
            if request.essay_a in essays and request.essay_b in essays:
                ready.append(
                    replace(
                        request,
                        essay_a_text=essays[request.essay_a],
                        essay_b_text=essays[request.essay_b],
                        instructions=texts.instructions,
                        rubric=texts.rubric,
                    )
                )
            else:
                erased.append(request)
        return ready, erased

    def _texts(self, content: ContentStore, batch_id: str) -> BatchTexts | None:
        if batch_id in self._batch_texts:
            return self._batch_texts[batch_id]
        texts = content.batch_texts(batch_id)
        if len(self._batch_texts) >= BATCH_TEXTS_KEPT:
            del self._batch_texts[next(iter(self._batch_texts))]  # the first kept
        self._batch_texts[batch_id] = texts
        return texts

    def answer_erased(self, batch_id: UUID, requests: list[ComparisonRequest]) -> None:
        outcomes = [
            (
                batch_id,
                ComparisonOutcome(
                    comparison_id=r.comparison_id,
                    failure=FailureDetails(
                        error_code=CONTENT_ERASED,
                        message="an essay of this pair was erased before the request was sent",
                        retryable=False,
                        source=FailureSource.DISPATCHER,
                    ),
                ),
            )
            for r in requests
        ]
        self.app.record_outcomes(outcomes)

    def backlog(self) -> int:
        """Notifications of any kind stored after the dispatcher's position."""
        head = self.app.recorder.max_notification_id() or 0
        return max(0, head - self.position)


class InMemoryPositionStore:
    """Positions in a dict: for tests and the POPO store."""

    def __init__(self) -> None:
        self._positions: dict[str, int] = {}

    def get(self, name: str) -> int:
        return self._positions.get(name, 0)

    def set(self, name: str, position: int) -> None:
        self._positions[name] = max(position, self._positions.get(name, 0))
