"""Procedural 3D motion corpus for pretraining, and a held-out test set of motion outside the fine-tuning data.

What it is: joint-angle trajectories on the 17-joint Human3.6M kinematic tree (the forward kinematics and bone
proportions of ``fastmixste.data.builtin``, extended with hip and shoulder axial rotation), generated in batches
with vectorised numpy and deterministic from a seed. Every clip has its own subject (overall size 0.82-1.18 x and
per-bone proportions 0.88-1.12 x the Human3.6M means, constant over the clip) and a random sequence of motion
patterns (1-4 s each, cross-faded over 0.25-0.6 s): standing with weight shifts, walking at 0.5-1.9 m/s on curved
paths, running at 2.2-4 m/s with flight phases, turning on the spot, reaching in random directions, bending to the
floor, squatting, sitting down on (and getting up from) an unseen chair, jumping, talking gestures, kicking,
lunging, throwing and arm exercises. Joint angles are clipped to anatomical ranges (``LIMITS``), then low-pass
filtered (Gaussian, sigma 2 frames at 50 fps), so the motion is smooth and stays within the limits. Every angle
also carries a small per-clip random "texture" (sum of 0.15-1.5 Hz sinusoids). The root follows the heading,
integrated from the speed and turn rate of the active pattern and steered back beyond 2.5 m from the centre; the lower
ankle is put on the floor every frame except in the flight phases of jumps and runs (``lift`` > 0).

What it is not: human motion capture. There is no physics (no balance, no momentum transfer, feet may slide
while they carry weight), the gait is a parametric cycle, hands and feet have no detail, and patterns are
hand-written. It has the *shape* of a pretraining corpus (far more varied and larger than the fine-tuning set,
many subjects, many speeds) so that the pretraining stage can be exercised and measured; numbers measured on it
say nothing about real motion. Real capture goes through ``python -m fastmixste.data.mocap`` and ``--mocap``.

Held-out test set (``heldout_sequences``): clips made mostly of patterns the built-in fine-tuning generators never
produce (running, jumping, kicking, squatting, lunging, throwing, bending to the floor, turning on the spot, arm
exercises), for subjects drawn from a seed stream used by nothing else, seen by the four real Human3.6M cameras
(S9's calibration) with ``fastmixste.data.builtin.detector_noise`` as the 2D error; paths are steered back
beyond 1 m from the capture-area centre, so ~1% of frames have a joint outside the image. The pretraining corpus
contains the same patterns (other seeds, other subjects): the set measures whether pretraining transfers to motion
that fine-tuning never shows, not whether anything generalises beyond this generator.

Size and speed: ``motion_corpus(300_000)`` (1,000 clips of 300 frames) takes ~3 s of CPU time on one core.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass

import numpy as np

from fastmixste.data.builtin import _ANKLE_HEIGHT, _BONES, _CENTRE, _app, detector_noise
from fastmixste.data.cameras import h36m_cameras, normalize_screen_coordinates, project_to_2d, world_to_camera
from fastmixste.data.filters import gaussian_smooth

MOTION_VERSION = 1
FPS = 50
_SEED = 61_373
_GRAVITY = 9.81
_SMOOTH_SIGMA = 2.0  # frames of the final Gaussian low-pass on every angle and on the root channels
_ARENA_RADIUS = 2.5  # metres; paths are steered back towards the centre beyond it

ANGLES: tuple[str, ...] = (
    "pelvis_pitch", "lean", "side", "twist", "neck_pitch", "neck_yaw",
    "r_hip_flex", "r_hip_abd", "r_hip_rot", "r_knee", "l_hip_flex", "l_hip_abd", "l_hip_rot", "l_knee",
    "r_sh_flex", "r_sh_abd", "r_sh_rot", "r_elbow", "l_sh_flex", "l_sh_abd", "l_sh_rot", "l_elbow",
)  # fmt: skip
_A = {k: i for i, k in enumerate(ANGLES)}
# Extra channels a pattern drives besides the angles: forward speed (m/s), turn rate (rad/s), root lift (m).
_SPEED, _TURN, _LIFT = len(ANGLES), len(ANGLES) + 1, len(ANGLES) + 2
_CHANNELS = len(ANGLES) + 3

# Anatomical ranges (radians) of every angle: flexion forward, abduction away from the body, knee/elbow flexion
# positive. Generous adult ranges (e.g. hip flexion to ~125 deg, knee to ~140 deg, shoulder elevation to ~170 deg).
LIMITS: dict[str, tuple[float, float]] = {
    "pelvis_pitch": (-0.35, 0.5), "lean": (-0.45, 1.45), "side": (-0.45, 0.45), "twist": (-0.8, 0.8),
    "neck_pitch": (-0.7, 0.8), "neck_yaw": (-1.2, 1.2),
    **{f"{s}_hip_flex": (-0.5, 2.2) for s in "rl"}, **{f"{s}_hip_abd": (-0.35, 0.8) for s in "rl"},
    **{f"{s}_hip_rot": (-0.6, 0.6) for s in "rl"}, **{f"{s}_knee": (0.0, 2.4) for s in "rl"},
    **{f"{s}_sh_flex": (-0.9, 3.0) for s in "rl"}, **{f"{s}_sh_abd": (-0.3, 2.8) for s in "rl"},
    **{f"{s}_sh_rot": (-1.2, 1.2) for s in "rl"}, **{f"{s}_elbow": (0.0, 2.5) for s in "rl"},
}  # fmt: skip
_LO = np.array([LIMITS[k][0] for k in ANGLES])
_HI = np.array([LIMITS[k][1] for k in ANGLES])

BONE_NAMES: tuple[str, ...] = tuple(_BONES)
# Subject proportions: overall size times a per-bone factor, both uniform (wider than the built-in subjects').
SUBJECT_SCALE = (0.82, 1.18)
BONE_SCALE = (0.88, 1.12)

PATTERNS: tuple[str, ...] = (
    "Idle", "Walk", "Run", "Turn", "Reach", "Bend", "Squat", "Sit", "Jump", "Talk", "Kick", "Lunge", "Throw", "Arms",
)  # fmt: skip
# Patterns none of the built-in fine-tuning generators produce: the held-out test set is made of these.
HELDOUT_PATTERNS: tuple[str, ...] = ("Run", "Jump", "Kick", "Squat", "Lunge", "Throw", "Bend", "Turn", "Arms")
# Minimum segment length (s) of patterns with a beginning and an end (sit down and get up, crouch and jump...).
_MIN_DUR = {"Sit": 3.0, "Squat": 2.0, "Bend": 2.0, "Lunge": 2.0, "Jump": 1.6, "Kick": 1.4, "Throw": 1.6}


# ------------------------------------------------------------------------------------------------ small helpers

def _taps(sigma: float) -> int:
    """Taps each side of the corpus's Gaussian low-passes: 4 sigma, rounded (the corpus was made with these)."""
    return int(4.0 * sigma + 0.5)


