"""DeepMimic motion clips (the humanoid3d_*.txt files pybullet ships) -> joint positions -> 17 H36M joints.

    python -m fastmixste.data.mocap --out corpus.npz humanoid3d_walk.txt humanoid3d_run.txt   # files you have
    python -m fastmixste.data.deepmimic --download --out deepmimic.npz     # fetch pybullet's wheel, convert them all

Format (the DeepMimic README; pybullet_envs/deep_mimic/env/humanoid_pose_interpolator.py): a JSON object
{"Loop": "wrap" | "none", "Frames": [[...], ...]}; each frame holds the frame's duration in seconds (the time to
the next frame; 0 on the last), the root position (3, metres, world), the root rotation (quaternion w, x, y, z,
world), then one entry per movable joint of humanoid.urdf in the file's order: a spherical joint's rotation in its
parent's frame (quaternion w, x, y, z; normalised here, as some clips store them up to 40% off unit length), a
revolute joint's angle in radians about its axis. The stock humanoid: chest, neck, right hip, knee, ankle,
shoulder, elbow, left hip, knee, ankle, shoulder, elbow = 44 numbers a frame. Link offsets are the URDF joint
origins times 0.25 (pybullet loads humanoid.urdf with globalScaling=0.25; root positions are already metres).
World axes: Y up, the humanoid faces +X, its right side is +Z (right_hip's origin is at +Z).

Licence: pybullet's wheel (pybullet 3.2.7 on PyPI) carries the clips and the humanoid in pybullet_data/ and one
licence file, zlib (Bullet's LICENSE.txt: the repository's files are zlib-licensed except Extras/ and
examples/ThirdPartyLibs/, where these files are not). The clips come from the DeepMimic project (Peng et al.,
SIGGRAPH 2018: capture retargeted to this humanoid); the wheel states no other terms for them and their original
capture sources' terms are not stated: treat redistribution of the clips themselves as unclear. Nothing here
ships the data: it converts a copy the user fetches.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastmixste.data.mocap_formats import MocapClip, _reraise_with_file
from fastmixste.io.cli import UserInputError, add_debug_argument, cli_entry
from fastmixste.io.files import atomic_write

PYBULLET_VERSION = "3.2.7"
DEFAULT_CACHE = Path("~/.cache/fastmixste/pybullet")
LINK_SCALE = 0.25  # pybullet's DeepMimic env: loadURDF("humanoid/humanoid.urdf", globalScaling=0.25)
MAX_FILE_BYTES = 64 << 20  # the largest stock clip is 0.2 MB
MAX_FRAMES = 1_000_000
MAX_URDF_JOINTS = 256


@dataclass(frozen=True)
class UrdfJoint:
    """One URDF joint: places link `name` (named as its child link) at `origin` (URDF units) in `parent`'s frame."""

    name: str
    parent: str
    kind: str  # "spherical" (4 numbers a frame), "revolute" / "continuous" (1), "fixed" (0)
    origin: tuple[float, float, float]
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis: tuple[float, float, float] = (1.0, 0.0, 0.0)


@dataclass(frozen=True)
class Humanoid:
    """A DeepMimic character: the root link, its joints in the file's order, the head sphere (link, centre, radius)."""

    root: str
    joints: tuple[UrdfJoint, ...]
    head: tuple[str, tuple[float, float, float], float]


