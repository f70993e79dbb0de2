"""One override rule (``ldfusion.config.apply_overrides``) for every command's ``--set``."""

from __future__ import annotations

from pathlib import Path

import pytest

from ldfusion.config import apply_overrides, from_dict, load_config, parse_overrides
from ldfusion.errors import ConfigError
from ldfusion.training.config import TrainConfig


def test_overrides_merge_mappings_and_index_lists():
    base = {"streams": [{"id": "a", "sync": {"slop_s": 0.1}}, {"id": "b"}], "model": {"batch_size": 1}}
    merged = apply_overrides(base, parse_overrides(["streams.0.sync.slop_s=0.02", "streams.1.id=c", "model.device=cpu"]))
    assert merged == {"streams": [{"id": "a", "sync": {"slop_s": 0.02}}, {"id": "c"}], "model": {"batch_size": 1, "device": "cpu"}}
    assert base["streams"][0]["sync"]["slop_s"] == 0.1  # the input is not changed


@pytest.mark.parametrize("override", ["streams.2.id=x", "streams.first.id=x"])
def test_an_index_outside_the_list_is_a_one_line_error(override):
    with pytest.raises(ConfigError, match="streams has 1 item"):
        apply_overrides({"streams": [{"id": "a"}]}, parse_overrides([override]))


def test_the_trainer_uses_the_same_rule(tmp_path):
    config = load_config(TrainConfig, None, ["data.crop=128", "data.pairs=[{ir: ir, vi: vi}]", "optim.lr=0.0005"])
    assert config.optim.lr == 0.0005
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(TrainConfig, None, ["data.crop=128", "data.pairs=[{ir: ir, vi: vi}]", "optim.no_such_key=1"])


@pytest.mark.parametrize("key", ["1", "null", "on", "3.5"])
def test_a_key_that_yaml_reads_as_no_string_is_named_as_unknown(tmp_path, key):
    """``1:``, ``null:``, ``on:`` (true in YAML 1.1) and ``3.5:`` are keys too: every reader names them
    in its one-line error instead of failing on sorting or joining them."""
    from calibration.fileformat import CalibrationError, identity_registration, load_registration, save_registration
    from calibration.points import read_point_pairs

    config = tmp_path / "train.yaml"
    config.write_text(f"data: {{crop: 128, pairs: [{{ir: ir, vi: vi}}]}}\n{key}: foo\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(TrainConfig, config)
    calibration = tmp_path / "calib.yaml"
    save_registration(calibration, identity_registration(64, 48))
    calibration.write_text(calibration.read_text() + f"{key}: foo\n")
    with pytest.raises(CalibrationError, match="unknown key"):
        load_registration(calibration)
    points = tmp_path / "points.yaml"
    points.write_text(f"points: [[0, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1]]\n{key}: foo\n")
    with pytest.raises(CalibrationError, match="unknown key"):
        read_point_pairs(points)


def test_numbers_yaml_1_1_reads_in_surprising_ways_stay_as_written(tmp_path):
    """``id: 0111`` was octal 73 (the stream wrote 73.mp4), ``1:30`` sexagesimal 90. Only plain
    decimals are numbers: a text setting keeps the others as written, a number setting names them."""
    from pipeline.config import load_pipeline_config

    config = tmp_path / "run.yaml"
    config.write_text(
        "streams: [{id: 0111, ir: {kind: video, path: a.mp4}, visible: {kind: video, path: b.mp4}}]\n"
        "sinks: [{kind: mp4, path: '{stream}.mp4'}]\n"
    )
    assert load_pipeline_config(config).streams[0].id == "0111"
    assert load_pipeline_config(config, ["streams.0.id=0012"]).streams[0].id == "0012"
    assert load_pipeline_config(config, ["model.batch_size=12"]).model.batch_size == 12
    with pytest.raises(ConfigError, match="model.batch_size: expected an integer, got '010'"):
        load_pipeline_config(config, ["model.batch_size=010"])
    assert load_pipeline_config(config, ["streams.0.id=0x1F"]).streams[0].id == "0x1F"  # not 31
    with pytest.raises(ConfigError, match="model.batch_size: expected an integer, got '0x10'"):
        load_pipeline_config(config, ["model.batch_size=0x10"])
    with pytest.raises(ConfigError, match=r"streams\[0\].id: expected text, got the number 111.0; quote it"):
        load_pipeline_config(config, ["streams.0.id=0111.0"])


def test_an_override_without_a_value_is_refused():
    """`--set run.out_dir=$UNSET` was null: the run wrote into the current folder, exit 0."""
    with pytest.raises(ConfigError, match=r"override 'run.out_dir=' has no value .* write run.out_dir=null"):
        parse_overrides(["run.out_dir="])
    assert parse_overrides(["run.out_dir=null"]) == {"run": {"out_dir": None}}


def test_an_override_that_is_no_yaml_is_taken_as_text_and_booleans_for_text_ask_for_quotes(tmp_path):
    """--set 'sinks.0.path={stream}.mp4' was 'value is not valid YAML' ({...} opens a mapping);
    id=true was 'expected a string, got True'."""
    from pipeline.config import load_pipeline_config

    config = tmp_path / "run.yaml"
    config.write_text("streams: [{id: cam, ir: {path: a.mp4}, visible: {path: b.mp4}}]\nsinks: [{kind: mp4, path: o.mp4}]\n")
    assert load_pipeline_config(config, ["sinks.0.path={stream}.mp4"]).sinks[0].path == "{stream}.mp4"
    with pytest.raises(ConfigError, match=r"expected text, got true .*quote it"):
        load_pipeline_config(config, ["streams.0.id=true"])
    with pytest.raises(ConfigError, match="model.batch_size: expected an integer, got '\\[1, 2'"):
        load_pipeline_config(config, ["model.batch_size=[1, 2"])


def test_a_path_starting_with_the_home_folder_is_expanded(tmp_path, monkeypatch):
    """out_dir: ~/runs wrote into a folder named ~ in the current folder, exit 0."""
    from ldfusion.cli.common import path_argument
    from pipeline.config import PipelineConfig

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = {"streams": [{"id": "a", "ir": {"path": "~/ir.mp4"}, "visible": {"path": "~/vi.mp4"}}], "run": {"out_dir": "~/runs"}}
    config = from_dict(PipelineConfig, data)
    assert config.run.out_dir == str(tmp_path / "home" / "runs") and config.streams[0].ir.path == str(tmp_path / "home" / "ir.mp4")
    assert path_argument("~/out") == tmp_path / "home" / "out" and path_argument("~") == tmp_path / "home"
    assert path_argument("a~/b") == Path("a~/b") and path_argument("~other") == Path("~other")  # only a leading ~ alone
    # Only fields that name files: a ZeroMQ topic (or a prompt, an id) is kept as written.
    data["sinks"] = [{"kind": "zmq", "topic": "~/fused"}]
    assert from_dict(PipelineConfig, data).sinks[0].topic == "~/fused"
