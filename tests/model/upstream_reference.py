"""An independent re-implementation of upstream MixSTE2's forward, on upstream layouts, for parity tests.

It follows upstream's structure literally: rearrange (b f) n c for spatial blocks, (b n) f c for temporal blocks,
post-norms after every block, positional embeddings added once. It shares no code with fastmixste.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn


class RefAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm(dim)
        self.attn = RefAttention(dim, num_heads, qkv_bias)
        self.norm2 = norm(dim)
        self.mlp = RefMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefMixSTE2(nn.Module):
    """Eval-mode upstream MixSTE2 (no dropout / drop path)."""

    def __init__(self, num_frame, num_joints, in_chans, embed_dim_ratio, depth, num_heads, mlp_ratio, qkv_bias):
        super().__init__()
        C = embed_dim_ratio
        self.block_depth = depth
        self.Spatial_patch_to_embedding = nn.Linear(in_chans, C)
        self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, num_joints, C))
        self.Temporal_pos_embed = nn.Parameter(torch.zeros(1, num_frame, C))
        self.STEblocks = nn.ModuleList([RefBlock(C, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.TTEblocks = nn.ModuleList([RefBlock(C, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.Spatial_norm = nn.LayerNorm(C, eps=1e-6)
        self.Temporal_norm = nn.LayerNorm(C, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, n, _ = x.shape
        # STE_forward
        x = x.reshape(b * f, n, -1)  # b f n c -> (b f) n c
        x = self.Spatial_patch_to_embedding(x)
        x = x + self.Spatial_pos_embed
        x = self.Spatial_norm(self.STEblocks[0](x))
        c = x.shape[-1]
        x = x.reshape(b, f, n, c).permute(0, 2, 1, 3).reshape(b * n, f, c)  # (b f) n c -> (b n) f c
        # TTE_forward
        x = x + self.Temporal_pos_embed
        x = self.Temporal_norm(self.TTEblocks[0](x))
        x = x.reshape(b, n, f, c).permute(0, 2, 1, 3)  # (b n) f c -> b f n c
        # ST_forward
        for i in range(1, self.block_depth):
            x = x.reshape(b * f, n, c)
            x = self.Spatial_norm(self.STEblocks[i](x))
            x = x.reshape(b, f, n, c).permute(0, 2, 1, 3).reshape(b * n, f, c)
            x = self.Temporal_norm(self.TTEblocks[i](x))
            x = x.reshape(b, n, f, c).permute(0, 2, 1, 3)
        return self.head(x).reshape(b, f, n, -1)
