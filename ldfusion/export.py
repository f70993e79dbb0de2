"""Export a fusion network for CPU runtimes: ONNX and OpenVINO IR, float32 or int8.

Convention: the exported graph takes ``vi_y`` and ``ir``, each (B, 1, H, W) float32 in
[0, 1] with H and W already padded the way ``networks.pad_input`` pads them, and returns
``fused`` (B, 1, H', W') in [0, 1], the decoder's raw output before the crop back to the
input size (H' >= H, W' >= W). Padding and cropping stay outside the graph, in the
backend, so the graph has no shape arithmetic and one file serves every frame size.

Three rewrites are applied at export. The first and the third are exact in real
arithmetic; the second drops a factor of 1 + 1/(2N) with N = C*H*W of a decoder stage
(about 1e-7 at 640x512):

1. Every conv bias that feeds an InstanceNorm (or an AdaIN) is set to zero: the norm
   subtracts each channel's mean, so a constant per channel cancels. In LD-Lite's first
   7x7 conv some biases are ~330x the spread of the channel's output; every runtime but
   eager PyTorch loses precision there, and int8 loses it all.
2. The authors' LayerNorm, ``(x - mean) / (unbiased std + eps)``, written as
   ``(x - mean) / (sqrt(mean((x - mean)^2)) + eps)``, the pattern OpenVINO fuses into one
   MVN op.
3. A k x k conv to one output channel (the network's last conv, 20-28% of LD-Lite's CPU
   time as one dense conv) as a depthwise k x k conv plus a 1x1 sum over channels.

Exported files are cached under a name keyed by the weights' sha256 (see ``exported_path``),
so changed weights are exported again instead of silently reusing a stale graph.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ldfusion.errors import ConfigError
from ldfusion.networks import AdaINResidualBlock, FusionNet, LayerNorm
from ldfusion.paths import replaced_whole
from ldfusion.weights import cache_dir, sha256_of

log = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino")
# Part of every exported file's name: bump it when the graph, the rewrites or the int8
# recipe change, so files written by an older ldfusion are rebuilt rather than reused.
# 2: int8 leaves the norms' inputs in float and calibrates on whole frames.
EXPORT_VERSION = 2
INPUT_NAMES = ("vi_y", "ir")
OUTPUT_NAME = "fused"
_TRACE_SIDE = 64  # example input side for tracing: a multiple of 8 above networks.MIN_SIDE


class FusableLayerNorm(nn.Module):
    """The authors' LayerNorm in the form OpenVINO fuses into one MVN op (see rewrite 2)."""

    def __init__(self, norm: LayerNorm) -> None:
        super().__init__()
        self.eps = norm.eps
        self.gamma = nn.Parameter(norm.gamma.detach().clone().view(1, -1, 1, 1))
        self.beta = nn.Parameter(norm.beta.detach().clone().view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=(1, 2, 3), keepdim=True)
        std = centred.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        return centred / (std + self.eps) * self.gamma + self.beta


