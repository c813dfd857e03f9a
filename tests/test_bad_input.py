"""The bad-input matrix: every row is a bad (or hostile) input, the exit code it must give and a phrase its
message must contain; no row may print a traceback, and no hostile file may run its payload.

CLI rows run ``python -m <module> <argv>`` in their own process (tests/cli_runner.py forks them from one
preloaded interpreter; FASTMIXSTE_FRESH_CLI=1 starts a fresh interpreter per row). API rows call a library
function in-process and expect an exception type and phrase.

Adding a row: append ``Cli(id, module, argv, code, phrase)`` to CLI_CASES, with ``{name}`` placeholders for the
files built in ``inputs`` (add a file there if needed), or ``Api(id, call, exception, phrase)`` to API_CASES.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmixste import CheckpointError, MixSTE, load_checkpoint, read_checkpoint, save_checkpoint
from fastmixste.data.h36m import load_h36m, load_positions_2d, load_positions_3d
from fastmixste.data.mocap import load_mocap_npz
from fastmixste.data.mocap_formats import read_asf_amc, read_bvh
from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT
from fastmixste.io.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, RunFailed, UserInputError, run_cli
from fastmixste.io.safeload import CorruptFileError, DataFileError, UnsafeFileError
from fastmixste.video.keypoints import KeypointError, read_keypoints
from tests.cli_runner import REPO, CliRunner
from tests.data.test_mocap import BVH, CMU_AMC, CMU_ASF, _frame
from tests.models import tiny_mixste

EVAL, MOCAP, INFER, RUN = "train.evaluate", "fastmixste.data.mocap", "train.infer", "train.run"
# A train.run small enough to train a step in seconds (one block pair of 16 channels, 9 frames, short crops).
RUN_TINY = ["--set", "model.num_frame=9", "--set", "model.embed_dim_ratio=16", "--set", "model.depth=1",
            "--set", "model.num_heads=1", "--set", "val.max_frames=9", "--set", "eval.max_frames=9", "--no-progress",
            "--threads", "1"]  # fmt: skip


class Payload:
    """Unpickles as os.system("touch <marker>"): if the marker file ever exists, foreign code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


