"""2D keypoints from real videos: readers, layout conversion to the 17 Human3.6M joints, gap filling, person picking.

Inputs people actually have, all read into per-frame lists of detections ``(P_t, J, 3)`` = (x, y, confidence) in
pixels of the source layout:

- ``.npy`` / ``.npz`` arrays ``(T, J, 2|3)`` or ``(T, P, J, 2|3)`` (P people, NaN where absent); an ``.npz`` may
  name the array ``keypoints`` (plus optional ``width``/``height`` or ``res_w``/``res_h``), hold a single array,
  or be a VideoPose3D custom-dataset file (``positions_2d[video]["custom"][0]`` with the size in ``metadata``);
- a COCO-style keypoint JSON: the results list ``[{"image_id", "keypoints": [x, y, v] * 17, "score"}, ...]`` or a
  dict with ``annotations`` (and ``images``, which give frame order and the image size);
- a folder of OpenPose JSON files (``*_keypoints.json``, BODY_25), one per frame, in file-name order.

Layouts (``LAYOUTS``): ``h36m`` (17 joints, VideoPose3D order), ``coco`` (COCO-17), ``openpose`` (BODY_25),
``halpe`` (Halpe-26: AlphaPose's layout and MotionBERT's input; COCO-17 then head top, neck, mid-hip and six foot
points) and ``blazepose`` (BlazePose-33: MediaPipe Pose). Conversion to Human3.6M (``to_h36m``) takes each H36M
joint as the mean of one or more source joints, with the confidence of the least confident source (a midpoint is
only as good as its worst end):

==============  ===========================  =========================  ==================  =========================
H36M joint      from COCO-17                 from OpenPose BODY_25      from Halpe-26       from BlazePose-33
==============  ===========================  =========================  ==================  =========================
pelvis          mid(l_hip, r_hip)            MidHip                     Hip (19)            mid(left_hip, right_hip)
r/l hip..ankle  r/l hip, knee, ankle         RHip.. / LHip.. (same)     as COCO (11-16)     r/l hip, knee, ankle
spine           mid(pelvis, thorax) [1]_     mid(MidHip, Neck)          mid(Hip, Neck)      mid(pelvis, thorax)
thorax          mid(l_shoulder, r_shoulder)  Neck                       Neck (18)           mid(shoulders)
neck/nose       nose                         Nose                       Nose (0)            nose (0)
head            mid(l_eye, r_eye) [2]_       mid(LEye, REye)            Head (17) [3]_      mid(left_eye, right_eye)
shoulders..     l/r shoulder, elbow, wrist   L/R Shoulder, Elbow, Wrist as COCO (5-10)      l/r shoulder, elbow, wrist
==============  ===========================  =========================  ==================  =========================

BlazePose-33 also converts to COCO-17 (``blazepose_to_coco``): COCO joint k is BlazePose joint
``BLAZEPOSE_TO_COCO[k]`` = 0, 2, 5, 7, 8, 11-16, 23-28 (nose, eyes, ears, arms, legs; BlazePose's extra mouth, eye
corner, hand and foot points are dropped). Halpe-26's first 17 joints are COCO-17 (``halpe_to_coco``).

.. [1] Human3.6M's spine joint sits about halfway between pelvis and thorax; no detector predicts it.
.. [2] Human3.6M's head joint is above the eyes; mid-eyes is the usual stand-in (ears are often occluded and the
   top of the head is not a COCO keypoint). Models trained on COCO-converted 2D absorb the offset.
.. [3] Halpe's head-top point is closer to Human3.6M's head joint than mid-eyes; this is MotionBERT's mapping
   (``halpe2h36m``), which also takes Halpe's neck as the thorax.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastmixste.data.skeleton import H36M_JOINT_NAMES, H36M_PARENTS
from fastmixste.io.files import check_nesting, check_regular_file, human_bytes, max_input_bytes
from fastmixste.io.safeload import DataFileError, read_npy, read_npz

LAYOUTS: tuple[str, ...] = ("h36m", "coco", "openpose", "halpe", "blazepose")
NUM_SOURCE_JOINTS: dict[str, int] = {"h36m": 17, "coco": 17, "openpose": 25, "halpe": 26, "blazepose": 33}

COCO_JOINT_NAMES: list[str] = [
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
    "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
]
OPENPOSE_JOINT_NAMES: list[str] = [
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe", "LHeel",
    "RBigToe", "RSmallToe", "RHeel",
]
HALPE_JOINT_NAMES: list[str] = COCO_JOINT_NAMES + [
    "head", "neck", "hip", "l_big_toe", "r_big_toe", "l_small_toe", "r_small_toe", "l_heel", "r_heel",
]
BLAZEPOSE_JOINT_NAMES: list[str] = [
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
]
# COCO joint k = BlazePose joint BLAZEPOSE_TO_COCO[k] (left/right are the person's own in both layouts).
BLAZEPOSE_TO_COCO: list[int] = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]

# For each of the 17 H36M joints, the source joints averaged to make it. Spine (7) is built from the converted
# pelvis and thorax afterwards, marked here by None.
_COCO_TO_H36M: list[tuple[int, ...] | None] = [
    (11, 12), (12,), (14,), (16,), (11,), (13,), (15,), None, (5, 6), (0,), (1, 2), (5,), (7,), (9,), (6,), (8,), (10,),
]
_OPENPOSE_TO_H36M: list[tuple[int, ...] | None] = [
    (8,), (9,), (10,), (11,), (12,), (13,), (14,), None, (1,), (0,), (15, 16), (5,), (6,), (7,), (2,), (3,), (4,),
]
_HALPE_TO_H36M: list[tuple[int, ...] | None] = [
    (19,), (12,), (14,), (16,), (11,), (13,), (15,), None, (18,), (0,), (17,), (5,), (7,), (9,), (6,), (8,), (10,),
]
# The COCO table read through BLAZEPOSE_TO_COCO.
_BLAZEPOSE_TO_H36M: list[tuple[int, ...] | None] = [
    None if src is None else tuple(BLAZEPOSE_TO_COCO[k] for k in src) for src in _COCO_TO_H36M
]
_TO_H36M: dict[str, list[tuple[int, ...] | None]] = {
    "coco": _COCO_TO_H36M, "openpose": _OPENPOSE_TO_H36M, "halpe": _HALPE_TO_H36M, "blazepose": _BLAZEPOSE_TO_H36M,
}
_SPINE, _PELVIS, _THORAX = 7, 0, 8


class KeypointError(ValueError):
    """Keypoint input that cannot be used: unknown layout, wrong shape, nothing detected."""


@dataclass
class RawKeypoints:
    """What a reader found: per frame an array (P_t, J, 3) of people (x, y, confidence; pixels, source layout).

    ``ids`` gives per frame a (P_t,) array of person identities when the source has them (array slots, COCO
    ``track_id``), else None. ``width``/``height`` are the image size when the file states it;
    ``has_confidence`` says whether the source gave confidences (else they are 1 where a joint is present).
    ``world``: per frame (P_t, J, 3) the detector's own 3D of the same people (metres, NaN where it gave none) when
    the detector makes one (MediaPipe), else None.
    """

    frames: list[np.ndarray]
    layout: str
    source: str
    ids: list[np.ndarray] | None = None
    width: float | None = None
    height: float | None = None
    has_confidence: bool = True
    world: list[np.ndarray] | None = None


@dataclass
class Keypoints2D:
    """One person's keypoints in the 17 Human3.6M joints, ready for the model.

    ``pose`` (T, 17, 2) pixels, gaps filled; ``confidence`` (T, 17) of the detections (0 where filled);
    ``filled`` (T, 17) True where a joint was missing or below the confidence threshold and was interpolated.
    ``world`` (T, 17, 3) the detector's own 3D of the same person (metres, NaN where none) when the detector makes
    one, else None.
    """

    pose: np.ndarray
    confidence: np.ndarray
    filled: np.ndarray
    width: float
    height: float
    meta: dict[str, Any] = field(default_factory=dict)
    world: np.ndarray | None = None

    def normalized(self) -> np.ndarray:
        """-> (T, 17, 2) float32 screen coordinates as in training: X / w * 2 - [1, h / w]."""
        return normalize_screen(self.pose, self.width, self.height)


def normalize_screen(pose: np.ndarray, width: float, height: float) -> np.ndarray:
    """(..., 2) pixels -> (..., 2) float32: x / w * 2 - 1, y / w * 2 - h / w (aspect kept, x in [-1, 1])."""
    if width <= 0 or height <= 0:
        raise KeypointError(f"image size must be positive, got width={width}, height={height}")
    pose = np.asarray(pose, dtype=np.float64)
    return (pose / width * 2 - np.array([1.0, height / width])).astype(np.float32)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise KeypointError(f"unknown keypoint layout {layout!r}; expected one of {list(LAYOUTS)}")


def _with_confidence(a: np.ndarray) -> np.ndarray:
    """(..., J, 2|3) -> (..., J, 3) float64: adds confidence 1 where no confidence is given; NaN coords -> conf 0."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape[-1] == 2:
        a = np.concatenate([a, np.ones(a.shape[:-1] + (1,))], axis=-1)
    a = a.copy()
    bad = ~np.isfinite(a[..., :2]).all(-1)
    a[..., 2] = np.where(bad | ~np.isfinite(a[..., 2]), 0.0, a[..., 2])
    a[..., :2] = np.where(bad[..., None], np.nan, a[..., :2])
    return a


