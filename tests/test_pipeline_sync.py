"""Nearest-timestamp pairing: rates, offsets, slop, counting, and the live clock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ldfusion.video import Planes
from pipeline.frames import IR, VISIBLE, CameraFrame, EndOfStream
from pipeline.queues import FrameQueue
from pipeline.sync import NearestPairer, run_pairing


def frame(kind: str, index: int, t: float) -> CameraFrame:
    return CameraFrame("s", kind, index, t, captured_mono=t, captured_unix=t, planes=Planes.gray(np.zeros((1, 1), np.uint8)))


def camera(kind: str, fps: float, n: int, start: float = 0.0) -> list[CameraFrame]:
    return [frame(kind, i, start + i / fps) for i in range(n)]


def pair_offline(ir: list[CameraFrame], vi: list[CameraFrame], slop: float, offset: float = 0.0, leader: str = "visible"):
    """Feed two whole streams through run_pairing's file mode; returns (pairs, counts)."""
    ir_q, vi_q = FrameQueue("ir", 4), FrameQueue("vi", 4)
    pairs = []

    def feed(q: FrameQueue, frames: list[CameraFrame], kind: str) -> None:
        for f in frames:
            q.put(f)
        q.put_end(EndOfStream("s", kind))

    feeders = [threading.Thread(target=feed, args=a, daemon=True) for a in ((ir_q, ir, IR), (vi_q, vi, VISIBLE))]
    for t in feeders:
        t.start()
    pairer = NearestPairer("s", leader, slop, offset)
    run_pairing(pairer, ir_q, vi_q, lambda p: pairs.append(p) or True, live=False, clock_origin=0.0, stop_readers=threading.Event())
    for t in feeders:
        t.join(5)
        assert not t.is_alive()
    return pairs, pairer.counts


def test_equal_rates_pair_one_to_one():
    pairs, counts = pair_offline(camera(IR, 30, 10), camera(VISIBLE, 30, 10), slop=1 / 60)
    assert [(p.meta.ir_index, p.meta.vi_index) for p in pairs] == [(i, i) for i in range(10)]
    assert [p.meta.seq for p in pairs] == list(range(10))
    assert counts.unpaired == 0


def test_shorter_input_bounds_the_output():
    pairs, counts = pair_offline(camera(IR, 30, 7), camera(VISIBLE, 30, 10), slop=1 / 60)
    assert len(pairs) == 7
    assert (counts.unpaired_ir, counts.unpaired_vi) == (0, 3)


@pytest.mark.parametrize("ir_fps", [9, 60])
def test_different_rates_pair_nearest_and_follow_visible(ir_fps):
    vi = camera(VISIBLE, 30, 30)
    ir = camera(IR, ir_fps, int(ir_fps * 1.0) + 1)
    slop = 0.5 / ir_fps
    pairs, counts = pair_offline(ir, vi, slop=slop)
    assert len(pairs) == 30  # the visible timeline
    for p in pairs:
        nearest = min(range(len(ir)), key=lambda i: abs(ir[i].t - p.meta.t_vi))
        assert p.meta.ir_index == nearest
        assert abs(p.meta.t_ir - p.meta.t_vi) <= slop + 1e-9
        assert p.meta.t == p.meta.t_vi
    used = {p.meta.ir_index for p in pairs}
    assert counts.unpaired_ir == len(ir) - len(used)
    if ir_fps == 60:
        assert counts.unpaired_ir >= 29  # every other IR frame has no visible partner


def test_ir_leader_follows_ir_rate():
    pairs, _ = pair_offline(camera(IR, 9, 9), camera(VISIBLE, 30, 30), slop=1 / 60, leader="ir")
    assert len(pairs) == 9
    assert [p.meta.t for p in pairs] == [i / 9 for i in range(9)]


def test_frames_beyond_the_slop_are_never_paired():
    vi = camera(VISIBLE, 10, 10)
    ir = [frame(IR, i, i / 10 + (0.04 if i % 2 else 0.0)) for i in range(10)]  # odd IR frames 40 ms late
    pairs, counts = pair_offline(ir, vi, slop=0.02)
    assert [p.meta.vi_index for p in pairs] == [0, 2, 4, 6, 8]
    assert counts.unpaired_vi == 5 and counts.unpaired_ir == 5


def test_offset_is_added_to_ir_timestamps():
    # The IR camera started 0.1 s late: its frame i shows the scene of visible frame i + 3.
    vi = camera(VISIBLE, 30, 20)
    ir = camera(IR, 30, 17)
    pairs, _ = pair_offline(ir, vi, slop=1 / 60, offset=0.1)
    assert all(p.meta.vi_index == p.meta.ir_index + 3 for p in pairs)
    assert len(pairs) == 17
    assert pairs[0].meta.t_ir == pytest.approx(0.1)


