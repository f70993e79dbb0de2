#!/usr/bin/env python3
"""One OpenVINO call on every thread, or two calls at once on one thread each, beside other
work: what the file-mode pipeline's choice of two calls in flight rests on.

    PYTHONPATH=. python scripts/openvino_streams.py [--rounds 2] [--frames 60] [--size 640x480]

The network is ``weights: auto``'s on the CPU (``default``'s shipped int8 export, its float
layers as ``auto`` runs them). A competitor thread stands for the pipeline's encoders: it
encodes frames with x264 (one thread) for ``duty`` ms of CPU in every 40 ms, then sleeps.
For each duty, rounds interleave the two ways of running the network and print the
milliseconds a frame. If the lockstep of one call's threads is what costs, the first way
loses the whole duty a frame and the second about half of it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import av
import numpy as np
import torch

from ldfusion.inference import Fuser, FuserOptions

PERIOD_S = 0.040  # the competitor's cycle: a frame's time at 25 fps


def competitor(duty_s: float, size: tuple[int, int], stop: threading.Event) -> None:
    """x264 (one thread) encoding noise for ``duty_s`` of CPU in every ``PERIOD_S``."""
    width, height = size
    rng = np.random.default_rng(0)
    frames = [av.VideoFrame.from_ndarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), format="rgb24")
              .reformat(format="yuv420p") for _ in range(8)]
    with av.open("/dev/null", "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.thread_count = width, height, 1
        stream.options = {"preset": "veryfast", "crf": "18"}
        index = 0
        while not stop.is_set():
            started, cpu = time.perf_counter(), time.thread_time()
            while time.thread_time() - cpu < duty_s:
                frame = frames[index % len(frames)]
                frame.pts = index
                index += 1
                stream.encode(frame)
            time.sleep(max(0.0, PERIOD_S - (time.perf_counter() - started)))


def ms_per_frame(fuser: Fuser, inputs: tuple[torch.Tensor, torch.Tensor], frames: int) -> float:
    """Frames kept ``fuser.cpu_network.streams`` calls in flight, as the fusion stage does."""
    in_flight = fuser.cpu_network.streams
    pending = []
    started = time.perf_counter()
    for _ in range(frames):
        if len(pending) == in_flight:
            pending.pop(0).result()
        pending.append(fuser.start_fuse_y(*inputs))
    for call in pending:
        call.result()
    return 1000 * (time.perf_counter() - started) / frames


def measure(streams: int, size: tuple[int, int], frames: int, duties: list[float]) -> list[float]:
    """Milliseconds a frame at each duty, the network run with ``streams`` calls in flight."""
    width, height = size
    fuser = Fuser.from_weights(None, options=FuserOptions(device="cpu", cpu_streams=streams))
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(1, 1, height, width, generator=generator), torch.rand(1, 1, height, width, generator=generator)
    ms_per_frame(fuser, inputs, 4)  # compile the shape, make the requests
    results = []
    for duty in duties:
        stop = threading.Event()
        thread = threading.Thread(target=competitor, args=(duty / 1000, size, stop), daemon=True)
        if duty:
            thread.start()
            time.sleep(0.2)
        results.append(ms_per_frame(fuser, inputs, frames))
        stop.set()
        if duty:
            thread.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=60, help="frames per measurement")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--duties", default="0,8,16", help="the competitor's ms of CPU in every 40 ms")
    parser.add_argument("--streams", type=int, choices=(1, 2), help=argparse.SUPPRESS)  # one process's share of the work
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    duties = [float(d) for d in args.duties.split(",")]
    if args.streams:
        print(json.dumps(measure(args.streams, size, args.frames, duties)))
        return
    # Each way in its own process: two compiled networks in one process slow each other
    # (the idle one's threads), which hid the difference in a first version of this script.
    rows: dict[float, dict[int, list[float]]] = {duty: {1: [], 2: []} for duty in duties}
    for _ in range(args.rounds):
        for streams in (1, 2):
            command = [sys.executable, __file__, "--streams", str(streams), "--frames", str(args.frames), "--size", args.size,
                       "--duties", args.duties]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            for duty, ms in zip(duties, json.loads(out)):
                rows[duty][streams].append(ms)
    print(f"{args.size}, weights auto on the CPU, {args.rounds} interleaved rounds; ms a frame")
    print(f"{'competitor':>12} {'one call, every thread':>24} {'two calls, one thread each':>28}")
    for duty, by in rows.items():
        print(f"{duty:>6.0f} ms/40 {' / '.join(f'{v:.1f}' for v in by[1]):>24} {' / '.join(f'{v:.1f}' for v in by[2]):>28}")


if __name__ == "__main__":
    main()
