"""The real-data check's own parts on synthetic cameras: Qualisys reading, triangulation, association, metrics,
scoring plumbing; and (slow, only where the data is already cached) the scene itself. Nothing here downloads."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import realdata as rd
from benchmarks import realdata_metrics as rm
from benchmarks.realdata_geometry import CalibrationError, Camera, parse_qualisys, triangulate
from fastmixste.eval import metrics as fm
from fastmixste.video.keypoints import Keypoints2D, to_h36m


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation (OpenCV axes) of a camera at ``position`` looking at ``target``, world z up."""
    z = target - position
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def ring_cameras(n: int = 4, dist: np.ndarray | None = None) -> list[Camera]:
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n + 0.3
        pos = np.array([3.5 * np.cos(a), 3.5 * np.sin(a), 1.8 + 0.1 * i])
        r = look_at(pos, np.array([0.0, 0.0, 1.0]))
        k = np.array([[1600.0 + 20 * i, 0, 540.0], [0, 1600.0 + 20 * i, 960.0], [0, 0, 1]])
        d = np.zeros(5) if dist is None else dist
        cams.append(Camera(f"cam{i + 1:02d}", k, d, r, -r @ pos, (1088, 1920)))
    return cams


def qualisys_xml(cams: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> str:
    """(name, r (Qualisys rows), position mm, (fu, fv, cu, cv) px) per camera -> a .qca.txt document."""
    parts = []
    for name, r, pos, (fu, fv, cu, cv) in cams:
        rs = " ".join(f'r{a + 1}{b + 1}="{float(r[a, b])!r}"' for a in range(3) for b in range(3))
        parts.append(
            f'<camera active="1" serial="{name}"><fov_video bottom="1919" left="0" right="1087" top="0"/>'
            f'<transform {rs} x="{pos[0]}" y="{pos[1]}" z="{pos[2]}"/>'
            f'<intrinsic centerPointU="{cu * 64}" centerPointV="{cv * 64}" focalLengthU="{fu * 64}" '
            f'focalLengthV="{fv * 64}" radialDistortion1="0" radialDistortion2="0" radialDistortion3="0" '
            f'tangentalDistortion1="0" tangentalDistortion2="0"/></camera>')
    return "<?xml version='1.0'?><calibration><cameras>" + "".join(parts) + "</cameras></calibration>"


def test_qualisys_reader_conventions():
    # A camera 3 m along -y looking along +y at the origin: Qualisys axes x right, y up, z backwards (-y world).
    r = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # rows: camera x, y, z axes in the world
    cam = parse_qualisys(qualisys_xml([("c1", r, np.array([0.0, -3000.0, 1000.0]), (1500, 1500, 544, 960))]))[0]
    assert cam.size == (1088, 1920) and cam.focal == (1500, 1500) and cam.centre == (544, 960)
    np.testing.assert_allclose(cam.position, [0, -3, 1], atol=1e-12)
    # A point 1 m right (+x) and 0.5 m up (+z) of the optical axis, 3 m ahead: right of and above the centre.
    uv = cam.project(np.array([1.0, 0.0, 1.5]))
    np.testing.assert_allclose(uv, [544 + 1500 / 3, 960 - 1500 * 0.5 / 3], atol=1e-9)
    np.testing.assert_allclose(cam.to_camera(np.array([0.0, 0.0, 1.0])), [0, 0, 3], atol=1e-12)


@pytest.mark.parametrize("text, what", [
    ("not xml", "well-formed"),
    ("<calibration/>", "<camera"),
    ('<!DOCTYPE x [<!ENTITY a "b">]><calibration/>', "DOCTYPE"),
])
def test_qualisys_reader_refuses_bad_files(text, what):
    with pytest.raises(CalibrationError, match=what):
        parse_qualisys(text)


def test_qualisys_reader_refuses_missing_and_bad_values():
    good = qualisys_xml([("c1", np.eye(3), np.zeros(3), (1500, 1500, 544, 960))])
    with pytest.raises(CalibrationError, match="focalLengthU"):
        parse_qualisys(good.replace("focalLengthU", "focalLengthX"))
    with pytest.raises(CalibrationError, match="rotation"):
        parse_qualisys(qualisys_xml([("c1", 2 * np.eye(3), np.zeros(3), (1500, 1500, 544, 960))]))
    with pytest.raises(CalibrationError, match="not a number"):
        parse_qualisys(good.replace('x="0.0"', 'x="zero"'))


def test_undistort_inverts_distort():
    cam = ring_cameras(1, dist=np.array([-0.05, 0.14, 0.0006, 0.0007, 0.0]))[0]
    x = np.random.default_rng(0).uniform(-1, 1, (50, 3)) + np.array([0, 0, 1.0])
    np.testing.assert_allclose(cam.undistort_pixels(cam.project(x)), cam.project(x, distort=False), atol=1e-6)


@pytest.mark.parametrize("dist", [None, np.array([-0.05, 0.14, 0.0006, 0.0007, 0.0])])
def test_triangulation_recovers_points_exactly(dist):
    rng = np.random.default_rng(1)
    cams = ring_cameras(4, dist)
    x = rng.uniform([-0.8, -0.8, 0.0], [0.8, 0.8, 1.9], (5, 7, 3))
    conf = rng.uniform(0.4, 1.0, (4, 5, 7, 1))
    views = np.concatenate([np.stack([c.project(x) for c in cams]), conf], axis=-1)
    x3, err, used = triangulate(views, cams)
    np.testing.assert_allclose(x3, x, atol=1e-7)
    assert err.shape == (5, 7) and np.nanmax(err) < 1e-4 and used.all()


def test_triangulation_rejects_an_outlier_view():
    cams = ring_cameras(4)
    x = np.array([[0.1, -0.2, 1.2], [0.0, 0.3, 0.4]])
    views = np.concatenate([np.stack([c.project(x) for c in cams]), np.ones((4, 2, 1))], axis=-1)
    views[2, 0, :2] += [60.0, -40.0]  # view 3 sees point 0 far off
    views[1, 1, 2] = 0.1  # view 2 is unsure of point 1: below the confidence threshold, not used
    x3, err, used = triangulate(views, cams)
    np.testing.assert_allclose(x3, x, atol=1e-7)
    assert used.tolist() == [[True, True], [True, False], [False, True], [True, True]]
    assert np.nanmax(err) < 1e-4
    # With only two views left nothing can be rejected: a disagreeing pair gives no point.
    two = views[[0, 2]]
    x3, err, used = triangulate(two, [cams[0], cams[2]])
    assert np.isnan(x3[0]).all() and np.isnan(err[0]) and not used[:, 0].any()
    np.testing.assert_allclose(x3[1], x[1], atol=1e-7)


def test_association_separates_two_people_whatever_the_slot_order():
    rng = np.random.default_rng(2)
    cams = ring_cameras(4)
    t_count = 6
    base = rng.uniform(-0.25, 0.25, (33, 3)) + np.array([0, 0, 1.0])
    people = [base + np.array([-0.7, 0, 0]), base + np.array([0.7, 0.1, 0])]
    walk = np.linspace(0, 0.2, t_count)[:, None, None] * np.array([1.0, 0, 0])
    kp = np.full((4, t_count, 3, 33, 3), np.nan)
    for v, cam in enumerate(cams):
        for t in range(t_count):
            slots = rng.permutation(3)  # person 0, person 1 and an empty slot in a random order
            for p in range(2):
                kp[v, t, slots[p], :, :2] = cam.project(people[p] + walk[t])
                kp[v, t, slots[p], :, 2] = 0.9
    assign = rd.associate(kp, cams)
    assert assign.shape == (2, t_count, 4) and (assign >= 0).all()
    # Each identity's detections triangulate to one of the two people throughout.
    centres = []
    for i in range(2):
        dets = rd._person_detections(kp, assign[i])
        x3, _, _ = triangulate(dets, cams)
        np.testing.assert_allclose(x3 - walk, np.broadcast_to(x3[0] - walk[0], x3.shape), atol=1e-6)
        centres.append(x3[0].mean(0)[0])
    assert sorted(np.sign(centres)) == [-1, 1]


def test_h36m_3d_uses_the_video_paths_table():
    pts = np.random.default_rng(3).standard_normal((4, 33, 3))
    got = rd.h36m_3d(pts)
    xy = to_h36m(np.concatenate([pts[..., :2], np.ones((4, 33, 1))], -1), "blazepose")[..., :2]
    np.testing.assert_allclose(got[..., :2], xy)
    yz = to_h36m(np.concatenate([pts[..., 1:], np.ones((4, 33, 1))], -1), "blazepose")[..., :2]
    np.testing.assert_allclose(got[..., 1:], yz)


def test_fill_short_gaps():
    x = np.arange(20, dtype=float)[:, None, None] * np.ones((1, 2, 3))
    x[3:6, 0] = np.nan  # 3 frames: filled
    x[8:19, 1] = np.nan  # 11 frames: left
    x[0, 1] = np.nan  # an end: left
    got = rd.fill_short_gaps(x, 10)
    np.testing.assert_allclose(got[:, 0], np.arange(20.0)[:, None] * np.ones(3))
    assert np.isnan(got[8:19, 1]).all() and np.isnan(got[0, 1]).all() and np.isfinite(got[1:8, 1]).all()


def test_metrics_match_fastmixste_metrics():
    rng = np.random.default_rng(4)
    target = rng.standard_normal((30, 17, 3)) * 0.3
    pred = target + 0.05 * rng.standard_normal(target.shape)
    assert rm.mpjpe(pred, target) == pytest.approx(1000 * fm.mpjpe(pred, target), rel=1e-12)
    assert rm.n_mpjpe(pred, target) == pytest.approx(1000 * fm.n_mpjpe(pred, target), rel=1e-12)
    assert rm.p_mpjpe(pred, target) == pytest.approx(1000 * fm.p_mpjpe(pred, target), rel=1e-9)
    np.testing.assert_allclose(rm.similarity_align(pred, target), fm.procrustes_align(pred, target), atol=1e-12)
    for step in (1, 5):
        assert rm.speed_ratio(pred, target, step) == pytest.approx(fm.speed_ratio(pred, target, step=step), rel=1e-12)


def test_metrics_on_known_transforms():
    rng = np.random.default_rng(5)
    target = rng.standard_normal((4, 17, 3))
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))  # a rotation
    moved = 2.5 * target @ q + 0.3
    assert rm.p_mpjpe(moved, target) == pytest.approx(0, abs=1e-9)
    assert rm.n_mpjpe(3 * target, target) == pytest.approx(0, abs=1e-9)
    assert rm.mpjpe(target + np.array([0.003, 0.004, 0]), target) == pytest.approx(5.0)
    # Mirror images cannot be aligned by a rotation.
    assert rm.p_mpjpe(target * np.array([-1, 1, 1]), target) > 100
    # Frames left out of the speed ratio: a pair counts only when both frames are valid.
    walk = np.cumsum(np.ones((6, 2, 3)), axis=0)
    assert rm.speed_ratio(2 * walk, walk, 1) == pytest.approx(2.0)
    valid = np.array([True, True, False, True, True, True])
    twisted = walk.copy()
    twisted[2] += 100.0
    assert rm.speed_ratio(twisted, walk, 1, valid=valid) == pytest.approx(1.0)
    assert rm.speed_ratio(twisted, walk, 1, valid=valid, stat="mean") == pytest.approx(1.0)
    assert rm.speed_ratio(twisted, walk, 1, stat="mean") > 10.0


