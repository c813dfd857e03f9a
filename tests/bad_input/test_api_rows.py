"""The bad-input matrix's API rows, the CLI error boundary, and the loud-result checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmixste import CheckpointError, MixSTE, load_checkpoint, read_checkpoint
from fastmixste.data.h36m import load_h36m, load_positions_2d, load_positions_3d
from fastmixste.data.mocap import load_mocap_npz
from fastmixste.data.mocap_formats import read_asf_amc, read_bvh
from fastmixste.io.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, RunFailed, UserInputError, run_cli
from fastmixste.io.safeload import CorruptFileError, DataFileError, UnsafeFileError
from fastmixste.video.keypoints import KeypointError, read_keypoints


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
