"""Pretraining inputs from 3D motion: random virtual cameras, projection to 2D, detector-like corruption.

A clip of 3D joints (world or root-relative, metres) is seen by a virtual pinhole camera placed at a random
azimuth, elevation and distance around the subject with a random focal length; the 2D is expressed in the same
normalised screen coordinates as the Human3.6M inputs (``X / w * 2 - [1, h / w]``, square image), and the
3D target is the clip in that camera's coordinates, root-relative (root joint zero), like the fine-tuning target.
The 2D is then corrupted the way MotionBERT does it: per-joint noise drawn at a few keyframes and interpolated
over time (detector errors drift slowly), small per-frame jitter, joint-frame masking and whole-frame masking
(masked entries zeroed). With probability ``flip_p`` a clip is mirrored in 3D before projection.

Everything is vectorised over the batch and draws from one ``torch.Generator`` (CPU), so a batch is a pure
function of the clip and the generator's seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT, flip_pose
from fastmixste.data.surface import detector_joints

# Relative per-joint detector error (H36M 17-joint order): hips, extremities and wrists are the hard ones,
# torso and head the easy ones (the shape of CPN's error profile on Human3.6M).
DEFAULT_JOINT_NOISE_SCALE: tuple[float, ...] = (
    1.0, 1.3, 1.1, 1.3, 1.3, 1.1, 1.3, 0.9, 0.8, 0.8, 0.9, 0.9, 1.2, 1.6, 0.9, 1.2, 1.6,
)
_PELVIS, _THORAX = 0, 8
KEYPOINT_DEFINITIONS: tuple[str, ...] = ("centres", "detector")


@dataclass(frozen=True)
class CorruptionConfig:
    """Ranges of the virtual cameras and strength of the 2D corruption.

    Focal lengths are in normalised units (2 * f_pixels / image_width; Human3.6M: 2 * 1145 / 1000 = 2.29);
    noise and jitter standard deviations in normalised units (on a 1000-pixel image 0.01 is 5 pixels).
    """

    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    elevation_deg: tuple[float, float] = (-5.0, 35.0)
    distance_m: tuple[float, float] = (3.5, 7.5)
    focal: tuple[float, float] = (1.8, 2.8)
    aim_offset_m: float = 0.4  # the camera aims near, not exactly at, the subject: roots are not always centred
    # Rotation of the camera about its viewing axis (a phone held askew, a camera mounted rolled); (0, 0) draws
    # nothing, so the default runs' random streams are unchanged.
    roll_deg: tuple[float, float] = (0.0, 0.0)
    noise_std: float = 0.008
    noise_keyframes: int = 5
    jitter_std: float = 0.002
    joint_noise_scale: tuple[float, ...] = DEFAULT_JOINT_NOISE_SCALE
    joint_mask_p: float = 0.05
    frame_mask_p: float = 0.1
    flip_p: float = 0.5
    # Which points the 2D input and the 3D target are: "centres" (Human3.6M joint centres, as the skeleton gives
    # them) or "detector" (the definition a detector's keypoints converted to the 17 joints give: mid-eyes head,
    # nose, mid-shoulder thorax; fastmixste.data.surface), for models that lift real detections.
    keypoints: str = "centres"

    def __post_init__(self) -> None:
        if self.keypoints not in KEYPOINT_DEFINITIONS:
            raise ValueError(f"corruption keypoints must be one of {list(KEYPOINT_DEFINITIONS)}, "
                             f"got {self.keypoints!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CorruptionConfig:
        """Build from a (YAML) dict; unknown keys raise, lists become tuples."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown corruption option(s) {unknown}; expected some of {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class VirtualCameras:
    """One virtual camera per clip: (B,) tensors plus a (B, 3) aim offset in metres (world axes)."""

    azimuth: torch.Tensor  # radians
    elevation: torch.Tensor  # radians
    distance: torch.Tensor  # metres from the aim point
    focal: torch.Tensor  # normalised units
    aim_offset: torch.Tensor  # (B, 3)
    roll: torch.Tensor | None = None  # radians, about the viewing axis; None: no roll


