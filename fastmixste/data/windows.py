"""Sequence windows: random training windows with flip augmentation, MixSTE evaluation windows, stitching.

Training windows are gathered in one vectorised index operation per batch (Dataset.__getitems__), so a DataLoader
batch of 128 x 243-frame windows costs a single numpy gather, not 128 Python calls.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence as SequenceT
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from fastmixste.data.h36m import Sequence
from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _window_starts(length: int, num_frame: int, stride: int) -> np.ndarray:
    """Starts of windows of num_frame frames, `stride` apart, centred so that they cover [0, length)."""
    n = 1 if length <= num_frame else -(-(length - num_frame) // stride) + 1
    span = (n - 1) * stride + num_frame
    return np.arange(n, dtype=np.int64) * stride - (span - length) // 2


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Counter-based hash (uint64 -> uint64): per-window randomness that does not depend on batching or workers."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Batch(list):
    """A list of (x2d, y3d) samples that also carries them pre-stacked, so the collate step is free."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        super().__init__(zip(x, y))
        self.x, self.y = x, y


def collate_windows(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader collate_fn: returns the pre-stacked tensors of a TrainWindows batch, else default_collate."""
    if isinstance(batch, _Batch):
        return batch.x, batch.y
    return default_collate(batch)


class TrainWindows(Dataset):
    """Training windows (x2d (F, 17, 2), y3d (F, 17, 3)) float32 over a list of Sequences.

    Every sequence is cut into windows of num_frame frames, `stride` apart (default num_frame: the chunks of
    upstream MixSTE, centred so that the sequence is covered and the overhang edge-padded). Frames outside a
    sequence repeat its first/last frame. With flip, each window is mirrored with probability 1/2 (2D and 3D
    together: x -> -x, left/right joints swapped); the choice is a hash of (seed, epoch, index), so it is the same
    with any batch size or number of workers: call set_epoch(epoch) once per epoch to draw new flips.
    """

    def __init__(
        self,
        sequences: SequenceT[Sequence],
        num_frame: int,
        stride: int | None = None,
        flip: bool = True,
        seed: int = 0,
        left: SequenceT[int] = H36M_LEFT,
        right: SequenceT[int] = H36M_RIGHT,
    ):
        if num_frame < 1:
            raise ValueError(f"num_frame must be >= 1, got {num_frame}")
        stride = num_frame if stride is None else stride
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if len(sequences) == 0:
            raise ValueError("TrainWindows needs at least one sequence, got none")
        self.num_frame, self.stride, self.flip, self.seed, self.epoch = num_frame, stride, flip, seed, 0
        x, y, seq_first, seq_last, starts = [], [], [], [], []
        offset = 0
        for s in sequences:
            L = len(s)
            if L == 0 or s.pose_3d.shape[0] != L:
                raise ValueError(f"sequence {s.subject}/{s.action} cam {s.camera}: 2D has {L} frames and 3D "
                                 f"{s.pose_3d.shape[0]}; need the same non-zero length")  # fmt: skip
            x.append(s.pose_2d)
            y.append(s.pose_3d)
            st = _window_starts(L, num_frame, stride)
            starts.append(st + offset)
            seq_first.append(np.full_like(st, offset))
            seq_last.append(np.full_like(st, offset + L - 1))
            offset += L
        # One contiguous array for all sequences: a window is a clipped index range into it.
        self.x = np.ascontiguousarray(np.concatenate(x), dtype=np.float32)
        self.y = np.ascontiguousarray(np.concatenate(y), dtype=np.float32)
        self.starts = np.concatenate(starts)
        self.first = np.concatenate(seq_first)
        self.last = np.concatenate(seq_last)
        self._arange = np.arange(num_frame, dtype=np.int64)
        self._perm = np.arange(self.x.shape[1])
        self._perm[list(left) + list(right)] = list(right) + list(left)

    def __len__(self) -> int:
        return len(self.starts)

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of flips (deterministic per (seed, epoch, window))."""
        self.epoch = int(epoch)

    def flips(self, index: np.ndarray) -> np.ndarray:
        """(N,) window indices -> (N,) bool: which of them are mirrored this epoch."""
        if not self.flip:
            return np.zeros(len(index), dtype=bool)
        key = (np.uint64(self.seed) << np.uint64(40)) ^ (np.uint64(self.epoch) << np.uint64(32))
        return (_splitmix64(np.asarray(index, dtype=np.uint64) ^ key) >> np.uint64(63)).astype(bool)

    def gather(self, index: SequenceT[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) window indices -> (x2d (N, F, 17, 2), y3d (N, F, 17, 3)) float32 numpy, flips applied."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)}): {index.min()}..{index.max()}")
        frames = self.starts[index, None] + self._arange  # (N, F)
        frames = np.clip(frames, self.first[index, None], self.last[index, None])  # edge padding
        x, y = self.x[frames], self.y[frames]
        fi = np.flatnonzero(self.flips(index))
        if fi.size:
            x[fi], y[fi] = self._mirror(x[fi]), self._mirror(y[fi])
        return x, y

    def _mirror(self, a: np.ndarray) -> np.ndarray:
        """(N, F, J, C) -> mirrored copy. The joint swap runs on a (N, F, J) view with one C-float record per
        joint: numpy's fancy indexing over an axis of tiny 2-3 float rows is ~5x slower."""
        rec = np.ascontiguousarray(a).view(np.dtype((np.void, a.shape[-1] * a.itemsize)))[..., 0]
        m = np.take(rec, self._perm, axis=2)[..., None].view(a.dtype)
        m[..., 0] *= -1
        return m

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.gather([i])
        return torch.from_numpy(x[0]), torch.from_numpy(y[0])

    def __getitems__(self, indices: list[int]) -> _Batch:
        x, y = self.gather(indices)
        return _Batch(torch.from_numpy(x), torch.from_numpy(y))


def make_train_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader yielding (x2d (B, F, 17, 2), y3d (B, F, 17, 3)) batches; shuffling seeded by `seed`.

    Pass a DistributedSampler as `sampler` when distributed (then `shuffle` is the sampler's business). Call
    sampler.set_epoch(e) and dataset.set_epoch(e) at the start of every epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_windows,
        generator=generator,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )


def eval_windows(x: ArrayT, num_frame: int) -> tuple[ArrayT, np.ndarray]:
    """(L, J, C) sequence -> (windows (W, F, J, C), starts (W,)) with upstream MixSTE's evaluation windowing.

    W = L // F + 1: windows start at 0, F, 2F, ... and the last one is the final F frames (it overlaps the one before;
    when F divides L it repeats it). A sequence shorter than F gives one window, edge-padded on the right. Frames
    of a window are x[start : start + F]; put predictions back with stitch(preds, starts, L).
    """
    if x.ndim != 3:
        raise ValueError(f"eval_windows expects one sequence (L, J, C), got shape {tuple(x.shape)}")
    L = x.shape[0]
    if L == 0:
        raise ValueError("eval_windows got an empty sequence (0 frames)")
    F = num_frame
    if L < F:
        idx = np.minimum(np.arange(F), L - 1)
        return x[idx][None], np.zeros(1, dtype=np.int64)
    n = L // F + 1
    starts = np.append(np.arange(n - 1, dtype=np.int64) * F, L - F)
    idx = starts[:, None] + np.arange(F)
    if isinstance(x, torch.Tensor):
        return x[torch.from_numpy(idx).to(x.device)], starts
    return x[idx], starts


def stitch(preds: ArrayT, starts: np.ndarray, length: int) -> ArrayT:
    """(W, F, J, C') window predictions + (W,) starts -> (length, J, C'): every frame taken exactly once.

    Windows are read in order; a frame already covered by an earlier window is not overwritten, and frames past
    `length` (padding) are dropped. Raises if some frame of [0, length) is covered by no window.
    """
    starts = np.asarray(starts, dtype=np.int64)
    if preds.ndim != 4 or preds.shape[0] != len(starts):
        raise ValueError(f"stitch expects preds (W, F, J, C) with W = len(starts) = {len(starts)}, "
                         f"got shape {tuple(preds.shape)}")  # fmt: skip
    F = preds.shape[1]
    out = (
        preds.new_empty((length, *preds.shape[2:]))
        if isinstance(preds, torch.Tensor)
        else np.empty((length, *preds.shape[2:]), dtype=preds.dtype)
    )
    covered = 0  # frames [0, covered) are written; windows must not leave gaps
    for w, s in enumerate(starts.tolist()):
        if s > covered:
            raise ValueError(f"window {w} starts at frame {s} but frames {covered}..{s - 1} are covered by none")
        end = min(s + F, length)
        if end > covered:
            out[covered:end] = preds[w, covered - s : end - s]
            covered = end
    if covered < length:
        raise ValueError(f"windows cover frames 0..{covered - 1} of a {length}-frame sequence")
    return out


def _synthetic_sequences(n: int, length: int, seed: int = 0) -> list[Sequence]:
    rng = np.random.default_rng(seed)
    return [
        Sequence("S1", "Walking", c % 4, rng.standard_normal((length, 17, 2), dtype=np.float32),
                 rng.standard_normal((length, 17, 3), dtype=np.float32), np.zeros((length, 17, 3), np.float32),
                 1000, 1000, np.zeros(9, np.float32))
        for c in range(n)
    ]  # fmt: skip


def benchmark_windows(
    num_frame: int = 243,
    batch_size: int = 128,
    num_workers: int = 0,
    seconds: float = 3.0,
    stride: int | None = 1,
) -> float:
    """Training windows per second through make_train_loader on CPU (flip on, shuffled, 243-frame windows).

    Uses 40 random sequences of 2000 frames (H36M-like lengths) and every-frame windows (stride 1), the random
    access pattern of training.
    """
    ds = TrainWindows(_synthetic_sequences(40, 2000), num_frame, stride=stride, flip=True)
    loader = make_train_loader(ds, batch_size, shuffle=True, num_workers=num_workers, pin_memory=False)
    n, t0 = 0, None
    while True:
        for x, _ in loader:
            if t0 is None:  # skip the first batch (worker start-up)
                t0 = time.perf_counter()
                continue
            n += x.shape[0]
            if time.perf_counter() - t0 >= seconds:
                return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Measure training windows/s of the data loader on CPU.")
    p.add_argument("--num-frame", type=int, default=243)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rate = benchmark_windows(a.num_frame, a.batch_size, a.workers, a.seconds)
    print(f"{rate:,.0f} windows/s ({rate * a.num_frame:,.0f} frames/s), F={a.num_frame}, batch {a.batch_size}, "
          f"{a.workers} workers")  # fmt: skip


if __name__ == "__main__":
    main()
