"""Activation recompute for training: which tensors a block keeps for backward and which it rebuilds.

One switch for every attention backend (``MixSTE(recompute=...)``, ``model.set_recompute(...)``):

- ``none``: autograd keeps what each op saves (the default).
- ``lean``: per block, keep the outputs of the expensive ops — the GEMMs (qkv, proj, fc1, fc2) and the attention
  cores (their outputs and softmax statistics) — and rebuild everything else in backward: LayerNorm outputs from
  their inputs, GELU from its input, casts, residual adds, DropPath and dropout masks (replayed from the RNG).
  Implemented with torch's selective activation checkpointing (``torch.utils.checkpoint`` with a policy), so no
  backward is written by hand.
- ``full``: checkpoint each spatial-temporal block pair (STE_i, its shared norm, TTE_i, its shared norm); only the
  pair inputs are kept (one (B, T, N, C) fp32 tensor per pair under autocast) and the pair is recomputed in backward.
  A pair rather than a single block: the recompute costs the same (every block's forward runs once more), and
  half as many fp32 residual-stream tensors are kept.

Gradients do not change: the recomputed forward replays the same ops on the same inputs, and the RNG state is
restored before the replay, so DropPath draws the same masks (bitwise equal gradients on CPU for eager and sdpa).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

__all__ = ["RECOMPUTE_POLICIES", "check_recompute", "run_checkpointed", "retained_bytes"]

RECOMPUTE_POLICIES: tuple[str, ...] = ("none", "lean", "full")

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
        # memory-bound passes and are replayed
        return CheckpointPolicy.MUST_SAVE if "attention" in str(op) else CheckpointPolicy.PREFER_RECOMPUTE
    if namespace is not None and namespace not in _RECOMPUTED_NAMESPACES:
        return CheckpointPolicy.MUST_SAVE  # other libraries' attention ops (xformers)
    return CheckpointPolicy.PREFER_RECOMPUTE


def _lean_contexts() -> tuple[Any, Any]:
    return create_selective_checkpoint_contexts(_lean_policy)


def run_checkpointed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, policy: str) -> torch.Tensor:
    """(…) -> (…): ``fn(x)`` under the recompute ``policy`` ("none" runs it as is)."""
    if policy == "none" or not torch.is_grad_enabled():
        return fn(x)
    context_fn = _lean_contexts if policy == "lean" else None
    kwargs = {"context_fn": context_fn} if context_fn is not None else {}
    return checkpoint(fn, x, use_reentrant=False, preserve_rng_state=True, determinism_check="none", **kwargs)


class _LiveTensors(TorchDispatchMode):
    """Remembers (weakly) every tensor an op creates, to see afterwards which ones autograd kept alive."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[weakref.ref] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.refs.append(weakref.ref(t))
        return out


def retained_bytes(fn: Callable[[], torch.Tensor], exclude: tuple[torch.Tensor, ...] = ()) -> int:
    """Bytes of the tensors that are still alive after ``fn()`` returns, other than its output and ``exclude``.

    These are what autograd (and activation checkpointing, whose stored tensors never pass through
    ``saved_tensors_hooks``) keeps for backward. Each storage counts once. Works on the meta device.
    """
    mode = _LiveTensors()
    with mode:
        out = fn()
    skip = {t.untyped_storage()._cdata for t in (out, *exclude)}
    seen: dict[int, int] = {}
    for ref in mode.refs:
        t = ref()
        if t is None:
            continue
        key = t.untyped_storage()._cdata
        if key not in skip:
            seen[key] = t.untyped_storage().nbytes()
    del out
    return sum(seen.values())
