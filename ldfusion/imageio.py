"""Reading and writing still images, and pairing infrared/visible folders by file name."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ldfusion.errors import DataError
from ldfusion.paths import replaced_whole, same_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# What commands taking images or videos read as video: containers, MPEG transport streams
# (camera recorders), and raw elementary streams (camera SDKs dump .h264), which the reader times.
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv", ".3gp",
    ".h264", ".264", ".h265", ".265", ".hevc", ".mjpeg", ".mjpg", ".y4m", ".ivf",
})
IR_16BIT_MODES = ("stretch", "scale")
# Percentiles for stretching 16-bit infrared: raw thermal counts fill a narrow band of the
# 16-bit range, so dividing by 65535 would give a nearly black image.
_STRETCH_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class ImagePair:
    name: str  # shared file stem
    ir: Path
    vi: Path


def list_images(folder: Path) -> dict[str, Path]:
    """Images in ``folder`` keyed by stem; two files with one stem are an error. Hidden files
    (``._0.png``, the resource forks macOS copies leave beside every file) are no images, as
    for ``ls`` and ``glob``: they stopped a run with "no partner"."""
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}" if folder.exists() else f"{folder}: no such file or folder")
    by_stem: dict[str, Path] = {}
    skipped = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(path.name + ("/" if path.is_dir() else ""))
            continue
        if not path.is_file():  # skipping it would drop a pair (or a frame) without a word
            what = "a link to nothing" if path.is_symlink() and not path.exists() else "not a file"
            raise DataError(f"{path} is {what}; an image folder's images must be files")
        if path.stem in by_stem:
            raise DataError(f"{folder}: two images share the name {path.stem!r} ({by_stem[path.stem].name}, {path.name})")
        by_stem[path.stem] = path
    if skipped:  # a user with nested folders saw "fusing 1 pair(s)" and no word of the rest
        log.info("%s: skipped %d entr%s that %s no image (subfolders are not read): %s", folder, len(skipped),
                 "y" if len(skipped) == 1 else "ies", "is" if len(skipped) == 1 else "are", ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return by_stem


def sorted_images(folder: str | os.PathLike) -> list[Path]:
    """Images in ``folder`` in natural name order (2 before 10): the order of a folder's frames."""
    images = list_images(Path(folder))
    return [images[stem] for stem in sorted(images, key=_natural_key)]


