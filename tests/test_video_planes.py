"""The one video layer and the plane data path: odd sizes, deep and gray video, colour round trips."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from ldfusion.color import planes_to_image, planes_to_luma, planes_to_ycrcb, rgb_to_ycrcb, ycrcb_to_yuv420p
from ldfusion.imageio import infrared_to_unit
from ldfusion.video import Planes, VideoReader, VideoWriter, probe_frames
from tests.pipeline_helpers import tagged_colour_clip, texture


def _raw_video(path, frames: list[np.ndarray], pix_fmt: str) -> None:
    """A lossless clip (FFV1) in a layout the pipeline's MP4s never use: deep or gray."""
    with VideoWriter(path, 10, codec="ffv1", crf=None, preset=None, pixel_format=pix_fmt) as writer:
        for image in frames:
            writer.write_image(image)


@pytest.mark.parametrize("size", [(51, 37), (64, 48), (9, 8)])
def test_planes_survive_the_device_round_trip_exactly(size):
    """yuv420p -> full-range Y, Cr, Cb on the device -> yuv420p gives the same planes, odd sizes included."""
    width, height = size
    rng = np.random.default_rng(1)
    y = rng.integers(16, 236, (height, width), dtype=np.uint8)
    u, v = (rng.integers(16, 241, ((height + 1) // 2, (width + 1) // 2), dtype=np.uint8) for _ in range(2))
    back = ycrcb_to_yuv420p(planes_to_ycrcb([Planes("yuv420p", (y, u, v), full_range=False)]))
    for got, expected in zip(back, (y, u, v)):
        assert np.array_equal(got[0].numpy(), expected)


@pytest.mark.parametrize("full_range", [False, True])
def test_video_chroma_reaches_the_encoder_as_it_was_decoded(full_range):
    """The fusion changes only Y: a limited-range video's chroma codes (V, U) go to the
    yuv420p encoder untouched, batches joined included, even codes outside 16..240 that a
    float round trip would clamp. Full-range chroma is range-converted, as before."""
    from ldfusion.color import YCrCbBatch, planes_to_batch

    rng = np.random.default_rng(8)
    frames = [tuple(rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((37, 51), (19, 26), (19, 26))) for _ in range(2)]
    batches = [planes_to_batch([Planes("yuv420p", f, full_range=full_range)]) for f in frames]
    joined = YCrCbBatch.cat(batches)
    fused = joined.with_luma(torch.rand(2, 1, 37, 51))
    _, u, v = ycrcb_to_yuv420p(fused)
    for row, (_, u_in, v_in) in enumerate(frames):
        if full_range:
            assert int(u[row].min()) >= 16 and int(u[row].max()) <= 240
            assert np.abs(u[row].numpy().astype(int) - (16 + u_in.astype(int) * 224 / 255)).max() <= 0.5 + 1e-6
        else:
            assert np.array_equal(u[row].numpy(), u_in) and np.array_equal(v[row].numpy(), v_in)
    if not full_range:  # once read as floats, the chroma takes the float path: clamped to the legal range
        assert fused.crcb.shape == (2, 2, 19, 26)
        _, u_float, _ = ycrcb_to_yuv420p(fused)
        assert np.array_equal(u_float.numpy(), np.clip(u.numpy(), 16, 240))


def test_odd_sized_frames_are_written_padded_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(16, 236, (37, 51), dtype=np.uint8)
    u, v = (np.full((19, 26), 128, np.uint8) for _ in range(2))
    with VideoWriter(tmp_path / "odd.mp4", 10, crf=0) as writer:
        for i in range(3):
            writer.write_planes(y, u, v, t=i / 10)
    count, rate, times = probe_frames(tmp_path / "odd.mp4")
    assert (count, rate) == (3, 10) and times == pytest.approx([0.0, 0.1, 0.2])
    with VideoReader(tmp_path / "odd.mp4") as reader:
        planes = next(iter(reader)).planes
    assert planes.size == (52, 38) and np.array_equal(planes.data[0][:37, :51], y)
    assert np.array_equal(planes.data[0][37, :51], y[36])  # padding repeats the edge


def test_sixteen_bit_ir_video_is_stretched_like_a_sixteen_bit_png(tmp_path):
    """Raw thermal counts 30000..30500 fill the 8-bit range, by the same rule as 16-bit images,
    with the first frame's limits kept (no flicker when the scene warms up)."""
    raw = (30000 + 500 * texture(48, 32, seed=3).astype(np.float64) / 255).astype(np.uint16)
    _raw_video(tmp_path / "ir16.mkv", [raw, raw + 100], "gray16le")
    with VideoReader(tmp_path / "ir16.mkv", luma_only=True) as reader:
        first, warmer = (frame.planes for frame in reader)
    assert first.layout == "gray" and first.full_range
    expected = (infrared_to_unit(raw) * 255 + 0.5).astype(np.uint8)  # the image rule
    assert np.abs(first.data[0].astype(int) - expected).max() <= 1
    assert first.data[0].max() - first.data[0].min() > 200
    assert warmer.data[0].mean() > first.data[0].mean() + 20  # held limits: warmer looks warmer


def test_a_flat_first_frame_does_not_fix_the_stretch_of_the_clip(tmp_path):
    """A thermal camera often starts on its flat shutter frame: its limits (no range) made
    every later frame black, a visible-only fusion with exit 0. The first frame with a range sets them."""
    raw = (30000 + 500 * texture(48, 32, seed=3).astype(np.float64) / 255).astype(np.uint16)
    _raw_video(tmp_path / "ir16.mkv", [np.full_like(raw, 30100), raw, raw + 100], "gray16le")
    with VideoReader(tmp_path / "ir16.mkv", luma_only=True) as reader:
        shutter, first, warmer = (frame.planes for frame in reader)
    assert shutter.data[0].max() == shutter.data[0].min()  # flat stays flat
    expected = (infrared_to_unit(raw) * 255 + 0.5).astype(np.uint8)
    assert np.abs(first.data[0].astype(int) - expected).max() <= 1  # as if the clip began here
    assert warmer.data[0].mean() > first.data[0].mean() + 20  # and those limits are held


def test_ten_bit_ir_video_is_read_at_full_depth(tmp_path):
    levels = (200 + 40 * texture(48, 32, seed=4).astype(np.float64) / 255).astype(np.uint16)  # a narrow 10-bit band
    neutral = np.full((16, 24), 512, np.uint16)
    with VideoWriter(tmp_path / "ir10.mkv", 10, codec="ffv1", crf=None, preset=None, pixel_format="yuv420p10le") as writer:
        writer.write_planes(levels, neutral, neutral)  # exact 10-bit samples, stored losslessly
    with VideoReader(tmp_path / "ir10.mkv", luma_only=True) as reader:
        planes = next(iter(reader)).planes
    assert planes.layout == "gray" and planes.size == (48, 32)
    expected = (infrared_to_unit(levels, bits=10) * 255 + 0.5).astype(np.uint8)
    assert np.abs(planes.data[0].astype(int) - expected).max() <= 1
    assert planes.data[0].max() - planes.data[0].min() > 200  # 40 levels of 1024 are stretched too


def test_gray_visible_video_gets_neutral_chroma(tmp_path):
    gray = texture(40, 30, seed=5)
    _raw_video(tmp_path / "gray.mkv", [gray], "gray")
    with VideoReader(tmp_path / "gray.mkv") as reader:
        planes = next(iter(reader)).planes
    assert planes.layout == "gray"
    ycrcb = planes_to_ycrcb([planes])
    assert torch.allclose(ycrcb[0, 0], torch.from_numpy(gray).float() / 255)
    assert torch.all(ycrcb[0, 1:] == 0.5)


def test_limited_range_luma_is_stretched_to_full():
    y = np.array([[16, 126, 235, 0, 255]], np.uint8)
    out = planes_to_luma([Planes.gray(y, full_range=False)])[0, 0, 0].numpy()
    assert out == pytest.approx([0.0, 110 / 219, 1.0, 0.0, 1.0], abs=1e-6)


def test_camera_bgr_is_converted_on_the_device_like_rgb_images():
    rgb = np.random.default_rng(6).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    from_bgr = planes_to_ycrcb([Planes.packed(rgb[:, :, ::-1].copy(), bgr=True)])
    expected = rgb_to_ycrcb(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
    assert torch.allclose(from_bgr, expected, atol=1e-6)


def test_writer_pts_follow_timestamps_on_the_given_clock(tmp_path):
    with VideoWriter(tmp_path / "t.mp4", Fraction(30), time_base=Fraction(1, 90000), crf=30) as writer:
        for t in (0.0, 0.033, 0.1, 0.1):  # a repeated timestamp still gets a later pts
            writer.write_image(np.zeros((16, 16, 3), np.uint8), t)
    with VideoReader(tmp_path / "t.mp4") as reader:
        times = [frame.t for frame in reader]
    assert times[:3] == pytest.approx([0.0, 0.033, 0.1], abs=1e-3) and times[3] > times[2]


def test_training_reads_video_pairs_through_the_one_reader(tmp_path):
    from ldfusion.training.data import VideoSource, load_video_pairs
    from tests.pipeline_helpers import marked_frame, read_mark, write_video

    write_video(tmp_path / "ir.mp4", [marked_frame(i, 64, 48, color=False) for i in range(7)], 10)
    write_video(tmp_path / "vi.mp4", [marked_frame(i, 64, 48, seed=1) for i in range(7)], 10)
    pairs = load_video_pairs(VideoSource(str(tmp_path / "ir.mp4"), str(tmp_path / "vi.mp4"), every=3))
    assert [p.name for p in pairs] == ["vi#0", "vi#3", "vi#6"]
    for k, pair in enumerate(pairs):
        assert pair.ir.shape == (48, 64) and pair.ir.dtype == np.uint8
        assert pair.visible.shape == (48, 64, 3) and pair.visible.dtype == np.uint8
        assert read_mark(pair.ir) == read_mark(pair.visible) == 3 * k


@pytest.mark.parametrize("box", [(2, 4, 31, 17), (3, 1, 20, 10), (0, 0, 51, 37)])
def test_crops_keep_half_size_chroma_exact_or_resample_it(box):
    """An even-offset crop keeps 4:2:0 chroma at half size; an odd one resamples it; both
    equal cropping the full-resolution frame."""
    from ldfusion.color import planes_to_batch

    rng = np.random.default_rng(3)
    y = rng.integers(16, 236, (37, 51), dtype=np.uint8)
    u, v = (rng.integers(16, 241, (19, 26), dtype=np.uint8) for _ in range(2))
    batch = planes_to_batch([Planes("yuv420p", (y, u, v), full_range=False)])
    x0, y0, w, h = box
    cropped = batch.crop(*box)
    assert cropped.subsampled == (x0 % 2 == 0 and y0 % 2 == 0 and (w, h) != (1, 1))
    assert torch.equal(cropped.full(), batch.full()[..., y0 : y0 + h, x0 : x0 + w])


@pytest.mark.parametrize("full_range", [False, True])
def test_batch_inputs_share_one_allocation_and_match_the_plane_by_plane_conversion(full_range):
    """A batch's IR luma and visible Y are views of one block (no per-batch re-faulting),
    the visible chroma stays as the decoder's codes (V then U) until read; all equal to
    converting each on its own; every limited-range code lands in [0, 1], codes outside the
    range clamped."""
    from ldfusion.color import chroma_to_unit, planes_to_batch, planes_to_inputs, planes_to_luma

    rng = np.random.default_rng(5)
    frames = [tuple(rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((37, 51), (19, 26), (19, 26))) for _ in range(3)]
    visible = [Planes("yuv420p", f, full_range=full_range) for f in frames]
    ir = [Planes.gray(rng.integers(0, 256, (37, 51), dtype=np.uint8), full_range=full_range) for _ in range(3)]
    ir_t, vi = planes_to_inputs(ir, visible)
    assert ir_t.untyped_storage().data_ptr() == vi.y.untyped_storage().data_ptr()
    assert all(t.is_contiguous() for t in (ir_t, vi.y))
    codes = vi.chroma_codes
    assert codes is not None and codes.full_range == full_range and codes.codes.dtype == torch.uint8
    assert np.array_equal(codes.codes[2, 0].numpy(), frames[2][2]) and np.array_equal(codes.codes[2, 1].numpy(), frames[2][1])
    expected_crcb = chroma_to_unit(torch.stack([torch.from_numpy(np.stack([f[2], f[1]])) for f in frames]), full_range)
    assert torch.equal(vi.crcb, expected_crcb) and vi.chroma_codes is None  # converted once, then kept
    assert torch.equal(ir_t, planes_to_luma(ir))
    # the upload path (CUDA's pinned staging hands back stacked planes) gives the same batch
    uploaded_ir, uploaded = planes_to_inputs(ir, visible, upload=lambda arrays: torch.from_numpy(np.stack(arrays)))
    assert torch.equal(uploaded_ir, ir_t) and torch.equal(uploaded.y, vi.y)
    assert torch.equal(uploaded.chroma_codes.codes, codes.codes)
    separate = planes_to_batch(visible)
    assert torch.equal(vi.y, separate.y) and torch.equal(vi.crcb, separate.crcb)
    assert 0.0 <= float(vi.full().min()) and float(vi.full().max()) <= 1.0
    low, high = (0, 255) if full_range else (16, 235)
    expected_y = (np.clip(frames[1][0], low, high).astype(np.float32) - low) / (high - low)
    np.testing.assert_allclose(vi.y[1, 0].numpy(), expected_y, atol=1e-7)


def test_deep_planes_to_an_eight_bit_writer_are_refused(tmp_path):
    deep = np.zeros((8, 8), np.uint16)
    with VideoWriter(tmp_path / "x.mp4", 10) as writer, pytest.raises(ValueError, match="deep 4:2:0 pixel_format"):
        writer.write_planes(deep, deep[:4, :4], deep[:4, :4])
    assert not (tmp_path / "x.mp4").exists()  # refused before the file was opened


@pytest.mark.parametrize("threads", [None, 1])
def test_planes_kept_past_later_frames_and_closing_stay_intact(tmp_path, threads):
    """Planes are views of the decoder's frame buffers: holding every frame of a clip, and
    closing the file, must not let the decoder reuse a buffer still held."""
    from tests.pipeline_helpers import marked_video

    clip = marked_video(tmp_path / "clip.mp4", 24, 30, seed=4)
    with VideoReader(clip, threads=threads) as reader:
        held = [frame.planes for frame in reader]
    with VideoReader(clip, threads=threads) as reader:
        copied = [tuple(plane.copy() for plane in frame.planes.data) for frame in reader]
    assert len(held) == len(copied) == 24
    assert len({planes.data[0].tobytes() for planes in held}) == 24  # distinct frames: reuse would show
    for planes, copies in zip(held, copied):
        assert all(np.array_equal(a, b) for a, b in zip(planes.data, copies))


def test_reader_threads_change_the_speed_not_the_frames(tmp_path):
    from tests.pipeline_helpers import marked_video

    clip = marked_video(tmp_path / "clip.mp4", 8, 30, seed=3)
    with VideoReader(clip) as auto, VideoReader(clip, threads=1) as single:
        assert single._stream.codec_context.thread_count == 1
        frames = [(a.planes.data[0], b.planes.data[0]) for a, b in zip(auto, single)]
    assert len(frames) == 8 and all(np.array_equal(a, b) for a, b in frames)


def _uniform_clip(path, codec: str, pix_fmt: str, rgb: tuple[int, int, int]) -> None:
    """Three frames of one colour, encoded by PyAV straight from RGB (no ldfusion writer)."""
    image = np.empty((32, 48, 3), np.uint8)
    image[:] = rgb
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 48, 32, pix_fmt
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize(
    "name, codec, pix_fmt",
    [
        ("webcam.avi", "mjpeg", "yuvj422p"),  # what USB webcams record: full range 4:2:2
        ("rgb.mkv", "libx264rgb", "rgb24"),  # decodes as gbrp, tagged full range
        ("bgr0.mkv", "ffv1", "bgr0"),
        ("444.mp4", "libx264", "yuv444p"),
        ("420.mp4", "libx264", "yuv420p"),
    ],
)
def test_converted_layouts_keep_their_colour(tmp_path, name, codec, pix_fmt):
    """Layouts FFmpeg converts to 4:2:0 come out in the colour they went in (a full-range source
    labelled limited was ~14 % oversaturated: 200, 120, 60 read back as 211, 122, 52)."""
    colour = (200, 120, 60)
    _uniform_clip(tmp_path / name, codec, pix_fmt, colour)
    with VideoReader(tmp_path / name) as reader:
        rgb = planes_to_image(next(iter(reader)).planes)
    assert np.abs(rgb[16, 24].astype(int) - colour).max() <= 2, rgb[16, 24]


def test_the_largest_of_several_video_streams_is_read_and_named(tmp_path, caplog):
    """A file with a small first stream and a large second one (a preview beside the recording)
    is read from the large one, as ffmpeg's tools pick, with a warning naming it."""
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w") as container:
        small, large = (container.add_stream("libx264", rate=30) for _ in range(2))
        for stream, (width, height) in ((small, (32, 24)), (large, (64, 48))):
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(3):
            for stream in (small, large):
                image = np.full((stream.height, stream.width, 3), 60 * index, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
        for stream in (small, large):
            for packet in stream.encode():
                container.mux(packet)
    with caplog.at_level("WARNING"), VideoReader(path) as reader:
        frames = list(reader)
    assert (reader.width, reader.height) == (64, 48)
    assert [frame.planes.size for frame in frames] == [(64, 48)] * 3
    assert "2 video streams; using stream 1 (64x48)" in caplog.text


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_video_stored_turned_is_read_upright_as_players_show_it(tmp_path, degrees):
    """A phone's recording: pixels stored turned, with a display rotation saying how to show
    them. It was fused as stored (upside down against an upright infrared camera, exit 0)."""
    upright = texture(48, 32, seed=3)  # (32, 48): wider than high
    turns = degrees // 90 % 4  # counterclockwise quarter turns a player applies
    stored = np.ascontiguousarray(np.rot90(upright, -turns))  # what the camera wrote
    path = tmp_path / f"turned{degrees}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = stored.shape[1], stored.shape[0], "yuv420p"
        stream.set_display_rotation(degrees)
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(np.dstack([stored] * 3), format="rgb24")), *stream.encode()]:
            container.mux(packet)
    with VideoReader(path, luma_only=True) as reader:
        luma = planes_to_luma([next(iter(reader)).planes])[0, 0].numpy() * 255
    assert (reader.width, reader.height) == (48, 32)
    assert luma.shape == upright.shape
    assert np.abs(luma - upright).mean() < 2  # crf 0: lossless up to the limited-range codes


def _small_clip(path, **metadata) -> bytes:
    with av.open(str(path), "w") as container:
        container.metadata.update(metadata)
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")), *stream.encode()]:
            container.mux(packet)
    return path.read_bytes()


def test_a_stream_of_an_unknown_codec_or_metadata_that_is_no_text_is_one_line(tmp_path):
    """Both ended in someone else's exception (AttributeError: 'NoneType' object has no attribute
    'width'; UnicodeDecodeError from inside av.open), exit 1, naming no file."""
    from ldfusion.errors import DataError

    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(_small_clip(tmp_path / "a.mp4").replace(b"avc1", b"zzzz"))  # a codec tag FFmpeg does not know
    with pytest.raises(DataError, match="unknown.mp4 holds no video stream FFmpeg can decode"):
        VideoReader(unknown)
    binary = tmp_path / "binary.mkv"
    binary.write_bytes(_small_clip(tmp_path / "b.mkv", title="X" * 16).replace(b"X" * 16, b"\x89" * 16))
    with pytest.raises(DataError, match="cannot read video .*binary.mkv: its metadata is not text"):
        VideoReader(binary)


@pytest.mark.parametrize("colorspace, matrix", [(1, "bt709"), (2, "bt601")])
def test_a_video_becomes_rgb_by_the_matrix_it_states(tmp_path, colorspace, matrix):
    """A BT.709 video was always read by BT.601: a flat (39, 200, 79) came out (52, 225, 83)."""
    rgb = np.empty((48, 64, 3), np.uint8)
    rgb[:] = (39, 200, 79)
    tagged_colour_clip(tmp_path / "clip.mp4", rgb, colorspace)
    with VideoReader(tmp_path / "clip.mp4") as reader:
        frame = next(iter(reader))
        assert frame.planes.matrix == matrix
        assert reader.colour.matrix == matrix
    back = planes_to_image(frame.planes).astype(int)
    assert np.abs(back - rgb).max() <= 3, back[0, 0]


def test_a_folder_given_as_a_video_is_named_as_a_folder(tmp_path):
    """Training data's `videos: [{ir: data/ir, ...}]` said "video not found: data/ir", a folder that is there."""
    from ldfusion.errors import DataError
    from ldfusion.video import VideoReader

    with pytest.raises(DataError, match=f"^{tmp_path} is a folder, not a video$"):
        VideoReader(tmp_path)
    with pytest.raises(DataError, match="video not found"):
        VideoReader(tmp_path / "none.mp4")
