"""The training loop: Adam with warm-up and step decay, mixed precision on CUDA, DDP
under ``torchrun``, a checkpoint every epoch, and resume."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from ldfusion.backbones import load_clip, load_vgg19
from ldfusion.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from ldfusion.config import to_dict, write_yaml
from ldfusion.errors import CheckpointError, ConfigError, DataError
from ldfusion.inference import resolve_device
from ldfusion.losses import LanguageDrivenLoss, distillation_loss
from ldfusion.networks import FusionNet, build_network
from ldfusion.training.config import OptimConfig, TrainConfig
from ldfusion.training.data import PairedDataset, load_pairs, seed_worker
from ldfusion.training.hints import HintAdapters, hint_loss, hint_points, plan_hints, tap
from ldfusion.training.prune import plan_channels, prune_into
from ldfusion.variants import get_variant
from ldfusion.weights import resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherOutputs:
    fused: Tensor | None  # (B, 1, H, W); None without a teacher
    features: dict[str, Tensor]  # activations at the hint points, by module name


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        """What ``torchrun`` exported, or a single process."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


CONFIG_FILE = "config.yaml"  # the resolved config
LAST_FILE = "last.pt"  # weights and training state after the last finished epoch (resumable)
FINAL_FILE = "model.pt"  # the trained weights


EPOCH_FILE = re.compile(r"epoch_\d{4,}\.pt")  # what ``epoch_file`` names


def epoch_file(epoch: int) -> str:
    """The weights kept after ``epoch`` when ``save_every`` divides it."""
    return f"epoch_{epoch:04d}.pt"


def files_written(config: TrainConfig) -> list[Path]:
    """Every file a run of ``config`` writes into its ``out_dir``."""
    every = config.save_every
    kept = [epoch_file(epoch) for epoch in range(every, config.optim.epochs + 1, every)] if every else []
    return [Path(config.out_dir) / name for name in (CONFIG_FILE, LAST_FILE, FINAL_FILE, *kept)]


