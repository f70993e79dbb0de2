"""Registration from hand-picked point pairs, for rigs where neither a target nor the scene works.

Two file formats, pixel coordinates as OpenCV counts them ((0, 0) is the centre of the
top-left pixel):

YAML::

    ir_size: [640, 512]        # optional: [width, height]; the command line may give them
    vi_size: [1920, 1080]
    points:
      - {ir: [102.5, 88.0], vi: [311.0, 240.5]}
      - {ir: [530.0, 91.5], vi: [1602.0, 251.0]}
      - [512.0, 430.0, 1590.5, 1001.0]     # or a row: ir_x, ir_y, vi_x, vi_y

CSV: one pair per row, ``ir_x,ir_y,vi_x,vi_y``; a header row naming those four columns
(in any order) is optional; ``#`` starts a comment line.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.fileformat import CalibrationError, pixel_size, yaml_number
from calibration.fitting import MIN_POINTS, fit_homography
from calibration.imaging import Size, apply_homography
from ldfusion.config import read_yaml, unknown_keys

log = logging.getLogger(__name__)

COLUMNS = ("ir_x", "ir_y", "vi_x", "vi_y")
EDGE_TOLERANCE_PX = 0.5  # a click on the outermost pixel's far edge is still inside


@dataclass(frozen=True)
class PointPairs:
    ir: np.ndarray  # (N, 2) float64
    vi: np.ndarray  # (N, 2) float64
    ir_size: Size | None = None
    vi_size: Size | None = None


@dataclass(frozen=True)
class PointsResult:
    H: np.ndarray  # (3, 3) infrared -> visible
    rms_px: float | None  # None when the points determine the model exactly (no redundancy)
    errors_px: np.ndarray  # (N,) distance of each mapped infrared point from its visible point
    inliers: np.ndarray  # (N,) bool


def read_point_pairs(path: str | os.PathLike) -> PointPairs:
    """Read a YAML (.yaml/.yml) or CSV (anything else) point-pair file."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"point file not found: {path}")
    if path.suffix.lower() in (".yaml", ".yml"):
        return _parse_yaml(path)
    text = path.read_text(encoding="utf-8-sig", errors="replace")  # -sig: spreadsheet programs start CSVs with a byte-order mark
    return _parse_csv(text, path)


def _parse_yaml(path: Path) -> PointPairs:
    # The configs' and calibration files' reader: a key given twice (a second `points:`) is
    # refused, where plain YAML keeps the last one silently.
    data = read_yaml(path, what="point file", error=CalibrationError)
    if not isinstance(data.get("points"), list):
        raise CalibrationError(f"{path}: expected a mapping with a 'points' list")
    unknown = unknown_keys(data, ("points", "ir_size", "vi_size"))
    if unknown:
        raise CalibrationError(f"{path}: unknown key(s): {', '.join(unknown)}")
    rows = [_yaml_row(entry, index, path) for index, entry in enumerate(data["points"], start=1)]
    sizes = {key: _size(data.get(key), key, path) for key in ("ir_size", "vi_size")}
    return _pairs(rows, path, sizes["ir_size"], sizes["vi_size"])


def _yaml_row(entry, index: int, path: Path) -> list[float]:
    if isinstance(entry, dict):
        if set(entry) != {"ir", "vi"}:
            raise CalibrationError(f"{path}: point {index} must have exactly the keys ir and vi; got {sorted(map(str, entry))}")
        values = [*_as_list(entry["ir"], 2, index, path), *_as_list(entry["vi"], 2, index, path)]
    else:
        values = _as_list(entry, 4, index, path)
    return [yaml_number(value, f"{path}: point {index}") for value in values]


def _as_list(value, length: int, index: int, path: Path) -> list:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise CalibrationError(f"{path}: point {index}: expected {length} numbers, got {value!r}")
    return list(value)


