"""model.input_norm = "box": each window re-centred and scaled by its 2D box inside forward."""

import pytest
import torch

from fastmixste import MixSTE, MixSTEConfig
from fastmixste.data.skeleton import flip_pose
from fastmixste.model.mixste import box_normalize


def _reference(x: torch.Tensor) -> torch.Tensor:
    """Per window, with loops: the valid points' box -> centre and half of the larger side."""
    out = x.clone()
    for b in range(x.shape[0]):
        xy = x[b, ..., :2].reshape(-1, 2)
        valid = (xy != 0).any(-1)
        if not valid.any():
            continue
        lo, hi = xy[valid].min(0).values, xy[valid].max(0).values
        half = (hi - lo).max() / 2
        w = out[b, ..., :2]
        keep = (w != 0).any(-1, keepdim=True)
        out[b, ..., :2] = torch.where(keep, (w - (lo + hi) / 2) / half, torch.zeros_like(w))
    return out


def test_matches_a_loop_reference_with_masked_points_and_confidence():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 17, 3, generator=g, dtype=torch.float64)
    x[0, 2, 5, :2] = 0.0  # a masked joint
    x[1, 4, :, :2] = 0.0  # a masked frame
    x[2, ..., :2] = 0.0  # nothing valid: left alone
    out = box_normalize(x)
    torch.testing.assert_close(out, _reference(x))
    assert out[0, ..., :2].abs().max() <= 1.0 + 1e-12
    torch.testing.assert_close(out[..., 2], x[..., 2])  # confidence passes through


def test_invariant_to_image_scale_and_position_and_commutes_with_flip():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 27, 17, 2, generator=g, dtype=torch.float64)
    moved = x * 2.7 + torch.tensor([0.4, -1.3], dtype=torch.float64)
    torch.testing.assert_close(box_normalize(moved), box_normalize(x))
    torch.testing.assert_close(box_normalize(flip_pose(x)), flip_pose(box_normalize(x)))


def test_model_with_box_norm_lifts_any_framing_alike_and_config_round_trips():
    torch.manual_seed(0)
    cfg = MixSTEConfig(num_frame=9, embed_dim_ratio=16, depth=1, num_heads=2, drop_path_rate=0.0,
                       attn_backend="eager", input_norm="box")
    model = MixSTE.from_config(cfg).eval()
    assert MixSTEConfig.from_dict(model.config.to_dict()).input_norm == "box"
    x = torch.randn(2, 9, 17, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x * 3.0 + 0.5), model(x), atol=1e-5, rtol=1e-5)
        plain = MixSTE.from_config(MixSTEConfig(**{**cfg.to_dict(), "input_norm": "screen"})).eval()
        plain.load_state_dict(model.state_dict())  # no new parameters: the same weights fit both
        assert not torch.allclose(plain(x * 3.0), plain(x))
    with pytest.raises(ValueError, match="input_norm must be one of"):
        MixSTEConfig(input_norm="bbox")
