"""What a training run starts from: the model of its config, weights to initialise it from, and the data
(training, validation and test sequences, pretraining 3D clips, the mean-pose baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train._data import crop_sequences, pretrain_clips, validation_subset
from train.runtime import Runtime


def build_model(cfg: dict[str, Any]) -> torch.nn.Module:
    """The MixSTE of ``cfg["model"]`` (MixSTEConfig fields; omitted ones take its defaults)."""
    from fastmixste import MixSTE, MixSTEConfig

    return MixSTE.from_config(MixSTEConfig.from_dict(dict(cfg["model"])))


_ARCH_FIELDS = ("num_frame", "num_joints", "in_chans", "embed_dim_ratio", "depth", "num_heads", "mlp_ratio",
                "qkv_bias")


def check_same_arch(model: torch.nn.Module, other_config: dict[str, Any], what: str) -> None:
    """Raise ValueError naming every architecture field where ``other_config`` (a file's) differs from ``model``."""
    ours = model.config.to_dict()
    diff = {k: (ours[k], other_config.get(k)) for k in _ARCH_FIELDS if ours[k] != other_config.get(k)}
    if diff:
        detail = ", ".join(f"{k}: run has {a!r}, file has {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{what} does not fit the model of this run ({detail}). Keep model: the same across "
                         f"stages (num_frame included) or pass a matching --config/--set model.*")


def load_init_weights(model: torch.nn.Module, path: str) -> None:
    """Copy the weights of ``path`` (this project's checkpoint or an upstream MixSTE file) into ``model``."""
    from fastmixste import load_checkpoint, read_checkpoint
    from fastmixste.model.checkpoint import FORMAT

    # Our files store their head count (a different one is an architecture mismatch, reported below); upstream
    # files do not, and take the run's.
    ours = read_checkpoint(path).get("format") == FORMAT
    src = load_checkpoint(path, attn_backend="eager", num_heads=None if ours else model.config.num_heads)
    check_same_arch(model, src.config.to_dict(), f"--init {path}")
    model.load_state_dict(src.state_dict(), strict=True)


@dataclass
class RunData:
    train: list
    test: list
    val: list
    pretrain_clips: list[np.ndarray]
    mean_pose: np.ndarray  # (17, 3) mean training pose, root-relative camera coordinates (the baseline)


def load_run_data(cfg: dict[str, Any], rt: Runtime, need_pretrain: bool) -> RunData:
    from fastmixste.data.h36m import TEST_SUBJECTS, TRAIN_SUBJECTS, load_h36m

    if cfg["data"]["dir"]:
        data_dir = Path(cfg["data"]["dir"])
    else:
        from fastmixste.data.builtin import builtin_data_dir

        # The built-in data is generated on first use: one process writes it, the others wait and read.
        if rt.is_main:
            builtin_data_dir()
        rt.barrier()
        data_dir = builtin_data_dir()
    data = load_h36m(data_dir, keypoints=cfg["data"]["keypoints"])
    train = data.sequences(TRAIN_SUBJECTS)
    test = crop_sequences(data.sequences(TEST_SUBJECTS), cfg["eval"]["max_frames"])
    val = validation_subset(test, cfg["val"]["max_frames"])
    clips = pretrain_clips(cfg, train, log=rt.is_main) if need_pretrain else []
    frames = np.concatenate([s.pose_3d for s in train])
    return RunData(train=train, test=test, val=val, pretrain_clips=clips, mean_pose=frames.mean(axis=0))
