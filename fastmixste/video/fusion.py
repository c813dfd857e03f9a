"""The lifter's 3D combined with the detector's own 3D, where the detector gives one (MediaPipe's world landmarks).

A detector such as MediaPipe Pose reports a 3D pose of its own per frame (``pose_world_landmarks``: metres, origin
between the hips, roughly the camera's axes). On a real recording (``python -m benchmarks.realdata``, README "Real
video") it is better than the lifter alone, but it jitters from frame to frame and its errors differ from the
lifter's. ``fuse_with_detector_3d`` combines the two per frame:

1. the detector's 3D, converted to the 17 joints, gaps filled over time and low-passed by a Gaussian of
   ``smooth_seconds`` (its jitter);
2. the lifter's pose scaled to the detector's size (one factor for the clip) and turned onto it frame by frame (the
   rotation that best maps one onto the other, Kabsch, no reflection), so the two agree on where the person faces;
3. the weighted mean, ``lifter_weight`` for the lifter and the rest for the detector, root-relative.

Both settings were chosen on Pose2Sim's ``Demo_MultiPerson`` (the project's own real-data check); the score is flat
around them (README). Frames where the detector saw nobody take its 3D interpolated from the nearest frames where it
did; a clip with no detector 3D at all keeps the lifter's pose. ``OnlineFusion`` does the same for a stream
(``train.infer --stream``), frame by frame with what has come.
"""

from __future__ import annotations

import numpy as np

from fastmixste.data.filters import gaussian_smooth, gaussian_weights
from fastmixste.video.keypoints import to_h36m

#: Share of the lifter's pose in the fused pose; the detector's 3D has the rest.
LIFTER_WEIGHT = 0.25
#: Standard deviation, in seconds, of the Gaussian that low-passes the detector's 3D (2 frames at 60 fps).
SMOOTH_SECONDS = 1.0 / 30.0


def blazepose_world_to_h36m(points: np.ndarray) -> np.ndarray:
    """(..., 33, 3) BlazePose 3D points (metres) -> (..., 17, 3) Human3.6M joints by ``to_h36m``'s table, the same
    one the 2D goes through (NaN propagates)."""
    p = np.asarray(points, np.float64)
    if p.ndim < 2 or p.shape[-2:] != (33, 3):
        raise ValueError(f"expected (..., 33, 3) BlazePose points, got {p.shape}")
    ones = np.ones(p.shape[:-1] + (1,))
    xy = to_h36m(np.concatenate([p[..., :2], ones], axis=-1), "blazepose")[..., :2]
    z = to_h36m(np.concatenate([p[..., 2:], p[..., 2:], ones], axis=-1), "blazepose")[..., :1]
    return np.concatenate([xy, z], axis=-1)


def fill_frames(x: np.ndarray) -> np.ndarray | None:
    """(T, J, 3) with NaN frames -> the same with every incomplete frame linearly interpolated between the nearest
    complete ones (held at the ends); None when no frame is complete."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x).all((-2, -1))
    if not ok.any():
        return None
    if ok.all():
        return x.copy()
    t = np.arange(len(x))
    flat = x[ok].reshape(int(ok.sum()), -1)
    out = np.stack([np.interp(t, t[ok], flat[:, k]) for k in range(flat.shape[1])], axis=-1)
    return out.reshape(x.shape)


def rotate_onto(pose: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(T, J, 3) x 2, root-relative -> ``pose`` turned about its root, per frame, by the rotation (no reflection)
    that brings it closest to ``target`` in the least-squares sense (Kabsch)."""
    u, _, vt = np.linalg.svd(np.swapaxes(pose, -1, -2) @ target)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, -1] *= np.where(d == 0, 1.0, d)[..., None]
    return pose @ (u @ vt)


