"""Bad input to `export`, `fuse`, `eval`, `bench`, `subscribe` and `demo` ends in one line on
stderr and a non-zero exit, found before the work where it can be, with no input destroyed.

The cases `tests/test_hostile_input.py` covers (mostly `run`) are not repeated here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from ldfusion.imageio import write_image
from ldfusion_cli import main as dispatcher
from pipeline import subscriber as subscriber_cli
from tests.pipeline_helpers import marked_frame, marked_video


def one_error_line(capsys, prog: str) -> str:
    """The single error line of a failed command (log lines above it are allowed, a traceback is not)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.strip().splitlines() if line.startswith(f"{prog}: ")]
    assert len(errors) == 1, err
    return errors[0]


def paired_folders(tmp_path: Path, width: int, height: int, count: int = 2) -> tuple[Path, Path]:
    ir_dir, vi_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir()
    vi_dir.mkdir()
    for index in range(count):
        write_image(ir_dir / f"{index}.png", marked_frame(index, width, height, seed=1)[:, :, 0])
        write_image(vi_dir / f"{index}.png", marked_frame(index, width, height, seed=2))
    return ir_dir, vi_dir


# --- export ---------------------------------------------------------------------------------


def test_a_float_export_whose_weights_were_damaged_in_place_is_refused_by_its_parity(tmp_path, capsys, random_weights):
    """100 bytes of the .bin overwritten (the same size: it reads and compiles): export said "up to
    date" with 28.6 dB parity, exit 0, and fuse used it."""
    pytest.importorskip("openvino")
    weights = tmp_path / "w.pt"
    weights.write_bytes(random_weights["ld-lite"].read_bytes())
    assert dispatcher.main(["export", "--weights", str(weights), "-q"]) == 0
    xml = next(tmp_path.glob("w.*.xml"))
    data = bytearray(xml.with_suffix(".bin").read_bytes())
    data[1000:1400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    xml.with_suffix(".bin").write_bytes(bytes(data))
    capsys.readouterr()
    assert dispatcher.main(["export", "--weights", str(weights), "-q"]) == 2
    line = one_error_line(capsys, "ldfusion export")
    assert f"{xml}: the export disagrees with PyTorch" in line and "delete it (and its .bin)" in line
    assert "up to date" not in capsys.readouterr().out
    # fuse used it without a word: frames 30+ grey levels off.
    ir_dir, vi_dir = paired_folders(tmp_path, 32, 24, count=1)
    fuse = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "out"), "--weights", str(weights),
            "--device", "cpu", "--backend", "openvino", "-q"]
    assert dispatcher.main(fuse) == 2
    assert f"{xml}: this export disagrees with its weights" in one_error_line(capsys, "ldfusion fuse")


@pytest.mark.parametrize("damage", ["text", "truncated_bin", "scrambled_bin"])
def test_a_damaged_cached_export_is_one_line_naming_the_file(tmp_path, capsys, random_weights, damage):
    """A cached .xml/.bin that is not OpenVINO's (a text file, a cut .bin) once ended in a
    RuntimeError naming OpenVINO's own source file and lines of TensorFlow parser noise; a .bin
    of the right size with other bytes (its shape constants too) read, then failed to compile
    with exit 1 and OpenVINO's error."""
    pytest.importorskip("openvino")
    weights = tmp_path / "w.pt"
    weights.write_bytes(random_weights["ld-lite"].read_bytes())
    assert dispatcher.main(["export", "--weights", str(weights), "-q"]) == 0
    xml = next(tmp_path.glob("w.*.xml"))
    if damage == "text":
        xml.write_text("<net>not a whole model\n")
    elif damage == "truncated_bin":
        bin_file = xml.with_suffix(".bin")
        bin_file.write_bytes(bin_file.read_bytes()[:300])
    else:
        bin_file = xml.with_suffix(".bin")
        (np.fromfile(bin_file, np.float32) * 0.5).tofile(bin_file)
    capsys.readouterr()
    ir_dir, vi_dir = paired_folders(tmp_path, 32, 24, count=1)
    fuse = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "out"), "--weights", str(weights),
            "--device", "cpu", "--backend", "openvino", "-q"]
    for argv in (["export", "--weights", str(weights), "-q"], fuse):
        assert dispatcher.main(argv) == 2, argv
        line = one_error_line(capsys, f"ldfusion {argv[0]}")
        what = "OpenVINO cannot compile this export, which may be damaged" if damage == "scrambled_bin" else "not a readable OpenVINO export"
        assert f"{xml}: {what}" in line and "delete it (and its .bin)" in line, line
    assert dispatcher.main(["export", "--weights", str(weights)]) == 2
    assert "up to date" not in capsys.readouterr().out  # it said so before finding the file damaged


