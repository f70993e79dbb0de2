"""Pairing infrared and visible frames by timestamp.

The output follows one camera, the *leader* (visible by default): every leader frame is
paired with the *follower* frame nearest to it in time, if that frame is within ``slop_s``;
otherwise the leader frame is dropped and counted as unpaired. So the output has the
leader's frame rate and timestamps; a slower follower (9 fps IR under 30 fps visible) has
its frames used more than once, a faster one (60 fps IR) has frames that are never used,
and those are counted as unpaired too. Nothing is ever paired further apart than the slop.

IR timestamps are shifted by ``offset_s`` before comparing (the calibration's
``time_offset_s``: add to IR timestamps to put them on the visible clock).

A leader frame at time t is decided as soon as the nearest follower frame is known: when a
follower frame at or after t has arrived, when the follower has ended, or (live) when the
clock has passed t + slop + ``max_delay_s``, after which no follower frame close enough can
still arrive (``max_delay_s``: how much later than its timestamp a follower frame may arrive).

Live cameras: both cameras' times are on the run's monotonic clock (each camera's own
stream times anchored at its fastest delivery delay, see ``sources.py``), so they differ
by a constant, the difference of the two delays: ``offset_s`` removes it, and the slop
(half the follower's period by default) only has to cover what is left. A frame's time is
never later than its arrival, but may be earlier by the camera's jitter or bursts: a
follower frame that arrives up to ``max_delay_s`` after its time still pairs. While the
follower camera is away (an outage), the output pauses: each leader frame is decided by
the clock and counted as unpaired, never paired with a follower frame from before the
outage; no leader-only frames are emitted. Recordings replayed live keep their own times,
counted from when the run's recordings start playing, and an IR recording plays ``offset_s``
late (``sources.Replay``), so its frames arrive when they are due on the visible clock
(``ir_replayed``) rather than ``offset_s`` early as a camera's do. Pending leader frames (at most
(slop + max_delay) x the leader's rate) and held follower frames (``_MAX_FOLLOWERS``) are
bounded, whatever a camera does.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.frames import IR, VISIBLE, CameraFrame, EndOfStream, FrameMeta, FramePair
from pipeline.queues import FrameQueue, wait_any

log = logging.getLogger(__name__)

_EPS = 1e-9  # float slack so that exactly-slop pairs are accepted
_MAX_FOLLOWERS = 128  # held follower frames, at most (live, when the leader camera has stopped)


@dataclass
class PairingCounts:
    paired: int = 0
    unpaired_ir: int = 0  # IR frames that made no output frame
    unpaired_vi: int = 0  # visible frames that made no output frame

    @property
    def unpaired(self) -> int:
        return self.unpaired_ir + self.unpaired_vi


@dataclass
class _Follower:
    t: float
    frame: CameraFrame
    used: bool = False


class NearestPairer:
    """Leader-driven nearest-timestamp pairing for one stream pair. Not thread-safe."""

    def __init__(self, stream: str, leader: str, slop_s: float, offset_s: float = 0.0, max_delay_s: float = 0.0,
                 ir_replayed: bool = False) -> None:
        self.stream = stream
        self.leader = IR if leader == IR else VISIBLE
        self.follower = VISIBLE if self.leader == IR else IR
        self.slop_s = slop_s
        self.offset_s = offset_s
        self.max_delay_s = max_delay_s  # live: how late after its time a follower frame may arrive
        # Live: an IR camera's frames arrive offset_s before they are due on the visible clock;
        # a replayed IR recording's when they are due (it plays offset_s late: sources.Replay).
        self._ir_lead = 0.0 if ir_replayed else offset_s
        self.counts = PairingCounts()
        self._pending: deque[tuple[float, CameraFrame]] = deque()  # undecided leader frames
        self._followers: deque[_Follower] = deque()  # follower frames that may still be nearest
        self._follower_ended = False
        self._last_t = {IR: float("-inf"), VISIBLE: float("-inf")}
        self._backwards: Counter[str] = Counter()  # frames skipped for going back in time, per camera
        self._seq = 0

    def time_of(self, frame: CameraFrame) -> float:
        return frame.t + self.offset_s if frame.kind == IR else frame.t

    def add(self, frame: CameraFrame) -> None:
        t = self.time_of(frame)
        if t <= self._last_t[frame.kind]:
            self._backwards[frame.kind] += 1
            if self._backwards[frame.kind] == 1:  # one line, not one a frame: the count comes at the end
                log.warning("%s: %s frame %d goes back in time (%.4f s after %.4f s); skipped, as any more will be",
                            self.stream, frame.kind, frame.index, t, self._last_t[frame.kind])
            self._count_unpaired(frame.kind)
            return
        self._last_t[frame.kind] = t
        if frame.kind == self.leader:
            self._pending.append((t, frame))
        else:
            self._followers.append(_Follower(t, frame))
            self._forget_superseded()

    def _forget_superseded(self) -> None:
        """Keep the follower buffer short: a follower frame with a successor no later than
        every leader frame still to come can never be the nearest one."""
        next_leader = self._pending[0][0] if self._pending else self._last_t[self.leader]
        while len(self._followers) >= 2 and (self._followers[1].t <= next_leader or len(self._followers) > _MAX_FOLLOWERS):
            if not self._followers.popleft().used:
                self._count_unpaired(self.follower)

    def end_follower(self) -> None:
        self._follower_ended = True

    def waiting_for_follower(self) -> bool:
        """A leader frame is pending and only a later follower frame can decide it."""
        return bool(self._pending) and not self._decidable(self._pending[0][0], None)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def deadline(self) -> float | None:
        """Stream time after which the oldest pending leader frame can be decided by the clock."""
        return self._clock_deadline(self._pending[0][0]) if self._pending else None

    def pop_decided(self, now: float | None = None) -> list[FramePair]:
        """Decide every pending leader frame that can be; returns the pairs, in order.

        ``now`` (live only) is the current stream-clock time: future follower frames will
        carry timestamps after it.
        """
        pairs = []
        while self._pending and self._decidable(self._pending[0][0], now):
            t, frame = self._pending.popleft()
            match = self._nearest(t)
            if match is None:
                self._count_unpaired(self.leader)
                self._prune(t - self.slop_s)
                continue
            match.used = True
            pairs.append(self._make_pair(frame, match.frame))
            self._prune(match.t)
        return pairs

    def finish(self, count_leftovers: bool = True) -> None:
        """The stream is over: frames still held made no output (unpaired, unless stopped early)."""
        for kind, count in sorted(self._backwards.items()):
            if count > 1:
                log.warning("%s: %d %s frames went back in time and were skipped", self.stream, count, kind)
        if count_leftovers:
            self._prune(float("inf"))
            for _ in self._pending:
                self._count_unpaired(self.leader)
        self._followers.clear()
        self._pending.clear()

    def withdraw(self, pairs: list[FramePair]) -> None:
        """Pairs made but not handed on (the run stopped among them): not counted as paired."""
        self.counts.paired -= len(pairs)

    def discard(self, frame: CameraFrame) -> None:
        """A frame read after its partner stream ended: it can pair with nothing."""
        self._count_unpaired(frame.kind)

    def _decidable(self, t: float, now: float | None) -> bool:
        if self._follower_ended or (self._followers and self._followers[-1].t >= t):
            return True
        return now is not None and now > self._clock_deadline(t)

    def _clock_deadline(self, t: float) -> float:
        """Live: the stream time after which no follower frame near enough to the leader frame at
        ``t`` can still arrive. A follower IR camera's frames arrive ``_ir_lead`` early."""
        follower_lead = self._ir_lead if self.follower == IR else 0.0
        return t + self.slop_s + self.max_delay_s - follower_lead

    def _nearest(self, t: float) -> _Follower | None:
        best = min(self._followers, key=lambda f: abs(f.t - t), default=None)
        if best is None or abs(best.t - t) > self.slop_s + _EPS:
            return None
        return best

    def _prune(self, before: float) -> None:
        """Forget follower frames earlier than ``before``: no later leader frame is nearer to them."""
        while self._followers and self._followers[0].t < before:
            if not self._followers.popleft().used:
                self._count_unpaired(self.follower)

    def _count_unpaired(self, kind: str) -> None:
        if kind == IR:
            self.counts.unpaired_ir += 1
        else:
            self.counts.unpaired_vi += 1

    def _make_pair(self, leader: CameraFrame, follower: CameraFrame) -> FramePair:
        ir, vi = (leader, follower) if leader.kind == IR else (follower, leader)
        later = ir if ir.captured_mono >= vi.captured_mono else vi
        meta = FrameMeta(
            stream=self.stream,
            seq=self._seq,
            t=leader.t,
            t_ir=self.time_of(ir),
            t_vi=vi.t,
            ir_index=ir.index,
            vi_index=vi.index,
            captured_mono=later.captured_mono,
            captured_unix=later.captured_unix,
        )
        self._seq += 1
        self.counts.paired += 1
        return FramePair(meta, ir.planes, vi.planes)


