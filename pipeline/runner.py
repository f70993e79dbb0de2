"""Wires the stages together and runs them: ``run_pipeline(config) -> RunSummary``.

Threads and the bounded queues between them::

    reader ir ─┐                        (other streams' paired queues)  ┌─> queue ─> sink 1
               ├─> pairing ─> paired ─┬─> fusion (and fan-out) ───────┼─> queue ─> sink 2
    reader vi ─┘  one per stream pair, │   one thread, round-robin     └─> ...  a thread each
                  a queue each ────────┘   batches, each fused frame onto every sink's queue

Frames travel as planes in their cameras' layouts up to the fusion worker, which
converts, registers and fuses them on its device and renders what the sinks asked for.

Stopping. The first SIGINT/SIGTERM (or ``Pipeline.stop``, ``run.duration_s``,
``run.max_frames``) stops the readers; every frame already read is still paired, fused and
written, then the sinks close, so the MP4 holds everything fused so far. A second signal,
or an error in any stage, aborts: the queues are cancelled, the stages return at once, and
the sinks still close properly. The first error is raised again from ``run``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from calibration.fileformat import Registration, load_registration
from ldfusion.cli.common import EXIT_TERMINATED
from ldfusion.config import to_dict, write_yaml
from ldfusion.errors import DataError
from ldfusion.inference import Fuser, FuserOptions, default_batch_size
from ldfusion.paths import write_text_whole
from ldfusion.redact import mask_credentials
from ldfusion.signals import Terminated, sigterm_as_interrupt, signals_handled
from ldfusion.threads import decoder_threads
from ldfusion.video import BT601_SPACE, ColourTags
from pipeline.config import PipelineConfig, StreamConfig, as_pipeline_config, check_outputs
from pipeline.frames import IR, VISIBLE, DeviceFrame, EndOfStream, FramePair, FusedFrame, StreamInfo
from pipeline.fusion_worker import FusionWorker
from pipeline.queues import Cancelled, FrameQueue
from pipeline.registration import FrameSizeError, Registrar
from pipeline.sinks import CallbackSink, Sink, SinkFanout, build_sinks
from pipeline.views import DEVICE, check_view
from pipeline.sources import OpenCapture, Replay, Source, open_source, run_capture
from pipeline.stats import PipelineStats
from pipeline.sync import NearestPairer, run_pairing

log = logging.getLogger(__name__)

_READER_PREFIX = "read-"  # the reader threads' names
_ABORT_GRACE_S = 1.0  # after an abort, how long a reader may take to finish before it is left behind
_JOIN_TIMEOUT_S = 10.0  # a live camera stuck inside read() is left behind (daemon thread) after this
_MAIN_LOOP_WAKE_S = 0.25  # how soon the main thread reacts to signals and run.duration_s
_STALL_AFTER_S = 3.0  # a camera silent this long is reported in the periodic log


@dataclass(frozen=True)
class StreamSummary:
    stream: str
    frames_out: int
    read_ir: int
    read_vi: int
    paired: int  # output frames the pairing made (frames_out + those dropped after it in live mode)
    unpaired_ir: int  # IR frames that made no output frame (no visible frame within the slop, or unused)
    unpaired_vi: int
    dropped: int  # frames live-mode queues discarded to stay current (camera, paired and sink queues)
    outages_ir: int = 0  # live: times the IR camera stopped delivering
    outages_vi: int = 0
    reconnects_ir: int = 0  # live: times it was reopened and delivered again
    reconnects_vi: int = 0
    stale_ir: int = 0  # live: frames a network camera had buffered while (re)connecting, skipped
    stale_vi: int = 0


@dataclass(frozen=True)
class RunSummary:
    frames_out: int  # fused frames written to the sinks, all streams
    wall_s: float
    fps: float  # frames_out / wall_s
    latency_ms_p50: float  # capture -> all sinks done
    latency_ms_p99: float
    dropped: int
    unpaired: int  # IR + visible frames that made no output frame
    outputs: tuple[str, ...]  # files and folders written, endpoints bound
    streams: tuple[StreamSummary, ...]
    stopped_by: str | None  # None: the inputs ended; else SIGINT, SIGTERM, duration, max_frames, stop()
    model: str  # variant name
    device: str
    report: str  # the end-of-run table

    def to_dict(self) -> dict:
        return asdict(self)


class _Stream:
    """One stream pair's parts while it runs."""

    def __init__(self, config: StreamConfig, ir: Source, visible: Source, registrar: Registrar, pairer: NearestPairer, queues: tuple[FrameQueue, FrameQueue]):
        self.config = config
        self.id = config.id
        self.ir, self.visible = ir, visible
        self.registrar = registrar
        self.pairer = pairer
        self.ir_queue, self.vi_queue = queues
        self.stop = threading.Event()

    @property
    def leader(self) -> Source:
        return self.ir if self.pairer.leader == IR else self.visible

    @property
    def has_camera(self) -> bool:
        return self.ir.live or self.visible.live

    def pairs_released_at_once(self) -> int:
        """Leader frames that one follower frame can decide at once: the leader's frames in a
        follower frame period (1 when the follower is as fast or faster)."""
        follower = self.visible if self.pairer.leader == IR else self.ir
        return max(1, math.ceil(self.leader.rate / follower.rate))

    def info(self) -> StreamInfo:
        leader = self.leader
        # Cameras and images are converted from RGB by BT.601: an MP4 of them says so.
        colour = self.visible.colour or ColourTags(BT601_SPACE)
        return StreamInfo(self.id, leader.rate, leader.time_base, leader.expected_frames, leader.live, colour)


