"""CUDA graphs (``model.compile_mode: reduce-overhead``) in whole runs, against the eager network.

    PYTHONPATH=. python scripts/graphs_check.py --ir IR.mp4 --vi VI.mp4 [--device cuda] [--out graphs.json]

What ``bench`` cannot show: a run records its graphs in its warm-up, with sinks on their
threads, for every frame size it knows at start. File mode runs the pair twice, as given and
at half size (two streams, two sizes, two graphs), with PNG sinks, once per compile setting
(off, default, reduce-overhead); each setting's frames are compared with the eager ones per
stream (PSNR, largest difference). Then one live run with CUDA graphs, the pair replayed at
its recorded rate with an MP4 sink: frames written, dropped, capture-to-sink p50 / p99.
Decides whether ``reduce-overhead`` can be the default on CUDA. Without CUDA every setting runs
the eager network (a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldfusion.config import from_dict  # noqa: E402
from ldfusion.video import VideoReader, VideoWriter  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.runner import run_pipeline  # noqa: E402

SETTINGS = {"off": {"compile": "off"}, "default": {"compile": "on", "compile_mode": "default"},
            "reduce-overhead": {"compile": "on", "compile_mode": "reduce-overhead"}}


def half_size_copy(source: Path, target: Path, max_frames: int | None) -> Path:
    """The clip at half its width and height (an even size), same rate: a second frame size."""
    with VideoReader(source) as reader, VideoWriter(target, reader.rate) as writer:
        for index, image in enumerate(reader.images()):
            if max_frames is not None and index >= max_frames:
                break
            height, width = image.shape[:2]
            writer.write_image(cv2.resize(image, (width // 4 * 2, height // 4 * 2), interpolation=cv2.INTER_AREA))
    return target


def config(streams: dict[str, tuple[Path, Path]], device: str, setting: str, out_dir: Path, live: bool, max_frames: int | None) -> PipelineConfig:
    model = {"device": device, **(SETTINGS[setting] if device.startswith("cuda") else SETTINGS["off"])}
    sink = {"kind": "mp4", "path": "{stream}.mp4"} if live else {"kind": "png", "path": "{stream}"}
    run = {"out_dir": str(out_dir), "mode": "live" if live else "file", "realtime": live, "progress": False}
    if max_frames is not None:
        run["max_frames"] = max_frames
    data = {
        "streams": [{"id": name, "ir": {"kind": "video", "path": str(ir)}, "visible": {"kind": "video", "path": str(vi)}}
                    for name, (ir, vi) in streams.items()],
        "model": model, "sinks": [sink], "run": run,
    }
    return from_dict(PipelineConfig, data)


def compare(reference: Path, other: Path) -> dict:
    """PSNR (mean, worst) and the largest difference between two folders of PNG frames."""
    ref, got = sorted(reference.glob("*.png")), sorted(other.glob("*.png"))
    psnr, largest = [], 0
    for a, b in zip(ref, got):
        x, y = cv2.imread(str(a)).astype(np.float64), cv2.imread(str(b)).astype(np.float64)
        mse = float(np.mean((x - y) ** 2))
        largest = max(largest, int(np.abs(x - y).max()))
        psnr.append(float("inf") if mse == 0 else 10 * np.log10(255**2 / mse))
    finite = [p for p in psnr if np.isfinite(p)]
    return {"frames": len(got), "reference_frames": len(ref), "largest_difference": largest,
            "identical_frames": len(psnr) - len(finite),
            "psnr_mean_db": float(np.mean(finite)) if finite else None, "psnr_worst_db": float(min(finite)) if finite else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ir", type=Path, required=True)
    parser.add_argument("--vi", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per stream (default: all)")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    results: dict = {"file": {}, "live": None}
    with tempfile.TemporaryDirectory(prefix="graphs-check-") as folder:
        root = Path(folder)
        half = (half_size_copy(args.ir, root / "ir_half.mp4", args.max_frames), half_size_copy(args.vi, root / "vi_half.mp4", args.max_frames))
        streams = {"full": (args.ir, args.vi), "half": half}
        for setting in SETTINGS:
            summary = run_pipeline(config(streams, args.device, setting, root / setting, False, args.max_frames))
            results["file"][setting] = {"fps": summary.fps, "frames": summary.frames_out}
            if setting != "off":
                results["file"][setting]["against_eager"] = {name: compare(root / "off" / name, root / setting / name) for name in streams}
            print(setting, json.dumps(results["file"][setting]), flush=True)
        live = run_pipeline(config({"full": streams["full"]}, args.device, "reduce-overhead", root / "live", True, args.max_frames))
        results["live"] = {"frames": live.frames_out, "dropped": live.dropped, "p50_ms": live.latency_ms_p50, "p99_ms": live.latency_ms_p99}
        print("live reduce-overhead", json.dumps(results["live"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
