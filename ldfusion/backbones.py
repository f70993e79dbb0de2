"""Frozen feature extractors the losses need: CLIP (open_clip) and VGG19 (torchvision).

Both load real weights by the standard means (an open_clip model name with a pretrained
tag or a local checkpoint file; a local torchvision VGG19 state_dict, or ``imagenet`` to
let torchvision download it) and never unpickle arbitrary objects.

Both match what the authors' trainer runs: CLIP with the activation its weights were
trained with (QuickGELU for every OpenAI checkpoint, as ``clip.load("ViT-B/32")`` builds
it), and VGG19 activations after the ReLUs (see ``VGG_LAYERS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldfusion.checkpoint import safe_torch_load, state_dict_mismatch
from ldfusion.errors import CheckpointError, ConfigError, first_line

log = logging.getLogger(__name__)

# torchvision VGG19 ``features`` indices of the activations the perceptual loss compares.
# The authors store the outputs of conv2_1, conv3_1 and conv4_2, but the in-place ReLU
# after each overwrites the stored tensor, so their loss compares relu2_1, relu3_1, relu4_2.
VGG_LAYERS = {"relu2_1": 6, "relu3_1": 11, "relu4_2": 22}


@dataclass(frozen=True)
class ClipConfig:
    model: str = "ViT-B-32-quickgelu"
    pretrained: str | None = "openai"  # open_clip tag, or a local checkpoint file
    model_config: str | None = None  # JSON model config to register first (custom or tiny models)
    # The activation the weights were trained with: QuickGELU for all OpenAI CLIP weights
    # (the paper's), GELU for most others (LAION, DataComp). Weights in a local file do not
    # say which; this does.
    quick_gelu: bool = True


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
        self.eval()

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


@contextlib.contextmanager
def _hub_logs_quiet() -> Iterator[None]:
    """Offline, the model hub logged every retry (twenty lines over 47 s, each twice, even with
    -q) and open_clip logged the failure at ERROR before raising it: the one-line error that
    follows says it once. Real errors still raise."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def load_clip(config: ClipConfig, device: torch.device | str = "cpu") -> ClipEncoder:
    """The frozen CLIP of ``config``, built with the activation its weights were trained with."""
    import open_clip

    if config.model_config:
        path = Path(config.model_config)
        if not path.is_file():
            raise ConfigError(f"CLIP model config not found: {path}")
        open_clip.add_model_config(path)
    pretrained = config.pretrained
    if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
        raise CheckpointError(f"CLIP checkpoint not found: {pretrained}")
    conflict = _activation_conflict(config)
    if conflict:
        raise ConfigError(conflict)
    try:
        with _hub_logs_quiet():
            model = open_clip.create_model(
                config.model, pretrained=pretrained, device=device, weights_only=True, force_quick_gelu=config.quick_gelu
            )
    except RuntimeError as exc:
        if "Failed to download" in str(exc):
            raise CheckpointError(f"could not download CLIP {config.model!r} weights {pretrained!r} ({first_line(exc)}); "
                                  "without network access pass a local checkpoint file as clip.pretrained") from None
        if "Unknown model" in str(exc) or "not found" in str(exc):
            raise ConfigError(f"unknown CLIP model {config.model!r} ({first_line(exc)})") from None
        raise CheckpointError(f"could not load CLIP {config.model!r} with pretrained={pretrained!r}: {first_line(exc)}") from None
    except Exception as exc:  # network errors from the hub surface as many types
        raise CheckpointError(
            f"could not load CLIP {config.model!r} with pretrained={pretrained!r} ({type(exc).__name__}: {first_line(exc)}); "
            "without network access pass a local checkpoint file as clip.pretrained"
        ) from None
    _check_built_activation(model, config)
    preprocess = open_clip.get_model_preprocess_cfg(model)
    size = preprocess.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    encoder = ClipEncoder(model, open_clip.get_tokenizer(config.model), size, preprocess["mean"], preprocess["std"])
    return encoder.to(device)


def _activation_conflict(config: ClipConfig) -> str | None:
    """Why ``config`` pairs weights with an activation they were not trained with, or None.

    open_clip knows the activation of its named models and pretrained tags (``openai``:
    QuickGELU) but builds ``ViT-B-32`` with GELU and only warns when given OpenAI weights.
    """
    import open_clip

    if ":" in config.model:  # hf-hub: / local-dir: models carry their own config
        return None
    name = config.model.replace("/", "-")
    wanted = "QuickGELU" if config.quick_gelu else "GELU"
    model_cfg = open_clip.get_model_config(name) or {}
    if model_cfg.get("quick_gelu", False) and not config.quick_gelu:
        return f"CLIP model {config.model!r} is a QuickGELU model but clip.quick_gelu is false"
    tag_cfg = open_clip.get_pretrained_cfg(name, config.pretrained) if config.pretrained else {}
    if tag_cfg:
        trained = "QuickGELU" if tag_cfg.get("quick_gelu", False) else "GELU"
        if trained != wanted:
            return (
                f"CLIP weights {config.model}/{config.pretrained} were trained with {trained}, but clip.quick_gelu "
                f"asks for {wanted}: set clip.quick_gelu: {str(trained == 'QuickGELU').lower()}"
            )
    return None


def clip_activations(model: nn.Module) -> set[str]:
    """Names of the MLP activation types in an open_clip transformer: {"QuickGELU"}, {"GELU"}, ..."""
    from open_clip.transformer import QuickGELU

    return {type(m).__name__ for m in model.modules() if isinstance(m, (QuickGELU, nn.GELU))}


def _check_built_activation(model: nn.Module, config: ClipConfig) -> None:
    found = clip_activations(model)
    wanted = {"QuickGELU"} if config.quick_gelu else {"GELU"}
    source = config.pretrained or "random weights"
    if not found:  # timm / Hugging Face towers: their activation is theirs to choose
        log.warning("CLIP %s (%s): no open_clip transformer activations to check", config.model, source)
    elif found != wanted:
        raise ConfigError(
            f"CLIP {config.model!r} was built with {'/'.join(sorted(found))} but clip.quick_gelu asks for {'/'.join(wanted)}"
        )
    else:
        log.info("CLIP %s with %s weights built with %s activations", config.model, source, "/".join(found))


class VggFeatures(nn.Module):
    """Frozen VGG19 ``features`` up to relu4_2, returning the activations the loss compares."""

    def __init__(self, features: nn.Sequential, normalize: bool = False) -> None:
        super().__init__()
        self.features = _freeze(features[: max(VGG_LAYERS.values()) + 1])
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.eval()

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
