#!/usr/bin/env python3
"""How closely a student's fused Y agrees with its teacher's, in PSNR, on held-out pairs.

Default: the bundled `default` weights against the authors' LD-Lite on
../shared/data/pairs/ldlite_test and the ten TNO pairs held out of training
(configs/distill_default.yaml). Prints a per-image table and the mean; the numbers in
MODEL_CARD.md come from this script.

    python scripts/teacher_agreement.py [--student default] [--teacher ../shared/data/weights/ld-lite/final.pt]
        [--backend torch|openvino|auto] [--int8 | --no-int8] [--precision auto|f32|bf16] [--cpu-streams 2|1]
        [--bar 33 --floor 30]

The student runs on --backend (with --int8: its OpenVINO int8 export, shipped or made first
with `ldfusion export --int8`; `--student auto --backend auto` is what `weights: auto` runs
on the CPU); the teacher always runs on PyTorch, the reference. Exits 1 when
the mean is below --bar or a pair is below --floor (the quality bar for `weights: auto`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from ldfusion.imageio import pair_folders, read_pair
from ldfusion.inference import Fuser, FuserOptions, to_chw_float, to_y_batch
from ldfusion.losses import psnr

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def held_out_tno_names(config: Path) -> list[str]:
    data = yaml.safe_load(config.read_text())["data"]
    for source in data["pairs"]:
        if source.get("exclude"):
            return list(source["exclude"])
    return []


def held_out_pairs(config: Path):
    pairs = [("ldlite_test", p) for p in pair_folders(SHARED / "pairs/ldlite_test/ir", SHARED / "pairs/ldlite_test/vi")]
    tno = {p.name: p for p in pair_folders(SHARED / "pairs/tno/ir", SHARED / "pairs/tno/vi")}
    pairs += [("tno", tno[name]) for name in held_out_tno_names(config)]
    return pairs


def fused_y(fuser: Fuser, pair) -> torch.Tensor:
    visible, ir = read_pair(pair)
    return fuser.fuse_y(to_y_batch(visible), to_chw_float(ir)[None]).cpu()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="default", help="student weights (default: the bundled default)")
    parser.add_argument("--teacher", default=str(SHARED / "weights/ld-lite/final.pt"), help="teacher weights")
    parser.add_argument("--config", type=Path, default=REPO / "configs/distill_default.yaml", help="training config naming the held-out TNO pairs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--backend", default="torch", choices=("torch", "openvino", "auto"), help="the student's runtime (default: torch)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                        help="the student's OpenVINO int8 export (default: as ldfusion chooses: int8 for --student auto "
                        "on the CPU when its int8 export ships)")
    parser.add_argument("--precision", default="auto", choices=("auto", "f32", "bf16"),
                        help="what OpenVINO's float layers compute in (ldfusion.backends.float_precision; default: auto)")
    parser.add_argument("--cpu-streams", type=int, default=2, choices=(1, 2),
                        help="OpenVINO calls in flight (FuserOptions.cpu_streams): 2, as file mode and `fuse` run (default), "
                        "or 1, as live mode runs; their outputs differ by bf16 rounding")
    parser.add_argument("--bar", type=float, default=33.0, help="required mean PSNR in dB (default: 33)")
    parser.add_argument("--floor", type=float, default=30.0, help="required PSNR of every pair in dB (default: 30)")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"teacher_agreement: error: {SHARED} is not available", file=sys.stderr)
        return 2
    student = Fuser.from_weights(args.student, options=FuserOptions(device="cpu", backend=args.backend, int8=args.int8,
                                                                         precision=args.precision, cpu_streams=args.cpu_streams))
    teacher = Fuser.from_weights(args.teacher, options=FuserOptions(device="cpu", backend="torch"))
    rows = []
    for dataset, pair in held_out_pairs(args.config):
        value = float(psnr(fused_y(student, pair), fused_y(teacher, pair))[0])
        rows.append({"dataset": dataset, "name": pair.name, "psnr_db": round(value, 2)})
    mean = float(np.mean([r["psnr_db"] for r in rows]))
    print("| dataset | pair | PSNR vs teacher (dB) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['name']} | {r['psnr_db']:.2f} |")
    print(f"| **mean** | {len(rows)} pairs | **{mean:.2f}** |")
    worst = min(r["psnr_db"] for r in rows)
    meets = mean >= args.bar and worst >= args.floor
    print(f"{'meets' if meets else 'misses'} the bar: mean {mean:.2f} dB (>= {args.bar}), worst pair {worst:.2f} dB (>= {args.floor})")
    if args.json:
        args.json.write_text(json.dumps({"student": args.student, "teacher": args.teacher, "backend": args.backend,
                                         "int8": student.int8, "precision": student.precision, "pairs": rows, "mean_psnr_db": mean,
                                         "worst_psnr_db": worst, "meets_bar": meets}, indent=2))
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
