"""Checkpoint I/O: our own format, plus the authors' released files.

Our format is a dict saved with ``torch.save``::

    {"format": "ldfusion-checkpoint", "format_version": 1, "ldfusion_version": "...",
     "variant": {...VariantSpec fields...}, "state_dict": {...}, "config": {...},
     "training": {...optional: optimizer, scheduler, epoch, step...}}

Everything is read with ``torch.load(..., weights_only=True)``: a file that carries
Python objects other than tensors and plain containers is refused, never executed.

Also accepted:
- a plain state_dict with ``encoder.*`` / ``decoder.*`` keys (LD-Lite's ``final.pt``);
- the LDFusion pair ``Enc_*.pt`` + ``Dec_*.pt`` (give either file or their folder).
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ldfusion import __version__
from ldfusion.errors import CheckpointError, ConfigError, first_line
from ldfusion.networks import FusionNet, build_network
from ldfusion.paths import replaced_whole
from ldfusion.variants import VARIANTS, VariantSpec, get_variant, variant_from_dict

FORMAT_NAME = "ldfusion-checkpoint"
FORMAT_VERSION = 1
_MAX_KEYS_IN_MESSAGE = 4


@dataclass
class Checkpoint:
    spec: VariantSpec
    state_dict: dict[str, torch.Tensor]
    config: dict = field(default_factory=dict)
    training: dict | None = None
    source: str = ""


def save_checkpoint(
    path: str | os.PathLike,
    model: FusionNet,
    config: Mapping | None = None,
    training: Mapping | None = None,
) -> Path:
    """Write ``model`` in our format, atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "ldfusion_version": __version__,
        "variant": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dict(config or {}),
    }
    if training is not None:
        payload["training"] = dict(training)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_whole(path) as temporary:
        torch.save(payload, temporary)
    return path


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """``torch.load`` with ``weights_only=True`` and errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():  # a raw pickle's "Detected pickle protocol 4" note: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(exc)
        if "GLOBAL" in reason or "global" in reason:
            raise CheckpointError(
                f"{path}: refused to load: the file holds Python objects that weights-only loading does not allow ({reason})"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc)})") from None
    except Exception:  # noqa: BLE001 - arbitrary bytes make the legacy unpickler fail in any way (KeyError, IndexError ...)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (not a file torch.save wrote)") from None


def load_checkpoint(path: str | os.PathLike, variant: str | None = None) -> Checkpoint:
    """Read any supported weights file into a ``Checkpoint`` (tensors on the CPU)."""
    path = Path(path)
    if path.is_dir():
        return _load_authors_pair(*_find_enc_dec_pair(path), variant=variant)
    if path.name.startswith(("Enc_", "Dec_")):
        return _load_authors_pair(*_enc_dec_from_one(path), variant=variant)
    obj = safe_torch_load(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME:
        return _from_our_format(path, obj, variant)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = dict(obj)
        spec = get_variant(variant) if variant else infer_variant(state, path)
        return Checkpoint(spec=spec, state_dict=state, source=str(path))
    raise CheckpointError(f"{path}: not an ldfusion checkpoint nor a state_dict of tensors")


def load_model(path: str | os.PathLike, variant: str | None = None) -> FusionNet:
    """Build the network a weights file describes and load it strictly. Returns it in eval mode."""
    ckpt = load_checkpoint(path, variant)
    return model_from_checkpoint(ckpt)


def model_from_checkpoint(ckpt: Checkpoint) -> FusionNet:
    check_finite(ckpt.state_dict, ckpt.source)
    net = build_network(ckpt.spec, init=False)
    check_state_dict_fits(net, ckpt.state_dict, ckpt.source, ckpt.spec.name)
    net.load_state_dict(ckpt.state_dict, strict=True)
    return net.eval()


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """NaN or infinite weights fuse every frame to black (or NaN): refuse them at load time."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{source}: weights hold non-finite values ({bad} NaN/inf in {key})")


