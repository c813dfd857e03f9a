"""The stages of a run (pretraining, fine-tuning): which ones run, their typed settings, their data and loss,
their optimizer and learning-rate schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

import torch
from torch.utils.data import Dataset

from train._config import STAGES
from train._data import MotionWindows
from train.inputs import RunData

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
MakeBatch = Callable[[Any, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class StageSettings:
    """The training options of one stage, typed; read once from the resolved config (train/_config.py has already
    checked every value, and documents each option in TRAIN_DEFAULTS)."""

    name: str  # "pretrain" | "finetune"
    epochs: int
    batch_size: int  # sequences per optimizer step, all processes together
    lr: float
    optimizer: str  # adam | adamw
    weight_decay: float
    betas: tuple[float, float]
    lr_decay: float  # per epoch
    warmup_steps: int
    grad_clip: float  # 0: no clipping
    max_steps: int | None
    stride: int | None
    flip: bool
    checkpoint_every: int  # 0: once per epoch only
    val_every: int
    h36m_3d: bool = False  # pretraining only: the training subjects' 3D is a source
    corruption: dict[str, Any] = field(default_factory=dict)  # pretraining only: CorruptionConfig fields
    loss_weights: dict[str, float] = field(default_factory=dict)  # the stage loss's term weights (others: defaults)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], name: str) -> StageSettings:
        s = cfg[name]
        values = {f.name: s[f.name] for f in fields(cls) if f.name in s}
        values.update(
            name=name, lr=float(s["lr"]), weight_decay=float(s["weight_decay"]), lr_decay=float(s["lr_decay"]),
            betas=(float(s["betas"][0]), float(s["betas"][1])), grad_clip=float(s["grad_clip"] or 0.0),
            checkpoint_every=int(s["checkpoint_every"] or 0), corruption=dict(s.get("corruption") or {}),
            loss_weights={k: float(v) for k, v in (s.get("loss_weights") or {}).items()},
        )  # fmt: skip
        return cls(**values)


def planned_stages(cfg: dict[str, Any]) -> list[str]:
    """The stages this run trains, in order: those asked for (--stage) that have epochs."""
    wanted = list(STAGES) if cfg["stage"] == "all" else [cfg["stage"]]
    return [s for s in wanted if cfg[s]["epochs"] > 0]


@dataclass
class Stage:
    """A stage ready to train: settings, windows, how a batch becomes (input, target), and the loss."""

    settings: StageSettings
    dataset: Dataset
    make_batch: MakeBatch
    loss_fn: LossFn
    collate: Callable | None = None

    @property
    def name(self) -> str:
        return self.settings.name


def make_stages(cfg: dict[str, Any], data: RunData, names: list[str]) -> list[Stage]:
    from fastmixste.data.corruption import CorruptionConfig, corrupted_batch
    from fastmixste.data.windows import TrainWindows, collate_windows
    from fastmixste.eval.losses import finetune_loss, pretrain_loss

    num_frame = cfg["model"].get("num_frame", 243)
    stages = []
    for name in names:
        s = StageSettings.from_config(cfg, name)
        if name == "pretrain":
            ccfg = CorruptionConfig.from_dict(s.corruption)
            if not s.flip:
                ccfg = CorruptionConfig.from_dict({**ccfg.to_dict(), "flip_p": 0.0})
            ds = MotionWindows(data.pretrain_clips, num_frame, s.stride)
            loss = partial(pretrain_loss, weights=s.loss_weights)
            stages.append(Stage(s, ds, lambda world, g, c=ccfg: corrupted_batch(world, g, c), loss))
        else:
            ds = TrainWindows(data.train, num_frame, stride=s.stride, flip=s.flip, seed=cfg["seed"])
            loss = partial(finetune_loss, weights=s.loss_weights)
            stages.append(Stage(s, ds, lambda batch, g: (batch[0], batch[1]), loss, collate_windows))
    return stages


def build_optimizer(model: torch.nn.Module, s: StageSettings, steps_per_epoch: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam or AdamW over the trainable parameters, and the stage's per-step learning-rate schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"lr": s.lr, "betas": s.betas, "weight_decay": s.weight_decay}
    opt = torch.optim.AdamW(params, **kwargs) if s.optimizer == "adamw" else torch.optim.Adam(params, **kwargs)
    warmup, decay = s.warmup_steps, s.lr_decay

    # lr(step) = lr * warm-up ramp * decay ** epoch; a pure function of the step, so resuming reproduces it.
    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return ramp * decay ** (step // steps_per_epoch)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
