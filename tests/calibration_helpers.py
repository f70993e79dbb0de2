"""Synthetic scenes for the calibration tests: boards seen by two cameras, moving blobs."""

from __future__ import annotations

import cv2
import numpy as np

from calibration.imaging import scaling
from calibration.target import BoardSpec, board_image

SUPERSAMPLE = 4  # render at 4x and area-average: anti-aliased edges with exact geometry
PIXELS_PER_SQUARE = 48  # texture resolution


def camera_matrix(focal: float, size: tuple[int, int]) -> np.ndarray:
    return np.array([[focal, 0.0, (size[0] - 1) / 2], [0.0, focal, (size[1] - 1) / 2], [0.0, 0.0, 1.0]])


def rotation(degrees_x: float, degrees_y: float, degrees_z: float) -> np.ndarray:
    rvec = np.deg2rad([degrees_x, degrees_y, degrees_z])
    R = np.eye(3)
    for axis, angle in enumerate(rvec):
        vector = np.zeros(3)
        vector[axis] = angle
        R = cv2.Rodrigues(vector)[0] @ R
    return R


def board_to_image(K: np.ndarray, R: np.ndarray, board_centre: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Homography from board-plane coordinates (square units, z = 0) to pixels for a pose.

    The board is rotated by R about its centre and the centre is put at ``offset``
    (x, y, depth) in camera coordinates.
    """
    t = offset - R @ np.array([board_centre[0], board_centre[1], 0.0])
    return K @ np.column_stack([R[:, 0], R[:, 1], t])


def render_board(board: BoardSpec, H_board: np.ndarray, size: tuple[int, int], background: float = 0.45) -> np.ndarray:
    """The board seen through ``H_board`` (board -> pixels), (H, W) float32 in [0, 1]."""
    texture, to_texture = board_image(board, PIXELS_PER_SQUARE)
    texture = texture.astype(np.float32) / 255.0
    big = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    texture_to_big = scaling(SUPERSAMPLE) @ H_board @ np.linalg.inv(to_texture)
    rendered = cv2.warpPerspective(texture, texture_to_big, big, flags=cv2.INTER_LINEAR, borderValue=background)
    return cv2.resize(rendered, size, interpolation=cv2.INTER_AREA)


def as_infrared(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thermal look: inverted polarity, low contrast, soft optics, sensor noise; uint8."""
    thermal = 0.62 - 0.25 * image
    thermal = cv2.GaussianBlur(thermal, (0, 0), 0.7)
    thermal = thermal + rng.normal(0.0, 0.01, thermal.shape)
    return (np.clip(thermal, 0, 1) * 255 + 0.5).astype(np.uint8)


def as_visible(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 with a little noise."""
    visible = 0.1 + 0.8 * image + rng.normal(0.0, 0.01, image.shape)
    gray = (np.clip(visible, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def stereo_board_views(board: BoardSpec, ir_size=(240, 180), vi_size=(320, 240), depth: float = 14.0, seed: int = 0):
    """Board views from a zero-baseline IR/visible rig.

    Returns (pairs [(name, ir uint8, vi RGB uint8)], H_true infrared -> visible, K_ir, K_vi, R).
    With no baseline, every view's infrared -> visible map is K_vi R K_ir^-1 exactly.
    """
    rng = np.random.default_rng(seed)
    K_ir, K_vi = camera_matrix(230.0, ir_size), camera_matrix(300.0, vi_size)
    R_stereo = rotation(0.8, -1.5, 2.0)
    H_true = K_vi @ R_stereo @ np.linalg.inv(K_ir)
    H_true /= H_true[2, 2]
    centre = board.object_points()[:, :2].mean(axis=0) / board.square_size
    poses = [(0, 0, 0, 0.0, 0.0), (25, 0, 5, 0.4, 0.2), (-20, 10, -8, -0.5, 0.0), (0, 25, 3, 0.0, -0.3), (15, -20, -4, 0.3, 0.3), (-10, -25, 10, -0.3, -0.2)]
    pairs = []
    for index, (rx, ry, rz, dx, dy) in enumerate(poses):
        H_ir = board_to_image(K_ir, rotation(rx, ry, rz), centre, depth * np.array([0.3 * dx, 0.3 * dy, 1.0]))
        H_vi = H_true @ H_ir
        ir = as_infrared(render_board(board, H_ir, ir_size), rng)
        vi = as_visible(render_board(board, H_vi, vi_size), rng)
        pairs.append((f"view{index}", ir, vi))
    return pairs, H_true, K_ir, K_vi, R_stereo
