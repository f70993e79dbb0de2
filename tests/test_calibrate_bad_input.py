"""``ldfusion calibrate`` on bad input: one line naming the option, exit 2, before any work or write.

Each test runs the command the way a user does (``ldfusion calibrate ...`` in-process) on tiny
inputs in ``tmp_path`` and checks that every file there is left exactly as it was: nothing
overwritten, nothing half-written, no temporary file left behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from calibration_helpers import moving_blobs, write_video

from calibration.fileformat import identity_registration, save_registration
from ldfusion.errors import DataError
from ldfusion.imageio import write_image
from ldfusion_cli.main import main

SIZE = (64, 48)  # (width, height) of every input image
# A Python exception's class name in the message means an error escaped the one-line handling.
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b")


@pytest.fixture
def folder(tmp_path) -> Path:
    """ir.png, vi.png, calib.yaml (identity at SIZE), points.yaml (4 pairs) and an empty folder/."""
    gray = np.random.default_rng(0).integers(0, 256, SIZE[::-1], dtype=np.uint8)  # (H, W)
    write_image(tmp_path / "ir.png", gray)
    write_image(tmp_path / "vi.png", np.repeat(gray[:, :, None], 3, axis=2))
    save_registration(tmp_path / "calib.yaml", identity_registration(*SIZE))
    corners = [[1, 1], [60, 1], [1, 40], [60, 40]]
    (tmp_path / "points.yaml").write_text(yaml.safe_dump({"points": [{"ir": c, "vi": c} for c in corners]}))
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.fixture
def videos(folder) -> Path:
    """ir.mp4 and vi.mp4 beside the images: 20 frames of moving blobs, enough to decode and correlate."""
    frames = moving_blobs(20, SIZE)
    write_video(folder / "ir.mp4", frames, 10)
    write_video(folder / "vi.mp4", frames, 10)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes() for path in sorted(folder.rglob("*"))}


def _refused(argv: list[str], folder: Path, capsys, *names: str) -> str:
    """Run ``ldfusion calibrate argv``: exit 2, one stderr line naming ``names``, ``folder`` untouched."""
    before = _snapshot(folder)
    assert main(["calibrate", *map(str, argv)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ldfusion calibrate: error: "), lines
    assert not EXCEPTION_NAME.search(lines[0]), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert _snapshot(folder) == before
    return lines[0]


# --- 1, 2: --out must not be an input --------------------------------------------------------


def _points(d: Path, out) -> list:
    return ["points", "--file", d / "points.yaml", "--ir-size", "64x48", "--vi-size", "64x48", "--out", out]


def _verify(d: Path, out) -> list:
    return ["verify", "--calib", d / "calib.yaml", "--ir", d / "ir.png", "--vi", d / "vi.png", "--out", out]


def _scene(d: Path, out, *extra) -> list:
    return ["scene", "--ir", d / "ir.png", "--vi", d / "vi.png", *extra, "--out", out]


@pytest.mark.parametrize(
    "command, out, flag",
    [
        (_points, "points.yaml", "--file"),
        (_verify, "ir.png", "--ir"),
        (_verify, "vi.png", "--vi"),
        (_verify, "calib.yaml", "--calib"),
        (_scene, "vi.png", "--vi"),
        (lambda d, out: _scene(d, out, "--init", d / "calib.yaml"), "calib.yaml", "--init"),
        (lambda d, out: ["target", "--ir", d / "ir.png", "--vi", d / "vi.png", "--pattern", "4x3", "--out", out], "ir.png", "--ir"),
    ],
)
def test_out_that_is_an_input_is_refused(folder, capsys, command, out, flag):
    _refused(command(folder, folder / out), folder, capsys, "--out", flag)


def test_offset_out_that_is_an_input_video_is_refused(videos, capsys):
    argv = ["offset", "--ir", videos / "ir.mp4", "--vi", videos / "vi.mp4", "--out", videos / "ir.mp4"]
    _refused(argv, videos, capsys, "--out", "--ir")


def test_scene_of_one_file_for_both_cameras_is_refused(folder, capsys):
    """It wrote an identity registration at confidence 1.00; run refuses one file for both cameras."""
    argv = ["scene", "--ir", folder / "vi.png", "--vi", folder / "vi.png", "--out", folder / "calib_new.yaml"]
    _refused(argv, folder, capsys, "--ir and --vi are the same file", "vi.png")


def test_offset_of_one_file_for_both_cameras_is_refused(videos, capsys):
    """It wrote an offset of 0 at confidence 1.00."""
    argv = ["offset", "--ir", videos / "vi.mp4", "--vi", videos / "vi.mp4", "--out", videos / "calib_new.yaml"]
    _refused(argv, videos, capsys, "--ir and --vi are the same file", "vi.mp4")


@pytest.mark.parametrize("image", ["ir", "vi"])
def test_scene_frames_on_an_image_is_refused(videos, capsys, image):
    """--frames took an image as a one-frame video and registered it, exit 0."""
    inputs = {"ir": videos / "ir.mp4", "vi": videos / "vi.mp4", image: videos / f"{image}.png"}
    argv = ["scene", "--ir", inputs["ir"], "--vi", inputs["vi"], "--frames", "3", "--out", videos / "calib_new.yaml"]
    _refused(argv, videos, capsys, "--frames", f"--{image}", f"{image}.png", "is an image")


@pytest.mark.parametrize("flag", [["--marker-size", "7"], ["--legacy-charuco"]])
def test_target_charuco_options_without_charuco_are_refused(folder, capsys, flag):
    """A chessboard has no markers: the option was ignored, exit 0."""
    argv = ["target", "--ir", folder / "ir.png", "--vi", folder / "vi.png", "--pattern", "4x3", *flag, "--out", folder / "c.yaml"]
    _refused(argv, folder, capsys, flag[0], "--charuco")


def test_scene_on_a_video_and_an_image_is_refused(videos, capsys):
    """Without --frames the inputs' names decide image or video; one of each is a mistake, said as one."""
    argv = ["scene", "--ir", videos / "ir.mp4", "--vi", videos / "vi.png", "--out", videos / "calib_new.yaml"]
    line = _refused(argv, videos, capsys, "--ir", "is a video", "--vi", "an image")
    assert "ir.mp4" in line and "vi.png" in line


