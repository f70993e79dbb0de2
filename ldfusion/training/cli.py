"""``ldfusion train``: train a fusion network from a YAML config.

Single process: ``ldfusion train --config configs/train.yaml``.
Several GPUs: ``torchrun --nproc_per_node=4 -m ldfusion.training.cli --config ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ldfusion.cli.common import add_logging_arguments, one_line_errors, path_argument, setup_logging
from ldfusion.config import load_config
from ldfusion.checkpoint import Checkpoint, load_checkpoint
from ldfusion.errors import CheckpointError, DataError, first_line
from ldfusion.paths import check_output_folder, home_expanded, refuse_overwriting_inputs
from ldfusion.training.config import TrainConfig
from ldfusion.training.trainer import (
    CONFIG_FILE, EPOCH_FILE, FINAL_FILE, LAST_FILE, DistInfo, Trainer, files_written, init_distributed, shutdown_distributed,
)
from ldfusion.variants import VARIANTS

log = logging.getLogger("ldfusion.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion train",
        description="Train an LDFusion network without ground truth: the language-driven CLIP loss, "
        "the CLIP similarity and VGG perceptual terms, and optionally distillation from a teacher. "
        "Writes last.pt every epoch (resumable), model.pt at the end, and the resolved config.yaml.",
    )
    parser.add_argument("--config", required=True, type=path_argument, help="YAML training config (see configs/train.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-4 --set data.crop=128 (repeatable)",
    )
    parser.add_argument("--out", type=path_argument, help="output folder (config: out_dir)")
    parser.add_argument("--teacher", help="teacher weights for distillation: a file or a registry name (config: teacher)")
    parser.add_argument("--variant", help=f"student layout: {', '.join(sorted(VARIANTS))} (config: variant)")
    parser.add_argument("--epochs", type=int, help="number of epochs (config: optim.epochs)")
    parser.add_argument("--device", help="auto, cpu, cuda (config: device)")
    parser.add_argument("--resume", nargs="?", const="auto", help="resume from a last.pt (default: OUT/last.pt)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an OUT that holds an earlier run: its checkpoints and config are removed first")
    add_logging_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config file, --set, then the flags as typed values (they win). The flags were
    --set strings once, so YAML read them: a folder named "a: b" or "[x]" was a mapping or a
    list, and --out "" an override 'out_dir=' with no value."""
    settings: dict = {key: getattr(args, flag) for flag, key in (("teacher", "teacher"), ("variant", "variant"), ("device", "device"))
                      if getattr(args, flag) is not None}
    if args.out is not None:
        settings["out_dir"] = str(args.out)
    if args.epochs is not None:
        settings["optim"] = {"epochs": args.epochs}
    return load_config(TrainConfig, args.config, list(args.overrides), settings)


@one_line_errors("ldfusion train")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = DistInfo.from_env()
    setup_logging(args.verbose, args.quiet or not info.is_main)
    config = config_from_args(args)
    # Checked before the trainer loads CLIP and VGG (minutes, or a download error offline).
    check_output_folder(Path(config.out_dir))
    refuse_overwriting_own_inputs(config, args.config)
    resume_path = _resume_path(args.resume, Path(config.out_dir))
    if resume_path is None or not _inside_folder(resume_path, Path(config.out_dir)):
        # Resumed from a checkpoint of another folder, the run writes OUT's files as a new one does.
        _start_fresh(Path(config.out_dir), args.overwrite, resume_path)
    resume_state = load_checkpoint(resume_path) if resume_path is not None else None
    if resume_state is not None:
        _check_epochs_left(resume_path, resume_state, config.optim.epochs)
    init_distributed(info)
    try:
        trainer = Trainer(config, info, progress=not args.quiet)  # -q: only warnings and errors, as in fuse and run
        if resume_path is not None:
            resume(trainer, resume_path, resume_state)
        trainer.fit()
    finally:
        shutdown_distributed()
    return 0


def refuse_overwriting_own_inputs(config: TrainConfig, config_file: Path) -> None:
    """No file the run writes may be its config or the weights it starts from: the final
    model.pt would replace the teacher, config.yaml the user's own config. Resuming from
    OUT/last.pt is the one file read and then written again, by design (it is read whole
    before training starts)."""
    weights = [Path(home_expanded(name)) for name in (config.teacher, config.init) if name is not None]  # a registry name matches no output
    refuse_overwriting_inputs(files_written(config), [config_file, *weights], f"out_dir {config.out_dir}")


def _start_fresh(out_dir: Path, overwrite: bool, resuming: Path | None = None) -> None:
    """A new run in a folder that holds an earlier one: refused unless ``--overwrite``, which
    removes the earlier run's files first. A forgotten --resume replaced last.pt, model.pt and
    config.yaml without a word and left the old run's later epoch_*.pt beside the new ones; so
    did resuming another folder's checkpoint (``resuming``) with --out naming a finished run."""
    earlier = sorted(path for path in out_dir.glob("*") if path.name in (CONFIG_FILE, LAST_FILE, FINAL_FILE) or EPOCH_FILE.fullmatch(path.name))
    if not earlier:
        return
    if not overwrite:
        names = ", ".join(path.name for path in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        if [path.name for path in earlier] == [CONFIG_FILE] and resuming is None:  # "--resume" could only fail: no last.pt
            raise DataError(f"{out_dir} holds the config.yaml of a run that saved no checkpoint (stopped in its first epoch); "
                            "--overwrite to start over there, or choose another --out")
        if resuming is not None:
            raise DataError(f"{out_dir} holds another run ({names}), which resuming {resuming} there would replace; "
                            "--overwrite to replace it, or choose another --out")
        raise DataError(f"{out_dir} holds an earlier run ({names}); --resume to continue it, --overwrite to start over there, "
                        "or choose another --out")
    for path in earlier:
        path.unlink()


def _check_epochs_left(path: Path, state: Checkpoint, epochs: int) -> None:
    """Resuming a run that has done its epochs trained nothing, exit 0, and rewrote model.pt and a
    config.yaml with the smaller count."""
    done = int((state.training or {}).get("epoch", 0))
    if done >= epochs:
        raise DataError(f"{path} has finished epoch {done} of this run; --epochs {epochs} leaves nothing to train "
                        f"(give more than {done} to go on)")


def _inside_folder(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies directly in ``folder`` (OUT/last.pt, OUT/epoch_5.pt: the same run)."""
    return os.path.realpath(path.parent) == os.path.realpath(folder)


def _resume_path(resume_arg: str | None, out_dir: Path) -> Path | None:
    """--resume's file: none, OUT/last.pt (``--resume`` alone), or the path given."""
    if not resume_arg:
        return None
    if resume_arg != "auto":
        return Path(home_expanded(resume_arg))
    last = out_dir / LAST_FILE
    if not last.exists() and (out_dir / CONFIG_FILE).exists():  # it said "weights file not found: OUT/last.pt"
        raise DataError(f"{last} not found: the run in {out_dir} saved no checkpoint to resume (it stopped in its first epoch); "
                        "start over there with --overwrite")
    return last


def resume(trainer: Trainer, path: Path, state: Checkpoint) -> None:
    """``Trainer.resume``; a state that does not fit (the loader has checked its shape) is one line."""
    try:
        trainer.resume(path, state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # torch's load_state_dict on a foreign state
        raise CheckpointError(f"{path}: cannot resume from this training state ({type(exc).__name__}: {first_line(exc)})") from None


if __name__ == "__main__":
    sys.exit(main())
