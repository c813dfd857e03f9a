"""The bad-input matrix (this folder): every row is a bad (or hostile) input, the exit code it must give and a
phrase its message must contain; no row may print a traceback, and no hostile file may run its payload.

CLI rows run ``python -m <module> <argv>`` in their own process (tests/cli_runner.py forks them from one
preloaded interpreter; FASTMIXSTE_FRESH_CLI=1 starts a fresh interpreter per row). API rows call a library
function in-process and expect an exception type and phrase.

Files: the shared inputs and fixtures here (conftest.py registers the fixtures); CLI rows in test_cli_rows.py,
API rows and the error boundary in test_api_rows.py. Adding a row: append ``Cli(id, module, argv, code, phrase)`` to
CLI_CASES, with ``{name}`` placeholders for the files built in ``inputs`` (add a file there if needed), or
``Api(id, call, exception, phrase)`` to API_CASES.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmixste import read_checkpoint, save_checkpoint
from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT
from tests.cli_runner import CliRunner
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