_Z = (0.0, 0.0, 1.0)
# pybullet 3.2.7's pybullet_data/humanoid/humanoid.urdf: the joint origins (URDF units) and the "neck" link's
# collision sphere (centre 0 0.7 0, radius 0.41), which is the head. The fixed base->root joint sits at the origin.
DEFAULT_HUMANOID = Humanoid(
    root="root",
    joints=(
        UrdfJoint("chest", "root", "spherical", (0.0, 0.944604, 0.0)),
        UrdfJoint("neck", "chest", "spherical", (0.0, 0.895576, 0.0)),
        UrdfJoint("right_hip", "root", "spherical", (0.0, 0.0, 0.339548)),
        UrdfJoint("right_knee", "right_hip", "revolute", (0.0, -1.686184, 0.0), axis=_Z),
        UrdfJoint("right_ankle", "right_knee", "spherical", (0.0, -1.639480, 0.0)),
        UrdfJoint("right_shoulder", "chest", "spherical", (-0.0962, 0.974, 0.73244)),
        UrdfJoint("right_elbow", "right_shoulder", "revolute", (0.0, -1.099152, 0.0), axis=_Z),
        UrdfJoint("right_wrist", "right_elbow", "fixed", (0.0, -1.035788, 0.0)),
        UrdfJoint("left_hip", "root", "spherical", (0.0, 0.0, -0.339548)),
        UrdfJoint("left_knee", "left_hip", "revolute", (0.0, -1.686184, 0.0), axis=_Z),
        UrdfJoint("left_ankle", "left_knee", "spherical", (0.0, -1.639480, 0.0)),
        UrdfJoint("left_shoulder", "chest", "spherical", (-0.0962, 0.974, -0.73244)),
        UrdfJoint("left_elbow", "left_shoulder", "revolute", (0.0, -1.099152, 0.0), axis=_Z),
        UrdfJoint("left_wrist", "left_elbow", "fixed", (0.0, -1.035788, 0.0)),
    ),
    head=("neck", (0.0, 0.7, 0.0), 0.41),
)

# H36M joint -> point of a DeepMimic clip. The humanoid's torso has two joints: chest (0.24 m above the root; H36M's
# spine sits ~0.23 m above the pelvis) and neck (the top of the chest, between the shoulders: H36M's thorax). Its
# head is one sphere on the neck link: 'head_top' is the sphere's top, 'neck_nose' the midpoint of the neck joint
# and the head top (H36M's thorax->neck/nose and neck/nose->head bones are about equal, ~0.12 m each).
DEEPMIMIC_TO_H36M: dict[str, list[str]] = {
    "pelvis": ["root"], "r_hip": ["right_hip"], "r_knee": ["right_knee"], "r_ankle": ["right_ankle"],
    "l_hip": ["left_hip"], "l_knee": ["left_knee"], "l_ankle": ["left_ankle"],
    "spine": ["chest"], "thorax": ["neck"], "neck_nose": ["neck_nose"], "head": ["head_top"],
    "l_shoulder": ["left_shoulder"], "l_elbow": ["left_elbow"], "l_wrist": ["left_wrist"],
    "r_shoulder": ["right_shoulder"], "r_elbow": ["right_elbow"], "r_wrist": ["right_wrist"],
}  # fmt: skip

_WIDTH = {"spherical": 4, "revolute": 1, "continuous": 1, "fixed": 0}


# ------------------------------------------------------------------------------------------------------- URDF
def _floats(text: str | None, n: int, what: str, default: tuple[float, ...]) -> tuple[float, ...]:
    if text is None:
        return default
    parts = text.split()
    if len(parts) != n:
        raise ValueError(f"{what}: expected {n} numbers, got {text!r}")
    try:
        v = tuple(float(x) for x in parts)
    except ValueError:
        raise ValueError(f"{what}: expected {n} numbers, got {text!r}") from None
    if not all(math.isfinite(x) for x in v):
        raise ValueError(f"{what}: numbers must be finite, got {text!r}")
    return v


