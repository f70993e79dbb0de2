"""Where the network runs on the CPU: eager PyTorch, or OpenVINO on an exported graph.

``backend``: ``torch`` runs the ``FusionNet`` itself; ``openvino`` runs its export (see
``ldfusion.export``), about 3x faster for LD-Lite on a 2-core x86 CPU; ``auto`` takes
OpenVINO for a CPU device when it is installed and says in one log line when it falls
back to PyTorch. On CUDA only ``torch`` runs.

Convention: the backend sees (B, 1, H, W) float32 tensors in [0, 1] on the CPU and returns
the fused Y the same way, cropped to (H, W). OpenVINO compiles the graph once per input
shape (video has one). A float graph runs in float32, so it agrees with PyTorch to float
rounding. An int8 graph's layers kept in float run in bfloat16 where the CPU computes it
natively (``float_precision``): it has given up exact agreement already, and bf16 is what
makes it fast.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ldfusion.errors import ConfigError
from ldfusion.networks import FusionNet, pad_input
from ldfusion.threads import network_threads
from ldfusion.variants import VariantSpec

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose_backend(requested: str, device: torch.device) -> str:
    """``torch`` or ``openvino`` for ``requested`` on ``device``; errors name what cannot run."""
    if requested not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}; got {requested!r}")
    if requested == "torch":
        return "torch"
    if device.type != "cpu":
        if requested == "openvino":
            raise ConfigError(f"backend 'openvino' runs on the CPU only; the device is {device.type!r}")
        return "torch"
    if openvino_available():
        return "openvino"
    if requested == "openvino":
        raise ConfigError("backend 'openvino' was asked for but openvino is not installed (pip install openvino)")
    log.info("backend auto: openvino is not installed, running the network on PyTorch (pip install openvino: ~3x faster on the CPU)")
    return "torch"


def auto_int8(chosen_by_auto: bool, weights_path: Path | None, device: torch.device, backend: str) -> bool:
    """What an unset ``int8`` means: int8 where ``weights: auto`` chose the weights
    (``chosen_by_auto``) on the CPU, the network runs on OpenVINO and their int8 export ships
    with the package (``CPU_AUTO_INT8``).

    Only ``auto`` turns it on: weights named explicitly run in float unless int8 is asked for.
    """
    from ldfusion.weights import CPU_AUTO_INT8

    if not (CPU_AUTO_INT8 and chosen_by_auto and device.type == "cpu" and weights_path is not None):
        return False
    if backend == "torch" or not openvino_available():
        return False
    shipped = shipped_int8_export(weights_path)
    if shipped is None:
        log.info("int8 auto: off (no int8 export ships for %s)", weights_path.name)
        return False
    log.info("int8 auto: on, the shipped int8 export %s (inside the quality bar against LD-Lite: MODEL_CARD.md; "
             "--no-int8 or model.int8: false runs float)", shipped.name)
    return True


def shipped_int8_export(weights_path: Path) -> Path | None:
    """The OpenVINO int8 export of ``weights_path`` shipped in ldfusion/bundled, current for its
    bytes and for this ldfusion's export version; None when there is none."""
    from ldfusion.export import exported_path
    from ldfusion.weights import BUNDLED_DIR

    if not weights_path.is_file():
        return None
    path = exported_path(weights_path, "openvino", True, BUNDLED_DIR)
    return path if path.parent.resolve() == BUNDLED_DIR.resolve() else None


def float_precision(int8: bool) -> str:
    """OpenVINO's precision for the layers a graph computes in float: ``f32`` or ``bf16``.

    A float graph runs in f32: it must agree with PyTorch (OpenVINO would pick bf16 by
    itself on CPUs that compute it natively). An int8 graph's float layers (first and output
    convs, norms) run in bf16 where the CPU has it natively (AVX512-BF16 or AMX), f32
    elsewhere. Measured on a 2-core AMD EPYC with AVX512-BF16, `default`'s shipped int8
    export at 640x480: 38.5 -> 30.1 ms a frame; against float LD-Lite on the 12 held-out
    pairs, 35.42 -> 35.17 dB mean, worst pair 31.77 -> 31.11 dB (the bar is 33 / 30).
    """
    if not int8:
        return "f32"
    return "bf16" if cpu_has_native_bf16() else "f32"


