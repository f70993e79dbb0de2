"""The LDFusion family of fusion networks.

Module and parameter names follow the authors' code so their released state_dicts load
directly: ``encoder.content_encoder{1,2}``, ``encoder.style_encoder{1,2}`` and
``decoder.{model_local,model_up,mlp}``. Encoder 1 takes the visible Y channel, encoder 2
the infrared image; both are (B, 1, H, W) in [0, 1].

Unlike the authors' decoder, AdaIN parameters travel through ``forward`` as arguments
instead of being assigned onto modules, so one model instance can serve several threads
and a batch of N frames gives the same result as N single frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldfusion.variants import VariantSpec

# The smallest side every layer accepts: three stride-2 convs followed by a reflection
# pad of 1 need at least 2 pixels at 1/8 scale. Smaller inputs are padded up to it.
MIN_SIDE = 16


def instance_norm_affine(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Instance-normalise ``x`` (B, C, H, W), then scale and shift per sample and channel.

    ``weight`` and ``bias`` are (B, C): AdaIN's predicted std and mean.
    """
    x = F.instance_norm(x, eps=eps)
    return x * weight[:, :, None, None] + bias[:, :, None, None]


def sample_layer_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """The authors' LayerNorm: per-sample over (C, H, W) with unbiased std, then per-channel affine."""
    flat = x.flatten(1)
    mean = flat.mean(1).view(-1, 1, 1, 1)
    std = flat.std(1).view(-1, 1, 1, 1)
    x = (x - mean) / (std + eps)
    return x * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)


class LayerNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.empty(num_features).uniform_())
        self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        return sample_layer_norm(x, self.gamma, self.beta, self.eps)


class ResidualBlock(nn.Module):
    """Two reflect-padded 3x3 convs with instance norm and an identity skip."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            nn.InstanceNorm2d(features),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            nn.InstanceNorm2d(features),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class AdaINSlot(nn.Module):
    """Marks where AdaIN is applied inside an AdaIN residual block.

    It computes nothing; its two buffers exist only because the authors' AdaIN module
    registered (unused) running statistics, and their ``Dec_final.pt`` carries them.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))


