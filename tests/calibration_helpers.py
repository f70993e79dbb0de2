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
    # Rotations about x, y, z in degrees; the board centre's sideways offset as a fraction of the depth.
    poses = [
        (0, 0, 0, 0.0, 0.0),
        (25, 0, 5, 0.12, 0.06),
        (-20, 10, -8, -0.15, 0.0),
        (0, 25, 3, 0.0, -0.09),
        (15, -20, -4, 0.09, 0.09),
        (-10, -25, 10, -0.09, -0.06),
    ]
    pairs = []
    for index, (rx, ry, rz, dx, dy) in enumerate(poses):
        H_ir = board_to_image(K_ir, rotation(rx, ry, rz), centre, depth * np.array([dx, dy, 1.0]))
        H_vi = H_true @ H_ir
        ir = as_infrared(render_board(board, H_ir, ir_size), rng)
        vi = as_visible(render_board(board, H_vi, vi_size), rng)
        pairs.append((f"view{index}", ir, vi))
    return pairs, H_true, K_ir, K_vi, R_stereo


# --- scenes seen in two modalities ------------------------------------------------------


def centring(size: tuple[int, int]) -> np.ndarray:
    """Moves an image's centre to the origin."""
    return np.array([[1.0, 0.0, -(size[0] - 1) / 2], [0.0, 1.0, -(size[1] - 1) / 2], [0.0, 0.0, 1.0]])


def deformation(kind: str) -> np.ndarray:
    """Known deformations about the image centre, of the size a rough start leaves over."""
    if kind == "none":
        return np.eye(3)
    if kind == "shift":
        return np.array([[1.0, 0.0, 5.3], [0.0, 1.0, -3.7], [0.0, 0.0, 1.0]])
    if kind == "rotation":
        a = np.deg2rad(3.0)
        return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    if kind == "scale":
        return np.diag([1.07, 1.07, 1.0])
    if kind == "perspective":
        return np.array([[1.02, 0.02, 2.0], [-0.015, 0.99, -1.5], [1e-4, -6e-5, 1.0]])
    raise ValueError(kind)


def centred_homography(kind: str, ir_size: tuple[int, int], vi_size: tuple[int, int]) -> np.ndarray:
    """Infrared -> visible: the infrared frame centred in the visible one, then deformed."""
    return np.linalg.inv(centring(vi_size)) @ deformation(kind) @ centring(ir_size)


def infrared_view(ir_full: np.ndarray, H: np.ndarray, ir_size: tuple[int, int], vi_size: tuple[int, int]) -> np.ndarray:
    """The infrared frame of size ``ir_size`` that maps onto the visible frame through H.

    ``ir_full`` is an infrared image registered with the visible one at any resolution; it
    is sampled where H sends each new pixel, so the new frame has no empty borders as long
    as it maps inside the visible frame.
    """
    height, width = ir_full.shape[:2]
    to_full = scaling(width / vi_size[0], height / vi_size[1]) @ H
    smooth = cv2.GaussianBlur(ir_full, (0, 0), 0.4 * width / ir_size[0])  # no aliasing
    return cv2.warpPerspective(smooth, to_full, ir_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def two_modality_scene(size: tuple[int, int], seed: int = 0, shapes: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic scene as (visible RGB uint8, infrared float32), both at ``size``.

    Every shape has one brightness in the visible image and an unrelated "temperature" in
    the infrared one, so the images share edges but not intensities.
    """
    rng = np.random.default_rng(seed)
    big = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    visible = np.full((big[1], big[0]), 0.5, np.float32)
    thermal = np.full((big[1], big[0]), 0.3, np.float32)
    for _ in range(shapes):
        brightness, temperature = rng.uniform(0, 1, 2)
        centre = rng.uniform((0, 0), big).astype(int)
        if rng.random() < 0.5:
            axes = rng.uniform(6, big[0] / 8, 2).astype(int)
            angle = rng.uniform(0, 180)
            cv2.ellipse(visible, tuple(centre), tuple(axes), angle, 0, 360, float(brightness), -1, cv2.LINE_AA)
            cv2.ellipse(thermal, tuple(centre), tuple(axes), angle, 0, 360, float(temperature), -1, cv2.LINE_AA)
        else:
            box = cv2.boxPoints((tuple(map(float, centre)), tuple(rng.uniform(8, big[0] / 5, 2)), rng.uniform(0, 90)))
            cv2.fillConvexPoly(visible, box.astype(np.int32), float(brightness), cv2.LINE_AA)
            cv2.fillConvexPoly(thermal, box.astype(np.int32), float(temperature), cv2.LINE_AA)
    visible = cv2.resize(visible, size, interpolation=cv2.INTER_AREA)
    thermal = cv2.resize(thermal, size, interpolation=cv2.INTER_AREA)
    visible_rgb = np.repeat((np.clip(visible, 0, 1) * 255 + 0.5).astype(np.uint8)[:, :, None], 3, axis=2)
    return visible_rgb, cv2.GaussianBlur(thermal, (0, 0), 0.6)


# --- video streams ----------------------------------------------------------------------


def moving_blobs(frames: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """(frames, H, W) float32 scene: blobs that move in bursts and rest in between.

    Bursts give the motion energy a pattern that does not repeat, so the correlation of two
    recordings has one clear peak.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    blobs = 4
    position = rng.uniform((8, 8), (width - 8, height - 8), (blobs, 2))
    velocity = np.zeros((blobs, 2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width), np.float32)
    for t in range(frames):
        for k in range(blobs):
            if rng.random() < 0.15:  # start or stop a burst
                velocity[k] = rng.uniform(-3, 3, 2) if not velocity[k].any() else 0.0
        position = np.clip(position + velocity, 6, (width - 6, height - 6))
        frame = np.full((height, width), 0.2, np.float32)
        for (x, y), brightness in zip(position, (0.9, 0.7, 0.8, 0.6)):
            frame += brightness * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
        out[t] = np.clip(frame, 0, 1)
    return out


def write_video(path, frames: np.ndarray, fps: int) -> None:
    """Gray float frames in [0, 1] to an MPEG-4 file (``ldfusion.video``)."""
    from ldfusion.video import VideoWriter

    with VideoWriter(path, fps, codec="mpeg4", crf=None, preset=None, options={"qscale": "2"}) as writer:
        for frame in frames:
            writer.write_image((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8))
