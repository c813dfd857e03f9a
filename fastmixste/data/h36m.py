"""Human3.6M in the VideoPose3D npz format: loaders, the protocol's subjects and actions, and Sequence records.

Files (in one directory):
    data_3d_h36m.npz                  positions_3d: subject -> action -> (T, 32, 3) world metres, 50 fps
    data_2d_h36m_<keypoints>.npz      positions_2d: subject -> action -> 4 x (T, 17, 2) pixels; metadata
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastmixste.data.cameras import Camera, h36m_cameras, normalize_screen_coordinates, world_to_camera
from fastmixste.data.skeleton import H36M_32_TO_17, H36M_LEFT, H36M_RIGHT
from fastmixste.io.safeload import DataFileError, MissingKeyError, read_npz, read_npz_keys

TRAIN_SUBJECTS: list[str] = ["S1", "S5", "S6", "S7", "S8"]
TEST_SUBJECTS: list[str] = ["S9", "S11"]
ACTIONS: list[str] = [
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
    "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether",
]  # fmt: skip
# Spellings found in the released files for some subjects (S1 uses the long names).
_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
# The S11 'Directions' video is corrupted; every published evaluation drops that one take.
DROPPED: set[tuple[str, str]] = {("S11", "Directions")}
FPS = 50

H36M_SOURCE_HELP = (
    "Human3.6M comes from http://vision.imar.ro/human3.6m (registration and licence required). Prepare the "
    "VideoPose3D-format files as described in VideoPose3D's DATASETS.md: data_3d_h36m.npz (from the D3 Positions "
    "archives with data/prepare_data_h36m.py), data_2d_h36m_cpn_ft_h36m_dbb.npz (CPN detections, downloaded) and "
    "optionally data_2d_h36m_gt.npz (ground-truth 2D, written by the same script), all in one directory. "
    "To run without it, use the built-in synthetic stand-in: fastmixste.data.builtin_data_dir()."
)


def action_group(name: str) -> str:
    """'Walking 1' -> 'Walking', 'TakingPhoto' -> 'Photo': the protocol action an H36M take belongs to."""
    base = name.split(" ")[0]
    base = _ACTION_ALIASES.get(base, base)
    if base not in ACTIONS:
        raise ValueError(f"unknown Human3.6M action {name!r}; expected one of {ACTIONS} (plus an optional take suffix)")
    return base


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Human3.6M file not found: {path}. {H36M_SOURCE_HELP}")
    return path


def _load_npz_dict(path: Path, key: str, also: tuple[str, ...] = ()) -> tuple[dict, dict[str, np.ndarray]]:
    """Read `key` (a pickled dict in a 0-d object array) and the entries `also` from an npz, running no code.

    Object arrays go through fastmixste.io.safeload's restricted unpickler: a file holding anything but arrays,
    containers, strings and numbers is refused (UnsafeFileError), a damaged one reported (CorruptFileError).
    """
    npz = read_npz(path, keys=[key, *also])
    if key not in npz:
        found = sorted(read_npz_keys(path))
        raise MissingKeyError(f"{path}: missing key {key!r}; found keys {found}")
    value = npz[key]
    if value.dtype != object or value.shape != ():
        raise DataFileError(f"{path}: {key!r} must be a pickled dict (0-d object array), got dtype {value.dtype} "
                            f"and shape {value.shape}")  # fmt: skip
    value = value.item()
    if not isinstance(value, dict):
        raise DataFileError(f"{path}: {key!r} must hold a dict subject -> action -> array, got "
                            f"{type(value).__name__}")  # fmt: skip
    return value, npz


def _check_array(a: object, where: str, shape_tail: tuple[int | None, ...], what: str) -> np.ndarray:
    """Validate (T, *shape_tail) finite float data; None in shape_tail matches any size."""
    a = np.asarray(a)
    ok = a.ndim == 1 + len(shape_tail) and all(s is None or s == g for s, g in zip(shape_tail, a.shape[1:]))
    if not ok:
        want = "(T, " + ", ".join("*" if s is None else str(s) for s in shape_tail) + ")"
        raise ValueError(f"{where}: expected {what} of shape {want}, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{where}: expected float {what}, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{where}: {what} contains NaN/inf (first at index {tuple(int(i) for i in bad)})")
    return a


def load_positions_3d(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """data_3d_h36m.npz -> subject -> action -> (T, 17, 3) float32 world coordinates in metres.

    Accepts the released 32-joint files (reduced to the 17 used joints with H36M_32_TO_17) and 17-joint files.
    """
    path = _require_file(path)
    raw, _ = _load_npz_dict(path, "positions_3d")
    out: dict[str, dict[str, np.ndarray]] = {}
    for subject, actions in raw.items():
        if not isinstance(actions, dict):
            raise DataFileError(f"{path}: positions_3d[{subject!r}] must be a dict action -> array, got "
                                f"{type(actions).__name__}")  # fmt: skip
        out[subject] = {}
        for action, pos in actions.items():
            where = f"{path}: positions_3d[{subject!r}][{action!r}]"
            pos = _check_array(pos, where, (None, 3), "world joint positions")
            if pos.shape[1] == 32:
                pos = pos[:, H36M_32_TO_17]
            elif pos.shape[1] != 17:
                raise ValueError(f"{where}: expected (T, 32, 3) or (T, 17, 3), got shape {pos.shape}")
            try:
                action_group(action)
            except ValueError:
                raise ValueError(f"{where}: unknown Human3.6M action {action!r}; expected one of {ACTIONS} "
                                 f"(plus an optional take suffix such as ' 1')") from None
            if len(pos):
                spread = float(np.median(np.linalg.norm(pos[:, 1:] - pos[:, :1], axis=-1)))
                if spread > 10.0:  # metres: about 0.2-0.9 from the pelvis; millimetres: hundreds
                    raise ValueError(f"{where}: joint positions look like millimetres (median distance from the "
                                     f"pelvis {spread:.0f}); the VideoPose3D format is in metres: divide by 1000")
            out[subject][action] = np.ascontiguousarray(pos, dtype=np.float32)
    return out


def load_positions_2d(path: str | Path) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict]:
    """data_2d_h36m_*.npz -> (subject -> action -> 4 x (T, 17, 2) float32 pixels, metadata dict)."""
    path = _require_file(path)
    raw, npz = _load_npz_dict(path, "positions_2d", also=("metadata",))
    if "metadata" not in npz:
        raise MissingKeyError(f"{path}: missing key 'metadata'; found keys {sorted(read_npz_keys(path))}")
    metadata = npz["metadata"]
    metadata = metadata.item() if metadata.shape == () else metadata
    if not isinstance(metadata, dict) or "num_joints" not in metadata or "keypoints_symmetry" not in metadata:
        raise DataFileError(f"{path}: 'metadata' must be a dict with keys 'num_joints' and 'keypoints_symmetry', "
                            f"got {metadata!r:.200}")  # fmt: skip
    try:
        num_joints = int(metadata["num_joints"])
    except (TypeError, ValueError) as exc:
        got = f"{metadata['num_joints']!r:.60}"
        raise DataFileError(f"{path}: metadata['num_joints'] must be an int, got {got}") from exc
    if num_joints != 17:
        raise DataFileError(f"{path}: metadata['num_joints'] must be 17, got {metadata['num_joints']}")
    try:
        left, right = (list(map(int, s)) for s in metadata["keypoints_symmetry"])
    except (TypeError, ValueError) as exc:
        raise DataFileError(f"{path}: metadata['keypoints_symmetry'] must be two lists of joint indices, got "
                            f"{metadata['keypoints_symmetry']!r:.100}") from exc  # fmt: skip
    if left != H36M_LEFT or right != H36M_RIGHT:
        raise DataFileError(f"{path}: keypoints_symmetry must be [{H36M_LEFT}, {H36M_RIGHT}], got [{left}, {right}]")
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for subject, actions in raw.items():
        if not isinstance(actions, dict):
            raise DataFileError(f"{path}: positions_2d[{subject!r}] must be a dict action -> list of arrays, got "
                                f"{type(actions).__name__}")  # fmt: skip
        out[subject] = {}
        for action, per_cam in actions.items():
            where = f"{path}: positions_2d[{subject!r}][{action!r}]"
            if not isinstance(per_cam, (list, tuple)) or len(per_cam) != 4:
                got = len(per_cam) if isinstance(per_cam, (list, tuple)) else type(per_cam).__name__
                raise ValueError(f"{where}: expected a list of 4 per-camera arrays, got {got}")
            out[subject][action] = [
                np.ascontiguousarray(_check_array(kp, f"{where}[{c}]", (17, 2), "2D keypoints"), dtype=np.float32)
                for c, kp in enumerate(per_cam)
            ]
    return out, metadata


@dataclass
class Sequence:
    """One (subject, action, camera) take, ready for a model.

    pose_2d: (T, 17, 2) float32 normalised screen coordinates (normalize_screen_coordinates of the pixels).
    pose_3d: (T, 17, 3) float32 camera coordinates, metres, root-relative with the root set to zero.
    world_3d: (T, 17, 3) float32 world coordinates, metres (absolute; for re-projection with other cameras).
    intrinsic: (9,) float32 the camera in normalised screen units (see Camera.intrinsic).
    """

    subject: str
    action: str
    camera: int
    pose_2d: np.ndarray
    pose_3d: np.ndarray
    world_3d: np.ndarray
    res_w: int
    res_h: int
    intrinsic: np.ndarray = field(repr=False)

    @property
    def action_group(self) -> str:
        return action_group(self.action)

    def __len__(self) -> int:
        return self.pose_2d.shape[0]


@dataclass
class H36MData:
    """Loaded Human3.6M (or the built-in stand-in): world 3D, per-camera 2D in pixels, and the cameras."""

    positions_3d: dict[str, dict[str, np.ndarray]]
    positions_2d: dict[str, dict[str, list[np.ndarray]]]
    cameras: dict[str, list[Camera]]
    metadata: dict
    keypoints: str

    @property
    def subjects(self) -> list[str]:
        return list(self.positions_3d)

    def actions(self, subject: str) -> list[str]:
        """Full take names of a subject ('Walking', 'Walking 1', ...)."""
        self._check_subjects([subject])
        return list(self.positions_3d[subject])

    def _check_subjects(self, subjects: Iterable[str]) -> None:
        for s in subjects:
            if s not in self.positions_3d:
                raise ValueError(f"unknown subject {s!r}; this dataset has {self.subjects}")

    def sequences(
        self,
        subjects: Iterable[str],
        actions: Iterable[str] | None = None,
        cameras: Iterable[int] | None = None,
        drop_corrupted: bool = True,
    ) -> list[Sequence]:
        """All (subject, action, camera) takes of `subjects`, optionally restricted.

        actions: protocol names ('Walking': every take of it) or full take names ('Walking 1'); None = all.
        drop_corrupted: skip S11 'Directions' (its video is corrupted), as every published evaluation does.
        """
        subjects = list(subjects)
        self._check_subjects(subjects)
        wanted = None if actions is None else set(actions)
        if wanted is not None:
            known = {a for s in self.positions_3d.values() for a in s} | set(ACTIONS)
            unknown = sorted(wanted - known)
            if unknown:
                raise ValueError(f"unknown action(s) {unknown}; expected protocol actions {ACTIONS} or take names")
        cams = [0, 1, 2, 3] if cameras is None else list(cameras)
        for c in cams:
            if c not in range(4):
                raise ValueError(f"camera index must be in 0..3, got {c}")
        out: list[Sequence] = []
        for subject in subjects:
            for action, world in self.positions_3d[subject].items():
                if drop_corrupted and (subject, action) in DROPPED:
                    continue
                if wanted is not None and action not in wanted and action_group(action) not in wanted:
                    continue
                if action not in self.positions_2d.get(subject, {}):
                    raise MissingKeyError(f"2D keypoints ({self.keypoints}) have no take {subject}/{action!r}")
                for c in cams:
                    out.append(self._make(subject, action, c, world))
        return out

    def _make(self, subject: str, action: str, c: int, world: np.ndarray) -> Sequence:
        cam = self.cameras[subject][c]
        kp = self.positions_2d[subject][action][c]
        T = world.shape[0]
        if kp.shape[0] < T:
            raise ValueError(f"{subject}/{action!r} camera {c}: 2D has {kp.shape[0]} frames, fewer than the "
                             f"{T} frames of the 3D")  # fmt: skip
        kp = kp[:T]  # detections can run longer than the mocap; VideoPose3D cuts them
        pose_3d = world_to_camera(world.astype(np.float64), cam.R, cam.translation)
        pose_3d = pose_3d - pose_3d[:, :1]
        return Sequence(
            subject=subject,
            action=action,
            camera=c,
            pose_2d=normalize_screen_coordinates(kp, cam.res_w, cam.res_h).astype(np.float32),
            pose_3d=pose_3d.astype(np.float32),
            world_3d=world,
            res_w=cam.res_w,
            res_h=cam.res_h,
            intrinsic=cam.intrinsic,
        )


def load_h36m(data_dir: str | Path, keypoints: str = "cpn_ft_h36m_dbb") -> H36MData:
    """Load data_3d_h36m.npz and data_2d_h36m_<keypoints>.npz from `data_dir` (keypoints e.g. 'gt')."""
    data_dir = Path(data_dir)
    p3, p2 = data_dir / "data_3d_h36m.npz", data_dir / f"data_2d_h36m_{keypoints}.npz"
    missing = [str(p) for p in (p3, p2) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Human3.6M file(s) not found: {', '.join(missing)}. {H36M_SOURCE_HELP}")
    positions_3d = load_positions_3d(p3)
    positions_2d, metadata = load_positions_2d(p2)
    cameras = {}
    for subject in positions_3d:
        try:
            cameras[subject] = h36m_cameras(subject)
        except KeyError as e:
            raise ValueError(f"{p3}: subject {subject!r} has no Human3.6M camera calibration") from e
        for action in positions_3d[subject]:
            if action not in positions_2d.get(subject, {}):
                raise MissingKeyError(f"{p2}: no 2D keypoints for {subject}/{action!r}, which {p3.name} has")
    return H36MData(positions_3d, positions_2d, cameras, metadata, keypoints)
