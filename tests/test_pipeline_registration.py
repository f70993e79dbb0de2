"""Registration: calibration-driven warps with grid_sample (checked against OpenCV), crops, size checks."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from calibration.fileformat import Registration
from ldfusion.color import planes_to_batch, planes_to_luma, planes_to_ycrcb
from ldfusion.errors import DataError
from ldfusion.video import Planes
from pipeline.registration import Registrar, common_field_of_view, plan_from_calibration
from tests.pipeline_helpers import texture


def register(registrar: Registrar, ir: np.ndarray, visible: np.ndarray, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """What the fusion worker does with one pair: (registered IR (h, w), visible Y, Cr, Cb (h, w, 3)) in 0..255."""
    ir_t = planes_to_luma([Planes.gray(ir)], device)
    vi_t = planes_to_batch([Planes.packed(visible)], device)
    ir_r, vi_r = registrar.apply(ir_t, vi_t)
    return (ir_r[0, 0] * 255).cpu().numpy(), (vi_r.full()[0].permute(1, 2, 0) * 255).cpu().numpy()


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def test_known_shift_is_undone():
    scene = texture(80, 60, seed=3)
    ir = np.ascontiguousarray(np.roll(scene, shift=(-3, -5), axis=(0, 1)))  # ir(x, y) = scene(x + 5, y + 3)
    visible = np.repeat(scene[:, :, None], 3, axis=2)
    registrar = Registrar("s", Registration(translation(5, 3), (80, 60), (80, 60)), "ir_to_visible", crop=True)
    ir_r, vi_r = register(registrar, ir, visible)
    assert ir_r.shape == vi_r.shape[:2] == (57, 75)  # the common field of view
    assert np.abs(ir_r - vi_r[:, :, 0]).max() < 1e-3
    assert np.abs(ir.astype(int) - scene.astype(int)).mean() > 10  # it was misregistered before


@pytest.mark.parametrize("warp", ["ir_to_visible", "visible_to_ir"])
@pytest.mark.parametrize("crop", [False, True])
def test_grid_sample_matches_opencv(warp, crop, device):
    """The device warp (grid_sample) gives OpenCV's frames, for either image moving."""
    H = np.array([[1.1, 0.05, 3.0], [-0.02, 1.05, 2.0], [1e-4, 2e-4, 1.0]])
    ir = np.kron(texture(50, 40, seed=1), np.ones((2, 2), np.uint8))  # 100x80
    visible = np.random.default_rng(0).integers(0, 256, (96, 120, 3), dtype=np.uint8)
    registrar = Registrar("s", Registration(H, (100, 80), (120, 96)), warp, crop, device=device)
    ir_r, vi_r = register(registrar, ir, visible, device)
    plan = registrar.plan
    vi_ycrcb = planes_to_ycrcb([Planes.packed(visible)])[0].permute(1, 2, 0).numpy() * 255  # (H, W, 3) float
    if warp == "ir_to_visible":
        ir_cv = cv2.warpPerspective(ir.astype(np.float32), plan.matrix, plan.fixed_size, flags=cv2.INTER_LINEAR)
        vi_cv = vi_ycrcb
    else:
        ir_cv = ir.astype(np.float32)
        vi_cv = cv2.warpPerspective(vi_ycrcb, plan.matrix, plan.fixed_size, flags=cv2.INTER_LINEAR, borderValue=(0, 127.5, 127.5))
    x, y, w, h = plan.crop or (0, 0, *plan.fixed_size)
    ir_cv, vi_cv = ir_cv[y : y + h, x : x + w], vi_cv[y : y + h, x : x + w]
    assert ir_r.shape == ir_cv.shape and vi_r.shape == vi_cv.shape
    # OpenCV interpolates with 5-bit fixed-point weights: allow about one grey level.
    assert np.abs(ir_r - ir_cv).max() <= 1.5
    assert np.abs(vi_r - vi_cv).max() <= 1.5


