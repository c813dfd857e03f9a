"""Fused temporal attention: attention over the T frames of every (batch, joint, head), forward and backward.

Layout (STYLE.md habit 3): ``qkv`` is the qkv Linear's output, (B, T, N, 3*C) with channels [q | k | v], each H
heads x D. The kernels read each joint's sequence straight out of it through strides (the stride along T is
N*3*C) and write ``o`` in (B, T, N, C), the layout the proj Linear reads: the upstream
``b f n c -> (b n) f c`` rearranges disappear.

Split (the template of ``_common.py``):
``_temporal_attn_fwd_kernel`` / ``_temporal_attn_bwd_dq_kernel`` / ``_temporal_attn_bwd_dkdv_kernel`` (jit)
-> ``launch_plan`` -> ``temporal_attn_fwd`` / ``temporal_attn_bwd`` (launchers)
-> ``fastmixste::temporal_attention`` / ``fastmixste::temporal_attention_backward`` (registered ops, autograd)
-> :func:`temporal_attention` (functional). Reference: :func:`fastmixste.kernels.reference.temporal_attention_ref`.

Forward is flash-style (online softmax in fp32, masked tails) and saves qkv, o and the fp32 log-sum-exp per row.
Backward recomputes the probabilities tile by tile: one program per query block computes delta = rowsum(dO * O)
and dQ, one program per key block loops over query blocks for dK and dV. No atomics, so gradients are bit-identical
run to run, and the only fp32 buffers are the (B, N, H, T) lse and delta rows.

Memory: the saved ``o`` is the very tensor the proj Linear saves for its weight gradient, so inside a block the
op adds only qkv and the lse rows to what backward keeps (``python -m fastmixste.perf.memory`` measures it).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.utils.flop_counter import register_flop_formula

from . import _common
from ._common import (
    SUPPORTED_DTYPES,
    SUPPORTED_HEAD_DIMS,
    KernelCase,
    LaunchConfig,
    Refusal,
    check_qkv,
    device_guard,
    device_refusals,
    interpreter_active,
    launch,
    raise_refusals,
    reasons_of,
    report_cases_from,
    support_refusals,
)
from .reference import temporal_attention_ref

__all__ = [
    "launch_plan",
    "report_cases",
    "temporal_attention",
    "temporal_attention_ref",
    "temporal_attn_bwd",
    "temporal_attn_fwd",
    "unsupported_reasons",
]

_OP = "temporal_attention"

# Problem sizes are not specialised (Triton would otherwise compile another binary for N == 1, H == 1 or sizes
# divisible by 16): one binary per configuration serves every shape, exactly the set ``report_cases`` compiles.
_NO_SPECIALIZE = ["T", "N", "H"]


# ----------------------------------------------------------------------------------------------------------------
# Kernels
#
# Sequences are the B*N*H (batch, joint, head) triples, flattened as s = (b*N + n)*H + h (the row order of the
# (B, N, H, T) lse). A program handles G sequences and one block of rows. On a GPU G = 1. Under the Triton
# interpreter, which pays per program and per op but almost nothing per element, G > 1 stacks G sequences into
# one tile (rows sequence-major) and masks the cross-sequence scores: the same arithmetic, G times fewer programs.
# ----------------------------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _temporal_attn_fwd_kernel(
    qkv_ptr,
    o_ptr,
    lse_ptr,
    scale,
    T,
    N,
    H,
    stride_qkv_b,
    stride_qkv_t,
    stride_qkv_n,
    stride_o_b,
    stride_o_t,
    stride_o_n,
    D: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    G: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # Every dot has M, N, K >= 16: the interpreter accepts less, the GPU compiler does not.
    tl.static_assert(BLOCK_Q >= 16 and BLOCK_K >= 16 and D >= 16)
    # Scalar args arrive as fp32 from eager Triton and Python floats from the interpreter: pin to fp32.
    qk_scale = tl.cast(scale, tl.float32) * 1.4426950408889634  # log2(e): softmax via exp2
    # Grid axis 0 = flattened (sequence group, query block); its limit is 2^31 - 1 (axes 1 and 2 stop at 65535).
    pid = tl.program_id(0)
    num_q = (T + BLOCK_Q - 1) // BLOCK_Q
    i_q = pid % num_q
    i_sg = pid // num_q
    C = H * D
    o_r = tl.arange(0, G * BLOCK_Q)  # query rows, sequence-major
    o_c = tl.arange(0, G * BLOCK_K)  # key rows, sequence-major
    o_q = i_q * BLOCK_Q + o_r % BLOCK_Q
    o_d = tl.arange(0, D)
    m_q = o_q < T
    if G == 1:
        s_r = i_sg
        s_c = i_sg
    else:
        s_r = i_sg * G + o_r // BLOCK_Q
        s_c = i_sg * G + o_c // BLOCK_K
    # Batch offsets in int64: B*T*N*3C passes 2^31 at large batches; offsets within one batch element stay int32.
    b_r = (s_r // H // N).to(tl.int64)
    b_c = (s_c // H // N).to(tl.int64)
    off_q = b_r * stride_qkv_b + (s_r // H % N) * stride_qkv_n + (s_r % H) * D
    off_k = b_c * stride_qkv_b + (s_c // H % N) * stride_qkv_n + (s_c % H) * D + C
    off_o = b_r * stride_o_b + (s_r // H % N) * stride_o_n + (s_r % H) * D
    if G > 1:
        off_q = off_q[:, None]
        off_k = off_k[:, None]
        off_o = off_o[:, None]

    b_q = tl.load(qkv_ptr + off_q + o_q[:, None] * stride_qkv_t + o_d[None, :], mask=m_q[:, None], other=0.0)
    b_m = tl.full([G * BLOCK_Q], float("-inf"), dtype=tl.float32)  # running row max (log2 units)
    b_l = tl.zeros([G * BLOCK_Q], dtype=tl.float32)  # running row sum of exp2
    b_acc = tl.zeros([G * BLOCK_Q, D], dtype=tl.float32)
    for start_k in range(0, T, BLOCK_K):
        o_k = start_k + o_c % BLOCK_K
        m_k = o_k < T
        p_k = qkv_ptr + off_k + o_k[:, None] * stride_qkv_t + o_d[None, :]
        b_k = tl.load(p_k, mask=m_k[:, None], other=0.0)
        b_v = tl.load(p_k + C, mask=m_k[:, None], other=0.0)
        # Scores in log2 units so the softmax uses exp2; keys past T (and other sequences' keys) get -inf.
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * qk_scale
        m_s = m_k[None, :]
        if G > 1:
            m_s = m_s & (s_r[:, None] == s_c[None, :])
        b_s = tl.where(m_s, b_s, float("-inf"))
        b_m_new = tl.maximum(b_m, tl.max(b_s, 1))
        # A row with every key masked keeps m = -inf; shifting by 0 instead keeps exp2 away from (-inf) - (-inf).
        b_shift = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
        b_alpha = tl.exp2(b_m - b_shift)
        b_p = tl.exp2(b_s - b_shift[:, None])
        b_l = b_l * b_alpha + tl.sum(b_p, 1)
        b_acc = b_acc * b_alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=PRECISION)
        b_m = b_m_new

    b_l_safe = tl.where(b_l > 0.0, b_l, 1.0)
    b_o = b_acc / b_l_safe[:, None]
    p_o = o_ptr + off_o + o_q[:, None] * stride_o_t + o_d[None, :]
    tl.store(p_o, b_o.to(o_ptr.dtype.element_ty), mask=m_q[:, None])
    # Natural-log lse per row, (B, N, H, T) contiguous: row s*T + t.
    b_lse = (b_m + tl.log2(b_l_safe)) * 0.6931471805599453
    tl.store(lse_ptr + s_r.to(tl.int64) * T + o_q, b_lse, mask=m_q)


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _temporal_attn_bwd_dq_kernel(
    qkv_ptr,
    o_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    dqkv_ptr,
    scale,
    T,
    N,
    H,
    stride_qkv_b,
    stride_qkv_t,
    stride_qkv_n,
    stride_o_b,
    stride_o_t,
    stride_o_n,
    stride_do_b,
    stride_do_t,
    stride_do_n,
    stride_dqkv_b,
    stride_dqkv_t,
    stride_dqkv_n,
    D: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    G: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program per (sequence group, query block): delta = rowsum(dO * O), then dQ looping over key blocks."""
    tl.static_assert(BLOCK_Q >= 16 and BLOCK_K >= 16 and D >= 16)
    scale = tl.cast(scale, tl.float32)
    qk_scale = scale * 1.4426950408889634
    pid = tl.program_id(0)
    num_q = (T + BLOCK_Q - 1) // BLOCK_Q
    i_q = pid % num_q
    i_sg = pid // num_q
    C = H * D
    o_r = tl.arange(0, G * BLOCK_Q)
    o_c = tl.arange(0, G * BLOCK_K)
    o_q = i_q * BLOCK_Q + o_r % BLOCK_Q
    o_d = tl.arange(0, D)
    m_q = o_q < T
    if G == 1:
        s_r = i_sg
        s_c = i_sg
    else:
        s_r = i_sg * G + o_r // BLOCK_Q
        s_c = i_sg * G + o_c // BLOCK_K
    b_r = (s_r // H // N).to(tl.int64)
    b_c = (s_c // H // N).to(tl.int64)
    off_q = b_r * stride_qkv_b + (s_r // H % N) * stride_qkv_n + (s_r % H) * D
    off_k = b_c * stride_qkv_b + (s_c // H % N) * stride_qkv_n + (s_c % H) * D + C
    off_o = b_r * stride_o_b + (s_r // H % N) * stride_o_n + (s_r % H) * D
    # dO may be any strided view on B, T, N (a stride-0 expand from .sum().backward()): those strides are honoured.
    off_do = b_r * stride_do_b + (s_r // H % N) * stride_do_n + (s_r % H) * D
    off_dq = b_r * stride_dqkv_b + (s_r // H % N) * stride_dqkv_n + (s_r % H) * D
    if G > 1:
        off_q = off_q[:, None]
        off_k = off_k[:, None]
        off_o = off_o[:, None]
        off_do = off_do[:, None]
        off_dq = off_dq[:, None]

    b_q = tl.load(qkv_ptr + off_q + o_q[:, None] * stride_qkv_t + o_d[None, :], mask=m_q[:, None], other=0.0)
    b_do = tl.load(do_ptr + off_do + o_q[:, None] * stride_do_t + o_d[None, :], mask=m_q[:, None], other=0.0)
    b_o = tl.load(o_ptr + off_o + o_q[:, None] * stride_o_t + o_d[None, :], mask=m_q[:, None], other=0.0)
    # delta_i = sum_j P_ij dP_ij = rowsum(dO * O): computed once here, read by every key block of the dK/dV kernel.
    b_delta = tl.sum(b_do.to(tl.float32) * b_o.to(tl.float32), 1)
    o_row = s_r.to(tl.int64) * T + o_q  # index into the (B, N, H, T) rows
    tl.store(delta_ptr + o_row, b_delta, mask=m_q)
    b_lse2 = tl.load(lse_ptr + o_row, mask=m_q, other=0.0) * 1.4426950408889634

    b_dq = tl.zeros([G * BLOCK_Q, D], dtype=tl.float32)
    for start_k in range(0, T, BLOCK_K):
        o_k = start_k + o_c % BLOCK_K
        m_k = o_k < T
        p_k = qkv_ptr + off_k + o_k[:, None] * stride_qkv_t + o_d[None, :]
        b_k = tl.load(p_k, mask=m_k[:, None], other=0.0)
        b_v = tl.load(p_k + C, mask=m_k[:, None], other=0.0)
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * qk_scale
        m_s = m_k[None, :]
        if G > 1:
            m_s = m_s & (s_r[:, None] == s_c[None, :])
        b_p = tl.where(m_s, tl.exp2(b_s - b_lse2[:, None]), 0.0)
        b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)
    b_dq = b_dq * scale

    p_dq = dqkv_ptr + off_dq + o_q[:, None] * stride_dqkv_t + o_d[None, :]
    tl.store(p_dq, b_dq.to(dqkv_ptr.dtype.element_ty), mask=m_q[:, None])


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _temporal_attn_bwd_dkdv_kernel(
    qkv_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    dqkv_ptr,
    scale,
    T,
    N,
    H,
    stride_qkv_b,
    stride_qkv_t,
    stride_qkv_n,
    stride_do_b,
    stride_do_t,
    stride_do_n,
    stride_dqkv_b,
    stride_dqkv_t,
    stride_dqkv_n,
    D: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    G: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program per (sequence group, key block): dK and dV accumulated in registers over every query block."""
    tl.static_assert(BLOCK_Q >= 16 and BLOCK_K >= 16 and D >= 16)
    scale = tl.cast(scale, tl.float32)
    qk_scale = scale * 1.4426950408889634
    pid = tl.program_id(0)
    num_k = (T + BLOCK_K - 1) // BLOCK_K
    i_k = pid % num_k
    i_sg = pid // num_k
    C = H * D
    o_r = tl.arange(0, G * BLOCK_K)  # key rows of this program, sequence-major
    o_c = tl.arange(0, G * BLOCK_Q)  # query rows of each step
    o_k = i_k * BLOCK_K + o_r % BLOCK_K
    o_d = tl.arange(0, D)
    m_k = o_k < T
    if G == 1:
        s_r = i_sg
        s_c = i_sg
    else:
        s_r = i_sg * G + o_r // BLOCK_K
        s_c = i_sg * G + o_c // BLOCK_Q
    b_r = (s_r // H // N).to(tl.int64)
    b_c = (s_c // H // N).to(tl.int64)
    off_k = b_r * stride_qkv_b + (s_r // H % N) * stride_qkv_n + (s_r % H) * D + C
    off_dk = b_r * stride_dqkv_b + (s_r // H % N) * stride_dqkv_n + (s_r % H) * D + C
    off_q = b_c * stride_qkv_b + (s_c // H % N) * stride_qkv_n + (s_c % H) * D
    off_do = b_c * stride_do_b + (s_c // H % N) * stride_do_n + (s_c % H) * D
    o_rows = s_c.to(tl.int64) * T  # first (B, N, H, T) row of each query's sequence
    if G > 1:
        off_k = off_k[:, None]
        off_dk = off_dk[:, None]
        off_q = off_q[:, None]
        off_do = off_do[:, None]

    p_k = qkv_ptr + off_k + o_k[:, None] * stride_qkv_t + o_d[None, :]
    b_k = tl.load(p_k, mask=m_k[:, None], other=0.0)
    b_v = tl.load(p_k + C, mask=m_k[:, None], other=0.0)
    b_dk = tl.zeros([G * BLOCK_K, D], dtype=tl.float32)
    b_dv = tl.zeros([G * BLOCK_K, D], dtype=tl.float32)
    for start_q in range(0, T, BLOCK_Q):
        o_q = start_q + o_c % BLOCK_Q
        m_q = o_q < T
        b_q = tl.load(qkv_ptr + off_q + o_q[:, None] * stride_qkv_t + o_d[None, :], mask=m_q[:, None], other=0.0)
        b_do = tl.load(do_ptr + off_do + o_q[:, None] * stride_do_t + o_d[None, :], mask=m_q[:, None], other=0.0)
        b_lse2 = tl.load(lse_ptr + o_rows + o_q, mask=m_q, other=0.0) * 1.4426950408889634
        b_delta = tl.load(delta_ptr + o_rows + o_q, mask=m_q, other=0.0)
        # Transposed tiles (keys x queries) so dV = P^T dO and dK = dS^T Q need no transposes of P or dS.
        b_st = tl.dot(b_k, tl.trans(b_q), input_precision=PRECISION) * qk_scale
        m_st = m_q[None, :]
        if G > 1:
            m_st = m_st & (s_r[:, None] == s_c[None, :])
        b_pt = tl.where(m_st, tl.exp2(b_st - b_lse2[None, :]), 0.0)
        b_dv += tl.dot(b_pt.to(b_do.dtype), b_do, input_precision=PRECISION)
        b_dpt = tl.dot(b_v, tl.trans(b_do), input_precision=PRECISION)
        b_dst = b_pt * (b_dpt - b_delta[None, :])
        b_dk += tl.dot(b_dst.to(b_q.dtype), b_q, input_precision=PRECISION)
    b_dk = b_dk * scale

    p_dk = dqkv_ptr + off_dk + o_k[:, None] * stride_dqkv_t + o_d[None, :]
    tl.store(p_dk, b_dk.to(dqkv_ptr.dtype.element_ty), mask=m_k[:, None])
    tl.store(p_dk + C, b_dv.to(dqkv_ptr.dtype.element_ty), mask=m_k[:, None])


# ----------------------------------------------------------------------------------------------------------------
# Launch configuration: the single source of truth for the launchers and for report_cases().
# ----------------------------------------------------------------------------------------------------------------

# (kernel, fp32, D) -> largest (BLOCK_Q, BLOCK_K, num_warps), chosen with ``python -m fastmixste.kernels.report``:
# the largest tiles that compile for sm_89 and sm_90 with no register spills and shared memory <= 101,376 B.
# fp32 uses IEEE (non-tensor-core) dots whose operands live in registers, hence the smaller tiles. Short
# sequences take smaller tiles (see _block): T < 64 runs 16- and 32-row tiles, which the report compiles too.
_CAPS: dict[tuple[str, bool, int], tuple[int, int, int]] = {
    # kernel, fp32, D: block_q, block_k, num_warps
    ("fwd", True, 16): (64, 64, 4),
    ("fwd", True, 32): (64, 64, 8),
    ("fwd", True, 64): (64, 32, 8),
    ("fwd", True, 128): (64, 32, 8),
    ("fwd", False, 16): (64, 64, 4),
    ("fwd", False, 32): (64, 64, 4),
    ("fwd", False, 64): (64, 64, 4),
    ("fwd", False, 128): (64, 64, 8),
    ("bwd_dq", True, 16): (64, 64, 4),
    ("bwd_dq", True, 32): (64, 64, 8),
    ("bwd_dq", True, 64): (64, 32, 8),
    ("bwd_dq", True, 128): (32, 32, 8),
    ("bwd_dq", False, 16): (64, 64, 4),
    ("bwd_dq", False, 32): (64, 64, 4),
    ("bwd_dq", False, 64): (64, 64, 8),
    ("bwd_dq", False, 128): (32, 64, 8),
    ("bwd_dkdv", True, 16): (64, 32, 8),
    ("bwd_dkdv", True, 32): (32, 32, 8),
    ("bwd_dkdv", True, 64): (32, 16, 4),
    ("bwd_dkdv", True, 128): (32, 16, 4),
    ("bwd_dkdv", False, 16): (64, 64, 4),
    ("bwd_dkdv", False, 32): (64, 64, 4),
    ("bwd_dkdv", False, 64): (64, 32, 4),
    ("bwd_dkdv", False, 128): (64, 32, 4),
}
#: Largest tile rows of any configuration: sequences of at least this length all use the capped tiles.
_MAX_BLOCK = 64


def _block(T: int, cap: int) -> int:
    # Power of two >= 16 (tl.dot minimum), no larger than needed for short sequences, at most ``cap``.
    return max(16, min(cap, triton.next_power_of_2(T)))


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact IEEE products (the GPU would otherwise use TF32 and miss the 1e-4 parity bound).
    return "ieee" if dtype == torch.float32 else "tf32"


def _seqs_per_program(S: int, block_rows: int) -> int:
    """G, the (batch, joint, head) sequences one program handles: 1 on a GPU. Under the interpreter, which pays per
    program, the most sequences (a power of two dividing S = B*N*H) that keep a tile within 128 rows (its dots
    run without BLAS and cost G^2 times the per-sequence work)."""
    if not interpreter_active():
        return 1
    G = 1
    while S % (2 * G) == 0 and 2 * G * block_rows <= 128:
        G *= 2
    return G


_KERNELS = {
    "fwd": _temporal_attn_fwd_kernel,
    "bwd_dq": _temporal_attn_bwd_dq_kernel,
    "bwd_dkdv": _temporal_attn_bwd_dkdv_kernel,
}


def launch_plan(
    shape: tuple[int, ...], num_heads: int, dtype: torch.dtype, backward: bool
) -> list[tuple[LaunchConfig, tuple[int]]]:
    """Every (configuration, grid) the forward launcher (or, with ``backward``, the backward launcher) runs for a
    (B, T, N, 3*C) qkv, in launch order; empty for empty input.

    Forward: one program per (sequence group, query block). Backward: the dQ kernel (one per query block), then
    the dK/dV kernel (one per key block). G sequences per program (1 on a GPU, see _seqs_per_program).
    """
    B, T, N, C3 = shape
    D = C3 // (3 * num_heads)
    S = B * N * num_heads
    if S * T == 0:
        return []
    plan = []
    for kernel in ("bwd_dq", "bwd_dkdv") if backward else ("fwd",):
        cap_q, cap_k, num_warps = _CAPS[(kernel, dtype == torch.float32, D)]
        bq, bk = _block(T, cap_q), _block(T, cap_k)
        if dtype != torch.float32 and (bq, bk) != (cap_q, cap_k) and max(bq, bk) <= 32:
            # Short windows shrink the tiles. 16-bit: 8 warps on a 32 x 32 tile spill registers on sm_90 (fwd,
            # D = 128), 4 do not. fp32 keeps its warps: its register-resident IEEE dot operands spill with 4
            # (kernels.report, both findings).
            num_warps = min(num_warps, 4)
        rows = bk if kernel == "bwd_dkdv" else bq  # rows a program owns
        G = _seqs_per_program(S, max(bq, bk))
        constexprs = (("D", D), ("BLOCK_Q", bq), ("BLOCK_K", bk), ("G", G), ("PRECISION", _precision(dtype)))
        cfg = LaunchConfig(_KERNELS[kernel], constexprs, num_warps=num_warps, num_stages=2)
        plan.append((cfg, (S // G * triton.cdiv(T, rows),)))
    return plan


# ----------------------------------------------------------------------------------------------------------------
# Checks and launchers
# ----------------------------------------------------------------------------------------------------------------


def _refusals(qkv: torch.Tensor, num_heads: int, backward: bool) -> list[Refusal]:
    """Input checks (raise), then every reason the kernels cannot run this valid input (any T, N: machine only)."""
    B, T, N, H, D = check_qkv(qkv, num_heads, _OP)
    return support_refusals(qkv.dtype, D) + device_refusals(qkv)


def _check(qkv: torch.Tensor, num_heads: int, backward: bool) -> tuple[int, int, int, int, int]:
    raise_refusals(_OP, _refusals(qkv, num_heads, backward))
    return check_qkv(qkv, num_heads, _OP)


def unsupported_reasons(qkv: torch.Tensor, num_heads: int, backward: bool | None = None) -> list[str]:
    """Why ``temporal_attention(qkv, num_heads)`` cannot run here (empty list when it can); never raises.

    ``backward`` defaults to whether autograd will need the backward (grad enabled and qkv requires grad).
    A meta tensor asks about the shape and dtype alone (dispatch probes with one).
    """
    if backward is None:
        backward = torch.is_grad_enabled() and isinstance(qkv, torch.Tensor) and qkv.requires_grad
    return reasons_of(_refusals, qkv, num_heads, backward)


def temporal_attn_fwd(qkv: torch.Tensor, num_heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, 3*C) qkv -> o (B, T, N, C) in qkv's dtype and lse (B, N, H, T) fp32 (natural log)."""
    B, T, N, H, D = _check(qkv, num_heads, backward=False)
    o = _common.new_buffer((B, T, N, H * D), qkv)
    lse = _common.new_buffer((B, N, H, T), qkv, torch.float32)
    plan = launch_plan(tuple(qkv.shape), H, qkv.dtype, backward=False)
    with device_guard(qkv):
        for cfg, grid in plan:
            launch(cfg, grid, qkv, o, lse, scale, T, N, H, *qkv.stride()[:3], *o.stride()[:3])
    return o, lse


def temporal_attn_bwd(
    grad_o: torch.Tensor,
    qkv: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    scale: float,
) -> torch.Tensor:
    """dO (B, T, N, C), qkv (B, T, N, 3*C), o (B, T, N, C), lse (B, N, H, T) -> dqkv (B, T, N, 3*C).

    ``grad_o`` may have any strides on B, T, N (0 included); a channel dim without unit stride is copied.
    Two launches: ``_temporal_attn_bwd_dq_kernel`` (delta and dQ), then ``_temporal_attn_bwd_dkdv_kernel`` (dK,
    dV), which reads the delta rows the first wrote (same stream). Each writes its own slice of dqkv.
    """
    B, T, N, H, D = _check(qkv, num_heads, backward=True)
    C = H * D
    if tuple(grad_o.shape) != (B, T, N, C) or tuple(o.shape) != (B, T, N, C):
        raise ValueError(
            f"{_OP}: expected grad_o and o of shape {(B, T, N, C)}, got {tuple(grad_o.shape)} and {tuple(o.shape)}"
        )
    if tuple(lse.shape) != (B, N, H, T) or lse.dtype != torch.float32:
        raise ValueError(f"{_OP}: expected lse of shape {(B, N, H, T)} float32, got {tuple(lse.shape)} {lse.dtype}")
    grad_o = grad_o.to(qkv.dtype)
    if grad_o.stride(-1) != 1:
        grad_o = grad_o.contiguous()
    if o.stride(-1) != 1:
        o = o.contiguous()
    lse = lse.contiguous()
    dqkv = _common.new_buffer(qkv.shape, qkv)
    delta = _common.new_buffer((B, N, H, T), qkv, torch.float32)
    plan = launch_plan(tuple(qkv.shape), H, qkv.dtype, backward=True)
    strides = (*qkv.stride()[:3], *grad_o.stride()[:3], *dqkv.stride()[:3])
    with device_guard(qkv):
        for cfg, grid in plan:
            if cfg.fn is _temporal_attn_bwd_dq_kernel:
                launch(cfg, grid, qkv, o, grad_o, lse, delta, dqkv, scale, T, N, H,
                       *qkv.stride()[:3], *o.stride()[:3], *grad_o.stride()[:3], *dqkv.stride()[:3])  # fmt: skip
            else:
                launch(cfg, grid, qkv, grad_o, lse, delta, dqkv, scale, T, N, H, *strides)
    return dqkv


# ----------------------------------------------------------------------------------------------------------------
# Registered torch operators (custom_op: the reason is in _common.py)
# ----------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastmixste::temporal_attention", mutates_args=())
def _temporal_attention_op(qkv: torch.Tensor, num_heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return temporal_attn_fwd(qkv, num_heads, scale)


@_temporal_attention_op.register_fake
def _(qkv: torch.Tensor, num_heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, N, H, D = check_qkv(qkv, num_heads, _OP)
    return qkv.new_empty((B, T, N, H * D)), qkv.new_empty((B, N, H, T), dtype=torch.float32)


@torch.library.custom_op("fastmixste::temporal_attention_backward", mutates_args=())
def _temporal_attention_backward_op(
    grad_o: torch.Tensor,
    qkv: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    scale: float,
) -> torch.Tensor:
    return temporal_attn_bwd(grad_o, qkv, o, lse, num_heads, scale)


@_temporal_attention_backward_op.register_fake
def _(
    grad_o: torch.Tensor, qkv: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    check_qkv(qkv, num_heads, _OP)
    return torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)


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
    # FLOPs of one (T x T x D) matmul for every (b, n, h): 2*T*T*D each.
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
# Public function
# ----------------------------------------------------------------------------------------------------------------


def temporal_attention(qkv: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """(B, T, N, 3*C) -> (B, T, N, C): multi-head attention over T for every (batch, joint, head), fused.

    ``qkv`` is the qkv Linear's output with channels [q | k | v], each ``num_heads`` heads x D, D in
    {16, 32, 64, 128}; any T and N; dtype float32, float16 or bfloat16; CUDA, or CPU under TRITON_INTERPRET=1
    (not bf16). ``scale`` defaults to D**-0.5. Differentiable with respect to ``qkv``. Equivalent PyTorch code::

        B, T, N, C3 = qkv.shape
        H, D = num_heads, C3 // (3 * num_heads)
        q, k, v = qkv.view(B, T, N, 3, H, D).permute(3, 0, 2, 4, 1, 5)  # each (B, N, H, T, D)
        attn = (q @ k.transpose(-2, -1) * scale).softmax(-1)           # (B, N, H, T, T)
        o = (attn @ v).permute(0, 3, 1, 2, 4).reshape(B, T, N, H * D)

    Unlike that code, nothing is permuted or copied: the kernels read q, k, v through strides, write ``o``
    directly in (B, T, N, C), and keep only an fp32 log-sum-exp per row for the backward. Raises ValueError/
    TypeError for an unsupported shape or dtype and RuntimeError where the kernels cannot run, before launch.
    Empty input gives an empty output (and gradient).
    """
    B, T, N, H, D = _check(qkv, num_heads, backward=torch.is_grad_enabled() and qkv.requires_grad)
    scale = D**-0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"{_OP}: scale must be a finite float, got {scale}")
    o, _ = torch.ops.fastmixste.temporal_attention(qkv, num_heads, scale)
    return o


# ----------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile cases for ``python -m fastmixste.kernels.report``
# ----------------------------------------------------------------------------------------------------------------

#: Sequence lengths that reach every tile size the launchers pick: _block gives 16, 32, 64 (T <= 16, 32, 64) and
#: the caps (T > 64); one length per class suffices because nothing else in a configuration depends on T.
REPORT_LENGTHS: tuple[int, ...] = (16, 32, 64, 2 * _MAX_BLOCK)


def report_cases() -> list[KernelCase]:
    """Every configuration the launchers can pick on a GPU, for any B, T, N, D and dtype, one case each."""
    plans = []
    for dtype in SUPPORTED_DTYPES:
        for D in SUPPORTED_HEAD_DIMS:
            for T in REPORT_LENGTHS:
                for backward in (False, True):
                    plan = launch_plan((1, T, 1, 3 * D), 1, dtype, backward)
                    plans.append((dtype, plan, ("lse_ptr", "delta_ptr")))
    return report_cases_from(plans)
