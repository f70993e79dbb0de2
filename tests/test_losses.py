"""The language-driven loss with a tiny random CLIP and a random VGG19, loaded from files."""

from __future__ import annotations

import random

import pytest
import torch

from ldfusion.backbones import ClipConfig, VggConfig, load_clip, load_vgg19
from ldfusion.errors import CheckpointError, ConfigError
from ldfusion.losses import (
    LanguageDrivenLoss,
    LossWeights,
    PatchConfig,
    direction_loss,
    distillation_loss,
    entropy_bits,
    random_affine_crops,
    unit,
)
from ldfusion.networks import build_network
from ldfusion.variants import get_variant
from tests.tiny_backbones import make_random_vgg, make_tiny_clip


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbones")
    return make_tiny_clip(folder), make_random_vgg(folder)


def test_entropy_of_known_histograms():
    uniform = torch.arange(256, dtype=torch.float32).div(255).view(1, 1, 16, 16)
    constant = torch.full((1, 1, 16, 16), 0.3)
    two_levels = torch.cat([torch.zeros(1, 1, 8, 16), torch.ones(1, 1, 8, 16)], dim=2)
    torch.testing.assert_close(entropy_bits(torch.cat([uniform, constant, two_levels])), torch.tensor([8.0, 0.0, 1.0]))


def test_direction_loss_is_zero_when_image_and_text_directions_agree():
    objective, visible, infrared = unit(torch.randn(3, 16)).unbind(0)
    vi_dir, ir_dir = unit(objective - visible), unit(objective - infrared)
    # A fused embedding at the objective moves from each source exactly along the text direction.
    fused = objective[None]
    loss = direction_loss(fused, visible[None], infrared[None], vi_dir, ir_dir)
    torch.testing.assert_close(loss, torch.zeros(1), atol=1e-6, rtol=0)
    opposite = direction_loss(unit(2 * visible - objective)[None], visible[None], infrared[None], vi_dir, ir_dir)
    assert float(opposite) > 0.4


def test_random_affine_crops_keep_the_stack_aligned():
    random.seed(0)
    image = torch.rand(1, 1, 64, 64)
    stacked = torch.cat([image, image, image])  # identical images must get identical crops
    crops = random_affine_crops(stacked, count=4, out_size=32, patch=PatchConfig())
    assert crops.shape == (12, 1, 32, 32)
    for k in range(4):
        torch.testing.assert_close(crops[3 * k], crops[3 * k + 1])
        torch.testing.assert_close(crops[3 * k], crops[3 * k + 2])


def test_distillation_loss_is_zero_only_for_identical_images():
    x = torch.rand(2, 1, 24, 24)
    assert float(distillation_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(x, 1 - x)) > 0.5


def test_backbones_load_from_local_files(backbones):
    clip_config, vgg_config = backbones
    clip = load_clip(clip_config)
    assert clip.image_size == (32, 32)
    assert clip.encode_images(torch.rand(2, 1, 50, 40)).shape == (2, 32)
    assert clip.encode_texts(["an infrared image"]).shape == (1, 32)
    feats = load_vgg19(vgg_config)(torch.rand(1, 1, 32, 32))
    assert set(feats) == {"conv2_1", "conv3_1", "conv4_2"} and feats["conv4_2"].shape[1] == 512


def test_backbone_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="CLIP checkpoint not found"):
        load_clip(ClipConfig(model="ViT-B-32", pretrained=str(tmp_path / "missing.pt")))
    with pytest.raises(ConfigError, match="needs VGG19 weights"):
        load_vgg19(VggConfig(weights=None))
    bad = tmp_path / "bad_vgg.pt"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not a VGG19 state_dict"):
        load_vgg19(VggConfig(weights=str(bad)))


def _loss_module(backbones, count=4):
    clip_config, vgg_config = backbones
    patch = PatchConfig(count=count, entropy_threshold=0.0)  # random test images: keep every patch
    return LanguageDrivenLoss(load_clip(clip_config), load_vgg19(vgg_config), LossWeights(), patch=patch)


def test_all_loss_terms_are_finite_and_weighted(backbones):
    torch.manual_seed(0)
    random.seed(0)
    criterion = _loss_module(backbones)
    vi, ir = torch.rand(2, 1, 48, 48), torch.rand(2, 1, 48, 48)
    fused = ((vi + ir) / 2).requires_grad_(True)
    terms = criterion(fused, vi, ir)
    assert set(terms) == {"sim", "prompt_global", "prompt_patch", "perceptual", "total"}
    for name, value in terms.items():
        assert torch.isfinite(value), name
    total = sum(v for k, v in terms.items() if k != "total")
    torch.testing.assert_close(terms["total"], total)
    terms["total"].backward()
    assert fused.grad is not None and torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0


def test_flat_patches_are_ignored_by_the_patch_term(backbones):
    clip_config, _ = backbones
    weights = LossWeights(sim=0, prompt_global=0, prompt_patch=10, perceptual=0)
    criterion = LanguageDrivenLoss(load_clip(clip_config), None, weights, patch=PatchConfig(count=3, entropy_threshold=6.0))
    flat = torch.full((1, 1, 40, 40), 0.5)
    terms = criterion(torch.rand(1, 1, 40, 40), flat, flat)
    assert float(terms["prompt_patch"]) == 0.0


def test_a_few_steps_lower_the_total_on_a_fixed_batch(backbones):
    torch.manual_seed(0)
    criterion = _loss_module(backbones, count=2)
    net = build_network(get_variant("ld-lite"))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    vi, ir = torch.rand(2, 1, 40, 40), torch.rand(2, 1, 40, 40)

    def total() -> torch.Tensor:
        random.seed(123)  # the same patches every time: the batch is fixed
        return criterion(net(vi, ir), vi, ir)["total"]

    with torch.no_grad():
        before = float(total())
    for _ in range(8):
        optimizer.zero_grad()
        total().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(total())
    assert after < before