class AdaINResidualBlock(nn.Module):
    """Residual block whose two norms are AdaIN with per-sample parameters.

    ``params`` is (B, 4C) laid out as the authors' MLP output: [mean1, std1, mean2, std2].
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            AdaINSlot(features),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(features, features, 3),
            AdaINSlot(features),
        )

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        mean1, std1, mean2, std2 = params.split(self.features, dim=1)
        b = self.block
        h = b[1](b[0](x))
        h = F.relu(instance_norm_affine(h, std1, mean1))
        h = b[5](b[4](h))
        h = instance_norm_affine(h, std2, mean2)
        return x + h

    @property
    def num_params(self) -> int:
        return 4 * self.features


class ContentEncoder(nn.Module):
    def __init__(self, widths: tuple[int, ...], n_residual: int) -> None:
        """``widths``: channels at full resolution, then after each stride-2 conv."""
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(1, widths[0], 7),
            nn.InstanceNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for dim_in, dim in zip(widths, widths[1:]):
            layers += [nn.Conv2d(dim_in, dim, 4, stride=2, padding=1), nn.InstanceNorm2d(dim), nn.ReLU(inplace=True)]
        layers += [ResidualBlock(widths[-1]) for _ in range(n_residual)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class StyleEncoder(nn.Module):
    """Global style code: convs, global average pool, 1x1 conv. Output (B, style_dim, 1, 1)."""

    def __init__(self, dim: int, n_downsample: int, style_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(1, dim, 7), nn.ReLU(inplace=True)]
        for _ in range(2):
            layers += [nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            dim *= 2
        for _ in range(n_downsample - 2):
            layers += [nn.Conv2d(dim, dim, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class MLP(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, dim: int, n_blocks: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(input_dim, dim), nn.ReLU(inplace=True)]
        for _ in range(n_blocks - 2):
            layers += [nn.Linear(dim, dim), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dim, output_dim))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.flatten(1))


class Encoder(nn.Module):
    def __init__(self, spec: VariantSpec) -> None:
        super().__init__()
        self.content_encoder1 = ContentEncoder(spec.content_widths, spec.n_residual)
        self.content_encoder2 = ContentEncoder(spec.content_widths, spec.n_residual)
        if spec.has_style:
            self.style_encoder1 = StyleEncoder(spec.style_base_dim, spec.n_downsample, spec.style_dim)
            self.style_encoder2 = StyleEncoder(spec.style_base_dim, spec.n_downsample, spec.style_dim)


class Decoder(nn.Module):
    def __init__(self, spec: VariantSpec) -> None:
        super().__init__()
        dim = spec.decoder_dim
        if spec.n_adain_residual:
            self.model_local = nn.ModuleList(AdaINResidualBlock(dim) for _ in range(spec.n_adain_residual))
        layers: list[nn.Module] = []
        for width in spec.up_widths:
            layers += [nn.ConvTranspose2d(dim, width, 5, 2, 0), LayerNorm(width), nn.ReLU(inplace=True)]
            dim = width
        activation = nn.Tanh() if spec.output_activation == "tanh" else nn.Sigmoid()
        layers += [nn.ReflectionPad2d(spec.out_kernel // 2), nn.Conv2d(dim, 1, spec.out_kernel), activation]
        self.model_up = nn.Sequential(*layers)
        if spec.has_style:
            n_params = sum(block.num_params for block in self.model_local) if spec.n_adain_residual else 0
            self.mlp = MLP(2 * spec.style_dim, n_params, spec.mlp_dim, spec.mlp_blocks)


@dataclass(frozen=True)
class FusionCodes:
    """What the encoders produce for a batch, plus the input size to crop back to.

    ``style`` is the concatenated (visible, infrared) style code, (B, 2*style_dim, 1, 1),
    or None for variants without a style path. Video smoothing replaces it between
    ``encode`` and ``decode``.
    """

    content_vi: Tensor  # (B, C, H/8, W/8)
    content_ir: Tensor  # (B, C, H/8, W/8)
    style: Tensor | None  # (B, 2*S, 1, 1)
    size: tuple[int, int]  # input (H, W)


class FusionNet(nn.Module):
    """Fuses visible Y and infrared, each (B, 1, H, W) in [0, 1], into a fused Y of the same size."""

    def __init__(self, spec: VariantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = Encoder(spec)
        self.decoder = Decoder(spec)

    def encode(self, vi_y: Tensor, ir: Tensor) -> FusionCodes:
        if vi_y.shape != ir.shape or vi_y.ndim != 4 or vi_y.shape[1] != 1:
            raise ValueError(f"vi_y and ir must both be (B, 1, H, W); got {tuple(vi_y.shape)} and {tuple(ir.shape)}")
        size = (vi_y.shape[-2], vi_y.shape[-1])
        content_vi, content_ir, style = self.encode_padded(pad_input(self.spec, vi_y), pad_input(self.spec, ir))
        return FusionCodes(content_vi, content_ir, style, size)

    def encode_padded(self, vi_y: Tensor, ir: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The encoders on inputs already padded by ``pad_input``: (content_vi, content_ir, style)."""
        enc = self.encoder
        style = None
        if self.spec.has_style:
            style = torch.cat([enc.style_encoder1(vi_y), enc.style_encoder2(ir)], dim=1)
        return enc.content_encoder1(vi_y), enc.content_encoder2(ir), style

    def decode(self, codes: FusionCodes) -> Tensor:
        # The transposed convs overshoot: output is 8*floor(H/8) + 21 per side; crop back.
        y = self.decode_padded(codes.content_vi, codes.content_ir, codes.style)
        height, width = codes.size
        return y[:, :, :height, :width]

    def decode_padded(self, content_vi: Tensor, content_ir: Tensor, style: Tensor | None) -> Tensor:
        """The decoder's uncropped output in [0, 1], (B, 1, H', W') with H' >= the input's H."""
        dec = self.decoder
        x = torch.cat([content_vi, content_ir], dim=1)  # (B, 2C, h, w)
        if self.spec.n_adain_residual:
            params = dec.mlp(style)  # (B, sum of 4C over blocks)
            for block, block_params in zip(dec.model_local, params.split(dec.model_local[0].num_params, dim=1)):
                x = block(x, block_params)
        return dec.model_up(x).clamp(0, 1)

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        return self.decode(self.encode(vi_y, ir))


def pad_input(spec: VariantSpec, x: Tensor) -> Tensor:
    """The padding every input gets before the encoders (and before an exported graph)."""
    return pad_to_min_side(x)


def pad_to_min_side(x: Tensor) -> Tensor:
    """Replicate-pad bottom/right so both sides reach ``MIN_SIDE``; larger inputs pass through."""
    pad_h = max(0, MIN_SIDE - x.shape[-2])
    pad_w = max(0, MIN_SIDE - x.shape[-1])
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def init_weights_normal(module: nn.Module) -> None:
    """The authors' initialisation: conv and transposed-conv weights from N(0, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)


def build_network(spec: VariantSpec, init: bool = True) -> FusionNet:
    net = FusionNet(spec)
    if init:
        net.apply(init_weights_normal)
    return net
