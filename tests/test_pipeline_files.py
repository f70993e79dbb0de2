"""File-mode runs on tiny synthetic videos: MP4 output, rates, resolutions, registration,
time offsets, truncated and corrupt inputs, image folders, several streams."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from calibration.fileformat import Registration, save_registration
from pipeline import cli
from pipeline.frames import VISIBLE
from pipeline.runner import run_pipeline
from pipeline.sources import VideoFileSource
from tests.pipeline_helpers import (
    Collect,
    cpu_fuser,
    decodable_frames,
    make_config,
    marked_frame,
    marked_video,
    read_mark,
    read_video,
    texture,
    write_video,
)


@pytest.fixture(scope="module")
def lite(random_weights):
    return cpu_fuser(random_weights["ld-lite"])


def test_mp4_has_the_shorter_inputs_frames_rate_and_monotonic_pts(tmp_path, lite):
    ir = marked_video(tmp_path / "ir.mp4", 14, 25, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 12, 25, seed=2)
    collect = Collect()
    config = make_config(ir, vi, sinks=[{"kind": "mp4", "path": "{stream}.mp4"}], out_dir=tmp_path / "out")
    summary = run_pipeline(config, lite, extra_sinks=[collect.sink()])

    video = read_video(tmp_path / "out" / "cam0.mp4")
    assert len(video["frames"]) == 12 == summary.frames_out
    assert video["codec"] == "h264" and video["rate"] == 25
    assert all(b > a for a, b in zip(video["pts"], video["pts"][1:]))
    assert [float(p * video["time_base"]) for p in video["pts"]] == pytest.approx([i / 25 for i in range(12)])
    # The MP4 holds the fused frames, in order (H.264 at crf 18 changes them a little).
    for decoded, fused in zip(video["frames"], collect.frames):
        assert np.abs(decoded.astype(int) - fused.fused.astype(int)).mean() < 4
    assert summary.unpaired == 2 and summary.streams[0].unpaired_ir == 2
    assert summary.outputs == (str(tmp_path / "out" / "cam0.mp4"),)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames_out"] == 12
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["streams"][0]["ir"]["path"] == str(ir)


@pytest.mark.parametrize("ir_fps", [9, 60])
def test_different_frame_rates_pair_each_visible_frame_with_the_nearest_ir(tmp_path, lite, ir_fps):
    ir = marked_video(tmp_path / "ir.mp4", ir_fps + 1, ir_fps, seed=1)  # 0 .. 1 s
    vi = marked_video(tmp_path / "vi.mp4", 30, 30, seed=2)
    collect = Collect()
    config = make_config(ir, vi, sinks=[{"kind": "mp4", "path": "out.mp4"}], out_dir=tmp_path)
    summary = run_pipeline(config, lite, extra_sinks=[collect.sink()])

    video = read_video(tmp_path / "out.mp4")
    assert len(video["frames"]) == 30 and video["rate"] == 30  # the visible timeline
    for i, frame in enumerate(collect.frames):
        distance = abs(frame.meta.ir_index / ir_fps - i / 30)
        assert frame.meta.vi_index == i
        assert distance <= min(abs(j / ir_fps - i / 30) for j in range(ir_fps + 1)) + 1e-9  # nearest (ties: either)
        assert read_mark(frame.visible) == i and read_mark(frame.ir) == frame.meta.ir_index % 34  # the pixels agree
        assert abs(frame.meta.t_ir - frame.meta.t_vi) <= 0.5 / ir_fps + 1e-9
    used = len({f.meta.ir_index for f in collect.frames})
    assert summary.streams[0].unpaired_ir == ir_fps + 1 - used


def _scene_and_ir(width: int, height: int, window: tuple[int, int, int, int], ir_size: tuple[int, int]):
    import cv2

    scene = texture(width, height, seed=5)
    x, y, w, h = window
    ir = cv2.resize(scene[y : y + h, x : x + w], ir_size, interpolation=cv2.INTER_AREA)
    return scene, ir


def test_different_resolutions_are_registered_and_cropped(tmp_path, lite):
    # The visible camera sees 96x56; the IR camera sees the window x 8..88, y 4..52 at half resolution.
    scene, ir_image = _scene_and_ir(96, 56, (8, 4, 80, 48), (40, 24))
    ir = write_video(tmp_path / "ir.mp4", [ir_image] * 4, 30)
    vi = write_video(tmp_path / "vi.mp4", [scene] * 4, 30)
    H = [[2.0, 0.0, 8.5], [0.0, 2.0, 4.5], [0.0, 0.0, 1.0]]  # IR pixel -> visible pixel (pixel centres)
    calib = save_registration(tmp_path / "calib.yaml", Registration(np.array(H), (40, 24), (96, 56), model="affine"))

    def run(calibration, crop):
        collect = Collect()
        stream = {"registration": {"calibration": calibration, "crop": crop}}
        config = make_config(ir, vi, sinks=[{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path / str(crop), stream=stream)
        run_pipeline(config, lite, extra_sinks=[collect.sink()])
        frame = collect.frames[0]
        return frame, read_video(tmp_path / str(crop) / "o.mp4")["frames"][0].shape

    registered, mp4_shape = run(str(calib), True)
    assert registered.ir.shape == (48, 80) and mp4_shape == (48, 80, 3)  # the IR camera's field of view
    error = np.abs(registered.ir.astype(int) - registered.visible[:, :, 0].astype(int)).mean()
    assert error < 6  # only the IR camera's lower resolution differs

    unregistered, mp4_shape = run(None, False)  # no calibration: IR is only stretched to 96x56
    assert unregistered.ir.shape == (56, 96) and mp4_shape == (56, 96, 3)
    assert np.abs(unregistered.ir.astype(int) - unregistered.visible[:, :, 0].astype(int)).mean() > 2 * error


def test_known_ir_shift_is_fixed_by_the_calibration_file(tmp_path, lite):
    scene = texture(64, 48, seed=7)
    ir_image = np.roll(scene, shift=(-3, -5), axis=(0, 1))  # ir(x, y) = scene(x + 5, y + 3)
    ir = write_video(tmp_path / "ir.mp4", [ir_image] * 3, 30)
    vi = write_video(tmp_path / "vi.mp4", [scene] * 3, 30)
    shift = Registration(np.array([[1.0, 0, 5], [0, 1.0, 3], [0, 0, 1.0]]), (64, 48), (64, 48))
    calib = save_registration(tmp_path / "shift.yaml", shift)

    def mean_error(stream: dict) -> float:
        collect = Collect()
        run_pipeline(make_config(ir, vi, stream=stream), lite, extra_sinks=[collect.sink()])
        frame = collect.frames[0]
        return np.abs(frame.ir.astype(int) - frame.visible[:, :, 0].astype(int)).mean()

    assert mean_error({"registration": {"calibration": str(calib), "crop": True}}) < 1.0
    assert mean_error({}) > 10.0


def test_time_offset_comes_from_the_calibration_file(tmp_path, lite):
    # The IR camera started 0.1 s (3 frames) late: its frame i shows visible frame i + 3.
    ir = write_video(tmp_path / "ir.mp4", [marked_frame(i + 3, 64, 48, 1) for i in range(17)], 30)
    vi = marked_video(tmp_path / "vi.mp4", 20, 30, seed=2)
    calib = save_registration(tmp_path / "c.yaml", Registration(np.eye(3), (64, 48), (64, 48), time_offset_s=0.1))

    def marks(stream: dict) -> list[tuple[int, int]]:
        collect = Collect()
        run_pipeline(make_config(ir, vi, stream=stream), lite, extra_sinks=[collect.sink()])
        return [(read_mark(f.ir), read_mark(f.visible)) for f in collect.frames]

    synced = marks({"registration": {"calibration": str(calib)}})
    assert len(synced) == 17 and all(a == b for a, b in synced)
    assert all(b == a - 3 for a, b in marks({})[:5])  # without the offset they are 3 frames apart
    assert all(a == b for a, b in marks({"sync": {"offset_s": 0.1}}))  # the config may give it too


def test_truncated_file_ends_its_stream_with_a_warning(tmp_path, lite, caplog):
    full = marked_video(tmp_path / "full.mp4", 30, 30, seed=1)
    # faststart puts the index first, so the cut file opens and breaks off mid-stream.
    cut_source = write_video(tmp_path / "fs.mp4", [marked_frame(i, 64, 48, 1) for i in range(30)], 30,
                             container_options={"movflags": "faststart"})
    data = cut_source.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    readable = decodable_frames(cut)
    assert 0 < readable < 30

    with caplog.at_level(logging.WARNING):
        summary = run_pipeline(make_config(cut, full, sinks=[{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path), lite)
    assert summary.frames_out == readable
    assert len(read_video(tmp_path / "o.mp4")["frames"]) == readable  # the output is complete and plays
    assert f"cut.mp4 is truncated or damaged: read {readable} of 30 frame(s)" in caplog.text



def test_damaged_data_the_decoder_conceals_is_reported(tmp_path, lite, caplog):
    """Bytes flipped inside the coded frames: FFmpeg conceals the errors and decodes every frame,
    so nothing is cut short, but the damage is named instead of passing in silence."""
    source = write_video(tmp_path / "fs.mp4", [marked_frame(i, 64, 48, 1) for i in range(30)], 30,
                         container_options={"movflags": "faststart"})
    data = bytearray(source.read_bytes())
    for at in range(len(data) // 3, 2 * len(data) // 3, 97):
        data[at] ^= 0xFF
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    full = marked_video(tmp_path / "full.mp4", 30, 30, seed=1)

    with caplog.at_level(logging.WARNING):
        run_pipeline(make_config(damaged, full, sinks=[{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path), lite)
    assert "damaged.mp4 holds damaged data:" in caplog.text
    assert "decoded with errors the decoder concealed" in caplog.text


def test_recordings_joined_end_to_end_continue_one_timeline(tmp_path, lite, caplog):
    """Two MPEG-TS recordings concatenated byte for byte (each starting at pts 0, as `cat a.ts
    b.ts` makes them): the second half used to go back in time and be skipped, a warning a frame."""
    parts = [marked_video(tmp_path / f"part{k}.ts", 15, 30, seed=2, first=15 * k) for k in range(2)]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    ir = write_video(tmp_path / "ir.mp4", [marked_frame(i, 64, 48, 1) for i in range(30)], 30)
    collect = Collect()
    with caplog.at_level(logging.INFO):
        run_pipeline(make_config(ir, joined), lite, extra_sinks=[collect.sink()])
    marks = [(read_mark(f.ir), read_mark(f.visible)) for f in collect.frames]
    assert len(marks) == 30 and all(a == b for a, b in marks)
    assert "joined.ts: timestamps jump back" in caplog.text and "goes back in time" not in caplog.text


def _raw_stream(path: Path, codec: str, images: list[np.ndarray], rate: int) -> Path:
    """A raw elementary stream (no container: no timestamps), e.g. what a camera SDK dumps as .h264."""
    with av.open(str(path), "w", format=path.suffix[1:]) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = images[0].shape[1], images[0].shape[0]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_raw_h264_stream_is_timed_at_the_rate_it_states(tmp_path, lite):
    """FFmpeg stamps a raw .h264 at 25 fps whatever it holds: 30 fps content was paired with the
    wrong infrared frames ((4, 3), (5, 4), (10, 8), ...) and 5 of 30 frames were lost, exit 0."""
    visible = _raw_stream(tmp_path / "vi.h264", "libx264", [marked_frame(i, 64, 48, 2) for i in range(30)], 30)
    ir = write_video(tmp_path / "ir.mp4", [marked_frame(i, 64, 48, 1) for i in range(30)], 30)
    collect = Collect()
    run_pipeline(make_config(ir, visible), lite, extra_sinks=[collect.sink()])
    marks = [(read_mark(f.ir), read_mark(f.visible)) for f in collect.frames]
    assert len(marks) == 30 and all(a == b for a, b in marks)


def test_a_raw_stream_without_a_rate_says_which_it_assumes(tmp_path, caplog):
    """Raw MJPEG states no rate at all: the one it is timed at is named, not FFmpeg's silent 25."""
    path = _raw_stream(tmp_path / "vi.mjpeg", "mjpeg", [marked_frame(i, 64, 48, 2) for i in range(3)], 30)
    with caplog.at_level(logging.WARNING):
        source = VideoFileSource(path, VISIBLE)
        times = [t for _, t, _ in source.frames(threading.Event())]
    assert "vi.mjpeg does not state its frame rate; assuming 30 fps" in caplog.text
    assert times == pytest.approx([0, 1 / 30, 2 / 30])
    # A source's fps gives it (it was accepted and ignored), without the warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        times = [t for _, t, _ in VideoFileSource(path, VISIBLE, fps=24).frames(threading.Event())]
    assert times == pytest.approx([0, 1 / 24, 2 / 24]) and "does not state" not in caplog.text