# ------------------------------------------------------------------------------------------------------ inputs
def _write_h36m(folder: Path, *, poison_3d: Path | None = None, poison_meta: Path | None = None) -> Path:
    """A tiny VideoPose3D-format dataset (S1, S9, S11 x 2 takes); optionally with a payload hidden in a slot."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    pos3d: dict = {}
    pos2d: dict = {}
    for s in ("S1", "S9", "S11"):
        pos3d[s], pos2d[s] = {}, {}
        for a in ("Walking", "Eating 1"):
            world = rng.normal(scale=0.3, size=(12, 17, 3)).astype(np.float32)
            world[..., 2] += 1.0
            pos3d[s][a] = world
            pos2d[s][a] = [rng.uniform(100, 900, (14, 17, 2)).astype(np.float32) for _ in range(4)]
    meta: dict = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [H36M_LEFT, H36M_RIGHT]}
    if poison_3d is not None:
        pos3d["S9"]["Walking"] = {"deep": [Payload(poison_3d)]}
    if poison_meta is not None:
        meta["extra"] = {"hidden": Payload(poison_meta)}  # the rest is valid: np.load would finish with exit 0
    np.savez(folder / "data_3d_h36m.npz", positions_3d=np.array(pos3d, dtype=object))
    np.savez(folder / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d=np.array(pos2d, dtype=object),
             metadata=np.array(meta, dtype=object))  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Every file the rows refer to, by placeholder name; 'marker' must never come to exist."""
    d = tmp_path_factory.mktemp("bad_input")
    marker = d / "PAYLOAD_RAN"
    p: dict[str, Path] = {"tmp": d, "marker": marker}
    p["ckpt"] = save_checkpoint(d / "tiny.pt", tiny_mixste())
    p["ckpt_in3"] = save_checkpoint(d / "in3.pt", tiny_mixste(in_chans=3))
    good = p["ckpt"].read_bytes()
    for name, data in {"empty": b"", "truncated": good[: len(good) // 2],
                       "random": np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
                       "text": b"epochs: 3\n"}.items():  # fmt: skip
        p[f"ckpt_{name}"] = d / f"ckpt_{name}.pt"
        p[f"ckpt_{name}"].write_bytes(data)
    p["ckpt_foreign"] = d / "foreign.pt"
    torch.save({"model": tiny_mixste().state_dict(), "extra": [Payload(marker)]}, p["ckpt_foreign"])
    p["data"] = _write_h36m(d / "h36m")
    p["data_poison3d"] = _write_h36m(d / "poison3d", poison_3d=marker)
    p["data_poisonmeta"] = _write_h36m(d / "poisonmeta", poison_meta=marker)
    p["data_rawpickle"] = _write_h36m(d / "rawpickle")
    (p["data_rawpickle"] / "data_3d_h36m.npz").write_bytes(pickle.dumps(Payload(marker)))
    p["data_truncated"] = _write_h36m(d / "truncated")
    f3 = p["data_truncated"] / "data_3d_h36m.npz"
    f3.write_bytes(f3.read_bytes()[:300])
    p["empty_dir"] = d / "empty_dir"
    p["empty_dir"].mkdir()
    p["a_file"] = d / "a_file.txt"
    p["a_file"].write_text("x")
    # motion capture
    p["asf"], p["amc"] = CMU_ASF, CMU_AMC
    frames = "\n".join([_frame()] * 3 + [_frame(root=(10, 100, 0))]) + "\n"  # BVH says "Frames: 4"
    p["bvh"] = d / "walk.bvh"
    p["bvh"].write_text(BVH + frames)
    bad = {
        "bvh_letters": (BVH + frames).replace("OFFSET", "OFFSET abc", 1),
        "bvh_channel": (BVH + frames).replace("Zrotation", "Wrotation", 1),
        "bvh_motion": BVH + "abc" + frames[1:],
        "bvh_short": BVH + frames.splitlines()[0] + "\n",
        "bvh_binary": "\x00\x01garbage\x02",
    }
    for name, text in bad.items():
        p[name] = d / f"{name}.bvh"
        p[name].write_text(text)
    p["bvh_frames"] = d / "bvh_frames.bvh"
    p["bvh_frames"].write_text((BVH + frames).replace("Frames: 4", "Frames: x"))
    p["amc_letters"] = d / "letters.amc"
    p["amc_letters"].write_text(CMU_AMC.read_text().replace("lfemur ", "lfemur abc ", 1))
    p["asf_letters"] = d / "letters.asf"
    p["asf_letters"].write_text(CMU_ASF.read_text().replace("length ", "length abc ", 1))
    p["notes"] = d / "notes.txt"
    p["notes"].write_text("x")
    # keypoints for inference
    p["kp_poison"] = d / "kp_poison.npz"
    np.savez(p["kp_poison"], keypoints=np.array([Payload(marker)], dtype=object))
    p["kp_rawpickle"] = d / "kp_raw.npy"
    p["kp_rawpickle"].write_bytes(pickle.dumps(Payload(marker)))
    p["kp_corrupt"] = d / "kp_corrupt.npz"
    np.savez(p["kp_corrupt"], keypoints=np.zeros((4, 17, 2)))
    p["kp_corrupt"].write_bytes(p["kp_corrupt"].read_bytes()[:120])
    p["kp_ok"] = d / "kp_ok.npy"
    np.save(p["kp_ok"], np.random.default_rng(2).uniform(10, 90, (20, 17, 2)).astype(np.float32))
    far = np.random.default_rng(2).uniform(10, 90, (20, 17, 2)).astype(np.float32)
    far[3, 5] = 1e30  # one coordinate far outside a 100x100 image
    p["kp_far"] = d / "kp_far.npy"
    np.save(p["kp_far"], far)
    # a mocap corpus (fastmixste.data.mocap layout) with a payload in its clip names
    p["mocap_poison"] = d / "mocap_poison.npz"
    np.savez(p["mocap_poison"], names=np.array([Payload(marker)], dtype=object), fps=np.float64(50.0),
             clip_00000=np.zeros((20, 17, 3), np.float32))  # fmt: skip
    _second_sweep_inputs(d, p, frames)
    return {k: str(v) for k, v in p.items()}


class _HugeArray:
    """Unpickles as numpy's allowlisted array constructor asked for a 9 TiB array."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (10**13,), b"b"))


def _stored_config(d: Path, name: str, **config) -> Path:
    """A tiny checkpoint whose stored model config is changed (no model could be built from it)."""
    obj = read_checkpoint(d / "tiny.pt")
    obj["config"] = {**obj["config"], **config}
    torch.save(obj, d / name)
    return d / name


def _second_sweep_inputs(d: Path, p: dict[str, Path], bvh_frames: str) -> None:
    """Files of the second sweep: sizes stated by input, hostile headers, strange values (issue: nothing lost,
    no traceback)."""
    import json
    import zipfile

    # .npy header declaring (10^12, 17, 2) float64 with no data; an npz that inflates 1000x (a zip bomb)
    p["kp_huge_header"] = d / "kp_huge_header.npy"
    with open(p["kp_huge_header"], "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 17, 2)})
    p["kp_bomb"] = d / "kp_bomb.npz"
    with zipfile.ZipFile(p["kp_bomb"], "w", zipfile.ZIP_DEFLATED) as z, z.open("keypoints.npy", "w",
                                                                                   force_zip64=True) as m:
        n = 70 * 2**20 // 8
        buf = io.BytesIO()  # a (n,) float64 array of zeros, streamed into the member
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
        m.write(buf.getvalue())
        zeros = bytes(2**20)
        for _ in range(70):
            m.write(zeros)
    # keypoints: complex, text, a COCO file with width as a string, JSON nested 5000 deep; a FIFO
    rng = np.random.default_rng(3)
    kp = rng.uniform(10, 90, (20, 17, 2))
    p["kp_complex"] = d / "kp_complex.npy"
    np.save(p["kp_complex"], kp + 1j * kp)
    p["kp_text"] = d / "kp_text.npy"
    np.save(p["kp_text"], np.full((20, 17, 2), "abc"))
    p["kp_npz"] = d / "kp_ok.npz"
    np.savez(p["kp_npz"], keypoints=kp.astype(np.float32), width=np.float64(100), height=np.float64(100))
    p["user_npz"] = d / "my_results.npz"
    np.savez(p["user_npz"], mine=np.arange(3))
    p["user_png"] = d / "my_picture.png"
    p["user_png"].write_bytes(b"\x89PNG not really")
    (d / "my_animation.gif").write_bytes(b"GIF89a the user's animation")
    anns = [{"image_id": t, "keypoints": [float(v) for xy in kp[t] for v in (*xy, 1.0)]} for t in range(20)]
    images = [{"id": t, "file_name": f"{t:04d}.jpg", "width": "640", "height": 480} for t in range(20)]
    p["coco_width_text"] = d / "coco_width_text.json"
    p["coco_width_text"].write_text(json.dumps({"images": images, "annotations": anns}))
    p["json_deep"] = d / "deep.json"
    p["json_deep"].write_text('{"annotations": ' + "[" * 5000 + "]" * 5000 + "}")
    p["fifo"] = d / "keypoints_fifo.npy"
    if hasattr(os, "mkfifo"):
        os.mkfifo(p["fifo"])
    # checkpoints: a 9 TiB allowlisted array, absurd stored configs, NaN weights, weights whose output overflows
    p["ckpt_huge_array"] = d / "ckpt_huge_array.pt"
    torch.save({"model": {}, "x": _HugeArray()}, p["ckpt_huge_array"])
    p["ckpt_num_frame_huge"] = _stored_config(d, "ckpt_num_frame_huge.pt", num_frame=10**12)
    p["ckpt_mlp_inf"] = _stored_config(d, "ckpt_mlp_inf.pt", mlp_ratio=float("inf"))
    nan_model, big_model = tiny_mixste(), tiny_mixste()
    with torch.no_grad():
        nan_model.head[1].weight[0, 0] = float("nan")
        big_model.head[1].weight.fill_(3e38)  # finite, but every output overflows to inf
    p["ckpt_nan"] = save_checkpoint(d / "ckpt_nan.pt", nan_model)
    p["ckpt_overflow"] = save_checkpoint(d / "ckpt_overflow.pt", big_model)
    # motion capture: a BVH at 1e-5 fps; a corpus at 1e300 fps
    p["bvh_slow"] = d / "slow.bvh"
    assert "Frame Time: 0.0083333" in BVH
    p["bvh_slow"].write_text((BVH + bvh_frames).replace("Frame Time: 0.0083333", "Frame Time: 100000"))
    p["mocap_fps_absurd"] = d / "mocap_fps.npz"
    from fastmixste.data.mocap import save_mocap_npz

    save_mocap_npz(p["mocap_fps_absurd"], {"walk": np.zeros((40, 17, 3), np.float32)}, 1e300)
    # configs: a syntax error, a tab, 20,000 levels of nesting, an alias bomb
    p["cfg_syntax"] = d / "cfg_syntax.yaml"
    p["cfg_syntax"].write_text("train:\n  epochs: [1, 2\n")
    p["cfg_tab"] = d / "cfg_tab.yaml"
    p["cfg_tab"].write_text("train:\n\tepochs: 1\n")
    p["cfg_deep"] = d / "cfg_deep.yaml"
    p["cfg_deep"].write_text("train: " + "[" * 20000 + "]" * 20000 + "\n")
    p["cfg_alias"] = d / "cfg_alias.yaml"
    p["cfg_alias"].write_text('a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
                              + "".join(f"{c}: &{c} [{', '.join(['*' + chr(ord(c) - 1)] * 9)}]\n" for c in "bcdefghi"))
    # results.json of the user's in a folder given to train.evaluate --out
    p["user_results"] = d / "user_results"
    p["user_results"].mkdir()
    (p["user_results"] / "results.json").write_text('{"mine": true}\n')


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, builtin_dir) -> dict[str, str]:
    """A finished tiny train.run (one step) on the built-in data, a folder locked by a live process (this one),
    and the session's built-in data cache (rows that load it use it instead of generating a private copy)."""
    import json
    import socket

    from train.run import main as run_main

    d = tmp_path_factory.mktemp("trained_run")
    cache = builtin_dir.parent
    assert run_main(["--out", str(d / "run"), *RUN_TINY, "--stage", "finetune", "--epochs", "1", "--max-steps",
                     "1"]) == 0  # fmt: skip
    (d / "locked").mkdir()
    (d / "locked" / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                      "started": "2026-01-01T00:00:00+00:00"}))  # fmt: skip
    (d / "huge_pid").mkdir()
    (d / "huge_pid" / "run.lock").write_text(json.dumps({"pid": 10**20, "host": socket.gethostname()}))
    # A file of the user's in the run's checkpoints folder: no command may touch it (--overwrite included).
    (d / "run" / "checkpoints" / "my_weights.pt").write_bytes(b"the user's own weights")
    # Resume points that must be refused: another run's, one with a wrong-size RNG state, one with NaN weights.
    last = torch.load(d / "run" / "checkpoints" / "last.pt", weights_only=False)
    other = {**last, "run_config": {**last["run_config"], "run_id": "run-000000000000"}}
    torch.save(other, d / "other_run_last.pt")
    bad_rng = {**last, "rng": {**last["rng"], "torch": torch.zeros(10, dtype=torch.uint8)}}
    torch.save(bad_rng, d / "bad_rng_last.pt")
    nan = {**last, "model": {k: v.clone() for k, v in last["model"].items()}}
    nan["model"]["head.1.weight"][0, 0] = float("nan")
    torch.save(nan, d / "nan_last.pt")
    return {"run": str(d / "run"), "locked": str(d / "locked"), "cache": str(cache), "pid": str(os.getpid()),
            "huge_pid": str(d / "huge_pid"), "other_run_last": str(d / "other_run_last.pt"),
            "bad_rng_last": str(d / "bad_rng_last.pt"), "nan_last": str(d / "nan_last.pt")}


