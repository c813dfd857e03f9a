"""Activation recompute for training: which tensors a block keeps for backward and which it rebuilds.

One switch for every attention backend (``MixSTE(recompute=...)``, ``model.set_recompute(...)``):

- ``none``: autograd keeps what each op saves (the default).
- ``lean``: per block, keep the outputs of the expensive ops — the GEMMs (qkv, proj, fc1, fc2) and the attention
  cores (their outputs and softmax statistics) — and rebuild what is cheap in backward: the LayerNorm outputs that
  feed the qkv and fc1 Linears, and the GELU output that feeds fc2.

  - eager, sdpa, xformers: torch's selective activation checkpointing (``torch.utils.checkpoint`` with the policy
    below) replays everything else in backward (LayerNorms, GELU, casts, residual adds, DropPath and dropout masks
    from the restored RNG state), so no backward is written by hand.
  - triton (the fused block): nothing is replayed. Each LayerNorm and the Linear it feeds, and bias + GELU with
    fc2, run as one autograd Function (:mod:`fastmixste.model.fused`) that keeps neither h nor g; the fused backward
    kernels, which recompute the normalisation and the GELU anyway, write them beside the gradients in the same
    pass (``write_h`` of ``fastmixste.kernels.block``, ``write_g`` of ``fastmixste.kernels.gelu``), and the weight
    gradients are taken from them.
    The residual stream, the DropPath masks and everything else are kept as under ``none``.
- ``full`` (every backend): checkpoint each spatial-temporal block pair (STE_i, its shared norm, TTE_i, its shared
  norm); only the pair inputs are kept (one (B, T, N, C) fp32 tensor per pair under autocast) and the pair is
  recomputed in backward. A pair rather than a single block: the recompute costs the same (every block's forward
  runs once more), and half as many fp32 residual-stream tensors are kept.

Gradients do not change: the recomputed forward replays the same ops on the same inputs, and the RNG state is
restored before the replay, so DropPath draws the same masks (bitwise equal gradients on CPU for eager and sdpa).
The fused ``lean`` replays nothing: its gradients are those of ``none`` up to the order of fp32 sums (the weight
gradients come from the rebuilt h and g, the same values the forward wrote).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .config import RECOMPUTE_POLICIES

__all__ = ["RECOMPUTE_POLICIES", "check_recompute", "choose_recompute", "run_checkpointed"]


_aten = torch.ops.aten
# Outputs worth keeping under "lean": GEMMs (a recompute would cost as much as the forward GEMM) and the attention
# cores (outputs plus log-sum-exp or probabilities).
_SAVED_OPS = {
    _aten.mm.default,
    _aten.addmm.default,
    _aten._softmax.default,  # the eager core's probabilities (its score matmul is rebuilt from q, k)
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
    _aten._efficient_attention_forward.default,
    _aten._flash_attention_forward.default,
}
# Random ops (DropPath's rand, dropout's bernoulli) are always replayed, never cached: the replay restores the RNG
# state once at the start of the block pair, so every draw must happen again, in order, for the masks to match.
# Fused ops that only rebuild cheap elementwise/normalisation results: recomputed under "lean".
_RECOMPUTED_NAMESPACES = {"aten", "prims"}


def check_recompute(name: object) -> str:
    """Validate a recompute policy name; returns it."""
    if name not in RECOMPUTE_POLICIES:
        raise ValueError(f"unknown recompute policy {name!r}; expected one of {RECOMPUTE_POLICIES}")
    return str(name)


def _lean_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    if op in _SAVED_OPS:
        return CheckpointPolicy.MUST_SAVE
    namespace = getattr(op, "namespace", None)
    if namespace == "fastmixste":
        # the fused attention cores are kept; the fused block ops (residual, DropPath, LayerNorm, GELU) are cheap
        # memory-bound passes and are replayed (the model's triton path uses model.fused instead of this policy)
        return CheckpointPolicy.MUST_SAVE if "attention" in str(op) else CheckpointPolicy.PREFER_RECOMPUTE
    if namespace is not None and namespace not in _RECOMPUTED_NAMESPACES:
        return CheckpointPolicy.MUST_SAVE  # other libraries' attention ops (xformers)
    return CheckpointPolicy.PREFER_RECOMPUTE


def _lean_contexts() -> tuple[Any, Any]:
    return create_selective_checkpoint_contexts(_lean_policy)


def run_checkpointed(fn: Callable[..., Any], *tensors: torch.Tensor, policy: str) -> Any:
    """``fn(*tensors)`` under the recompute ``policy`` ("none" runs it as is); shapes are ``fn``'s."""
    if policy == "none" or not torch.is_grad_enabled():
        return fn(*tensors)
    context_fn = _lean_contexts if policy == "lean" else None
    kwargs = {"context_fn": context_fn} if context_fn is not None else {}
    return checkpoint(fn, *tensors, use_reentrant=False, preserve_rng_state=True, determinism_check="none", **kwargs)


def static_training_bytes(model: torch.nn.Module) -> int:
    """Bytes a training step holds whatever the batch: fp32 weights, gradients and Adam's two moments."""
    return 4 * sum(p.numel() * p.element_size() for p in model.parameters())


def measure_cuda_sequence_bytes(
    model: torch.nn.Module, num_frames: int, policy: str, amp_dtype: torch.dtype | None
) -> int:
    """Peak bytes one sequence adds to a CUDA training step (forward + backward at batch 1) under ``policy``.

    Measured with the allocator's peak statistics; weights and gradients present before the step are subtracted.
    """
    cfg = model.config
    device = next(model.parameters()).device
    previous = cfg.recompute
    model.set_recompute(policy)
    x = torch.randn(1, num_frames, cfg.num_joints, cfg.in_chans, device=device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        with torch.autocast("cuda", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(x)
        out.float().square().mean().backward()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    finally:
        model.zero_grad(set_to_none=True)
        model.set_recompute(previous)
    return int(peak)


def choose_recompute(
    per_sequence_bytes: Callable[[str], int],
    static_bytes: int,
    batch_size: int,
    free_bytes: int,
    headroom: float = 0.9,
) -> tuple[str, str]:
    """The cheapest policy whose modelled peak fits: static + batch_size x per-sequence peak <= headroom x free.

    ``per_sequence_bytes(policy)`` gives one sequence's peak (e.g. :func:`measure_cuda_sequence_bytes`). Returns
    (policy, the reason in one line); raises ValueError naming the largest batch that fits when none does.
    """
    budget = headroom * free_bytes
    gib = 2**30
    tried = []
    for policy in RECOMPUTE_POLICIES:
        per_seq = per_sequence_bytes(policy)
        need = static_bytes + batch_size * per_seq
        tried.append((policy, per_seq, need))
        if need <= budget:
            return policy, (
                f"recompute {policy}: batch {batch_size} x {per_seq / gib:.3f} GiB per sequence + "
                f"{static_bytes / gib:.2f} GiB weights/gradients/Adam = {need / gib:.2f} GiB, fits "
                f"{headroom:.0%} of {free_bytes / gib:.1f} GiB free"
                + ("" if policy == "none" else f" (cheaper policies need {tried[0][2] / gib:.2f} GiB or more)")
            )
    per_seq = tried[-1][1]
    fits = max(0, int((budget - static_bytes) // max(per_seq, 1)))
    raise ValueError(
        f"--recompute auto: batch {batch_size} does not fit even with recompute full "
        f"({tried[-1][2] / gib:.2f} GiB needed, {headroom:.0%} of {free_bytes / gib:.1f} GiB free); "
        f"the largest batch that fits with full is {fits}: pass --batch-size {fits} or less"
    )
