"""Live mode with fake cameras: pairing within the slop, bounded latency, drops, reconnects."""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import threading
import time

import cv2
import numpy as np
import pytest

from ldfusion.config import from_dict, to_dict
from ldfusion.errors import DataError
from ldfusion.signals import Terminated
from pipeline.config import PipelineConfig, SourceConfig
from pipeline.runner import run_pipeline
from pipeline.sinks import CallbackSink
from pipeline.sources import LiveCameraSource, StreamClock
from ldfusion.color import planes_to_image
from tests.pipeline_helpers import MARKS, Collect, FakeCamera, cpu_fuser, make_config, marked_frame, marked_video, read_mark


def live_config(slop_s: float, duration_s: float, stats_interval_s: float = 60, max_delay_s: float = 0.1, **ir_options) -> PipelineConfig:
    return from_dict(PipelineConfig, {
        "streams": [{
            "id": "live",
            "ir": {"kind": "camera", "path": "0", **ir_options},
            "visible": {"kind": "camera", "path": "1"},
            "sync": {"slop_s": slop_s, "max_delay_s": max_delay_s},
        }],
        "model": {"batch_size": 2, "max_wait_ms": 5},
        "run": {"mode": "live", "duration_s": duration_s, "progress": False, "stats_interval_s": stats_interval_s},
    })


@pytest.fixture(scope="module")
def lite(random_weights):
    return cpu_fuser(random_weights["ld-lite"])


def test_a_live_run_that_fuses_nothing_says_so_and_fails(lite, caplog):
    """It exited 0 with no output and no word (here: an offset that keeps every pair apart)."""
    cameras = {0: FakeCamera(fps=15, seed=1), 1: FakeCamera(fps=30, seed=2)}
    data = to_dict(live_config(1 / 60, duration_s=1.0))
    data["streams"][0]["sync"]["offset_s"] = 30.0
    config = from_dict(PipelineConfig, data)
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match=r"the live run fused no frame in \d"):
        run_pipeline(config, lite, open_capture=cameras.__getitem__)
    assert re.search(r"stream live: nothing was fused \(IR: [1-9]\d* frame\(s\) read", caplog.text)


