"""The live pipeline's two threads (``Background``: decode + detect ahead of lift + write) give the one-thread
result, pass a failing source's error on at its place, lift what was detected before a Ctrl-C and stop their
thread; the online root trajectory (``OnlineRoot``) solves each frame from the frames seen."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from fastmixste.deploy.stream import Background, Frame2D, OnlineRoot, StreamError, detected_stream, run_stream
from fastmixste.video.decode import VideoError
from fastmixste.video.trajectory import root_trajectory

from .conftest import FrameMean, interrupted_stream, read_out


class Walker:
    """A scripted detector (H36M layout): one person drifting across the frame, nobody in frames 0-2, joint 5 unsure
    every 7th frame; deterministic, so two runs over the same frames see the same detections."""

    name, version, layout = "walker", "", "h36m"

    def __init__(self) -> None:
        self.t = 0
        self.base = np.random.default_rng(3).uniform(300, 700, (17, 2)).astype(np.float32)

    def detect(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((1, 1, 17, 3), np.nan, np.float32)
        out[..., 2] = 0.0
        if self.t >= 3:
            out[0, 0, :, :2] = self.base + [4.0 * self.t, 20 * np.sin(0.3 * self.t)]
            out[0, 0, :, 2] = 0.9
            if self.t % 7 == 0:
                out[0, 0, 5, 2] = 0.05
        self.t += 1
        return out


def _video(n: int, fail_at: int | None = None, closed: list | None = None):
    """(RGB frame, media time) pairs as a decoder yields them; ``closed`` records that the source was closed and in
    which thread."""
    try:
        for t in range(n):
            if t == fail_at:
                raise VideoError("clip.mp4: decoding failed (Invalid data found when processing input)")
            yield np.zeros((8, 8, 3), np.uint8), t / 30
    finally:
        if closed is not None:
            closed.append(threading.current_thread().name)


@pytest.mark.parametrize("lookahead", [0, 4, 8])
def test_two_threads_give_the_one_thread_output(tmp_path, tiny_model, lookahead):
    runs = {}
    for mode in ("serial", "background"):
        frames = detected_stream(_video(40), Walker(), 1000, 800)
        if mode == "background":
            frames = Background(frames, depth=3)
        run_stream(tiny_model, frames, tmp_path / f"{mode}.npz", lookahead=lookahead, chunk=16,
                   camera=(900.0, (499.5, 399.5)))
        runs[mode] = read_out(tmp_path / f"{mode}.npz")
    one, two = runs["serial"], runs["background"]
    assert len(one["pose_3d"]) == 40 and one["filled"][:3].all()
    for k in one:
        if k not in ("latency", "meta"):  # the wall-clock fields differ, nothing else
            np.testing.assert_array_equal(two[k], one[k], err_msg=k)


def test_background_passes_the_source_error_on_where_it_happened(tmp_path):
    closed: list[str] = []
    out = tmp_path / "s.npz"
    frames = Background(detected_stream(_video(100, fail_at=25, closed=closed), Walker(), 100, 100), depth=4)
    with pytest.raises(StreamError, match=r"decoding failed .*the 25 frames before it were lifted and written"):
        run_stream(FrameMean(9), frames, out, lookahead=8, chunk=8)
    assert len(read_out(out)["pose_3d"]) == 25
    assert closed == ["fastmixste-source"]  # closed by the thread that ran it
    assert not any(t.name == "fastmixste-source" for t in threading.enumerate())


def test_a_consumer_that_stops_early_closes_the_source_and_its_thread(tmp_path):
    closed: list[str] = []

    class Broken(FrameMean):
        calls = 0

        def forward(self, x):
            Broken.calls += 1
            if Broken.calls == 5:
                raise RuntimeError("the lifter failed")
            return super().forward(x)

    frames = Background(detected_stream(_video(10_000, closed=closed), Walker(), 100, 100), depth=2)
    with pytest.raises(RuntimeError, match="the lifter failed"):
        run_stream(Broken(9), frames, tmp_path / "b.npz", lookahead=0)
    assert closed == ["fastmixste-source"]
    assert not any(t.name == "fastmixste-source" for t in threading.enumerate())
    assert not (tmp_path / "b.npz").exists()


def _signalled(n: int, signal_at: int):
    rng = np.random.default_rng(1)
    for t in range(n):
        if t == signal_at:
            os.kill(os.getpid(), signal.SIGINT)  # raised in the main thread, wherever it is
        x = rng.uniform(-0.5, 0.5, (17, 2)).astype(np.float32)
        yield Frame2D(t / 50, 0.0, x, x * 500 + 500, np.ones(17, np.float32), np.zeros(17, bool))


def test_ctrl_c_lifts_the_frames_already_detected_in_the_second_thread(tmp_path):
    out = tmp_path / "live.npz"
    z, notes = interrupted_stream(Background(_signalled(10_000, 40), depth=8), out, lookahead=4, chunk=16)
    n = len(z["pose_3d"])
    # every frame made before the signal was lifted, in order (queued ones too); the thread may have made a few more
    assert 40 <= n <= 40 + 8 + 2, n
    np.testing.assert_allclose(z["timestamp"], np.arange(n) / 50)
    expected = np.random.default_rng(1).uniform(-0.5, 0.5, (n, 17, 2)).astype(np.float32)
    np.testing.assert_array_equal(z["pose_2d_normalized"], expected)
    assert notes == [f"the {n} frames lifted before it are in {out}"]
    assert not any(t.name == "fastmixste-source" for t in threading.enumerate())


def test_background_refuses_a_bad_depth_and_keeps_order():
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        Background(iter([]), depth=0)
    assert list(Background(iter(range(100)), depth=1)) == list(range(100))


def _walking(t_count: int = 40):
    """-> (root-relative pose (T, 17, 3), 2D (T, 17, 2), true root (T, 3)): a pinhole view of a person walking."""
    rng = np.random.default_rng(5)
    rel = rng.normal(0, 0.25, (t_count, 17, 3))
    rel[:, 0] = 0
    root = np.stack([np.linspace(-0.8, 0.6, t_count), np.full(t_count, 0.3), np.linspace(6.0, 2.5, t_count)], -1)
    cam = rel + root[:, None]
    return rel, cam[..., :2] / cam[..., 2:] * 1200.0 + [640.0, 360.0], root


def test_online_root_solves_each_frame_alone_and_holds_through_unsolvable_ones():
    rel, uv, root = _walking()
    uv[10] = np.nan  # nobody seen: no joint has weight
    w = np.where(np.isfinite(uv).all(-1), 1.0, 0.0)
    online = OnlineRoot(1200.0, (640.0, 360.0))
    got = np.stack([online.update(rel[t], uv[t], w[t]) for t in range(len(rel))])
    np.testing.assert_allclose(np.delete(got, 10, 0), np.delete(root, 10, 0), atol=1e-9)
    np.testing.assert_array_equal(got[10], got[9])  # held: the future is not there to interpolate from
    # the same per-frame solve as the offline trajectory, frame by frame
    offline = root_trajectory(rel, uv, 1200.0, (640.0, 360.0), confidence=w)
    np.testing.assert_allclose(np.delete(got, 10, 0), np.delete(offline, 10, 0), atol=1e-9)
    assert np.isnan(OnlineRoot(1200.0, (640.0, 360.0)).update(rel[0], np.full((17, 2), np.nan), np.zeros(17))).all()
    with pytest.raises(ValueError, match="smooth_frames must be >= 0"):
        OnlineRoot(1200.0, (640.0, 360.0), smooth_frames=-1)


def test_online_root_smoothing_uses_only_the_frames_seen():
    rel, uv, root = _walking()
    noisy = uv + np.random.default_rng(6).normal(0, 3.0, uv.shape)
    w = np.ones(uv.shape[:2])

    def run(points, poses=rel):
        s = OnlineRoot(1200.0, (640.0, 360.0), smooth_frames=2.0)
        return np.stack([s.update(poses[t], points[t], w[t]) for t in range(len(rel))])

    smooth = run(noisy)
    changed = noisy.copy()
    changed[30:] += 50.0  # a different future changes nothing before it
    np.testing.assert_array_equal(run(changed)[:30], smooth[:30])
    assert np.abs(run(changed)[30] - smooth[30]).max() > 1e-3
    # a still person: the one-sided average of a constant is the constant
    still = np.broadcast_to(uv[0], uv.shape)
    np.testing.assert_allclose(run(still, np.broadcast_to(rel[0], rel.shape)), np.broadcast_to(root[0], root.shape),
                               atol=1e-9)
    # on noisy 2D of a person standing still the causal average is closer to the truth than the raw solve (a moving
    # person's root lags by ~1.6 frames at sigma 2: what it costs is measured on the real recording, not here)
    noisy_still = still + np.random.default_rng(7).normal(0, 3.0, uv.shape)
    pose0 = np.broadcast_to(rel[0], rel.shape)
    raw = np.stack([OnlineRoot(1200.0, (640.0, 360.0)).update(pose0[t], noisy_still[t], w[t]) for t in range(40)])
    err = lambda x: np.linalg.norm(x - root[0], axis=-1)[8:].mean()  # noqa: E731
    assert err(run(noisy_still, pose0)) < 0.7 * err(raw)


def test_run_stream_writes_the_root_trajectory_and_the_camera_frame_pose(tmp_path, tiny_model):
    frames = detected_stream(_video(30), Walker(), 1000, 800)
    meta = run_stream(tiny_model, frames, tmp_path / "r.npz", lookahead=2, camera=(900.0, (499.5, 399.5)),
                      smooth_root=0.0)
    z = read_out(tmp_path / "r.npz")
    assert z["root_trajectory"].shape == (30, 3) and np.isfinite(z["root_trajectory"]).all()
    np.testing.assert_allclose(z["pose_3d_camera"], z["pose_3d"] + z["root_trajectory"][:, None], atol=1e-6)
    # each frame's root is the per-frame solve of what was written for it (pixels, confidence-weighted)
    w = np.where(z["filled"], 0.0, z["confidence"]) + 1e-3
    expected = root_trajectory(z["pose_3d"], z["pose_2d"], 900.0, (499.5, 399.5), confidence=w)
    np.testing.assert_allclose(z["root_trajectory"], expected, rtol=1e-5, atol=1e-5)
    assert "root_smoothing" in meta
    plain = run_stream(tiny_model, detected_stream(_video(5), Walker(), 1000, 800), tmp_path / "p.npz", lookahead=0)
    assert "root_smoothing" not in plain and "root_trajectory" not in read_out(tmp_path / "p.npz")