def test_a_source_setting_another_kind_reads_is_refused():
    """read_timeout_s on a video file, decode on an image folder: accepted and ignored."""
    from ldfusion.config import from_dict
    from ldfusion.errors import ConfigError
    from pipeline.config import SourceConfig

    with pytest.raises(ConfigError, match=r"read_timeout_s is not a setting of video sources \(only camera sources read it\)"):
        from_dict(SourceConfig, {"kind": "video", "path": "a.mp4", "read_timeout_s": 2})
    with pytest.raises(ConfigError, match="decode is not a setting of images sources"):
        from_dict(SourceConfig, {"kind": "images", "path": "f", "fps": 10, "decode": "cpu"})

def _write_config(tmp_path: Path, ir: str, vi: str, **stream) -> Path:
    data = {
        "streams": [{"id": "cam0", "ir": {"kind": "video", "path": ir}, "visible": {"kind": "video", "path": vi}, **stream}],
        "sinks": [{"kind": "mp4", "path": "out.mp4"}],
        "run": {"progress": False, "out_dir": str(tmp_path)},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("corrupt", r"cannot read video .*junk\.mp4: .* \(corrupt, truncated or not a video\)"),
        ("empty", r"cannot read video .*empty\.mp4"),
        ("missing", r"video not found: .*nowhere\.mp4"),
        ("calibration_size", r"stream cam0: infrared frames are 64x48 but the calibration file .*calib\.yaml is for 32x24"),
        ("bad_calibration", r"calib\.yaml: missing key\(s\): H"),
        ("config_key", r"run\.yaml\.streams\[0\]: unknown key\(s\) slop"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, capsys, random_weights, problem, expected):
    good = str(marked_video(tmp_path / "good.mp4", 3, 30))
    ir, stream = str(marked_video(tmp_path / "ir.mp4", 3, 30, seed=5)), {}  # another file: one video for both is refused
    if problem == "corrupt":
        (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        ir = str(tmp_path / "junk.mp4")
    elif problem == "empty":
        (tmp_path / "empty.mp4").write_bytes(b"")
        ir = str(tmp_path / "empty.mp4")
    elif problem == "missing":
        ir = str(tmp_path / "nowhere.mp4")
    elif problem == "calibration_size":
        save_registration(tmp_path / "calib.yaml", Registration(np.eye(3), (32, 24), (64, 48)))
        stream = {"registration": {"calibration": str(tmp_path / "calib.yaml")}}
    elif problem == "bad_calibration":
        (tmp_path / "calib.yaml").write_text("version: 1\nsource_size: [64, 48]\ndestination_size: [64, 48]\n")
        stream = {"registration": {"calibration": str(tmp_path / "calib.yaml")}}
    elif problem == "config_key":
        stream = {"slop": 0.1}
    config = _write_config(tmp_path, ir, good, **stream)

    code = cli.main([str(config), "--weights", str(random_weights["ld-lite"]), "--device", "cpu", "-q"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("ldfusion run: error: "), err
    import re

    assert re.search(expected, err[0]), err[0]
    assert not (tmp_path / "out.mp4").exists()  # nothing half-written


def test_image_folders_use_the_configured_frame_rate(tmp_path, lite):
    from ldfusion.imageio import write_image

    for kind, seed in (("ir", 1), ("vi", 2)):
        (tmp_path / kind).mkdir()
        for i in range(6):
            image = marked_frame(i, 64, 48, seed, color=kind == "vi")
            write_image(tmp_path / kind / f"{i}.png", image)
    collect = Collect()
    stream = {"ir": {"kind": "images", "path": str(tmp_path / "ir"), "fps": 10},
              "visible": {"kind": "images", "path": str(tmp_path / "vi"), "fps": 10}}
    config = make_config("unused", "unused", sinks=[{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path, stream=stream)
    run_pipeline(config, lite, extra_sinks=[collect.sink()])
    video = read_video(tmp_path / "o.mp4")
    assert len(video["frames"]) == 6 and video["rate"] == 10
    assert [read_mark(f.ir) for f in collect.frames] == [read_mark(f.visible) for f in collect.frames] == list(range(6))


def test_several_streams_in_one_run(tmp_path, lite):
    streams = []
    for name, rate, n in (("a", 25, 8), ("b", 30, 11)):
        ir = marked_video(tmp_path / f"{name}_ir.mp4", n, rate, seed=1)
        vi = marked_video(tmp_path / f"{name}_vi.mp4", n, rate, seed=2)
        streams.append({"id": name, "ir": {"kind": "video", "path": str(ir)}, "visible": {"kind": "video", "path": str(vi)}})
    from ldfusion.config import from_dict
    from pipeline.config import PipelineConfig

    config = from_dict(PipelineConfig, {
        "streams": streams,
        "sinks": [{"kind": "mp4", "path": "{stream}.mp4"}, {"kind": "png", "path": "png/{stream}"}],
        "model": {"batch_size": 4, "max_wait_ms": 50},
        "run": {"out_dir": str(tmp_path / "out"), "progress": False},
    })
    summary = run_pipeline(config, lite)
    for name, rate, n in (("a", 25, 8), ("b", 30, 11)):
        video = read_video(tmp_path / "out" / f"{name}.mp4")
        assert len(video["frames"]) == n and video["rate"] == rate
        assert sorted(p.name for p in (tmp_path / "out" / "png" / name).iterdir()) == [f"{i:06d}.png" for i in range(n)]
    assert summary.frames_out == 19 and [s.frames_out for s in summary.streams] == [8, 11]


def test_without_sinks_frames_are_discarded(tmp_path, lite):
    ir = marked_video(tmp_path / "ir.mp4", 5, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 5, 30, seed=2)
    summary = run_pipeline(make_config(ir, vi), lite)
    assert summary.frames_out == 5 and summary.outputs == ()
    assert summary.fps > 0 and summary.latency_ms_p50 <= summary.latency_ms_p99


def test_max_frames_stops_each_stream(tmp_path, lite):
    ir = marked_video(tmp_path / "ir.mp4", 20, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 20, 30, seed=2)
    config = make_config(ir, vi, sinks=[{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path, run={"max_frames": 5})
    summary = run_pipeline(config, lite)
    assert summary.frames_out == 5 and len(read_video(tmp_path / "o.mp4")["frames"]) == 5
    assert summary.unpaired == 0  # frames read ahead and left over are not "unpaired"
    assert summary.stopped_by == "max_frames"  # it said null, as if the inputs had ended


def test_a_run_whose_inputs_end_before_max_frames_was_not_stopped_by_it(tmp_path, lite):
    ir = marked_video(tmp_path / "ir.mp4", 4, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 4, 30, seed=2)
    summary = run_pipeline(make_config(ir, vi, run={"max_frames": 5}), lite)
    assert summary.frames_out == 4 and summary.stopped_by is None


def test_fragmented_mp4_plays_too(tmp_path, lite):
    """Fragmented MP4 (for recordings that may be killed hard) holds the same frames."""
    ir = marked_video(tmp_path / "ir.mp4", 6, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 6, 30, seed=2)
    sinks = [{"kind": "mp4", "path": "frag.mp4", "fragmented": True}]
    run_pipeline(make_config(ir, vi, sinks=sinks, out_dir=tmp_path), lite)
    video = read_video(tmp_path / "frag.mp4")
    assert len(video["frames"]) == 6 and all(b > a for a, b in zip(video["pts"], video["pts"][1:]))


def test_video_readers_share_the_cores(tmp_path, lite, monkeypatch):
    """Each video reader gets the cores divided among the readers of the run (FFmpeg's own
    choice would give each a thread per core), and still decodes every frame."""
    import ldfusion.threads
    import ldfusion.video

    monkeypatch.setattr(ldfusion.threads, "available_cores", lambda: 4)
    counts = []
    original = ldfusion.video.VideoReader.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        counts.append(self._stream.codec_context.thread_count)

    monkeypatch.setattr(ldfusion.video.VideoReader, "__init__", spy)
    ir = marked_video(tmp_path / "ir.mp4", 6, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 6, 30, seed=2)
    summary = run_pipeline(make_config(ir, vi), lite)
    assert counts == [2, 2] and summary.frames_out == 6


def test_decoder_threads_divide_the_cores(monkeypatch):
    import ldfusion.threads

    for cores, readers, expected in ((2, 2, 1), (16, 2, 8), (1, 6, 1), (4, 3, 1), (8, 1, 8)):
        monkeypatch.setattr(ldfusion.threads, "available_cores", lambda cores=cores: cores)
        assert ldfusion.threads.decoder_threads(readers) == expected


def test_summary_json_counts_the_pairs_per_stream(tmp_path, lite):
    """The end-of-run table showed each stream's pairs; summary.json did not."""
    import json

    ir = marked_video(tmp_path / "ir.mp4", 6, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 4, 30, seed=2)
    run_pipeline(make_config(ir, vi, out_dir=tmp_path / "out"), lite)
    (stream,) = json.loads((tmp_path / "out" / "summary.json").read_text())["streams"]
    assert (stream["paired"], stream["frames_out"], stream["unpaired_ir"]) == (4, 4, 2)
