"""Host frames to the device: ``Fuser.fuse_arrays``' uint8 path and the pinned staging ring."""

import numpy as np
import pytest
import torch

from ldfusion.inference import Fuser, FuserOptions
from ldfusion.networks import build_network
from ldfusion.variants import get_variant
from ldfusion.staging import PinnedStaging


def _fuser(device: torch.device) -> Fuser:
    torch.manual_seed(0)
    # float32 everywhere: the two paths must agree to the last code, not to fp16's precision
    return Fuser(build_network(get_variant("ld-lite")), FuserOptions(device=str(device), half=False, channels_last=False, backend="torch"))


@pytest.mark.parametrize("colour", [True, False])
def test_uint8_frames_fuse_as_their_float_values_do(device, colour):
    """8-bit frames go up as uint8 and are scaled on the device; frames of other depths are
    scaled on the host. Both must give the same fused frames."""
    rng = np.random.default_rng(1)
    shape = (3, 24, 40, 3) if colour else (3, 24, 40)
    visible = rng.integers(0, 256, shape, dtype=np.uint8)
    ir = rng.integers(0, 256, (3, 24, 40), dtype=np.uint8)
    fuser = _fuser(device)
    as_codes = fuser.fuse_arrays(list(visible), list(ir))
    as_floats = fuser.fuse_arrays(list(visible.astype(np.float32) / 255), list(ir.astype(np.float32) / 255))
    assert as_codes[0].shape == shape[1:] and as_codes[0].dtype == np.uint8
    for got, expected in zip(as_codes, as_floats):
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_frames_of_one_batch_that_differ_in_size_are_a_value_error():
    fuser = _fuser(torch.device("cpu"))
    visible = [np.zeros((24, 40, 3), np.uint8), np.zeros((24, 42, 3), np.uint8)]
    with pytest.raises(ValueError, match="frames of one batch differ in size"):
        fuser.fuse_arrays(visible, [np.zeros((24, 40), np.uint8)] * 2)


def test_pinned_staging_reuses_its_buffers_safely_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("pinned staging is for CUDA")
    staging = PinnedStaging(torch.device("cuda"), depth=2)
    arrays = [[np.full((4, 6), 10 * k + i, np.uint8) for i in range(3)] for k in range(5)]
    uploaded = [staging.upload(batch) for batch in arrays]
    for batch, tensor in zip(arrays, uploaded):
        assert torch.equal(tensor.cpu(), torch.from_numpy(np.stack(batch)))
    assert len(staging._rings) == 1 and len(next(iter(staging._rings.values()))) == 2
