"""The fusion stage: batch synchronised pairs from every stream and run the network.

A batch closes when it holds ``batch_size`` pairs or ``max_wait_s`` has passed since its
first pair, whichever comes first, so a busy pipeline gets full batches and a quiet one
never holds a frame longer than ``max_wait_s``. Pairs of different streams share a batch
when their registered frames have the same size.

Frames arrive as planes in the cameras' own layouts and are uploaded as uint8 (a quarter
of float32's bytes; infrared as its luma alone). On the device they become full-range
Y, Cr, Cb (``ldfusion.color``), are registered (``Registrar.apply``), the network fuses
the visible Y with the infrared, and the fused Y is joined with the visible chroma. Then
exactly the views the sinks asked for are rendered, batched, on the device, and each is
downloaded once (``pipeline.views``). On CUDA the network runs in half precision,
``channels_last`` (``Fuser`` options), frames are uploaded through reusable pinned
buffers (``ldfusion.staging``: no page-locking per batch, copies that do not block the host),
and partial batches are padded to ``batch_size`` (``pad_batches``: ``ldfusion.fixed_batch``,
which counts the padded rows), so the network always sees one input shape and cuDNN (and a
compiled network) tunes it once. Batches take one pair from each stream in turn
(``pipeline.batching.FairCollector``), so a fast stream never starves a slow one.

Overlap (CUDA). A batch is *submitted* (uploads, registration, network, views and their
downloads queued on the GPU, the output's finiteness flag copied back without waiting) and
*finished* (wait for its copies, check the flag, make the fused frames) only after the next
batch has been submitted, so the host's work on batch n+1 runs while the GPU computes batch
n. When no full batch is waiting, the batch in flight is finished first: a live stream
never waits on its successor. Nothing reads a GPU value between the two steps. On the CPU
the same happens when OpenVINO runs two calls at once (``Fuser.overlaps_calls``, file mode):
submitting starts the network's call, and the fused Y's merge with the chroma and the views
are made when the batch is finished.

Temporal smoothing. The ``ldfusion`` network computes one global style code per frame;
small changes in it from frame to frame show up as flicker of the whole image's contrast.
With ``smoothing`` on, the style code each frame is decoded with is an exponential moving
average over the stream's past frames (``Fuser.encode`` -> average -> ``Fuser.decode``).
``ld-lite`` has no style code: its output depends only on the current pair, locally, and
smoothing is a no-op for it (nothing is rescaled per frame either way).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from ldfusion.backends import PendingFusion
from ldfusion.color import YCrCbBatch, planes_to_inputs
from ldfusion.fixed_batch import FixedBatch, pad_rows
from ldfusion.inference import Finished, Fuser, finite_flag
from ldfusion.staging import PinnedStaging
from ldfusion.threads import torch_threads
from pipeline.batching import FairCollector
from pipeline.frames import EndOfStream, FramePair, FusedFrame
from pipeline.queues import FrameQueue
from pipeline.registration import Registrar
from pipeline.views import RenderedViews, start_render

log = logging.getLogger(__name__)


class FusedOutput(Protocol):
    """Where the worker puts fused frames: a ``FrameQueue``, or the runner's hand-off to the sinks."""

    def put(self, frame: FusedFrame) -> bool: ...  # False: the run was aborted
    def put_end(self, end: EndOfStream) -> None: ...


