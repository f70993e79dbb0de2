"""Tiny, randomly initialised CLIP and VGG19 saved to files and loaded back through the real
loading code (no model hub is reachable in CI)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ldfusion.backbones import ClipConfig, VggConfig

TINY_CLIP_NAME = "ldfusion-test-tiny-clip"
# The layout of open_clip's ViT-B-32 (a ViT image tower, a causal text transformer, the
# same tokenizer), shrunk. No "quick_gelu" key: the activation comes from ClipConfig.quick_gelu.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_tiny_clip(folder: Path) -> ClipConfig:
    """Write a tiny open_clip model config and random weights; return the config to load them."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    model_config = folder / f"{TINY_CLIP_NAME}.json"
    model_config.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(model_config)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    checkpoint = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return ClipConfig(model=TINY_CLIP_NAME, pretrained=str(checkpoint), model_config=str(model_config))


def pose_tiny_clip_as_openai(monkeypatch, clip: ClipConfig, model_name: str) -> None:
    """Make open_clip's ``model_name`` + ``pretrained="openai"`` resolve offline to the tiny CLIP.

    Only the architecture's size and the download are replaced: the tag's metadata (trained
    with QuickGELU, OpenAI mean/std) and the model name's own config flags stay open_clip's.
    """
    import open_clip.factory

    real_config = open_clip.get_model_config(model_name)
    tiny = copy.deepcopy(TINY_CLIP_CONFIG)
    if real_config.get("quick_gelu"):
        tiny["quick_gelu"] = True
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, model_name, tiny)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda *args, **kwargs: clip.pretrained)


def make_random_vgg(folder: Path) -> VggConfig:
    """A randomly initialised torchvision VGG19 ``features`` state_dict, saved as a user's local
    file would be (``features.``-prefixed keys; the classifier is not needed)."""
    from torchvision.models import vgg19

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    path = folder / "vgg19_random.pth"
    state = {k: v for k, v in vgg19(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save(state, path)
    return VggConfig(weights=str(path))
