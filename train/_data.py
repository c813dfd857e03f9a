"""Data plumbing of the training run: 3D clip windows for pretraining, a resumable (and sharded) batch order,
per-step random generators, and the validation subset.

Reproducibility rests on three rules: the order of batches in epoch ``e`` is a function of (seed, stage, e) only;
every random draw of step ``s`` (corruption, dropout) comes from generators seeded by (seed, stage, s, rank);
training-window flips are a hash of (seed, epoch, window). A run resumed at any step boundary therefore replays
exactly what an uninterrupted run does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

_STAGE_IDS = {"pretrain": 1, "finetune": 2}


def mix_seed(*parts: int) -> int:
    """Integers -> a well-mixed 63-bit seed (numpy SeedSequence), stable across platforms and runs."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def stage_id(stage: str) -> int:
    return _STAGE_IDS.get(stage.split("/")[0], 3)


def step_generator(seed: int, stage: str, step: int, rank: int) -> torch.Generator:
    """The CPU generator for the data randomness of one optimizer step on one process."""
    return torch.Generator().manual_seed(mix_seed(seed, stage_id(stage), step, rank, 17))


def seed_step(seed: int, stage: str, step: int, rank: int) -> None:
    """Seed torch's global RNGs (dropout, drop-path) for one optimizer step on one process."""
    torch.manual_seed(mix_seed(seed, stage_id(stage), step, rank, 29))


class MotionWindows(Dataset):
    """3D motion clips [(T_i, J, 3) metres] -> windows (num_frame, J, 3) float32 tensors.

    Windows start every ``stride`` frames; a clip shorter than ``num_frame`` gives one window, edge-padded.
    """

    def __init__(self, clips: Sequence[np.ndarray], num_frame: int, stride: int | None = None) -> None:
        if num_frame < 1:
            raise ValueError(f"num_frame must be >= 1, got {num_frame}")
        stride = stride or num_frame
        self.clips = [np.ascontiguousarray(c, dtype=np.float32) for c in clips]
        for i, c in enumerate(self.clips):
            if c.ndim != 3 or c.shape[-1] != 3 or len(c) == 0:
                raise ValueError(f"clip {i}: expected (T, J, 3) with T >= 1, got shape {c.shape}")
        self.num_frame = num_frame
        self.index = [(i, s) for i, c in enumerate(self.clips) for s in range(0, max(len(c) - num_frame, 0) + 1,
                                                                               stride)]
        if not self.index:
            raise ValueError("MotionWindows: no clips given")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        c, s = self.index[i]
        w = self.clips[c][s:s + self.num_frame]
        if len(w) < self.num_frame:
            w = np.concatenate([w, np.repeat(w[-1:], self.num_frame - len(w), axis=0)])
        return torch.from_numpy(np.ascontiguousarray(w))


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices for one epoch on one process, starting at batch ``start``.

    The epoch's permutation comes from (seed, stage, epoch); batch ``b`` of the global order holds
    ``batch_size * world_size`` indices and process ``rank`` takes its slice. Every epoch has the same number of
    batches (``batches_per_epoch``: the incomplete last batch is dropped; a dataset smaller than one batch is
    cycled), so every process takes the same number of steps.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, stage: str, epoch: int, rank: int = 0,
                 world_size: int = 1, start: int = 0, shuffle: bool = True) -> None:
        if n < 1:
            raise ValueError(f"EpochBatchSampler: empty dataset (n={n})")
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.global_batch = batch_size * world_size
        self.num_batches = self.batches_per_epoch(n, batch_size, world_size)
        self.start = start
        if shuffle:
            g = torch.Generator().manual_seed(mix_seed(seed, stage_id(stage), epoch, 5))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        need = self.num_batches * self.global_batch
        if need > n:
            order = order.repeat((need + n - 1) // n)
        self.order = order[:need].tolist()

    @staticmethod
    def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
        return max(1, n // (batch_size * world_size))

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, self.num_batches):
            lo = b * self.global_batch + self.rank * self.batch_size
            yield self.order[lo:lo + self.batch_size]


def resample_clip(x: np.ndarray, fps_in: float, fps_out: float = 50.0) -> np.ndarray:
    """(T, J, 3) at ``fps_in`` -> (T', J, 3) at ``fps_out`` by linear interpolation in time (H36M runs at 50 fps)."""
    if abs(fps_in - fps_out) < 1e-6 or len(x) < 2:
        return x
    t_out = np.arange(0.0, (len(x) - 1) / fps_in + 1e-9, 1.0 / fps_out)
    pos = t_out * fps_in
    lo = np.minimum(np.floor(pos).astype(np.int64), len(x) - 2)
    w = (pos - lo)[:, None, None].astype(np.float32)
    return ((1 - w) * x[lo] + w * x[lo + 1]).astype(np.float32)


def unique_world_clips(sequences: Sequence) -> list[np.ndarray]:
    """Per-camera H36M sequences -> one world-coordinate 3D clip per (subject, action)."""
    seen: dict[tuple[str, str], np.ndarray] = {}
    for s in sequences:
        seen.setdefault((s.subject, s.action), np.asarray(s.world_3d, dtype=np.float32))
    return list(seen.values())


def validation_subset(sequences: Sequence, max_frames: int | None) -> list:
    """Test sequences -> one per (action group, subject), cut to ``max_frames``: a quick per-epoch check."""
    from fastmixste.data.h36m import action_group

    picked: dict[tuple[str, str], object] = {}
    for s in sequences:
        picked.setdefault((action_group(s.action), s.subject), s)
    return crop_sequences(list(picked.values()), max_frames)

def crop_sequences(sequences: Sequence, max_frames: int | None) -> list:
    """Cut every sequence to its first ``max_frames`` frames (None: unchanged)."""
    if not max_frames:
        return list(sequences)
    return [dataclasses.replace(s, pose_2d=s.pose_2d[:max_frames], pose_3d=s.pose_3d[:max_frames],
                                world_3d=s.world_3d[:max_frames]) if len(s.pose_2d) > max_frames else s
            for s in sequences]
