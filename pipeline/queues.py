"""The bounded queue that joins two stages.

Two policies, chosen per queue:

- blocking (file mode): ``put`` waits for room, so nothing read from a file is lost. A
  producer that finds the queue full waits until it has drained to half, then refills it:
  it wakes once for every ``maxsize / 2`` items taken instead of for each one (every wake-up
  is a thread switch and a turn of the GIL: at one a frame they were half of the pairing
  thread's CPU time);
- drop-oldest (live mode): ``put`` on a full queue discards the oldest frame and counts it,
  so a slow consumer always sees the newest frames and latency stays bounded.

Several queues may share one ``threading.Condition`` so that a consumer can wait for
"either camera has a frame" without polling. ``cancel`` wakes every waiter when the run
is aborted; a cancelled queue raises ``Cancelled`` from ``get`` and refuses ``put``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from pipeline.frames import EndOfStream


class Cancelled(Exception):
    """The run was aborted while a stage was waiting on a queue."""


class FrameQueue:
    def __init__(
        self, name: str, maxsize: int, drop_oldest: bool = False, condition: threading.Condition | None = None,
        on_drop: Callable[[Any], None] | None = None,
    ):
        if maxsize < 1:
            raise ValueError(f"queue {name}: maxsize must be at least 1; got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.drop_oldest = drop_oldest
        self.condition = condition or threading.Condition()
        self._items: deque[Any] = deque()
        self._cancelled = False
        self.dropped = 0
        self.dropped_by_stream: Counter[str] = Counter()
        self.max_depth = 0
        self._on_drop = on_drop  # told about each dropped item (after the queue's lock is released)
        self._resume_at = maxsize // 2  # a producer that found the queue full waits until it holds this many

    def put(self, item: Any) -> bool:
        """Add ``item``; False when the queue was cancelled before there was room."""
        dropped: list[Any] = []
        try:
            return self._put(item, dropped)
        finally:
            if self._on_drop is not None:
                for old in dropped:
                    self._on_drop(old)

    def _put(self, item: Any, dropped: list[Any]) -> bool:
        with self.condition:
            if self._cancelled:
                return False
            if self.drop_oldest:
                while len(self._items) >= self.maxsize and not isinstance(self._items[0], EndOfStream):
                    dropped.append(self._items.popleft())
                    self._count_drop(dropped[-1])
            elif len(self._items) >= self.maxsize:
                self.condition.wait_for(lambda: len(self._items) <= self._resume_at or self._cancelled)
                if self._cancelled:
                    return False
            self._append(item)
            return True

    def _count_drop(self, item: Any) -> None:
        self.dropped += 1
        stream = getattr(item, "stream", None) or getattr(getattr(item, "meta", None), "stream", None)
        self.dropped_by_stream[str(stream)] += 1

    def put_end(self, end: EndOfStream) -> None:
        """Sentinels never wait and are never dropped: they may exceed ``maxsize`` by one (not
        counted in ``max_depth``, which said 2/1 of a queue that never held two frames)."""
        with self.condition:
            self._items.append(end)
            self.condition.notify_all()

    def _append(self, item: Any) -> None:
        self._items.append(item)
        self.max_depth = max(self.max_depth, len(self._items))
        self.condition.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; ``queue.Empty`` after ``timeout`` seconds, ``Cancelled`` on abort."""
        with self.condition:
            if not self.condition.wait_for(lambda: self._items or self._cancelled, timeout):
                raise queue.Empty
            return self._pop()

    def get_nowait(self) -> Any:
        with self.condition:
            if not self._items and not self._cancelled:
                raise queue.Empty
            return self._pop()

    def _pop(self) -> Any:
        if self._cancelled:
            raise Cancelled(self.name)
        item = self._items.popleft()
        if len(self._items) == self._resume_at:  # a producer waiting for room may go on
            self.condition.notify_all()
        return item

    def __len__(self) -> int:
        with self.condition:
            return len(self._items)

    def has_items(self) -> bool:
        """Call with ``condition`` held (inside a ``wait_for`` predicate)."""
        return bool(self._items) or self._cancelled

    def cancel(self) -> None:
        with self.condition:
            self._cancelled = True
            self.condition.notify_all()


def wait_any(queues: list[FrameQueue], deadline: float | None) -> bool:
    """Wait until one of ``queues`` (sharing one condition) has an item, or ``deadline``
    (a ``time.monotonic()`` value) passes. True when an item (or a cancellation) is there."""
    condition = queues[0].condition
    with condition:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        return condition.wait_for(lambda: any(q.has_items() for q in queues), timeout)
