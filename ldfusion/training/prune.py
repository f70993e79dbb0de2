"""Start a narrower student from its teacher: each layer keeps the teacher's most-used channels.

For a student with the teacher's structure at a smaller width (the ``fast`` student: LD-Lite
at half width). Each layer's output channels are ranked by how much the next layer uses
them (the L1 norm of the consumer's weights on that channel, times |gamma| after a
LayerNorm) and the top ones are kept; the student's weights are the teacher's restricted to
the kept channels (the output conv's kernel cropped about its centre when smaller).

The kept indices also tell the trainer which of the teacher's channels each student
activation corresponds to, so feature hints and teacher forcing work as for a same-layout
student: the teacher's activation restricted to the kept channels is the target.

Instance norms make this a good start: a channel that lost half of its inputs is
renormalised, so its scale is right even before training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ldfusion.errors import ConfigError
from ldfusion.networks import FusionNet, LayerNorm, ResidualBlock


def _top(importance: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` largest entries, in ascending channel order."""
    return importance.topk(count).indices.sort().values


def _check_prunable(student: FusionNet, teacher: FusionNet) -> None:
    s, t = student.spec, teacher.spec
    if s.has_style or t.has_style:
        raise ConfigError("pruning from the teacher supports networks without a style path (ld-lite layouts)")
    if (s.n_downsample, s.n_residual) != (t.n_downsample, t.n_residual):
        raise ConfigError(f"pruning needs the teacher's structure at another width; {s.name!r} and {t.name!r} differ in depth")
    wider = [(a, b) for a, b in zip(s.content_widths + s.up_widths, t.content_widths + t.up_widths) if a > b]
    if wider:
        raise ConfigError(f"pruning needs a student no wider than its teacher at every level ({wider[0][0]} > {wider[0][1]} channels)")


@torch.no_grad()
def plan_channels(student: FusionNet, teacher: FusionNet) -> dict[str, Tensor]:
    """For each module whose output a hint may read: the teacher's channels the student keeps there."""
    _check_prunable(student, teacher)
    kept: dict[str, Tensor] = {}
    up = teacher.decoder.model_up
    for e in (1, 2):
        prefix = f"encoder.content_encoder{e}"
        enc = getattr(teacher.encoder, f"content_encoder{e}").model
        mine = getattr(student.encoder, f"content_encoder{e}").model
        convs = [i for i, layer in enumerate(enc) if isinstance(layer, nn.Conv2d)]
        blocks = [i for i, layer in enumerate(enc) if isinstance(layer, ResidualBlock)]
        for conv, consumer in zip(convs, convs[1:]):  # each downsampling stage, ranked by the next conv
            kept[f"{prefix}.model.{conv + 1}"] = _top(enc[consumer].weight.abs().sum((0, 2, 3)), mine[conv].out_channels)
        # The residual stream: the last stage's output, read by every block and by the decoder.
        last = convs[-1]
        width = enc[last].out_channels
        use = up[0].weight[(e - 1) * width:e * width].abs().sum((1, 2, 3))  # ConvTranspose2d: (in, out, k, k)
        for block in blocks:
            use = use + enc[block].block[1].weight.abs().sum((0, 2, 3))
        stream = _top(use, mine[last].out_channels)
        for name in [f"{prefix}.model.{last + 1}", f"{prefix}.model.{last + 2}", prefix]:
            kept[name] = stream
        for block in blocks:
            inner = _top(enc[block].block[5].weight.abs().sum((0, 2, 3)), mine[block].block[1].out_channels)
            kept[f"{prefix}.model.{block}.block.2"] = inner
            kept[f"{prefix}.model.{block}.block.3"] = inner
            kept[f"{prefix}.model.{block}.block.6"] = stream
            kept[f"{prefix}.model.{block}"] = stream
    norms = [i for i, layer in enumerate(up) if isinstance(layer, LayerNorm)]
    out_conv = max(i for i, layer in enumerate(up) if isinstance(layer, nn.Conv2d))
    for norm, consumer in zip(norms, [n + 2 for n in norms[:-1]] + [out_conv]):
        weight = up[consumer].weight
        use = weight.abs().sum((1, 2, 3)) if isinstance(up[consumer], nn.ConvTranspose2d) else weight.abs().sum((0, 2, 3))
        width = student.decoder.model_up[norm].gamma.numel()
        kept[f"decoder.model_up.{norm}"] = kept[f"decoder.model_up.{norm + 1}"] = _top(use * up[norm].gamma.abs(), width)
    kept[f"decoder.model_up.{out_conv}"] = torch.tensor([0])
    return kept


@torch.no_grad()
def prune_into(student: FusionNet, teacher: FusionNet, kept: dict[str, Tensor]) -> None:
    """Set ``student``'s weights to ``teacher``'s restricted to the ``kept`` channels."""
    for e in (1, 2):
        prefix = f"encoder.content_encoder{e}.model"
        enc = getattr(teacher.encoder, f"content_encoder{e}").model
        mine = getattr(student.encoder, f"content_encoder{e}").model
        channels_in = torch.tensor([0])
        for index, layer in enumerate(enc):
            if isinstance(layer, nn.Conv2d):
                out = kept[f"{prefix}.{index + 1}"]
                _copy_conv(mine[index], layer, out, channels_in)
                channels_in = out
            elif isinstance(layer, ResidualBlock):
                inner = kept[f"{prefix}.{index}.block.2"]
                _copy_conv(mine[index].block[1], layer.block[1], inner, channels_in)
                _copy_conv(mine[index].block[5], layer.block[5], channels_in, inner)
    up = teacher.decoder.model_up
    width = getattr(teacher.encoder, "content_encoder1").model[-1].block[1].in_channels
    s1 = kept["encoder.content_encoder1"]
    s2 = kept["encoder.content_encoder2"]
    channels_in = torch.cat([s1, s2 + width])
    for index, layer in enumerate(up):
        mine = student.decoder.model_up[index]
        if isinstance(layer, nn.ConvTranspose2d):
            out = kept[f"decoder.model_up.{index + 1}"]
            mine.weight.copy_(layer.weight[channels_in][:, out])  # (in, out, k, k)
            mine.bias.copy_(layer.bias[out])
            channels_in = out
        elif isinstance(layer, LayerNorm):
            mine.gamma.copy_(layer.gamma[channels_in])
            mine.beta.copy_(layer.beta[channels_in])
        elif isinstance(layer, nn.Conv2d):
            _copy_conv(mine, layer, torch.tensor([0]), channels_in)


def _copy_conv(mine: nn.Conv2d, theirs: nn.Conv2d, out: Tensor, channels_in: Tensor) -> None:
    weight = theirs.weight[out][:, channels_in]  # (out, in, k, k)
    crop = (weight.shape[-1] - mine.weight.shape[-1]) // 2
    if crop:
        weight = weight[..., crop:-crop, crop:-crop]
    mine.weight.copy_(weight)
    mine.bias.copy_(theirs.bias[out])