@pytest.fixture(scope="module")
def runner():
    r = CliRunner()
    yield r
    r.close()


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


# -------------------------------------------------------------------------------------------------- API rows
@dataclass
class Api:
    id: str
    call: Callable[[dict[str, str]], object]
    exception: type[BaseException]
    phrase: str


API_CASES: list[Api] = [
    Api("positions-3d-poisoned", lambda p: load_positions_3d(p["data_poison3d"] + "/data_3d_h36m.npz"),
        UnsafeFileError, "refusing to unpickle"),
    Api("positions-2d-metadata-poisoned",
        lambda p: load_positions_2d(p["data_poisonmeta"] + "/data_2d_h36m_cpn_ft_h36m_dbb.npz"),
        UnsafeFileError, "'metadata']: refusing"),
    Api("h36m-raw-pickle", lambda p: load_h36m(p["data_rawpickle"]), DataFileError, "raw Python pickle"),
    Api("h36m-truncated", lambda p: load_h36m(p["data_truncated"]), CorruptFileError, "is corrupt or truncated"),
    Api("h36m-missing", lambda p: load_h36m(p["empty_dir"]), FileNotFoundError, "Human3.6M file(s) not found"),
    Api("checkpoint-empty", lambda p: read_checkpoint(p["ckpt_empty"]), CheckpointError, "is empty"),
    Api("checkpoint-truncated", lambda p: load_checkpoint(p["ckpt_truncated"]), CheckpointError, "truncated"),
    Api("checkpoint-foreign", lambda p: load_checkpoint(p["ckpt_foreign"]), CheckpointError, "allowlist"),
    Api("checkpoint-heads-conflict", lambda p: load_checkpoint(p["ckpt"], num_heads=8), CheckpointError,
        "stores num_heads=2"),
    Api("keypoints-poisoned", lambda p: read_keypoints(p["kp_poison"], "h36m"), KeypointError, "refusing"),
    Api("keypoints-raw-pickle", lambda p: read_keypoints(p["kp_rawpickle"], "h36m"), KeypointError, "raw Python"),
    Api("mocap-corpus-not-a-corpus", lambda p: load_mocap_npz(p["data"] + "/data_3d_h36m.npz"), KeyError,
        "not a fastmixste mocap corpus"),
    Api("bvh-letters", lambda p: read_bvh(p["bvh_letters"]), ValueError, "expected a number, got 'abc'"),
    Api("asf-letters", lambda p: read_asf_amc(p["asf_letters"], p["amc"]), ValueError, "line"),
]  # fmt: skip


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_row(case: Api, inputs):
    with pytest.raises(case.exception) as info:
        case.call(inputs)
    assert case.phrase in str(info.value)
    assert not Path(inputs["marker"]).exists(), "a hostile file ran its payload"