def test_different_resolutions_map_onto_the_visible_grid():
    """640x512-style IR onto a 1920x1080-style visible frame, scaled down 16x for speed."""
    H = np.array([[3.0, 0.0, 0.0], [0.0, 2.1, 0.0], [0.0, 0.0, 1.0]])
    registration = Registration(H, (40, 32), (120, 68), model="affine")
    registrar = Registrar("s", registration, "ir_to_visible", crop=False)
    ir_r, vi_r = register(registrar, texture(40, 32, 0), np.zeros((68, 120, 3), np.uint8))
    assert ir_r.shape == (68, 120) and vi_r.shape == (68, 120, 3)
    assert registrar.plan.output_size == (120, 68)


def test_frames_must_have_the_calibrated_size():
    registration = Registration(np.eye(3), (64, 48), (64, 48))
    registrar = Registrar("cam0", registration, "ir_to_visible", crop=False, calibration_path="calib/cam0.yaml")
    with pytest.raises(DataError, match=r"cam0: infrared frames are 32x24 but the calibration file calib/cam0.yaml is for 64x48"):
        registrar.check((32, 24), (64, 48))


def test_no_calibration_is_identity_said_once(caplog):
    registrar = Registrar("cam0", None, "ir_to_visible", crop=False)
    ir, visible = texture(32, 24, 0), np.zeros((24, 32, 3), np.uint8)
    with caplog.at_level(logging.INFO, logger="pipeline.registration"):
        for _ in range(3):
            ir_r, _ = register(registrar, ir, visible)
    assert np.abs(ir_r - ir).max() < 1e-3
    assert [r.message for r in caplog.records].count(
        "stream cam0: no calibration file; IR and visible frames are used as they are (identity registration)"
    ) == 1


def test_no_calibration_with_different_sizes_scales_and_warns(caplog):
    registrar = Registrar("cam0", None, "ir_to_visible", crop=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.registration"):
        ir_r, _ = register(registrar, texture(32, 24, 0), np.zeros((48, 64, 3), np.uint8))
    assert ir_r.shape == (48, 64)
    assert "ldfusion calibrate" in caplog.text


def test_common_field_of_view_of_a_translation():
    plan = plan_from_calibration(Registration(translation(-4, 6), (64, 48), (64, 48)), "ir_to_visible", crop=False)
    assert common_field_of_view(plan, "c") == (0, 6, 60, 42)


def test_calibration_crop_is_used_when_it_applies():
    registration = Registration(translation(2, 2), (64, 48), (64, 48), crop=(4, 4, 50, 30))
    assert plan_from_calibration(registration, "ir_to_visible", crop=True).crop == (4, 4, 50, 30)
    # The file's crop is in visible pixels; warping onto the IR frame computes its own.
    assert plan_from_calibration(registration, "visible_to_ir", crop=True).crop == (0, 0, 62, 46)


def test_expected_output_size_is_the_plans_and_leaves_the_plan_to_the_first_pair():
    """What the fusion stage warms the network up for, before any frame arrives."""
    unregistered = Registrar("cam0", None, "ir_to_visible", crop=False)
    assert unregistered.expected_output_size((32, 24), (64, 48)) == (64, 48)  # IR scaled onto the visible grid
    assert Registrar("cam0", None, "visible_to_ir", crop=False).expected_output_size((32, 24), (64, 48)) == (32, 24)
    assert unregistered.plan is None
    assert unregistered.expected_output_size(None, (64, 48)) is None  # a camera that states no size
    cropped = Registrar("cam0", Registration(translation(2, 2), (64, 48), (64, 48), crop=(4, 4, 50, 30)), "ir_to_visible", crop=True)
    assert cropped.expected_output_size((64, 48), (64, 48)) == (50, 30)
    assert cropped.expected_output_size(None, None) == (50, 30)  # the calibration file knows it
