"""Keypoint inputs: every reader on small files, layout conversions, gap filling, person picking, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastmixste.data.skeleton import H36M_JOINT_NAMES
from fastmixste.video.keypoints import (
    BLAZEPOSE_JOINT_NAMES,
    COCO_JOINT_NAMES,
    HALPE_JOINT_NAMES,
    KeypointError,
    blazepose_to_coco,
    fill_gaps,
    from_array,
    halpe_to_coco,
    load_keypoints,
    normalize_screen,
    pick_person,
    read_keypoints,
    to_h36m,
)


def distinct_points(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3): distinct x, y in pixels, distinct confidences in (0.5, 1)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(50, 900, (n, 2)), rng.uniform(0.5, 1.0, (n, 1))], axis=1)


def h(name: str) -> int:
    return H36M_JOINT_NAMES.index(name)


def test_coco_to_h36m_mapping():
    c = distinct_points(17)
    out = to_h36m(c, "coco")
    mid = lambda a, b: (c[a, :2] + c[b, :2]) / 2
    np.testing.assert_allclose(out[h("pelvis"), :2], mid(11, 12))
    np.testing.assert_allclose(out[h("thorax"), :2], mid(5, 6))
    np.testing.assert_allclose(out[h("spine"), :2], (mid(11, 12) + mid(5, 6)) / 2)
    np.testing.assert_allclose(out[h("neck_nose"), :2], c[0, :2])
    np.testing.assert_allclose(out[h("head"), :2], mid(1, 2))
    pairs = {"r_hip": 12, "r_knee": 14, "r_ankle": 16, "l_hip": 11, "l_knee": 13, "l_ankle": 15,
             "l_shoulder": 5, "l_elbow": 7, "l_wrist": 9, "r_shoulder": 6, "r_elbow": 8, "r_wrist": 10}
    for name, src in pairs.items():
        np.testing.assert_allclose(out[h(name)], c[src], err_msg=name)
    assert out[h("pelvis"), 2] == min(c[11, 2], c[12, 2])  # a midpoint is as good as its worst end
    assert out[h("spine"), 2] == min(c[11, 2], c[12, 2], c[5, 2], c[6, 2])


def test_openpose_to_h36m_mapping():
    c = distinct_points(25)
    out = to_h36m(c[None, None], "openpose")[0, 0]  # leading axes are kept
    np.testing.assert_allclose(out[h("pelvis")], c[8])
    np.testing.assert_allclose(out[h("thorax")], c[1])
    np.testing.assert_allclose(out[h("spine"), :2], (c[8, :2] + c[1, :2]) / 2)
    np.testing.assert_allclose(out[h("head"), :2], (c[15, :2] + c[16, :2]) / 2)
    pairs = {"neck_nose": 0, "r_hip": 9, "r_knee": 10, "r_ankle": 11, "l_hip": 12, "l_knee": 13, "l_ankle": 14,
             "l_shoulder": 5, "l_elbow": 6, "l_wrist": 7, "r_shoulder": 2, "r_elbow": 3, "r_wrist": 4}
    for name, src in pairs.items():
        np.testing.assert_allclose(out[h(name)], c[src], err_msg=name)


def test_halpe_to_h36m_mapping():
    """MotionBERT's halpe2h36m: Halpe's hip, neck and head-top points are the pelvis, thorax and head."""
    c = distinct_points(26, seed=1)
    out = to_h36m(c, "halpe")
    np.testing.assert_allclose(out[h("pelvis")], c[19])
    np.testing.assert_allclose(out[h("thorax")], c[18])
    np.testing.assert_allclose(out[h("head")], c[17])
    np.testing.assert_allclose(out[h("spine"), :2], (c[19, :2] + c[18, :2]) / 2)
    assert out[h("spine"), 2] == min(c[19, 2], c[18, 2])
    pairs = {"neck_nose": 0, "r_hip": 12, "r_knee": 14, "r_ankle": 16, "l_hip": 11, "l_knee": 13, "l_ankle": 15,
             "l_shoulder": 5, "l_elbow": 7, "l_wrist": 9, "r_shoulder": 6, "r_elbow": 8, "r_wrist": 10}
    for name, src in pairs.items():
        np.testing.assert_allclose(out[h(name)], c[src], err_msg=name)
    assert HALPE_JOINT_NAMES[17:20] == ["head", "neck", "hip"]
    np.testing.assert_array_equal(halpe_to_coco(c), c[:17])


def blaze(name: str) -> int:
    return BLAZEPOSE_JOINT_NAMES.index(name)


def test_blazepose_to_h36m_and_coco_by_joint_names():
    c = distinct_points(33, seed=2)
    out = to_h36m(c[None], "blazepose")[0]
    mid = lambda a, b: (c[blaze(a), :2] + c[blaze(b), :2]) / 2
    np.testing.assert_allclose(out[h("pelvis"), :2], mid("left_hip", "right_hip"))
    np.testing.assert_allclose(out[h("thorax"), :2], mid("left_shoulder", "right_shoulder"))
    np.testing.assert_allclose(out[h("spine"), :2],
                               (mid("left_hip", "right_hip") + mid("left_shoulder", "right_shoulder")) / 2)
    np.testing.assert_allclose(out[h("head"), :2], mid("left_eye", "right_eye"))
    np.testing.assert_allclose(out[h("neck_nose")], c[blaze("nose")])
    for side, other in (("l", "left"), ("r", "right")):
        for part, src in (("hip", "hip"), ("knee", "knee"), ("ankle", "ankle"), ("shoulder", "shoulder"),
                          ("elbow", "elbow"), ("wrist", "wrist")):
            np.testing.assert_allclose(out[h(f"{side}_{part}")], c[blaze(f"{other}_{src}")], err_msg=part)
    assert out[h("head"), 2] == min(c[blaze("left_eye"), 2], c[blaze("right_eye"), 2])
    # BlazePose -> COCO by name (COCO "l_eye" is BlazePose "left_eye", not an eye corner), and the two routes to
    # Human3.6M agree.
    coco = blazepose_to_coco(c)
    for k, name in enumerate(COCO_JOINT_NAMES):
        full = name.replace("l_", "left_").replace("r_", "right_")
        np.testing.assert_array_equal(coco[k], c[blaze(full)], err_msg=name)
    np.testing.assert_allclose(to_h36m(coco, "coco"), out)
    with pytest.raises(KeypointError, match=r"\(\.\.\., 33, C\)"):
        blazepose_to_coco(c[:17])
    with pytest.raises(KeypointError, match=r"\(\.\.\., 33, 3\)"):
        to_h36m(c[:26], "blazepose")


def test_h36m_layout_is_identity_and_bad_layouts():
    c = distinct_points(17)
    np.testing.assert_array_equal(to_h36m(c, "h36m"), c)
    with pytest.raises(KeypointError, match="unknown keypoint layout 'mpii'"):
        to_h36m(c, "mpii")
    with pytest.raises(KeypointError, match=r"\(\.\.\., 25, 3\)"):
        to_h36m(c, "openpose")


def test_fill_gaps_interpolates_and_holds_ends():
    kp = np.zeros((6, 17, 3))
    kp[..., 2] = 1.0
    kp[:, :, 0] = np.arange(6)[:, None] * 10.0
    kp[:, :, 1] = 7.0
    kp[0, 3, :2] = np.nan  # missing at the start: hold the first good value
    kp[2:4, 3, 2] = 0.05  # low confidence in the middle: interpolate
    kp[5, 3, 2] = 0.0  # missing at the end
    out, filled, notes = fill_gaps(kp, min_confidence=0.2)
    assert notes == []
    np.testing.assert_allclose(out[:, 3, 0], [10, 10, 20, 30, 40, 40])
    np.testing.assert_allclose(out[:, 3, 1], 7.0)
    assert filled[:, 3].tolist() == [True, False, True, True, False, True]
    assert filled.sum() == 4
    np.testing.assert_allclose(out[:, 5, 0], np.arange(6) * 10.0)


def test_fill_gaps_never_seen_joint_and_all_missing():
    kp = np.ones((4, 17, 3))
    kp[:, h("r_wrist"), :2] = np.nan
    kp[:, h("r_elbow"), 2] = 0.0
    kp[:, h("r_shoulder"), :2] = 5.0
    out, filled, notes = fill_gaps(kp)
    np.testing.assert_allclose(out[:, h("r_wrist")], 5.0)  # wrist -> elbow (never seen) -> shoulder
    assert len(notes) == 2 and "r_wrist never detected: placed on r_shoulder" in notes[1]
    with pytest.raises(KeypointError, match="no usable keypoints"):
        fill_gaps(np.full((4, 17, 3), np.nan))
    with pytest.raises(KeypointError, match="empty"):
        fill_gaps(np.zeros((0, 17, 3)))
    with pytest.raises(KeypointError, match=r"\(T, 17, 3\)"):
        fill_gaps(np.zeros((4, 16, 3)))


def test_normalize_screen_hand_case():
    x = normalize_screen(np.array([[0.0, 0.0], [1000.0, 1002.0], [500.0, 501.0]]), 1000, 1002)
    np.testing.assert_allclose(x, [[-1.0, -1.002], [1.0, 1.002], [0.0, 0.0]], atol=1e-6)
    with pytest.raises(KeypointError, match="positive"):
        normalize_screen(np.zeros((1, 2)), 0, 10)


def walking_coco(t: int = 12, seed: int = 0) -> np.ndarray:
    """(T, 17, 3) COCO keypoints drifting right, confidence in (0.5, 1)."""
    base = distinct_points(17, seed)
    seq = np.repeat(base[None], t, axis=0)
    seq[:, :, 0] += np.arange(t)[:, None] * 3.0
    return seq


def test_npy_without_and_with_confidence(tmp_path):
    seq = walking_coco()
    np.save(tmp_path / "k2.npy", seq[..., :2])
    np.save(tmp_path / "k3.npy", seq)
    k2 = load_keypoints(tmp_path / "k2.npy", "coco", width=1920, height=1080)
    k3 = load_keypoints(tmp_path / "k3.npy", "coco", width=1920, height=1080)
    assert k2.pose.shape == (12, 17, 2) and k2.meta["has_confidence"] is False
    assert k3.meta["has_confidence"] is True
    np.testing.assert_allclose(k2.pose, k3.pose, rtol=1e-6)
    np.testing.assert_allclose(k3.pose, to_h36m(seq, "coco")[..., :2], rtol=1e-6)
    assert k2.confidence.min() == 1.0 and not k2.filled.any()
    assert k3.normalized().shape == (12, 17, 2)
    with pytest.raises(KeypointError, match="--width and --height"):
        load_keypoints(tmp_path / "k2.npy", "coco")


def test_npz_variants(tmp_path):
    seq = walking_coco()[..., :2]
    np.savez(tmp_path / "named.npz", keypoints=seq, width=640, height=480)
    k = load_keypoints(tmp_path / "named.npz", "coco")
    assert (k.width, k.height) == (640, 480)
    np.savez(tmp_path / "single.npz", whatever=seq)
    assert read_keypoints(tmp_path / "single.npz", "coco").width is None
    np.savez(tmp_path / "two.npz", a=seq, b=seq)
    with pytest.raises(KeypointError, match="name it 'keypoints'"):
        read_keypoints(tmp_path / "two.npz", "coco")
    # VideoPose3D's custom-dataset format (data_2d_custom_*.npz).
    meta = {"layout_name": "coco", "num_joints": 17, "video_metadata": {"clip.mp4": {"w": 1280, "h": 720}}}
    np.savez(tmp_path / "vp3d.npz", positions_2d={"clip.mp4": {"custom": [seq]}}, metadata=meta)
    k = load_keypoints(tmp_path / "vp3d.npz", "coco")
    assert (k.width, k.height) == (1280, 720) and k.pose.shape == (12, 17, 2)


def test_array_with_several_people(tmp_path):
    a, b = walking_coco(seed=1), walking_coco(seed=2)
    a[:, :, :2] *= 0.3  # person 0 small (far away)
    both = np.stack([a, b], axis=1)  # (T, P, J, 3)
    both[4:7, 1] = np.nan  # person 1 leaves for three frames
    np.save(tmp_path / "multi.npy", both)
    k = load_keypoints(tmp_path / "multi.npy", "coco", width=1000, height=1000)
    assert "picked person id 1 of 2" in k.meta["person"]
    np.testing.assert_allclose(k.pose[0], to_h36m(b, "coco")[0, :, :2], rtol=1e-6)
    assert k.filled[4:7].all() and not k.filled[:4].any()
    k0 = load_keypoints(tmp_path / "multi.npy", "coco", width=1000, height=1000, person=0)
    np.testing.assert_allclose(k0.pose, to_h36m(a, "coco")[..., :2], rtol=1e-6)
    with pytest.raises(KeypointError, match="person 5 not found"):
        load_keypoints(tmp_path / "multi.npy", "coco", width=1000, height=1000, person=5)


def coco_keypoints_list(points: np.ndarray) -> list[float]:
    return [float(v) for v in points.reshape(-1)]


def test_coco_results_list_and_dataset_dict(tmp_path):
    seq = walking_coco(6)
    results = [{"image_id": 100 + t, "category_id": 1, "keypoints": coco_keypoints_list(seq[t]), "score": 0.9}
               for t in reversed(range(6))]  # any order: frames are sorted by image id
    (tmp_path / "results.json").write_text(json.dumps(results))
    k = load_keypoints(tmp_path / "results.json", "coco", width=800, height=600)
    np.testing.assert_allclose(k.pose, to_h36m(seq, "coco")[..., :2], rtol=1e-6)

    # Dataset dict: images give order and size; v = 0 marks an unlabelled joint (x = y = 0), frame 3 has nobody.
    gt = seq.copy()
    gt[..., 2] = 2
    gt[1, 9] = 0  # left wrist unlabelled in frame 1
    images = [{"id": t, "file_name": f"frame_{t:04d}.jpg", "width": 1280, "height": 720} for t in range(6)]
    anns = [{"id": t, "image_id": t, "keypoints": coco_keypoints_list(gt[t])} for t in range(6) if t != 3]
    (tmp_path / "dataset.json").write_text(json.dumps({"images": images, "annotations": anns}))
    k = load_keypoints(tmp_path / "dataset.json", "coco")
    assert (k.width, k.height) == (1280, 720)
    assert k.filled[3].all() and k.filled[1, h("l_wrist")] and k.filled.sum() == 18
    np.testing.assert_allclose(k.pose[1, h("l_wrist")], (seq[0, 9, :2] + seq[2, 9, :2]) / 2, rtol=1e-6)

    (tmp_path / "wrong.json").write_text(json.dumps([{"image_id": 0, "keypoints": [1.0] * 30}]))
    with pytest.raises(KeypointError, match="30 keypoint values"):
        read_keypoints(tmp_path / "wrong.json", "coco")
    (tmp_path / "empty.json").write_text(json.dumps([]))
    with pytest.raises(KeypointError, match="no frames"):
        read_keypoints(tmp_path / "empty.json", "coco")


def write_openpose(folder, people_per_frame: list[list[np.ndarray]]) -> None:
    folder.mkdir()
    for t, people in enumerate(people_per_frame):
        data = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": coco_keypoints_list(p)}
                                           for p in people]}
        (folder / f"video_{t:012d}_keypoints.json").write_text(json.dumps(data))


def body25_walk(t: int, x0: float, scale: float, seed: int) -> np.ndarray:
    base = distinct_points(25, seed)
    base[:, :2] = base[:, :2] * scale
    seq = np.repeat(base[None], t, axis=0)
    seq[:, :, 0] += x0 + np.arange(t)[:, None] * 4.0
    return seq


def test_openpose_folder_tracks_one_person(tmp_path):
    big = body25_walk(11, 0.0, 0.5, seed=3)  # large, prominent
    small = body25_walk(11, 500.0, 0.2, seed=4)
    frames = []
    for t in range(11):
        people = [small[t], big[t]] if t % 2 else [big[t], small[t]]  # detection order changes per frame
        if t == 5:
            people = []  # nobody detected
        if t == 7:
            people = [small[t]]  # the tracked person is missed: the other one is too far away to be them
        frames.append(people)
    missing = big[8].copy()
    missing[4] = 0.0  # OpenPose writes (0, 0, 0) for an undetected joint (RWrist)
    frames[8] = [small[8], missing]
    write_openpose(tmp_path / "op", frames)
    (tmp_path / "op" / "notes.txt").write_text("ignored")
    k = load_keypoints(tmp_path / "op", "openpose", width=1000, height=1000)
    assert k.pose.shape == (11, 17, 2)
    assert "most prominent person of frame 0" in k.meta["person"] and "9 of 11" in k.meta["person"]
    assert "(1 frame(s) without a detection close enough" in k.meta["person"]
    expected = to_h36m(big, "openpose")[..., :2]
    for t in (0, 1, 2, 3, 4, 6, 9, 10):
        np.testing.assert_allclose(k.pose[t], expected[t], rtol=1e-6, err_msg=f"frame {t}")
    assert k.filled[5].all() and k.filled[7].all() and k.filled[8, h("r_wrist")]
    np.testing.assert_allclose(k.pose[7], expected[7], rtol=1e-6)  # filled by interpolation of a linear walk
    np.testing.assert_allclose(k.pose[8, h("r_wrist")], expected[8, h("r_wrist")], rtol=1e-6)  # linear motion
    with pytest.raises(KeypointError, match="needs person identities"):
        load_keypoints(tmp_path / "op", "openpose", width=1000, height=1000, person=1)


def test_openpose_bad_inputs(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(KeypointError, match="no OpenPose .json files"):
        read_keypoints(tmp_path / "none", "openpose")
    write_openpose(tmp_path / "coco18", [[np.ones((18, 3))]])
    with pytest.raises(KeypointError, match="54 values"):
        read_keypoints(tmp_path / "coco18", "openpose")
    write_openpose(tmp_path / "empty", [[], []])
    with pytest.raises(KeypointError, match="no person detected"):
        load_keypoints(tmp_path / "empty", "openpose", width=10, height=10)


@pytest.mark.parametrize(
    ("array", "layout", "match"),
    [
        (np.zeros((10, 17, 2)), "openpose", r"\(T, 25, 2 or 3\)"),
        (np.zeros((10, 17, 4)), "coco", r"got \(10, 17, 4\)"),
        (np.zeros((10, 34)), "h36m", "got \\(10, 34\\)"),
        (np.zeros((0, 17, 2)), "h36m", "no frames"),
        (np.array([["a"] * 2] * 17), "h36m", "numeric"),
        (np.zeros((3, 17, 2)), "body25", "unknown keypoint layout"),
    ],
)
def test_bad_arrays(array, layout, match):
    with pytest.raises(KeypointError, match=match):
        from_array(array, layout)


def test_all_missing_array_and_bad_paths(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((5, 17, 2), np.nan))
    with pytest.raises(KeypointError, match="no usable keypoints"):
        load_keypoints(tmp_path / "nan.npy", "h36m", width=10, height=10)
    low = np.ones((5, 17, 3))
    low[..., 2] = 0.01
    np.save(tmp_path / "low.npy", low)
    with pytest.raises(KeypointError, match="no usable keypoints"):
        load_keypoints(tmp_path / "low.npy", "h36m", width=10, height=10)
    with pytest.raises(KeypointError, match="no such file"):
        read_keypoints(tmp_path / "missing.npy", "h36m")
    (tmp_path / "k.csv").write_text("1,2")
    with pytest.raises(KeypointError, match="unsupported input"):
        read_keypoints(tmp_path / "k.csv", "h36m")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(KeypointError, match="not valid JSON"):
        read_keypoints(tmp_path / "bad.json", "coco")


def test_single_person_needs_no_choice():
    raw = from_array(walking_coco(), "coco")
    picked, who = pick_person(raw)
    assert who == "one person per frame; no choice needed"
    assert picked.shape == (12, 17, 3)


def test_coco_track_ids_pick_a_person(tmp_path):
    near, far = walking_coco(5, seed=7), walking_coco(5, seed=8)
    far[..., :2] = far[..., :2] * 0.2 + 600  # small: far from the camera
    anns = [{"image_id": t, "track_id": tid, "keypoints": coco_keypoints_list(p[t])}
            for t in range(5) for tid, p in ((3, far), (9, near)) if not (tid == 9 and t == 2)]
    (tmp_path / "tracks.json").write_text(json.dumps(anns))
    k = load_keypoints(tmp_path / "tracks.json", "coco", width=1000, height=1000)
    assert k.meta["person"].startswith("picked person id 9 of 2 (the most prominent")
    np.testing.assert_allclose(k.pose[[0, 1, 3, 4]], to_h36m(near, "coco")[[0, 1, 3, 4], :, :2], rtol=1e-6)
    assert k.filled[2].all()  # person 9 was not detected in frame 2: interpolated, not swapped for person 3
    k3 = load_keypoints(tmp_path / "tracks.json", "coco", width=1000, height=1000, person=3)
    np.testing.assert_allclose(k3.pose, to_h36m(far, "coco")[..., :2], rtol=1e-6)


def test_alphapose_halpe_json_through_load_keypoints(tmp_path):
    """AlphaPose writes Halpe-26 results as a COCO-style list with an ``idx`` identity per person."""
    c = distinct_points(26, seed=3)
    anns = []
    for t in range(3):
        for pid, dx in ((1, 0.0), (2, 300.0)):
            kp = c.copy()
            kp[:, 0] += dx + t
            anns.append({"image_id": f"{t}.jpg", "category_id": 1, "keypoints": kp.reshape(-1).tolist(),
                         "score": 2.5, "idx": pid})
    (tmp_path / "alphapose-results.json").write_text(json.dumps(anns))
    kps = load_keypoints(tmp_path / "alphapose-results.json", "halpe", width=1000, height=1000, person=2)
    assert kps.pose.shape == (3, 17, 2) and "picked person id 2" in kps.meta["person"]
    np.testing.assert_allclose(kps.pose[:, h("pelvis")], c[19, :2] + [[300.0 + t, 0.0] for t in range(3)], rtol=1e-6)
    np.testing.assert_allclose(kps.pose[:, h("head")], c[17, :2] + [[300.0 + t, 0.0] for t in range(3)], rtol=1e-6)
