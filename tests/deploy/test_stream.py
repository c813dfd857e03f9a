"""Streaming lifting (fastmixste.deploy.stream): same as offline where the windows are the same, bounded memory, the
output written as it goes and closed on Ctrl-C / SIGTERM / a failing source, and the refusals."""

from __future__ import annotations

import json
import os
import signal
import tracemalloc

import numpy as np
import pytest

from fastmixste.deploy.stream import (
    Frame2D,
    OnlinePose,
    StreamError,
    StreamLifter,
    StreamWriter,
    detected_stream,
    run_stream,
    stream_plan,
)
from fastmixste.io import cli
from fastmixste.video.decode import VideoError, lift

from .conftest import FrameMean, interrupted_stream, read_out


def _stream(model, x, lookahead, flip=True):
    s = StreamLifter(model, lookahead, flip=flip)
    got = []
    for t in range(len(x)):
        out = s.push(x[t], t)
        # latency is the lookahead: frame t - L comes out when frame t goes in, and only then
        assert [o.index for o in out] == ([t - lookahead] if t >= lookahead else [])
        got += out
    got += s.finish()
    assert [o.index for o in got] == list(range(len(x))) and [o.stamp for o in got] == list(range(len(x)))
    return np.stack([o.pose_3d for o in got])


def _offline_window(t, T, F):
    """(first, last real frame) of the eval_windows window offline lifting takes frame t from."""
    if T <= F:
        return 0, T - 1
    k = t // F
    lo = k * F if k < T // F else T - F
    return lo, lo + F - 1


def _stream_window(t, T, F, L):
    if t + L >= T:  # still waiting when the stream ended: the final window
        return (0, T - 1) if T <= F else (T - F, T - 1)
    return max(0, t + L - F + 1), t + L  # (start-up: frames 0..t+L, edge-padded as offline pads a short clip)


@pytest.mark.parametrize("T", [5, 23, 31])
@pytest.mark.parametrize("lookahead", [0, 3, 8])
def test_stream_equals_offline_where_the_windows_are_the_same(tiny_model, T, lookahead):
    x = np.random.default_rng(T).uniform(-0.8, 0.8, (T, 17, 2)).astype(np.float32)
    F = tiny_model.config.num_frame
    off, _ = lift(tiny_model, x, flip=True, batch_size=4, progress=False)
    on = _stream(tiny_model, x, lookahead)
    # where both take frame t from the same frames (padding included) the results are the same computation
    same = np.array([_stream_window(t, T, F, lookahead) == _offline_window(t, T, F) for t in range(T)])
    assert same.any()
    np.testing.assert_allclose(on[same], off[same], atol=1e-6, rtol=0)
    # elsewhere the window differs, and so does the result (the test would see a wrong window)
    if (~same).any():
        assert np.abs(on[~same] - off[~same]).max() > 1e-4


def test_stream_windows_with_a_known_model():
    """FrameMean's z is the mean x of the window: check every frame's window directly, start, middle and end."""
    F, T, L = 9, 30, 4
    x = np.zeros((T, 17, 2), np.float32)
    x[:, :, 0] = np.arange(T, dtype=np.float32)[:, None]  # frame t has x = t
    on = _stream(FrameMean(F), x, L, flip=False)
    for t in range(T):
        if t + L >= T:
            frames = np.arange(T - F, T)
        else:
            frames = np.minimum(np.arange(F) + max(0, t + L - F + 1), t + L)
        assert on[t, 0, 2] == pytest.approx(frames.mean()), t
        assert on[t, 0, 0] == t


@pytest.mark.parametrize("T,L", [(4, 0), (4, 8), (30, 0), (30, 4), (30, 8)])
def test_stream_plan_is_what_the_lifter_does(T, L):
    """stream_plan (for evaluating streaming on recorded clips in batches) gives the lifter's windows."""
    x = np.zeros((T, 17, 2), np.float32)
    x[:, :, 0] = np.arange(T, dtype=np.float32)[:, None] ** 2  # window means tell windows apart
    on = _stream(FrameMean(9), x, L, flip=False)
    idx, pos = stream_plan(T, 9, L)
    np.testing.assert_allclose(on[:, 0, 2], x[idx, 0, 0].mean(1), rtol=1e-6)
    np.testing.assert_array_equal(idx[np.arange(T), pos], np.arange(T))