# ------------------------------------------------------------------------------------------ the error boundary
def test_run_cli_exit_codes_and_messages(capsys):
    def raiser(exc: BaseException) -> Callable[[list[str]], int]:
        def main(argv: list[str]) -> int:
            raise exc

        return main

    cases = [
        (UserInputError("--x must be > 0, got -1"), EXIT_USAGE, "error: --x must be > 0, got -1"),
        (FileNotFoundError(2, "No such file or directory", "/no/file"), EXIT_USAGE,
         "error: No such file or directory: /no/file"),
        (PermissionError(13, "Permission denied", "/out/x.json"), EXIT_USAGE, "Permission denied: /out/x.json"),
        (KeyError("data.npz: missing key 'x'"), EXIT_FAILED, "Traceback"),  # a bare KeyError is a bug
        (CheckpointError("ck.pt is empty"), EXIT_USAGE, "error: ck.pt is empty"),
        (RunFailed("loss became NaN at epoch 3"), EXIT_FAILED, "error: loss became NaN at epoch 3"),
        (ZeroDivisionError("division by zero"), EXIT_FAILED, "a bug in fastmixste"),
        (ValueError("what came:\n  a: x\n  b: y"), EXIT_USAGE, "error: what came:\na: x; b: y\n"),
        (ValueError("x" * 3000), EXIT_USAGE, "[...; --debug shows all]"),
        (MemoryError("Unable to allocate 72.0 TiB for an array with shape (10000000000000,)"), EXIT_USAGE,
         "error: out of memory: Unable to allocate 72.0 TiB for an array with shape (10000000000000,)"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8000000000000 bytes"),
         EXIT_USAGE, "error: out of memory: DefaultCPUAllocator: can't allocate memory"),
    ]  # fmt: skip
    for exc, code, phrase in cases:
        assert run_cli(raiser(exc), []) == code, exc
        err = capsys.readouterr().err
        assert phrase in err, (exc, err)
        if code == EXIT_USAGE or isinstance(exc, RunFailed):
            assert "Traceback" not in err
    assert run_cli(lambda argv: None, []) == 0 and run_cli(lambda argv: 3, []) == 3
    seen = []
    assert run_cli(lambda argv: seen.append(argv), ["a", "--debug", "b"]) == 0 and seen == [["a", "b"]]


