"""Pose metrics with VideoPose3D semantics, for numpy arrays (evaluation) and torch tensors (training).

Every function takes ``pred`` and ``target`` of the same shape ``(..., J, 3)`` and returns the mean over all
leading axes and joints, in the unit of the inputs (metres in, metres out; multiply by 1000 for mm). Each accepts
either two numpy arrays (returns a Python float) or two torch tensors (returns a 0-d tensor, differentiable where
the maths allows).

- ``mpjpe``: mean Euclidean distance per joint (Protocol #1 when the root is zero in both).
- ``p_mpjpe``: MPJPE after a per-frame similarity Procrustes alignment of ``pred`` to ``target`` (optimal scale,
  rotation with the reflection removed, translation) -- Protocol #2.
- ``n_mpjpe``: MPJPE after a per-frame optimal scale of ``pred`` (no rotation or translation).
- ``mean_velocity_error``: MPJPE of the first differences along the time axis (MPJVE, unit per frame).
- ``speed_ratio``: median joint speed of ``pred`` over that of ``target`` (1 = moves as fast; < 1 over-smoothed).

``ActionAccumulator`` does the per-action aggregation of the Human3.6M protocol: errors are averaged over all
frames of an action (frame-weighted across its sequences), and the reported number is the plain mean of the
action means.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

ArrayOrTensor = np.ndarray | torch.Tensor


def _check(pred: ArrayOrTensor, target: ArrayOrTensor, name: str) -> None:
    if isinstance(pred, torch.Tensor) != isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: pred and target must both be numpy arrays or both torch tensors, "
                        f"got {type(pred).__name__} and {type(target).__name__}")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"{name}: pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if pred.ndim < 2:
        raise ValueError(f"{name}: expected (..., J, C) arrays, got shape {tuple(pred.shape)}")


def mpjpe(pred: ArrayOrTensor, target: ArrayOrTensor) -> float | torch.Tensor:
    """(..., J, C), (..., J, C) -> scalar: mean over joints and leading axes of ||pred - target||_2.

    Equivalent: ``np.linalg.norm(pred - target, axis=-1).mean()``.
    """
    _check(pred, target, "mpjpe")
    if isinstance(pred, torch.Tensor):
        return torch.linalg.vector_norm(pred - target, dim=-1).mean()
    return float(np.linalg.norm(pred - target, axis=-1).mean())


def n_mpjpe(pred: ArrayOrTensor, target: ArrayOrTensor) -> float | torch.Tensor:
    """(..., J, C), (..., J, C) -> scalar: MPJPE after scaling each frame of ``pred`` by its least-squares scale.

    Per frame, s = <pred, target> / <pred, pred> (sums over joints and channels), then ``mpjpe(s * pred, target)``.
    """
    _check(pred, target, "n_mpjpe")
    if isinstance(pred, torch.Tensor):
        num = (pred * target).sum(dim=(-2, -1), keepdim=True)
        den = (pred * pred).sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(pred.dtype).tiny)
        return mpjpe(num / den * pred, target)
    num = (pred * target).sum(axis=(-2, -1), keepdims=True)
    den = np.maximum((pred * pred).sum(axis=(-2, -1), keepdims=True), np.finfo(np.float64).tiny)
    return mpjpe(num / den * pred, target)


def procrustes_align(pred: ArrayOrTensor, target: ArrayOrTensor) -> ArrayOrTensor:
    """(..., J, 3), (..., J, 3) -> (..., J, 3): ``pred`` mapped onto ``target`` by the per-frame similarity
    transform (scale a, proper rotation R, translation t) minimising ||a * pred @ R + t - target||.

    Orthogonal Procrustes via the SVD of the cross-covariance; when the best orthogonal matrix is a reflection
    (det < 0) the last singular direction is flipped, so R is always a rotation (Umeyama 1991). numpy inputs are
    computed in float64.
    """
    is_torch = isinstance(pred, torch.Tensor)
    lib_mean = (lambda x: x.mean(dim=-2, keepdim=True)) if is_torch else (lambda x: x.mean(axis=-2, keepdims=True))
    if not is_torch:
        pred = np.asarray(pred, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
    mu_p, mu_t = lib_mean(pred), lib_mean(target)
    p0, t0 = pred - mu_p, target - mu_t
    # Frobenius norms per frame; the clamp keeps a degenerate (all joints equal) frame finite.
    if is_torch:
        eps = torch.finfo(pred.dtype).tiny
        norm_p = torch.sqrt((p0 * p0).sum(dim=(-2, -1), keepdim=True)).clamp_min(eps)
        norm_t = torch.sqrt((t0 * t0).sum(dim=(-2, -1), keepdim=True)).clamp_min(eps)
    else:
        eps = np.finfo(np.float64).tiny
        norm_p = np.maximum(np.sqrt((p0 * p0).sum(axis=(-2, -1), keepdims=True)), eps)
        norm_t = np.maximum(np.sqrt((t0 * t0).sum(axis=(-2, -1), keepdims=True)), eps)
    p0, t0 = p0 / norm_p, t0 / norm_t
    # Cross-covariance H = t0^T p0 (..., 3, 3); R = V U^T maps p0 rows onto t0 rows: p0 @ R ~ t0.
    if is_torch:
        h = t0.transpose(-1, -2) @ p0
        u, s, vt = torch.linalg.svd(h)
        v = vt.transpose(-1, -2)
        sign = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        v = torch.cat([v[..., :-1], v[..., -1:] * sign[..., None, None]], dim=-1)
        s = torch.cat([s[..., :-1], s[..., -1:] * sign[..., None]], dim=-1)
        r = v @ u.transpose(-1, -2)
    else:
        h = np.swapaxes(t0, -1, -2) @ p0
        u, s, vt = np.linalg.svd(h)
        v = np.swapaxes(vt, -1, -2).copy()
        sign = np.sign(np.linalg.det(v @ np.swapaxes(u, -1, -2)))
        sign[sign == 0] = 1.0
        v[..., -1] *= sign[..., None]
        s = s.copy()
        s[..., -1] *= sign
        r = v @ np.swapaxes(u, -1, -2)
    # Optimal scale for the normalised shapes is the (reflection-fixed) trace of S; undo the normalisation.
    scale = s.sum(-1)[..., None, None] * norm_t / norm_p
    return scale * (pred - mu_p) @ r + mu_t


def p_mpjpe(pred: ArrayOrTensor, target: ArrayOrTensor) -> float | torch.Tensor:
    """(..., J, 3), (..., J, 3) -> scalar: MPJPE after per-frame Procrustes alignment (Protocol #2).

    Equivalent: ``mpjpe(procrustes_align(pred, target), target)``; invariant to any scale, rotation and
    translation of ``pred`` (but not to a reflection).
    """
    _check(pred, target, "p_mpjpe")
    if pred.shape[-1] != 3:
        raise ValueError(f"p_mpjpe: expected 3D joints (..., J, 3), got shape {tuple(pred.shape)}")
    aligned = procrustes_align(pred, target)
    if isinstance(pred, torch.Tensor):
        return mpjpe(aligned, target)
    return mpjpe(aligned, np.asarray(target, dtype=np.float64))


def mean_velocity_error(pred: ArrayOrTensor, target: ArrayOrTensor, time_axis: int = -3) -> float | torch.Tensor:
    """(..., T, J, C), (..., T, J, C) -> scalar: MPJPE of the first differences along ``time_axis`` (MPJVE).

    Equivalent: ``mpjpe(np.diff(pred, axis=time_axis), np.diff(target, axis=time_axis))``. The default time axis
    is the one before the joints, so it fits (T, J, C) and (B, T, J, C). Needs T >= 2.
    """
    _check(pred, target, "mean_velocity_error")
    if pred.ndim < 3 or pred.shape[time_axis] < 2:
        raise ValueError(f"mean_velocity_error: need at least 2 frames on axis {time_axis}, "
                         f"got shape {tuple(pred.shape)}")
    if isinstance(pred, torch.Tensor):
        return mpjpe(torch.diff(pred, dim=time_axis), torch.diff(target, dim=time_axis))
    return mpjpe(np.diff(pred, axis=time_axis), np.diff(target, axis=time_axis))


def joint_speeds(x: np.ndarray, time_axis: int = -3, step: int = 1) -> np.ndarray:
    """(..., T, J, C) -> (..., T-step, J): distance every joint travels over ``step`` frames, divided by ``step``
    (unit per frame).

    ``step=1``: ``np.linalg.norm(np.diff(x, axis=time_axis), axis=-1)``. A longer step measures the motion at the
    time scale of movements: white frame-to-frame noise of std s adds about s * sqrt(2) / step per frame.
    """
    x = np.asarray(x, dtype=np.float64)
    if step < 1:
        raise ValueError(f"joint_speeds: step must be >= 1, got {step}")
    if x.ndim < 3 or x.shape[time_axis] < step + 1:
        raise ValueError(f"joint_speeds: need (..., T, J, C) with T >= {step + 1} on axis {time_axis}, "
                         f"got shape {x.shape}")
    n = x.shape[time_axis]
    later = np.take(x, np.arange(step, n), axis=time_axis)
    earlier = np.take(x, np.arange(0, n - step), axis=time_axis)
    return np.linalg.norm(later - earlier, axis=-1) / step


def speed_ratio(pred: np.ndarray, target: np.ndarray, time_axis: int = -3, step: int = 1) -> float:
    """(..., T, J, C), (..., T, J, C) -> median(joint_speeds(pred, step)) / median(joint_speeds(target, step)).

    Medians over every frame pair, joint and leading index. 1 means the prediction moves as fast as the truth;
    a model that over-smooths (or predicts a near-constant pose) gives a ratio well below 1, one that jitters above
    1. Per frame (``step=1``) jitter and motion mix: a still, jittery prediction can score 1. Over ``step`` frames
    the jitter weighs ``step`` times less (Human3.6M, 50 fps: ``step=5`` is 0.1 s). Joints that never move in
    either (e.g. a root set to zero) only shift both medians; leave them out if they matter. Raises if the target
    does not move at all (the ratio is undefined).
    """
    _check(pred, target, "speed_ratio")
    if isinstance(pred, torch.Tensor):
        pred, target = pred.detach().cpu().numpy(), target.detach().cpu().numpy()
    true = float(np.median(joint_speeds(target, time_axis, step)))
    if not true > 0:
        raise ValueError("speed_ratio: the target's median joint speed is 0 (a static target); the ratio is undefined")
    return float(np.median(joint_speeds(pred, time_axis, step))) / true


class ActionAccumulator:
    """Per-action error aggregation of the Human3.6M protocol.

    ``add(action, error, count)`` records a mean ``error`` over ``count`` frames; ``means()`` returns the
    frame-weighted mean per action plus ``"Avg"``, the plain mean of the action means (the reported number).
    """

    def __init__(self) -> None:
        self._sum: dict[str, float] = {}
        self._count: dict[str, float] = {}

    def add(self, action: str, error: float, count: float) -> None:
        if count <= 0:
            raise ValueError(f"ActionAccumulator.add: count must be positive, got {count}")
        self._sum[action] = self._sum.get(action, 0.0) + float(error) * count
        self._count[action] = self._count.get(action, 0.0) + count

    @property
    def actions(self) -> list[str]:
        """Actions seen so far, in insertion order."""
        return list(self._count)

    def means(self, actions: Iterable[str] | None = None) -> dict[str, float]:
        """-> {action: mean, ..., "Avg": mean of the action means}, in ``actions`` order when given (an action
        listed there with no data is an error, so a missing action can never silently lower the average)."""
        names = list(actions) if actions is not None else sorted(self._sum)
        missing = [a for a in names if a not in self._count]
        if missing:
            raise KeyError(f"ActionAccumulator.means: no data for actions {missing}; have {sorted(self._count)}")
        out = {a: self._sum[a] / self._count[a] for a in names}
        out["Avg"] = float(np.mean(list(out.values()))) if out else float("nan")
        return out
