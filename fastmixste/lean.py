"""Recompute ``lean`` on the fused (``triton``) backend: the GEMM inputs that the block kernels rebuild in backward.

Under ``lean`` a block keeps neither the LayerNorm outputs h that feed the qkv and fc1 Linears nor the GELU output
g that feeds fc2. Where torch's selective checkpointing would replay the forward ops to rebuild them, here the
backward kernels that run anyway rebuild them in the same pass: ``fastmixste::residual_layernorm_backward`` with
``write_h`` writes h beside dr, dy and the LayerNorm weight gradients (it recomputes the normalisation from the
saved rows regardless), and ``fastmixste::bias_gelu_backward`` with ``write_g`` writes g beside du and the bias
gradient. Two autograd Functions pair each op with the Linear that consumes its output:

- :func:`norm_linear`: ``residual_layernorm`` -> ``F.linear(h, W, b)``; keeps what the norm op keeps (the fp32
  residual rows, the DropPath mask, the LayerNorm parameters) and the Linear's weight, not h.
- :func:`gelu_linear`: ``bias_gelu`` -> ``F.linear(g, W, b)``; keeps u (the fc1 output without its bias), not g.

Their backward computes the Linear's input gradient first (dh = grad_out @ W), runs the fused backward with the
rebuild flag, then the weight gradient from the rebuilt input (dW = grad_out^T @ h). The GEMMs are aten matmuls
(visible to FLOP and byte counters), the same ones autograd would run for ``F.linear``.

Precision. Under autocast the Linear computes in the autocast dtype: the weight (and bias) are cast to h's dtype
here, as autocast would cast them, and the gradients are returned in the parameters' own dtype (fp32 master
weights), as autocast's cast backward does. Without autocast, h comes in the parameters' dtype (fp32, or a .half()
model's fp16) and nothing is cast. The rebuilt h and g are what the forward wrote: the same arithmetic on the same
saved values (bitwise in the Triton interpreter; on a GPU wherever the forward and backward kernels reduce a row in
the same order, see ``kernels/block.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fastmixste.kernels import block as _block

__all__ = ["gelu_linear", "norm_linear"]


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None or t.dtype == dtype else t.to(dtype)


def _weight_grads(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, needs: tuple[bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(..., O) grad_out, (..., I) Linear input -> (O, I) dW, (O,) db in the parameters' dtypes (None if unneeded)."""
    g2 = grad_out.reshape(-1, grad_out.shape[-1])
    dw = (g2.t() @ x.reshape(-1, x.shape[-1])).to(weight.dtype) if needs[0] else None
    # The aten sum itself, as autograd's Linear backward runs it (in grad_out's dtype): autocast is off in backward.
    db = torch.ops.aten.sum.dim_IntList(g2, [0]).to(bias.dtype) if bias is not None and needs[1] else None
    return dw, db


class _NormLinear(torch.autograd.Function):
    """(res, out) = (residual_layernorm(...)[0], F.linear(residual_layernorm(...)[1], weight, bias)); h not kept."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, bias: torch.Tensor | None, *norm: Any) -> tuple[torch.Tensor, ...]:
        # norm: the arguments of fastmixste::residual_layernorm (r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype)
        h_dtype = norm[-1]
        res, h = torch.ops.fastmixste.residual_layernorm(*norm)
        out = F.linear(h, weight.to(h_dtype), None if bias is None else bias.to(h_dtype))
        # What the norm op keeps (kernels/block.py), and the Linear's parameters; not h.
        ctx.save_for_backward(*_block._norm_saved(ctx, norm, res), weight, bias)
        return res, out

    @staticmethod
    def backward(ctx: Any, grad_res: torch.Tensor | None, grad_out: torch.Tensor | None) -> tuple:
        *saved, weight, bias = ctx.saved_tensors
        x = saved[0]
        if grad_out is None:
            grad_out = torch.zeros((), dtype=ctx.h_dtype, device=x.device).expand(*x.shape[:-1], weight.shape[0])
        grad_out = grad_out.to(ctx.h_dtype)
        grad_h = grad_out @ weight.to(ctx.h_dtype)  # (B, T, N, O) @ (O, C): the Linear's input gradient
        norm_grads, h = _block._norm_grads(ctx, tuple(saved), grad_res, grad_h, write_h=True)
        dw, db = _weight_grads(grad_out, h, weight, bias, ctx.needs_input_grad[:2])
        return (dw, db, *norm_grads)


class _GeluLinear(torch.autograd.Function):
    """out = F.linear(bias_gelu(u, b), weight, bias); g not kept."""

    @staticmethod
    def forward(
        ctx: Any, u: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        g = torch.ops.fastmixste.bias_gelu(u, b)
        out = F.linear(g, weight.to(g.dtype), None if bias is None else bias.to(g.dtype))
        ctx.save_for_backward(u, b, weight, bias)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        u, b, weight, bias = ctx.saved_tensors
        grad_out = grad_out.to(u.dtype)
        grad_g = grad_out @ weight.to(u.dtype)  # (..., O) @ (O, H)
        du, db, g = torch.ops.fastmixste.bias_gelu_backward(grad_g, u, b, True)
        dw, dbias = _weight_grads(grad_out, g, weight, bias, ctx.needs_input_grad[2:4])
        return du, db, dw, dbias


def norm_linear(
    r: torch.Tensor,
    y: torch.Tensor | None,
    mask: torch.Tensor | None,
    keep: float,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor | None = None,
    b2: torch.Tensor | None = None,
    eps: float = 1e-6,
    h_dtype: torch.dtype | None = None,
    *,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, C) r, y -> (res (B, T, N, C) float32, out (B, T, N, O) in ``h_dtype``), h not kept for backward.

    Arguments as :func:`fastmixste.kernels.block.residual_layernorm` (mask broadcastable to (B, T, N, 1); h_dtype
    defaults to w1's dtype), plus the consuming Linear's (O, C) ``weight`` and (O,) ``bias`` (or None). Equivalent
    to::

        res, h = residual_layernorm(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype)
        return res, F.linear(h, weight.to(h_dtype), bias.to(h_dtype))  # what autocast runs

    with the gradients of the parameters in their own dtypes.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != r.shape[-1]:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"norm_linear: weight must be (out_features, {r.shape[-1]}), got {got}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"norm_linear: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    norm = _block._norm_arguments(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, op="norm_linear")
    return _NormLinear.apply(weight, bias, *norm)


def gelu_linear(u: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(..., H) u (fc1's output without its bias), (H,) b -> (..., O) ``F.linear(gelu(u + b), weight, bias)``, in
    u's dtype, g not kept for backward. ``weight`` (O, H) and ``bias`` are cast to u's dtype as autocast would; their
    gradients come back in their own dtypes."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != u.shape[-1]:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"gelu_linear: weight must be (out_features, {u.shape[-1]}), got {got}")
    _block._check_gelu(u, b)
    return _GeluLinear.apply(u, b, weight, bias)