# ----------------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------------

def from_array(array: np.ndarray, layout: str, source: str = "array") -> RawKeypoints:
    """(T, J, 2|3) or (T, P, J, 2|3) -> RawKeypoints (channel 3 = confidence; NaN marks missing joints/people)."""
    _check_layout(layout)
    a = np.asarray(array)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise KeypointError(f"{source}: expected a numeric keypoint array, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise KeypointError(f"{source}: expected real keypoint coordinates, got complex numbers (dtype {a.dtype})")
    joints = NUM_SOURCE_JOINTS[layout]
    if a.ndim not in (3, 4) or a.shape[-1] not in (2, 3) or a.shape[-2] != joints:
        raise KeypointError(f"{source}: expected shape (T, {joints}, 2 or 3) or (T, P, {joints}, 2 or 3) for "
                            f"layout {layout!r}, got {a.shape}")
    if a.shape[0] == 0:
        raise KeypointError(f"{source}: the keypoint array has no frames (shape {a.shape})")
    has_confidence = a.shape[-1] == 3
    a = _with_confidence(a)
    if a.ndim == 3:
        return RawKeypoints([f[None] for f in a], layout, source, has_confidence=has_confidence)
    # Slot p is person p's identity; a slot with no finite joint is nobody in that frame.
    present = np.isfinite(a[..., :2]).all(-1).any(-1)  # (T, P)
    return RawKeypoints([f[m] for f, m in zip(a, present)], layout, source,
                        ids=[np.flatnonzero(m).astype(np.float64) for m in present], has_confidence=has_confidence)


def read_array_file(path: str | Path, layout: str) -> RawKeypoints:
    """.npy / .npz file -> RawKeypoints (see the module docstring for the accepted npz contents).

    Nothing in the file is ever run: arrays are read by fastmixste.io.safeload, whose unpickler rebuilds only arrays,
    containers, strings and numbers (a VideoPose3D file's pickled dicts) and refuses any other pickled object.
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            return from_array(read_npy(path), layout, str(path))
        if path.suffix != ".npz":
            raise KeypointError(f"{path}: expected a .npy or .npz file")
        z = read_npz(path)
    except DataFileError as exc:
        raise KeypointError(str(exc)) from exc
    keys = list(z)
    width = height = None
    if "positions_2d" in keys:  # VideoPose3D custom dataset: {video: {"custom": [array]}}
        array, width, height = _videopose3d_keypoints(path, z)
    elif "keypoints" in keys:
        array = z["keypoints"]
    else:
        arrays = [k for k in keys if k not in ("width", "height", "res_w", "res_h")]
        if len(arrays) != 1:
            raise KeypointError(f"{path}: cannot tell which array holds the keypoints among {keys}; "
                                f"name it 'keypoints'")
        array = z[arrays[0]]
    for wk, hk in (("width", "height"), ("res_w", "res_h")):
        if wk in keys and hk in keys:
            try:
                width, height = float(z[wk]), float(z[hk])
            except (TypeError, ValueError) as exc:
                raise KeypointError(f"{path}: {wk!r} and {hk!r} must be numbers, got {z[wk]!r:.40} and "
                                    f"{z[hk]!r:.40}") from exc  # fmt: skip
    raw = from_array(array, layout, str(path))
    raw.width, raw.height = width, height
    return raw


def _videopose3d_keypoints(path: Path, z: dict[str, np.ndarray]) -> tuple[np.ndarray, float | None, float | None]:
    """VideoPose3D custom-dataset npz entries -> (keypoint array, width, height); KeypointError if malformed."""
    expected = ("a VideoPose3D custom-dataset file: positions_2d = {video: {'custom': [array (T, J, 2)]}}, "
                "metadata = {'video_metadata': {video: {'w': width, 'h': height}}}")
    videos = z["positions_2d"].item() if z["positions_2d"].shape == () else None
    if not isinstance(videos, dict):
        raise KeypointError(f"{path}: 'positions_2d' is not a dict; expected {expected}")
    if len(videos) != 1:
        raise KeypointError(f"{path}: VideoPose3D file with {len(videos)} videos; keep one per file")
    name, entry = next(iter(videos.items()))
    try:
        array = entry["custom"][0] if isinstance(entry, dict) else entry[0]
    except (KeyError, IndexError, TypeError) as exc:
        raise KeypointError(f"{path}: positions_2d[{name!r}] holds no keypoint array; expected {expected}") from exc
    meta = z["metadata"].item() if "metadata" in z and z["metadata"].shape == () else {}
    size = meta.get("video_metadata", {}).get(name, {}) if isinstance(meta, dict) else {}
    if not isinstance(size, dict):
        raise KeypointError(f"{path}: metadata['video_metadata'][{name!r}] is not a dict; expected {expected}")
    return array, size.get("w"), size.get("h")


def _malformed(path: Path, what: str, exc: Exception) -> KeypointError:
    """A KeypointError for a file whose structure or values are not what `what` needs, saying what was wrong."""
    if isinstance(exc, KeyError):
        detail = f"an entry lacks the field {exc.args[0]!r}"
    elif isinstance(exc, UnicodeDecodeError):
        detail = "it is not UTF-8 text"
    else:
        detail = str(exc)
    return KeypointError(f"{path}: not a valid {what} ({detail})")


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_coco_json(path: str | Path, layout: str = "coco") -> RawKeypoints:
    """COCO-style keypoint JSON -> RawKeypoints: one frame per image (sorted by ``images`` order by file name, else
    by image_id), every annotation with ``keypoints`` a person; ``track_id`` (or ``idx``) is used as identity."""
    _check_layout(layout)
    path = Path(path)
    try:
        return _read_coco_json(path, layout)
    except KeypointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise _malformed(path, "COCO keypoint JSON", exc) from exc


def _read_json(path: Path) -> Any:
    """A JSON input file -> value: a regular file within the size limit, nested at most MAX_NESTING levels."""
    try:
        check_regular_file(path, "keypoint file")
    except ValueError as exc:
        raise KeypointError(str(exc)) from None
    size, limit = path.stat().st_size, max_input_bytes()
    if size > limit:
        raise KeypointError(f"{path}: {human_bytes(size)}, above the {human_bytes(limit)} limit on one input file "
                            f"(FASTMIXSTE_MAX_INPUT_BYTES)")
    raw = path.read_bytes()
    try:
        check_nesting(raw, str(path))
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise KeypointError(f"{path}: not valid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise _malformed(path, "keypoint JSON", exc) from exc
    except ValueError as exc:  # nesting
        raise KeypointError(str(exc)) from exc


def _image_size(value: Any, name: str, path: Path) -> float | None:
    """An image size from a COCO ``images`` entry -> float, or KeypointError naming the field and what came."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KeypointError(f"{path}: images[].{name} must be a number of pixels, got {value!r:.40} "
                            f"({type(value).__name__})")
    return float(value)


