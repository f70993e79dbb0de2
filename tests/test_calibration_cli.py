"""``ldfusion calibrate``: every subcommand end to end, verify's score, and one-line errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml
from calibration_helpers import centred_homography, infrared_view, moving_blobs, stereo_board_views, two_modality_scene, write_video

from calibration.cli import main
from calibration.fileformat import CalibrationError, Registration, identity_registration, load_registration, save_registration
from calibration.imaging import corner_error
from calibration.target import BoardSpec
from calibration.verify import verify
from ldfusion_cli.main import main as ldfusion_main
from ldfusion.imageio import read_infrared, read_visible, write_image

IR_SIZE, VI_SIZE = (256, 192), (320, 240)


@pytest.fixture(scope="module")
def scene_pair(tmp_path_factory):
    """A synthetic cross-modal pair on disk, the infrared frame warped by a known homography."""
    folder = tmp_path_factory.mktemp("scene")
    visible, thermal = two_modality_scene(VI_SIZE, seed=2)
    H_true = centred_homography("perspective", IR_SIZE, VI_SIZE)
    ir = infrared_view(thermal, H_true, IR_SIZE, VI_SIZE)
    write_image(folder / "ir.png", (np.clip(ir, 0, 1) * 255 + 0.5).astype(np.uint8))
    write_image(folder / "vi.png", visible)
    rough = Registration(centred_homography("none", IR_SIZE, VI_SIZE), IR_SIZE, VI_SIZE, method="points")
    save_registration(folder / "rough.yaml", rough)
    return folder, H_true


def _single_error_line(capsys) -> str:
    """The command's error: exactly one line, the last one (log lines may come before it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("ldfusion calibrate: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


# --- the subcommands ----------------------------------------------------------------------


