"""Hourglass token pruning for MixSTE (HoT: Li et al., "Hourglass Tokenizer for Efficient Transformer-Based 3D
Human Pose Estimation", CVPR 2024), weight-compatible with HoT's ``hot_mixste`` checkpoints.

Before block pair ``prune_at`` the model keeps ``token_num`` representative frames of the F it was given: the
per-frame features, averaged over the joints, are clustered by DPC-kNN (density peaks with k = 2 nearest
neighbours) and the cluster centres, sorted in time, are gathered; a learnable ``pos_embed_token`` (1, token_num, C)
is added. The later pairs run on those frames only. After the last pair one cross-attention recovers every frame:
queries from a learnable ``x_token`` (1, num_frame, C) (the same for every sequence and joint), keys and values from
the pruned features; its output is added to ``x_token`` and goes to the regression head.

Tie-break. HoT adds ``torch.rand(B, F) * 1e-6`` to the density so that no two frames have the same density; that
makes its output depend on the global RNG. Here the same-sized perturbation is a fixed pattern,
``1e-6 * frac(f * 0.618...)`` for frame f (:func:`tie_break_noise`): outputs depend on the input only (the same in
training and evaluation, on every device, and the global RNG is not consumed). The selection equals HoT's whenever
HoT's random draw does not reorder two densities or two scores closer than 1e-6; given the same noise tensor
(``noise=``) the two are the same computation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TIE_BREAK", "CrossAttention", "cluster_dpc_knn", "select_frames", "tie_break_noise"]

#: Size of the density perturbation that breaks ties (HoT's: ``torch.rand(...) * 1e-6``).
TIE_BREAK = 1e-6
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # consecutive frames get well-spread, distinct offsets


def tie_break_noise(num_frames: int, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """num_frames -> (num_frames,) values in [0, 1e-6), all distinct: ``1e-6 * frac(f * (sqrt(5) - 1) / 2)``."""
    f = torch.arange(num_frames, device=device, dtype=torch.float64)
    return (TIE_BREAK * torch.frac(f * _GOLDEN)).to(dtype)


@torch.no_grad()
def cluster_dpc_knn(x: torch.Tensor, cluster_num: int, k: int = 2, noise: torch.Tensor | None = None) -> torch.Tensor:
    """(B, F, C) frame features -> (B, cluster_num) indices of the cluster centres, ascending (int64).

    DPC-kNN as HoT's ``cluster_dpc_knn`` followed by its sort: distances ``cdist(x, x) / sqrt(C)``; density
    ``exp(-mean of the squared distances to the k nearest frames, itself included)`` plus ``noise`` (broadcast to
    (B, F); default :func:`tie_break_noise`); for each frame the distance to the nearest denser frame (the largest
    distance in the sequence for the densest); score = that distance * density; the ``cluster_num`` best scores.
    Computed in float32 (or float64 for float64 input), without gradient.
    """
    if x.dim() != 3:
        raise ValueError(f"cluster_dpc_knn: x must be (B, F, C), got shape {tuple(x.shape)}")
    B, F, C = x.shape
    if not 1 <= cluster_num <= F:
        raise ValueError(f"cluster_dpc_knn: cluster_num must be in 1..F ({F}), got {cluster_num}")
    if not 1 <= k <= F:
        raise ValueError(f"cluster_dpc_knn: k must be in 1..F ({F}), got {k}")
    x = x if x.dtype == torch.float64 else x.float()
    dist = torch.cdist(x, x) / (C**0.5)  # (B, F, F)
    nearest = dist.topk(k, dim=-1, largest=False).values  # (B, F, k)
    density = (-(nearest**2).mean(dim=-1)).exp()  # (B, F)
    density = density + (tie_break_noise(F, x.device, x.dtype) if noise is None else noise.to(x.dtype))
    denser = density[:, None, :] > density[:, :, None]  # [b, i, j]: frame j is denser than frame i
    far = dist.flatten(1).amax(dim=-1)[:, None, None]  # (B, 1, 1)
    parent = torch.where(denser, dist, far).amin(dim=-1)  # (B, F)
    index = (parent * density).topk(cluster_num, dim=-1).indices
    return index.sort(dim=-1).values


def select_frames(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, F, N, C) x, (B, K) frame indices -> (B, K, N, C): ``x[b, index[b]]`` for every b (differentiable in x)."""
    batch = torch.arange(x.shape[0], device=x.device).unsqueeze(-1)  # (B, 1)
    return x[batch, index]


class CrossAttention(nn.Module):
    """HoT's recovery cross-attention, parameter names kept (``linear_q``, ``linear_k``, ``linear_v``, ``proj``).

    ``forward(query, x)``: (1, Tq, C) learnable queries shared by every sequence and joint, (B, Tk, N, C) keys/values
    -> (B, Tq, N, C); per joint, softmax over the Tk frames of x. The core goes through
    :func:`fastmixste.model.attention.cross_attention_core` (eager / sdpa / triton).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_scale: float | None, attn_drop: float,
                 proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = float(qk_scale or (dim // num_heads) ** -0.5)
        self.linear_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.linear_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.linear_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, query: torch.Tensor, x: torch.Tensor, backend: str = "eager") -> torch.Tensor:
        """(1, Tq, C) query, (B, Tk, N, C) x -> (B, Tq, N, C)."""
        from .attention import cross_attention_core

        B, _, N, C = x.shape
        Tq = query.shape[1]
        q = self.linear_q(query).unsqueeze(2)  # (1, Tq, 1, C): one projection for every sequence and joint
        if backend == "triton":
            # The fused core reads q once per program and sums its gradient over B and N in-kernel.
            # k and v from one GEMM over the packed weights: x is read once; the core takes the column slices.
            w = torch.cat([self.linear_k.weight, self.linear_v.weight])
            b = None if self.linear_k.bias is None else torch.cat([self.linear_k.bias, self.linear_v.bias])
            kv = nn.functional.linear(x, w, b)  # (B, Tk, N, 2C)
            k, v = kv[..., :C], kv[..., C:]
        else:
            q = q.expand(B, Tq, N, C)  # a broadcast view (stride 0 over B and N)
            k, v = self.linear_k(x), self.linear_v(x)
        out = cross_attention_core(q, k, v, self.num_heads, self.scale, backend, self.attn_drop)
        return self.proj_drop(self.proj(out))
