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
