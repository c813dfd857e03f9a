"""Calibrated cameras for the real-data check: a Qualisys calibration reader, projection, undistortion and a
confidence-weighted DLT triangulation with outlier-view rejection.

Conventions (OpenCV's): a world point X (metres) maps to camera coordinates ``x_cam = R @ X + t`` (x right, y down,
z forward, the axes ``train.infer`` writes its 3D in), then to pixels through the pinhole ``K`` and the Brown
distortion ``(k1, k2, p1, p2, k3)`` of the normalised coordinates.

Qualisys ``.qca.txt`` (an XML calibration): per ``<camera>`` a ``<transform>`` with the camera position ``x, y, z``
(mm, world) and a rotation ``r11 .. r33`` whose rows are the camera's axes in the world, Qualisys's camera axes being
x right, y up, z backwards; an ``<intrinsic>`` in sensor sub-pixel units (``focalLengthU/V``, ``centerPointU/V``;
64 sub-pixels per pixel) with the distortion coefficients; and ``<fov_video>``, the image's pixel window on the
sensor. So ``R = diag(1, -1, -1) @ r`` (to OpenCV's axes) and ``t = -R @ position / 1000``; the image size is the
window's ``right - left + 1`` by ``bottom - top + 1`` and the centre is shifted by the window's ``left``/``top``.
The distortion coefficients are divided by 64 like the focal length, as Pose2Sim's own reader does
(``distortion_scale``); on Pose2Sim's Demo_MultiPerson the median reprojection error was the same with no
distortion (8.47 px, three views of one person) and 8.69 px with the coefficients as written.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

#: A calibration file larger than this is not a calibration (refused before parsing).
MAX_CALIBRATION_BYTES = 1 << 20
#: Sub-pixels per pixel in Qualisys's intrinsic parameters.
QUALISYS_SUBPIXELS = 64.0


class CalibrationError(ValueError):
    """A calibration file that cannot be used: not XML, missing cameras or attributes, absurd values."""


@dataclass(frozen=True)
class Camera:
    """One calibrated camera: ``K`` (3, 3) pixels, ``dist`` (5,) = (k1, k2, p1, p2, k3), ``R`` (3, 3) and ``t`` (3,)
    world -> camera (metres, OpenCV axes), ``size`` = (width, height) pixels."""

    name: str
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: tuple[int, int]

    @property
    def focal(self) -> tuple[float, float]:
        return float(self.K[0, 0]), float(self.K[1, 1])

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.K[0, 2]), float(self.K[1, 2])

    @property
    def position(self) -> np.ndarray:
        """(3,) the camera centre in world coordinates (metres)."""
        return -self.R.T @ self.t

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) ``K @ [R | t]``: world points to undistorted homogeneous pixels."""
        return self.K @ np.concatenate([self.R, self.t[:, None]], axis=1)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world metres -> (..., 3) camera-frame metres."""
        return np.asarray(points, np.float64) @ self.R.T + self.t

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) normalised undistorted coordinates -> (..., 2) distorted (Brown model, OpenCV's formula)."""
        k1, k2, p1, p2, k3 = self.dist
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([xd, yd], axis=-1)

    def project(self, points: np.ndarray, *, distort: bool = True) -> np.ndarray:
        """(..., 3) world metres -> (..., 2) pixels (NaN where the point is behind the camera)."""
        c = self.to_camera(points)
        with np.errstate(invalid="ignore", divide="ignore"):
            xy = c[..., :2] / np.where(c[..., 2:] > 0, c[..., 2:], np.nan)
        if distort:
            xy = self.distort(xy)
        return xy * np.array([self.K[0, 0], self.K[1, 1]]) + np.array([self.K[0, 2], self.K[1, 2]])

    def undistort_pixels(self, uv: np.ndarray, iterations: int = 20) -> np.ndarray:
        """(..., 2) distorted pixels -> (..., 2) undistorted pixels (fixed-point inversion of ``distort``)."""
        uv = np.asarray(uv, np.float64)
        f = np.array([self.K[0, 0], self.K[1, 1]])
        c = np.array([self.K[0, 2], self.K[1, 2]])
        target = (uv - c) / f
        if not np.any(self.dist):
            return uv.copy()
        xy = target.copy()
        for _ in range(iterations):
            xy = xy + (target - self.distort(xy))
        return xy * f + c