class DepthwiseThenSum(nn.Module):
    """A conv to one channel as a depthwise conv and a 1x1 sum (see rewrite 3)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        channels = conv.in_channels
        self.depthwise = nn.Conv2d(channels, channels, conv.kernel_size, groups=channels, bias=False)
        self.depthwise.weight.data.copy_(conv.weight.detach().transpose(0, 1))  # (C, 1, k, k)
        self.sum = nn.Conv2d(channels, 1, 1, bias=conv.bias is not None)
        self.sum.weight.data.fill_(1.0)
        if conv.bias is not None:
            self.sum.bias.data.copy_(conv.bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        return self.sum(self.depthwise(x))


def zero_biases_before_instance_norm(model: FusionNet) -> int:
    """Rewrite 1, in place; returns how many conv biases were zeroed."""
    zeroed = 0
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            layers = list(module)
            for conv, norm in zip(layers, layers[1:]):
                if isinstance(conv, nn.Conv2d) and conv.bias is not None and isinstance(norm, nn.InstanceNorm2d):
                    conv.bias.data.zero_()
                    zeroed += 1
        if isinstance(module, AdaINResidualBlock):
            # Its convs at block[1] and block[5] feed instance_norm_affine.
            for conv in (module.block[1], module.block[5]):
                conv.bias.data.zero_()
                zeroed += 1
    return zeroed


def rewrite_for_export(model: FusionNet) -> FusionNet:
    """A copy of ``model`` with the three rewrites of the module docstring, in eval mode."""
    model = copy.deepcopy(model).float().eval()
    zero_biases_before_instance_norm(model)
    up = model.decoder.model_up
    for index, layer in enumerate(up):
        if isinstance(layer, LayerNorm):
            up[index] = FusableLayerNorm(layer)
        elif isinstance(layer, nn.Conv2d) and layer.out_channels == 1 and layer.in_channels > 1 and layer.kernel_size != (1, 1):
            up[index] = DepthwiseThenSum(layer)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class ExportCore(nn.Module):
    """The graph that is exported: padded inputs to the uncropped fused Y (see the module docstring)."""

    def __init__(self, model: FusionNet) -> None:
        super().__init__()
        self.net = model

    def forward(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        return self.net.decode_padded(*self.net.encode_padded(vi_y, ir))


def _example_inputs() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (1, 1, _TRACE_SIDE, _TRACE_SIDE)
    return torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)


def export_onnx(model: FusionNet, path: Path) -> Path:
    """Write the rewritten network as ONNX with dynamic batch, height and width."""
    core = ExportCore(rewrite_for_export(model))
    dynamic = {name: {0: "batch", 2: "height", 3: "width"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with replaced_whole(path) as tmp, torch.no_grad(), _quiet_tracer():
        torch.onnx.export(core, _example_inputs(), str(tmp), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


def convert_openvino(model: FusionNet):
    """The rewritten network as an in-memory ``openvino.Model`` with dynamic batch, height and width."""
    import openvino as ov

    core = ExportCore(rewrite_for_export(model))
    with torch.no_grad(), _quiet_tracer():
        converted = ov.convert_model(core, example_input=_example_inputs(),
                                     input=[(name, [-1, 1, -1, -1], ov.Type.f32) for name in INPUT_NAMES])
    converted.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    return converted


@contextlib.contextmanager
def _quiet_tracer() -> Iterator[None]:
    """Silence the tracer's warnings about shape checks inside PyTorch's own norms: the
    exported graph keeps dynamic sizes regardless (the parity tests run odd sizes)."""
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield


@dataclass(frozen=True)
class Int8Options:
    """Post-training quantization: which layers stay in float, on how many calibration frames."""

    subset_size: int = 32  # calibration samples (NNCF default is 300; the statistics settle far sooner)
    keep_float: tuple[str, ...] = ("first", "last")  # "first": each encoder's first conv; "last": the output convs;
    # "transposed": the decoder's transposed convs
    # The instance and layer norms (OpenVINO's MVN) read float. NNCF would otherwise round each
    # conv's output to int8 before the norm, on one range for all channels, so channels of small
    # spread keep a few levels, which the norm then scales up to full size.
    float_norm_inputs: bool = True
    # Asymmetric activation ranges (NNCF's MIXED preset). Measured on LD-Lite: no better
    # than symmetric (scripts/int8_layers.py), so off.
    mixed: bool = False


def quantize_int8(ov_model, calibration: Iterable[tuple[Tensor, Tensor]], options: Int8Options = Int8Options()):
    """NNCF post-training int8 quantization of an OpenVINO model, calibrated on (vi_y, ir) pairs.

    The layers named in ``options.keep_float`` stay in float, and so do the norms' inputs (f32
    or bf16 when run: ``backends.float_precision``). Measured with ``scripts/int8_layers.py``
    with those layers in f32 (PSNR against float LD-Lite on the 12 held-out pairs, calibrated
    on whole MSRS frames; 640x512 on 2 cores): LD-Lite with the first and
    output convs float 30.3 dB mean, 27.8 worst; with the norms' inputs float too 39.1 /
    32.9 dB at the same speed (33.6 ms against 72.9 in float); the transposed convs float as
    well 43.2 / 40.1 dB, but at 56 ms most of the speed-up is gone.
    """
    import nncf

    samples = [{INPUT_NAMES[0]: vi.numpy(), INPUT_NAMES[1]: ir.numpy()} for vi, ir in calibration]
    if not samples:
        raise ConfigError("int8 calibration needs at least one frame pair")
    ignored = float_layer_names(ov_model, options.keep_float)
    return nncf.quantize(
        ov_model,
        nncf.Dataset(samples),
        preset=nncf.QuantizationPreset.MIXED if options.mixed else nncf.QuantizationPreset.PERFORMANCE,
        subset_size=min(options.subset_size, len(samples)),
        ignored_scope=nncf.IgnoredScope(names=ignored, types=["MVN"] if options.float_norm_inputs else [], validate=False),
        fast_bias_correction=True,
    )


def float_layer_names(ov_model, keep: Iterable[str]) -> list[str]:
    """Names of the convolution ops ``keep`` selects ("first", "last") in an OpenVINO model."""
    convs = [op for op in ov_model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    names: list[str] = []
    keep = set(keep)
    if "first" in keep:
        # The convs reading a graph input directly (one per encoder).
        inputs = {param.get_friendly_name() for param in ov_model.get_parameters()}
        names += [op.get_friendly_name() for op in convs if _reads_parameter(op, inputs)]
    if "transposed" in keep:
        names += [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() == "ConvolutionBackpropData"]
    if "last" in keep:
        # The convs after the last transposed conv: the output conv (depthwise + sum).
        ordered = list(ov_model.get_ordered_ops())
        last_up = max((i for i, op in enumerate(ordered) if op.get_type_name() == "ConvolutionBackpropData"), default=-1)
        names += [op.get_friendly_name() for op in ordered[last_up + 1:] if op.get_type_name() in ("Convolution", "GroupConvolution")]
    return names


def _reads_parameter(op, parameter_names: set[str], depth: int = 4) -> bool:
    """Whether ``op`` is fed by a graph input through at most ``depth`` non-conv ops (pads, converts)."""
    frontier = [op]
    for _ in range(depth):
        upstream = [value.get_node() for node in frontier for value in node.input_values()]
        if any(node.get_friendly_name() in parameter_names for node in upstream):
            return True
        frontier = [node for node in upstream if node.get_type_name() not in ("Convolution", "GroupConvolution", "Constant")]
    return False


# --- the cache of exported files -----------------------------------------------------------


def exported_path(weights: Path, fmt: str, int8: bool = False, bundled_dir: Path | None = None) -> Path:
    """Where the export of ``weights`` lives: beside it, or in the cache when that folder is not ours to write.

    The name carries the weights' sha256 (first 16 hex digits) and ``EXPORT_VERSION``;
    changed weights get a new name and are exported again.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {FORMATS}; got {fmt!r}")
    digest = sha256_of(weights)[:16]
    suffix = ".onnx" if fmt == "onnx" else ".xml"
    name = f"{weights.stem}.{digest}.v{EXPORT_VERSION}{'.int8' if int8 else ''}{suffix}"
    folder = weights.parent
    inside_package = bundled_dir is not None and folder.resolve() == bundled_dir.resolve()
    if inside_package and _openvino_pair_exists(folder / name):
        return folder / name  # shipped with the package (scripts/bundle_int8.py)
    if inside_package or not _writable(folder):
        folder = cache_dir() / "exported"
    return folder / name