def test_ctrl_c_runs_save_hooks_and_exits_130(tmp_path, runner):
    """A real SIGINT to a CLI process: the hook saves, one short line, exit 130, no traceback."""
    saved = tmp_path / "last.pt"
    r = runner.run("tests.cli_interrupt_probe", [str(saved)])
    assert r.returncode == EXIT_INTERRUPTED, r.stderr
    assert r.stderr.strip() == f"interrupted (Ctrl-C); saved a resumable checkpoint to {saved}"
    assert saved.read_text() == "checkpoint"


# ---------------------------------------------------------------------------------------------------------------
# Silent wrong results that now fail loudly or are corrected with a note
# ---------------------------------------------------------------------------------------------------------------


def test_one_far_outside_coordinate_is_treated_as_missing_with_a_note(inputs) -> None:
    from fastmixste.video.keypoints import load_keypoints

    kps = load_keypoints(inputs["kp_far"], "h36m", width=100, height=100)
    assert np.isfinite(kps.pose).all() and np.abs(kps.pose).max() < 200  # filled, not 1e30
    assert kps.filled[3].any()
    assert any("1 of 340 keypoints lie more than one image size outside the 100x100 image" in n
               for n in kps.meta["notes"])


def test_model_input_with_one_nan_is_refused_naming_where() -> None:
    import torch


    model = MixSTE(num_frame=9, embed_dim_ratio=32, depth=1, num_heads=2).eval()
    x = torch.randn(2, 9, 17, 2)
    x[1, 4, 7, 0] = float("nan")
    with pytest.raises(ValueError, match=r"1 NaN/inf values \(first at batch 1, frame 4, joint 7\)"):
        model(x)


