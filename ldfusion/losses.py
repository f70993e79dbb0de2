"""LDFusion's training objective: the language-driven loss in CLIP space, and friends.

All images are (B, 1, H, W) luminance in [0, 1]. The terms, as in the paper and the
authors' trainer:

- prompt direction (global and on patches): the direction from each source image's CLIP
  embedding to the fused image's should match the direction from that source's text
  ("a visible gray image", "an infrared image") to the objective's text;
- CLIP similarity: the fused embedding stays close to both sources';
- perceptual: fused VGG19 activations (relu2_1, relu3_1, relu4_2 of unnormalised [0, 1]
  images) match the element-wise max of the sources';
- distillation (with a teacher): L1 + (1 - SSIM) to a frozen teacher's fused output.

The patch direction term compares each fused patch with the *whole* source images'
embeddings, and averages over all patches with the dropped ones counted as zero: both as in
the authors' trainer. tests/test_losses.py checks every term against their formulas.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from ldfusion.backbones import ClipEncoder, VggFeatures
from ldfusion.ssim import ssim


@dataclass(frozen=True)
class Prompts:
    objective: str = "a clear image with detailed background and salient objects"
    visible: str = "a visible gray image"
    infrared: str = "an infrared image"


@dataclass(frozen=True)
class LossWeights:
    sim: float = 6.0
    prompt_global: float = 2.0
    prompt_patch: float = 10.0
    perceptual: float = 10.0
    distill: float = 1.0  # used only when training with a teacher
    distill_features: float = 0.0  # feature hints from a teacher of the same layout (training/hints.py)

    @property
    def needs_clip(self) -> bool:
        return any(w > 0 for w in (self.sim, self.prompt_global, self.prompt_patch))

    @property
    def needs_vgg(self) -> bool:
        return self.perceptual > 0


@dataclass(frozen=True)
class PatchConfig:
    count: int = 32  # random crops of the fused image per batch
    min_scale: float = 0.5  # crop side as a fraction of the image's shorter side
    max_scale: float = 0.8
    entropy_threshold: float = 6.0  # bits; patches flatter than this in either source are ignored


def unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def direction_loss(fused: Tensor, visible: Tensor, infrared: Tensor, vi_text_dir: Tensor, ir_text_dir: Tensor) -> Tensor:
    """Per-sample prompt-direction loss.

    ``fused`` (N, D) embeddings; ``visible``/``infrared`` (N, D) source embeddings (repeated
    to match N); ``*_text_dir`` (D,) unit directions norm(objective) - norm(source text).
    Returns (N,) = 0.5 (1 - cos(f - v, t_v)) + 0.5 (1 - cos(f - i, t_i)) on unit embeddings.
    """
    f, v, i = unit(fused), unit(visible), unit(infrared)
    vi_term = 1 - F.cosine_similarity(f - v, vi_text_dir.expand_as(f), dim=-1)
    ir_term = 1 - F.cosine_similarity(f - i, ir_text_dir.expand_as(f), dim=-1)
    return 0.5 * vi_term + 0.5 * ir_term


def clip_similarity_loss(fused: Tensor, visible: Tensor, infrared: Tensor) -> Tensor:
    """Mean of 0.5 (1 - cos(f, v)) + 0.5 (1 - cos(f, i)) over the batch."""
    return (0.5 * (1 - F.cosine_similarity(fused, visible, dim=-1)) + 0.5 * (1 - F.cosine_similarity(fused, infrared, dim=-1))).mean()


def perceptual_max_loss(vgg: VggFeatures, fused: Tensor, visible: Tensor, infrared: Tensor) -> Tensor:
    """Sum over layers of MSE(fused features, max(visible features, infrared features))."""
    with torch.no_grad():
        vi_feats, ir_feats = vgg(visible), vgg(infrared)
    fu_feats = vgg(fused)
    return sum(F.mse_loss(fu_feats[name], torch.maximum(vi_feats[name], ir_feats[name])) for name in fu_feats)


def entropy_bits(images: Tensor, bins: int = 256) -> Tensor:
    """Shannon entropy in bits of each image's histogram over [0, 1]: (N, C, H, W) -> (N,)."""
    flat = images.detach().flatten(1).clamp(0, 1)
    index = (flat * bins).long().clamp_(max=bins - 1)  # bin i holds [i/bins, (i+1)/bins)
    counts = torch.zeros(flat.shape[0], bins, device=flat.device).scatter_add_(1, index, torch.ones_like(flat))
    prob = counts / counts.sum(1, keepdim=True)
    return -(prob * torch.log2(prob.clamp_min(1e-12))).sum(1)


