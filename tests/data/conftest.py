"""Fixtures: small Human3.6M-format files written the way VideoPose3D writes them (the built-in dataset is
``builtin_dir`` in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastmixste.data.builtin import _to_32, detector_noise, generate_take
from fastmixste.data.cameras import h36m_cameras, project_to_2d, world_to_camera

METADATA = {
    "layout_name": "h36m",
    "num_joints": 17,
    "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]],
}
# (subject, take name, action generator, frames); 'Directions' of S11 is the take the protocol drops.
TAKES = [
    ("S1", "Walking", "Walking", 60),
    ("S1", "Walking 1", "Walking", 50),
    ("S1", "TakingPhoto", "Photo", 40),
    ("S9", "Directions", "Directions", 45),
    ("S9", "Sitting 1", "Sitting", 70),
    ("S11", "Directions", "Directions", 40),
    ("S11", "Directions 1", "Directions", 55),
]


def write_vp3d(
    path: Path, positions_3d: dict | None = None, positions_2d: dict | None = None, metadata: dict | None = None
) -> Path:
    """Write an npz with the keys VideoPose3D uses (pickled dicts in 0-d object arrays)."""
    arrays = {}
    if positions_3d is not None:
        arrays["positions_3d"] = np.array(positions_3d, dtype=object)
    if positions_2d is not None:
        arrays["positions_2d"] = np.array(positions_2d, dtype=object)
    if metadata is not None:
        arrays["metadata"] = np.array(metadata, dtype=object)
    np.savez_compressed(path, **arrays)
    return path


def make_vp3d_data() -> tuple[dict, dict, dict]:
    """(positions_3d 32 joints, CPN-like 2D with a few extra frames, exact 2D) for TAKES."""
    p3, cpn, gt = {}, {}, {}
    rng = np.random.default_rng(0)
    for subject, name, action, T in TAKES:
        world = generate_take(subject, action, 0, T=T)
        p3.setdefault(subject, {})[name] = _to_32(world).astype(np.float32)
        cpn_l, gt_l = [], []
        for cam in h36m_cameras(subject):
            X = world_to_camera(world, cam.R, cam.translation)
            px = project_to_2d(X, cam, pixels=True)
            gt_l.append(px.astype(np.float32))
            longer = np.concatenate([px, px[-3:]])  # detections running 3 frames past the mocap
            depth = np.concatenate([X[:, 0, 2], X[-3:, 0, 2]])
            cpn_l.append(detector_noise(rng, longer, depth).astype(np.float32))
        cpn.setdefault(subject, {})[name] = cpn_l
        gt.setdefault(subject, {})[name] = gt_l
    return p3, cpn, gt


@pytest.fixture(scope="session")
def vp3d_data() -> tuple[dict, dict, dict]:
    return make_vp3d_data()


@pytest.fixture(scope="session")
def vp3d_dir(tmp_path_factory, vp3d_data) -> Path:
    """A directory with data_3d_h36m.npz, data_2d_h36m_cpn_ft_h36m_dbb.npz and data_2d_h36m_gt.npz."""
    d = tmp_path_factory.mktemp("h36m")
    p3, cpn, gt = vp3d_data
    write_vp3d(d / "data_3d_h36m.npz", positions_3d=p3)
    write_vp3d(d / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d=cpn, metadata=METADATA)
    write_vp3d(d / "data_2d_h36m_gt.npz", positions_2d=gt, metadata=METADATA)
    return d