def _openvino_pair_exists(xml: Path) -> bool:
    return xml.is_file() and xml.with_suffix(".bin").is_file()


def _writable(folder: Path) -> bool:
    """Whether ``folder`` is meant to be written: ``os.access`` alone says yes to root even when
    the folder is marked read-only (a shared data set), so its mode bits must allow it too."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(folder, os.W_OK)


def stale_exports(weights: Path, target: Path) -> list[Path]:
    """Earlier exports of ``weights`` in ``target``'s folder and format, under other hashes or versions."""
    tail = target.name[target.name.index(f".v{EXPORT_VERSION}") + len(f".v{EXPORT_VERSION}"):]  # ".xml", ".int8.xml", ".onnx"
    pattern = re.compile(rf"{re.escape(weights.stem)}\.[0-9a-f]{{16}}\.v\d+{re.escape(tail)}")
    return [p for p in target.parent.iterdir() if p != target and pattern.fullmatch(p.name)]


def ensure_exported(
    model: FusionNet,
    weights: Path,
    fmt: str,
    int8: bool = False,
    calibration: Callable[[], Iterable[tuple[Tensor, Tensor]]] | None = None,
    bundled_dir: Path | None = None,
) -> tuple[Path, bool]:
    """The exported file for ``weights`` (loaded as ``model``), built when missing; returns (path, built now)."""
    target = exported_path(weights, fmt, int8, bundled_dir)
    if target.is_file() and (fmt == "onnx" or _openvino_pair_exists(target)):
        return target, False
    if int8 and (fmt != "openvino" or calibration is None):
        raise ConfigError("int8 export needs --format openvino and calibration frames")
    target.parent.mkdir(parents=True, exist_ok=True)
    for path in {target, target.with_suffix(".bin")}:  # found only at the rename: the error named a temporary file, a .bin was left
        if path.is_dir():
            raise ConfigError(f"{path} is a folder where the export is written; move it away")
    # Beside the weights, an older export of the same file is stale. In the shared cache a
    # same-named file may be another folder's weights: leave those be.
    for old in stale_exports(weights, target) if target.parent == weights.parent else []:
        log.info("removing %s: exported from other weights or by another ldfusion", old)
        old.unlink(missing_ok=True)
        old.with_suffix(".bin").unlink(missing_ok=True)
    log.info("exporting %s to %s (%s%s)", weights, target, fmt, ", int8" if int8 else "")
    if fmt == "onnx":
        export_onnx(model, target)
    else:
        converted = convert_openvino(model)
        if int8:
            converted = quantize_int8(converted, calibration())
        save_openvino(converted, target)
    return target, True


