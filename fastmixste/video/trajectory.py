"""The person's root in the camera frame from a root-relative 3D pose and its 2D keypoints (perspective solve).

A lifter predicts the pose relative to its root (metres, camera axes: x right, y down, z forward). Where that pose
sits in the camera follows from the 2D it was lifted from: with the root at T = (Tx, Ty, Tz), joint j at
P_j + T projects to ``u_j = fx (X_j + Tx) / (Z_j + Tz) + cx`` (and v likewise), which is linear in T::

    fx Tx - (u_j - cx) Tz = (u_j - cx) Z_j - fx X_j
    fy Ty - (v_j - cy) Tz = (v_j - cy) Z_j - fy Y_j

``root_trajectory`` solves these 2J equations per frame by weighted linear least squares (each joint's two rows
weighted by its confidence), optionally smooths the result over time, and returns T per frame. Exact when the pose
and the 2D agree (a pinhole camera, no noise). The depth scales with the predicted pose's size: a pose 10% too
large puts the person 10% too far.

Intrinsics: give the focal length and principal point in pixels when known. Otherwise ``default_intrinsics``
assumes the principal point at the image centre and a field of view of ``DEFAULT_FOV_DEGREES`` = 60 degrees across
the image's longer side (a typical phone or webcam main camera; Pose2Sim's calibrated demo cameras have 59.5).
"""

from __future__ import annotations

import math

import numpy as np

from fastmixste.data.filters import gaussian_smooth

DEFAULT_FOV_DEGREES = 60.0


def default_intrinsics(width: float, height: float, fov_degrees: float = DEFAULT_FOV_DEGREES
                       ) -> tuple[float, tuple[float, float]]:
    """Image size in pixels -> (focal length in pixels, principal point (cx, cy)) for a ``fov_degrees`` field of view
    across the longer side and the principal point at the centre (pixel centres on integers)."""
    if not (width > 0 and height > 0):
        raise ValueError(f"default_intrinsics: image size must be positive, got {width} x {height}")
    if not 0 < fov_degrees < 180:
        raise ValueError(f"default_intrinsics: fov_degrees must be in (0, 180), got {fov_degrees}")
    focal = 0.5 * max(width, height) / math.tan(math.radians(fov_degrees) / 2)
    return focal, ((width - 1) / 2, (height - 1) / 2)


def root_trajectory(pose_3d: np.ndarray, keypoints_2d: np.ndarray, focal: float | tuple[float, float],
                    centre: tuple[float, float], *, confidence: np.ndarray | None = None,
                    smooth_frames: int = 0) -> np.ndarray:
    """(T, J, 3) root-relative metres, (T, J, 2) pixels -> (T, 3) root position in the camera frame, metres.

    ``focal`` (fx, fy) or one value and ``centre`` (cx, cy) in pixels (``default_intrinsics`` when unknown).
    ``confidence`` (T, J) weights each joint's equations (0 leaves a joint out; NaN 2D counts as 0). A frame with
    fewer than two weighted joints, or a degenerate system, is interpolated from its neighbours (NaN when no frame
    can be solved). ``smooth_frames`` > 0 then averages T with a centred Gaussian of that standard deviation in
    frames (edges renormalised).
    """
    pose = np.asarray(pose_3d, np.float64)
    kp = np.asarray(keypoints_2d, np.float64)
    if pose.ndim != 3 or pose.shape[-1] != 3 or kp.shape != pose.shape[:2] + (2,):
        raise ValueError(f"root_trajectory: expected pose (T, J, 3) and keypoints (T, J, 2) of the same T and J, "
                         f"got {pose.shape} and {kp.shape}")
    fx, fy = (float(focal), float(focal)) if np.ndim(focal) == 0 else (float(focal[0]), float(focal[1]))
    if not (fx > 0 and fy > 0):
        raise ValueError(f"root_trajectory: focal length must be positive, got {focal}")
    if smooth_frames < 0:
        raise ValueError(f"root_trajectory: smooth_frames must be >= 0, got {smooth_frames}")
    cx, cy = float(centre[0]), float(centre[1])
    w = np.ones(pose.shape[:2]) if confidence is None else np.asarray(confidence, np.float64)
    if w.shape != pose.shape[:2]:
        raise ValueError(f"root_trajectory: confidence must be (T, J) = {pose.shape[:2]}, got {w.shape}")
    ok = np.isfinite(kp).all(-1) & np.isfinite(pose).all(-1) & np.isfinite(w) & (w > 0)
    w = np.where(ok, w, 0.0)
    du = np.where(ok, kp[..., 0] - cx, 0.0)
    dv = np.where(ok, kp[..., 1] - cy, 0.0)
    x, y, z = (np.where(ok, pose[..., i], 0.0) for i in range(3))
    t, j = pose.shape[:2]
    a = np.zeros((t, 2 * j, 3))
    b = np.zeros((t, 2 * j))
    a[:, :j, 0], a[:, :j, 2], b[:, :j] = fx, -du, du * z - fx * x
    a[:, j:, 1], a[:, j:, 2], b[:, j:] = fy, -dv, dv * z - fy * y
    sw = np.sqrt(np.concatenate([w, w], axis=1))
    a, b = a * sw[..., None], b * sw
    ata = np.einsum("tki,tkj->tij", a, a)
    atb = np.einsum("tki,tk->ti", a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        solvable = (ok.sum(1) >= 2) & (np.linalg.cond(ata) < 1e12)
    root = np.full((t, 3), np.nan)
    if solvable.any():
        root[solvable] = np.linalg.solve(ata[solvable], atb[solvable][..., None])[..., 0]
        frames = np.arange(t)
        for i in range(3):
            root[:, i] = np.interp(frames, frames[solvable], root[solvable, i])
    if smooth_frames > 0 and solvable.any():
        root = gaussian_smooth(root, smooth_frames, edges="renormalise")
    return root