def test_two_cameras_pair_within_the_slop_with_bounded_latency(lite):
    cameras = {0: FakeCamera(fps=15, seed=1), 1: FakeCamera(fps=30, seed=2)}
    collect = Collect()
    slop = 1 / 30  # half the IR frame period
    summary = run_pipeline(live_config(slop, duration_s=2.0), lite, extra_sinks=[collect.sink()], open_capture=cameras.__getitem__)

    frames = collect.frames
    assert len(frames) >= 10 and summary.frames_out == len(frames), summary.report
    # In order; live mode may drop a frame after pairing, which leaves a gap in seq.
    assert all(b.meta.seq > a.meta.seq and b.meta.t > a.meta.t for a, b in zip(frames, frames[1:]))
    for f in frames:
        assert abs(f.meta.t_ir - f.meta.t_vi) <= slop + 1e-9  # paired within the slop, by their timestamps
    # The paired images were made close together in real time too (the median, loosely: the
    # machine is shared, and a reader that is late stamps its frame late).
    ir_cam, vi_cam = cameras[0], cameras[1]
    skews = [abs(_due(ir_cam, f.ir, f.meta.captured_mono) - _due(vi_cam, f.visible, f.meta.captured_mono)) for f in frames]
    assert sorted(skews)[len(skews) // 2] <= slop + 0.05, skews
    # Live mode keeps queues short: latency stays far below the run's length.
    assert summary.latency_ms_p99 < 1000, summary.report
    assert summary.stopped_by == "duration" and ir_cam.released and vi_cam.released


def _due(camera: FakeCamera, image, read_by: float) -> float:
    """When the camera made this image: the last frame with its mark made before ``read_by``."""
    mark = read_mark(image)
    return max(t for i, t in camera.produced.items() if i % MARKS == mark and t <= read_by)


def test_a_slow_consumer_drops_old_frames_instead_of_falling_behind(lite):
    cameras = {0: FakeCamera(fps=30, seed=1), 1: FakeCamera(fps=30, seed=2)}
    collect = Collect()

    class SlowSink(CallbackSink):
        def write(self, frame) -> None:
            time.sleep(0.1)  # a 10 fps consumer behind 30 fps cameras
            super().write(frame)

    sink = SlowSink(collect.frames.append)
    summary = run_pipeline(live_config(1 / 60, duration_s=3.0), lite, extra_sinks=[sink], open_capture=cameras.__getitem__)
    assert summary.dropped > 0
    assert summary.frames_out < 45  # far fewer than the 90 pairs the cameras made
    # Without dropping, the last frame would wait for everything before it (several seconds).
    assert summary.latency_ms_p99 < 1500


def test_a_camera_that_stops_is_reconnected_and_reported(lite, caplog):
    opened = {0: 0, 1: 0}

    def open_capture(camera):
        opened[camera] += 1
        # The IR camera stops after 8 frames, the first time only.
        return FakeCamera(fps=30, seed=camera, fail_after=8 if camera == 0 and opened[0] == 1 else None)

    with caplog.at_level(logging.INFO):
        summary = run_pipeline(live_config(1 / 60, duration_s=2.0, stats_interval_s=0.5, reconnect_backoff_s=0.1), lite,
                               open_capture=open_capture)
    assert opened == {0: 2, 1: 1}
    assert "camera 0 stopped delivering after 8 frame(s); reconnecting in 0.1 s (attempt 1)" in caplog.text
    assert "camera 0 reconnected" in caplog.text
    assert summary.streams[0].read_ir > 8  # frames kept coming after the reconnect
    periodic = [r.message for r in caplog.records if r.name == "pipeline.runner" and "queues" in r.message]
    assert periodic and "live: read" in periodic[0] and "latency p50" in periodic[0]  # stage statistics were logged


def test_a_camera_that_never_comes_back_is_an_error(lite):
    def open_capture(camera):
        camera_object = FakeCamera(fps=30, seed=camera, fail_after=5 if camera == 0 else None)
        if camera == 0 and open_capture.calls:
            camera_object.release()  # reopening fails
        open_capture.calls += camera == 0
        return camera_object

    open_capture.calls = 0
    config = from_dict(PipelineConfig, {
        "streams": [{"ir": {"kind": "camera", "path": "0", "reconnect_backoff_s": 0.05, "reconnect_max_s": 0.1, "max_reconnects": 2},
                     "visible": {"kind": "camera", "path": "1"}}],
        "run": {"progress": False, "duration_s": 30},
    })
    started = time.monotonic()
    with pytest.raises(DataError, match=r"camera 0 stopped delivering after 5 frame\(s\) and did not come back after 2 reconnect attempt\(s\)"):
        run_pipeline(config, lite, open_capture=open_capture)
    assert time.monotonic() - started < 20  # it gave up instead of running to duration_s


def test_a_camera_that_is_not_there_is_an_error_before_the_run(lite):
    def open_capture(camera):
        fake = FakeCamera(fps=30)
        fake.release()
        return fake

    config = from_dict(PipelineConfig, {"streams": [{"ir": {"kind": "camera", "path": "rtsp://10.0.0.9/ir"}, "visible": {"kind": "camera", "path": "1"}}]})
    with pytest.raises(DataError, match=r"cannot open camera rtsp://10.0.0.9/ir"):
        run_pipeline(config, lite, open_capture=open_capture)


# --- live timestamps --------------------------------------------------------------------------


def test_stream_clock_keeps_a_cameras_own_times_through_late_and_bursty_delivery():
    clock = StreamClock()
    fps, delay = 30.0, 0.080  # the camera's fastest delivery: 80 ms after its timestamp
    rng = np.random.default_rng(0)
    stamps, true_times = [], []
    for i in range(300):
        stream_t = i / fps
        # Jitter up to 20 ms, and twice a second's frames held back, then delivered at once.
        late = (129 - i % 150) / fps if 100 <= i % 150 < 130 else rng.uniform(0, 0.02)
        arrival = 10.0 + stream_t + delay + late
        t = clock.stamp(arrival, stream_t)
        assert t <= arrival  # never after the frame arrived
        stamps.append(t)
        true_times.append(10.0 + stream_t + delay)
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    errors = np.abs(np.array(stamps) - np.array(true_times))
    assert errors[1:].max() < 0.021  # the burst's frames keep their spacing; only the first frame's jitter remains


def test_stream_clock_falls_back_to_arrival_and_follows_a_slow_camera_clock():
    clock = StreamClock()
    assert clock.stamp(5.0, None) == 5.0  # no stream time: arrival
    assert clock.stamp(5.1, 0.0) == 5.1
    assert clock.stamp(5.2, 0.0) == 5.2  # stream time does not rise: arrival, and the anchor starts again
    clock.reset()
    fps, slow = 30.0, 5e-4  # the camera's clock runs 0.05% slow: its frames arrive ever later on ours
    for i in range(30 * 600):  # ten minutes
        arrival = 1.0 + (i / fps) * (1 + slow) + 0.05
        t = clock.stamp(arrival, i / fps)
    assert arrival - t < 0.005  # the anchor followed (0.3 s of drift by now)


class _BufferingCamera(FakeCamera):
    """A network camera whose decoder hands over ``buffered`` old frames at once after opening."""

    def __init__(self, buffered: int, **kwargs):
        super().__init__(**kwargs)
        self._buffered = buffered

    def read(self):
        if self._buffered:
            self._buffered -= 1
            return True, self._frames[0].copy()
        return super().read()


def test_a_network_camera_skips_what_it_buffered_while_connecting():
    config = from_dict(SourceConfig, {"kind": "camera", "path": "rtsp://user:pw@cam.local/ir"})
    source = LiveCameraSource(config, "ir", time.monotonic(), open_capture=lambda _url: _BufferingCamera(20, fps=30))
    assert source.name == "camera rtsp://***@cam.local/ir"
    stop = threading.Event()
    frames = source.frames(stop)
    first = [next(frames) for _ in range(3)]
    stop.set()
    assert 20 <= source.stale <= 21  # the backlog was dropped, not stamped "now" (and the frame already due)
    times = [t for _, t, _ in first]
    assert all(0.02 < b - a < 0.05 for a, b in zip(times, times[1:])), times  # what follows comes at the camera's pace


class _StreamTimedCamera:
    """An RTSP-like camera: frame i has stream time i / fps; the first ``buffered`` frames
    come back at once (decoded while connecting), the rest at the camera's pace."""

    def __init__(self, buffered: int, fps: float = 30.0):
        self.fps, self.buffered, self.next, self.last = fps, buffered, 0, None
        self.live_from = time.monotonic()

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def read(self):
        if self.next >= self.buffered:
            delay = self.live_from + (self.next - self.buffered) / self.fps - time.monotonic()
            time.sleep(max(0.0, delay))
        self.last, self.next = self.next, self.next + 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else self.last * 1000 / self.fps if prop == cv2.CAP_PROP_POS_MSEC else 0.0

    def release(self) -> None:
        pass


def test_a_network_camera_with_stream_times_settles_before_its_frames_count():
    config = from_dict(SourceConfig, {"kind": "camera", "path": "rtsp://cam.local/ir"})
    source = LiveCameraSource(config, "ir", time.monotonic(), open_capture=lambda _url: _StreamTimedCamera(buffered=30))
    stop = threading.Event()
    frames = source.frames(stop)
    first = [next(frames) for _ in range(4)]
    stop.set()
    # The whole backlog, then half a second of live frames while the delay proved steady.
    assert 30 + 14 <= source.stale <= 30 + 17, source.stale
    times = [t for _, t, _ in first]
    assert all(abs(b - a - 1 / 30) < 0.005 for a, b in zip(times, times[1:])), times  # stream times, not arrival jitter


class _BurstyCamera:
    """A camera that stamps each frame (``CAP_PROP_POS_MSEC``) but delivers ``burst`` frames
    at a time, when the last of them is due: the first of a burst is (burst - 1) frames late."""

    def __init__(self, fps: float, burst: int, seed: int):
        self.fps, self.burst = fps, burst
        self._start, self._next, self._last = time.monotonic(), 0, 0
        self._frames = [marked_frame(i, 64, 48, seed) for i in range(MARKS)]

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def read(self):
        i = self._next
        release = self._start + ((i // self.burst) * self.burst + self.burst - 1) / self.fps
        time.sleep(max(0.0, release - time.monotonic()))
        self._last, self._next = i, i + 1
        return True, self._frames[i % MARKS].copy()

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else self._last * 1000 / self.fps if prop == cv2.CAP_PROP_POS_MSEC else 0.0

    def release(self) -> None:
        pass


def test_a_bursty_camera_is_paired_by_its_own_times_and_queues_stay_bounded(lite):
    cameras = {0: _BurstyCamera(fps=30, burst=8, seed=1), 1: _BurstyCamera(fps=30, burst=1, seed=2)}  # visible: steady
    collect = Collect()
    summary = run_pipeline(live_config(1 / 60, duration_s=3.0, max_delay_s=0.3), lite, extra_sinks=[collect.sink()],
                           open_capture=cameras.__getitem__)
    # Past the first burst (whose times the clock could not know yet), every pair holds the
    # same source frame, although the IR frames arrived up to 7 frames (233 ms) late.
    settled = [f for f in collect.frames if f.meta.vi_index >= 16]
    assert len(settled) >= 10, summary.report
    marks = [(read_mark(f.ir), read_mark(f.visible)) for f in settled]
    assert all(ir == vi for ir, vi in marks), [(m, round(f.meta.t_ir, 3), round(f.meta.t_vi, 3), f.meta.ir_index, f.meta.vi_index) for m, f in zip(marks, settled)]
    depths = summary.report.split("largest queue depths:")[1].splitlines()[0]
    assert all(int(depth) <= int(bound) for depth, bound in re.findall(r"(\d+)/(\d+)", depths)), depths


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), 11.0])
def test_max_delay_must_be_a_sane_duration(value):
    from ldfusion.errors import ConfigError

    # NaN and inf are refused by the loader's finite-number rule, the rest by the key's range.
    with pytest.raises(ConfigError, match="max_delay_s"):
        live_config(1 / 60, duration_s=1.0, max_delay_s=value)


