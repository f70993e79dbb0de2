"""Target-free registration: known warps recovered from synthetic and real scene pairs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from calibration_helpers import centred_homography, centring, infrared_view, two_modality_scene

from calibration.fileformat import CalibrationError
from calibration.imaging import corner_error, image_size
from calibration.scene import MIN_CONFIDENCE, SceneOptions, SearchRange, register_frames, register_scene, scene_confidence
from calibration.verify import verify
from ldfusion.imageio import read_infrared, read_visible

DEFORMATIONS = ("shift", "rotation", "scale", "perspective")
VI_WIDTH = 320
IR_SCALE = 0.8  # the infrared frame sees the central 80 % of the visible one, at lower resolution


def _sizes(visible_shape) -> tuple[tuple[int, int], tuple[int, int]]:
    vi_size = (VI_WIDTH, round(visible_shape[0] * VI_WIDTH / visible_shape[1]))
    return (round(vi_size[0] * IR_SCALE), round(vi_size[1] * IR_SCALE)), vi_size


# --- synthetic: exact ground truth --------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_scene():
    return two_modality_scene((VI_WIDTH, 240), seed=1)


@pytest.fixture(scope="module")
def rig_sized_scene():
    return two_modality_scene((640, 480), seed=1, shapes=200)


@pytest.mark.parametrize("kind", DEFORMATIONS)
def test_synthetic_scene_recovers_known_warp(synthetic_scene, kind):
    """Shapes with unrelated visible brightness and infrared temperature: only edges are shared."""
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    H_true = centred_homography(kind, ir_size, vi_size)
    ir = infrared_view(thermal, H_true, ir_size, vi_size)
    rough = centred_homography("none", ir_size, vi_size)
    result = register_scene(ir, visible, rough)
    error = corner_error(result.H, H_true, ir_size)
    print(f"synthetic {kind}: corner error {error:.3f} px, correlation {result.correlation:.2f}")
    assert error < 0.5
    assert result.residual.rms_px is not None and result.residual.rms_px < 1.0


def test_synthetic_scene_affine_model(synthetic_scene):
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    H_true = centred_homography("rotation", ir_size, vi_size) @ np.array([[1.0, 0.03, 0.0], [0.0, 0.97, 0.0], [0.0, 0.0, 1.0]])
    ir = infrared_view(thermal, H_true, ir_size, vi_size)
    result = register_scene(ir, visible, centred_homography("none", ir_size, vi_size), SceneOptions(model="affine"))
    np.testing.assert_array_equal(result.H[2], [0.0, 0.0, 1.0])
    assert corner_error(result.H, H_true, ir_size) < 0.5


@pytest.mark.parametrize(
    "scale, degrees, shift",
    [(0.96, 5.0, (15.0, -10.0)), (1.04, -4.0, (-12.0, 8.0)), (0.85, 9.0, (30.0, 20.0)), (1.12, -7.0, (-20.0, -10.0))],
)
def test_global_search_recovers_rig_sized_warps(synthetic_scene, scale, degrees, shift):
    """Rig warps over the default search range, far beyond a local method's reach from the start."""
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    a = np.radians(degrees)
    rig = np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]], [scale * np.sin(a), scale * np.cos(a), shift[1]], [1e-5, -2e-5, 1.0]])
    H_true = np.linalg.inv(centring(vi_size)) @ rig @ centring(ir_size)
    ir = infrared_view(thermal, H_true, ir_size, vi_size)
    result = register_scene(ir, visible, centred_homography("none", ir_size, vi_size))
    assert corner_error(result.H, H_true, ir_size) < 1.0
    assert result.confident, result.confidence.describe()


@pytest.mark.parametrize(
    "scale, degrees, shift",
    [(0.8, 10.0, (0.15, -0.1)), (1.25, -10.0, (-0.14, 0.12)), (0.81, -9.5, (-0.15, -0.15)), (1.22, 9.0, (0.13, 0.14))],
)
def test_global_search_covers_the_whole_default_range(rig_sized_scene, scale, degrees, shift):
    """The ends of the default range (scale 0.8-1.25, +-10 deg, +-15 % of the width) with perspective: found and trusted.

    At a rig's resolution (640 wide): on the 320-wide scene the infrared frame at scale 0.8
    covers too few tiles for the stability check to trust it, and the result is refused.
    """
    visible, thermal = rig_sized_scene
    ir_size = (round(visible.shape[1] * IR_SCALE), round(visible.shape[0] * IR_SCALE))
    vi_size = (visible.shape[1], visible.shape[0])
    a = np.radians(degrees)
    dx, dy = shift[0] * vi_size[0], shift[1] * vi_size[0]
    rig = np.array([[scale * np.cos(a), -scale * np.sin(a), dx], [scale * np.sin(a), scale * np.cos(a), dy], [2e-5, -1e-5, 1.0]])
    H_true = np.linalg.inv(centring(vi_size)) @ rig @ centring(ir_size)
    ir = infrared_view(thermal, H_true, ir_size, vi_size)
    result = register_scene(ir, visible, centred_homography("none", ir_size, vi_size))
    error = corner_error(result.H, H_true, ir_size)
    assert error < 1.0, f"{error:.2f} px"
    assert result.confident, result.confidence.describe()