def save_openvino(ov_model, target: Path) -> None:
    """Write .xml + .bin atomically (a crash never leaves a half-written pair behind)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.stem}.") as tmp:
        tmp_xml = Path(tmp) / target.name
        # Keep float32 weights: OpenVINO would otherwise store them as float16.
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(tmp_xml, target)



# --- calibration frames and the parity check ------------------------------------------------


def calibration_pairs(ir_dir: str | os.PathLike, vi_dir: str | os.PathLike, count: int = 32, side: int | None = None):
    """Up to ``count`` (vi_y, ir) pairs from two paired folders, spread over them: whole frames,
    or centred ``side`` x ``side`` crops.

    Whole frames by default: the norms see a whole frame in use, and their statistics set the
    ranges int8 must cover (crops of 256: 30.1 dB worst pair against 31.8 for whole frames,
    ``default`` against LD-Lite).
    """
    from ldfusion.imageio import pair_folders, read_pair
    from ldfusion.inference import to_chw_float, to_y_batch
    from ldfusion.networks import pad_to_min_side

    pairs = pair_folders(ir_dir, vi_dir)
    step = max(1, len(pairs) // count)
    samples = []
    for pair in pairs[::step][:count]:
        visible, ir = read_pair(pair)
        vi_y, ir_t = to_y_batch(visible), to_chw_float(ir)[None]  # (1, 1, H, W) each
        if side is not None:
            vi_y, ir_t = _centre_crop(vi_y, side), _centre_crop(ir_t, side)
        # The graph takes padded inputs (the module docstring): a frame under MIN_SIDE (7x9)
        # would fail inside OpenVINO. pad_input pads every variant this way.
        samples.append((pad_to_min_side(vi_y), pad_to_min_side(ir_t)))
    if not samples:
        raise ConfigError(f"no calibration pairs in {ir_dir} and {vi_dir}")
    return samples


def _centre_crop(x: Tensor, side: int) -> Tensor:
    height, width = x.shape[-2:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return x[..., top:top + side, left:left + side].contiguous()


def agreement_db(reference: Tensor, other: Tensor) -> float:
    """PSNR of ``other`` against ``reference`` (both in [0, 1]); inf when they are equal."""
    mse = float((reference.double() - other.double()).pow(2).mean())
    return float("inf") if mse == 0 else -10.0 * float(torch.log10(torch.tensor(mse)))


# A float export agrees with PyTorch to 80-120 dB in f32 and about 53 dB in bf16; one whose .bin
# lost a few hundred bytes in place (the same size, so it reads and compiles) agreed to 29-36 dB
# and was used without a word.
MIN_FLOAT_PARITY_DB = {"f32": 60.0, "bf16": 40.0}


def parity_inputs(height: int, width: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth scene with edges and noise: random pixels alone would not exercise the norms as images do."""
    ys = torch.linspace(0, 1, height)[:, None]
    xs = torch.linspace(0, 1, width)[None, :]
    base = 0.5 + 0.3 * torch.sin(6 * xs + 3 * ys) * torch.cos(4 * ys)
    blocks = ((xs * 5).floor() + (ys * 4).floor()) % 2 * 0.2
    vi = (base + blocks + 0.03 * torch.randn(height, width, generator=generator)).clamp(0, 1)
    ir = (1 - base + 0.05 * torch.randn(height, width, generator=generator)).clamp(0, 1)
    return vi[None, None], ir[None, None]


def export_agreement_db(network, model: FusionNet, height: int = 48, width: int = 64) -> float:
    """How closely ``network`` (an OpenVINO export of ``model``) agrees with it on one parity input."""
    vi_y, ir = parity_inputs(height, width, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return agreement_db(model(vi_y, ir), network(vi_y, ir))
