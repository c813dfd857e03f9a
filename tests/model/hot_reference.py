"""An independent re-implementation of HoT's ``hot_mixste`` forward (Li et al., CVPR 2024), for parity tests.

Written from HoT's description and code structure, on its layouts: (b f) n c for spatial blocks, (b n) f c for
temporal blocks and for the recovery cross-attention, the pooled (b, f, c) features for the clustering. It shares no
code with fastmixste; the MixSTE blocks are those of ``upstream_reference``. Eval mode only (no drop path).

HoT perturbs the density with ``torch.rand(b, f) * 1e-6``; here the perturbation is an argument (``noise``, any
tensor broadcastable to (b, f)): ``None`` draws HoT's from the global RNG.
"""

from __future__ import annotations

import torch
from torch import nn

from .upstream_reference import RefBlock


def ref_dpc_knn(feats: torch.Tensor, keep: int, k: int, noise: torch.Tensor | None) -> torch.Tensor:
    """(b, f, c) -> (b, keep) indices of the density peaks, in the order of their scores (not sorted)."""
    b, f, c = feats.shape
    d = torch.cdist(feats, feats) / c**0.5  # (b, f, f)
    knn, _ = torch.topk(d, k=k, dim=-1, largest=False)
    rho = torch.exp(-(knn**2).mean(-1))  # (b, f)
    rho = rho + (torch.rand(b, f, dtype=rho.dtype) * 1e-6 if noise is None else noise)
    # delta_i: the distance from i to the nearest frame of higher density (for the peak: the largest distance)
    higher = (rho.unsqueeze(1) > rho.unsqueeze(2)).to(feats.dtype)  # [b, i, j] = rho_j > rho_i
    top = d.reshape(b, -1).max(dim=1).values.view(b, 1, 1)
    delta = (d * higher + top * (1 - higher)).min(dim=2).values
    return torch.topk(delta * rho, k=keep, dim=-1).indices


class RefCrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, a: torch.Tensor, b_: torch.Tensor, c_: torch.Tensor) -> torch.Tensor:
        B, Lq, C = a.shape
        Lk = b_.shape[1]
        h = self.num_heads

        def heads(t: torch.Tensor, n: int) -> torch.Tensor:
            return t.reshape(B, n, h, C // h).transpose(1, 2)  # (B, h, n, d)

        q, k, v = heads(self.linear_q(a), Lq), heads(self.linear_k(b_), Lk), heads(self.linear_v(c_), Lk)
        w = torch.softmax((q @ k.transpose(-1, -2)) * (C // h) ** -0.5, dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(B, Lq, C))


class RefHoTMixSTE(nn.Module):
    """Eval-mode HoT MixSTE: ``token_num`` frames kept before pair ``layer_index``, recovered by cross-attention."""

    def __init__(self, num_frame, num_joints, in_chans, embed_dim_ratio, depth, num_heads, mlp_ratio, token_num,
                 layer_index):
        super().__init__()
        C = embed_dim_ratio
        self.depth, self.token_num, self.layer_index = depth, token_num, layer_index
        self.pos_embed_token = nn.Parameter(torch.zeros(1, token_num, C))
        self.Spatial_patch_to_embedding = nn.Linear(in_chans, C)
        self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, num_joints, C))
        self.Temporal_pos_embed = nn.Parameter(torch.zeros(1, num_frame, C))
        self.STEblocks = nn.ModuleList([RefBlock(C, num_heads, mlp_ratio, True) for _ in range(depth)])
        self.TTEblocks = nn.ModuleList([RefBlock(C, num_heads, mlp_ratio, True) for _ in range(depth)])
        self.x_token = nn.Parameter(torch.zeros(1, num_frame, C))
        self.cross_attention = RefCrossAttention(C, num_heads)
        self.Spatial_norm = nn.LayerNorm(C, eps=1e-6)
        self.Temporal_norm = nn.LayerNorm(C, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, 3))
        self.last_index: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """(b, f, n, 2) -> (b, f, n, 3); ``index`` (b, token_num), when given, replaces the clustering's choice."""
        b, f, n, _ = x.shape
        x = self.Spatial_patch_to_embedding(x.reshape(b * f, n, -1)) + self.Spatial_pos_embed
        x = self.Spatial_norm(self.STEblocks[0](x))
        c = x.shape[-1]
        x = x.reshape(b, f, n, c).transpose(1, 2).reshape(b * n, f, c) + self.Temporal_pos_embed
        x = self.Temporal_norm(self.TTEblocks[0](x))
        x = x.reshape(b, n, f, c).transpose(1, 2)  # b f n c
        for i in range(1, self.depth):
            if i == self.layer_index:
                pooled = x.permute(0, 1, 3, 2).reshape(b, f * c, n).mean(-1).reshape(b, f, c)  # pool over joints
                if index is None:
                    index = torch.sort(ref_dpc_knn(pooled, self.token_num, 2, noise), dim=-1).values  # (b, keep)
                self.last_index = index
                f = self.token_num
                x = torch.gather(x, 1, index[:, :, None, None].expand(b, f, n, c))
                x = x + self.pos_embed_token.unsqueeze(2)  # the same position for every joint of a kept frame
            x = self.Spatial_norm(self.STEblocks[i](x.reshape(b * f, n, c)))
            x = x.reshape(b, f, n, c).transpose(1, 2).reshape(b * n, f, c)
            x = self.Temporal_norm(self.TTEblocks[i](x))
            x = x.reshape(b, n, f, c).transpose(1, 2)
        x = x.transpose(1, 2).reshape(b * n, f, c)  # (b n) f c
        query = self.x_token.expand(b * n, -1, -1)
        x = query + self.cross_attention(query, x, x)
        x = x.reshape(b, n, -1, c).transpose(1, 2)
        return self.head(x).reshape(b, -1, n, 3)
