"""The fusion stage: batching rules, streams sharing batches, temporal smoothing."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

import cv2

from ldfusion.inference import Finished, Fuser, FuserOptions
from ldfusion.threads import torch_threads
from ldfusion.variants import VariantSpec
from ldfusion.video import Planes
from pipeline.batching import FairCollector
from pipeline.frames import EndOfStream, FrameMeta, FramePair
from pipeline.fusion_worker import FusionWorker, StyleSmoother
from pipeline.queues import FrameQueue
from pipeline.registration import Registrar
from ldfusion.checkpoint import load_model
from ldfusion.errors import CheckpointError
from pipeline.runner import run_pipeline
from tests.pipeline_helpers import cpu_fuser, make_config, marked_video, texture


def pair(stream: str, seq: int, brightness: float = 1.0, size=(40, 32)) -> FramePair:
    w, h = size
    ir = texture(w, h, seed=seq + 10 * len(stream))
    vi = (texture(w, h, seed=seq + 100).astype(np.float32) * brightness).clip(0, 255).astype(np.uint8)
    meta = FrameMeta(stream, seq, seq / 30, seq / 30, seq / 30, seq, seq, 0.0, 0.0)
    return FramePair(meta, Planes.gray(ir), Planes.packed(np.repeat(vi[:, :, None], 3, axis=2)))


VIEWS = frozenset({"fused:rgb24", "ir:gray", "visible:rgb24"})


def worker(weights, smoothing: bool, batch_size: int = 4, max_wait_s: float = 0.0, pad_batches: bool | None = None) -> FusionWorker:
    registrars = {s: Registrar(s, None, "ir_to_visible", False) for s in ("a", "b")}
    return FusionWorker(cpu_fuser(weights), registrars, batch_size, max_wait_s, smoothing, momentum=0.8, views=VIEWS, pad_batches=pad_batches)


def test_style_smoother_is_an_ema_per_stream():
    smoother = StyleSmoother(momentum=0.75)
    codes = torch.tensor([1.0, 2.0, 10.0, 3.0]).view(4, 1, 1, 1)
    out = smoother(codes, ["a", "a", "b", "a"])
    a1 = 0.75 * 1.0 + 0.25 * 2.0
    assert out.flatten().tolist() == pytest.approx([1.0, a1, 10.0, 0.75 * a1 + 0.25 * 3.0])
    smoother.reset("a")
    assert smoother(torch.tensor([5.0]).view(1, 1, 1, 1), ["a"]).item() == 5.0


def test_streams_share_batches_without_sharing_smoothing(random_weights):
    a = [pair("a", i, brightness=1.0 + 0.3 * i) for i in range(3)]
    b = [pair("b", i, brightness=1.2 - 0.3 * i) for i in range(3)]
    together = worker(random_weights["ldfusion"], smoothing=True, batch_size=6).fuse([a[0], b[0], a[1], b[1], a[2], b[2]])
    alone_a = worker(random_weights["ldfusion"], smoothing=True).fuse(a)
    alone_b = worker(random_weights["ldfusion"], smoothing=True).fuse(b)
    by_stream = {"a": [f for f in together if f.meta.stream == "a"], "b": [f for f in together if f.meta.stream == "b"]}
    for mixed, alone in ((by_stream["a"], alone_a), (by_stream["b"], alone_b)):
        assert [f.meta.seq for f in mixed] == [0, 1, 2]
        for x, y in zip(mixed, alone):
            assert np.abs(x.fused.astype(int) - y.fused.astype(int)).max() <= 1


def test_smoothing_decodes_with_an_ema_of_ldfusion_style_codes(random_weights):
    frames = [pair("a", i, brightness=0.6 + 0.4 * i) for i in range(4)]
    w = worker(random_weights["ldfusion"], smoothing=True)
    decoded_styles = []
    decode = w.fuser.decode
    w.fuser.decode = lambda codes, **kwargs: decoded_styles.append(codes.style.flatten(1)) or decode(codes, **kwargs)
    w.fuse(frames[:2])  # two batches: the average carries over from one to the next
    w.fuse(frames[2:])

    per_frame = []
    for f in frames:  # each frame's own style code
        ir = torch.from_numpy(f.ir.data[0]).float().div(255)[None, None]
        vi_y = torch.from_numpy(f.visible.data[0][:, :, 0]).float().div(255)[None, None]
        per_frame.append(w.fuser.encode(vi_y, ir).style.flatten(1))
    expected = [per_frame[0]]
    for code in per_frame[1:]:
        expected.append(0.8 * expected[-1] + 0.2 * code)
    got = torch.cat(decoded_styles)
    assert torch.allclose(got, torch.cat(expected), atol=1e-5)
    assert not torch.allclose(got[1:], torch.cat(per_frame[1:]), atol=1e-4)  # the codes did change


def test_smoothing_is_a_no_op_for_ld_lite(random_weights):
    frames = [pair("a", i, brightness=0.6 + 0.4 * i) for i in range(3)]
    smooth = worker(random_weights["ld-lite"], smoothing=True).fuse(frames)
    plain = worker(random_weights["ld-lite"], smoothing=False).fuse(frames)
    assert all(np.array_equal(s.fused, p.fused) for s, p in zip(smooth, plain))


def test_different_sizes_in_one_batch_are_fused_separately(random_weights):
    frames = [pair("a", 0), pair("b", 0, size=(48, 24)), pair("a", 1)]
    fused = worker(random_weights["ld-lite"], smoothing=False).fuse(frames)
    assert [f.fused.shape for f in fused] == [(32, 40, 3), (24, 48, 3), (32, 40, 3)]


def test_batches_close_at_n_frames_or_when_the_wait_is_over():
    q = FrameQueue("a.paired", 10)
    collector = FairCollector({"a": q}, batch_size=3, max_wait_s=0.01)
    for i in range(5):
        q.put(pair("a", i))
    assert [p.meta.seq for p in collector.collect()[0]] == [0, 1, 2]  # full
    assert [p.meta.seq for p in collector.collect()[0]] == [3, 4]  # the wait ran out
    q.put_end(EndOfStream("a"))
    assert collector.collect() == ([], ["a"])


def test_run_fuses_everything_then_ends(random_weights):
    w = worker(random_weights["ld-lite"], smoothing=False, batch_size=2)
    condition = threading.Condition()
    paired = {s: FrameQueue(f"{s}.paired", 10, condition=condition) for s in ("a", "b")}
    fused = FrameQueue("fused", 10)
    for i in range(3):
        paired["a"].put(pair("a", i))
    paired["a"].put_end(EndOfStream("a"))
    paired["b"].put(pair("b", 0))
    paired["b"].put_end(EndOfStream("b"))
    w.run(paired, fused)
    items = [fused.get(timeout=1) for _ in range(5)]
    assert [(f.meta.stream, f.meta.seq) for f in items[:4]] == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]  # in turn
    assert isinstance(items[4], EndOfStream)
    assert w.collector.batcher.taken == {"a": 3, "b": 1}


class Probe(torch.nn.Module):
    """An identity network that notes ``note(input)`` at each call (its thread count, its shape)."""

    spec = VariantSpec(name="probe", content_dim=1, n_downsample=2, n_residual=0)

    def __init__(self, seen: list, note) -> None:
        super().__init__()
        self.seen = seen
        self.note = note

    def forward(self, vi_y: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.note(vi_y))
        return vi_y


def test_the_fusion_thread_runs_its_own_ops_on_one_thread_and_the_network_on_its_count(monkeypatch):
    """Range conversion and checks run on one thread (OpenMP's wake-ups cost more than they
    save beside the decoders); the network keeps its threads; the caller's count is unchanged."""
    monkeypatch.setenv("LDFUSION_NETWORK_THREADS", "2")
    in_network: list[int] = []
    fuser = Fuser(Probe(in_network, lambda _: torch.get_num_threads()), FuserOptions(device="cpu"))
    own_ops: list[int] = []
    registrars = {"a": Registrar("a", None, "ir_to_visible", False)}
    w = FusionWorker(fuser, registrars, batch_size=1, max_wait_s=0.0, smoothing=False, on_batch=lambda n: own_ops.append(torch.get_num_threads()))
    paired = {"a": FrameQueue("a.paired", 10)}
    for i in range(3):
        paired["a"].put(pair("a", i))
    paired["a"].put_end(EndOfStream("a"))
    fused = FrameQueue("fused", 10)
    before = torch.get_num_threads()
    thread = threading.Thread(target=w.run, args=(paired, fused))
    thread.start()
    thread.join()
    assert in_network == [2, 2, 2]
    assert own_ops == [1, 1, 1]
    assert torch.get_num_threads() == before
    assert [fused.get(timeout=1).meta.seq for _ in range(3)] == [0, 1, 2]