def _parse_csv(text: str, path: Path) -> PointPairs:
    numbered = enumerate(text.splitlines(), start=1)
    lines = [(number, line) for number, line in numbered if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise CalibrationError(f"{path}: no point pairs")
    order = list(range(4))
    # Spreadsheets in locales with a decimal comma separate fields with semicolons: 12,5;30;...
    semicolons = ";" in lines[0][1]
    read = lambda line: [field.strip().replace(",", ".") if semicolons else field.strip()  # noqa: E731
                         for field in next(csv.reader(io.StringIO(line), delimiter=";" if semicolons else ","))]
    first = read(lines[0][1])
    if not _looks_numeric(first):
        order = _header_order(first, path, lines[0][0])
        lines = lines[1:]
    rows = []
    for number, line in lines:
        fields = read(line)
        if len(fields) != 4:
            raise CalibrationError(f"{path} line {number}: expected 4 values ({', '.join(COLUMNS)}), got {len(fields)}")
        rows.append(_numbers([fields[i] for i in order], f"{path} line {number}"))
    return _pairs(rows, path, None, None)


def _looks_numeric(fields: list[str]) -> bool:
    try:
        [float(field) for field in fields]
    except ValueError:
        return False
    return True


def _header_order(header: list[str], path: Path, number: int) -> list[int]:
    names = [name.strip().lower() for name in header]
    if sorted(names) != sorted(COLUMNS):
        raise CalibrationError(f"{path} line {number}: header must name the columns {', '.join(COLUMNS)}; got {', '.join(names)}")
    return [names.index(column) for column in COLUMNS]


def _numbers(values: list, where: str) -> list[float]:
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: not a number in {values!r}") from None
    if not all(math.isfinite(n) for n in numbers):
        raise CalibrationError(f"{where}: coordinates must be finite; got {values!r}")
    return numbers


def _size(value, key: str, path: Path) -> Size | None:
    if value is None:
        return None
    try:
        return pixel_size(value, key)  # the calibration file's rule: `[true, true]` is no size
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from None


def _pairs(rows: list[list[float]], path: Path, ir_size: Size | None, vi_size: Size | None) -> PointPairs:
    if not rows:
        raise CalibrationError(f"{path}: no point pairs")
    table = np.array(rows, dtype=np.float64)  # (N, 4)
    _check_no_repeats(table, path)
    return PointPairs(table[:, :2], table[:, 2:], ir_size, vi_size)


def _check_no_repeats(table: np.ndarray, path: Path) -> None:
    """A pair given twice (a row pasted again) adds no information, and the fit then took the
    pairs for too few or degenerate and blamed the order of the points."""
    _, inverse, counts = np.unique(table, axis=0, return_inverse=True, return_counts=True)
    repeated = counts[inverse.ravel()] > 1  # (N,) per row, in the file's order
    if repeated.any():
        first = int(np.argmax(repeated))
        copies = [int(index) + 1 for index in np.flatnonzero(np.all(table == table[first], axis=1))]
        raise CalibrationError(f"{path}: point pairs {', '.join(map(str, copies))} are the same pair {table[first].tolist()}; give each pair once")


def check_inside(pairs: PointPairs, ir_size: Size, vi_size: Size) -> None:
    """Every point must lie inside its image: a point outside is a typo or swapped columns."""
    for name, points, (width, height) in (("infrared", pairs.ir, ir_size), ("visible", pairs.vi, vi_size)):
        low = np.array([-EDGE_TOLERANCE_PX, -EDGE_TOLERANCE_PX])
        high = np.array([width - 1 + EDGE_TOLERANCE_PX, height - 1 + EDGE_TOLERANCE_PX])
        outside = np.any((points < low) | (points > high), axis=1)
        if outside.any():
            index = int(np.argmax(outside))
            raise CalibrationError(
                f"{name} point {index + 1} {points[index].tolist()} lies outside the {width}x{height} image"
            )


def fit_points(pairs: PointPairs, model: str = "homography", robust: bool = False) -> PointsResult:
    """Fit infrared -> visible through the pairs (all of them, or MAGSAC-screened if ``robust``)."""
    H, inliers = fit_homography(pairs.ir, pairs.vi, model, robust=robust)
    errors = np.linalg.norm(apply_homography(H, pairs.ir) - pairs.vi, axis=1)
    redundant = int(inliers.sum()) > MIN_POINTS[model]
    rms = float(np.sqrt(np.mean(errors[inliers] ** 2))) if redundant else None
    worst = int(np.argmax(np.where(inliers, errors, -1.0)))
    log.info("point pairs: %d used of %d, worst is pair %d at %.2f px", int(inliers.sum()), len(errors), worst + 1, errors[worst])
    return PointsResult(H, rms, errors, inliers)
