"""The bad-input matrix: every row is a bad (or hostile) input, the exit code it must give and a phrase its
message must contain; no row may print a traceback, and no hostile file may run its payload.

CLI rows run ``python -m <module> <argv>`` in their own process (tests/cli_runner.py forks them from one
preloaded interpreter; FASTMIXSTE_FRESH_CLI=1 starts a fresh interpreter per row). API rows call a library
function in-process and expect an exception type and phrase.

Adding a row: append ``Cli(id, module, argv, code, phrase)`` to CLI_CASES, with ``{name}`` placeholders for the
files built in ``inputs`` (add a file there if needed), or ``Api(id, call, exception, phrase)`` to API_CASES.
"""

from __future__ import annotations

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
from fastmixste.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, RunFailed, UserInputError, run_cli
from fastmixste.data.h36m import load_h36m, load_positions_2d, load_positions_3d
from fastmixste.data.mocap import load_mocap_npz, read_asf_amc, read_bvh
from fastmixste.keypoints import KeypointError, read_keypoints
from fastmixste.safeload import CorruptFileError, DataFileError, UnsafeFileError
from fastmixste.skeleton import H36M_LEFT, H36M_RIGHT
from tests.cli_runner import REPO, CliRunner
from tests.data.test_mocap import BVH, CMU_AMC, CMU_ASF, _frame

TINY = {"num_frame": 9, "embed_dim_ratio": 32, "depth": 1, "num_heads": 2, "drop_path_rate": 0.0}
EVAL, MOCAP, INFER = "train.evaluate", "fastmixste.data.mocap", "train.infer"


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


def _tiny_model(**overrides) -> MixSTE:
    torch.manual_seed(0)
    return MixSTE(**{**TINY, "attn_backend": "eager", **overrides}).eval()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Every file the rows refer to, by placeholder name; 'marker' must never come to exist."""
    d = tmp_path_factory.mktemp("bad_input")
    marker = d / "PAYLOAD_RAN"
    p: dict[str, Path] = {"tmp": d, "marker": marker}
    p["ckpt"] = save_checkpoint(d / "tiny.pt", _tiny_model())
    p["ckpt_in3"] = save_checkpoint(d / "in3.pt", _tiny_model(in_chans=3))
    good = p["ckpt"].read_bytes()
    for name, data in {"empty": b"", "truncated": good[: len(good) // 2],
                       "random": np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
                       "text": b"epochs: 3\n"}.items():  # fmt: skip
        p[f"ckpt_{name}"] = d / f"ckpt_{name}.pt"
        p[f"ckpt_{name}"].write_bytes(data)
    p["ckpt_foreign"] = d / "foreign.pt"
    torch.save({"model": _tiny_model().state_dict(), "extra": [Payload(marker)]}, p["ckpt_foreign"])
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
    return {k: str(v) for k, v in p.items()}


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


E = ["--checkpoint", "{ckpt}", "--data-dir", "{data}", "--no-progress"]  # a working train.evaluate command
M = ["{asf}", "{amc}", "--out", "{tmp}/corpus.npz"]  # a working mocap import

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
    Cli("mocap-unsupported-file", MOCAP, ["{notes}", "--out", "{tmp}/c.npz"], 2, "unsupported file type '.txt'"),
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
]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_row(case: Cli, inputs, runner):
    if case.skip_if is not None and case.skip_if():
        pytest.skip("not applicable on this machine")
    argv = [a.format(**inputs) for a in case.argv]
    env = {"FASTMIXSTE_CACHE": str(Path(inputs["tmp"]) / "cache"), "FASTMIXSTE_DEBUG": "0", **case.env}
    r = runner.run(case.module, argv, env=env)
    phrase = case.phrase.format(**inputs)
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