def test_torch_threads_sets_only_the_calling_thread_and_restores_it():
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def body() -> None:
        with torch_threads(1):
            seen["inside"] = torch.get_num_threads()
            inside.set()
            release.wait(5)
        seen["after"] = torch.get_num_threads()

    before = torch.get_num_threads()
    thread = threading.Thread(target=body)
    thread.start()
    assert inside.wait(5)
    seen["main meanwhile"] = torch.get_num_threads()
    release.set()
    thread.join()
    assert seen == {"inside": 1, "main meanwhile": before, "after": before}


def test_the_worker_registers_like_opencv(random_weights):
    """Pairs arrive unregistered; the worker warps and crops them on its device (here the
    CPU) with grid_sample, and its registered IR matches OpenCV's warp of the same frames."""
    from calibration.fileformat import Registration

    H = np.array([[1.05, 0.02, 2.0], [0.0, 0.98, -1.5], [0.0, 0.0, 1.0]])
    registration = Registration(H, (40, 32), (48, 40))
    raw = []
    for i in range(3):
        vi = np.repeat(texture(48, 40, seed=50 + i)[:, :, None], 3, axis=2)
        meta = FrameMeta("a", i, i / 30, i / 30, i / 30, i, i, 0.0, 0.0)
        raw.append(FramePair(meta, Planes.gray(texture(40, 32, seed=i)), Planes.packed(vi)))
    registrar = Registrar("a", registration, "ir_to_visible", crop=True)
    x, y, w, h = registrar.plan.crop
    fused = FusionWorker(cpu_fuser(random_weights["ld-lite"]), {"a": registrar}, batch_size=3, smoothing=False, views=VIEWS).fuse(raw)
    for pair_in, out in zip(raw, fused):
        expected = cv2.warpPerspective(pair_in.ir.data[0], H, (48, 40), flags=cv2.INTER_LINEAR)[y : y + h, x : x + w]
        assert out.fused.shape == (*out.ir.shape, 3) == (h, w, 3)
        # OpenCV interpolates with 5-bit fixed-point weights: allow one grey level.
        assert np.abs(out.ir.astype(int) - expected.astype(int)).max() <= 1
        assert np.array_equal(out.visible, pair_in.visible.data[0][y : y + h, x : x + w])