class StyleSmoother:
    """Exponential moving average over time of each stream's style code."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self._average: dict[str, Tensor] = {}

    def __call__(self, style: Tensor, streams: list[str]) -> Tensor:
        """``style`` (B, S, 1, 1), row i from stream ``streams[i]``, rows of a stream in time order."""
        smoothed = torch.empty_like(style)
        for row, stream in enumerate(streams):
            current = style[row].float()
            previous = self._average.get(stream)
            average = current if previous is None else self.momentum * previous + (1.0 - self.momentum) * current
            self._average[stream] = average
            smoothed[row] = average.to(style.dtype)
        return smoothed

    def reset(self, stream: str) -> None:
        self._average.pop(stream, None)


class FusionWorker:
    def __init__(
        self,
        fuser: Fuser,
        registrars: dict[str, Registrar],
        batch_size: int = 4,
        max_wait_s: float = 0.01,
        smoothing: bool = True,
        momentum: float = 0.8,
        on_batch: Callable[[int], None] | None = None,
        views: frozenset[str] = frozenset(),
        pad_batches: bool | None = None,
        overlap: bool | None = None,
    ) -> None:
        self.fuser = fuser
        self.views = frozenset(views)  # what the sinks need rendered (pipeline.views)
        on_cuda = fuser.device.type == "cuda"
        self._upload = PinnedStaging(fuser.device).upload if on_cuda else None
        self._on_batch = on_batch
        self.registrars = registrars
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        pad = on_cuda if pad_batches is None else pad_batches  # one input shape (on the CPU padding only costs)
        # Finish a batch only after submitting the next (``_fuse_until_ended``): on CUDA the work
        # is queued, so the host prepares the next batch meanwhile; OpenVINO with two streams
        # runs two network calls at once (``Fuser.overlaps_calls``). Elsewhere on the CPU
        # submitting *is* the work, and waiting for the next batch would only add its time
        # to the latency.
        self.overlap = (on_cuda or fuser.overlaps_calls) if overlap is None else overlap
        self._render_at_submit = on_cuda  # queue the views' kernels now; on the CPU they wait for the network's output
        self.fixed_batch = FixedBatch(batch_size) if pad else None  # its padded_rows are the wasted work
        self.smoother = StyleSmoother(momentum) if smoothing and momentum > 0 and fuser.spec.has_style else None
        if smoothing and not fuser.spec.has_style:
            log.info("temporal smoothing: %s has no style code, so there is nothing to smooth (no-op)", fuser.spec.name)
        self.collector: FairCollector | None = None  # built by ``run``: per-stream ``taken`` counts
        self.batches = 0
        self.frames = 0

    @torch.inference_mode()
    def warm_up(self, size: tuple[int, int]) -> None:
        """One batch of black frames of ``size`` (width, height) through the network, in the
        shape the stage will use, so compiling and cuDNN's autotuning happen now, not on the
        first frames (in live mode they would drop every frame while it runs: 13 s on an H200)."""
        width, height = size
        rows = self.batch_size if self.fixed_batch is not None else 1
        black = torch.zeros((rows, 1, height, width), device=self.fuser.device)
        if self.smoother is None:
            self.fuser.fuse_y(black, black)
        else:
            self.fuser.decode(self.fuser.encode(black, black))

    def run(self, pairs: dict[str, FrameQueue], out: FusedOutput) -> None:
        """Fuse until every stream has ended, then put one end sentinel on ``out`` (a queue,
        or the runner's hand-off to the sinks).

        ``pairs``: one queue per stream (sharing one condition); batches take from them in
        turn (``pipeline.batching.FairCollector``), so a fast stream cannot starve a slow one.
        """
        self.collector = FairCollector(pairs, self.batch_size, self.max_wait_s)
        # On the CPU this thread's own tensor ops run on one thread, the network on its own
        # count (``ldfusion.threads``): the cores are the decoders' as much as the network's.
        own_ops = torch_threads(1) if self.fuser.device.type == "cpu" else contextlib.nullcontext()
        try:
            with own_ops:
                self._fuse_until_ended(out)
        finally:
            out.put_end(EndOfStream("*"))

    def _fuse_until_ended(self, out: FusedOutput) -> None:
        """Collect, submit, finish. On CUDA a batch is finished (its downloads waited for, its
        frames handed on) only after the next one is submitted, so the host prepares batch
        n+1 while the GPU computes batch n; when no full batch is waiting, the one in flight
        is finished first, so a quiet live stream gains no latency."""
        assert self.collector is not None
        in_flight: _InFlight | None = None
        while not self.collector.batcher.finished:
            if in_flight is not None and not self.collector.ready():  # collect would wait: hand on what is done
                done, in_flight = in_flight, None
                if not _hand_on(done.finish(), out):
                    return
            batch, ended = self.collector.collect()
            if batch:
                submitted = self.submit(batch)
                earlier, in_flight = (in_flight, submitted) if self.overlap else (submitted, None)
                if earlier is not None and not _hand_on(earlier.finish(), out):
                    return
            for stream in ended:
                if self.smoother:
                    self.smoother.reset(stream)
        if in_flight is not None:
            _hand_on(in_flight.finish(), out)

    def fuse(self, pairs: list[FramePair]) -> list[FusedFrame]:
        """Fuse pairs (any streams, any sizes) in as few network calls as their sizes allow."""
        return self.submit(pairs).finish()

    def submit(self, pairs: list[FramePair]) -> "_InFlight":
        """Queue a batch's work on the device (upload, registration, network, views, downloads);
        ``finish`` waits for it and makes the fused frames."""
        by_size: dict[tuple, list[int]] = defaultdict(list)
        for i, pair in enumerate(pairs):
            by_size[self._output_size(pair)].append(i)
        parts = [self._submit_same_size(pairs, indices) for indices in by_size.values()]
        done = None
        if self.fuser.device.type == "cuda":
            done = torch.cuda.Event()
            done.record()  # after every download and the finiteness flags
        return _InFlight(self, pairs, parts, done)

    def _finished(self, count: int) -> None:
        self.batches += 1
        self.frames += count
        if self._on_batch is not None:
            self._on_batch(count)

    def _output_size(self, pair: FramePair) -> tuple[int, int]:
        return self.registrars[pair.meta.stream].check(pair.ir.size, pair.visible.size).output_size

    @torch.inference_mode()
    def _submit_same_size(self, pairs: list[FramePair], indices: list[int]) -> "_Part":
        ir_parts, vi_parts, order = [], [], []
        device = self.fuser.device
        for stream, group in _group_by_layout([pairs[i] for i in indices]).items():
            rows = [indices[k] for k in group]
            # (b, 1, h, w) and Y (b, 1, H, W), Cr, Cb (4:2:0 stays half size)
            ir, vi = planes_to_inputs([pairs[i].ir for i in rows], [pairs[i].visible for i in rows], device, self._upload)
            ir, vi = self.registrars[stream[0]].apply(ir, vi)
            ir_parts.append(ir)
            vi_parts.append(vi)
            order += rows
        ir = ir_parts[0] if len(ir_parts) == 1 else torch.cat(ir_parts)  # (B, 1, H, W), rows in `order`; one group: no copy
        vi = YCrCbBatch.cat(vi_parts)  # Y (B, 1, H, W)
        streams = [pairs[i].meta.stream for i in order]
        part = _Part(order, self._start_fuse_y(vi.y, ir, streams), vi, ir, self.views)
        if self._render_at_submit:
            part.render()
        return part

    def _start_fuse_y(self, vi_y: Tensor, ir: Tensor, streams: list[str]) -> PendingFusion | Finished:
        """(B, 1, H, W) fused Y, begun; padded rows go through the network but not into the smoother.
        Only a plain call runs on while the worker goes on (``Fuser.start_fuse_y``)."""
        if self.smoother is not None:
            return Finished(self._smoothed_fuse_y(self.smoother, vi_y, ir, streams))
        if self.fixed_batch is not None:
            fuse_y = functools.partial(self.fuser.fuse_y, check_finite=False)
            return Finished(self.fixed_batch(fuse_y, vi_y, ir))  # counts the padded rows
        return self.fuser.start_fuse_y(vi_y, ir)

    def _smoothed_fuse_y(self, smoother: StyleSmoother, vi_y: Tensor, ir: Tensor, streams: list[str]) -> Tensor:
        """Encode, replace each row's style code by its stream's moving average, decode."""
        rows = vi_y.shape[0]
        if self.fixed_batch is not None and rows < self.batch_size:
            vi_y, ir = pad_rows(vi_y, self.batch_size), pad_rows(ir, self.batch_size)
        codes = self.fuser.encode(vi_y, ir)
        style = codes.style.clone()
        style[:rows] = smoother(codes.style[:rows], streams)
        return self.fuser.decode(replace(codes, style=style), check_finite=False)[:rows]


class _Part:
    """The rows of one output size in a submitted batch: the network's call, and once it is
    ``render``ed, the views (their downloads queued) and the output's finiteness flag."""

    def __init__(self, order: list[int], network: PendingFusion | Finished, vi: YCrCbBatch, ir: Tensor, views: frozenset[str]) -> None:
        self.order = order  # row r of the rendered views is pair order[r] of the batch
        self._network, self._vi, self._ir, self._view_names = network, vi, ir, views
        self.views: RenderedViews | None = None
        self.finite: Tensor | None = None  # host bool, written by a queued copy: whether the network's output was finite

    def render(self) -> None:
        """The fused Y (waiting for the call where it still runs) with the visible chroma, and the views."""
        if self.views is not None:
            return
        fused_y = self._network.result()  # (B, 1, H, W) float32, not yet checked
        # Checked in ``finish``, not here: reading the flag now would wait for the GPU.
        self.finite = finite_flag(fused_y).to("cpu", non_blocking=True)
        fused = self._vi.with_luma(fused_y.clamp_(0.0, 1.0))  # the fused Y with the visible chroma
        self.views = start_render(self._view_names, fused, self._ir, self._vi)


@dataclass
class _InFlight:
    """A submitted batch: its device work and downloads queued, maybe not yet done."""

    worker: FusionWorker
    pairs: list[FramePair]
    parts: list[_Part]
    done: torch.cuda.Event | None  # recorded after the batch's last copy (CUDA)

    def finish(self) -> list[FusedFrame]:
        """Wait for the batch, check the network's output, and make its fused frames."""
        if self.done is not None:
            self.done.synchronize()
        with torch.inference_mode():
            for part in self.parts:
                part.render()
        if not all(bool(part.finite) for part in self.parts):
            raise self.worker.fuser.not_finite_error()
        frames: list[FusedFrame | None] = [None] * len(self.pairs)
        for part in self.parts:
            assert part.views is not None  # rendered above
            views = part.views.rows()
            for row, i in enumerate(part.order):
                frames[i] = FusedFrame(self.pairs[i].meta, {name: items[row] for name, items in views.items()})
        self.worker._finished(len(self.pairs))
        return frames  # type: ignore[return-value]


def _hand_on(frames: list[FusedFrame], out: FusedOutput) -> bool:
    """Put each frame on ``out``; False when the run was aborted."""
    return all(out.put(frame) for frame in frames)


def _group_by_layout(pairs: list[FramePair]) -> dict[tuple, list[int]]:
    """Rows that upload together: same stream, same layouts (a camera may change its own)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, pair in enumerate(pairs):
        key = (pair.meta.stream, pair.ir.layout, pair.ir.full_range, pair.visible.layout, pair.visible.full_range)
        groups[key].append(i)
    return groups