def fuse_with_detector_3d(lifted: np.ndarray, detector_3d: np.ndarray, fps: float, *,
                          lifter_weight: float = LIFTER_WEIGHT,
                          smooth_seconds: float = SMOOTH_SECONDS) -> tuple[np.ndarray, dict]:
    """(T, 17, 3) lifted pose + (T, 17, 3) the detector's 3D (NaN where it saw nobody) -> ((T, 17, 3) float32 fused
    pose, root-relative metres in the lifter's camera axes; a dict saying what was done).

    With no detector 3D in any frame the lifted pose is returned unchanged (``info["fused"]`` False).
    """
    lifted = np.asarray(lifted, np.float64)
    det = np.asarray(detector_3d, np.float64)
    if lifted.ndim != 3 or lifted.shape[-1] != 3 or det.shape != lifted.shape:
        raise ValueError(f"expected the lifted pose and the detector's 3D as two (T, J, 3) arrays of one shape, got "
                         f"{lifted.shape} and {det.shape}")
    if not 0.0 <= lifter_weight <= 1.0:
        raise ValueError(f"lifter_weight must be in [0, 1], got {lifter_weight}")
    if not (np.isfinite(fps) and fps > 0) or not (np.isfinite(smooth_seconds) and smooth_seconds >= 0):
        raise ValueError(f"need fps > 0 and smooth_seconds >= 0, got fps={fps}, smooth_seconds={smooth_seconds}")
    lifted = lifted - lifted[:, :1]
    seen = np.isfinite(det).all((-2, -1))
    filled = fill_frames(det)
    if filled is None:
        return lifted.astype(np.float32), {"fused": False, "reason": "the detector gave no 3D in any frame"}
    smooth = gaussian_smooth(filled - filled[:, :1], smooth_seconds * fps)  # edges held
    size_lifted = np.linalg.norm(lifted, axis=-1).mean()
    scale = np.linalg.norm(smooth, axis=-1).mean() / size_lifted if size_lifted > 0 else 1.0
    turned = rotate_onto(scale * lifted, smooth)
    fused = lifter_weight * turned + (1.0 - lifter_weight) * smooth
    return fused.astype(np.float32), {
        "fused": True, "lifter_weight": lifter_weight, "smooth_seconds": smooth_seconds,
        "detector_3d_frames": int(seen.sum()), "frames": len(lifted), "scale_to_detector": float(scale),
    }


class OnlineFusion:
    """``fuse_with_detector_3d`` for a stream: frame t is fused once the detector's 3D of frames up to
    t + ``lookahead`` has come (``add`` each frame's as it arrives, then ``fuse`` the lifted frames in order).

    The low-pass is the offline Gaussian over the frames that are there: the past ones and at most ``lookahead``
    future ones (with a lookahead of at least 3 sigma, 6 frames at 60 fps, it is the offline one away from the
    stream's ends); frames without detector 3D are left out of it. The scale to the detector is the running ratio
    of the mean sizes over the frames fused so far (offline takes the whole clip's). A frame with no detector 3D
    within its window takes the last fused frame's detector pose; before any, the lifted pose is kept. Memory: the
    last 2 x radius + lookahead frames.
    """

    def __init__(self, fps: float, lookahead: int, *, lifter_weight: float = LIFTER_WEIGHT,
                 smooth_seconds: float = SMOOTH_SECONDS) -> None:
        if not (np.isfinite(fps) and fps > 0) or lookahead < 0 or not 0.0 <= lifter_weight <= 1.0:
            raise ValueError(f"OnlineFusion: need fps > 0, lookahead >= 0, lifter_weight in [0, 1]; got fps={fps}, "
                             f"lookahead={lookahead}, lifter_weight={lifter_weight}")
        self._kernel = gaussian_weights(smooth_seconds * fps)  # the offline low-pass's taps
        self.radius = len(self._kernel) // 2
        self.lookahead, self.lifter_weight = lookahead, lifter_weight
        self._world: dict[int, np.ndarray] = {}  # frame -> (J, 3) root-relative detector 3D (finite frames only)
        self._added = 0
        self._sizes = [0.0, 0.0]  # running sums of the detector's and the lifter's mean joint distance to the root
        self._held: np.ndarray | None = None
        self.frames_with_3d = 0

    def add(self, world: np.ndarray | None) -> None:
        """The detector's 3D of the next frame ((J, 3) metres, NaN or None where it gave none)."""
        if world is not None and np.isfinite(world).all():
            w = np.asarray(world, np.float64)
            self._world[self._added] = w - w[:1]
            self.frames_with_3d += 1
        self._added += 1
        for old in [k for k in self._world if k < self._added - 2 * self.radius - self.lookahead - 1]:
            del self._world[old]

    def fuse(self, index: int, lifted: np.ndarray) -> np.ndarray:
        """Frame ``index``'s (J, 3) lifted pose -> (J, 3) float32 fused pose, root-relative."""
        lifted = np.asarray(lifted, np.float64)
        lifted = lifted - lifted[:1]
        near = [(k, self._kernel[k - index + self.radius]) for k in range(index - self.radius, index + self.radius + 1)
                if k in self._world]
        if near:
            det = sum(w * self._world[k] for k, w in near) / sum(w for _, w in near)
            self._held = det
        elif self._held is not None:
            det = self._held
        else:
            return lifted.astype(np.float32)
        self._sizes[0] += float(np.linalg.norm(det, axis=-1).mean())
        self._sizes[1] += float(np.linalg.norm(lifted, axis=-1).mean())
        scale = self._sizes[0] / self._sizes[1] if self._sizes[1] > 0 else 1.0
        turned = rotate_onto((scale * lifted)[None], det[None])[0]
        return (self.lifter_weight * turned + (1.0 - self.lifter_weight) * det).astype(np.float32)
