"""Joint centres -> what a 2D detector sees: the 17 joints as they come out of ``fastmixste.video.keypoints.to_h36m``.

Lifters are trained on Human3.6M joint centres, but a video's 2D comes from a detector's surface keypoints
(COCO-17, BlazePose-33) converted by rule: head = mid-eyes, neck/nose = the nose, thorax = mid-shoulders,
spine = halfway between pelvis and thorax, pelvis = mid-hips. A model trained on joint centres and fed converted
keypoints sees a head 8-10 cm too low and a neck pushed onto the face, and answers in a joint definition that no
real-video reference (triangulated from the same detector) uses. ``detector_joints`` rebuilds the converted
definition from joint centres, in 3D, so that pretraining can project it (the 2D input, as inference makes it) and
regress it (the 3D target, as a triangulation of the detector's keypoints defines it).

The face points come from a head frame: ``up`` along neck/nose -> head top, ``forward`` the torso's facing
direction (shoulder and hip lines crossed with the torso axis, made orthogonal to ``up``), ``right`` the person's
right. The offsets are adult averages (metres, in that frame), scaled with the head bone of the skeleton:

=============  ==================  =====================  ===================
point          along ``up``        along ``forward``      along ``right``
=============  ==================  =====================  ===================
nose tip       0.035               0.10                   0
eyes           0.065               0.075                  +-0.032
=============  ==================  =====================  ===================

relative to the neck/nose joint, for a head bone (neck/nose -> head top) of 0.115 m. Mirroring a pose (x -> -x,
left and right swapped) and rotating it commute with the construction (tested).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

_PELVIS, _R_HIP, _L_HIP, _SPINE, _THORAX, _NOSE, _HEAD = 0, 1, 4, 7, 8, 9, 10
_L_SHOULDER, _R_SHOULDER = 11, 14
HEAD_BONE_M = 0.115
NOSE_OFFSET = (0.035, 0.10, 0.0)  # (up, forward, right) metres at HEAD_BONE_M
EYE_OFFSET = (0.065, 0.075, 0.032)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def detector_joints(joints: ArrayT) -> ArrayT:
    """(..., 17, 3) Human3.6M joint centres (metres, any axes, right-handed) -> (..., 17, 3) the same body in the
    detector-converted definition (see the module docstring); limbs and hips are unchanged.

    numpy in, numpy out (float64); torch in, torch out (same dtype and device).
    """
    is_np = isinstance(joints, np.ndarray)
    p = torch.from_numpy(np.asarray(joints, dtype=np.float64)) if is_np else joints
    if p.dim() < 2 or p.shape[-2:] != (17, 3):
        raise ValueError(f"detector_joints: expected (..., 17, 3), got {tuple(p.shape)}")
    shoulders = p[..., _L_SHOULDER, :] - p[..., _R_SHOULDER, :]
    hips = p[..., _L_HIP, :] - p[..., _R_HIP, :]
    torso_up = p[..., _THORAX, :] - p[..., _PELVIS, :]
    forward = torch.linalg.cross(shoulders + hips, torso_up)  # (person's left - right) x up = forward
    head = p[..., _HEAD, :] - p[..., _NOSE, :]
    scale = head.norm(dim=-1, keepdim=True) / HEAD_BONE_M
    up = _unit(head)
    forward = _unit(forward - (forward * up).sum(-1, keepdim=True) * up)
    right = torch.linalg.cross(forward, up)  # forward x up = the person's right

    def at(offset: tuple[float, float, float], side: float = 0.0) -> torch.Tensor:
        u, f, r = offset
        return p[..., _NOSE, :] + scale * (u * up + f * forward + side * r * right)

    out = p.clone()
    out[..., _PELVIS, :] = (p[..., _L_HIP, :] + p[..., _R_HIP, :]) / 2
    out[..., _THORAX, :] = (p[..., _L_SHOULDER, :] + p[..., _R_SHOULDER, :]) / 2
    out[..., _SPINE, :] = (out[..., _PELVIS, :] + out[..., _THORAX, :]) / 2
    out[..., _NOSE, :] = at(NOSE_OFFSET)
    out[..., _HEAD, :] = (at(EYE_OFFSET, 1.0) + at(EYE_OFFSET, -1.0)) / 2
    return out.numpy() if is_np else out
