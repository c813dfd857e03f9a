"""Fused temporal attention: attention over the T frames of every (batch, joint, head), forward and backward.

Layout (STYLE.md habit 3): ``qkv`` is the qkv Linear's output, (B, T, N, 3*C) with channels [q | k | v], each H
heads x D. The kernels read each joint's sequence straight out of it through strides (the stride along T is
N*3*C) and write ``o`` in (B, T, N, C), the layout the proj Linear reads: the upstream
``b f n c -> (b n) f c`` rearranges disappear.

Split (STYLE.md habit 1):
``_temporal_attn_fwd_kernel`` / ``_temporal_attn_bwd_dq_kernel`` / ``_temporal_attn_bwd_dkdv_kernel`` (jit)
-> ``temporal_attn_fwd`` / ``temporal_attn_bwd`` (launchers)
-> ``fastmixste::temporal_attention`` / ``fastmixste::temporal_attention_backward`` (registered ops, autograd)
-> :func:`temporal_attention` (functional). :func:`temporal_attention_ref` is the eager reference.

Forward is flash-style (online softmax in fp32, masked tails) and saves qkv, o and the fp32 log-sum-exp per row.
Backward recomputes the probabilities tile by tile: one program per query block computes delta = rowsum(dO * O)
and dQ, one program per key block loops over query blocks for dK and dV. No atomics, so gradients are bit-identical
run to run, and the only fp32 buffers are the (B, N, H, T) lse and delta rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton
from torch.utils.flop_counter import register_flop_formula

from ._common import SUPPORTED_HEAD_DIMS, KernelCase, check_qkv, triton_unavailable_reasons

__all__ = [
    "temporal_attention",
    "temporal_attention_ref",
    "temporal_attn_fwd",
    "temporal_attn_bwd",
    "report_cases",
]

_OP = "temporal_attention"
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


# ----------------------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------------------


@triton.jit
def _temporal_attn_fwd_kernel(
    QKV,
    O,
    LSE,
    stride_qkv_b,
    stride_qkv_t,
    stride_qkv_n,
    stride_o_b,
    stride_o_t,
    stride_o_n,
    T,
    N,
    H,
    scale_log2e,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Every dot has M, N, K >= 16: the interpreter accepts less, the GPU compiler does not.
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and D >= 16)
    # Grid axis 0 = flattened (b, n, h, query block); its limit is 2^31 - 1 (axes 1 and 2 stop at 65535).
    pid = tl.program_id(0)
    num_m = tl.cdiv(T, BLOCK_M)
    i_m = pid % num_m
    i_bnh = pid // num_m
    i_h = i_bnh % H
    i_bn = i_bnh // H
    i_n = i_bn % N
    i_b = i_bn // N
    C = H * D

    # Batch offsets in int64: B*T*N*3C passes 2^31 at large batches; offsets within one batch element stay int32.
    p_q = QKV + i_b.to(tl.int64) * stride_qkv_b + i_n * stride_qkv_n + i_h * D
    p_k = p_q + C
    p_v = p_q + 2 * C
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, D)
    m_m = o_m < T

    b_q = tl.load(p_q + o_m[:, None] * stride_qkv_t + o_d[None, :], mask=m_m[:, None], other=0.0)
    b_m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (log2 units)
    b_l = tl.zeros([BLOCK_M], dtype=tl.float32)  # running row sum of exp2
    b_acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    for start_n in range(0, T, BLOCK_N):
        o_n = start_n + tl.arange(0, BLOCK_N)
        m_n = o_n < T
        b_k = tl.load(p_k + o_n[:, None] * stride_qkv_t + o_d[None, :], mask=m_n[:, None], other=0.0)
        b_v = tl.load(p_v + o_n[:, None] * stride_qkv_t + o_d[None, :], mask=m_n[:, None], other=0.0)
        # Scores in log2 units so the softmax uses exp2; keys past T get -inf.
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION) * scale_log2e
        b_s = tl.where(m_n[None, :], b_s, float("-inf"))
        b_m_new = tl.maximum(b_m, tl.max(b_s, 1))
        # A row with every key masked keeps m = -inf; shifting by 0 instead keeps exp2 away from (-inf) - (-inf).
        b_shift = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
        b_alpha = tl.exp2(b_m - b_shift)
        b_p = tl.exp2(b_s - b_shift[:, None])
        b_l = b_l * b_alpha + tl.sum(b_p, 1)
        b_acc = b_acc * b_alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)
        b_m = b_m_new

    b_l_safe = tl.where(b_l > 0.0, b_l, 1.0)
    b_o = b_acc / b_l_safe[:, None]
    p_o = O + i_b.to(tl.int64) * stride_o_b + i_n * stride_o_n + i_h * D
    tl.store(p_o + o_m[:, None] * stride_o_t + o_d[None, :], b_o.to(O.dtype.element_ty), mask=m_m[:, None])
    # Natural-log lse per row, (B, N, H, T) contiguous.
    b_lse = (b_m + tl.log2(b_l_safe)) * 0.6931471805599453
    tl.store(LSE + i_bnh.to(tl.int64) * T + o_m, b_lse, mask=m_m)


@triton.jit
def _temporal_attn_bwd_dq_kernel(
    QKV,
    O,
    DO,
    LSE,
    DELTA,
    DQKV,
    stride_qkv_b,
    stride_qkv_t,
    stride_qkv_n,
    stride_o_b,
    stride_o_t,
    stride_o_n,
    stride_do_b,
    stride_do_t,
    stride_do_n,
    stride_do_d,
    stride_dqkv_b,
    stride_dqkv_t,
    stride_dqkv_n,
    T,
    N,
    H,
    scale,
    scale_log2e,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One program per (b, n, h, query block): delta = rowsum(dO * O), then dQ looping over key blocks."""
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and D >= 16)
    pid = tl.program_id(0)
    num_m = tl.cdiv(T, BLOCK_M)
    i_m = pid % num_m
    i_bnh = pid // num_m
    i_h = i_bnh % H
    i_bn = i_bnh // H
    i_n = i_bn % N
    i_b = i_bn // N
    C = H * D
    i_b64 = i_b.to(tl.int64)

    p_q = QKV + i_b64 * stride_qkv_b + i_n * stride_qkv_n + i_h * D
    p_k = p_q + C
    p_v = p_q + 2 * C
    p_o = O + i_b64 * stride_o_b + i_n * stride_o_n + i_h * D
    # dO may be any strided view (a stride-0 expand from .sum().backward()): all four strides are honoured.
    p_do = DO + i_b64 * stride_do_b + i_n * stride_do_n + i_h * D * stride_do_d
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, D)
    m_m = o_m < T

    b_q = tl.load(p_q + o_m[:, None] * stride_qkv_t + o_d[None, :], mask=m_m[:, None], other=0.0)
    b_do = tl.load(p_do + o_m[:, None] * stride_do_t + o_d[None, :] * stride_do_d, mask=m_m[:, None], other=0.0)
    b_o = tl.load(p_o + o_m[:, None] * stride_o_t + o_d[None, :], mask=m_m[:, None], other=0.0)
    # delta_i = sum_j P_ij dP_ij = rowsum(dO * O): computed once here, read by every key block of the dK/dV kernel.
    b_delta = tl.sum(b_do.to(tl.float32) * b_o.to(tl.float32), 1)
    tl.store(DELTA + i_bnh.to(tl.int64) * T + o_m, b_delta, mask=m_m)
    b_lse2 = tl.load(LSE + i_bnh.to(tl.int64) * T + o_m, mask=m_m, other=0.0) * 1.4426950408889634

    b_dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    for start_n in range(0, T, BLOCK_N):
        o_n = start_n + tl.arange(0, BLOCK_N)
        m_n = o_n < T
        b_k = tl.load(p_k + o_n[:, None] * stride_qkv_t + o_d[None, :], mask=m_n[:, None], other=0.0)
        b_v = tl.load(p_v + o_n[:, None] * stride_qkv_t + o_d[None, :], mask=m_n[:, None], other=0.0)
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION) * scale_log2e
        b_p = tl.where(m_n[None, :], tl.exp2(b_s - b_lse2[:, None]), 0.0)
        b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=DOT_PRECISION)
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=DOT_PRECISION)
    b_dq = b_dq * scale

    p_dq = DQKV + i_b64 * stride_dqkv_b + i_n * stride_dqkv_n + i_h * D
    tl.store(p_dq + o_m[:, None] * stride_dqkv_t + o_d[None, :], b_dq.to(DQKV.dtype.element_ty), mask=m_m[:, None])


