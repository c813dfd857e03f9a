"""The bad-input matrix's CLI rows: exit code, phrase, no traceback, at most two lines, files unchanged."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from fastmixste.io.cli import EXIT_USAGE
from tests.cli_runner import REPO

from .common import EVAL, INFER, MOCAP, RUN, RUN_TINY


# -------------------------------------------------------------------------------------------------- CLI rows
@dataclass
class Cli:
    id: str
    module: str
    argv: list[str]
    code: int
    phrase: str
    env: dict[str, str] = field(default_factory=dict)
    skip_if: Callable[[], bool] | None = None
    changes: list[str] = field(default_factory=list)  # paths (and what is under them) the command may change
    slow: bool = False  # trains a step or more: marked slow (seconds)


E = ["--checkpoint", "{ckpt}", "--data-dir", "{data}", "--no-progress"]  # a working train.evaluate command
M = ["{asf}", "{amc}", "--out", "{tmp}/corpus.npz"]  # a working mocap import


def R(name: str, *argv: str) -> list[str]:
    """A tiny train.run writing to its own folder: fails before training unless the row says otherwise."""
    return ["--out", f"{{tmp}}/run-{name}", *RUN_TINY, *argv]


INF = ["--checkpoint", "{ckpt}", "--layout", "h36m", "--width", "100", "--height", "100"]  # train.infer, less input


def K(keypoints: str, *argv: str, out: str = "{tmp}/o.npz") -> list[str]:
    """A train.infer command on ``keypoints``."""
    return [*INF, "--keypoints", keypoints, "--out", out, *argv]


RES = ["--out", "{run}", "--resume", *RUN_TINY, "--stage", "finetune", "--epochs", "1", "--max-steps", "1"]
BUILTIN = {"FASTMIXSTE_CACHE": "{cache}"}  # rows that load the built-in data

CLI_CASES: list[Cli] = [
    # train.evaluate: works, then every flag / file going wrong
    Cli("eval-ok", EVAL, E + ["--max-frames", "5"], 0, "Protocol #1"),
    Cli("eval-ckpt-missing", EVAL, ["--checkpoint", "{tmp}/nope.pt", "--data-dir", "{data}"], 2,
        "--checkpoint {tmp}/nope.pt: no such file"),
    Cli("eval-ckpt-empty", EVAL, ["--checkpoint", "{ckpt_empty}", "--data-dir", "{data}"], 2, "is empty (0 bytes)"),
    Cli("eval-ckpt-truncated", EVAL, ["--checkpoint", "{ckpt_truncated}", "--data-dir", "{data}"], 2,
        "is truncated or corrupt"),
    Cli("eval-ckpt-random", EVAL, ["--checkpoint", "{ckpt_random}", "--data-dir", "{data}"], 2,
        "is not a checkpoint: neither a PyTorch zip archive"),
    Cli("eval-ckpt-text", EVAL, ["--checkpoint", "{ckpt_text}", "--data-dir", "{data}"], 2, "is not a checkpoint"),
    Cli("eval-ckpt-is-npz", EVAL, ["--checkpoint", "{data}/data_3d_h36m.npz", "--data-dir", "{data}"], 2,
        "zip archive without the data.pkl"),
    Cli("eval-ckpt-folder", EVAL, ["--checkpoint", "{data}", "--data-dir", "{data}"], 2, "is a folder"),
    Cli("eval-ckpt-foreign-object", EVAL, ["--checkpoint", "{ckpt_foreign}", "--data-dir", "{data}"], 2,
        "outside the allowlist"),
    Cli("eval-ckpt-in-chans-3", EVAL, ["--checkpoint", "{ckpt_in3}", "--data-dir", "{data}"], 2, "in_chans=3"),
    Cli("eval-num-heads-conflict", EVAL, E + ["--num-heads", "4"], 2, "stores num_heads=2, but num_heads=4"),
    Cli("eval-num-heads-zero", EVAL, E + ["--num-heads", "0"], 2, "--num-heads must be >= 1, got 0"),
    Cli("eval-device-cuda-without-cuda", EVAL, E + ["--device", "cuda"], 2, "CUDA is not available",
        skip_if=torch.cuda.is_available),
    Cli("eval-device-unknown", EVAL, E + ["--device", "gpu"], 2, "--device 'gpu' is not a device"),
    Cli("eval-backend-unavailable", EVAL, E + ["--backend", "xformers"], 2,
        "attention backend 'xformers' (requested) cannot run", skip_if=lambda: find_spec("xformers") is not None),
    Cli("eval-backend-unknown", EVAL, E + ["--backend", "fast"], 2, "invalid choice: 'fast'"),
    Cli("eval-batch-size-zero", EVAL, E + ["--batch-size", "0"], 2, "--batch-size must be >= 1, got 0"),
    Cli("eval-batch-size-text", EVAL, E + ["--batch-size", "abc"], 2, "--batch-size: invalid int value: 'abc'"),
    Cli("eval-max-frames-zero", EVAL, E + ["--max-frames", "0"], 2, "--max-frames must be >= 1, got 0"),
    Cli("eval-action-unknown", EVAL, E + ["--actions", "Dancing"], 2, "unknown action(s) ['Dancing']"),
    Cli("eval-subject-unknown", EVAL, E + ["--subjects", "S3"], 2, "unknown subject 'S3'"),
    Cli("eval-out-is-file", EVAL, E + ["--out", "{a_file}"], 2, "is a file; expected a folder"),
    Cli("eval-out-unwritable", EVAL, E + ["--out", "{a_file}/results"], 2, "cannot write there"),
    Cli("eval-data-dir-missing", EVAL, ["--checkpoint", "{ckpt}", "--data-dir", "{tmp}/nope"], 2,
        "--data-dir {tmp}/nope does not exist"),
    Cli("eval-data-dir-is-file", EVAL, ["--checkpoint", "{ckpt}", "--data-dir", "{a_file}"], 2, "is a file"),
    Cli("eval-data-dir-empty", EVAL, ["--checkpoint", "{ckpt}", "--data-dir", "{empty_dir}"], 2,
        "Human3.6M file(s) not found"),
    Cli("eval-keypoints-missing", EVAL, E + ["--keypoints", "gt"], 2, "data_2d_h36m_gt.npz"),
    Cli("eval-data-poisoned-3d", EVAL, ["--checkpoint", "{ckpt}", "--data-dir", "{data_poison3d}"], 2,
        "refusing to unpickle posix.system"),
    Cli("eval-data-poisoned-metadata", EVAL, ["--checkpoint", "{ckpt}", "--data-dir", "{data_poisonmeta}"], 2,
        "'metadata']: refusing to unpickle"),
    Cli("eval-data-raw-pickle", EVAL, ["--checkpoint", "{ckpt}", "--data-dir", "{data_rawpickle}"], 2,
        "raw Python pickle; pickles are never loaded"),
    Cli("eval-data-truncated", EVAL, ["--checkpoint", "{ckpt}", "--data-dir", "{data_truncated}"], 2,
        "is corrupt or truncated"),
    Cli("eval-missing-required", EVAL, [], 2, "the following arguments are required: --checkpoint"),
    # python -m fastmixste.data.mocap
    Cli("mocap-ok", MOCAP, ["{bvh}"] + M, 0, "wrote"),
    Cli("mocap-file-missing", MOCAP, ["{tmp}/nope.bvh", "--out", "{tmp}/c.npz"], 2, "BVH file not found"),
    Cli("mocap-bvh-letters", MOCAP, ["{bvh_letters}", "--out", "{tmp}/c.npz"], 2, "expected a number, got 'abc'"),
    Cli("mocap-bvh-frames", MOCAP, ["{bvh_frames}", "--out", "{tmp}/c.npz"], 2, "expected an integer, got 'x'"),
    Cli("mocap-bvh-channel", MOCAP, ["{bvh_channel}", "--out", "{tmp}/c.npz"], 2, "unknown channel 'wrotation'"),
    Cli("mocap-bvh-motion-text", MOCAP, ["{bvh_motion}", "--out", "{tmp}/c.npz"], 2,
        "the MOTION section must hold numbers (expected a number, got 'abc"),
    Cli("mocap-bvh-short", MOCAP, ["{bvh_short}", "--out", "{tmp}/c.npz"], 2, "bvh_short.bvh: expected 4 frames"),
    Cli("mocap-bvh-binary", MOCAP, ["{bvh_binary}", "--out", "{tmp}/c.npz"], 2, "expected 'HIERARCHY'"),
    Cli("mocap-amc-letters", MOCAP, ["{asf}", "{amc_letters}", "--out", "{tmp}/c.npz"], 2,
        "bone 'lfemur': expected a number, got 'abc'"),
    Cli("mocap-asf-letters", MOCAP, ["{asf_letters}", "{amc}", "--out", "{tmp}/c.npz"], 2,
        "letters.asf: line"),
    Cli("mocap-amc-without-asf", MOCAP, ["{amc}", "--out", "{tmp}/c.npz"], 2, "needs its .asf skeleton"),
    Cli("mocap-unsupported-file", MOCAP, ["{notes}", "--out", "{tmp}/c.npz"], 2, "not a DeepMimic motion"),
    Cli("mocap-bvh-scale-text", MOCAP, M + ["--bvh-scale", "abc"], 2, "--bvh-scale expects metres per BVH unit"),
    Cli("mocap-bvh-scale-negative", MOCAP, M + ["--bvh-scale", "-1"], 2, "--bvh-scale must be a positive number"),
    Cli("mocap-fps-zero", MOCAP, M + ["--fps", "0"], 2, "--fps must be a positive number"),
    Cli("mocap-fps-nan", MOCAP, M + ["--amc-fps", "nan"], 2, "--amc-fps must be a positive number"),
    Cli("mocap-out-folder", MOCAP, ["{asf}", "{amc}", "--out", "{tmp}"], 2, "is a folder"),
    Cli("mocap-out-suffix", MOCAP, ["{asf}", "{amc}", "--out", "{tmp}/c.txt"], 2, "ending in .npz"),
    Cli("mocap-out-unwritable", MOCAP, ["{asf}", "{amc}", "--out", "{a_file}/c.npz"], 2, "cannot write to"),
    # train.infer: hostile keypoint files (its own flags are for the train.infer rows to come)
    Cli("infer-keypoints-poisoned", INFER, ["--checkpoint", "{ckpt}", "--keypoints", "{kp_poison}", "--layout",
                                            "h36m", "--width", "100", "--height", "100", "--out", "{tmp}/o.npz"], 2,
        "refusing to unpickle posix.system"),
    Cli("infer-keypoints-raw-pickle", INFER, ["--checkpoint", "{ckpt}", "--keypoints", "{kp_rawpickle}", "--layout",
                                              "h36m", "--width", "100", "--height", "100", "--out", "{tmp}/o.npz"],
        2, "raw Python pickle"),
    Cli("infer-keypoints-corrupt", INFER, ["--checkpoint", "{ckpt}", "--keypoints", "{kp_corrupt}", "--layout",
                                           "h36m", "--width", "100", "--height", "100", "--out", "{tmp}/o.npz"], 2,
        "is corrupt or truncated"),
    Cli("infer-width-nan", INFER, ["--checkpoint", "{ckpt}", "--keypoints", "{kp_ok}", "--layout", "h36m",
                                   "--width", "nan", "--height", "100", "--out", "{tmp}/o.npz"], 2,
        "image size must be finite and positive"),
    Cli("infer-all-outside-the-image", INFER, ["--checkpoint", "{ckpt}", "--keypoints", "{kp_ok}", "--layout",
                                               "h36m", "--width", "1", "--height", "1", "--out", "{tmp}/o.npz"], 2,
        "outside the 1x1 image"),
    Cli("infer-out-under-a-file", INFER, ["--checkpoint", "{ckpt}", "--keypoints", "{kp_ok}", "--layout", "h36m",
                                          "--width", "100", "--height", "100", "--out", "{a_file}/o.npz"], 2,
        "cannot write the output {a_file}/o.npz"),
    # python -m train.run: data
    Cli("run-data-dir-missing", RUN, R("a", "--data-dir", "{tmp}/nope"), 2, "data.dir (--data-dir): {tmp}/nope is "
        "not a folder"),
    Cli("run-data-dir-is-file", RUN, R("b", "--data-dir", "{a_file}"), 2, "is not a folder"),
    Cli("run-data-dir-empty", RUN, R("c", "--data-dir", "{empty_dir}"), 2, "Human3.6M file(s) not found: "
        "data_3d_h36m.npz, data_2d_h36m_cpn_ft_h36m_dbb.npz"),
    Cli("run-keypoints-missing", RUN, R("d", "--data-dir", "{data}", "--set", "data.keypoints=gt"), 2,
        "not found: data_2d_h36m_gt.npz"),
    Cli("run-data-poisoned-3d", RUN, R("e", "--data-dir", "{data_poison3d}"), 2, "refusing to unpickle posix.system"),
    Cli("run-data-poisoned-metadata", RUN, R("f", "--data-dir", "{data_poisonmeta}"), 2,
        "'metadata']: refusing to unpickle"),
    Cli("run-data-raw-pickle", RUN, R("g", "--data-dir", "{data_rawpickle}"), 2, "raw Python pickle"),
    Cli("run-data-truncated", RUN, R("h", "--data-dir", "{data_truncated}"), 2, "is corrupt or truncated"),
    Cli("run-mocap-missing", RUN, R("i", "--mocap", "{tmp}/nope.npz"), 2, "data.mocap (--mocap): no file at"),
    Cli("run-mocap-poisoned", RUN, R("j", "--stage", "pretrain", "--mocap", "{mocap_poison}"), 2,
        "refusing to unpickle posix.system", env=BUILTIN),
    Cli("run-data-without-training-subjects", RUN, R("j2", "--data-dir", "{data}"), 2, "unknown subject 'S5'"),
    # config values and flags
    Cli("run-seed-negative", RUN, R("k", "--seed", "-1"), 2, "--seed: expected an int >= 0, got -1"),
    Cli("run-val-every-zero", RUN, R("l", "--set", "train.val_every=0"), 2,
        "train.val_every: expected an int >= 1, got 0"),
    Cli("run-epochs-float", RUN, R("m", "--set", "train.epochs=2.5"), 2,
        "train.epochs: expected an int >= 0, got 2.5 (float)"),
    Cli("run-max-steps-float", RUN, R("n", "--set", "finetune.max_steps=1e3"), 2,
        "finetune.max_steps: expected an int >= 0 or null, got 1000.0 (float)"),
    Cli("run-epochs-text", RUN, R("o", "--epochs", "two"), 2, "--epochs: invalid int value: 'two'"),
    Cli("run-lr-text", RUN, R("p", "--set", "train.lr=fast"), 2, "train.lr: expected a number > 0, got 'fast'"),
    Cli("run-batch-size-zero", RUN, R("q", "--batch-size", "0"), 2, "--batch-size (batch_size): expected an int >= 1"),
    Cli("run-max-steps-negative", RUN, R("r", "--max-steps", "-1"), 2, "--max-steps (max_steps): expected an int"),
    Cli("run-threads-zero", RUN, R("s", "--threads", "0"), 2, "--threads: expected an int >= 1, got 0"),
    Cli("run-set-malformed", RUN, R("t", "--set", "model.depth"), 2, "--set expects key.sub=value"),
    Cli("run-set-unknown-section", RUN, R("u", "--set", "optim.lr=1"), 2, "unknown config section(s) ['optim']"),
    Cli("run-set-unknown-key", RUN, R("v", "--set", "train.epoch=3"), 2, "unknown key(s) ['epoch'] in 'train:'"),
    Cli("run-model-key-unknown", RUN, R("w", "--set", "model.width=64"), 2, "model: "),
    Cli("run-model-heads-indivisible", RUN, R("x", "--set", "model.num_heads=3"), 2,
        "embed_dim_ratio (16) must be divisible by num_heads (3)"),
    Cli("run-config-missing", RUN, R("y", "--config", "{tmp}/nope.yaml"), 2, "config file not found"),
    Cli("run-stage-unknown", RUN, R("z", "--stage", "train"), 2, "invalid choice: 'train'"),
    Cli("run-amp-unknown", RUN, R("aa", "--amp", "fp8"), 2, "invalid choice: 'fp8'"),
    # device and backend
    Cli("run-device-cuda-without-cuda", RUN, R("ab", "--device", "cuda"), 2, "--device cuda: CUDA is not available",
        skip_if=torch.cuda.is_available),
    Cli("run-device-unknown", RUN, R("ac", "--device", "gpu"), 2, "device: expected auto, cpu, cuda or cuda:N"),
    Cli("run-fused-without-cuda", RUN, R("ad", "--fused"), 2, "which need a CUDA GPU",
        env={"TRITON_INTERPRET": "0"}, skip_if=torch.cuda.is_available),
    # --init
    Cli("run-init-missing", RUN, R("ae", "--init", "{tmp}/nope.pt"), 2, "init (--init): no file at {tmp}/nope.pt"),
    Cli("run-init-random-bytes", RUN, R("af", "--init", "{ckpt_random}"), 2, "is not a checkpoint"),
    Cli("run-init-foreign-object", RUN, R("ag", "--init", "{ckpt_foreign}"), 2, "outside the allowlist"),
    Cli("run-init-other-model", RUN, R("ah", "--init", "{ckpt}"), 2, "does not fit the model of this run"),
    # --out and the run folder
    Cli("run-out-is-file", RUN, ["--out", "{a_file}", *RUN_TINY], 2, "--out {a_file} is a file; expected a folder"),
    Cli("run-out-under-a-file", RUN, ["--out", "{a_file}/run", *RUN_TINY], 2,
        "--out {a_file}/run: cannot write there"),
    Cli("run-out-holds-a-run", RUN, ["--out", "{run}", *RUN_TINY], 2,
        "--out {run} already holds a run (config.yaml, metrics.csv"),
    Cli("run-out-in-use", RUN, ["--out", "{locked}", *RUN_TINY], 2, "--out {locked} is in use by another run (pid "
        "{pid}"),
    # --resume
    Cli("run-resume-nothing-there", RUN, R("ai", "--resume"), 2, "holds no run to continue (no checkpoints/last.pt)"),
    Cli("run-resume-missing-file", RUN, R("aj", "--resume", "{tmp}/nope.pt"), 2, "--resume: no checkpoint at"),
    Cli("run-resume-weights-only", RUN, ["--resume", "{run}/checkpoints/best.pt", "--out", "{tmp}/run-ak"], 2,
        "not a resume point"),
    Cli("run-resume-empty-file", RUN, R("al", "--resume", "{ckpt_empty}"), 2, "is empty (0 bytes)"),
    Cli("run-resume-truncated", RUN, R("am", "--resume", "{ckpt_truncated}"), 2, "is truncated or corrupt"),
    Cli("run-resume-and-overwrite", RUN, RES + ["--overwrite"], 2, "pass one of them"),
    Cli("run-resume-other-epochs", RUN, RES[:-4] + ["--epochs", "3", "--max-steps", "1"], 2,
        "--epochs 3 (pretrain.epochs: the run has 1, this command 3; finetune.epochs: the run has 1, this command 3)"),
    Cli("run-resume-other-cap", RUN, RES[:-2] + ["--max-steps", "5"], 2,
        "--max-steps 5 (pretrain.max_steps: the run has 1, this command 5"),
    Cli("run-resume-other-model", RUN, RES + ["--set", "model.depth=2"], 2,
        "--set model.depth=2 (model.depth: the run has 1, this command 2)"),
    Cli("run-resume-other-stage", RUN, RES[:-6] + ["--stage", "all"], 2,
        "--stage all (stage: the run has 'finetune', this command 'all')"),
    Cli("run-resume-other-data", RUN, RES + ["--data-dir", "{data}"], 2, "--data-dir {data} (data.dir: the run has "
        "None"),
    Cli("run-resume-other-seed", RUN, RES + ["--seed", "3"], 2, "--seed 3 (seed: the run has 0, this command 3)"),
    Cli("run-resume-other-config", RUN, RES + ["--config", "h36m_paper"], 2,
        "--config h36m_paper (model.drop_path_rate: the run has 0.0, this command 0.1"),
    # a failed run: NaN at the first step (exit 1)
    Cli("run-nan-loss", RUN, R("an", "--stage", "finetune", "--epochs", "1", "--set", "debug.nan_step=1"), 1,
        "non-finite loss", env=BUILTIN),
    # ---- second sweep: nothing a user has is lost ----
    # --overwrite validates everything first, and moves only what runs write (my_weights.pt stays), only once the
    # new run starts: a run that fails before its first checkpoint puts the previous run back
    Cli("run-overwrite-broken-init", RUN, ["--out", "{run}", *RUN_TINY, "--overwrite", "--init", "{ckpt_random}"], 2,
        "is not a checkpoint"),
    Cli("run-overwrite-truncated-data", RUN, ["--out", "{run}", *RUN_TINY, "--overwrite", "--data-dir",
                                              "{data_truncated}"], 2, "is corrupt or truncated"),
    Cli("run-overwrite-other-model-init", RUN, ["--out", "{run}", *RUN_TINY, "--overwrite", "--init", "{ckpt}"], 2,
        "does not fit the model of this run"),
    Cli("run-overwrite-in-chans-3", RUN, ["--out", "{run}", *RUN_TINY, "--overwrite", "--set", "model.in_chans=3"],
        2, "model.in_chans: training feeds 2D keypoints (x, y): expected 2, got 3"),
    Cli("run-overwrite-fails-at-step-1-restores", RUN, ["--out", "{run}", *RUN_TINY, "--overwrite", "--stage",
                                                        "finetune", "--epochs", "1", "--set", "debug.nan_step=1"],
        1, "the previous run's files are back in {run}", env=BUILTIN, slow=True),
    # --resume: a checkpoint of another run into a folder that holds a run; damaged resume points
    Cli("run-resume-other-run", RUN, ["--out", "{run}", "--resume", "{other_run_last}"], 2,
        "is a checkpoint of another run (run id run-000000000000)"),
    Cli("run-resume-wrong-size-rng", RUN, ["--out", "{run}", "--resume", "{bad_rng_last}"], 2,
        "the stored random-number state cannot be restored"),
    Cli("run-resume-nan-weights", RUN, ["--out", "{run}", "--resume", "{nan_last}"], 2,
        "the weights hold NaN/inf values in 1 tensor(s): head.1.weight (1 of"),
    Cli("run-lock-impossible-pid", RUN, ["--out", "{huge_pid}", *RUN_TINY, "--init", "{ckpt_random}"], 2,
        "the lock file names pid 100000000000000000000, which no process can have", changes=["{huge_pid}/run.lock"]),
    # train.evaluate and train.infer never write over their input, a run's results or a file they did not make
    Cli("eval-out-is-a-run-folder", EVAL, E + ["--out", "{run}"], 2, "--out {run} holds a training run"),
    Cli("eval-out-holds-users-results", EVAL, E + ["--out", "{user_results}"], 2,
        "--out {user_results}/results.json already exists and is not an output of this command"),
    Cli("infer-out-is-the-input", INFER, K("{kp_npz}", out="{kp_npz}"), 2,
        "--out {kp_npz} is the command's input (--keypoints {kp_npz})"),
    Cli("infer-out-is-users-file", INFER, K("{kp_ok}", out="{user_npz}"), 2,
        "--out {user_npz} already exists and is not an output of this command"),
    Cli("infer-mp4-fallback-over-users-gif", INFER, K("{kp_ok}", "--render", "{tmp}/my_animation.mp4"), 2,
        "{tmp}/my_animation.gif already exists and is not an output of this command",
        skip_if=lambda: __import__("matplotlib.animation").animation.writers.is_available("ffmpeg")),
    Cli("infer-render-is-users-file", INFER, K("{kp_ok}", "--render", "{user_png}"), 2,
        "--render {user_png} already exists and is not an output of this command"),
    # sizes stated by the input are checked before anything is allocated
    Cli("infer-npy-header-10e12-frames", INFER, K("{kp_huge_header}"), 2,
        "(247.4 TiB), above the 8.0 GiB limit on one input array"),
    Cli("infer-npz-zip-bomb", INFER, K("{kp_bomb}"), 2, "refusing a zip bomb"),
    Cli("infer-keypoints-fifo", INFER, K("{fifo}"), 2, "is a named pipe (FIFO); expected a regular file",
        skip_if=lambda: not hasattr(os, "mkfifo")),
    Cli("infer-keypoints-dev-zero", INFER, K("/dev/zero"), 2, "/dev/zero: is a device; expected a regular file",
        skip_if=lambda: not Path("/dev/zero").exists()),
    Cli("infer-json-nested-5000-deep", INFER, K("{json_deep}"), 2, "JSON nested 5001 levels deep"),
    Cli("eval-ckpt-9-tib-array", EVAL, ["--checkpoint", "{ckpt_huge_array}", "--data-dir", "{data}"], 2,
        "asks for a numpy array of shape (10000000000000,) (9.1 TiB"),
    Cli("eval-ckpt-num-frame-10e12", EVAL, ["--checkpoint", "{ckpt_num_frame_huge}", "--data-dir", "{data}"], 2,
        "num_frame must be at most 10,000, got 1,000,000,000,000"),
    Cli("eval-ckpt-mlp-ratio-inf", EVAL, ["--checkpoint", "{ckpt_mlp_inf}", "--data-dir", "{data}"], 2,
        "mlp_ratio must be a finite number, got inf"),
    Cli("eval-heldout-clips-10e9", EVAL, E + ["--heldout-clips", "1000000000"], 2,
        "--heldout-clips must be at most 1000 clips per pattern"),
    Cli("eval-batch-size-10e9", EVAL, E + ["--batch-size", "1000000000"], 2, "--batch-size must be at most 65536"),
    Cli("run-batch-size-10e9", RUN, R("ba", "--batch-size", "1000000000"), 2,
        "--batch-size (batch_size): expected at most 65,536, got 1000000000"),
    Cli("run-heldout-clips-10e9", RUN, R("bb", "--set", "eval.heldout_clips=1000000000"), 2,
        "eval.heldout_clips: expected at most 1,000"),
    Cli("run-num-frame-10e12", RUN, R("bc", "--set", "model.num_frame=1000000000000"), 2,
        "num_frame must be at most 10,000"),
    Cli("run-mlp-ratio-inf", RUN, R("bd", "--set", "model.mlp_ratio=.inf"), 2, "mlp_ratio must be a finite number"),
    Cli("run-width-huge", RUN, R("be", "--set", "model.embed_dim_ratio=16384", "--set", "model.depth=64"), 2,
        "parameters, above the limit of 2,000,000,000"),
    Cli("mocap-bvh-frame-time-100000", MOCAP, ["{bvh_slow}", "--out", "{tmp}/c.npz"], 2,
        "'Frame Time: 100000' s: 1e-05 frames per second; expected a frame rate between 1 and 10,000"),
    Cli("mocap-fps-1e300", MOCAP, M + ["--fps", "1e300"], 2, "--fps: 1e+300 frames per second"),
    Cli("run-mocap-corpus-fps-1e300", RUN, R("bf", "--stage", "pretrain", "--mocap", "{mocap_fps_absurd}"), 2,
        "fps: 1e+300 frames per second; expected a frame rate between 1 and 10,000", env=BUILTIN),
    # YAML: syntax errors name the file and line; no aliases; nesting and size bounded
    Cli("run-config-syntax-error", RUN, R("bg", "--config", "{cfg_syntax}"), 2,
        "{cfg_syntax}: not valid YAML at line 3"),
    Cli("run-config-tab", RUN, R("bh", "--config", "{cfg_tab}"), 2, "(a tab: indent YAML with spaces)"),
    Cli("run-config-20000-deep", RUN, R("bi", "--config", "{cfg_deep}"), 2, "nested more than 64 levels deep"),
    Cli("run-config-alias-bomb", RUN, R("bj", "--config", "{cfg_alias}"), 2, "aliases (*name) are not allowed"),
    Cli("run-set-alias", RUN, R("bk", "--set", "train.epochs=*a"), 2, "--set 'train.epochs=*a': the value is not "
        "valid YAML"),
    # all validation before work: what failed only once training ran
    Cli("run-in-chans-3", RUN, R("bl", "--set", "model.in_chans=3"), 2, "model.in_chans: training feeds 2D"),
    Cli("run-num-joints-16", RUN, R("bm", "--set", "model.num_joints=16"), 2, "model.num_joints: training data has"),
    Cli("run-eval-backend-triton-on-cpu", RUN, R("bn", "--set", "eval.attn_backend=triton"), 2,
        "eval.attn_backend=triton cannot run on cpu", env={"TRITON_INTERPRET": "0"}, skip_if=torch.cuda.is_available),
    Cli("run-noise-std-1e300", RUN, R("bo", "--set", "pretrain.corruption.noise_std=1e300"), 2,
        "pretrain.corruption.noise_std: expected at most 1, got 1e+300"),
    Cli("run-focal-range-1e300", RUN, R("bp", "--set", "pretrain.corruption.focal=[1,1e300]"), 2,
        "pretrain.corruption.focal: expected a list of 2 numbers in [0.01, 100]"),
    Cli("run-lr-1e300", RUN, R("bq", "--lr", "1e300"), 2, "--lr: expected at most 100, got 1e+300"),
    Cli("run-loss-weight-1e300", RUN, R("br", "--set", "finetune.loss_weights.tc=1e300"), 2,
        "finetune.loss_weights.tc: expected at most 1e+06"),
    # silent results made loud
    Cli("infer-ckpt-nan-weights", INFER, ["--checkpoint", "{ckpt_nan}", *INF[2:], "--keypoints", "{kp_ok}", "--out",
                                          "{tmp}/o.npz"], 2, "the weights hold NaN/inf values"),
    Cli("infer-output-overflows", INFER, ["--checkpoint", "{ckpt_overflow}", *INF[2:], "--keypoints", "{kp_ok}",
                                          "--out", "{tmp}/o.npz"], 2, "the model gave NaN/inf for"),
    Cli("eval-ckpt-nan-weights", EVAL, ["--checkpoint", "{ckpt_nan}", "--data-dir", "{data}"], 2,
        "the weights hold NaN/inf values"),
    Cli("infer-keypoints-complex", INFER, K("{kp_complex}"), 2, "expected real keypoint coordinates, got complex"),
    Cli("infer-keypoints-text", INFER, K("{kp_text}"), 2, "expected a numeric keypoint array, got dtype <U3"),
    Cli("infer-coco-width-as-text", INFER, [*INF[:4], "--keypoints", "{coco_width_text}", "--out", "{tmp}/o.npz"], 2,
        "images[].width must be a number of pixels, got '640' (str)"),
    Cli("infer-fps-negative", INFER, K("{kp_ok}", "--render", "{tmp}/pose.gif", "--fps", "-5"), 2,
        "--fps must be a frame rate in (0, 1000]"),
    Cli("eval-output-overflows", EVAL, ["--checkpoint", "{ckpt_overflow}", "--data-dir", "{data}", "--no-baseline",
                                        "--heldout-clips", "0"], 2, "the model outputs NaN/inf even for a still pose"),
    Cli("run-seed-10e30", RUN, R("bs", "--seed", "1" + "0" * 30), 2, "--seed: expected at most 4,294,967,295"),
    Cli("eval-subjects-twice", EVAL, E + ["--subjects", "S9", "S9"], 2, "--subjects names S9 more than once"),
    # the same command with --resume (and a safe change) continues: the finished run is evaluated again
    Cli("run-resume-same-command", RUN, RES + ["--device", "cpu"], 0,
        "continuing the run stored in {run}/checkpoints/last.pt with its own settings (changed on resume: --device "
        "cpu)", env=BUILTIN, changes=["{run}"]),
]  # fmt: skip


def _trains(case: Cli) -> bool:
    """Rows that train a step or need the trained run (seconds each): in the full run only."""
    text = " ".join([*case.argv, *case.env.values(), case.phrase])
    return any(key in text for key in ("{run}", "{locked}", "{cache}", "{pid}")) or case.id in SLOW_ROWS


SLOW_ROWS = {"eval-ok", "run-mocap-poisoned"}


def _snapshot(folders: list[Path]) -> dict[Path, str]:
    """Every regular file under ``folders`` -> its SHA-256 (pipes and devices are not opened)."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=pytest.mark.slow if c.slow or _trains(c) else ()) for c in CLI_CASES]
)
def test_cli_row(case: Cli, inputs, runner, request):
    if case.skip_if is not None and case.skip_if():
        pytest.skip("not applicable on this machine")
    values = dict(inputs)
    if any(key in text for text in [*case.argv, *case.env.values(), case.phrase]
           for key in ("{run}", "{locked}", "{cache}", "{pid}", "{huge_pid}", "{other_run_last}", "{bad_rng_last}",
                       "{nan_last}")):  # fmt: skip
        values.update(request.getfixturevalue("trained_run"))
    argv = [a.format(**values) for a in case.argv]
    env = {"FASTMIXSTE_CACHE": str(Path(inputs["tmp"]) / "cache"), "FASTMIXSTE_DEBUG": "0",
           **{k: v.format(**values) for k, v in case.env.items()}}  # fmt: skip
    watched = [Path(inputs["tmp"])] + ([Path(values["run"]).parent] if "run" in values else [])
    before = _snapshot(watched)
    r = runner.run(case.module, argv, env=env)
    after = _snapshot(watched)
    allowed = [Path(c.format(**values)) for c in case.changes]
    touched = [str(p) for p, digest in before.items() if after.get(p) != digest
               and not any(p == a or a in p.parents for a in allowed)]
    assert not touched, f"the command changed or removed files it does not own: {touched[:5]}\n{r.stderr}"
    phrase = case.phrase.format(**values)
    assert r.returncode == case.code, f"exit {r.returncode}, expected {case.code}; stderr:\n{r.stderr}"
    assert phrase in (r.stderr if case.code else r.stdout + r.stderr), f"{phrase!r} not in:\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    if case.code == EXIT_USAGE:  # one or two lines of message (argparse's usage block aside)
        lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith(("usage:", " "))]
        assert len(lines) <= 2, r.stderr
    assert not Path(inputs["marker"]).exists(), "a hostile file ran its payload"