def test_dispatched_from_the_ldfusion_command(tmp_path, capsys):
    assert ldfusion_main(["calibrate", "board", "--pattern", "4x3", "--out", str(tmp_path / "b.png")]) == 0
    assert cv2.imread(str(tmp_path / "b.png")).shape[:2] == (600, 700)  # (3 + 3) x (4 + 3) squares of 100 px
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["target", "scene", "points", "offset", "verify", "board"])
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_target_command_writes_homography_and_cameras(tmp_path, capsys):
    board = BoardSpec("checkerboard", 9, 6)
    pairs, H_true, _, _, _ = stereo_board_views(board, (240, 180), VI_SIZE, depth=14.0)
    for folder in ("ir", "vi"):
        (tmp_path / folder).mkdir()
    for name, ir, vi in pairs:
        write_image(tmp_path / "ir" / f"{name}.png", ir)
        write_image(tmp_path / "vi" / f"{name}.png", vi)
    out = tmp_path / "calib.yaml"
    assert main(["target", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--pattern", "9x6", "--out", str(out)]) == 0
    registration = load_registration(out)
    assert registration.method == "checkerboard"
    assert registration.source_size == (240, 180) and registration.destination_size == VI_SIZE
    assert corner_error(registration.H, H_true, (240, 180)) < 0.5
    assert registration.error_px < 0.5
    assert set(registration.cameras) == {"square_size", "ir", "vi", "stereo"}
    printed = capsys.readouterr().out
    assert "board found in both images of 6 of 6 view(s)" in printed and "RMS reprojection error" in printed


def test_scene_command_then_verify(scene_pair, tmp_path, capsys):
    folder, H_true = scene_pair
    out = tmp_path / "calib.yaml"
    args = ["scene", "--ir", str(folder / "ir.png"), "--vi", str(folder / "vi.png"), "--init", str(folder / "rough.yaml")]
    assert main([*args, "--out", str(out)]) == 0
    registration = load_registration(out)
    assert registration.method == "edge-tiles" and registration.error_px is not None
    assert corner_error(registration.H, H_true, IR_SIZE) < 0.5
    assert "edge correlation" in capsys.readouterr().out

    overlay = tmp_path / "overlay.png"
    verify_args = ["verify", "--calib", str(out), "--ir", str(folder / "ir.png"), "--vi", str(folder / "vi.png")]
    assert main([*verify_args, "--out", str(overlay)]) == 0
    written = cv2.imread(str(overlay))
    assert written is not None and written.shape == (VI_SIZE[1], VI_SIZE[0], 3)
    printed = capsys.readouterr().out
    assert "alignment score" in printed and "confidence" in printed
    assert main([*verify_args, "--style", "checker", "--min-score", "0.99", "--out", str(tmp_path / "c.png")]) == 1


def test_scene_command_finds_a_rig_warp_without_a_start(tmp_path, capsys):
    """5 degrees, 15 % scale, a 13 px shift and mild perspective, no --init: the global search finds it.

    (The infrared frame stays inside the visible one, as the synthetic scene has nothing beyond it.)
    """
    visible, thermal = two_modality_scene(VI_SIZE, seed=3)
    a = np.radians(5.0)
    rig = np.array([[0.85 * np.cos(a), -0.85 * np.sin(a), 12.0], [0.85 * np.sin(a), 0.85 * np.cos(a), -5.0], [2e-5, 1e-5, 1.0]])
    H_true = np.linalg.inv(_centring(VI_SIZE)) @ rig @ _centring(VI_SIZE) @ _stretch()
    write_image(tmp_path / "ir.png", (np.clip(infrared_view(thermal, H_true, IR_SIZE, VI_SIZE), 0, 1) * 255 + 0.5).astype(np.uint8))
    write_image(tmp_path / "vi.png", visible)
    out = tmp_path / "calib.yaml"
    assert main(["scene", "--ir", str(tmp_path / "ir.png"), "--vi", str(tmp_path / "vi.png"), "--out", str(out)]) == 0
    assert corner_error(load_registration(out).H, H_true, IR_SIZE) < 1.0
    assert "confidence" in capsys.readouterr().out


def _centring(size):
    return np.array([[1.0, 0.0, -(size[0] - 1) / 2], [0.0, 1.0, -(size[1] - 1) / 2], [0.0, 0.0, 1.0]])


def _stretch():
    """The infrared frame stretched over the visible one (the default start)."""
    from calibration.imaging import size_ratio_homography

    return size_ratio_homography(IR_SIZE, VI_SIZE)


def test_scene_command_refuses_a_smoky_frame_and_writes_nothing(scene_pair, tmp_path, capsys):
    """An infrared frame that is all smoke shares no structure: exit 1, one-line reason, no file; --force writes."""
    folder, _ = scene_pair
    rng = np.random.default_rng(1)
    smoke = cv2.GaussianBlur(rng.uniform(0, 255, (IR_SIZE[1], IR_SIZE[0])).astype(np.float32), (0, 0), 5.0)
    write_image(tmp_path / "smoke.png", cv2.normalize(smoke, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8))
    out = tmp_path / "calib.yaml"
    args = ["scene", "--ir", str(tmp_path / "smoke.png"), "--vi", str(folder / "vi.png"), "--out", str(out)]
    assert main(args) == 1
    assert not out.exists()
    refusal = [line for line in capsys.readouterr().err.splitlines() if "refused" in line]
    assert len(refusal) == 1 and "confidence" in refusal[0] and "nothing written" in refusal[0]
    assert main([*args, "--force"]) == 0 and out.exists()


@pytest.mark.parametrize("frames", [["--frames", "5"], []], ids=["frames 5", "videos: 5 by default"])
def test_scene_command_on_video_frames(tmp_path, capsys, frames):
    """--frames N registers N frame pairs of two videos (5 when two videos are given without it);
    blank frames among them do not decide."""
    visible, thermal = two_modality_scene(VI_SIZE, seed=4)
    H_true = centred_homography("rotation", IR_SIZE, VI_SIZE)
    ir = infrared_view(thermal, H_true, IR_SIZE, VI_SIZE)
    ir_frames = np.stack([np.full_like(ir, 0.4), ir, ir, np.full_like(ir, 0.4), ir])  # two blank frames
    vi_gray = cv2.cvtColor(visible, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    write_video(tmp_path / "ir.mp4", ir_frames, 10)
    write_video(tmp_path / "vi.mp4", np.stack([vi_gray] * 5), 10)
    save_registration(tmp_path / "rough.yaml", Registration(centred_homography("none", IR_SIZE, VI_SIZE), IR_SIZE, VI_SIZE))
    out = tmp_path / "calib.yaml"
    args = ["scene", "--ir", str(tmp_path / "ir.mp4"), "--vi", str(tmp_path / "vi.mp4"), *frames]
    assert main([*args, "--init", str(tmp_path / "rough.yaml"), "--out", str(out)]) == 0
    assert corner_error(load_registration(out).H, H_true, IR_SIZE) < 1.0
    assert "of 5 frame pairs agree" in capsys.readouterr().out


def test_scene_frames_beyond_the_clips_says_how_many_it_registers(tmp_path, caplog):
    """--frames 100 on 3-frame clips used 3 without a word."""
    import argparse

    from calibration.cli import _scene_pairs

    frames = np.stack([np.full((24, 32), 0.2 * k, np.float32) for k in range(3)])
    write_video(tmp_path / "ir.mp4", frames, 10)
    write_video(tmp_path / "vi.mp4", frames, 10)
    args = argparse.Namespace(frames=100, ir=tmp_path / "ir.mp4", vi=tmp_path / "vi.mp4", ir_16bit="stretch")
    assert len(_scene_pairs(args)) == 3
    assert "--frames 100: the clips hold only 3 frame pair(s)" in caplog.text


def test_verify_scores_the_right_homography_above_wrong_ones(scene_pair):
    folder, H_true = scene_pair
    ir, vi = read_infrared(folder / "ir.png"), read_visible(folder / "vi.png")
    right = verify(ir, vi, H_true).score
    for wrong in (np.array([[1, 0, 3.0], [0, 1, -2.0], [0, 0, 1]]) @ H_true, centred_homography("none", IR_SIZE, VI_SIZE)):
        assert verify(ir, vi, wrong).score < right - 0.05


@pytest.mark.shared_data
def test_verify_on_a_real_pair(shared_data, tmp_path, capsys):
    ir_path = shared_data / "pairs" / "tno" / "ir" / "13.bmp"
    vi_path = shared_data / "pairs" / "tno" / "vi" / "13.bmp"
    ir, vi = read_infrared(ir_path), read_visible(vi_path)
    registered = verify(ir, vi, np.eye(3)).score  # the dataset's pairs are registered
    shifted = verify(ir, vi, np.array([[1, 0, 4.0], [0, 1, 3.0], [0, 0, 1]])).score
    assert registered > shifted + 0.05
    save_registration(tmp_path / "id.yaml", identity_registration(ir.shape[1], ir.shape[0]))
    args = ["verify", "--calib", str(tmp_path / "id.yaml"), "--ir", str(ir_path), "--vi", str(vi_path)]
    assert main([*args, "--style", "blend", "--out", str(tmp_path / "o.png")]) == 0
    assert (tmp_path / "o.png").stat().st_size > 0


def test_points_command(tmp_path, capsys):
    H = np.array([[2.0, 0.05, 10.0], [-0.02, 1.9, 6.0], [1e-5, 0.0, 1.0]])
    ir = np.array([[5.0, 5.0], [150.0, 8.0], [155.0, 110.0], [6.0, 115.0], [80.0, 60.0]])
    vi = cv2.perspectiveTransform(ir.reshape(-1, 1, 2), H).reshape(-1, 2)
    csv_file = tmp_path / "pts.csv"
    csv_file.write_text("ir_x,ir_y,vi_x,vi_y\n" + "\n".join(",".join(map(str, [*p, *q])) for p, q in zip(ir, vi)))
    out = tmp_path / "calib.yaml"
    assert main(["points", "--file", str(csv_file), "--ir-size", "160x120", "--vi-size", "400x300", "--out", str(out)]) == 0
    registration = load_registration(out)
    assert registration.method == "points" and registration.source_size == (160, 120)
    assert corner_error(registration.H, H, (160, 120)) < 1e-2
    assert "RMS error" in capsys.readouterr().out


def test_offset_command_updates_an_existing_file(tmp_path, capsys):
    scene = moving_blobs(100, seed=5)
    write_video(tmp_path / "vi.mp4", scene[10:90], 30)
    write_video(tmp_path / "ir.mp4", 1.0 - scene[15:95], 30)  # infrared 5 frames ahead
    H = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    save_registration(tmp_path / "calib.yaml", Registration(H, (64, 48), (64, 48), method="points", error_px=0.4))
    calib = str(tmp_path / "calib.yaml")
    assert main(["offset", "--ir", str(tmp_path / "ir.mp4"), "--vi", str(tmp_path / "vi.mp4"), "--calib", calib, "--out", calib]) == 0
    registration = load_registration(calib)
    assert registration.time_offset_s == pytest.approx(5 / 30, abs=0.5 / 30)
    np.testing.assert_allclose(registration.H, H)  # the spatial part is kept
    assert registration.method == "points" and registration.error_px == pytest.approx(0.4)
    printed = capsys.readouterr().out
    assert "visible frames" in printed and "time windows find the same lag" in printed
    # -q: no progress bars (they were drawn on stderr all the same).
    assert main(["offset", "--ir", str(tmp_path / "ir.mp4"), "--vi", str(tmp_path / "vi.mp4"), "--calib", calib, "--out", calib, "-q"]) == 0
    assert "frame/s" not in capsys.readouterr().err


def test_offset_below_the_confidence_threshold_is_refused_unless_forced(tmp_path, capsys):
    """Two unrelated recordings (confidence 0.17) were written with a warning and exit 0; now as
    `scene` does: exit 1, one line with the reason, nothing written, unless --force."""
    write_video(tmp_path / "vi.mp4", moving_blobs(80, seed=3), 30)
    write_video(tmp_path / "ir.mp4", moving_blobs(80, seed=7), 30)
    out = tmp_path / "calib.yaml"
    args = ["offset", "--ir", str(tmp_path / "ir.mp4"), "--vi", str(tmp_path / "vi.mp4"), "--out", str(out), "-q"]
    assert main(args) == 1 and not out.exists()
    refusal = [line for line in capsys.readouterr().err.splitlines() if "refused" in line]
    assert len(refusal) == 1, refusal
    assert "offset: refused: confidence 0.17 is below 0.5 (1 of 6 time windows find the same lag); nothing written" in refusal[0]
    assert main([*args, "--force"]) == 0 and out.exists()
    out.unlink()
    assert main([*args, "--min-confidence", "0.1"]) == 0 and out.exists()


def test_scene_on_videos_pairs_frames_by_time(tmp_path):
    """A 10 fps visible clip of 2 s and a 4 fps infrared clip of 1.5 s whose frames show the moments
    0.5 s later (time_offset_s 0.5): frame indices picked in each file alone paired moments up to
    0.9 s apart. Each frame's grey level says which moment it shows."""
    import argparse

    from calibration.cli import _scene_pairs

    level = lambda t: 20 + 80 * t  # noqa: E731  moment (s) -> grey level, 20..180
    vi_moments, ir_moments = np.arange(20) / 10, np.arange(6) / 4 + 0.5
    write_video(tmp_path / "vi.mp4", np.stack([np.full((24, 32), level(t) / 255, np.float32) for t in vi_moments]), 10)
    write_video(tmp_path / "ir.mp4", np.stack([np.full((24, 32), level(t) / 255, np.float32) for t in ir_moments]), 4)
    args = argparse.Namespace(frames=5, ir=tmp_path / "ir.mp4", vi=tmp_path / "vi.mp4", ir_16bit="stretch")
    pairs = _scene_pairs(args, time_offset_s=0.5)
    assert len(pairs) == 5
    for ir, vi in pairs:
        shown = [(float(frame.mean()) - 20) / 80 for frame in (ir, vi)]
        assert abs(shown[0] - shown[1]) <= 0.125 + 0.03, shown  # within half an infrared frame (and the codec's error)


def test_scene_on_same_length_same_rate_videos_pairs_the_frames_it_always_did(tmp_path):
    """Frame i with frame i, at the indices evenly spaced over the clip (as before pairing by time)."""
    import argparse

    from calibration.cli import _scene_pairs

    frames = np.stack([np.full((24, 32), (20 + 10 * k) / 255, np.float32) for k in range(20)])
    write_video(tmp_path / "ir.mp4", frames, 10)
    write_video(tmp_path / "vi.mp4", frames, 10)
    args = argparse.Namespace(frames=6, ir=tmp_path / "ir.mp4", vi=tmp_path / "vi.mp4", ir_16bit="stretch")
    shown = [[round((float(frame.mean()) - 20) / 10) for frame in pair] for pair in _scene_pairs(args)]
    expected = np.linspace(0, 19, 6).round().astype(int).tolist()
    assert shown == [[k, k] for k in expected]


# --- bad input: one line and a non-zero exit ----------------------------------------------


def test_missing_image(tmp_path, capsys):
    assert main(["scene", "--ir", str(tmp_path / "no.png"), "--vi", str(tmp_path / "no2.png"), "--out", str(tmp_path / "c.yaml")]) == 2
    assert "image not found" in _single_error_line(capsys)
    assert not (tmp_path / "c.yaml").exists()


def test_malformed_calibration_file(scene_pair, tmp_path, capsys):
    folder, _ = scene_pair
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nH: [[1, 0], [0, 1]]\nsource_size: [256, 192]\ndestination_size: [320, 240]\n")
    args = ["verify", "--calib", str(bad), "--ir", str(folder / "ir.png"), "--vi", str(folder / "vi.png"), "--out", str(tmp_path / "o.png")]
    assert main(args) == 2
    assert "3x3" in _single_error_line(capsys)
    bad.write_text("version: 1\nH: [[1, 0, 0], [0, 1, 0]\n")
    assert main(args) == 2
    assert "malformed YAML" in _single_error_line(capsys)
    # A list where a scalar was written names its key (it was "malformed value ('bool' object is not iterable)").
    whole = "version: 1\nH: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\nsource_size: [256, 192]\ndestination_size: [256, 192]\n"
    for text, message in ((whole + "crop: true\n", "crop must be a list; got True"),
                          (whole.replace("source_size: [256, 192]", "source_size: 256"), "source_size must be a list; got 256")):
        bad.write_text(text)
        assert main(args) == 2
        assert message in _single_error_line(capsys)


def test_calibration_for_other_image_sizes(scene_pair, tmp_path, capsys):
    folder, _ = scene_pair
    save_registration(tmp_path / "c.yaml", identity_registration(64, 48))
    args = ["verify", "--calib", str(tmp_path / "c.yaml"), "--ir", str(folder / "ir.png"), "--vi", str(folder / "vi.png")]
    assert main([*args, "--out", str(tmp_path / "o.png")]) == 2
    assert "the ir image is 256x192 but the calibration expects 64x48" in _single_error_line(capsys)


def test_too_few_points(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("1,2,3,4\n10,2,30,4\n10,20,30,40\n")
    args = ["points", "--file", str(tmp_path / "p.csv"), "--ir-size", "64x48", "--vi-size", "64x48", "--out", str(tmp_path / "c.yaml")]
    assert main(args) == 2
    assert "at least 4 point pairs; got 3" in _single_error_line(capsys)


def test_points_need_image_sizes(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("1,2,3,4\n10,2,30,4\n10,20,30,40\n1,20,3,40\n")
    assert main(["points", "--file", str(tmp_path / "p.csv"), "--out", str(tmp_path / "c.yaml")]) == 2
    assert "--ir-size and --vi-size" in _single_error_line(capsys)
    assert main(["points", "--file", str(tmp_path / "p.csv"), "--ir-size", "64by48", "--vi-size", "64x48", "--out", str(tmp_path / "c.yaml")]) == 2
    assert "--ir-size: expected WIDTHxHEIGHT" in _single_error_line(capsys)


def test_board_not_found(tmp_path, capsys):
    for folder in ("ir", "vi"):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "0.png", np.full((48, 64), 128, np.uint8))
    args = ["target", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--pattern", "9x6", "--out", str(tmp_path / "c.yaml")]
    assert main(args) == 2
    assert "not found in both images of any of the 1 view(s)" in _single_error_line(capsys)
    assert main([*args[:-4], "--pattern", "nine", "--out", str(tmp_path / "c.yaml")]) == 2
    assert "--pattern" in _single_error_line(capsys)


def test_offset_size_mismatch_and_bad_video(tmp_path, capsys):
    write_video(tmp_path / "v.mp4", moving_blobs(20), 30)
    write_video(tmp_path / "w.mp4", moving_blobs(20, seed=1), 30)
    save_registration(tmp_path / "c.yaml", identity_registration(320, 240))
    args = ["offset", "--ir", str(tmp_path / "w.mp4"), "--vi", str(tmp_path / "v.mp4"), "--calib", str(tmp_path / "c.yaml")]
    assert main([*args, "--out", str(tmp_path / "o.yaml")]) == 2
    assert "made for infrared 320x240 / visible 320x240 frames, but the videos are infrared 64x48" in _single_error_line(capsys)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    assert main(["offset", "--ir", str(tmp_path / "bad.mp4"), "--vi", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o.yaml")]) == 2
    assert "bad.mp4" in _single_error_line(capsys)


# --- the file format ----------------------------------------------------------------------


def test_registration_file_round_trip_with_cameras(tmp_path):
    cameras = {"square_size": 25.0, "ir": {"K": np.eye(3).tolist(), "dist": [0.1, 0, 0, 0, 0]}}
    original = Registration(np.diag([2.0, 2.0, 1.0]), (320, 240), (640, 480), time_offset_s=0.25, method="charuco", error_px=0.2, cameras=cameras)
    path = save_registration(tmp_path / "c.yaml", original)
    loaded = load_registration(path)
    np.testing.assert_allclose(loaded.H, original.H)
    assert loaded.cameras == cameras and loaded.time_offset_s == 0.25
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]  # the atomic write leaves no temporary file


def test_cameras_must_be_a_mapping(tmp_path):
    data = identity_registration(64, 48).to_dict() | {"cameras": [1, 2]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="cameras must be a mapping"):
        load_registration(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": True}, "unsupported version True"),
        ({"H": [["1", 0, 0], [0, 1, 0], [0, 0, 1]]}, r"H\[0\]\[0\]: '1' is not a number"),
        ({"H": [[True, 0, 0], [0, True, 0], [0, 0, True]]}, r"H\[0\]\[0\]: True is not a number"),
        ({"error_px": -5}, "error_px must not be negative"),
        ({"method": [1, 2]}, r"method must be text; got \[1, 2\]"),
        ({"created": {"a": 1}}, "created must be text"),
        ({"time_offset_s": False}, "time_offset_s: False is not a number"),
    ],
)
def test_a_calibration_file_value_of_the_wrong_type_is_refused_naming_its_key(tmp_path, change, message):
    """`version: true` passed (True == 1), H entries "1" and true became 1.0, `method: [1, 2]` the text "[1, 2]"."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(identity_registration(64, 48).to_dict() | change))
    with pytest.raises(CalibrationError, match=message) as info:
        load_registration(tmp_path / "c.yaml")
    assert "\n" not in str(info.value)


def test_a_homography_written_at_a_tiny_scale_is_the_same_map():
    """H scaled by 1e-20 was refused with "H[2][2] must not be zero", which it was not."""
    H = np.array([[0.987, -0.005, 2.8], [-0.003, 0.987, 1.7], [-1.2e-5, -1.4e-5, 1.0]])
    np.testing.assert_allclose(Registration(1e-20 * H, (64, 48), (64, 48)).H, H)
    with pytest.raises(CalibrationError, match=r"H\[2\]\[2\] must not be zero"):
        Registration(np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 2.0], [0.0, 1e-3, 0.0]]), (64, 48), (64, 48))


def test_a_calibration_file_whose_map_folds_the_frame_is_refused(tmp_path):
    """Its line at infinity (y = 250) crosses the 640x512 infrared frame: accepted, though
    `calibrate points` refuses to write such a map. A mild perspective still loads."""
    registration = identity_registration(640, 512)
    for row, accepted in (([0.0, -0.004, 1.0], False), ([0.0, 0.003, 1.0], True)):
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(registration.to_dict() | {"H": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], row]}))
        if accepted:
            load_registration(tmp_path / "c.yaml")
        else:
            with pytest.raises(CalibrationError, match="folds the infrared image over itself, which no warp of a camera can"):
                load_registration(tmp_path / "c.yaml")


def test_scene_on_images_without_shared_structure_says_so(tmp_path, capsys):
    """8x8 random images reported "edge correlation nan" and were refused because "the answer
    moves inf px when refined on images resampled again"."""
    rng = np.random.default_rng(0)
    write_image(tmp_path / "ir.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    write_image(tmp_path / "vi.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    args = ["scene", "--ir", str(tmp_path / "ir.png"), "--vi", str(tmp_path / "vi.png"), "--out", str(tmp_path / "c.yaml")]
    assert main(args) == 1 and not (tmp_path / "c.yaml").exists()
    captured = capsys.readouterr()
    assert "nan" not in captured.out and "inf px" not in captured.out + captured.err
    assert "no informative tiles: the images share too little structure" in captured.err
