"""python -m train.evaluate and python -m train.infer end to end on small files made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastmixste import save_checkpoint
from fastmixste.data.h36m import TEST_SUBJECTS, load_h36m
from fastmixste.data.motion import HELDOUT_PATTERNS, heldout_sequences
from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT
from fastmixste.eval.evaluation import evaluate, evaluate_heldout
from train import evaluate as evaluate_cli
from train import infer as infer_cli

from .conftest import tiny_mixste


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny_mixste())
    return path


def write_h36m(folder, subjects=("S1", "S9", "S11"), actions=("Walking", "Eating 1", "Directions"), seed=0):
    """Tiny VideoPose3D-format data_3d_h36m.npz / data_2d_h36m_cpn_ft_h36m_dbb.npz."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pos3d, pos2d = {}, {}
    for s in subjects:
        pos3d[s], pos2d[s] = {}, {}
        for i, a in enumerate(actions):
            t = 7 + 5 * i
            world = rng.normal(scale=0.3, size=(1, 17, 3)) + np.cumsum(rng.normal(scale=0.01, size=(t, 17, 3)), 0)
            world[..., 2] += 1.0
            pos3d[s][a] = world.astype(np.float32)
            pos2d[s][a] = [rng.uniform(100, 900, size=(t + 2, 17, 2)).astype(np.float32) for _ in range(4)]
    meta = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [H36M_LEFT, H36M_RIGHT]}
    np.savez(folder / "data_3d_h36m.npz", positions_3d=np.array(pos3d, dtype=object))
    np.savez(folder / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d=np.array(pos2d, dtype=object),
             metadata=np.array(meta, dtype=object))
    return folder


