"""The lifter's 3D blended with the detector's own 3D (fastmixste.video.fusion) and its path through train.infer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastmixste.video.fusion import (
    LIFTER_WEIGHT,
    OnlineFusion,
    blazepose_world_to_h36m,
    fill_frames,
    fuse_with_detector_3d,
    gaussian_smooth,
    rotate_onto,
)
from fastmixste.video.keypoints import to_h36m


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def pose_sequence(rng: np.random.Generator, t: int = 30) -> np.ndarray:
    pose = rng.normal(0, 0.3, (17, 3))
    pose[0] = 0
    move = 0.05 * np.sin(np.arange(t) / 4)[:, None, None] * rng.normal(size=(1, 17, 3))
    move[:, 0] = 0
    return pose + move


def test_blazepose_world_conversion_matches_the_2d_table():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(5, 33, 3))
    out = blazepose_world_to_h36m(pts)
    assert out.shape == (5, 17, 3)
    # x, y go through the same table as the 2D; z is the same weighted mean of the z values.
    xy = to_h36m(np.concatenate([pts[..., :2], np.ones((5, 33, 1))], -1), "blazepose")[..., :2]
    np.testing.assert_allclose(out[..., :2], xy)
    zz = to_h36m(np.concatenate([pts[..., 2:], pts[..., 2:], np.ones((5, 33, 1))], -1),
                 "blazepose")[..., 0]
    np.testing.assert_allclose(out[..., 2], zz)
    pts[2] = np.nan
    assert np.isnan(blazepose_world_to_h36m(pts)[2]).all() and np.isfinite(blazepose_world_to_h36m(pts)[1]).all()
    with pytest.raises(ValueError, match="33, 3"):
        blazepose_world_to_h36m(np.zeros((4, 17, 3)))


def test_fill_frames_interpolates_between_and_holds_at_the_ends():
    t = np.arange(10, dtype=float)
    x = np.stack([t, 2 * t, -t], -1)[:, None, :].repeat(2, 1)  # (10, 2, 3) linear in time
    gappy = x.copy()
    gappy[[0, 1, 4, 5, 9]] = np.nan
    gappy[6, 1, 2] = np.nan  # one coordinate missing: the frame counts as missing
    out = fill_frames(gappy)
    np.testing.assert_allclose(out[2:9], x[2:9])  # interior gaps: exact for linear motion
    np.testing.assert_allclose(out[:2], x[[2, 2]])
    np.testing.assert_allclose(out[9], x[8])
    assert fill_frames(np.full((4, 17, 3), np.nan)) is None


def test_gaussian_smooth_keeps_constants_and_removes_jitter():
    const = np.ones((20, 17, 3)) * 0.7
    np.testing.assert_allclose(gaussian_smooth(const, 2.0), const)
    jitter = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)[:, None]
    smoothed = gaussian_smooth(jitter, 2.0)
    assert np.abs(smoothed[8:-8]).max() < 0.01  # a 2-frame alternation is gone
    np.testing.assert_array_equal(gaussian_smooth(jitter, 0.0), jitter)


def test_rotate_onto_recovers_a_rotation_per_frame():
    rng = np.random.default_rng(1)
    target = pose_sequence(rng, 6)
    rots = np.stack([random_rotation(rng) for _ in range(6)])
    turned_away = np.einsum("tjc,tdc->tjd", target, rots)  # each frame rotated differently
    np.testing.assert_allclose(rotate_onto(turned_away, target), target, atol=1e-9)
    # A mirror image is not a rotation: the result stays a proper rotation of the input (same chirality).
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    back = rotate_onto(mirrored, target)
    np.testing.assert_allclose(np.linalg.norm(back, axis=-1), np.linalg.norm(mirrored, axis=-1), atol=1e-9)
    assert not np.allclose(back, target, atol=1e-3)


def test_fusion_of_agreeing_estimates_is_that_estimate():
    """A lifter whose pose is the detector's, turned and scaled, fuses to the detector's pose (static: no smoothing
    effect), at any weight."""
    rng = np.random.default_rng(2)
    det = np.broadcast_to(pose_sequence(rng, 1), (12, 17, 3)).copy()
    lifted = 1.3 * det @ random_rotation(rng).T + 4.0  # any offset: root-relative
    for w in (0.0, LIFTER_WEIGHT, 1.0):
        fused, info = fuse_with_detector_3d(lifted, det, fps=30.0, lifter_weight=w)
        np.testing.assert_allclose(fused, det, atol=1e-5)
        assert info["fused"] and info["scale_to_detector"] == pytest.approx(1 / 1.3)


def test_fusion_weights_and_smoothing():
    rng = np.random.default_rng(3)
    det = pose_sequence(rng, 40)
    det_noisy = det + rng.normal(0, 0.01, det.shape)
    det_noisy[:, 0] = 0
    lifted = pose_sequence(rng, 40)
    fps, smooth = 60.0, 1 / 30
    only_det, _ = fuse_with_detector_3d(lifted, det_noisy, fps, lifter_weight=0.0, smooth_seconds=smooth)
    np.testing.assert_allclose(only_det, gaussian_smooth(det_noisy, smooth * fps), atol=1e-6)
    assert np.abs(only_det - det).mean() < np.abs(det_noisy - det).mean()  # the jitter is reduced
    half, _ = fuse_with_detector_3d(lifted, det_noisy, fps, lifter_weight=0.5, smooth_seconds=smooth)
    only_lift, _ = fuse_with_detector_3d(lifted, det_noisy, fps, lifter_weight=1.0, smooth_seconds=smooth)
    np.testing.assert_allclose(half, 0.5 * (only_det + only_lift), atol=1e-6)
    # The lifter's share keeps its shape: scaled and turned only (bone lengths in proportion).
    ratio = np.linalg.norm(only_lift[:, 5] - only_lift[:, 4], axis=-1) / np.linalg.norm(lifted[:, 5] - lifted[:, 4],
                                                                                      axis=-1)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)


def test_fusion_without_detector_3d_and_its_refusals():
    rng = np.random.default_rng(4)
    lifted = pose_sequence(rng, 8) + 1.0
    fused, info = fuse_with_detector_3d(lifted, np.full(lifted.shape, np.nan), fps=25.0)
    np.testing.assert_allclose(fused, lifted - lifted[:, :1], atol=1e-6)
    assert info["fused"] is False and "no 3D" in info["reason"]
    partly = pose_sequence(rng, 8)
    partly[3:5] = np.nan  # gaps: interpolated, not NaN in the result
    out, info = fuse_with_detector_3d(lifted, partly, fps=25.0)
    assert np.isfinite(out).all() and info["detector_3d_frames"] == 6
    with pytest.raises(ValueError, match="one shape"):
        fuse_with_detector_3d(lifted, lifted[:4], fps=25.0)
    with pytest.raises(ValueError, match="lifter_weight"):
        fuse_with_detector_3d(lifted, partly, fps=25.0, lifter_weight=1.5)
    with pytest.raises(ValueError, match="fps"):
        fuse_with_detector_3d(lifted, partly, fps=0.0)


def run_online(fusion: OnlineFusion, lifted: np.ndarray, world: list, lookahead: int) -> np.ndarray:
    """Feed frames as a stream does: frame t - L is fused right after frame t's detector 3D has come."""
    out = np.empty(lifted.shape, np.float32)
    for t in range(len(lifted) + lookahead):
        if t < len(lifted):
            fusion.add(world[t])
        if t >= lookahead:
            out[t - lookahead] = fusion.fuse(t - lookahead, lifted[t - lookahead])
    return out


