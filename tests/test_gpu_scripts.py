"""The GPU check scripts parse, explain themselves, refuse unknown options; the codec probe runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["scripts/gpu_check.sh", "scripts/gpu_wheels.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_valid_bash(script):
    subprocess.run(["bash", "-n", str(REPO / script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_and_unknown_option(script):
    shown = subprocess.run(["bash", str(REPO / script), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "device" in shown.stdout
    wrong = subprocess.run(["bash", str(REPO / script), "--bogus"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option --bogus" in wrong.stderr


def test_gpu_check_names_the_cli_module_in_one_place():
    text = (REPO / "scripts/gpu_check.sh").read_text()
    assert text.count("ldfusion_cli.main") == 1  # the shim's target, changed in one line when the dispatcher moves
    assert "-m ldfusion_cli.main" not in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU answer")
def test_codec_probe_reports_the_cpu_codecs_and_why(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import codec_probe
    finally:
        sys.path.pop(0)
    out = tmp_path / "codecs.json"
    clip = tmp_path / "clip.mp4"
    import numpy as np

    from ldfusion.video import VideoWriter

    with VideoWriter(clip, 25) as writer:
        for _ in range(3):
            writer.write_image(np.zeros((32, 32), np.uint8))
    assert codec_probe.main(["--clip", str(clip), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["encoder_auto_640x512"] == "libx264"
    assert result["h264_nvenc_640x512"] != "opens" and result["nvdec_h264"] != "opens"
    assert result["decode_cpu"]["frames"] == 3 and "decode_nvdec" not in result


def _graphs_check():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import graphs_check
    finally:
        sys.path.pop(0)
    return graphs_check


def test_graphs_check_compares_frames_and_names_the_largest_difference(tmp_path):
    import cv2
    import numpy as np

    reference, other = tmp_path / "ref", tmp_path / "other"
    reference.mkdir()
    other.mkdir()
    frame = np.full((8, 8, 3), 100, np.uint8)
    for name, shift in (("000000.png", 0), ("000001.png", 2)):
        cv2.imwrite(str(reference / name), frame)
        cv2.imwrite(str(other / name), frame + shift)
    result = _graphs_check().compare(reference, other)
    assert result["frames"] == result["reference_frames"] == 2
    assert result["identical_frames"] == 1 and result["largest_difference"] == 2
    assert abs(result["psnr_worst_db"] - 10 * np.log10(255**2 / 4)) < 1e-6


def test_graphs_check_runs_two_sizes_and_a_live_run_on_the_cpu(tmp_path):
    from tests.pipeline_helpers import marked_video

    ir, vi = marked_video(tmp_path / "ir.mp4", 4, 30, seed=1), marked_video(tmp_path / "vi.mp4", 4, 30, seed=2)
    out = tmp_path / "graphs.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts/graphs_check.py"), "--ir", str(ir), "--vi", str(vi),
                           "--device", "cpu", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    for setting in ("default", "reduce-overhead"):  # eager on the CPU: the same frames as "off"
        for stream in ("full", "half"):
            assert result["file"][setting]["against_eager"][stream]["identical_frames"] == 4
    assert result["file"]["off"]["frames"] == 8 and result["live"]["frames"] >= 1