def _ss(u: np.ndarray) -> np.ndarray:
    """Smoothstep of u clipped to [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _bump(t: np.ndarray, t0: np.ndarray, t1: np.ndarray, ramp: float | np.ndarray) -> np.ndarray:
    """0 -> 1 -> 0 envelope: eased up over ``ramp`` seconds from t0, eased down to 0 at t1."""
    return _ss((t - t0) / ramp) * _ss((t1 - t) / ramp)


def _lerp(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * u


class _Out:
    """Pattern outputs for M frames: angle offsets (added to the neutral pose) and the root channels."""

    def __init__(self, m: int) -> None:
        self.y = np.zeros((m, _CHANNELS))

    def add(self, **kw: np.ndarray | float) -> None:
        for k, v in kw.items():
            self.y[:, _A[k]] += v

    def side(self, s: np.ndarray, name: str, v: np.ndarray | float) -> None:
        """Add ``v`` to the ``name`` angle of side ``s`` (bool array: True = left), the other side untouched."""
        self.y[:, _A[f"l_{name}"]] += np.where(s, v, 0.0)
        self.y[:, _A[f"r_{name}"]] += np.where(s, 0.0, v)

    def both(self, name: str, v: np.ndarray | float) -> None:
        self.add(**{f"l_{name}": v, f"r_{name}": v})


# --------------------------------------------------------------------------------------------------- patterns
# Each pattern maps local time t (s since the segment started), the segment duration d and 8 uniform numbers
# u (M, 8) drawn per segment to angle offsets and root channels. Patterns with a start and an end begin and finish
# near the neutral standing pose, so that cross-fades between segments stay plausible.
def _p_idle(o: _Out, t, d, u) -> None:
    f = _lerp(u[:, 0], 0.1, 0.3)
    shift = _lerp(u[:, 1], 0.03, 0.1) * np.sin(2 * np.pi * f * t + 6.3 * u[:, 2])
    o.add(side=shift, l_hip_abd=shift, r_hip_abd=-shift, l_knee=2 * np.maximum(shift, 0),
          r_knee=2 * np.maximum(-shift, 0))  # fmt: skip
    o.add(neck_yaw=_lerp(u[:, 3], -0.7, 0.7) * np.sin(2 * np.pi * 0.15 * t + 6.3 * u[:, 4]))
    arms = u[:, 5] < 0.4  # arms crossed or hands on hips for a while
    o.both("elbow", np.where(arms, 1.6, 0.0))
    o.both("sh_flex", np.where(arms, 0.35, 0.0))
    o.both("sh_abd", np.where(arms & (u[:, 6] < 0.5), 0.55, 0.0))
    o.y[:, _TURN] += _lerp(u[:, 7], -0.15, 0.15)


def _p_walk(o: _Out, t, d, u) -> None:
    o.y[:, _SPEED] += _lerp(u[:, 0], 0.5, 1.9) * (1 + 0.08 * np.sin(2 * np.pi * 0.3 * t + 6.3 * u[:, 1]))
    o.y[:, _TURN] += _lerp(u[:, 2], -0.8, 0.8) + 0.3 * np.sin(2 * np.pi * 0.2 * t + 6.3 * u[:, 3])
    o.add(neck_yaw=_lerp(u[:, 4], -0.5, 0.5), neck_pitch=_lerp(u[:, 5], -0.1, 0.35))
    carry = u[:, 6] < 0.25  # one forearm up (carrying, phone in hand)
    o.side(u[:, 7] < 0.5, "elbow", np.where(carry, 1.3, 0.0))


def _p_run(o: _Out, t, d, u) -> None:
    o.y[:, _SPEED] += _lerp(u[:, 0], 2.2, 4.0)
    o.y[:, _TURN] += _lerp(u[:, 1], -0.5, 0.5)
    o.add(neck_pitch=_lerp(u[:, 2], -0.15, 0.15))


def _p_turn(o: _Out, t, d, u) -> None:
    rate = np.where(u[:, 0] < 0.5, -1, 1) * _lerp(u[:, 1], 1.0, 2.6)
    o.y[:, _TURN] += rate * _bump(t, 0.2, d - 0.2, 0.4)
    o.y[:, _SPEED] += 0.08
    o.add(neck_yaw=0.35 * np.sign(rate) * _bump(t, 0.0, d - 0.4, 0.3), twist=0.15 * np.sign(rate))


def _p_reach(o: _Out, t, d, u) -> None:
    # One to three reaches per segment towards random directions, with one or both arms.
    period = d / np.floor(_lerp(u[:, 0], 1.0, 3.99))
    k = np.floor(t / period)
    v = np.modf(np.sin((k + 1) * (12.9898 + 78.233 * u[:, 1])) * 43758.5453)[0] % 1.0  # per-reach hash
    e = _bump(t - k * period, 0.05, period - 0.05, np.minimum(0.45, period / 3))
    left, both = v < 0.5, u[:, 2] < 0.25
    flex, abd = _lerp(u[:, 3] * 0.5 + v * 0.5, 0.2, 2.8), _lerp(u[:, 4], -0.2, 1.4)
    rot, elbow = _lerp(u[:, 5], -0.8, 0.8), _lerp(v, 0.0, 0.9)
    for side, moving in (("l", left | both), ("r", ~left | both)):
        for name, val in (("sh_flex", flex), ("sh_abd", abd), ("sh_rot", rot), ("elbow", elbow)):
            o.y[:, _A[f"{side}_{name}"]] += moving * e * val
    low = flex < 1.0  # reaching low or far: lean towards it
    o.add(lean=e * np.where(low, 0.45, 0.1) * u[:, 6], twist=e * np.where(left, 0.3, -0.3) * u[:, 7],
          neck_pitch=e * np.where(low, 0.3, -0.25))  # fmt: skip


def _p_bend(o: _Out, t, d, u) -> None:
    e = _bump(t, 0.1, d - 0.1, np.minimum(0.9, d / 3))
    o.add(lean=e * _lerp(u[:, 0], 0.8, 1.4), pelvis_pitch=e * 0.3, neck_pitch=e * 0.25)
    o.both("knee", e * _lerp(u[:, 1], 0.0, 0.9))
    o.both("hip_flex", e * _lerp(u[:, 1], 0.0, 0.6))
    o.both("sh_flex", e * _lerp(u[:, 2], 0.5, 1.4))
    o.both("elbow", e * 0.2)


def _p_squat(o: _Out, t, d, u) -> None:
    e = _bump(t, 0.1, d - 0.1, np.minimum(0.9, d / 3))
    depth = _lerp(u[:, 0], 0.5, 1.0)
    o.both("hip_flex", e * 1.95 * depth)
    o.both("knee", e * 2.25 * depth)
    o.both("hip_abd", e * _lerp(u[:, 1], 0.0, 0.35))
    o.add(lean=e * _lerp(u[:, 2], 0.3, 0.8), neck_pitch=-0.15 * e)
    arms = u[:, 3] < 0.5  # arms forward for balance, or hands on the knees
    o.both("sh_flex", e * np.where(arms, 1.4, 0.6))
    o.both("elbow", e * np.where(arms, 0.1, 0.3))


def _p_sit(o: _Out, t, d, u) -> None:
    down = _lerp(u[:, 0], 0.8, 1.3)
    e = _ss(t / down) * _ss((d - t) / down)
    # Leaning forward while the weight moves over the feet, on the way down and up.
    swing = np.sin(np.pi * np.clip(t / down, 0, 1)) + np.sin(np.pi * np.clip((d - t) / down, 0, 1))
    o.both("hip_flex", e * _lerp(u[:, 1], 1.3, 1.7))
    o.both("knee", e * _lerp(u[:, 2], 1.3, 1.8))
    o.add(lean=0.55 * swing + e * (_lerp(u[:, 3], -0.2, 0.2) + 0.1 * np.sin(2 * np.pi * 0.25 * t)))
    o.both("hip_abd", e * _lerp(u[:, 4], 0.0, 0.3))
    o.both("sh_flex", e * 0.45 + 0.6 * swing)
    o.both("elbow", e * _lerp(u[:, 5], 0.4, 1.4))
    o.add(r_sh_flex=e * 0.3 * np.sin(2 * np.pi * _lerp(u[:, 6], 0.2, 0.6) * t), neck_pitch=0.2 * e)


def _p_jump(o: _Out, t, d, u) -> None:
    period = _lerp(u[:, 0], 0.8, 1.3)
    flight = _lerp(u[:, 1], 0.25, 0.45)
    active = t < np.floor((d - 0.2) / period) * period  # whole jumps only: the segment ends standing
    ph = np.mod(t, period)
    crouch_t = 0.4
    crouch = np.where(ph < crouch_t, np.sin(np.pi * ph / crouch_t), 0.0)
    land = np.where(ph > crouch_t + flight, np.exp(-(ph - crouch_t - flight) / 0.12)
                    * np.sin(np.pi * np.clip((ph - crouch_t - flight) / 0.3, 0, 1)), 0.0)
    air = (ph >= crouch_t) & (ph < crouch_t + flight)
    fly = np.clip((ph - crouch_t) / flight, 0, 1)
    depth = _lerp(u[:, 2], 0.6, 1.2)
    k = active * (crouch * depth + 0.6 * land * depth)
    o.both("knee", 1.3 * k + air * active * 0.15)
    o.both("hip_flex", 0.9 * k + air * active * _lerp(u[:, 3], 0.0, 0.6) * np.sin(np.pi * fly))
    o.add(lean=0.45 * k)
    swing = active * np.where(ph < crouch_t, -0.6 * crouch, np.where(air, 2.2 * np.sin(np.pi * fly), 0.0))
    o.both("sh_flex", swing * _lerp(u[:, 4], 0.5, 1.0))
    # Flight: a ballistic arc of height g * flight^2 / 8.
    o.y[:, _LIFT] += active * air * 4 * (_GRAVITY * flight**2 / 8) * fly * (1 - fly)
    o.y[:, _SPEED] += active * air * _lerp(u[:, 5], 0.0, 1.2)


def _p_talk(o: _Out, t, d, u) -> None:
    f1, f2 = _lerp(u[:, 0], 0.6, 1.6), _lerp(u[:, 1], 0.5, 1.4)
    o.add(l_elbow=_lerp(u[:, 2], 0.6, 1.4) + 0.35 * np.sin(2 * np.pi * f1 * t),
          r_elbow=_lerp(u[:, 3], 0.6, 1.4) + 0.35 * np.sin(2 * np.pi * f2 * t + 1.0),
          l_sh_flex=0.35 + 0.2 * np.sin(2 * np.pi * f2 * t + 2.0), r_sh_flex=0.35 + 0.2 * np.sin(2 * np.pi * f1 * t),
          l_sh_rot=0.3 * np.sin(2 * np.pi * 0.4 * t), r_sh_rot=-0.3 * np.sin(2 * np.pi * 0.35 * t + 1.0),
          neck_pitch=0.12 * np.sin(2 * np.pi * 1.1 * t), neck_yaw=_lerp(u[:, 4], -0.5, 0.5),
          twist=0.1 * np.sin(2 * np.pi * 0.3 * t + 6.3 * u[:, 5]))  # fmt: skip


def _p_kick(o: _Out, t, d, u) -> None:
    left = u[:, 0] < 0.5
    t0 = _lerp(u[:, 1], 0.2, np.maximum(d - 1.1, 0.2))
    dur = _lerp(u[:, 2], 0.5, 0.9)
    s = np.clip((t - t0) / dur, 0, 1)
    wind = np.sin(np.pi * np.clip(s / 0.35, 0, 1)) * (s < 0.35)  # knee up and back
    strike = np.sin(np.pi * np.clip((s - 0.25) / 0.75, 0, 1))
    high = _lerp(u[:, 3], 0.8, 1.8)
    o.side(left, "hip_flex", 0.9 * wind + high * strike)
    o.side(left, "knee", 1.6 * wind + 0.3 * strike * (1 - strike))
    o.side(left, "hip_abd", _lerp(u[:, 4], 0.0, 0.4) * strike)
    o.add(lean=-0.25 * strike, neck_pitch=0.2 * strike)
    o.both("sh_abd", 0.5 * (wind + strike))
    o.both("elbow", 0.6 * (wind + strike))


def _p_lunge(o: _Out, t, d, u) -> None:
    e = _bump(t, 0.1, d - 0.1, np.minimum(0.8, d / 3))
    left = u[:, 0] < 0.5
    depth = _lerp(u[:, 1], 0.5, 1.0)
    o.side(left, "hip_flex", e * 1.3 * depth)
    o.side(left, "knee", e * 1.4 * depth)
    o.side(~left, "hip_flex", -e * 0.4 * depth)
    o.side(~left, "knee", e * 1.2 * depth)
    o.add(lean=e * _lerp(u[:, 2], -0.1, 0.4))
    arms = u[:, 3]
    o.both("sh_flex", e * np.where(arms < 0.3, 2.6, np.where(arms < 0.6, 0.0, 0.9)))
    o.both("sh_abd", e * np.where((arms >= 0.3) & (arms < 0.6), 0.3, 0.0))


def _p_throw(o: _Out, t, d, u) -> None:
    left = u[:, 0] < 0.5
    t0 = _lerp(u[:, 1], 0.2, np.maximum(d - 1.3, 0.2))
    wind, fast = _lerp(u[:, 2], 0.5, 0.8), _lerp(u[:, 3], 0.18, 0.3)
    back = _ss((t - t0) / wind) * (1 - _ss((t - t0 - wind) / fast))  # arm cocked back
    fwd = _ss((t - t0 - wind) / fast) * (1 - _ss((t - t0 - wind - fast - 0.15) / 0.5))  # follow-through
    overarm = u[:, 4] < 0.6
    o.side(left, "sh_flex", back * np.where(overarm, 2.4, -0.6) + fwd * np.where(overarm, 1.2, 1.4))
    o.side(left, "sh_abd", back * np.where(overarm, 0.6, 0.4) + 0.2 * fwd)
    o.side(left, "sh_rot", back * 0.8 - fwd * 0.4)
    o.side(left, "elbow", back * 1.8 + fwd * 0.3)
    sgn = np.where(left, 1.0, -1.0)
    o.add(twist=sgn * (0.5 * back - 0.4 * fwd), lean=-0.1 * back + 0.45 * fwd)
    o.side(~left, "hip_flex", 0.4 * (back + fwd))  # step into the throw
    o.side(~left, "knee", 0.3 * back)


def _p_arms(o: _Out, t, d, u) -> None:
    kind = u[:, 0]
    f = _lerp(u[:, 1], 0.4, 1.2)
    e = _bump(t, 0.0, d, np.minimum(0.6, d / 3))
    ph = 2 * np.pi * f * t
    up = kind < 0.3  # both arms overhead and down again (stretching, waving both)
    circles = (kind >= 0.3) & (kind < 0.6)  # arms out, circling
    # Otherwise jumping-jack arms (abduction swings) or clapping.
    claps = kind >= 0.85
    o.both("sh_flex", e * np.where(up, 1.4 * (1 - np.cos(ph)), np.where(circles, 0.5 * np.sin(ph), 0.0)
                                   + np.where(claps, 1.3, 0.0)))
    o.both("sh_abd", e * np.where(circles, 1.5 + 0.4 * np.cos(ph), np.where(up | claps, 0.1, 1.3 * (1 - np.cos(ph)))))
    o.both("sh_rot", e * np.where(claps, 0.9 + 0.35 * np.sin(ph * 2), 0.0))
    o.both("elbow", e * np.where(claps, 0.3, 0.1))
    o.add(neck_pitch=-0.1 * e * up)


_PATTERN_FNS = (_p_idle, _p_walk, _p_run, _p_turn, _p_reach, _p_bend, _p_squat, _p_sit, _p_jump, _p_talk, _p_kick,
                _p_lunge, _p_throw, _p_arms)


# ----------------------------------------------------------------------------------------- forward kinematics
def _post(R: np.ndarray, axis: int, a: np.ndarray) -> np.ndarray:
    """(M, 3, 3) R, (M,) angles -> R @ rotation(axis, a): only two columns change (cheaper than a 3 x 3 product)."""
    c, s = np.cos(a)[:, None], np.sin(a)[:, None]
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out = R.copy()
    out[:, :, i] = R[:, :, i] * c + R[:, :, j] * s
    out[:, :, j] = R[:, :, j] * c - R[:, :, i] * s
    return out


def _chain(R: np.ndarray, *rots: tuple[int, np.ndarray]) -> np.ndarray:
    """R @ rotation(axis_1, a_1) @ rotation(axis_2, a_2) @ ... for (axis, angles) pairs."""
    for axis, a in rots:
        R = _post(R, axis, a)
    return R


def _forward_kinematics(a: np.ndarray, bones: np.ndarray) -> np.ndarray:
    """(M, len(ANGLES)) angles, (M, len(BONE_NAMES)) bone lengths -> (M, 17, 3) body-frame joints, pelvis at 0.

    The Human3.6M tree of ``fastmixste.data.builtin`` (x forward, y left, z up, same rotation order and signs),
    with axial rotation of thighs and upper arms added after flexion and abduction.
    """
    M = len(a)
    X, Y, Z = 0, 1, 2
    b = {k: bones[:, i:i + 1] for i, k in enumerate(BONE_NAMES)}  # (M, 1) each
    g = {k: a[:, i] for k, i in _A.items()}
    down, up = np.array([0.0, 0, -1]), np.array([0.0, 0, 1])
    J = np.zeros((M, 17, 3))
    R_pel = _chain(np.broadcast_to(np.eye(3), (M, 3, 3)), (Y, g["pelvis_pitch"]))
    R_torso = _chain(R_pel, (Y, g["lean"]), (X, g["side"]), (Z, g["twist"]))
    for side, sgn, (hip, knee, ankle) in (("r", -1, (1, 2, 3)), ("l", 1, (4, 5, 6))):
        J[:, hip] = _app(R_pel, np.array([0, sgn, 0]) * b["hip"] + np.array([0, 0, -0.01]))
        R_th = _chain(R_pel, (Y, -g[f"{side}_hip_flex"]), (X, sgn * g[f"{side}_hip_abd"]),
                      (Z, sgn * g[f"{side}_hip_rot"]))
        J[:, knee] = J[:, hip] + _app(R_th, down * b["thigh"])
        J[:, ankle] = J[:, knee] + _app(_post(R_th, Y, g[f"{side}_knee"]), down * b["shin"])
    J[:, 7] = _app(_post(R_pel, Y, 0.5 * g["lean"]), up * b["spine"])
    J[:, 8] = J[:, 7] + _app(R_torso, up * b["thorax"])
    R_head = _chain(R_torso, (Z, g["neck_yaw"]), (Y, g["neck_pitch"]))
    J[:, 9] = J[:, 8] + _app(R_head, np.array([0.33, 0, 0.94]) * b["neck"])
    J[:, 10] = J[:, 9] + _app(R_head, np.array([-0.17, 0, 0.98]) * b["head"])
    for side, sgn, (sh, el, wr) in (("l", 1, (11, 12, 13)), ("r", -1, (14, 15, 16))):
        J[:, sh] = J[:, 8] + _app(R_torso, np.array([-0.05, sgn * 0.96, -0.26]) * b["shoulder"])
        R_ua = _chain(R_torso, (Y, -g[f"{side}_sh_flex"]), (X, sgn * g[f"{side}_sh_abd"]),
                      (Z, sgn * g[f"{side}_sh_rot"]))
        J[:, el] = J[:, sh] + _app(R_ua, down * b["upper_arm"])
        J[:, wr] = J[:, el] + _app(_post(R_ua, Y, -g[f"{side}_elbow"]), down * b["forearm"])
    return J


# ------------------------------------------------------------------------------------------------- generation
@dataclass
class MotionBatch:
    """A batch of generated clips.

    world: (N, T, 17, 3) float32 world positions, metres, z up, H36M joint order, 50 fps.
    angles: (N, T, len(ANGLES)) float64 joint angles (radians) after limits and smoothing.
    bones: (N, len(BONE_NAMES)) float64 bone lengths of each clip's subject (metres).
    pattern: (N, T) int index into PATTERNS of the segment active at each frame.
    lift: (N, T) float64 height of the lower ankle above its floor contact (metres; > 0 only in flight).
    """

    world: np.ndarray
    angles: np.ndarray
    bones: np.ndarray
    pattern: np.ndarray
    lift: np.ndarray


def random_bones(rng: np.random.Generator, n: int) -> np.ndarray:
    """-> (n, len(BONE_NAMES)) bone lengths (metres): H36M mean lengths x overall size x per-bone proportion."""
    mean = np.array([_BONES[k] for k in BONE_NAMES])
    scale = rng.uniform(*SUBJECT_SCALE, (n, 1))
    return mean * scale * rng.uniform(*BONE_SCALE, (n, len(BONE_NAMES)))


def _segments(rng: np.random.Generator, n: int, duration: float, weights: np.ndarray, focus: np.ndarray | None):
    """-> starts (n, S) s, pattern (n, S) int, durations (n, S) s, cross-fade ramps (n, S) s, params (n, S, 8)."""
    S = int(np.ceil(duration / 1.0)) + 2
    pat = rng.choice(len(PATTERNS), size=(n, S), p=weights)
    if focus is not None:  # held-out clips: every other segment is the clip's focus pattern
        pat[:, ::2] = focus[:, None]
    dur = rng.uniform(1.0, 4.0, (n, S))
    mins = np.array([_MIN_DUR.get(p, 0.0) for p in PATTERNS])
    dur = np.maximum(dur, mins[pat] + rng.uniform(0.0, 1.0, (n, S)))
    starts = np.concatenate([np.zeros((n, 1)), np.cumsum(dur, axis=1)[:, :-1]], axis=1)
    ramp = rng.uniform(0.25, 0.6, (n, S))
    return starts, pat, dur, ramp, rng.random((n, S, 8))


def _eval_patterns(t: np.ndarray, pat: np.ndarray, dur: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(M,) local time, (M,) pattern, (M,) duration, (M, 8) params -> (M, _CHANNELS), one pattern group at a time."""
    y = np.zeros((len(t), _CHANNELS))
    for k, fn in enumerate(_PATTERN_FNS):
        sel = np.flatnonzero(pat == k)
        if len(sel):
            o = _Out(len(sel))
            fn(o, t[sel], dur[sel], params[sel])
            y[sel] = o.y
    return y


