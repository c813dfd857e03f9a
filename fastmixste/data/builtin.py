"""Built-in synthetic stand-in for Human3.6M, written in the VideoPose3D npz format.

What it is: procedurally generated motion on the 17-joint H36M skeleton, 50 fps, for the seven H36M subject
names (each with its own bone lengths), all 15 H36M actions x 2 takes ('Walking', 'Walking 1', ...), seen by the
four real H36M cameras (published intrinsics and per-subject extrinsics, with lens distortion). Each action is
driven by one of 9 parametric motion generators (walk, gesture, sit, sit-down, hand-to-head, photo, posing,
purchases, waiting) with per-take random variation, root motion around the capture area, walking legs whenever
the root moves, and feet kept on the floor. 2D "detections" are the projections plus detector-like error:
per-joint noise levels, slowly drifting bias plus per-frame jitter, occasional outliers and left/right confusions.
data_2d_h36m_gt.npz holds the exact projections.

What it is not: real human motion. Joint angles follow hand-written rhythms and keyframes, there is no physics,
no hand/foot detail (the 15 unused joints of the 32-joint layout copy their parent's position), no images.
Numbers measured on it say the pipeline works and the model learns; they are not Human3.6M results.

Size: 7 subjects x 15 actions x 2 takes, 200-320 frames each (54,525 frames, ~18 min at 50 fps), ~62 MB on disk;
generation takes ~4 s of one CPU core (1 s generating, the rest compressing).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastmixste.data.cameras import h36m_cameras, project_to_2d, world_to_camera
from fastmixste.data.h36m import ACTIONS, TEST_SUBJECTS, TRAIN_SUBJECTS
from fastmixste.data.skeleton import H36M_32_PARENTS, H36M_32_TO_17, H36M_LEFT, H36M_RIGHT
from fastmixste.io.files import atomic_write
from fastmixste.io.safeload import DataFileError, read_npz

BUILTIN_VERSION = 1
FPS = 50
SUBJECTS = TRAIN_SUBJECTS + TEST_SUBJECTS
TAKES = 2
FRAMES = (200, 320)  # per take, uniform
FILES = ("data_3d_h36m.npz", "data_2d_h36m_cpn_ft_h36m_dbb.npz", "data_2d_h36m_gt.npz")
_SEED = 20260
# Floor contact: the lower ankle joint sits this high (metres).
_ANKLE_HEIGHT = 0.09
# Capture area centre in H36M world coordinates (between the four cameras), metres.
_CENTRE = np.array([0.0, 0.4])

# Mean bone lengths (metres) close to the Human3.6M subjects'.
_BONES = {
    "hip": 0.13, "thigh": 0.44, "shin": 0.43, "spine": 0.23, "thorax": 0.25, "neck": 0.12, "head": 0.115,
    "shoulder": 0.15, "upper_arm": 0.28, "forearm": 0.25,
}  # fmt: skip
# 2D detector error, standard deviation in pixels at 5 m, per joint (H36M order): wrists and ankles worst.
_SIGMA_PX = np.array([4.0, 5.0, 4.5, 5.5, 5.0, 4.5, 5.5, 6.0, 4.0, 3.5, 4.5, 4.0, 5.0, 7.0, 4.0, 5.0, 7.0])

_ANGLES = (
    "pelvis_pitch", "lean", "side", "twist", "neck_pitch", "neck_yaw",
    "r_hip_flex", "r_hip_abd", "r_knee", "l_hip_flex", "l_hip_abd", "l_knee",
    "r_sh_flex", "r_sh_abd", "r_elbow", "l_sh_flex", "l_sh_abd", "l_elbow",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- rotations / FK
def _rot(axis: int, a: np.ndarray) -> np.ndarray:
    """(T,) angles -> (T, 3, 3) rotations about x (0), y (1) or z (2)."""
    c, s = np.cos(a), np.sin(a)
    R = np.zeros((len(a), 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[:, axis, axis] = 1
    R[:, i, i], R[:, j, j], R[:, i, j], R[:, j, i] = c, c, -s, s
    return R


def _app(R: np.ndarray, v) -> np.ndarray:
    """(T, 3, 3) @ (3,) or (T, 3) -> (T, 3)."""
    v = np.asarray(v, dtype=np.float64)
    return np.einsum("tij,j->ti", R, v) if v.ndim == 1 else np.einsum("tij,tj->ti", R, v)


def _forward_kinematics(a: dict[str, np.ndarray], bones: dict[str, float], xy: np.ndarray, yaw: np.ndarray):
    """Joint angles (T,) per name, root (T, 2) and heading (T,) -> (T, 17, 3) world positions, feet on the floor.

    Body frame: x forward, y left, z up. Positive flexion moves a limb forward, positive abduction away from the body.
    """
    T = len(yaw)
    Ry, Rx, Rz = (lambda v: _rot(1, v)), (lambda v: _rot(0, v)), (lambda v: _rot(2, v))
    down, up = np.array([0.0, 0, -1]), np.array([0.0, 0, 1])
    J = np.zeros((T, 17, 3))
    J[:, 0, :2] = xy
    R_pel = Rz(yaw) @ Ry(a["pelvis_pitch"])
    R_torso = R_pel @ Ry(a["lean"]) @ Rx(a["side"]) @ Rz(a["twist"])
    for side, sgn, (hip, knee, ankle) in (("r", -1, (1, 2, 3)), ("l", 1, (4, 5, 6))):
        J[:, hip] = J[:, 0] + _app(R_pel, [0, sgn * bones["hip"], -0.01])
        R_th = R_pel @ Ry(-a[f"{side}_hip_flex"]) @ Rx(sgn * a[f"{side}_hip_abd"])
        J[:, knee] = J[:, hip] + _app(R_th, down * bones["thigh"])
        J[:, ankle] = J[:, knee] + _app(R_th @ Ry(a[f"{side}_knee"]), down * bones["shin"])
    J[:, 7] = J[:, 0] + _app(R_pel @ Ry(0.5 * a["lean"]), up * bones["spine"])
    J[:, 8] = J[:, 7] + _app(R_torso, up * bones["thorax"])
    R_head = R_torso @ Rz(a["neck_yaw"]) @ Ry(a["neck_pitch"])
    J[:, 9] = J[:, 8] + _app(R_head, np.array([0.33, 0, 0.94]) * bones["neck"])
    J[:, 10] = J[:, 9] + _app(R_head, np.array([-0.17, 0, 0.98]) * bones["head"])
    for side, sgn, (sh, el, wr) in (("l", 1, (11, 12, 13)), ("r", -1, (14, 15, 16))):
        J[:, sh] = J[:, 8] + _app(R_torso, np.array([-0.05, sgn * 0.96, -0.26]) * bones["shoulder"])
        R_ua = R_torso @ Ry(-a[f"{side}_sh_flex"]) @ Rx(sgn * a[f"{side}_sh_abd"])
        J[:, el] = J[:, sh] + _app(R_ua, down * bones["upper_arm"])
        J[:, wr] = J[:, el] + _app(R_ua @ Ry(-a[f"{side}_elbow"]), down * bones["forearm"])
    # Feet on the floor: the lower ankle at ankle height (also seats the sitters, whose feet stay down).
    J[..., 2] += _ANKLE_HEIGHT - np.minimum(J[:, 3, 2], J[:, 6, 2])[:, None]
    return J


# ------------------------------------------------------------------------------------------------ signal helpers
def _smooth(rng: np.random.Generator, T: int, amp: float, period: float = 3.0) -> np.ndarray:
    """(T,) smooth random signal: sum of 3 sinusoids with random phases around `period` seconds, std ~ amp."""
    t = np.arange(T) / FPS
    out = np.zeros(T)
    for _ in range(3):
        f = 1.0 / (period * rng.uniform(0.5, 1.6))
        out += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out * amp / np.sqrt(1.5)


def _keys(T: int, keys: list[tuple[float, float]]) -> np.ndarray:
    """(T,) signal through (time s, value) keys with smoothstep easing between them, held outside."""
    t = np.arange(T) / FPS
    ts = np.array([k[0] for k in keys])
    vs = np.array([k[1] for k in keys])
    i = np.clip(np.searchsorted(ts, t) - 1, 0, len(ts) - 2) if len(ts) > 1 else np.zeros(T, int)
    if len(ts) == 1:
        return np.full(T, vs[0])
    u = np.clip((t - ts[i]) / np.maximum(ts[i + 1] - ts[i], 1e-6), 0, 1)
    u = u * u * (3 - 2 * u)
    return vs[i] + (vs[i + 1] - vs[i]) * u


def _episodes(rng: np.random.Generator, T: int, rate: float, dur: tuple[float, float], ramp: float = 0.4):
    """(T,) 0..1 envelope of random episodes (`rate` per second, each `dur` seconds, eased in and out)."""
    keys: list[tuple[float, float]] = [(0.0, 0.0)]
    t = rng.exponential(1 / rate) * 0.5
    while t < T / FPS:
        d = rng.uniform(*dur)
        keys += [(t, 0.0), (t + ramp, 1.0), (t + ramp + d, 1.0), (t + 2 * ramp + d, 0.0)]
        t += 2 * ramp + d + rng.exponential(1 / rate)
    return _keys(T, keys)


class _Motion:
    """Angles, speed and steering of one take while a generator builds it."""

    def __init__(self, rng: np.random.Generator, T: int):
        self.rng, self.T = rng, T
        self.t = np.arange(T) / FPS
        self.a = {k: np.zeros(T) for k in _ANGLES}
        # Relaxed standing pose plus small idle movement on every angle.
        for side in "lr":
            self.a[f"{side}_sh_abd"] += 0.12
            self.a[f"{side}_elbow"] += 0.25
            self.a[f"{side}_knee"] += 0.05
            self.a[f"{side}_hip_abd"] += 0.04
        for k in _ANGLES:
            self.a[k] += _smooth(rng, T, 0.025, period=4.0)
        self.speed = np.zeros(T)  # m/s along the heading
        self.yaw_rate = np.zeros(T)  # rad/s
        self.yaw0 = rng.uniform(-np.pi, np.pi)
        self.start = _CENTRE + rng.uniform(-0.5, 0.5, 2)

    def add(self, **angles: np.ndarray | float) -> None:
        for k, v in angles.items():
            self.a[k] = self.a[k] + v

    def both(self, name: str, v: np.ndarray | float) -> None:
        self.add(**{f"l_{name}": v, f"r_{name}": v})


def _wander(m: _Motion, amount: float, speed: float = 0.5) -> None:
    """Occasional short walks and turns in place."""
    m.speed += speed * _episodes(m.rng, m.T, amount, (0.8, 2.0))
    m.yaw_rate += _smooth(m.rng, m.T, 0.35 * amount / 0.15, period=5.0)


# ------------------------------------------------------------------------------------------------- generators
def _gen_walk(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    v = {"Walking": rng.uniform(1.2, 1.5), "WalkDog": rng.uniform(0.7, 1.0), "WalkTogether": rng.uniform(0.8, 1.05)}
    m.speed += v[style] * (1 + _smooth(rng, T, 0.06))
    radius, turn = rng.uniform(1.1, 1.6), rng.choice([-1, 1])
    m.yaw_rate += turn * m.speed / radius
    # Start on a circle around the capture area's centre, heading along it (the centre is on the turning side).
    left = np.array([-np.sin(m.yaw0), np.cos(m.yaw0)])
    m.start = _CENTRE - turn * radius * left + rng.normal(0, 0.1, 2)
    if style == "WalkDog":  # leash arm forward with tugs, stop-and-go, leaning after the dog
        s = rng.choice(["l", "r"])
        tug = _episodes(rng, T, 0.3, (0.3, 0.8), ramp=0.15)
        m.add(**{f"{s}_sh_flex": 0.5 + 0.35 * tug, f"{s}_elbow": 0.7 - 0.4 * tug, f"{s}_sh_abd": 0.1})
        m.speed *= 1 - 0.7 * _episodes(rng, T, 0.12, (0.8, 2.0))
        m.add(lean=0.12 + 0.05 * tug, neck_pitch=0.25)
    elif style == "WalkTogether":  # talking to a partner on one side
        m.add(neck_yaw=rng.choice([-1, 1]) * (0.45 + _smooth(rng, T, 0.2)), twist=0.08)
    m.add(neck_pitch=0.05)


def _gen_gesture(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    _wander(m, 0.15 if style != "Greeting" else 0.2)
    if style == "Directions":  # point at something with a straight arm, look there
        for s in rng.permutation(["l", "r"]):
            e = _episodes(rng, T, 0.12, (1.0, 2.5))
            m.add(**{f"{s}_sh_flex": 1.35 * e, f"{s}_sh_abd": 0.3 * e, f"{s}_elbow": -0.15 * e})
            m.add(neck_yaw=(0.4 if s == "l" else -0.4) * e, twist=(0.2 if s == "l" else -0.2) * e)
    elif style == "Discussion":  # both forearms up, beat gestures, nodding
        m.both("elbow", 1.0 + _smooth(rng, T, 0.3, 1.2))
        m.add(l_sh_flex=0.35 + _smooth(rng, T, 0.2, 1.0), r_sh_flex=0.35 + _smooth(rng, T, 0.2, 1.0))
        m.add(neck_pitch=_smooth(rng, T, 0.12, 1.5), neck_yaw=_smooth(rng, T, 0.3, 4.0), twist=_smooth(rng, T, 0.1))
    else:  # Greeting: a wave high up, then a handshake
        s = rng.choice(["l", "r"])
        wave = _episodes(rng, T, 0.15, (1.2, 2.2))
        shake = _episodes(rng, T, 0.15, (1.0, 2.0)) * (1 - wave)
        osc = np.sin(2 * np.pi * rng.uniform(1.6, 2.4) * m.t)
        m.add(**{f"{s}_sh_flex": 2.2 * wave + 0.7 * shake, f"{s}_sh_abd": 0.35 * wave,
                 f"{s}_elbow": wave * (0.8 + 0.4 * osc) + shake * (0.8 + 0.12 * osc)})  # fmt: skip
        m.add(lean=0.2 * shake)


def _gen_sit(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    m.both("hip_flex", 1.5 + _smooth(rng, T, 0.05))
    m.both("knee", 1.45 + rng.uniform(-0.2, 0.2))
    m.add(l_hip_abd=rng.uniform(0.0, 0.25), r_hip_abd=rng.uniform(0.0, 0.25), pelvis_pitch=-0.1)
    m.add(lean=rng.uniform(-0.05, 0.2) + _smooth(rng, T, 0.1, 5.0), neck_pitch=0.2 + _smooth(rng, T, 0.1))
    m.both("sh_flex", 0.45)
    m.both("elbow", 1.0)
    m.yaw_rate += _smooth(rng, T, 0.04)
    if style == "Eating":  # bring food to the mouth with one hand, the other on the table
        s = rng.choice(["l", "r"])
        bite = _episodes(rng, T, 0.35, (0.4, 1.0), ramp=0.5)
        m.add(**{f"{s}_sh_flex": 0.35 * bite, f"{s}_elbow": 1.35 * bite, f"{s}_sh_abd": 0.15 * bite})
        m.add(lean=0.15 + 0.1 * bite, neck_pitch=0.15 * bite)
    else:  # Sitting: shifting, leaning back, one arm moving
        back = _episodes(rng, T, 0.1, (1.5, 3.0))
        m.add(lean=-0.25 * back, r_sh_flex=_smooth(rng, T, 0.3, 2.0), l_elbow=_smooth(rng, T, 0.3, 2.5))


def _gen_sitdown(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    dur = T / FPS
    down = rng.uniform(0.3, 0.8)
    # stand -> squat -> sit on the floor (legs forward, hands behind) -> maybe back up
    k = [(0.0, 0.0), (down, 0.0), (down + 1.2, 1.0), (down + 2.0, 2.0)]
    if dur > down + 4.5:
        k += [(dur - 2.4, 2.0), (dur - 1.6, 1.0), (dur - 0.3, 0.0)]
    s = _keys(T, k)
    squat, floor = np.clip(s, 0, 1) * (s <= 1) + (2 - s) * (s > 1), np.clip(s - 1, 0, 1)
    m.both("hip_flex", 1.9 * squat + 1.45 * floor)
    m.both("knee", 2.1 * squat + rng.uniform(0.2, 0.6) * floor)
    m.add(lean=0.6 * squat - 0.15 * floor + _smooth(rng, T, 0.05), neck_pitch=0.25 * squat)
    m.both("sh_flex", 0.6 * squat - 0.45 * floor)
    m.both("sh_abd", 0.2 * floor)
    m.both("elbow", -0.15 * floor)
    m.add(l_hip_abd=0.15 * floor, r_hip_abd=0.1 * floor)
    m.yaw_rate += _smooth(rng, T, 0.03)


def _gen_hand_to_head(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    s = rng.choice(["l", "r"])
    o = "l" if s == "r" else "r"
    if style == "Phoning":  # phone at the ear, slow pacing, free hand gestures
        _wander(m, 0.2, speed=0.45)
        m.add(**{f"{s}_sh_flex": 0.55, f"{s}_sh_abd": 0.45, f"{s}_elbow": 2.3 + _smooth(rng, T, 0.08)})
        m.add(**{f"{o}_elbow": 0.6 + _smooth(rng, T, 0.4, 2.0), f"{o}_sh_flex": 0.2 + _smooth(rng, T, 0.2, 2.0)})
        m.add(neck_pitch=0.1, side=(0.08 if s == "l" else -0.08))
    else:  # Smoking: periodic hand to mouth, other arm across the belly
        _wander(m, 0.08, speed=0.4)
        puff = _episodes(rng, T, 0.25, (0.5, 1.2), ramp=0.6)
        m.add(**{f"{s}_sh_flex": 0.3 + 0.5 * puff, f"{s}_elbow": 0.9 + 1.4 * puff, f"{s}_sh_abd": 0.1 - 0.1 * puff})
        m.add(**{f"{o}_sh_flex": 0.35, f"{o}_elbow": 1.6, f"{o}_sh_abd": -0.1})
        m.add(neck_pitch=-0.1 * puff)


def _gen_photo(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    _wander(m, 0.15, speed=0.5)
    cam = _episodes(rng, T, 0.25, (1.0, 2.5))
    crouch = _episodes(rng, T, 0.1, (1.0, 2.0))
    m.both("sh_flex", 0.3 + 0.9 * cam)
    m.both("sh_abd", -0.05 * cam)
    m.both("elbow", 0.5 + 1.5 * cam)
    m.both("hip_flex", 0.8 * crouch)
    m.both("knee", 1.3 * crouch)
    m.add(lean=0.3 * crouch + 0.05, neck_pitch=-0.1 * cam, twist=_smooth(rng, T, 0.15))


def _gen_posing(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    dur = T / FPS
    poses = []  # random held poses: arms up / out / on hips, wide stance, lunges
    for _ in range(8):
        kind = rng.integers(0, 4)
        p = dict.fromkeys(_ANGLES, 0.0)
        if kind == 0:
            p.update(l_sh_flex=2.6, r_sh_flex=2.6, l_elbow=0.3, r_elbow=0.3)
        elif kind == 1:
            p.update(l_sh_abd=1.45, r_sh_abd=1.45, l_hip_abd=0.2, r_hip_abd=0.2)
        elif kind == 2:
            p.update(l_sh_abd=0.7, r_sh_abd=0.7, l_elbow=1.9, r_elbow=1.9, side=0.1)
        else:
            s = rng.choice(["l", "r"])
            p.update(**{f"{s}_hip_flex": 0.7, f"{s}_knee": 0.9, f"{s}_sh_flex": 1.5, "lean": 0.15})
        for k in p:
            p[k] += rng.normal(0, 0.1)
        poses.append(p)
    times = np.cumsum(rng.uniform(1.2, 2.2, len(poses))) - 0.6  # first pose reached after >= 0.6 s
    times = times[times < dur + 1]
    for k in _ANGLES:
        keys = [(0.0, 0.0)]
        for i, ti in enumerate(times):
            keys += [(ti, poses[i][k]), (ti + 0.6, poses[i][k])]
        m.a[k] = m.a[k] + _keys(T, sorted(keys))
    m.yaw_rate += _smooth(rng, T, 0.15)


def _gen_purchases(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    _wander(m, 0.3, speed=0.7)
    s = rng.choice(["l", "r"])
    bend = _episodes(rng, T, 0.2, (0.6, 1.5), ramp=0.7)
    m.add(lean=1.0 * bend, neck_pitch=0.3 * bend)
    m.both("hip_flex", 0.35 * bend)
    m.both("knee", 0.5 * bend)
    m.add(**{f"{s}_sh_flex": 0.9 * bend, f"{s}_elbow": -0.1 * bend})
    carry = 1 - bend  # carry something at the other side
    o = "l" if s == "r" else "r"
    m.add(**{f"{o}_elbow": 0.9 * carry, f"{o}_sh_flex": 0.25 * carry})


def _gen_waiting(m: _Motion, style: str) -> None:
    rng, T = m.rng, m.T
    _wander(m, 0.07, speed=0.35)
    shift = _smooth(rng, T, 0.06, 6.0)  # weight from one leg to the other
    m.add(side=shift, l_hip_abd=shift, r_hip_abd=-shift, l_knee=np.maximum(shift, 0) * 2,
          r_knee=np.maximum(-shift, 0) * 2)  # fmt: skip
    crossed = _episodes(rng, T, 0.1, (2.0, 4.0))
    stretch = _episodes(rng, T, 0.05, (1.0, 1.5)) * (1 - crossed)
    m.both("sh_flex", 0.35 * crossed + 2.4 * stretch)
    m.both("sh_abd", -0.15 * crossed)
    m.both("elbow", 1.7 * crossed + 0.1 * stretch)
    m.add(neck_yaw=_smooth(rng, T, 0.35, 5.0), lean=-0.1 * stretch)


_GENERATORS: dict[str, Callable[[_Motion, str], None]] = {
    "Directions": _gen_gesture, "Discussion": _gen_gesture, "Greeting": _gen_gesture,
    "Eating": _gen_sit, "Sitting": _gen_sit, "SittingDown": _gen_sitdown,
    "Phoning": _gen_hand_to_head, "Smoking": _gen_hand_to_head,
    "Photo": _gen_photo, "Posing": _gen_posing, "Purchases": _gen_purchases, "Waiting": _gen_waiting,
    "Walking": _gen_walk, "WalkDog": _gen_walk, "WalkTogether": _gen_walk,
}  # fmt: skip


# ----------------------------------------------------------------------------------------------------- takes
def subject_bones(subject: str) -> dict[str, float]:
    """Bone lengths (metres) of a built-in subject: an overall size and small per-bone proportions."""
    rng = np.random.default_rng([_SEED, 1, SUBJECTS.index(subject)])
    scale = rng.uniform(0.92, 1.08)
    return {k: v * scale * rng.uniform(0.95, 1.05) for k, v in _BONES.items()}


def generate_take(subject: str, action: str, take: int, T: int | None = None) -> np.ndarray:
    """(T, 17, 3) float64 world positions (metres, Z up) of one synthetic take; deterministic."""
    rng = np.random.default_rng([_SEED, 2, SUBJECTS.index(subject), ACTIONS.index(action), take])
    T = int(rng.integers(FRAMES[0], FRAMES[1] + 1)) if T is None else T
    m = _Motion(rng, T)
    _GENERATORS[action](m, action)
    # Integrate heading and position; steer back towards the centre if the walk drifts out of the capture area.
    yaw = np.empty(T)
    xy = np.empty((T, 2))
    h, p = m.yaw0, m.start.copy()
    for i in range(T):
        d = p - _CENTRE
        if np.hypot(*d) > 1.8 and m.speed[i] > 0.1:
            want = np.arctan2(-d[1], -d[0])
            h += np.clip(np.angle(np.exp(1j * (want - h))), -1, 1) * 1.5 / FPS
        h += m.yaw_rate[i] / FPS
        yaw[i], xy[i] = h, p
        p = p + m.speed[i] / FPS * np.array([np.cos(h), np.sin(h)])
    # Walking legs and arm swing whenever the root moves; cadence rises with speed.
    v = m.speed
    phase = 2 * np.pi * np.cumsum((0.6 + 0.25 * v) / FPS) + rng.uniform(0, 2 * np.pi)
    amp = np.clip(v / 1.3, 0, 1.15)
    for side, ph in (("r", phase), ("l", phase + np.pi)):
        m.add(**{f"{side}_hip_flex": amp * (0.1 + 0.36 * np.sin(ph)),
                 f"{side}_knee": amp * (0.1 + 1.0 * np.maximum(np.sin(ph + 1.3), 0) ** 2),
                 f"{side}_sh_flex": -amp * 0.3 * np.sin(ph), f"{side}_elbow": amp * 0.15})  # fmt: skip
    m.add(twist=amp * 0.08 * np.sin(phase), side=amp * 0.03 * np.sin(phase), lean=0.05 * amp)
    return _forward_kinematics(m.a, subject_bones(subject), xy, yaw)


def _to_32(p17: np.ndarray) -> np.ndarray:
    """(T, 17, 3) -> (T, 32, 3): the released layout; the 15 unused joints copy their parent's position."""
    out = np.zeros((p17.shape[0], 32, 3), dtype=p17.dtype)
    used = np.zeros(32, dtype=bool)
    out[:, H36M_32_TO_17] = p17
    used[H36M_32_TO_17] = True
    for j, par in enumerate(H36M_32_PARENTS):
        if not used[j]:
            out[:, j] = out[:, par]
    return out


