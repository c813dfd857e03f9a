"""Metrics against hand-computed cases, numpy/torch agreement, and the per-action aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastmixste.eval.metrics import (
    ActionAccumulator,
    joint_speeds,
    mean_velocity_error,
    mpjpe,
    n_mpjpe,
    p_mpjpe,
    procrustes_align,
    speed_ratio,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


@pytest.fixture
def pose() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((6, 17, 3))


def test_mpjpe_hand_case():
    target = np.zeros((2, 4, 3))
    pred = target + np.array([3.0, 4.0, 0.0])  # every joint 5 away
    pred[1, 2] = [0.0, 0.0, 13.0]  # one joint 13 away
    assert mpjpe(pred, target) == pytest.approx((7 * 5 + 13) / 8)
    assert mpjpe(torch.tensor(pred), torch.tensor(target)).item() == pytest.approx((7 * 5 + 13) / 8)


def test_p_mpjpe_zero_after_similarity_transform(pose):
    rng = np.random.default_rng(2)
    pred = np.stack([2.7 * p @ random_rotation(rng) + rng.standard_normal(3) for p in pose])
    assert mpjpe(pred, pose) > 1.0
    assert p_mpjpe(pred, pose) == pytest.approx(0.0, abs=1e-9)
    assert p_mpjpe(torch.tensor(pred), torch.tensor(pose)).item() == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(procrustes_align(pred, pose), pose, atol=1e-9)


def test_p_mpjpe_reflection_is_not_a_rotation(pose):
    mirrored = pose * np.array([-1.0, 1.0, 1.0])
    # A non-planar pose and its mirror image are not related by a rotation: the error must stay.
    err = p_mpjpe(mirrored, pose)
    assert err > 0.1
    # And the alignment must be the best proper similarity: no random rotation (with its own optimal scale and
    # translation) beats it in squared error, the quantity Procrustes minimises.
    rng = np.random.default_rng(3)
    aligned = procrustes_align(mirrored, pose)
    best = ((aligned - pose) ** 2).sum(axis=(1, 2))
    p0 = mirrored - mirrored.mean(1, keepdims=True)
    t0 = pose - pose.mean(1, keepdims=True)
    for _ in range(300):
        r = random_rotation(rng)
        rotated = p0 @ r
        # Scale must stay positive: -1 times a rotation is a reflection in 3D.
        scale = np.maximum((rotated * t0).sum(axis=(1, 2)), 0.0) / (rotated * rotated).sum(axis=(1, 2))
        sq = ((scale[:, None, None] * rotated - t0) ** 2).sum(axis=(1, 2))
        assert np.all(best <= sq + 1e-9)


def test_p_mpjpe_planar_mirror_is_a_rotation():
    # In the z = 0 plane, x -> -x equals a 180 degree rotation about y, so Protocol #2 forgives it.
    target = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.5, 1.0, 0.0], [-0.5, 3.0, 0.0]]])
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    assert mpjpe(mirrored, target) > 0.5
    assert p_mpjpe(mirrored, target) == pytest.approx(0.0, abs=1e-9)


def test_n_mpjpe_hand_cases(pose):
    assert n_mpjpe(0.5 * pose, pose) == pytest.approx(0.0, abs=1e-12)
    # Two joints on a line: target (1, 0, 0), (3, 0, 0); pred (1, 0, 0), (1, 0, 0) -> s = 4 / 2 = 2,
    # scaled pred (2, 0, 0), (2, 0, 0): errors 1 and 1.
    target = np.array([[[1.0, 0, 0], [3.0, 0, 0]]])
    pred = np.array([[[1.0, 0, 0], [1.0, 0, 0]]])
    assert n_mpjpe(pred, target) == pytest.approx(1.0)
    assert n_mpjpe(torch.tensor(pred), torch.tensor(target)).item() == pytest.approx(1.0)


def test_velocity_error_hand_cases(pose):
    assert mean_velocity_error(pose + np.array([0.3, -2.0, 1.0]), pose) == pytest.approx(0.0, abs=1e-12)
    # pred drifts 1 unit per frame along x: every velocity is off by exactly 1.
    drift = pose + np.arange(len(pose))[:, None, None] * np.array([1.0, 0.0, 0.0])
    assert mean_velocity_error(drift, pose) == pytest.approx(1.0)
    batched = torch.tensor(np.stack([drift, pose + 5.0]))  # (B, T, J, 3): time is axis -3
    assert mean_velocity_error(batched, torch.tensor(np.stack([pose, pose]))).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 frames"):
        mean_velocity_error(pose[:1], pose[:1])


@pytest.mark.parametrize("fn", [mpjpe, p_mpjpe, n_mpjpe, mean_velocity_error])
def test_torch_matches_numpy(fn, pose):
    pred = pose + np.random.default_rng(4).standard_normal(pose.shape) * 0.1
    expected = fn(pred, pose)
    got = fn(torch.tensor(pred), torch.tensor(pose))
    assert isinstance(expected, float) and isinstance(got, torch.Tensor)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    got32 = fn(torch.tensor(pred, dtype=torch.float32), torch.tensor(pose, dtype=torch.float32))
    assert got32.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("fn", [mpjpe, n_mpjpe, mean_velocity_error, p_mpjpe])
def test_torch_metrics_differentiable(fn, pose):
    pred = torch.tensor(pose + 0.1, requires_grad=True)
    fn(pred, torch.tensor(pose)).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_metric_errors():
    with pytest.raises(ValueError, match="same shape"):
        mpjpe(np.zeros((3, 17, 3)), np.zeros((3, 16, 3)))
    with pytest.raises(TypeError, match="both"):
        mpjpe(np.zeros((3, 17, 3)), torch.zeros(3, 17, 3))
    with pytest.raises(ValueError, match="3D joints"):
        p_mpjpe(np.zeros((3, 17, 2)), np.zeros((3, 17, 2)))


def test_action_accumulator_frame_weighted_then_plain_mean():
    acc = ActionAccumulator()
    acc.add("Walking", 10.0, 100)
    acc.add("Walking", 40.0, 50)  # Walking: (1000 + 2000) / 150 = 20
    acc.add("Eating", 30.0, 1)
    means = acc.means(["Walking", "Eating"])
    assert list(means) == ["Walking", "Eating", "Avg"]
    assert means["Walking"] == pytest.approx(20.0)
    assert means["Avg"] == pytest.approx(25.0)  # not frame-weighted across actions
    with pytest.raises(KeyError, match="Sitting"):
        acc.means(["Walking", "Sitting"])
    with pytest.raises(ValueError, match="positive"):
        acc.add("Walking", 1.0, 0)
    assert math.isnan(ActionAccumulator().means()["Avg"])


def test_joint_speeds_hand_case():
    x = np.zeros((3, 2, 3))
    x[1, 0] = [3.0, 4.0, 0.0]  # joint 0 moves 5, then back 5; joint 1 moves 0, then 2
    x[2, 1] = [0.0, 0.0, 2.0]
    np.testing.assert_allclose(joint_speeds(x), [[5.0, 0.0], [5.0, 2.0]])
    with pytest.raises(ValueError, match="T >= 2"):
        joint_speeds(x[:1])


def test_speed_ratio():
    rng = np.random.default_rng(3)
    target = np.cumsum(rng.standard_normal((2, 40, 17, 3)) * 0.01, axis=1)  # (B, T, J, 3) random walks
    mean = target.mean(axis=1, keepdims=True)
    assert speed_ratio(target, target) == pytest.approx(1.0)
    # Half the movement around the mean pose: half the speed, whatever the pose offset.
    assert speed_ratio(mean + 0.5 * (target - mean) + 0.3, target) == pytest.approx(0.5)
    assert speed_ratio(np.broadcast_to(mean, target.shape), target) == 0.0  # a constant pose does not move
    jitter = target + rng.standard_normal(target.shape) * 0.05
    assert speed_ratio(jitter, target) > 2.0  # noise moves faster than the motion
    t = torch.tensor(target)
    assert speed_ratio(0.5 * t, t) == pytest.approx(0.5)
    # Time on another axis: (T, B, J, 3).
    assert speed_ratio(np.swapaxes(2 * target, 0, 1), np.swapaxes(target, 0, 1), time_axis=0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="static target"):
        speed_ratio(target, np.broadcast_to(mean, target.shape))
    with pytest.raises(ValueError, match="same shape"):
        speed_ratio(target[:, :5], target)


def test_speed_ratio_over_several_frames_separates_jitter_from_motion():
    rng = np.random.default_rng(4)
    t = np.arange(100)[:, None, None]
    smooth = 0.1 * np.sin(2 * np.pi * t / 50 + rng.uniform(0, 2 * np.pi, (1, 17, 3)))  # (T, J, 3), 1 s period
    assert speed_ratio(smooth, smooth, step=5) == pytest.approx(1.0)
    assert speed_ratio(0.5 * smooth, smooth, step=5) == pytest.approx(0.5)
    # A still pose with white jitter: about as "fast" as the motion frame to frame, far slower over 5 frames.
    still = smooth.mean(0, keepdims=True) + rng.standard_normal(smooth.shape) * 0.005
    per_frame, slow = speed_ratio(still, smooth), speed_ratio(still, smooth, step=5)
    assert per_frame > 0.7 and slow < 0.3 * per_frame
    np.testing.assert_allclose(joint_speeds(smooth, step=5)[0], np.linalg.norm(smooth[5] - smooth[0], axis=-1) / 5)
    with pytest.raises(ValueError, match="T >= 6"):
        joint_speeds(smooth[:5], step=5)
    with pytest.raises(ValueError, match="step must be >= 1"):
        joint_speeds(smooth, step=0)