def test_export_calibration_images_without_int8_are_refused(tmp_path, capsys, random_weights):
    """They were ignored: the user, who meant an int8 export, got a float32 one."""
    ir_dir, vi_dir = paired_folders(tmp_path, 32, 24, count=1)
    argv = ["export", "--weights", str(random_weights["ld-lite"]), "--calib-ir", str(ir_dir), "--calib-vi", str(vi_dir)]
    assert dispatcher.main(argv) == 2
    assert "--calib-ir and --calib-vi calibrate an int8 export: add --int8" in one_error_line(capsys, "ldfusion export")


@pytest.mark.parametrize("argv, missing", [(["--format", "onnx"], "--format onnx needs onnx"), (["--int8"], "--int8 needs nncf")])
def test_an_export_without_its_extra_installed_says_how_to_install_it(tmp_path, capsys, random_weights, monkeypatch, argv, missing):
    """It ended in OnnxExporterError or ModuleNotFoundError: nncf (exit 1) after loading the weights."""
    pytest.importorskip("openvino")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name in ("onnx", "nncf") else real(name, *rest))
    ir_dir, vi_dir = paired_folders(tmp_path, 32, 24, count=1)
    calibration = ["--calib-ir", str(ir_dir), "--calib-vi", str(vi_dir)] if "--int8" in argv else []
    full = ["export", "--weights", str(random_weights["ld-lite"]), *calibration, *argv]
    assert dispatcher.main(full) == 2
    line = one_error_line(capsys, "ldfusion export")
    assert missing in line and 'pip install "ldfusion[export]"' in line


def test_a_damaged_cached_onnx_export_is_one_line_naming_the_file(tmp_path, capfd, random_weights):
    """Checked by its own format before OpenVINO reads it: its TensorFlow frontend printed parse noise."""
    pytest.importorskip("onnx")
    weights = tmp_path / "w.pt"
    weights.write_bytes(random_weights["ld-lite"].read_bytes())
    argv = ["export", "--weights", str(weights), "--format", "onnx", "-q"]
    assert dispatcher.main(argv) == 0
    exported = next(tmp_path.glob("w.*.onnx"))
    exported.write_text("not a model\n")
    capfd.readouterr()
    assert dispatcher.main(argv) == 2
    err = capfd.readouterr().err  # capfd: the noise came from C++, past sys.stderr
    assert err.strip().splitlines() == [
        f"ldfusion export: error: {exported}: not a readable OpenVINO export (Unable to parse proto from file: {exported}. "
        "Please check if it is a valid protobuf file of proto.); delete it and it is exported again from the weights"], err


def test_int8_calibration_on_frames_smaller_than_the_network_takes(tmp_path, capsys, random_weights):
    """7x9 calibration frames reached the graph unpadded and failed inside OpenVINO."""
    pytest.importorskip("nncf")
    weights = tmp_path / "w.pt"
    weights.write_bytes(random_weights["ld-lite"].read_bytes())
    ir_dir, vi_dir = paired_folders(tmp_path, 7, 9)
    argv = ["export", "--weights", str(weights), "--int8", "--calib-ir", str(ir_dir), "--calib-vi", str(vi_dir), "-q"]
    assert dispatcher.main(argv) == 0, capsys.readouterr().err
    assert len(list(tmp_path.glob("w.*.int8.xml"))) == 1