def pair_folders(ir_dir: str | os.PathLike, vi_dir: str | os.PathLike) -> list[ImagePair]:
    """Pair ``ir_dir`` and ``vi_dir`` by file stem (``ir/7.png`` with ``vi/7.jpg``).

    An image without a partner of the same name is a ``DataError`` naming it: pairing by
    position instead would shift every later pair by one.
    """
    ir_dir, vi_dir = Path(ir_dir), Path(vi_dir)
    if same_file(ir_dir, vi_dir):
        raise DataError(f"the infrared and visible images are the same {'file' if ir_dir.is_file() else 'folder'}, {ir_dir}; give one of each camera")
    if ir_dir.is_file() or vi_dir.is_file():
        return [_single_pair(ir_dir, vi_dir)]
    ir_images, vi_images = list_images(ir_dir), list_images(vi_dir)
    if not ir_images:
        raise DataError(f"no images in {ir_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    _complain_unpaired(ir_images, vi_images, ir_dir, vi_dir)
    pairs = [ImagePair(stem, ir_images[stem], vi_images[stem]) for stem in sorted(ir_images, key=_natural_key)]
    _complain_self_pairs(pairs)
    return pairs


def _complain_self_pairs(pairs: list[ImagePair]) -> None:
    """An infrared image that is a link to its visible partner (soft or hard) was fused with itself."""
    for pair in pairs:
        if same_file(pair.ir, pair.vi):
            raise DataError(f"the infrared image {pair.ir} is the same file as its visible partner {pair.vi}; give one of each camera")


def _single_pair(ir: Path, vi: Path) -> ImagePair:
    for path in (ir, vi):
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if not path.is_file():
            raise DataError(f"--ir and --vi must both be files or both be folders; {path} is not a file")
    return ImagePair(ir.stem, ir, vi)


def _complain_unpaired(ir_images: dict, vi_images: dict, ir_dir: Path, vi_dir: Path) -> None:
    for have, other, have_dir, other_dir in ((ir_images, vi_images, ir_dir, vi_dir), (vi_images, ir_images, vi_dir, ir_dir)):
        alone = sorted(set(have) - set(other), key=_natural_key)
        if alone:
            raise DataError(
                f"{len(alone)} image(s) in {have_dir} have no partner in {other_dir} (first: {have[alone[0]].name})"
            )


def _natural_key(stem: str) -> tuple:
    """Sort '2' before '10'."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _split_digits(stem))


def _split_digits(text: str) -> list[str]:
    parts, current = [], ""
    for char in text:
        if current and char.isdigit() != current[-1].isdigit():
            parts.append(current)
            current = ""
        current += char
    return parts + [current] if current else parts


def looks_like_video(path: str | os.PathLike) -> bool:
    """Whether a path names a video file by its suffix (commands that take an image or a video decide by it)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# Depth and colour as stored, and turned upright by the EXIF orientation as viewers show it
# (IMREAD_UNCHANGED skips the orientation: a phone's JPEG stored turned was fused turned).
_IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as stored, upright: (H, W) gray or (H, W, 3) RGB, uint8 or uint16."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    data = np.fromfile(path, np.uint8)
    truncated = _truncated_jpeg(data) and "JPEG" or _truncated_png(data) and "PNG"
    if truncated:
        raise DataError(f"{path} is truncated: its {truncated} data ends before the image does")
    image = cv2.imdecode(data, _IMREAD_FLAGS) if data.size else None
    if image is None:
        if looks_like_video(path):
            raise DataError(f"{path} is a video; an image is needed here")
        raise DataError(f"cannot decode image (corrupt or unsupported format): {path}")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        else:
            image = image[:, :, 0]
    return image


def _truncated_jpeg(data: np.ndarray) -> bool:
    """A JPEG whose data ends before its end-of-image marker: cut off. libjpeg decodes it anyway,
    the missing part flat grey, with a warning on stderr that names no file.

    The markers are walked from the start (segments by their lengths, scans to the next
    marker: entropy-coded data holds none, every 0xFF in it is stuffed), so what follows the
    image (a Motion Photo's video, a camera maker's trailer) is never read as part of it.
    A structure the walk does not understand is left to the decoder.
    """
    raw = data.tobytes()
    if raw[:2] != b"\xff\xd8":
        return False
    return _jpeg_end(raw) is None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _truncated_png(data: np.ndarray) -> bool:
    """A PNG whose chunks end before its IEND chunk: cut off. libpng then prints its own
    "libpng error: PNG input buffer is incomplete" to stderr (no log level reaches it) before
    the decoder fails; the chunks are walked by their lengths instead, and nothing is printed."""
    raw = data[:8].tobytes()
    if raw != _PNG_SIGNATURE:
        return False
    pos, size = 8, data.size
    while pos + 8 <= size:
        length = int.from_bytes(data[pos : pos + 4].tobytes(), "big")
        kind = data[pos + 4 : pos + 8].tobytes()
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos > size
    return True


def _jpeg_end(raw: bytes) -> int | None:
    """The offset just past a JPEG's end-of-image marker; None when the data end first. A
    structure that is not JPEG's counts as ended (the decoder will say what is wrong)."""
    pos, size = 2, len(raw)
    while pos + 1 < size:
        if raw[pos] != 0xFF:
            return size  # not a marker where one belongs: not for this check to judge
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xD9:  # end of image
            return pos + 2
        elif 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):  # markers without a length
            pos += 2
        elif pos + 3 >= size:
            return None
        else:
            pos += 2 + int.from_bytes(raw[pos + 2 : pos + 4], "big")
            if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
                pos = _next_marker(raw, pos)
                if pos is None:
                    return None
    return None


def _next_marker(raw: bytes, pos: int) -> int | None:
    """The offset of the first marker at or after ``pos`` in entropy-coded data (0xFF 0x00 is a
    stuffed 0xFF, 0xFF 0xD0-0xD7 a restart marker inside the scan); None when the data end first."""
    while (pos := raw.find(b"\xff", pos)) != -1 and pos + 1 < len(raw):
        following = raw[pos + 1]
        if following != 0x00 and not 0xD0 <= following <= 0xD7 and following != 0xFF:
            return pos
        pos += 1 if following == 0xFF else 2
    return None


def read_visible(path: str | os.PathLike) -> np.ndarray:
    """Visible image as uint8: (H, W, 3) RGB, or (H, W) when it is gray."""
    image = read_image(path)
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported visible image type {image.dtype}")
    return image


