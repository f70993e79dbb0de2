"""Live mode against two real RTSP cameras (GStreamer's rtsp-server on 127.0.0.1).

``ldfusion run`` reads both streams, fuses, writes a side-by-side MP4 and publishes on
ZeroMQ; mid-run the IR server is killed and started again. Each served frame carries its
frame number (a binary code in its top-left corner; frame n is due at epoch + n / fps on
the wall clock for both servers), so the IR and visible panels of every output frame tell
which source frames were paired.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ldfusion.color import planes_to_image
from ldfusion.video import VideoReader
from pipeline import cli
from pipeline.config import SourceConfig, load_pipeline_config
from pipeline.frames import VISIBLE
from pipeline.sources import LiveCameraSource, open_opencv_capture
from pipeline.subscriber import Subscriber
from tests.conftest import REPO_ROOT, SHARED_DATA
from tests.gst_rtsp_server import write_code
from tests.rtsp_server import RtspCamera, free_port, read_frame_number, unavailable_reason, write_clips

FPS = 15.0
WIDTH, HEIGHT = 320, 240  # the M3SVD clips scaled down: the live behaviour is the same, CI's CPU cost a quarter
SECRET = "s3cr3t-Pa55"  # in the camera URLs: must never reach a log, an error or a saved file
CREDENTIALS = f"operator:{SECRET}"


@pytest.fixture(scope="module")
def rtsp_cameras(tmp_path_factory):
    """Two looping RTSP cameras (IR at /ir, visible at /visible) sharing one frame clock."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    m3svd = SHARED_DATA / "video" / "m3svd"  # without the shared data: a rendered pair
    folder = tmp_path_factory.mktemp("rtsp")
    ir_raw, vi_raw, _ = write_clips(folder, m3svd if (m3svd / "infrared").is_dir() else None, frames=60, width=WIDTH, height=HEIGHT)
    epoch = time.time()
    cameras = RtspCamera(ir_raw, "/ir", FPS, epoch, WIDTH, HEIGHT), RtspCamera(vi_raw, "/visible", FPS, epoch, WIDTH, HEIGHT)
    try:
        for camera in cameras:
            camera.start()
        yield cameras
    finally:
        for camera in cameras:
            camera.stop()


