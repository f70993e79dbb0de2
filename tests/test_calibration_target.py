"""Calibration from a board: synthetic checkerboard/ChArUco views from a known IR/visible rig."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from calibration_helpers import stereo_board_views

from calibration.fileformat import CalibrationError
from calibration.imaging import corner_error
from calibration.target import BoardSpec, Detection, calibrate_from_target, detect_board, match_checkerboard_order

IR_SIZE, VI_SIZE = (240, 180), (320, 240)
CHECKERBOARD = BoardSpec("checkerboard", 9, 6)
CHARUCO = BoardSpec("charuco", 5, 4, dictionary="DICT_4X4_50")


@pytest.fixture(scope="module")
def checkerboard_rig():
    return stereo_board_views(CHECKERBOARD, IR_SIZE, VI_SIZE, depth=14.0)


def test_checkerboard_with_inverted_infrared_recovers_the_homography(checkerboard_rig):
    pairs, H_true, _, _, _ = checkerboard_rig
    result = calibrate_from_target(pairs, CHECKERBOARD)
    error = corner_error(result.H, H_true, IR_SIZE)
    print(f"checkerboard: corner error {error:.3f} px, reprojection RMS {result.rms_px:.3f} px")
    assert error < 0.5
    assert result.rms_px < 0.5
    assert result.views_used == [name for name, _, _ in pairs]
    assert result.inliers == result.correspondences == len(pairs) * 9 * 6


def test_checkerboard_views_give_both_cameras_and_the_stereo_pose(checkerboard_rig):
    pairs, _, K_ir, K_vi, R_true = checkerboard_rig
    cameras = calibrate_from_target(pairs, CHECKERBOARD).cameras
    assert cameras is not None
    for name, K_true in (("ir", K_ir), ("vi", K_vi)):
        K = np.array(cameras[name]["K"])
        assert K[0, 0] == pytest.approx(K_true[0, 0], rel=0.04)
        assert K[1, 2] == pytest.approx(K_true[1, 2], abs=6.0)
        assert cameras[name]["image_size"] == list(IR_SIZE if name == "ir" else VI_SIZE)
    rotation_error = np.linalg.norm(cv2.Rodrigues(np.array(cameras["stereo"]["R"]) @ R_true.T)[0])
    assert np.degrees(rotation_error) < 1.0


def test_too_few_views_give_a_homography_but_no_cameras(checkerboard_rig):
    pairs, H_true, _, _, _ = checkerboard_rig
    result = calibrate_from_target(pairs[:2], CHECKERBOARD)
    assert result.cameras is None
    assert any("needed for intrinsics" in note for note in result.notes)
    assert corner_error(result.H, H_true, IR_SIZE) < 1.0


def test_charuco_with_inverted_infrared_recovers_the_homography():
    pairs, H_true, _, _, _ = stereo_board_views(CHARUCO, IR_SIZE, VI_SIZE, depth=8.0, seed=3)
    result = calibrate_from_target(pairs, CHARUCO)
    error = corner_error(result.H, H_true, IR_SIZE)
    print(f"charuco: corner error {error:.3f} px, reprojection RMS {result.rms_px:.3f} px")
    assert error < 0.5
    assert all(view.ir.inverted for view in result.views)  # found only after inverting the IR image


def test_inverted_board_is_found_by_trying_both_polarities(checkerboard_rig):
    pairs, _, _, _, _ = checkerboard_rig
    _, ir, vi = pairs[0]
    assert detect_board(ir, CHECKERBOARD) is not None
    assert detect_board(255 - ir, CHECKERBOARD) is not None
    assert detect_board(np.full_like(ir, 128), CHECKERBOARD) is None


def test_checkerboard_numbering_is_matched_between_the_cameras():
    board = BoardSpec("checkerboard", 4, 3)
    grid = np.mgrid[0:4, 0:3].T.reshape(-1, 2).astype(np.float32) * 20 + 30
    ir = Detection(np.arange(12), grid, inverted=True)
    vi_reversed = Detection(np.arange(12), grid[::-1] * 1.5 + 7, inverted=False)  # detector started at the far end
    matched = match_checkerboard_order(ir, vi_reversed, board)
    np.testing.assert_allclose(matched.points, grid * 1.5 + 7)


def test_board_not_found_in_any_view_is_a_clear_error():
    blank = [("a", np.full((120, 160), 90, np.uint8), np.full((120, 160, 3), 200, np.uint8))]
    with pytest.raises(CalibrationError, match="not found in both images of any of the 1 view"):
        calibrate_from_target(blank, CHECKERBOARD)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "circles"}, "board kind"),
        ({"columns": 1}, "at least 2x2"),
        ({"kind": "charuco", "dictionary": "DICT_NOPE"}, "unknown ArUco dictionary"),
        ({"kind": "charuco", "marker_size": 2.0}, "marker size"),
        ({"square_size": 0.0}, "square size"),
    ],
)
def test_board_spec_checks_itself(kwargs, message):
    with pytest.raises(CalibrationError, match=message):
        BoardSpec(**kwargs)