def _cameras_at_other_rates(ir: Source, visible: Source) -> bool:
    """Two real cameras (not recordings given as cameras) whose frame rates differ."""
    cameras = all(source.live and not source.recording for source in (ir, visible))
    return cameras and abs(float(ir.rate) - float(visible.rate)) > 0.01 * float(visible.rate)


_OUTPUTS_IN_USE: set[Path] = set()  # what the runs under way in this process write
_OUTPUTS_LOCK = threading.Lock()


@contextlib.contextmanager
def _outputs_held(config: PipelineConfig) -> Iterator[None]:
    """The run's outputs, held for as long as it runs. A ``fused_frames`` generator left after
    a ``break`` (kept in a notebook's variable) keeps its run going; a second run into the same
    out_dir was allowed, and the first, closed later, replaced its MP4 and summary.json."""
    paths = [path.resolve() for _, path in config.output_paths()]  # the sinks' first, then the run's artefacts
    with _OUTPUTS_LOCK:
        taken = [path for path in paths if path in _OUTPUTS_IN_USE]
        if taken:
            raise DataError(f"{taken[0]} is still written by another run in this process (a fused_frames loop left "
                            "while its generator lives on? call the generator's close()); or choose another out_dir")
        _OUTPUTS_IN_USE.update(paths)
    try:
        yield
    finally:
        with _OUTPUTS_LOCK:
            _OUTPUTS_IN_USE.difference_update(paths)


def _checked_sinks(sinks: Sequence[Sink]) -> list[Sink]:
    """``extra_sinks`` as given, each a ``Sink`` asking for views that exist."""
    for sink in sinks:
        if not isinstance(sink, Sink):
            hint = " (CallbackSink(function) hands each frame to a function)" if callable(sink) else ""
            raise TypeError(f"extra_sinks takes Sink objects{hint}; got {type(sink).__name__}")
        for view in sink.views:
            check_view(view)
    return list(sinks)


def _replay(stream: _Stream, source: Source, play_from: float | None, origin: float) -> Replay | None:
    """How ``source`` plays where recordings are paced (live mode, ``run.realtime``): from
    ``play_from``, an IR recording its sync offset late, on the run's clock beside a camera."""
    if play_from is None:
        return None
    if stream.has_camera:
        return Replay(play_from, stream.pairer.offset_s if source is stream.ir else 0.0, shift=play_from - origin)
    lead = _ir_lead(stream)
    return Replay(play_from, stream.pairer.offset_s + lead if source is stream.ir else lead)


def _ir_lead(stream: _Stream) -> float:
    """How long an IR recording that starts before the visible one (a negative offset) plays
    before it. Played from the start instead, its frames before the visible one's first came
    at once, and the camera queue counted them as dropped (29 of a 30 fps second)."""
    return max(0.0, -stream.pairer.offset_s)


def cpu_streams(live: bool) -> int:
    """OpenVINO calls the fusion stage keeps in flight (``FuserOptions.cpu_streams``). File mode:
    two, one thread each, which also lets the stage's own work run while they compute
    (``ldfusion demo`` on the 2-core EPYC: 21.7 -> 24.7 fps median; README). Live mode: one, each
    frame's shortest latency (``scripts/live_latency.py --cpu-streams 2``, two RTSP cameras at
    30 fps: 16-17 fps out at 145 ms capture to sink, against 18-19 fps at 92 ms)."""
    return 1 if live else 2


