"""Temporal metrics: brightness flicker and the flow-based warping error on small synthetic clips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ldfusion.temporal_metrics import TEMPORAL_NAMES, TemporalMeter, consistent_backward_map, temporal_metrics

H, W, FRAMES = 80, 96, 6


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A smooth random texture larger than a frame, so shifted crops look like camera motion."""
    rng = np.random.default_rng(7)
    field = cv2.GaussianBlur(rng.normal(size=(H + 40, W + 40)).astype(np.float32), (0, 0), 2.0)
    return (field - field.min()) / (field.max() - field.min()) * 200 + 20


def panning(texture: np.ndarray, step: int) -> list[np.ndarray]:
    return [texture[10 : 10 + H, 10 + step * t : 10 + step * t + W].copy() for t in range(FRAMES)]


def test_a_static_clip_has_no_flicker_and_no_warping_error(texture):
    vi = [texture[:H, :W]] * FRAMES
    ir = [255 - texture[:H, :W]] * FRAMES
    fused = [(a + b) / 2 for a, b in zip(vi, ir)]
    scores = temporal_metrics(fused, ir, vi)
    assert scores.frames == FRAMES
    for name in TEMPORAL_NAMES:
        expected = 1.0 if name == "warp_valid" else 0.0
        assert getattr(scores, name) == pytest.approx(expected, abs=1e-6), name


def test_a_brightness_pumping_fusion_on_a_static_scene_flickers_by_its_step(texture):
    vi = [texture[:H, :W]] * FRAMES
    ir = [255 - texture[:H, :W]] * FRAMES
    fused = [vi[0] + (15.0 if t % 2 else 0.0) for t in range(FRAMES)]
    scores = temporal_metrics(fused, ir, vi)
    assert scores.flicker_fused == pytest.approx(15.0, abs=1e-4)
    assert scores.flicker_excess == pytest.approx(15.0, abs=1e-4)
    assert scores.flicker_vi == scores.flicker_ir == 0.0
    assert scores.warp_error_fused == pytest.approx(15.0, abs=1e-3)


def test_a_fusion_following_a_source_brightening_adds_no_excess_flicker(texture):
    vi = [texture[:H, :W] + 4.0 * t for t in range(FRAMES)]  # the visible scene brightens steadily
    ir = [texture[:H, :W]] * FRAMES
    scores = temporal_metrics(vi, ir, vi)
    assert scores.flicker_fused == pytest.approx(4.0, abs=1e-4)
    assert scores.flicker_excess == pytest.approx(0.0, abs=1e-4)


def test_warping_follows_the_motion_of_a_shifted_copy(texture):
    vi = panning(texture, step=2)  # the camera pans 2 px per frame
    ir = [255 - v for v in vi]
    steady = temporal_metrics(vi, ir, vi)
    # The flow compensates the motion: the error is far below the raw frame difference.
    raw_difference = np.mean([np.abs(b - a).mean() for a, b in zip(vi, vi[1:])])
    assert steady.warp_error_vi < 0.2 * raw_difference
    assert steady.warp_error_fused == pytest.approx(steady.warp_error_vi, abs=1e-4)
    assert 0.8 < steady.warp_valid < 1.0  # the columns entering the frame have no past

    flickering = temporal_metrics([v + (10.0 if t % 2 else 0.0) for t, v in enumerate(vi)], ir, vi)
    assert flickering.warp_error_fused > steady.warp_error_fused + 8.0


def test_consistency_check_rejects_flows_that_disagree():
    backward = np.zeros((H, W, 2), np.float32)
    backward[..., 0] = -2.0  # current pixel came from 2 px to the left
    forward = np.zeros((H, W, 2), np.float32)
    forward[..., 0] = 2.0  # and the forward flow agrees
    _, _, valid = consistent_backward_map(backward, forward)
    assert valid[:, 2:].all() and not valid[:, :2].any()  # the first columns land outside
    forward[H // 2 :, :, 0] = -5.0  # the lower half disagrees: an occlusion
    _, _, valid = consistent_backward_map(backward, forward)
    assert valid[: H // 2, 2:].all() and not valid[H // 2 :].any()


def test_meter_streams_and_checks_its_inputs(texture):
    meter = TemporalMeter()
    assert meter.result().frames == 0
    frame = texture[:H, :W]
    meter.update(frame, frame, frame)
    with pytest.raises(ValueError, match="differ in size"):
        meter.update(frame, frame[:-1], frame)
    with pytest.raises(ValueError, match="size changed"):
        meter.update(frame[:-2], frame[:-2], frame[:-2])
    with pytest.raises(ValueError, match="frame counts"):
        temporal_metrics([frame] * 2, [frame] * 3, [frame] * 2)