def read_humanoid_urdf(path: str | Path, head_link: str = "neck") -> Humanoid:
    """Parse a DeepMimic humanoid URDF (joint origins, types, axes; the head link's collision sphere) -> Humanoid.

    Only the XML tree is read (no includes, no entities are expanded by ElementTree's default parser); a file that
    is not such a URDF raises ValueError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"URDF file not found: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes; a humanoid URDF is expected under {MAX_FILE_BYTES}")
    text = path.read_text(errors="replace").rstrip("\x00 \t\r\n")  # pybullet's humanoid.urdf ends in a NUL byte
    if "<!ENTITY" in text or "<!DOCTYPE" in text:
        raise ValueError(f"{path}: DOCTYPE/ENTITY declarations are not accepted in a URDF")
    try:
        robot = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not valid XML ({exc})") from None
    if robot.tag != "robot":
        raise ValueError(f"{path}: expected a <robot> URDF, got <{robot.tag}>")
    links = {el.get("name"): el for el in robot.findall("link")}
    joints, children = [], set()
    for el in robot.findall("joint"):
        name, kind = el.get("name", "?"), el.get("type", "")
        where = f"{path}: joint {name!r}"
        parent, child = el.find("parent"), el.find("child")
        if parent is None or child is None or parent.get("link") not in links or child.get("link") not in links:
            raise ValueError(f"{where}: needs <parent link=...> and <child link=...> naming links of the file")
        if kind not in _WIDTH:
            raise ValueError(f"{where}: type {kind!r}; expected one of {sorted(_WIDTH)}")
        origin = el.find("origin")
        xyz = _floats(None if origin is None else origin.get("xyz"), 3, f"{where} origin xyz", (0.0, 0.0, 0.0))
        rpy = _floats(None if origin is None else origin.get("rpy"), 3, f"{where} origin rpy", (0.0, 0.0, 0.0))
        axis_el = el.find("axis")
        axis = _floats(None if axis_el is None else axis_el.get("xyz"), 3, f"{where} axis", (1.0, 0.0, 0.0))
        if kind in ("revolute", "continuous") and np.linalg.norm(axis) < 1e-9:
            raise ValueError(f"{where}: zero rotation axis")
        if child.get("link") in children:
            raise ValueError(f"{where}: link {child.get('link')!r} is the child of two joints")
        joints.append(UrdfJoint(child.get("link"), parent.get("link"), kind, xyz, rpy, axis))
        children.add(child.get("link"))
        if len(joints) > MAX_URDF_JOINTS:
            raise ValueError(f"{path}: more than {MAX_URDF_JOINTS} joints")
    roots = [n for n in links if n not in children]
    if len(roots) != 1:
        raise ValueError(f"{path}: expected one root link, found {roots}")
    # The floating base: pybullet places the first link (DeepMimic's 'base') at the root position; a fixed joint at
    # the origin attaches the pelvis link ('root'), which is the skeleton's root point.
    root = roots[0]
    for j in joints:
        if j.parent == root and j.kind == "fixed" and not any(j.origin) and not any(j.rpy):
            root = j.name
            joints.remove(j)
            break
    if head_link not in links:
        raise ValueError(f"{path}: no link {head_link!r} carrying the head sphere")
    sphere = links[head_link].find("collision/geometry/sphere")
    if sphere is None:
        raise ValueError(f"{path}: link {head_link!r} has no collision sphere (the head)")
    c_el = links[head_link].find("collision/origin")
    centre = _floats(None if c_el is None else c_el.get("xyz"), 3, f"{path}: {head_link} collision origin",
                     (0.0, 0.0, 0.0))  # fmt: skip
    radius = _floats(sphere.get("radius"), 1, f"{path}: {head_link} sphere radius", (0.0,))[0]
    return Humanoid(root, tuple(joints), (head_link, centre, radius))


# ------------------------------------------------------------------------------------------------ rotations
def _quat_matrix(q: np.ndarray) -> np.ndarray:
    """(T, 4) quaternions w, x, y, z (normalised here) -> (T, 3, 3)."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)  # fmt: skip