@pytest.mark.parametrize("variant", ["ld-lite", "ldfusion"])
def test_padded_partial_batches_give_the_same_frames(random_weights, variant):
    """Padding a partial batch to batch_size keeps the network's input shape fixed; the padded
    rows change no output and never reach a stream's style average."""
    frames = [pair("a", i, brightness=0.6 + 0.3 * i) for i in range(5)]

    def run(pad: bool) -> tuple[list, list]:
        w = worker(random_weights[variant], smoothing=True, batch_size=4, pad_batches=pad)
        shapes = []
        start_fuse_y, encode = w.fuser.start_fuse_y, w.fuser.encode  # fuse_y goes through start_fuse_y
        w.fuser.start_fuse_y = lambda vi_y, ir: shapes.append(vi_y.shape[0]) or start_fuse_y(vi_y, ir)
        w.fuser.encode = lambda vi_y, ir: shapes.append(vi_y.shape[0]) or encode(vi_y, ir)
        fused = w.fuse(frames[:3]) + w.fuse(frames[3:])
        if pad and w.smoother is None:  # the network call goes through FixedBatch, which counts the waste
            assert w.fixed_batch.padded_rows == 1 + 2 and w.fixed_batch.calls == 2
        return fused, shapes

    padded, padded_shapes = run(True)
    plain, plain_shapes = run(False)
    assert padded_shapes == [4, 4] and plain_shapes == [3, 2]
    assert [f.meta.seq for f in padded] == [0, 1, 2, 3, 4]
    for x, y in zip(padded, plain):
        assert np.abs(x.fused.astype(int) - y.fused.astype(int)).max() <= 1