def _read_coco_json(path: Path, layout: str) -> RawKeypoints:
    data = _read_json(path)
    images: list[dict] = []
    if isinstance(data, dict):
        anns = data.get("annotations")
        images = data.get("images") or []
        if anns is None:
            raise KeypointError(f"{path}: a COCO keypoint JSON needs an 'annotations' list, got keys {list(data)}")
    elif isinstance(data, list):
        anns = data
    else:
        raise KeypointError(f"{path}: expected a COCO annotation list or dict, got {type(data).__name__}")
    anns = [a for a in anns if isinstance(a, dict) and "keypoints" in a]
    joints = NUM_SOURCE_JOINTS[layout]
    if images:
        images = sorted(images, key=lambda im: _natural_key(str(im.get("file_name", im["id"]))))
        order = [im["id"] for im in images]
    else:
        order = sorted({a["image_id"] for a in anns}, key=lambda i: _natural_key(str(i)))
    if not order:
        raise KeypointError(f"{path}: no frames with keypoints")
    index = {image_id: t for t, image_id in enumerate(order)}
    people: list[list[np.ndarray]] = [[] for _ in order]
    idents: list[list[float]] = [[] for _ in order]
    has_ids = bool(anns) and all(("track_id" in a) or ("idx" in a) for a in anns)
    for a in anns:
        kp = np.asarray(a["keypoints"], dtype=np.float64)
        if kp.size != joints * 3:
            raise KeypointError(f"{path}: annotation for image {a.get('image_id')} has {kp.size} keypoint values; "
                                f"layout {layout!r} needs {joints} x 3")
        kp = kp.reshape(joints, 3)
        # COCO ground truth stores visibility v in {0,1,2} (0 = not labelled, x=y=0); results store a score.
        kp[kp[:, 2] <= 0, :2] = np.nan
        if a.get("image_id") not in index:
            raise KeypointError(f"{path}: annotation refers to unknown image_id {a.get('image_id')!r}")
        t = index[a["image_id"]]
        people[t].append(kp)
        idents[t].append(float(a.get("track_id", a.get("idx", -1))) if has_ids else -1.0)
    frames = [np.stack(p) if p else np.zeros((0, joints, 3)) for p in people]
    width = height = None
    sizes = {(im.get("width"), im.get("height")) for im in images}
    if len(sizes) == 1:
        w, h = next(iter(sizes))
        width, height = _image_size(w, "width", path), _image_size(h, "height", path)
    return RawKeypoints([_with_confidence(f) for f in frames], layout, str(path),
                        ids=[np.asarray(i) for i in idents] if has_ids else None, width=width, height=height)


