"""The 17-joint Human3.6M skeleton used throughout fastmixste (VideoPose3D joint order)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

H36M_JOINT_NAMES: list[str] = [
    "pelvis",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "spine",
    "thorax",
    "neck_nose",
    "head",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
]
H36M_PARENTS: list[int] = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15]
H36M_LEFT: list[int] = [4, 5, 6, 11, 12, 13]
H36M_RIGHT: list[int] = [1, 2, 3, 14, 15, 16]
# Indices of the 17 used joints among the 32 of data_3d_h36m.npz.
H36M_32_TO_17: list[int] = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]
# Parents of the 32-joint Human3.6M mocap skeleton (VideoPose3D order).
H36M_32_PARENTS: list[int] = [-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12,
                              16, 17, 18, 19, 20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30]  # fmt: skip
NUM_JOINTS = 17


def flip_pose(x: ArrayT, left: Sequence[int] = H36M_LEFT, right: Sequence[int] = H36M_RIGHT) -> ArrayT:
    """(..., J, C) -> (..., J, C): mirror a pose left-right; numpy or torch, returns a new array.

    Negates channel 0 (x in normalised screen or camera coordinates) and swaps the left and right joints, so
    that the result is again a plausible pose of a person. Equivalent to::

        y = x.copy(); y[..., 0] *= -1; y[..., left + right, :] = y[..., right + left, :]
    """
    if len(left) != len(right):
        raise ValueError(f"left and right joint lists must have the same length, got {len(left)} and {len(right)}")
    if x.ndim < 2:
        raise ValueError(f"flip_pose expects (..., J, C), got shape {tuple(x.shape)}")
    src = list(right) + list(left)
    dst = list(left) + list(right)
    y = x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)
    y[..., 0] = -y[..., 0]
    y[..., dst, :] = y[..., src, :]
    return y


def bone_lengths(x: ArrayT, parents: Sequence[int] = H36M_PARENTS) -> ArrayT:
    """(..., J, 3) -> (..., J-1): length of every bone (joint j to its parent, j = 1..J-1); numpy or torch."""
    if x.ndim < 2 or x.shape[-2] != len(parents):
        raise ValueError(f"bone_lengths expects (..., {len(parents)}, C), got shape {tuple(x.shape)}")
    children = [j for j, p in enumerate(parents) if p >= 0]
    par = [parents[j] for j in children]
    d = x[..., children, :] - x[..., par, :]
    if isinstance(d, torch.Tensor):
        return torch.linalg.vector_norm(d, dim=-1)
    return np.linalg.norm(d, axis=-1)