def test_debug_flag_and_env_show_the_traceback(inputs, runner):
    argv = ["--checkpoint", inputs["ckpt_empty"], "--data-dir", inputs["data"]]
    for extra, env in ((["--debug"], {}), ([], {"FASTMIXSTE_DEBUG": "1"})):
        r = runner.run(EVAL, argv + extra, env=env)
        assert r.returncode == 2 and "Traceback" in r.stderr and "is empty (0 bytes)" in r.stderr


def test_run_debug_flag_shows_the_traceback(inputs, runner):
    argv = ["--out", f"{inputs['tmp']}/run-debug", "--data-dir", inputs["empty_dir"]]
    for extra, env in ((["--debug"], {}), ([], {"FASTMIXSTE_DEBUG": "1"})):
        r = runner.run(RUN, argv + extra, env=env)
        assert r.returncode == 2 and "Traceback" in r.stderr and "Human3.6M file(s) not found" in r.stderr
    assert not Path(inputs["tmp"], "run-debug").exists()


@pytest.mark.slow
def test_fresh_interpreter_agrees(inputs):
    """The forked rows behave like a plain `python -m` (one row checked in a fresh interpreter; each costs seconds)."""
    argv = ["--checkpoint", inputs["ckpt_random"], "--data-dir", inputs["data"]]
    p = subprocess.run([sys.executable, "-m", EVAL, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "is not a checkpoint" in p.stderr and "Traceback" not in p.stderr, p.stderr