def _uniform(n: int, lo_hi: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def random_virtual_cameras(
    batch: int, generator: torch.Generator, cfg: CorruptionConfig | None = None
) -> VirtualCameras:
    """Sample ``batch`` cameras uniformly in the ranges of ``cfg`` (CPU tensors)."""
    cfg = cfg or CorruptionConfig()
    return VirtualCameras(
        azimuth=torch.deg2rad(_uniform(batch, cfg.azimuth_deg, generator)),
        elevation=torch.deg2rad(_uniform(batch, cfg.elevation_deg, generator)),
        distance=_uniform(batch, cfg.distance_m, generator),
        focal=_uniform(batch, cfg.focal, generator),
        aim_offset=cfg.aim_offset_m * (2 * torch.rand(batch, 3, generator=generator) - 1),
        roll=torch.deg2rad(_uniform(batch, cfg.roll_deg, generator)) if cfg.roll_deg[0] != cfg.roll_deg[1] else None,
    )


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def camera_rotations(world: torch.Tensor, cams: VirtualCameras) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, J, 3) -> (R (B, 3, 3), centre (B, 3)): world-to-camera rotation rows [x right, y down, z forward].

    The vertical is read from the motion itself (mean pelvis -> thorax direction of the clip), so world data with
    z up (Human3.6M), y up (most mocap) or camera coordinates (y down) all get upright virtual views.
    """
    up = _normalize((world[:, :, _THORAX] - world[:, :, _PELVIS]).mean(dim=1))  # (B, 3)
    # Any reference not parallel to up spans the horizontal plane with it.
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=world.dtype).expand_as(up)
    ey = torch.tensor([0.0, 1.0, 0.0], dtype=world.dtype).expand_as(up)
    ref = torch.where((up * ex).sum(-1, keepdim=True).abs() > 0.9, ey, ex)
    h1 = _normalize(ref - (ref * up).sum(-1, keepdim=True) * up)
    h2 = torch.linalg.cross(up, h1)
    az, el = cams.azimuth.to(world.dtype)[:, None], cams.elevation.to(world.dtype)[:, None]
    to_cam = torch.cos(el) * (torch.cos(az) * h1 + torch.sin(az) * h2) + torch.sin(el) * up  # aim point -> camera
    aim = world[:, :, _PELVIS].mean(dim=1) + cams.aim_offset.to(world.dtype)
    centre = aim + cams.distance.to(world.dtype)[:, None] * to_cam
    z = -to_cam
    y = _normalize(-(up - (up * z).sum(-1, keepdim=True) * z))  # image y points down
    x = torch.linalg.cross(y, z)
    if cams.roll is not None:  # turn the image axes about z: the person leans in the picture
        c, s = torch.cos(cams.roll.to(world.dtype))[:, None], torch.sin(cams.roll.to(world.dtype))[:, None]
        x, y = c * x + s * y, c * y - s * x
    return torch.stack([x, y, z], dim=1), centre


def project_virtual(
    world: torch.Tensor, cams: VirtualCameras, flip: torch.Tensor | None = None, keypoints: str = "centres"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, J, 3) metres -> (x2d (B, T, J, 2) normalised screen coords, y3d (B, T, J, 3) root-relative metres).

    ``flip`` (B,) bool mirrors the chosen clips (x -> -x in camera space, left/right joints swapped) before
    projection, which is the same as mirroring the image and the 3D target together. ``keypoints="detector"``
    moves the head, neck, thorax, spine and pelvis to where a converted detection puts them
    (``fastmixste.data.surface.detector_joints``) before projecting: input and target then share that definition.
    """
    if world.dim() != 4 or world.shape[-1] != 3:
        raise ValueError(f"project_virtual: expected world of shape (B, T, J, 3), got {tuple(world.shape)}")
    rot, centre = camera_rotations(world, cams)
    cam = torch.einsum("bij,btkj->btki", rot, world - centre[:, None, None, :])  # (B, T, J, 3)
    if flip is not None and bool(flip.any()):
        cam = torch.where(flip[:, None, None, None], flip_pose(cam, H36M_LEFT, H36M_RIGHT), cam)
    if keypoints == "detector":
        cam = detector_joints(cam)
    # Depth stays positive for the configured distances; the clamp only guards degenerate custom ranges.
    depth = cam[..., 2:].clamp_min(0.05)
    x2d = cams.focal.to(cam.dtype)[:, None, None, None] * cam[..., :2] / depth
    y3d = cam - cam[:, :, :1]
    return x2d, y3d


def corrupt_2d(x2d: torch.Tensor, generator: torch.Generator, cfg: CorruptionConfig | None = None) -> torch.Tensor:
    """(B, T, J, 2) -> (B, T, J, 2): keyframe-interpolated per-joint noise + jitter, then joint/frame masking.

    Masked entries (joint-frame with p=cfg.joint_mask_p, whole frames with p=cfg.frame_mask_p) are set to 0.
    Random numbers are drawn on the CPU from ``generator`` and moved to ``x2d``'s device.
    """
    cfg = cfg or CorruptionConfig()
    B, T, J, C = x2d.shape
    if len(cfg.joint_noise_scale) != J:
        raise ValueError(f"corrupt_2d: joint_noise_scale has {len(cfg.joint_noise_scale)} entries, "
                         f"input has {J} joints")
    k = max(2, min(cfg.noise_keyframes, T))
    scale = torch.tensor(cfg.joint_noise_scale, dtype=torch.float32)[None, :, None, None]  # (1, J, 1, 1)
    keys = torch.randn(B, J, C, k, generator=generator) * cfg.noise_std * scale
    keys = keys.reshape(B, J * C, k)
    # Linear interpolation between keyframes: slowly drifting errors, like a detector's.
    noise = F.interpolate(keys, size=T, mode="linear", align_corners=True) if T > 1 else keys[..., :1]
    noise = noise.reshape(B, J, C, T).permute(0, 3, 1, 2)  # (B, T, J, C)
    noise = noise + cfg.jitter_std * torch.randn(B, T, J, C, generator=generator)
    keep = torch.rand(B, T, J, generator=generator) >= cfg.joint_mask_p
    keep &= (torch.rand(B, T, 1, generator=generator) >= cfg.frame_mask_p)
    out = (x2d + noise.to(x2d.device, x2d.dtype)) * keep[..., None].to(x2d.device, x2d.dtype)
    return out


def corrupted_batch(
    world: torch.Tensor, generator: torch.Generator, cfg: CorruptionConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, J, 3) metres -> (x2d (B, T, J, 2) corrupted input, y3d (B, T, J, 3) root-relative target).

    One pretraining batch: a random virtual camera per clip, random mirror with p=cfg.flip_p, projection,
    corruption. Deterministic given the generator's state.
    """
    cfg = cfg or CorruptionConfig()
    world = world.float()
    B = world.shape[0]
    cams = random_virtual_cameras(B, generator, cfg)
    flip = torch.rand(B, generator=generator) < cfg.flip_p
    x2d, y3d = project_virtual(world.cpu(), cams, flip, keypoints=cfg.keypoints)
    x2d = corrupt_2d(x2d, generator, cfg)
    return x2d.to(world.device), y3d.to(world.device)

