"""``ldfusion bench`` at a tiny size: the JSON it writes, the table, and the reference path's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ldfusion.checkpoint import load_model
from ldfusion_cli import bench as bench_cli
from pipeline import bench
from ldfusion.inference import Fuser, FuserOptions

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ("--resolutions", "64x48", "--frames", "2", "--warmup", "1", "-q")


def test_bench_writes_json_and_prints_ratios(random_weights, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--weights", str(random_weights["ld-lite"]), "--devices", "cpu", "--batch-sizes", "1", "2", "--out", str(out)]
    assert bench_cli.main([*args, "--paths", "reference", "model", "model_on_device", *TINY]) == 0
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

    assert not [r for r in report["results"] if r["skipped"]]

    table = capsys.readouterr().out
    assert "x ref" in table and "model_on_device" in table
    reference_row = next(line for line in table.splitlines() if " reference " in line)
    assert reference_row.rstrip().endswith("1.00")


def test_bench_measures_the_real_pipeline(random_weights, tmp_path):
    """The pipeline path runs the streaming pipeline on the clip and reports its summary."""
    out = tmp_path / "bench.json"
    args = ["--weights", str(random_weights["ld-lite"]), "--devices", "cpu", "--paths", "reference", "pipeline", "--out", str(out)]
    assert bench_cli.main([*args, "--batch-sizes", "2", "--resolutions", "64x48", "--frames", "6", "--warmup", "1", "-q"]) == 0

    pipeline = next(r for r in json.loads(out.read_text())["results"] if r["path"] == "pipeline")
    assert pipeline["frames"] == 6 and pipeline["batch"] == 2 and pipeline["skipped"] is None
    assert pipeline["fps"] > 0 and 0 < pipeline["latency_ms_frame_p50"] <= pipeline["latency_ms_frame_p99"]
    # explicit weights run in float (int8 only where weights: auto has a shipped export); two
    # OpenVINO calls in flight, as in a file-mode run
    assert pipeline["extra"] == {"dropped": 0, "unpaired": 0, "backend": "openvino", "int8": False, "precision": "f32", "compiled": False,
                                 "cuda_graphs": False, "calls_in_flight": 2}


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
    assert bench_cli.main([*weights, "--resolutions", "640by480"]) == 2
    assert "resolution must look like 640x480" in capsys.readouterr().err
    assert bench_cli.main([*weights, "--batch-sizes", "0"]) == 2
    assert "batch sizes must be at least 1" in capsys.readouterr().err
    for size in ("8200x16", "20000x20000"):  # past the test clips' codec (a wrong reason), or 24 GB and killed
        assert bench_cli.main([*weights, "--resolutions", size]) == 2
        assert f"resolution '{size}' is beyond what bench measures" in capsys.readouterr().err


def test_scripts_bench_is_the_same_command():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "bench.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "usage: ldfusion bench" in result.stdout


def test_bench_decode_and_passthrough_paths_with_several_streams(random_weights, tmp_path):
    out = tmp_path / "bench.json"
    args = ["--weights", str(random_weights["ld-lite"]), "--devices", "cpu", "--paths", "decode", "passthrough", "--out", str(out)]
    assert bench_cli.main([*args, "--streams", "2", "--batch-sizes", "2", "--resolutions", "64x48", "--frames", "6", "-q"]) == 0
    results = {r["path"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"decode", "passthrough"}
    for r in results.values():
        assert r["streams"] == 2 and r["frames"] == 12 and r["fps"] > 0 and r["device"] == "cpu" and r["resolution"] == "64x48"
    assert results["passthrough"]["batch"] == 2
    (ratio,) = json.loads(out.read_text())["ratios"]
    assert (ratio["of"], ratio["over"], ratio["batch"], ratio["streams"]) == ("passthrough", "decode", 2, 2)
    assert ratio["ratio"] == pytest.approx(results["passthrough"]["fps"] / results["decode"]["fps"])


def test_same_run_ratios_pair_paths_of_one_device_size_and_stream_count():
    """passthrough/decode at every batch (decode is measured once), pipeline/model at the same
    batch only; other devices, sizes and stream counts, and skipped paths, never mix in."""
    m = lambda path, fps, batch=1, device="cpu", resolution="64x48", streams=1, skipped=None: bench.Measurement(  # noqa: E731
        path, device, resolution, batch, streams, fps=fps, skipped=skipped)
    results = [
        m("decode", 1000.0), m("passthrough", 400.0), m("passthrough", 600.0, batch=4),
        m("model", 10.0, batch=1), m("pipeline", 9.0, batch=1), m("pipeline", 12.0, batch=4),  # no model at batch 4
        m("decode", 50.0, device="cuda"), m("passthrough", 30.0, streams=2), m("model", 0.0, batch=4, skipped="no backend"),
    ]
    got = {(r["of"], r["batch"], r["device"], r["streams"]): round(r["ratio"], 6) for r in bench.same_run_ratios(results)}
    assert got == {("passthrough", 1, "cpu", 1): 0.4, ("passthrough", 4, "cpu", 1): 0.6, ("pipeline", 1, "cpu", 1): 0.9}
    assert "passthrough/decode 0.60x" in bench.format_table(results)


def test_passthrough_network_returns_the_visible_luma():
    y = torch.rand(2, 1, 8, 8)
    fuser = Fuser(bench.IdentityFusion(), FuserOptions(device="cpu"))
    assert torch.equal(fuser.fuse_y(y, torch.zeros_like(y)), y)


@pytest.mark.parametrize("streams", ["0", "100000"])
def test_streams_must_be_within_what_a_machine_opens(random_weights, capsys, streams):
    """100000 ran out of file handles and blamed bench's own clip ("Too many open files ... not a video")."""
    assert bench_cli.main(["--weights", str(random_weights["ld-lite"]), "--streams", streams]) == 2
    assert f"--streams must be within 1..{bench.MAX_STREAMS} (each stream pair opens two files and runs three threads); got {streams}" in capsys.readouterr().err