# --- eval -----------------------------------------------------------------------------------


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_eval_refuses_metrics_written_over_an_input_video(tmp_path, capsys, link):
    """A metrics file that is another name for an input (a symlink or a hard link) was
    truncated while the input was read, and eval reported success."""
    ir = marked_video(tmp_path / "ir.mp4", 4, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 4, 30, seed=2)
    out = tmp_path / "scores"
    out.mkdir()
    link(ir, out / "metrics.csv")
    before = ir.read_bytes()
    argv = ["eval", "--ir", str(ir), "--vi", str(vi), "--fused", str(vi), "--out", str(out), "-q"]
    assert dispatcher.main(argv) == 2
    assert f"would overwrite the input {ir}" in one_error_line(capsys, "ldfusion eval")
    assert ir.read_bytes() == before


def test_eval_save_fused_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, random_weights):
    ir_dir, vi_dir = paired_folders(tmp_path, 32, 24)
    taken = tmp_path / "taken"
    taken.write_text("x")
    out = tmp_path / "scores"
    argv = ["eval", "--ir", str(ir_dir), "--vi", str(vi_dir), "--fuse-with", str(random_weights["ld-lite"]),
            "--device", "cpu", "--save-fused", str(taken), "--out", str(out), "-q"]
    assert dispatcher.main(argv) == 2
    assert one_error_line(capsys, "ldfusion eval") == f"ldfusion eval: error: --save-fused {taken} is a file, not a folder"
    assert taken.read_text() == "x" and not out.exists()


# --- bench ----------------------------------------------------------------------------------


def bench_args(weights: Path, out: Path) -> list[str]:
    return ["bench", "--weights", str(weights), "--out", str(out), "--devices", "cpu", "--paths", "model",
            "--backend", "torch", "--batch-sizes", "1", "--frames", "1", "--warmup", "0", "--resolutions", "64x64", "-q"]


def test_bench_refuses_to_write_its_json_over_the_weights(tmp_path, capsys, random_weights):
    """`--out` naming the weights file replaced the checkpoint with the JSON report."""
    weights = tmp_path / "w.pt"
    weights.write_bytes(random_weights["ld-lite"].read_bytes())
    before = weights.read_bytes()
    for out in (weights, tmp_path / "link.pt"):
        if out != weights:
            out.symlink_to(weights)
        assert dispatcher.main(bench_args(weights, out)) == 2
        assert f"would overwrite the input {weights}" in one_error_line(capsys, "ldfusion bench")
    assert weights.read_bytes() == before


def test_bench_replaces_earlier_results_only(tmp_path, capsys, random_weights):
    """`--out run.yaml` (a slip) replaced the config with the JSON report, exit 0."""
    config = tmp_path / "run.yaml"
    config.write_text("streams: []\n")
    assert dispatcher.main(bench_args(random_weights["ld-lite"], config)) == 2
    assert f"--out {config} exists and holds no earlier bench results" in one_error_line(capsys, "ldfusion bench")
    assert config.read_text() == "streams: []\n"
    out = tmp_path / "bench.json"
    for _ in range(2):  # its own results are replaced
        assert dispatcher.main(bench_args(random_weights["ld-lite"], out)) == 0
    assert "results" in json.loads(out.read_text())


