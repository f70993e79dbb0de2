"""Registration from clicked point pairs: YAML and CSV files, fitting, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from calibration.fileformat import CalibrationError
from calibration.imaging import apply_homography, corner_error
from calibration.points import PointPairs, check_inside, fit_points, read_point_pairs

IR_SIZE, VI_SIZE = (320, 256), (640, 480)
H_TRUE = np.array([[1.9, 0.04, 12.0], [-0.03, 1.85, 8.0], [2e-5, -1e-5, 1.0]])
IR_POINTS = np.array([[10.0, 12.0], [300.0, 20.0], [310.0, 240.0], [15.0, 230.0], [160.0, 128.0], [80.0, 200.0], [250.0, 70.0]])


def _vi_points(noise: float = 0.0, seed: int = 0) -> np.ndarray:
    return apply_homography(H_TRUE, IR_POINTS) + np.random.default_rng(seed).normal(0, noise, IR_POINTS.shape)


def _write_yaml(path, ir_points, vi_points, **sizes):
    entries = [{"ir": [float(x), float(y)], "vi": [float(u), float(v)]} for (x, y), (u, v) in zip(ir_points, vi_points)]
    path.write_text(yaml.safe_dump({**sizes, "points": entries}))
    return path


def test_yaml_points_recover_the_homography(tmp_path):
    path = _write_yaml(tmp_path / "clicks.yaml", IR_POINTS, _vi_points(), ir_size=list(IR_SIZE), vi_size=list(VI_SIZE))
    pairs = read_point_pairs(path)
    assert pairs.ir_size == IR_SIZE and pairs.vi_size == VI_SIZE
    result = fit_points(pairs)
    assert corner_error(result.H, H_TRUE, IR_SIZE) < 1e-3
    assert result.rms_px == pytest.approx(0.0, abs=1e-3)


def test_csv_points_with_header_in_any_order_and_comments(tmp_path):
    vi = _vi_points(noise=0.3)
    lines = ["# clicked in both images", "vi_x,vi_y,ir_x,ir_y"]
    lines += [f"{u},{v},{x},{y}" for (x, y), (u, v) in zip(IR_POINTS, vi)]
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join(lines) + "\n")
    result = fit_points(read_point_pairs(path))
    assert corner_error(result.H, H_TRUE, IR_SIZE) < 2.0
    assert 0.05 < result.rms_px < 0.6  # noisy clicks show up as a residual


def test_csv_saved_by_a_spreadsheet_with_a_byte_order_mark(tmp_path):
    """Excel's 'CSV UTF-8' starts with a byte-order mark, which made the header unknown."""
    lines = ["ir_x,ir_y,vi_x,vi_y"] + [f"{x},{y},{u},{v}" for (x, y), (u, v) in zip(IR_POINTS, _vi_points())]
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    np.testing.assert_allclose(read_point_pairs(path).ir, IR_POINTS)


def test_csv_from_a_spreadsheet_in_a_decimal_comma_locale(tmp_path):
    """Semicolon-separated, with comma decimals (German or French Excel): refused as a bad header."""
    vi = _vi_points(noise=0.3)
    fmt = lambda n: f"{n:.2f}".replace(".", ",")  # noqa: E731
    lines = ["ir_x;ir_y;vi_x;vi_y"] + [";".join(map(fmt, (x, y, u, v))) for (x, y), (u, v) in zip(IR_POINTS, vi)]
    path = tmp_path / "clicks.csv"
    path.write_text("\r\n".join(lines) + "\r\n")
    pairs = read_point_pairs(path)
    np.testing.assert_allclose(pairs.ir, IR_POINTS, atol=0.005)
    np.testing.assert_allclose(pairs.vi, vi, atol=0.005)


def test_csv_without_header(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join(f"{x},{y},{u},{v}" for (x, y), (u, v) in zip(IR_POINTS, _vi_points())))
    np.testing.assert_allclose(read_point_pairs(path).ir, IR_POINTS)