def _axis_angle(axis: Sequence[float], angle: np.ndarray) -> np.ndarray:
    """Unit-normalised axis (3,), (T,) radians -> (T, 3, 3) (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.asarray(angle, dtype=np.float64)[:, None, None]
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * (K @ K)


def _rpy(rpy: Sequence[float]) -> np.ndarray:
    """URDF origin rpy (roll about X, pitch about Y, yaw about Z; fixed axes) -> (3, 3) = Rz @ Ry @ Rx."""
    r, p, y = rpy
    Rx = _axis_angle((1, 0, 0), np.array([r]))[0]
    Ry = _axis_angle((0, 1, 0), np.array([p]))[0]
    Rz = _axis_angle((0, 0, 1), np.array([y]))[0]
    return Rz @ Ry @ Rx


# ------------------------------------------------------------------------------------------------ the reader
def _load_frames(path: Path, width: int) -> np.ndarray:
    """The "Frames" of a DeepMimic JSON file -> (T, width) float64, every number checked."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes; a DeepMimic clip is expected under {MAX_FILE_BYTES} bytes")

    def no_constants(name: str) -> float:
        raise ValueError(f"{name} is not a finite number")

    try:
        data = json.loads(path.read_bytes(), parse_constant=no_constants)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if not isinstance(data, dict) or "Frames" not in data:
        got = f"keys {sorted(data)[:8]}" if isinstance(data, dict) else type(data).__name__
        raise ValueError(f'expected a JSON object with "Frames" (a DeepMimic motion), got {got}')
    frames = data["Frames"]
    if not isinstance(frames, list) or len(frames) < 2:
        raise ValueError(f'"Frames" must be a list of at least 2 frames, got '
                         f"{len(frames) if isinstance(frames, list) else type(frames).__name__}")  # fmt: skip
    if len(frames) > MAX_FRAMES:
        raise ValueError(f'"Frames" holds {len(frames)} frames, more than {MAX_FRAMES}')
    for t, row in enumerate(frames):
        if not isinstance(row, list) or len(row) != width:
            n = len(row) if isinstance(row, list) else type(row).__name__
            raise ValueError(f"frame {t} has {n} values, expected {width} (duration, root position 3, root "
                             f"rotation 4, then the joints of the humanoid)")  # fmt: skip
        bad = next((v for v in row if type(v) not in (int, float)), None)
        if bad is not None:
            raise ValueError(f"frame {t}: expected numbers, got {bad!r:.40}")
    try:
        F = np.array(frames, dtype=np.float64)
    except OverflowError:
        raise ValueError("a number is too large for float64") from None
    if not np.isfinite(F).all():
        t, c = np.argwhere(~np.isfinite(F))[0]
        raise ValueError(f"frame {t}, value {c} is not finite ({F[t, c]})")
    return F


