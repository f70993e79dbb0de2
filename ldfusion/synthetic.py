"""A synthetic paired IR/visible scene, rendered by ldfusion itself.

Used by the demo when no recorded clip is at hand, and by benchmarks. The scene is a dusk
street: the visible camera sees textured background, buildings and a lit sign but barely
the people walking in the shadow; the infrared camera sees the warm people and a car's
engine brightly over a cool, low-contrast background. Fusion should show both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ldfusion.imageio import unit_to_uint8
from ldfusion.video import VideoWriter


@dataclass(frozen=True)
class Walker:
    x0: float  # start position as a fraction of the width
    y: float  # feet height as a fraction of the height
    speed: float  # fractions of the width per second
    scale: float  # body height as a fraction of the height


_WALKERS = (Walker(0.05, 0.86, 0.09, 0.33), Walker(0.92, 0.80, -0.06, 0.26), Walker(0.45, 0.93, 0.04, 0.40))


def _background(width: int, height: int) -> np.ndarray:
    """Static visible background: sky gradient, buildings with windows, road, texture. (H, W, 3) float32."""
    rng = np.random.default_rng(7)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    image = np.empty((height, width, 3), np.float32)
    image[:] = (0.35 + 0.25 * (1 - y))[..., None] * np.array([0.55, 0.6, 0.8], np.float32)
    for k in range(6):
        left, right = int(width * k / 6), int(width * (k + 0.85) / 6)
        top = int(height * (0.2 + 0.25 * rng.random()))
        shade = 0.25 + 0.2 * rng.random()
        image[top : int(0.72 * height), left:right] = shade * np.array([0.9, 0.85, 0.8], np.float32)
        for wy in range(top + 6, int(0.68 * height), 12):
            for wx in range(left + 4, right - 6, 10):
                if rng.random() < 0.4:
                    image[wy : wy + 5, wx : wx + 5] = (0.9, 0.8, 0.45)
    image[int(0.72 * height) :] = 0.22
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)  # texture the fused image should keep
    sign = np.zeros((height, width), np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(sign, "LDFUSION", (int(0.05 * width), int(0.15 * height)), cv2.FONT_HERSHEY_SIMPLEX, height / 300, 255, 2)
    image[sign > 0] = (0.95, 0.3, 0.3)
    return np.clip(image, 0, 1)


def _person(canvas: np.ndarray, x: float, feet: float, body: float, value) -> None:
    """Draw a simple person (head + torso + legs) whose feet are at (x, feet) in pixels."""
    head = max(2, int(body * 0.12))
    cx, top = int(x), int(feet - body)
    cv2.circle(canvas, (cx, top + head), head, value, -1, cv2.LINE_AA)
    cv2.ellipse(canvas, (cx, int(top + body * 0.45)), (max(2, int(body * 0.12)), int(body * 0.25)), 0, 0, 360, value, -1, cv2.LINE_AA)
    for side in (-1, 1):
        cv2.line(canvas, (cx, int(top + body * 0.65)), (cx + side * int(body * 0.08), int(feet)), value, max(2, int(body * 0.06)), cv2.LINE_AA)


def render_pair(t: float, width: int = 320, height: int = 240, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scene at time ``t`` seconds: (ir (H, W) uint8, visible (H, W, 3) RGB uint8)."""
    visible = (_background(width, height) if background is None else background).copy()
    ir = 0.25 + 0.08 * cv2.GaussianBlur(visible.mean(axis=2), (0, 0), 3)  # cool, low-contrast scene
    shadow = visible.copy()
    for walker in _WALKERS:
        x = ((walker.x0 + walker.speed * t) % 1.1 - 0.05) * width
        feet, body = walker.y * height, walker.scale * height
        _person(shadow, x, feet, body, (0.12, 0.12, 0.14))  # in shadow: nearly invisible to the eye
        _person(ir, x, feet, body, 0.85 + 0.1 * math.sin(3 * t + walker.x0 * 10))
    visible = 0.85 * visible + 0.15 * shadow
    car_x = int(((0.8 - 0.05 * t) % 1.0) * width)
    cv2.rectangle(ir, (car_x, int(0.76 * height)), (car_x + width // 8, int(0.84 * height)), 0.7, -1)
    ir = np.clip(ir + np.random.default_rng(int(t * 1000)).normal(0, 0.01, ir.shape), 0, 1)
    return unit_to_uint8(ir), unit_to_uint8(visible)


def write_paired_clip(
    folder: str | Path, seconds: float = 4.0, fps: int = 15, width: int = 320, height: int = 240
) -> tuple[Path, Path]:
    """Write ``ir.mp4`` and ``visible.mp4`` (H.264) of the scene; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ir_path, vi_path = folder / "ir.mp4", folder / "visible.mp4"
    background = _background(width, height)
    with VideoWriter(ir_path, fps, crf=23) as ir_out, VideoWriter(vi_path, fps, crf=23) as vi_out:
        for index in range(int(round(seconds * fps))):
            ir, visible = render_pair(index / fps, width, height, background)
            ir_out.write_image(ir)
            vi_out.write_image(visible)
    return ir_path, vi_path