def test_bench_measures_the_compiled_network(random_weights, tmp_path):
    """``--compile on`` runs the model paths through torch.compile (aot_eager here: inductor takes
    minutes on a 2-core CPU) and says so in the JSON; ``off`` (the default) measures eager."""
    results = {}
    for mode in ("on", "off"):
        out = tmp_path / f"{mode}.json"
        args = ["--weights", str(random_weights["ld-lite"]), "--devices", "cpu", "--backend", "torch", "--paths", "model", "model_on_device",
                "--out", str(out)]
        assert bench_cli.main([*args, "--batch-sizes", "2", "--compile", mode, "--compile-backend", "aot_eager", *TINY]) == 0
        report = json.loads(out.read_text())
        assert report["settings"]["compile"] == mode
        results[mode] = {r["path"]: r for r in report["results"]}
    assert {path: r["extra"]["compiled"] for path, r in results["on"].items()} == {"model": True, "model_on_device": True}
    assert {path: r["extra"]["compiled"] for path, r in results["off"].items()} == {"model": False, "model_on_device": False}
    assert not any(r["extra"]["cuda_graphs"] for r in results["on"].values())  # compile_mode auto: no CUDA graphs on the CPU
    assert all(r["fps"] > 0 and r["frames"] == 2 for r in results["on"].values())


def test_bench_rejects_an_unknown_compile_mode(random_weights, capsys):
    with pytest.raises(SystemExit):
        bench_cli.main(["--weights", str(random_weights["ld-lite"]), "--compile", "fast", *TINY])
    assert "--compile" in capsys.readouterr().err


def test_bench_rejects_an_unknown_compile_backend_before_measuring(random_weights, tmp_path, capsys):
    out = tmp_path / "b.json"
    code = bench_cli.main(["--weights", str(random_weights["ld-lite"]), "--compile", "on", "--compile-backend", "inductr",
                           "--out", str(out), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--compile-backend 'inductr' is not a torch.compile backend" in err[0]
    assert "inductor" in err[0] and not out.exists()