def _view(rng: np.random.Generator, person: str, cam: Camera, t_count: int = 40) -> rd.ViewInput:
    root = np.array([0.2, 0.1, 3.0]) + np.linspace(0, 0.5, t_count)[:, None] * np.array([1.0, 0, 0])
    rel = rng.normal(0, 0.3, (17, 3))
    rel[0] = 0
    wobble = 0.05 * np.sin(np.arange(t_count) / 3)[:, None, None] * rng.normal(size=(1, 17, 3))
    wobble[:, 0] = 0
    truth = root[:, None] + rel + wobble
    uv = truth[..., :2] / truth[..., 2:] * np.array(cam.focal) + np.array(cam.centre)
    kps = Keypoints2D(uv.astype(np.float32), np.ones((t_count, 17), np.float32), np.zeros((t_count, 17), bool),
                      *map(float, cam.size))
    valid = np.ones(t_count, bool)
    valid[5] = False
    return rd.ViewInput(person, cam, kps, valid.copy(), truth - truth[:, :1], truth, valid, 60.0, None)


def test_scoring_plumbing_on_synthetic_views():
    rng = np.random.default_rng(6)
    cams = [Camera(c, np.array([[1500.0, 0, 544], [0, 1500.0, 960], [0, 0, 1]]), np.zeros(5), np.eye(3),
                   np.zeros(3), (1088, 1920)) for c in rd.CAMERAS]
    views = [_view(rng, p, c) for p in ("person1", "person2") for c in cams[:3]]
    scene = rd.Scene(None, cams, np.zeros((4, 40, 1, 33, 3)), np.zeros((4, 40, 1, 33, 3)), [], 60.0, {}, {})
    scene.inputs = views

    def perfect(view):
        return view.truth + 5.0, rd._solve_root(view.truth - view.truth[:, :1], view)  # any offset: root-relative

    out = rd.score_predictions(scene, perfect)
    assert out["pose"]["mean"]["mpjpe"] == pytest.approx(0, abs=1e-6)
    assert out["pose"]["mean"]["speed_ratio_5"] == pytest.approx(1.0)
    # mm; the 2D is stored as float32 pixels (Keypoints2D), which moves a 3 m solve by ~1e-4 mm
    assert out["root"]["mean"]["root_error"] == pytest.approx(0, abs=1e-3)
    assert {r["frames"] for r in out["pose"]["per_view"]} == {39}
    assert set(out["pose"]["per_person"]) == {"person1", "person2"}
    assert np.isnan(out["pose"]["per_camera"]["cam04"]["p_mpjpe"])  # no view of it
    base = rd.baselines(scene)
    assert base["pose"]["mean_pose"]["mean"]["speed_ratio"] == 0.0
    assert base["pose"]["mediapipe"]["mean"]["mpjpe"] == pytest.approx(0, abs=1e-6)  # world = truth here
    # Zero depth: exact x, y at the root's depth, only the depth offsets are missing.
    zd = base["pose"]["zero_depth"]["mean"]
    assert 0 < zd["p_mpjpe"] < zd["mpjpe"]
    assert base["root"]["reference_pose"]["mean"]["root_error"] == pytest.approx(0, abs=1e-3)
    assert base["root"]["fixed_depth"]["mean"]["root_error"] > 10