def _texture(rng: np.random.Generator, n: int, T: int) -> np.ndarray:
    """(n, T, len(ANGLES)) small per-clip random movement on every angle: low-passed white noise (Gaussian,
    sigma 0.2 s, so mostly below ~1 Hz), standard deviation 0.01-0.06 rad per clip and angle."""
    sigma = 0.2 * FPS
    noise = gaussian_smooth(rng.standard_normal((n, T, len(ANGLES))), sigma, axis=1, edges="wrap", radius=_taps(sigma))
    noise *= np.sqrt(2 * np.sqrt(np.pi) * sigma)  # unit variance after the filter
    return noise * rng.uniform(0.01, 0.06, (n, 1, len(ANGLES)))


_NEUTRAL = np.zeros(len(ANGLES))
for _s in "lr":
    _NEUTRAL[_A[f"{_s}_sh_abd"]] = 0.12
    _NEUTRAL[_A[f"{_s}_elbow"]] = 0.25
    _NEUTRAL[_A[f"{_s}_knee"]] = 0.05
    _NEUTRAL[_A[f"{_s}_hip_abd"]] = 0.04


def generate_motion(
    num_clips: int,
    frames: int,
    seed: int,
    *,
    patterns: SequenceOf[str] | None = None,
    focus: SequenceOf[str] | None = None,
    bones: np.ndarray | None = None,
    arena_radius: float = _ARENA_RADIUS,
    stream: int = 0,
) -> MotionBatch:
    """Generate ``num_clips`` clips of ``frames`` frames at 50 fps; a pure function of the arguments.

    patterns: the patterns segments are drawn from (uniformly; default all of PATTERNS).
    focus: one pattern name per clip that every other segment (the first included) shows.
    bones: (num_clips, len(BONE_NAMES)) subject bone lengths; default random_bones from the seed.
    arena_radius: metres from the centre beyond which moving paths are steered back.
    stream: independent random streams for the same seed (0: the pretraining corpus, 1: the held-out set).
    """
    if num_clips < 1 or frames < 2:
        raise ValueError(f"generate_motion: need num_clips >= 1 and frames >= 2, got {num_clips} and {frames}")
    names = list(patterns) if patterns is not None else list(PATTERNS)
    unknown = sorted(set(names) - set(PATTERNS) | (set(focus or []) - set(PATTERNS)))
    if unknown:
        raise ValueError(f"unknown motion pattern(s) {unknown}; expected some of {list(PATTERNS)}")
    if focus is not None and len(focus) != num_clips:
        raise ValueError(f"focus: expected one pattern per clip ({num_clips}), got {len(focus)}")
    rng = np.random.default_rng([_SEED, MOTION_VERSION, stream, seed])
    n, T = num_clips, frames
    weights = np.zeros(len(PATTERNS))
    weights[[PATTERNS.index(p) for p in names]] = 1.0
    weights /= weights.sum()
    focus_idx = None if focus is None else np.array([PATTERNS.index(p) for p in focus])
    starts, pat, dur, ramp, params = _segments(rng, n, T / FPS, weights, focus_idx)
    if bones is None:
        bones = random_bones(rng, n)
    bones = np.asarray(bones, dtype=np.float64)
    if bones.shape != (n, len(BONE_NAMES)):
        raise ValueError(f"bones: expected shape ({n}, {len(BONE_NAMES)}), got {bones.shape}")

    # Segment of every frame, and a cross-fade from the previous segment over its ramp.
    t = np.arange(T) / FPS
    seg = (t[None, :, None] >= starts[:, None, :]).sum(-1) - 1  # (n, T)
    rows = np.repeat(np.arange(n), T)
    cur = seg.reshape(-1)
    prev = np.maximum(cur - 1, 0)
    tt = np.tile(t, n)
    y_cur = _eval_patterns(tt - starts[rows, cur], pat[rows, cur], dur[rows, cur], params[rows, cur])
    y_prev = _eval_patterns(tt - starts[rows, prev], pat[rows, prev], dur[rows, prev], params[rows, prev])
    w = np.where(cur > 0, _ss((tt - starts[rows, cur]) / ramp[rows, cur]), 1.0)[:, None]
    y = (w * y_cur + (1 - w) * y_prev).reshape(n, T, _CHANNELS)
    pattern = np.where(w[:, 0] >= 0.5, pat[rows, cur], pat[rows, prev]).reshape(n, T)

    ang = y[..., :len(ANGLES)] + _NEUTRAL + _texture(rng, n, T)
    speed = np.maximum(y[..., _SPEED], 0.0)
    turn = y[..., _TURN]
    lift = y[..., _LIFT]

    # Locomotion layer: a gait cycle whose cadence and amplitude follow the speed; running style above ~2 m/s.
    step = np.maximum(speed, 0.5 * np.abs(turn) * (speed < 0.3))  # stepping also when turning on the spot
    cadence = np.minimum(0.55 + 0.3 * step, 1.6)  # gait cycles per second
    phase = 2 * np.pi * np.cumsum(cadence / FPS, axis=1) + rng.uniform(0, 2 * np.pi, (n, 1))
    amp = np.clip(step / 1.3, 0, 1.4)
    run = _ss((speed - 1.8) / 0.8)
    for side, ph in (("r", phase), ("l", phase + np.pi)):
        ang[..., _A[f"{side}_hip_flex"]] += amp * (0.1 + (0.36 + 0.15 * run) * np.sin(ph))
        ang[..., _A[f"{side}_knee"]] += amp * (0.1 + (1.0 + 0.5 * run) * np.maximum(np.sin(ph + 1.3), 0) ** 2)
        ang[..., _A[f"{side}_sh_flex"]] += -amp * (0.3 + 0.2 * run) * np.sin(ph)
        ang[..., _A[f"{side}_elbow"]] += amp * 0.15 + run * 1.2
    ang[..., _A["twist"]] += amp * 0.08 * np.sin(phase)
    ang[..., _A["side"]] += amp * 0.03 * np.sin(phase)
    ang[..., _A["lean"]] += 0.05 * amp + 0.15 * run
    # Running: a short flight phase around each step (two per gait cycle).
    lift += run * 0.05 * np.maximum(np.sin(2 * phase), 0) ** 2

    ang = gaussian_smooth(np.clip(ang, _LO, _HI), _SMOOTH_SIGMA, axis=1, radius=_taps(_SMOOTH_SIGMA))
    speed = gaussian_smooth(speed, _SMOOTH_SIGMA, axis=1, radius=_taps(_SMOOTH_SIGMA))
    turn = gaussian_smooth(turn, _SMOOTH_SIGMA, axis=1, radius=_taps(_SMOOTH_SIGMA))
    lift = np.maximum(gaussian_smooth(lift, _SMOOTH_SIGMA, axis=1, radius=_taps(_SMOOTH_SIGMA)), 0.0)

    # Root path: integrate heading and position, steering back towards the centre beyond the arena radius.
    yaw = np.empty((n, T))
    xy = np.empty((n, T, 2))
    h = rng.uniform(-np.pi, np.pi, n)
    p = rng.uniform(-1.0, 1.0, (n, 2))
    for i in range(T):
        dist = np.hypot(p[:, 0], p[:, 1])
        want = np.arctan2(-p[:, 1], -p[:, 0])
        err = np.angle(np.exp(1j * (want - h)))
        # Steering up to max(2, speed) rad/s: fast runners turn back within a few metres.
        steer = np.clip(err, -1, 1) * np.maximum(2.0, speed[:, i]) / FPS
        h = h + np.where((dist > arena_radius) & (speed[:, i] > 0.1), steer, 0.0)
        h = h + turn[:, i] / FPS
        yaw[:, i], xy[:, i] = h, p
        p = p + (speed[:, i] / FPS)[:, None] * np.stack([np.cos(h), np.sin(h)], axis=1)

    body = _forward_kinematics(ang.reshape(n * T, -1), np.repeat(bones, T, axis=0)).reshape(n, T, 17, 3)
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    world = np.stack([c * body[..., 0] - s * body[..., 1], s * body[..., 0] + c * body[..., 1], body[..., 2]], -1)
    world[..., :2] += xy[:, :, None, :] + _CENTRE
    # Ground contact: the lower ankle at ankle height, raised by the flight lift.
    world[..., 2] += (_ANKLE_HEIGHT - np.minimum(world[:, :, 3, 2], world[:, :, 6, 2]) + lift)[..., None]
    return MotionBatch(world=world.astype(np.float32), angles=ang, bones=bones, pattern=pattern, lift=lift)