def test_a_pair_of_unrelated_scenes_is_refused(synthetic_scene):
    """An infrared frame of another scene: whatever the search finds, the data do not back it."""
    visible, _ = synthetic_scene
    _, other_thermal = two_modality_scene((VI_WIDTH, 240), seed=7)
    ir_size, vi_size = _sizes(visible.shape)
    ir = infrared_view(other_thermal, centred_homography("none", ir_size, vi_size), ir_size, vi_size)
    result = register_scene(ir, visible, centred_homography("none", ir_size, vi_size))
    assert not result.confident, result.confidence.describe()


def test_verify_reports_the_score_scene_decides_by(synthetic_scene):
    """`calibrate verify` scores a registration with the same confidence `calibrate scene` refused or wrote it by."""
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    ir = infrared_view(thermal, centred_homography("rotation", ir_size, vi_size), ir_size, vi_size)
    result = register_scene(ir, visible, centred_homography("none", ir_size, vi_size))
    checked = verify(ir, visible, result.H, model=SceneOptions().model)  # the model scene fitted, as the file records it
    # The same computation, not bit for bit: OpenCV's template matching rounds differently from
    # call to call in the last bits (a clean-clone CI run: stability 0.3475094 against 0.3475105
    # px; 0.3475130 in a third run), and the refinement carries that on. A different computation
    # moves them far more: an affine model instead of the fitted one by 0.02 and 0.08 px, the
    # map shifted 0.2 px by 0.07 and 0.2 px.
    assert checked.confidence.score == pytest.approx(result.confidence.score, abs=1e-4)
    assert checked.confidence.stability_px == pytest.approx(result.confidence.stability_px, abs=1e-3)


def test_a_wrong_answer_scores_low(synthetic_scene):
    """The right map scores high; the same map 12 px off (beyond the tiles' reach) scores below the threshold."""
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    H_true = centred_homography("rotation", ir_size, vi_size)
    ir = infrared_view(thermal, H_true, ir_size, vi_size)
    off = np.array([[1.0, 0.0, 12.0], [0.0, 1.0, -9.0], [0.0, 0.0, 1.0]]) @ H_true
    assert scene_confidence([(ir, visible)], H_true).score >= MIN_CONFIDENCE
    assert scene_confidence([(ir, visible)], off).score < MIN_CONFIDENCE



def test_a_second_resampling_that_moves_the_answer_sinks_the_score(synthetic_scene, monkeypatch):
    """Moves up to WANDER_PX at the second resampling cost nothing; beyond it the answer is refused.

    The moves are set by hand (the real pair that needs this, FLIR_08874, is tested below with the
    shared data): a right answer that one resampling leaves in place and another moves 3.2 px.
    """
    import calibration.scene as scene

    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    H_true = centred_homography("rotation", ir_size, vi_size)
    ir = infrared_view(thermal, H_true, ir_size, vi_size)
    moves = {scene.RESAMPLING: 0.5}
    monkeypatch.setattr(scene, "resampled_drift", lambda pairs, H, options, factor=scene.RESAMPLING: moves[factor])
    moves[scene.SECOND_RESAMPLING] = 0.5
    settled = scene_confidence([(ir, visible)], H_true)
    moves[scene.SECOND_RESAMPLING] = 2.9
    within = scene_confidence([(ir, visible)], H_true)
    moves[scene.SECOND_RESAMPLING] = 3.2
    wandering = scene_confidence([(ir, visible)], H_true)
    assert settled.score >= MIN_CONFIDENCE and within.score == pytest.approx(settled.score)
    assert wandering.score == 0.0 and wandering.wander_px == 3.2, wandering.describe()

