"""Attention backends and the attention module shared by the spatial and temporal blocks.

Every block keeps its activations in (B, T, N, C). The qkv Linear gives (B, T, N, 3*C) with the upstream channel
order ([q | k | v], each H heads x D); an *attention core* then attends over N (``axis="spatial"``: the joints of
each frame) or over T (``axis="temporal"``: the frames of each joint) and returns (B, T, N, C) for the proj Linear.
Only the cores differ between backends:

- ``eager``: the upstream MixSTE math (explicit q @ k^T, softmax, @ v), the reference
  (:func:`fastmixste.kernels.reference.attention_ref`, which imports no triton).
- ``sdpa``: :func:`torch.nn.functional.scaled_dot_product_attention`.
- ``xformers``: ``xformers.ops.memory_efficient_attention`` (optional, CUDA).
- ``triton``: the fused kernels of :mod:`fastmixste.kernels`, which read q, k, v through strides.
- ``auto``: triton on CUDA when it can run, else sdpa; ``FASTMIXSTE_ATTN_BACKEND`` overrides it.

Whether triton can run is asked of the fused ops themselves (their ``unsupported_reasons``); no kernel limit is
repeated here. ``MixSTE`` applies :func:`resolve_backend` in eager mode and, under torch.compile, while tracing.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..io.cli import UserFacingError
from ..kernels.reference import Axis, attention_ref
from .config import BACKENDS

ENV_BACKEND = "FASTMIXSTE_ATTN_BACKEND"


class BackendUnavailableError(RuntimeError, UserFacingError):
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
    drop: float = 0.0,
    dim: int | None = None,
) -> list[str]:
    from .. import kernels

    reasons = list(kernels.triton_unavailable_reasons(device, dtype))
    # The ops' own limits, asked on a meta tensor of the model's shape; only where the kernels could run at all
    # (importing them imports triton, which the eager/sdpa paths never need).
    could_run = device.type in ("cuda", "meta") or kernels.interpreter_active()
    if kernels.triton_installed() and could_run and head_dim is not None and num_joints is not None:
        probe = torch.empty(1, 1, num_joints, 3 * head_dim, device="meta", dtype=dtype)
        for module in kernels.ATTENTION_CORE_OPS:  # dispatch asks each attention core whether it can run
            try:
                op = importlib.import_module(f"{kernels.__name__}.{module}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{kernels.__name__}.{module}":
                    raise
                reasons.append(f"fused kernel {module!r} is not available in this build")
                continue
            reasons += [r for r in op.unsupported_reasons(probe, 1, backward=training) if r not in reasons]
        if dim is not None:
            # the fused block (residual + DropPath + LayerNorm, bias + GELU) has limits of its own (channel count)
            block = importlib.import_module(f"{kernels.__name__}.block")
            reasons += block.unsupported_reasons(torch.empty(1, 1, 1, dim, device="meta", dtype=dtype))
    if training and attn_drop > 0:
        reasons.append(f"attention dropout (attn_drop_rate={attn_drop}) is not implemented in the fused kernels")
    if training and drop > 0:
        reasons.append(f"dropout in the block (drop_rate={drop}) is not implemented in the fused block kernels")
    return reasons


def available_backends(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    training: bool = False,
    *,
    head_dim: int | None = None,
    num_joints: int | None = None,
    attn_drop: float = 0.0,
    drop: float = 0.0,
    dim: int | None = None,
) -> dict[str, list[str]]:
    """Every attention backend with the reasons it cannot run here (an empty list means it can).

    Example: ``available_backends("cpu")["triton"]`` ->
    ``["device is cpu: the Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 ..."]``.
    """
    device = torch.device(device)
    interpret = os.environ.get("TRITON_INTERPRET", "0")
    table = _cached_table(device, dtype, training, head_dim, num_joints, attn_drop, interpret, drop, dim)
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
    drop: float = 0.0,
    dim: int | None = None,
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # Resolved at every forward: the checks (imports, find_spec, a probe of the kernel's limits) run once per key.
    return (
        ("eager", ()),
        ("sdpa", ()),
        ("xformers", tuple(_xformers_reasons(device))),
        ("triton", tuple(_triton_reasons(device, dtype, training, head_dim, num_joints, attn_drop, drop, dim))),
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
    when set, replaces ``auto``. ``limits`` are passed to :func:`available_backends` (head_dim, num_joints, attn_drop,
    drop, dim).
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


#: The ``eager`` backend's core: upstream MixSTE's attention math, the reference the fused kernels are tested against
#: ((B, T, N, 3*C) qkv, num_heads, scale, axis, attn_drop module or None -> (B, T, N, C); any device and dtype).
eager_attention_core = attention_ref


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
    # Imported here: the op modules import triton, which only this backend needs.
    if axis == "spatial":
        from ..kernels.spatial import spatial_attention

        return spatial_attention(qkv, num_heads, scale)
    from ..kernels.temporal import temporal_attention

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
        return self.attend(self.qkv(x), backend)

    def attend(self, qkv: torch.Tensor, backend: str = "eager", with_bias: bool = True) -> torch.Tensor:
        """(B, T, N, 3C) output of ``self.qkv`` -> (B, T, N, C): the attention core and the output projection.

        The fused block computes the qkv projection itself (``model.fused.norm_linear`` under recompute "lean") and
        enters here. ``with_bias`` False: the projection without its bias, which the caller adds (the fused block
        adds it in its next kernel; the same math while ``proj_drop`` is off, which the triton backend requires in
        training).
        """
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
        return self.proj_drop(self.proj(out) if with_bias else F.linear(out, self.proj.weight))


# ----------------------------------------------------------------------------------------------------------------
# Cross-attention core (HoT's recovery): q (B, Tq, N, C), k, v (B, Tk, N, C) -> (B, Tq, N, C), over the T axis
# ----------------------------------------------------------------------------------------------------------------


def eager_cross_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float, attn_drop: nn.Module | None = None
) -> torch.Tensor:
    """(B, Tq, N, C) q, (B, Tk, N, C) k, v -> (B, Tq, N, C): per joint n and head, softmax(q k^T * scale) v over the
    Tk frames (HoT's Cross_Attention math). q may be a broadcast view (stride 0 over B and N), k, v column slices."""
    B, Tq, N, C = q.shape
    Tk = k.shape[1]
    D = C // num_heads
    qh = q.reshape(B, Tq, N, num_heads, D).permute(0, 2, 3, 1, 4)  # (B, N, H, Tq, D)
    kh = k.reshape(B, Tk, N, num_heads, D).permute(0, 2, 3, 1, 4)
    vh = v.reshape(B, Tk, N, num_heads, D).permute(0, 2, 3, 1, 4)
    attn = ((qh @ kh.transpose(-2, -1)) * scale).softmax(dim=-1)  # (B, N, H, Tq, Tk)
    if attn_drop is not None:
        attn = attn_drop(attn)
    return (attn @ vh).permute(0, 3, 1, 2, 4).reshape(B, Tq, N, C)


def _sdpa_cross(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float,
                dropout_p: float) -> torch.Tensor:
    B, Tq, N, C = q.shape
    Tk = k.shape[1]
    # (B, T, N, H, D) -> (B*N, H, T, D); q's broadcast stays a view (its B and N strides are 0)
    qh = q.reshape(B, Tq, N, num_heads, -1).permute(0, 2, 3, 1, 4).reshape(B * N, num_heads, Tq, -1)
    kh, vh = (t.reshape(B, Tk, N, num_heads, -1).permute(0, 2, 3, 1, 4).reshape(B * N, num_heads, Tk, -1)
              for t in (k, v))  # fmt: skip
    out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=dropout_p, scale=scale)  # (B*N, H, Tq, D)
    return out.reshape(B, N, num_heads, Tq, -1).permute(0, 3, 1, 2, 4).reshape(B, Tq, N, C)