Emit = Callable[[FramePair], bool]  # False: stop pairing (max_frames reached or run aborted)


def run_pairing(
    pairer: NearestPairer,
    ir_queue: FrameQueue,
    vi_queue: FrameQueue,
    emit: Emit,
    live: bool,
    clock_origin: float,
    stop_readers: threading.Event,
) -> None:
    """Pair frames from the two camera queues until both end; ``emit`` each pair in order.

    File mode reads whichever queue the pairer needs next, so a reader that runs ahead is
    held back by its full queue instead of filling memory. Live mode takes every frame as it
    arrives (camera queues drop their oldest frames) and decides leader frames by the clock.
    When pairing ends early (``emit`` said stop) or the leader ends in live mode,
    ``stop_readers`` is set so the other reader ends too.
    """
    leader_q, follower_q = (ir_queue, vi_queue) if pairer.leader == IR else (vi_queue, ir_queue)
    if live:
        still_open, stopped = _pair_live(pairer, leader_q, follower_q, emit, clock_origin)
    else:
        still_open, stopped = _pair_file(pairer, leader_q, follower_q, emit, stop_readers)
    if stopped or live:
        stop_readers.set()
    if not live:
        # Let file readers that are still running reach their end, so none waits on a full
        # queue. Frames left after a stop were never offered for pairing and are not counted.
        for q in still_open:
            _drain_until_end(q, None if stopped else pairer)
    pairer.finish(count_leftovers=not stopped)