def test_a_camera_reports_its_frame_size_when_it_knows_it():
    """The size a camera states on opening is what the fusion stage warms up for on CUDA;
    a driver that states none (0) leaves it to the first frame."""
    config = from_dict(SourceConfig, {"kind": "camera", "path": "0"})
    camera = FakeCamera(30, width=80, height=60)
    assert LiveCameraSource(config, "ir", time.monotonic(), open_capture=lambda _id: camera).size == (80, 60)
    silent = FakeCamera(30)
    silent.width = silent.height = 0
    assert LiveCameraSource(config, "ir", time.monotonic(), open_capture=lambda _id: silent).size is None


def test_a_recording_given_as_a_camera_is_delivered_at_its_own_rate(tmp_path):
    """OpenCV decoded it as fast as it could: two such cameras drifted apart and fused frames
    seconds apart. Its frames now come at the recording's pace and carry its timing."""
    from tests.pipeline_helpers import marked_video

    clip = marked_video(tmp_path / "cam.mp4", 12, 20)  # 0.6 s of frames at 20 fps
    config = from_dict(SourceConfig, {"kind": "camera", "path": str(clip)})
    source = LiveCameraSource(config, "ir", time.monotonic())
    stop = threading.Event()
    frames = source.frames(stop)
    start = time.monotonic()
    stamps = [next(frames)[1] for _ in range(10)]
    elapsed = time.monotonic() - start
    stop.set()
    source.close()
    assert elapsed >= 0.4  # ten frames at 20 fps take 0.45 s (decoding them takes a few ms)
    steps = np.diff(stamps)
    assert np.all(steps > 0.03) and np.all(steps < 0.08), steps  # each 50 ms after the last


