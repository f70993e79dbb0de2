"""Where the network runs on the CPU: eager PyTorch, or OpenVINO on an exported graph.

``backend``: ``torch`` runs the ``FusionNet`` itself; ``openvino`` runs its export (see
``ldfusion.export``), about 3x faster for LD-Lite on a 2-core x86 CPU; ``auto`` takes
OpenVINO for a CPU device when it is installed and says in one log line when it falls
back to PyTorch. On CUDA only ``torch`` runs.

Convention: the backend sees (B, 1, H, W) float32 tensors in [0, 1] on the CPU and returns
the fused Y the same way, cropped to (H, W). OpenVINO compiles the graph once per input
shape (video has one). ``precision`` says what the float layers compute in
(``float_precision``): float32 agrees with PyTorch to float rounding; ``auto`` keeps it for
float graphs and takes bfloat16 for an int8 graph's float layers where the CPU computes it
natively.
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

from ldfusion.errors import CheckpointError, ConfigError, first_line
from ldfusion.networks import FusionNet, pad_input
from ldfusion.signals import signal_stack_kept
from ldfusion.threads import network_threads
from ldfusion.variants import VariantSpec

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "f32", "bf16")


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


def float_precision(requested: str = "auto", int8: bool = False) -> str:
    """OpenVINO's precision for the layers a graph computes in float (all of a float graph's,
    an int8 graph's first and output convs and norms): ``f32`` or ``bf16``.

    ``auto``: a float graph in f32, so it agrees with PyTorch (and LD-Lite with the authors'
    outputs to one grey level); an int8 graph, approximate already, in bf16 where the CPU
    computes it natively (AVX512-BF16 or AMX), else f32. ``bf16`` asks for it in float graphs
    too. Measured on a 2-core AMD EPYC with AVX512-BF16 (12 held-out pairs, PSNR of the fused
    Y), f32 -> bf16:

    - LD-Lite float at 640x512, colour in and out: 87.3 -> 51.6 ms a frame; 52.9 dB mean and
      48.6 worst against LD-Lite on PyTorch; up to 6 grey levels from the authors' outputs,
      where f32 stays within one.
    - `default`'s shipped int8 export at 640x480: 38.5 -> 30.1 ms; against LD-Lite 35.42 ->
      35.17 dB mean, 31.77 -> 31.11 worst (the quality bar is 33 / 30).
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {requested!r}")
    if requested == "bf16" and not cpu_has_native_bf16():
        raise ConfigError("precision bf16 needs a CPU that computes bf16 natively (AVX512-BF16 or AMX); this one does not: use f32")
    if requested != "auto":
        return requested
    return "bf16" if int8 and cpu_has_native_bf16() else "f32"