_LoopResult = tuple[list[FrameQueue], bool]  # (queues whose end has not been seen, stopped early)


def _open_queues(leader_q: FrameQueue, leader_open: bool, follower_q: FrameQueue, follower_open: bool) -> list[FrameQueue]:
    return [q for q, is_open in ((leader_q, leader_open), (follower_q, follower_open)) if is_open]


def _pair_file(pairer: NearestPairer, leader_q: FrameQueue, follower_q: FrameQueue, emit: Emit, readers_stopped: threading.Event) -> _LoopResult:
    leader_open = follower_open = True
    while True:
        if not _emit_all(pairer, pairer.pop_decided(), emit):
            return _open_queues(leader_q, leader_open, follower_q, follower_open), True
        if pairer.waiting_for_follower() and follower_open:
            item = follower_q.get()
            if isinstance(item, EndOfStream):
                if readers_stopped.is_set():
                    # The run stopped the readers (Ctrl-C): the follower did not end, it was cut off, and
                    # the leader frames read beyond it were never offered for pairing (as after max_frames).
                    # Counted as unpaired, a clip that pairs perfectly said "unpaired 2" after a Ctrl-C.
                    return _open_queues(leader_q, leader_open, follower_q, False), True
                follower_open = False
                pairer.end_follower()
            else:
                pairer.add(item)
        elif leader_open:
            item = leader_q.get()
            if isinstance(item, EndOfStream):
                leader_open = False
            else:
                pairer.add(item)
        else:
            return _open_queues(leader_q, False, follower_q, follower_open), False


def _pair_live(pairer: NearestPairer, leader_q: FrameQueue, follower_q: FrameQueue, emit: Emit, origin: float) -> _LoopResult:
    leader_open = follower_open = True
    while True:
        if not _emit_all(pairer, pairer.pop_decided(now=time.monotonic() - origin), emit):
            return _open_queues(leader_q, leader_open, follower_q, follower_open), True
        if not (leader_open or pairer.has_pending()):
            return _open_queues(leader_q, False, follower_q, follower_open), False
        stream_deadline = pairer.deadline()
        wait_any([leader_q, follower_q], None if stream_deadline is None else origin + stream_deadline)
        for q in (follower_q, leader_q):  # followers first: they decide pending leaders
            for item in _take_all(q):
                if not isinstance(item, EndOfStream):
                    pairer.add(item)
                elif q is leader_q:
                    leader_open = False
                else:
                    follower_open = False
                    pairer.end_follower()


def _emit_all(pairer: NearestPairer, pairs: list[FramePair], emit: Emit) -> bool:
    """Hand on ``pairs`` in order; False when ``emit`` said stop. Pairs decided together but
    not handed on are taken back from the paired count: with max_frames a summary said one
    more frame was paired than was written (a slower follower decides several at once)."""
    for sent, pair in enumerate(pairs, start=1):
        if not emit(pair):
            pairer.withdraw(pairs[sent:])
            return False
    return True


def _take_all(q: FrameQueue) -> list:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def _drain_until_end(q: FrameQueue, pairer: NearestPairer | None) -> None:
    """Read ``q`` to its end; with a ``pairer``, what is read counts as unpaired."""
    while not isinstance(item := q.get(), EndOfStream):
        if pairer is not None:
            pairer.discard(item)
