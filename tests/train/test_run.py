"""End-to-end runs of ``python -m train.run`` on the built-in data with a tiny model: every output file, exact
resume, the NaN stop, 2-process DDP on CPU (gloo), ``--fused`` in the Triton interpreter and without CUDA."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmixste import read_checkpoint
from fastmixste.data.h36m import ACTIONS
from fastmixste.data.skeleton import H36M_32_TO_17
from fastmixste.io.safeload import read_npz
from tests.train.conftest import tiny_args
from train.run import main

REPO = Path(__file__).resolve().parents[2]
# One window per training sequence and big batches: a handful of steps per epoch, so epochs are cheap.
FEW_STEPS = ["--batch-size", "64", "--set", "pretrain.stride=100000", "--set", "finetune.stride=100000"]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not diff, f"weights differ (not bitwise equal) in {diff[:5]}"


def test_all_stages_write_every_output(tmp_path: Path, builtin_dir: Path, capsys) -> None:
    from fastmixste.data.mocap import save_mocap_npz

    # An extra pretraining corpus at 120 fps (resampled to 50 fps on load): two 3D clips of the built-in data.
    world = read_npz(builtin_dir / "data_3d_h36m.npz", keys=["positions_3d"])["positions_3d"].item()["S1"]
    clips = {name: pos[:60, H36M_32_TO_17] for name, pos in list(world.items())[:2]}
    save_mocap_npz(tmp_path / "extra.npz", clips, fps=120.0)
    out = tmp_path / "run"
    rc = main(tiny_args(out, "--stage", "all", "--epochs", "1", "--max-steps", "3", "--compare-scratch",
                        "--mocap", str(tmp_path / "extra.npz")))
    assert rc == 0
    printed = capsys.readouterr().out
    assert "pretraining sources: 150 clips of the training subjects' 3D, 2 clips from" in printed
    for name in ("config.yaml", "metrics.csv", "curves.png", "curves_compare.png", "results.md", "results.json",
                 "checkpoints/last.pt", "checkpoints/best.pt", "checkpoints/pretrained.pt",
                 "checkpoints/pretrain_best.pt", "scratch/results.json", "scratch/checkpoints/last.pt"):
        assert (out / name).is_file(), f"missing output {name}"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = json.loads((out / "results.json").read_text())
    for proto in ("protocol1", "protocol2"):
        assert list(res[proto]) == ACTIONS + ["Avg"]
        assert all(math.isfinite(v) and v > 0 for v in res[proto].values())
    for key in ("baseline_mpjpe", "n_mpjpe", "mpjve"):
        assert math.isfinite(res[key]) and res[key] > 0
    assert res["stages"]["pretrain"]["steps"] == 3 and res["stages"]["finetune"]["steps"] == 3
    assert "scratch" in res and math.isfinite(res["scratch"]["protocol1"]["Avg"])
    md = (out / "results.md").read_text()
    assert "Protocol #1" in md and "Protocol #2" in md and "WalkT." in md

    rows = _rows(out)
    assert [r["stage"] for r in rows] == ["pretrain", "finetune"]
    for r in rows:
        assert int(r["step"]) == 3
        for key in ("train_loss", "val_mpjpe", "val_p_mpjpe", "lr", "seq_per_s", "epoch_time_s"):
            assert math.isfinite(float(r[key])), (key, r)
    assert rows[0]["loss_n_mpjpe"] and rows[1]["loss_wmpjpe"]

    last = read_checkpoint(out / "checkpoints" / "last.pt")  # weights_only loading
    assert last["stage"] == "finetune" and last["step"] == 3 and last["config"]["num_frame"] == 9
    for key in ("optimizer", "scheduler", "rng", "best", "history", "run_config"):
        assert key in last
    cfg_text = (out / "config.yaml").read_text()
    assert "max_steps: 3" in cfg_text and "embed_dim_ratio: 32" in cfg_text
    assert f"{res['protocol1']['Avg']:.1f} mm" in printed and f"{res['baseline_mpjpe']:.1f} mm" in printed


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tmp_path: Path, builtin_dir: Path) -> None:
    args = [*FEW_STEPS, "--stage", "all", "--epochs", "2"]
    full = tmp_path / "full"
    assert main(tiny_args(full, *args)) == 0
    rows = _rows(full)
    steps_per_epoch = int(next(r for r in rows if r["stage"] == "finetune")["step"])
    total = int(rows[-1]["step"])
    assert total == 2 * steps_per_epoch and steps_per_epoch > 2

    # Interrupt (Ctrl-C, exit 130) in the middle of the second fine-tuning epoch, then resume to the full budget.
    part = tmp_path / "part"
    assert main(tiny_args(part, *args, "--set", f"debug.interrupt_at=finetune:{steps_per_epoch + 2}")) == 130
    ckpt = read_checkpoint(part / "checkpoints" / "last.pt")
    assert (ckpt["stage"], ckpt["epoch"], ckpt["step_in_epoch"]) == ("finetune", 1, 2)
    assert main(tiny_args(part, *args, "--resume")) == 0

    _assert_same_weights(full / "checkpoints" / "last.pt", part / "checkpoints" / "last.pt")
    a, b = read_checkpoint(full / "checkpoints" / "last.pt"), read_checkpoint(part / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == total
    # The interrupted run also validated the (identical) weights of its stopping step, so its best can only be
    # as good or better.
    assert b["best"] <= a["best"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # The last epoch's mean training loss spans the interruption and still matches.
    assert float(_rows(part)[-1]["train_loss"]) == float(rows[-1]["train_loss"])


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, builtin_dir: Path, capsys) -> None:
    args = [*FEW_STEPS, "--stage", "finetune", "--epochs", "1", "--set", "finetune.checkpoint_every=2"]
    out = tmp_path / "nan"
    rc = main(tiny_args(out, *args, "--set", "debug.nan_step=5"))
    assert rc != 0
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "step 5" in err
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4  # the checkpoint of step 4 survives; step 5 wrote nothing
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert not (out / "results.json").exists()

    # Resuming from the surviving checkpoint replays the run exactly (mid-epoch checkpoint).
    assert main(tiny_args(out, *args, "--resume")) == 0
    ref = tmp_path / "ref"
    assert main(tiny_args(ref, *args)) == 0
    _assert_same_weights(ref / "checkpoints" / "last.pt", out / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_ddp_two_processes_gloo_cpu(tmp_path: Path, builtin_dir: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train.run",
           *tiny_args(out, "--device", "cpu", "--stage", "all", "--epochs", "1", "--max-steps", "2",
                      "--batch-size", "8")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Only rank 0 prints: each stage's epoch line and the final numbers appear once.
    assert proc.stdout.count("[finetune] epoch") == 1 and proc.stdout.count("MPJPE (Protocol #1)") == 1
    assert "(2 processes)" in proc.stdout
    for name in ("results.json", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp"))
    assert read_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.slow
def test_fused_trains_in_triton_interpreter(tmp_path: Path, builtin_dir: Path, monkeypatch) -> None:
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = tmp_path / "fused"
    # Training steps run the kernels; evaluation uses sdpa (same weights) to keep the interpreter out of it.
    rc = main(tiny_args(out, "--fused", "--stage", "finetune", "--epochs", "1", "--max-steps", "2",
                        "--batch-size", "4", "--set", "eval.attn_backend=sdpa"))
    assert rc == 0
    assert "attn_backend: triton" in (out / "config.yaml").read_text()
    assert read_checkpoint(out / "checkpoints" / "last.pt")["config"]["attn_backend"] == "triton"
    res = json.loads((out / "results.json").read_text())
    assert math.isfinite(res["protocol1"]["Avg"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no CUDA GPU is present")
def test_fused_without_cuda_exits_with_message(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rc = main(tiny_args(tmp_path / "x", "--fused"))
    assert rc != 0
    err = capsys.readouterr().err
    assert "CUDA" in err and "TRITON_INTERPRET=1" in err
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_init_copies_weights_and_checks_the_architecture(tmp_path: Path) -> None:
    from fastmixste import MixSTE, save_checkpoint
    from train.run import load_init_weights

    torch.manual_seed(1)
    src = MixSTE(num_frame=9, embed_dim_ratio=32, depth=1, num_heads=2)
    save_checkpoint(tmp_path / "src.pt", src)
    dst = MixSTE(num_frame=9, embed_dim_ratio=32, depth=1, num_heads=2)
    load_init_weights(dst, str(tmp_path / "src.pt"))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(ValueError, match="num_frame: run has 27, file has 9"):
        load_init_weights(MixSTE(num_frame=27, embed_dim_ratio=32, depth=1, num_heads=2), str(tmp_path / "src.pt"))


@pytest.mark.slow
def test_outputs_name_their_data_and_record_the_lr_each_epoch_ran_at(tmp_path: Path, builtin_dir: Path) -> None:
    out = tmp_path / "lr"
    args = [*FEW_STEPS, "--stage", "finetune", "--epochs", "2", "--lr", "0.001", "--set", "finetune.lr_decay=0.5"]
    assert main(tiny_args(out, *args)) == 0
    rows = _rows(out)
    assert [float(r["epoch"]) for r in rows] == [1.0, 2.0]
    # The schedule decays once per epoch: epoch 1 ran at lr, epoch 2 at lr * 0.5 (not the next epoch's rate).
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 5e-4], rel=1e-12)
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["name"] == "builtin-synthetic" and res["data"]["dir"] is None
    title = (out / "results.md").read_text().splitlines()[0]
    assert title.startswith("## Test subjects of built-in synthetic data") and "stand-in" in title
    assert not title.startswith("## Human3.6M")


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["lean", "full"])
def test_recompute_trains_to_the_same_weights(tmp_path: Path, builtin_dir: Path, policy: str) -> None:
    # drop paths on, so the recomputed forward must replay the same masks
    args = [*FEW_STEPS, "--stage", "finetune", "--max-steps", "2", "--set", "model.drop_path_rate=0.2"]
    assert main(tiny_args(tmp_path / "none", *args)) == 0
    assert main(tiny_args(tmp_path / policy, *args, "--recompute", policy)) == 0
    _assert_same_weights(tmp_path / "none" / "checkpoints" / "last.pt", tmp_path / policy / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_recompute_auto_on_cpu_states_its_choice(tmp_path: Path, builtin_dir: Path, capsys) -> None:
    assert main(tiny_args(tmp_path / "auto", *FEW_STEPS, "--stage", "finetune", "--max-steps", "1",
                          "--recompute", "auto")) == 0
    out = capsys.readouterr().out
    assert "recompute auto on cpu: none" in out and "recompute none" in out
