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


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--seed", "-1"], "--seed: expected an int >= 0, got -1"),
        (["--set", "seed=-1"], "seed: expected an int >= 0, got -1"),
        (["--set", "train.val_every=0"], "train.val_every: expected an int >= 1, got 0"),
        (["--set", "finetune.val_every=0"], "finetune.val_every: expected an int >= 1, got 0"),
        (["--set", "train.epochs=3.0"], "train.epochs: expected an int >= 0, got 3.0 (float)"),
        (["--set", "pretrain.epochs=2.5"], "pretrain.epochs: expected an int >= 0, got 2.5 (float)"),
        (["--set", "train.batch_size=true"], "train.batch_size: expected an int >= 1, got True (bool)"),
        (["--set", "finetune.lr=-0.001"], "finetune.lr: expected a number > 0, got -0.001"),
        (["--set", "train.lr=.nan"], "train.lr: expected a number > 0, got nan"),
        (["--lr", "0"], "--lr: expected a number > 0, got 0.0"),
        (["--epochs", "-2"], "--epochs: expected an int >= 0, got -2"),
        (["--max-steps", "-1"], "--max-steps (max_steps): expected an int >= 0, got -1"),
        (["--threads", "0"], "--threads: expected an int >= 1, got 0"),
        (["--set", "train.betas=[0.9]"], "train.betas: expected a list of two numbers in [0, 1)"),
        (["--set", "train.optimizer=sgd"], "train.optimizer: expected one of adam, adamw, got 'sgd'"),
        (["--set", "train.grad_clip=-1"], "train.grad_clip: expected a number >= 0 or null, got -1"),
        (["--set", "val.batch_size=0"], "val.batch_size: expected an int >= 1, got 0"),
        (["--set", "eval.attn_backend=fast"], "eval.attn_backend: expected null or one of auto"),
        (["--set", "eval.flip=1"], "eval.flip: expected true or false, got 1 (int)"),
        (["--set", "data.num_workers=-1"], "data.num_workers: expected an int >= 0, got -1"),
        (["--set", "pretrain.corruption.joint_mask_p=2"], "pretrain.corruption.joint_mask_p: expected a probability"),
        (["--set", "pretrain.corruption.focal=[3, 1]"], "pretrain.corruption.focal: expected a range [low, high]"),
        (["--set", "pretrain.loss_weights.velocity=-1"], "pretrain.loss_weights.velocity: expected a number >= 0"),
        (["--set", "finetune.loss_weights.velocity=1"], "finetune.loss_weights: unknown term(s) ['velocity']"),
        (["--set", "model.num_heads=3"], "model: MixSTEConfig: embed_dim_ratio (32) must be divisible"),
        (["--set", "model.depth=2.0"], "model: MixSTEConfig.depth must be a positive int, got 2.0"),
        (["--set", "model.attn_backend=fast"], "model.attn_backend: expected one of auto"),
        (["--device", "gpu"], "device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        (["--set", "model=3"], "'model:' must be a mapping of options, got 3 (int)"),
        (["--set", "train.lr=[1"], "--set 'train.lr=[1': the value is not valid YAML"),
    ],
)
def test_bad_values_are_refused_naming_option_and_value(argv: list[str], phrase: str) -> None:
    with pytest.raises(ValueError) as err:
        _resolve(*argv)
    assert phrase in str(err.value)


def test_train_overrides_reach_every_stage() -> None:
    # default.yaml sets pretrain.epochs and finetune.epochs: a train.* override must not be shadowed by them.
    cfg = _resolve("--set", "train.epochs=3")
    assert cfg["pretrain"]["epochs"] == cfg["finetune"]["epochs"] == 3
    cfg = _resolve("--set", "train.epochs=3", "--set", "finetune.epochs=5")
    assert (cfg["pretrain"]["epochs"], cfg["finetune"]["epochs"]) == (3, 5)  # a later stage override still wins
    cfg = _resolve("--set", "finetune.epochs=5", "--set", "train.epochs=3")
    assert cfg["pretrain"]["epochs"] == cfg["finetune"]["epochs"] == 3  # in order: the later --set wins
    untouched = _resolve()
    written = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())  # the stage sections' own values
    assert (untouched["pretrain"]["epochs"], untouched["finetune"]["epochs"]) == (
        written["pretrain"]["epochs"], written["finetune"]["epochs"])


def test_typed_stage_settings() -> None:
    from train.stages import StageSettings

    cfg = _resolve("--set", "train.grad_clip=null", "--set", "finetune.lr=5e-4")
    ft = StageSettings.from_config(cfg, "finetune")
    written = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())
    assert (ft.name, ft.lr, ft.grad_clip, ft.betas, ft.epochs) == (
        "finetune", 5e-4, 0.0, (0.9, 0.999), written["finetune"]["epochs"])
    pre = StageSettings.from_config(cfg, "pretrain")
    assert pre.h36m_3d is True and pre.corruption == {} and pre.lr == 2e-3
    cfg = _resolve("--set", "pretrain.loss_weights.velocity=2", "--set", "finetune.loss_weights={tc: 0}")
    assert StageSettings.from_config(cfg, "pretrain").loss_weights.get("velocity") == 2.0
    assert StageSettings.from_config(cfg, "finetune").loss_weights == {"tc": 0.0}


def test_missing_files_stop_the_run_before_any_data_loads(tmp_path, capsys) -> None:
    from train._checks import check_files
    from train.run import main

    with pytest.raises(FileNotFoundError, match="data.dir"):
        check_files(_resolve("--data-dir", str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="data.mocap"):
        check_files(_resolve("--mocap", str(tmp_path / "missing.npz")))
    with pytest.raises(FileNotFoundError, match="init"):
        check_files(_resolve("--init", str(tmp_path / "missing.pt")))
    out = tmp_path / "run"
    for argv, phrase in ((["--seed", "-1"], "--seed"), (["--set", "train.val_every=0"], "train.val_every"),
                         (["--data-dir", str(tmp_path / "nowhere")], "not a folder")):
        with pytest.raises(SystemExit) as exit_:
            main(["--out", str(out), *argv])
        assert exit_.value.code == 2
        assert phrase in capsys.readouterr().err
    assert not out.exists()  # refused before the run folder, the data or the model were touched