def motion_corpus(total_frames: int, clip_frames: int = 300, seed: int = 0, chunk: int = 200) -> list[np.ndarray]:
    """-> list of (clip_frames, 17, 3) float32 world clips (metres, z up, 50 fps) with ~``total_frames`` frames.

    The pretraining corpus: every pattern, a new random subject per clip. Generated ``chunk`` clips at a time
    (memory stays ~0.5 GB); the result depends only on the arguments.
    """
    if total_frames < clip_frames:
        raise ValueError(f"motion_corpus: total_frames ({total_frames}) must be >= clip_frames ({clip_frames})")
    n = total_frames // clip_frames
    clips: list[np.ndarray] = []
    for k, lo in enumerate(range(0, n, chunk)):
        batch = generate_motion(min(chunk, n - lo), clip_frames, seed=seed * 100_003 + k)
        clips.extend(batch.world)
    return clips


# ----------------------------------------------------------------------------------------- held-out test set
HELDOUT_CAMERA_SUBJECT = "S9"  # whose Human3.6M camera calibration the held-out clips are seen through


def heldout_sequences(clips_per_pattern: int = 2, frames: int = 300, seed: int = 0) -> list:
    """-> list of ``fastmixste.data.h36m.Sequence`` (4 real H36M cameras per clip), action = focus pattern.

    ``clips_per_pattern`` clips for each of HELDOUT_PATTERNS, each alternating its focus pattern with other
    held-out patterns, for new subjects (a seed stream of its own, disjoint from the corpus'); 2D through the four
    Human3.6M cameras of HELDOUT_CAMERA_SUBJECT with the built-in CPN-like detector error. Subject names are
    "H<k>", so they never collide with Human3.6M's.
    """
    from fastmixste.data.h36m import Sequence

    focus = [p for p in HELDOUT_PATTERNS for _ in range(clips_per_pattern)]
    batch = generate_motion(len(focus), frames, seed=seed, stream=1, patterns=HELDOUT_PATTERNS, focus=focus,
                            arena_radius=1.0)
    rng = np.random.default_rng([_SEED, MOTION_VERSION, 2, seed])
    cams = h36m_cameras(HELDOUT_CAMERA_SUBJECT)
    out = []
    for k, (name, world) in enumerate(zip(focus, batch.world)):
        world = world.astype(np.float64)
        for c, cam in enumerate(cams):
            X = world_to_camera(world, cam.R, cam.translation)
            px = detector_noise(rng, project_to_2d(X, cam, pixels=True), X[:, 0, 2])
            out.append(Sequence(
                subject=f"H{k}", action=name, camera=c,
                pose_2d=normalize_screen_coordinates(px, cam.res_w, cam.res_h).astype(np.float32),
                pose_3d=(X - X[:, :1]).astype(np.float32), world_3d=world.astype(np.float32),
                res_w=cam.res_w, res_h=cam.res_h, intrinsic=cam.intrinsic,
            ))  # fmt: skip
    return out