@pytest.mark.parametrize("lookahead", [0, 3, 13])
def test_online_fusion_of_agreeing_estimates_is_that_estimate(lookahead):
    rng = np.random.default_rng(5)
    det = np.broadcast_to(pose_sequence(rng, 1), (30, 17, 3)).copy()
    lifted = np.stack([1.2 * d @ random_rotation(rng).T for d in det])
    out = run_online(OnlineFusion(60.0, lookahead), lifted, list(det), lookahead)
    np.testing.assert_allclose(out, det, atol=1e-5)


def test_online_fusion_low_pass_is_offlines_with_enough_lookahead_and_one_sided_without():
    rng = np.random.default_rng(6)
    det = pose_sequence(rng, 40) + rng.normal(0, 0.01, (40, 17, 3))
    det[:, 0] = 0
    lifted = pose_sequence(rng, 40)
    fps = 60.0
    fusion = OnlineFusion(fps, 6, lifter_weight=0.0)
    r = fusion.radius
    assert r == 6  # 3 sigma, sigma = 2 frames at 60 fps
    online = run_online(fusion, lifted, list(det), 6)
    offline, _ = fuse_with_detector_3d(lifted, det, fps, lifter_weight=0.0)
    np.testing.assert_allclose(online[r:-r], offline[r:-r], atol=1e-6)  # the ends differ: no edge padding online
    # No lookahead: frame t sees frames t - r .. t only, the Gaussian's past half renormalised.
    causal = run_online(OnlineFusion(fps, 0, lifter_weight=0.0), lifted, list(det), 0)
    k = np.exp(-0.5 * (np.arange(-r, 1) / 2.0) ** 2)
    np.testing.assert_allclose(causal[20], np.tensordot(k / k.sum(), det[20 - r:21], axes=1), atol=1e-6)


