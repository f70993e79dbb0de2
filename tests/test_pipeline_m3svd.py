"""A short piece of the real M3SVD pairs (skipped when ../shared/data is absent)."""

from __future__ import annotations

import pytest

from ldfusion.config import from_dict
from pipeline.config import PipelineConfig
from pipeline.runner import run_pipeline
from tests.pipeline_helpers import cpu_fuser, read_video

pytestmark = pytest.mark.shared_data


def test_m3svd_pairs_give_the_shorter_inputs_frames_at_the_inputs_rate(shared_data, random_weights, tmp_path):
    m3svd = shared_data / "video" / "m3svd"
    # Two pairs in one run (30 and 22 fps); the IR input is cut shorter than the visible one in
    # the first and longer in the second, so "the shorter input" is each side once.
    pieces = {"0111_1716": (5, 4, 30), "1230_1202": (3, 4, 22)}  # id: (ir frames, visible frames, fps)
    streams = [
        {
            "id": name,
            "ir": {"kind": "video", "path": str(m3svd / "infrared" / f"{name}.mp4"), "max_frames": n_ir},
            "visible": {"kind": "video", "path": str(m3svd / "visible" / f"{name}.mp4"), "max_frames": n_vi},
        }
        for name, (n_ir, n_vi, _) in pieces.items()
    ]
    config = from_dict(PipelineConfig, {
        "streams": streams,
        "sinks": [{"kind": "mp4", "path": "{stream}.mp4"}],
        "model": {"batch_size": 4},
        "run": {"out_dir": str(tmp_path), "progress": False},
    })
    summary = run_pipeline(config, cpu_fuser(random_weights["ld-lite"]))
    for name, (n_ir, n_vi, fps) in pieces.items():
        video = read_video(tmp_path / f"{name}.mp4")
        assert len(video["frames"]) == min(n_ir, n_vi)
        assert video["rate"] == fps
        assert video["frames"][0].shape == (480, 640, 3)
        assert all(b > a for a, b in zip(video["pts"], video["pts"][1:]))
    assert summary.frames_out == 4 + 3


def test_a_fused_video_frame_agrees_with_the_image_path(shared_data, ldlite_weights):
    """The video path (the video's own planes) and the image path (RGB -> the authors' YCrCb)
    give fused frames within the PSNR documented in the README (>= 49.9 dB on M3SVD)."""
    import numpy as np
    import torch

    from ldfusion.inference import Fuser, FuserOptions, to_uint8
    from ldfusion.video import VideoReader
    from pipeline import fused_frames

    m3svd = shared_data / "video" / "m3svd"
    ir, vi = m3svd / "infrared" / "0113_1714.mp4", m3svd / "visible" / "0113_1714.mp4"
    fuser = Fuser.from_weights(ldlite_weights, None, FuserOptions(device="cpu"))
    config = from_dict(PipelineConfig, {
        "streams": [{"id": "s", "ir": {"path": str(ir)}, "visible": {"path": str(vi)}}],
        "model": {"batch_size": 1, "smoothing": False},
        "run": {"max_frames": 2, "progress": False},
    })
    video_path = list(fused_frames(config, fuser))
    with VideoReader(ir, luma_only=True) as reader:
        ir_images = [image for _, image in zip(range(4), reader.images())]
    with VideoReader(vi) as reader:
        vi_images = [image for _, image in zip(range(2), reader.images())]
    for frame in video_path:
        image_path = fuser.fuse_arrays([vi_images[frame.meta.vi_index]], [ir_images[frame.meta.ir_index]])[0].astype(np.float64)
        ours = to_uint8(frame.rgb).permute(1, 2, 0).numpy().astype(np.float64)
        psnr = 10 * np.log10(255.0**2 / np.mean((ours - image_path) ** 2))
        assert psnr >= 49.9, psnr
    assert isinstance(video_path[0].rgb, torch.Tensor)
