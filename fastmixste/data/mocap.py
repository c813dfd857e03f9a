"""Motion-capture import for pretraining corpora: BVH, ASF/AMC, DeepMimic -> 17 H36M joints -> resampled npz.

    python -m fastmixste.data.mocap walk.bvh subject.asf 01.amc 02.amc --out corpus.npz --fps 50
    python -m fastmixste.data.mocap humanoid3d_*.txt --out deepmimic.npz      # DeepMimic clips (data/deepmimic.py)

Bad input (a malformed file, a bad option) ends with a one-line message naming it and exit code 2; --debug shows
the traceback.

Output coordinates follow Human3.6M world conventions: metres, Z up (mocap files are Y up; converted).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from fastmixste.data.skeleton import H36M_JOINT_NAMES
from fastmixste.io.cli import UserInputError, add_debug_argument, cli_entry
from fastmixste.io.files import atomic_write, check_output, check_writable_folder
from fastmixste.io.safeload import DataFileError, MissingKeyError, read_npz, read_npz_keys

from .mocap_formats import MAX_CLIP_FRAMES, MocapClip, check_fps, read_asf_amc, read_bvh

MOCAP_FORMAT = "fastmixste-mocap-v1"


# ------------------------------------------------------------------------------------------------ to 17 joints
# H36M joint -> candidate point names, first match wins; a tuple averages several points.
ASF_TO_H36M: dict[str, list] = {
    "pelvis": ["root"], "r_hip": ["rhipjoint"], "r_knee": ["rfemur"], "r_ankle": ["rtibia"],
    "l_hip": ["lhipjoint"], "l_knee": ["lfemur"], "l_ankle": ["ltibia"],
    "spine": ["upperback"], "thorax": ["lowerneck"], "neck_nose": ["upperneck"], "head": ["head"],
    "l_shoulder": ["lclavicle"], "l_elbow": ["lhumerus"], "l_wrist": ["lradius"],
    "r_shoulder": ["rclavicle"], "r_elbow": ["rhumerus"], "r_wrist": ["rradius"],
}  # fmt: skip
BVH_TO_H36M: dict[str, list] = {
    "pelvis": ["Hips", "hip", "Pelvis", "pelvis", "Root"],
    "r_hip": ["RightUpLeg", "RightHip", "RHip", "rthigh", "RightThigh"],
    "r_knee": ["RightLeg", "RightKnee", "RKnee", "rshin", "RightShin"],
    "r_ankle": ["RightFoot", "RightAnkle", "RAnkle", "rfoot"],
    "l_hip": ["LeftUpLeg", "LeftHip", "LHip", "lthigh", "LeftThigh"],
    "l_knee": ["LeftLeg", "LeftKnee", "LKnee", "lshin", "LeftShin"],
    "l_ankle": ["LeftFoot", "LeftAnkle", "LAnkle", "lfoot"],
    "spine": ["Spine1", "Spine", "spine", "Chest", "chest", "abdomen"],
    "thorax": ["Neck", "neck", "Spine2", "Chest2", "chest2"],
    "neck_nose": ["Head", "head"],
    "head": ["HeadTop_End", "Head_end", "head_end", "HeadTop_End_end"],
    "l_shoulder": ["LeftArm", "LeftUpArm", "LeftShoulder", "lshldr", "LShoulder"],
    "l_elbow": ["LeftForeArm", "LeftLowArm", "LeftElbow", "lforearm", "LElbow"],
    "l_wrist": ["LeftHand", "LeftWrist", "lhand", "LWrist"],
    "r_shoulder": ["RightArm", "RightUpArm", "RightShoulder", "rshldr", "RShoulder"],
    "r_elbow": ["RightForeArm", "RightLowArm", "RightElbow", "rforearm", "RElbow"],
    "r_wrist": ["RightHand", "RightWrist", "rhand", "RWrist"],
}


def to_h36m17(clip: MocapClip, mapping: Mapping[str, Iterable[str] | str] | None = None, up: str | None = None):
    """MocapClip -> (T, 17, 3) float32 H36M joints in metres, Z up (H36M world convention).

    mapping: H36M joint name (fastmixste.data.skeleton.H36M_JOINT_NAMES) -> point name or candidates (first present
    wins); defaults by file type (ASF_TO_H36M, BVH_TO_H36M, deepmimic.DEEPMIMIC_TO_H36M). up: the clip's up
    axis ('y' or 'z'; default clip.up).
    """
    if mapping is None and clip.source == "deepmimic":
        from fastmixste.data.deepmimic import DEEPMIMIC_TO_H36M as mapping
    mapping = dict(mapping) if mapping is not None else (ASF_TO_H36M if clip.source == "asf" else BVH_TO_H36M)
    lookup = {n: i for i, n in enumerate(clip.names)}
    lower = {n.lower(): i for i, n in enumerate(clip.names)}
    idx, missing = [], []
    for joint in H36M_JOINT_NAMES:
        cands = mapping.get(joint, [])
        cands = [cands] if isinstance(cands, str) else list(cands)
        hit = next((lookup[c] for c in cands if c in lookup), None)
        if hit is None:
            hit = next((lower[c.lower()] for c in cands if c.lower() in lower), None)
        if hit is None:
            missing.append(f"{joint} (tried {cands})")
        idx.append(hit)
    if missing:
        raise ValueError(f"cannot map {len(missing)} H36M joint(s): {'; '.join(missing)}; the clip has points "
                         f"{clip.names}; pass mapping=")  # fmt: skip
    x = clip.positions[:, idx]
    up = (up or clip.up).lower()
    if up == "y":  # rotate +90 deg about x: (x, y, z) -> (x, -z, y), right-handed stays right-handed
        x = np.stack([x[..., 0], -x[..., 2], x[..., 1]], axis=-1)
    elif up != "z":
        raise ValueError(f"up must be 'y' or 'z', got {up!r}")
    if not np.isfinite(x).all():
        raise ValueError("mocap positions contain NaN/inf after forward kinematics")
    return x.astype(np.float32)


def resample(x: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """(T, ...) at src_fps -> (T', ...) at dst_fps by linear interpolation in time; T' = floor((T-1) r) + 1."""
    if src_fps <= 0 or dst_fps <= 0:
        raise ValueError(f"frame rates must be positive, got src {src_fps} and dst {dst_fps}")
    check_fps(src_fps, "resample: the source frame rate")
    check_fps(dst_fps, "resample: the target frame rate")
    x = np.asarray(x)
    T = x.shape[0]
    if T == 0:
        raise ValueError("resample got an empty sequence")
    if src_fps == dst_fps:
        return x.copy()
    n = int(np.floor((T - 1) * dst_fps / src_fps + 1e-9)) + 1
    if n > MAX_CLIP_FRAMES:
        raise ValueError(f"resample: {T} frames at {src_fps:g} fps become {n:,} frames at {dst_fps:g} fps, above the "
                         f"limit of {MAX_CLIP_FRAMES:,} frames per clip")
    t = np.arange(n) * (src_fps / dst_fps)
    i0 = np.minimum(np.floor(t).astype(np.int64), T - 1)
    i1 = np.minimum(i0 + 1, T - 1)
    w = (t - i0).reshape(-1, *([1] * (x.ndim - 1)))
    return (x[i0] * (1 - w) + x[i1] * w).astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)


# -------------------------------------------------------------------------------------------------------- npz
def save_mocap_npz(path: str | Path, clips: Mapping[str, np.ndarray], fps: float) -> None:
    """Write clips name -> (T, 17, 3) metres (Z up) at `fps` to an npz the pretraining stage reads (atomic)."""
    path = Path(path)
    if not clips:
        raise ValueError("save_mocap_npz got no clips")
    arrays: dict[str, np.ndarray] = {}
    for i, (name, x) in enumerate(clips.items()):
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[1:] != (17, 3) or x.shape[0] < 1:
            raise ValueError(f"clip {name!r}: expected shape (T, 17, 3), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"clip {name!r} contains NaN/inf")
        arrays[f"clip_{i:05d}"] = x.astype(np.float32)
    arrays["names"] = np.array(list(clips), dtype=str)
    arrays["fps"] = np.array(float(fps))
    arrays["format"] = np.array(MOCAP_FORMAT)
    arrays["joint_names"] = np.array(H36M_JOINT_NAMES)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def _open_mocap_npz(path: Path, header_only: bool = False) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"mocap corpus not found: {path} (write one with python -m fastmixste.data.mocap)")
    z = read_npz(path, keys=["names", "fps", "format"] if header_only else None)  # never unpickles
    for key in ("names", "fps", "format"):
        if key not in z:
            raise MissingKeyError(f"{path}: missing key {key!r}; not a fastmixste mocap corpus (keys "
                                  f"{sorted(read_npz_keys(path))})")  # fmt: skip
    if str(z["format"]) != MOCAP_FORMAT:
        raise DataFileError(f"{path}: format {str(z['format'])!r}, expected {MOCAP_FORMAT!r}")
    if z["fps"].shape != () or not np.issubdtype(z["fps"].dtype, np.number):
        raise DataFileError(f"{path}: 'fps' must be one number, got {z['fps']!r:.60}")
    try:
        check_fps(z["fps"].item(), f"{path}: fps")
    except ValueError as exc:
        raise DataFileError(str(exc)) from None
    return z


def load_mocap_npz(path: str | Path) -> dict[str, np.ndarray]:
    """npz written by save_mocap_npz -> name -> (T, 17, 3) float32 metres, Z up (frame rate: mocap_npz_fps)."""
    path = Path(path)
    z = _open_mocap_npz(path)
    out = {}
    for i, name in enumerate(z["names"].tolist()):
        key = f"clip_{i:05d}"
        if key not in z:
            raise MissingKeyError(f"{path}: missing key {key!r} for clip {name!r}")
        x = z[key]
        if x.ndim != 3 or x.shape[1:] != (17, 3):
            raise ValueError(f"{path}: {key!r} ({name!r}) has shape {x.shape}, expected (T, 17, 3)")
        if not np.isfinite(x).all():
            raise ValueError(f"{path}: {key!r} ({name!r}) contains NaN/inf")
        out[name] = x.astype(np.float32, copy=False)
    return out


def mocap_npz_fps(path: str | Path) -> float:
    """Frame rate of a corpus written by save_mocap_npz."""
    return float(_open_mocap_npz(Path(path), header_only=True)["fps"])


# -------------------------------------------------------------------------------------------------------- CLI
def sniff_format(path: Path) -> str:
    """'bvh', 'asf', 'amc' or 'deepmimic' from the extension; a .txt/.json file by its first bytes."""
    ext = path.suffix.lower()
    if ext in (".bvh", ".asf", ".amc"):
        return ext[1:]
    if ext not in (".txt", ".json"):
        raise ValueError(f"{path}: unsupported file type {ext!r} (expected .bvh, .asf, .amc, or a DeepMimic .txt)")
    if not path.is_file():
        raise FileNotFoundError(f"motion file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"{"):
        return "deepmimic"
    if head[:9].upper() == b"HIERARCHY":
        return "bvh"
    raise ValueError(f"{path}: not a DeepMimic motion (a JSON object with \"Frames\") nor a BVH file; it starts "
                     f"with {head[:20]!r}")  # fmt: skip


def import_files(
    files: Iterable[str | Path], fps: float = 50.0, amc_fps: float = 120.0, bvh_scale: float | str = "auto",
    urdf: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """BVH files, ASF skeletons each followed by their AMC motions, DeepMimic clips -> name -> (T', 17, 3) at `fps`.

    urdf: the humanoid of the DeepMimic clips (default: pybullet's, built in; fastmixste.data.deepmimic).
    """
    clips: dict[str, np.ndarray] = {}
    asf: Path | None = None
    for f in map(Path, files):
        ext = "." + sniff_format(f)
        if ext == ".asf":
            if not f.is_file():
                raise FileNotFoundError(f"ASF file not found: {f}")
            asf = f
            continue
        if ext == ".bvh":
            clip = read_bvh(f, scale=bvh_scale)
        elif ext == ".amc":
            if asf is None:
                raise ValueError(f"{f}: an .amc file needs its .asf skeleton listed before it")
            clip = read_asf_amc(asf, f, fps=amc_fps)
        else:
            from fastmixste.data.deepmimic import read_deepmimic

            clip = read_deepmimic(f, urdf=urdf, fps=fps)  # resampled by pose (slerp), not by position
        base = re.sub(r"\s+", "_", f.stem)
        name, k = base, 1
        while name in clips:
            name, k = f"{base}_{k}", k + 1
        clips[name] = resample(to_h36m17(clip), clip.fps, fps)
    if not clips:
        raise ValueError("no motion files given (.bvh, .asf followed by .amc, or DeepMimic .txt)")
    return clips


def _is_corpus(path: Path) -> bool:
    """Whether ``path`` is a corpus this command wrote (only the archive's names and its format entry are read)."""
    try:
        return str(read_npz(path, keys=["format"]).get("format")) == MOCAP_FORMAT
    except (DataFileError, OSError):
        return False


def _check_out(out: Path) -> None:
    """Fail before reading any motion file when the corpus cannot be written to `out`."""
    if out.is_dir():
        raise UserInputError(f"--out {out} is a folder; expected a file name ending in .npz")
    if out.suffix != ".npz":
        raise UserInputError(f"--out {out}: expected a file name ending in .npz")
    try:
        check_writable_folder(out.parent)
    except OSError as exc:
        raise UserInputError(f"--out {out}: cannot write to {out.parent} ({exc.strerror or exc})") from exc


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Import motion files; errors become one-line messages with exit code 2 (fastmixste.io.cli)."""
    p = argparse.ArgumentParser(prog="python -m fastmixste.data.mocap",
                                description="Convert BVH / ASF+AMC / DeepMimic motion capture to a 17-joint H36M "
                                            "corpus npz.")  # fmt: skip
    p.add_argument("files", nargs="+", help=".bvh files; .asf skeletons each followed by their .amc motions; "
                                            "DeepMimic .txt clips (JSON)")  # fmt: skip
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--fps", type=float, default=50.0, help="target frame rate (default 50, as Human3.6M)")
    p.add_argument("--amc-fps", type=float, default=120.0, help="frame rate of the AMC files (CMU: 120)")
    p.add_argument("--bvh-scale", default="auto", help="metres per BVH unit, or 'auto'")
    p.add_argument("--urdf", help="humanoid URDF of DeepMimic clips (default: pybullet's humanoid.urdf, built in)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out file that is not a mocap corpus")
    add_debug_argument(p)
    a = p.parse_args(argv)
    for flag, value in (("--fps", a.fps), ("--amc-fps", a.amc_fps)):
        if not np.isfinite(value) or value <= 0:
            raise UserInputError(f"{flag} must be a positive number of frames per second, got {value:g}")
        check_fps(value, flag)
    scale: float | str = "auto"
    if a.bvh_scale != "auto":
        try:
            scale = float(a.bvh_scale)
        except ValueError:
            raise UserInputError(f"--bvh-scale expects metres per BVH unit (e.g. 0.01 for cm) or 'auto', got "
                                 f"{a.bvh_scale!r}") from None  # fmt: skip
        if not np.isfinite(scale) or scale <= 0:
            raise UserInputError(f"--bvh-scale must be a positive number, got {a.bvh_scale}")
    _check_out(Path(a.out))
    if a.urdf and not Path(a.urdf).is_file():
        raise UserInputError(f"--urdf {a.urdf}: no such file")
    try:
        check_output(a.out, "--out", inputs={f"input {f}": f for f in a.files}, ours=_is_corpus,
                     overwrite=a.overwrite)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    clips = import_files(a.files, fps=a.fps, amc_fps=a.amc_fps, bvh_scale=scale, urdf=a.urdf)
    save_mocap_npz(a.out, clips, a.fps)
    frames = sum(c.shape[0] for c in clips.values())
    print(f"wrote {a.out}: {len(clips)} clip(s), {frames} frames at {a.fps:g} fps ({frames / a.fps:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