def check_state_dict_fits(net: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, name: str) -> None:
    problems = state_dict_mismatch(net.state_dict(), state)
    if problems:
        raise CheckpointError(f"{source}: does not fit variant {name!r}: {problems}")


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    """Describe missing, unexpected, wrongly-shaped and wrongly-typed keys; empty when ``given`` fits.

    Integer weights where the network's are float loaded without a word (``load_state_dict``
    converts) and fused every image to a flat grey."""
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    shared = [k for k in expected if k in given]
    shapes = [f"{k} {tuple(given[k].shape)} != {tuple(expected[k].shape)}" for k in shared if tuple(given[k].shape) != tuple(expected[k].shape)]
    types = [f"{k} {str(given[k].dtype).removeprefix('torch.')} where {str(expected[k].dtype).removeprefix('torch.')} belongs"
             for k in shared if given[k].is_floating_point() != expected[k].is_floating_point()]
    parts = []
    for label, keys in (("missing keys", missing), ("unexpected keys", extra), ("wrong shapes", shapes), ("wrong types", types)):
        if keys:
            shown = ", ".join(keys[:_MAX_KEYS_IN_MESSAGE])
            more = f" (+{len(keys) - _MAX_KEYS_IN_MESSAGE} more)" if len(keys) > _MAX_KEYS_IN_MESSAGE else ""
            parts.append(f"{len(keys)} {label if len(keys) > 1 else label.removesuffix('s')}: {shown}{more}")  # "1 wrong type"
    return "; ".join(parts)


def infer_variant(state: Mapping[str, torch.Tensor], source: str | os.PathLike = "") -> VariantSpec:
    """Find the registered variant whose layout matches ``state`` exactly."""
    best: tuple[int, str, str] | None = None
    for name, spec in VARIANTS.items():
        with torch.device("meta"):
            expected = build_network(spec, init=False).state_dict()
        problems = state_dict_mismatch(expected, state)
        if not problems:
            return spec
        score = len(set(expected) ^ set(state))
        if best is None or score < best[0]:
            best = (score, name, problems)
    assert best is not None
    raise CheckpointError(f"{source}: matches no known variant; closest is {best[1]!r}: {best[2]}")


def _from_our_format(path: Path, obj: Mapping, variant: str | None) -> Checkpoint:
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is newer than this ldfusion reads")
    try:
        spec = variant_from_dict(obj["variant"])  # bounds checked here, before any allocation
        state = obj["state_dict"]
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: malformed ldfusion checkpoint ({first_line(exc)})") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: malformed ldfusion checkpoint (state_dict is not a mapping of names to tensors)")
    if variant and variant != spec.name:
        raise CheckpointError(f"{path}: holds variant {spec.name!r}, not the requested {variant!r}")
    config, training = obj.get("config") or {}, obj.get("training")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: malformed ldfusion checkpoint (config is a {type(config).__name__}, not a mapping)")
    _check_training_state(path, training)
    return Checkpoint(spec=spec, state_dict=dict(state), config=dict(config), training=training, source=str(path))


def _check_training_state(path: Path, training) -> None:
    """What ``Trainer.resume`` reads: epoch and step counts and the optimizer's state."""
    if training is None:
        return
    problem = None
    if not isinstance(training, Mapping):
        problem = f"is a {type(training).__name__}, not a mapping"
    elif not all(isinstance(training.get(k), int) and not isinstance(training.get(k), bool) and training[k] >= 0 for k in ("epoch", "step")):
        problem = "needs whole, non-negative epoch and step"
    elif not isinstance(training.get("optimizer"), Mapping):
        problem = "has no optimizer state"
    if problem:
        raise CheckpointError(f"{path}: malformed training state ({problem})")


def _find_enc_dec_pair(folder: Path) -> tuple[Path, Path]:
    for enc in sorted(folder.glob("Enc_*.pt"), reverse=True):  # Enc_final sorts after Enc_00100
        dec = enc.with_name("Dec_" + enc.name[len("Enc_") :])
        if dec.is_file():
            return enc, dec
    raise CheckpointError(f"{folder}: no Enc_*.pt / Dec_*.pt pair in this folder")


def _enc_dec_from_one(path: Path) -> tuple[Path, Path]:
    suffix = path.name[len("Enc_") :]
    enc, dec = path.with_name("Enc_" + suffix), path.with_name("Dec_" + suffix)
    for part in (enc, dec):
        if not part.is_file():
            raise CheckpointError(f"{path}: its partner {part.name} is missing from {path.parent}")
    return enc, dec


def _load_authors_pair(enc: Path, dec: Path, variant: str | None) -> Checkpoint:
    state: dict[str, torch.Tensor] = {}
    for prefix, part in (("encoder.", enc), ("decoder.", dec)):
        obj = safe_torch_load(part)
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{part}: expected a state_dict of tensors")
        state.update({prefix + k: v for k, v in obj.items()})
    spec = get_variant(variant) if variant else infer_variant(state, f"{enc} + {dec.name}")
    return Checkpoint(spec=spec, state_dict=state, source=f"{enc} + {dec.name}")


def _unpickling_reason(exc: BaseException) -> str:
    """torch wraps the real reason in paragraphs of advice; keep the line that names it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line
    return "unpickling failed"
