"""Attention backends and the attention module shared by the spatial and temporal blocks.

Every block keeps its activations in (B, T, N, C). The qkv Linear gives (B, T, N, 3*C) with the upstream channel
order ([q | k | v], each H heads x D); an *attention core* then attends over N (``axis="spatial"``: the joints of
each frame) or over T (``axis="temporal"``: the frames of each joint) and returns (B, T, N, C) for the proj Linear.
Only the cores differ between backends:

- ``eager``: the upstream MixSTE math (explicit q @ k^T, softmax, @ v), the reference.
- ``sdpa``: :func:`torch.nn.functional.scaled_dot_product_attention`.
- ``xformers``: ``xformers.ops.memory_efficient_attention`` (optional, CUDA).
- ``triton``: the fused kernels of :mod:`fastmixste.kernels`, which read q, k, v through strides.
- ``auto``: triton on CUDA when it can run, else sdpa; ``FASTMIXSTE_ATTN_BACKEND`` overrides it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS: tuple[str, ...] = ("eager", "sdpa", "xformers", "triton")
ENV_BACKEND = "FASTMIXSTE_ATTN_BACKEND"
Axis = Literal["spatial", "temporal"]


class BackendUnavailableError(RuntimeError):
    """Raised when the requested attention backend cannot run; the message lists every backend and why."""


def _xformers_reasons(device: torch.device) -> list[str]:
    reasons = []
    if importlib.util.find_spec("xformers") is None:
        reasons.append("xformers is not installed (pip install 'fastmixste[xformers]')")
    if device.type != "cuda":
        reasons.append(f"xformers needs a CUDA device, got {device.type}")
    return reasons


def _triton_reasons(
    device: torch.device,
    dtype: torch.dtype,
    training: bool,
    head_dim: int | None,
    num_joints: int | None,
    attn_drop: float,
) -> list[str]:
    from fastmixste import kernels

    reasons = list(kernels.triton_unavailable_reasons(device, dtype))
    missing = [
        name
        for name in ("spatial", "temporal")
        if importlib.util.find_spec(f"fastmixste.kernels.{name}") is None
    ]
    if missing:
        reasons.append(f"fused kernels not available in this build: {', '.join(missing)}")
    bad_head = head_dim is not None and head_dim not in kernels.SUPPORTED_HEAD_DIMS
    bad_joints = num_joints is not None and num_joints > 64
    if bad_head:
        reasons.append(f"head_dim {head_dim} is not supported (fused kernels take {kernels.SUPPORTED_HEAD_DIMS})")
    if bad_joints:
        reasons.append(f"the spatial kernel takes at most 64 joints, got {num_joints}")
    probe_ok = kernels.triton_installed() and not (bad_head or bad_joints or missing)
    if probe_ok and head_dim is not None and num_joints is not None:
        # Shape/dtype limits of the spatial kernel's configurations (e.g. fp32 backward at large N x D would
        # spill), asked of the kernel module itself on a meta tensor.
        from fastmixste.kernels.spatial import unsupported_reasons

        probe = torch.empty(1, 1, num_joints, 3 * head_dim, device="meta", dtype=dtype)
        reasons += unsupported_reasons(probe, 1, backward=training)
    if training and attn_drop > 0:
        reasons.append(f"attention dropout (attn_drop_rate={attn_drop}) is not implemented in the fused kernels")
    return reasons


def available_backends(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    training: bool = False,
    *,
    head_dim: int | None = None,
    num_joints: int | None = None,
    attn_drop: float = 0.0,
) -> dict[str, list[str]]:
    """Every attention backend with the reasons it cannot run here (an empty list means it can).

    Example: ``available_backends("cpu")["triton"]`` ->
    ``["device is cpu: the Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 ..."]``.
    """
    device = torch.device(device)
    interpret = os.environ.get("TRITON_INTERPRET", "0")
    table = _cached_table(device, dtype, training, head_dim, num_joints, attn_drop, interpret)
    return {name: list(reasons) for name, reasons in table}


@functools.lru_cache(maxsize=64)
def _cached_table(
    device: torch.device,
    dtype: torch.dtype,
    training: bool,
    head_dim: int | None,
    num_joints: int | None,
    attn_drop: float,
    interpret: str,  # part of the key only: TRITON_INTERPRET changes what the triton backend can do
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # Resolved at every forward: the checks (imports, find_spec, a probe of the kernel's limits) run once per key.
    return (
        ("eager", ()),
        ("sdpa", ()),
        ("xformers", tuple(_xformers_reasons(device))),
        ("triton", tuple(_triton_reasons(device, dtype, training, head_dim, num_joints, attn_drop))),
    )


def _format_reasons(table: dict[str, list[str]]) -> str:
    lines = []
    for name, reasons in table.items():
        lines.append(f"  {name}: " + ("available" if not reasons else "; ".join(reasons)))
    return "\n".join(lines)


def check_backend_name(name: str) -> str:
    """Validate a backend name (``auto`` or one of :data:`BACKENDS`)."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected one of {('auto',) + BACKENDS}")
    return name