@functools.cache
def cpu_has_native_bf16() -> bool:
    import openvino as ov

    with signal_stack_kept():
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoNetwork:
    """An exported fusion network compiled by OpenVINO for the CPU. Safe to share between threads.

    ``precision``: what the float layers compute in, ``f32`` or ``bf16`` (``float_precision``).
    ``streams``: calls that run at once (``start``), each on its share of the threads. One
    stream spreads a call over every thread: the shortest latency, but its threads work in
    lockstep, so when another thread of the process takes a core (a decoder, an encoder)
    the whole call waits for it. Measured on the 2-core EPYC with x264 encoding beside it
    8 ms in every 40: one 2-thread call 30.8 -> 39.3 ms a frame, two 1-thread calls at once
    30 -> 35 ms a frame (through ``Fuser``, each way in its own process, the gap was smaller:
    ``scripts/openvino_streams.py``). File mode, which keeps two calls in flight, takes 2;
    live mode 1.
    """

    def __init__(self, model_or_path, spec: VariantSpec, threads: int | None = None, precision: str = "f32",
                 streams: int = 1) -> None:
        import openvino as ov

        if precision not in ("f32", "bf16"):
            raise ConfigError(f"openvino precision must be f32 or bf16; got {precision!r}")
        if streams < 1:
            raise ConfigError(f"openvino streams must be at least 1; got {streams}")
        self.spec = spec
        self.precision = precision
        self.streams = streams
        self._core = ov.Core()
        self._core.set_property("CPU", {
            "INFERENCE_NUM_THREADS": threads or network_threads(),
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "NUM_STREAMS": streams,
            "INFERENCE_PRECISION_HINT": precision,
        })
        self._source = Path(model_or_path) if isinstance(model_or_path, (str, Path)) else None
        self._model = _read_export(self._core, self._source) if self._source is not None else model_or_path
        self._compiled: dict[tuple[int, ...], object] = {}
        self._idle: dict[tuple[int, ...], list] = {}  # infer requests not running, per input shape
        self._lock = threading.Lock()

    def _take_request(self, shape: tuple[int, ...]):
        """An idle infer request for ``shape`` (compiling the shape on first use); made when all are busy."""
        with self._lock:
            if shape not in self._compiled:
                with signal_stack_kept():
                    self._compiled[shape] = self._compile(shape)
                log.debug("openvino compiled for input %s", shape)
            idle = self._idle.setdefault(shape, [])
            return idle.pop() if idle else self._compiled[shape].create_infer_request()

    def _compile(self, shape: tuple[int, ...]):
        """The network compiled for the CPU at input ``shape``. An export whose .bin was damaged but
        kept its size read fine and failed here with OpenVINO's own error (a shape check in its
        C++ source), exit 1."""
        try:
            model = self._model.clone()
            model.reshape({name: list(shape) for name in ("vi_y", "ir")})
            return self._core.compile_model(model, "CPU")
        except RuntimeError as exc:
            if self._source is None:
                raise
            raise _damaged_export(self._source, "OpenVINO cannot compile this export, which may be damaged", exc) from None

    def _give_back(self, shape: tuple[int, ...], request) -> None:
        with self._lock:
            self._idle[shape].append(request)

    def start(self, vi_y: Tensor, ir: Tensor) -> "PendingFusion":
        """Start fusing (B, 1, H, W) float32 CPU tensors; ``result()`` of the returned object waits
        for the (B, 1, H, W) float32 output. Up to ``streams`` calls run at once."""
        if vi_y.shape != ir.shape or vi_y.ndim != 4 or vi_y.shape[1] != 1:
            raise ValueError(f"vi_y and ir must both be (B, 1, H, W); got {tuple(vi_y.shape)} and {tuple(ir.shape)}")
        vi_p, ir_p = pad_input(self.spec, vi_y.float()), pad_input(self.spec, ir.float())
        shape = tuple(vi_p.shape)
        request = self._take_request(shape)
        try:
            # share_inputs=False: the request copies the inputs, so the caller's tensors may be reused
            request.start_async({"vi_y": np.ascontiguousarray(vi_p.numpy()), "ir": np.ascontiguousarray(ir_p.numpy())},
                                share_inputs=False)
        except BaseException:
            self._give_back(shape, request)
            raise
        return PendingFusion(self, shape, request, tuple(vi_y.shape[-2:]))

    def __call__(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        """Fuse (B, 1, H, W) float32 CPU tensors; returns (B, 1, H, W) float32."""
        return self.start(vi_y, ir).result()


def _read_export(core, path: Path):
    """The exported graph at ``path``; a damaged file (a text file, a cut .bin) is a one-line
    CheckpointError naming it, where OpenVINO's own error names only its C++ source."""
    try:
        # Checked first: OpenVINO offers a file its reader for the suffix rejects to its other
        # frontends, and TensorFlow's prints its parse errors straight to stderr.
        _check_export_format(path)
        return core.read_model(str(path))
    except Exception as exc:  # noqa: BLE001 (ElementTree's, onnx's and OpenVINO's own errors)
        raise _damaged_export(path, "not a readable OpenVINO export", exc) from None


def _damaged_export(path: Path, what: str, exc: BaseException | None = None) -> CheckpointError:
    """The one-line error for an export file that cannot be used, with what to do about it."""
    companion = " (and its .bin)" if path.suffix == ".xml" else ""
    detail = f" ({_last_line(exc)})" if exc is not None else ""
    return CheckpointError(f"{path}: {what}{detail}; delete it{companion} and it is exported again from the weights")


def _check_export_format(path: Path) -> None:
    """Raise unless ``path`` parses as what its suffix says: OpenVINO IR's XML, or ONNX."""
    if path.suffix == ".xml":
        from xml.etree import ElementTree

        ElementTree.parse(path)
    elif path.suffix == ".onnx" and importlib.util.find_spec("onnx") is not None:  # `ldfusion export`'s extra
        import onnx.checker

        onnx.checker.check_model(str(path))


def _last_line(exc: BaseException) -> str:
    """OpenVINO's errors say what went wrong on their last line, where they went wrong on the first."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else first_line(exc)


class PendingFusion:
    """An OpenVINO call under way (``OpenVinoNetwork.start``); ``result()`` waits for its output."""

    def __init__(self, network: OpenVinoNetwork, shape: tuple[int, ...], request, size: tuple[int, int]) -> None:
        self._network, self._shape, self._request, self._size = network, shape, request, size
        self._out: Tensor | None = None

    def result(self) -> Tensor:
        if self._out is None:
            try:
                self._request.wait()
                height, width = self._size
                out = self._request.get_output_tensor(0).data  # (B, 1, H', W'), owned by the request
                self._out = torch.from_numpy(out[:, :, :height, :width].copy())
            finally:
                self._network._give_back(self._shape, self._request)
        return self._out


def _check_agrees(network: OpenVinoNetwork, model: FusionNet, path: Path) -> None:
    """A cached float export damaged in place (its size kept: it reads and compiles) fused every
    frame 30+ grey levels off without a word, where `ldfusion export` refused it. One small call."""
    from ldfusion.export import MIN_FLOAT_PARITY_DB, export_agreement_db

    db = export_agreement_db(network, model)
    if not db >= MIN_FLOAT_PARITY_DB[network.precision]:
        raise _damaged_export(path, f"this export disagrees with its weights ({db:.1f} dB PSNR, {network.precision}), so it may be damaged")


def build_openvino(
    model: FusionNet,
    weights: Path | None,
    int8: bool = False,
    calibration: Callable[[], Iterable[tuple[Tensor, Tensor]]] | None = None,
    threads: int | None = None,
    precision: str = "auto",
    streams: int = 1,
) -> OpenVinoNetwork:
    """OpenVINO on ``model``: from the cached export of ``weights`` when given, else converted in
    memory; its float layers in ``precision`` (``float_precision``)."""
    from ldfusion.export import convert_openvino, ensure_exported, exported_path, quantize_int8
    from ldfusion.weights import BUNDLED_DIR

    if int8 and calibration is None:
        made = exported_path(Path(weights), "openvino", True, BUNDLED_DIR) if weights is not None and Path(weights).is_file() else None
        if made is None or not made.is_file():
            raise ConfigError(f"no int8 export of {weights or 'these weights'} yet: run `ldfusion export --weights "
                              f"{weights or 'FILE'} --int8 --calib-ir DIR --calib-vi DIR` first")
    if weights is not None and Path(weights).is_file():
        path, _ = ensure_exported(model, Path(weights), "openvino", int8, calibration, bundled_dir=BUNDLED_DIR)
        network = OpenVinoNetwork(path, model.spec, threads, float_precision(precision, int8), streams)
        if not int8:  # an int8 export differs from its weights by design
            _check_agrees(network, model, path)
        log.info("running the network on OpenVINO%s%s from %s", _describe(int8, network.precision, precision),
                 f", {streams} calls at once" if streams > 1 else "", path)
        return network
    converted = convert_openvino(model)
    if int8:
        converted = quantize_int8(converted, calibration())
    return OpenVinoNetwork(converted, model.spec, threads, float_precision(precision, int8), streams)


def _describe(int8: bool, precision: str, requested: str) -> str:
    kind = " int8, its float layers" if int8 else ""
    if precision == "bf16" and requested == "auto":
        return f"{kind} in bf16 (this CPU computes bf16 natively; --precision f32 for float32)"
    return f"{kind} in {precision}"
