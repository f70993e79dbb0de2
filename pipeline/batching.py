"""Fair batches across stream pairs: round-robin over one queue per stream.

With one shared queue between the pairing threads and the fusion stage, batches follow
arrival order: a stream that reads fast (a file behind a slow camera, a 60 fps source
beside a 30 fps one) fills the batches and the shared queue, the others wait behind it,
and in live mode a full shared queue drops the *oldest* frame whichever stream it is from.
Here each stream has its own queue, and a batch takes one pair from each stream in turn,
going on from the stream after the last one served. A stream with a pair waiting is
therefore served within ``ceil(streams / batch_size)`` batches, and backlogged streams
share every batch equally (to within one pair). Within a stream, pairs keep their order.

Two layers:

- ``RoundRobinBatcher``: the pure scheduling rule (no threads, no clocks); per-stream
  ``added``/``taken`` counts are exact, and a stream's end is reported only after its last
  pair has been taken, so nothing queued is lost or overtaken by its own end.
- ``FairCollector``: the rule over the pipeline's per-stream ``FrameQueue``s, batching
  "``batch_size`` pairs, or ``max_wait_s`` after the first, whichever comes first".

Where it is used: ``pipeline/runner.py`` gives each stream its own paired queue (the old
size per stream; live mode drops a stream's own oldest pair, never another stream's), all
sharing one ``threading.Condition``; ``FusionWorker.run`` builds one ``FairCollector`` over
them and fuses what each ``collect()`` returns. ``collector.batcher.taken[stream]`` is the
number of pairs each stream has had fused. The network call goes through
``ldfusion.fixed_batch.FixedBatch`` when batches are padded, so a partial batch keeps the
network's one input shape.
"""

from __future__ import annotations

import queue
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Generic, TypeVar

from pipeline.frames import EndOfStream
from pipeline.queues import FrameQueue, wait_any

T = TypeVar("T")


class RoundRobinBatcher(Generic[T]):
    """Per-stream FIFO buffers and the round-robin rule that turns them into batches."""

    def __init__(self, streams: Sequence[str], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        if not streams or len(set(streams)) != len(streams):
            raise ValueError(f"need one or more distinct stream ids; got {list(streams)}")
        self.streams = list(streams)
        self.batch_size = batch_size
        self.added: Counter[str] = Counter()
        self.taken: Counter[str] = Counter()
        self._buffers: dict[str, deque[T]] = {stream: deque() for stream in self.streams}
        self._ending: set[str] = set()  # ended, possibly with pairs still buffered
        self._closed: set[str] = set()  # ended, drained, and reported by ``ended``
        self._next = 0  # index of the stream that goes first in the next batch

    def add(self, stream: str, item: T) -> None:
        self._check_open(stream)
        self._buffers[stream].append(item)
        self.added[stream] += 1

    def end(self, stream: str) -> None:
        """No more items will come for ``stream``; it is reported by ``ended`` once drained."""
        self._check_open(stream)
        self._ending.add(stream)

    def pending(self, stream: str | None = None) -> int:
        if stream is not None:
            return len(self._buffers[stream])
        return sum(len(buffer) for buffer in self._buffers.values())

    def take(self) -> list[tuple[str, T]]:
        """Up to ``batch_size`` (stream, item) pairs, one per stream in turn."""
        batch: list[tuple[str, T]] = []
        count = len(self.streams)
        index = self._next
        while len(batch) < self.batch_size and self.pending():
            stream = self.streams[index]
            if self._buffers[stream]:
                batch.append((stream, self._buffers[stream].popleft()))
                self.taken[stream] += 1
                self._next = (index + 1) % count  # the next batch goes on after the last stream served
            index = (index + 1) % count
        return batch

    def ended(self) -> list[str]:
        """Streams that ended and whose last item has been taken; each is reported once."""
        done = [stream for stream in self.streams if stream in self._ending and stream not in self._closed and not self._buffers[stream]]
        self._closed.update(done)
        return done

    def accepting(self, stream: str) -> bool:
        """Whether ``stream`` may still get items (its end has not been seen)."""
        return stream not in self._ending

    @property
    def finished(self) -> bool:
        """Every stream has ended and been reported."""
        return len(self._closed) == len(self.streams)

    def _check_open(self, stream: str) -> None:
        if stream not in self._buffers:
            raise KeyError(f"unknown stream {stream!r}; streams are {', '.join(self.streams)}")
        if stream in self._ending:
            raise ValueError(f"stream {stream!r} has already ended")


class FairCollector:
    """``(batch, ended)`` from per-stream queues: the fusion stage's ``_collect``, made fair.

    ``batch`` is a list of items (``FramePair``s) in round-robin order; ``ended`` lists the
    streams whose ``EndOfStream`` came after their last item in ``batch`` or earlier ones.
    Each stream buffers at most ``batch_size`` items here, so its own queue (and its
    producer) still feels backpressure in file mode.
    """

    def __init__(self, queues: dict[str, FrameQueue], batch_size: int, max_wait_s: float) -> None:
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0; got {max_wait_s}")
        self.queues = queues
        self.batcher: RoundRobinBatcher = RoundRobinBatcher(list(queues), batch_size)
        self.max_wait_s = max_wait_s

    def collect(self) -> tuple[list, list[str]]:
        """Blocks until a full batch, ``max_wait_s`` after the first item, or a stream's end."""
        deadline = None
        while True:
            self._drain()
            ended = self.batcher.ended()
            waiting = self.batcher.pending()
            if ended or waiting >= self.batcher.batch_size or self.batcher.finished:
                return self._take(), ended
            if waiting and deadline is None:
                deadline = time.monotonic() + self.max_wait_s
            if deadline is not None and time.monotonic() >= deadline:
                return self._take(), ended
            open_queues = [self.queues[s] for s in self.batcher.streams if self.batcher.accepting(s)]
            if not open_queues:  # every stream has ended: nothing more will come to wait for
                return self._take(), ended
            wait_any(open_queues, deadline)

    def ready(self) -> bool:
        """Whether a full batch is waiting now (``collect`` would not wait for more)."""
        self._drain()
        return self.batcher.pending() >= self.batcher.batch_size

    def _take(self) -> list:
        return [item for _stream, item in self.batcher.take()]

    def _drain(self) -> None:
        """Move what each stream's queue holds into the batcher, up to ``batch_size`` per stream."""
        for stream, frame_queue in self.queues.items():
            while self.batcher.accepting(stream) and self.batcher.pending(stream) < self.batcher.batch_size:
                try:
                    item = frame_queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, EndOfStream):
                    self.batcher.end(stream)
                else:
                    self.batcher.add(stream, item)