def _write_config(path: Path, ir: RtspCamera, vi: RtspCamera, endpoint: str, duration_s: float) -> Path:
    # A read that waits 2 s is an outage: short enough to see the 3-s one, long enough that a
    # busy 2-core CI machine does not stall a healthy camera past it (1 s did, once in a while).
    camera = {"kind": "camera", "read_timeout_s": 2.0, "reconnect_backoff_s": 0.25, "reconnect_max_s": 1.0}
    config = {
        "streams": [{
            "id": "rig",
            "ir": {**camera, "path": ir.url(CREDENTIALS)},
            "visible": {**camera, "path": vi.url(CREDENTIALS)},
        }],
        "model": {"device": "cpu", "batch_size": 1, "max_wait_ms": 5},
        "sinks": [
            {"kind": "mp4", "path": "{stream}.mp4", "content": "side_by_side", "preset": "ultrafast"},
            {"kind": "zmq", "endpoint": endpoint, "hwm": 1000},
        ],
        "run": {"mode": "live", "duration_s": duration_s, "stats_interval_s": 2.0, "progress": False},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _panel_numbers(mp4: Path, width: int) -> list[tuple[int | None, int | None]]:
    """(IR frame number, visible frame number) of each side-by-side frame (IR | visible | fused)."""
    numbers = []
    with VideoReader(mp4) as reader:
        for frame in reader:
            image = planes_to_image(frame.planes)  # (H, W, 3) RGB
            numbers.append((read_frame_number(image[:, :width]), read_frame_number(image[:, width : 2 * width])))
    return numbers


def _receive(endpoint: str, received: list, ready: threading.Event) -> None:
    with Subscriber(endpoint, "fused", timeout_s=20, hwm=1000) as subscriber:
        ready.set()
        received.extend(header for header, _ in subscriber)


def test_live_rtsp_run_survives_an_ir_outage_and_pairs_matching_frames(rtsp_cameras, tmp_path, random_weights, capfd):
    ir, vi = rtsp_cameras
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = _write_config(tmp_path / "live.yaml", ir, vi, endpoint, duration_s=18.0)
    received: list[dict] = []
    ready = threading.Event()
    threading.Thread(target=_receive, args=(endpoint, received, ready), daemon=True).start()
    ready.wait(5)
    outage: dict[str, float] = {}
    run_over = threading.Event()

    def ir_outage() -> None:  # the IR camera loses power for 3 s, 4 s after the first fused frame
        # Counted from the first frame out, not from the start: on a loaded machine, loading
        # and exporting the network can take longer than a fixed delay, and a camera gone
        # before the run opens it is a start-up error, not an outage.
        while not received and not run_over.wait(0.05):
            pass
        if not received:
            return  # the run ended without delivering; the assertions below say why
        time.sleep(4.0)
        outage["stopped"] = time.time()
        ir.stop()
        time.sleep(3.0)
        ir.start()
        outage["restarted"] = time.time()

    outage_thread = threading.Thread(target=ir_outage, daemon=True)
    outage_thread.start()
    out = tmp_path / "out"
    code = cli.main([str(config), "--weights", str(random_weights["ld-lite"]), "--out", str(out)])
    run_over.set()
    outage_thread.join(15)  # before the fixture's teardown, even when the run failed early
    output = capfd.readouterr()
    assert code == 0, output.err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    stream = summary["streams"][0]

    # Frames flowed from both servers, and out to both sinks.
    assert stream["read_ir"] > 30 and stream["read_vi"] > 60, summary["report"]
    assert summary["frames_out"] > 10 and len(received) > 10, summary["report"]
    # The outage was seen, logged and counted; the IR camera came back; the visible one never left.
    camera_log = "\n".join(line for line in output.err.splitlines() if "camera" in line)  # says when, if this fails
    assert stream["outages_ir"] == 1 and stream["reconnects_ir"] == 1, (summary["report"], camera_log, outage)
    assert stream["outages_vi"] == 0 and stream["reconnects_vi"] == 0, (summary["report"], camera_log, outage)
    assert "outage 1: no frame" in output.err and "delivers again" in output.err
    assert "camera outages 1/0 (ir/vi), reconnects 1/0" in output.out

    # Every output frame pairs matching source frames, before and after the outage (the
    # slop at 15 fps is 33 ms: the nearest frame, at most one frame period off).
    numbers = _panel_numbers(out / "rig.mp4", WIDTH)
    assert len(numbers) == summary["frames_out"]  # the MP4 is playable: PyAV decodes every frame
    assert all(n_ir is not None and n_vi is not None for n_ir, n_vi in numbers), numbers
    gaps = [n_vi - n_ir for n_ir, n_vi in numbers]
    assert all(abs(gap) <= 1 for gap in gaps), gaps
    assert gaps.count(0) >= 0.8 * len(gaps), (numbers, outage, summary["report"])
    # Pause policy: while the IR camera was away no frame went out (nothing stale was
    # paired with the visible frames of that time); pairing resumed after it came back.
    stopped, restarted = (vi.frame_due(outage[key]) for key in ("stopped", "restarted"))
    during = [n_vi for _, n_vi in numbers if stopped + FPS * 0.5 < n_vi < restarted]
    after = [n_vi for _, n_vi in numbers if n_vi > restarted]
    assert not during, (during, stopped, restarted)
    assert len(after) >= 5, (numbers, restarted)

    # No queue grew past its bound (the camera queues keep the newest frames).
    depths = re.findall(r"(\S+) (\d+)/(\d+)", summary["report"].split("largest queue depths:")[1].splitlines()[0])
    assert depths and all(int(depth) <= int(bound) for _, depth, bound in depths), depths
    assert np.isfinite(summary["latency_ms_p99"]) and summary["latency_ms_p99"] < 5000, summary["report"]

    # The password never left the config file the user wrote.
    saved = (out / "config.yaml").read_text()
    assert "operator" not in saved and "***@127.0.0.1" in saved
    for text in (output.out, output.err, saved, (out / "summary.json").read_text()):
        assert SECRET not in text


class _DropsOnce:
    """A real RTSP capture whose ``fail_at``-th read fails once: a network blip on the
    client's side, while the camera (the server) keeps running."""

    def __init__(self, capture, fail_at: int) -> None:
        self._capture, self._left = capture, fail_at

    def read(self):
        self._left -= 1
        return (False, None) if self._left == 0 else self._capture.read()

    def __getattr__(self, name):
        return getattr(self._capture, name)


def test_a_camera_that_drops_its_connection_gets_frames_again_from_the_running_server(rtsp_cameras):
    _, vi = rtsp_cameras
    config = SourceConfig(kind="camera", path=vi.url(), read_timeout_s=2.0, reconnect_backoff_s=0.25, reconnect_max_s=1.0)
    opened: list[int] = []

    def open_capture(url):
        opened.append(1)
        capture = open_opencv_capture(url, config.read_timeout_s)
        return _DropsOnce(capture, fail_at=90) if len(opened) == 1 else capture

    source = LiveCameraSource(config, VISIBLE, time.monotonic(), open_capture=open_capture)
    stop = threading.Event()
    give_up = threading.Timer(30.0, stop.set)  # a source that never comes back must not hang the test
    give_up.start()
    numbers, times, lags = [], [], []  # lags: frames between the one read and the one the server has due
    try:
        for _, t, planes in source.frames(stop):
            numbers.append(read_frame_number(planes_to_image(planes)))
            times.append(t)
            lags.append(vi.frame_due(time.time()) - numbers[-1])
            if source.reconnects and len(numbers) >= 120:
                break
    finally:
        give_up.cancel()
        source.close()
    assert (source.outages, source.reconnects, len(opened)) == (1, 1, 2)
    # Back within a few seconds of the blip (reopening and skipping the backlog take about
    # 2.5 s here), with frames due now: not the backlog, not frames from the future.
    gap = max(b - a for a, b in zip(times, times[1:]))
    assert gap < 6.0, gap
    assert all(a < b for a, b in zip(numbers, numbers[1:])), numbers
    # After the reconnect, frames due now: no further behind the server's clock than before the
    # blip, give or take a second, and none from the future. A loaded machine (the suite beside
    # other jobs) makes the reader itself lag, 0.7 s and once 5 s, before and after alike.
    before, after = lags[:85], lags[-10:]
    assert -0.5 * FPS < min(after) and max(after) < max(before) + FPS, (before, after)


def test_the_worked_rtsp_example_is_a_valid_live_config():
    config = load_pipeline_config(REPO_ROOT / "configs" / "live_rtsp_to_mp4.yaml")
    stream = config.streams[0]
    assert config.live and stream.ir.camera_id.startswith("rtsp://") and stream.visible.camera_id.startswith("rtsp://")
    assert {sink.kind for sink in config.sinks} == {"mp4", "zmq"}


def test_frame_numbers_survive_lossy_coding_and_are_not_read_from_plain_pictures(tmp_path):
    ir_raw, vi_raw, what = write_clips(tmp_path, None, frames=3, width=WIDTH, height=HEIGHT)  # no shared data: rendered
    size = WIDTH * HEIGHT * 3 // 2
    assert what.startswith("synthetic") and ir_raw.stat().st_size == vi_raw.stat().st_size == 3 * size
    plain = np.frombuffer(vi_raw.read_bytes()[:size], np.uint8).reshape(HEIGHT * 3 // 2, WIDTH)
    rgb = cv2.cvtColor(plain, cv2.COLOR_YUV2RGB_I420)
    assert read_frame_number(rgb) is None
    for n in (0, 1, 4660, 65535):
        frame = bytearray(plain.tobytes())
        write_code(frame, n, WIDTH, HEIGHT)
        marked = cv2.cvtColor(np.frombuffer(bytes(frame), np.uint8).reshape(HEIGHT * 3 // 2, WIDTH), cv2.COLOR_YUV2RGB_I420)
        _, jpeg = cv2.imencode(".jpg", marked, [cv2.IMWRITE_JPEG_QUALITY, 20])  # harsher than the streams' H.264
        decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        assert read_frame_number(decoded) == n
        assert read_frame_number(cv2.cvtColor(decoded, cv2.COLOR_BGR2GRAY)) == n
