import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from fastmixste.data.h36m import Sequence
from fastmixste.data.skeleton import flip_pose
from fastmixste.data.windows import TrainWindows, benchmark_windows, eval_windows, make_train_loader, stitch


def _seq(length: int, offset: float = 0.0) -> Sequence:
    """A sequence whose values encode (frame, joint, channel), so any misplaced value is visible."""
    t = np.arange(length, dtype=np.float32)[:, None, None]
    j = np.arange(17, dtype=np.float32)[None, :, None]
    x2 = offset + t * 100 + j + np.array([0.1, 0.2], np.float32)
    x3 = offset + t * 100 + j + np.array([0.3, 0.4, 0.5], np.float32)
    return Sequence("S1", "Walking", 0, x2, x3, x3.copy(), 1000, 1000, np.zeros(9, np.float32))


def _expected(seq: Sequence, start: int, F: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.clip(np.arange(start, start + F), 0, len(seq) - 1)
    return seq.pose_2d[idx], seq.pose_3d[idx]


@pytest.mark.parametrize("F, stride", [(27, None), (27, 5), (1, 1), (81, None)])
def test_train_windows_cover_every_frame_with_edge_padding(F, stride):
    seqs = [_seq(100), _seq(7, offset=1e5), _seq(243, offset=2e5)]
    ds = TrainWindows(seqs, F, stride=stride, flip=False)
    seen = [np.zeros(len(s), bool) for s in seqs]
    x, y = ds.gather(np.arange(len(ds)))
    assert x.shape == (len(ds), F, 17, 2) and y.shape == (len(ds), F, 17, 3)
    assert x.dtype == y.dtype == np.float32
    for w in range(len(ds)):
        # Decode which sequence and frames the window holds, and check it against an explicit edge-padded slice.
        si = int(x[w, 0, 0, 0] // 1e5)
        first = int(ds.starts[w] - ds.first[w])
        ex, ey = _expected(seqs[si], first, F)
        np.testing.assert_array_equal(x[w], ex)
        np.testing.assert_array_equal(y[w], ey)
        seen[si][np.clip(np.arange(first, first + F), 0, len(seqs[si]) - 1)] = True
    assert all(s.all() for s in seen)


def test_default_windows_are_centred_chunks():
    ds = TrainWindows([_seq(100)], 27, flip=False)
    # 4 chunks of 27 cover 108 frames: 8 frames of padding, 4 before and 4 after (upstream MixSTE's chunks)
    np.testing.assert_array_equal(ds.starts, [-4 + 27 * k for k in range(4)])
    x, _ = ds.gather([0, 3])
    np.testing.assert_array_equal(x[0, :6, 0, 0], np.float32([0.1] * 5 + [100.1]))
    np.testing.assert_array_equal(x[1, -5:, 0, 0], np.float32([9900.1] * 5))


def test_flip_is_mirror_of_unflipped_for_2d_and_3d_together():
    seqs = [_seq(300), _seq(50, offset=1e5)]
    plain = TrainWindows(seqs, 27, stride=9, flip=False)
    ds = TrainWindows(seqs, 27, stride=9, flip=True, seed=3)
    idx = np.arange(len(ds))
    f = ds.flips(idx)
    assert 0.3 < f.mean() < 0.7
    x, y = ds.gather(idx)
    x0, y0 = plain.gather(idx)
    np.testing.assert_array_equal(x[f], flip_pose(x0[f]))
    np.testing.assert_array_equal(y[f], flip_pose(y0[f]))
    np.testing.assert_array_equal(x[~f], x0[~f])
    np.testing.assert_array_equal(y[~f], y0[~f])


def test_flips_are_deterministic_and_change_with_epoch_and_seed():
    seqs = [_seq(400)]
    a, b, c = (TrainWindows(seqs, 9, stride=1, seed=s) for s in (0, 0, 1))
    idx = np.arange(len(a))
    np.testing.assert_array_equal(a.flips(idx), b.flips(idx))
    assert (a.flips(idx) != c.flips(idx)).any()
    before = a.flips(idx)
    a.set_epoch(1)
    assert 0.3 < (a.flips(idx) != before).mean() < 0.7
    # Single-item access agrees with the batched gather.
    xi, yi = a[17]
    xb, yb = a.gather([5, 17])
    np.testing.assert_array_equal(xi.numpy(), xb[1])
    np.testing.assert_array_equal(yi.numpy(), yb[1])


def test_loader_batches_and_distributed_sampler():
    ds = TrainWindows([_seq(500), _seq(300)], 27, stride=3)
    loader = make_train_loader(ds, batch_size=16, seed=0)
    batches = list(loader)
    assert sum(x.shape[0] for x, _ in batches) == len(ds)
    x, y = batches[0]
    assert isinstance(x, torch.Tensor) and x.shape == (16, 27, 17, 2) and y.shape == (16, 27, 17, 3)
    assert x.dtype == y.dtype == torch.float32
    again = next(iter(make_train_loader(ds, batch_size=16, seed=0)))
    assert torch.equal(again[0], x)  # seeded shuffle
    sampler = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=True, seed=0)
    part = list(make_train_loader(ds, batch_size=32, sampler=sampler))
    assert sum(b[0].shape[0] for b in part) == len(sampler) == (len(ds) + 1) // 2


def test_loader_with_worker_processes_matches_in_process():
    ds = TrainWindows([_seq(200)], 27, stride=4, seed=5)
    a = list(make_train_loader(ds, batch_size=8, shuffle=False, num_workers=0))
    b = list(make_train_loader(ds, batch_size=8, shuffle=False, num_workers=2))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))


