"""``ldfusion bench`` at a tiny size: the JSON it writes, the table, and the reference path's output."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ldfusion.checkpoint import load_model
from ldfusion.cli import bench
from ldfusion.inference import Fuser, FuserOptions

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ("--resolutions", "64x48", "--frames", "2", "--warmup", "1", "-q")


@pytest.fixture
def no_pipeline(monkeypatch):
    """Make ``pipeline.runner`` unimportable whether or not the pipeline is installed."""
    monkeypatch.setitem(sys.modules, "pipeline.runner", None)


def test_bench_writes_json_and_prints_ratios(random_weights, tmp_path, capsys, no_pipeline):
    out = tmp_path / "bench.json"
    args = ["--weights", str(random_weights["ld-lite"]), "--devices", "cpu", "--batch-sizes", "1", "2", "--out", str(out)]
    assert bench.main([*args, *TINY]) == 0
    report = json.loads(out.read_text())

    assert report["machine"]["cpu_count"] >= 1 and report["settings"]["model"] == "ld-lite"
    measured = {(r["path"], r["batch"]): r for r in report["results"] if not r["skipped"]}
    assert set(measured) == {("reference", 1), ("model", 1), ("model", 2), ("model_on_device", 1), ("model_on_device", 2)}
    for r in measured.values():
        assert r["device"] == "cpu" and r["resolution"] == "64x48"
        assert r["frames"] >= 2 and r["fps"] > 0 and r["wall_s"] > 0 and r["peak_rss_mb"] > 0
        assert 0 < r["latency_ms_call_p50"] <= r["latency_ms_call_p99"]
        assert r["latency_ms_frame_p50"] == pytest.approx(r["latency_ms_call_p50"] / r["batch"])
        assert r["peak_cuda_mb"] is None

    skipped = [r for r in report["results"] if r["skipped"]]
    assert [(r["path"], r["batch"]) for r in skipped] == [("pipeline", 1), ("pipeline", 2)]
    assert "not importable" in skipped[0]["skipped"]

    table = capsys.readouterr().out
    assert "x ref" in table and "model_on_device" in table and "pipeline: the streaming pipeline is not importable" in table
    reference_row = next(line for line in table.splitlines() if " reference " in line)
    assert reference_row.rstrip().endswith("1.00")


def test_bench_measures_the_pipeline_through_its_promised_api(random_weights, tmp_path, monkeypatch):
    """A stand-in ``pipeline`` package: bench hands it a config and the Fuser, and reports its summary."""

    @dataclass
    class RunSummary:
        frames_out: int
        wall_s: float
        fps: float
        latency_ms_p50: float
        latency_ms_p99: float
        dropped: int
        unpaired: int

    calls = []

    def run_pipeline(config, fuser=None):
        calls.append((config, fuser))
        return RunSummary(frames_out=4, wall_s=0.5, fps=8.0, latency_ms_p50=20.0, latency_ms_p99=30.0, dropped=0, unpaired=1)

    runner, config_module = types.ModuleType("pipeline.runner"), types.ModuleType("pipeline.config")
    runner.run_pipeline, config_module.PipelineConfig = run_pipeline, object
    monkeypatch.setitem(sys.modules, "pipeline.runner", runner)
    monkeypatch.setitem(sys.modules, "pipeline.config", config_module)
    clips = []

    def fake_config(config_class, ir_path, vi_path, batch, device):
        clips.append((ir_path.stat().st_size, vi_path.stat().st_size))  # the clip exists while the pipeline runs
        return {"batch": batch, "device": device}

    monkeypatch.setattr(bench, "pipeline_config", fake_config)
    out = tmp_path / "bench.json"
    args = ["--weights", str(random_weights["ld-lite"]), "--devices", "cpu", "--paths", "reference", "pipeline", "--out", str(out)]
    assert bench.main([*args, "--batch-sizes", "2", *TINY]) == 0

    (config, fuser), = calls
    assert config == {"batch": 2, "device": "cpu"} and isinstance(fuser, Fuser)
    assert all(size > 0 for size in clips[0])
    pipeline = next(r for r in json.loads(out.read_text())["results"] if r["path"] == "pipeline")
    assert pipeline["fps"] == 8.0 and pipeline["frames"] == 4 and pipeline["latency_ms_frame_p99"] == 30.0
    assert pipeline["extra"] == {"dropped": 0, "unpaired": 1} and pipeline["skipped"] is None


def test_reference_path_fuses_like_the_fuser(random_weights):
    """The host-side colour path of the authors' script and the device-side one agree to a grey level."""
    frames = bench.synthetic_frames(64, 48, count=2)
    model = load_model(random_weights["ld-lite"])
    fuser = Fuser(load_model(random_weights["ld-lite"]), FuserOptions(device="cpu"))
    for visible, ir in zip(frames.visible, frames.ir):
        ours = fuser.fuse_arrays([visible], [ir])[0].astype(int)
        reference = bench.reference_fuse(model.eval(), torch.device("cpu"), visible, ir).astype(int)
        assert reference.shape == ours.shape == (48, 64, 3)
        assert np.abs(reference - ours).max() <= 1  # the reference truncates where we round


def test_bench_argument_errors_are_one_line(random_weights, capsys):
    weights = ["--weights", str(random_weights["ld-lite"])]
    assert bench.main([*weights, "--resolutions", "640by480"]) == 2
    assert "resolution must look like 640x480" in capsys.readouterr().err
    assert bench.main([*weights, "--batch-sizes", "0"]) == 2
    assert "batch sizes must be at least 1" in capsys.readouterr().err


def test_scripts_bench_is_the_same_command():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "usage: ldfusion bench" in result.stdout