@triton.jit
def _temporal_attn_bwd_dkdv_kernel(
    QKV,
    DO,
    LSE,
    DELTA,
    DQKV,
    stride_qkv_b,
    stride_qkv_t,
    stride_qkv_n,
    stride_do_b,
    stride_do_t,
    stride_do_n,
    stride_do_d,
    stride_dqkv_b,
    stride_dqkv_t,
    stride_dqkv_n,
    T,
    N,
    H,
    scale,
    scale_log2e,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One program per (b, n, h, key block): dK and dV accumulated in registers over every query block."""
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and D >= 16)
    pid = tl.program_id(0)
    num_n = tl.cdiv(T, BLOCK_N)
    i_kb = pid % num_n
    i_bnh = pid // num_n
    i_h = i_bnh % H
    i_bn = i_bnh // H
    i_n = i_bn % N
    i_b = i_bn // N
    C = H * D
    i_b64 = i_b.to(tl.int64)

    p_q = QKV + i_b64 * stride_qkv_b + i_n * stride_qkv_n + i_h * D
    p_k = p_q + C
    p_v = p_q + 2 * C
    p_do = DO + i_b64 * stride_do_b + i_n * stride_do_n + i_h * D * stride_do_d
    p_lse = LSE + i_bnh.to(tl.int64) * T
    p_delta = DELTA + i_bnh.to(tl.int64) * T
    o_n = i_kb * BLOCK_N + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, D)
    m_n = o_n < T

    b_k = tl.load(p_k + o_n[:, None] * stride_qkv_t + o_d[None, :], mask=m_n[:, None], other=0.0)
    b_v = tl.load(p_v + o_n[:, None] * stride_qkv_t + o_d[None, :], mask=m_n[:, None], other=0.0)
    b_dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    b_dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    for start_m in range(0, T, BLOCK_M):
        o_m = start_m + tl.arange(0, BLOCK_M)
        m_m = o_m < T
        b_q = tl.load(p_q + o_m[:, None] * stride_qkv_t + o_d[None, :], mask=m_m[:, None], other=0.0)
        b_do = tl.load(
            p_do + o_m[:, None] * stride_do_t + o_d[None, :] * stride_do_d, mask=m_m[:, None], other=0.0
        )
        b_lse2 = tl.load(p_lse + o_m, mask=m_m, other=0.0) * 1.4426950408889634
        b_delta = tl.load(p_delta + o_m, mask=m_m, other=0.0)
        # Transposed tiles (keys x queries) so dV = P^T dO and dK = dS^T Q need no transposes of P or dS.
        b_st = tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PRECISION) * scale_log2e
        b_pt = tl.where(m_m[None, :], tl.exp2(b_st - b_lse2[None, :]), 0.0)
        b_dv += tl.dot(b_pt.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
        b_dpt = tl.dot(b_v, tl.trans(b_do), input_precision=DOT_PRECISION)
        b_dst = b_pt * (b_dpt - b_delta[None, :])
        b_dk += tl.dot(b_dst.to(b_q.dtype), b_q, input_precision=DOT_PRECISION)
    b_dk = b_dk * scale

    p_dk = DQKV + i_b64 * stride_dqkv_b + i_n * stride_dqkv_n + C + i_h * D
    p_dv = p_dk + C
    o_nd = o_n[:, None] * stride_dqkv_t + o_d[None, :]
    tl.store(p_dk + o_nd, b_dk.to(DQKV.dtype.element_ty), mask=m_n[:, None])
    tl.store(p_dv + o_nd, b_dv.to(DQKV.dtype.element_ty), mask=m_n[:, None])


# ----------------------------------------------------------------------------------------------------------------
# Configuration (shared by the launchers and report_cases)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def _block(T: int, cap: int) -> int:
    # Power of two >= 16 (tl.dot minimum), no larger than needed for short sequences, at most ``cap``.
    return max(16, min(cap, triton.next_power_of_2(T)))


def _select_config(T: int, D: int, dtype: torch.dtype) -> tuple[_Config, _Config]:
    """Block sizes, warps and stages for (forward, backward) at sequence length T, head dim D, element type dtype.

    64x64 tiles (T=243 -> 4 blocks, 5% padding); fp32 and D=128 tiles are halved in the backward, which holds
    five D-wide tiles (k, v, dk, dv, q/dO) at once, to stay in registers and under sm_89's 99 KB shared memory.
    """
    wide = dtype == torch.float32 or D == 128
    fwd = _Config(block_m=_block(T, 64), block_n=_block(T, 64 if D <= 64 else 32), num_warps=4, num_stages=2)
    bwd_cap = 32 if wide else 64
    bwd = _Config(block_m=_block(T, bwd_cap), block_n=_block(T, bwd_cap), num_warps=4, num_stages=2)
    return fwd, bwd


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact IEEE products (the GPU would otherwise use TF32 and miss the 1e-4 parity bound).
    return "ieee" if dtype == torch.float32 else "tf32"


def _check(qkv: torch.Tensor, num_heads: int) -> tuple[int, int, int, int, int]:
    B, T, N, H, D = check_qkv(qkv, num_heads, _OP)
    if T < 1 or B < 1 or N < 1:
        raise ValueError(f"{_OP}: B, T and N must be >= 1, got qkv shape {tuple(qkv.shape)}")
    return B, T, N, H, D


# ----------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------


def temporal_attn_fwd(qkv: torch.Tensor, num_heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, 3*C) qkv -> o (B, T, N, C) in qkv's dtype and lse (B, N, H, T) fp32 (natural log).

    Launches ``_temporal_attn_fwd_kernel`` on B*N*H*cdiv(T, BLOCK_M) programs (grid axis 0).
    """
    B, T, N, H, D = _check(qkv, num_heads)
    C = H * D
    o = qkv.new_empty((B, T, N, C))
    lse = torch.empty((B, N, H, T), device=qkv.device, dtype=torch.float32)
    cfg, _ = _select_config(T, D, qkv.dtype)
    grid = (B * N * H * triton.cdiv(T, cfg.block_m),)
    wrap_triton(_temporal_attn_fwd_kernel)[grid](
        qkv,
        o,
        lse,
        qkv.stride(0),
        qkv.stride(1),
        qkv.stride(2),
        o.stride(0),
        o.stride(1),
        o.stride(2),
        T,
        N,
        H,
        scale * _LOG2E,
        D=D,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        DOT_PRECISION=_dot_precision(qkv.dtype),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return o, lse


def temporal_attn_bwd(
    do: torch.Tensor,
    qkv: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    scale: float,
) -> torch.Tensor:
    """dO (B, T, N, C) any strides, qkv (B, T, N, 3*C), o (B, T, N, C), lse (B, N, H, T) -> dqkv (B, T, N, 3*C).

    Two launches: ``_temporal_attn_bwd_dq_kernel`` (delta and dQ, one program per query block), then
    ``_temporal_attn_bwd_dkdv_kernel`` (dK, dV, one program per key block). Each writes its own slice of dqkv.
    """
    B, T, N, H, D = _check(qkv, num_heads)
    C = H * D
    if tuple(do.shape) != (B, T, N, C) or tuple(o.shape) != (B, T, N, C):
        raise ValueError(
            f"{_OP} backward: expected grad and o of shape {(B, T, N, C)}, got {tuple(do.shape)} and {tuple(o.shape)}"
        )
    if o.stride(-1) != 1:
        o = o.contiguous()
    if do.dtype != qkv.dtype:
        do = do.to(qkv.dtype)
    dqkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    delta = torch.empty((B, N, H, T), device=qkv.device, dtype=torch.float32)
    _, cfg = _select_config(T, D, qkv.dtype)
    precision = _dot_precision(qkv.dtype)
    s_qkv = (qkv.stride(0), qkv.stride(1), qkv.stride(2))
    s_do = (do.stride(0), do.stride(1), do.stride(2), do.stride(3))
    s_dqkv = (dqkv.stride(0), dqkv.stride(1), dqkv.stride(2))
    meta = dict(
        D=D,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        DOT_PRECISION=precision,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    wrap_triton(_temporal_attn_bwd_dq_kernel)[(B * N * H * triton.cdiv(T, cfg.block_m),)](
        qkv,
        o,
        do,
        lse,
        delta,
        dqkv,
        *s_qkv,
        o.stride(0),
        o.stride(1),
        o.stride(2),
        *s_do,
        *s_dqkv,
        T,
        N,
        H,
        scale,
        scale * _LOG2E,
        **meta,
    )
    wrap_triton(_temporal_attn_bwd_dkdv_kernel)[(B * N * H * triton.cdiv(T, cfg.block_n),)](
        qkv,
        do,
        lse,
        delta,
        dqkv,
        *s_qkv,
        *s_do,
        *s_dqkv,
        T,
        N,
        H,
        scale,
        scale * _LOG2E,
        **meta,
    )
    return dqkv


# ----------------------------------------------------------------------------------------------------------------
# Registered operators
# ----------------------------------------------------------------------------------------------------------------


@triton_op("fastmixste::temporal_attention", mutates_args=())
def _temporal_attention_op(qkv: torch.Tensor, num_heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return temporal_attn_fwd(qkv, num_heads, scale)


@triton_op("fastmixste::temporal_attention_backward", mutates_args=())
def _temporal_attention_backward_op(
    grad_out: torch.Tensor,
    qkv: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    scale: float,
) -> torch.Tensor:
    return temporal_attn_bwd(grad_out, qkv, out, lse, num_heads, scale)


def _setup_context(ctx, inputs, output) -> None:
    qkv, num_heads, scale = inputs
    o, lse = output
    # o is also the proj Linear's saved input: the very same tensor, so saving it here costs no memory.
    ctx.save_for_backward(qkv, o, lse)
    ctx.num_heads = num_heads
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_o: torch.Tensor, grad_lse: torch.Tensor | None):
    qkv, o, lse = ctx.saved_tensors
    dqkv = torch.ops.fastmixste.temporal_attention_backward(grad_o, qkv, o, lse, ctx.num_heads, ctx.scale)
    return dqkv, None, None


_temporal_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _attn_flops(qkv_shape: torch.Size, num_heads: int) -> int:
    # One (T x T x D) matmul over every (b, n, h): 2*T*T*D multiply-adds... counted as FLOPs.
    B, T, N, C3 = qkv_shape
    D = C3 // (3 * num_heads)
    return 2 * B * N * num_heads * T * T * D


@register_flop_formula(torch.ops.fastmixste.temporal_attention)
def _temporal_attention_flop(qkv_shape, num_heads, scale, *args, out_shape=None, **kwargs) -> int:
    # Q K^T and P V, as PyTorch counts scaled_dot_product_attention.
    return 2 * _attn_flops(qkv_shape, num_heads)


@register_flop_formula(torch.ops.fastmixste.temporal_attention_backward)
def _temporal_attention_backward_flop(
    grad_out_shape, qkv_shape, out_shape_, lse_shape, num_heads, scale, *args, out_shape=None, **kwargs
) -> int:
    # Recompute Q K^T, then dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q: five matmuls, as PyTorch counts the
    # SDPA backward (the kernels recompute Q K^T and dO V^T once more in the dK/dV pass; not counted).
    return 5 * _attn_flops(qkv_shape, num_heads)


# ----------------------------------------------------------------------------------------------------------------
# Public functional API and eager reference
# ----------------------------------------------------------------------------------------------------------------


def temporal_attention(qkv: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """(B, T, N, 3*C) -> (B, T, N, C): multi-head attention over T for every (batch, joint, head), fused.

    ``qkv`` is the qkv Linear's output with channels [q | k | v], each ``num_heads`` heads x D, D in
    {16, 32, 64, 128}; dtype float32, float16 or bfloat16; CUDA, or CPU under TRITON_INTERPRET=1 (not bf16).
    ``scale`` defaults to D**-0.5. Differentiable with respect to ``qkv``. Equivalent PyTorch code::

        B, T, N, C3 = qkv.shape
        H, D = num_heads, C3 // (3 * num_heads)
        q, k, v = qkv.view(B, T, N, 3, H, D).permute(3, 0, 2, 4, 1, 5)  # each (B, N, H, T, D)
        attn = (q @ k.transpose(-2, -1) * scale).softmax(-1)           # (B, N, H, T, T)
        o = (attn @ v).permute(0, 3, 1, 2, 4).reshape(B, T, N, H * D)

    Unlike that code, nothing is permuted or copied: the kernels read q, k, v through strides, write ``o``
    directly in (B, T, N, C), and keep only an fp32 log-sum-exp per row for the backward.
    """
    B, T, N, H, D = _check(qkv, num_heads)
    reasons = triton_unavailable_reasons(qkv.device, qkv.dtype)
    if reasons:
        raise RuntimeError(f"{_OP}: the fused kernel cannot run here: " + "; ".join(reasons))
    if scale is None:
        scale = D**-0.5
    o, _ = torch.ops.fastmixste.temporal_attention(qkv, num_heads, float(scale))
    return o


def temporal_attention_ref(qkv: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """(B, T, N, 3*C) -> (B, T, N, C): the eager reference of :func:`temporal_attention` (plain torch, any device).

    Computes in the dtype of ``qkv`` (pass float64 for a high-precision reference).
    """
    B, T, N, C3 = qkv.shape
    if C3 % (3 * num_heads) != 0:
        raise ValueError(f"{_OP}: last dim of qkv must be 3 * num_heads * head_dim; got {C3}, num_heads={num_heads}")
    D = C3 // (3 * num_heads)
    if scale is None:
        scale = D**-0.5
    q, k, v = qkv.view(B, T, N, 3, num_heads, D).permute(3, 0, 2, 4, 1, 5)  # each (B, N, H, T, D)
    attn = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)  # (B, N, H, T, T)
    return (attn @ v).permute(0, 3, 1, 2, 4).reshape(B, T, N, num_heads * D)


# ----------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile cases for ``python -m fastmixste.kernels.report``
# ----------------------------------------------------------------------------------------------------------------

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def report_cases(T: int = 243) -> list[KernelCase]:
    """Every (kernel, dtype, head dim) configuration the launchers pick at sequence length ``T``."""
    cases: list[KernelCase] = []
    for dtype, tname in _TRITON_DTYPE.items():
        for D in SUPPORTED_HEAD_DIMS:
            fwd, bwd = _select_config(T, D, dtype)
            ptr = f"*{tname}"
            common_c = {"D": D, "DOT_PRECISION": _dot_precision(dtype)}
            specs = (
                (
                    "fwd",
                    _temporal_attn_fwd_kernel,
                    fwd,
                    {"QKV": ptr, "O": ptr, "LSE": "*fp32"},
                    ["stride_qkv_b", "stride_qkv_t", "stride_qkv_n", "stride_o_b", "stride_o_t", "stride_o_n"],
                    ["scale_log2e"],
                ),
                (
                    "bwd_dq",
                    _temporal_attn_bwd_dq_kernel,
                    bwd,
                    {"QKV": ptr, "O": ptr, "DO": ptr, "LSE": "*fp32", "DELTA": "*fp32", "DQKV": ptr},
                    ["stride_qkv_b", "stride_qkv_t", "stride_qkv_n", "stride_o_b", "stride_o_t", "stride_o_n"]
                    + ["stride_do_b", "stride_do_t", "stride_do_n", "stride_do_d"]
                    + ["stride_dqkv_b", "stride_dqkv_t", "stride_dqkv_n"],
                    ["scale", "scale_log2e"],
                ),
                (
                    "bwd_dkdv",
                    _temporal_attn_bwd_dkdv_kernel,
                    bwd,
                    {"QKV": ptr, "DO": ptr, "LSE": "*fp32", "DELTA": "*fp32", "DQKV": ptr},
                    ["stride_qkv_b", "stride_qkv_t", "stride_qkv_n"]
                    + ["stride_do_b", "stride_do_t", "stride_do_n", "stride_do_d"]
                    + ["stride_dqkv_b", "stride_dqkv_t", "stride_dqkv_n"],
                    ["scale", "scale_log2e"],
                ),
            )
            for kind, fn, cfg, ptrs, strides, floats in specs:
                signature: dict[str, str] = dict(ptrs)
                signature.update({s: "i32" for s in strides})
                signature.update({"T": "i32", "N": "i32", "H": "i32"})
                signature.update({f: "fp32" for f in floats})
                constexprs = {**common_c, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n}
                signature.update({c: "constexpr" for c in constexprs})
                cases.append(
                    KernelCase(
                        name=f"_temporal_attn_{kind}_kernel",
                        fn=fn,
                        signature=signature,
                        constexprs=constexprs,
                        num_warps=cfg.num_warps,
                        num_stages=cfg.num_stages,
                        dtype=tname,
                        label=f"temporal {kind} {tname} D={D} T={T} BLOCK_M={cfg.block_m} BLOCK_N={cfg.block_n}",
                    )
                )
    return cases


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _default_scale(D: int) -> float:
    return 1.0 / math.sqrt(D)