def resolve_backend(
    name: str,
    device: torch.device | str,
    dtype: torch.dtype,
    training: bool,
    **limits: object,
) -> str:
    """Turn a requested backend (possibly ``auto``) into one that can run, or raise BackendUnavailableError.

    ``auto`` picks triton on CUDA when it can run, else sdpa; the environment variable FASTMIXSTE_ATTN_BACKEND,
    when set, replaces ``auto``. ``limits`` are passed to :func:`available_backends` (head_dim, num_joints, attn_drop).
    """
    check_backend_name(name)
    device = torch.device(device)
    table = available_backends(device, dtype, training, **limits)
    source = "requested"
    if name == "auto" and os.environ.get(ENV_BACKEND):
        name = check_backend_name(os.environ[ENV_BACKEND])
        source = f"set by {ENV_BACKEND}"
    if name == "auto":
        return "triton" if device.type == "cuda" and not table["triton"] else "sdpa"
    if table[name]:
        raise BackendUnavailableError(
            f"attention backend {name!r} ({source}) cannot run on device={device.type}, dtype={dtype}, "
            f"training={training}. Backends here:\n{_format_reasons(table)}"
        )
    return name


# ----------------------------------------------------------------------------------------------------------------
# Attention cores: (B, T, N, 3*C) qkv -> (B, T, N, C)
# ----------------------------------------------------------------------------------------------------------------


def eager_attention_core(
    qkv: torch.Tensor, num_heads: int, scale: float, axis: Axis, attn_drop: nn.Module | None = None
) -> torch.Tensor:
    """(B, T, N, 3*C) qkv -> (B, T, N, C): upstream MixSTE's attention math over N ("spatial") or T ("temporal").

    The ``eager`` backend and the reference the fused kernels are tested against (any device and dtype).
    """
    # Upstream layouts: spatial sequences are (B*T, N, C), temporal ones (B*N, T, C).
    B, T, N, C3 = qkv.shape
    C = C3 // 3
    if axis == "spatial":
        seq = qkv.reshape(B * T, N, C3)
    else:
        seq = qkv.permute(0, 2, 1, 3).reshape(B * N, T, C3)
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