class Pipeline:
    """A configured run. ``run()`` blocks until the inputs end or the run is stopped."""

    def __init__(
        self,
        config: PipelineConfig,
        fuser: Fuser | None = None,
        *,
        extra_sinks: Sequence[Sink] = (),
        open_capture: OpenCapture | None = None,
        config_file: str | os.PathLike | None = None,
    ) -> None:
        check_outputs(config, config_file)  # before anything is opened for writing, by the command and the API alike
        self.config = config
        self._fuser = fuser
        self._extra_sinks = _checked_sinks(extra_sinks)
        self._open_capture = open_capture
        self.stats = PipelineStats()
        self._streams: list[_Stream] = []
        self._queues: list[FrameQueue] = []
        self._errors: list[BaseException] = []
        self._error_lock = threading.Lock()
        self._stopped_by: str | None = None
        self._aborted_at: float | None = None  # time.monotonic() of the abort; None: not aborted
        self._signals_handled_count = 0  # of self._signals, acted on by _handle_signals
        self._sink_queues: list[FrameQueue] = []  # of self._queues, the ones the sinks drain
        self._done = threading.Event()
        self._batch = config.model.batch_size or 1  # resolved against the device in run()
        self._signals: list[str] = []  # appended by the signal handler, read by _supervise
        self._at_max_frames: set[str] = set()  # streams that ended by reaching run.max_frames

    # --- control ------------------------------------------------------------------------

    def stop(self, reason: str = "stop()") -> None:
        """Stop reading; what was read is still fused and written."""
        if self._stopped_by is None:
            self._stopped_by = reason
        for stream in self._streams:
            stream.stop.set()

    def stop_fusing(self, reason: str) -> None:
        """Stop reading and fusing now; the frames fused so far are still written (the sinks
        drain their queues and close their files). Between ``stop`` (which fuses everything
        already read first) and ``abort`` (which drops what the sinks' queues hold)."""
        self.stop(reason)
        for q in self._queues:
            if q not in self._sink_queues:
                q.cancel()

    def abort(self) -> None:
        """Stop at once; sinks still close what they wrote."""
        self._aborted_at = self._aborted_at or time.monotonic()
        self.stop("abort")
        for q in self._queues:
            q.cancel()

    def _fail(self, error: BaseException) -> None:
        with self._error_lock:
            self._errors.append(error)
        self.abort()

    # --- running -------------------------------------------------------------------------

    def run(self) -> RunSummary:
        # Signals are only recorded from the start: a KeyboardInterrupt raised inside OpenVINO's
        # compile or FFmpeg's encoder setup during start-up was lost (the run went on to exit
        # 0) or crashed the process. Start-up ends at its next step instead (_end_if_signalled).
        with self._signals_handled(), _outputs_held(self.config):
            return self._run()

    def _end_if_signalled(self) -> None:
        """Between start-up steps: a Ctrl-C so far ends the run before any thread starts, nothing
        fused (exit 130, as the default handler gave); SIGTERM exits 143 with a line saying so."""
        if not self._signals:
            return
        if self._signals[0] == "SIGINT":
            raise KeyboardInterrupt
        log.warning("%s during start-up: stopping before any frame is read", self._signals[0])
        raise SystemExit(EXIT_TERMINATED)

    def _run(self) -> RunSummary:
        config = self.config
        fuser = self._fuser or self._load_fuser()
        self._end_if_signalled()
        live = config.live
        origin = time.monotonic()
        with contextlib.ExitStack() as cleanup:
            self._open_streams(fuser, live, origin, cleanup)
            infos = {stream.id: stream.info() for stream in self._streams}
            sinks = build_sinks(config, infos) + self._extra_sinks
            for sink in sinks:
                cleanup.enter_context(sink)
            self._write_resolved_config()
            self._batch = config.model.batch_size or default_batch_size(fuser.device)
            worker = FusionWorker(
                fuser, {s.id: s.registrar for s in self._streams}, self._batch,
                config.model.max_wait_ms / 1000.0, config.model.smoothing, config.model.smoothing_momentum,
                on_batch=self.stats.batch_fused, views=frozenset(view for sink in sinks for view in sink.views),
            )
            log.info("running %d stream(s) in %s mode: %s on %s, batch %d", len(self._streams), "live" if live else "file",
                     fuser.spec.name, fuser.device, self._batch)
            sizes = self._known_output_sizes()
            # CUDA compiles and autotunes per shape (seconds), OpenVINO compiles per shape
            # (0.1-0.2 s at 640x480), and so does torch.compile on the CPU; eager PyTorch on
            # the CPU has nothing to prepare.
            if fuser.device.type == "cuda" or fuser.backend == "openvino" or fuser.compiled:
                self._warm_up(worker, set(sizes.values()))
            for sink in sinks:
                sink.prepare(sizes)
            self.stats.start()
            # CUDA graphs are recorded in the warm-up only (``ldfusion.inference``).
            cleanup.enter_context(fuser.no_new_graphs())
            self._end_if_signalled()
            threads = self._start_threads(worker, sinks, live, origin, infos)
            try:
                self._supervise()
            finally:
                if not self._done.is_set():  # the main thread itself failed: take the stages down
                    self.abort()
                self._join(threads)
            self.stats.finish()
            outputs = tuple(path for sink in sinks for path in sink.outputs)
        # Sinks are closed here: their files are complete.
        if self._errors:
            raise self._errors[0]
        summary = self._summary(fuser, outputs)
        self._write_summary(summary)
        self._refuse_streams_that_paired_nothing(summary)
        self._report_live_streams_that_wrote_nothing(summary)
        return summary

    def _report_live_streams_that_wrote_nothing(self, summary: RunSummary) -> None:
        """A live run that ended by itself or by run.duration_s and fused nothing for a stream
        says so, with what its cameras delivered; when no stream fused anything the run failed
        (exit 2). A live run used to exit 0 with no output and no word: a camera whose every
        frame was skipped as buffered, one that never delivered. Not after Ctrl-C or SIGTERM:
        the user ended it and already knows."""
        if not self.config.live or self._stopped_by in ("SIGINT", "SIGTERM"):
            return
        empty = [stream for stream in summary.streams if not stream.frames_out]
        for stream in empty:
            log.warning("stream %s: nothing was fused (IR: %d frame(s) read, %d skipped as buffered on connect; "
                        "visible: %d read, %d skipped)", stream.stream, stream.read_ir, stream.stale_ir, stream.read_vi,
                        stream.stale_vi)
        if empty and len(empty) == len(summary.streams):
            raise DataError(f"the live run fused no frame in {summary.wall_s:.1f} s (see the warnings above)")

    def _refuse_streams_that_paired_nothing(self, summary: RunSummary) -> None:
        """A stream that read frames on both sides and paired none wrote nothing: almost always
        a time offset or slop that keeps every pair apart. An error in file mode (exit 2, the
        other streams' outputs complete), a warning in live mode. Not after a stop (Ctrl-C, a
        time limit): a stream may have read a few frames and not paired them yet."""
        if self._stopped_by is not None:
            return
        for stream in summary.streams:
            if stream.read_ir and stream.read_vi and not self.stats.stream_counts(stream.stream).paired:
                message = (f"stream {stream.stream}: none of its {stream.read_ir} IR and {stream.read_vi} visible frames were "
                           "paired (no two came within the sync slop after the time offset: check sync.offset_s, sync.slop_s "
                           "and the calibration file's time_offset_s); nothing was written for it")
                if self.config.live:
                    log.warning("%s", message)
                else:
                    raise DataError(message)

    def _known_output_sizes(self) -> dict[str, tuple[int, int]]:
        """Each stream's fused frame size where it is known before the first frame (from the
        calibration file, or the sizes its sources state)."""
        sizes = {stream.id: stream.registrar.expected_output_size(stream.ir.size, stream.visible.size) for stream in self._streams}
        return {stream: size for stream, size in sizes.items() if size is not None}

    def _warm_up(self, worker: FusionWorker, sizes: set[tuple[int, int]]) -> None:
        """Compile and tune the network for every output size known before capture starts."""
        for width, height in sorted(sizes):
            start = time.perf_counter()
            worker.warm_up((width, height))
            log.info("warm-up: %dx%d at batch %d ready in %.1f s, before capture starts", width, height, worker.batch_size,
                     time.perf_counter() - start)

    def _load_fuser(self) -> Fuser:
        model = self.config.model
        # compile: auto compiles on CUDA (fixed batch shapes: FusionWorker pads there), not on the CPU
        options = FuserOptions(device=model.device, half=model.half, channels_last=model.channels_last, compile=model.compile,
                               compile_mode=model.compile_mode, int8=model.int8, precision=model.precision,
                               cpu_streams=cpu_streams(self.config.live))
        return Fuser.from_weights(model.weights, model.variant, options)

    def _open_streams(self, fuser: Fuser, live: bool, origin: float, cleanup: contextlib.ExitStack) -> None:
        """Open every source now, so a missing file or camera is an error before any thread starts."""
        size = self.config.run.live_queue_size if live else self.config.run.queue_size
        readers = sum(source.kind == "video" for c in self.config.streams for source in (c.ir, c.visible))
        threads = decoder_threads(readers)  # the video readers share the cores (other sources ignore it)
        for config in self.config.streams:
            registration = _load_calibration(config)
            sources = []
            for kind, source_config in ((IR, config.ir), (VISIBLE, config.visible)):
                opening = functools.partial(open_source, source_config, kind, origin, self._open_capture, threads)
                source = self._open_heeding_signals(opening) if source_config.kind == "camera" else opening()
                cleanup.callback(source.close)
                sources.append(source)
            ir, visible = sources
            pairer = self._make_pairer(config, registration, ir, visible)
            condition = threading.Condition()  # both cameras' queues share it: pairing waits on either
            queues = tuple(FrameQueue(f"{config.id}.{kind}", size, drop_oldest=live, condition=condition) for kind in (IR, "vi"))
            path = Path(config.registration.calibration) if config.registration.calibration else None
            registrar = Registrar(config.id, registration, config.registration.warp, config.registration.crop, path, fuser.device)
            stream = _Stream(config, ir, visible, registrar, pairer, queues)
            if self._stopped_by is not None:  # stopped while starting up (the consumer left): read nothing
                stream.stop.set()
            self._streams.append(stream)
            self._queues += list(queues)
            self.stats.watch_stream(config.id, pairer.counts)
            for source in sources:
                if source.expected_frames is not None:
                    log.info("%s: %s, %s fps, %d frame(s)", config.id, source.name, _rate(source), source.expected_frames)

    def _open_heeding_signals(self, opening: Callable[[], Source]) -> Source:
        """Open a camera in a helper thread while this one heeds signals. A camera that does
        not answer held Ctrl-C for its whole read_timeout_s (40 s in one test), and then the run
        exited 2 with the camera's error instead of 130. A camera that opens after the run
        ended is closed by the helper."""
        opened: dict[str, object] = {}
        lock = threading.Lock()  # the source is closed once, by whichever side sees both it and the end

        def body() -> None:
            try:
                source = opening()
            except BaseException as exc:  # noqa: BLE001 (raised in this thread below)
                opened["error"] = exc
                return
            with lock:
                opened["source"] = source
                if "abandoned" in opened:
                    source.close()

        helper = threading.Thread(target=body, name="open-camera", daemon=True)
        helper.start()
        try:
            while helper.is_alive():
                helper.join(_MAIN_LOOP_WAKE_S)
                self._end_if_signalled()
            self._end_if_signalled()
        except BaseException:
            with lock:
                opened["abandoned"] = True
                if "source" in opened:
                    opened["source"].close()
            raise
        if "error" in opened:
            raise opened["error"]
        return opened["source"]

    def _make_pairer(self, config: StreamConfig, registration: Registration | None, ir: Source, visible: Source) -> NearestPairer:
        sync = config.sync
        follower = visible if sync.leader == "ir" else ir
        slop = sync.slop_s if sync.slop_s is not None else 0.5 / float(follower.rate)
        offset = sync.offset_s if sync.offset_s is not None else (registration.time_offset_s if registration else 0.0)
        log.info("%s: pairing each %s frame with the nearest %s frame within %.1f ms (IR offset %+.1f ms)",
                 config.id, sync.leader, "visible" if sync.leader == "ir" else "ir", slop * 1000, offset * 1000)
        # An offset_s of 0 in the config is a statement (cameras measured as in step); a calibration
        # file cannot tell a measured 0 from none, so its 0 is warned about.
        if sync.offset_s is None and offset == 0.0 and _cameras_at_other_rates(ir, visible):
            log.warning("%s: the IR camera runs at %.4g fps and the visible one at %.4g, and no time offset is set: a camera "
                        "delivers a number of its own frames late (about two through FFmpeg's RTSP client), so the two are "
                        "likely apart by a constant (0.15 s for 9 and 30 fps); measure sync.offset_s with `ldfusion calibrate "
                        "offset` on a recording of both", config.id, float(ir.rate), float(visible.rate))
        return NearestPairer(config.id, sync.leader, slop, offset, sync.max_delay_s if self.config.live else 0.0,
                             ir_replayed=not ir.live)

    def _start_threads(self, worker: FusionWorker, sinks: list[Sink], live: bool, origin: float, infos: dict[str, StreamInfo]) -> list[threading.Thread]:
        run, batch = self.config.run, self._batch
        # One paired queue per stream, all sharing one condition: the fusion stage takes from
        # them in turn (pipeline.batching), and live mode drops a stream's own oldest pair only.
        condition = threading.Condition()
        if live:  # short queues that keep the newest frames: latency stays bounded when a stage is slow
            # A batch, and the pairs one frame of a slower follower camera releases at once
            # (a 9 fps IR camera under a 30 fps visible one: three or four; with room for one
            # batch alone, all but the last of them were dropped with the fusion stage idle).
            paired = {s.id: FrameQueue(f"{s.id}.paired", batch + s.pairs_released_at_once(), drop_oldest=True, condition=condition)
                      for s in self._streams}
        else:  # room for two batches, and producers wait: nothing is lost
            size = max(run.queue_size, 2 * batch)
            paired = {s.id: FrameQueue(f"{s.id}.paired", size, condition=condition) for s in self._streams}
        self._queues += list(paired.values())
        for q in self._queues:
            self.stats.watch_queue(q)
        threads = []
        # Recordings play from now, not from the clock's origin: the start-up since then (a CUDA
        # warm-up takes seconds) would otherwise play as a burst of late frames.
        play_from = time.monotonic() if run.realtime or live else None
        for stream in self._streams:
            for source, q in ((stream.ir, stream.ir_queue), (stream.visible, stream.vi_queue)):
                on_frame = (lambda frame, s=stream.id, k=source.kind: self.stats.frame_read(s, k))
                replay = _replay(stream, source, play_from, origin)
                threads.append(self._thread(f"{_READER_PREFIX}{stream.id}-{source.kind}", run_capture, source, stream.id, q, stream.stop, on_frame, replay))
            # A camera's times count from the run's clock origin, a stream of recordings' from
            # when its visible recording starts playing.
            pairing_origin = origin if stream.has_camera or play_from is None else play_from + _ir_lead(stream)
            threads.append(self._thread(f"pair-{stream.id}", self._pair, stream, paired[stream.id], live, pairing_origin))
        # Live: at least a batch, which the fusion stage hands on at once.
        sink_queue = max(run.live_queue_size, batch) if live else max(run.queue_size, 2 * batch)
        fanout = SinkFanout(sinks, sink_queue, live, on_done=lambda frame: self.stats.frame_written(frame.meta.stream, frame.meta.captured_mono))
        self._queues += fanout.queues
        self._sink_queues = list(fanout.queues)
        for q in fanout.queues:
            self.stats.watch_queue(q)
        sink_threads = [self._thread(f"sink-{i}-{sink.kind or type(sink).__name__}", fanout.drain, i) for i, sink in enumerate(sinks)]
        threads += sink_threads  # started before the fusion thread, which joins them
        threads.append(self._thread("fuse", self._fuse, worker, paired, fanout, infos, live, sink_threads))
        for thread in threads:
            thread.start()
        return threads

    def _thread(self, name: str, target: Callable, *args) -> threading.Thread:
        def body() -> None:
            try:
                target(*args)
            except Cancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 (handed to the main thread, raised there)
                log.debug("thread %s failed", name, exc_info=True)
                self._fail(exc)
            finally:
                if name == "fuse":  # the last stage: it has waited for the sinks
                    self._done.set()

        return threading.Thread(target=body, name=name, daemon=True)

    def _pair(self, stream: _Stream, out: FrameQueue, live: bool, origin: float) -> None:
        max_frames = self.config.run.max_frames

        def emit(pair: FramePair) -> bool:
            try:
                stream.registrar.check(pair.ir.size, pair.visible.size)
            except FrameSizeError as exc:  # which file: in an image folder the size can change at any image
                raise DataError(f"{exc} (at {stream.ir.frame_name(pair.meta.ir_index)} and "
                                f"{stream.visible.frame_name(pair.meta.vi_index)})") from None
            if not out.put(pair):
                return False
            if max_frames is not None and pair.meta.seq + 1 >= max_frames:
                self._at_max_frames.add(stream.id)
                return False
            return True

        try:
            run_pairing(stream.pairer, stream.ir_queue, stream.vi_queue, emit, live, origin, stream.stop)
        finally:
            out.put_end(EndOfStream(stream.id))

    def _fuse(self, worker: FusionWorker, paired: dict[str, FrameQueue], fanout: SinkFanout, infos: dict[str, StreamInfo],
              live: bool, sink_threads: list[threading.Thread]) -> None:
        """The fusion thread: fuse, and hand each frame straight to every sink's queue; at the
        end, wait for the sinks to finish. An error aborts the run at once (the sinks stop
        instead of writing what they hold, and still close their files)."""
        expected = [info.expected_frames for info in infos.values()]
        total = None if live or None in expected else sum(min(n, self.config.run.max_frames or n) for n in expected)
        show = self.config.run.progress and not live
        try:
            with tqdm(total=total, unit="frame", desc="fuse", disable=not show, leave=False) as bar:
                worker.run(paired, _ToSinks(fanout, bar))
        except Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 (handed to the main thread, raised there)
            log.debug("the fusion thread failed", exc_info=True)
            self._fail(exc)
        finally:
            for thread in sink_threads:
                thread.join()

    def _supervise(self) -> None:
        """Main thread: log statistics, enforce run.duration_s, and report signals."""
        run = self.config.run
        deadline = None if run.duration_s is None else time.monotonic() + run.duration_s
        next_log = time.monotonic() + run.stats_interval_s
        while not self._done.wait(_MAIN_LOOP_WAKE_S):
            now = time.monotonic()
            self._handle_signals()
            if deadline is not None and now >= deadline and self._stopped_by is None:
                log.info("run.duration_s reached; stopping")
                self.stop("duration")
            if now >= next_log:
                next_log = now + run.stats_interval_s
                log.info("%s", self.stats.periodic_line())
                stalled = self.stats.stalled_cameras(_STALL_AFTER_S) if self.config.live else []
                if stalled and self._stopped_by is None:
                    log.warning("no frames for %.0f s from: %s", _STALL_AFTER_S, ", ".join(stalled))

    @contextlib.contextmanager
    def _signals_handled(self):
        """SIGINT/SIGTERM stop the run (a second one aborts); only from the main thread.

        The handler only records the signal: it may run while the main thread holds a lock
        that stopping needs, so ``_supervise`` acts on it (within ``_MAIN_LOOP_WAKE_S``).
        """
        with signals_handled(lambda signum, _frame: self._signals.append(signal.Signals(signum).name)):
            yield

    def _handle_signals(self) -> None:
        """Act on signals received since the last call."""
        for name in self._signals[self._signals_handled_count:]:
            if self._stopped_by is None:
                log.warning("%s: stopping; the frames already read are still fused and written (again to abort)", name)
                self.stop(name)
            elif self._aborted_at is None:
                log.warning("%s again: aborting; the outputs are closed with what they hold", name)
                self.abort()
        self._signals_handled_count = len(self._signals)

    def _join(self, threads: list[threading.Thread]) -> None:
        """Wait for the stages for up to _JOIN_TIMEOUT_S, still acting on signals: a reader stuck
        in a camera that does not answer held a second Ctrl-C for those 10 s. After an abort a
        reader gets _ABORT_GRACE_S to finish (what it reads goes nowhere); the sinks get the
        whole wait, to close their files."""
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for thread in threads:
            while thread.is_alive() and time.monotonic() < self._join_deadline(thread, deadline):
                thread.join(_MAIN_LOOP_WAKE_S)
                self._handle_signals()
            if thread.is_alive():
                log.warning("thread %s did not finish (a camera read that never returns?); leaving it", thread.name)

    def _join_deadline(self, thread: threading.Thread, deadline: float) -> float:
        if self._aborted_at is not None and thread.name.startswith(_READER_PREFIX):
            return min(deadline, self._aborted_at + _ABORT_GRACE_S)
        return deadline

    # --- outputs -------------------------------------------------------------------------

    def _summary(self, fuser: Fuser, outputs: tuple[str, ...]) -> RunSummary:
        streams = []
        for stream in self._streams:
            c = self.stats.stream_counts(stream.id)
            ir, vi = stream.ir, stream.visible
            streams.append(StreamSummary(stream.id, c.written, c.read_ir, c.read_vi, c.paired, c.unpaired_ir, c.unpaired_vi, c.dropped,
                                         ir.outages, vi.outages, ir.reconnects, vi.reconnects, ir.stale, vi.stale))
        frames = sum(s.frames_out for s in streams)
        wall = self.stats.elapsed
        return RunSummary(
            frames_out=frames,
            wall_s=wall,
            fps=frames / wall if wall > 0 else 0.0,
            latency_ms_p50=self.stats.latency_ms(50),
            latency_ms_p99=self.stats.latency_ms(99),
            dropped=sum(s.dropped for s in streams),
            unpaired=sum(s.unpaired_ir + s.unpaired_vi for s in streams),
            outputs=outputs,
            streams=tuple(streams),
            stopped_by=self._stopped_by or ("max_frames" if len(self._at_max_frames) == len(self._streams) else None),
            model=fuser.spec.name,
            device=str(fuser.device),
            report=self.stats.report() + "".join(_camera_line(summary) for summary, stream in zip(streams, self._streams)
                                                 if stream.has_camera),
        )

    def _write_resolved_config(self) -> None:
        if self.config.run.out_dir:
            out = Path(self.config.run.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            write_yaml(out / "config.yaml", mask_credentials(to_dict(self.config)))  # no camera passwords on disk

    def _write_summary(self, summary: RunSummary) -> None:
        if self.config.run.out_dir:
            path = Path(self.config.run.out_dir) / "summary.json"
            # Strict JSON: no NaN (a run with no fused frame has no latency), which many parsers reject.
            write_text_whole(path, json.dumps(_finite_or_none(summary.to_dict()), indent=2, default=str, allow_nan=False) + "\n")


def _finite_or_none(value):
    """``value`` with every NaN or infinite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def _load_calibration(config: StreamConfig) -> Registration | None:
    path = config.registration.calibration
    return load_registration(path) if path else None


def _camera_line(s: StreamSummary) -> str:
    return (f"\n{s.stream}: camera outages {s.outages_ir}/{s.outages_vi} (ir/vi), reconnects {s.reconnects_ir}/{s.reconnects_vi}, "
            f"stale frames skipped on connect {s.stale_ir}/{s.stale_vi}")


def _rate(source: Source) -> str:
    return f"{float(source.rate):g}"


def run_pipeline(
    config: PipelineConfig | dict | str | os.PathLike,
    fuser: Fuser | None = None,
    *,
    extra_sinks: Sequence[Sink] = (),
    open_capture: OpenCapture | None = None,
    config_file: str | os.PathLike | None = None,
) -> RunSummary:
    """Run ``config`` to the end (or until stopped) and return its summary.

    ``fuser``: a loaded model to use instead of ``config.model``'s weights/device (a
    benchmark loads one and runs several configs). ``extra_sinks``: sink objects added to
    the configured ones (e.g. a ``CallbackSink``). ``open_capture``: replaces
    ``cv2.VideoCapture`` for camera sources (fake cameras in tests). ``config_file``: the
    file ``config`` was read from, which no output may replace (``check_outputs``); a path
    given as ``config`` is that file. ``config`` may also be the config as a dict.

    A Ctrl-C (SIGTERM) stops the run as it stops ``ldfusion run``, the frames read fused and
    written and summary.json saying so, and is then raised: ``KeyboardInterrupt``
    (``ldfusion.signals.Terminated``). It had been swallowed, so a script running several
    configs went on to the next. ``Pipeline(...).run()`` returns the summary instead.
    """
    if isinstance(config, (str, os.PathLike)) and config_file is None:
        config_file = config
    summary = Pipeline(as_pipeline_config(config), _checked_fuser(fuser), extra_sinks=extra_sinks, open_capture=open_capture,
                       config_file=config_file).run()
    if summary.stopped_by == "SIGINT":
        raise KeyboardInterrupt
    if summary.stopped_by == "SIGTERM":
        raise Terminated
    return summary


def _checked_fuser(fuser: object) -> Fuser | None:
    if fuser is not None and not isinstance(fuser, Fuser):
        raise TypeError(f"fuser must be a loaded ldfusion.inference.Fuser or None; got {type(fuser).__name__} {fuser!r:.60} "
                        "(weights by name go in the config: model.weights)")
    return fuser


class _ToSinks:
    """The fusion worker's output: each fused frame onto every sink's own queue (no queue
    and thread of its own in between: a hand-off fewer per frame), the progress bar moved on."""

    def __init__(self, fanout: SinkFanout, bar: tqdm) -> None:
        self._fanout = fanout
        self._bar = bar

    def put(self, frame: FusedFrame) -> bool:
        if not self._fanout.put(frame):
            return False
        self._bar.update(1)
        return True

    def put_end(self, end: EndOfStream) -> None:
        self._fanout.put_end(end)


class _ConsumerSink(Sink):
    """Puts each fused frame, as tensors on the fusion device, on the consumer's queue."""

    kind = "consumer"
    views = (DEVICE,)

    def __init__(self, handoff: FrameQueue) -> None:
        super().__init__()
        self._handoff = handoff

    def write(self, frame: FusedFrame) -> None:
        rgb, ycrcb, ir = frame.view(DEVICE)
        self._handoff.put(DeviceFrame(frame.meta, rgb, ycrcb, ir))


