import cv2
import numpy as np
import torch

from ldfusion.color import merge_fused_y, rgb_to_y, rgb_to_ycrcb, ycrcb_to_rgb


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def test_matches_opencv_float_conversion_both_ways():
    rgb = np.random.default_rng(0).random((9, 11, 3), dtype=np.float32)
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    np.testing.assert_allclose(rgb_to_ycrcb(_to_tensor(rgb))[0].permute(1, 2, 0).numpy(), ycrcb, atol=1e-6)
    np.testing.assert_allclose(
        ycrcb_to_rgb(_to_tensor(ycrcb))[0].permute(1, 2, 0).numpy(), cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), atol=1e-6
    )


def test_merging_the_visible_y_back_restores_the_visible_image():
    rgb = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(merge_fused_y(rgb_to_y(rgb), rgb), rgb, atol=1e-3, rtol=0)


def test_gray_visible_gives_gray_output():
    gray = torch.rand(1, 1, 8, 8).expand(1, 3, 8, 8)
    fused_y = torch.rand(1, 1, 8, 8)
    out = merge_fused_y(fused_y, gray)
    torch.testing.assert_close(out, fused_y.expand(1, 3, 8, 8), atol=1e-3, rtol=0)


def test_a_batch_of_streams_with_other_matrices_turns_each_row_into_its_own_rgb(tmp_path):
    """Streams of one size share a batch (``YCrCbBatch.cat``); a BT.709 camera beside a BT.601
    one must each get their own matrix."""
    from ldfusion.color import YCrCbBatch, planes_to_batch, ycrcb_to_rgb_u8
    from ldfusion.video import VideoReader
    from tests.pipeline_helpers import tagged_colour_clip

    rgb = np.empty((48, 64, 3), np.uint8)
    rgb[:] = (39, 200, 79)
    parts = []
    for colorspace in (1, 2, 1):
        with VideoReader(tagged_colour_clip(tmp_path / f"{colorspace}.mp4", rgb, colorspace, n=1)) as reader:
            parts.append(planes_to_batch([next(iter(reader)).planes]))
    batch = YCrCbBatch.cat(parts)
    assert batch.matrix == ("bt709", "bt601", "bt709")
    back = ycrcb_to_rgb_u8(batch).numpy().astype(int)
    assert np.abs(back - rgb).max() <= 3
