"""Feature hints for distillation (FitNets-style): the student's intermediate activations
are pulled towards the teacher's at the same places.

A student with the teacher's layout (the default weights: an ld-lite student of the ld-lite
teacher) is matched at every hint point directly. A student of another layout (the ``fast``
CPU student) is matched FitNets-style: a 1x1 conv per point maps the student's channels to
the teacher's (trained with it, thrown away after), at the points where both networks have
the same spatial layout, plus the content codes and the output logits (compared on the
image's own top-left region, which both decoders align to). The output-only distillation term still
decides what the student produces; hints make the optimisation far easier, because every
stage gets its own target instead of a gradient that has crossed the whole network.

Two sets of hint points:

- ``stages``: the two content codes and each decoder upsampling stage. The student is free
  to find its own representation inside each stage.
- ``layers``: every normalisation output (before its activation), every residual block
  and the output logits. Each layer then has a target of its own.

With ``teacher_forced_epochs``, the first epochs are blockwise: at every hint point the
student's output is scored and then replaced by the teacher's, so each layer learns from
the teacher's input and its error cannot compound through the layers after it. The
remaining epochs run the student on its own activations, which removes what is left of the
compounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldfusion.errors import ConfigError
from ldfusion.networks import AdaINResidualBlock, LayerNorm, ResidualBlock

HINT_POINT_SETS = ("stages", "layers")


@dataclass(frozen=True)
class HintConfig:
    points: str = "stages"  # "stages" or "layers" (see the module docstring)
    teacher_forced_epochs: int = 0  # blockwise epochs at the start of training

    def __post_init__(self) -> None:
        if self.points not in HINT_POINT_SETS:
            raise ValueError(f"loss.hints.points must be one of {HINT_POINT_SETS}; got {self.points!r}")
        if self.teacher_forced_epochs < 0:
            raise ValueError("loss.hints.teacher_forced_epochs must be 0 or more")


def hint_points(model: nn.Module, points: str = "stages") -> list[str]:
    """Names of the modules whose outputs are matched."""
    if points == "layers":
        return _layer_points(model)
    names = ["encoder.content_encoder1", "encoder.content_encoder2"]
    names += [f"decoder.model_up.{index}" for index, layer in enumerate(model.decoder.model_up) if isinstance(layer, nn.ReLU)]
    return names


def _layer_points(model: nn.Module) -> list[str]:
    """Every normalisation output, every residual block output, and the output logits.

    The points sit before the activations on purpose: an activation hint gives no gradient
    to a unit whose input is negative, so a channel that starts out dead (a decoder
    LayerNorm can shift a whole channel below zero) would never learn.
    """
    names = [name for name, module in model.named_modules()
             if isinstance(module, (nn.InstanceNorm2d, LayerNorm, ResidualBlock, AdaINResidualBlock))]
    up = model.decoder.model_up
    last_conv = max(index for index, layer in enumerate(up) if isinstance(layer, nn.Conv2d))
    return names + [f"decoder.model_up.{last_conv}"]


@contextlib.contextmanager
def tap(model: nn.Module, names: list[str], replace: Mapping[str, Tensor] | None = None) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of the named submodules during the forward passes inside the block.

    With ``replace``, each named module's output is recorded and then swapped for
    ``replace[name]`` (detached), which is what the rest of the network computes on.
    """
    modules = dict(model.named_modules())
    outputs: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs, output: Tensor, key: str) -> Tensor | None:
        # Copies both ways: the in-place ReLU after a norm would otherwise change the
        # recorded activation, or the teacher's activation handed to the student.
        outputs[key] = output.clone()
        if replace is not None:
            return replace[key].detach().clone()
        return None

    handles = []
    for name in names:
        if name not in modules:
            raise ConfigError(f"feature hints: the network has no module {name!r}")
        handles.append(modules[name].register_forward_hook(lambda m, i, out, key=name: hook(m, i, out, key)))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def same_layout(student: nn.Module, teacher: nn.Module) -> bool:
    s, t = student.state_dict(), teacher.state_dict()
    return s.keys() == t.keys() and all(s[k].shape == t[k].shape for k in s)


class HintAdapters(nn.Module):
    """FitNets regressors: a 1x1 conv per hint point where the student's channels differ from the teacher's."""

    def __init__(self, channels: Mapping[str, tuple[int, int]]) -> None:
        super().__init__()
        # ModuleDict keys may not contain dots.
        self.convs = nn.ModuleDict({_key(name): nn.Conv2d(s, t, 1) for name, (s, t) in channels.items() if s != t})

    def forward(self, name: str, x: Tensor) -> Tensor:
        key = _key(name)
        return self.convs[key](x) if key in self.convs else x


def _key(name: str) -> str:
    return name.replace(".", "__")


# Probe size for comparing layouts: a multiple of 8 above networks.MIN_SIDE.
_PROBE_SIDE = 64


def plan_hints(student: nn.Module, teacher: nn.Module, points: str, teacher_forced: bool) -> tuple[list[str], HintAdapters]:
    """The hint points for this student/teacher pair, and the adapters between them."""
    if same_layout(student, teacher):
        return hint_points(student, points), HintAdapters({})
    if teacher_forced:
        raise ConfigError("teacher-forced feature hints need a student with the teacher's layout; "
                          "set loss.hints.teacher_forced_epochs to 0")
    teacher_points = set(hint_points(teacher, points))
    logits = hint_points(student, "layers")[-1]
    candidates = [n for n in hint_points(student, points) if n in teacher_points]
    candidates += [n for n in ("encoder.content_encoder1", "encoder.content_encoder2") if n not in candidates]
    probe = torch.rand(1, 1, _PROBE_SIDE, _PROBE_SIDE)
    with torch.no_grad(), tap(student, candidates) as s_out, tap(teacher, candidates) as t_out:
        student(probe, probe)
        teacher(probe, probe)
    # Elsewhere the decoders may sit on grids shifted against each other: no hint there.
    names = [n for n in candidates if n == logits or s_out[n].shape[-2:] == t_out[n].shape[-2:]]
    if not names:
        raise ConfigError("feature hints: the student and the teacher share no hint point; set loss.weights.distill_features to 0")
    return names, HintAdapters({n: (s_out[n].shape[1], t_out[n].shape[1]) for n in names})


def hint_loss(student: dict[str, Tensor], teacher: dict[str, Tensor], adapters: HintAdapters | None = None) -> Tensor:
    """Mean over hint points of the MSE between activations (they are instance/layer normalised).

    Activations of different sizes are compared on their common top-left region.
    """
    losses = []
    for name, target in teacher.items():
        mine = adapters(name, student[name]) if adapters is not None else student[name]
        height, width = min(mine.shape[-2], target.shape[-2]), min(mine.shape[-1], target.shape[-1])
        losses.append(F.mse_loss(mine[..., :height, :width].float(), target[..., :height, :width].float()))
    return torch.stack(losses).mean()