@pytest.mark.parametrize("pad", [True, False])
def test_warm_up_runs_the_network_once_in_the_shape_the_stage_will_use(pad):
    """Padded batches (CUDA): the batch size, the one shape a compiled network is made for."""
    seen: list[tuple] = []
    fuser = Fuser(Probe(seen, lambda x: tuple(x.shape)), FuserOptions(device="cpu"))
    registrars = {"a": Registrar("a", None, "ir_to_visible", False)}
    FusionWorker(fuser, registrars, batch_size=4, smoothing=False, pad_batches=pad).warm_up((40, 24))
    assert seen == [(4 if pad else 1, 1, 24, 40)]


def test_a_run_on_cuda_warms_up_before_capture(tmp_path, random_weights, caplog):
    """In live mode the first batch would otherwise compile while every frame is dropped."""
    if not torch.cuda.is_available():
        pytest.skip("the warm-up runs on CUDA")
    ir = marked_video(tmp_path / "ir.mp4", 6, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 6, 30, seed=2)
    fuser = Fuser(load_model(random_weights["ld-lite"]), FuserOptions(device="cuda"))
    with caplog.at_level(logging.INFO, logger="pipeline.runner"):
        summary = run_pipeline(make_config(ir, vi, model={"batch_size": 4}), fuser)
    assert summary.frames_out == 6
    assert "warm-up: 64x48 at batch 4" in caplog.text