def test_online_fusion_gaps_hold_and_memory_is_bounded():
    rng = np.random.default_rng(7)
    lifted = pose_sequence(rng, 60)
    det = pose_sequence(rng, 60)
    world = [None if 20 <= t < 45 or t < 10 else det[t] for t in range(60)]
    fusion = OnlineFusion(60.0, 2)
    out = run_online(fusion, lifted, world, 2)
    # Before any detector 3D came within reach the lifted pose stays as it is.
    np.testing.assert_allclose(out[0], lifted[0] - lifted[0, :1], atol=1e-6)
    # Far inside the gap (no detector 3D within the radius) the last detector pose is held.
    held = run_online(OnlineFusion(60.0, 2, lifter_weight=0.0), lifted, world, 2)
    np.testing.assert_allclose(held[30], held[36], atol=1e-6)
    assert not np.allclose(held[15], held[30], atol=1e-4)
    assert fusion.frames_with_3d == 25 and len(fusion._world) <= 2 * fusion.radius + 2 + 1
    long = OnlineFusion(60.0, 4)
    for _ in range(5000):
        long.add(det[0])
    assert len(long._world) <= 2 * long.radius + 4 + 1
    with pytest.raises(ValueError, match="lookahead"):
        OnlineFusion(60.0, -1)


# ---------------------------------------------------------------------------------------------------------------
# Through train.infer --video: a detector that gives 3D of its own
# ---------------------------------------------------------------------------------------------------------------

av = pytest.importorskip("av", reason="PyAV (a dependency of fastmixste: pip install -e .) is not installed here")

from .test_video import FPS, SquareDetector, checkpoint, video_args, write_clip  # noqa: E402, F401 (fixture)

BLAZE = np.random.default_rng(7).uniform(-30, 30, (33, 2)).astype(np.float32)
WORLD = np.random.default_rng(8).normal(0, 0.25, (33, 3)).astype(np.float32)


class BlazeSquareDetector(SquareDetector):
    """SquareDetector in BlazePose-33 with a 3D of its own (as MediaPipe's world landmarks): a fixed 3D pose that
    turns a little with the square's x position, so each frame's 3D is known."""

    layout = "blazepose"

    def detect_with_world(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(frames))
        kp = np.full((len(frames), 1, 33, 3), np.nan, np.float32)
        kp[..., 2] = 0.0
        world = np.full((len(frames), 1, 33, 3), np.nan, np.float32)
        for i, f in enumerate(frames):
            ys, xs = np.nonzero(f[..., 0] > 128)
            if len(xs) < 16:
                continue
            kp[i, 0, :, :2] = BLAZE + [xs.mean(), ys.mean()]
            kp[i, 0, :, 2] = 0.9
            world[i, 0] = WORLD * (1 + xs.mean() / 1000)
        return kp, world

    def detect(self, frames: np.ndarray) -> np.ndarray:
        return self.detect_with_world(frames)[0]