def read_deepmimic(path: str | Path, urdf: str | Path | Humanoid | None = None, link_scale: float = LINK_SCALE,
                   fps: float | None = None) -> MocapClip:  # fmt: skip
    """Read a DeepMimic motion (JSON), run forward kinematics -> MocapClip (T, K, 3) metres, Y up.

    urdf: the humanoid's URDF (path) or a Humanoid; default DEFAULT_HUMANOID (pybullet 3.2.7's humanoid.urdf).
    link_scale: metres per URDF unit (0.25, as pybullet's DeepMimic env). Points: every link at its joint
    ('root' = pelvis, 'chest', 'neck', 'right_hip', 'right_knee', ..., 'left_wrist'), plus 'head_centre',
    'head_top' (the head sphere's centre and top, along the neck link) and 'neck_nose' (mid neck joint - head top).
    fps: the output rate; default the clip's own (its frame duration; a clip whose durations vary goes onto the
    grid of its shortest one). Resampling interpolates the pose, as pybullet plays the clips: root position and
    revolute angles linearly, quaternions by slerp; bones keep their lengths (interpolating positions instead
    shortens them: up to 9 cm in the 16 fps backflip taken to 50 fps). A malformed file raises ValueError naming
    it; nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeepMimic motion file not found: {path}")
    if not (math.isfinite(link_scale) and link_scale > 0):
        raise ValueError(f"link_scale must be a positive number of metres per URDF unit, got {link_scale}")
    body = urdf if isinstance(urdf, Humanoid) else DEFAULT_HUMANOID if urdf is None else read_humanoid_urdf(urdf)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number of frames per second, got {fps}")
    width = 8 + sum(_WIDTH[j.kind] for j in body.joints)
    try:
        F = _load_frames(path, width)
        _check_quaternions(F, body)
        F, rate = _resample_frames(F, [4] + [_WIDTH[j.kind] for j in body.joints], fps)
        return _forward_kinematics(F, body, link_scale, rate)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        _reraise_with_file(exc, "DeepMimic motion", path)


def _slerp(q0: np.ndarray, q1: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, 4) quaternions (w, x, y, z), (N,) fractions -> (N, 4) unit quaternions along the shorter arc."""
    q0 = q0 / np.linalg.norm(q0, axis=1, keepdims=True)
    q1 = q1 / np.linalg.norm(q1, axis=1, keepdims=True)
    d = np.sum(q0 * q1, axis=1)
    q1 = np.where(d[:, None] < 0, -q1, q1)
    theta = np.arccos(np.clip(np.abs(d), -1.0, 1.0))[:, None]
    w = w[:, None]
    s = np.sin(theta)
    near = s[:, 0] < 1e-6
    safe = np.where(near[:, None], 1.0, s)
    a = np.where(near[:, None], 1 - w, np.sin((1 - w) * theta) / safe)
    b = np.where(near[:, None], w, np.sin(w * theta) / safe)
    q = a * q0 + b * q1
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _resample_frames(F: np.ndarray, widths: list[int], fps: float | None) -> tuple[np.ndarray, float]:
    """(T, W) frames (duration first), value counts of the root rotation and each joint -> frames at a regular
    rate, and that rate: `fps`, or the clip's own (the grid of its shortest frame when durations vary)."""
    dt = F[:-1, 0]
    if (dt <= 0).any():
        t = int(np.argmax(dt <= 0))
        raise ValueError(f"frame {t} has duration {dt[t]:g} s; every frame but the last needs a positive duration")
    step = float(dt.min())
    even = dt.max() - step <= 1e-3 * step
    if fps is None:
        if even:
            return F, 1.0 / float(dt.mean())
        fps = 1.0 / step
    times = np.concatenate([[0.0], np.cumsum(dt)])
    if even:  # the nominal rate, not the rounding of the stored durations (0.033332 s -> 30 fps)
        times = np.arange(len(F)) * float(dt.mean())
    n = int(np.floor(times[-1] * fps + 1e-6)) + 1
    if n > MAX_FRAMES:
        raise ValueError(f"{times[-1]:.1f} s at {fps:g} fps is more than {MAX_FRAMES} frames")
    grid = np.arange(n) / fps
    i = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(F) - 2)
    w = np.clip((grid - times[i]) / (times[i + 1] - times[i]), 0.0, 1.0)
    out = np.empty((n, F.shape[1]))
    out[:, 0] = 1.0 / fps
    out[:, 1:4] = F[i, 1:4] + w[:, None] * (F[i + 1, 1:4] - F[i, 1:4])
    col = 4
    for k in widths:
        a, b = F[i, col : col + k], F[i + 1, col : col + k]
        out[:, col : col + k] = _slerp(a, b, w) if k == 4 else a + w[:, None] * (b - a)
        col += k
    return out, float(fps)


def _split(F: np.ndarray, body: Humanoid) -> list[np.ndarray]:
    """(T, W) frames -> the root rotation (T, 4) and each joint's values (T, 4 / 1 / 0), in the file's order."""
    out, col = [F[:, 4:8]], 8
    for j in body.joints:
        out.append(F[:, col : col + _WIDTH[j.kind]])
        col += _WIDTH[j.kind]
    return out