def read_openpose_dir(path: str | Path, layout: str = "openpose") -> RawKeypoints:
    """Folder of OpenPose per-frame JSON files -> RawKeypoints (files in natural name order; (0, 0, 0) = missing)."""
    _check_layout(layout)
    path = Path(path)
    files = sorted((p for p in path.glob("*.json")), key=lambda p: _natural_key(p.name))
    if not files:
        raise KeypointError(f"{path}: no OpenPose .json files in this folder")
    joints = NUM_SOURCE_JOINTS[layout]
    frames, idents, has_ids = [], [], True
    for f in files:
        data = _read_json(f)
        if not isinstance(data, dict) or "people" not in data:
            raise KeypointError(f"{f}: not an OpenPose keypoint file (no 'people' list)")
        if not isinstance(data["people"], list) or not all(isinstance(p, dict) for p in data["people"]):
            raise KeypointError(f"{f}: 'people' must be a list of objects with 'pose_keypoints_2d'")
        people, ids = [], []
        for person in data["people"]:
            try:
                kp = np.asarray(person.get("pose_keypoints_2d", []), dtype=np.float64)
            except (TypeError, ValueError, OverflowError) as exc:
                raise _malformed(f, "OpenPose keypoint JSON", exc) from exc
            if kp.size != joints * 3:
                raise KeypointError(f"{f}: pose_keypoints_2d has {kp.size} values; layout {layout!r} needs "
                                    f"{joints} x 3 (BODY_25 = 75; use --layout to match the model OpenPose ran)")
            kp = kp.reshape(joints, 3)
            kp[kp[:, 2] <= 0, :2] = np.nan
            people.append(kp)
            pid = person.get("person_id", -1)
            pid = pid[0] if isinstance(pid, list) and pid else pid
            has_ids &= isinstance(pid, int | float) and pid >= 0
            ids.append(float(pid) if isinstance(pid, int | float) else -1.0)
        frames.append(_with_confidence(np.stack(people)) if people else np.zeros((0, joints, 3)))
        idents.append(np.asarray(ids))
    return RawKeypoints(frames, layout, str(path), ids=idents if has_ids else None)


