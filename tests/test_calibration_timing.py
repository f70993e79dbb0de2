"""Time offset between two recordings from their motion energy."""

from __future__ import annotations

import numpy as np
import pytest

from ldfusion.errors import DataError
from calibration_helpers import moving_blobs, write_video

from calibration.fileformat import CalibrationError
from calibration.timing import MIN_CONFIDENCE, MotionSignal, estimate_offset, motion_energy, trimmed

FPS = 30


@pytest.fixture(scope="module")
def scene():
    return moving_blobs(120, seed=4)


@pytest.mark.parametrize("delay_frames", [7, -4])
def test_known_frame_offset_between_synthetic_streams(tmp_path, scene, delay_frames):
    """The infrared file's frame i shows what the visible file shows at frame i + delay.

    So an event stamped t in the infrared file is stamped t + delay/fps in the visible one,
    and the offset to add to infrared timestamps is +delay/fps. The infrared stream is also
    inverted, as a thermal camera may show the scene.
    """
    start = 10
    write_video(tmp_path / "vi.mp4", scene[start : start + 90], FPS)
    write_video(tmp_path / "ir.mp4", 1.0 - scene[start + delay_frames : start + delay_frames + 90], FPS)
    result = estimate_offset(motion_energy(tmp_path / "ir.mp4"), motion_energy(tmp_path / "vi.mp4"))
    print(f"delay {delay_frames} frames: estimated {result.offset_vi_frames:+.2f} frames, confidence {result.confidence:.2f}")
    assert result.offset_vi_frames == pytest.approx(delay_frames, abs=0.5)
    assert result.offset_s == pytest.approx(delay_frames / FPS, abs=0.5 / FPS)
    assert result.confidence >= MIN_CONFIDENCE


