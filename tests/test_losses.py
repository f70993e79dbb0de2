"""The language-driven loss with a tiny random CLIP and a random VGG19, loaded from files.

The reference test below writes the authors' loss out again, plainly and independently of
``ldfusion.losses`` / ``ldfusion.backbones`` (wyhlaowang/LDFusion, ``src/trainer.py`` and
``src/vgg.py``), runs it on the same backbone files and the same random crops, and
compares every term and its gradient. ``scripts/loss_mutation_check.py`` checks that these
tests notice one-line changes to the loss.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ldfusion.backbones import ClipConfig, VggConfig, clip_activations, load_clip, load_vgg19
from ldfusion.config import load_config
from ldfusion.errors import CheckpointError, ConfigError
from ldfusion.losses import (
    LanguageDrivenLoss,
    LossWeights,
    PatchConfig,
    Prompts,
    direction_loss,
    distillation_loss,
    entropy_bits,
    random_affine_crops,
    unit,
)
from ldfusion.networks import build_network
from ldfusion.training.config import TrainConfig
from ldfusion.variants import get_variant
from tests.conftest import REPO_ROOT
from tests.tiny_backbones import make_random_vgg, make_tiny_clip, pose_tiny_clip_as_openai

# --- the authors' settings and formulas, written out independently -----------------------

AUTHORS_PROMPT = "a clear image with detailed background and salient objects"
AUTHORS_VI_TEXT = "a visible gray image"
AUTHORS_IR_TEXT = "an infrared image"
AUTHORS_WEIGHTS = {"sim": 6.0, "prompt_global": 2.0, "prompt_patch": 10.0, "perceptual": 10.0}
AUTHORS_CROPS = 32  # dynamic_cropper(vi, ir, fusion_y, 32)
AUTHORS_PATCH_SELECT = 6.0  # bits, both sources
AUTHORS_CROP_SCALE = (0.5, 0.8)
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
# src/vgg.py: the names it gives, at the indices it stores, in the full VGG19 loop.
AUTHORS_VGG_CONVS = {"5": "conv2_1", "10": "conv3_1", "21": "conv4_2"}


def ref_clip_norm(im, size):
    im_re = F.interpolate(im.repeat(1, 3, 1, 1) if im.shape[1] == 1 else im, size=size, mode="bilinear", align_corners=False)
    return (im_re - OPENAI_MEAN) / OPENAI_STD


def ref_entropy(images):
    entropies = torch.zeros(images.shape[0])
    for i in range(images.shape[0]):
        image = images[i].repeat(3, 1, 1)  # the authors' patches are 3-channel
        hist = torch.histc(image.reshape(3, -1), bins=256, min=0, max=1)
        prob = hist / torch.sum(hist)
        prob = prob[prob > 0]
        entropies[i] = -torch.sum(prob * torch.log2(prob))
    return entropies


def ref_text_dirs(clip_model, tokenizer):
    def text_dir(text):
        feature = clip_model.encode_text(tokenizer([text])).detach().float()
        return feature / feature.norm(dim=-1, keepdim=True)

    return text_dir(AUTHORS_PROMPT), text_dir(AUTHORS_VI_TEXT), text_dir(AUTHORS_IR_TEXT)


def ref_clip_prompt_loss(fu_feature, vi_feature, ir_feature, prompt_dir, vit_dir, irt_dir, select=None):
    bp, bg = fu_feature.shape[0], vi_feature.shape[0]
    vi_feature = vi_feature.repeat(bp // bg, 1)
    ir_feature = ir_feature.repeat(bp // bg, 1)
    vi_dir = vi_feature / vi_feature.norm(dim=-1, keepdim=True)
    ir_dir = ir_feature / ir_feature.norm(dim=-1, keepdim=True)
    fusion_dir = fu_feature / fu_feature.norm(dim=-1, keepdim=True)
    vi_fu = fusion_dir - vi_dir
    vi_fu_dir = vi_fu / vi_fu.norm(dim=-1, keepdim=True)
    ir_fu = fusion_dir - ir_dir
    ir_fu_dir = ir_fu / ir_fu.norm(dim=-1, keepdim=True)
    vit_pt = prompt_dir.repeat(bp, 1) - vit_dir.repeat(bp, 1)
    vit_pt_dir = vit_pt / vit_pt.norm(dim=-1, keepdim=True)
    irt_pt = prompt_dir.repeat(bp, 1) - irt_dir.repeat(bp, 1)
    irt_pt_dir = irt_pt / irt_pt.norm(dim=-1, keepdim=True)
    loss_prompt = 0.5 * (1 - torch.cosine_similarity(vi_fu_dir, vit_pt_dir, dim=1)) + 0.5 * (
        1 - torch.cosine_similarity(ir_fu_dir, irt_pt_dir, dim=1)
    )
    if select is not None:
        loss_prompt = loss_prompt * select
    return loss_prompt.mean()


def ref_clip_sim_loss(fu_feature, vi_feature, ir_feature):
    vi_dir = vi_feature / vi_feature.norm(dim=-1, keepdim=True)
    ir_dir = ir_feature / ir_feature.norm(dim=-1, keepdim=True)
    fusion_dir = fu_feature / fu_feature.norm(dim=-1, keepdim=True)
    loss = 0.5 * (1 - torch.cosine_similarity(fusion_dir, vi_dir, dim=-1)) + 0.5 * (1 - torch.cosine_similarity(fusion_dir, ir_dir, dim=-1))
    return loss.mean()


def ref_vgg_features(vgg_features, image):
    """src/vgg.py ``get_features(image, norm=False)``: every layer of VGG19 ``features``, in-place ReLUs."""
    x = image.repeat(1, 3, 1, 1) if image.shape[1] == 1 else image
    features = {}
    for name, layer in vgg_features._modules.items():
        x = layer(x)
        if name in AUTHORS_VGG_CONVS:
            features[AUTHORS_VGG_CONVS[name]] = x
    return features


def ref_vgg_loss(vgg_features, fu, vi, ir):
    fu_vgg, vi_vgg, ir_vgg = (ref_vgg_features(vgg_features, x) for x in (fu, vi, ir))
    loss = 0
    for name in ("conv2_1", "conv3_1", "conv4_2"):
        target = torch.max(torch.cat([vi_vgg[name].unsqueeze(2), ir_vgg[name].unsqueeze(2)], dim=2), dim=2)[0]
        loss = loss + F.mse_loss(fu_vgg[name], target, reduction="mean")
    return loss


def ref_patches(vi, ir, fused, size):
    """The authors' dynamic_cropper output order; the crop geometry itself is ours (same seed)."""
    batch = vi.shape[0]
    crops = random_affine_crops(torch.cat([vi, ir, fused]), AUTHORS_CROPS, size, PatchConfig()).view(AUTHORS_CROPS, 3 * batch, *vi.shape[1:2], size, size)
    vi_p = torch.cat([crops[k, :batch] for k in range(AUTHORS_CROPS)])
    ir_p = torch.cat([crops[k, batch : 2 * batch] for k in range(AUTHORS_CROPS)])
    fu_p = torch.cat([crops[k, 2 * batch :] for k in range(AUTHORS_CROPS)])
    return vi_p, ir_p, fu_p


