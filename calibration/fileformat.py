"""The registration file: how an infrared frame maps onto the visible frame.

One YAML file, written by ``ldfusion calibrate`` and read by the pipeline::

    version: 1
    model: homography            # or affine (last row of H is 0 0 1)
    H: [[...], [...], [...]]     # maps source pixel (x, y, 1) to destination pixels
    source: ir                   # the image H maps from: ir (onto visible) ...
    source_size: [640, 512]      # [width, height] of the source images
    destination_size: [1920, 1080]
    time_offset_s: 0.0           # add to IR timestamps to put them on the visible clock
    method: checkerboard         # checkerboard | charuco | edge-tiles | ecc (older) | points | size-ratio | identity
    error_px: 0.31               # RMS reprojection / residual error, in destination pixels
    crop: null                   # optional [x, y, w, h] common field of view in the destination
    cameras: null                # optional intrinsics/distortion/stereo extrinsics (below)

Pixel coordinates follow OpenCV: (0, 0) is the centre of the top-left pixel.

``cameras``, written by ``ldfusion calibrate target`` when enough board views were seen::

    cameras:
      square_size: 25.0          # the board's square, in the user's unit (T is in it too)
      ir: {image_size: [w, h], K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dist: [k1, k2, p1, p2, k3], rms_px: 0.2, views: 9}
      vi: {image_size: [w, h], K: ..., dist: ..., rms_px: 0.2, views: 9}
      stereo: {R: 3x3, T: [tx, ty, tz], rms_px: 0.3, views: 9}   # X_vi = R X_ir + T

``K`` and ``dist`` go straight into ``cv2.undistort``. ``H`` maps raw (distorted) pixels.

Loading checks every value's type (a YAML ``true`` or ``"1"`` is no number) and refuses an ``H``
that folds the source frame over itself (``imaging.folds_the_frame``), as ``calibrate points``
refuses to write one.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from calibration.imaging import folds_the_frame
from ldfusion.config import finite_float, read_yaml, unknown_keys
from ldfusion.errors import ConfigError
from ldfusion.paths import replaced_whole

FORMAT_VERSION = 1
MODELS = ("homography", "affine")
SOURCES = ("ir", "vi")
MAX_SIDE = 65536  # pixels; no camera is larger, and a bigger size is a typo or a crafted file


class CalibrationError(ConfigError):
    """A registration file is missing or malformed."""


def is_affine(H: np.ndarray) -> bool:
    """Whether H has no perspective part: its last row is [0, 0, 1] once scaled by H[2, 2]
    (to 1e-9: across 10,000 px the projective divisor then moves by at most 2e-5). The one
    test of it, for the file's model, the confidence's corner handling and ``calibrate verify``."""
    return bool(np.allclose(H[2, :2] / H[2, 2], 0.0, atol=1e-9))


@dataclass(frozen=True)
class Registration:
    H: np.ndarray  # (3, 3) float64, source -> destination pixels
    source_size: tuple[int, int]  # (width, height)
    destination_size: tuple[int, int]
    model: str = "homography"
    source: str = "ir"
    time_offset_s: float = 0.0
    method: str = "identity"
    error_px: float | None = None
    crop: tuple[int, int, int, int] | None = None  # (x, y, w, h) in destination pixels
    cameras: dict | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        H = np.asarray(self.H, dtype=np.float64)
        if H.shape != (3, 3):
            raise CalibrationError(f"H must be a 3x3 matrix; got shape {H.shape}")
        if not np.all(np.isfinite(H)):
            raise CalibrationError(f"H must be finite; it holds {np.count_nonzero(~np.isfinite(H))} NaN or infinite value(s)")
        largest = float(np.abs(H).max())
        if largest == 0.0:
            raise CalibrationError("H is all zeros")
        # A homography's scale is arbitrary (1e-20 times a map is the same map), so H[2][2] is
        # judged against H's largest entry, not against an absolute floor.
        if abs(H[2, 2]) < 1e-12 * largest:
            raise CalibrationError("H[2][2] must not be zero: such a map sends the source's pixel (0, 0) to infinity")
        H = H / H[2, 2]  # first: so 1e-5 times the identity is the identity
        if abs(np.linalg.det(H)) < 1e-12:
            raise CalibrationError("H is singular (determinant ~ 0)")
        if self.model == "affine" and not is_affine(H):
            raise CalibrationError("an affine model needs the last row of H to be [0, 0, 1]")
        object.__setattr__(self, "H", H)
        if self.model not in MODELS:
            raise CalibrationError(f"model must be one of {MODELS}; got {self.model!r}")
        if self.source not in SOURCES:
            raise CalibrationError(f"source must be one of {SOURCES}; got {self.source!r}")
        for name in ("source_size", "destination_size"):
            object.__setattr__(self, name, pixel_size(getattr(self, name), name))
        # Every number of the file is checked here, once: a NaN offset would pair every frame with the first.
        object.__setattr__(self, "time_offset_s", finite_float(self.time_offset_s, "time_offset_s", CalibrationError))
        if self.error_px is not None:
            object.__setattr__(self, "error_px", finite_float(self.error_px, "error_px", CalibrationError))
            if self.error_px < 0:  # an RMS distance
                raise CalibrationError(f"error_px must not be negative; got {self.error_px:g}")
        if self.crop is not None:
            self._check_crop()

    def _check_crop(self) -> None:
        if len(self.crop) != 4 or not all(_is_whole(v) for v in self.crop):
            raise CalibrationError(f"crop must be [x, y, width, height] of whole numbers; got {self.crop!r}")
        x, y, w, h = (int(v) for v in self.crop)
        dw, dh = self.destination_size
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > dw or y + h > dh:
            raise CalibrationError(f"crop {list(self.crop)} does not fit inside the destination {dw}x{dh}")
        object.__setattr__(self, "crop", (x, y, w, h))

    @property
    def is_identity(self) -> bool:
        return self.source_size == self.destination_size and np.allclose(self.H, np.eye(3), atol=1e-9)

    def with_time_offset(self, seconds: float) -> "Registration":
        return replace(self, time_offset_s=float(seconds))

    def to_dict(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "model": self.model,
            "H": [[float(v) for v in row] for row in self.H],
            "source": self.source,
            "source_size": list(self.source_size),
            "destination_size": list(self.destination_size),
            "time_offset_s": float(self.time_offset_s),
            "method": self.method,
            "error_px": None if self.error_px is None else float(self.error_px),
            "crop": None if self.crop is None else list(self.crop),
            "cameras": self.cameras,
            "created": self.created,
        }


def _is_whole(value) -> bool:
    """A finite whole number (1 or 1.0; not True, "1", nan or inf)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value) and int(value) == value


