import numpy as np
import pytest

from fastmixste.data.cameras import camera_to_world, h36m_cameras, project_to_2d, world_to_camera
from fastmixste.data.h36m import (
    ACTIONS,
    TEST_SUBJECTS,
    TRAIN_SUBJECTS,
    action_group,
    load_h36m,
    load_positions_2d,
    load_positions_3d,
)
from fastmixste.data.skeleton import H36M_32_TO_17

from .conftest import METADATA, TAKES, write_vp3d


def test_protocol_constants():
    assert TRAIN_SUBJECTS == ["S1", "S5", "S6", "S7", "S8"] and TEST_SUBJECTS == ["S9", "S11"]
    assert len(ACTIONS) == len(set(ACTIONS)) == 15


@pytest.mark.parametrize(
    "name, group",
    [("Walking", "Walking"), ("Walking 1", "Walking"), ("WalkTogether 2", "WalkTogether"),
     ("TakingPhoto 1", "Photo"), ("WalkingDog", "WalkDog"), ("SittingDown 2", "SittingDown")],
)  # fmt: skip
def test_action_group(name, group):
    assert action_group(name) == group


def test_action_group_unknown():
    with pytest.raises(ValueError, match="Dancing"):
        action_group("Dancing 1")


def test_load_positions_3d_selects_17_joints(vp3d_dir, vp3d_data):
    p3 = load_positions_3d(vp3d_dir / "data_3d_h36m.npz")
    assert set(p3) == {"S1", "S9", "S11"}
    a = p3["S1"]["Walking"]
    assert a.shape == (60, 17, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, vp3d_data[0]["S1"]["Walking"][:, H36M_32_TO_17])


def test_load_positions_2d(vp3d_dir):
    p2, meta = load_positions_2d(vp3d_dir / "data_2d_h36m_cpn_ft_h36m_dbb.npz")
    assert meta["num_joints"] == 17 and meta["layout_name"] == "h36m"
    kp = p2["S9"]["Sitting 1"]
    assert len(kp) == 4 and all(k.shape == (73, 17, 2) and k.dtype == np.float32 for k in kp)


def test_sequences_protocol(vp3d_dir):
    data = load_h36m(vp3d_dir)
    test = data.sequences(TEST_SUBJECTS)
    takes = {(s.subject, s.action) for s in test}
    assert takes == {("S9", "Directions"), ("S9", "Sitting 1"), ("S11", "Directions 1")}  # S11 Directions dropped
    assert len(test) == 3 * 4 and sorted({s.camera for s in test}) == [0, 1, 2, 3]
    assert len(data.sequences(["S11"], drop_corrupted=False)) == 2 * 4
    for s in test:
        T = data.positions_3d[s.subject][s.action].shape[0]
        assert s.pose_2d.shape == (T, 17, 2) and s.pose_3d.shape == (T, 17, 3) and s.world_3d.shape == (T, 17, 3)
        assert s.pose_2d.dtype == s.pose_3d.dtype == np.float32
        assert np.all(s.pose_3d[:, 0] == 0)
        assert np.abs(s.pose_2d).max() < 1.2  # normalised screen coordinates
        assert (s.res_w, s.res_h) == [(1000, 1002), (1000, 1000), (1000, 1000), (1000, 1002)][s.camera]
    # Filtering by protocol action or by take name; the alias TakingPhoto belongs to Photo.
    assert {s.action for s in data.sequences(["S1"], ["Walking"])} == {"Walking", "Walking 1"}
    assert {s.action for s in data.sequences(["S1"], ["Walking 1"])} == {"Walking 1"}
    assert {s.action for s in data.sequences(["S1"], ["Photo"], cameras=[2])} == {"TakingPhoto"}
    assert data.sequences(["S1"], ["Photo"], cameras=[2])[0].action_group == "Photo"


def test_sequences_3d_are_camera_coordinates(vp3d_dir):
    data = load_h36m(vp3d_dir)
    for s in data.sequences(["S9"], ["Sitting"]):
        cam = data.cameras["S9"][s.camera]
        root = world_to_camera(s.world_3d[:, :1].astype(np.float64), cam.R, cam.translation)
        back = camera_to_world(s.pose_3d + root, cam.R, cam.translation)
        np.testing.assert_allclose(back, s.world_3d, atol=1e-5)


def test_camera_round_trip_matches_stored_2d(vp3d_dir):
    """Project the stored 3D with the published cameras and compare with the stored ground-truth 2D."""
    data = load_h36m(vp3d_dir, keypoints="gt")
    seqs = data.sequences(["S1", "S9", "S11"])
    assert len(seqs) == (len(TAKES) - 1) * 4
    for s in seqs:
        cam = h36m_cameras(s.subject)[s.camera]
        X = world_to_camera(s.world_3d.astype(np.float64), cam.R, cam.translation)
        np.testing.assert_allclose(project_to_2d(X, s.intrinsic.astype(np.float64)), s.pose_2d, atol=2e-5)


def test_cpn_longer_than_mocap_is_cut(vp3d_dir):
    data = load_h36m(vp3d_dir)
    assert data.positions_2d["S1"]["Walking"][0].shape[0] == 63
    s = data.sequences(["S1"], ["Walking 1"], cameras=[0])[0]
    assert len(s) == 50