def test_blank_and_smoky_frames_are_not_confident(synthetic_scene):
    """No shared structure (a blank infrared frame, smoke-like noise): the result must not be trusted."""
    visible, _ = synthetic_scene
    rng = np.random.default_rng(0)
    blank = np.full((190, 256), 0.4, np.float32) + rng.normal(0, 0.003, (190, 256)).astype(np.float32)
    smoke = cv2.GaussianBlur(rng.uniform(0, 1, (190, 256)).astype(np.float32), (0, 0), 6.0)
    for ir in (blank, smoke):
        result = register_scene(ir, visible)
        assert not result.confident, result.confidence.describe()


def test_a_flat_image_is_refused_saying_so(synthetic_scene):
    """A constant infrared frame (a lens cap, a camera that sent zeros) was refused as "the answer
    moves inf px when refined", which does not say what is wrong."""
    visible, _ = synthetic_scene
    with pytest.raises(CalibrationError, match="the infrared image is one flat grey level"):
        register_scene(np.zeros((190, 256), np.float32), visible)
    with pytest.raises(CalibrationError, match="the visible image is one flat grey level"):
        register_scene(visible[..., 0] if visible.ndim == 3 else visible, np.full_like(visible, 7))


def test_one_blank_frame_cannot_decide(synthetic_scene):
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    H_true = centred_homography("rotation", ir_size, vi_size)
    good = infrared_view(thermal, H_true, ir_size, vi_size)
    blank = np.full_like(good, 0.4)
    result = register_frames([(blank, visible), (good, visible), (good, visible)], centred_homography("none", ir_size, vi_size))
    assert corner_error(result.H, H_true, ir_size) < 0.5
    assert result.confidence.frames == 3 and result.confidence.frames_agreeing == 2


