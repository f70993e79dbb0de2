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
