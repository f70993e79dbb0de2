"""How the pipeline's video readers could be laid out on a small CPU, measured side by side.

The pipeline reads each camera's file in its own thread (``pipeline.sources.run_capture``);
on 2 cores its overhead (``bench --paths passthrough``) stays below half of ``decode``. This
script asks whether another layout of the readers would lift that, with everything but the
readers held fixed: a consumer thread takes frame pairs and converts both luma planes to
float32, the fusion thread's own per-frame work. Layouts, interleaved in rounds so that the
machine's drift hits each alike:

- ``decode``: both files decoded in turn by one thread with FFmpeg's own threads, no consumer
  (what ``bench --paths decode`` measures);
- ``threads``: a reader thread per file, one FFmpeg thread each (the pipeline's layout);
- ``one thread``: one reader thread decoding both files in turn, one FFmpeg thread each;
- ``processes``: a reader process per file writing planes into a shared-memory ring, the
  frame's metadata over a pipe; the parent copies each frame out and frees its slot.

Run from the repository root: ``python scripts/reader_layouts.py [--frames 1500] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import sys
import tempfile
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldfusion.video import VideoReader  # noqa: E402
from pipeline.bench import synthetic_frames, write_clip  # noqa: E402

WIDTH, HEIGHT = 640, 512
RING_SLOTS = 8
SLOT_BYTES = WIDTH * HEIGHT * 2  # a 4:2:0 frame's three planes fit in 1.5 bytes a pixel


def consume(next_pair, count: int) -> None:
    """The fusion thread's per-frame work: both luma planes to float32 in [0, 1]."""
    scratch = np.empty((2, HEIGHT, WIDTH), np.float32)
    for _ in range(count):
        ir, vi = next_pair()
        np.multiply(ir[0], 1 / 255, out=scratch[0], casting="unsafe")
        np.multiply(vi[0], 1 / 255, out=scratch[1], casting="unsafe")


def decode_only(ir: Path, vi: Path) -> None:
    with VideoReader(ir, luma_only=True) as a, VideoReader(vi) as b:
        for _ in zip(a, b):
            pass


def reader_threads(ir: Path, vi: Path, count: int) -> None:
    queues = queue.Queue(16), queue.Queue(16)

    def read(path: Path, luma_only: bool, out: queue.Queue) -> None:
        with VideoReader(path, luma_only=luma_only, threads=1) as reader:
            for frame in reader:
                out.put(frame.planes.data)

    threads = [threading.Thread(target=read, args=(ir, True, queues[0])), threading.Thread(target=read, args=(vi, False, queues[1]))]
    for thread in threads:
        thread.start()
    consume(lambda: (queues[0].get(), queues[1].get()), count)
    for thread in threads:
        thread.join()


def one_reader_thread(ir: Path, vi: Path, count: int) -> None:
    pairs: queue.Queue = queue.Queue(16)

    def read() -> None:
        with VideoReader(ir, luma_only=True, threads=1) as a, VideoReader(vi, threads=1) as b:
            for frame_ir, frame_vi in zip(a, b):
                pairs.put((frame_ir.planes.data, frame_vi.planes.data))

    thread = threading.Thread(target=read)
    thread.start()
    consume(pairs.get, count)
    thread.join()


def _decode_into_ring(path: str, luma_only: bool, ring_name: str, conn, free_slots) -> None:
    """The reader process: each frame's planes into the next free slot, their shapes over ``conn``."""
    ring = shared_memory.SharedMemory(name=ring_name)
    slot = 0
    with VideoReader(path, luma_only=luma_only, threads=1) as reader:
        for frame in reader:
            free_slots.acquire()
            offset, shapes = slot * SLOT_BYTES, []
            for plane in frame.planes.data:
                np.copyto(np.ndarray(plane.shape, np.uint8, ring.buf, offset), plane)
                shapes.append(plane.shape)
                offset += plane.size
            conn.send((slot, shapes))
            slot = (slot + 1) % RING_SLOTS
    conn.send(None)
    ring.close()


class ProcessReader:
    """A reader process and its ring; iterating yields each frame's planes, copied out."""

    def __init__(self, path: Path, luma_only: bool) -> None:
        context = mp.get_context("spawn")  # never fork a process that runs threads
        self.ring = shared_memory.SharedMemory(create=True, size=RING_SLOTS * SLOT_BYTES)
        self.conn, child_end = context.Pipe(duplex=False)
        self.free_slots = context.Semaphore(RING_SLOTS)
        self.process = context.Process(target=_decode_into_ring, args=(str(path), luma_only, self.ring.name, child_end, self.free_slots), daemon=True)
        self.process.start()

    def __iter__(self):
        while (message := self.conn.recv()) is not None:
            slot, shapes = message
            offset, planes = slot * SLOT_BYTES, []
            for shape in shapes:
                planes.append(np.ndarray(shape, np.uint8, self.ring.buf, offset).copy())
                offset += shape[0] * shape[1]
            self.free_slots.release()
            yield planes
        self.process.join()
        self.ring.close()
        self.ring.unlink()


def reader_processes(ir: Path, vi: Path, count: int) -> float:
    """Returns the seconds from the first frame on: the processes start before the clock, as
    the pipeline opens its sources before its own."""
    readers = ProcessReader(ir, True), ProcessReader(vi, False)
    for reader in readers:
        reader.conn.poll(60)
    started = time.perf_counter()
    queues = queue.Queue(16), queue.Queue(16)

    def pump(reader: ProcessReader, out: queue.Queue) -> None:
        for planes in reader:
            out.put(planes)

    threads = [threading.Thread(target=pump, args=pair) for pair in zip(readers, queues)]
    for thread in threads:
        thread.start()
    consume(lambda: (queues[0].get(), queues[1].get()), count)
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def timed_fps(run, count: int) -> float:
    """Frames a second of ``run()``; a run that times itself returns its own seconds."""
    started = time.perf_counter()
    seconds = run()
    return count / (seconds if seconds is not None else time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reader-layouts-") as folder:
        ir, vi = write_clip(synthetic_frames(WIDTH, HEIGHT), Path(folder), args.frames)
        print(f"{WIDTH}x{HEIGHT}, {args.frames} frames; fps (ratio to decode in the same round)")
        for _ in range(args.rounds):
            decode = timed_fps(lambda: decode_only(ir, vi), args.frames)
            row = [f"decode {decode:.0f}"]
            for name, layout in (("threads", reader_threads), ("one thread", one_reader_thread), ("processes", reader_processes)):
                fps = timed_fps(lambda: layout(ir, vi, args.frames), args.frames)
                row.append(f"{name} {fps:.0f} ({fps / decode:.2f}x)")
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
