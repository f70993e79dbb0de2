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
from ldfusion.errors import DataError
from ldfusion.imageio import pair_folders, read_pair, unit_to_uint8
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


@dataclass(frozen=True)
class Pair:
    name: str
    visible: np.ndarray  # (H, W, 3) RGB uint8, or (H, W) gray uint8
    ir: np.ndarray  # (H, W) uint8


def load_folder_pairs(source: FolderSource) -> list[Pair]:
    excluded = set(source.exclude)
    pairs = []
    for image_pair in pair_folders(source.ir, source.vi):
        if image_pair.name in excluded:
            continue
        visible, ir = read_pair(image_pair)
        pairs.append(Pair(image_pair.name, visible, unit_to_uint8(ir)))
    return pairs


def load_video_pairs(source: VideoSource) -> list[Pair]:
    """Frames of two frame-synchronised videos, one in ``every``, as pairs."""
    vi_frames = _decode_every(Path(source.vi), source.every, source.max_frames, luma_only=False)
    ir_frames = _decode_every(Path(source.ir), source.every, source.max_frames, luma_only=True)
    count = min(len(vi_frames), len(ir_frames))
    if vi_frames and ir_frames and vi_frames[0].shape[:2] != ir_frames[0].shape:
        raise DataError(f"{source.ir}: ir and vi videos differ in size: {ir_frames[0].shape} vs {vi_frames[0].shape[:2]}")
    stem = Path(source.vi).stem
    return [Pair(f"{stem}#{k * source.every}", vi_frames[k], ir_frames[k]) for k in range(count)]


def _decode_every(path: Path, every: int, max_frames: int, luma_only: bool) -> list[np.ndarray]:
    """Every ``every``-th frame: (H, W, 3) RGB, or (H, W) luma when ``luma_only`` (``ldfusion.video``)."""
    frames = []
    with VideoReader(path, luma_only=luma_only) as reader:
        for index, image in enumerate(reader.images()):
            if index % every == 0:
                frames.append(image)
                if max_frames and len(frames) >= max_frames:
                    break
    return frames


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


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own numpy/random stream (torch already does)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)