def learning_rate(optim: OptimConfig, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
    """Step decay at the milestone epochs, with a linear warm-up over epoch 1 (epochs count from 1)."""
    lr = optim.lr * optim.gamma ** sum(epoch > m for m in optim.milestones)
    if optim.warmup and epoch == 1:
        lr *= (step_in_epoch + 1) / steps_per_epoch
    return lr


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: TrainConfig, dist_info: DistInfo = DistInfo(), progress: bool = True) -> None:
        """``progress``: a bar per epoch (the main process only; ``ldfusion train -q`` turns it off)."""
        self.config = config
        self.dist = dist_info
        self.progress = progress
        self.out_dir = Path(config.out_dir)
        self.device = self._pick_device()
        seed_everything(config.seed + dist_info.rank)
        self.model = self._build_student().to(self.device)
        self.teacher = self._load_teacher()
        self.teacher_channels = self._prune_from_teacher()  # {} unless config.prune_from_teacher
        self.hint_names, self.hint_adapters = self._plan_hints()  # fixed for the run; [] when hints are off
        self.loader = self._build_loader()  # before CLIP and VGG (minutes to load), so data errors come first
        self.criterion = self._build_criterion()
        self.steps_per_epoch = config.optim.steps_per_epoch or len(self.loader)
        self.optimizer = self._build_optimizer()
        self.autocast_dtype = self._pick_autocast_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.ddp_model: nn.Module = self._wrap_ddp(self.model)
        self.epoch = 0  # last finished epoch
        self.step = 0

    # --- set-up -------------------------------------------------------------------------

    def _pick_device(self) -> torch.device:
        if self.dist.world_size > 1 and torch.cuda.is_available():
            torch.cuda.set_device(self.dist.local_rank)
            return torch.device("cuda", self.dist.local_rank)
        return resolve_device(self.config.device)

    def _build_student(self) -> FusionNet:
        spec = get_variant(self.config.variant)
        if self.config.init is None:
            return build_network(spec)
        model = resolve_model(self.config.init, self.config.variant)
        log.info("student starts from %s", self.config.init)
        return model.train()

    def _load_teacher(self) -> FusionNet | None:
        if self.config.teacher is None or self.config.loss.weights.distill <= 0:
            return None
        teacher = resolve_model(self.config.teacher).to(self.device).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        log.info("distilling from teacher %s (%s)", self.config.teacher, teacher.spec.name)
        return teacher

    def _prune_from_teacher(self) -> dict[str, Tensor]:
        if not self.config.prune_from_teacher:
            return {}
        kept = plan_channels(self.model, self.teacher)
        prune_into(self.model, self.teacher, kept)
        log.info("student starts from the teacher's most-used channels (%s of %s parameters)",
                 sum(p.numel() for p in self.model.parameters()), sum(p.numel() for p in self.teacher.parameters()))
        return {name: index.to(self.device) for name, index in kept.items()}

    def _build_criterion(self) -> LanguageDrivenLoss:
        loss = self.config.loss
        clip = load_clip(loss.clip, self.device) if loss.weights.needs_clip else None
        vgg = load_vgg19(loss.vgg, self.device) if loss.weights.needs_vgg else None
        return LanguageDrivenLoss(clip, vgg, loss.weights, loss.prompts, loss.patch).to(self.device)

    def _build_loader(self) -> DataLoader:
        data = self.config.data
        dataset = PairedDataset(load_pairs(data), data)
        if self.dist.is_main:
            log.info("training on %d pairs (%d samples per epoch)", len(dataset.pairs), len(dataset))
        if self.dist.world_size > 1:
            sampler = DistributedSampler(dataset, self.dist.world_size, self.dist.rank, shuffle=True, drop_last=True)
        else:
            sampler = RandomSampler(dataset)
        batch = self.config.optim.batch_size
        if len(dataset) // self.dist.world_size < batch:
            raise DataError(f"the dataset has {len(dataset)} samples, fewer than one batch of {batch} per process")
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            worker_init_fn=seed_worker,
            persistent_workers=data.num_workers > 0,
        )

    @property
    def uses_lbfgs(self) -> bool:
        return self.config.optim.optimizer == "lbfgs"

    def _trained_parameters(self) -> list[nn.Parameter]:
        """The student's parameters and those of its hint adapters (when its layout differs from the teacher's)."""
        return list(self.model.parameters()) + list(self.hint_adapters.parameters())

    def _build_optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        if not self.uses_lbfgs:
            return torch.optim.Adam(self._trained_parameters(), lr=optim.lr, betas=optim.betas)
        if self.dist.world_size > 1:
            # Each rank's line search would take its own number of steps and DDP would hang.
            raise ConfigError("optim.optimizer lbfgs runs in a single process; use adam under torchrun")
        return torch.optim.LBFGS(self._trained_parameters(), lr=optim.lr, max_iter=optim.lbfgs_iterations,
                                 history_size=optim.lbfgs_history, line_search_fn="strong_wolfe")

    def _pick_autocast_dtype(self) -> torch.dtype | None:
        mode = self.config.amp
        # The line search compares losses between evaluations: keep L-BFGS in float32.
        if self.device.type != "cuda" or mode == "off" or self.uses_lbfgs:
            return None
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16

    def _wrap_ddp(self, model: FusionNet) -> nn.Module:
        if self.dist.world_size == 1:
            return model
        device_ids = [self.dist.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    # --- training -----------------------------------------------------------------------

    def fit(self) -> Path:
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_yaml(self.out_dir / CONFIG_FILE, self.config)
        for epoch in range(self.epoch + 1, self.config.optim.epochs + 1):
            forced_epochs = self.config.loss.hints.teacher_forced_epochs
            if self.uses_lbfgs and forced_epochs and epoch == forced_epochs + 1:
                # The objective changes when teacher forcing ends; the curvature pairs
                # gathered on the old one would mislead the first steps on the new one.
                self.optimizer.state.clear()
            self.train_epoch(epoch)
            self.epoch = epoch
            if self.dist.is_main:
                self.save_epoch()
        final = self.out_dir / FINAL_FILE
        if self.dist.is_main:
            save_checkpoint(final, self.model, config=to_dict(self.config))
            log.info("wrote %s", final)
        return final

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        sampler = self.loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        totals: dict[str, float] = defaultdict(float)
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{self.config.optim.epochs}", disable=not (self.dist.is_main and self.progress))
        with bar:
            for index, batch in enumerate(_cycle(self.loader, self.steps_per_epoch)):
                lr = learning_rate(self.config.optim, epoch, index, self.steps_per_epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                terms = self.train_step(batch, epoch)
                for name, value in terms.items():
                    totals[name] += value
                bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()} | {"lr": f"{lr:.1e}"}, refresh=False)
                bar.update(1)
        means = {name: value / self.steps_per_epoch for name, value in totals.items()}
        if self.dist.is_main:
            log.info("epoch %d: %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in means.items()))
        return means

    def train_step(self, batch: dict[str, Tensor], epoch: int | None = None) -> dict[str, float]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.uses_lbfgs:
            return self._lbfgs_step(batch, epoch)
        terms = self.compute_loss(batch, epoch)
        total = terms["total"]
        self._check_finite(terms)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return {name: float(value.detach()) for name, value in terms.items()}

    def _lbfgs_step(self, batch: dict[str, Tensor], epoch: int | None) -> dict[str, float]:
        """``lbfgs_iterations`` of L-BFGS on this batch; returns the terms after them."""

        teacher = self.teacher_outputs(batch)  # the same for every evaluation of the batch

        def closure() -> Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            terms = self.compute_loss(batch, epoch, teacher)
            self._check_finite(terms)
            terms["total"].backward()
            return terms["total"]

        self.optimizer.step(closure)
        with torch.no_grad():
            terms = self.compute_loss(batch, epoch, teacher)
        self._check_finite(terms)
        self.step += 1
        return {name: float(value) for name, value in terms.items()}

    def _check_finite(self, terms: dict[str, Tensor]) -> None:
        """A diverged run is the settings' doing (most often the learning rate): one line that says what
        to change, not an unforeseen FloatingPointError. last.pt keeps the last finished epoch."""
        if not torch.isfinite(terms["total"]):
            values = ", ".join(f"{name} {float(value.detach()):.3g}" for name, value in terms.items())
            raise ConfigError(f"the loss is not finite at step {self.step} ({values}): the run diverged; lower optim.lr "
                              f"(now {self.config.optim.lr:g}) or set optim.grad_clip; {LAST_FILE} keeps the last finished epoch")

    def compute_loss(self, batch: dict[str, Tensor], epoch: int | None = None,
                     teacher: TeacherOutputs | None = None) -> dict[str, Tensor]:
        """Every weighted term for one batch, plus ``total``.

        ``epoch`` (from 1) decides whether the feature hints are teacher-forced; None means
        after the teacher-forced epochs. ``teacher``: the teacher's outputs for this batch,
        when already computed (L-BFGS evaluates the same batch many times).
        """
        weights = self.config.loss.weights
        names = self.hint_names
        forced = bool(names) and epoch is not None and epoch <= self.config.loss.hints.teacher_forced_epochs
        with self._autocast():
            if teacher is None:
                teacher = self.teacher_outputs(batch)
            with tap(self.model, names, replace=teacher.features if forced else None) as student_features:
                fused = self.ddp_model(batch["vi_y_noisy"], batch["ir_noisy"]).float()  # (B, 1, H, W)
            terms = self.criterion(fused, batch["vi_y"], batch["ir"])
            if teacher.fused is not None:
                terms["distill"] = weights.distill * distillation_loss(fused, teacher.fused)
                if names:
                    terms["hints"] = weights.distill_features * hint_loss(student_features, teacher.features, self.hint_adapters)
                terms["total"] = terms["total"] + sum(terms[k] for k in ("distill", "hints") if k in terms)
        return terms

    def teacher_outputs(self, batch: dict[str, Tensor]) -> TeacherOutputs:
        """The teacher's fused Y and its activations at the hint points (empty without a teacher)."""
        if self.teacher is None:
            return TeacherOutputs(None, {})
        with self._autocast(), torch.no_grad(), tap(self.teacher, self.hint_names) as features:
            fused = self.teacher(batch["vi_y"], batch["ir"]).float()  # (B, 1, H, W)
        if self.teacher_channels:
            features = {name: value.index_select(1, self.teacher_channels[name]) for name, value in features.items()}
        return TeacherOutputs(fused, features)

    def _plan_hints(self) -> tuple[list[str], HintAdapters]:
        if self.teacher is None or self.config.loss.weights.distill_features <= 0:
            return [], HintAdapters({})
        hints = self.config.loss.hints
        if self.teacher_channels:  # a pruned student: each activation is a subset of the teacher's
            return hint_points(self.model, hints.points), HintAdapters({})
        names, adapters = plan_hints(self.model, self.teacher, hints.points, hints.teacher_forced_epochs > 0)
        if len(adapters.convs):
            log.info("feature hints through %d 1x1 adapters at %d points (the student's layout differs from the teacher's)",
                     len(adapters.convs), len(names))
        return names, adapters.to(self.device)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    # --- checkpoints --------------------------------------------------------------------

    def save_epoch(self) -> None:
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "hint_adapters": self.hint_adapters.state_dict(),
        }
        config = to_dict(self.config)
        save_checkpoint(self.out_dir / LAST_FILE, self.model, config=config, training=state)
        every = self.config.save_every
        if every and self.epoch % every == 0:
            save_checkpoint(self.out_dir / epoch_file(self.epoch), self.model, config=config)

    def resume(self, path: str | os.PathLike, ckpt: Checkpoint | None = None) -> None:
        """Continue from the training state in ``path`` (``ckpt``: that file, already loaded)."""
        ckpt = load_checkpoint(path) if ckpt is None else ckpt
        if ckpt.training is None:
            raise CheckpointError(f"{path}: holds weights only, no training state to resume from")
        if ckpt.spec.name != self.model.spec.name:
            raise CheckpointError(f"{path}: is a {ckpt.spec.name!r} run, but the config trains {self.model.spec.name!r}")
        self._check_same_optimizer(path, ckpt)
        self.model.load_state_dict(model_from_checkpoint(ckpt).state_dict())
        self._load_optimizer_state(ckpt.training["optimizer"])
        self.scaler.load_state_dict(ckpt.training.get("scaler", {}))
        self.hint_adapters.load_state_dict(ckpt.training.get("hint_adapters", {}))
        self.epoch, self.step = int(ckpt.training["epoch"]), int(ckpt.training["step"])
        if self.dist.is_main:
            log.info("resumed from %s after epoch %d (step %d)", path, self.epoch, self.step)

    def _check_same_optimizer(self, path: str | os.PathLike, ckpt: Checkpoint) -> None:
        """Adam's moments and L-BFGS's history do not convert: a state of the other kind would
        load (torch checks only the parameter count) and then fail mid-run."""
        saved = ckpt.config.get("optim", {}).get("optimizer", "adam")  # runs from before L-BFGS were Adam
        wanted = self.config.optim.optimizer
        if saved != wanted:
            raise CheckpointError(f"{path}: cannot resume with optim.optimizer {wanted}: this run was trained with {saved} "
                                  f"(start a new run with init: {path} to continue from its weights)")

    def _load_optimizer_state(self, state: dict) -> None:
        """The checkpoint's optimizer state (Adam's moments, L-BFGS's history) with this config's
        hyperparameters. ``load_state_dict`` would bring back the saved ones too (betas,
        lbfgs_iterations) while config.yaml records the new ones; the config wins, as it does
        for the learning rate and its schedule."""
        configured = [{key: value for key, value in group.items() if key != "params"} for group in self.optimizer.param_groups]
        saved_history = [group.get("history_size") for group in state["param_groups"]]
        self.optimizer.load_state_dict(state)
        for group, hyperparameters in zip(self.optimizer.param_groups, configured):
            group.update(hyperparameters)
        if self.uses_lbfgs and saved_history != [group["history_size"] for group in self.optimizer.param_groups]:
            # L-BFGS's stored history has the old length and would index past the new one;
            # it is rebuilt within a few steps (as when teacher forcing ends).
            self.optimizer.state.clear()
            log.info("optim.lbfgs_history changed: the L-BFGS history starts again")


def _cycle(loader: DataLoader, steps: int):
    """Yield exactly ``steps`` batches, starting the loader again if it runs out."""
    produced = 0
    while produced < steps:
        for batch in loader:
            yield batch
            produced += 1
            if produced == steps:
                return
        if produced == 0:
            return


def init_distributed(info: DistInfo) -> None:
    if info.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

