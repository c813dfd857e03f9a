"""fastmixste.video.trajectory: the root's camera-frame position from a root-relative pose and its 2D, on synthetic
pinhole cameras."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastmixste.video.trajectory import DEFAULT_FOV_DEGREES, default_intrinsics, root_trajectory


def scene(rng: np.random.Generator, t_count: int = 30, f: tuple[float, float] = (1400.0, 1380.0),
          c: tuple[float, float] = (530.0, 970.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (root-relative pose (T, 17, 3), 2D (T, 17, 2), true root (T, 3)) of a person walking towards the camera."""
    rel = rng.normal(0, 0.25, (t_count, 17, 3))
    rel[:, 0] = 0
    root = np.stack([np.linspace(-0.8, 0.6, t_count), np.full(t_count, 0.3), np.linspace(6.0, 2.5, t_count)], -1)
    cam = rel + root[:, None]
    uv = cam[..., :2] / cam[..., 2:] * np.array(f) + np.array(c)
    return rel, uv, root


def test_exact_recovery_without_noise():
    rng = np.random.default_rng(0)
    rel, uv, root = scene(rng)
    got = root_trajectory(rel, uv, (1400.0, 1380.0), (530.0, 970.0))
    np.testing.assert_allclose(got, root, atol=1e-9)
    # Confidence weights do not matter when everything agrees; a zero weight leaves a joint out.
    w = rng.uniform(0, 1, rel.shape[:2])
    w[:, 3] = 0
    uv_bad = uv.copy()
    uv_bad[:, 3] += 200.0  # a wrong joint with weight 0 changes nothing
    np.testing.assert_allclose(root_trajectory(rel, uv_bad, (1400.0, 1380.0), (530.0, 970.0), confidence=w), root,
                               atol=1e-9)


def test_a_larger_pose_puts_the_person_further_away():
    rng = np.random.default_rng(1)
    rel, uv, root = scene(rng)
    got = root_trajectory(1.1 * rel, uv, (1400.0, 1380.0), (530.0, 970.0))
    # Depth scales with the pose's size; the direction of the root ray is kept.
    np.testing.assert_allclose(got[:, 2] / root[:, 2], 1.1, rtol=0.02)
    np.testing.assert_allclose(got[:, :2] / got[:, 2:], root[:, :2] / root[:, 2:], atol=2e-3)


def test_unsolvable_frames_are_interpolated_and_noise_smoothed():
    rng = np.random.default_rng(2)
    rel, uv, root = scene(rng)
    uv = uv.copy()
    uv[10] = np.nan  # nobody seen in frame 10
    got = root_trajectory(rel, uv, (1400.0, 1380.0), (530.0, 970.0))
    np.testing.assert_allclose(got[10], (root[9] + root[11]) / 2, atol=1e-9)  # root moves linearly
    noisy = uv + rng.normal(0, 3.0, uv.shape)
    raw = root_trajectory(rel, noisy, (1400.0, 1380.0), (530.0, 970.0))
    smooth = root_trajectory(rel, noisy, (1400.0, 1380.0), (530.0, 970.0), smooth_frames=3)
    err = lambda x: np.linalg.norm(x - root, axis=-1)[5:-5].mean()  # noqa: E731
    assert err(smooth) < 0.8 * err(raw)
    assert np.isnan(root_trajectory(rel, np.full_like(uv, np.nan), 1400.0, (530.0, 970.0))).all()


def test_default_intrinsics_and_bad_input():
    f, c = default_intrinsics(1088, 1920)
    assert c == (543.5, 959.5)
    assert 2 * math.degrees(math.atan(960 / f)) == pytest.approx(DEFAULT_FOV_DEGREES)
    with pytest.raises(ValueError, match="same T and J"):
        root_trajectory(np.zeros((4, 17, 3)), np.zeros((4, 16, 2)), f, c)
    with pytest.raises(ValueError, match="focal"):
        root_trajectory(np.zeros((4, 17, 3)), np.zeros((4, 17, 2)), 0.0, c)
    with pytest.raises(ValueError, match="positive"):
        default_intrinsics(0, 10)


def test_smoothing_keeps_the_length_of_clips_shorter_than_the_kernel():
    from fastmixste.video.trajectory import root_trajectory

    for t in (1, 2, 5, 12):
        pose = np.zeros((t, 17, 3))
        pose[:, :, 0] = np.linspace(-0.2, 0.2, 17)
        pose[:, :, 1] = np.linspace(-0.8, 0.8, 17)[::-1]
        kp = 1000.0 * pose[..., :2] / 4.0 + 500.0  # the pose at 4 m depth, focal 1000, centre 500
        root = root_trajectory(pose, kp, 1000.0, (500.0, 500.0), smooth_frames=2)
        assert root.shape == (t, 3)
        np.testing.assert_allclose(root, np.tile([0.0, 0.0, 4.0], (t, 1)), atol=1e-9)