def read_keypoints(path: str | Path, layout: str) -> RawKeypoints:
    """Any supported input (.npy, .npz, COCO .json, OpenPose folder) -> RawKeypoints."""
    _check_layout(layout)
    path = Path(path)
    if not path.exists():
        raise KeypointError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_openpose_dir(path, layout)
    try:
        check_regular_file(path, "keypoint file")  # a FIFO or /dev/zero would block or never end
    except ValueError as exc:
        raise KeypointError(str(exc)) from None
    if path.suffix in (".npy", ".npz"):
        return read_array_file(path, layout)
    if path.suffix == ".json":
        return read_coco_json(path, layout)
    raise KeypointError(f"{path}: unsupported input; expected .npy, .npz, a COCO .json or a folder of OpenPose "
                        f"JSON files")


# ----------------------------------------------------------------------------------------------------------------
# Person picking
# ----------------------------------------------------------------------------------------------------------------

def _person_stats(person: np.ndarray, min_confidence: float) -> tuple[np.ndarray, float, float]:
    """(J, 3) -> (centre (2,), bbox diagonal, mean confidence); NaN centre if nothing is confident."""
    good = person[:, 2] >= min_confidence
    if not good.any():
        return np.full(2, np.nan), 0.0, 0.0
    pts = person[good, :2]
    diag = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    return pts.mean(0), diag, float(person[:, 2].mean())


