"""What the sinks ask for: renderings of a fused batch, made on the fusion device.

Each sink names the views it needs (``Sink.views``); the fusion worker renders exactly
those, batched, on the device, and downloads each once. A view is ``"<content>:<format>"``:

- content ``fused``, ``side_by_side`` (IR | visible | fused), ``ir`` or ``visible`` (the
  registered inputs);
- format ``yuv420p`` (limited-range planes Y, U, V: what the MP4 encoder takes, with no RGB
  in between), ``rgb24`` / ``bgr24`` ((H, W, 3) uint8) or ``gray`` ((H, W) uint8 full-range
  luma);
- ``device``: the batch's tensors on the fusion device, not downloaded (``DeviceFrame``),
  for a consumer in the same process.

Convention: the inputs are Y, Cr, Cb batches (``ldfusion.color.YCrCbBatch``: 4:2:0 chroma
stays at half resolution, so ``fused:yuv420p`` needs no resampling) and (B, 1, H, W) IR
luma, float in [0, 1], full range.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ldfusion.color import YCrCbBatch, gray_batch, luma_to_unit, ycrcb_to_rgb, ycrcb_to_rgb_u8, ycrcb_to_yuv420p
from ldfusion.inference import to_uint8

CONTENTS = ("fused", "side_by_side", "ir", "visible")
FORMATS = ("yuv420p", "rgb24", "bgr24", "gray")
DEVICE = "device"


def view_name(content: str, pixel_format: str) -> str:
    name = f"{content}:{pixel_format}"
    check_view(name)
    return name


def check_view(name: object) -> None:
    """A view a sink may ask for: ``device`` or ``<content>:<format>``. An unknown one was
    rendered as something else (``fused:bgr`` as RGB, ``fussed:rgb24`` side by side)."""
    if name == DEVICE:
        return
    content, _, pixel_format = str(name).partition(":")
    if not isinstance(name, str) or content not in CONTENTS or pixel_format not in FORMATS:
        raise ValueError(f"no view {name!r}: a view is {DEVICE!r} or <content>:<format>, contents {', '.join(CONTENTS)}, "
                         f"formats {', '.join(FORMATS)}")


class RenderedViews:
    """One batch's views: device items, and host tensors whose copies may still be running.

    On CUDA the downloads are queued (``non_blocking``, into pinned memory from PyTorch's
    caching host allocator) so the fusion thread can prepare the next batch meanwhile;
    ``rows`` reads them, and must wait until the copies are done (the fusion worker waits
    on an event recorded after them; on the CPU there is nothing to wait for).
    """

    def __init__(self) -> None:
        self._device: dict[str, list] = {}
        self._host: dict[str, tuple[Tensor, ...]] = {}  # view -> (B, ...) uint8 tensors: one, or planes Y, U, V

    def add_device(self, view: str, items: list) -> None:
        self._device[view] = items

    def add_host(self, view: str, *tensors: Tensor) -> None:
        """A packed picture (one tensor) or planes Y, U, V (three), each queued for download."""
        self._host[view] = tuple(_to_host(tensor) for tensor in tensors)

    def rows(self) -> dict[str, list]:
        """{view: one item per row}; host views are numpy arrays (or tuples of planes)."""
        out = dict(self._device)
        for view, tensors in self._host.items():
            arrays = [tensor.numpy() for tensor in tensors]
            out[view] = list(zip(*arrays)) if len(arrays) == 3 else list(arrays[0])
        return out


def start_render(views: Iterable[str], fused: YCrCbBatch, ir: Tensor, visible: YCrCbBatch) -> RenderedViews:
    """Render ``views`` on the device and queue their downloads (see ``RenderedViews``)."""
    out = RenderedViews()
    for view in sorted(set(views)):
        if view == DEVICE:
            ycrcb = fused.full()
            rgb = ycrcb_to_rgb(ycrcb, fused.matrix).clamp_(0.0, 1.0)
            out.add_device(view, [(rgb[i], ycrcb[i], ir[i]) for i in range(ycrcb.shape[0])])
            continue
        content, pixel_format = view.split(":")
        if pixel_format == "yuv420p":
            out.add_host(view, *_yuv420p(content, fused, ir, visible))
        else:
            out.add_host(view, _render_packed(_content(content, fused, ir, visible), pixel_format))
    return out


def _to_host(tensor: Tensor) -> Tensor:
    """A queued copy to host memory (pinned, on CUDA); the tensor itself on the CPU."""
    return tensor.to("cpu", non_blocking=True)


def _content(content: str, fused: YCrCbBatch, ir: Tensor, visible: YCrCbBatch) -> YCrCbBatch:
    """Y, Cr, Cb of the content."""
    if content == "fused":
        return fused
    if content == "visible":
        return visible
    if content == "ir":
        return _ir_batch(ir)
    # The gray IR panel's neutral chroma is the same in every matrix: the visible one's holds for all three.
    return YCrCbBatch.from_full(torch.cat([_ir_batch(ir).full(), visible.full(), fused.full()], dim=-1), visible.matrix)


def _ir_batch(ir: Tensor) -> YCrCbBatch:
    """The IR as a gray 4:2:0 picture, its luma rounded to 8 bits."""
    return gray_batch(luma_to_unit(ir.mul(255.0).round_().to(torch.uint8), full_range=True))


def _yuv420p(content: str, fused: YCrCbBatch, ir: Tensor, visible: YCrCbBatch) -> tuple[Tensor, Tensor, Tensor]:
    """Limited-range planes Y, U, V of the content.

    Side by side is put together from each panel's planes (the visible chroma as decoded, no
    float round trip) when the panels' 2x2 chroma blocks line up (an even width); otherwise
    from the full-resolution picture. At 640x480 on one core: 18.5 ms a frame through the
    picture, 1.8 ms this way, the conversion of the batch included.
    """
    if content == "side_by_side" and ir.shape[-1] % 2 == 0:
        panels = [ycrcb_to_yuv420p(panel) for panel in (_ir_batch(ir), visible, fused)]
        return tuple(torch.cat(planes, dim=-1) for planes in zip(*panels))  # type: ignore[return-value]
    return ycrcb_to_yuv420p(_content(content, fused, ir, visible))


def _render_packed(ycrcb: YCrCbBatch | Tensor, pixel_format: str) -> Tensor:
    """(B, H, W) gray or (B, H, W, 3) RGB / BGR uint8, on the device."""
    if pixel_format == "gray":
        return to_uint8((ycrcb.y if isinstance(ycrcb, YCrCbBatch) else ycrcb[:, :1])[:, 0])
    rgb = ycrcb_to_rgb_u8(ycrcb)
    return rgb.flip(-1) if pixel_format == "bgr24" else rgb