@pytest.mark.parametrize("suffix", [".mp4", ".ts", ".h264"])
def test_a_recording_given_as_a_camera_starts_again_at_its_end_without_a_gap(tmp_path, caplog, suffix):
    """It was reopened as after an outage: a warning each time round and half a second without
    frames. (A seek back instead read nothing from MPEG-TS with B-frames or raw H.264, or landed
    on the next keyframe.) A raw stream has no frame times: it was delivered as fast as it
    decoded, and at OpenCV's 25 fps rather than the 20 its bitstream states."""
    from ldfusion.video import VideoWriter

    clip = tmp_path / f"cam{suffix}"
    with VideoWriter(clip, 20, crf=18, preset="medium", keyint=4) as writer:  # medium: B-frames
        for index in range(6):  # 0.3 s at 20 fps: 30 frames go round five times
            writer.write_image(marked_frame(index, 64, 48, 0))
    source = LiveCameraSource(from_dict(SourceConfig, {"kind": "camera", "path": str(clip)}), "ir", time.monotonic())
    stop = threading.Event()
    give_up = threading.Timer(10.0, stop.set)  # a camera that went quiet must fail the test, not hang it
    give_up.start()
    with caplog.at_level(logging.WARNING):
        got = list(itertools.islice(source.frames(stop), 30))
    give_up.cancel()
    source.close()
    assert len(got) == 30 and source.outages == 0 and not caplog.records
    assert [read_mark(planes_to_image(planes)) for _, _, planes in got] == [i % 6 for i in range(30)]
    steps = np.diff([t for _, t, _ in got])
    # A frame period apart; going round, up to one more where the file is opened again (its
    # first frame's time comes out one frame late), against the 0.5 s of an outage before.
    period = 1.0 / 20
    assert source.rate == 20
    assert np.all(steps > 0.6 * period) and np.all(steps < 2.4 * period), (period, steps)
    assert np.median(steps) == pytest.approx(period, rel=0.2)


