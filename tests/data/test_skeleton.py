import numpy as np
import pytest
import torch

from fastmixste.data.skeleton import (
    H36M_32_TO_17,
    H36M_JOINT_NAMES,
    H36M_LEFT,
    H36M_PARENTS,
    H36M_RIGHT,
    bone_lengths,
    flip_pose,
)


def test_skeleton_tables_are_consistent():
    assert len(H36M_JOINT_NAMES) == len(H36M_PARENTS) == len(H36M_32_TO_17) == 17
    assert all(p < j for j, p in enumerate(H36M_PARENTS))  # parents come first
    for left, right in zip(H36M_LEFT, H36M_RIGHT):
        assert H36M_JOINT_NAMES[left].replace("l_", "r_") == H36M_JOINT_NAMES[right]


@pytest.mark.parametrize("channels", [2, 3])
def test_flip_pose_numpy_and_torch(channels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9, 17, channels)).astype(np.float32)
    y = flip_pose(x)
    assert y is not x and np.array_equal(x, x.copy())  # input untouched
    np.testing.assert_array_equal(y[..., 4, 0], -x[..., 1, 0])  # left hip <- mirrored right hip
    np.testing.assert_array_equal(y[..., 13, 1:], x[..., 16, 1:])  # left wrist <- right wrist, other channels kept
    np.testing.assert_array_equal(y[..., 0, 0], -x[..., 0, 0])  # centre joints only mirror
    np.testing.assert_array_equal(flip_pose(y), x)  # an involution
    yt = flip_pose(torch.from_numpy(x))
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_array_equal(yt.numpy(), y)


def test_flip_keeps_bone_lengths():
    x = np.random.default_rng(1).standard_normal((5, 17, 3))
    np.testing.assert_allclose(bone_lengths(flip_pose(x))[:, [0, 1, 2]], bone_lengths(x)[:, [3, 4, 5]])


def test_bone_lengths_values_and_errors():
    x = np.zeros((17, 3))
    x[1] = [0.0, 3.0, 4.0]  # r_hip 5 from the pelvis
    x[2] = x[1] + [0.0, 0.0, 2.0]
    b = bone_lengths(x)
    assert b.shape == (16,)
    assert b[0] == pytest.approx(5.0) and b[1] == pytest.approx(2.0)
    assert b[2] == pytest.approx(np.linalg.norm(x[2]))  # r_ankle (at origin) to r_knee
    bt = bone_lengths(torch.from_numpy(np.stack([x, 2 * x])))
    assert bt.shape == (2, 16)
    np.testing.assert_allclose(bt[1].numpy(), 2 * b)
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, C\)"):
        bone_lengths(np.zeros((3, 16, 3)))
