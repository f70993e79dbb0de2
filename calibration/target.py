"""Registration from a calibration target seen by both cameras: checkerboard or ChArUco.

Each view is an infrared/visible image pair of the same board at the same moment. Board
corners found in both images of a view are correspondences; all views' correspondences
together give the infrared -> visible homography (USAC MAGSAC, then least squares on the
inliers) and its RMS reprojection error. With enough views, each camera's intrinsics and
distortion (``cv2.calibrateCamera``) and the rotation/translation between the two cameras
(``cv2.stereoCalibrate``) come too, so a user can undistort.

Thermal boards are hard to see: a heated or cooled board shows low contrast, and which
squares look dark depends on their emissivity, so the board is often inverted. Each image
is contrast-stretched (percentiles + CLAHE) and searched in both polarities.

One homography serves every depth only when the cameras are close together compared with
the distance to the scene; hold the board at the working distance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.fileformat import CalibrationError
from calibration.fitting import fit_homography
from calibration.imaging import Size, image_size, reprojection_rms, stretch_contrast, to_gray_u8

log = logging.getLogger(__name__)

BOARD_KINDS = ("checkerboard", "charuco")
MIN_VIEWS_FOR_INTRINSICS = 4
MIN_VIEWS_FLOOR = 3  # the fewest views `--min-views` may ask for: with fewer, intrinsics are whatever fits the noise
_SB_FLAGS = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
_CLASSIC_FLAGS = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE


@dataclass(frozen=True)
class BoardSpec:
    """The printed board.

    ``columns`` x ``rows`` count inner corners for a checkerboard (a 10x7-square board is
    9x6) and squares for a ChArUco board (as OpenCV's ``CharucoBoard`` does).
    ``square_size`` is in the user's unit (e.g. millimetres); it only scales the stereo
    translation. ``marker_size`` defaults to 0.75 of a square.
    """

    kind: str = "checkerboard"
    columns: int = 9
    rows: int = 6
    square_size: float = 1.0
    marker_size: float | None = None
    dictionary: str = "DICT_5X5_100"
    legacy: bool = False  # ChArUco boards printed by OpenCV < 4.6 with an even row count

    def __post_init__(self) -> None:
        if self.kind not in BOARD_KINDS:
            raise CalibrationError(f"board kind must be one of {BOARD_KINDS}; got {self.kind!r}")
        smallest = 2 if self.kind == "checkerboard" else 3
        if self.columns < smallest or self.rows < smallest:
            what = "inner corners" if self.kind == "checkerboard" else "squares"
            raise CalibrationError(f"a {self.kind} needs at least {smallest}x{smallest} {what}; got {self.columns}x{self.rows}")
        if not 0 < self.square_size < math.inf:  # a NaN would pass `<= 0` and put NaN into the stereo T
            raise CalibrationError(f"square size must be a positive number; got {self.square_size}")
        if self.kind == "charuco":
            if not hasattr(cv2.aruco, self.dictionary):
                raise CalibrationError(f"unknown ArUco dictionary {self.dictionary!r} (e.g. DICT_4X4_50, DICT_5X5_100)")
            self._check_enough_markers()
            marker = self.marker_size if self.marker_size is not None else 0.75 * self.square_size
            if not 0 < marker < self.square_size:
                raise CalibrationError(f"marker size must lie between 0 and the square size; got {marker}")
            object.__setattr__(self, "marker_size", float(marker))

    def _check_enough_markers(self) -> None:
        # Half the squares (rounded down) hold a marker, each a different one of the dictionary;
        # OpenCV would fail with an assertion on the first id the dictionary lacks.
        needed = self.columns * self.rows // 2
        available = len(cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)).bytesList)
        if needed > available:
            raise CalibrationError(
                f"a {self.columns}x{self.rows} ChArUco board needs {needed} markers but {self.dictionary} has only "
                f"{available}: choose fewer squares (--pattern) or a larger dictionary (--charuco)"
            )

    @property
    def label(self) -> str:
        return f"{self.kind} {self.columns}x{self.rows}"

    def object_points(self) -> np.ndarray:
        """(N, 3) float32 board coordinates of every corner, indexed by corner id."""
        if self.kind == "charuco":
            return self.charuco_board().getChessboardCorners().astype(np.float32)
        grid = np.mgrid[0 : self.columns, 0 : self.rows].T.reshape(-1, 2)  # row by row, like OpenCV
        return np.hstack([grid * self.square_size, np.zeros((len(grid), 1))]).astype(np.float32)

    def charuco_board(self) -> "cv2.aruco.CharucoBoard":
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        board = cv2.aruco.CharucoBoard((self.columns, self.rows), self.square_size, self.marker_size, dictionary)
        board.setLegacyPattern(self.legacy)
        return board


def board_image_size(board: BoardSpec, pixels_per_square: int) -> Size:
    """(width, height) of ``board_image``'s image: the squares plus a one-square margin each side."""
    # A checkerboard counts inner corners, so it has one square more than that each way.
    extra = 2 if board.kind == "charuco" else 3
    return (board.columns + extra) * int(pixels_per_square), (board.rows + extra) * int(pixels_per_square)


def board_image(board: BoardSpec, pixels_per_square: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A printable board with a one-square white margin: (uint8 image, 3x3 map board -> pixels).

    Board coordinates are those of ``object_points`` divided by the square size.
    """
    px = int(pixels_per_square)
    width, height = board_image_size(board, px)
    if board.kind == "charuco":
        image = board.charuco_board().generateImage((width, height), marginSize=px)
        origin = px  # the board's outer corner; object points count from there
    else:
        squares = np.add.outer(np.arange(board.rows + 1), np.arange(board.columns + 1)) % 2  # 0 = black, top-left
        image = np.full((height, width), 255, np.uint8)
        image[px:-px, px:-px] = np.kron(squares * 255, np.ones((px, px))).astype(np.uint8)
        origin = 2 * px  # object points count from the first inner corner
    # A pixel's centre lies half a pixel inside its edge.
    to_pixels = np.array([[px, 0.0, origin - 0.5], [0.0, px, origin - 0.5], [0.0, 0.0, 1.0]])
    return image, to_pixels


@dataclass(frozen=True)
class Detection:
    ids: np.ndarray  # (N,) int corner ids
    points: np.ndarray  # (N, 2) float32 pixel positions
    inverted: bool  # found in the negative image


@dataclass(frozen=True)
class View:
    name: str
    ir: Detection | None
    vi: Detection | None


@dataclass(frozen=True)
class TargetResult:
    H: np.ndarray  # (3, 3) infrared -> visible pixels
    model: str
    rms_px: float  # over inlier corners, visible pixels
    inliers: int
    correspondences: int
    views: list[View]
    cameras: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def views_used(self) -> list[str]:
        return [view.name for view in self.views if view.ir is not None and view.vi is not None]


def detect_board(image: np.ndarray, board: BoardSpec) -> Detection | None:
    """Find the board's corners in one image, trying stretched/plain and both polarities."""
    gray = to_gray_u8(image)
    stretched = stretch_contrast(gray)
    for candidate, inverted in ((stretched, False), (255 - stretched, True), (gray, False), (255 - gray, True)):
        found = _detect_charuco(candidate, board) if board.kind == "charuco" else _detect_checkerboard(candidate, board)
        if found is not None:
            return Detection(found[0], found[1], inverted)
    return None


def _detect_checkerboard(gray: np.ndarray, board: BoardSpec) -> tuple[np.ndarray, np.ndarray] | None:
    pattern = (board.columns, board.rows)
    ok, corners = cv2.findChessboardCornersSB(gray, pattern, flags=_SB_FLAGS)
    if not ok:
        # The classic detector finds some low-resolution boards that the SB one misses.
        ok, corners = cv2.findChessboardCorners(gray, pattern, flags=_CLASSIC_FLAGS)
        if not ok:
            return None
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
        corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)
    points = corners.reshape(-1, 2).astype(np.float32)
    return np.arange(len(points)), points


def _detect_charuco(gray: np.ndarray, board: BoardSpec) -> tuple[np.ndarray, np.ndarray] | None:
    detector = cv2.aruco.CharucoDetector(board.charuco_board())
    corners, ids, _, _ = detector.detectBoard(gray)
    if corners is None or ids is None or len(ids) < 4:
        return None
    return ids.reshape(-1).astype(int), corners.reshape(-1, 2).astype(np.float32)


def match_checkerboard_order(ir: Detection, vi: Detection, board: BoardSpec) -> Detection:
    """Renumber the visible corners so that corner i is the same physical corner in both images.

    A checkerboard has no marked origin: a detector may start at either end (or, for a
    square grid, any side), and inverting the image often flips where it starts. The two
    cameras look at the board from nearly the same direction, so the numbering whose grid
    axes point the same way in both images is the right one.
    """
    grid_ir = ir.points.reshape(board.rows, board.columns, 2)
    grid_vi = vi.points.reshape(board.rows, board.columns, 2)
    best, best_cost = grid_vi, np.inf
    for candidate in _grid_symmetries(grid_vi, square=board.rows == board.columns):
        cost = _axis_angle(grid_ir, candidate)
        if cost < best_cost:
            best, best_cost = candidate, cost
    return Detection(vi.ids, best.reshape(-1, 2), vi.inverted)


def _grid_symmetries(grid: np.ndarray, square: bool) -> list[np.ndarray]:
    turns = (0, 1, 2, 3) if square else (0, 2)
    return [np.rot90(grid, k, axes=(0, 1)) for k in turns]


def _axis_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of the angles between the grids' row axes and column axes, radians."""
    total = 0.0
    for axis_a, axis_b in ((a[0, -1] - a[0, 0], b[0, -1] - b[0, 0]), (a[-1, 0] - a[0, 0], b[-1, 0] - b[0, 0])):
        cosine = np.dot(axis_a, axis_b) / (np.linalg.norm(axis_a) * np.linalg.norm(axis_b) + 1e-12)
        total += float(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return total


def detect_views(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], board: BoardSpec) -> list[View]:
    """Detect the board in every (name, ir, vi) pair; corners are matched by id."""
    views = []
    for name, ir_image, vi_image in pairs:
        ir, vi = detect_board(ir_image, board), detect_board(vi_image, board)
        if ir is not None and vi is not None and board.kind == "checkerboard":
            vi = match_checkerboard_order(ir, vi, board)
        log.info(
            "%s: board %s in infrared%s, %s in visible",
            name,
            "found" if ir else "NOT found",
            " (inverted)" if ir and ir.inverted else "",
            "found" if vi else "NOT found",
        )
        views.append(View(name, ir, vi))
    return views


def correspondences(views: Sequence[View]) -> tuple[np.ndarray, np.ndarray]:
    """Corners seen in both images of a view: (N, 2) infrared and (N, 2) visible points."""
    ir_points, vi_points = [], []
    for view in views:
        if view.ir is None or view.vi is None:
            continue
        common, ir_index, vi_index = np.intersect1d(view.ir.ids, view.vi.ids, return_indices=True)
        ir_points.append(view.ir.points[ir_index])
        vi_points.append(view.vi.points[vi_index])
    if not ir_points:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    return np.concatenate(ir_points), np.concatenate(vi_points)


def calibrate_from_target(
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
    board: BoardSpec,
    model: str = "homography",
    min_views_for_intrinsics: int = MIN_VIEWS_FOR_INTRINSICS,
) -> TargetResult:
    """Detect the board in every pair, fit infrared -> visible, and with enough views the cameras."""
    if not pairs:
        raise CalibrationError("no image pairs given")
    views = detect_views(pairs, board)
    _complain_if_missing(views, board)
    src, dst = correspondences(views)
    H, inliers = fit_homography(src, dst, model)
    rms = reprojection_rms(H, src[inliers], dst[inliers])
    notes = []
    if not inliers.all():
        notes.append(f"{int((~inliers).sum())} of {len(src)} corners disagreed with the fit and were left out")
    both = [view for view in views if view.ir is not None and view.vi is not None]
    cameras = None
    if len(both) >= min_views_for_intrinsics:
        try:
            cameras = calibrate_cameras(views, board, image_size(pairs[0][1]), image_size(pairs[0][2]))
        except cv2.error as exc:  # e.g. corners of a view all on one line
            notes.append(f"camera intrinsics could not be estimated ({str(exc).strip().splitlines()[-1][:120]})")
    else:
        notes.append(f"{len(both)} view(s) with the board in both images; {min_views_for_intrinsics} are needed for intrinsics")
    return TargetResult(H, model, rms, int(inliers.sum()), len(src), views, cameras, notes)


def _complain_if_missing(views: Sequence[View], board: BoardSpec) -> None:
    ir_found = sum(view.ir is not None for view in views)
    vi_found = sum(view.vi is not None for view in views)
    both = sum(view.ir is not None and view.vi is not None for view in views)
    if both:
        return
    hint = "inner corners" if board.kind == "checkerboard" else "squares"
    raise CalibrationError(
        f"the {board.label} board was not found in both images of any of the {len(views)} view(s) "
        f"(infrared: {ir_found}, visible: {vi_found}); check the pattern size ({hint}) and the board's contrast"
    )


def calibrate_cameras(views: Sequence[View], board: BoardSpec, ir_size: Size, vi_size: Size) -> dict:
    """Intrinsics and distortion of both cameras, and the infrared -> visible camera pose.

    ``R``, ``T`` map a point from infrared camera coordinates to visible camera coordinates
    (``X_vi = R X_ir + T``), T in the board's square-size unit.
    """
    objects = board.object_points()
    per_camera = {}
    for name, size in (("ir", ir_size), ("vi", vi_size)):
        detections = [getattr(view, name) for view in views if getattr(view, name) is not None]
        object_points = [objects[d.ids] for d in detections]
        image_points = [d.points.reshape(-1, 1, 2) for d in detections]
        rms, K, dist, _, _ = cv2.calibrateCamera(object_points, image_points, size, None, None)
        per_camera[name] = {
            "image_size": list(size),
            "K": _listed(K),
            "dist": _listed(dist.reshape(-1)),
            "rms_px": float(rms),
            "views": len(detections),
        }
        log.info("%s intrinsics from %d views: RMS %.3f px", name, len(detections), rms)
    object_points, ir_points, vi_points = _common_view_points(views, objects)
    K_ir, dist_ir = np.array(per_camera["ir"]["K"]), np.array(per_camera["ir"]["dist"])
    K_vi, dist_vi = np.array(per_camera["vi"]["K"]), np.array(per_camera["vi"]["dist"])
    rms, *_, R, T, _, _ = cv2.stereoCalibrate(
        object_points, ir_points, vi_points, K_ir, dist_ir, K_vi, dist_vi, ir_size, flags=cv2.CALIB_FIX_INTRINSIC
    )
    log.info("stereo extrinsics from %d views: RMS %.3f px", len(object_points), rms)
    return {
        "square_size": float(board.square_size),
        "ir": per_camera["ir"],
        "vi": per_camera["vi"],
        "stereo": {"R": _listed(R), "T": _listed(T.reshape(-1)), "rms_px": float(rms), "views": len(object_points)},
    }


def _common_view_points(views: Sequence[View], objects: np.ndarray):
    object_points, ir_points, vi_points = [], [], []
    for view in views:
        if view.ir is None or view.vi is None:
            continue
        common, ir_index, vi_index = np.intersect1d(view.ir.ids, view.vi.ids, return_indices=True)
        if len(common) < 4:
            continue
        object_points.append(objects[common])
        ir_points.append(view.ir.points[ir_index].reshape(-1, 1, 2))
        vi_points.append(view.vi.points[vi_index].reshape(-1, 1, 2))
    return object_points, ir_points, vi_points


def _listed(array: np.ndarray) -> list:
    """Plain floats for YAML."""
    return np.asarray(array, dtype=np.float64).tolist()
