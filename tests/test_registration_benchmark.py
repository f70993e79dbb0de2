"""The registration benchmark's ground truth: the warp family and how the reference composes with it."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.imaging import apply_homography, corner_error

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "registration_benchmark.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("registration_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_warps_cover_the_default_range_and_no_more(benchmark):
    """Scale 0.8-1.25, +-10 deg, +-15 % shift: the draws reach the ends of the range and stay inside it."""
    rng = np.random.default_rng(0)
    size = (640, 480)
    scales, angles, shifts = [], [], []
    for _ in range(400):
        H = benchmark.random_rig_warp(rng, size)
        centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
        mapped = apply_homography(H, np.array([centre, centre + (1.0, 0.0)]))
        step = mapped[1] - mapped[0]
        scales.append(math.hypot(*step))
        angles.append(math.degrees(math.atan2(step[1], step[0])))
        shifts.append(np.abs(mapped[0] - centre).max() / size[0])
    assert 0.79 < min(scales) < 0.84 and 1.2 < max(scales) < 1.27
    assert -10.2 < min(angles) < -9.0 and 9.0 < max(angles) < 10.2
    assert 0.13 < max(shifts) < 0.16


def test_the_warped_frame_maps_onto_the_original_through_the_known_warp(benchmark):
    """Content at pixel x of the warped infrared frame is the original's content at H x: truth = own @ H."""
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.uniform(0, 1, (240, 320)).astype(np.float32), (0, 0), 3.0)
    H = benchmark.random_rig_warp(np.random.default_rng(2), (320, 240))
    warped = benchmark.warped_infrared(image, H)
    points = np.array([[100.0, 80.0], [200.0, 150.0], [160.0, 120.0]])
    targets = apply_homography(H, points)
    inside = np.all((targets > 2) & (targets < (317, 237)), axis=1)
    assert inside.any()
    for (x, y), (u, v) in zip(points[inside], targets[inside]):
        expected = cv2.getRectSubPix(image, (1, 1), (float(u), float(v)))[0, 0]
        assert abs(warped[int(y), int(x)] - expected) < 0.02


def test_a_reference_far_from_the_identity_is_left_out(benchmark):
    """The datasets are registered to within a few per cent: a reference 40 px away is a miss, 3 px is not."""
    size = (640, 480)
    near = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])
    far = np.array([[1.05, 0.0, 30.0], [0.0, 1.05, -25.0], [0.0, 0.0, 1.0]])
    assert benchmark.sound_reference(near, size)
    assert not benchmark.sound_reference(far, size)
    assert corner_error(far, np.eye(3), size) > benchmark.REFERENCE_MAX_PX


def test_the_picture_error_measures_misplacement_inside_the_visible_frame(benchmark):
    """A 2 px shift is 2 px everywhere; an estimate off only where the infrared frame reaches
    beyond the picture (a zoomed-out infrared camera, its corners extrapolated) costs the picture less."""
    size = (640, 480)
    truth = np.array([[1.25, 0.0, -80.0], [0.0, 1.25, -60.0], [0.0, 0.0, 1.0]])  # the infrared frame reaches 1.25x as far
    shifted = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ truth
    assert benchmark.picture_error(shifted, truth, size) == pytest.approx(2.0)
    # A scale error about the picture's centre: proportional to the distance from it, so the
    # infrared corners (1.25x as far out) are off by more than the picture's grid is on average.
    centre = np.array([[1.0, 0.0, 319.5], [0.0, 1.0, 239.5], [0.0, 0.0, 1.0]])
    scaled = centre @ np.diag([1.01, 1.01, 1.0]) @ np.linalg.inv(centre) @ truth
    assert benchmark.picture_error(scaled, truth, size) < 0.7 * corner_error(scaled, truth, size)
    assert benchmark.picture_error(truth, truth, size) == pytest.approx(0.0, abs=1e-9)