def detector_noise(rng: np.random.Generator, kp: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(T, 17, 2) pixels + (T,) root depth (m) -> noisy (T, 17, 2): CPN-like error with outliers and L/R swaps."""
    T = kp.shape[0]
    sigma = _SIGMA_PX[None, :, None] * (5.0 / depth)[:, None, None]
    # Slowly drifting bias: random values every ~12 frames, linearly interpolated.
    n_keys = T // 12 + 2
    knots = rng.normal(0, 0.7, (n_keys, 17, 2))
    pos = np.arange(T) / 12
    i0 = np.floor(pos).astype(int)
    w = (pos - i0)[:, None, None]
    bias = knots[i0] * (1 - w) + knots[i0 + 1] * w
    out = kp + sigma * (bias + rng.normal(0, 0.5, (T, 17, 2)))
    # Outliers: a joint jumps 15-60 px for 1-6 frames.
    for t0, j in np.argwhere(rng.random((T, 17)) < 0.002):
        d = rng.integers(1, 7)
        ang, r = rng.uniform(0, 2 * np.pi), rng.uniform(15, 60)
        out[t0 : t0 + d, j] += r * np.array([np.cos(ang), np.sin(ang)])
    # Left/right confusion of a limb end for a few frames.
    for t0 in np.flatnonzero(rng.random(T) < 0.003):
        d = rng.integers(2, 9)
        k = rng.integers(0, 6)
        lj, rj = H36M_LEFT[k], H36M_RIGHT[k]
        out[t0 : t0 + d, [lj, rj]] = out[t0 : t0 + d, [rj, lj]]
    return out


def generate_builtin() -> tuple[dict, dict, dict]:
    """All takes -> (positions_3d, positions_2d CPN-like, positions_2d exact) in the VideoPose3D layout."""
    pos3d: dict = {}
    cpn: dict = {}
    gt: dict = {}
    for si, subject in enumerate(SUBJECTS):
        cams = h36m_cameras(subject)
        pos3d[subject], cpn[subject], gt[subject] = {}, {}, {}
        for ai, action in enumerate(ACTIONS):
            for take in range(TAKES):
                name = action if take == 0 else f"{action} {take}"
                world = generate_take(subject, action, take)
                pos3d[subject][name] = _to_32(world).astype(np.float32)
                rng = np.random.default_rng([_SEED, 3, si, ai, take])
                extra = int(rng.integers(0, 5))  # detections may run a few frames past the mocap
                cpn_list, gt_list = [], []
                for cam in cams:
                    X = world_to_camera(world, cam.R, cam.translation)
                    px = project_to_2d(X, cam, pixels=True)
                    gt_list.append(px.astype(np.float32))
                    px_long = np.concatenate([px, np.repeat(px[-1:], extra, axis=0)])
                    depth = np.concatenate([X[:, 0, 2], np.repeat(X[-1:, 0, 2], extra)])
                    cpn_list.append(detector_noise(rng, px_long, depth).astype(np.float32))
                cpn[subject][name], gt[subject][name] = cpn_list, gt_list
    return pos3d, cpn, gt


# ------------------------------------------------------------------------------------------------------ cache
def _metadata() -> dict:
    return {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [list(H36M_LEFT), list(H36M_RIGHT)]}


def _atomic_savez(path: Path, **arrays) -> None:
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def content_hash(data: dict) -> str:
    """sha256 over the arrays of a nested subject -> action -> array(s) dict, in sorted order."""
    h = hashlib.sha256()
    for s in sorted(data):
        for a in sorted(data[s]):
            for arr in data[s][a] if isinstance(data[s][a], list) else [data[s][a]]:
                h.update(f"{s}/{a}/{arr.shape}".encode())
                h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def default_cache_root() -> Path:
    return Path(os.environ.get("FASTMIXSTE_CACHE") or Path.home() / ".cache" / "fastmixste")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_problem(out: Path) -> str | None:
    """None when `out` holds a complete built-in dataset that matches its manifest's hashes, else what is wrong.

    Manifests written since file hashes were added are checked by the sha256 of each file (fast). Older ones only
    have content hashes: the arrays are then read (safely, see fastmixste.io.safeload) and hashed, and the file
    hashes are added to the manifest so the next check is fast.
    """
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return "manifest.json is missing (an interrupted generation?)"
    try:
        info = json.loads(manifest.read_text())
        content = info["sha256"]
        if not isinstance(content, dict) or info.get("version") != BUILTIN_VERSION:
            raise ValueError(f"unexpected 'sha256' or 'version' entries (version {info.get('version')!r})")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        return f"manifest.json is unreadable ({exc})"
    missing = [f for f in FILES if not (out / f).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    files = info.get("file_sha256")
    if isinstance(files, dict):
        for f in FILES:
            if _file_sha256(out / f) != files.get(f):
                return f"{f} does not match the sha256 in manifest.json (changed or damaged since it was written)"
        return None
    for f in FILES:
        try:
            data = read_npz(out / f)
            value = data["positions_3d" if f == FILES[0] else "positions_2d"].item()
            ok = content_hash(value) == content.get(f)
        except (DataFileError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return f"{f} cannot be read ({exc})"
        if not ok:
            return f"{f} does not match the content hash in manifest.json (changed or damaged since it was written)"
    info["file_sha256"] = {f: _file_sha256(out / f) for f in FILES}
    with atomic_write(manifest, "w") as fh:
        json.dump(info, fh, indent=1)
    return None


def builtin_data_dir(cache_dir: str | Path | None = None, *, regenerate: bool = True) -> Path:
    """Directory holding the built-in dataset (generated on first use), usable with load_h36m(dir).

    The files go to <cache_dir>/builtin-<version> (cache_dir defaults to $FASTMIXSTE_CACHE or ~/.cache/fastmixste).
    Each file is written to a temporary name and renamed, and manifest.json (with the hashes) last, so an
    interrupted or concurrent generation never leaves a half-written dataset that looks complete.
    An existing cache is checked against the hashes in its manifest on every call; if a file was changed, damaged
    or is missing, the dataset is regenerated (saying so on stderr), or with ``regenerate=False`` a DataFileError
    says what is wrong.
    """
    out = Path(cache_dir) if cache_dir is not None else default_cache_root()
    out = out / f"builtin-{BUILTIN_VERSION}"
    manifest = out / "manifest.json"
    if out.is_dir() and any(out.iterdir()):
        problem = _cache_problem(out)
        if problem is None:
            return out
        if not regenerate:
            raise DataFileError(f"built-in data cache {out}: {problem}; delete that folder to regenerate it")
        print(f"note: built-in data cache {out}: {problem}; regenerating it", file=sys.stderr, flush=True)
    else:
        print(f"generating the built-in synthetic dataset (not Human3.6M; ~60 MB, a few seconds, once) in {out}",
              file=sys.stderr, flush=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    pos3d, cpn, gt = generate_builtin()
    meta = _metadata()
    _atomic_savez(out / FILES[0], positions_3d=np.array(pos3d, dtype=object))
    _atomic_savez(out / FILES[1], positions_2d=np.array(cpn, dtype=object), metadata=np.array(meta, dtype=object))
    _atomic_savez(out / FILES[2], positions_2d=np.array(gt, dtype=object), metadata=np.array(meta, dtype=object))
    info = {
        "name": "fastmixste built-in synthetic Human3.6M stand-in",
        "version": BUILTIN_VERSION,
        "fps": FPS,
        "subjects": SUBJECTS,
        "actions": ACTIONS,
        "takes": TAKES,
        "frames": int(sum(v.shape[0] for s in pos3d.values() for v in s.values())),
        "sha256": {FILES[0]: content_hash(pos3d), FILES[1]: content_hash(cpn), FILES[2]: content_hash(gt)},
        "file_sha256": {f: _file_sha256(out / f) for f in FILES},
    }
    with atomic_write(manifest, "w") as f:
        json.dump(info, f, indent=1)
    return out