def test_h36m_3d_in_millimetres_or_with_an_unknown_action_is_refused(tmp_path) -> None:
    from fastmixste.data.h36m import load_positions_3d
    from tests.data.conftest import make_vp3d_data, write_vp3d

    p3, _, _ = make_vp3d_data()
    subject = next(iter(p3))
    mm = {s: {a: v * 1000.0 for a, v in takes.items()} for s, takes in p3.items()}
    with pytest.raises(ValueError, match="look like millimetres .* divide by 1000"):
        load_positions_3d(write_vp3d(tmp_path / "mm.npz", mm))
    odd = {s: dict(takes) for s, takes in p3.items()}
    odd[subject]["Dancing 1"] = next(iter(p3[subject].values()))
    with pytest.raises(ValueError, match=r"unknown Human3.6M action 'Dancing 1'"):
        load_positions_3d(write_vp3d(tmp_path / "odd.npz", odd))


def test_mp4_render_without_encoder_never_replaces_an_existing_gif(tmp_path, monkeypatch) -> None:
    """--render pose.mp4 falls back to pose.gif without an MP4 encoder: a pose.gif already there stays untouched
    unless the caller allows replacing it; an allowed render is written atomically (no temporary file left)."""
    from matplotlib import animation

    from fastmixste.eval.plots import render_pose

    monkeypatch.setattr(animation.writers, "is_available", lambda name: False)
    rng = np.random.default_rng(0)
    pose_2d, pose_3d = rng.uniform(10, 90, (3, 17, 2)), rng.normal(size=(3, 17, 3))
    gif = tmp_path / "pose.gif"
    gif.write_bytes(b"the user's animation")
    with pytest.raises(ValueError, match="pose.gif, already exists"):
        render_pose(pose_2d, pose_3d, tmp_path / "pose.mp4", width=100, height=100, size=(200, 100))
    assert gif.read_bytes() == b"the user's animation"
    with pytest.warns(RuntimeWarning, match="writing .*pose.gif instead"):
        written = render_pose(pose_2d, pose_3d, tmp_path / "pose.mp4", width=100, height=100, size=(200, 100),
                              may_replace=lambda p: True)
    assert written == gif and gif.read_bytes()[:6] == b"GIF89a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pose.gif"]


def test_failed_render_leaves_the_previous_file(tmp_path, monkeypatch) -> None:
    """A render that fails half-way (disk full) leaves the file that was there and no partial file."""
    from matplotlib import animation

    from fastmixste.eval.plots import render_pose

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(animation.PillowWriter, "finish", disk_full)
    rng = np.random.default_rng(0)
    out = tmp_path / "pose.gif"
    out.write_bytes(b"previous render")
    with pytest.raises(OSError, match="No space left"):
        render_pose(rng.uniform(10, 90, (3, 17, 2)), rng.normal(size=(3, 17, 3)), out, width=100, height=100,
                    size=(200, 100))
    assert out.read_bytes() == b"previous render" and sorted(p.name for p in tmp_path.iterdir()) == ["pose.gif"]


def test_sigterm_inside_run_cli_runs_the_save_hooks_and_exits_143(capsys) -> None:
    import signal

    from fastmixste.io.cli import EXIT_TERMINATED, defer_interrupts, interrupt_hook

    steps = []

    def main(argv):
        with interrupt_hook(lambda: f"saved after {len(steps)} steps"):
            with defer_interrupts():  # SIGTERM mid-step waits for the step to finish, like Ctrl-C
                signal.raise_signal(signal.SIGTERM)
                steps.append(1)
            steps.append(2)  # never reached

    assert run_cli(main, []) == EXIT_TERMINATED
    assert capsys.readouterr().err.strip() == "terminated (SIGTERM); saved after 1 steps"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
