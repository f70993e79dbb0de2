"""Stage-by-stage statistics: frame rates, queue depths, latency, drops and unpaired frames.

Stages count frames as they pass; the runner logs ``periodic_line()`` every few seconds
and ``report()`` at the end. Latency is measured from the moment a frame was read (the
later of the pair) until every sink has taken it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from pipeline.queues import FrameQueue
from pipeline.sync import PairingCounts

_LATENCY_SAMPLES = 100_000  # the most recent frames' latencies are kept for percentiles


@dataclass(frozen=True)
class StreamCounts:
    stream: str
    read_ir: int
    read_vi: int
    paired: int
    written: int
    unpaired_ir: int
    unpaired_vi: int
    dropped: int  # frames discarded by live-mode queues to stay current


class PipelineStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.finished: float | None = None
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._last_read: dict[str, float] = {}
        self._previous: tuple[float, Counter[str]] | None = None  # for periodic_line's rates
        self._queues: list[FrameQueue] = []
        self._pairing: dict[str, PairingCounts] = {}

    # --- what the stages call -----------------------------------------------------------

    def frame_read(self, stream: str, kind: str) -> None:
        with self._lock:
            self._counts[f"read/{stream}/{kind}"] += 1
            self._last_read[f"{stream}/{kind}"] = time.monotonic()

    def count(self, stage: str, n: int = 1) -> None:
        with self._lock:
            self._counts[stage] += n

    def batch_fused(self, frames: int) -> None:
        with self._lock:
            self._counts["fused"] += frames
            self._counts["batches"] += 1

    def frame_written(self, stream: str, captured_mono: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[f"written/{stream}"] += 1
            self._counts["written"] += 1
            self._latencies.append(now - captured_mono)

    # --- what the runner registers ------------------------------------------------------------

    def watch_queue(self, q: FrameQueue) -> None:
        self._queues.append(q)

    def watch_stream(self, stream: str, pairing: PairingCounts) -> None:
        self._pairing[stream] = pairing

    def start(self) -> None:
        """The stages start now: rates and the run's wall time count from here."""
        self.started = time.monotonic()

    def finish(self) -> None:
        self.finished = time.monotonic()

    # --- reading -----------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def latency_ms(self, percentile: float) -> float:
        with self._lock:
            samples = np.fromiter(self._latencies, dtype=np.float64)
        return float(np.percentile(samples, percentile) * 1000.0) if samples.size else float("nan")

    def stream_counts(self, stream: str) -> StreamCounts:
        pairing = self._pairing.get(stream, PairingCounts())
        with self._lock:
            counts = dict(self._counts)
        return StreamCounts(
            stream=stream,
            read_ir=counts.get(f"read/{stream}/ir", 0),
            read_vi=counts.get(f"read/{stream}/visible", 0),
            paired=pairing.paired,
            written=counts.get(f"written/{stream}", 0),
            unpaired_ir=pairing.unpaired_ir,
            unpaired_vi=pairing.unpaired_vi,
            dropped=sum(q.dropped_by_stream[stream] for q in self._queues),
        )

    @property
    def streams(self) -> list[str]:
        return list(self._pairing)

    def written(self) -> int:
        with self._lock:
            return self._counts["written"]

    def stalled_cameras(self, after_s: float) -> list[str]:
        """Cameras that delivered before but nothing in the last ``after_s`` seconds."""
        now = time.monotonic()
        with self._lock:
            return [name for name, last in self._last_read.items() if now - last > after_s]

    def periodic_line(self) -> str:
        """Rates over the time since the previous call; counts since the start."""
        now = time.monotonic()
        with self._lock:
            counts = Counter(self._counts)
        since, before = self._previous or (self.started, Counter())
        self._previous = (now, counts)
        window = max(now - since, 1e-9)

        def rate(key: str) -> float:
            return (counts[key] - before[key]) / window

        parts = []
        for stream in self.streams:
            c = self.stream_counts(stream)
            parts.append(
                f"{stream}: read {rate(f'read/{stream}/ir'):.1f}/{rate(f'read/{stream}/visible'):.1f} fps (ir/vi), "
                f"fused {rate(f'written/{stream}'):.1f} fps, unpaired {c.unpaired_ir}/{c.unpaired_vi}, dropped {c.dropped}"
            )
        depths = " ".join(f"{q.name}={len(q)}" for q in self._queues)
        parts.append(f"queues {depths}")
        parts.append(f"latency p50 {self.latency_ms(50):.0f} ms p99 {self.latency_ms(99):.0f} ms")
        return "; ".join(parts)

    def report(self) -> str:
        """A table for the end of a run."""
        elapsed = max(self.elapsed, 1e-9)
        lines = [f"{'stream':<12}{'read ir':>9}{'read vi':>9}{'paired':>8}{'written':>9}{'unp. ir':>9}{'unp. vi':>9}{'dropped':>9}"]
        for stream in self.streams:
            c = self.stream_counts(stream)
            lines.append(f"{stream:<12}{c.read_ir:>9}{c.read_vi:>9}{c.paired:>8}{c.written:>9}{c.unpaired_ir:>9}{c.unpaired_vi:>9}{c.dropped:>9}")
        with self._lock:
            fused, batches = self._counts["fused"], self._counts["batches"]
        written = self.written()
        lines.append(
            f"{written} frame(s) in {elapsed:.2f} s = {written / elapsed:.2f} fps; "
            f"fusion {fused / elapsed:.2f} fps in {batches} batch(es) (mean {fused / max(batches, 1):.1f}); "
            f"latency capture->sink p50 {self.latency_ms(50):.1f} ms, p99 {self.latency_ms(99):.1f} ms"
        )
        depths = ", ".join(f"{q.name} {q.max_depth}/{q.maxsize}" for q in self._queues)
        lines.append(f"largest queue depths: {depths}")
        return "\n".join(lines)
