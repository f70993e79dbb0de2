"""Across packages: a registration written by `ldfusion calibrate` drives `ldfusion run`."""

from __future__ import annotations

import cv2
import numpy as np

from calibration.cli import main as calibrate_main
from calibration.fileformat import load_registration
from pipeline.runner import run_pipeline
from tests.calibration_helpers import two_modality_scene
from tests.pipeline_helpers import Collect, cpu_fuser, make_config, write_video

SHIFT = (6, 4)  # the IR camera looks 6 px right and 4 px down of the visible one


def test_pipeline_registers_with_a_file_written_by_calibrate(tmp_path, random_weights):
    visible, thermal = two_modality_scene((160, 120), seed=3)
    thermal_u8 = (np.clip(thermal, 0, 1) * 255 + 0.5).astype(np.uint8)
    dx, dy = SHIFT
    ir = cv2.warpAffine(thermal_u8, np.float32([[1, 0, -dx], [0, 1, -dy]]), (160, 120), borderMode=cv2.BORDER_REFLECT)
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vi.png"), cv2.cvtColor(visible, cv2.COLOR_RGB2BGR))

    calib = tmp_path / "calib.yaml"
    assert calibrate_main(["scene", "--ir", str(tmp_path / "ir.png"), "--vi", str(tmp_path / "vi.png"), "--out", str(calib), "-q"]) == 0
    registration = load_registration(calib)
    # H[:2, 2] is where the frame's corner (0, 0) goes: the robust tile fit of a 160x120 pair
    # (whose infrared border is a reflection) extrapolates there to within a pixel.
    np.testing.assert_allclose(registration.H[:2, 2], SHIFT, atol=1.0)

    ir_video = write_video(tmp_path / "ir.mp4", [ir] * 3, 30)
    vi_video = write_video(tmp_path / "vi.mp4", [visible] * 3, 30)
    collect = Collect()
    stream = {"registration": {"calibration": str(calib), "crop": True}}
    run_pipeline(make_config(ir_video, vi_video, stream=stream), cpu_fuser(random_weights["ld-lite"]), extra_sinks=[collect.sink()])
    frame = collect.frames[0]
    # Both outputs are cropped to the common field of view; find where it sits in the visible frame.
    height, width = frame.ir.shape
    match = cv2.matchTemplate(visible[:, :, 0], frame.visible[:, :, 0], cv2.TM_SQDIFF)
    x0, y0 = cv2.minMaxLoc(match)[2]
    truth = thermal_u8[y0 : y0 + height, x0 : x0 + width].astype(int)
    aligned_error = np.abs(frame.ir.astype(int) - truth).mean()
    unaligned_error = np.abs(ir[y0 : y0 + height, x0 : x0 + width].astype(int) - truth).mean()
    assert aligned_error < 3.0 < unaligned_error
