"""Training losses for MixSTE: the upstream fine-tuning loss and the pretraining loss (MotionBERT weights).

Every function takes ``pred`` and ``target`` of shape (B, T, J, 3) in the same unit (metres here) and returns a
scalar tensor that can be backpropagated. MPJPE, N-MPJPE and the velocity error are ``fastmixste.eval.metrics``' torch
paths; this module adds the upstream weighted terms and the two stage losses.
"""

from __future__ import annotations

import torch

from .metrics import mean_velocity_error, mpjpe, n_mpjpe

#: Upstream MixSTE per-joint weights for the weighted MPJPE and the temporal-consistency term (17 H36M joints).
UPSTREAM_JOINT_WEIGHTS: tuple[float, ...] = (1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4)

#: Pretraining loss weights: MPJPE + 0.5 * N-MPJPE + 20 * velocity (MotionBERT).
PRETRAIN_WEIGHTS: dict[str, float] = {"mpjpe": 1.0, "n_mpjpe": 0.5, "velocity": 20.0}
#: Fine-tuning loss weights: weighted MPJPE + 0.5 * temporal consistency + 2 * MPJVE (upstream MixSTE).
FINETUNE_WEIGHTS: dict[str, float] = {"wmpjpe": 1.0, "tc": 0.5, "mpjve": 2.0}


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if pred.dim() < 2 or pred.shape[-1] != 3:
        raise ValueError(f"{name}: expected (..., J, 3) tensors, got shape {tuple(pred.shape)}")


def _joint_weights(weights: torch.Tensor | None, num_joints: int, like: torch.Tensor) -> torch.Tensor:
    if weights is None:
        weights = torch.tensor(UPSTREAM_JOINT_WEIGHTS)
    weights = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if weights.shape != (num_joints,):
        raise ValueError(f"joint weights must have shape ({num_joints},), got {tuple(weights.shape)}")
    return weights


def weighted_mpjpe(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(..., J, 3), (..., J, 3), (J,) -> scalar: ``mean(w[j] * |pred - target|)`` (upstream MixSTE).

    ``weights`` defaults to :data:`UPSTREAM_JOINT_WEIGHTS`.
    """
    _check_pair(pred, target, "weighted_mpjpe")
    w = _joint_weights(weights, pred.shape[-2], pred)
    return (w * torch.linalg.vector_norm(pred - target, dim=-1)).mean()


def velocity_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, T, J, 3), (B, T, J, 3) -> scalar: MPJVE (first differences along T); 0 when T == 1.

    Both the upstream MPJVE training term and MotionBERT's velocity loss; ``metrics.mean_velocity_error`` with a
    graceful single-frame case (a 1-frame model has no velocity to learn).
    """
    _check_pair(pred, target, "velocity_error")
    if pred.dim() < 3 or pred.shape[-3] < 2:
        return pred.sum() * 0.0
    return mean_velocity_error(pred, target)


def temporal_consistency(pred: torch.Tensor, weights: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """(B, T, J, 3), (J,) -> scalar: ``mean(w[j] * (pred[t+1] - pred[t])**2)`` (upstream MixSTE).

    Penalises frame-to-frame motion of the prediction itself, weighted per joint; 0 when T == 1.
    """
    if pred.dim() < 2 or pred.shape[-1] != 3:
        raise ValueError(f"temporal_consistency: expected (..., J, 3), got shape {tuple(pred.shape)}")
    if pred.shape[dim] < 2:
        return pred.sum() * 0.0
    w = _joint_weights(weights, pred.shape[-2], pred)
    return (w[:, None] * pred.diff(dim=dim).pow(2)).mean()


def _weights(defaults: dict[str, float], weights: dict[str, float] | None, name: str) -> dict[str, float]:
    unknown = sorted(set(weights or {}) - set(defaults))
    if unknown:
        raise ValueError(f"{name}: unknown loss term(s) {unknown}; expected some of {sorted(defaults)}")
    return {**defaults, **(weights or {})}


def finetune_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: dict[str, float] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B, T, J, 3), (B, T, J, 3) -> (total, parts): the upstream MixSTE loss.

    total = weighted_mpjpe + 0.5 * temporal_consistency + 2.0 * mpjve (``weights`` replaces any of those three,
    keyed as :data:`FINETUNE_WEIGHTS`); ``parts`` holds the unweighted terms (detached) under the same keys.
    """
    w = _weights(FINETUNE_WEIGHTS, weights, "finetune_loss")
    parts = {
        "wmpjpe": weighted_mpjpe(pred, target),
        "tc": temporal_consistency(pred),
        "mpjve": velocity_error(pred, target),
    }
    total = sum(w[k] * v for k, v in parts.items())
    return total, {k: v.detach() for k, v in parts.items()}


def pretrain_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: dict[str, float] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B, T, J, 3), (B, T, J, 3) -> (total, parts): MPJPE + 0.5 * N-MPJPE + 20 * velocity (MotionBERT).

    ``weights`` replaces any of those weights (keys of :data:`PRETRAIN_WEIGHTS`); ``parts`` holds the unweighted
    terms (detached) under the same keys.
    """
    w = _weights(PRETRAIN_WEIGHTS, weights, "pretrain_loss")
    parts = {
        "mpjpe": mpjpe(pred, target),
        "n_mpjpe": n_mpjpe(pred, target),
        "velocity": velocity_error(pred, target),
    }
    total = sum(w[k] * v for k, v in parts.items())
    return total, {k: v.detach() for k, v in parts.items()}