@pytest.mark.slow
def test_stream_memory_is_bounded_over_a_long_stream(tmp_path):
    """Peak traced memory of a 6000-frame stream (lifter + writer) is that of a 600-frame one: nothing grows."""
    model = FrameMean(9)
    x = np.random.default_rng(0).uniform(-1, 1, (17, 2)).astype(np.float32)

    def peak(n):
        s = StreamLifter(model, 4, flip=False)
        w = StreamWriter(tmp_path / f"s{n}.npz", {"pose_3d": ((17, 3), np.float32)}, chunk=64)
        tracemalloc.start()
        for t in range(n):
            for o in s.push(x, t):
                w.write(pose_3d=o.pose_3d)
            if t == 100:
                tracemalloc.reset_peak()
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        for o in s.finish():
            w.write(pose_3d=o.pose_3d)
        w.close({})
        with np.load(tmp_path / f"s{n}.npz") as z:
            assert z["pose_3d"].shape == (n, 17, 3)
        return result

    short, long = peak(600), peak(6000)
    assert long < short * 1.5 + 64 * 1024, (short, long)


def _frames(n, fail_at=None, signal_at=None, sig=signal.SIGINT):
    rng = np.random.default_rng(1)
    for t in range(n):
        if t == fail_at:
            raise VideoError("clip.mp4: decoding failed (Invalid data found when processing input)")
        if t == signal_at:
            os.kill(os.getpid(), sig)  # what Ctrl-C / `timeout` sends; lands in this loop
        x = rng.uniform(-0.5, 0.5, (17, 2)).astype(np.float32)
        yield Frame2D(t / 50, 0.0, x, x * 500 + 500, np.ones(17, np.float32), np.zeros(17, bool))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_stream_closes_the_npz_with_every_frame(tmp_path, sig):
    out = tmp_path / "live.npz"
    z, notes = interrupted_stream(_frames(1000, signal_at=40, sig=sig), out, lookahead=4, chunk=16)
    n = len(z["pose_3d"])
    assert 40 <= n <= 41  # every frame that came was lifted (the lookahead's tail with the final window)
    np.testing.assert_allclose(z["timestamp"], np.arange(n) / 50)
    meta = json.loads(str(z["meta"]))
    assert meta["stopped"] == "interrupted" and meta["num_frames"] == n
    assert notes == [f"the {n} frames lifted before it are in {out}"]
    assert [p.name for p in tmp_path.iterdir()] == ["live.npz"]  # no chunk folder left


