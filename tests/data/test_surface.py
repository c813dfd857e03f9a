"""fastmixste.data.surface: joint centres -> the detector-converted definition (real-video 2D and its reference)."""

import numpy as np
import pytest
import torch

from fastmixste.data.corruption import CorruptionConfig, corrupted_batch
from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT, flip_pose
from fastmixste.data.surface import EYE_OFFSET, HEAD_BONE_M, NOSE_OFFSET, detector_joints
from fastmixste.video.keypoints import to_h36m


def _standing() -> np.ndarray:
    """A person standing upright at the origin, z up, facing +y (their right is +x), H36M joint centres."""
    p = np.zeros((17, 3))
    p[1], p[4] = [0.13, 0, 0], [-0.13, 0, 0]  # hips
    p[2], p[5] = [0.13, 0, -0.44], [-0.13, 0, -0.44]
    p[3], p[6] = [0.13, 0, -0.87], [-0.13, 0, -0.87]
    p[7], p[8] = [0, 0, 0.23], [0, 0, 0.48]
    p[9], p[10] = [0, 0, 0.60], [0, 0, 0.60 + HEAD_BONE_M]
    p[11], p[14] = [-0.17, 0, 0.45], [0.17, 0, 0.45]  # shoulders a little below the thorax joint
    p[12], p[15] = [-0.17, 0, 0.18], [0.17, 0, 0.18]
    p[13], p[16] = [-0.17, 0, -0.07], [0.17, 0, -0.07]
    return p


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))  # a proper rotation


def test_face_points_sit_in_front_of_the_head_and_limbs_are_unchanged():
    p = _standing()
    d = detector_joints(p)
    # Nose: NOSE_OFFSET in the head frame (up = +z, forward = +y, right = +x) from the neck/nose joint.
    np.testing.assert_allclose(d[9], p[9] + [0.0, NOSE_OFFSET[1], NOSE_OFFSET[0]], atol=1e-12)
    np.testing.assert_allclose(d[10], p[9] + [0.0, EYE_OFFSET[1], EYE_OFFSET[0]], atol=1e-12)  # mid-eyes
    np.testing.assert_allclose(d[8], (p[11] + p[14]) / 2, atol=1e-12)  # thorax = mid-shoulders
    np.testing.assert_allclose(d[0], (p[1] + p[4]) / 2, atol=1e-12)
    np.testing.assert_allclose(d[7], (d[0] + d[8]) / 2, atol=1e-12)
    limbs = [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16]
    np.testing.assert_array_equal(d[limbs], p[limbs])


def test_same_definition_as_converting_coco_keypoints():
    """The 3D definition equals to_h36m applied to COCO points placed where detector_joints puts the face."""
    p = _standing()
    d = detector_joints(p)
    coco = np.zeros((17, 3))
    coco[0, :2] = d[9, :2]
    up, fwd, right = np.eye(3)[2], np.eye(3)[1], np.eye(3)[0]
    for k, side in ((1, -1.0), (2, 1.0)):  # l_eye, r_eye
        eye = p[9] + EYE_OFFSET[0] * up + EYE_OFFSET[1] * fwd + side * EYE_OFFSET[2] * right
        coco[k, :2] = eye[:2]
    coco[5, :2], coco[6, :2] = p[11, :2], p[14, :2]
    coco[7:11:2, :2], coco[8:11:2, :2] = p[[12, 13], :2], p[[15, 16], :2]
    coco[11, :2], coco[12, :2] = p[4, :2], p[1, :2]
    coco[13::2, :2], coco[14::2, :2] = p[[5, 6], :2], p[[2, 3], :2]
    coco[:, 2] = 1.0
    np.testing.assert_allclose(to_h36m(coco, "coco")[:, :2], d[:, :2], atol=1e-12)


def test_rotation_and_mirror_commute_with_the_construction():
    rng = np.random.default_rng(0)
    p = _standing() + rng.normal(scale=0.02, size=(17, 3))
    for _ in range(3):
        r = _rotation(rng)
        np.testing.assert_allclose(detector_joints(p @ r.T), detector_joints(p) @ r.T, atol=1e-10)
    np.testing.assert_allclose(detector_joints(flip_pose(p, H36M_LEFT, H36M_RIGHT)),
                               flip_pose(detector_joints(p), H36M_LEFT, H36M_RIGHT), atol=1e-10)


def test_scales_with_the_head_and_keeps_torch_dtype():
    p = _standing()
    big = detector_joints(p * 1.2)
    np.testing.assert_allclose(big, detector_joints(p) * 1.2, atol=1e-12)
    t = torch.from_numpy(p).float()[None, None].repeat(2, 3, 1, 1)
    out = detector_joints(t)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 17, 3)
    np.testing.assert_allclose(out[1, 2].numpy(), detector_joints(p), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, 3\)"):
        detector_joints(np.zeros((16, 3)))


def test_pretraining_batch_uses_the_definition_for_input_and_target():
    rng = np.random.default_rng(1)
    world = torch.from_numpy(np.stack([_standing() + rng.normal(scale=0.01, size=(17, 3)) for _ in range(4)]))
    world = world.float()[None].repeat(3, 1, 1, 1)  # (3 clips, 4 frames, 17, 3)
    cfg = dict(noise_std=0.0, jitter_std=0.0, joint_mask_p=0.0, frame_mask_p=0.0, flip_p=0.0)
    x_c, y_c = corrupted_batch(world, torch.Generator().manual_seed(0), CorruptionConfig(**cfg))
    x_d, y_d = corrupted_batch(world, torch.Generator().manual_seed(0), CorruptionConfig(**cfg, keypoints="detector"))
    limbs = [2, 3, 5, 6, 12, 13, 15, 16]
    # Same cameras: the limbs project alike; in 3D they differ only by the root's move to mid-hips.
    torch.testing.assert_close(x_d[..., limbs, :], x_c[..., limbs, :])
    shift = y_d[..., limbs, :] - y_c[..., limbs, :]
    torch.testing.assert_close(shift, shift[..., :1, :].expand_as(shift), atol=1e-5, rtol=0)
    head_gap = (y_d[..., 10, :] - y_c[..., 10, :]).norm(dim=-1)
    assert float(head_gap.min()) > 0.05  # mid-eyes lies well below the head top
    with pytest.raises(ValueError, match="keypoints must be one of"):
        CorruptionConfig(keypoints="surface")