def cross_attention_core(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float, backend: str,
    attn_drop: nn.Dropout | None = None,
) -> torch.Tensor:
    """(B, Tq, N, C) q, (B, Tk, N, C) k, v -> (B, Tq, N, C) through ``backend``'s cross-attention core.

    ``eager``: :func:`eager_cross_attention`; ``sdpa`` (and ``xformers``, which has no separate path for this one
    op): F.scaled_dot_product_attention on (B*N, heads, T, head_dim) views; ``triton``: the fused
    ``fastmixste.kernels.cross_attention`` (no attention dropout), which also takes q with size 1 in dims 0 and 2
    (the other backends take q expanded to (B, Tq, N, C)). Equivalent to::

        softmax(q_n,h @ k_n,h^T * scale) @ v_n,h  for every batch row, joint n and head h
    """
    dropout_p = attn_drop.p if attn_drop is not None and attn_drop.training else 0.0
    if backend == "eager":
        return eager_cross_attention(q, k, v, num_heads, scale, attn_drop)
    if backend in ("sdpa", "xformers"):
        return _sdpa_cross(q, k, v, num_heads, scale, dropout_p)
    if backend == "triton":
        if dropout_p > 0:
            raise BackendUnavailableError(f"attention dropout (p={dropout_p}) is not implemented in the fused "
                                          f"cross-attention")
        try:
            from ..kernels import cross_attention
        except ImportError as exc:
            raise BackendUnavailableError("the fused cross-attention (fastmixste.kernels.cross_attention) is not "
                                          "available in this build") from exc
        return cross_attention(q, k, v, num_heads, scale)  # q may keep size 1 in dims 0 and 2 (summed dq in-kernel)
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
