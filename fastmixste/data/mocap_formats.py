"""Motion-capture file readers: BVH and ASF/AMC -> :class:`MocapClip` (joint positions in metres, Y up as in the file).

Used by :mod:`fastmixste.data.mocap` (the corpus importer and its CLI); every size a file states is checked before
it is allocated, and a malformed file raises ``UserInputError`` naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from fastmixste.io.files import check_regular_file, human_bytes, max_input_bytes

#: Frame rates accepted anywhere (files, flags, corpora): motion capture runs at 24 to a few hundred fps.
FPS_RANGE = (1.0, 10_000.0)
#: The longest clip after resampling (11 hours at 50 fps): a larger one is refused before it is allocated.
MAX_CLIP_FRAMES = 2_000_000


def check_fps(fps: float, what: str) -> float:
    """A frame rate -> float, or ValueError naming ``what`` unless it is a number in FPS_RANGE."""
    lo, hi = FPS_RANGE
    try:
        value = float(fps)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what}: expected a frame rate in frames per second, got {fps!r:.40}") from None
    if not (np.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{what}: {value:g} frames per second; expected a frame rate between {lo:g} and {hi:,.0f}")
    return value


@dataclass
class MocapClip:
    """Joint positions of one clip: positions (T, K, 3) float64 in metres, in the file's axes (see `up`).

    For BVH the points are the joint origins (End Sites are '<parent>_end'); for ASF/AMC they are the end points
    of the bones ('root' is the root position), e.g. 'lfemur' is the left knee.
    """

    names: list[str]
    parents: list[int]
    positions: np.ndarray
    fps: float
    source: str  # "bvh", "asf" or "deepmimic"
    up: str = "y"

    def joint(self, name: str) -> np.ndarray:
        """(T, 3) positions of one named point."""
        return self.positions[:, self.names.index(name)]


# --------------------------------------------------------------------------------------------------- rotations
def _axis_rot(axis: str, deg: np.ndarray) -> np.ndarray:
    """(T,) degrees -> (T, 3, 3) rotation about 'x', 'y' or 'z' (column vectors)."""
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    k = "xyz".index(axis.lower())
    i, j = [(1, 2), (2, 0), (0, 1)][k]
    R = np.zeros((*a.shape, 3, 3))
    R[..., k, k] = 1
    R[..., i, i], R[..., j, j], R[..., i, j], R[..., j, i] = c, c, -s, s
    return R


def _euler(order: str, angles: np.ndarray) -> np.ndarray:
    """(T, len(order)) degrees about the axes of `order`, applied first to last -> (T, 3, 3).

    'XYZ' rotates about X first: R = Rz @ Ry @ Rx (Acclaim and BVH both compose this way, in their own orders).
    """
    R = np.broadcast_to(np.eye(3), (*angles.shape[:-1], 3, 3)).copy()
    for n, axis in enumerate(order):
        R = _axis_rot(axis, angles[..., n]) @ R
    return R


# --------------------------------------------------------------------------------------------------------- BVH
def _explain(exc: Exception) -> str:
    """A parsing exception from deep inside a reader -> words for the user (the caller adds the file name)."""
    text = str(exc)
    m = re.match(r"could not convert string to float: (.*)", text)
    if m:
        return f"expected a number, got {m.group(1)}"
    if text == "substring not found":  # "xyz".index(axis)
        return "an axis, channel or dof name is not one of x, y, z"
    if isinstance(exc, IndexError):
        return "a line ends early (values missing)"
    if isinstance(exc, KeyError):
        return f"missing entry {exc.args[0]!r}"
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


def _reraise_with_file(exc: Exception, kind: str, *paths: Path) -> NoReturn:
    """Raise ValueError naming the file for a parse error that does not name one yet."""
    if isinstance(exc, ValueError) and any(str(exc).startswith(str(p)) for p in paths):
        raise exc
    raise ValueError(f"{paths[-1]}: not a valid {kind} file ({_explain(exc)})") from exc


def read_bvh(path: str | Path, scale: float | str = "auto") -> MocapClip:
    """Read a BVH file and run forward kinematics -> MocapClip of joint origins (and End Sites), metres.

    scale: metres per file unit, or "auto": the first of m, cm, inch, mm that gives a 1.0-2.5 m tall rest pose.
    Local transform of a joint: translation = OFFSET (+ position channels), rotation = channels in file order
    (Zrotation Xrotation Yrotation -> Rz @ Rx @ Ry). A malformed file raises ValueError naming it.
    """
    path = Path(path)
    if not path.is_file():
        if path.exists():
            check_regular_file(path, "BVH file")
        raise FileNotFoundError(f"BVH file not found: {path}")
    _check_size(path)
    try:
        return _read_bvh(path, scale)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        _reraise_with_file(exc, "BVH", path)


def _check_size(path: Path) -> None:
    size, limit = path.stat().st_size, max_input_bytes()
    if size > limit:
        raise ValueError(f"{path}: {human_bytes(size)}, above the {human_bytes(limit)} limit on one input file "
                         f"(FASTMIXSTE_MAX_INPUT_BYTES)")


def _read_bvh(path: Path, scale: float | str) -> MocapClip:
    tokens = path.read_text(errors="replace").split()
    pos = 0

    def take(expect: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"{path}: unexpected end of file" + (f", expected {expect!r}" if expect else ""))
        t = tokens[pos]
        pos += 1
        if expect is not None and t.upper() != expect.upper():
            raise ValueError(f"{path}: expected {expect!r}, got {t!r} (token {pos})")
        return t

    def number(kind: type = float) -> float:
        t = take()
        try:
            return kind(t)
        except ValueError:
            raise ValueError(f"{path}: expected {'an integer' if kind is int else 'a number'}, got {t!r} "
                             f"(token {pos})") from None

    take("HIERARCHY")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[np.ndarray] = []
    channels: list[list[str]] = []
    stack: list[int] = []
    kw = take()
    if kw.upper() != "ROOT":
        raise ValueError(f"{path}: expected ROOT after HIERARCHY, got {kw!r}")
    while True:
        if kw.upper() in ("ROOT", "JOINT") or kw.upper() == "END":
            if kw.upper() == "END":
                take("Site")
                name = f"{names[stack[-1]]}_end"
            else:
                name = take()
            take("{")
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            take("OFFSET")
            offsets.append(np.array([number() for _ in range(3)]))
            ch: list[str] = []
            if kw.upper() != "END" and pos < len(tokens) and tokens[pos].upper() == "CHANNELS":
                take()
                ch = [take() for _ in range(int(number(int)))]
            channels.append(ch)
            stack.append(len(names) - 1)
        elif kw == "}":
            stack.pop()
            if not stack:
                break
        else:
            raise ValueError(f"{path}: unexpected token {kw!r} in HIERARCHY (token {pos})")
        kw = take()
    take("MOTION")
    take("Frames:")
    n_frames = int(number(int))
    if take().lower() != "frame" or take().lower() != "time:":
        raise ValueError(f"{path}: expected 'Frame Time:' after the frame count")
    frame_time = number()
    n_ch = sum(len(c) for c in channels)
    try:
        values = np.array(tokens[pos : pos + n_frames * n_ch], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: the MOTION section must hold numbers ({_explain(exc)})") from exc
    if values.size != n_frames * n_ch:
        raise ValueError(f"{path}: expected {n_frames} frames x {n_ch} channels = {n_frames * n_ch} values, got "
                         f"{values.size}")  # fmt: skip
    if n_frames < 1 or frame_time <= 0:
        raise ValueError(f"{path}: need >= 1 frame and a positive frame time, got {n_frames} and {frame_time}")
    check_fps(1.0 / frame_time, f"{path}: 'Frame Time: {frame_time:g}' s")
    values = values.reshape(n_frames, n_ch)

    T, K = n_frames, len(names)
    P = np.zeros((T, K, 3))
    R = np.zeros((T, K, 3, 3))
    col = 0
    for j in range(K):
        ch = channels[j]
        v = values[:, col : col + len(ch)]
        col += len(ch)
        trans = np.broadcast_to(offsets[j], (T, 3)).copy()
        rot_axes, rot_cols = "", []
        for n, c in enumerate(ch):
            c = c.lower()
            if c[:1] not in ("x", "y", "z") or not c.endswith(("position", "rotation")):
                raise ValueError(f"{path}: unknown channel {c!r} of joint {names[j]!r}; expected X/Y/Z position "
                                 f"or rotation")  # fmt: skip
            if c.endswith("position"):
                trans[:, "xyz".index(c[0])] += v[:, n]
            elif c.endswith("rotation"):
                rot_axes += c[0]
                rot_cols.append(n)
            else:
                raise ValueError(f"{path}: unknown channel {c!r} of joint {names[j]!r}")
        # Channels list rotations outermost first: R = R_c0 @ R_c1 @ R_c2.
        local = _euler(rot_axes[::-1], v[:, rot_cols[::-1]]) if rot_axes else np.broadcast_to(np.eye(3), (T, 3, 3))
        p = parents[j]
        if p < 0:
            P[:, j], R[:, j] = trans, local
        else:
            P[:, j] = P[:, p] + np.einsum("tij,tj->ti", R[:, p], trans)
            R[:, j] = R[:, p] @ local
    rest_height = _rest_height(offsets, parents)
    scale = _auto_scale(rest_height, path) if scale == "auto" else float(scale)
    return MocapClip(names, parents, P * scale, 1.0 / frame_time, "bvh")


def _rest_height(offsets: list[np.ndarray], parents: list[int]) -> float:
    """Vertical extent (Y) of the skeleton in its rest pose, in file units."""
    rest = []
    for j, p in enumerate(parents):
        rest.append(offsets[j] + (rest[p] if p >= 0 else 0))
    ys = np.array(rest)[:, 1]
    return float(ys.max() - ys.min())


def _auto_scale(height: float, path: Path) -> float:
    for unit in (1.0, 0.01, 0.0254, 0.001):
        if 1.0 <= height * unit <= 2.5:
            return unit
    raise ValueError(f"{path}: cannot infer units from a rest-pose height of {height:g} file units; pass scale=")


# ------------------------------------------------------------------------------------------------------ ASF/AMC
@dataclass
class _Bone:
    name: str
    direction: np.ndarray
    length: float
    axis: np.ndarray
    axis_order: str
    dof: list[str]


def _parse_asf(path: Path) -> tuple[dict, dict[str, _Bone], dict[str, list[str]]]:
    lines = [(i + 1, ln.split("#")[0].strip()) for i, ln in enumerate(path.read_text(errors="replace").splitlines())]
    units = {"length": 1.0, "angle": "deg"}
    root = {"order": ["tx", "ty", "tz", "rx", "ry", "rz"], "axis": "XYZ", "position": np.zeros(3),
            "orientation": np.zeros(3)}  # fmt: skip
    bones: dict[str, _Bone] = {}
    children: dict[str, list[str]] = {}
    section, cur = None, None
    for i, ln in lines:
        if not ln:
            continue
        try:
            f = ln.split()
            if ln.startswith(":"):
                section = f[0][1:].lower()
                continue
            key = f[0].lower()
            if section == "units" and len(f) >= 2:
                units[key] = float(f[1]) if key in ("length", "mass") else f[1].lower()
            elif section == "root":
                if key == "order":
                    root["order"] = [x.lower() for x in f[1:]]
                elif key == "axis":
                    root["axis"] = f[1].upper()
                elif key in ("position", "orientation"):
                    root[key] = np.array(f[1:4], dtype=np.float64)
            elif section == "bonedata":
                if key == "begin":
                    cur = {"dof": [], "axis": np.zeros(3), "axis_order": "XYZ"}
                elif key == "end":
                    missing = {"name", "direction", "length"} - set(cur)
                    if missing:
                        raise ValueError(f"{path}: a bone in :bonedata lacks {sorted(missing)}")
                    bones[cur["name"]] = _Bone(cur["name"], cur["direction"], cur["length"], cur["axis"],
                                               cur["axis_order"], cur["dof"])  # fmt: skip
                    cur = None
                elif cur is not None:
                    if key == "name":
                        cur["name"] = f[1]
                    elif key == "direction":
                        cur["direction"] = np.array(f[1:4], dtype=np.float64)
                    elif key == "length":
                        cur["length"] = float(f[1])
                    elif key == "axis":
                        cur["axis"], cur["axis_order"] = np.array(f[1:4], dtype=np.float64), f[4].upper()
                    elif key == "dof":
                        cur["dof"] = [x.lower() for x in f[1:]]
            elif section == "hierarchy" and key not in ("begin", "end"):
                children.setdefault(f[0], []).extend(f[1:])
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ValueError(f"{path}: line {i}: cannot read {ln!r:.80} ({_explain(exc)})") from exc
    if not bones or not children:
        raise ValueError(f"{path}: not an ASF skeleton (no :bonedata or :hierarchy)")
    for parent, kids in children.items():
        for k in kids:
            if k not in bones:
                raise ValueError(f"{path}: hierarchy names bone {k!r} (child of {parent!r}) that :bonedata lacks")
    return {"units": units, "root": root}, bones, children


def _parse_amc(path: Path, names: set[str]) -> tuple[dict[str, np.ndarray], bool]:
    """AMC -> bone name -> (T, n_dof) values; and whether angles are in degrees."""
    frames: list[dict[str, list[float]]] = []
    degrees = True
    for ln in path.read_text(errors="replace").splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        if ln.startswith(":"):
            degrees = degrees and ln.upper() != ":RADIANS"
            continue
        f = ln.split()
        if len(f) == 1 and f[0].isdigit():
            frames.append({})
            continue
        if not frames:
            raise ValueError(f"{path}: data line before the first frame number: {ln!r}")
        if f[0] not in names:
            raise ValueError(f"{path}: frame {len(frames)} moves bone {f[0]!r} that the ASF does not define")
        try:
            frames[-1][f[0]] = [float(x) for x in f[1:]]
        except ValueError as exc:
            raise ValueError(f"{path}: frame {len(frames)}, bone {f[0]!r}: {_explain(exc)}") from exc
    if not frames:
        raise ValueError(f"{path}: no frames")
    out = {}
    for name in frames[0]:
        try:
            out[name] = np.array([fr[name] for fr in frames], dtype=np.float64)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: bone {name!r} is missing or has a varying value count in some frame") from e
    return out, degrees


def read_asf_amc(
    asf_path: str | Path, amc_path: str | Path, fps: float = 120.0, length_to_m: float | None = None
) -> MocapClip:
    """Read an Acclaim skeleton (.asf) and motion (.amc) and run forward kinematics -> MocapClip, metres.

    AMC files do not store their frame rate: `fps` (CMU captures at 120). length_to_m: metres per ASF length unit;
    default from ':units length L' with the CMU/Vicon convention (L file units per inch): 0.0254 / L.
    Per bone: C = rotation of its 'axis' angles, M = rotation of the frame's dof angles (x, then y, then z);
    global rotation R = R_parent C M C^-1 and end = start + length * R @ direction.
    """
    asf_path, amc_path = Path(asf_path), Path(amc_path)
    for p in (asf_path, amc_path):
        if not p.is_file():
            raise FileNotFoundError(f"ASF/AMC file not found: {p}")
    try:
        return _read_asf_amc(asf_path, amc_path, fps, length_to_m)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        _reraise_with_file(exc, "ASF/AMC", asf_path, amc_path)


def _read_asf_amc(asf_path: Path, amc_path: Path, fps: float, length_to_m: float | None) -> MocapClip:
    info, bones, children = _parse_asf(asf_path)
    motion, degrees = _parse_amc(amc_path, set(bones) | {"root"})
    units, root = info["units"], info["root"]
    if length_to_m is None:
        length_to_m = 0.0254 / float(units["length"])
    to_deg = (lambda a: a) if degrees and units.get("angle", "deg").startswith("deg") else np.rad2deg
    axis_deg = (lambda a: a) if units.get("angle", "deg").startswith("deg") else np.rad2deg
    T = len(next(iter(motion.values())))
    if "root" not in motion:
        raise ValueError(f"{amc_path}: frames carry no 'root' line")
    rv = motion["root"]
    if rv.shape[1] != len(root["order"]):
        raise ValueError(f"{amc_path}: root lines have {rv.shape[1]} values, the ASF root order has "
                         f"{len(root['order'])} ({' '.join(root['order'])})")  # fmt: skip
    names, parents = ["root"], [-1]
    P = [np.zeros((T, 3))]
    R = [None]
    trans = np.zeros((T, 3))
    rot = np.zeros((T, 3))
    for n, c in enumerate(root["order"]):
        (trans if c[0] == "t" else rot)[:, "xyz".index(c[1])] = rv[:, n] if c[0] == "t" else to_deg(rv[:, n])
    C = _euler(root["axis"], axis_deg(root["orientation"]))
    R[0] = C @ _euler("xyz", rot) @ C.T
    P[0] = trans + root["position"]

    def visit(parent: str, pi: int) -> None:
        for name in children.get(parent, []):
            b = bones[name]
            C = _euler(b.axis_order, axis_deg(b.axis))
            ang = np.zeros((T, 3))
            if b.dof:
                if name not in motion:
                    raise ValueError(f"{amc_path}: bone {name!r} has dof {b.dof} in the ASF but no AMC values")
                v = motion[name]
                if v.shape[1] != len(b.dof):
                    raise ValueError(f"{amc_path}: bone {name!r} has {v.shape[1]} values per frame, the ASF "
                                     f"declares dof {b.dof}")  # fmt: skip
                for n, d in enumerate(b.dof):
                    if d[0] == "r":
                        ang[:, "xyz".index(d[1])] = to_deg(v[:, n])
            Rg = R[pi] @ C @ _euler("xyz", ang) @ C.T
            names.append(name)
            parents.append(pi)
            R.append(Rg)
            P.append(P[pi] + b.length * np.einsum("tij,j->ti", Rg, b.direction))
            visit(name, len(names) - 1)

    visit("root", 0)
    return MocapClip(names, parents, np.stack(P, axis=1) * length_to_m, float(fps), "asf")
