"""Following the store's notification log: the one paging loop every follower uses.

The outbox dispatcher, the read-model runner and the application's own scans all read
the log the same way: ask where they are, read the next page after that position, handle
it, ask again. Re-reading the position before every page (instead of remembering where
the last page ended) is what lets a follower share its position with other processes:
whatever they committed meanwhile is never read twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

Position = Callable[[], int]


def follow_log(
    recorder: Any,
    position: Position,
    *,
    topics: Sequence[str] = (),
    page_size: int = 500,
    stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, list[Any]]]:
    """Yield ``(start, page)``: the notifications after ``position()``, a page at a time,
    until the log has nothing after the position (or ``stop()`` says so)."""
    while stop is None or not stop():
        start = position()
        page = recorder.select_notifications(
            start=start, limit=page_size, topics=topics, inclusive_of_start=False
        )
        if not page:
            return
        yield start, list(page)


def scan_log(
    recorder: Any, topics: Sequence[str] = (), start: int = 0, page_size: int = 1000
) -> Iterator[Any]:
    """Every notification after ``start`` (of ``topics``), once, in log order."""
    last = start
    # the position is read before each page, so the lambda must see the latest ``last``
    for _, page in follow_log(recorder, lambda: last, topics=topics, page_size=page_size):  # noqa: B023
        yield from page
        last = page[-1].id
