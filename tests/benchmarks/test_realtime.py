"""benchmarks.realtime: its batched streaming predictions (the accuracy table) are what StreamLifter outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.realtime import stream_predictions
from fastmixste import MixSTE
from fastmixste.deploy.stream import StreamLifter


@pytest.mark.parametrize("lookahead", [0, 4, 8])
def test_batched_stream_predictions_equal_the_stream_lifter(lookahead):
    torch.manual_seed(0)
    model = MixSTE(num_frame=9, embed_dim_ratio=16, depth=1, num_heads=2, attn_backend="sdpa").eval()
    x = np.random.default_rng(lookahead).uniform(-0.8, 0.8, (23, 17, 2)).astype(np.float32)
    s = StreamLifter(model, lookahead)
    got = [o for t in range(len(x)) for o in s.push(x[t])] + s.finish()
    online = np.stack([o.pose_3d for o in got])
    np.testing.assert_allclose(stream_predictions(model, x, lookahead, batch=5), online, atol=1e-5, rtol=0)


def test_online_2d_of_recorded_detections_is_what_the_live_stream_makes():
    """The real-recording row 'L = half, 2D online' rebuilds a live stream's 2D from a recorded person's detections:
    it must be what detected_stream (OnlinePose) makes from the same detections, frame by frame."""
    from benchmarks.realtime import online_2d
    from fastmixste.deploy.stream import detected_stream
    from fastmixste.video.keypoints import Keypoints2D

    rng = np.random.default_rng(0)
    T = 30
    pose = (400 + np.cumsum(rng.normal(0, 3, (T, 17, 2)), 0)).astype(np.float32)
    conf = rng.uniform(0.3, 1.0, (T, 17)).astype(np.float32)
    filled = rng.uniform(size=(T, 17)) < 0.15
    filled[:4] = True  # nobody seen in the first frames
    filled[12] = True  # nor in frame 12
    conf[filled] = 0.0
    kps = Keypoints2D(pose, conf, filled, 1000.0, 800.0)

    class Replay:  # the recorded detections, one frame at a time (nothing where the joint was filled)
        name, version, layout = "replay", "", "h36m"
        t = 0

        def detect(self, frames):
            out = np.concatenate([np.where(filled[self.t, :, None], np.nan, pose[self.t]), conf[self.t, :, None]],
                                 -1)[None, None]
            self.t += 1
            return out.astype(np.float32)

    live = list(detected_stream(((np.zeros((2, 2, 3), np.uint8), t / 30) for t in range(T)), Replay(), 1000.0,
                                800.0, min_confidence=0.0))
    x, px, weights = online_2d(kps)
    np.testing.assert_array_equal(x, np.stack([f.x for f in live]))
    np.testing.assert_array_equal(px, np.stack([f.pose_2d for f in live]))
    np.testing.assert_allclose(weights, np.stack([np.where(f.filled, 0.0, f.confidence) + 1e-3 for f in live]))
    np.testing.assert_array_equal(px[12], px[11])  # held, not interpolated from frame 13