def _split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, N, 3*C) -> q, k, v, each a (B, T, N, H, D) strided view of ``qkv``.

    One ``unbind`` rather than three ``select``s: its backward stacks dq, dk, dv into one qkv-sized gradient, where
    each select's backward would write a zero-filled qkv-sized tensor and the three would then be added.
    """
    B, T, N, C3 = qkv.shape
    return qkv.view(B, T, N, 3, num_heads, C3 // (3 * num_heads)).unbind(3)


def _sdpa_core(qkv: torch.Tensor, num_heads: int, scale: float, axis: Axis, dropout_p: float) -> torch.Tensor:
    B, T, N, C3 = qkv.shape
    q, k, v = _split_heads(qkv, num_heads)
    if axis == "spatial":
        # (B, T, N, H, D) -> (B*T, H, N, D): a view, no copy
        q, k, v = (t.reshape(B * T, N, num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        return out.transpose(1, 2).reshape(B, T, N, C3 // 3)
    # (B, T, N, H, D) -> (B*N, H, T, D): a copy, but the fused SDPA kernels (flash, memory-efficient) take 4-D
    # inputs only; 5-D would fall back to the math path that materialises T x T scores. The copies' backward is a
    # view, so the gradient reaches qkv through the unbind's single stack.
    q, k, v = (t.permute(0, 2, 3, 1, 4).reshape(B * N, num_heads, T, -1) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)  # (B*N, H, T, D)
    return out.reshape(B, N, num_heads, T, -1).permute(0, 3, 1, 2, 4).reshape(B, T, N, C3 // 3)


def _xformers_core(qkv: torch.Tensor, num_heads: int, scale: float, axis: Axis, dropout_p: float) -> torch.Tensor:
    import xformers.ops as xops

    B, T, N, C3 = qkv.shape
    q, k, v = _split_heads(qkv, num_heads)
    if axis == "spatial":
        # xformers layout (batch, seq, heads, D): (B*T, N, H, D) is a view of qkv
        q, k, v = (t.reshape(B * T, N, num_heads, -1) for t in (q, k, v))
        out = xops.memory_efficient_attention(q, k, v, p=dropout_p, scale=scale)
        return out.reshape(B, T, N, C3 // 3)
    q, k, v = (t.permute(0, 2, 1, 3, 4).reshape(B * N, T, num_heads, -1) for t in (q, k, v))
    out = xops.memory_efficient_attention(q, k, v, p=dropout_p, scale=scale)  # (B*N, T, H, D)
    return out.reshape(B, N, T, C3 // 3).permute(0, 2, 1, 3)


def _triton_core(qkv: torch.Tensor, num_heads: int, scale: float, axis: Axis) -> torch.Tensor:
    if axis == "spatial":
        from fastmixste.kernels.spatial import spatial_attention

        return spatial_attention(qkv, num_heads, scale)
    from fastmixste.kernels.temporal import temporal_attention

    return temporal_attention(qkv, num_heads, scale)


class Attention(nn.Module):
    """Multi-head self-attention over one axis of a (B, T, N, C) tensor; parameters named as upstream.

    ``axis="spatial"`` attends over the N joints of each frame, ``axis="temporal"`` over the T frames of each joint.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        axis: Axis = "spatial",
    ) -> None:
        super().__init__()
        if axis not in ("spatial", "temporal"):
            raise ValueError(f"axis must be 'spatial' or 'temporal', got {axis!r}")
        self.num_heads = num_heads
        self.scale = float(qk_scale or (dim // num_heads) ** -0.5)
        self.axis: Axis = axis
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, backend: str = "eager") -> torch.Tensor:
        """(B, T, N, C) -> (B, T, N, C), attention over N or T according to ``self.axis``."""
        qkv = self.qkv(x)  # (B, T, N, 3C)
        dropout_p = self.attn_drop.p if self.training else 0.0
        if backend == "eager":
            out = eager_attention_core(qkv, self.num_heads, self.scale, self.axis, self.attn_drop)
        elif backend == "sdpa":
            out = _sdpa_core(qkv, self.num_heads, self.scale, self.axis, dropout_p)
        elif backend == "xformers":
            out = _xformers_core(qkv, self.num_heads, self.scale, self.axis, dropout_p)
        elif backend == "triton":
            out = _triton_core(qkv, self.num_heads, self.scale, self.axis)
        else:
            raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
        return self.proj_drop(self.proj(out))