def reference_terms(clip_model, tokenizer, size, vgg_features, fused, vi, ir, seed):
    """The authors' weighted loss terms, as in their training step."""
    prompt_dir, vit_dir, irt_dir = ref_text_dirs(clip_model, tokenizer)
    random.seed(seed)
    vi_patch, ir_patch, fu_patch = ref_patches(vi, ir, fused, size)
    vi_feature = clip_model.encode_image(ref_clip_norm(vi, size))
    ir_feature = clip_model.encode_image(ref_clip_norm(ir, size))
    fu_feature = clip_model.encode_image(ref_clip_norm(fused, size))
    fu_patch_feature = clip_model.encode_image(ref_clip_norm(fu_patch, size))
    vip_en, irp_en = ref_entropy(vi_patch), ref_entropy(ir_patch)
    valid_index = (vip_en > AUTHORS_PATCH_SELECT) * (irp_en > AUTHORS_PATCH_SELECT)
    terms = {
        "sim": 6 * ref_clip_sim_loss(fu_feature, vi_feature, ir_feature),
        "prompt_global": 2 * ref_clip_prompt_loss(fu_feature, vi_feature, ir_feature, prompt_dir, vit_dir, irt_dir),
        "prompt_patch": 10 * ref_clip_prompt_loss(fu_patch_feature, vi_feature, ir_feature, prompt_dir, vit_dir, irt_dir, valid_index),
        "perceptual": 10 * ref_vgg_loss(vgg_features, fused, vi, ir),
    }
    return terms, (vip_en > AUTHORS_PATCH_SELECT), (irp_en > AUTHORS_PATCH_SELECT)