def test_cli_refuses_to_replace_a_file_it_did_not_make(tmp_path, capsys):
    from fastmixste.io.cli import run_cli

    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    assert run_cli(rd.main, ["--json", str(other), "--cache", str(tmp_path / "none"), "--no-download"]) == 2
    assert "not replacing" in capsys.readouterr().err and other.read_text() == '{"mine": 1}'
    assert run_cli(rd.main, ["--cache", str(tmp_path / "none"), "--no-download"]) == 2
    assert "--no-download" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())


def _cached() -> bool:
    from fastmixste.video.detectors import MEDIAPIPE_VERSION

    demo = rd.DEFAULT_CACHE / "Demo_MultiPerson"
    dets = [rd.DEFAULT_CACHE / f"{kind}-mediapipe{MEDIAPIPE_VERSION}-passes{rd.DETECTION_PASSES}.npz"
            for kind in ("detections", "crops")]
    return all((demo / f).is_file() for f in rd.DEMO_FILES) and all(d.is_file() for d in dets)


@pytest.mark.slow
@pytest.mark.skipif(not _cached(), reason="the real-data cache (python -m benchmarks.realdata) is not on this machine")
def test_scene_from_the_cache():
    scene = rd.build_scene(download=False, progress=False)  # reads the cache only
    data = rd.scene_summary(scene)
    assert len(scene.people) == 2 and data["median_reprojection_px"] < 10
    for row in data["frame_alignment_px"].values():  # the views share one timeline
        assert min(row, key=row.get) == "0"
    assert len(data["views_scored"]) == 2 * len(rd.CAMERAS)  # both people in every camera


