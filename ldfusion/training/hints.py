"""Feature hints for distillation (FitNets-style): the student's intermediate activations
are pulled towards the teacher's at the same places.

Only for a student whose layout equals the teacher's (the default weights are trained that
way: an ld-lite student of the ld-lite teacher). The output-only distillation term still
decides what the student produces; hints make the optimisation far easier, because every
stage gets its own target instead of a gradient that has crossed the whole network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ldfusion.errors import ConfigError


def hint_points(model: nn.Module) -> list[str]:
    """Names of the modules whose outputs are matched: each content code and each decoder upsampling stage."""
    names = ["encoder.content_encoder1", "encoder.content_encoder2"]
    names += [f"decoder.model_up.{index}" for index, layer in enumerate(model.decoder.model_up) if isinstance(layer, nn.ReLU)]
    return names


@contextlib.contextmanager
def tap(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of the named submodules during the forward passes inside the block."""
    modules = dict(model.named_modules())
    outputs: dict[str, Tensor] = {}
    handles = []
    for name in names:
        if name not in modules:
            raise ConfigError(f"feature hints: the network has no module {name!r}")
        handles.append(modules[name].register_forward_hook(lambda _m, _i, out, key=name: outputs.__setitem__(key, out)))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def check_same_layout(student: nn.Module, teacher: nn.Module) -> None:
    s, t = student.state_dict(), teacher.state_dict()
    if s.keys() != t.keys() or any(s[k].shape != t[k].shape for k in s):
        raise ConfigError("feature hints need a student with the teacher's layout; set loss.weights.distill_features to 0")


def hint_loss(student: dict[str, Tensor], teacher: dict[str, Tensor]) -> Tensor:
    """Mean over hint points of the MSE between activations (they are instance/layer normalised)."""
    return torch.stack([F.mse_loss(student[name].float(), teacher[name].float()) for name in teacher]).mean()
