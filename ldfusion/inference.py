"""Inference API: a loaded network on a device, fusing batches of frames.

``Fuser`` is what the CLI, the streaming pipeline and the benchmarks share. It takes
visible RGB (or gray) and infrared frames as tensors in [0, 1] or as uint8 arrays, runs
the network on the visible Y channel and the infrared image, and restores colour from
the visible CrCb.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ldfusion.backends import PRECISIONS, PendingFusion
from ldfusion.color import merge_fused_y, rgb_to_y
from ldfusion.errors import CheckpointError, ConfigError, first_line
from ldfusion.networks import FusionCodes, FusionNet
from ldfusion.staging import PinnedStaging
from ldfusion.threads import configure_torch_threads, torch_threads
from ldfusion.weights import choose_weights, is_auto, resolve_model, resolve_weights_path

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but no CUDA GPU is available; ask for the cpu device (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: there are only {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def default_batch_size(device: torch.device) -> int:
    """Frames per network call when the user does not say.

    On the GPU batching amortises launches and fills the device. On the CPU it does not
    pay: measured with `ldfusion bench` on 2 cores, batch 4 ran at 0.7x the per-frame rate
    of batch 1 (640x480 and 1280x720), so the CPU fuses one frame at a time.
    """
    return 8 if device.type == "cuda" else 1


COMPILE_MODES = ("auto", "on", "off")
# torch.compile's modes: inductor's kernels alone, or also replayed as CUDA graphs (one launch
# per call instead of one per kernel: what a pipeline whose host is busy needs; CUDA only).
# auto: CUDA graphs on CUDA, where an H200 pipeline fused 2027 fps with them against 966 eager
# (batch 32, 640x512), and inductor's kernels alone elsewhere.
COMPILE_KINDS = ("auto", "default", "reduce-overhead")


def resolve_compile_mode(mode: str, device: torch.device) -> str:
    """``auto`` as the mode for ``device``: reduce-overhead on CUDA, default elsewhere."""
    if mode != "auto":
        return mode
    return "reduce-overhead" if device.type == "cuda" else "default"


@dataclass(frozen=True)
class FuserOptions:
    device: str = "auto"
    half: bool | None = None  # None: half precision on CUDA, float32 on the CPU
    channels_last: bool | None = None  # None: on for CUDA, where cuDNN prefers NHWC
    # torch.compile the network: auto (on for CUDA, off on the CPU) | on | off. Off unless asked:
    # every new input shape compiles anew (~20 s), which pays for video's fixed frame size (the
    # pipeline's model.compile defaults to auto) but not for folders of differently sized images.
    compile: str = "off"
    compile_backend: str = "inductor"  # torch.compile backend; tests use "aot_eager" (inductor takes minutes on 2 cores)
    compile_mode: str = "auto"  # COMPILE_KINDS: "reduce-overhead" replays the compiled kernels as CUDA graphs

    backend: str = "auto"  # torch | openvino | auto (OpenVINO on the CPU when installed); see ldfusion.backends
    # OpenVINO only: the int8 export (shipped, or made by `ldfusion export --int8`). None:
    # on where ``weights: auto`` chose weights whose int8 export ships (backends.auto_int8).
    int8: bool | None = None
    # OpenVINO only: what its float layers compute in: auto (f32 for a float network, bf16 for
    # an int8 one's where the CPU has it natively) | f32 (agrees with PyTorch) | bf16.
    # See backends.float_precision.
    precision: str = "auto"
    # OpenVINO only: network calls that may run at once (``Fuser.start_fuse_y``), each on its
    # share of the threads. 1: a call spreads over every thread (the shortest latency: live
    # mode). 2: two calls in flight, which other busy threads slow less (file mode;
    # ``backends.OpenVinoNetwork``).
    cpu_streams: int = 1

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_MODES)}; got {self.compile!r}")
        if self.compile_mode not in COMPILE_KINDS:
            raise ConfigError(f"compile_mode must be one of {', '.join(COMPILE_KINDS)}; got {self.compile_mode!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.cpu_streams < 1:
            raise ConfigError(f"cpu_streams must be at least 1; got {self.cpu_streams}")


class Fuser:
    """A fusion network ready for inference on one device. Safe to share between threads."""

    def __init__(
        self, model: FusionNet, options: FuserOptions = FuserOptions(), weights_path: Path | None = None, chosen_by_auto: bool = False
    ) -> None:
        """``weights_path``: the file ``model`` was loaded from (OpenVINO runs its export);
        ``chosen_by_auto``: ``weights: auto`` chose it, which lets an unset ``int8`` turn on."""
        self.device = resolve_device(options.device)
        on_cuda = self.device.type == "cuda"
        self.dtype = torch.float16 if (options.half if options.half is not None else on_cuda) else torch.float32
        if self.dtype == torch.float16 and not on_cuda:
            raise ConfigError("half precision is only supported on CUDA")
        self.channels_last = options.channels_last if options.channels_last is not None else on_cuda
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.eval().to(self.device, dtype=self.dtype, memory_format=memory_format)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.spec = model.spec
        # Named in errors; from_weights says which file or registry name.
        self.weights_name = f"weights {str(weights_path)!r}" if weights_path is not None else f"the {model.spec.name} network"
        # cuDNN autotuning pays off for the fixed frame sizes of video.
        if on_cuda:
            torch.backends.cudnn.benchmark = True
        # On an H200, ld-lite at batch 32 fused 2685 fps compiled against 1431 eager; on the
        # CPU inductor's compile takes minutes and the eager network is what was measured.
        compiled = options.compile == "on" or (options.compile == "auto" and on_cuda)
        if compiled:
            self._network = CompiledNetwork(self.model, options.compile_backend, resolve_compile_mode(options.compile_mode, self.device))
        else:
            self._network = self.model
        # PyTorch's CPU threads for the network (set around each call: ``_network_threads``)
        self.network_threads = configure_torch_threads() if self.device.type == "cpu" else None
        self.backend, self.cpu_network, self.int8 = self._cpu_backend(options, weights_path, chosen_by_auto)
        self._staging: PinnedStaging | None = None  # fuse_arrays' uploads on CUDA, made on first use

    def _cpu_backend(self, options: FuserOptions, weights_path: Path | None, chosen_by_auto: bool):
        """("torch", None, False), or ("openvino", the compiled export that ``fuse_y`` runs
        instead of the model, whether it is the int8 one).

        ``auto`` takes OpenVINO only with a weights file, whose export is cached; a model
        built in memory runs on PyTorch unless ``openvino`` is asked for (then it is
        converted in memory, seconds per Fuser).
        """
        from ldfusion.backends import auto_int8, build_openvino, choose_backend

        requested = options.backend
        int8 = options.int8 if options.int8 is not None else auto_int8(chosen_by_auto, weights_path, self.device, requested)
        if requested == "auto" and weights_path is None and not int8:
            requested = "torch"
        backend = choose_backend(requested, self.device)
        if int8 and backend != "openvino":
            raise ConfigError("int8 runs on the openvino backend only (on the CPU, with openvino installed)")
        if backend == "torch" or self.dtype != torch.float32:
            self._check_torch_precision(options.precision)
            return "torch", None, False
        self._check_output_is_finite_on_pytorch()
        network = build_openvino(self.model, weights_path, int8=int8, precision=options.precision, streams=options.cpu_streams)
        return backend, network, int8

    def _check_output_is_finite_on_pytorch(self) -> None:
        """Weights whose activations overflow give NaN on PyTorch but 0 on OpenVINO: black frames
        that the per-batch check passes. One small PyTorch call before OpenVINO takes over sees them."""
        ramp = torch.linspace(0.0, 1.0, 64, device=self.device).expand(1, 1, 64, 64)
        with torch.inference_mode(), self._network_threads():
            out = self.model(ramp.contiguous(), ramp.transpose(-1, -2).contiguous())
        if not bool(finite_flag(out)):
            raise self.not_finite_error()

    def _check_torch_precision(self, requested: str) -> None:
        """A precision asked for where PyTorch runs the network must be the one it runs in:
        ``precision`` is OpenVINO's, and on CUDA the network runs in half unless told."""
        runs_in = "f32" if self.dtype == torch.float32 else str(self.dtype).removeprefix("torch.")
        if requested not in ("auto", runs_in):
            raise ConfigError(f"precision {requested} is for the openvino backend (on the CPU, with openvino installed); "
                              f"here the network runs on PyTorch on {self.device.type} in {runs_in}")

    @property
    def precision(self) -> str | None:
        """What OpenVINO's float layers compute in (``f32`` or ``bf16``); None on PyTorch."""
        return self.cpu_network.precision if self.cpu_network is not None else None

    @classmethod
    def from_weights(
        cls, weights: str | os.PathLike | None = None, variant: str | None = None, options: FuserOptions = FuserOptions()
    ) -> "Fuser":
        """Load weights by path or registry name (``auto``/None, ``fast``, ``default``, ``ld-lite``, ``ldfusion``)."""
        chosen = choose_weights(weights, resolve_device(options.device))
        fuser = cls(resolve_model(chosen, variant), options, resolve_weights_path(chosen), chosen_by_auto=is_auto(weights))
        fuser.weights_name = f"weights {str(chosen)!r}"
        return fuser

    def _finite(self, out: Tensor) -> Tensor:
        """Network output, checked per batch: NaN would be written as black frames without a word."""
        if not bool(finite_flag(out)):
            raise self.not_finite_error()
        return out

    def not_finite_error(self) -> CheckpointError:
        """The error for a non-finite output; callers that check later (``check_finite=False``:
        reading the check waits for the GPU) raise it themselves."""
        return CheckpointError(f"the network output is not finite (NaN/inf) with {self.weights_name} on {self.device}; the weights are broken")

    # --- tensor API -------------------------------------------------------------------

    def _prepare(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        x = x.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _network_threads(self) -> contextlib.AbstractContextManager:
        """The torch network on the CPU gets its threads in whichever thread calls (a pipeline's
        fusion thread runs its own small ops on one: ``ldfusion.threads``)."""
        return torch_threads(self.network_threads) if self.network_threads else contextlib.nullcontext()

    @torch.inference_mode()
    def encode(self, vi_y: Tensor, ir: Tensor) -> FusionCodes:
        """Encoder half of ``fuse_y``; video smoothing edits the codes before ``decode``."""
        with self._network_threads():
            return self.model.encode(self._prepare(vi_y), self._prepare(ir))

    @torch.inference_mode()
    def decode(self, codes: FusionCodes, check_finite: bool = True) -> Tensor:
        with self._network_threads():
            out = self.model.decode(codes).float()
        return self._finite(out) if check_finite else out

    @torch.inference_mode()
    def fuse_y(self, vi_y: Tensor, ir: Tensor, check_finite: bool = True) -> Tensor:
        """Fuse (B, 1, H, W) visible Y and infrared in [0, 1]; returns (B, 1, H, W) float32 on the device.

        ``check_finite=False``: the caller checks the output itself (``not_finite_error``);
        the check reads a value back, which on CUDA waits for the network to finish. With the
        check, the inputs are checked as ``fuse_rgb`` checks them (one NaN pixel had changed
        OpenVINO's output by up to 0.37 without a word, and PyTorch's blamed the weights).
        """
        if not check_finite:
            return self.start_fuse_y(vi_y, ir).result()
        _check_tensor_pair(vi_y, ir, "fuse_y", "vi_y", visible_channels=1)
        vi_y, ir = vi_y.to(self.device, non_blocking=True).float(), ir.to(self.device, non_blocking=True).float()
        inputs_in_range = _within_unit_range(vi_y) & _within_unit_range(ir)  # read below, once the network runs
        out = self.start_fuse_y(vi_y, ir).result()
        if not bool(inputs_in_range):
            raise _out_of_range("fuse_y", {"vi_y": vi_y, "ir": ir})
        return self._finite(out)

    @torch.inference_mode()
    def start_fuse_y(self, vi_y: Tensor, ir: Tensor) -> PendingFusion | Finished:
        """``fuse_y`` begun: ``result()`` of the returned object is the unchecked output. On
        OpenVINO the call runs meanwhile (``overlaps_calls``: another may start before it
        ends); elsewhere it is done before this returns (on CUDA: queued on the stream)."""
        if self.cpu_network is not None:
            return self.cpu_network.start(vi_y.float(), ir.float())
        with self._network_threads():
            return Finished(self._network(self._prepare(vi_y), self._prepare(ir)).float())

    @property
    def overlaps_calls(self) -> bool:
        """Whether network calls run beside the caller, several at once (OpenVINO with ``cpu_streams`` > 1)."""
        return self.cpu_network is not None and self.cpu_network.streams > 1

    @contextlib.contextmanager
    def no_new_graphs(self) -> Iterator[None]:
        """Within: an input shape the compiled network has not seen runs eagerly instead of
        recording a CUDA graph (``compile_mode: reduce-overhead``; nothing changes otherwise).
        A pipeline records its graphs in the warm-up and runs inside this."""
        if not isinstance(self._network, CompiledNetwork):
            yield
            return
        with self._network.holding_new_graphs():
            yield

    @property
    def compiled(self) -> bool:
        """Whether ``fuse_y`` runs the compiled network (False after a failed compilation, and
        where OpenVINO runs the network instead)."""
        return isinstance(self._network, CompiledNetwork) and self._network.failure is None and self.cpu_network is None

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled network is replayed as CUDA graphs (``compile_mode``; CUDA only)."""
        return self.compiled and self._network.graphs and self.device.type == "cuda"

    @torch.inference_mode()
    def fuse_rgb(self, visible: Tensor, ir: Tensor) -> Tensor:
        """Fuse (B, 3, H, W) visible RGB with (B, 1, H, W) infrared, float in [0, 1]; returns RGB
        float32 in [0, 1]. Inputs of another layout, an integer type (0..255 taken for [0, 1]
        came out 44 % saturated white), values far outside [0, 1] (``UNIT_RANGE_SLACK``) or NaN
        are refused."""
        _check_tensor_pair(visible, ir, "fuse_rgb", "visible", visible_channels=3)
        visible, ir = visible.to(self.device, non_blocking=True).float(), ir.to(self.device, non_blocking=True).float()
        inputs_in_range = _within_unit_range(visible) & _within_unit_range(ir)  # read below, once the network runs
        fused_y = self.fuse_y(rgb_to_y(visible), ir, check_finite=False)
        if not bool(inputs_in_range):
            raise _out_of_range("fuse_rgb", {"visible": visible, "ir": ir})
        return merge_fused_y(self._finite(fused_y), visible)

    # --- array API ----------------------------------------------------------------------

    def fuse_arrays(self, visible: list[np.ndarray], ir: list[np.ndarray]) -> list[np.ndarray]:
        """Fuse same-sized frames given as arrays.

        ``visible``: (H, W, 3) RGB or (H, W) gray; ``ir``: (H, W). uint8, uint16 or float in [0, 1].
        Returns uint8 arrays, (H, W, 3) for colour visible input and (H, W) for gray.
        """
        return self.start_fuse_arrays(visible, ir).result()

    @torch.inference_mode()
    def start_fuse_arrays(self, visible: list[np.ndarray], ir: list[np.ndarray]) -> PendingArrays:
        """``fuse_arrays`` begun: the network call runs on where it can (``start_fuse_y``), so a
        caller may start the next batch before taking this one's ``result()``."""
        for frames in (visible, ir):
            if isinstance(frames, np.ndarray) or not isinstance(frames, (list, tuple)):
                raise TypeError(f"fuse_arrays takes lists of frames; got {type(frames).__name__} (one frame goes as [frame])")
        if len(visible) != len(ir) or not visible:
            raise ValueError(f"need the same, non-zero number of visible and ir frames; got {len(visible)} and {len(ir)}")
        vi_t = self._frames_on_device(visible)  # (B, C, H, W)
        ir_t = self._frames_on_device(ir)  # (B, 1, H, W)
        if ir_t.shape[1] != 1:
            raise ValueError(f"ir frames must be single-channel; got shape {tuple(ir[0].shape)}")
        if vi_t.shape[-2:] != ir_t.shape[-2:]:
            raise ValueError(f"ir and vi differ in size: {tuple(ir_t.shape[-2:])} vs {tuple(vi_t.shape[-2:])}")
        vi_y = rgb_to_y(vi_t) if vi_t.shape[1] == 3 else vi_t
        return PendingArrays(self, self.start_fuse_y(vi_y, ir_t), vi_t)

    def _frames_on_device(self, frames: list[np.ndarray]) -> Tensor:
        """Same-sized (H, W) or (H, W, C) frames -> (B, C, H, W) float32 in [0, 1] on the device.

        8-bit frames travel as uint8 (a quarter of float32's bytes; on CUDA through reusable
        pinned buffers, without page-locking a fresh float copy every call) and become floats
        on the device. Other depths are converted on the host (``to_chw_float``).
        """
        shapes = {np.shape(frame) for frame in frames}
        if len(shapes) != 1:
            raise ValueError(f"frames of one batch differ in size: {sorted(shapes)}")
        if any(side == 0 for side in next(iter(shapes))[:2]):
            raise ValueError(f"frames must have pixels; got shape {next(iter(shapes))}")
        if not all(frame.dtype == np.uint8 for frame in frames) or frames[0].ndim not in (2, 3):
            return torch.stack([to_chw_float(frame) for frame in frames]).to(self.device)
        if self.device.type == "cuda":
            if self._staging is None:
                self._staging = PinnedStaging(self.device)
            stacked = self._staging.upload(frames)
        else:
            stacked = torch.from_numpy(np.stack(frames))
        x = stacked.float().div_(255.0)  # (B, H, W) or (B, H, W, C)
        return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


class PendingArrays:
    """``Fuser.start_fuse_arrays`` under way; ``result()`` waits and makes the uint8 arrays."""

    def __init__(self, fuser: Fuser, network: PendingFusion | Finished, visible: Tensor) -> None:
        self._fuser, self._network, self._visible = fuser, network, visible  # visible: (B, C, H, W) on the device

    @torch.inference_mode()
    def result(self) -> list[np.ndarray]:
        fused_y = self._fuser._finite(self._network.result())
        out = merge_fused_y(fused_y, self._visible) if self._visible.shape[1] == 3 else fused_y
        out = to_uint8(out).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
        return [frame[:, :, 0] if frame.shape[-1] == 1 else frame for frame in out]


class Finished:
    """A network output already computed, with ``PendingFusion``'s ``result()``."""

    def __init__(self, out: Tensor) -> None:
        self._out = out

    def result(self) -> Tensor:
        return self._out


# CUDA graphs (``reduce-overhead``): PyTorch runs a new shape's first call without a graph,
# records the graph on the second and replays it from the third. All three are made at the
# shape's first call, under the compile lock, so a run records its graphs in the warm-up,
# before its threads start. Recorded on the run's first batches instead, the capture failed
# on an H200 ("CUDA error: operation failed due to a previous error during capture") in file
# and in live mode; recorded at warm-up, both ran to the end. Why the capture failed there
# is not established (the other threads' CUDA work is the suspect), so a shape first seen
# while the pipeline runs is fused eagerly instead (``Fuser.no_new_graphs``).
_GRAPH_RECORDING_CALLS = 2


class CompiledNetwork:
    """``torch.compile`` of a fusion network for fixed input shapes; eager if compiling fails.

    ``dynamic=False``: every input shape gets its own specialised kernels, compiled on its
    first call (logged once, with the time it took). The pipeline pads partial batches to
    the batch size (``ldfusion.fixed_batch.FixedBatch``) so a run compiles one shape per frame
    size. Inductor keeps compiled kernels in its on-disk cache (``TORCHINDUCTOR_CACHE_DIR``,
    default under /tmp), so the next run of the same shape compiles in a fraction of the time.
    If compiling fails (no C compiler, no Triton, an operator it cannot trace) one warning
    names the reason and the eager network serves every call from then on. Only ``fuse_y``
    is compiled; the encode/decode halves used for temporal smoothing stay eager.
    """

    def __init__(self, model: torch.nn.Module, backend: str = "inductor", mode: str = "default") -> None:
        self.model = model
        self.failure: str | None = None
        self.graphs = mode == "reduce-overhead"
        # Pipelines running now (``Fuser.no_new_graphs``): while any runs, a shape first seen
        # runs eagerly rather than record a CUDA graph beside the pipeline's threads.
        self.graph_holds = 0
        self._compiled_shapes: set[tuple] = set()
        self._eager_shapes: set[tuple] = set()  # first seen while new graphs were held
        self._lock = threading.Lock()  # one thread compiles a new shape; the others wait for it
        try:
            self._compiled = torch.compile(model, dynamic=False, backend=backend, mode=None if mode == "default" else mode)
        except Exception as exc:  # an unknown backend fails here, before any call
            self._give_up(exc)

    def _run_compiled(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        if not self.graphs:
            return self._compiled(vi_y, ir)
        # A CUDA graph writes every replay's output into the same memory: each call is a new
        # step, and the caller gets its own copy (the pipeline keeps outputs across calls).
        torch.compiler.cudagraph_mark_step_begin()
        return self._compiled(vi_y, ir).clone()

    def __call__(self, vi_y: Tensor, ir: Tensor) -> Tensor:
        key = (tuple(vi_y.shape), tuple(ir.shape), vi_y.dtype, vi_y.device)
        if self.failure is None and key in self._compiled_shapes:
            return self._run_compiled(vi_y, ir)
        with self._lock:
            if self.failure is not None:
                return self.model(vi_y, ir)
            if key in self._compiled_shapes:
                return self._run_compiled(vi_y, ir)
            if self.graphs and self.graph_holds:
                return self._run_eagerly(key, vi_y, ir)
            start = time.perf_counter()
            try:
                out = self._run_compiled(vi_y, ir)
                for _ in range(_GRAPH_RECORDING_CALLS if self.graphs else 0):
                    out = self._run_compiled(vi_y, ir)
                if out.is_cuda:
                    torch.cuda.synchronize(out.device)
            except Exception as exc:  # torch.compile raises many types (BackendCompilerFailed, Unsupported, ...)
                self._give_up(exc)
                return self.model(vi_y, ir)
            self._compiled_shapes.add(key)
            dtype = str(vi_y.dtype).removeprefix("torch.")
            elapsed = time.perf_counter() - start
            log.info("compile: %s for input %s %s compiled in %.1f s", self.model.spec.name, tuple(vi_y.shape), dtype, elapsed)
            return out

    @contextlib.contextmanager
    def holding_new_graphs(self) -> Iterator[None]:
        """Within (a pipeline running): a shape first seen runs eagerly (``graph_holds``)."""
        with self._lock:
            self.graph_holds += 1
        try:
            yield
        finally:
            with self._lock:
                self.graph_holds -= 1

    def _run_eagerly(self, key: tuple, vi_y: Tensor, ir: Tensor) -> Tensor:
        if key not in self._eager_shapes:
            self._eager_shapes.add(key)
            log.warning("compile: input %s was first seen after the warm-up; CUDA graphs are recorded only before "
                        "capture starts, so it runs eagerly (a size the run knows at start is fused with its graph)",
                        tuple(vi_y.shape))
        return self.model(vi_y, ir)

    def _give_up(self, exc: BaseException) -> None:
        self.failure = _root_cause(exc)
        log.warning("compile: torch.compile of %s failed (%s); running it eagerly", self.model.spec.name, self.failure)


def _root_cause(exc: BaseException) -> str:
    """The innermost error's type and first line: torch.compile wraps the real cause
    ("no C compiler") in BackendCompilerFailed, whose own first line names only the backend."""
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None and inner is not exc:
        exc = inner
    return f"{type(exc).__name__}: {first_line(exc)}"


def to_chw_float(image: np.ndarray) -> Tensor:
    """(H, W) or (H, W, C) uint8/uint16/float array -> (C, H, W) float32 tensor in [0, 1]."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        tensor = torch.from_numpy(array).float().div_(255.0)
    elif array.dtype == np.uint16:
        tensor = torch.from_numpy(array.astype(np.float32)).div_(65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        _check_unit_floats(array)
        tensor = torch.from_numpy(array.astype(np.float32, copy=False))
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}")
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim == 3:
        return tensor.permute(2, 0, 1)
    raise ValueError(f"expected an (H, W) or (H, W, C) image; got shape {array.shape}")


def _check_unit_floats(array: np.ndarray) -> None:
    """Float frames stand for [0, 1]: one of 0..255 in float32 came out 107 grey levels off, NaN black."""
    low, high = UNIT_RANGE_SLACK
    if not array.size or (np.isfinite(array).all() and array.min() >= low and array.max() <= high):
        return
    raise ValueError(f"float frames must be finite and in [0, 1] (a little beyond, {low}..{high}, is taken); "
                     f"got {_value_span(array)}{UNIT_RANGE_HINT}")


def to_y_batch(visible: np.ndarray) -> Tensor:
    """One visible image, (H, W, 3) RGB or (H, W) gray, -> its Y as a (1, 1, H, W) batch in [0, 1]."""
    chw = to_chw_float(visible)  # (C, H, W)
    return (rgb_to_y(chw) if chw.shape[0] == 3 else chw)[None]


def _check_tensor_pair(visible: Tensor, ir: Tensor, caller: str, visible_name: str, visible_channels: int) -> None:
    """(B, C, H, W) and (B, 1, H, W) float tensors of one batch and size, B, H, W > 0."""
    for name, tensor, channels in ((visible_name, visible, visible_channels), ("ir", ir, 1)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{caller}: {name} must be a torch.Tensor; got {type(tensor).__name__} (fuse_arrays takes arrays)")
        if not tensor.is_floating_point():
            raise TypeError(f"{caller}: {name} is {tensor.dtype}; it takes float tensors in [0, 1] (divide 0..255 frames by 255)")
        if tensor.ndim != 4 or tensor.shape[1] != channels or 0 in tensor.shape:
            raise ValueError(f"{caller}: {name} must be (B, {channels}, H, W) with B, H, W > 0; got {tuple(tensor.shape)}")
    if visible.shape[0] != ir.shape[0] or visible.shape[-2:] != ir.shape[-2:]:
        raise ValueError(f"{caller}: {visible_name} {tuple(visible.shape)} and ir {tuple(ir.shape)} differ in batch or size")


def _out_of_range(caller: str, inputs: dict[str, Tensor]) -> ValueError:
    spans = ", ".join(f"{_value_span(tensor)} ({name})" for name, tensor in inputs.items())
    return ValueError(f"{caller}: the inputs must be finite floats in [0, 1] (a little beyond, {UNIT_RANGE_SLACK[0]}.."
                      f"{UNIT_RANGE_SLACK[1]}, is taken); got {spans}{UNIT_RANGE_HINT}")


# Inputs stand for [0, 1]. Resampling overshoots a little (bicubic: -0.16 to 1.16), which the
# network takes as it always did; values far outside are another scale (0..255) or broken.
UNIT_RANGE_SLACK = (-0.5, 1.5)
UNIT_RANGE_HINT = " (0..255 frames are divided by 255 first, or given as uint8 arrays)"


def _within_unit_range(x: Tensor) -> Tensor:
    """A 0-d bool tensor on ``x``'s device (not read here: reading waits for the device)."""
    low, high = torch.aminmax(x)
    return (low >= UNIT_RANGE_SLACK[0]) & (high <= UNIT_RANGE_SLACK[1])  # NaN compares false: refused too


def _value_span(x: Tensor | np.ndarray) -> str:
    """'values from a to b' over the finite values, and whether NaN or inf are among them."""
    x = torch.as_tensor(x)
    finite = x[torch.isfinite(x)]
    span = f"values from {finite.min().item():g} to {finite.max().item():g}" if finite.numel() else "no finite value"
    return span + ("" if finite.numel() == x.numel() else " and NaN or inf")


def finite_flag(out: Tensor) -> Tensor:
    """A 0-d bool tensor on ``out``'s device: whether every value of a network output is finite.

    One NaN or inf makes the sum non-finite; the sum costs a seventh of isfinite(out).all()
    (0.5 vs 3.9 ms at 640x512 on the CPU), which allocates a mask of every pixel. Outputs are
    float32 in [0, 1] where finite, so the sum itself cannot overflow. Reading the flag waits
    for the device; the pipeline copies it back without waiting and reads it later.
    """
    return torch.isfinite(out.sum())


def to_uint8(x: Tensor) -> Tensor:
    """[0, 1] float -> uint8, rounding to nearest."""
    return x.clamp(0, 1).mul(255.0).round_().to(torch.uint8)
