"""Scores of the real-data check, in plain numpy of their own (tests check them against ``fastmixste.eval.metrics``).

Every pose function takes ``pred`` and ``target`` of shape (T, J, 3) in metres, root-relative, and returns
millimetres (errors) or a plain ratio; each is the mean over frames and joints:

- ``mpjpe``: mean joint distance.
- ``n_mpjpe``: after scaling each predicted frame by its least-squares scale onto the target.
- ``p_mpjpe``: after each predicted frame's least-squares similarity (scale, rotation without reflection,
  translation) onto the target (Procrustes, via the SVD of the cross-covariance).
- ``speed_ratio``: a statistic (median, as ``fastmixste.eval.metrics.speed_ratio``, or mean) of the predicted joint
  speeds over ``step`` frames divided by the same of the target's; pairs where either frame is not valid are left out.
- ``root_error``: mean distance of two (T, 3) trajectories, millimetres.
"""

from __future__ import annotations

import numpy as np


def _pair(pred: np.ndarray, target: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape or p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"{name}: expected two (..., J, 3) arrays of one shape, got {p.shape} and {t.shape}")
    return p, t


def mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """(..., J, 3) x 2 -> mean Euclidean joint distance, in millimetres (inputs in metres)."""
    p, t = _pair(pred, target, "mpjpe")
    return 1000.0 * float(np.sqrt(((p - t) ** 2).sum(-1)).mean())


def n_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """(..., J, 3) x 2 -> MPJPE (mm) of ``s * pred`` with s = <pred, target> / <pred, pred> per frame."""
    p, t = _pair(pred, target, "n_mpjpe")
    num = np.einsum("...jc,...jc->...", p, t)
    den = np.einsum("...jc,...jc->...", p, p)
    s = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return mpjpe(s[..., None, None] * p, t)


def similarity_align(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(..., J, 3) x 2 -> (..., J, 3): each frame of ``pred`` moved by its best similarity transform onto ``target``.

    Centre both, take the SVD U S V^T of pred0^T target0 (3 x 3); the rotation is U D V^T with D = diag(1, 1,
    det(U V^T)) so no reflection; the scale is trace(S D) / |pred0|^2.
    """
    p, t = _pair(pred, target, "similarity_align")
    mp, mt = p.mean(-2, keepdims=True), t.mean(-2, keepdims=True)
    p0, t0 = p - mp, t - mt
    u, s, vt = np.linalg.svd(np.swapaxes(p0, -1, -2) @ t0)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    s = s.copy()
    s[..., -1] *= d
    u = u.copy()
    u[..., :, -1] *= d[..., None]
    rot = u @ vt
    norm = (p0 ** 2).sum((-2, -1))
    scale = np.divide(s.sum(-1), norm, out=np.zeros_like(norm), where=norm > 0)
    return scale[..., None, None] * p0 @ rot + mt


def p_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """(..., J, 3) x 2 -> MPJPE (mm) after the per-frame similarity alignment of ``pred`` onto ``target``."""
    p, t = _pair(pred, target, "p_mpjpe")
    return mpjpe(similarity_align(p, t), t)


def speed_ratio(pred: np.ndarray, target: np.ndarray, step: int = 1, *, valid: np.ndarray | None = None,
                stat: str = "median") -> float:
    """(T, J, 3) x 2 -> stat of |pred[t + step] - pred[t]| over stat of the same of ``target`` (joints and pairs).

    ``valid`` (T,) bool marks the frames that count; a pair counts when both its frames do. ``stat`` is "median"
    (as ``fastmixste.eval.metrics.speed_ratio``) or "mean". NaN when the target does not move or no pair counts.
    """
    p, t = _pair(pred, target, "speed_ratio")
    if p.ndim != 3:
        raise ValueError(f"speed_ratio: expected (T, J, 3), got {p.shape}")
    if step < 1:
        raise ValueError(f"speed_ratio: step must be >= 1, got {step}")
    if stat not in ("median", "mean"):
        raise ValueError(f"speed_ratio: stat must be 'median' or 'mean', got {stat!r}")
    ok = np.ones(len(p), bool) if valid is None else np.asarray(valid, bool)
    pairs = ok[step:] & ok[:-step] if len(p) > step else np.zeros(0, bool)
    if not pairs.any():
        return float("nan")
    reduce = np.median if stat == "median" else np.mean
    vp = np.sqrt(((p[step:] - p[:-step]) ** 2).sum(-1))[pairs]
    vt = np.sqrt(((t[step:] - t[:-step]) ** 2).sum(-1))[pairs]
    true = float(reduce(vt))
    return float(reduce(vp)) / true if true > 0 else float("nan")


def root_error(pred: np.ndarray, target: np.ndarray) -> float:
    """(T, 3) x 2 metres -> mean distance in millimetres."""
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape or p.ndim != 2 or p.shape[-1] != 3:
        raise ValueError(f"root_error: expected two (T, 3) arrays of one shape, got {p.shape} and {t.shape}")
    return 1000.0 * float(np.sqrt(((p - t) ** 2).sum(-1)).mean())


def pose_scores(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """(T, J, 3) x 2, (T,) bool -> {"mpjpe", "n_mpjpe", "p_mpjpe" (mm, over the valid frames), "speed_ratio",
    "speed_ratio_5" (median, per frame and over 5 frames), "speed_ratio_mean", "speed_ratio_5_mean", "frames"}."""
    valid = np.asarray(valid, bool)
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    out = {"frames": int(valid.sum())}
    if not valid.any():
        return out | {k: float("nan") for k in ("mpjpe", "n_mpjpe", "p_mpjpe", "speed_ratio", "speed_ratio_5")}
    out["mpjpe"] = mpjpe(p[valid], t[valid])
    out["n_mpjpe"] = n_mpjpe(p[valid], t[valid])
    out["p_mpjpe"] = p_mpjpe(p[valid], t[valid])
    for step, key in ((1, "speed_ratio"), (5, "speed_ratio_5")):
        out[key] = speed_ratio(p, t, step, valid=valid)
        out[key + "_mean"] = speed_ratio(p, t, step, valid=valid, stat="mean")
    return out