def _signal_later(seconds: float, sig: int = signal.SIGINT) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), sig))
    timer.start()
    return timer


def test_ctrl_c_while_a_camera_does_not_answer_its_open_ends_the_run_at_once(lite):
    """The open blocked Ctrl-C for the camera's whole read_timeout_s (40 s in one try), and the
    run then exited 2 with the camera's error instead of 130."""
    def opening_that_hangs(camera):
        time.sleep(20)  # FFmpeg waiting on a server that accepts and never answers
        return FakeCamera(fps=30)

    timer = _signal_later(0.5)
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(live_config(1 / 60, duration_s=5.0), lite, open_capture=opening_that_hangs)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 3.0


class _StuckCamera(FakeCamera):
    """Delivers ``fail_after`` frames, then its read never returns (a server gone silent)."""

    def read(self):
        if self.delivered >= 10:
            time.sleep(60)
        return super().read()


def test_a_second_ctrl_c_while_a_reader_is_stuck_in_its_camera_ends_the_run_at_once(lite, caplog):
    """The first Ctrl-C stops; the run then waited 10 s for the stuck reader, and a second
    Ctrl-C meanwhile was not acted on."""
    cameras = {0: _StuckCamera(fps=30, seed=1), 1: FakeCamera(fps=30, seed=2)}
    first, second = _signal_later(1.5), _signal_later(2.5)
    start = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):  # raised once the run is closed
            run_pipeline(live_config(1 / 60, duration_s=20.0), lite, open_capture=cameras.__getitem__)
    finally:
        first.cancel(), second.cancel()
    assert time.monotonic() - start < 5.0
    assert "SIGINT again: aborting" in caplog.text