def _wait_aborting_on_interrupt(ended: threading.Event, pipeline: Pipeline) -> None:
    """Wait for the pipeline's thread to end (``ended``); a Ctrl-C meanwhile aborts it (the
    sinks still close their files) and is raised once it has ended. Interrupting the wait
    itself left the thread encoding into the interpreter's teardown: SIGABRT, and no MP4.
    (An Event, not ``Thread.join``: a join that a KeyboardInterrupt cut short reports the
    thread as ended while it still runs.)"""
    interrupted: KeyboardInterrupt | None = None
    while not ended.is_set():
        try:
            ended.wait()
        except KeyboardInterrupt as interrupt:
            interrupted = interrupted or interrupt
            pipeline.abort()
    if interrupted is not None:
        raise interrupted


def fused_frames(
    config: PipelineConfig | dict | str | os.PathLike, fuser: Fuser | None = None, *, queue_size: int = 8,
    open_capture: OpenCapture | None = None,
) -> Iterator[DeviceFrame]:
    """Fused frames as ``DeviceFrame`` tensors on the fusion device, for a consumer in this
    process (a detector): no download, no copy. The configured sinks run as well.

    The pipeline runs in a background thread; up to ``queue_size`` frames wait for the
    consumer. File mode: nothing is lost, the pipeline waits for a slow consumer. Live mode:
    the newest frames are kept. Leaving the loop early stops the pipeline at once: the frames
    fused so far are still written by the sinks (every frame given to the consumer, and those
    fused ahead of it: up to ``queue_size`` and the sinks' queues); a Ctrl-C while it stops
    aborts it. A generator kept after its loop was left (a notebook's variable) keeps the run
    going until it is closed (``close()``, ``contextlib.closing``) or collected. An error in it
    is raised here, after the frames fused before it. ``config``: as ``run_pipeline`` takes it.
    """
    config_file = config if isinstance(config, (str, os.PathLike)) else None
    config = as_pipeline_config(config)
    if isinstance(queue_size, bool) or not isinstance(queue_size, int):
        raise TypeError(f"queue_size must be a whole number of frames; got {queue_size!r}")
    if queue_size < 1:
        raise ValueError(f"queue_size must be at least 1 frame; got {queue_size}")
    handoff = FrameQueue("consumer", queue_size, drop_oldest=config.live)
    pipeline = Pipeline(config, _checked_fuser(fuser), extra_sinks=[_ConsumerSink(handoff)], open_capture=open_capture,
                        config_file=config_file)
    pipeline.stats.watch_queue(handoff)  # live: the frames the consumer never saw count as dropped
    errors: list[BaseException] = []

    ended = threading.Event()

    def body() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # noqa: BLE001 (raised in the consumer's thread)
            errors.append(exc)
        finally:
            handoff.put_end(EndOfStream("*"))
            ended.set()

    def finish() -> None:
        # Reading and fusing stop now, and the frames fused so far are written: each MP4 holds
        # every frame the consumer was given. An abort dropped what the sinks' queues held (an
        # MP4 with none of them); a plain stop fused all that was read first (22 s behind a
        # slow model). The consumer's own queue is cancelled: nobody takes from it any more.
        if not ended.is_set():
            pipeline.stop_fusing("the consumer left the loop")
            handoff.cancel()
        _wait_aborting_on_interrupt(ended, pipeline)

    thread = threading.Thread(target=body, name="pipeline", daemon=True)
    thread.start()
    # A script that ends with the loop unfinished (the generator never closed) must not leave
    # the pipeline running into the interpreter's teardown: the process aborted (SIGABRT) and
    # the MP4s were never closed. At exit the run is stopped, the outputs closed with what was read.
    atexit.register(finish)
    # SIGTERM (systemd, docker stop) as a Ctrl-C, in the consumer's loop and while the run
    # stops: its default killed the process, and the MP4 (48 bytes) could not be opened.
    with sigterm_as_interrupt():
        try:
            while not isinstance(item := handoff.get(), EndOfStream):
                yield item
        finally:
            atexit.unregister(finish)
            finish()  # the consumer left early, or nothing is left to do
    if errors:
        raise errors[0]