def _attrs(element: ET.Element, names: tuple[str, ...], where: str) -> list[float]:
    out = []
    for n in names:
        v = element.get(n)
        if v is None:
            raise CalibrationError(f"{where}: <{element.tag}> has no attribute {n!r}")
        try:
            x = float(v)
        except ValueError as exc:
            raise CalibrationError(f"{where}: <{element.tag}> attribute {n}={v!r} is not a number") from exc
        if not np.isfinite(x):
            raise CalibrationError(f"{where}: <{element.tag}> attribute {n}={v!r} is not finite")
        out.append(x)
    return out


def parse_qualisys(text: str | bytes, *, distortion_scale: float = 1 / QUALISYS_SUBPIXELS,
                   source: str = "calibration") -> list[Camera]:
    """Qualisys ``.qca.txt`` XML text -> cameras in file order (see the module docstring for the conventions).

    The distortion coefficients are multiplied by ``distortion_scale`` (default 1/64, Pose2Sim's reading).
    Raises CalibrationError naming what is wrong.
    """
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if len(raw) > MAX_CALIBRATION_BYTES:
        raise CalibrationError(f"{source}: {len(raw)} bytes; a calibration file is at most {MAX_CALIBRATION_BYTES}")
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise CalibrationError(f"{source}: XML with a DOCTYPE/ENTITY declaration is not accepted")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise CalibrationError(f"{source}: not well-formed XML ({exc})") from exc
    cams = root.findall("cameras/camera")
    if not cams:
        raise CalibrationError(f"{source}: expected <calibration><cameras><camera ...> elements, found none")
    out = []
    for i, cam in enumerate(cams):
        name = cam.get("serial") or f"camera{i + 1}"
        where = f"{source} camera {name!r}"
        parts = {tag: cam.find(tag) for tag in ("transform", "intrinsic", "fov_video")}
        for tag, el in parts.items():
            if el is None:
                raise CalibrationError(f"{where}: no <{tag}> element")
        left, top, right, bottom = _attrs(parts["fov_video"], ("left", "top", "right", "bottom"), where)
        width, height = int(right - left + 1), int(bottom - top + 1)
        if width < 2 or height < 2:
            raise CalibrationError(f"{where}: <fov_video> gives an image of {width}x{height} pixels")
        fu, fv, cu, cv = (x / QUALISYS_SUBPIXELS for x in _attrs(
            parts["intrinsic"], ("focalLengthU", "focalLengthV", "centerPointU", "centerPointV"), where))
        if fu <= 0 or fv <= 0:
            raise CalibrationError(f"{where}: focal lengths must be positive, got {fu}, {fv} pixels")
        k1, k2, k3, p1, p2 = _attrs(parts["intrinsic"], ("radialDistortion1", "radialDistortion2", "radialDistortion3",
                                                         "tangentalDistortion1", "tangentalDistortion2"), where)
        r = np.array(_attrs(parts["transform"], tuple(f"r{a}{b}" for a in "123" for b in "123"), where)).reshape(3, 3)
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or not np.isclose(np.linalg.det(r), 1.0, atol=1e-4):
            raise CalibrationError(f"{where}: <transform> r11..r33 is not a rotation matrix")
        position = np.array(_attrs(parts["transform"], ("x", "y", "z"), where)) / 1000.0
        rot = np.diag([1.0, -1.0, -1.0]) @ r
        K = np.array([[fu, 0.0, cu - left], [0.0, fv, cv - top], [0.0, 0.0, 1.0]])
        dist = np.array([k1, k2, p1, p2, k3]) * distortion_scale
        out.append(Camera(name, K, dist, rot, -rot @ position, (width, height)))
    return out


