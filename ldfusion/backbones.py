"""Frozen feature extractors the losses need: CLIP (open_clip) and VGG19 (torchvision).

Both load real weights by the standard means (an open_clip model name with a pretrained
tag or a local checkpoint file; a local torchvision VGG19 state_dict, or ``imagenet`` to
let torchvision download it) and never unpickle arbitrary objects.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldfusion.checkpoint import safe_torch_load, state_dict_mismatch
from ldfusion.errors import CheckpointError, ConfigError, first_line

log = logging.getLogger(__name__)

# torchvision VGG19 ``features`` indices of the layers the perceptual loss reads.
VGG_LAYERS = {"conv2_1": 5, "conv3_1": 10, "conv4_2": 21}


@dataclass(frozen=True)
class ClipConfig:
    model: str = "ViT-B-32"
    pretrained: str | None = "openai"  # open_clip tag, or a local checkpoint file
    model_config: str | None = None  # JSON model config to register first (custom or tiny models)


@dataclass(frozen=True)
class VggConfig:
    weights: str | None = None  # local VGG19 state_dict file, or "imagenet" to download via torchvision
    normalize: bool = False  # the authors feed [0, 1] images without ImageNet normalisation


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class ClipEncoder(nn.Module):
    """A frozen CLIP model that embeds images in [0, 1] and texts."""

    def __init__(self, model: nn.Module, tokenizer, image_size: tuple[int, int], mean, std) -> None:
        super().__init__()
        self.model = _freeze(model)
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "ClipEncoder":
        return super().train(False)  # always frozen

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 1|3, H, W) in [0, 1] -> (N, D) embeddings; gradients flow to ``images``."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        images = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.model.encode_image(images).float()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(texts).to(self.mean.device)
        return self.model.encode_text(tokens).float()


def load_clip(config: ClipConfig, device: torch.device | str = "cpu") -> ClipEncoder:
    import open_clip

    if config.model_config:
        path = Path(config.model_config)
        if not path.is_file():
            raise ConfigError(f"CLIP model config not found: {path}")
        open_clip.add_model_config(path)
    pretrained = config.pretrained
    if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
        raise CheckpointError(f"CLIP checkpoint not found: {pretrained}")
    try:
        model = open_clip.create_model(config.model, pretrained=pretrained, device=device, weights_only=True)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "not found" in str(exc):
            raise ConfigError(f"unknown CLIP model {config.model!r} ({first_line(exc)})") from None
        raise CheckpointError(f"could not load CLIP {config.model!r} with pretrained={pretrained!r}: {first_line(exc)}") from None
    except Exception as exc:  # network errors from the hub surface as many types
        raise CheckpointError(
            f"could not load CLIP {config.model!r} with pretrained={pretrained!r} ({type(exc).__name__}: {first_line(exc)}); "
            "without network access pass a local checkpoint file as clip.pretrained"
        ) from None
    preprocess = open_clip.get_model_preprocess_cfg(model)
    size = preprocess.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    encoder = ClipEncoder(model, open_clip.get_tokenizer(config.model), size, preprocess["mean"], preprocess["std"])
    return encoder.to(device)


class VggFeatures(nn.Module):
    """Frozen VGG19 ``features`` up to conv4_2, returning the activations the loss compares."""

    def __init__(self, features: nn.Sequential, normalize: bool = False) -> None:
        super().__init__()
        self.features = _freeze(features[: max(VGG_LAYERS.values()) + 1])
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VggFeatures":
        return super().train(False)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = {index: name for name, index in VGG_LAYERS.items()}
        out = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                out[wanted[index]] = x
        return out


def load_vgg19(config: VggConfig, device: torch.device | str = "cpu") -> VggFeatures:
    from torchvision.models import VGG19_Weights, vgg19

    if config.weights is None:
        raise ConfigError("the perceptual loss needs VGG19 weights: set vgg.weights to a local file or 'imagenet'")
    if config.weights == "imagenet":
        try:
            model = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
        except Exception as exc:
            raise CheckpointError(f"could not download VGG19 ImageNet weights ({first_line(exc)}); pass a local file") from None
        features = model.features
    else:
        features = vgg19(weights=None).features
        state = safe_torch_load(config.weights)
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        problems = state_dict_mismatch(features.state_dict(), state)
        if problems:
            raise CheckpointError(f"{config.weights}: not a VGG19 state_dict: {problems}")
        features.load_state_dict(state)
    return VggFeatures(features, config.normalize).to(device)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))