def pixel_size(size, name: str) -> tuple[int, int]:
    """``size`` as (width, height) of whole numbers in 1..MAX_SIDE, else an error naming ``name``."""
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_whole(v) and 1 <= v <= MAX_SIDE for v in size):
        shown = list(size) if isinstance(size, (list, tuple)) else size
        raise CalibrationError(f"{name} must be [width, height] of whole numbers in 1..{MAX_SIDE}; got {shown!r}")
    return int(size[0]), int(size[1])


# YAML 1.1 reads an exponent without a dot (1e-5) as text; it is the one text taken as a number.
_EXPONENT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def yaml_number(value, where: str) -> float:
    """A finite number read from a YAML file, else an error naming ``where``."""
    return finite_float(_numeric(value, where), where, CalibrationError)


def _numeric(value, where: str) -> float:
    """``value`` as a float if YAML read a number there (infinite and NaN included), else an error
    naming ``where``. A boolean is no number (``float(True)`` is 1.0: ``true`` passed as a
    coordinate), nor is quoted text ("1")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (isinstance(value, str) and not _EXPONENT.fullmatch(value.strip())):
        raise CalibrationError(f"{where}: {value!r} is not a number")
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return math.inf


def folds_reason(image: str) -> str:
    """Why a map that ``folds_the_frame`` is refused, for every place that refuses one."""
    return f"folds the {image} image over itself, which no warp of a camera can"


def identity_registration(width: int, height: int, source: str = "ir") -> Registration:
    return Registration(np.eye(3), (width, height), (width, height), source=source, method="identity", error_px=0.0)


def save_registration(path: str | os.PathLike, registration: Registration) -> Path:
    """Write the file atomically: a reader never sees half a file, and a failed write keeps the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_whole(path) as temporary:
        temporary.write_text(yaml.safe_dump(registration.to_dict(), sort_keys=False))
    return path