def test_offset_between_streams_with_different_frame_rates(tmp_path, scene):
    delay = 6
    write_video(tmp_path / "vi.mp4", scene[10:100], FPS)
    write_video(tmp_path / "ir.mp4", 1.0 - scene[10 + delay : 100 + delay : 2], FPS // 2)  # every other frame
    result = estimate_offset(motion_energy(tmp_path / "ir.mp4"), motion_energy(tmp_path / "vi.mp4"))
    assert result.ir_fps == pytest.approx(15) and result.vi_fps == pytest.approx(30)
    assert result.offset_vi_frames == pytest.approx(delay, abs=0.5)


def test_offset_of_a_camera_that_holds_each_frame_three_times(tmp_path, scene, caplog):
    """A 10 Hz thermal core sent at 30 fps: each new frame is followed by two repeats."""
    delay, long_scene = 6, moving_blobs(320, seed=5)
    write_video(tmp_path / "vi.mp4", long_scene[10:310], FPS)
    held = np.repeat(long_scene[10 + delay : 310 + delay : 3], 3, axis=0)
    write_video(tmp_path / "ir.mp4", 1.0 - held, FPS)
    with caplog.at_level("INFO", logger="calibration.timing"):
        result = estimate_offset(motion_energy(tmp_path / "ir.mp4"), motion_energy(tmp_path / "vi.mp4"))
    print(f"held: estimated {result.offset_vi_frames:+.2f} frames, confidence {result.confidence:.2f}")
    assert "ir.mp4 looks like a camera that holds frames" in caplog.text
    assert result.offset_vi_frames == pytest.approx(delay, abs=0.5)
    assert result.confidence >= MIN_CONFIDENCE


def test_a_scene_that_stops_moving_is_not_taken_for_held_frames(tmp_path, scene, caplog):
    """Runs of still frames longer than a held camera repeats stay in the signal, at their times."""
    still = np.concatenate([scene[10:40], np.repeat(scene[40:41], 20, axis=0), scene[41:81]])
    write_video(tmp_path / "still.mp4", still, FPS)
    with caplog.at_level("INFO", logger="calibration.timing"):
        signal = motion_energy(tmp_path / "still.mp4")
    assert "holds frames" not in caplog.text
    assert len(signal.times) == len(still) - 1


@pytest.mark.shared_data
def test_real_recording_offset(shared_data):
    """M3SVD pairs are synchronised: 0 s; then stamp the infrared 0.3 s early and find +0.3 s."""
    name = "0111_1716.mp4"
    ir = motion_energy(shared_data / "video" / "m3svd" / "infrared" / name, max_seconds=4.0)
    vi = motion_energy(shared_data / "video" / "m3svd" / "visible" / name, max_seconds=4.0)
    assert estimate_offset(ir, vi).offset_s == pytest.approx(0.0, abs=0.5 / vi.fps)
    early = MotionSignal(ir.times - 0.3, ir.energy, ir.fps, ir.size)
    assert estimate_offset(early, vi).offset_s == pytest.approx(0.3, abs=0.5 / vi.fps)


@pytest.mark.shared_data
@pytest.mark.parametrize("sent_fps", [30, 60])
def test_real_recording_from_a_9_hz_camera(tmp_path, shared_data, sent_fps):
    """M3SVD's infrared as a 9 Hz thermal core shows it: each sensor frame repeated until the
    next, sent at 30 or 60 fps. A new frame appears up to a sent frame after its capture, so
    the true offset is about -half a sent frame. Before held frames were taken out: 1.5
    frames off, confidence 0.17-0.33."""
    from ldfusion.video import VideoReader

    name = "0111_1716.mp4"
    with VideoReader(shared_data / "video" / "m3svd" / "infrared" / name, luma_only=True) as reader:
        sensor = [frame.planes.data[0].astype(np.float32) / 255 for frame in reader]
    sent = np.arange(int(len(sensor) * sent_fps / FPS))
    captured = np.floor(np.floor(sent * 9 / sent_fps) * FPS / 9 + 1e-6).astype(int)  # the newest sensor frame
    write_video(tmp_path / "held.mp4", np.stack([sensor[i] for i in captured]), sent_fps)
    vi = motion_energy(shared_data / "video" / "m3svd" / "visible" / name)
    result = estimate_offset(motion_energy(tmp_path / "held.mp4"), vi)
    assert result.offset_s == pytest.approx(-0.5 / sent_fps, abs=1.0 / FPS)
    assert result.confidence >= MIN_CONFIDENCE


@pytest.mark.shared_data
def test_a_short_keyframe_interval_is_not_taken_for_held_frames(tmp_path, shared_data, caplog):
    """Every 3rd frame a keyframe at crf 35: the frames between changed little, and the clip was
    taken for a held one (its offset 27 frames off; another clip's 1 frame)."""
    from ldfusion.video import VideoReader, VideoWriter

    name = "1230_1202.mp4"
    with VideoReader(shared_data / "video" / "m3svd" / "infrared" / name, luma_only=True) as reader, \
            VideoWriter(tmp_path / "g3.mp4", reader.rate, crf=35, preset="medium", keyint=3,
                        options={"bf": "0", "sc_threshold": "0"}) as writer:
        for frame in reader:
            writer.write_image(frame.planes.data[0])
    with caplog.at_level("WARNING", logger="calibration.timing"):
        result = estimate_offset(motion_energy(tmp_path / "g3.mp4"), motion_energy(shared_data / "video" / "m3svd" / "visible" / name))
    assert "holds frames" not in caplog.text
    assert result.offset_vi_frames == pytest.approx(0.0, abs=0.5)


@pytest.mark.shared_data
@pytest.mark.parametrize("delay", [-15, -7, 4, 15])
def test_real_recording_known_frame_delays(shared_data, delay):
    """A synchronised M3SVD pair with the infrared delayed by whole frames: found within a frame, and trusted."""
    name = "1230_1202.mp4"
    ir = motion_energy(shared_data / "video" / "m3svd" / "infrared" / name)
    vi = motion_energy(shared_data / "video" / "m3svd" / "visible" / name)
    result = estimate_offset(*trimmed(ir, vi, delay), max_offset_s=20 / vi.fps)
    assert result.offset_vi_frames == pytest.approx(delay, abs=1.0)
    assert result.confidence >= MIN_CONFIDENCE


@pytest.mark.shared_data
def test_unrelated_recordings_and_out_of_range_delays_are_not_trusted(shared_data):
    """Wrong answers must say so: two different clips, and a true delay beyond --max-offset."""
    folder = shared_data / "video" / "m3svd"
    ir = motion_energy(folder / "infrared" / "0111_1716.mp4")
    vi = motion_energy(folder / "visible" / "0111_1716.mp4")
    other_vi = motion_energy(folder / "visible" / "0113_1714.mp4")
    assert estimate_offset(ir, other_vi).confidence < MIN_CONFIDENCE
    out_of_range = estimate_offset(*trimmed(ir, vi, 12), max_offset_s=5 / vi.fps)
    assert abs(out_of_range.offset_vi_frames - 12) > 1.0 and out_of_range.confidence < MIN_CONFIDENCE


def test_still_video_is_a_clear_error(tmp_path):
    still = np.full((30, 48, 64), 0.5, np.float32)
    write_video(tmp_path / "still.mp4", still, FPS)
    signal = motion_energy(tmp_path / "still.mp4")
    with pytest.raises(CalibrationError, match="no motion"):
        estimate_offset(signal, signal)


def test_unreadable_and_missing_videos(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(DataError, match="cannot (read|decode) video|no video stream|frame"):
        motion_energy(broken)
    with pytest.raises(DataError, match="video not found"):
        motion_energy(tmp_path / "nope.mp4")


def test_too_short_video(tmp_path, scene):
    write_video(tmp_path / "short.mp4", scene[:4], FPS)
    with pytest.raises(CalibrationError, match="need at least"):
        motion_energy(tmp_path / "short.mp4")


def test_the_offset_stays_within_max_offset(tmp_path, scene):
    """--max-offset 0.01 wrote time_offset_s 0.0167: the lag grid's nearest step and the sub-sample
    peak lay beyond the range. The true delay (5 frames, 0.167 s) lies beyond it: not trusted either."""
    write_video(tmp_path / "vi.mp4", scene[10:90], FPS)
    write_video(tmp_path / "ir.mp4", 1.0 - scene[15:95], FPS)
    ir, vi = motion_energy(tmp_path / "ir.mp4"), motion_energy(tmp_path / "vi.mp4")
    for limit in (0.01, 0.1):
        result = estimate_offset(ir, vi, max_offset_s=limit)
        assert abs(result.offset_s) <= limit, (limit, result.offset_s)
        assert result.confidence < MIN_CONFIDENCE and result.beyond_range
