"""Training data: registered IR/visible pairs from folders and from paired videos.

Each sample is a joint random crop plus a small random affine of one pair (the same
transform for both modalities), the visible image's Y channel, and noisy copies of both
inputs (the network sees the noisy ones; the losses compare against the clean ones).
Nearly flat crops, which teach nothing, are redrawn.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T
from torch import Tensor
from torch.utils.data import Dataset

from ldfusion.color import rgb_to_y
from ldfusion.errors import ConfigError, DataError
from ldfusion.imageio import pair_folders, read_pair, unit_to_uint8
from ldfusion.paths import same_file
from ldfusion.video import VideoReader

log = logging.getLogger(__name__)

_FLAT_RETRIES = 10


@dataclass(frozen=True)
class FolderSource:
    ir: str
    vi: str
    exclude: tuple[str, ...] = ()  # file stems held out (e.g. for evaluation)


@dataclass(frozen=True)
class VideoSource:
    ir: str
    vi: str
    every: int = 10  # keep one frame in this many
    max_frames: int = 0  # 0: no limit

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be at least 1; got {self.every}")
        if self.max_frames < 0:
            raise ValueError(f"max_frames must be 0 (no limit) or positive; got {self.max_frames}")


@dataclass(frozen=True)
class DataConfig:
    pairs: tuple[FolderSource, ...] = ()
    videos: tuple[VideoSource, ...] = ()
    crop: int = 224
    repeat: int = 10  # passes over the pairs per epoch (the authors use 10)
    affine: bool = True
    noise_std: float = 0.03
    flat_std: float = 0.05  # a crop whose visible and IR std are both below this is redrawn
    num_workers: int = 2

    def __post_init__(self) -> None:
        if not self.pairs and not self.videos:
            raise ValueError("data needs at least one entry under pairs or videos")
        if self.crop < 32:
            raise ValueError(f"crop must be at least 32 pixels; got {self.crop}")
        if self.repeat < 1:
            raise ValueError(f"repeat must be at least 1; got {self.repeat}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 (load in the training process) or positive; got {self.num_workers}")


@dataclass(frozen=True)
class Pair:
    name: str
    visible: np.ndarray  # (H, W, 3) RGB uint8, or (H, W) gray uint8
    ir: np.ndarray  # (H, W) uint8


def load_folder_pairs(source: FolderSource) -> list[Pair]:
    image_pairs = pair_folders(source.ir, source.vi)
    excluded = set(source.exclude)
    _check_exclusions_match(source, excluded, [image_pair.name for image_pair in image_pairs])
    pairs = []
    for image_pair in image_pairs:
        if image_pair.name in excluded:
            continue
        visible, ir = read_pair(image_pair)
        pairs.append(Pair(image_pair.name, visible, unit_to_uint8(ir)))
    return pairs


def _check_exclusions_match(source: FolderSource, excluded: set[str], names: list[str]) -> None:
    """A name in ``exclude`` that is no pair's is a typo, and the pair it meant to hold out
    (for evaluation) would be trained on."""
    unmatched = sorted(excluded - set(names))
    if unmatched:
        example = f", such as {names[0]!r}" if names else ""
        raise DataError(f"{source.ir}: exclude names that match no pair: {', '.join(map(repr, unmatched))} "
                        f"(names are file stems without the extension{example})")


@dataclass(frozen=True)
class _Clip:
    path: Path
    frames: list[np.ndarray]  # the kept frames: (H, W, 3) RGB or (H, W) luma, one size
    length: int  # frames decoded
    whole: bool  # read to its end (False: stopped by max_frames)


def load_video_pairs(source: VideoSource) -> list[Pair]:
    """Frames of two frame-synchronised videos, one in ``every``, paired by index.

    Pairing by index is right only for two clips of one rate that start together, so
    another rate, another length or the same file for both is refused.
    """
    ir_path, vi_path = Path(source.ir), Path(source.vi)
    if same_file(ir_path, vi_path):
        raise DataError(f"the infrared and visible videos are the same file, {ir_path}; give one of each camera")
    with VideoReader(vi_path) as vi_reader, VideoReader(ir_path, luma_only=True) as ir_reader:
        _check_same_rate(ir_reader, vi_reader)
        vi = _decode_every(vi_reader, source.every, source.max_frames)
        ir = _decode_every(ir_reader, source.every, source.max_frames)
    _check_same_length(ir, vi)
    if vi.frames[0].shape[:2] != ir.frames[0].shape:
        raise DataError(f"{source.ir}: ir and vi videos differ in size: {ir.frames[0].shape} vs {vi.frames[0].shape[:2]}")
    stem = vi_path.stem
    frame_pairs = zip(vi.frames, ir.frames)
    return [Pair(f"{stem}#{k * source.every}", visible, infrared) for k, (visible, infrared) in enumerate(frame_pairs)]


def _check_same_rate(ir: VideoReader, vi: VideoReader) -> None:
    """Frame k of one clip is frame k of the other only when both run at one rate: 10 fps
    infrared beside 30 fps visible would pair every frame with a moment long gone."""
    if ir.rate != vi.rate:
        raise DataError(f"{ir.path} runs at {float(ir.rate):.6g} fps and {vi.path} at {float(vi.rate):.6g} fps: "
                        f"training pairs frames by index, so both videos need one frame rate")


def _check_same_length(ir: _Clip, vi: _Clip) -> None:
    """Refused rather than cut to the shorter clip with a warning: clips of another length
    started or stopped at another moment, and the frames alone cannot tell which. Had one
    started later, every pair would be off by the difference, a wrong result that a warning
    scrolling past a training log does not prevent. max_frames takes the first frames of
    both, for clips the user knows start together."""
    if not ir.whole and not vi.whole:
        return  # both cut by max_frames: the user chose how many first frames to pair
    if ir.whole != vi.whole or ir.length != vi.length:  # one cut by max_frames: the other ended before it
        raise DataError(f"{ir.path} has {_length_text(ir)} and {vi.path} {_length_text(vi)}: training pairs frames by "
                        f"index, so the clips must start and end together; trim the longer one, or set max_frames "
                        f"to pair only their first frames if they start together")


def _length_text(clip: _Clip) -> str:
    return f"{clip.length} frames" if clip.whole else f"at least {clip.length} frames"


def _decode_every(reader: VideoReader, every: int, max_frames: int) -> _Clip:
    """Every ``every``-th frame of ``reader`` (``ldfusion.video``), ``max_frames`` at most (0: all)."""
    frames: list[np.ndarray] = []
    length = 0
    for index, image in enumerate(reader.images()):
        length = index + 1
        if index % every:
            continue
        if frames and image.shape != frames[0].shape:
            raise DataError(f"{reader.path}: frame {index} is {_size_text(image)}, but the clip starts at "
                            f"{_size_text(frames[0])}; training needs one frame size per clip")
        frames.append(image)
        if max_frames and len(frames) >= max_frames:
            return _Clip(reader.path, frames, length, whole=False)
    return _Clip(reader.path, frames, length, whole=True)


def _size_text(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def load_pairs(config: DataConfig) -> list[Pair]:
    pairs: list[Pair] = []
    for folder in config.pairs:
        pairs += load_folder_pairs(folder)
    for video in config.videos:
        pairs += load_video_pairs(video)
    if not pairs:
        raise DataError("the training data is empty (every pair excluded?)")
    return pairs


class PairedDataset(Dataset):
    """Random augmented crops of in-memory pairs; ``len`` is pairs x ``repeat``."""

    def __init__(self, pairs: list[Pair], config: DataConfig) -> None:
        check_crop_fits(pairs, config.crop)
        self.pairs = pairs
        self.config = config
        crop = T.RandomCrop(config.crop, pad_if_needed=True, padding_mode="reflect")
        affine = T.RandomAffine(degrees=5, translate=(0.0, 0.1), scale=(1.0, 1.5), shear=5)
        self.transform = T.Compose([crop, affine] if config.affine else [crop])

    def __len__(self) -> int:
        return len(self.pairs) * self.config.repeat

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        pair = self.pairs[index % len(self.pairs)]
        for _ in range(_FLAT_RETRIES):
            vi_y, ir = self._random_view(pair)
            if vi_y.std() >= self.config.flat_std or ir.std() >= self.config.flat_std:
                break
        noise = self.config.noise_std
        return {
            "vi_y": vi_y,
            "ir": ir,
            "vi_y_noisy": vi_y + noise * torch.randn_like(vi_y) if noise else vi_y,
            "ir_noisy": ir + noise * torch.randn_like(ir) if noise else ir,
        }

    def _random_view(self, pair: Pair) -> tuple[Tensor, Tensor]:
        visible = torch.from_numpy(pair.visible)
        visible = visible.permute(2, 0, 1) if visible.ndim == 3 else visible.unsqueeze(0).expand(3, -1, -1)
        ir = torch.from_numpy(pair.ir).unsqueeze(0)
        stacked = self.transform(torch.cat([visible, ir], dim=0))  # (4, crop, crop) uint8, one transform
        stacked = stacked.float() / 255.0
        return rgb_to_y(stacked[:3]), stacked[3:]


def check_crop_fits(pairs: list[Pair], crop: int) -> None:
    """An image smaller than the crop is padded by reflection on both sides, which can add
    at most its own side less one pixel: a crop of 2 x side or more cannot be made."""
    smallest = min(pairs, key=lambda pair: min(pair.ir.shape))
    side = min(smallest.ir.shape)
    if crop >= 2 * side:
        height, width = smallest.ir.shape
        raise ConfigError(f"data.crop {crop} is too large for the smallest training image, {smallest.name} ({width}x{height}): "
                          f"an image smaller than the crop is padded by reflection, up to a crop of {2 * side - 1}")


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own numpy/random stream (torch already does)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)

