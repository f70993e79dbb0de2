"""Sinks: the registry, one thread and queue each (a slow sink stalls no other), the in-process consumer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import yaml

import pipeline
from ldfusion.errors import ConfigError
from pipeline.config import SINK_KINDS, SinkConfig
from pipeline.frames import EndOfStream, FrameMeta, FusedFrame
from pipeline.runner import run_pipeline
from pipeline.sinks import SINKS, CallbackSink, SinkFanout, build_sinks
from tests.conftest import REPO_ROOT
from tests.pipeline_helpers import Collect, cpu_fuser, decodable_frames, make_config, marked_video


def test_every_configurable_kind_is_registered_and_no_other():
    assert set(SINK_KINDS) == set(SINKS)


def test_an_unknown_sink_kind_is_a_one_line_config_error(tmp_path):
    config = make_config(tmp_path / "ir.mp4", tmp_path / "vi.mp4")
    config = type(config)(config.streams, sinks=(SinkConfig(kind="mp4", path="o.mp4"),))
    object.__setattr__(config.sinks[0], "kind", "rtmp")  # past the config check: the registry still refuses it
    with pytest.raises(ConfigError, match=r"^sinks: unknown sink kind 'rtmp'; choose one of mp4, png, zmq$"):
        build_sinks(config, {})


@pytest.mark.parametrize(
    "sink, expected",
    [
        ({"kind": "mp4", "path": "o.mp4", "keyint": 3_000_000_000}, r"keyint must be within 1\.\.2147483647; got 3000000000"),
        ({"kind": "zmq", "hwm": 3_000_000_000}, r"hwm must be within 1\.\.2147483647; got 3000000000"),
    ],
)
def test_numbers_beyond_what_ffmpeg_or_zeromq_hold_are_config_errors(sink, expected):
    """They passed the config and overflowed inside FFmpeg or ZeroMQ (exit 1, no MP4)."""
    with pytest.raises(ValueError, match=expected):
        SinkConfig(**sink)


def test_an_encoder_setting_that_overflows_ffmpeg_is_a_config_error_and_the_writer_still_closes(tmp_path):
    from ldfusion.video import VideoWriter

    writer = VideoWriter(tmp_path / "o.mp4", 30, keyint=2**40)
    with pytest.raises(ConfigError, match="cannot set up .* encoding"):
        writer.write_image(np.zeros((16, 16, 3), np.uint8))
    writer.close()  # was an AttributeError on the half-opened container


def _frame(seq: int) -> FusedFrame:
    return FusedFrame(FrameMeta("s", seq, seq / 30, seq / 30, seq / 30, seq, seq, 0.0, 0.0), {})


class _Gate:
    """A sink that waits for ``release`` before each write."""

    kind, views = "gate", ()

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[int] = []
        self.outputs: list[str] = []

    def write(self, frame: FusedFrame) -> None:
        self.release.wait(10)
        self.seen.append(frame.meta.seq)


@pytest.mark.parametrize("live", [False, True])
def test_a_slow_sink_does_not_stall_another(live):
    slow, fast = _Gate(), Collect()
    done = []
    fanout = SinkFanout([slow, fast.sink()], queue_size=4, live=live, on_done=lambda f: done.append(f.meta.seq))
    threads = [threading.Thread(target=fanout.drain, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    n = 4 if not live else 20  # file mode: as many as the slow sink's queue holds; live: any number
    for seq in range(n):
        assert fanout.put(_frame(seq))
        if live:  # a camera's pace, which the fast sink keeps up with
            time.sleep(0.01)
    deadline = time.monotonic() + 5
    while len(fast.frames) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [f.meta.seq for f in fast.frames] == list(range(n)) and slow.seen == []  # the fast sink did not wait
    slow.release.set()
    fanout.put_end(EndOfStream("*"))
    for thread in threads:
        thread.join(5)
    if live:  # the slow sink kept the newest frames and its queue counted the rest
        assert slow.seen[-1] == n - 1 and len(slow.seen) + fanout.queues[0].dropped == n
        assert done == slow.seen  # a frame counts as written once every sink wrote it
    else:  # nothing is lost in file mode
        assert slow.seen == list(range(n)) and done == list(range(n))


def test_in_process_consumer_gets_device_tensors(tmp_path, random_weights):
    ir, vi = marked_video(tmp_path / "ir.mp4", 5, 30), marked_video(tmp_path / "vi.mp4", 5, 30, seed=1)
    fuser = cpu_fuser(random_weights["ld-lite"])
    collect = Collect()
    run_pipeline(make_config(ir, vi, model={"smoothing": False}), fuser, extra_sinks=[collect.sink()])
    got = list(pipeline.fused_frames(make_config(ir, vi, model={"smoothing": False}), fuser))
    assert [f.meta.seq for f in got] == [0, 1, 2, 3, 4]
    for frame, reference in zip(got, collect.frames):
        assert frame.rgb.shape == (3, 48, 64) and frame.rgb.dtype == torch.float32 and frame.rgb.device == fuser.device
        assert frame.ir.shape == (1, 48, 64) and frame.ycrcb.shape == (3, 48, 64)
        as_u8 = (frame.rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.abs(as_u8.astype(int) - reference.fused.astype(int)).max() <= 1  # what the sinks get


def test_the_in_process_api_takes_a_dict_or_a_path_and_names_wrong_arguments(tmp_path, random_weights):
    """A dict or a YAML path was an AttributeError ('dict' object has no attribute 'live'), weights
    by name where a Fuser goes another, a queue size as text a bare TypeError from a comparison."""
    import yaml

    from ldfusion.config import to_dict
    from pipeline.config import load_pipeline_config

    ir, vi = marked_video(tmp_path / "ir.mp4", 3, 30, seed=1), marked_video(tmp_path / "vi.mp4", 3, 30, seed=2)
    data = to_dict(make_config(ir, vi, model={"weights": str(random_weights["ld-lite"]), "device": "cpu"}))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    assert [f.meta.seq for f in pipeline.fused_frames(data)] == [0, 1, 2]
    assert [f.meta.seq for f in pipeline.fused_frames(path)] == [0, 1, 2]
    assert run_pipeline(str(path)).frames_out == 3
    with pytest.raises(TypeError, match="fuser must be a loaded ldfusion.inference.Fuser or None; got str 'default'"):
        next(pipeline.fused_frames(data, "default"))
    with pytest.raises(TypeError, match="queue_size must be a whole number of frames; got '4'"):
        next(pipeline.fused_frames(data, queue_size="4"))
    with pytest.raises(TypeError, match="config must be a PipelineConfig, a dict or a YAML file's path; got NoneType"):
        run_pipeline(None)
    with pytest.raises(ValueError, match="queue_size must be at least 1 frame; got 0"):  # was "queue consumer: maxsize ..."
        next(pipeline.fused_frames(data, queue_size=0))
    with pytest.raises(TypeError, match=r"config is YAML text; give the file's path, or the text as a dict"):
        run_pipeline(yaml.safe_dump(data))  # was the whole text printed back as a missing file's name
    with pytest.raises(TypeError, match="overrides are a list of 'section.key=value' strings"):
        load_pipeline_config(path, "run.max_frames=3")
    with pytest.raises(TypeError, match="a dict goes to from_dict"):
        load_pipeline_config(data)


def test_an_output_name_too_long_for_the_file_system_is_refused_before_the_run(tmp_path, random_weights):
    """It failed once frames were fused (the png sink had written 12), advising disk space."""
    ir, vi = marked_video(tmp_path / "ir.mp4", 3, 30, seed=1), marked_video(tmp_path / "vi.mp4", 3, 30, seed=2)
    sinks = [{"kind": "png", "path": "frames"}, {"kind": "mp4", "path": "a" * 300 + ".mp4"}]
    with pytest.raises(ConfigError, match=r"has a name of 304 bytes \(a{24}\.\.\.\); this file system takes names up to 255"):
        run_pipeline(make_config(ir, vi, sinks=sinks, out_dir=tmp_path / "out"), cpu_fuser(random_weights["ld-lite"]))
    assert not (tmp_path / "out").exists()


def test_the_in_process_api_refuses_existing_outputs_as_the_command_does(tmp_path, random_weights):
    """run_pipeline and fused_frames replaced an earlier run's MP4 without run.overwrite."""
    ir, vi = marked_video(tmp_path / "ir.mp4", 3, 30, seed=1), marked_video(tmp_path / "vi.mp4", 3, 30, seed=2)
    config = make_config(ir, vi, sinks=[{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "o.mp4").write_bytes(b"an earlier result")
    with pytest.raises(ConfigError, match="exists already; pass --overwrite"):
        run_pipeline(config, cpu_fuser(random_weights["ld-lite"]))
    with pytest.raises(ConfigError, match="exists already; pass --overwrite"):
        next(pipeline.fused_frames(config, cpu_fuser(random_weights["ld-lite"])))
    assert (tmp_path / "out" / "o.mp4").read_bytes() == b"an earlier result"


def test_overwriting_a_png_folder_leaves_no_frame_of_the_earlier_run(tmp_path, random_weights):
    """--overwrite replaced frames one by one: a shorter second run left the first run's later
    frames beside its own (another clip's frames in this stream's output, exit 0)."""
    long_ir, long_vi = marked_video(tmp_path / "a_ir.mp4", 8, 30, seed=1), marked_video(tmp_path / "a_vi.mp4", 8, 30, seed=2)
    short_ir, short_vi = marked_video(tmp_path / "b_ir.mp4", 3, 30, seed=3), marked_video(tmp_path / "b_vi.mp4", 3, 30, seed=4)
    fuser = cpu_fuser(random_weights["ld-lite"])
    sinks = [{"kind": "png", "path": "png"}]
    run_pipeline(make_config(long_ir, long_vi, sinks=sinks, out_dir=tmp_path / "out"), fuser)
    (tmp_path / "out" / "png" / "notes.txt").write_text("mine")
    run_pipeline(make_config(short_ir, short_vi, sinks=sinks, out_dir=tmp_path / "out", run={"overwrite": True}), fuser)
    assert sorted(path.name for path in (tmp_path / "out" / "png").iterdir()) == ["000000.png", "000001.png", "000002.png", "notes.txt"]


def test_leaving_the_consumer_loop_early_stops_the_pipeline(tmp_path, random_weights):
    """The pipeline stops, and the MP4 holds every frame the consumer was given: an abort
    dropped what the MP4 sink's queue held, so it could end with none of them."""
    n = 120
    ir, vi = marked_video(tmp_path / "ir.mp4", n, 30), marked_video(tmp_path / "vi.mp4", n, 30, seed=1)
    config = make_config(ir, vi, [{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path / "out")
    before = threading.active_count()
    for frame in pipeline.fused_frames(config, cpu_fuser(random_weights["ld-lite"]), queue_size=2):
        if frame.meta.seq == 2:
            break
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    assert 3 <= decodable_frames(tmp_path / "out" / "o.mp4") < n


def _slow(fuser, seconds: float):
    """``fuser`` taking ``seconds`` more for every batch, as a big network on a small CPU does."""
    start = fuser.start_fuse_y

    def slow_start(vi_y, ir):
        time.sleep(seconds)
        return start(vi_y, ir)

    fuser.start_fuse_y = slow_start
    return fuser


def test_leaving_the_consumer_loop_behind_a_slow_model_returns_at_once(tmp_path, random_weights):
    """A stop fused every frame already read before the loop could be left: 22 s behind a
    slow model. Now fusing stops too, and what was fused is written."""
    n = 120
    ir, vi = marked_video(tmp_path / "ir.mp4", n, 30), marked_video(tmp_path / "vi.mp4", n, 30, seed=1)
    config = make_config(ir, vi, [{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path / "out", model={"batch_size": 1})
    frames = pipeline.fused_frames(config, _slow(cpu_fuser(random_weights["ld-lite"]), 0.1), queue_size=2)
    for frame in frames:
        if frame.meta.seq == 2:
            break
    time.sleep(1.0)  # the readers fill their queues meanwhile: 30 frames or more, 3 s of fusing
    start = time.monotonic()
    frames.close()
    assert time.monotonic() - start < 1.0
    assert 3 <= decodable_frames(tmp_path / "out" / "o.mp4") < 30  # what was fused by then (13 here)


def test_a_stop_while_the_run_starts_up_reads_nothing(tmp_path, random_weights):
    """A stop before the streams were opened (a consumer interrupted in its first next()) was
    lost: the run went on to fuse the whole video, 130 s of it in one try."""
    from pipeline.runner import Pipeline

    ir, vi = marked_video(tmp_path / "ir.mp4", 120, 30), marked_video(tmp_path / "vi.mp4", 120, 30, seed=1)
    run = Pipeline(make_config(ir, vi, [{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path / "out"), cpu_fuser(random_weights["ld-lite"]))
    run.stop("the consumer left the loop")
    summary = run.run()
    assert (summary.frames_out, summary.stopped_by) == (0, "the consumer left the loop")


def test_ctrl_c_while_the_consumer_loop_is_left_aborts_with_valid_outputs(tmp_path, random_weights, monkeypatch):
    """Interrupting the wait for the pipeline left it encoding into the interpreter's teardown:
    SIGABRT and no MP4. The Ctrl-C now aborts the run, which closes its files, and is raised."""
    import signal

    from pipeline.sinks import Mp4Sink

    write = Mp4Sink.write
    monkeypatch.setattr(Mp4Sink, "write", lambda self, frame: (time.sleep(0.3), write(self, frame))[1])  # a slow encoder
    n = 60
    ir, vi = marked_video(tmp_path / "ir.mp4", n, 30), marked_video(tmp_path / "vi.mp4", n, 30, seed=1)
    config = make_config(ir, vi, [{"kind": "mp4", "path": "o.mp4"}], out_dir=tmp_path / "out")
    frames = pipeline.fused_frames(config, cpu_fuser(random_weights["ld-lite"]), queue_size=8)
    next(frames)
    time.sleep(1.0)  # the encoder's queue fills: seconds of encoding to wait for
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        frames.close()
    timer.cancel()
    assert time.monotonic() - start < 2.0
    assert 1 <= decodable_frames(tmp_path / "out" / "o.mp4") < n


def test_a_script_that_ends_inside_the_consumer_loop_exits_cleanly_with_valid_outputs(tmp_path, random_weights):
    """An unclosed generator at interpreter exit left the pipeline running into the teardown:
    'terminate called without an active exception', SIGABRT, and no MP4."""
    script = tmp_path / "consumer.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "import pipeline\n"
        "from tests.pipeline_helpers import make_config, marked_video\n"
        "tmp = Path(sys.argv[1])\n"
        "ir, vi = marked_video(tmp / 'ir.mp4', 120, 30), marked_video(tmp / 'vi.mp4', 120, 30, seed=1)\n"
        "sinks = [{'kind': 'mp4', 'path': 'o.mp4'}]\n"
        "model = {'weights': sys.argv[2], 'device': 'cpu', 'batch_size': 1}\n"
        "frames = pipeline.fused_frames(make_config(ir, vi, sinks, out_dir=tmp / 'out', model=model), queue_size=2)\n"
        "print('first frame', next(frames).meta.seq)\n"  # and the script ends, the loop unfinished
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(random_weights["ld-lite"])], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "first frame 0" in done.stdout
    assert 1 <= decodable_frames(tmp_path / "out" / "o.mp4") < 120  # stopped, closed with what was read


@pytest.mark.slow
def test_fragmented_mp4_survives_kill_9_up_to_the_last_fragment(tmp_path, random_weights):
    """A real `ldfusion run` killed with SIGKILL after more than two GOPs leaves a file that
    decodes to its last complete fragment."""
    n, keyint = 90, 5
    ir, vi = marked_video(tmp_path / "ir.mp4", n, 15), marked_video(tmp_path / "vi.mp4", n, 15, seed=1)
    config = {
        "streams": [{"id": "cam0", "ir": {"path": str(ir)}, "visible": {"path": str(vi)}}],
        "model": {"weights": str(random_weights["ld-lite"]), "device": "cpu"},
        "sinks": [{"kind": "mp4", "path": "o.mp4", "fragmented": True, "keyint": keyint}],
        "run": {"out_dir": str(tmp_path / "out"), "realtime": True, "progress": False},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "ldfusion_cli.main", "run", str(tmp_path / "run.yaml"), "-q"], env=env)
    output = tmp_path / "out" / "o.mp4"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if output.is_file() and decodable_frames(output) >= 2 * keyint + 1:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    frames = decodable_frames(output)
    assert frames >= 2 * keyint and frames < n  # whole GOPs up to the kill, not the full clip


def test_the_mp4_encoder_is_resolved_before_the_first_frame(tmp_path, random_weights, monkeypatch):
    """Probing NVENC creates a CUDA context; done at the first frame, live frames queue behind
    it. The run resolves each MP4 sink's encoder for the stream's size (side by side: three
    panels wide) before any frame is fused."""
    import ldfusion.video
    from pipeline.fusion_worker import FusionWorker

    ir = marked_video(tmp_path / "ir.mp4", 4, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 4, 30, seed=2)
    events: list = []
    choose = ldfusion.video.choose_encoder
    monkeypatch.setattr(ldfusion.video, "choose_encoder", lambda *args: events.append(("encoder", args[:3])) or choose(*args))
    submit = FusionWorker.submit
    monkeypatch.setattr(FusionWorker, "submit", lambda self, pairs: events.append(("batch", len(pairs))) or submit(self, pairs))
    sinks = [{"kind": "mp4", "path": "fused.mp4"}, {"kind": "mp4", "path": "sbs.mp4", "content": "side_by_side"}]
    run_pipeline(make_config(ir, vi, sinks, out_dir=tmp_path / "out"), cpu_fuser(random_weights["ld-lite"]))
    first_batch = events.index(next(e for e in events if e[0] == "batch"))
    assert {e[1] for e in events[:first_batch]} == {("auto", 64, 48), ("auto", 192, 48)}
    assert decodable_frames(tmp_path / "out" / "sbs.mp4") == 4


def test_frames_a_slow_live_consumer_missed_are_counted_as_dropped(tmp_path, random_weights):
    """Live mode keeps the newest frames for the in-process consumer; the ones it never saw
    were in no count (summary.json: 0 dropped while a detector at 50 ms a frame saw 88 of 120)."""
    import json

    ir = marked_video(tmp_path / "ir.mp4", 30, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 30, 30, seed=2)
    config = make_config(ir, vi, out_dir=tmp_path / "out", run={"mode": "live"}, model={"batch_size": 1})
    seen = [frame.meta.seq for frame in pipeline.fused_frames(config, cpu_fuser(random_weights["ld-lite"]), queue_size=2)
            if time.sleep(0.06) is None]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(seen) < summary["frames_out"]  # the consumer is slower than the cameras
    assert summary["dropped"] >= summary["frames_out"] - len(seen)


def test_a_bt709_visible_video_keeps_its_colours_in_every_output(tmp_path, random_weights):
    """RGB was made by BT.601 whatever the video stated, and the MP4s were written untagged: a
    BT.709 camera's greens came out a tenth too bright in PNGs, ZeroMQ, the in-process frames
    and players alike."""
    import av
    import cv2

    from tests.pipeline_helpers import tagged_colour_clip

    rgb = np.empty((48, 64, 3), np.uint8)
    rgb[:] = (39, 200, 79)
    vi = tagged_colour_clip(tmp_path / "vi709.mp4", rgb, colorspace=1, n=4)
    ir = marked_video(tmp_path / "ir.mp4", 4, 30)
    sinks = [{"kind": "png", "path": "sbs", "content": "side_by_side"}, {"kind": "mp4", "path": "fused.mp4"}]
    run_pipeline(make_config(ir, vi, sinks, tmp_path / "out"), cpu_fuser(random_weights["ld-lite"]))
    pictures = sorted((tmp_path / "out" / "sbs").glob("*.png"))
    assert len(pictures) == 4
    for path in pictures:
        shown = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)[:, 64:128].astype(int)  # IR | visible | fused
        assert np.abs(shown - rgb).max() <= 3, shown[0, 0]
    with av.open(str(tmp_path / "out" / "fused.mp4")) as written:
        context = written.streams.video[0].codec_context
        assert (context.colorspace, context.color_primaries, context.color_trc, context.color_range) == (1, 1, 1, 1)


def test_an_mp4_states_the_matrix_of_the_planes_it_holds(tmp_path, random_weights):
    """An untagged video's planes pass through: its MP4 stays untagged, as the source plays.
    Images and cameras are converted from RGB by BT.601: their MP4 says BT.601 (untagged, a
    player shows HD video as BT.709)."""
    import av

    from ldfusion.imageio import write_image
    from tests.pipeline_helpers import marked_frame

    ir, vi = marked_video(tmp_path / "ir.mp4", 2, 30), marked_video(tmp_path / "vi.mp4", 2, 30, seed=1)
    folders = {}
    for kind in ("ir", "vi"):
        folders[kind] = tmp_path / f"{kind}_images"
        folders[kind].mkdir()
        for i in range(2):
            write_image(folders[kind] / f"{i}.png", marked_frame(i, 64, 48, seed=i))
    images = {"ir": {"kind": "images", "path": str(folders["ir"]), "fps": 30},
              "visible": {"kind": "images", "path": str(folders["vi"]), "fps": 30}}
    spaces = {}
    for name, stream in (("video", {}), ("images", images)):
        config = make_config(ir, vi, [{"kind": "mp4", "path": "o.mp4"}], tmp_path / name, stream=stream)
        run_pipeline(config, cpu_fuser(random_weights["ld-lite"]))
        with av.open(str(tmp_path / name / "o.mp4")) as written:
            context = written.streams.video[0].codec_context
            spaces[name] = context.colorspace
            assert context.color_range in (0, 1)  # limited; x264 leaves it unsaid when nothing else is said
    assert spaces == {"video": 2, "images": 6}


@pytest.mark.parametrize("views", [("fused:bgr",), ("fussed:rgb24",), ("fused:rgba",), ("device:rgb24",)])
def test_a_callback_sink_asking_for_a_view_that_does_not_exist_is_refused(tmp_path, random_weights, views):
    """An unknown view was rendered as something else: fused:bgr as RGB, fussed:rgb24 side by side."""
    ir, vi = marked_video(tmp_path / "ir.mp4", 2, 30), marked_video(tmp_path / "vi.mp4", 2, 30, seed=1)
    with pytest.raises(ValueError, match=f"no view '{views[0]}'"):
        run_pipeline(make_config(ir, vi), cpu_fuser(random_weights["ld-lite"]), extra_sinks=[CallbackSink(print, views=views)])


def test_callback_sink_views_given_as_one_string_are_named():
    with pytest.raises(TypeError, match=r"views is a tuple of view names, e.g. \('fused:rgb24',\)"):
        CallbackSink(print, views="fused:rgb24")  # was read letter by letter: "no view 'f'"


def test_a_plain_function_as_an_extra_sink_is_named(tmp_path, random_weights):
    ir, vi = marked_video(tmp_path / "ir.mp4", 2, 30), marked_video(tmp_path / "vi.mp4", 2, 30, seed=1)
    with pytest.raises(TypeError, match=r"extra_sinks takes Sink objects \(CallbackSink\(function\)"):
        run_pipeline(make_config(ir, vi), cpu_fuser(random_weights["ld-lite"]), extra_sinks=[print])


def test_a_run_into_the_outputs_of_a_run_still_going_in_this_process_is_refused(tmp_path, random_weights):
    """A notebook: cell A leaves a fused_frames loop with the generator kept in a variable (its
    run goes on); cell B runs into the same out_dir with overwrite. Cell A's run, closed later,
    replaced cell B's complete MP4 and summary.json."""
    from ldfusion.errors import DataError

    ir, vi = marked_video(tmp_path / "ir.mp4", 30, 30), marked_video(tmp_path / "vi.mp4", 30, 30, seed=1)
    fuser = cpu_fuser(random_weights["ld-lite"])
    config = make_config(ir, vi, [{"kind": "mp4", "path": "o.mp4"}], tmp_path / "out", run={"overwrite": True})
    frames = pipeline.fused_frames(config, fuser, queue_size=1)
    next(frames)  # cell A
    with pytest.raises(DataError, match=r"o\.mp4 is still written by another run in this process"):
        run_pipeline(config, fuser)  # cell B
    frames.close()
    assert run_pipeline(config, fuser).frames_out == 30 and decodable_frames(tmp_path / "out" / "o.mp4") == 30


def test_sigterm_while_a_script_reads_fused_frames_leaves_valid_outputs(tmp_path, random_weights):
    """systemd or docker stopping a detector service: SIGTERM's default killed the process
    inside the loop, and the MP4 (48 bytes) could not be opened. It is raised as Terminated
    (a KeyboardInterrupt) in the loop now, and the run closes its files first."""
    script = tmp_path / "consumer.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "import pipeline\n"
        "from tests.pipeline_helpers import make_config, marked_video\n"
        "tmp = Path(sys.argv[1])\n"
        "ir, vi = marked_video(tmp / 'ir.mp4', 300, 30), marked_video(tmp / 'vi.mp4', 300, 30, seed=1)\n"
        "model = {'weights': sys.argv[2], 'device': 'cpu', 'batch_size': 1}\n"
        "config = make_config(ir, vi, [{'kind': 'mp4', 'path': 'o.mp4'}], out_dir=tmp / 'out', model=model, run={'realtime': True})\n"
        "for frame in pipeline.fused_frames(config, queue_size=2):\n"
        "    print('frame', frame.meta.seq, flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(random_weights["ld-lite"])], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("frame 0")
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0 and "Terminated" in err, err[-2000:]
    assert 1 <= decodable_frames(tmp_path / "out" / "o.mp4") < 300