def reference_backbones(clip_config: ClipConfig, vgg_config: VggConfig):
    """The same weight files, built the authors' way: QuickGELU CLIP, the whole VGG19 ``features``."""
    import open_clip
    from torchvision.models import vgg19

    clip_model = open_clip.create_model(clip_config.model, pretrained=None, force_quick_gelu=True).eval()
    clip_model.load_state_dict(torch.load(clip_config.pretrained, weights_only=True))
    vgg_features = vgg19(weights=None).features.eval()
    state = torch.load(vgg_config.weights, weights_only=True)
    vgg_features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    return clip_model, open_clip.get_tokenizer(clip_config.model), vgg_features


def structured_sources(batch: int = 2, size: int = 64):
    """Sources whose random crops differ in entropy: detail in one half, flat in the other,
    the visible image textured on the top and the infrared image on the left."""
    generator = torch.Generator().manual_seed(7)
    vi = torch.full((batch, 1, size, size), 0.4)
    ir = torch.full((batch, 1, size, size), 0.6)
    vi[..., : size // 2, :] = torch.rand(batch, 1, size // 2, size, generator=generator)
    ir[..., :, : size // 2] = torch.rand(batch, 1, size, size // 2, generator=generator)
    return vi, ir


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbones")
    return make_tiny_clip(folder), make_random_vgg(folder)


@pytest.fixture(scope="module")
def loaded(backbones):
    clip_config, vgg_config = backbones
    return load_clip(clip_config), load_vgg19(vgg_config)


def _loss_module(loaded, count=4, weights=LossWeights()):
    clip, vgg = loaded
    patch = PatchConfig(count=count, entropy_threshold=0.0)  # random test images: keep every patch
    return LanguageDrivenLoss(clip, vgg, weights, patch=patch)


# --- the authors' loss, term by term ---------------------------------------------------------


def test_loss_matches_the_authors_formulas_term_by_term(backbones, loaded):
    clip_model, tokenizer, vgg_features = reference_backbones(*backbones)
    clip, vgg = loaded
    size = clip.image_size[0]
    vi, ir = structured_sources()
    mix = torch.rand(vi.shape, generator=torch.Generator().manual_seed(3))
    base = 0.4 * vi + 0.4 * ir + 0.2 * mix  # (B, 1, H, W), some detail from each source

    fused_ref = base.clone().requires_grad_(True)
    expected, vi_keep, ir_keep = reference_terms(clip_model, tokenizer, size, vgg_features, fused_ref, vi, ir, seed=11)
    # The fixture must exercise the patch selection: patches kept, patches dropped, and
    # patches that only one source would keep (so "both" and "either" differ).
    both, either = vi_keep & ir_keep, vi_keep | ir_keep
    assert 0 < int(both.sum()) < both.numel() and bool((both != either).any())

    fused = base.clone().requires_grad_(True)
    criterion = LanguageDrivenLoss(clip, vgg)  # the defaults are the authors' recipe
    random.seed(11)
    terms = criterion(fused, vi, ir)
    assert set(terms) == set(expected) | {"total"}
    for name, value in expected.items():
        # rtol 1e-4: a random one-layer CLIP embeds all images nearly alike (cos ~ 0.99), so
        # float32 keeps only ~4 digits of 1 - cos; every change the mutation check makes is far larger.
        torch.testing.assert_close(terms[name], value.detach(), rtol=1e-4, atol=1e-7, msg=f"term {name}")
        (grad,) = torch.autograd.grad(terms[name], fused, retain_graph=True)
        (ref_grad,) = torch.autograd.grad(value, fused_ref, retain_graph=True)
        assert ref_grad.abs().max() > 0, name
        torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-6 * float(ref_grad.abs().max()), msg=f"gradient of {name}")
    torch.testing.assert_close(terms["total"], sum(terms[k] for k in expected))


def test_perceptual_term_compares_activations_after_the_relus(loaded):
    _, vgg = loaded
    feats = vgg(torch.rand(1, 1, 32, 32))
    assert set(feats) == {"relu2_1", "relu3_1", "relu4_2"} and feats["relu4_2"].shape[1] == 512
    for name, value in feats.items():
        assert float(value.min()) >= 0.0, name  # a ReLU output
        assert float((value == 0).float().mean()) > 0.1, name  # ... that clipped a random network's negatives


def test_defaults_and_the_training_config_are_the_authors_recipe():
    assert Prompts() == Prompts(AUTHORS_PROMPT, AUTHORS_VI_TEXT, AUTHORS_IR_TEXT)
    weights = LossWeights()
    assert {k: getattr(weights, k) for k in AUTHORS_WEIGHTS} == AUTHORS_WEIGHTS
    patch = PatchConfig()
    assert (patch.count, patch.entropy_threshold, (patch.min_scale, patch.max_scale)) == (AUTHORS_CROPS, AUTHORS_PATCH_SELECT, AUTHORS_CROP_SCALE)
    assert VggConfig().normalize is False  # src/vgg.py: get_features(image, False)
    assert ClipConfig().quick_gelu is True and ClipConfig().pretrained == "openai"

    train = load_config(TrainConfig, REPO_ROOT / "configs" / "train.yaml")
    assert (train.loss.prompts, train.loss.patch, train.loss.vgg.normalize) == (Prompts(), PatchConfig(), False)
    assert {k: getattr(train.loss.weights, k) for k in AUTHORS_WEIGHTS} == AUTHORS_WEIGHTS
    assert train.loss.clip.pretrained == "openai" and train.loss.clip.quick_gelu is True
    assert (train.optim.lr, train.optim.betas, train.optim.batch_size, train.optim.epochs) == (5e-4, (0.9, 0.999), 16, 100)


# --- CLIP's activation ---------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["ViT-B-32", "ViT-B-32-quickgelu"])
def test_openai_weights_are_built_with_quickgelu(backbones, monkeypatch, model_name):
    clip_config, _ = backbones
    pose_tiny_clip_as_openai(monkeypatch, clip_config, model_name)
    clip = load_clip(ClipConfig(model=model_name, pretrained="openai"))
    assert clip_activations(clip.model) == {"QuickGELU"}
    torch.testing.assert_close(clip.mean.flatten(), OPENAI_MEAN.flatten())
    torch.testing.assert_close(clip.std.flatten(), OPENAI_STD.flatten())


@pytest.mark.parametrize("model_name", ["ViT-B-32", "ViT-B-32-quickgelu"])
def test_openai_weights_with_gelu_are_refused(backbones, monkeypatch, model_name):
    clip_config, _ = backbones
    pose_tiny_clip_as_openai(monkeypatch, clip_config, model_name)
    with pytest.raises(ConfigError, match="QuickGELU"):
        load_clip(ClipConfig(model=model_name, pretrained="openai", quick_gelu=False))


def test_gelu_trained_weights_with_quickgelu_are_refused_before_any_download():
    # open_clip's own metadata: LAION's ViT-B-32 was trained with GELU. The check runs
    # before the download, so this needs no network.
    with pytest.raises(ConfigError, match="trained with GELU.*quick_gelu: false"):
        load_clip(ClipConfig(model="ViT-B-32", pretrained="laion2b_s34b_b79k", quick_gelu=True))


def test_a_failed_clip_download_is_one_error_with_advice_and_no_retry_log(monkeypatch, capfd):
    """Offline the hub logged twenty retry lines (each twice, even with -q) and open_clip an
    ERROR before the one-line error said the same."""
    import logging

    import open_clip

    from ldfusion.cli.common import setup_logging

    def offline(*_args, **_kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("'[Errno -2] Name or service not known' thrown; Retrying in 1s")
        logging.error("Failed to download weights for tag 'openai'")
        raise RuntimeError("Failed to download weights for tag 'openai': Failed to download file (open_clip_pytorch_model.bin)")

    setup_logging(quiet=True)
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(CheckpointError, match=r"could not download CLIP .*without network access pass a local checkpoint"):
        load_clip(ClipConfig(model="ViT-B-32-quickgelu", pretrained="openai", quick_gelu=True))
    assert capfd.readouterr().err == ""
    logging.getLogger("ldfusion").warning("still heard")  # logging is back once CLIP is loaded
    assert "still heard" in capfd.readouterr().err


def test_a_local_clip_file_runs_the_activation_the_config_names(backbones, loaded):
    clip_config, _ = backbones
    quick = loaded[0]
    gelu = load_clip(ClipConfig(clip_config.model, clip_config.pretrained, clip_config.model_config, quick_gelu=False))
    assert clip_activations(quick.model) == {"QuickGELU"} and clip_activations(gelu.model) == {"GELU"}
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # the activation changes the embedding: running the wrong one is not harmless
        assert not torch.allclose(quick.encode_images(images), gelu.encode_images(images), atol=1e-4)


# --- gradients and frozen backbones ---------------------------------------------------------


@pytest.mark.parametrize("term", ["sim", "prompt_global", "prompt_patch"])
def test_gradients_reach_the_fused_image_through_each_clip_term_alone(loaded, term):
    random.seed(0)
    weights = LossWeights(**{k: (AUTHORS_WEIGHTS[k] if k == term else 0.0) for k in AUTHORS_WEIGHTS})
    criterion = LanguageDrivenLoss(loaded[0], None, weights, patch=PatchConfig(count=2, entropy_threshold=0.0))
    vi, ir = torch.rand(2, 1, 40, 40), torch.rand(2, 1, 40, 40)
    fused = ((vi + ir) / 2).requires_grad_(True)
    terms = criterion(fused, vi, ir)
    assert float(terms[term].detach()) > 0
    terms["total"].backward()
    assert fused.grad is not None and torch.isfinite(fused.grad).all() and float(fused.grad.abs().max()) > 0


def _backbone_parameters(criterion):
    return list(criterion.clip.parameters()) + list(criterion.vgg.parameters())


def test_backbones_are_frozen_and_stay_in_eval_mode(loaded):
    criterion = _loss_module(loaded)
    for _ in range(2):  # as built, and after a train() call on the loss
        for backbone in (criterion.clip, criterion.vgg):
            assert not any(m.training for m in backbone.modules()), type(backbone).__name__
        criterion.train()
    assert all(not p.requires_grad for p in _backbone_parameters(criterion))


def _write_pairs(root, count=2, size=(56, 64)):
    rng = np.random.default_rng(0)
    for kind in ("vi", "ir"):
        (root / kind).mkdir(parents=True)
        for k in range(count):
            cv2.imwrite(str(root / kind / f"{k}.png"), rng.integers(0, 256, size, dtype=np.uint8))
    return root / "ir", root / "vi"


def test_a_training_step_leaves_the_backbones_unchanged(tmp_path, backbones):
    from ldfusion.training.trainer import Trainer

    clip_config, vgg_config = backbones
    ir, vi = _write_pairs(tmp_path / "data")
    config = {
        "variant": "ld-lite",
        "out_dir": str(tmp_path / "run"),
        "device": "cpu",
        "data": {"pairs": [{"ir": str(ir), "vi": str(vi)}], "crop": 48, "repeat": 1, "num_workers": 0},
        "loss": {
            "clip": {"model": clip_config.model, "pretrained": clip_config.pretrained, "model_config": clip_config.model_config},
            "vgg": {"weights": vgg_config.weights},
            "patch": {"count": 2, "entropy_threshold": 0.0},
        },
        "optim": {"batch_size": 2, "epochs": 1},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    trainer = Trainer(load_config(TrainConfig, path))
    before = {k: v.clone() for k, v in trainer.criterion.state_dict(keep_vars=False).items()}
    student_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step(next(iter(trainer.loader)))
    after = trainer.criterion.state_dict()
    assert before.keys() == after.keys() and len(before) > 0
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in _backbone_parameters(trainer.criterion))
    assert not any(m.training for backbone in (trainer.criterion.clip, trainer.criterion.vgg) for m in backbone.modules())
    assert any(not torch.equal(student_before[k], v) for k, v in trainer.model.state_dict().items())  # the student did learn


# --- pieces -----------------------------------------------------------------------------------


def test_entropy_of_known_histograms():
    uniform = torch.arange(256, dtype=torch.float32).div(255).view(1, 1, 16, 16)
    constant = torch.full((1, 1, 16, 16), 0.3)
    two_levels = torch.cat([torch.zeros(1, 1, 8, 16), torch.ones(1, 1, 8, 16)], dim=2)
    torch.testing.assert_close(entropy_bits(torch.cat([uniform, constant, two_levels])), torch.tensor([8.0, 0.0, 1.0]))
    noise = torch.rand(5, 1, 24, 24)
    torch.testing.assert_close(entropy_bits(noise), ref_entropy(noise))


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


def test_backbones_load_from_local_files(loaded):
    clip, vgg = loaded
    assert clip.image_size == (32, 32)
    assert clip.encode_images(torch.rand(2, 1, 50, 40)).shape == (2, 32)
    assert clip.encode_texts(["an infrared image"]).shape == (1, 32)


def test_backbone_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="CLIP checkpoint not found"):
        load_clip(ClipConfig(model="ViT-B-32", pretrained=str(tmp_path / "missing.pt")))
    with pytest.raises(ConfigError, match="needs VGG19 weights"):
        load_vgg19(VggConfig(weights=None))
    bad = tmp_path / "bad_vgg.pt"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not a VGG19 state_dict"):
        load_vgg19(VggConfig(weights=str(bad)))


def test_all_loss_terms_are_finite_and_weighted(loaded):
    torch.manual_seed(0)
    random.seed(0)
    criterion = _loss_module(loaded)
    vi, ir = torch.rand(2, 1, 48, 48), torch.rand(2, 1, 48, 48)
    fused = ((vi + ir) / 2).requires_grad_(True)
    terms = criterion(fused, vi, ir)
    assert set(terms) == {"sim", "prompt_global", "prompt_patch", "perceptual", "total"}
    for name, value in terms.items():
        assert torch.isfinite(value), name
    torch.testing.assert_close(terms["total"], sum(v for k, v in terms.items() if k != "total"))


def test_flat_patches_are_ignored_by_the_patch_term(loaded):
    weights = LossWeights(sim=0, prompt_global=0, prompt_patch=10, perceptual=0)
    criterion = LanguageDrivenLoss(loaded[0], None, weights, patch=PatchConfig(count=3, entropy_threshold=6.0))
    flat = torch.full((1, 1, 40, 40), 0.5)
    terms = criterion(torch.rand(1, 1, 40, 40), flat, flat)
    assert float(terms["prompt_patch"]) == 0.0


def test_a_few_steps_lower_the_total_on_a_fixed_batch(loaded):
    torch.manual_seed(0)
    criterion = _loss_module(loaded, count=2)
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