def test_a_run_with_cuda_graphs_writes_what_the_eager_network_writes_on_cuda(tmp_path, random_weights):
    """model.compile_mode: reduce-overhead in a whole run with a sink: the graph is recorded at
    warm-up (on the first batches it failed the run on an H200), and the frames match eager's."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a GPU")
    ir = marked_video(tmp_path / "ir.mp4", 12, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 12, 30, seed=2)
    written = {}
    for compile_mode in ("off", "reduce-overhead"):
        compile = {"compile": "off"} if compile_mode == "off" else {"compile": "on", "compile_mode": compile_mode}
        fuser = Fuser(load_model(random_weights["ld-lite"]), FuserOptions(device="cuda", **compile))
        sinks = [{"kind": "png", "path": "png"}]
        summary = run_pipeline(make_config(ir, vi, sinks, tmp_path / compile_mode, model={"batch_size": 4}), fuser)
        assert summary.frames_out == 12, compile_mode
        written[compile_mode] = [cv2.imread(str(path)) for path in sorted((tmp_path / compile_mode / "png").glob("*.png"))]
    assert len(written["reduce-overhead"]) == len(written["off"]) == 12
    for eager, graphs in zip(written["off"], written["reduce-overhead"]):
        assert np.abs(eager.astype(int) - graphs.astype(int)).max() <= 2  # half precision, other kernels


def test_a_run_on_openvino_compiles_before_capture_and_eager_cpu_does_not(tmp_path, random_weights, caplog):
    """OpenVINO compiles per input shape: done before the first frame, as on CUDA."""
    pytest.importorskip("openvino")
    ir = marked_video(tmp_path / "ir.mp4", 4, 30, seed=1)
    vi = marked_video(tmp_path / "vi.mp4", 4, 30, seed=2)
    for backend, warms in (("openvino", True), ("torch", False)):
        caplog.clear()
        fuser = Fuser.from_weights(random_weights["ld-lite"], options=FuserOptions(device="cpu", backend=backend))
        with caplog.at_level(logging.INFO, logger="pipeline.runner"):
            summary = run_pipeline(make_config(ir, vi, model={"batch_size": 1}, out_dir=tmp_path / backend), fuser)
        assert summary.frames_out == 4
        assert ("warm-up: 64x48 at batch 1" in caplog.text) == warms, backend


def _overlapping_worker(random_weights, events: list) -> FusionWorker:
    """A CPU worker run as on CUDA (``overlap``), noting when each batch is submitted and finished."""
    w = FusionWorker(cpu_fuser(random_weights["ld-lite"]), {"a": Registrar("a", None, "ir_to_visible", False)},
                     batch_size=2, max_wait_s=0.0, smoothing=False, views=VIEWS, overlap=True)
    submit = w.submit

    def noting_submit(pairs):
        seqs = [p.meta.seq for p in pairs]
        events.append(("submit", seqs))
        in_flight = submit(pairs)
        finish = in_flight.finish
        in_flight.finish = lambda: events.append(("finish", seqs)) or finish()
        return in_flight

    w.submit = noting_submit
    return w


def _run_one_stream(w: FusionWorker, frames: int) -> list:
    """Run ``w`` over ``frames`` pairs of stream "a" queued up front; what it handed on, end included."""
    paired = {"a": FrameQueue("a.paired", frames + 1)}
    for i in range(frames):
        paired["a"].put(pair("a", i))
    paired["a"].put_end(EndOfStream("a"))
    fused = FrameQueue("fused", frames + 1)
    w.run(paired, fused)
    return [fused.get(timeout=5) for _ in range(frames + 1)]


def test_with_batches_waiting_each_is_finished_after_the_next_is_submitted(random_weights):
    """So the host prepares batch n+1 while the GPU still computes batch n; every frame still
    comes out once, in order."""
    events: list = []
    w = _overlapping_worker(random_weights, events)
    frames = _run_one_stream(w, 6)
    assert events == [("submit", [0, 1]), ("submit", [2, 3]), ("finish", [0, 1]), ("submit", [4, 5]),
                      ("finish", [2, 3]), ("finish", [4, 5])]
    assert [f.meta.seq for f in frames[:6]] == list(range(6)) and isinstance(frames[6], EndOfStream)
    assert frames[0].fused.shape == (32, 40, 3) and w.frames == 6 and w.batches == 3


def test_a_batch_in_flight_is_handed_on_before_waiting_for_more_input(random_weights):
    """A quiet live stream: with no full batch waiting, the batch in flight is not held back
    until the next one arrives."""
    events: list = []
    w = _overlapping_worker(random_weights, events)
    paired = {"a": FrameQueue("a.paired", 10)}
    paired["a"].put(pair("a", 0))  # one full batch, and then nothing (put first: no batch of one)
    paired["a"].put(pair("a", 1))
    fused = FrameQueue("fused", 10)
    thread = threading.Thread(target=w.run, args=(paired, fused))
    thread.start()
    try:
        first = [fused.get(timeout=10) for _ in range(2)]  # before any further input
        assert [f.meta.seq for f in first] == [0, 1]
    finally:
        paired["a"].put_end(EndOfStream("a"))
        thread.join(timeout=10)
    assert events == [("submit", [0, 1]), ("finish", [0, 1])]


def test_a_non_finite_output_found_after_the_next_submit_still_stops_the_run(random_weights):
    """The finiteness check reads its flag when the batch is finished, not when submitted."""
    events: list = []
    w = _overlapping_worker(random_weights, events)
    w.fuser.start_fuse_y = lambda vi_y, ir: Finished(torch.full_like(vi_y, float("nan")))
    paired = {"a": FrameQueue("a.paired", 10)}
    for i in range(4):
        paired["a"].put(pair("a", i))
    paired["a"].put_end(EndOfStream("a"))
    fused = FrameQueue("fused", 10)
    with pytest.raises(CheckpointError, match="not finite"):
        w.run(paired, fused)
    assert events == [("submit", [0, 1]), ("submit", [2, 3]), ("finish", [0, 1])]  # found once the next was submitted
    assert isinstance(fused.get(timeout=1), EndOfStream)  # nothing of the broken batches was handed on


def test_overlapped_batches_on_cuda_equal_batches_finished_one_by_one(random_weights):
    """On CUDA the worker overlaps batches (queued downloads, the flag read later); what it
    hands on must be what finishing each batch at once gives."""
    if not torch.cuda.is_available():
        pytest.skip("overlap is CUDA's")
    registrars = {"a": Registrar("a", None, "ir_to_visible", False, device="cuda")}
    fuser = Fuser(load_model(random_weights["ld-lite"]), FuserOptions(device="cuda"))
    results = {}
    for overlap in (True, False):
        w = FusionWorker(fuser, registrars, batch_size=2, max_wait_s=0.0, smoothing=False, views=VIEWS | {"fused:yuv420p"}, overlap=overlap)
        results[overlap] = _run_one_stream(w, 5)[:5]
    for a, b in zip(results[True], results[False]):
        assert a.meta.seq == b.meta.seq
        assert np.array_equal(a.fused, b.fused) and np.array_equal(a.ir, b.ir)
        assert all(np.array_equal(x, y) for x, y in zip(a.view("fused:yuv420p"), b.view("fused:yuv420p")))


def test_two_openvino_calls_in_flight_give_the_frames_of_one_at_a_time(random_weights):
    """File mode on OpenVINO (``cpu_streams=2``): the worker overlaps batches as on CUDA, the
    network's call for batch n+1 running while batch n is finished; the frames handed on, in
    order, are those of one call at a time."""
    pytest.importorskip("openvino")
    registrars = {"a": Registrar("a", None, "ir_to_visible", False)}
    results = {}
    for streams in (1, 2):
        fuser = Fuser.from_weights(random_weights["ld-lite"], options=FuserOptions(device="cpu", backend="openvino",
                                                                                  precision="f32", cpu_streams=streams))
        w = FusionWorker(fuser, registrars, batch_size=2, max_wait_s=0.0, smoothing=False, views=VIEWS | {"fused:yuv420p"})
        assert w.overlap == (streams == 2)
        results[streams] = _run_one_stream(w, 7)
        assert isinstance(results[streams][7], EndOfStream) and w.frames == 7
    for a, b in zip(results[1][:7], results[2][:7]):
        assert a.meta.seq == b.meta.seq
        assert np.abs(a.fused.astype(int) - b.fused.astype(int)).max() <= 1 and np.array_equal(a.ir, b.ir)
    assert [f.meta.seq for f in results[2][:7]] == list(range(7))
    assert not np.array_equal(results[2][0].fused, results[2][1].fused)


@pytest.mark.parametrize("mode, streams", [("file", 2), ("live", 1)])
def test_file_mode_keeps_two_network_calls_in_flight_and_live_mode_one(tmp_path, monkeypatch, mode, streams):
    """File mode wants throughput (two OpenVINO calls at once, which busy decoders and encoders
    slow less); live mode each frame's shortest latency (one call on every thread)."""
    from pipeline import runner

    chosen = []
    monkeypatch.setattr(runner.Fuser, "from_weights", classmethod(lambda cls, weights, variant, options: chosen.append(options)))
    config = make_config(tmp_path / "ir.mp4", tmp_path / "vi.mp4", run={"mode": mode})
    runner.Pipeline(config)._load_fuser()
    assert [options.cpu_streams for options in chosen] == [streams]
