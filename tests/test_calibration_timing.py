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