@functools.cache
def cpu_has_native_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoNetwork:
    """An exported fusion network compiled by OpenVINO for the CPU. Safe to share between threads.

    ``precision``: what the float layers compute in, ``f32`` or ``bf16`` (``float_precision``).
    """

    def __init__(self, model_or_path, spec: VariantSpec, threads: int | None = None, precision: str = "f32") -> None:
        import openvino as ov

        if precision not in ("f32", "bf16"):
            raise ConfigError(f"openvino precision must be f32 or bf16; got {precision!r}")
        self.spec = spec
        self.precision = precision
        self._core = ov.Core()
        self._core.set_property("CPU", {
            "INFERENCE_NUM_THREADS": threads or network_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        })
        self._model = self._core.read_model(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
        self._compiled: dict[tuple[int, ...], object] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # one infer request per thread and shape

    def _request(self, shape: tuple[int, ...]):
        requests = self._local.__dict__.setdefault("requests", {})
        if shape not in requests:
            with self._lock:
                if shape not in self._compiled:
                    model = self._model.clone()
                    model.reshape({name: list(shape) for name in ("vi_y", "ir")})
                    self._compiled[shape] = self._core.compile_model(model, "CPU")
                    log.debug("openvino compiled for input %s", shape)
                compiled = self._compiled[shape]
            requests[shape] = compiled.create_infer_request()
        return requests[shape]

    def __call__(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        """Fuse (B, 1, H, W) float32 CPU tensors; returns (B, 1, H, W) float32."""
        if vi_y.shape != ir.shape or vi_y.ndim != 4 or vi_y.shape[1] != 1:
            raise ValueError(f"vi_y and ir must both be (B, 1, H, W); got {tuple(vi_y.shape)} and {tuple(ir.shape)}")
        height, width = vi_y.shape[-2:]
        vi_p, ir_p = pad_input(self.spec, vi_y.float()), pad_input(self.spec, ir.float())
        request = self._request(tuple(vi_p.shape))
        request.infer({"vi_y": np.ascontiguousarray(vi_p.numpy()), "ir": np.ascontiguousarray(ir_p.numpy())})
        out = request.get_output_tensor(0).data  # (B, 1, H', W'), owned by the request
        return torch.from_numpy(out[:, :, :height, :width].copy())


def build_openvino(
    model: FusionNet,
    weights: Path | None,
    int8: bool = False,
    calibration: Callable[[], Iterable[tuple[Tensor, Tensor]]] | None = None,
    threads: int | None = None,
) -> OpenVinoNetwork:
    """OpenVINO on ``model``: from the cached export of ``weights`` when given, else converted in memory."""
    from ldfusion.export import convert_openvino, ensure_exported, exported_path, quantize_int8
    from ldfusion.weights import BUNDLED_DIR

    if int8 and calibration is None:
        made = exported_path(Path(weights), "openvino", True, BUNDLED_DIR) if weights is not None and Path(weights).is_file() else None
        if made is None or not made.is_file():
            raise ConfigError(f"no int8 export of {weights or 'these weights'} yet: run `ldfusion export --weights "
                              f"{weights or 'FILE'} --int8 --calib-ir DIR --calib-vi DIR` first")
    if weights is not None and Path(weights).is_file():
        path, _ = ensure_exported(model, Path(weights), "openvino", int8, calibration, bundled_dir=BUNDLED_DIR)
        network = OpenVinoNetwork(path, model.spec, threads, float_precision(int8))
        log.info("running the network on OpenVINO%s from %s", _describe(int8, network.precision), path)
        return network
    converted = convert_openvino(model)
    if int8:
        converted = quantize_int8(converted, calibration())
    return OpenVinoNetwork(converted, model.spec, threads, float_precision(int8))


def _describe(int8: bool, precision: str) -> str:
    if not int8:
        return ""
    return " int8 (its float layers in bf16: this CPU computes bf16 natively)" if precision == "bf16" else " int8"
