"""Virtual cameras, projection and 2D corruption for pretraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastmixste.data.corruption import (
    CorruptionConfig,
    corrupt_2d,
    corrupted_batch,
    project_virtual,
    random_virtual_cameras,
)
from fastmixste.data.skeleton import H36M_PARENTS, bone_lengths


def _standing_clips(B: int = 4, T: int = 20, up: int = 2) -> torch.Tensor:
    """(B, T, 17, 3) world-coordinate skeletons standing along axis ``up``, drifting and swaying a little."""
    g = torch.Generator().manual_seed(1)
    height = torch.zeros(17)
    offsets = torch.randn(17, 3, generator=g) * 0.15
    for j, p in enumerate(H36M_PARENTS):
        if p >= 0:
            height[j] = height[p] + (0.25 if j in (7, 8, 9, 10, 11, 12, 13, 14, 15, 16) else -0.4)
    pose = offsets.clone()
    pose[:, up] = height + 1.0
    t = torch.linspace(0, 1, T)[:, None, None]
    clips = pose + 0.05 * torch.sin(6 * t + torch.randn(B, 1, 17, 3, generator=g))
    clips = clips + torch.randn(B, 1, 1, 3, generator=g) * 2  # anywhere in the room
    clips[..., up] -= clips[..., up].min() - 0.1
    return clips


@pytest.mark.parametrize("up", [1, 2])
def test_projection_is_rigid_and_upright(up: int) -> None:
    world = _standing_clips(up=up)
    cams = random_virtual_cameras(world.shape[0], torch.Generator().manual_seed(0))
    x2d, y3d = project_virtual(world, cams)
    assert x2d.shape == (4, 20, 17, 2) and y3d.shape == (4, 20, 17, 3)
    assert torch.all(y3d[:, :, 0] == 0)
    # A rigid change of coordinates keeps every bone length.
    torch.testing.assert_close(bone_lengths(y3d), bone_lengths(world), atol=1e-5, rtol=1e-5)
    # Upright: the head is higher in the image (smaller y, image y points down) than the pelvis.
    assert torch.all(x2d[:, :, 10, 1] < x2d[:, :, 0, 1])
    # The subject is in view: normalised coordinates of a 3.5-7.5 m camera stay well inside [-1, 1].
    assert x2d.abs().max() < 1.0


def test_flip_mirrors_the_clip() -> None:
    world = _standing_clips()
    cams = random_virtual_cameras(4, torch.Generator().manual_seed(0))
    flip = torch.tensor([True, False, True, False])
    x_f, y_f = project_virtual(world, cams, flip)
    x_n, y_n = project_virtual(world, cams)
    torch.testing.assert_close(x_f[1], x_n[1])
    torch.testing.assert_close(y_f[0, :, 4, 0], -y_n[0, :, 1, 0])  # left hip <- mirrored right hip
    torch.testing.assert_close(x_f[0, :, 4, 0], -x_n[0, :, 1, 0])


def test_corruption_rates_and_noise() -> None:
    cfg = CorruptionConfig()
    x = torch.full((256, 27, 17, 2), 0.5)
    out = corrupt_2d(x, torch.Generator().manual_seed(0), cfg)
    zero_frames = (out == 0).all(dim=-1).all(dim=-1).float().mean().item()
    zero_joints = (out == 0).all(dim=-1).float().mean().item()
    # Binomial with ~7000 frames / ~117000 joint-frames: 5 standard deviations.
    assert abs(zero_frames - cfg.frame_mask_p) < 5 * (0.1 * 0.9 / 6912) ** 0.5
    expected_joint = 1 - (1 - cfg.frame_mask_p) * (1 - cfg.joint_mask_p)
    assert abs(zero_joints - expected_joint) < 5 * (expected_joint * (1 - expected_joint) / 117504) ** 0.5
    kept = out[(out != 0).all(dim=-1)] - 0.5
    assert 0.3 * cfg.noise_std < kept.std().item() < 3 * cfg.noise_std
    # Keyframe interpolation: the noise drifts slowly, frame-to-frame changes are much smaller than its size.
    clean = corrupt_2d(x, torch.Generator().manual_seed(0), CorruptionConfig(joint_mask_p=0, frame_mask_p=0))
    step = (clean[:, 1:] - clean[:, :-1]).std().item()
    assert step < 0.5 * (clean - 0.5).std().item()


def test_corrupted_batch_is_deterministic_per_seed() -> None:
    world = _standing_clips(B=3, T=9)
    a = corrupted_batch(world, torch.Generator().manual_seed(5))
    b = corrupted_batch(world, torch.Generator().manual_seed(5))
    c = corrupted_batch(world, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_config_from_dict_rejects_typos() -> None:
    cfg = CorruptionConfig.from_dict({"focal": [2.0, 2.5], "frame_mask_p": 0.2})
    assert cfg.focal == (2.0, 2.5) and cfg.frame_mask_p == 0.2
    assert CorruptionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="frame_mask"):
        CorruptionConfig.from_dict({"frame_mask": 0.2})


def test_motion_corpus_clips_become_plausible_pretraining_batches() -> None:
    from fastmixste.data.motion import motion_corpus

    clips = torch.from_numpy(np.stack(motion_corpus(1800, clip_frames=90, seed=4)))[:, :27]  # (20, 27, 17, 3)
    x2d, y3d = corrupted_batch(clips, torch.Generator().manual_seed(0))
    assert x2d.shape == (20, 27, 17, 2) and y3d.shape == (20, 27, 17, 3)
    torch.testing.assert_close(bone_lengths(y3d), bone_lengths(clips), atol=1e-4, rtol=1e-4)
    # Every clip stays in view of its virtual camera, and (z up world) is seen upright: head above pelvis.
    assert x2d.abs().max() < 1.0
    upright = y3d[:, :, 10, 1] < 0  # camera y points down; the target is root-relative
    assert upright.float().mean() > 0.9