def test_hard_link_and_other_spelling_of_an_input_count_as_the_same_file(folder, capsys):
    os.link(folder / "points.yaml", folder / "link.yaml")
    _refused(_points(folder, folder / "link.yaml"), folder, capsys, "--out", "--file")
    _refused(_verify(folder, folder / "folder" / ".." / "ir.png"), folder, capsys, "--out", "--ir")


# --- 3, 4: float options must be finite and in range, checked before the work ----------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1.5"])
def test_scene_min_confidence_must_lie_in_0_to_1(folder, capsys, value):
    # The confidence is a score in [0, 1] (0 refuses nothing); NaN would skip the gate silently.
    _refused(_scene(folder, folder / "s.yaml", "--min-confidence", value), folder, capsys, "--min-confidence")


@pytest.mark.parametrize("flag", ["--max-scale", "--max-rotation", "--max-shift"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_scene_search_range_must_be_finite(folder, capsys, flag, value):
    _refused(_scene(folder, folder / "s.yaml", flag, value), folder, capsys, flag)


@pytest.mark.parametrize("flag", ["--max-offset", "--max-seconds"])
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-3"])
def test_offset_durations_must_be_positive_and_finite(videos, capsys, flag, value):
    # One stderr line also shows that no video was decoded: decoding draws progress bars there.
    argv = ["offset", "--ir", videos / "ir.mp4", "--vi", videos / "vi.mp4", flag, value, "--out", videos / "o.yaml"]
    _refused(argv, videos, capsys, flag)


def test_verify_min_score_must_be_finite(folder, capsys):
    # A NaN threshold fails every score: exit 1 after the overlay was written, whatever the alignment.
    _refused([*_verify(folder, folder / "v.png"), "--min-score", "nan"], folder, capsys, "--min-score")


@pytest.mark.parametrize("flag", ["--square-size", "--marker-size"])
def test_target_board_sizes_must_be_finite(folder, capsys, flag):
    argv = ["target", "--ir", folder / "ir.png", "--vi", folder / "vi.png", "--pattern", "4x3", "--charuco", "DICT_4X4_50", flag, "nan"]
    _refused([*argv, "--out", folder / "t.yaml"], folder, capsys, flag)


# --- 5: an --out OpenCV cannot write an image to ---------------------------------------------


@pytest.mark.parametrize("name", ["b.jpgx", "b"])
def test_board_out_without_an_image_writer(folder, capsys, name):
    line = _refused(["board", "--pattern", "4x3", "--out", folder / name], folder, capsys, "--out", str(folder / name))
    assert "OpenCV(" not in line


def test_board_out_that_is_a_folder(folder, capsys):
    _refused(["board", "--pattern", "4x3", "--out", folder / "folder"], folder, capsys, "--out", "folder")


def test_verify_out_without_an_image_writer_is_refused_before_the_work(folder, capsys):
    line = _refused(_verify(folder, folder / "v.jpgx"), folder, capsys, "--out", "'.jpgx'")
    assert "OpenCV(" not in line


def test_write_image_names_the_path_and_the_extension(tmp_path):
    with pytest.raises(DataError, match=r"b\.jpgx.*'\.jpgx'"):
        write_image(tmp_path / "b.jpgx", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="is a folder"):
        write_image(tmp_path, np.zeros((8, 8), np.uint8))


# --- 6, 7: boards OpenCV cannot draw or memory cannot hold -----------------------------------


def test_charuco_board_with_more_squares_than_the_dictionary_has_markers(folder, capsys):
    # 100x100 squares need 5000 markers; DICT_4X4_50 has 50.
    argv = ["board", "--pattern", "100x100", "--charuco", "DICT_4X4_50", "--out", folder / "b.png"]
    _refused(argv, folder, capsys, "--pattern", "--charuco", "DICT_4X4_50")


def test_charuco_board_that_uses_every_marker_is_drawn(tmp_path, capsys):
    # 10x10 squares hold exactly the 50 markers of DICT_4X4_50: the limit is not off by one.
    out = tmp_path / "b.png"
    assert main(["calibrate", "board", "--pattern", "10x10", "--charuco", "DICT_4X4_50", "--pixels-per-square", "8", "--out", str(out)]) == 0
    assert out.is_file()


def test_board_pixels_per_square_has_an_upper_bound(folder, capsys):
    argv = ["board", "--pattern", "9x6", "--pixels-per-square", "100000", "--out", folder / "b.png"]
    _refused(argv, folder, capsys, "--pixels-per-square")


# --- 8: a YAML --out that is a folder ----------------------------------------------------------


def test_points_out_that_is_a_folder_names_it_not_a_temporary_file(folder, capsys):
    line = _refused(_points(folder, folder / "folder"), folder, capsys, "--out", str(folder / "folder"))
    assert ".tmp" not in line


@pytest.mark.parametrize("name, content", [("photo.png", b"\x89PNG\r\n\x1a\n not yaml"), ("config.yaml", b"streams: []\nsinks: []\n")])
def test_an_out_that_holds_something_else_than_a_calibration_is_refused(folder, capsys, name, content):
    """--out photo.png, or a pipeline's config.yaml, was replaced by a registration with exit 0."""
    (folder / name).write_bytes(content)
    _refused(_points(folder, folder / name), folder, capsys, f"--out {folder / name} exists and is not a calibration file")
    assert main(["calibrate", *map(str, _points(folder, folder / "calib.yaml"))]) == 0  # an earlier calibration is replaced


@pytest.mark.parametrize("value", ["2", "0", "-1"])
def test_target_min_views_too_few_to_pin_intrinsics_is_refused(folder, capsys, value):
    """--min-views -1 took one view and wrote a focal length of 10^6 px with exit 0."""
    argv = ["target", "--ir", folder / "ir.png", "--vi", folder / "vi.png", "--pattern", "4x3", "--min-views", value, "--out", folder / "t.yaml"]
    _refused(argv, folder, capsys, "--min-views must be at least 3", f"got {value}")


@pytest.mark.parametrize("value", ["-100", "0", "159"])
def test_scene_max_width_under_the_search_width_is_refused(folder, capsys, value):
    """It was raised to 160 without a word."""
    _refused(_scene(folder, folder / "s.yaml", "--max-width", value), folder, capsys, "--max-width must be at least 160", f"got {value}")


@pytest.mark.parametrize("command", ["verify", "board"])
def test_image_out_in_a_folder_not_made_yet_is_written_there(folder, capsys, command):
    """As points and scene write their files: verify said 'No such file or directory', as if an input were missing."""
    out = folder / "new" / "deeper" / "o.png"
    argv = _verify(folder, out) if command == "verify" else ["board", "--pattern", "4x3", "--out", out]
    assert main(["calibrate", *map(str, argv)]) == 0
    assert out.stat().st_size > 0


def test_a_homography_is_checked_for_singularity_after_its_scale_is_removed():
    """1e-5 times the identity is the identity (a homography's scale is arbitrary); it was refused as singular."""
    from calibration.fileformat import CalibrationError, Registration

    assert np.allclose(Registration(1e-5 * np.eye(3), (64, 48), (64, 48)).H, np.eye(3))
    with pytest.raises(CalibrationError, match="singular"):
        Registration(np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]]), (64, 48), (64, 48))


