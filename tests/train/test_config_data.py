"""Config resolution (YAML, --set, named flags) and the resumable, sharded batch order."""

from __future__ import annotations

import pytest
import yaml

from train._config import CONFIG_DIR, build_parser, resolve_config
from train._data import EpochBatchSampler, MotionWindows


def _resolve(*argv: str) -> dict:
    return resolve_config(build_parser().parse_args(list(argv)))


def test_every_config_resolves() -> None:
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"default", "h36m_paper", "h36m_mixste"} <= set(names)
    for name in names:
        cfg = _resolve("--config", name)
        for stage in ("pretrain", "finetune"):
            assert cfg[stage]["epochs"] >= 0 and cfg[stage]["batch_size"] >= 1
    paper = _resolve("--config", "h36m_paper")
    assert paper["model"]["num_frame"] == 243 and paper["model"]["embed_dim_ratio"] == 512
    assert paper["model"]["depth"] == 8 and paper["model"]["num_heads"] == 8
    ft = paper["finetune"]
    assert (ft["batch_size"], ft["epochs"], ft["optimizer"], ft["lr"], ft["lr_decay"]) == (128, 20, "adam", 1e-3, 0.96)
    up = _resolve("--config", "h36m_mixste")["finetune"]
    assert (up["optimizer"], up["lr"], up["weight_decay"], up["lr_decay"]) == ("adamw", 4e-5, 0.1, 0.99)


def test_override_order() -> None:
    cfg = _resolve("--set", "train.lr=0.005", "--set", "finetune.epochs=7", "--set", "model.depth=2",
                   "--epochs", "4", "--max-steps", "9", "--fused", "--mocap", "a.npz", "--mocap", "b.npz")
    assert cfg["pretrain"]["lr"] == 0.005 and cfg["finetune"]["lr"] == 0.005  # train: feeds both stages
    assert cfg["finetune"]["epochs"] == 4  # named flags win over --set
    assert cfg["pretrain"]["max_steps"] == cfg["finetune"]["max_steps"] == 9
    assert cfg["model"]["depth"] == 2 and cfg["model"]["attn_backend"] == "triton"
    assert cfg["data"]["mocap"] == ["a.npz", "b.npz"]
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg  # what a run saves reads back the same


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValueError, match="lrr"):
        _resolve("--set", "finetune.lrr=1")
    with pytest.raises(ValueError, match="optimiser"):
        _resolve("--set", "optimiser.lr=1")
    with pytest.raises(ValueError, match="batch_size"):
        _resolve("--batch-size", "0")


def test_batch_order_resumes_and_shards() -> None:
    kw = {"seed": 3, "stage": "finetune", "epoch": 2}
    full = list(EpochBatchSampler(103, 8, **kw))
    assert len(full) == 12 and all(len(b) == 8 for b in full)
    assert len({i for b in full for i in b}) == 96  # a permutation, incomplete batch dropped
    assert list(EpochBatchSampler(103, 8, start=5, **kw)) == full[5:]
    assert list(EpochBatchSampler(103, 8, **{**kw, "epoch": 3})) != full
    r0 = list(EpochBatchSampler(103, 4, rank=0, world_size=2, **kw))
    r1 = list(EpochBatchSampler(103, 4, rank=1, world_size=2, **kw))
    assert len(r0) == len(r1) == 12
    assert [a + b for a, b in zip(r0, r1)] == full  # the two processes split every global batch
    tiny = list(EpochBatchSampler(3, 8, **kw))
    assert len(tiny) == 1 and len(tiny[0]) == 8  # smaller than one batch: cycled


def test_motion_windows() -> None:
    import numpy as np

    clips = [np.arange(30 * 17 * 3, dtype=np.float32).reshape(30, 17, 3), np.ones((5, 17, 3), np.float32)]
    ds = MotionWindows(clips, num_frame=9, stride=9)
    assert len(ds) == 3 + 1
    assert ds[0].shape == (9, 17, 3) and float(ds[1][0, 0, 0]) == float(clips[0][9, 0, 0])
    short = ds[3]
    assert short.shape == (9, 17, 3) and bool((short == 1).all())  # edge-padded