def _check_quaternions(F: np.ndarray, body: Humanoid) -> None:
    for n, q in enumerate(_split(F, body)):
        zero = np.linalg.norm(q, axis=1) < 1e-6
        if q.shape[1] == 4 and zero.any():
            what = "the root" if n == 0 else f"joint {body.joints[n - 1].name!r}"
            raise ValueError(f"frame {int(np.argmax(zero))}: {what} has a zero quaternion")


def _forward_kinematics(F: np.ndarray, body: Humanoid, scale: float, fps: float) -> MocapClip:
    quats = _split(F, body)
    pos = {body.root: F[:, 1:4]}
    rot = {body.root: _quat_matrix(F[:, 4:8])}
    names, parents = [body.root], [-1]
    pending = list(enumerate(body.joints))
    while pending:  # parents before children, whatever the file's order
        ready = [(n, j) for n, j in pending if j.parent in pos]
        if not ready:
            raise ValueError(f"joints {[j.name for _, j in pending]} do not connect to the root link {body.root!r}")
        for n, j in ready:
            pending.remove((n, j))
            Rp = rot[j.parent] @ _rpy(j.rpy)
            pos[j.name] = pos[j.parent] + np.einsum("tij,j->ti", rot[j.parent], np.asarray(j.origin) * scale)
            v = quats[n + 1]
            local = (_quat_matrix(v) if j.kind == "spherical" else
                     _axis_angle(j.axis, v[:, 0]) if _WIDTH[j.kind] == 1 else np.eye(3))  # fmt: skip
            rot[j.name] = Rp @ local
            names.append(j.name)
            parents.append(names.index(j.parent))
    head, centre, radius = body.head
    if head not in pos:
        raise ValueError(f"the head link {head!r} is not a link of the humanoid")
    c = np.asarray(centre, dtype=np.float64)
    up = c / np.linalg.norm(c) if np.linalg.norm(c) > 0 else np.array([0.0, 1.0, 0.0])
    top = c + radius * up
    hi = names.index(head)
    for name, local in (("head_centre", c), ("head_top", top), ("neck_nose", top / 2)):
        pos[name] = pos[head] + np.einsum("tij,j->ti", rot[head], local * scale)
        names.append(name)
        parents.append(hi)
    P = np.stack([pos[n] for n in names], axis=1)
    return MocapClip(names, parents, P, fps, "deepmimic", up="y")


# ------------------------------------------------------------------------------------------- fetch + convert
_MOTION = re.compile(r"pybullet_data/data/motions/(humanoid3d_[A-Za-z0-9_]+\.txt)")
_URDF = "pybullet_data/humanoid/humanoid.urdf"


def find_wheel(cache: Path) -> Path | None:
    """The pybullet wheel in `cache` (PYBULLET_VERSION preferred), or None."""
    wheels = sorted(cache.glob("pybullet-*.whl"))
    exact = [w for w in wheels if w.name.startswith(f"pybullet-{PYBULLET_VERSION}-")]
    return (exact or wheels or [None])[-1]