# --- 9: flags named in their errors, ranges stated in --help -----------------------------------


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--max-scale", "0", "--max-scale must be within 1 to 2; got 0"),
        ("--max-scale", "2.5", "--max-scale must be within 1 to 2; got 2.5"),
        ("--max-rotation", "90", "--max-rotation must be within 0 to 45; got 90"),
        ("--max-shift", "-0.1", "--max-shift must be within 0 to 0.45; got -0.1"),
    ],
)
def test_scene_search_range_errors_name_the_flag(folder, capsys, flag, value, message):
    """They said "max scale must be within 1 to 2; got 0.0", naming no flag."""
    _refused(_scene(folder, folder / "s.yaml", flag, value), folder, capsys, message)


@pytest.mark.parametrize(
    "command, texts",
    [
        ("scene", ["allowed: 1 to 2", "allowed: 0 to 45", "allowed: 0 to 0.45", "--min-confidence", "allowed: 0 to 1"]),
        ("offset", ["--min-confidence", "allowed: 0 to 1", "--force"]),
    ],
)
def test_help_states_the_allowed_ranges(capsys, command, texts):
    with pytest.raises(SystemExit):
        main(["calibrate", command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for text in texts:
        assert text in shown, text


@pytest.mark.parametrize("value", ["nan", "-0.5", "2"])
def test_offset_min_confidence_must_lie_in_0_to_1(videos, capsys, value):
    argv = ["offset", "--ir", videos / "ir.mp4", "--vi", videos / "vi.mp4", "--min-confidence", value, "--out", videos / "o.yaml"]
    _refused(argv, videos, capsys, "--min-confidence must lie within 0 to 1")


@pytest.mark.parametrize("flag", ["--ir-size", "--vi-size"])
def test_points_image_size_beyond_any_camera_is_refused_naming_the_flag(folder, capsys, flag):
    """--vi-size 100000x1080 failed after the fit with "destination_size must be ...", a key of the file."""
    argv = ["points", "--file", folder / "points.yaml", "--ir-size", "64x48", "--vi-size", "64x48", "--out", folder / "c.yaml"]
    argv[argv.index(flag) + 1] = "100000x1080"
    line = _refused(argv, folder, capsys, flag, "at most 65536", "100000x1080")
    assert "destination_size" not in line and "source_size" not in line


def test_board_pattern_error_shows_the_pattern_form(folder, capsys):
    """It said "expected WIDTHxHEIGHT like 640x480" for a pattern of columns and rows."""
    line = _refused(["board", "--pattern", "9x6x2", "--out", folder / "b.png"], folder, capsys, "--pattern", "COLSxROWS like 9x6", "9x6x2")
    assert "WIDTH" not in line


def test_scene_on_videos_that_hardly_overlap_in_time_is_refused(videos, capsys):
    """With --init's time_offset_s of 10 s, 2 s clips share no moment: their frames were paired all the same."""
    save_registration(videos / "late.yaml", identity_registration(*SIZE).with_time_offset(10.0))
    argv = ["scene", "--ir", videos / "ir.mp4", "--vi", videos / "vi.mp4", "--frames", "5", "--init", videos / "late.yaml", "--out", videos / "s.yaml"]
    _refused(argv, videos, capsys, "hardly overlap in time", "time_offset_s +10")
