"""Procedural motion corpus: determinism, joint limits, bones, ground contact, motion statistics; held-out set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastmixste.data.builtin import _ANKLE_HEIGHT, _BONES
from fastmixste.data.builtin import subject_bones as builtin_bones
from fastmixste.data.cameras import h36m_cameras, normalize_screen_coordinates, project_to_2d, world_to_camera
from fastmixste.data.h36m import ACTIONS
from fastmixste.data.motion import (
    ANGLES,
    BONE_NAMES,
    BONE_SCALE,
    HELDOUT_PATTERNS,
    LIMITS,
    PATTERNS,
    SUBJECT_SCALE,
    generate_motion,
    heldout_sequences,
    motion_corpus,
)
from fastmixste.data.skeleton import H36M_PARENTS, bone_lengths

FPS = 50


@pytest.fixture(scope="module")
def batch():
    return generate_motion(24, 250, seed=3)


def test_deterministic_from_the_seed():
    a = generate_motion(3, 80, seed=11)
    b = generate_motion(3, 80, seed=11)
    c = generate_motion(3, 80, seed=12)
    np.testing.assert_array_equal(a.world, b.world)
    np.testing.assert_array_equal(a.pattern, b.pattern)
    assert np.abs(a.world - c.world).max() > 0.1
    corpus = motion_corpus(1200, clip_frames=100, seed=1, chunk=5)
    again = motion_corpus(1200, clip_frames=100, seed=1, chunk=5)
    assert len(corpus) == 12 and corpus[0].shape == (100, 17, 3) and corpus[0].dtype == np.float32
    assert all(np.array_equal(x, y) for x, y in zip(corpus, again))
    # Chunks draw different motion: no two clips are the same.
    assert min(np.abs(corpus[i] - corpus[j]).max() for i in range(12) for j in range(i)) > 0.05


def test_joint_angles_within_anatomical_limits(batch):
    lo = np.array([LIMITS[k][0] for k in ANGLES])
    hi = np.array([LIMITS[k][1] for k in ANGLES])
    assert batch.angles.shape == (24, 250, len(ANGLES))
    assert np.all(batch.angles >= lo - 1e-9) and np.all(batch.angles <= hi + 1e-9)
    # The limits are used, not just respected: knees bend far, shoulders rise high somewhere in the batch.
    a = {k: batch.angles[..., i] for i, k in enumerate(ANGLES)}
    assert max(a["l_knee"].max(), a["r_knee"].max()) > 1.5
    assert max(a["l_sh_flex"].max(), a["r_sh_flex"].max()) > 1.8


def test_bone_lengths_constant_per_subject_and_varied_across(batch):
    bl = bone_lengths(batch.world.astype(np.float64))  # (N, T, 16)
    assert np.abs(bl - bl[:, :1]).max() < 1e-5  # rigid bones in every frame (float32 positions)
    # The tree's bones carry the subject's lengths: thigh (hip -> knee) and forearm (elbow -> wrist).
    children = [j for j, p in enumerate(H36M_PARENTS) if p >= 0]
    np.testing.assert_allclose(bl[:, 0, children.index(2)], batch.bones[:, BONE_NAMES.index("thigh")], rtol=1e-5)
    np.testing.assert_allclose(bl[:, 0, children.index(16)], batch.bones[:, BONE_NAMES.index("forearm")], rtol=1e-5)
    mean = np.array([_BONES[k] for k in BONE_NAMES])
    ratio = batch.bones / mean
    lo, hi = SUBJECT_SCALE[0] * BONE_SCALE[0], SUBJECT_SCALE[1] * BONE_SCALE[1]
    assert np.all(ratio >= lo) and np.all(ratio <= hi)
    assert ratio.max() - ratio.min() > 0.25  # wider proportions than the built-in subjects
    assert len({tuple(np.round(b, 6)) for b in batch.bones}) == len(batch.bones)


def test_ground_contact_and_flight(batch):
    w = batch.world.astype(np.float64)
    lower_ankle = np.minimum(w[..., 3, 2], w[..., 6, 2])
    np.testing.assert_allclose(lower_ankle, _ANKLE_HEIGHT + batch.lift, atol=1e-5)
    assert np.all(batch.lift >= 0)
    standing = batch.lift < 1e-6
    assert standing.mean() > 0.7  # feet on the floor most of the time
    jumps = generate_motion(4, 300, seed=5, patterns=["Jump"], focus=["Jump"] * 4)
    assert jumps.lift.max() > 0.05  # real flight phases
    # Joints never go through the floor (ankles are the lowest points of a standing body).
    assert w[..., 2].min() > 0.0


def test_velocity_and_acceleration_statistics_are_human_like(batch):
    w = batch.world.astype(np.float64)
    rel = w - w[:, :, :1]
    speed = np.linalg.norm(np.diff(rel, axis=1), axis=-1)[..., 1:] * FPS  # m/s, non-root joints
    acc = np.linalg.norm(np.diff(rel, 2, axis=1), axis=-1)[..., 1:] * FPS**2  # m/s^2
    assert 0.05 < np.median(speed) < 0.6
    assert 1.0 < np.percentile(speed, 99) < 8.0  # wrists and feet in fast moves, no teleporting
    assert speed.max() < 15.0
    assert np.percentile(acc, 99) < 120.0  # smooth: no jumps in velocity
    root = np.linalg.norm(np.diff(w[:, :, 0, :2], axis=1), axis=-1) * FPS
    assert root.max() < 6.0
    walk = generate_motion(6, 250, seed=2, patterns=["Walk"])
    run = generate_motion(6, 250, seed=2, patterns=["Run"])
    v_walk = np.linalg.norm(np.diff(walk.world[:, 100:, 0, :2], axis=1), axis=-1).mean() * FPS
    v_run = np.linalg.norm(np.diff(run.world[:, 100:, 0, :2], axis=1), axis=-1).mean() * FPS
    assert 0.4 < v_walk < 2.0 and 2.0 < v_run < 4.2


def test_patterns_are_all_used_and_transitions_happen(batch):
    used = np.unique(batch.pattern)
    assert len(used) >= len(PATTERNS) - 2
    changes = (np.diff(batch.pattern, axis=1) != 0).sum(axis=1)
    assert (changes >= 1).mean() > 0.7  # segments last 1-4 s (sitting up to 5 s): most 5 s clips switch


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="unknown motion pattern"):
        generate_motion(2, 50, seed=0, patterns=["Moonwalk"])
    with pytest.raises(ValueError, match="one pattern per clip"):
        generate_motion(2, 50, seed=0, focus=["Run"])
    with pytest.raises(ValueError, match="bones"):
        generate_motion(2, 50, seed=0, bones=np.ones((3, len(BONE_NAMES))))


def test_heldout_set_is_outside_the_finetuning_data():
    seqs = heldout_sequences(clips_per_pattern=1, frames=120)
    assert len(seqs) == 4 * len(HELDOUT_PATTERNS)
    assert {s.action for s in seqs} == set(HELDOUT_PATTERNS)
    assert not set(HELDOUT_PATTERNS) & set(ACTIONS)  # no built-in action is a held-out pattern
    # New subjects: none has the bone lengths of a built-in subject.
    thighs = {round(builtin_bones(s)["thigh"], 4) for s in ("S1", "S5", "S6", "S7", "S8", "S9", "S11")}
    for s in seqs[::4]:
        assert round(float(np.linalg.norm(s.world_3d[0, 2] - s.world_3d[0, 1])), 4) not in thighs
    cams = h36m_cameras("S9")
    for s in seqs[:4]:
        assert s.pose_2d.shape == (120, 17, 2) and s.pose_3d.shape == (120, 17, 3)
        assert np.all(s.pose_3d[:, 0] == 0)
        cam = cams[s.camera]
        exact = normalize_screen_coordinates(project_to_2d(world_to_camera(s.world_3d.astype(np.float64), cam.R,
                                                                           cam.translation), cam, pixels=True),
                                             cam.res_w, cam.res_h)
        err_px = np.abs(s.pose_2d - exact) * cam.res_w / 2
        assert 0.5 < np.median(err_px) < 10.0  # CPN-like error: present, a few pixels
    again = heldout_sequences(clips_per_pattern=1, frames=120)
    assert all(np.array_equal(a.pose_2d, b.pose_2d) for a, b in zip(seqs, again))


@pytest.mark.slow
def test_heldout_evaluation_scores_and_baseline():
    from fastmixste import MixSTE, MixSTEConfig
    from fastmixste.eval.evaluation import _score, evaluate_constant_pose, evaluate_heldout, format_heldout_markdown

    seqs = heldout_sequences(clips_per_pattern=1, frames=60)
    mean_pose = np.mean([s.pose_3d.mean(0) for s in seqs], axis=0)
    # Scoring: the truth scores 0 mm and moves exactly as fast; the truth with half its movement around its mean
    # pose moves half as fast.
    exact = _score([s.pose_3d for s in seqs], seqs, 1.0, str)
    assert exact.protocol1["Avg"] == pytest.approx(0.0, abs=1e-6) and exact.speed_ratio == pytest.approx(1.0)
    half = [s.pose_3d.mean(0) + 0.5 * (s.pose_3d - s.pose_3d.mean(0)) for s in seqs]
    half_score = _score(half, seqs, 1.0, str)
    assert half_score.speed_ratio == pytest.approx(0.5, rel=1e-5)
    assert half_score.speed_ratio_5f == pytest.approx(0.5, rel=1e-5) and exact.speed_ratio_5f == pytest.approx(1.0)
    base = evaluate_constant_pose(mean_pose, seqs, group_of=str)
    assert base.speed_ratio == 0.0 and base.protocol1["Avg"] > 50.0
    torch.manual_seed(0)
    model = MixSTE.from_config(MixSTEConfig(num_frame=9, embed_dim_ratio=16, depth=1, num_heads=2))
    res = evaluate_heldout(model, seqs, mean_pose, batch_size=32)
    assert set(res["protocol1"]) == set(HELDOUT_PATTERNS) | {"Avg"}
    assert res["baseline_mpjpe"] == pytest.approx(base.protocol1["Avg"])
    assert np.isfinite(res["speed_ratio"]) and res["num_sequences"] == len(seqs)
    text = format_heldout_markdown(res)
    assert "Speed ratio" in text and "Jump" in text