def download_wheel(cache: Path) -> Path:
    """pip download pybullet==PYBULLET_VERSION (the wheel only: no sdist build, nothing run) into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"pybullet=={PYBULLET_VERSION}", "--no-deps",
           "--only-binary=:all:", "-d", str(cache)]  # fmt: skip
    print(f"downloading pybullet {PYBULLET_VERSION} (about 100 MB) into {cache} ...", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = find_wheel(cache)
    if done.returncode != 0 or wheel is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserInputError(f"pip download of pybullet=={PYBULLET_VERSION} failed ({tail[0]}); download a "
                             f"pybullet wheel by hand and pass --wheel PATH")  # fmt: skip
    return wheel


def extract_motions(wheel: Path, dest: Path) -> tuple[list[Path], Path]:
    """Copy the humanoid3d_*.txt clips and humanoid.urdf out of a pybullet wheel into `dest` -> (clips, urdf).

    Only those members are read (by their names in the zip, each at most MAX_FILE_BYTES); files already in `dest`
    with the same size are kept.
    """
    try:
        z = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserInputError(f"{wheel}: not a readable wheel (zip) file ({exc})") from None
    clips, urdf = [], None
    with z:
        for info in z.infolist():
            m = _MOTION.fullmatch(info.filename)
            if not m and info.filename != _URDF:
                continue
            if info.file_size > MAX_FILE_BYTES:
                raise UserInputError(f"{wheel}: member {info.filename} is {info.file_size} bytes; expected under "
                                     f"{MAX_FILE_BYTES}")  # fmt: skip
            out = dest / (m.group(1) if m else "humanoid.urdf")
            if not (out.is_file() and out.stat().st_size == info.file_size):
                with atomic_write(out, "wb") as f:
                    f.write(z.read(info))
            if m:
                clips.append(out)
            else:
                urdf = out
    if not clips or urdf is None:
        raise UserInputError(f"{wheel}: holds no pybullet_data/data/motions/humanoid3d_*.txt clips or no {_URDF}")
    return sorted(clips), urdf


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Fetch pybullet's wheel (once), take its DeepMimic clips out and write a 17-joint corpus npz."""
    from fastmixste.data.mocap import _check_out, import_files, save_mocap_npz

    p = argparse.ArgumentParser(prog="python -m fastmixste.data.deepmimic",
                                description="Convert the DeepMimic clips inside pybullet's wheel to a 17-joint "
                                            "H36M mocap corpus npz (train.run --mocap).")  # fmt: skip
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--download", action="store_true",
                   help=f"pip download pybullet=={PYBULLET_VERSION} into --cache when no wheel is there yet")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"wheel cache folder (default {DEFAULT_CACHE})")
    p.add_argument("--wheel", help="a pybullet wheel file to use instead of the cache")
    p.add_argument("--fps", type=float, default=50.0, help="target frame rate (default 50, as Human3.6M)")
    add_debug_argument(p)
    a = p.parse_args(argv)
    if not math.isfinite(a.fps) or a.fps <= 0:
        raise UserInputError(f"--fps must be a positive number of frames per second, got {a.fps:g}")
    out = Path(a.out)
    _check_out(out)
    cache = Path(a.cache).expanduser()
    if a.wheel:
        wheel = Path(a.wheel)
        if not wheel.is_file():
            raise UserInputError(f"--wheel {wheel}: no such file")
    else:
        wheel = find_wheel(cache)
        if wheel is None:
            if not a.download:
                raise UserInputError(f"no pybullet wheel in {cache}; pass --download to fetch one (about 100 MB) "
                                     f"or --wheel PATH")  # fmt: skip
            wheel = download_wheel(cache)
    files, urdf = extract_motions(wheel, cache / "extracted")
    print(f"{wheel.name}: {len(files)} DeepMimic clips, humanoid {urdf}")
    clips = import_files(files, fps=a.fps, urdf=urdf)
    print(f"{'clip':<28} {'frames':>7} {'seconds':>8}  height (m, median head top above the lower ankle)")
    for name, x in clips.items():
        height = np.median(x[:, 10, 2] - np.minimum(x[:, 3, 2], x[:, 6, 2]))
        print(f"{name:<28} {len(x):>7} {(len(x) - 1) / a.fps:>8.2f}  {height:.2f}")
    save_mocap_npz(out, clips, a.fps)
    frames = sum(len(x) for x in clips.values())
    print(f"wrote {out}: {len(clips)} clip(s), {frames} frames at {a.fps:g} fps ({frames / a.fps:.1f} s)")
    print("licence: pybullet's wheel is zlib-licensed (its LICENSE.txt); the clips are DeepMimic's (Peng et al. "
          "2018), no further terms stated: keep the corpus for your own training, do not redistribute it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