def random_affine_crops(images: Tensor, count: int, out_size: int, patch: PatchConfig) -> Tensor:
    """``count`` random crops with a small random affine, each applied alike to every image.

    ``images`` (B, C, H, W) stacks what must stay aligned (visible, infrared, fused). Returns
    (count * B, C, out_size, out_size), crop-major: crop k of image b is row k * B + b.
    """
    side = min(images.shape[-2:])
    crops = []
    for _ in range(count):
        size = max(8, int(side * random.uniform(patch.min_scale, patch.max_scale)))
        top = random.randint(0, images.shape[-2] - size)
        left = random.randint(0, images.shape[-1] - size)
        crop = images[..., top : top + size, left : left + size]
        crop = TF.affine(
            crop,
            angle=random.uniform(-5, 5),
            translate=[0, round(random.uniform(-0.1, 0.1) * size)],
            scale=random.uniform(1.0, 1.5),
            shear=[random.uniform(-5, 5), 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
        crops.append(F.interpolate(crop, size=(out_size, out_size), mode="bilinear", align_corners=False))
    return torch.cat(crops, dim=0)


class LanguageDrivenLoss(nn.Module):
    """The full LDFusion objective; ``forward`` returns every weighted term and their ``total``."""

    def __init__(
        self,
        clip: ClipEncoder | None,
        vgg: VggFeatures | None,
        weights: LossWeights = LossWeights(),
        prompts: Prompts = Prompts(),
        patch: PatchConfig = PatchConfig(),
    ) -> None:
        super().__init__()
        if weights.needs_clip and clip is None:
            raise ValueError("the CLIP terms have non-zero weight but no CLIP model was given")
        if weights.needs_vgg and vgg is None:
            raise ValueError("the perceptual term has non-zero weight but no VGG model was given")
        self.clip, self.vgg = clip, vgg
        self.weights, self.patch = weights, patch
        if clip is not None:
            objective, visible, infrared = unit(clip.encode_texts([prompts.objective, prompts.visible, prompts.infrared]))
            self.register_buffer("vi_text_dir", unit(objective - visible), persistent=False)
            self.register_buffer("ir_text_dir", unit(objective - infrared), persistent=False)

    def forward(self, fused: Tensor, visible: Tensor, infrared: Tensor) -> dict[str, Tensor]:
        w = self.weights
        terms: dict[str, Tensor] = {}
        if w.needs_clip:
            terms.update(self._clip_terms(fused, visible, infrared))
        if w.needs_vgg:
            terms["perceptual"] = w.perceptual * perceptual_max_loss(self.vgg, fused, visible, infrared)
        terms["total"] = sum(terms.values()) if terms else fused.new_zeros(())
        return terms

    def _clip_terms(self, fused: Tensor, visible: Tensor, infrared: Tensor) -> dict[str, Tensor]:
        w = self.weights
        with torch.no_grad():
            vi_emb = self.clip.encode_images(visible)  # (B, D)
            ir_emb = self.clip.encode_images(infrared)
        fu_emb = self.clip.encode_images(fused)
        terms = {
            "sim": w.sim * clip_similarity_loss(fu_emb, vi_emb, ir_emb),
            "prompt_global": w.prompt_global * direction_loss(fu_emb, vi_emb, ir_emb, self.vi_text_dir, self.ir_text_dir).mean(),
        }
        if w.prompt_patch > 0 and self.patch.count > 0:
            terms["prompt_patch"] = w.prompt_patch * self._patch_term(fused, visible, infrared, vi_emb, ir_emb)
        return terms

    def _patch_term(self, fused: Tensor, visible: Tensor, infrared: Tensor, vi_emb: Tensor, ir_emb: Tensor) -> Tensor:
        batch = fused.shape[0]
        stacked = torch.cat([visible, infrared, fused], dim=0)  # (3B, 1, H, W): one affine for all three
        out_size = self.clip.image_size[0]
        patches = random_affine_crops(stacked, self.patch.count, out_size, self.patch)  # (count*3B, 1, S, S)
        patches = patches.view(self.patch.count, 3, batch, *patches.shape[1:])
        vi_patch, ir_patch, fu_patch = (patches[:, k].flatten(0, 1) for k in range(3))  # (count*B, 1, S, S)
        # Only patches with detail in both sources teach anything about the objective.
        keep = (entropy_bits(vi_patch) > self.patch.entropy_threshold) & (entropy_bits(ir_patch) > self.patch.entropy_threshold)
        fu_patch_emb = self.clip.encode_images(fu_patch)
        per_patch = direction_loss(
            fu_patch_emb, vi_emb.repeat(self.patch.count, 1), ir_emb.repeat(self.patch.count, 1), self.vi_text_dir, self.ir_text_dir
        )
        return (per_patch * keep.to(per_patch.dtype)).mean()


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """L1 + (1 - SSIM) between a student's and a frozen teacher's fused Y, both (B, 1, H, W)."""
    return F.l1_loss(student, teacher) + (1 - ssim(student, teacher)).mean()


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-sample PSNR in dB: (B,)."""
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


__all__ = [
    "LanguageDrivenLoss",
    "LossWeights",
    "PatchConfig",
    "Prompts",
    "clip_similarity_loss",
    "direction_loss",
    "distillation_loss",
    "entropy_bits",
    "perceptual_max_loss",
    "psnr",
    "random_affine_crops",
]