@pytest.mark.slow
def test_evaluate_cli(tmp_path, checkpoint, capsys):
    data_dir = write_h36m(tmp_path / "h36m")
    rc = evaluate_cli.main(["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--out",
                            str(tmp_path / "out"), "--no-progress", "--backend", "eager", "--heldout-clips", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Protocol #1 (MPJPE)" in printed and "Protocol #2 (P-MPJPE)" in printed and "sequences/s" in printed
    assert "Held-out motion" in printed and "Speed ratio" in printed
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # The held-out motion set: the same clips and numbers as the library call a training run makes.
    mean_pose = np.concatenate([s.pose_3d for s in load_h36m(data_dir).sequences(["S1"])]).mean(0)
    direct_heldout = evaluate_heldout(tiny_mixste(), heldout_sequences(clips_per_pattern=1), mean_pose)
    heldout = results["heldout"]
    assert sorted(heldout["protocol1"]) == sorted([*HELDOUT_PATTERNS, "Avg"])
    assert heldout["num_sequences"] == len(HELDOUT_PATTERNS) * 4  # one clip per pattern x S9's four cameras
    for key, value in direct_heldout["protocol1"].items():
        assert heldout["protocol1"][key] == pytest.approx(value, rel=1e-6)
    assert heldout["speed_ratio"] == pytest.approx(direct_heldout["speed_ratio"], rel=1e-6)
    assert heldout["baseline_mpjpe"] == pytest.approx(direct_heldout["baseline_mpjpe"], rel=1e-6)
    assert (tmp_path / "out" / "results.md").read_text().startswith("## tiny.pt (eager, flip on)")
    # Same numbers as the library call on the same sequences (S11 Directions dropped: 5 takes x 4 cameras).
    sequences = load_h36m(data_dir).sequences(TEST_SUBJECTS)
    assert results["num_sequences"] == len(sequences) == 20
    direct = evaluate(tiny_mixste(), sequences, progress=False)
    assert list(results["protocol1"]) == ["Directions", "Eating", "Walking", "Avg"]
    for key, value in direct.protocol1.items():
        assert results["protocol1"][key] == pytest.approx(value, rel=1e-6)
    assert results["mpjve"] == pytest.approx(direct.mpjve, rel=1e-6)
    assert results["baseline_mpjpe"] > 0

    rc = evaluate_cli.main(["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--no-flip",
                            "--no-baseline", "--no-progress", "--actions", "Walking", "--max-frames", "8",
                            "--heldout-clips", "0", "--out", str(tmp_path / "walk")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "flip off" in printed and "Held-out motion" not in printed
    walk = json.loads((tmp_path / "walk" / "results.json").read_text())
    assert "heldout" not in walk
    cropped = [s for s in sequences if s.action == "Walking"]
    for s in cropped:
        s.pose_2d, s.pose_3d = s.pose_2d[:8], s.pose_3d[:8]
    assert walk["protocol1"]["Walking"] == pytest.approx(
        evaluate(tiny_mixste(), cropped, flip=False, progress=False).protocol1["Walking"], rel=1e-6)


def test_evaluate_cli_upstream_checkpoint_same_numbers(tmp_path, checkpoint):
    data_dir = write_h36m(tmp_path / "h36m")
    upstream = tmp_path / "best_epoch.bin"  # upstream MixSTE layout: DataParallel prefixes, pickled RandomState
    torch.save({"epoch": 3, "lr": 4e-5, "random_state": np.random.RandomState(0), "optimizer": {},
                "model_pos": {"module." + k: v for k, v in tiny_mixste().state_dict().items()}}, upstream)
    for name, path, extra in (("ours", checkpoint, []), ("upstream", upstream, ["--num-heads", "2"])):
        assert evaluate_cli.main(["--checkpoint", str(path), "--data-dir", str(data_dir), "--out",
                                  str(tmp_path / name), "--no-progress", "--no-baseline", "--heldout-clips", "0"]
                                 + extra) == 0
    ours = json.loads((tmp_path / "ours" / "results.json").read_text())
    theirs = json.loads((tmp_path / "upstream" / "results.json").read_text())
    assert ours["protocol1"] == theirs["protocol1"] and ours["protocol2"] == theirs["protocol2"]


def test_evaluate_cli_rejects_mismatched_checkpoint(tmp_path, capsys):
    path = tmp_path / "conf.pt"
    save_checkpoint(path, tiny_mixste(in_chans=3))
    # The error boundary turns the refusal into exit code 2 and one line on stderr, before any data loads.
    assert evaluate_cli.main(["--checkpoint", str(path), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "in_chans=3" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="in_chans=3"):  # the undecorated main raises for library callers
        evaluate_cli.main.__wrapped__(["--checkpoint", str(path), "--data-dir", str(tmp_path)])


def test_evaluate_cli_checks_before_evaluating(tmp_path, checkpoint, capsys, monkeypatch):
    """Unknown actions, an unwritable --out, bad flags and a conflicting --num-heads fail before evaluate() runs."""
    data_dir = write_h36m(tmp_path / "h36m")
    monkeypatch.setattr(evaluate_cli, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking"))
    base = ["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--no-progress"]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases = [
        (["--actions", "Dancing"], "--subjects/--actions: unknown action(s) ['Dancing']"),
        (["--subjects", "S3"], "unknown subject 'S3'"),
        (["--out", str(blocker)], "is a file; expected a folder"),
        (["--out", str(blocker / "sub")], "cannot write there"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--max-frames", "-3"], "--max-frames must be >= 1, got -3"),
        (["--num-heads", "4"], "stores num_heads=2, but num_heads=4 was given (--num-heads)"),
        (["--device", "gpu"], "--device 'gpu' is not a device"),
        (["--heldout-clips", "-1"], "--heldout-clips must be >= 0 (0 skips the held-out set), got -1"),
    ]
    for extra, phrase in cases:
        assert evaluate_cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err, (extra, err)
    # --num-heads equal to the stored value is accepted (and the head count stays the stored one)
    monkeypatch.undo()
    assert evaluate_cli.main(base + ["--num-heads", "2", "--no-baseline", "--max-frames", "4",
                                     "--heldout-clips", "0"]) == 0
    assert "heads=2" in capsys.readouterr().err


def coco_walk(t: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    base = np.concatenate([rng.uniform(200, 700, (17, 2)), rng.uniform(0.6, 1.0, (17, 1))], axis=1)
    seq = np.repeat(base[None], t, axis=0)
    seq[:, :, 0] += np.arange(t)[:, None] * 2.0
    return seq


def test_infer_npy_any_length_with_render(tmp_path, checkpoint, capsys):
    seq = coco_walk(23)  # not a multiple of num_frame = 9
    seq[10, 9, 2] = 0.01  # one low-confidence joint
    np.save(tmp_path / "kp.npy", seq)
    out = tmp_path / "res" / "pose.npz"
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--keypoints", str(tmp_path / "kp.npy"), "--layout",
                         "coco", "--width", "1280", "--height", "720", "--out", str(out), "--render",
                         str(tmp_path / "frame.png")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "23 frames" in printed and "one person per frame" in printed
    with np.load(out) as z:
        pose = z["pose_3d"]
        meta = json.loads(str(z["meta"]))
        assert z["pose_2d"].shape == (23, 17, 2) and z["filled"].sum() == 1
    assert pose.shape == (23, 17, 3) and pose.dtype == np.float32 and np.isfinite(pose).all()
    np.testing.assert_array_equal(pose[:, 0], 0.0)
    assert meta["width"] == 1280 and meta["layout"] == "coco" and meta["num_frame"] == 9 and meta["flip"]
    assert Image.open(tmp_path / "frame.png").size == (1000, 500)


def test_infer_openpose_folder_to_gif(tmp_path, checkpoint):
    folder = tmp_path / "op"
    folder.mkdir()
    rng = np.random.default_rng(6)
    base = np.concatenate([rng.uniform(100, 500, (25, 2)), np.ones((25, 1))], axis=1)
    for t in range(12):
        person = base.copy()
        person[:, 0] += t
        people = [{"pose_keypoints_2d": person.reshape(-1).tolist()}]
        (folder / f"clip_{t:012d}_keypoints.json").write_text(json.dumps({"people": people}))
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--keypoints", str(folder), "--layout", "openpose",
                         "--width", "640", "--height", "480", "--out", str(tmp_path / "o.npz"), "--no-flip",
                         "--render", str(tmp_path / "clip.gif"), "--max-frames", "3"])
    assert rc == 0
    assert Image.open(tmp_path / "clip.gif").n_frames == 3
    with np.load(tmp_path / "o.npz") as z:
        assert z["pose_3d"].shape == (12, 17, 3)


def test_infer_bad_inputs(tmp_path, checkpoint, capsys):
    np.save(tmp_path / "kp2.npy", coco_walk(10)[..., :2])
    # an image that holds the walk (200-720 px): keypoints far outside the image are refused on their own
    base = ["--keypoints", str(tmp_path / "kp2.npy"), "--layout", "coco", "--width", "800", "--height", "800",
            "--out", str(tmp_path / "o.npz")]

    conf_ckpt = tmp_path / "conf.pt"
    save_checkpoint(conf_ckpt, tiny_mixste(in_chans=3))
    assert infer_cli.main(["--checkpoint", str(conf_ckpt)] + base) == 2
    assert "in_chans=3 (x, y, confidence) but" in capsys.readouterr().err

    joints_ckpt = tmp_path / "j16.pt"
    save_checkpoint(joints_ckpt, tiny_mixste(num_joints=16))
    assert infer_cli.main(["--checkpoint", str(joints_ckpt)] + base) == 2
    assert "num_joints=16" in capsys.readouterr().err

    np.save(tmp_path / "nan.npy", np.full((10, 17, 2), np.nan))
    bad = ["--checkpoint", str(checkpoint), "--keypoints", str(tmp_path / "nan.npy"), "--layout", "coco",
           "--width", "100", "--height", "100", "--out", str(tmp_path / "o.npz")]
    assert infer_cli.main(bad) == 2
    assert "no usable keypoints" in capsys.readouterr().err

    assert infer_cli.main(["--checkpoint", str(checkpoint)] + base[:-1] + [str(tmp_path / "o.txt")]) == 2
    assert "--out must end in .npz" in capsys.readouterr().err
    assert infer_cli.main(["--checkpoint", str(tmp_path / "missing.pt")] + base) == 2
    with pytest.raises(SystemExit):
        infer_cli.main(["--checkpoint", str(checkpoint), "--keypoints", "x.npy", "--layout", "mpii", "--out", "o.npz"])
    assert "invalid choice: 'mpii'" in capsys.readouterr().err


def test_infer_with_confidence_model(tmp_path):
    path = tmp_path / "conf.pt"
    save_checkpoint(path, tiny_mixste(in_chans=3))
    np.save(tmp_path / "kp3.npy", coco_walk(10))
    rc = infer_cli.main(["--checkpoint", str(path), "--keypoints", str(tmp_path / "kp3.npy"), "--layout", "coco",
                         "--width", "1000", "--height", "1000", "--out", str(tmp_path / "o.npz")])
    assert rc == 0
    with np.load(tmp_path / "o.npz") as z:
        assert z["pose_2d_normalized"].shape == (10, 17, 3)


def test_infer_mp4_without_encoder_says_so_and_writes_gif(tmp_path, checkpoint, capsys, monkeypatch):
    from matplotlib import animation

    monkeypatch.setattr(animation.writers, "is_available", lambda name: False)
    np.save(tmp_path / "kp.npy", coco_walk(4))
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--keypoints", str(tmp_path / "kp.npy"), "--layout",
                         "coco", "--width", "1000", "--height", "1000", "--out", str(tmp_path / "o.npz"),
                         "--render", str(tmp_path / "clip.mp4")])
    assert rc == 0
    captured = capsys.readouterr()
    assert "note: no ffmpeg encoder available" in captured.err and "clip.gif" in captured.out
    assert Image.open(tmp_path / "clip.gif").n_frames == 4
