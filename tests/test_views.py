"""Views the fusion worker renders for sinks: the planes an MP4 sink gets."""

import numpy as np
import pytest
import torch

from ldfusion.color import luma_to_unit, planes_to_inputs, ycrcb_to_yuv420p
from ldfusion.video import Planes
from pipeline.views import start_render


def _batch(width: int, height: int = 21, frames: int = 2):
    rng = np.random.default_rng(width)
    chroma = ((height + 1) // 2, (width + 1) // 2)
    visible = [Planes("yuv420p", (rng.integers(16, 236, (height, width), np.uint8), rng.integers(16, 241, chroma, np.uint8),
                                  rng.integers(16, 241, chroma, np.uint8)), full_range=False) for _ in range(frames)]
    ir = [Planes.gray(rng.integers(0, 256, (height, width), np.uint8)) for _ in range(frames)]
    ir_t, vi = planes_to_inputs(ir, visible)
    fused = vi.with_luma(torch.rand(frames, 1, height, width, generator=torch.Generator().manual_seed(width)))
    return fused, ir_t, vi, visible


@pytest.mark.parametrize("width", [32, 33])
def test_side_by_side_planes_equal_the_full_picture_encoded(width):
    """IR | visible | fused as yuv420p: put together from each panel's planes (even widths,
    the visible chroma as decoded) or from the full picture (odd widths), the planes are
    those of the full-resolution picture encoded whole."""
    fused, ir, vi, visible = _batch(width)
    ir_luma = luma_to_unit(ir.mul(255.0).round_().to(torch.uint8), full_range=True)
    ir_picture = torch.cat([ir_luma, torch.full_like(ir_luma, 0.5).expand(-1, 2, -1, -1)], dim=1)  # gray: neutral chroma
    expected = ycrcb_to_yuv420p(torch.cat([ir_picture, vi.full(), fused.full()], dim=-1))
    fused, ir, vi, visible = _batch(width)  # fresh batches: the chroma still as codes
    got = start_render(["side_by_side:yuv420p"], fused, ir, vi).rows()["side_by_side:yuv420p"]  # CPU: nothing in flight
    assert len(got) == 2
    for row, planes in enumerate(got):
        for plane, want in zip(planes, expected):
            assert np.array_equal(plane, want[row].numpy())
    if width % 2 == 0:  # the visible panel's chroma is the decoded chroma, untouched
        u_visible = got[0][1][:, width // 2 : width]
        assert np.array_equal(u_visible, visible[0].data[1])