def read_infrared(path: str | os.PathLike, mode_16bit: str = "stretch") -> np.ndarray:
    """Infrared image as (H, W) float32 in [0, 1]; colour files are converted to gray.

    8-bit images are divided by 255. 16-bit images are either stretched between robust
    percentiles (``stretch``, default: raw thermal counts) or divided by 65535 (``scale``).
    """
    image = read_image(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return infrared_to_unit(image, mode_16bit, source=str(path))


def stretch_limits(image: np.ndarray) -> tuple[float, float]:
    """The robust (low, high) of raw infrared counts that ``stretch`` maps to 0 and 1."""
    low, high = np.percentile(image, _STRETCH_PERCENTILES)
    return float(low), float(high)


def infrared_to_unit(
    image: np.ndarray, mode_16bit: str = "stretch", source: str = "ir", bits: int | None = None, limits: tuple[float, float] | None = None
) -> np.ndarray:
    """Infrared samples -> (H, W) float32 in [0, 1]: the one rule for images and video.

    8-bit samples are divided by 255. Deeper samples (16-bit images; 10- to 16-bit video,
    ``bits``) are stretched between robust percentiles (``stretch``: raw thermal counts fill
    a narrow band) or divided by the largest value (``scale``). ``limits``: the stretch's
    (low, high); a video passes its first frame's, so the stretch does not flicker.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype != np.uint16:
        raise DataError(f"{source}: unsupported infrared image type {image.dtype}")
    if mode_16bit == "scale":
        return image.astype(np.float32) / np.float32(2 ** (bits or 16) - 1)
    if mode_16bit != "stretch":
        raise DataError(f"unknown 16-bit infrared mode {mode_16bit!r}; choose one of {IR_16BIT_MODES}")
    low, high = limits if limits is not None else stretch_limits(image)
    if high <= low:
        return np.zeros(image.shape, np.float32)
    scaled = (image.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def read_pair(pair: ImagePair, mode_16bit: str = "stretch") -> tuple[np.ndarray, np.ndarray]:
    """(visible, infrared) of a pair, as ``read_visible`` and ``read_infrared`` give them; sizes must match."""
    visible, ir = read_visible(pair.vi), read_infrared(pair.ir, mode_16bit)
    if visible.shape[:2] != ir.shape:
        raise DataError(
            f"{pair.name}: ir and vi differ in size: {ir.shape[1]}x{ir.shape[0]} vs {visible.shape[1]}x{visible.shape[0]} "
            f"({pair.ir} vs {pair.vi})"
        )
    return visible, ir


def check_image_destination(path: str | os.PathLike) -> None:
    """Raise DataError unless an image can be written at ``path``: a file name (not a folder)
    whose extension OpenCV has an encoder for. Commands call it before their work, so a typo
    in the name does not cost the run (OpenCV's own complaint is a multi-line C++ trace)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give an image file name such as {path / 'out.png'}")
    if not cv2.haveImageWriter(str(path)):
        problem = f"OpenCV has no writer for the extension {path.suffix!r}" if path.suffix else "the name has no extension"
        raise DataError(f"cannot write an image to {path}: {problem} (use .png or .jpg)")


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write (H, W) gray or (H, W, 3) RGB uint8; raises DataError when the encoder fails.

    Encoded in memory, then written whole under a temporary name and renamed
    (``paths.replaced_whole``): an image file is complete or absent, never cut short by a
    kill or a full disk, and a failed write is Python's own OSError naming the file
    (``cv2.imwrite`` printed libpng's message and said only that it failed).
    """
    path = Path(path)
    check_image_destination(path)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    encoded, data = cv2.imencode(path.suffix, bgr)
    if not encoded:
        raise DataError(f"could not encode image {path}")
    with replaced_whole(path) as temporary:
        temporary.write_bytes(data.tobytes())


def unit_to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8, rounded to nearest (values outside are clipped)."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def side_by_side(ir: np.ndarray, visible: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """IR | visible | fused as one RGB uint8 image (all inputs share H and W)."""
    panels = []
    for panel in (ir, visible, fused):
        if panel.dtype != np.uint8:
            panel = unit_to_uint8(panel)
        panels.append(np.repeat(panel[:, :, None], 3, axis=2) if panel.ndim == 2 else panel)
    return np.concatenate(panels, axis=1)
