"""The training losses against their definitions (upstream MixSTE fine-tuning loss, MotionBERT pretraining loss)."""

from __future__ import annotations

import pytest
import torch

from fastmixste.eval.losses import (
    UPSTREAM_JOINT_WEIGHTS,
    finetune_loss,
    pretrain_loss,
    temporal_consistency,
    velocity_error,
    weighted_mpjpe,
)
from fastmixste.eval.metrics import mpjpe


def _pair(B: int = 3, T: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.randn(B, T, 17, 3, dtype=torch.float64)
    return target + 0.1 * torch.randn_like(target), target


def test_weighted_mpjpe_matches_definition() -> None:
    pred, target = _pair()
    w = torch.tensor(UPSTREAM_JOINT_WEIGHTS, dtype=torch.float64)
    expected = (w * (pred - target).norm(dim=-1)).mean()
    torch.testing.assert_close(weighted_mpjpe(pred, target), expected)
    torch.testing.assert_close(weighted_mpjpe(pred, target, torch.ones(17)), mpjpe(pred, target))


def test_temporal_consistency_and_velocity() -> None:
    pred, target = _pair()
    w = torch.tensor(UPSTREAM_JOINT_WEIGHTS, dtype=torch.float64)
    expected = (w[:, None] * (pred[:, 1:] - pred[:, :-1]) ** 2).mean()
    torch.testing.assert_close(temporal_consistency(pred), expected)
    static = pred[:, :1].expand_as(pred)
    assert temporal_consistency(static).item() == 0.0
    vel = ((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])).norm(dim=-1).mean()
    torch.testing.assert_close(velocity_error(pred, target), vel)
    # A constant offset per clip moves no joint between frames.
    assert velocity_error(target + 0.3, target).item() == pytest.approx(0.0, abs=1e-12)
    one = velocity_error(pred[:, :1], target[:, :1])
    assert one.item() == 0.0 and one.requires_grad == pred.requires_grad


def test_finetune_loss_is_upstream_combination() -> None:
    pred, target = _pair()
    pred.requires_grad_(True)
    total, parts = finetune_loss(pred, target)
    expected = weighted_mpjpe(pred, target) + 0.5 * temporal_consistency(pred) + 2.0 * velocity_error(pred, target)
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"wmpjpe", "tc", "mpjve"} and not any(v.requires_grad for v in parts.values())
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_pretrain_loss_terms() -> None:
    _, target = _pair()
    total, parts = pretrain_loss(target.clone(), target)
    assert total.item() == pytest.approx(0.0, abs=1e-12)
    # A uniformly scaled prediction is perfect for N-MPJPE but not for MPJPE.
    total, parts = pretrain_loss(1.3 * target, target)
    assert parts["n_mpjpe"].item() == pytest.approx(0.0, abs=1e-9)
    assert parts["mpjpe"].item() > 0.1
    expected = parts["mpjpe"] + 0.5 * parts["n_mpjpe"] + 20 * parts["velocity"]
    torch.testing.assert_close(total, expected)


def test_loss_weights_replace_the_defaults() -> None:
    pred, target = _pair()
    total, parts = pretrain_loss(pred, target, weights={"velocity": 2.0})
    torch.testing.assert_close(total, parts["mpjpe"] + 0.5 * parts["n_mpjpe"] + 2.0 * parts["velocity"])
    total, parts = finetune_loss(pred, target, weights={"tc": 0.0, "mpjve": 5.0})
    torch.testing.assert_close(total, parts["wmpjpe"] + 5.0 * parts["mpjve"])
    with pytest.raises(ValueError, match=r"unknown loss term\(s\) \['velocity'\]"):
        finetune_loss(pred, target, weights={"velocity": 1.0})


def test_losses_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        finetune_loss(torch.zeros(2, 3, 17, 3), torch.zeros(2, 3, 16, 3))
    with pytest.raises(ValueError, match=r"\(17,\)"):
        weighted_mpjpe(torch.zeros(2, 3, 16, 3), torch.zeros(2, 3, 16, 3))