def test_yaml_rows_and_affine_model(tmp_path):
    A = np.array([[2.0, 0.1, 5.0], [-0.05, 1.9, 3.0], [0.0, 0.0, 1.0]])
    rows = [[*p, *q] for p, q in zip(IR_POINTS[:3].tolist(), apply_homography(A, IR_POINTS[:3]).tolist())]
    path = tmp_path / "rows.yaml"
    path.write_text(yaml.safe_dump({"points": rows}))
    result = fit_points(read_point_pairs(path), model="affine")
    np.testing.assert_allclose(result.H, A, atol=1e-9)
    assert result.rms_px is None  # three pairs determine an affine map exactly: no error to report


def test_robust_fit_drops_a_wrong_click():
    vi = _vi_points(noise=0.2)
    vi[2] += (40.0, -25.0)  # one pair clicked on the wrong feature
    pairs = PointPairs(IR_POINTS, vi)
    plain = fit_points(pairs)
    robust = fit_points(pairs, robust=True)
    assert not robust.inliers[2] and robust.inliers.sum() == len(IR_POINTS) - 1
    assert corner_error(robust.H, H_TRUE, IR_SIZE) < corner_error(plain.H, H_TRUE, IR_SIZE)


@pytest.mark.parametrize(
    "ir, vi, message",
    [
        (IR_POINTS[:3], None, "at least 4 point pairs; got 3"),
        (np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0], [30.0, 30.0]]), None, "degenerate"),
    ],
)
def test_too_few_or_collinear_points_are_errors(ir, vi, message):
    vi = apply_homography(H_TRUE, ir) if vi is None else vi
    with pytest.raises(CalibrationError, match=message):
        fit_points(PointPairs(ir, vi))


def test_points_outside_the_image_are_errors():
    with pytest.raises(CalibrationError, match=r"visible point 2 \[579.4.* lies outside the 320x240 image"):
        check_inside(PointPairs(IR_POINTS, _vi_points()), IR_SIZE, (320, 240))


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.yaml", "points: [1, 2", "malformed YAML"),
        ("bad.yaml", "pts: []", "'points' list"),
        ("bad.yaml", "points:\n  - {ir: [1, 2]}\n", "point 1 must have exactly the keys ir and vi"),
        ("bad.yaml", "points:\n  - {ir: [1, 2], vi: [3, x]}\n", "point 1: 'x' is not a number"),
        ("bad.yaml", "points:\n  - [1, 2, 3]\n", "point 1: expected 4 numbers"),
        ("bad.yaml", "ir_size: [640]\npoints: [[1, 2, 3, 4]]\n", "ir_size must be"),
        ("bad.csv", "1,2,3,4\n5,6,7\n", "line 2: expected 4 values"),
        ("bad.csv", "a,b,c,d\n1,2,3,4\n", "header must name the columns"),
        ("bad.csv", "1,2,3,4\n5,6,seven,8\n", "line 2: not a number"),
        ("bad.csv", "# nothing\n\n", "no point pairs"),
        ("bad.csv", "1,2,3,nan\n", "must be finite"),
    ],
)
def test_malformed_point_files_give_one_line_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CalibrationError, match=message) as info:
        read_point_pairs(path)
    assert "\n" not in str(info.value)


def test_missing_point_file(tmp_path):
    with pytest.raises(CalibrationError, match="point file not found"):
        read_point_pairs(tmp_path / "nope.csv")


def test_is_affine_is_one_test_of_the_last_row_whatever_the_scale():
    from calibration.fileformat import is_affine

    affine = np.array([[1.02, 0.01, 3.0], [-0.01, 0.98, -2.0], [0.0, 0.0, 1.0]])
    assert is_affine(affine) and is_affine(4.0 * affine)  # scaled: the same map
    perspective = affine.copy()
    perspective[2, 0] = 1e-6  # 1e-3 at x = 1000 px: a visible perspective
    assert not is_affine(perspective) and not is_affine(-2.0 * perspective)


