"""``ldfusion run``: help, overrides, and stopping with SIGINT/SIGTERM half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import load_pipeline_config
from tests.pipeline_helpers import marked_video, read_video

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "Ctrl-C" in out and "--set KEY=VALUE" in out and "configs/demo_m3svd.yaml" in out


def test_shipped_configs_load():
    for name in ("video_to_mp4", "live_to_zmq", "demo_m3svd"):
        config = load_pipeline_config(REPO_ROOT / "configs" / f"{name}.yaml")
        assert config.streams
    demo = load_pipeline_config(REPO_ROOT / "configs" / "demo_m3svd.yaml")
    assert len(demo.streams) == 3 and {s.kind for s in demo.sinks} == {"mp4"}
    assert load_pipeline_config(REPO_ROOT / "configs" / "live_to_zmq.yaml").live


def test_overrides_reach_into_lists_and_are_checked(tmp_path, capsys):
    config = load_pipeline_config(REPO_ROOT / "configs" / "demo_m3svd.yaml", ["streams.1.sync.slop_s=0.02", "model.batch_size=2"])
    assert config.streams[1].sync.slop_s == 0.02 and config.model.batch_size == 2
    code = cli.main([str(REPO_ROOT / "configs" / "demo_m3svd.yaml"), "--set", "model.batch_size=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "batch_size must be at least 1" in err[0]
    code = cli.main([str(REPO_ROOT / "configs" / "demo_m3svd.yaml"), "--set", "streams.5.id=x"])
    assert code == 2 and "streams has 3 item(s)" in capsys.readouterr().err


def test_print_config_shows_flags_applied(capsys):
    code = cli.main([str(REPO_ROOT / "configs" / "video_to_mp4.yaml"), "--device", "cpu", "--out", "elsewhere", "--print-config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert code == 0 and printed["model"]["device"] == "cpu" and printed["run"]["out_dir"] == "elsewhere"
    assert printed["model"]["int8"] is None  # unset: ldfusion decides (int8 for weights: auto on the CPU)
    for flag, value in (("--int8", True), ("--no-int8", False)):
        assert cli.main([str(REPO_ROOT / "configs" / "video_to_mp4.yaml"), flag, "--print-config"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["model"]["int8"] is value
    assert printed["model"]["precision"] == "auto" and printed["run"]["progress"] is True
    for quiet in ("-q", "--no-progress"):  # -q silences the progress bar too, as in fuse, eval and demo
        assert cli.main([str(REPO_ROOT / "configs" / "video_to_mp4.yaml"), quiet, "--print-config"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["run"]["progress"] is False
    assert cli.main([str(REPO_ROOT / "configs" / "video_to_mp4.yaml"), "--precision", "f32", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["precision"] == "f32"
    code = cli.main([str(REPO_ROOT / "configs" / "video_to_mp4.yaml"), "--set", "model.precision=fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "precision must be one of auto, f32, bf16" in err[0]


@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGINT, 130, id="SIGINT"), pytest.param(signal.SIGTERM, 143, id="SIGTERM")])
def test_a_signal_half_way_leaves_a_valid_mp4_of_the_frames_fused_so_far(tmp_path, random_weights, sig, code):
    total = 150  # 5 s at 30 fps, read in real time
    ir = marked_video(tmp_path / "ir.mp4", total, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", total, 30, seed=2)
    config = {
        "streams": [{"id": "cam0", "ir": {"path": str(ir)}, "visible": {"path": str(vi)}}],
        "sinks": [{"kind": "mp4", "path": "o.mp4"}, {"kind": "png", "path": "png"}],
        "run": {"out_dir": str(tmp_path / "out"), "realtime": True, "progress": False},
        "model": {"device": "cpu", "weights": str(random_weights["ld-lite"])},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "ldfusion_cli.main", "run", str(tmp_path / "run.yaml"), "-q"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        png = tmp_path / "out" / "png"
        deadline = time.monotonic() + 120
        while not (png.is_dir() and len(list(png.iterdir())) >= 10):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.05)
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, err
    assert "Traceback" not in err
    assert f"stopped by {signal.Signals(sig).name}" in err
    video = read_video(tmp_path / "out" / "o.mp4")
    written = len(list(png.iterdir()))
    assert 10 <= len(video["frames"]) < total
    assert len(video["frames"]) == written  # every frame fused before the signal is in the MP4
    assert all(b > a for a, b in zip(video["pts"], video["pts"][1:]))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_start_up_ends_the_run_before_any_frame(tmp_path, random_weights, monkeypatch, sig):
    """A Ctrl-C while OpenVINO compiled or encoders were set up was raised inside native code:
    lost (the run went on, exit 0) or a crash. It is recorded and ends start-up at its next step."""
    from pipeline.runner import Pipeline
    from tests.pipeline_helpers import cpu_fuser, make_config

    ir = marked_video(tmp_path / "ir.mp4", 6, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 6, 30, seed=2)
    config = make_config(ir, vi, sinks=[{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path / "out")

    loaded = []

    def load_while_signalled(self):
        os.kill(os.getpid(), sig)  # arrives while the network loads (in native code, where it was lost)
        loaded.append(True)  # so the step is not torn apart half-way: it ends, then the run does
        return cpu_fuser(random_weights["ld-lite"])

    monkeypatch.setattr(Pipeline, "_load_fuser", load_while_signalled)
    expected = KeyboardInterrupt if sig == signal.SIGINT else SystemExit
    with pytest.raises(expected) as ended:
        Pipeline(config).run()
    if sig == signal.SIGTERM:
        assert ended.value.code == 143
    assert loaded == [True]
    assert not (tmp_path / "out" / "o.mp4").exists()
    assert signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL)  # the run's handler is gone again
