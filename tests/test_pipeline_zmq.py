"""ZeroMQ: a subscriber over tcp://127.0.0.1 gets every frame of a file run, in order."""

from __future__ import annotations

import re
import socket
import threading

import numpy as np
import pytest

from ldfusion.imageio import read_visible
from pipeline import subscriber as subscriber_cli
from pipeline.frames import FrameMeta, FusedFrame
from pipeline.runner import run_pipeline
from pipeline.sinks import ZmqSink
from pipeline.subscriber import Subscriber, decode_message
from tests.pipeline_helpers import cpu_fuser, make_config, marked_video, read_video

HEADER_KEYS = {"stream", "seq", "t_fused", "t_ir", "t_vi", "shape", "dtype", "pixel_format", "captured_unix", "published_unix"}


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def receive_in_background(endpoint: str, count: int, timeout_s: float = 30.0):
    received: list = []
    ready = threading.Event()

    def receive() -> None:
        with Subscriber(endpoint, "fused", timeout_s=timeout_s, hwm=1000) as sub:
            ready.set()
            for message in sub:
                received.append(message)
                if len(received) == count:
                    return

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    ready.wait(5)
    return thread, received


def test_subscriber_receives_every_frame_in_order(tmp_path, random_weights):
    n = 9
    ir = marked_video(tmp_path / "ir.mp4", n, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", n, 30, seed=2)
    endpoint = free_endpoint()
    thread, received = receive_in_background(endpoint, n)
    sinks = [
        {"kind": "zmq", "endpoint": endpoint, "hwm": 1000, "wait_subscribers": 1, "wait_timeout_s": 20},
        {"kind": "png", "path": "png"},  # lossless: the frames before MP4 encoding
        {"kind": "mp4", "path": "o.mp4"},
    ]
    summary = run_pipeline(make_config(ir, vi, sinks=sinks, out_dir=tmp_path), cpu_fuser(random_weights["ld-lite"]))
    thread.join(30)
    assert not thread.is_alive()

    assert summary.frames_out == n == len(read_video(tmp_path / "o.mp4")["frames"])
    assert len(received) == n
    assert [header["seq"] for header, _ in received] == list(range(n))
    for header, frame in received:
        assert HEADER_KEYS <= set(header)
        assert header["topic"] == "fused/cam0" and header["stream"] == "cam0"
        assert header["shape"] == [48, 64, 3] and header["dtype"] == "uint8" and header["pixel_format"] == "rgb24"
        assert header["t_fused"] == pytest.approx(header["seq"] / 30)
        assert abs(header["t_ir"] - header["t_vi"]) < 1e-9
        png = read_visible(tmp_path / "png" / f"{header['seq']:06d}.png")
        assert np.array_equal(frame, png)


def _fused(seq: int) -> FusedFrame:
    meta = FrameMeta("cam0", seq, seq / 10, seq / 10, seq / 10, seq, seq, 0.0, 0.0)
    image = np.full((4, 6, 3), seq, np.uint8)
    return FusedFrame(meta, {"fused:rgb24": image})


def _subscribe_to(sink: ZmqSink, frames, *args: str) -> int:
    """``ldfusion subscribe`` on ``sink`` while it publishes ``frames()`` again and again (then closed)."""
    stop = threading.Event()
    thread = _publish_until(sink, stop, frames)
    try:
        return subscriber_cli.main(["--endpoint", sink.endpoint, *args])
    finally:
        stop.set()
        thread.join(5)
        sink.close()


def test_subscribe_command_prints_frames_and_stops_at_count(capsys):
    counter = iter(range(10**9))
    code = _subscribe_to(ZmqSink(free_endpoint(), hwm=100), lambda: [_fused(next(counter))], "--count", "3", "--timeout", "20")
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("cam0 seq") == 3 and "4x6x3 rgb24" in out
    assert "received 3 frame(s)" in out


def test_subscribe_without_a_publisher_times_out_with_one_line(capsys):
    code = subscriber_cli.main(["--endpoint", free_endpoint(), "--timeout", "0.3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no frames from tcp://127.0.0.1:" in err[0]


def test_malformed_messages_are_named():
    from ldfusion.errors import DataError

    with pytest.raises(DataError, match="expected 3 parts"):
        decode_message([b"fused/x", b"{}"])
    with pytest.raises(DataError, match="not JSON"):
        decode_message([b"t", b"{nope", b""])
    with pytest.raises(DataError, match="do not make"):
        decode_message([b"t", b'{"stream": "a", "seq": 1, "shape": [2, 2, 3], "dtype": "uint8"}', b"123"])


def test_a_wait_longer_than_zeromqs_timeout_still_ends_when_the_subscriber_joins():
    """wait_timeout_s 1e7 (115 days) overflowed ZeroMQ's C-int poll timeout in milliseconds."""
    endpoint = free_endpoint()
    joined = threading.Event()

    def subscribe_soon() -> None:
        with Subscriber(endpoint, "fused", timeout_s=5.0):
            joined.wait(10)

    thread = threading.Thread(target=subscribe_soon, daemon=True)
    thread.start()
    sink = ZmqSink(endpoint, wait_subscribers=1, wait_timeout_s=1e7)
    try:
        joined.set()
        assert sink.endpoint == endpoint  # it returned: the subscriber was seen
    finally:
        sink.close()
        thread.join(10)


def _publish_until(sink: ZmqSink, stop: threading.Event, frames) -> threading.Thread:
    """Keep publishing ``frames()`` (a list of FusedFrame) until ``stop`` is set."""

    def publish() -> None:
        while not stop.wait(0.02):
            for frame in frames():
                sink.write(frame)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    return thread


def _frame_of(stream: str, seq: int) -> FusedFrame:
    meta = FrameMeta(stream, seq, seq / 10, seq / 10, seq / 10, seq, seq, 0.0, 0.0)
    return FusedFrame(meta, {"fused:rgb24": np.full((4, 6, 3), seq % 256, np.uint8)})


def test_a_stream_topic_receives_that_stream_only():
    """ZeroMQ matches topics by prefix: fused/cam0 also delivered the frames of stream cam01."""
    sink, stop = ZmqSink("tcp://127.0.0.1:*", hwm=100), threading.Event()
    counter = iter(range(10**9))
    thread = _publish_until(sink, stop, lambda: [_frame_of(stream, next(counter)) for stream in ("cam0", "cam01")])
    try:
        with Subscriber(sink.endpoint, "fused/cam0", timeout_s=10) as subscriber:
            streams = {subscriber.receive()[0]["stream"] for _ in range(20)}
    finally:
        stop.set()
        thread.join(5)
        sink.close()
    assert streams == {"cam0"}


def test_a_publisher_on_any_free_port_reports_the_port_it_took(caplog):
    """``tcp://127.0.0.1:*`` was reported as such, and only in the end-of-run summary: no
    subscriber could find it while the run went on."""
    with caplog.at_level("INFO"):
        sink = ZmqSink("tcp://127.0.0.1:*")
    try:
        host, port = sink.endpoint.rsplit(":", 1)
        assert host == "tcp://127.0.0.1" and port.isdigit() and sink.outputs == [sink.endpoint]
        assert f"publishing fused frames on {sink.endpoint}" in caplog.text
    finally:
        sink.close()


@pytest.mark.parametrize("header, problem", [
    ('{"stream": "a", "seq": "x", "shape": [2, 2], "dtype": "uint8"}', "seq 'x' is not a whole number"),
    ('{"stream": "a", "seq": NaN, "shape": [2, 2], "dtype": "uint8"}', "seq nan is not a whole number"),
    ('{"stream": "a", "seq": 1, "t_fused": "soon", "shape": [2, 2], "dtype": "uint8"}', "t_fused 'soon' is not a finite number"),
    ('{"stream": 5, "seq": 1, "shape": [2, 2], "dtype": "uint8"}', "stream 5 is not text"),
    ('{"stream": "a", "seq": 1, "t_fused": null, "shape": [2, 2], "dtype": "uint8"}', "t_fused None is not a finite number"),
    ('{"stream": "a", "seq": 1, "captured_unix": null, "shape": [2, 2], "dtype": "uint8"}', "captured_unix None is not a finite number"),
    ('{"stream": "a", "seq": 1, "pixel_format": 24, "shape": [2, 2], "dtype": "uint8"}', "pixel_format 24 is not text"),
    ('{"stream": "a", "seq": 1, "t_fused": 1' + "0" * 400 + ', "shape": [2, 2], "dtype": "uint8"}', "t_fused 1000.* is not a finite number"),
    ('{"stream": "a", "seq": 1' + "0" * 5000 + ', "shape": [2, 2], "dtype": "uint8"}', "header is not JSON"),
    ('{"stream": "a", "seq": 1, "shape": [2, 2], "dtype": "uint8", "x": ' + "[" * 100000 + "]" * 100000 + "}", "nests too deeply"),
])
def test_header_fields_of_the_wrong_type_are_malformed_messages(header, problem):
    """They crashed `ldfusion subscribe` (ValueError, TypeError, RecursionError: exit 1), even
    with --skip-malformed, which skips malformed messages only."""
    from ldfusion.errors import DataError

    with pytest.raises(DataError, match=problem):
        decode_message([b"fused/a", header.encode(), bytes(4)])


def test_sigterm_ends_subscribe_with_its_count(tmp_path):
    """The default handler killed the subscriber without the count the README promises."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sink, stop = ZmqSink("tcp://127.0.0.1:*", hwm=100), threading.Event()
    counter = iter(range(10**9))
    thread = _publish_until(sink, stop, lambda: [_frame_of("cam0", next(counter))])
    try:
        process = subprocess.Popen([sys.executable, "-m", "ldfusion_cli.main", "subscribe", "--endpoint", sink.endpoint, "--summary-only"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    finally:
        stop.set()
        thread.join(5)
        sink.close()
    assert process.returncode == 143, out
    assert "received" in out and "frame(s)" in out


def test_an_ipc_endpoint_on_a_file_is_refused_and_the_file_kept(tmp_path):
    """libzmq unlinks what is at an ipc:// path before binding: the run's own input video (or its
    config, or any file) was deleted, exit 0. Only an old socket may be replaced."""
    import socket as sockets

    from ldfusion.config import from_dict
    from ldfusion.errors import ConfigError
    from pipeline.config import SinkConfig

    video = tmp_path / "myvis.mp4"
    video.write_bytes(b"a recording")
    with pytest.raises(ConfigError, match="binding there deletes the file"):
        from_dict(SinkConfig, {"kind": "zmq", "endpoint": f"ipc://{video}"})
    assert video.read_bytes() == b"a recording"
    old = tmp_path / "old.sock"  # what an earlier run left
    with sockets.socket(sockets.AF_UNIX) as leftover:
        leftover.bind(str(old))
    assert from_dict(SinkConfig, {"kind": "zmq", "endpoint": f"ipc://{old}"}).endpoint == f"ipc://{old}"
    with pytest.raises(ConfigError, match="inproc:// reaches no subscriber"):
        from_dict(SinkConfig, {"kind": "zmq", "endpoint": "inproc://frames"})


@pytest.mark.parametrize("sink, message", [
    ({"kind": "png", "path": "p", "pixel_format": "gray"}, "pixel_format is not a setting of png sinks (only zmq sinks read it)"),
    ({"kind": "png", "path": "p", "crf": 10}, "crf is not a setting of png sinks (only mp4 sinks read it)"),
    ({"kind": "zmq", "path": "x.mp4"}, "path is not a setting of zmq sinks (only mp4 and png sinks read it)"),
    ({"kind": "zmq", "content": "side_by_side"}, "content is not a setting of zmq sinks"),
])
def test_a_setting_another_kind_of_sink_reads_is_refused(sink, message):
    """They were passed over in silence: pixel_format gray on a png sink still wrote RGB."""
    from ldfusion.config import from_dict
    from ldfusion.errors import ConfigError
    from pipeline.config import SinkConfig

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(SinkConfig, sink)


def test_an_ipc_socket_on_one_of_the_runs_own_outputs_is_refused(tmp_path):
    """The socket took the MP4's path first: the run lost its video and blamed a full disk."""
    from ldfusion.config import from_dict
    from ldfusion.errors import ConfigError
    from pipeline.config import PipelineConfig

    data = {
        "streams": [{"id": "s", "ir": {"path": "ir.mp4"}, "visible": {"path": "vi.mp4"}}],
        "sinks": [{"kind": "mp4", "path": "s.mp4"}, {"kind": "zmq", "endpoint": f"ipc://{tmp_path / 'out' / 's.mp4'}"}],
        "run": {"out_dir": str(tmp_path / "out")},
    }
    with pytest.raises(ConfigError, match=r"two outputs write .*s.mp4' \(mp4 and zmq\)"):
        from_dict(PipelineConfig, data)


def test_subscribe_counts_the_frames_it_missed_from_the_gaps_in_seq(capsys):
    """A subscriber more than hwm frames behind misses frames even in file mode; ZeroMQ drops
    them on its side and the publisher never learns of it, so the run's summary said 0
    dropped. `ldfusion subscribe` said nothing either; it counts the gaps now."""
    counter = iter(range(10**9))
    # every third frame of cam0 is never published: the subscriber sees the gaps
    frames = lambda: [_frame_of("cam0", seq) for seq in [next(counter)] if seq % 3]  # noqa: E731
    code = _subscribe_to(ZmqSink("tcp://127.0.0.1:*", hwm=100), frames, "--count", "10", "--timeout", "20", "--summary-only")
    out = capsys.readouterr().out
    assert code == 0
    missed = int(re.search(r"received 10 frame\(s\) in [\d.]+ s; missed (\d+) between the frames received \(gaps in seq", out).group(1))
    assert 4 <= missed <= 5  # 10 frames of seq n, n+1, n+3, n+4, ...: a gap after every second one


def test_seq_gaps_are_counted_per_stream():
    from pipeline.subscriber import SeqGaps

    gaps = SeqGaps()
    for stream, seq in [("a", 0), ("b", 5), ("a", 1), ("a", 4), ("b", 6), ("b", 9), ("a", 3)]:  # a late, older one: no gap
        gaps.note(stream, seq)
    assert gaps.missed == 2 + 2


def test_subscribe_that_hears_nothing_names_the_topic_it_listened_to(capsys):
    code = subscriber_cli.main(["--endpoint", free_endpoint(), "--timeout", "0.3", "--topic", "fused"])
    assert code == 2 and "subscribed to topic 'fused'" in capsys.readouterr().err


def test_two_zmq_sinks_on_one_endpoint_are_a_config_error(tmp_path):
    """The second bind failed with "Address already in use", as if another program held the port."""
    from ldfusion.errors import ConfigError
    from tests.pipeline_helpers import make_config

    sinks = [{"kind": "zmq", "endpoint": "tcp://127.0.0.1:5630"}, {"kind": "zmq", "endpoint": "tcp://127.0.0.1:5630", "topic": "b"}]
    with pytest.raises((ConfigError, ValueError), match="two zmq sinks bind tcp://127.0.0.1:5630 and tcp://127.0.0.1:5630"):
        make_config(tmp_path / "ir.mp4", tmp_path / "vi.mp4", sinks)
    for other in ("tcp://localhost:5630", "tcp://*:5630", "tcp://0.0.0.0:05630"):  # the same port, written otherwise
        with pytest.raises((ConfigError, ValueError), match=f"two zmq sinks bind tcp://127.0.0.1:5630 and {re.escape(other)}"):
            make_config(tmp_path / "ir.mp4", tmp_path / "vi.mp4", [sinks[0], {**sinks[1], "endpoint": other}])
    make_config(tmp_path / "ir.mp4", tmp_path / "vi.mp4", [{**sink, "endpoint": "tcp://127.0.0.1:*"} for sink in sinks])  # * takes a free port each