def test_bench_out_inside_a_file_is_refused_before_measuring(tmp_path, capsys, random_weights, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    import ldfusion_cli.bench as bench_cli

    def never(*_args, **_kwargs):
        raise AssertionError("measured before the --out check")

    monkeypatch.setattr(bench_cli, "measure_all", never)
    assert dispatcher.main(bench_args(random_weights["ld-lite"], a_file / "sub" / "bench.json")) == 2
    assert f"{a_file} is a file, not a folder" in one_error_line(capsys, "ldfusion bench")


def test_bench_bad_resolution_is_refused_before_the_weights_are_chosen(tmp_path, capsys, monkeypatch):
    """`--resolutions 0x0` was refused only after `weights: auto` had chosen (and logged) its weights."""
    import ldfusion_cli.bench as bench_cli

    def never(*_args, **_kwargs):
        raise AssertionError("weights chosen before --resolutions was checked")

    monkeypatch.setattr(bench_cli, "choose_weights", never)
    args = ["bench", "--out", str(tmp_path / "bench.json"), "--devices", "cpu", "--paths", "model", "--resolutions", "640x512", "0x0"]
    assert dispatcher.main(args) == 2
    assert "resolution must be at least 8x8; got '0x0'" in one_error_line(capsys, "ldfusion bench")
    assert not (tmp_path / "bench.json").exists()


# --- subscribe ------------------------------------------------------------------------------


def test_subscribe_with_a_huge_timeout_waits_instead_of_overflowing(capsys):
    """--timeout 1e308 (finite, so it passed the check) overflowed ZeroMQ's poll timeout."""
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    header = b'{"stream": "cam0", "seq": 1, "shape": [2, 3, 3], "dtype": "uint8"}'

    def send():
        while not stop.is_set():
            socket.send_multipart([b"fused/cam0", header, bytes(18)])
            time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        argv = ["--endpoint", f"tcp://127.0.0.1:{port}", "--count", "2", "--timeout", "1e308", "--summary-only", "-q"]
        assert subscriber_cli.main(argv) == 0
    finally:
        stop.set()
        sender.join()
        socket.close(0)
        context.term()
    assert "received 2 frame(s)" in capsys.readouterr().out


@pytest.mark.parametrize("port", ["70000", "0", "*"])
def test_subscribe_to_a_port_no_publisher_can_have_is_refused(capsys, port):
    """Port 70000 waited forever: ZeroMQ connects to it modulo 65536 (and * is for binding)."""
    argv = ["--endpoint", f"tcp://127.0.0.1:{port}", "--count", "1", "--timeout", "60", "-q"]
    assert subscriber_cli.main(argv) == 2
    assert f"the port must be 1-65535; got '{port}'" in one_error_line(capsys, "ldfusion subscribe")


def frame_message(**fields) -> list[bytes]:
    """[topic, header, pixels] of a 2x2 RGB frame of stream cam0, ``fields`` added to the header."""
    header = {"stream": "cam0", "seq": 1, "shape": [2, 2, 3], "dtype": "uint8", **fields}
    return [b"fused/cam0", json.dumps(header).encode(), bytes(12)]


@contextlib.contextmanager
def publishing(messages: list[list[bytes]], bind: str = "tcp://127.0.0.1:*"):
    """A PUB socket sending ``messages`` over and over until the block ends (a subscriber joins
    late and misses the first ones); yields the endpoint it bound."""
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.bind(bind)
    endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
    stop = threading.Event()

    def send():
        while not stop.wait(0.01):
            for parts in messages:
                socket.send_multipart(parts)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        yield endpoint
    finally:
        stop.set()
        sender.join()
        socket.close(0)
        context.term()


@pytest.mark.parametrize("key", ["t_fused", "t_ir", "captured_unix"])
def test_subscribe_skips_a_header_time_that_is_null(capsys, key):
    """``"t_fused": null`` passed the type check (None was taken for a missing key) and the
    frame line raised TypeError, exit 1, even with --skip-malformed."""
    with publishing([frame_message(**{key: None}), frame_message(t_fused=0.5)]) as endpoint:
        argv = ["--endpoint", endpoint, "--count", "2", "--timeout", "10", "--skip-malformed", "-q"]
        assert subscriber_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("cam0 seq 1 t 0.500 s") == 2 and "received 2 frame(s)" in out
    assert "skipped 0 malformed" not in out


def test_subscribe_names_a_null_header_time_without_skip_malformed(capsys):
    with publishing([frame_message(captured_unix=None)]) as endpoint:
        assert subscriber_cli.main(["--endpoint", endpoint, "--count", "1", "--timeout", "10", "-q"]) == 2
    assert "seq 1: captured_unix None is not a finite number" in one_error_line(capsys, "ldfusion subscribe")


@pytest.mark.parametrize("stream, pixel_format, printed", [
    ("\x1b[2J\x1b[31mPWNED\nfake line", "rgb24", r"\x1b[2J\x1b[31mPWNED\nfake line seq 1"),  # clear the screen, forge a line
    ("cam0", "rgb24\r\x1b[K", r"rgb24\r\x1b[K latency"),  # go back and overwrite the line
    ("cam\ud800", "rgb24", r"cam\ud800 seq 1"),  # a lone surrogate: print() raised UnicodeEncodeError, exit 1
    ("cam\\x1b", "rgb24", r"cam\\x1b seq 1"),  # a backslash is escaped too, so no escape can be forged
])
def test_subscribe_prints_header_text_with_control_characters_escaped(capsys, stream, pixel_format, printed):
    """The stream id and pixel_format went to the terminal raw: a publisher could clear it,
    colour it or forge lines of output."""
    with publishing([frame_message(stream=stream, pixel_format=pixel_format)]) as endpoint:
        assert subscriber_cli.main(["--endpoint", endpoint, "--count", "1", "--timeout", "10", "-q"]) == 0
    frame_line, summary = capsys.readouterr().out.splitlines()
    assert printed in frame_line and summary.startswith("received 1 frame(s)")
    assert frame_line.isprintable()


@pytest.mark.parametrize("stream", ["cam0", "cam-0_left.1", "kamera-ä"])
def test_subscribe_prints_stream_ids_a_config_allows_as_they_are(capsys, stream):
    with publishing([frame_message(stream=stream, pixel_format="rgb24")]) as endpoint:
        assert subscriber_cli.main(["--endpoint", endpoint, "--count", "1", "--timeout", "10", "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"{stream} seq 1 t nan s (ir nan, vi nan) 2x2x3 rgb24 latency nan ms\n")


def test_subscribe_to_an_inproc_endpoint_is_refused(capsys):
    """inproc:// reaches only the subscriber's own ZeroMQ context: it waited for --timeout (or
    forever) for a publisher that cannot exist."""
    assert subscriber_cli.main(["--endpoint", "inproc://frames", "--count", "1", "--timeout", "0.5"]) == 2
    assert "inproc:// reaches no publisher" in one_error_line(capsys, "ldfusion subscribe")


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_subscribe_over_tcp_and_ipc_still_receives(tmp_path, capsys, transport):
    bind = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{tmp_path / 'frames.sock'}"
    with publishing([frame_message()], bind) as endpoint:
        assert subscriber_cli.main(["--endpoint", endpoint, "--count", "1", "--timeout", "10", "-q"]) == 0
    assert "received 1 frame(s)" in capsys.readouterr().out


@pytest.mark.parametrize(("sent", "topic"), [(b"fused/cam0", "fused"), (b"fused/cam0", "fused/cam0"), (b"gate/cam0", "gate"),
                                            (b"site1/fused/cam0", "site1/fused/cam0"), (b"fused/cam0", "")])
def test_subscribe_to_every_stream_or_one_still_receives(capsys, sent, topic):
    """Also from a sink whose config sets another topic, one with a '/' too, and with the empty
    topic (every message): a check that took --topic for fused[/<id>] refused those."""
    with publishing([[sent, *frame_message()[1:]]]) as endpoint:
        assert subscriber_cli.main(["--endpoint", endpoint, "--topic", topic, "--count", "1", "--timeout", "10", "-q"]) == 0
    assert "received 1 frame(s)" in capsys.readouterr().out


# --- demo -----------------------------------------------------------------------------------


def test_demo_preview_path_that_is_a_folder_is_refused_before_the_run(tmp_path, capsys, random_weights):
    out = tmp_path / "demo"
    (out / "preview.png").mkdir(parents=True)
    argv = ["demo", "--source", "synthetic", "--out", str(out), "--weights", str(random_weights["ld-lite"]),
            "--max-frames", "2", "-q"]
    assert dispatcher.main(argv) == 2
    assert "preview.png is a folder" in one_error_line(capsys, "ldfusion demo")
    assert not (out / "fused.mp4").exists()


@pytest.mark.parametrize(
    "argv, option",
    [
        (["fuse", "--ir", "ir", "--vi", "vi", "--out", ""], "--out"),
        (["fuse", "--ir", " ", "--vi", "vi", "--out", "o"], "--ir"),
        (["eval", "--ir", "ir", "--vi", "vi", "--out", ""], "--out"),
        (["run", ""], "config"),
        (["calibrate", "verify", "--calib", "c.yaml", "--ir", "ir.png", "--vi", "vi.png", "--out", ""], "--out"),
        (["bench", "--out", ""], "--out"),
    ],
)
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(tmp_path, capsys, monkeypatch, argv, option):
    """`--out ""` (an unset shell variable) wrote fuse's images into the current folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        dispatcher.main(argv)
    assert exited.value.code == 2
    assert f"argument {option}: the path is empty" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