_REQUIRED = ("version", "H", "source_size", "destination_size")
_KNOWN = set(_REQUIRED) | {"model", "source", "time_offset_s", "method", "error_px", "crop", "cameras", "created"}


def load_registration(path: str | os.PathLike) -> Registration:
    """Read and check a registration file; any problem is a one-line ``CalibrationError``."""
    path = Path(path)
    data = read_yaml(path, what="calibration file", error=CalibrationError)
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise CalibrationError(f"{path}: missing key(s): {', '.join(missing)}")
    unknown = unknown_keys(data, _KNOWN)
    if unknown:
        raise CalibrationError(f"{path}: unknown key(s): {', '.join(unknown)}")
    if data.get("cameras") is not None and not isinstance(data["cameras"], dict):
        raise CalibrationError(f"{path}: cameras must be a mapping or null")
    version = data["version"]
    if isinstance(version, bool) or version != FORMAT_VERSION:  # True == 1 in Python
        raise CalibrationError(f"{path}: unsupported version {version!r} (this ldfusion reads {FORMAT_VERSION})")
    try:
        registration = _registration_of(data)
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: malformed value ({exc})") from None
    if folds_the_frame(registration.H, registration.source_size):  # as `calibrate points` refuses to write one
        image = "infrared" if registration.source == "ir" else "visible"
        raise CalibrationError(f"{path}: H {folds_reason(image)} (its line at infinity crosses the frame, or the corners cross)")
    return registration


def _registration_of(data: dict) -> Registration:
    """The file's mapping as a Registration; every value is checked for its type here, since
    numpy and ``str`` would turn ``"1"``, ``true`` or a list into something that passes."""
    offset, error = data.get("time_offset_s"), data.get("error_px")
    return Registration(
        H=_matrix(data["H"], "H"),
        source_size=tuple(_listed(data["source_size"], "source_size")),
        destination_size=tuple(_listed(data["destination_size"], "destination_size")),
        model=data.get("model", "homography"),
        source=data.get("source", "ir"),
        time_offset_s=0.0 if offset is None else yaml_number(offset, "time_offset_s"),
        method=_text(data.get("method"), "method") or "unknown",
        error_px=None if error is None else yaml_number(error, "error_px"),
        crop=None if data.get("crop") is None else tuple(_listed(data["crop"], "crop")),
        cameras=data.get("cameras"),
        created=_created(data.get("created")),
    )


def _matrix(value, key: str) -> np.ndarray:
    """A list of lists of numbers as a float array (Registration then counts any non-finite ones)."""
    rows = [_listed(row, f"{key}[{i}]") for i, row in enumerate(_listed(value, key))]
    return np.array([[_numeric(v, f"{key}[{i}][{j}]") for j, v in enumerate(row)] for i, row in enumerate(rows)], dtype=np.float64)


def _text(value, key: str) -> str:
    """A text value of the file ("" when absent or null), else an error naming ``key``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CalibrationError(f"{key} must be text; got {value!r}")
    return value


def _created(value) -> str:
    """``created`` as text; YAML reads an unquoted ISO time as a timestamp, which is fine too."""
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    return _text(value, "created")


def _listed(value, key: str) -> list | tuple:
    """A list value of the file, else an error naming ``key`` (``crop: true`` said only
    "malformed value ('bool' object is not iterable)")."""
    if not isinstance(value, (list, tuple)):
        raise CalibrationError(f"{key} must be a list; got {value!r}")
    return value