def test_points_out_of_order_that_fold_the_image_are_refused(tmp_path, capsys):
    """Two swapped rows gave a bow-tie map whose line at infinity crosses the infrared frame:
    written, exit 0 (verify then said 'alignment score nan ... over 0%')."""
    from calibration.cli import main as calibrate_main

    rows = {"bowtie": "0,0,0,0\n639,0,1919,1079\n639,511,0,1079\n0,511,1919,0\n", "ok": "0,0,0,0\n639,0,1919,0\n639,511,1919,1079\n0,511,0,1079\n"}
    for name, body in rows.items():
        (tmp_path / f"{name}.csv").write_text("ir_x,ir_y,vi_x,vi_y\n" + body)
    argv = ["points", "--ir-size", "640x512", "--vi-size", "1920x1080", "-q"]
    assert calibrate_main([*argv, "--file", str(tmp_path / "bowtie.csv"), "--out", str(tmp_path / "b.yaml")]) == 2
    assert "folds the infrared image over itself" in capsys.readouterr().err and not (tmp_path / "b.yaml").exists()
    assert calibrate_main([*argv, "--file", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "o.yaml")]) == 0


def test_a_size_flag_that_differs_from_the_point_files_is_refused(tmp_path, capsys):
    """--ir-size 1280x1024 silently replaced the file's ir_size 640x512."""
    from calibration.cli import main as calibrate_main

    points = [{"ir": [x, y], "vi": [x, y]} for x, y in ((0, 0), (639, 0), (639, 511), (0, 511))]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"points": points, "ir_size": [640, 512], "vi_size": [640, 512]}))
    argv = ["points", "--file", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "c.yaml"), "-q"]
    assert calibrate_main([*argv, "--ir-size", "1280x1024"]) == 2
    assert "--ir-size 1280x1024 differs from" in capsys.readouterr().err and not (tmp_path / "c.yaml").exists()
    assert calibrate_main([*argv, "--ir-size", "640x512"]) == 0


@pytest.mark.parametrize("key", ["points", "ir_size"])
def test_a_key_given_twice_in_a_point_file_is_refused(tmp_path, key):
    """YAML keeps the last of two `points:` (or `ir_size:`) silently: half the clicks were dropped."""
    rows = "  - [0, 0, 0, 0]\n  - [639, 0, 639, 0]\n  - [639, 511, 639, 511]\n  - [0, 511, 0, 511]\n"
    sizes = "ir_size: [640, 512]\nvi_size: [640, 512]\n"
    path = tmp_path / "p.yaml"
    path.write_text(sizes + f"{key}:\n" + (rows if key == "points" else "  [320, 256]\n") + "points:\n" + rows)
    with pytest.raises(CalibrationError, match=f"the key '{key}' appears twice"):
        read_point_pairs(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("points: [{ir: [true, 2], vi: [3, 4]}]\n", "point 1: True is not a number"),
        ("points: [[1, 2, 3, false]]\n", "point 1: False is not a number"),
        ("points: [[1, 2, '3', 4]]\n", "point 1: '3' is not a number"),
        ("ir_size: [true, true]\npoints: [[1, 2, 3, 4]]\n", r"ir_size must be \[width, height\].*got \[True, True\]"),
    ],
)
def test_yaml_booleans_are_neither_coordinates_nor_sizes(tmp_path, text, message):
    """`true` read as 1.0 passed as a coordinate and `ir_size: [true, true]` as a 1x1 image."""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=message):
        read_point_pairs(path)


def test_a_point_pair_given_twice_is_named(tmp_path, capsys):
    """A row pasted twice was reported as a map that folds the image ('swapped?')."""
    from calibration.cli import main as calibrate_main

    (tmp_path / "p.csv").write_text("10,10,30,20\n600,12,1800,40\n10,10,30,20\n15,500,40,1050\n620,490,1860,1030\n")
    argv = ["points", "--file", str(tmp_path / "p.csv"), "--ir-size", "640x512", "--vi-size", "1920x1080", "--out", str(tmp_path / "c.yaml")]
    assert calibrate_main(argv) == 2
    error = capsys.readouterr().err
    assert "point pairs 1, 3 are the same pair [10.0, 10.0, 30.0, 20.0]" in error and "folds" not in error
