"""FixedBatch: the network sees one batch shape, and every real row comes back unchanged, in order."""

from __future__ import annotations

import pytest
import torch

from ldfusion.fixed_batch import FixedBatch, pad_rows
from ldfusion.networks import build_network
from ldfusion.variants import get_variant


def _recording(shapes: list):
    def fn(vi: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(vi.shape))
        return vi * 2 + ir  # row-wise, so each output row depends on its own inputs only

    return fn


@pytest.mark.parametrize("rows", [1, 3, 7, 8, 9, 16, 17, 33])
def test_every_call_has_the_fixed_shape_and_rows_come_back_in_order(rows):
    vi, ir = torch.arange(rows, dtype=torch.float32).view(rows, 1, 1, 1).expand(rows, 1, 2, 3), torch.ones(rows, 1, 2, 3)
    shapes: list = []
    fixed = FixedBatch(8)
    out = fixed(_recording(shapes), vi, ir)
    assert set(shapes) == {(8, 1, 2, 3)}
    assert len(shapes) == -(-rows // 8)
    torch.testing.assert_close(out, vi * 2 + ir)
    assert fixed.padded_rows == len(shapes) * 8 - rows


def test_a_full_batch_is_passed_through_without_a_copy():
    x = torch.rand(4, 1, 5, 5)
    seen = []
    FixedBatch(4)(lambda t: seen.append(t) or t, x)
    assert seen[0].data_ptr() == x.data_ptr() and seen[0].shape == x.shape  # a view of x, no copy


def test_padding_repeats_the_last_row_not_zeros():
    x = torch.tensor([[1.0], [2.0], [5.0]])
    torch.testing.assert_close(pad_rows(x, 5), torch.tensor([[1.0], [2.0], [5.0], [5.0], [5.0]]))


def test_padded_network_output_equals_the_unpadded_output():
    """The point of it all: the padded rows do not change the real ones (batch invariance)."""
    torch.manual_seed(0)
    net = build_network(get_variant("ld-lite")).eval()
    vi, ir = torch.rand(3, 1, 24, 32), torch.rand(3, 1, 24, 32)
    with torch.no_grad():
        torch.testing.assert_close(FixedBatch(8)(net, vi, ir), net(vi, ir), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "inputs,message",
    [
        ((torch.zeros(3, 1), torch.zeros(2, 1)), "share a non-zero batch size"),
        ((torch.zeros(0, 1),), "share a non-zero batch size"),
        ((), "at least one input"),
    ],
)
def test_bad_inputs_name_the_problem(inputs, message):
    with pytest.raises(ValueError, match=message):
        FixedBatch(4)(lambda *x: x[0], *inputs)


def test_a_function_that_drops_rows_is_caught_not_sliced_silently():
    with pytest.raises(ValueError, match="returned 1 rows for a batch of 4"):
        FixedBatch(4)(lambda x: x[:1], torch.zeros(2, 3))


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        FixedBatch(0)