def _replay(tmp_path, n: int = 24, rate: float = 30.0):
    ir = marked_video(tmp_path / "ir.mp4", n, rate, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", n, rate, seed=2)
    return make_config(ir, vi, run={"mode": "live"}), n


def _ir_first_frame_late(monkeypatch, seconds: float) -> None:
    """The IR decoder delivers its first frame ``seconds`` after the visible one's."""
    from pipeline.sources import VideoFileSource

    frames = VideoFileSource.frames

    def late_ir(self, stop):
        if self.kind == "ir":
            time.sleep(seconds)
        yield from frames(self, stop)

    monkeypatch.setattr(VideoFileSource, "frames", late_ir)


def test_a_recording_replayed_live_pairs_every_frame_however_long_start_up_takes(tmp_path, lite, monkeypatch):
    """The pairing judged a frame by the time since the run's clock started, the replay by the
    time since its first frame: after a start-up longer than the slop plus max_delay (a CUDA
    warm-up takes seconds) a visible frame was judged on arrival, and an IR frame arriving a
    moment after it was too late. An H200 run paired none of 205."""
    from pipeline.runner import Pipeline

    start_threads = Pipeline._start_threads
    monkeypatch.setattr(Pipeline, "_start_threads", lambda self, *args: time.sleep(0.6) or start_threads(self, *args))
    _ir_first_frame_late(monkeypatch, 0.03)  # well inside max_delay (0.1 s)
    config, n = _replay(tmp_path)
    summary = run_pipeline(config, lite)
    assert summary.frames_out == n and summary.unpaired == 0
    assert "camera outages" not in summary.report  # recordings: no camera to report on


def test_the_two_recordings_of_a_live_replay_play_in_step_when_one_opens_late(tmp_path, lite, monkeypatch):
    """Each reader started its own clock at its first frame, so a decoder slow to deliver its
    first frame put that recording behind the other for the whole run."""
    _ir_first_frame_late(monkeypatch, 0.3)
    config, n = _replay(tmp_path, n=36)
    summary = run_pipeline(config, lite)
    assert summary.frames_out >= n - 10  # the late start's frames may go, but not the rest of the run


def test_a_slower_follower_camera_drops_no_pair_when_fusion_keeps_up(tmp_path, lite):
    """A 9 fps IR camera under a 30 fps visible one: each IR frame decides three or four
    visible frames at once, and the live paired queue (one batch, the oldest dropped) threw
    all but the last away: 76 of 119 pairs dropped with fusion idle, output at 10.8 fps."""
    ir = marked_video(tmp_path / "ir.mp4", 18, 9, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 60, 30, seed=2)
    summary = run_pipeline(make_config(ir, vi, run={"mode": "live"}, model={"batch_size": 1}), lite)
    (stream,) = summary.streams
    assert stream.frames_out >= 50 and summary.dropped <= 1, summary.report


def test_a_live_batch_reaches_every_sink_whole(tmp_path, lite):
    """The sinks' live queues held run.live_queue_size (2) frames, and a fused batch of 4 came
    at once: frames were dropped with the sink all but idle. (Batches form here because the
    9 fps IR camera releases visible frames three or four at a time.)"""
    ir = marked_video(tmp_path / "ir.mp4", 18, 9, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 60, 30, seed=2)
    written = []
    sink = CallbackSink(lambda frame: time.sleep(0.005) or written.append(frame))  # 20 ms a batch of 4, one every 111 ms
    summary = run_pipeline(make_config(ir, vi, run={"mode": "live"}, model={"batch_size": 4}), lite, extra_sinks=[sink])
    assert summary.dropped <= 1 and len(written) >= 50, summary.report


def test_a_recording_beside_a_camera_in_one_stream_is_paired_in_step(tmp_path, lite, monkeypatch):
    """One side a camera (here a recording given as one), the other a recording replayed:
    the camera's times count from the run's clock origin, the recording's from when the
    recordings start playing, after start-up. Every pair joined frames the whole start-up
    apart (0.13 s here, seconds after a CUDA warm-up), and exited 0."""
    from pipeline.runner import Pipeline

    start_threads = Pipeline._start_threads
    monkeypatch.setattr(Pipeline, "_start_threads", lambda self, *args: time.sleep(0.4) or start_threads(self, *args))
    ir = marked_video(tmp_path / "ir.mp4", 45, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 45, 30, seed=2)
    config = make_config(ir, vi, run={"mode": "live"}, model={"batch_size": 1}, stream={"ir": {"kind": "camera", "path": str(ir)}})
    collect = Collect()
    run_pipeline(config, lite, extra_sinks=[collect.sink()])
    apart = [abs(frame.meta.ir_index - frame.meta.vi_index) for frame in collect.frames]
    assert len(apart) >= 40 and max(apart) <= 1, apart


def test_a_recording_replayed_with_a_long_offset_keeps_its_first_pairs(tmp_path, lite):
    """An IR recording that starts 1.5 s into the visible one (offset_s 1.5) played its
    frames 1.5 s before their partners; the pairing holds 128 IR frames at most, so at 120 fps
    the first partners were gone when their visible frames came: 13 of 30 pairs lost."""
    ir = marked_video(tmp_path / "ir.mp4", 300, 120, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 75, 30, seed=2)
    config = make_config(ir, vi, run={"mode": "live"}, model={"batch_size": 1}, stream={"sync": {"offset_s": 1.5}})
    collect = Collect()
    run_pipeline(config, lite, extra_sinks=[collect.sink()])
    paired = [(frame.meta.vi_index, frame.meta.ir_index) for frame in collect.frames]
    assert len(paired) >= 28, paired
    assert all(abs(ir_index - (vi_index / 30 - 1.5) * 120) <= 2 for vi_index, ir_index in paired), paired  # the right partners


def test_an_ir_recording_that_starts_first_plays_its_lead_in_real_time(tmp_path, lite):
    """offset_s -1 (the IR recording starts a second before the visible one): played from the
    start, its first second came at once, and the camera queue counted 29 frames as dropped."""
    ir = marked_video(tmp_path / "ir.mp4", 90, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 60, 30, seed=2)
    config = make_config(ir, vi, run={"mode": "live"}, model={"batch_size": 1}, stream={"sync": {"offset_s": -1.0}})
    collect = Collect()
    summary = run_pipeline(config, lite, extra_sinks=[collect.sink()])
    assert summary.dropped <= 1 and len(collect.frames) >= 58, summary.report
    assert all(frame.meta.ir_index == frame.meta.vi_index + 30 for frame in collect.frames)


@pytest.mark.parametrize("offset, warned", [(None, True), (-0.1, False), (0.0, False)])
def test_cameras_at_other_rates_with_no_time_offset_are_warned_about(lite, caplog, offset, warned):
    """A camera delivers a number of its own frames late (about two through FFmpeg's RTSP
    client): real 9 and 30 fps RTSP cameras of one scene paired every frame 155 ms apart, with
    no word, while the README said the offset is 0 for alike cameras. An offset_s of 0 set in
    the config is the user's statement, not an omission."""
    cameras = {0: FakeCamera(fps=15, seed=1), 1: FakeCamera(fps=30, seed=2)}
    data = to_dict(live_config(1 / 30, duration_s=0.5))
    data["streams"][0]["sync"]["offset_s"] = offset
    with caplog.at_level(logging.WARNING):
        run_pipeline(from_dict(PipelineConfig, data), lite, open_capture=cameras.__getitem__)
    assert ("no time offset is set" in caplog.text) is warned


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_run_pipeline_raises_the_ctrl_c_that_stopped_it_once_its_outputs_are_closed(tmp_path, lite, signum, raised):
    """A script running several configs went on to the next after a Ctrl-C: run_pipeline
    returned normally with stopped_by SIGINT. The run still stops as the command does (what
    was read is fused and written, summary.json says so), and the interrupt is raised then."""
    import json

    config, n = _replay(tmp_path, n=90)
    data = to_dict(config)
    data["run"]["out_dir"] = str(tmp_path / "out")
    data["sinks"] = [{"kind": "mp4", "path": "o.mp4"}]
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signum))
    timer.start()
    try:
        with pytest.raises(raised):
            run_pipeline(from_dict(PipelineConfig, data), lite)
    finally:
        timer.cancel()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped_by"] == signal.Signals(signum).name and 0 < summary["frames_out"] < n

