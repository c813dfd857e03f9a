import json

import numpy as np
import pytest

from fastmixste.data import builtin
from fastmixste.data.builtin import FILES, builtin_data_dir, content_hash, generate_builtin, generate_take
from fastmixste.data.cameras import h36m_cameras, image_coordinates, project_to_2d, world_to_camera
from fastmixste.data.h36m import ACTIONS, TEST_SUBJECTS, TRAIN_SUBJECTS, load_h36m, load_positions_3d
from fastmixste.data.skeleton import bone_lengths
from fastmixste.io.safeload import read_npz


def test_files_and_layout(builtin_dir):
    assert builtin_dir.name == f"builtin-{builtin.BUILTIN_VERSION}"
    assert sorted(p.name for p in builtin_dir.iterdir()) == sorted([*FILES, "manifest.json"])  # no temp files
    data = load_h36m(builtin_dir)
    assert data.subjects == TRAIN_SUBJECTS + TEST_SUBJECTS
    for subject in data.subjects:
        names = data.actions(subject)
        assert sorted({n.split(" ")[0] for n in names}) == sorted(ACTIONS)
        assert len(names) == 30
    raw = read_npz(builtin_dir / "data_3d_h36m.npz")["positions_3d"].item()
    assert raw["S9"]["Walking 1"].shape[1:] == (32, 3) and raw["S9"]["Walking 1"].dtype == np.float32
    manifest = json.loads((builtin_dir / "manifest.json").read_text())
    assert manifest["fps"] == 50 and manifest["version"] == builtin.BUILTIN_VERSION
    # Per-action tables on the test subjects are full (S11 Directions is dropped, S9's remains).
    test = data.sequences(TEST_SUBJECTS)
    assert {s.action_group for s in test} == set(ACTIONS)


@pytest.mark.slow
def test_deterministic(builtin_dir):
    manifest = json.loads((builtin_dir / "manifest.json").read_text())
    pos3d, cpn, gt = generate_builtin()
    assert content_hash(pos3d) == manifest["sha256"][FILES[0]]
    assert content_hash(cpn) == manifest["sha256"][FILES[1]]
    assert content_hash(gt) == manifest["sha256"][FILES[2]]
    np.testing.assert_array_equal(generate_take("S5", "Greeting", 1), generate_take("S5", "Greeting", 1))
    assert not np.array_equal(generate_take("S5", "Greeting", 0), generate_take("S5", "Greeting", 1))


def test_cached_not_regenerated(builtin_dir, monkeypatch):
    mtimes = {f: (builtin_dir / f).stat().st_mtime_ns for f in FILES}
    monkeypatch.setattr(builtin, "generate_builtin", lambda: pytest.fail("regenerated a complete cache"))
    assert builtin_data_dir(builtin_dir.parent) == builtin_dir
    assert builtin_data_dir() == builtin_dir  # the default root is the session's cache (tests/conftest.py)
    assert {f: (builtin_dir / f).stat().st_mtime_ns for f in FILES} == mtimes


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTMIXSTE_CACHE", str(tmp_path))
    assert builtin.default_cache_root() == tmp_path
    monkeypatch.delenv("FASTMIXSTE_CACHE")
    assert builtin.default_cache_root().parts[-2:] == (".cache", "fastmixste")


def test_subjects_have_their_own_human_bone_lengths(builtin_dir):
    p3 = load_positions_3d(builtin_dir / "data_3d_h36m.npz")
    per_subject = []
    for takes in p3.values():
        b = np.concatenate([bone_lengths(x) for x in takes.values()])
        assert b.std(axis=0).max() < 1e-4  # rigid bones in every action
        per_subject.append(b.mean(axis=0))
        thigh, shin, upper_arm, forearm = b[0, 1], b[0, 2], b[0, 11], b[0, 12]
        assert 0.35 < thigh < 0.55 and 0.35 < shin < 0.55 and 0.22 < upper_arm < 0.36 and 0.18 < forearm < 0.32
        np.testing.assert_allclose(b[0, [0, 1, 2, 10, 11, 12]], b[0, [3, 4, 5, 13, 14, 15]], rtol=1e-5)  # float32
    per_subject = np.array(per_subject)
    assert np.ptp(per_subject[:, 1]) > 0.01  # the subjects differ


def test_motion_is_plausible(builtin_dir):
    p3 = load_positions_3d(builtin_dir / "data_3d_h36m.npz")
    speed = {a: [] for a in ACTIONS}
    pelvis = {a: [] for a in ACTIONS}
    for takes in p3.values():
        for name, x in takes.items():
            a = name.split(" ")[0]
            speed[a].append(np.linalg.norm(np.diff(x[:, 0, :2], axis=0), axis=-1).mean() * 50)
            pelvis[a].append(x[:, 0, 2].mean())
            feet = np.minimum(x[:, 3, 2], x[:, 6, 2])
            np.testing.assert_allclose(feet, builtin._ANKLE_HEIGHT, atol=1e-5)  # on the floor
            assert (x[:, 10, 2] > x[:, 0, 2]).all()  # head above the pelvis
            # within the cameras' reach, and no teleporting: joints move < 10 m/s
            assert np.linalg.norm(x[:, 0, :2] - builtin._CENTRE, axis=-1).max() < 3.0
            assert np.linalg.norm(np.diff(x, axis=0), axis=-1).max() * 50 < 10
    assert 1.1 < np.mean(speed["Walking"]) < 1.6 and np.mean(speed["Sitting"]) < 0.05
    assert np.mean(pelvis["Sitting"]) < 0.7 < np.mean(pelvis["Waiting"])
    assert len(set(builtin._GENERATORS.values())) >= 8


def test_2d_is_projection_plus_detector_error(builtin_dir):
    gt = load_h36m(builtin_dir, keypoints="gt")
    cpn = load_h36m(builtin_dir)
    err, lag1 = [], []
    for s in gt.sequences(["S6", "S11"], ["Walking", "Eating", "Posing"]):
        cam = h36m_cameras(s.subject)[s.camera]
        X = world_to_camera(s.world_3d.astype(np.float64), cam.R, cam.translation)
        np.testing.assert_allclose(project_to_2d(X, s.intrinsic.astype(np.float64)), s.pose_2d, atol=2e-5)
    for a, b in zip(gt.sequences(["S6", "S11"]), cpn.sequences(["S6", "S11"])):
        d = image_coordinates(b.pose_2d, b.res_w, b.res_h) - image_coordinates(a.pose_2d, a.res_w, a.res_h)
        err.append(np.linalg.norm(d, axis=-1))
        d = d[..., 0] - d[..., 0].mean(0)
        lag1.append((d[1:] * d[:-1]).sum() / (d * d).sum())
    e = np.concatenate(err)
    assert 3.0 < e.mean() < 9.0  # CPN-like pixel error
    assert 0.0005 < (e > 25).mean() < 0.02  # occasional outliers
    assert np.mean(lag1) > 0.3  # errors drift smoothly, not white noise
    wrist, pelvis = e[:, [13, 16]].mean(), e[:, 0].mean()
    assert wrist > 1.2 * pelvis  # per-joint noise levels
