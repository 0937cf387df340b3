"""The dispatcher reads a batch's instructions and rubric once, not once per wave."""

from __future__ import annotations

from collections import Counter
from typing import Any

from application.batches import BatchApplication
from application.content import BatchTexts
from application.dispatcher import BATCH_TEXTS_KEPT, OutboxDispatcher
from infrastructure.embedded import InProcessTransport, run_until_idle
from infrastructure.persistence.positions import position_store_for
from tests.conftest import AppFactory
from tests.unit.test_content_store import QuotingJudge, register


class CountingContent:
    """The application's real content store, counting ``batch_texts`` reads per batch."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.batch_text_reads: Counter[str] = Counter()

    def batch_texts(self, batch_id: str) -> BatchTexts | None:
        self.batch_text_reads[batch_id] += 1
        return self.store.batch_texts(batch_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def drive(app: BatchApplication, dispatcher: OutboxDispatcher, judge: QuotingJudge) -> None:
    run_until_idle(app, dispatcher, dispatcher.transport, judge)  # type: ignore[arg-type]


def test_every_wave_carries_the_texts_read_once_per_batch(make_app: AppFactory) -> None:
    app = make_app()
    batch_ids = [register(app, ref=f"class-{i}") for i in range(2)]
    counting = CountingContent(app.content)
    app.recorder.content = counting  # type: ignore[attr-defined]  # what app.content reads
    judge = QuotingJudge()
    drive(app, OutboxDispatcher(app, InProcessTransport(), position_store_for(app)), judge)

    waves = {(r.batch_id, r.wave_number) for r in judge.requests}
    assert all(app.get_batch(b).is_finalized for b in batch_ids)
    assert {b for b, _ in waves} == {str(b) for b in batch_ids}
    assert len(waves) >= 4  # several waves of each batch went out
    assert all(
        (r.instructions, r.rubric) == ("Write about the sea.", "Imagery; structure; voice.")
        for r in judge.requests
    )
    assert counting.batch_text_reads == Counter({str(b): 1 for b in batch_ids})


def test_the_texts_kept_are_bounded(make_app: AppFactory) -> None:
    app = make_app()
    batch_id = str(register(app))
    dispatcher = OutboxDispatcher(app, InProcessTransport(), position_store_for(app))
    counting = CountingContent(app.content)
    for i in range(BATCH_TEXTS_KEPT + 5):
        dispatcher._texts(counting, f"no-such-batch-{i}")
    assert dispatcher._texts(counting, batch_id) == BatchTexts(
        "Write about the sea.", "Imagery; structure; voice."
    )
    assert len(dispatcher._batch_texts) == BATCH_TEXTS_KEPT
    assert "no-such-batch-0" not in dispatcher._batch_texts  # the first kept went first
