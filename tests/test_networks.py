"""The networks: layouts that load the authors' weights, batch invariance, any input size."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from ldfusion.checkpoint import load_model
from ldfusion.networks import build_network
from ldfusion.variants import VARIANTS, get_variant


@contextmanager
def tf32_off():
    """TF32 off for float32 convolutions and matmuls inside the block, restored afterwards.

    On Ampere and newer GPUs cuDNN computes float32 convolutions in TF32 (10-bit mantissa)
    by default, and picks different algorithms for batch 4 and batch 1: on an H200 the
    batched and per-frame outputs then differed by 1.5e-4 (ld-lite) and 8e-4 (ldfusion),
    rounding noise rather than a batching bug. With TF32 off both run in full float32 and
    the 1e-5 tolerance tests batch independence itself. cuDNN autotuning is off as well
    (``Fuser`` turns it on for the whole process), so whichever test ran first cannot
    steer this one to a less exact algorithm. (A no-op on the CPU.)
    """
    saved = _precision_flags()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


def _precision_flags() -> tuple[bool, bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_batch_output_equals_per_frame_output(variant, device):
    torch.manual_seed(1)
    net = build_network(get_variant(variant)).to(device).eval()
    vi, ir = torch.rand(4, 1, 40, 56, device=device), torch.rand(4, 1, 40, 56, device=device)
    with torch.no_grad(), tf32_off():
        batched = net(vi, ir)
        single = torch.cat([net(vi[k : k + 1], ir[k : k + 1]) for k in range(4)])
    assert batched.shape == (4, 1, 40, 56)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    # Frames differ, so outputs must differ too: the batch is not collapsed to one sample.
    assert not torch.allclose(batched[0], batched[1])


def test_tf32_off_restores_the_flags_even_after_an_error():
    """cuDNN's TF32 default must come back: other tests and the pipeline rely on it."""
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # as a Fuser on CUDA leaves it
    try:
        before = _precision_flags()
        with pytest.raises(RuntimeError), tf32_off():
            assert _precision_flags() == (False, False, False)
            raise RuntimeError("a failing comparison")
        assert _precision_flags() == before
    finally:
        torch.backends.cudnn.benchmark = benchmark


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("height,width", [(1, 1), (5, 7), (15, 16), (16, 16), (17, 33), (64, 3), (81, 95), (120, 160)])
def test_output_has_the_input_size(variant, height, width):
    torch.manual_seed(0)
    net = build_network(get_variant(variant)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, height, width), torch.rand(2, 1, height, width))
    assert out.shape == (2, 1, height, width)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_adain_parameters_are_not_stored_on_modules():
    """One instance fused twice with different styles gives each frame its own style."""
    torch.manual_seed(0)
    net = build_network(get_variant("ldfusion")).eval()
    a = (torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    b = (torch.rand(1, 1, 32, 32) * 0.2, torch.rand(1, 1, 32, 32) * 0.2 + 0.8)
    with torch.no_grad():
        first = net(*a)
        net(*b)  # a different frame in between must not leak its AdaIN parameters
        again = net(*a)
    torch.testing.assert_close(first, again)


def test_ldfusion_state_dict_matches_the_authors_layout():
    keys = build_network(get_variant("ldfusion")).state_dict().keys()
    enc = {k.removeprefix("encoder.") for k in keys if k.startswith("encoder.")}
    dec = {k.removeprefix("decoder.") for k in keys if k.startswith("decoder.")}
    assert {k.split(".")[0] for k in enc} == {"content_encoder1", "content_encoder2", "style_encoder1", "style_encoder2"}
    assert {k.split(".")[0] for k in dec} == {"model_local", "model_up", "mlp"}
    # The AdaIN slots carry the authors' unused running stats so Dec_final.pt loads strictly.
    assert "model_local.0.block.2.running_mean" in dec and "model_local.1.block.6.running_var" in dec
    assert "mlp.model.4.weight" in dec  # Linear(16,256), ReLU, Linear(256,256), ReLU, Linear(256,2048)
    sd = build_network(get_variant("ldfusion")).state_dict()
    assert tuple(sd["decoder.mlp.model.4.weight"].shape) == (2048, 256)
    assert tuple(sd["decoder.model_up.0.weight"].shape) == (256, 128, 5, 5)


def test_ld_lite_release_loads_strictly(ldlite_weights):
    net = load_model(ldlite_weights)
    assert net.spec.name == "ld-lite"
    assert sum(p.numel() for p in net.parameters()) == 652_385


def test_adain_matches_the_authors_batch_norm_formulation():
    """The authors apply AdaIN as F.batch_norm over a (1, B*C, H, W) view with assigned weight/bias."""
    import torch.nn.functional as F

    from ldfusion.networks import instance_norm_affine

    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, 9)
    std, mean = torch.rand(3, 5) + 0.5, torch.randn(3, 5)
    b, c, h, w = x.shape
    theirs = F.batch_norm(
        x.contiguous().view(1, b * c, h, w), torch.zeros(b * c), torch.ones(b * c), std.reshape(-1), mean.reshape(-1), True, 0.1, 1e-5
    ).view(b, c, h, w)
    torch.testing.assert_close(instance_norm_affine(x, std, mean), theirs, atol=1e-5, rtol=1e-5)