def pick_person(raw: RawKeypoints, person: int | None = None, min_confidence: float = 0.2
                ) -> tuple[np.ndarray, str]:
    """RawKeypoints -> ((T, J, 3) one person per frame (NaN/0 where absent), a sentence saying who was picked).

    With identities (array slots, track ids): ``person`` picks one, else the most prominent identity (sum over
    frames of bbox diagonal x mean confidence). Without identities: the most prominent detection of the first
    frame with anyone, then in each frame the detection nearest to the previous pick (a simple tracker).
    """
    joints = NUM_SOURCE_JOINTS[raw.layout]
    out = np.full((len(raw.frames), joints, 3), np.nan)
    out[..., 2] = 0.0
    counts = [len(f) for f in raw.frames]
    if not any(counts):
        raise KeypointError(f"{raw.source}: no person detected in any of the {len(raw.frames)} frames")
    crowded = sum(c > 1 for c in counts)
    if max(counts) == 1 and (person is None or (raw.ids is None and person == 0)):
        for t, f in enumerate(raw.frames):
            if len(f):
                out[t] = f[0]
        return out, "one person per frame; no choice needed"

    if raw.ids is not None:
        score: dict[float, float] = {}
        for f, ids in zip(raw.frames, raw.ids):
            for p, pid in zip(f, ids):
                _, diag, conf = _person_stats(p, min_confidence)
                score[float(pid)] = score.get(float(pid), 0.0) + diag * conf
        if person is not None:
            if float(person) not in score:
                raise KeypointError(f"{raw.source}: person {person} not found; identities present: "
                                    f"{sorted(int(k) for k in score)}")
            chosen, why = float(person), "as requested"
        else:
            chosen = max(score, key=score.get)
            why = "the most prominent (largest, most confident, longest visible)"
        for t, (f, ids) in enumerate(zip(raw.frames, raw.ids)):
            hits = np.flatnonzero(ids == chosen)
            if len(hits):
                out[t] = f[hits[0]]
        return out, (f"picked person id {int(chosen)} of {len(score)} ({why}); {crowded} of {len(raw.frames)} "
                     f"frames had several people")

    if person is not None:
        raise KeypointError(f"{raw.source}: --person needs person identities (array slots or track ids); this "
                            f"input has none, so the most prominent person is tracked instead -- omit --person")
    # Follow the pick: in each frame take the detection nearest to the last pick, but only within half its bbox
    # diagonal per frame elapsed, so a missed detection leaves a gap (filled later) instead of a switch of person.
    prev_centre, prev_diag, prev_t, start, lost = None, 0.0, 0, (0, 0), 0
    for t, f in enumerate(raw.frames):
        if not len(f):
            continue
        stats = [_person_stats(p, min_confidence) for p in f]
        if prev_centre is None:
            k = int(np.argmax([d * c for _, d, c in stats]))
            start = (t, k)
        else:
            dist = [np.linalg.norm(c - prev_centre) if np.isfinite(c).all() else np.inf for c, _, _ in stats]
            k = int(np.argmin(dist))
            if dist[k] > 0.5 * max(prev_diag, 1.0) * (t - prev_t):
                lost += 1
                continue
        out[t] = f[k]
        centre, diag, _ = stats[k]
        if np.isfinite(centre).all():
            prev_centre, prev_diag, prev_t = centre, diag, t
    return out, (f"picked the most prominent person of frame {start[0]} (detection {start[1]}) and followed the "
                 f"nearest detection in later frames ({lost} frame(s) without a detection close enough were left "
                 f"to gap filling); {crowded} of {len(raw.frames)} frames had several people")