def test_reference_lowpass_keeps_motion_removes_jitter_and_gaps():
    from benchmarks.realdata import FILTER_SIGMA_FRAMES, lowpass

    t = np.arange(100, dtype=np.float64)
    slow = np.sin(2 * np.pi * 1.0 * t / 60.0)  # 1 Hz at 60 fps: walking-speed motion
    jitter = np.where(t % 2 == 0, 0.01, -0.01)  # 30 Hz: frame-to-frame DLT jitter
    x = np.repeat((slow + jitter)[:, None, None], 3, axis=2).repeat(2, axis=1)  # (T, 2, 3)
    x[40:43, 1] = np.nan
    y = lowpass(x, FILTER_SIGMA_FRAMES)
    assert np.isnan(y[40:43, 1]).all() and np.isfinite(y[:, 0]).all()
    inner = slice(10, 90)
    only_jitter = lowpass(np.repeat(jitter[:, None, None], 3, axis=2), FILTER_SIGMA_FRAMES)
    assert np.abs(only_jitter[inner]).max() < 0.01 / 10  # 30 Hz jitter cut by more than 10x
    assert np.abs(y[inner, 0, 0] - slow[inner]).max() < 0.02  # 1 Hz motion kept within 2% of its amplitude
    np.testing.assert_array_equal(lowpass(x, 0.0)[:, 0], x[:, 0])