def triangulate(points: np.ndarray, cameras: list[Camera], *, min_confidence: float = 0.3,
                reject_px: float = 15.0, min_views: int = 2, undistort: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence-weighted DLT with outlier-view rejection.

    ``points`` (V, ..., 3): per view (x, y, confidence) in distorted pixels, NaN or confidence < ``min_confidence``
    where unseen. Per point: the DLT of the views that see it, each view's two equations weighted by its confidence;
    while the worst view reprojects more than ``reject_px`` pixels and at least ``min_views + 1`` views are used, that
    view is dropped and the point solved again. A point ends NaN when fewer than ``min_views`` views see it or its
    worst remaining view still reprojects more than ``reject_px``.

    -> (points_3d (..., 3) world metres, reprojection error (...,) = mean over the used views in pixels (NaN where
    unsolved), used (V, ...) bool: the views kept).
    """
    pts = np.asarray(points, np.float64)
    if pts.ndim < 2 or pts.shape[0] != len(cameras) or pts.shape[-1] != 3:
        raise ValueError(f"triangulate: expected ({len(cameras)}, ..., 3) (x, y, confidence) per view, got {pts.shape}")
    shape = pts.shape[1:-1]
    flat = pts.reshape(len(cameras), -1, 3)  # (V, N, 3)
    uv = np.stack([c.undistort_pixels(flat[v, :, :2]) if undistort else flat[v, :, :2]
                   for v, c in enumerate(cameras)])
    conf = np.where(np.isfinite(uv).all(-1) & np.isfinite(flat[..., 2]), flat[..., 2], 0.0)
    used = conf >= min_confidence  # (V, N)
    proj = np.stack([c.projection for c in cameras])  # (V, 3, 4)
    n = flat.shape[1]
    x3 = np.full((n, 3), np.nan)
    err_view = np.full((len(cameras), n), np.nan)
    active = used.sum(0) >= min_views
    while active.any():
        idx = np.flatnonzero(active)
        x3[idx] = _dlt(uv[:, idx], np.where(used[:, idx], conf[:, idx], 0.0), proj)
        reproj = _project_h(proj, x3[idx])  # (V, n_idx, 2)
        e = np.linalg.norm(reproj - uv[:, idx], axis=-1)
        e = np.where(used[:, idx], e, np.nan)
        err_view[:, idx] = e
        worst = np.nanargmax(np.where(np.isnan(e), -np.inf, e), axis=0)
        worst_err = e[worst, np.arange(len(idx))]
        drop = (worst_err > reject_px) & (used[:, idx].sum(0) > min_views)
        if not drop.any():
            break
        used[worst[drop], idx[drop]] = False
        active = np.zeros(n, bool)
        active[idx[drop]] = True
    used &= np.isfinite(err_view)
    count = used.sum(0)
    e0 = np.where(used, err_view, 0.0)
    solved = (count >= min_views) & (e0.max(0, initial=0.0) <= reject_px)
    x3[~solved] = np.nan
    err = np.where(solved, e0.sum(0) / np.maximum(count, 1), np.nan)
    used &= solved
    return x3.reshape(shape + (3,)), err.reshape(shape), used.reshape((len(cameras),) + shape)


def _dlt(uv: np.ndarray, w: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """(V, N, 2) undistorted pixels, (V, N) weights (0 = unused), (V, 3, 4) -> (N, 3) least-squares DLT points."""
    u = np.nan_to_num(uv[..., 0])[..., None]
    v = np.nan_to_num(uv[..., 1])[..., None]
    rows_u = w[..., None] * (u * proj[:, None, 2] - proj[:, None, 0])  # (V, N, 4)
    rows_v = w[..., None] * (v * proj[:, None, 2] - proj[:, None, 1])
    a = np.concatenate([rows_u, rows_v], axis=0).transpose(1, 0, 2)  # (N, 2V, 4)
    _, _, vt = np.linalg.svd(a)
    h = vt[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return h[:, :3] / h[:, 3:]


def _project_h(proj: np.ndarray, x3: np.ndarray) -> np.ndarray:
    """(V, 3, 4), (N, 3) -> (V, N, 2) undistorted pixels."""
    xh = np.concatenate([x3, np.ones(x3.shape[:-1] + (1,))], axis=-1)
    p = np.einsum("vij,nj->vni", proj, xh)
    with np.errstate(invalid="ignore", divide="ignore"):
        return p[..., :2] / p[..., 2:]