def test_frames_that_each_see_part_of_the_scene_are_fitted_together(synthetic_scene):
    """Each frame pair shows structure in one third of the view only (the rest is flat): the
    answer rests on every frame's tiles, more than any one frame holds."""
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    H_true = centred_homography("perspective", ir_size, vi_size)
    pairs = []
    for third in range(3):
        keep = np.zeros(visible.shape[:2], bool)
        keep[:, third * vi_size[0] // 3 : (third + 1) * vi_size[0] // 3] = True
        visible_part = np.where(keep[..., None] if visible.ndim == 3 else keep, visible, 0.5).astype(visible.dtype)
        thermal_part = np.where(keep, thermal, 0.5).astype(thermal.dtype)
        pairs.append((infrared_view(thermal_part, H_true, ir_size, vi_size), visible_part))
    start = centred_homography("none", ir_size, vi_size)
    alone = [register_scene(ir, vi, start) for ir, vi in pairs]
    together = register_frames(pairs, start)
    assert corner_error(together.H, H_true, ir_size) < 0.5
    assert together.confident, together.confidence.describe()
    assert together.confidence.tiles_informative > max(r.confidence.tiles_informative for r in alone)


def test_frames_of_different_sizes_are_refused(synthetic_scene):
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    ir = infrared_view(thermal, centred_homography("none", ir_size, vi_size), ir_size, vi_size)
    with pytest.raises(CalibrationError, match="differ in size"):
        register_frames([(ir, visible), (ir[:-8], visible)])


def test_scene_options_check_themselves():
    with pytest.raises(CalibrationError, match="model"):
        SceneOptions(model="similarity")
    with pytest.raises(CalibrationError, match="search_width"):
        SceneOptions(search_width=10)
    with pytest.raises(CalibrationError, match="max_scale must be within 1 to 2; got 0.5"):
        SearchRange(max_scale=0.5)


# --- real pairs ---------------------------------------------------------------------------

# Pairs with structure at a distance (little parallax between the two cameras).
REAL_PAIRS = ("tno/{}/13.bmp", "roadscene/{}/FLIR_00006.jpg")


@pytest.mark.shared_data
@pytest.mark.parametrize("pair", REAL_PAIRS)
def test_real_pair_recovers_known_warps(shared_data, pair):
    """Warp the infrared image of a real, registered pair with known homographies and recover them.

    The datasets' own registration is only good to a few pixels (and a 3-D scene fits no single
    homography exactly), so the truth is the known warp composed with the registration the
    estimator finds for the unwarped pair (R below): that isolates how well the known warp is
    recovered. R itself must be within a few pixels of the identity.
    """
    ir_full = read_infrared(shared_data / "pairs" / pair.format("ir"))
    visible_full = read_visible(shared_data / "pairs" / pair.format("vi"))
    ir_size, vi_size = _sizes(visible_full.shape)
    visible = _resize(visible_full, vi_size)
    rough = centred_homography("none", ir_size, vi_size)

    base = register_scene(infrared_view(ir_full, rough, ir_size, vi_size), visible, rough)
    R = base.H @ np.linalg.inv(rough)  # the pair's own registration, visible pixels
    dataset_error = corner_error(base.H, rough, ir_size)
    assert dataset_error < 5.0, f"the pair itself seems misregistered by {dataset_error:.1f} px"
    errors = []
    for kind in DEFORMATIONS:
        H_known = centred_homography(kind, ir_size, vi_size)
        ir = infrared_view(ir_full, H_known, ir_size, vi_size)
        result = register_scene(ir, visible, rough)
        errors.append(corner_error(result.H, R @ H_known, ir_size))
        print(f"{pair.format('*')} {kind}: corner error {errors[-1]:.3f} px (vs the bare known warp {corner_error(result.H, H_known, ir_size):.2f} px)")
    # The bar is a median of 1 px: each pair's median meets it, and no warp is far off.
    assert np.median(errors) <= 1.0 and max(errors) < 1.5, [f"{e:.2f}" for e in errors]


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return image if image_size(image) == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --- the benchmark's silent wrong results (scripts/registration_benchmark.py, seed 0) -----------

# The infrared warps the benchmark drew for these pairs (random_rig_warp; seed 0, TNO 23 seed 1).
BENCHMARK_WARPS = {
    "roadscene/{}/FLIR_08874.jpg": [
        [1.0302438823166475, -0.11816823294927556, -40.95100160322542],
        [0.11285074373224256, 1.0287322621834756, -87.72406118589467],
        [-3.593475414749248e-06, -2.799404628360796e-05, 1.0046056955936793],
    ],
    "tno/{}/12.bmp": [
        [0.8664770536437435, -0.1237659789557574, 53.663480954686236],
        [0.13570851831375064, 0.8698860737404809, -103.61886680854442],
        [6.894961363936409e-06, 3.1009404941405976e-05, 0.9888936980910011],
    ],
    "tno/{}/23.bmp": [
        [1.2309131729530576, -0.1046572733889858, 6.178845206997778],
        [0.11986548563525215, 1.2387634591319112, -42.47682327886275],
        [6.257272937016545e-06, 3.712820063741446e-05, 0.9897280929828939],
    ],
}


def _benchmark_pair(shared_data, pair):
    """The plain infrared image, the one the benchmark warped, the visible one and the warp."""
    ir = read_infrared(shared_data / "pairs" / pair.format("ir"))
    visible = read_visible(shared_data / "pairs" / pair.format("vi"))
    H_known = np.array(BENCHMARK_WARPS[pair])
    return ir, _benchmark_script().warped_infrared(ir, H_known), visible, H_known


def _benchmark_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "registration_benchmark.py"
    spec = importlib.util.spec_from_file_location("registration_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared_data
@pytest.mark.parametrize("pair", ["roadscene/{}/FLIR_08874.jpg", "tno/{}/23.bmp"])
def test_an_answer_that_wanders_under_a_second_resampling_is_refused(shared_data, pair):
    """Two wrong answers the benchmark wrote: one resampling (0.7) left each in place, a second one does not.

    RoadScene FLIR_08874 (seed 0) is 6 px off (pedestrians and a pole near the rig: parallax):
    79 of 86 informative tiles agree, it moved 1.3 px at 0.7 and scored 0.50, and moves 3.6 px
    at 0.85. TNO 23 (seed 1) is 12-13 px off (against the bare warp and against the pair's own
    registration): 242 of 261 tiles agree, 0.8 px at 0.7, 3.2 px at 0.85.
    """
    _, ir, visible, H_known = _benchmark_pair(shared_data, pair)
    result = register_scene(ir, visible)
    assert corner_error(result.H, H_known, image_size(visible)) > 5.0  # the same wrong answer: this is about refusing it
    assert result.confidence.wander_px > 3.0, result.confidence.describe()
    assert not result.confident, result.confidence.describe()


@pytest.mark.shared_data
def test_a_pair_the_dataset_misregisters_is_registered_and_written(shared_data):
    """TNO 12: the benchmark counted this written result as 50 px wrong (against the bare known warp); it is right.

    The dataset's own pair is off by ~58 px at the corners (the infrared is squeezed vertically by
    about 12 %): at the identity the edges barely correlate and few tiles agree, at the tool's
    registration of the unwarped pair nearly all do (that registration is itself refused: it moves
    1.6 px when resampled). Warped by the benchmark's seed-0 warp, the answer is that registration
    composed with the warp, and it is written.
    """
    ir_plain, ir, visible, H_known = _benchmark_pair(shared_data, "tno/{}/12.bmp")
    size = image_size(visible)
    own = register_scene(ir_plain, visible, options=SceneOptions(search=SearchRange(1.03, 2.0, 0.03)))
    assert corner_error(own.H, np.eye(3), size) > 40.0  # the dataset's registration is far off ...
    # ... and the data say so: at the identity about half the informative tiles disagree and the
    # held-out halves lie far apart; at the tool's answer nearly every tile agrees.
    at_identity, at_own = scene_confidence([(ir_plain, visible)], np.eye(3)), own.confidence
    assert at_identity.tiles_agreeing < 0.6 * at_identity.tiles_informative and at_identity.held_out_px > 5.0, at_identity.describe()
    assert at_own.tiles_agreeing > 0.95 * at_own.tiles_informative and at_own.held_out_px < 1.0, at_own.describe()
    result = register_scene(ir, visible)
    assert corner_error(result.H, own.H @ H_known, size) < 2.0
    assert result.confident, result.confidence.describe()


def test_verify_refines_as_the_file_says_not_as_h_looks(synthetic_scene):
    """A homography whose perspective terms came out near zero looks affine; the confidence
    must still refine it as the homography the file records."""
    visible, thermal = synthetic_scene
    ir_size, vi_size = _sizes(visible.shape)
    H = centred_homography("rotation", ir_size, vi_size)
    ir = infrared_view(thermal, H, ir_size, vi_size)
    nearly_affine = H / H[2, 2]
    nearly_affine[2, :2] = 1e-11
    checked = verify(ir, visible, nearly_affine, model="homography")
    expected = scene_confidence([(ir, visible)], nearly_affine, SceneOptions(model="homography"))
    # To 1e-3 px, not bit for bit (see test_verify_reports_the_score_scene_decides_by): refined as
    # an affine map instead, stability and wander move by 0.16 and 0.18 px here.
    assert checked.confidence.stability_px == pytest.approx(expected.stability_px, abs=1e-3)
    assert checked.confidence.wander_px == pytest.approx(expected.wander_px, abs=1e-3)


@pytest.mark.parametrize(
    "parts, reason",
    [
        (dict(wander_px=3.5, stability_px=0.4, held_out_px=0.2), "moves 3.5 px when refined on images resampled again"),
        (dict(wander_px=1.0, stability_px=2.9, held_out_px=0.2), "moves 2.9 px when refined on resampled images"),
        (dict(wander_px=1.0, stability_px=0.4, held_out_px=1.3), "two halves of the tiles disagree by 1.3 px"),
        (dict(wander_px=1.0, stability_px=0.4, held_out_px=0.2), "9 of 40 informative tiles agree"),
    ],
)
def test_a_refusal_names_the_part_of_the_confidence_that_sank_it(parts, reason):
    """Held-out disagreement weighs more since the eighth session (0.75 px halves the score): a
    refusal it causes must name it rather than the tile count."""
    from calibration.cli import _confidence_reason
    from calibration.quality import Confidence

    assert reason in _confidence_reason(Confidence(0.2, 9, 40, **parts))


def test_a_high_resolution_visible_camera_is_held_to_the_same_tolerance(shared_data):
    """The confidence measured its tolerances in full-resolution visible pixels while the tiles
    work at most 640 wide: the same correct answer scored 0.84 with a 500 px visible image and 0
    at 2000 px and above (refused), the usual rig of a small thermal and an HD visible camera."""
    base = shared_data / "pairs" / "roadscene"
    ir, vi = read_infrared(next((base / "ir").glob("FLIR_00006.*"))), read_visible(next((base / "vi").glob("FLIR_00006.*")))
    native = register_scene(ir, vi)
    large = register_scene(ir, cv2.resize(vi, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC))
    assert native.confident and large.confident
    back = np.diag([0.25, 0.25, 1.0]) @ np.array([[1, 0, -1.5], [0, 1, -1.5], [0, 0, 1.0]]) @ large.H  # 4x pixel centres -> native
    assert corner_error(back, native.H, image_size(ir)) < 2.0