# ----------------------------------------------------------------------------------------------------------------
# Layout conversion and gap filling
# ----------------------------------------------------------------------------------------------------------------

def to_h36m(keypoints: np.ndarray, layout: str) -> np.ndarray:
    """(..., J_src, 3) (x, y, confidence) -> (..., 17, 3) in Human3.6M order (see the module docstring's table).

    A derived joint is the mean of its sources and gets their minimum confidence; NaN sources give NaN.
    """
    _check_layout(layout)
    kp = np.asarray(keypoints, dtype=np.float64)
    joints = NUM_SOURCE_JOINTS[layout]
    if kp.ndim < 2 or kp.shape[-2] != joints or kp.shape[-1] != 3:
        raise KeypointError(f"to_h36m: expected (..., {joints}, 3) for layout {layout!r}, got {kp.shape}")
    if layout == "h36m":
        return kp.copy()
    table = _TO_H36M[layout]
    out = np.empty(kp.shape[:-2] + (17, 3))
    for j, src in enumerate(table):
        if src is None:
            continue
        out[..., j, :2] = kp[..., list(src), :2].mean(-2)
        out[..., j, 2] = kp[..., list(src), 2].min(-1)
    out[..., _SPINE, :2] = (out[..., _PELVIS, :2] + out[..., _THORAX, :2]) / 2
    out[..., _SPINE, 2] = np.minimum(out[..., _PELVIS, 2], out[..., _THORAX, 2])
    return out


def blazepose_to_coco(keypoints: np.ndarray) -> np.ndarray:
    """(..., 33, C) BlazePose-33 -> (..., 17, C) COCO-17 (a selection of joints, see ``BLAZEPOSE_TO_COCO``).

    Equivalent to ``keypoints[..., BLAZEPOSE_TO_COCO, :]``.
    """
    kp = np.asarray(keypoints)
    if kp.ndim < 2 or kp.shape[-2] != 33:
        raise KeypointError(f"blazepose_to_coco: expected (..., 33, C), got {kp.shape}")
    return kp[..., BLAZEPOSE_TO_COCO, :].copy()


def halpe_to_coco(keypoints: np.ndarray) -> np.ndarray:
    """(..., 26, C) Halpe-26 -> (..., 17, C) COCO-17: Halpe's first 17 joints are COCO's.

    Equivalent to ``keypoints[..., :17, :]``.
    """
    kp = np.asarray(keypoints)
    if kp.ndim < 2 or kp.shape[-2] != 26:
        raise KeypointError(f"halpe_to_coco: expected (..., 26, C), got {kp.shape}")
    return kp[..., :17, :].copy()



