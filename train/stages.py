"""The stages of a run (pretraining, fine-tuning): which ones run, their data and loss, their optimizer and
learning-rate schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from train._config import STAGES
from train._data import MotionWindows
from train.inputs import RunData

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
MakeBatch = Callable[[Any, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def planned_stages(cfg: dict[str, Any]) -> list[str]:
    wanted = list(STAGES) if cfg["stage"] == "all" else [cfg["stage"]]
    return [s for s in wanted if cfg[s]["epochs"] > 0]


@dataclass
class Stage:
    name: str  # "pretrain" | "finetune"
    cfg: dict[str, Any]  # the resolved per-stage section
    dataset: Dataset
    make_batch: MakeBatch
    loss_fn: LossFn
    collate: Callable | None = None


def make_stages(cfg: dict[str, Any], data: RunData, names: list[str]) -> list[Stage]:
    from fastmixste.corruption import CorruptionConfig, corrupted_batch
    from fastmixste.data.windows import TrainWindows, collate_windows
    from fastmixste.losses import finetune_loss, pretrain_loss

    num_frame = cfg["model"].get("num_frame", 243)
    stages = []
    for name in names:
        s = cfg[name]
        if name == "pretrain":
            ccfg = CorruptionConfig.from_dict(s["corruption"])
            if not s["flip"]:
                ccfg = CorruptionConfig.from_dict({**ccfg.to_dict(), "flip_p": 0.0})
            ds = MotionWindows(data.pretrain_clips, num_frame, s["stride"])
            stages.append(Stage(name, s, ds, lambda world, g, c=ccfg: corrupted_batch(world, g, c), pretrain_loss))
        else:
            ds = TrainWindows(data.train, num_frame, stride=s["stride"], flip=s["flip"], seed=cfg["seed"])
            stages.append(Stage(name, s, ds, lambda batch, g: (batch[0], batch[1]), finetune_loss, collate_windows))
    return stages


def build_optimizer(model: torch.nn.Module, s: dict[str, Any], steps_per_epoch: int):
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"lr": float(s["lr"]), "betas": tuple(float(b) for b in s["betas"]),
              "weight_decay": float(s["weight_decay"])}
    opt = torch.optim.AdamW(params, **kwargs) if s["optimizer"] == "adamw" else torch.optim.Adam(params, **kwargs)
    warmup, decay = int(s["warmup_steps"]), float(s["lr_decay"])

    # lr(step) = lr * warm-up ramp * decay ** epoch; a pure function of the step, so resuming reproduces it.
    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return ramp * decay ** (step // steps_per_epoch)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