# ------------------------------------------------------------------------------------------------- bad inputs
def test_missing_files_say_where_h36m_comes_from(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_h36m(tmp_path / "nowhere")
    msg = str(e.value)
    assert "vision.imar.ro" in msg and "data_3d_h36m.npz" in msg and "data_2d_h36m_cpn_ft_h36m_dbb.npz" in msg
    assert "builtin_data_dir" in msg
    with pytest.raises(FileNotFoundError, match="data_2d_h36m_gt.npz"):
        load_positions_2d(tmp_path / "data_2d_h36m_gt.npz")


def test_missing_key(tmp_path, vp3d_data):
    p = write_vp3d(tmp_path / "data_3d_h36m.npz", positions_2d=vp3d_data[1], metadata=METADATA)
    with pytest.raises(KeyError, match="positions_3d"):
        load_positions_3d(p)
    p = write_vp3d(tmp_path / "x.npz", positions_2d=vp3d_data[1])
    with pytest.raises(KeyError, match="metadata"):
        load_positions_2d(p)


def test_wrong_shapes_name_key_and_shape(tmp_path):
    p = write_vp3d(tmp_path / "a.npz", positions_3d={"S1": {"Walking": np.zeros((10, 32, 2), np.float32)}})
    with pytest.raises(ValueError, match=r"\['S1'\]\['Walking'\].*\(T, \*, 3\).*\(10, 32, 2\)"):
        load_positions_3d(p)
    p = write_vp3d(tmp_path / "b.npz", positions_3d={"S1": {"Walking": np.zeros((10, 20, 3), np.float32)}})
    with pytest.raises(ValueError, match=r"\(T, 32, 3\) or \(T, 17, 3\), got shape \(10, 20, 3\)"):
        load_positions_3d(p)
    kp = [np.zeros((10, 16, 2), np.float32)] * 4
    p = write_vp3d(tmp_path / "c.npz", positions_2d={"S9": {"Eating": kp}}, metadata=METADATA)
    with pytest.raises(ValueError, match=r"\['S9'\]\['Eating'\]\[0\].*\(T, 17, 2\), got shape \(10, 16, 2\)"):
        load_positions_2d(p)
    p = write_vp3d(tmp_path / "d.npz", positions_2d={"S9": {"Eating": kp[:3]}}, metadata=METADATA)
    with pytest.raises(ValueError, match="list of 4 per-camera arrays, got 3"):
        load_positions_2d(p)
    bad_meta = dict(METADATA, num_joints=16)
    p = write_vp3d(tmp_path / "e.npz", positions_2d={}, metadata=bad_meta)
    with pytest.raises(ValueError, match="num_joints'\\] must be 17, got 16"):
        load_positions_2d(p)


def test_nan_is_reported(tmp_path):
    a = np.zeros((10, 32, 3), np.float32)
    a[4, 7, 1] = np.nan
    p = write_vp3d(tmp_path / "a.npz", positions_3d={"S5": {"Eating 2": a}})
    with pytest.raises(ValueError, match=r"\['S5'\]\['Eating 2'\].*NaN.*\(4, 7, 1\)"):
        load_positions_3d(p)


def test_unknown_subject_and_action(vp3d_dir):
    data = load_h36m(vp3d_dir)
    with pytest.raises(ValueError, match="unknown subject 'S3'"):
        data.sequences(["S3"])
    with pytest.raises(ValueError, match="Dancing"):
        data.sequences(["S1"], ["Dancing"])
    with pytest.raises(ValueError, match="camera index"):
        data.sequences(["S1"], cameras=[4])


def test_2d_shorter_than_3d(tmp_path, vp3d_data):
    p3, cpn, _ = vp3d_data
    short = {"S1": {"Walking": [k[:20] for k in cpn["S1"]["Walking"]]}}
    write_vp3d(tmp_path / "data_3d_h36m.npz", positions_3d={"S1": {"Walking": p3["S1"]["Walking"]}})
    write_vp3d(tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d=short, metadata=METADATA)
    with pytest.raises(ValueError, match="2D has 20 frames, fewer than the 60"):
        load_h36m(tmp_path).sequences(["S1"])


def test_3d_take_without_2d(tmp_path, vp3d_data):
    p3, cpn, _ = vp3d_data
    write_vp3d(tmp_path / "data_3d_h36m.npz", positions_3d={"S1": p3["S1"]})
    write_vp3d(tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d={"S1": {}}, metadata=METADATA)
    with pytest.raises(KeyError, match="no 2D keypoints for S1/'Walking'"):
        load_h36m(tmp_path)


def test_not_an_npz(tmp_path):
    p = tmp_path / "data_3d_h36m.npz"
    p.write_text("hello")
    with pytest.raises(ValueError, match="not a readable npz"):
        load_positions_3d(p)


def test_package_exports():
    import fastmixste.data as data

    for name in data.__all__:
        assert getattr(data, name) is not None
    assert data.load_h36m is load_h36m
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        data.nope  # noqa: B018
