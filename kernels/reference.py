"""Eager references of the fused ops: plain PyTorch on any device and dtype, and no triton import.

The ``eager`` attention backend runs :func:`attention_ref`, and the kernel tests compare every fused op with its
reference here (float64 for accuracy, the input dtype for the "at most 2x eager's error" bound). References of a
new op module go in this file, so the eager path keeps working where triton is not installed.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Axis",
    "attention_ref",
    "bias_gelu_ref",
    "cross_attention_ref",
    "residual_layernorm_ref",
    "spatial_attention_ref",
    "temporal_attention_ref",
]

Axis = Literal["spatial", "temporal"]


def attention_ref(
    qkv: torch.Tensor, num_heads: int, scale: float, axis: Axis, attn_drop: nn.Module | None = None
) -> torch.Tensor:
    """(B, T, N, 3*C) qkv -> (B, T, N, C): upstream MixSTE's attention math over N ("spatial") or T ("temporal").

    Channels of ``qkv`` are [q | k | v], each ``num_heads`` heads x D. Equivalent to upstream's
    ``(attn_drop(softmax(q @ k^T * scale)) @ v)`` on its (B*T, N, C) / (B*N, T, C) sequences.
    """
    B, T, N, C3 = qkv.shape
    if C3 % (3 * num_heads) != 0:
        raise ValueError(f"last dim of qkv must be 3 * num_heads * head_dim; got {C3}, num_heads={num_heads}")
    C = C3 // 3
    # Upstream layouts: spatial sequences are (B*T, N, C), temporal ones (B*N, T, C).
    if axis == "spatial":
        seq = qkv.reshape(B * T, N, C3)
    elif axis == "temporal":
        seq = qkv.permute(0, 2, 1, 3).reshape(B * N, T, C3)
    else:
        raise ValueError(f"axis must be 'spatial' or 'temporal', got {axis!r}")
    S, L, _ = seq.shape
    qkv_h = seq.reshape(S, L, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv_h[0], qkv_h[1], qkv_h[2]  # (S, H, L, D)
    attn = (q @ k.transpose(-2, -1)) * scale
    attn = attn.softmax(dim=-1)
    if attn_drop is not None:
        attn = attn_drop(attn)
    out = (attn @ v).transpose(1, 2).reshape(S, L, C)
    if axis == "spatial":
        return out.reshape(B, T, N, C)
    return out.reshape(B, N, T, C).permute(0, 2, 1, 3)


def _default_scale(qkv: torch.Tensor, num_heads: int, scale: float | None) -> float:
    return (qkv.shape[-1] // (3 * num_heads)) ** -0.5 if scale is None else scale


def spatial_attention_ref(qkv: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """(B, T, N, 3*C) qkv -> (B, T, N, C): reference of ``spatial_attention`` (attention over N); scale D**-0.5."""
    return attention_ref(qkv, num_heads, _default_scale(qkv, num_heads, scale), "spatial")


def temporal_attention_ref(qkv: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """(B, T, N, 3*C) qkv -> (B, T, N, C): reference of ``temporal_attention`` (attention over T); scale D**-0.5.

    Computes in the dtype of ``qkv`` (pass float64 for a high-precision reference).
    """
    return attention_ref(qkv, num_heads, _default_scale(qkv, num_heads, scale), "temporal")


def cross_attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float | None = None
) -> torch.Tensor:
    """q (B, Tq, N, C), k and v (B, Tk, N, C) -> (B, Tq, N, C): reference of ``cross_attention``, HoT's recovery
    cross-attention over T for every (batch, joint, head); scale D**-0.5 by default.

    q may have size 1 in dim 0 and/or 2 (broadcast over the batch and/or the joints, as HoT's learnable query
    tokens are). Computes in the inputs' dtype (pass float64 for a high-precision reference). Per (b, n) it is
    upstream's ``softmax(q @ k^T * scale) @ v`` on (H, Tq, D) x (H, Tk, D) heads.
    """
    B, Tk, N, C = k.shape
    if C % num_heads != 0:
        raise ValueError(f"last dim of k must be num_heads * head_dim; got {C}, num_heads={num_heads}")
    H, D, Tq = num_heads, C // num_heads, q.shape[1]
    scale = D**-0.5 if scale is None else scale

    def heads(t: torch.Tensor, L: int) -> torch.Tensor:  # (B, L, N, C) -> (B, N, H, L, D)
        return t.expand(B, L, N, C).reshape(B, L, N, H, D).permute(0, 2, 3, 1, 4)

    attn = (heads(q, Tq) @ heads(k, Tk).transpose(-2, -1) * scale).softmax(dim=-1)  # (B, N, H, Tq, Tk)
    return (attn @ heads(v, Tk)).permute(0, 3, 1, 2, 4).reshape(B, Tq, N, C)


def residual_layernorm_ref(
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
    y_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, C) r, y -> (res, h), both (B, T, N, C): reference of ``block.residual_layernorm``, the eager
    computation it fuses, as the MixSTE block and DropPath do it (any device). ``y_bias`` (C,): the bias of the
    Linear that made y, added to y first (in y's dtype promoted with y_bias's).

    ``res`` comes out in r's dtype promoted with float32 (float64 in stays float64, for references).
    """
    h_dtype = w1.dtype if h_dtype is None else h_dtype
    C = r.shape[-1]
    s = r.to(torch.promote_types(r.dtype, torch.float32))
    if y is not None and y_bias is not None:
        y = y + y_bias
    if y is not None:
        s = s + (y if mask is None else y.div(keep) * mask)
    a = F.layer_norm(s, (C,), w1.to(s.dtype), b1.to(s.dtype), eps)
    if w2 is None:
        return s, a.to(h_dtype)
    return a, F.layer_norm(a, (C,), w2.to(s.dtype), b2.to(s.dtype), eps).to(h_dtype)


def bias_gelu_ref(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., H) u, (H,) b -> (..., H): reference of ``block.bias_gelu``, the eager ``gelu(u + b)`` (exact erf) it
    fuses (any device and dtype)."""
    return F.gelu(u + b)