def test_source_failing_mid_stream_keeps_what_came_and_says_so(tmp_path):
    out = tmp_path / "s.npz"
    with pytest.raises(StreamError, match=r"decoding failed .*the 25 frames before it were lifted and written"):
        run_stream(FrameMean(9), _frames(100, fail_at=25), out, lookahead=8, chunk=8)
    z = read_out(out)
    assert len(z["pose_3d"]) == 25 and json.loads(str(z["meta"]))["stopped"].startswith("source failed")
    # a source that fails before its first frame leaves nothing
    with pytest.raises(VideoError):
        run_stream(FrameMean(9), _frames(5, fail_at=0), tmp_path / "none.npz", lookahead=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_source_that_ends_is_finished_and_an_empty_one_refused(tmp_path):
    meta = run_stream(FrameMean(9), _frames(20), tmp_path / "a.npz", lookahead=8)
    assert meta["stopped"] == "end of stream" and len(read_out(tmp_path / "a.npz")["pose_3d"]) == 20
    assert meta["latency_p95_s"] >= meta["latency_median_s"] >= 0
    with pytest.raises(StreamError, match="ended before its first frame"):
        run_stream(FrameMean(9), _frames(0), tmp_path / "b.npz", lookahead=0)
    assert not (tmp_path / "b.npz").exists()


def test_bad_lookahead_and_frames_are_refused():
    for bad in (-1, 9, 2.5, True):
        with pytest.raises(StreamError, match=r"--lookahead must be 0\.\.8"):
            StreamLifter(FrameMean(9), bad)
    s = StreamLifter(FrameMean(9), 0)
    with pytest.raises(StreamError, match=r"expected \(17, 2\)"):
        s.push(np.zeros((17, 3), np.float32))
    with pytest.raises(StreamError, match="NaN"):
        s.push(np.full((17, 2), np.nan, np.float32))


def test_infer_stream_cli_and_its_refusals(tmp_path, checkpoint, capsys):
    from train import infer

    kp = tmp_path / "kp.npy"
    rng = np.random.default_rng(0)
    np.save(kp, (500 + np.cumsum(rng.normal(0, 2, (20, 17, 2)), 0)).astype(np.float32))
    base = ["--checkpoint", str(checkpoint), "--no-progress"]
    out = tmp_path / "o.npz"
    code = cli.run_cli(infer.main, base + ["--keypoints", str(kp), "--layout", "h36m", "--width", "1000",
                                           "--height", "1000", "--out", str(out), "--stream", "--lookahead", "3"])
    assert code == 0, capsys.readouterr().err
    z = read_out(out)
    assert z["pose_3d"].shape == (20, 17, 3) and (z["pose_3d"][:, 0] == 0).all()
    meta = json.loads(str(z["meta"]))
    assert meta["lookahead"] == 3
    # the root in the camera frame, online, with the intrinsics of --fov (default 60 degrees) recorded
    assert z["root_trajectory"].shape == (20, 3) and np.isfinite(z["root_trajectory"]).all()
    np.testing.assert_allclose(z["pose_3d_camera"], z["pose_3d"] + z["root_trajectory"][:, None], atol=1e-6)
    assert meta["intrinsics"]["fov_degrees"] == 60.0
    cases = [
        (["--camera", "7", "--out", str(tmp_path / "c.npz")], "--camera"),
        (["--keypoints", str(kp), "--layout", "h36m", "--width", "9", "--height", "9", "--out",
          str(tmp_path / "d.npz"), "--stream",
          "--lookahead", "9"], "--lookahead must be 0..8"),
        (["--keypoints", str(kp), "--layout", "h36m", "--out", str(tmp_path / "e.npz"), "--lookahead", "2"],
         "needs --stream"),
        (["--keypoints", str(kp), "--layout", "h36m", "--out", str(tmp_path / "f.npz"), "--serial"],
         "needs --stream"),
    ]
    for argv, phrase in cases:
        assert cli.run_cli(infer.main, base + argv) == 2, argv
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err, err


def test_online_pose_holds_missing_joints_and_fills_frames_before_the_first_person():
    class Scripted:
        name, version, layout = "scripted", "", "h36m"

        def __init__(self):
            self.t = 0

        def detect(self, frames):
            out = np.full((1, 1, 17, 3), np.nan, np.float32)
            out[..., 2] = 0
            if self.t >= 2:  # nobody in frames 0 and 1
                out[0, 0, :, :2] = 100 + 10 * self.t
                out[0, 0, :, 2] = 0.9
                if self.t == 3:
                    out[0, 0, 5, 2] = 0.05  # joint 5 unsure in frame 3: held from frame 2
            self.t += 1
            return out

    frames = ((np.zeros((4, 4, 3), np.uint8), t / 10) for t in range(4))
    got = list(detected_stream(frames, Scripted(), 200, 100))
    assert [f.timestamp for f in got] == [0.0, 0.1, 0.2, 0.3]
    assert got[0].filled.all() and got[1].filled.all() and not got[2].filled.any()
    np.testing.assert_array_equal(got[0].pose_2d, got[2].pose_2d)  # frames before the person: its first pose
    assert got[3].filled[5] and got[3].pose_2d[5, 0] == 120 and got[3].pose_2d[4, 0] == 130
    np.testing.assert_allclose(got[3].x[4], [130 / 200 * 2 - 1, 130 / 200 * 2 - 0.5], rtol=1e-6)
    # two people: the one nearest the last frame's
    track = OnlinePose(200, 100)
    a = np.full((1, 17, 3), 0.9, np.float32)
    a[..., :2] = 50
    track.update(a)
    two = np.concatenate([a.copy(), a.copy()])
    two[0, :, :2], two[1, :, :2] = 150, 55
    x, _, _ = track.update(two)
    assert track.last[0, 0] == 55


@pytest.mark.slow
def test_ctrl_c_to_a_streaming_cli_process_exits_130_with_the_npz_closed(tmp_path):
    import subprocess
    import sys

    from tests.cli_runner import REPO

    out = tmp_path / "live.npz"
    r = subprocess.run([sys.executable, "-m", "tests.deploy.stream_interrupt_probe", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == cli.EXIT_INTERRUPTED, r.stderr
    z = read_out(out)
    n = len(z["pose_3d"])
    assert n in (30, 31) and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"interrupted (Ctrl-C); the {n} frames lifted before it are in {out}"
