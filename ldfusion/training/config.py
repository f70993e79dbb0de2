"""``ldfusion train`` configuration, filled from YAML with ``--set`` overrides winning."""

from __future__ import annotations

from dataclasses import dataclass

from ldfusion.backbones import ClipConfig, VggConfig
from ldfusion.losses import LossWeights, PatchConfig, Prompts
from ldfusion.training.data import DataConfig
from ldfusion.training.hints import HintConfig
from ldfusion.variants import VARIANTS

AMP_MODES = ("auto", "bf16", "fp16", "off")
OPTIMIZERS = ("adam", "lbfgs")
# torch.manual_seed takes 64 bits; each process under torchrun adds its rank to the seed.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class LossConfig:
    weights: LossWeights = LossWeights()
    prompts: Prompts = Prompts()
    patch: PatchConfig = PatchConfig()
    clip: ClipConfig = ClipConfig()
    vgg: VggConfig = VggConfig()
    hints: HintConfig = HintConfig()  # used when loss.weights.distill_features > 0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 16  # per process
    epochs: int = 100
    warmup: bool = True  # linear warm-up over the first epoch
    milestones: tuple[int, ...] = (50, 60, 70, 80, 90, 100)  # epochs at which lr *= gamma
    gamma: float = 0.5
    grad_clip: float = 0.0  # max grad norm; 0 = off
    steps_per_epoch: int = 0  # 0 = one pass over the dataset
    # L-BFGS (lr 1.0, strong-Wolfe line search) runs lbfgs_iterations on each batch. It
    # solves ill-conditioned regressions, like matching a teacher's features, far faster
    # than Adam; it runs in float32 and in a single process, and ignores betas and grad_clip.
    optimizer: str = "adam"  # "adam" or "lbfgs"
    lbfgs_iterations: int = 20
    lbfgs_history: int = 50

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive; got {self.lr}")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"optim.{name} must be at least 1; got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optim.optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        if self.lbfgs_iterations < 1 or self.lbfgs_history < 1:
            raise ValueError("optim.lbfgs_iterations and optim.lbfgs_history must be at least 1")
        if self.steps_per_epoch < 0:
            raise ValueError("optim.steps_per_epoch must be 0 (full pass) or positive")
        # A decay factor: 0 would stop training at the first milestone, a negative one
        # turns descent into ascent, and one above 1 (2 typed for 0.5) makes the rate grow.
        if self.grad_clip < 0:  # read as "off" before, silently
            raise ValueError(f"optim.grad_clip must be 0 (off) or a positive norm; got {self.grad_clip}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"optim.gamma (the learning rate's factor at each milestone) must lie in (0, 1]; got {self.gamma}")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"optim.betas must both lie in [0, 1); got {list(self.betas)}")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    variant: str = "ldfusion"
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    teacher: str | None = None  # frozen teacher weights: adds the distillation term
    init: str | None = None  # start the student from these weights instead of random
    # Start the student from the teacher's most-used channels (a narrower student of the
    # teacher's structure; ldfusion/training/prune.py); hints then read those channels.
    prune_from_teacher: bool = False
    out_dir: str = "runs/train"
    device: str = "auto"
    amp: str = "auto"  # mixed precision on CUDA: bf16 where supported, else fp16
    seed: int = 3407
    save_every: int = 0  # also keep epoch_NNNN.pt every this many epochs; last.pt is always written

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {self.variant!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}; got {self.amp!r}")
        uses_teacher = self.teacher is not None and self.loss.weights.distill > 0
        if self.prune_from_teacher and (not uses_teacher or self.init is not None):
            raise ValueError("prune_from_teacher needs a teacher (and no init: the student starts from the teacher)")
        if not uses_teacher and not (self.loss.weights.needs_clip or self.loss.weights.needs_vgg):
            raise ValueError("every loss weight is zero: set a teacher or a language/perceptual weight")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must lie in 0..{MAX_SEED}; got {self.seed}")
        if self.save_every < 0:
            raise ValueError(f"save_every must be 0 (only last.pt) or positive; got {self.save_every}")
