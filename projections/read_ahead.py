"""Reading the log a page ahead of the writes: page n+1 is read while page n is written.

Catching up is a loop of read a page, decode it, write its rows. On PostgreSQL reading a
page is mostly a wait for the server, which the writing thread can spend on its own work.
``Pages`` overlaps them: once a page comes back full (more of the log is waiting), a
thread of its own, on a connection of its own from the store's pool, reads the following
pages, one page ahead of the caller. A short page means the head of the log is near: a
runner that follows the log (small pages, inside ``serve``) never starts the thread and
reads exactly as before.

The reader only reads; each page is decoded (``prepare``) in the caller's thread, as it is
taken. Decoding in the reader too was measured slower: two threads computing under one GIL
cost more CPU than the overlap saved (on a quiet machine, 200,000 events: ~20,000/s
against ~24,500/s reading only, and ~23,000/s with no reader at all).

Reading ahead changes nothing about what is written or when: pages are handed over in
log order, each page's events are written by the caller in its own transaction, and a
caller that stops early (a stale page, a failed page, ``stop()``) closes the reader and
throws away whatever it read ahead; the next pass reads again from the committed
position.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["Page", "Pages"]

READER_THREAD = "projections-read-ahead"

SWITCH_INTERVAL = 0.0005
"""How long a thread may hold the GIL while another waits for it, while a reader runs.

The writing thread gives up the GIL at every exchange with the server (psycopg waits for
the socket without it, even to send a pipelined statement: some twenty times a page). When
the reader holds it then (turning a page's rows into tuples), the writer waits for it to
come back, up to the interpreter's switch interval (5 ms by default) each time: longer
than the server took. A shorter interval, only while a reader runs, keeps those waits
short."""

_switching = threading.Lock()
_readers = 0
_interval_before = 0.0


def _reader_started() -> None:
    global _readers, _interval_before
    with _switching:
        if _readers == 0:
            _interval_before = sys.getswitchinterval()
            sys.setswitchinterval(min(SWITCH_INTERVAL, _interval_before))
        _readers += 1


def _reader_stopped() -> None:
    global _readers
    with _switching:
        _readers -= 1
        if _readers == 0:
            sys.setswitchinterval(_interval_before)


@dataclass(frozen=True)
class Page:
    """A page of the log and what ``prepare`` made of it, or the error it raised (the page
    is then the caller's to fail, as if writing it had failed)."""

    notifications: list[Any]
    prepared: Any = None
    error: Exception | None = None


class Pages:
    """The pages of the log after ``start``, in order, until one comes back empty.

    ``read(start)`` returns the page after ``start``; ``prepare(notifications)`` what the
    caller will write, in the caller's thread. With ``ahead``, pages after the first full
    one (``page_size`` notifications) are read in a thread, one page ahead. An error while
    reading is raised to the caller when it asks for that page. Use as a context manager:
    leaving it stops the thread.
    """

    def __init__(
        self,
        read: Callable[[int], list[Any]],
        prepare: Callable[[list[Any]], Any],
        start: int,
        page_size: int,
        *,
        ahead: bool,
    ) -> None:
        self._read = read
        self._prepare = prepare
        self._position = start
        self._page_size = page_size
        self._ahead = ahead
        self._done = False
        self._closed = threading.Event()
        self._ready: queue.Queue[list[Any] | BaseException] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Pages:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Pages:
        return self

    def __next__(self) -> Page:
        if self._done:
            raise StopIteration
        if self._thread is None:
            notifications = self._read(self._position)
            if notifications:
                self._position = notifications[-1].id
                if self._ahead and len(notifications) >= self._page_size:
                    self._thread = threading.Thread(
                        target=self._read_ahead, args=(self._position,), name=READER_THREAD
                    )
                    self._thread.daemon = True
                    _reader_started()
                    try:
                        self._thread.start()
                    except BaseException:
                        self._thread = None
                        _reader_stopped()
                        raise
            page = self._page(notifications)  # while the reader reads the next one
        else:
            item = self._ready.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            page = self._page(item)
        if not page.notifications:
            self._done = True
            raise StopIteration
        return page

    def close(self) -> None:
        """Stop reading ahead and forget what was read; waits for a read in flight."""
        self._done = True
        self._closed.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            while thread.is_alive():
                try:
                    self._ready.get_nowait()  # unblock a reader waiting to hand over a page
                except queue.Empty:
                    thread.join(0.05)
        finally:
            _reader_stopped()

    def _page(self, notifications: list[Any]) -> Page:
        if not notifications:
            return Page(notifications)
        try:
            return Page(notifications, self._prepare(notifications))
        except Exception as error:
            return Page(notifications, error=error)

    def _read_ahead(self, position: int) -> None:
        try:
            while not self._closed.is_set():
                notifications = self._read(position)
                if not self._hand_over(notifications) or not notifications:
                    return
                position = notifications[-1].id
        except BaseException as error:  # the caller raises it when it asks for the page
            self._hand_over(error)

    def _hand_over(self, item: list[Any] | BaseException) -> bool:
        while not self._closed.is_set():
            try:
                self._ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
