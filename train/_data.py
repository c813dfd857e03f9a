"""Data plumbing of the training run: 3D clip windows for pretraining, a resumable (and sharded) batch order,
per-step random generators, and the validation subset.

Reproducibility rests on three rules: the order of batches in epoch ``e`` is a function of (seed, stage, e) only;
every random draw of step ``s`` (corruption, dropout) comes from generators seeded by (seed, stage, s, rank);
training-window flips are a hash of (seed, epoch, window). A run resumed at any step boundary therefore replays
exactly what an uninterrupted run does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

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


def pretrain_clips(cfg: dict[str, Any], train: Sequence, log: bool = True) -> list[np.ndarray]:
    """The pretraining corpus of a run: a list of (T_i, 17, 3) world clips (metres, 50 fps) from every source.

    Sources, in this order: the training subjects' 3D (``pretrain.h36m_3d``), every ``--mocap`` npz (resampled to
    50 fps), and the procedural motion corpus (``pretrain.motion_frames`` frames in clips of
    ``pretrain.motion_clip_frames``, seeded by the run's seed; ``fastmixste.data.motion``), cut to what the stage
    can draw when ``pretrain.max_steps`` caps it. ``log`` prints one line naming them.
    """
    import time

    s = cfg["pretrain"]
    clips: list[np.ndarray] = []
    sources = []
    if s["h36m_3d"]:
        own = unique_world_clips(train)
        clips += own
        sources.append(f"{len(own)} clips of the training subjects' 3D")
    for path in cfg["data"]["mocap"] or []:
        from fastmixste.data.mocap import load_mocap_npz, mocap_npz_fps

        fps = mocap_npz_fps(path)
        extra = [resample_clip(np.asarray(v, dtype=np.float32), fps) for v in load_mocap_npz(path).values()]
        clips += extra
        sources.append(f"{len(extra)} clips from {path} ({fps:g} fps)")
    frames = int(s.get("motion_frames") or 0)
    if frames > 0:
        from fastmixste.data.motion import motion_corpus

        clip_frames = int(s.get("motion_clip_frames") or 300)
        if s.get("max_steps"):
            # Generating more than a capped stage can draw is wasted time (smoke runs, tests).
            num_frame = int(cfg["model"].get("num_frame", 243))
            per_clip = max(1, (clip_frames - num_frame) // int(s.get("stride") or num_frame) + 1)
            needed = -(-int(s["max_steps"]) * int(s["batch_size"]) // per_clip) * clip_frames
            frames = min(frames, max(needed, clip_frames))
        t0 = time.perf_counter()
        corpus = motion_corpus(max(frames, clip_frames), clip_frames, seed=int(cfg["seed"]))
        clips += corpus
        sources.append(f"{len(corpus)} procedural motion clips ({sum(len(c) for c in corpus):,} frames, "
                       f"generated in {time.perf_counter() - t0:.1f} s)")
    if not clips:
        raise ValueError("pretraining has no 3D source: set pretrain.motion_frames > 0 or pretrain.h36m_3d: true, "
                         "or pass --mocap files")
    if log:
        print(f"pretraining sources: {', '.join(sources)}", flush=True)
    return clips


def heldout_report(model: Any, mean_pose: np.ndarray, cfg: dict[str, Any], device: Any,
                   autocast: Callable[[], AbstractContextManager] | None = None) -> tuple[dict | None, str]:
    """Evaluate ``model`` on the held-out motion set -> (results dict or None when disabled, Markdown section).

    ``eval.heldout_clips`` clips per held-out pattern (0 disables), 300 frames each (cut to ``eval.max_frames``
    when set), fixed seed (every run and every ``--compare-scratch`` variant scores the same clips); flip
    test-time augmentation as ``eval.flip``.
    """
    import contextlib

    from fastmixste.data.motion import heldout_sequences
    from fastmixste.eval.evaluation import evaluate_heldout, format_heldout_markdown

    n = int(cfg["eval"].get("heldout_clips") or 0)
    if n <= 0:
        return None, ""
    seqs = crop_sequences(heldout_sequences(clips_per_pattern=n), cfg["eval"].get("max_frames"))
    with (autocast or contextlib.nullcontext)():
        res = evaluate_heldout(model, seqs, mean_pose, flip=cfg["eval"]["flip"], batch_size=cfg["eval"]["batch_size"],
                               device=device)
    md = format_heldout_markdown(res, title="Held-out motion (patterns and subjects outside the fine-tuning set)")
    print(f"held-out motion: MPJPE {res['protocol1']['Avg']:.1f} mm | P-MPJPE {res['protocol2']['Avg']:.1f} mm | "
          f"speed ratio {res['speed_ratio']:.2f} (5 frames: {res['speed_ratio_5f']:.2f}) | "
          f"mean-pose baseline MPJPE {res['baseline_mpjpe']:.1f} mm",
          flush=True)
    return res, md


def crop_sequences(sequences: Sequence, max_frames: int | None) -> list:
    """Cut every sequence to its first ``max_frames`` frames (None: unchanged)."""
    if not max_frames:
        return list(sequences)
    return [dataclasses.replace(s, pose_2d=s.pose_2d[:max_frames], pose_3d=s.pose_3d[:max_frames],
                                world_3d=s.world_3d[:max_frames]) if len(s.pose_2d) > max_frames else s
            for s in sequences]