def test_train_windows_errors():
    with pytest.raises(ValueError, match="num_frame"):
        TrainWindows([_seq(10)], 0)
    with pytest.raises(ValueError, match="no"):
        TrainWindows([], 27)
    with pytest.raises(IndexError):
        TrainWindows([_seq(10)], 5).gather([100])


@pytest.mark.parametrize("L, F, starts", [(500, 243, [0, 243, 257]), (486, 243, [0, 243, 243]),
                                          (243, 243, [0, 0]), (100, 243, [0]), (10, 3, [0, 3, 6, 7])])  # fmt: skip
def test_eval_windows_upstream_semantics(L, F, starts):
    x = _seq(L).pose_2d
    w, s = eval_windows(x, F)
    np.testing.assert_array_equal(s, starts)
    assert w.shape == (len(starts), F, 17, 2)
    for k, st in enumerate(starts):
        ex, _ = _expected(_seq(L), st, F)  # short sequences: the last frame repeated on the right
        np.testing.assert_array_equal(w[k], ex)


@pytest.mark.parametrize("L", [1, 2, 26, 27, 28, 54, 55, 243, 500, 1001])
@pytest.mark.parametrize("F", [1, 27, 243])
def test_stitch_predicts_every_frame_exactly_once(L, F):
    x = _seq(L).pose_3d
    w, s = eval_windows(x, F)
    # Window predictions that remember which window wrote them: frame value + 1e7 * (window + 1).
    tagged = w + (np.arange(len(s), dtype=np.float64)[:, None, None, None] + 1) * 1e7
    out = stitch(tagged, s, L)
    assert out.shape == (L, 17, 3)
    window = np.floor(out[:, 0, 0] / 1e7).astype(int) - 1
    np.testing.assert_allclose(out - (window[:, None, None] + 1) * 1e7, x)  # each frame from its own position
    # The windows that wrote the frames are the first to cover them, in order.
    for t in range(L):
        assert window[t] == next(k for k, st in enumerate(s) if st <= t < st + F)


def test_stitch_torch_and_gaps():
    x = torch.arange(50 * 17 * 3, dtype=torch.float32).reshape(50, 17, 3)
    w, s = eval_windows(x, 16)
    assert isinstance(w, torch.Tensor)
    assert torch.equal(stitch(w, s, 50), x)
    with pytest.raises(ValueError, match="covered by none"):
        stitch(w[:, :10], s, 50)
    with pytest.raises(ValueError, match="cover frames 0..49 of a 60-frame"):
        stitch(w, s, 60)
    short = x[:10]
    w, s = eval_windows(short, 27)
    assert w.shape == (1, 27, 17, 3) and torch.equal(w[0, 10:], short[-1:].expand(17, 17, 3))
    assert torch.equal(stitch(w, s, 10), short)


def test_benchmark_runs():
    assert benchmark_windows(num_frame=27, batch_size=8, seconds=0.0) > 0