def test_infer_video_blends_with_the_detectors_3d(tmp_path, checkpoint, monkeypatch, capsys):  # noqa: F811
    from train import infer as infer_cli

    det = BlazeSquareDetector()
    monkeypatch.setattr(infer_cli, "make_detector", lambda *a, **k: det)
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 20, absent=range(6, 8))
    out = tmp_path / "pose.npz"
    assert infer_cli.main(video_args(checkpoint, clip, out)) == 0
    assert "blended with the detector's own 3D (18 of 20 frames" in capsys.readouterr().out
    with np.load(out) as z:
        meta = json.loads(str(z["meta"]))
        fused, lifter, detector_3d = z["pose_3d"], z["pose_3d_lifter"], z["pose_3d_detector"]
        camera, root = z["pose_3d_camera"], z["root_trajectory"]
    # The detector's 3D of the picked person, converted to the 17 joints; NaN where nobody was seen.
    assert np.isnan(detector_3d[6:8]).all() and np.isfinite(np.delete(detector_3d, [6, 7], 0)).all()
    np.testing.assert_allclose(detector_3d[0], blazepose_world_to_h36m(det.detect_with_world(
        np.asarray(_first_frame(clip)))[1][0, 0]), atol=1e-5)
    expect, info = fuse_with_detector_3d(lifter, detector_3d, FPS)
    np.testing.assert_allclose(fused, expect, atol=1e-6)
    assert meta["detector_3d"] == info and info["fused"] and info["detector_3d_frames"] == 18
    np.testing.assert_allclose(camera, fused + root[:, None], atol=1e-6)  # the root is solved for the fused pose

    out_off = tmp_path / "off.npz"
    assert infer_cli.main(video_args(checkpoint, clip, out_off, "--detector-3d", "off")) == 0
    assert "the lifter's alone (--detector-3d off)" in capsys.readouterr().out
    with np.load(out_off) as z:
        np.testing.assert_array_equal(z["pose_3d"], z["pose_3d_lifter"])
        np.testing.assert_allclose(z["pose_3d_lifter"], lifter, atol=1e-6)
        assert json.loads(str(z["meta"]))["detector_3d"]["fused"] is False


def test_infer_video_with_a_2d_only_detector_says_so(tmp_path, checkpoint, monkeypatch, capsys):  # noqa: F811
    from train import infer as infer_cli

    monkeypatch.setattr(infer_cli, "make_detector", lambda *a, **k: SquareDetector())
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 12)
    out = tmp_path / "pose.npz"
    assert infer_cli.main(video_args(checkpoint, clip, out)) == 0
    assert "the lifter's alone (the detector (square) gives no 3D of its own)" in capsys.readouterr().out
    with np.load(out) as z:
        np.testing.assert_array_equal(z["pose_3d"], z["pose_3d_lifter"])
        assert "pose_3d_detector" not in z.files


def _first_frame(clip) -> np.ndarray:
    with av.open(str(clip)) as c:
        return next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24")[None]


def test_stream_blends_online_with_the_detectors_3d(tmp_path, checkpoint, monkeypatch, capsys):  # noqa: F811
    from fastmixste.io import cli
    from train import infer as infer_cli

    det = BlazeSquareDetector()
    monkeypatch.setattr(infer_cli, "make_detector", lambda *a, **k: det)
    import fastmixste.video.detectors as detectors

    monkeypatch.setattr(detectors, "make_detector", lambda *a, **k: det)  # what --stream imports
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 16)
    out = tmp_path / "s.npz"
    code = cli.run_cli(infer_cli.main, video_args(checkpoint, clip, out, "--stream", "--lookahead", "4", "--serial"))
    assert code == 0, capsys.readouterr().err
    assert "blended online with the detector's own 3D (16 of 16 frames" in capsys.readouterr().out
    offline = tmp_path / "o.npz"
    assert infer_cli.main(video_args(checkpoint, clip, offline)) == 0
    with np.load(out) as z, np.load(offline) as o:
        meta = json.loads(str(z["meta"]))
        assert meta["detector_3d"]["fused"] and meta["detector_3d"]["online"]
        # The detector's 3D of each frame, as the offline path converts it; the online blend of it.
        expect = run_online(OnlineFusion(FPS, 4), z["pose_3d_lifter"], list(o["pose_3d_detector"]), 4)
        np.testing.assert_allclose(z["pose_3d"], expect, atol=1e-5)
        assert not np.allclose(z["pose_3d"], z["pose_3d_lifter"], atol=1e-3)
