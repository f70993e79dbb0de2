"""Live latency against two real RTSP cameras: latency, output fps, drops, pairing slop.

Starts two GStreamer RTSP servers on 127.0.0.1 (``tests/rtsp_server.py``, the servers of
the live test) looping the M3SVD IR/visible pair (or a rendered pair without the shared
data) at ``--fps``, runs the pipeline live against them for ``--seconds`` and prints:

- capture -> sink latency p50/p99 (from the moment a frame was read; the pipeline's own figure),
- due -> sink latency p50/p99 (from the moment the server's frame was due, read from the frame
  number marked into it: adds encoding, RTSP, network and decoding),
- output fps and its share of the input rate,
- per camera: frames read, skipped on connect, left unpaired, dropped by live queues,
- pairing slop seen: |t_ir - t_vi| of the output pairs, and how many source frames apart
  the paired frames really were (from the marked frame numbers).

    PYTHONPATH=. python scripts/live_latency.py --seconds 30                  # weights: auto, as `ldfusion run` by default
    PYTHONPATH=. python scripts/live_latency.py --weights ld-lite --device cuda
    PYTHONPATH=. python scripts/live_latency.py --weights tiny               # the pipeline's own cost
    PYTHONPATH=. python scripts/live_latency.py --torch-threads 1            # a busy CPU: no OpenMP thrashing

``--weights tiny`` is a randomly initialised 2-channel network (a few thousand parameters):
its output is meaningless, but it shows what the live path (RTSP decode, pairing,
registration, sinks) sustains when the network is not the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ldfusion.config import from_dict
from ldfusion.inference import Fuser, FuserOptions
from ldfusion.networks import build_network
from ldfusion.variants import VariantSpec
from pipeline.config import PipelineConfig
from pipeline.frames import FusedFrame
from pipeline.runner import RunSummary, run_pipeline
from pipeline.sinks import CallbackSink
from tests.conftest import SHARED_DATA
from tests.rtsp_server import RtspCamera, read_frame_number, unavailable_reason, write_clips

TINY = VariantSpec(name="tiny", content_dim=2, n_downsample=2, n_residual=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the pipeline runs (default 30)")
    parser.add_argument("--fps", type=float, default=30.0, help="rate of both cameras (default 30)")
    parser.add_argument("--weights", default="auto", help="a weights file or registry name (auto: as ldfusion chooses per "
                        "device, int8 on the CPU), or 'tiny' (default: auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    parser.add_argument("--batch", type=int, default=None, help="model.batch_size (default: 1 on the CPU, 8 on CUDA)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the CPU (default: torch's own); 1 helps a lot on a busy machine")
    parser.add_argument("--cpu-streams", type=int, default=1, choices=(1, 2),
                        help="OpenVINO calls in flight (FuserOptions.cpu_streams; default 1, as live mode runs): 2 is what "
                        "file mode runs, each call on one thread")
    parser.add_argument("--clip-frames", type=int, default=150, help="frames of the clip the servers loop (default 150)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    return parser


def load_fuser(weights: str, device: str, cpu_streams: int = 1) -> Fuser:
    if weights == "tiny":
        return Fuser(build_network(TINY), FuserOptions(device=device))
    return Fuser.from_weights(weights, None, FuserOptions(device=device, cpu_streams=cpu_streams))


class Recorder:
    """A sink that notes, per output frame, the marked frame numbers and when it arrived."""

    def __init__(self, epoch: float, fps: float) -> None:
        self.epoch, self.fps = epoch, fps
        self.rows: list[tuple[int | None, int | None, float, float]] = []  # n_ir, n_vi, skew s, due->sink s

    def write(self, frame: FusedFrame) -> None:
        now = time.time()
        n_ir, n_vi = read_frame_number(frame.ir), read_frame_number(frame.visible)
        due_to_sink = now - (self.epoch + n_vi / self.fps) if n_vi is not None else float("nan")
        self.rows.append((n_ir, n_vi, abs(frame.meta.skew_s), due_to_sink))


def run(args: argparse.Namespace, folder: Path) -> dict:
    m3svd = SHARED_DATA / "video" / "m3svd"
    ir_raw, vi_raw, clip = write_clips(folder, m3svd if (m3svd / "infrared").is_dir() else None, args.clip_frames)
    fuser = load_fuser(args.weights, args.device, args.cpu_streams)
    epoch = time.time()
    cameras = RtspCamera(ir_raw, "/ir", args.fps, epoch), RtspCamera(vi_raw, "/visible", args.fps, epoch)
    recorder = Recorder(epoch, args.fps)
    config = from_dict(PipelineConfig, {
        "streams": [{"id": "rig", "ir": {"kind": "camera", "path": cameras[0].url()}, "visible": {"kind": "camera", "path": cameras[1].url()}}],
        "model": {"batch_size": args.batch},
        "run": {"mode": "live", "duration_s": args.seconds, "progress": False, "stats_interval_s": 10.0},
    })
    with cameras[0], cameras[1]:
        summary = run_pipeline(config, fuser, extra_sinks=[CallbackSink(recorder.write)])
    return numbers(summary, recorder, args, clip, fuser)


def numbers(summary: RunSummary, recorder: Recorder, args: argparse.Namespace, clip: str, fuser: Fuser) -> dict:
    rows = recorder.rows
    skew = np.array([r[2] for r in rows]) * 1000
    due = np.array([r[3] for r in rows if np.isfinite(r[3])]) * 1000
    apart = [abs(r[1] - r[0]) for r in rows if r[0] is not None and r[1] is not None]
    stream = summary.streams[0]

    def pct(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q)) if values.size else float("nan")

    return {
        "clip": clip, "weights": args.weights, "model": summary.model, "device": summary.device, "torch_threads": torch.get_num_threads(),
        "input_fps": args.fps, "seconds": summary.wall_s, "frames_out": summary.frames_out,
        "output_fps": summary.fps, "output_share_of_input": summary.fps / args.fps,
        "latency_capture_to_sink_ms": {"p50": summary.latency_ms_p50, "p99": summary.latency_ms_p99},
        "latency_due_to_sink_ms": {"p50": pct(due, 50), "p99": pct(due, 99)},
        "cameras": {
            "ir": {"read": stream.read_ir, "skipped_on_connect": stream.stale_ir, "unpaired": stream.unpaired_ir},
            "visible": {"read": stream.read_vi, "skipped_on_connect": stream.stale_vi, "unpaired": stream.unpaired_vi},
            "dropped_by_live_queues": stream.dropped,
        },
        "pairing": {
            "slop_seen_ms": {"p50": pct(skew, 50), "max": float(skew.max()) if skew.size else float("nan")},
            "source_frames_apart": {str(k): apart.count(k) for k in sorted(set(apart))},
            "unreadable_marks": len(rows) - len(apart),
        },
    }


def report(n: dict) -> str:
    lat, due, cams, pairing = n["latency_capture_to_sink_ms"], n["latency_due_to_sink_ms"], n["cameras"], n["pairing"]
    return "\n".join([
        f"{n['clip']} at {n['input_fps']:g} fps x2 over RTSP; weights {n['weights']} ({n['model']}) on {n['device']}, "
        f"{n['torch_threads']} torch thread(s)",
        f"output            {n['frames_out']} frames in {n['seconds']:.1f} s = {n['output_fps']:.2f} fps "
        f"({100 * n['output_share_of_input']:.0f}% of the input rate)",
        f"latency           capture->sink p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms; "
        f"due->sink p50 {due['p50']:.1f} ms, p99 {due['p99']:.1f} ms",
        *(f"camera {kind:<10} read {c['read']}, skipped on connect {c['skipped_on_connect']}, unpaired {c['unpaired']}"
          for kind, c in (("ir", cams["ir"]), ("visible", cams["visible"]))),
        f"live queues       dropped {cams['dropped_by_live_queues']} frame(s) to stay current",
        f"pairing           |t_ir - t_vi| p50 {pairing['slop_seen_ms']['p50']:.1f} ms, max {pairing['slop_seen_ms']['max']:.1f} ms; "
        f"source frames apart {pairing['source_frames_apart']}",
    ])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    reason = unavailable_reason()
    if reason:
        print(f"live_latency: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="live_latency_") as tmp:
        result = run(args, Path(tmp))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
