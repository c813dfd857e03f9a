"""train.infer's camera-space output: the root trajectory solved from the lifted pose and its 2D."""

import json
from types import SimpleNamespace

import numpy as np

from fastmixste import save_checkpoint
from fastmixste.video.trajectory import default_intrinsics
from train import infer as infer_cli
from train.infer import camera_space

from .conftest import tiny_mixste
from .test_cli import coco_walk


def _pose(t: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    pose = rng.normal(scale=0.25, size=(t, 17, 3))
    return pose - pose[:, :1]


def test_camera_space_recovers_a_walk_across_the_image():
    t, w, h = 40, 1088.0, 1920.0
    pose = _pose(t)
    root = np.stack([np.linspace(-0.8, 0.8, t), np.full(t, 0.3), np.linspace(3.0, 4.5, t)], axis=1)
    focal, (cx, cy) = default_intrinsics(w, h, 60.0)
    cam = pose + root[:, None]
    px = np.stack([focal * cam[..., 0] / cam[..., 2] + cx, focal * cam[..., 1] / cam[..., 2] + cy], -1)
    kps = SimpleNamespace(pose=px, width=w, height=h, confidence=np.ones((t, 17)), filled=np.zeros((t, 17), bool))
    got, intr = camera_space(pose, kps, 60.0)
    assert got.shape == (t, 3) and intr["focal_px"] == focal and intr["assumed"]
    # Smoothing (sigma 2 frames) bends a straight line only at its ends: the inner frames are exact to 1 mm; at an
    # end the one-sided average lags by at most the slope x sigma x sqrt(2 / pi) (a half-Gaussian's mean offset).
    np.testing.assert_allclose(got[5:-5], root[5:-5], atol=1e-3)
    slope = np.abs(np.diff(root, axis=0)).max(0)
    assert (np.abs(got - root).max(0) <= slope * 2.0 * np.sqrt(2 / np.pi) + 1e-3).all()


def test_infer_writes_the_trajectory_and_the_camera_frame_pose(tmp_path):
    save_checkpoint(tmp_path / "tiny.pt", tiny_mixste())
    np.save(tmp_path / "kp.npy", coco_walk(15))
    out = tmp_path / "pose.npz"
    rc = infer_cli.main(["--checkpoint", str(tmp_path / "tiny.pt"), "--keypoints", str(tmp_path / "kp.npy"),
                         "--layout", "coco", "--width", "1280", "--height", "720", "--out", str(out), "--fov", "50"])
    assert rc == 0
    with np.load(out) as z:
        pose, root, both = z["pose_3d"], z["root_trajectory"], z["pose_3d_camera"]
        meta = json.loads(str(z["meta"]))
    assert root.shape == (15, 3) and np.isfinite(root).all()
    np.testing.assert_allclose(both, pose + root[:, None], atol=1e-6)
    assert meta["intrinsics"]["fov_degrees"] == 50.0
    assert infer_cli.main(["--checkpoint", str(tmp_path / "tiny.pt"), "--keypoints", str(tmp_path / "kp.npy"),
                           "--layout", "coco", "--width", "1280", "--height", "720", "--out",
                           str(tmp_path / "b.npz"), "--fov", "0"]) == 2
