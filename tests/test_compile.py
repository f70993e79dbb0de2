"""The compiled network behind ``compile: auto|on|off``: same output as eager, one log line, a safe fallback.

On the CPU these tests compile with the ``aot_eager`` backend: it runs TorchDynamo's
tracing and AOTAutograd like inductor does, but skips inductor's C++ code generation,
which took 123 s for ld-lite on this 2-core machine. Inductor itself is checked on CUDA
(``test_inductor_matches_eager_on_cuda``, run by scripts/gpu_check.sh).
"""

from __future__ import annotations

import logging

import pytest
import torch

from ldfusion.errors import ConfigError
from ldfusion.inference import CompiledNetwork, Fuser, FuserOptions, resolve_compile_mode
from ldfusion.networks import build_network
from ldfusion.variants import get_variant


def _fuser(compile: str, backend: str = "aot_eager", device: str = "cpu", variant: str = "ld-lite") -> Fuser:
    torch.manual_seed(0)
    return Fuser(build_network(get_variant(variant)), FuserOptions(device=device, compile=compile, compile_backend=backend))


def _inputs(batch: int = 2, height: int = 24, width: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, 1, height, width, generator=generator), torch.rand(batch, 1, height, width, generator=generator)


def _compile_records(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ldfusion.inference" and r.levelno == level and "compile" in r.getMessage()]


def test_auto_compiles_on_cuda_only_and_off_means_eager():
    assert not _fuser("auto").compiled  # the CPU: eager
    assert not _fuser("off").compiled
    assert _fuser("on").compiled


@pytest.mark.parametrize("variant", ["ld-lite", pytest.param("ldfusion", marks=pytest.mark.slow)])
def test_compiled_output_equals_eager_and_the_compile_is_logged_once_per_shape(caplog, variant):
    caplog.set_level(logging.INFO, logger="ldfusion.inference")
    eager, compiled = _fuser("off", variant=variant), _fuser("on", variant=variant)
    vi, ir = _inputs()
    expected = eager.fuse_y(vi, ir)
    for _ in range(3):  # the same shape: compiled once, reused
        torch.testing.assert_close(compiled.fuse_y(vi, ir), expected, atol=1e-5, rtol=1e-4)
    assert compiled.compiled
    (line,) = _compile_records(caplog, logging.INFO)
    assert f"{variant} for input (2, 1, 24, 40) float32 compiled in" in line.getMessage()
    other_vi, other_ir = _inputs(batch=3)  # a new shape compiles (and is logged) once more
    torch.testing.assert_close(compiled.fuse_y(other_vi, other_ir), eager.fuse_y(other_vi, other_ir), atol=1e-5, rtol=1e-4)
    assert len(_compile_records(caplog, logging.INFO)) == 2
    assert not _compile_records(caplog, logging.WARNING)


def test_compile_that_fails_falls_back_to_eager_with_one_warning(caplog):
    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no C compiler found")

    caplog.set_level(logging.INFO, logger="ldfusion.inference")
    torch.manual_seed(0)
    model = build_network(get_variant("ld-lite")).eval()
    network = CompiledNetwork(model, backend=broken_backend)
    vi, ir = _inputs()
    with torch.inference_mode():
        expected = model(vi, ir)
        for _ in range(3):
            torch.testing.assert_close(network(vi, ir), expected)
    assert network.failure is not None and "no C compiler found" in network.failure
    (warning,) = _compile_records(caplog, logging.WARNING)
    assert "running it eagerly" in warning.getMessage() and "\n" not in warning.getMessage()


def test_unknown_backend_falls_back_when_the_fuser_is_built(caplog):
    caplog.set_level(logging.INFO, logger="ldfusion.inference")
    fuser = _fuser("on", backend="no_such_backend")
    assert not fuser.compiled
    vi, ir = _inputs()
    torch.testing.assert_close(fuser.fuse_y(vi, ir), _fuser("off").fuse_y(vi, ir))
    assert len(_compile_records(caplog, logging.WARNING)) == 1


@pytest.mark.parametrize("value", ["yes", "true", "", "ON"])
def test_unknown_compile_mode_is_a_config_error(value):
    with pytest.raises(ConfigError, match="compile must be one of auto, on, off"):
        FuserOptions(compile=value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor on CUDA needs a GPU")
def test_inductor_matches_eager_on_cuda():
    """The production setting: inductor, half precision, channels_last, batch padded to a fixed size."""
    eager, compiled = _fuser("off", backend="inductor", device="cuda"), _fuser("auto", backend="inductor", device="cuda")
    assert compiled.compiled and compiled.dtype == torch.float16
    vi, ir = _inputs(batch=8, height=64, width=80)
    torch.testing.assert_close(compiled.fuse_y(vi, ir), eager.fuse_y(vi, ir), atol=2e-3, rtol=1e-2)


def test_pipeline_config_takes_model_compile(tmp_path):
    from pipeline.config import load_pipeline_config

    path = tmp_path / "run.yaml"
    path.write_text("streams:\n  - ir: {kind: video, path: ir.mp4}\n    visible: {kind: video, path: vi.mp4}\n")
    assert load_pipeline_config(path).model.compile == "auto"
    # YAML reads a bare on/off as a boolean; the config takes it back to the name.
    assert load_pipeline_config(path, ["model.compile=off"]).model.compile == "off"
    assert load_pipeline_config(path, ["model.compile=on"]).model.compile == "on"
    assert load_pipeline_config(path, ["model.compile='auto'"]).model.compile == "auto"
    with pytest.raises(ConfigError, match="compile must be one of auto, on, off; got 'fast'"):
        load_pipeline_config(path, ["model.compile=fast"])


def test_fixed_batch_keeps_the_compiled_network_at_one_shape(caplog):
    """Partial batches of 3, 4 and 1 frames, padded to 4: one compile, outputs as eager."""
    from ldfusion.fixed_batch import FixedBatch

    caplog.set_level(logging.INFO, logger="ldfusion.inference")
    eager, compiled = _fuser("off"), _fuser("on")
    fixed = FixedBatch(4)
    for rows in (3, 4, 1):
        vi, ir = _inputs(batch=rows)
        torch.testing.assert_close(fixed(compiled.fuse_y, vi, ir), eager.fuse_y(vi, ir), atol=1e-5, rtol=1e-4)
    (line,) = _compile_records(caplog, logging.INFO)
    assert "(4, 1, 24, 40)" in line.getMessage()
    assert fixed.padded_rows == 1 + 0 + 3


@pytest.mark.parametrize("mode, compiled", [("on", True), ("off", False), ("auto", False)])  # auto: eager on the CPU
def test_the_pipelines_model_compile_key_reaches_the_fuser(random_weights, tmp_path, mode, compiled):
    from pipeline.runner import Pipeline
    from tests.pipeline_helpers import make_config

    config = make_config(tmp_path / "ir.mp4", tmp_path / "vi.mp4", model={"weights": str(random_weights["ld-lite"]), "device": "cpu", "compile": mode})
    # The network torch.compile made (OpenVINO runs it here, so ``compiled`` says False)
    assert isinstance(Pipeline(config)._load_fuser()._network, CompiledNetwork) is compiled


def test_unknown_compile_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="compile_mode must be one of auto, default, reduce-overhead"):
        FuserOptions(compile_mode="max-speed")


def test_the_auto_compile_mode_is_cuda_graphs_on_cuda_only():
    """CUDA graphs doubled the H200 pipeline (2027 fps against 966 eager); elsewhere they do not exist."""
    assert resolve_compile_mode("auto", torch.device("cuda")) == "reduce-overhead"
    assert resolve_compile_mode("auto", torch.device("cuda:1")) == "reduce-overhead"
    assert resolve_compile_mode("auto", torch.device("cpu")) == "default"
    assert resolve_compile_mode("default", torch.device("cuda")) == "default"
    assert not _fuser("on")._network.graphs  # the CPU, mode auto
    if torch.cuda.is_available():
        assert _fuser("on", backend="inductor", device="cuda")._network.graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replays_match_eager_and_keep_earlier_outputs_on_cuda():
    """reduce-overhead replays one CUDA graph whose output memory is reused: each call must
    still hand out its own result, untouched by later calls."""
    eager = _fuser("off", backend="inductor", device="cuda")
    torch.manual_seed(0)
    graphs = Fuser(build_network(get_variant("ld-lite")), FuserOptions(device="cuda", compile="on", compile_mode="reduce-overhead"))
    inputs = [_inputs(batch=4, height=64, width=80) for _ in range(3)]
    inputs = [(vi * scale, ir) for scale, (vi, ir) in zip((1.0, 0.5, 0.25), inputs)]
    outputs = [graphs.fuse_y(vi, ir) for vi, ir in inputs]
    assert graphs.compiled
    for (vi, ir), out in zip(inputs, outputs):
        torch.testing.assert_close(out, eager.fuse_y(vi, ir), atol=2e-3, rtol=1e-2)


def test_the_cuda_graph_mode_hands_out_copies():
    """The wrapper's side of reduce-overhead, here without a GPU: a step marked per call and
    a copy of the output (the graph's own memory is overwritten by the next replay)."""
    network = CompiledNetwork(build_network(get_variant("ld-lite")), backend="aot_eager", mode="reduce-overhead")
    vi, ir = _inputs()
    first = network(vi, ir)
    again = network(vi, ir)
    assert network.graphs and network.failure is None
    assert torch.equal(first, again) and first.data_ptr() != again.data_ptr()


def test_the_cuda_graph_mode_records_a_new_shape_on_its_first_call():
    """PyTorch records a CUDA graph on a shape's second call: the wrapper makes that call (and
    a replay) with the first, so the recording happens in the run's warm-up, not on live
    frames. Other modes call the network once."""
    for mode, calls_for_first in (("reduce-overhead", 3), ("default", 1)):
        network = CompiledNetwork(build_network(get_variant("ld-lite")), backend="aot_eager", mode=mode)
        calls = []
        compiled = network._compiled
        network._compiled = lambda vi, ir: calls.append(tuple(vi.shape)) or compiled(vi, ir)
        network(*_inputs())
        assert len(calls) == calls_for_first, mode
        network(*_inputs())  # a shape seen before: one call
        assert len(calls) == calls_for_first + 1, mode


@pytest.mark.parametrize("device, backend", [("cpu", "aot_eager"), ("cuda", "inductor")])
def test_a_shape_first_seen_while_new_graphs_are_held_runs_eagerly_with_one_warning(caplog, device, backend):
    """Inside ``Fuser.no_new_graphs`` (a running pipeline) an unseen shape must not record a
    CUDA graph: it runs the eager network, said once; shapes recorded before keep their graph."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a GPU")
    torch.manual_seed(0)  # the weights of _fuser's networks
    fuser = Fuser(build_network(get_variant("ld-lite")), FuserOptions(device=device, compile="on", compile_backend=backend,
                                                                      compile_mode="reduce-overhead"))
    network = fuser._network
    calls = []
    compiled = network._compiled
    network._compiled = lambda vi, ir: calls.append(tuple(vi.shape)) or compiled(vi, ir)
    known = _inputs(batch=2)
    fuser.fuse_y(*known)  # recorded before the run: three calls
    caplog.set_level(logging.WARNING, logger="ldfusion.inference")
    with fuser.no_new_graphs():
        with fuser.no_new_graphs():  # two pipelines sharing the network: the first to end must not let go
            eager = fuser.fuse_y(*_inputs(batch=3))
        fuser.fuse_y(*_inputs(batch=3))
        fuser.fuse_y(*known)
    assert calls == [(2, 1, 24, 40)] * 4  # the new shape never reached the compiled network
    torch.testing.assert_close(eager, _fuser("off", device=device).fuse_y(*_inputs(batch=3)))
    (warning,) = [r for r in caplog.records if "first seen after the warm-up" in r.getMessage()]
    assert "(3, 1, 24, 40)" in warning.getMessage()
    fuser.fuse_y(*_inputs(batch=3))  # outside: the shape is compiled (and recorded) now
    assert calls[-3:] == [(3, 1, 24, 40)] * 3


def test_a_run_holds_new_graphs_and_lets_them_go_at_its_end(random_weights, tmp_path):
    from pipeline.runner import run_pipeline
    from pipeline.sinks import CallbackSink
    from tests.pipeline_helpers import make_config, marked_video

    fuser = Fuser.from_weights(random_weights["ld-lite"], options=FuserOptions(device="cpu", backend="torch", compile="on",
                                                                              compile_backend="aot_eager", compile_mode="reduce-overhead"))
    held = []
    sink = CallbackSink(lambda frame: held.append(fuser._network.graph_holds), views=("fused:rgb24",))
    ir, vi = marked_video(tmp_path / "ir.mp4", 4, 30, seed=1), marked_video(tmp_path / "vi.mp4", 4, 30, seed=2)
    summary = run_pipeline(make_config(ir, vi, model={"batch_size": 2}), fuser, extra_sinks=[sink])
    assert summary.frames_out == 4 and held == [1] * 4
    assert fuser._network.graph_holds == 0 and fuser.compiled


def test_a_network_run_by_openvino_is_not_reported_as_compiled(random_weights):
    """``compile: on`` with OpenVINO on the CPU: OpenVINO runs the network, so the bench's
    "compiled" (and "as CUDA graphs" with reduce-overhead) described a network never called."""
    pytest.importorskip("openvino")
    options = FuserOptions(device="cpu", compile="on", compile_backend="aot_eager", compile_mode="reduce-overhead", backend="openvino")
    fuser = Fuser.from_weights(random_weights["ld-lite"], options=options)
    assert fuser.backend == "openvino"
    assert not fuser.compiled and not fuser.cuda_graphs