def drop_far_outside(keypoints: np.ndarray, width: float, height: float) -> tuple[np.ndarray, int]:
    """(T, J, 3) pixel keypoints -> (a copy with confidence 0 where a point lies more than one image size outside
    the width x height image, how many such points had confidence > 0). Raises KeypointError when no point is left."""
    kp = np.array(keypoints, dtype=np.float64, copy=True)
    x, y = kp[..., 0], kp[..., 1]
    with np.errstate(invalid="ignore"):
        far = (x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height)
    far &= np.isfinite(x) & np.isfinite(y)
    count = int((far & (kp[..., 2] > 0)).sum())
    kp[..., 2] = np.where(far, 0.0, kp[..., 2])
    if count and not (kp[..., 2] > 0).any():
        raise KeypointError(f"all {count} detected keypoints lie more than one image size outside the {width:g}x"
                            f"{height:g} image: the image size (--width/--height) does not fit these coordinates")
    return kp, count

def fill_gaps(keypoints: np.ndarray, min_confidence: float = 0.2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(T, 17, 3) -> ((T, 17, 2) filled, (T, 17) bool mask of filled entries, notes).

    A joint is missing where its coordinates are NaN or its confidence is below ``min_confidence``. Gaps are
    filled per joint by linear interpolation in time between the nearest good frames; before the first and after
    the last good frame the nearest good value is held. A joint never seen is placed on its nearest seen ancestor
    in the skeleton (noted). Raises KeypointError when nothing at all is usable.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise KeypointError(f"fill_gaps: expected (T, 17, 3), got {kp.shape}")
    if len(kp) == 0:
        raise KeypointError("fill_gaps: empty sequence (0 frames)")
    good = np.isfinite(kp[..., :2]).all(-1) & (kp[..., 2] >= min_confidence)
    if not good.any():
        raise KeypointError(f"no usable keypoints: every joint of all {len(kp)} frames is missing or has "
                            f"confidence < {min_confidence}")
    out = np.empty(kp.shape[:2] + (2,))
    frames = np.arange(len(kp))
    never: list[int] = []
    for j in range(17):
        ok = good[:, j]
        if not ok.any():
            never.append(j)
            continue
        for c in range(2):
            out[:, j, c] = np.interp(frames, frames[ok], kp[ok, j, c])
    notes = []
    for j in never:
        a = H36M_PARENTS[j]
        while a >= 0 and a in never:
            a = H36M_PARENTS[a]
        if a < 0:  # the root itself is never seen: use the mean of all seen joints per frame
            seen = [k for k in range(17) if k not in never]
            out[:, j] = out[:, seen].mean(1)
            notes.append(f"joint {H36M_JOINT_NAMES[j]} never detected: placed at the mean of the seen joints")
        else:
            out[:, j] = out[:, a]
            notes.append(f"joint {H36M_JOINT_NAMES[j]} never detected: placed on {H36M_JOINT_NAMES[a]}")
    return out, ~good, notes


def load_keypoints(
    path: str | Path,
    layout: str,
    *,
    width: float | None = None,
    height: float | None = None,
    person: int | None = None,
    min_confidence: float = 0.2,
) -> Keypoints2D:
    """File or folder -> Keypoints2D: read, pick one person, convert to H36M-17, fill gaps.

    ``width``/``height`` override the image size stated by the file; one of the two is required.
    """
    raw = read_keypoints(path, layout)
    w = width if width is not None else raw.width
    h = height if height is not None else raw.height
    if w is None or h is None:
        raise KeypointError(f"{path}: the image size is not in the file; pass --width and --height")
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise KeypointError(f"image size must be finite and positive, got width={w}, height={h}")
    picked, who = pick_person(raw, person, min_confidence)
    h36m = to_h36m(picked, layout)
    h36m, outside = drop_far_outside(h36m, w, h)
    pose, filled, notes = fill_gaps(h36m, min_confidence)
    if outside:
        notes.insert(0, f"{outside} of {h36m.shape[0] * h36m.shape[1]} keypoints lie more than one image size "
                        f"outside the {w:g}x{h:g} image (check --width/--height); treated as missing and filled")
    conf = np.where(filled, 0.0, h36m[..., 2])
    meta = {
        "input": str(path),
        "layout": layout,
        "width": float(w),
        "height": float(h),
        "num_frames": len(pose),
        "person": who,
        "min_confidence": min_confidence,
        "has_confidence": raw.has_confidence,
        "filled_fraction": float(filled.mean()),
        "notes": notes,
    }
    return Keypoints2D(pose.astype(np.float32), conf.astype(np.float32), filled, float(w), float(h), meta)