def test_timestamps_going_back_are_skipped_and_counted():
    vi = camera(VISIBLE, 30, 5)
    ir = camera(IR, 30, 5)
    ir.insert(3, frame(IR, 99, 0.0))
    pairs, counts = pair_offline(ir, vi, slop=1 / 60)
    assert len(pairs) == 5 and 99 not in {p.meta.ir_index for p in pairs}
    assert counts.unpaired_ir == 1


def test_live_clock_decides_without_a_later_follower():
    pairer = NearestPairer("s", "visible", slop_s=0.02)
    pairer.add(frame(IR, 0, 0.990))
    pairer.add(frame(VISIBLE, 0, 1.000))
    assert pairer.pop_decided(now=1.010) == []  # an IR frame at 1.010 could still be nearer
    decided = pairer.pop_decided(now=1.021)
    assert len(decided) == 1 and decided[0].meta.ir_index == 0
    pairer.add(frame(VISIBLE, 1, 1.100))  # no IR frame near it ever comes
    assert pairer.pop_decided(now=1.200) == []
    assert pairer.counts.unpaired_vi == 1


def test_follower_buffer_stays_short():
    pairer = NearestPairer("s", "visible", slop_s=0.02)
    pairer.add(frame(VISIBLE, 0, 5.0))
    for i in range(200):  # IR frames long before the pending visible frame: only the last can pair
        pairer.add(frame(IR, i, i / 100))
    assert len(pairer._followers) == 1
    pairer.pop_decided(now=10.0)
    for i in range(300):  # the visible camera has stopped; IR keeps coming
        pairer.add(frame(IR, 200 + i, 6.0 + i / 100))
    assert len(pairer._followers) <= 128
    assert pairer.counts.unpaired_ir + len(pairer._followers) == 500


def test_frames_going_back_in_time_are_warned_once_and_counted_at_the_end(caplog):
    """A camera whose clock jumps back skips every frame until it catches up: one warning, then
    the count when the stream ends, not a line a frame (thousands on a long capture)."""
    visible = camera(VISIBLE, 30, 20)
    visible = visible[:10] + [frame(VISIBLE, 10 + i, i / 30) for i in range(5)]  # the clock restarts: 5 frames back in time
    with caplog.at_level("WARNING"):
        pairs, counts = pair_offline(camera(IR, 30, 20), visible, slop=0.01)
    assert len(pairs) == 10 and counts.unpaired >= 5
    assert caplog.text.count("goes back in time") == 1
    assert "5 visible frames went back in time and were skipped" in caplog.text


@pytest.mark.parametrize("stop_after", [1, 4, 5])
def test_pairs_decided_together_but_not_handed_on_are_not_counted_as_paired(stop_after):
    """Live, a 10 fps IR decides three 30 fps visible frames at once; when emit stopped
    (max_frames) among them, the summary said up to two more paired than were written."""
    ir_q, vi_q = FrameQueue("ir", 100, drop_oldest=True), FrameQueue("vi", 100, drop_oldest=True)
    for q, frames, kind in ((ir_q, camera(IR, 10, 10), IR), (vi_q, camera(VISIBLE, 30, 30), VISIBLE)):
        for f in frames:
            q.put(f)
        q.put_end(EndOfStream("s", kind))
    pairer, emitted = NearestPairer("s", VISIBLE, slop_s=0.05), []

    def emit(pair) -> bool:
        emitted.append(pair)
        return len(emitted) < stop_after

    run_pairing(pairer, ir_q, vi_q, emit, live=True, clock_origin=time.monotonic() - 100.0, stop_readers=threading.Event())
    assert len(emitted) == stop_after and pairer.counts.paired == stop_after


@pytest.mark.parametrize("stopped_by_the_run", [False, True])
def test_frames_read_before_the_run_stopped_the_readers_are_not_unpaired(stopped_by_the_run):
    """After a Ctrl-C the visible reader had read two frames more than the infrared one: a clip
    that pairs perfectly said "unpaired 2"."""
    ir_q, vi_q = FrameQueue("ir", 10), FrameQueue("vi", 10)
    for q, frames, kind in ((ir_q, camera(IR, 30, 3), IR), (vi_q, camera(VISIBLE, 30, 5), VISIBLE)):
        for f in frames:
            q.put(f)
        q.put_end(EndOfStream("s", kind))
    stop = threading.Event()
    if stopped_by_the_run:
        stop.set()
    pairer, pairs = NearestPairer("s", VISIBLE, slop_s=1 / 60), []
    run_pairing(pairer, ir_q, vi_q, lambda p: pairs.append(p) or True, live=False, clock_origin=0.0, stop_readers=stop)
    assert len(pairs) == 3
    assert pairer.counts.unpaired_vi == (0 if stopped_by_the_run else 2)
