"""Codec choice: hardware when it opens, the CPU codec otherwise, with one log line and a reason."""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from ldfusion import codecs
from ldfusion.codecs import choose_decoder, choose_encoder, encoder_options
from ldfusion.errors import ConfigError
from ldfusion.video import VideoReader, VideoWriter

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without a GPU")


@pytest.fixture(autouse=True)
def fresh_choices():
    """Each test resolves afresh (the choices are cached per process)."""
    choose_encoder.cache_clear()
    choose_decoder.cache_clear()
    yield
    choose_encoder.cache_clear()
    choose_decoder.cache_clear()


def _records(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ldfusion.codecs" and r.levelno == level]


@no_gpu
def test_auto_is_libx264_without_a_gpu(caplog):
    caplog.set_level(logging.DEBUG, logger="ldfusion.codecs")
    choice = choose_encoder("auto", 640, 512, crf=20, preset="fast")
    assert (choice.name, dict(choice.options), choice.hardware) == ("libx264", {"crf": "20", "preset": "fast"}, False)
    assert not _records(caplog, logging.WARNING)  # auto falling back is the expected case, not a warning
    assert len(_records(caplog, logging.INFO)) == 1


@no_gpu
def test_asking_for_nvenc_without_a_gpu_falls_back_with_one_warning_naming_the_cause(caplog):
    caplog.set_level(logging.DEBUG, logger="ldfusion.codecs")
    first = choose_encoder("h264_nvenc", 640, 512)
    again = choose_encoder("h264_nvenc", 640, 512)  # a second MP4 sink of the same size
    assert first.name == again.name == "libx264" and not first.hardware
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "h264_nvenc" in message and "libx264" in message
    # FFmpeg's own words, not only an errno: here the driver library is missing.
    assert "libcuda" in message
    assert "\n" not in message


def test_hardware_encoder_that_opens_is_chosen_with_nvenc_options(monkeypatch, caplog):
    """On an NVENC card auto takes h264_nvenc, with x264's quality settings translated."""
    caplog.set_level(logging.INFO, logger="ldfusion.codecs")
    probed = []

    def fake_problem(name, width, height, options):
        probed.append((name, width, height))
        return None

    monkeypatch.setattr(codecs, "encoder_problem", fake_problem)
    choice = choose_encoder("auto", 1920, 1080, crf=23, preset="veryfast")
    assert choice.name == "h264_nvenc" and choice.hardware
    assert dict(choice.options) == {"preset": "p2", "rc": "vbr", "cq": "23", "b": "0"}
    assert probed == [("h264_nvenc", 1920, 1080)]  # probed at the stream's own size
    assert not _records(caplog, logging.WARNING)


def test_nvenc_that_fails_to_open_falls_back_even_when_the_codec_is_compiled_in(monkeypatch, caplog):
    """The H200 case: h264_nvenc is in PyAV's build, but opening it fails (no NVENC engine)."""
    caplog.set_level(logging.INFO, logger="ldfusion.codecs")
    reason = "OpenEncodeSessionEx failed: unsupported device (2); No capable devices found"
    real = codecs.encoder_problem
    monkeypatch.setattr(codecs, "encoder_problem", lambda name, *a: reason if name == "h264_nvenc" else real(name, *a))
    choice = choose_encoder("h264_nvenc", 640, 512)
    assert choice.name == "libx264"
    (warning,) = _records(caplog, logging.WARNING)
    assert reason in warning.getMessage()


@pytest.mark.parametrize("name", ["x264", "nvenc", "", "LIBX264", "hevc_nvenc"])
def test_unknown_encoder_is_a_one_line_config_error(name):
    with pytest.raises(ConfigError, match="encoder must be one of auto, libx264, h264_nvenc") as info:
        choose_encoder(name, 640, 512)
    assert "\n" not in str(info.value)


def test_libx264_that_cannot_encode_the_size_is_a_config_error_not_a_silent_fallback():
    with pytest.raises(ConfigError, match=r"libx264 cannot encode 63x47: .*divisible by 2"):
        choose_encoder("libx264", 63, 47)


def test_nvenc_preset_must_be_an_x264_preset_name():
    assert encoder_options("h264_nvenc", 0, "ultrafast") == {"preset": "p1", "rc": "vbr", "cq": "1", "b": "0"}
    with pytest.raises(ConfigError, match="preset must be one of"):
        encoder_options("h264_nvenc", 18, "turbo")


@pytest.mark.parametrize("width,height", [(64, 48), (98, 34)])
def test_the_chosen_encoder_writes_a_playable_file(tmp_path, width, height):
    rng = np.random.default_rng(0)
    frames = [tuple(rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((height, width), (height // 2, width // 2), (height // 2, width // 2))) for _ in range(12)]
    path = tmp_path / "out.mp4"
    with VideoWriter(path, Fraction(30), codec="auto", crf=0, preset="ultrafast") as writer:
        for y, u, v in frames:
            writer.write_planes(y, u, v)
    assert writer.codec == choose_encoder("auto", width, height, crf=0, preset="ultrafast").name
    with VideoReader(path) as reader:
        decoded = [frame.planes.data for frame in reader]
    assert len(decoded) == len(frames)
    if writer.codec == "libx264":  # crf 0 is lossless in x264: every sample comes back
        for got, sent in zip(decoded[5], frames[5]):
            np.testing.assert_array_equal(got, sent)


@no_gpu
def test_decoder_is_the_cpu_without_a_gpu_and_cuda_warns_once(caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="ldfusion.codecs")
    assert choose_decoder("auto", "h264").device == "cpu"
    assert not _records(caplog, logging.WARNING)
    for _ in range(3):  # three sources of the same codec
        choice = choose_decoder("cuda", "h264")
    assert choice.device == "cpu" and choice.open_options == {}
    (warning,) = _records(caplog, logging.WARNING)
    assert "NVDEC" in warning.getMessage() and "CUDA" in warning.getMessage()


def test_cpu_and_auto_decode_are_not_probed_and_unsupported_codecs_stay_on_the_cpu(monkeypatch):
    """``auto`` is the CPU decoder: through PyAV, NVDEC ran at 889 fps against the CPU's 7553
    on an H200 with 16 cores, and held the pipeline there (ldfusion.codecs)."""
    monkeypatch.setattr(codecs, "decoder_problem", lambda codec: pytest.fail("decode: cpu and auto must not probe the GPU"))
    assert choose_decoder("cpu", "h264").device == "cpu"
    assert choose_decoder("auto", "h264").device == "cpu"
    assert choose_decoder("auto").open_options == {}
    monkeypatch.undo()
    assert codecs.decoder_problem("png") == "not a codec NVDEC decodes"
    assert choose_decoder("cuda", "png").device == "cpu"


def test_decoder_that_opens_hands_av_open_a_cuda_hwaccel_with_software_fallback(monkeypatch):
    """With fallback on, a clip NVDEC rejects mid-file (an odd profile) still decodes.

    (av.open with a cuda hwaccel raises when there is no GPU at all, fallback or not, which
    is why the choice probes first and hands ``{}`` to av.open on the CPU.)
    """
    probed = []
    monkeypatch.setattr(codecs, "decoder_problem", lambda codec: probed.append(codec))
    choice = choose_decoder("cuda")  # the reader has not opened the file yet: probed with H.264
    assert choice.device == "cuda" and probed == ["h264"]
    assert choice.open_options["hwaccel"].allow_software_fallback


@no_gpu
def test_the_cpu_choice_decodes_a_real_file(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, Fraction(25)) as writer:
        for index in range(5):
            writer.write_image(np.full((32, 32), 40 * index, np.uint8))
    with VideoReader(path, decode="auto") as reader:
        assert sum(1 for _ in reader) == 5
        assert reader.decoder == "cpu"


@pytest.mark.parametrize("name", ["gpu", "nvdec", "CUDA", ""])
def test_unknown_decode_is_a_one_line_config_error(name):
    with pytest.raises(ConfigError, match="decode must be one of auto, cpu, cuda"):
        choose_decoder(name, "h264")


def _pipeline_config(tmp_path, *overrides: str):
    from pipeline.config import load_pipeline_config

    path = tmp_path / "run.yaml"
    path.write_text(
        "streams:\n  - ir: {kind: video, path: ir.mp4}\n    visible: {kind: video, path: vi.mp4}\n"
        "sinks:\n  - {kind: mp4, path: fused.mp4}\n"
    )
    return load_pipeline_config(path, list(overrides))


def test_config_keys_default_to_auto_and_take_the_codec_names(tmp_path):
    config = _pipeline_config(tmp_path)
    assert config.sinks[0].encoder == "auto" and config.streams[0].visible.decode == "auto"
    config = _pipeline_config(tmp_path, "sinks.0.encoder=h264_nvenc", "streams.0.ir.decode=cuda")
    assert config.sinks[0].encoder == "h264_nvenc" and config.streams[0].ir.decode == "cuda"


@pytest.mark.parametrize(
    "override,message",
    [
        ("sinks.0.encoder=x265", "encoder must be one of auto, libx264, h264_nvenc; got 'x265'"),
        ("streams.0.visible.decode=gpu", "decode must be one of auto, cpu, cuda; got 'gpu'"),
    ],
)
def test_config_rejects_unknown_codec_names_in_one_line(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message) as info:
        _pipeline_config(tmp_path, override)
    assert "\n" not in str(info.value)


# --- the choice in use: the MP4 sink's encoder and the video source's decode keys --------------


def _run_clip(tmp_path, random_weights, n: int, decode: str = "auto", encoder: str = "auto"):
    from pipeline.runner import run_pipeline
    from tests.pipeline_helpers import cpu_fuser, make_config, marked_video

    ir = marked_video(tmp_path / "ir.mp4", n, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", n, 30, seed=2)
    out = tmp_path / f"out-{decode}-{encoder}"
    stream = {"ir": {"kind": "video", "path": str(ir), "decode": decode}, "visible": {"kind": "video", "path": str(vi), "decode": decode}}
    config = make_config(ir, vi, sinks=[{"kind": "mp4", "path": "fused.mp4", "encoder": encoder}], out_dir=out, stream=stream)
    return run_pipeline(config, cpu_fuser(random_weights["ld-lite"])), out / "fused.mp4"


@no_gpu
def test_mp4_sink_asking_for_nvenc_writes_a_playable_mp4_with_libx264_and_one_warning(tmp_path, random_weights, caplog):
    from tests.pipeline_helpers import read_video

    caplog.set_level(logging.DEBUG, logger="ldfusion.codecs")
    summary, path = _run_clip(tmp_path, random_weights, 7, decode="cpu", encoder="h264_nvenc")
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "h264_nvenc" in warnings[0].getMessage() and "libx264" in warnings[0].getMessage()
    video = read_video(path)
    assert summary.frames_out == 7 and len(video["frames"]) == 7 and video["codec"] == "h264"
    assert b"x264" in path.read_bytes()  # written by libx264 (its SEI message names it)


@no_gpu
def test_cuda_decode_falls_back_to_the_cpu_decoder_with_the_frame_count_unchanged(tmp_path, random_weights, caplog):
    caplog.set_level(logging.DEBUG, logger="ldfusion.codecs")
    on_cpu, _ = _run_clip(tmp_path, random_weights, 9, decode="cpu", encoder="libx264")
    assert not _records(caplog, logging.WARNING)
    on_cuda, _ = _run_clip(tmp_path, random_weights, 9, decode="cuda", encoder="libx264")
    (warning,) = _records(caplog, logging.WARNING)  # two sources of one codec: one line
    assert "NVDEC" in warning.getMessage() and "CPU" in warning.getMessage()
    assert on_cuda.frames_out == on_cpu.frames_out == 9
    assert [s.read_ir for s in on_cuda.streams] == [s.read_ir for s in on_cpu.streams] == [9]
    with VideoReader(tmp_path / "vi.mp4", decode="cuda") as reader:
        assert sum(1 for _ in reader) == 9 and reader.decoder == "cpu"


def test_a_reader_given_nvdec_reopens_the_file_with_the_hwaccel(tmp_path, monkeypatch):
    """Where NVDEC opens, the reader hands ``av.open`` the choice's hwaccel for the file's codec."""
    from ldfusion import video
    from tests.pipeline_helpers import marked_video

    path = marked_video(tmp_path / "vi.mp4", 3, 30)
    asked, opened = [], []
    monkeypatch.setattr(video, "choose_decoder", lambda preference, codec: asked.append((preference, codec)) or codecs.DecoderChoice("cuda", "HW"))
    real_open = av.open
    monkeypatch.setattr(video.av, "open", lambda *args, **kwargs: opened.append(kwargs) or real_open(*args))
    reader = video.VideoReader(path, decode="auto")
    reader.close()
    # Opened plainly to learn the codec, again with the hwaccel, and plainly by the display-rotation probe.
    assert asked == [("auto", "h264")] and opened == [{}, {"hwaccel": "HW"}, {}] and reader.decoder == "cuda"


@no_gpu
def test_choices_made_on_several_sink_threads_at_once_log_once_and_leave_ffmpeg_quiet(caplog):
    import threading

    caplog.set_level(logging.DEBUG, logger="ldfusion.codecs")
    level = av.logging.get_level()
    threads = [threading.Thread(target=choose_encoder, args=("h264_nvenc", 64, 48)) for _ in range(4)]
    threads += [threading.Thread(target=choose_decoder, args=("cuda", "h264")) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(_records(caplog, logging.WARNING)) == 2  # one for the encoder, one for the decoder
    assert av.logging.get_level() == level  # FFmpeg's log is not left switched on
