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

The kernels take separate q, k, v pointers and strides and separate query / key lengths (TQ, TK), so the cross
op (``cross.py``: HoT's learnable queries over the kept frames) runs them too, through :func:`attention_plan`,
:func:`run_forward` and :func:`run_backward`; this op passes the three channel slices of one qkv with TQ = TK = T.

Forward is flash-style (online softmax in fp32, masked tails) and saves qkv, o and the fp32 log-sum-exp per row.
Backward recomputes the probabilities tile by tile: one program per query block computes delta = rowsum(dO * O)
and dQ, one program per key block loops over query blocks for dK and dV. No atomics, so gradients are bit-identical
run to run, and the only fp32 buffers are the (B, N, H, T) lse and delta rows.

Memory: the saved ``o`` is the very tensor the proj Linear saves for its weight gradient, so inside a block the
op adds only qkv and the lse rows to what backward keeps (``python -m fastmixste.perf.memory`` measures it).
"""

from __future__ import annotations

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
    check,
    check_qkv,
    device_guard,
    device_refusals,
    interpreter_active,
    launch,
    needs_backward,
    report_cases_from,
    resolve_scale,
    support_refusals,
    unit_channel_stride,
)
from .reference import temporal_attention_ref

__all__ = [
    "attention_plan",
    "backward_inputs",
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
_NO_SPECIALIZE = ["TQ", "TK", "N", "H"]
_NO_SPECIALIZE_DQ = [*_NO_SPECIALIZE, "NQ", "R", "RN", "CHUNK"]


# ----------------------------------------------------------------------------------------------------------------
# Kernels
#
# Sequences are the B*N*H (batch, joint, head) triples, flattened as s = (b*N + n)*H + h (the row order of the
# (B, N, H, TQ) lse). Each sequence has TQ queries and TK keys: the temporal op passes slices of one qkv (TQ = TK),
# the cross op (cross.py) separate q, k, v. q, k, v, o and dO are read through their own (b, t, n) strides, so any
# of them may be a view: q's strides may be 0 over b and n (one query set broadcast to every sequence).
#
# A program handles G sequences and one block of rows. On a GPU G = 1. Under the Triton interpreter, which pays
# per program and per op but almost nothing per element, G > 1 stacks G sequences into one tile (rows
# sequence-major) and masks the cross-sequence scores: the same arithmetic, G times fewer programs.
# ----------------------------------------------------------------------------------------------------------------


@triton.jit
def _seq_offset(s, N, H, D: tl.constexpr, stride_b, stride_n):
    """Offset of sequence s = (b*N + n)*H + h's first element in a (B, T, N, H*D) tensor with the given strides."""
    # Batch offsets in int64: B*T*N*3C passes 2^31 at large batches; offsets within one batch element stay int32.
    return (s // H // N).to(tl.int64) * stride_b + (s // H % N) * stride_n + (s % H) * D


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _temporal_attn_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    lse_ptr,
    scale,
    TQ,
    TK,
    N,
    H,
    stride_q_b,
    stride_q_t,
    stride_q_n,
    stride_k_b,
    stride_k_t,
    stride_k_n,
    stride_v_b,
    stride_v_t,
    stride_v_n,
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
    num_q = (TQ + BLOCK_Q - 1) // BLOCK_Q
    i_q = pid % num_q
    i_sg = pid // num_q
    o_r = tl.arange(0, G * BLOCK_Q)  # query rows, sequence-major
    o_c = tl.arange(0, G * BLOCK_K)  # key rows, sequence-major
    o_q = i_q * BLOCK_Q + o_r % BLOCK_Q
    o_d = tl.arange(0, D)
    m_q = o_q < TQ
    if G == 1:
        s_r = i_sg
        s_c = i_sg
    else:
        s_r = i_sg * G + o_r // BLOCK_Q
        s_c = i_sg * G + o_c // BLOCK_K
    off_q = _seq_offset(s_r, N, H, D, stride_q_b, stride_q_n)
    off_o = _seq_offset(s_r, N, H, D, stride_o_b, stride_o_n)
    off_k = _seq_offset(s_c, N, H, D, stride_k_b, stride_k_n)
    off_v = _seq_offset(s_c, N, H, D, stride_v_b, stride_v_n)
    if G > 1:
        off_q = off_q[:, None]
        off_o = off_o[:, None]
        off_k = off_k[:, None]
        off_v = off_v[:, None]

    b_q = tl.load(q_ptr + off_q + o_q[:, None] * stride_q_t + o_d[None, :], mask=m_q[:, None], other=0.0)
    b_m = tl.full([G * BLOCK_Q], float("-inf"), dtype=tl.float32)  # running row max (log2 units)
    b_l = tl.zeros([G * BLOCK_Q], dtype=tl.float32)  # running row sum of exp2
    b_acc = tl.zeros([G * BLOCK_Q, D], dtype=tl.float32)
    for start_k in range(0, TK, BLOCK_K):
        o_k = start_k + o_c % BLOCK_K
        m_k = o_k < TK
        b_k = tl.load(k_ptr + off_k + o_k[:, None] * stride_k_t + o_d[None, :], mask=m_k[:, None], other=0.0)
        b_v = tl.load(v_ptr + off_v + o_k[:, None] * stride_v_t + o_d[None, :], mask=m_k[:, None], other=0.0)
        # Scores in log2 units so the softmax uses exp2; keys past TK (and other sequences' keys) get -inf.
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

    # No keys at all (TK = 0) leaves l = 0: o = 0, as softmax-weighted sums over an empty set are in PyTorch.
    b_l_safe = tl.where(b_l > 0.0, b_l, 1.0)
    b_o = b_acc / b_l_safe[:, None]
    p_o = o_ptr + off_o + o_q[:, None] * stride_o_t + o_d[None, :]
    tl.store(p_o, b_o.to(o_ptr.dtype.element_ty), mask=m_q[:, None])
    # Natural-log lse per row, (B, N, H, TQ) contiguous: row s*TQ + t.
    b_lse = (b_m + tl.log2(b_l_safe)) * 0.6931471805599453
    tl.store(lse_ptr + s_r.to(tl.int64) * TQ + o_q, b_lse, mask=m_q)


@triton.jit
def _dq_of_sequence(
    b_dq,
    b_q,
    r,
    s0_r,
    s0_c,
    u_r,
    u_c,
    o_q,
    m_q,
    o_c,
    o_d,
    qk_scale,
    k_ptr,
    v_ptr,
    o_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    TQ,
    TK,
    N,
    H,
    RN,
    stride_k_b,
    stride_k_t,
    stride_k_n,
    stride_v_b,
    stride_v_t,
    stride_v_n,
    stride_o_b,
    stride_o_t,
    stride_o_n,
    stride_do_b,
    stride_do_t,
    stride_do_n,
    D: tl.constexpr,
    BLOCK_K: tl.constexpr,
    G: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """b_dq plus sequence r's dQ (unscaled) for the query rows o_q of each query set; stores its delta rows."""
    # Sequence r of each query set: r // RN batch elements and r % RN joints past the first.
    s_r = s0_r + (r // RN * N + r % RN) * H
    s_c = s0_c + (r // RN * N + r % RN) * H
    off_o = _seq_offset(s_r, N, H, D, stride_o_b, stride_o_n)
    # dO may be any strided view on B, T, N (a stride-0 expand from .sum().backward()): those strides are honoured.
    off_do = _seq_offset(s_r, N, H, D, stride_do_b, stride_do_n)
    off_k = _seq_offset(s_c, N, H, D, stride_k_b, stride_k_n)
    off_v = _seq_offset(s_c, N, H, D, stride_v_b, stride_v_n)
    if G > 1:
        off_o = off_o[:, None]
        off_do = off_do[:, None]
        off_k = off_k[:, None]
        off_v = off_v[:, None]
    b_do = tl.load(do_ptr + off_do + o_q[:, None] * stride_do_t + o_d[None, :], mask=m_q[:, None], other=0.0)
    b_o = tl.load(o_ptr + off_o + o_q[:, None] * stride_o_t + o_d[None, :], mask=m_q[:, None], other=0.0)
    # delta_i = sum_j P_ij dP_ij = rowsum(dO * O): computed once here, read by every key block of the dK/dV kernel.
    b_delta = tl.sum(b_do.to(tl.float32) * b_o.to(tl.float32), 1)
    o_row = s_r.to(tl.int64) * TQ + o_q  # index into the (B, N, H, TQ) rows
    tl.store(delta_ptr + o_row, b_delta, mask=m_q)
    b_lse2 = tl.load(lse_ptr + o_row, mask=m_q, other=0.0) * 1.4426950408889634

    for start_k in range(0, TK, BLOCK_K):
        o_k = start_k + o_c % BLOCK_K
        m_k = o_k < TK
        b_k = tl.load(k_ptr + off_k + o_k[:, None] * stride_k_t + o_d[None, :], mask=m_k[:, None], other=0.0)
        b_v = tl.load(v_ptr + off_v + o_k[:, None] * stride_v_t + o_d[None, :], mask=m_k[:, None], other=0.0)
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * qk_scale
        m_s = m_k[None, :]
        if G > 1:
            m_s = m_s & (u_r[:, None] == u_c[None, :])
        b_p = tl.where(m_s, tl.exp2(b_s - b_lse2[:, None]), 0.0)
        b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)
    return b_dq


@triton.jit(do_not_specialize=_NO_SPECIALIZE_DQ)
def _temporal_attn_bwd_dq_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    dq_ptr,
    scale,
    TQ,
    TK,
    N,
    H,
    NQ,
    R,
    RN,
    CHUNK,
    stride_q_b,
    stride_q_t,
    stride_q_n,
    stride_k_b,
    stride_k_t,
    stride_k_n,
    stride_v_b,
    stride_v_t,
    stride_v_n,
    stride_o_b,
    stride_o_t,
    stride_o_n,
    stride_do_b,
    stride_do_t,
    stride_do_n,
    stride_dq_c,
    stride_dq_b,
    stride_dq_t,
    stride_dq_n,
    D: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    G: tl.constexpr,
    PRECISION: tl.constexpr,
    REDUCE: tl.constexpr,
):
    """One program per (query-set group, chunk, query block): for each sequence of its chunk, delta = rowsum(dO * O)
    and dQ over every key block, summed over the chunk.

    Query sets u = (bq*NQ + nq)*H + h number the distinct queries: NQ is N, or 1 where q is broadcast over the
    joints (likewise its batch). The R sequences sharing a query set are r = 0 .. R-1, at b = bq + r // RN,
    n = nq + r % RN (RN = N / NQ); with REDUCE the program sums dQ over r in [i_c*CHUNK, (i_c+1)*CHUNK) and writes
    the sum to chunk i_c of dq (stride_dq_c). Without REDUCE (no broadcast: R = 1) each program owns one sequence.
    """
    tl.static_assert(BLOCK_Q >= 16 and BLOCK_K >= 16 and D >= 16)
    scale = tl.cast(scale, tl.float32)
    qk_scale = scale * 1.4426950408889634
    pid = tl.program_id(0)
    num_q = (TQ + BLOCK_Q - 1) // BLOCK_Q
    num_c = (R + CHUNK - 1) // CHUNK
    i_q = pid % num_q
    i_c = pid // num_q % num_c
    i_sg = pid // num_q // num_c
    o_r = tl.arange(0, G * BLOCK_Q)
    o_c = tl.arange(0, G * BLOCK_K)
    o_q = i_q * BLOCK_Q + o_r % BLOCK_Q
    o_d = tl.arange(0, D)
    m_q = o_q < TQ
    if G == 1:
        u_r = i_sg
        u_c = i_sg
    else:
        u_r = i_sg * G + o_r // BLOCK_Q
        u_c = i_sg * G + o_c // BLOCK_K
    # The first sequence of each query set, (bq, nq, h), as a sequence id s = (bq*N + nq)*H + h.
    s0_r = (u_r // H // NQ * N + u_r // H % NQ) * H + u_r % H
    s0_c = (u_c // H // NQ * N + u_c // H % NQ) * H + u_c % H
    off_q = _seq_offset(s0_r, N, H, D, stride_q_b, stride_q_n)
    off_dq = i_c.to(tl.int64) * stride_dq_c + _seq_offset(s0_r, N, H, D, stride_dq_b, stride_dq_n)
    if G > 1:
        off_q = off_q[:, None]
        off_dq = off_dq[:, None]
    b_q = tl.load(q_ptr + off_q + o_q[:, None] * stride_q_t + o_d[None, :], mask=m_q[:, None], other=0.0)

    b_dq = tl.zeros([G * BLOCK_Q, D], dtype=tl.float32)
    seq_args = (s0_r, s0_c, u_r, u_c, o_q, m_q, o_c, o_d, qk_scale, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, delta_ptr)
    sizes = (TQ, TK, N, H, RN, stride_k_b, stride_k_t, stride_k_n, stride_v_b, stride_v_t, stride_v_n)
    strides = (stride_o_b, stride_o_t, stride_o_n, stride_do_b, stride_do_t, stride_do_n)
    if REDUCE:
        for r in range(i_c * CHUNK, tl.minimum(R, i_c * CHUNK + CHUNK)):
            b_dq = _dq_of_sequence(b_dq, b_q, r, *seq_args, *sizes, *strides, D, BLOCK_K, G, PRECISION)
    else:
        # Straight-line code: even a one-trip loop around the key loop costs ~25% more registers (sm_90, D = 64:
        # half the resident blocks), so the unbroadcast kernel has none.
        b_dq = _dq_of_sequence(b_dq, b_q, 0, *seq_args, *sizes, *strides, D, BLOCK_K, G, PRECISION)
    b_dq = b_dq * scale

    p_dq = dq_ptr + off_dq + o_q[:, None] * stride_dq_t + o_d[None, :]
    tl.store(p_dq, b_dq.to(dq_ptr.dtype.element_ty), mask=m_q[:, None])


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _temporal_attn_bwd_dkdv_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    dk_ptr,
    dv_ptr,
    scale,
    TQ,
    TK,
    N,
    H,
    stride_q_b,
    stride_q_t,
    stride_q_n,
    stride_k_b,
    stride_k_t,
    stride_k_n,
    stride_v_b,
    stride_v_t,
    stride_v_n,
    stride_do_b,
    stride_do_t,
    stride_do_n,
    stride_dkv_b,
    stride_dkv_t,
    stride_dkv_n,
    D: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    G: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program per (sequence group, key block): dK and dV accumulated in registers over every query block.

    dK and dV share their strides (two slices of one dqkv, or two buffers of one shape)."""
    tl.static_assert(BLOCK_Q >= 16 and BLOCK_K >= 16 and D >= 16)
    scale = tl.cast(scale, tl.float32)
    qk_scale = scale * 1.4426950408889634
    pid = tl.program_id(0)
    num_k = (TK + BLOCK_K - 1) // BLOCK_K
    i_k = pid % num_k
    i_sg = pid // num_k
    o_r = tl.arange(0, G * BLOCK_K)  # key rows of this program, sequence-major
    o_c = tl.arange(0, G * BLOCK_Q)  # query rows of each step
    o_k = i_k * BLOCK_K + o_r % BLOCK_K
    o_d = tl.arange(0, D)
    m_k = o_k < TK
    if G == 1:
        s_r = i_sg
        s_c = i_sg
    else:
        s_r = i_sg * G + o_r // BLOCK_K
        s_c = i_sg * G + o_c // BLOCK_Q
    off_k = _seq_offset(s_r, N, H, D, stride_k_b, stride_k_n)
    off_v = _seq_offset(s_r, N, H, D, stride_v_b, stride_v_n)
    off_dkv = _seq_offset(s_r, N, H, D, stride_dkv_b, stride_dkv_n)
    off_q = _seq_offset(s_c, N, H, D, stride_q_b, stride_q_n)
    off_do = _seq_offset(s_c, N, H, D, stride_do_b, stride_do_n)
    o_rows = s_c.to(tl.int64) * TQ  # first (B, N, H, TQ) row of each query's sequence
    if G > 1:
        off_k = off_k[:, None]
        off_v = off_v[:, None]
        off_dkv = off_dkv[:, None]
        off_q = off_q[:, None]
        off_do = off_do[:, None]

    b_k = tl.load(k_ptr + off_k + o_k[:, None] * stride_k_t + o_d[None, :], mask=m_k[:, None], other=0.0)
    b_v = tl.load(v_ptr + off_v + o_k[:, None] * stride_v_t + o_d[None, :], mask=m_k[:, None], other=0.0)
    b_dk = tl.zeros([G * BLOCK_K, D], dtype=tl.float32)
    b_dv = tl.zeros([G * BLOCK_K, D], dtype=tl.float32)
    for start_q in range(0, TQ, BLOCK_Q):
        o_q = start_q + o_c % BLOCK_Q
        m_q = o_q < TQ
        b_q = tl.load(q_ptr + off_q + o_q[:, None] * stride_q_t + o_d[None, :], mask=m_q[:, None], other=0.0)
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

    p_dk = dk_ptr + off_dkv + o_k[:, None] * stride_dkv_t + o_d[None, :]
    tl.store(p_dk, b_dk.to(dk_ptr.dtype.element_ty), mask=m_k[:, None])
    p_dv = dv_ptr + off_dkv + o_k[:, None] * stride_dkv_t + o_d[None, :]
    tl.store(p_dv, b_dv.to(dv_ptr.dtype.element_ty), mask=m_k[:, None])


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
    # 8 warps: with q, k, v behind pointers of their own, 4 spilled 160 B on sm_90 (kernels.report).
    ("bwd_dkdv", True, 128): (32, 16, 8),
    ("bwd_dkdv", False, 16): (64, 64, 4),
    ("bwd_dkdv", False, 32): (64, 64, 4),
    ("bwd_dkdv", False, 64): (64, 32, 4),
    ("bwd_dkdv", False, 128): (64, 32, 4),
}
# The dQ kernel of a broadcast q (REDUCE: a loop over the sequences sharing a query set around the key loop) in
# fp32: the tiles above spilled 8-40 B with it (sm_89 or sm_90, D = 32 to 128; kernels.report), these do not.
# 16-bit inputs keep the table above.
_CAPS_FP32_REDUCE: dict[int, tuple[int, int, int]] = {
    # D: block_q, block_k, num_warps
    16: (64, 64, 4),
    32: (32, 32, 4),
    64: (32, 32, 8),
    128: (32, 16, 8),
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


def attention_plan(
    S: int, TQ: int, TK: int, D: int, dtype: torch.dtype, backward: bool, QS: int | None = None, chunks: int = 1
) -> list[tuple[LaunchConfig, tuple[int]]]:
    """Every (configuration, grid) the forward (or, with ``backward``, the backward) of S (batch, joint, head)
    sequences of TQ queries and TK keys of head dim D runs, in launch order; empty when there are no queries.

    Forward: one program per (sequence group, query block). Backward: the dQ kernel, one program per (query-set
    group, chunk, query block) over the QS distinct query sets (default S: no broadcast) split into ``chunks``,
    then the dK/dV kernel, one per (sequence group, key block): none when TK = 0. G sequences per program (1 on a
    GPU, see _seqs_per_program). The temporal op and the cross op (cross.py) both plan here.
    """
    if S * TQ == 0:
        return []
    QS = S if QS is None else QS
    plan = []
    for kernel in ("bwd_dq", "bwd_dkdv") if backward else ("fwd",):
        cap_q, cap_k, num_warps = _CAPS[(kernel, dtype == torch.float32, D)]
        if kernel == "bwd_dq" and QS != S and dtype == torch.float32:
            cap_q, cap_k, num_warps = _CAPS_FP32_REDUCE[D]
        # Both tiles are sized by the longer length: only the (BLOCK_Q, BLOCK_K) pairs self-attention runs, each
        # checked by the report (smaller key than query tiles spilled registers: fp32 D = 128 forward, 64 x 16 tiles,
        # 224 B on sm_89 and sm_90). A much shorter side pays masked rows instead.
        bq, bk = _block(max(TQ, TK), cap_q), _block(max(TQ, TK), cap_k)
        if dtype != torch.float32 and (bq, bk) != (cap_q, cap_k) and max(bq, bk) <= 32:
            # Short windows shrink the tiles. 16-bit: 8 warps on a 32 x 32 tile spill registers on sm_90 (fwd,
            # D = 128), 4 do not. fp32 keeps its warps: its register-resident IEEE dot operands spill with 4
            # (kernels.report, both findings).
            num_warps = min(num_warps, 4)
        if kernel == "bwd_dkdv":
            seqs, blocks = S, triton.cdiv(TK, bk)
        elif kernel == "bwd_dq":
            seqs, blocks = QS, chunks * triton.cdiv(TQ, bq)
        else:
            seqs, blocks = S, triton.cdiv(TQ, bq)
        if blocks == 0:
            continue
        G = _seqs_per_program(seqs, max(bq, bk))
        constexprs = (("D", D), ("BLOCK_Q", bq), ("BLOCK_K", bk), ("G", G), ("PRECISION", _precision(dtype)))
        if kernel == "bwd_dq":
            constexprs += (("REDUCE", QS != S),)  # a broadcast q: loop over the sequences sharing each query set
        cfg = LaunchConfig(_KERNELS[kernel], constexprs, num_warps=num_warps, num_stages=2)
        plan.append((cfg, (seqs // G * blocks,)))
    return plan


def launch_plan(
    shape: tuple[int, ...], num_heads: int, dtype: torch.dtype, backward: bool
) -> list[tuple[LaunchConfig, tuple[int]]]:
    """Every (configuration, grid) the forward launcher (or, with ``backward``, the backward launcher) runs for a
    (B, T, N, 3*C) qkv, in launch order; empty for empty input (:func:`attention_plan` with TQ = TK = T)."""
    B, T, N, C3 = shape
    return attention_plan(B * N * num_heads, T, T, C3 // (3 * num_heads), dtype, backward)


# ----------------------------------------------------------------------------------------------------------------
# Checks and launchers
# ----------------------------------------------------------------------------------------------------------------


def run_forward(
    plan: list[tuple[LaunchConfig, tuple[int]]],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    scale: float,
) -> None:
    """Launch a forward ``plan`` on q, o (B, TQ, N, C) and k, v (B, TK, N, C), any strides on B, T, N (0 included)
    and unit channel stride, writing o and lse (B, N, H, TQ) fp32 contiguous."""
    B, TQ, N, _ = q.shape
    with device_guard(q):
        for cfg, grid in plan:
            launch(cfg, grid, q, k, v, o, lse, scale, TQ, k.shape[1], N, num_heads,
                   *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3])  # fmt: skip


def run_backward(
    plan: list[tuple[LaunchConfig, tuple[int]]],
    grad_o: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    num_heads: int,
    scale: float,
    reduction: tuple[int, int, int, int] | None = None,
) -> None:
    """Launch a backward ``plan``: the dQ kernel (delta and dQ), then the dK/dV kernel, which reads the delta rows
    the first wrote (same stream). Tensors as :func:`run_forward`, plus grad_o like o; dk and dv share strides.

    ``reduction`` = (NQ, R, RN, CHUNK) where q is broadcast (see ``_temporal_attn_bwd_dq_kernel``); then dq is the
    (chunks, Bq, TQ, NQ, C) buffer of per-chunk sums, else dq is (B, TQ, N, C) like q.
    """
    B, TQ, N, _ = q.shape
    NQ, R, RN, CHUNK = (N, 1, 1, 1) if reduction is None else reduction
    dq_strides = (0, *dq.stride()[:3]) if dq.dim() == 4 else dq.stride()[:4]
    delta = _common.new_buffer(lse.shape, lse, torch.float32)
    in_strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    with device_guard(q):
        for cfg, grid in plan:
            if cfg.fn is _temporal_attn_bwd_dq_kernel:
                launch(cfg, grid, q, k, v, o, grad_o, lse, delta, dq, scale, TQ, k.shape[1], N, num_heads,
                       NQ, R, RN, CHUNK, *in_strides, *o.stride()[:3], *grad_o.stride()[:3], *dq_strides)  # fmt: skip
            else:
                launch(cfg, grid, q, k, v, grad_o, lse, delta, dk, dv, scale, TQ, k.shape[1], N, num_heads,
                       *in_strides, *grad_o.stride()[:3], *dk.stride()[:3])  # fmt: skip


def backward_inputs(
    op: str, grad_o: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, sizes: tuple[int, ...], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checks of a backward's grad_o and o (B, TQ, N, C) and lse (B, N, H, TQ) fp32, ``sizes`` = (B, TQ, N, H, D);
    returns them as the kernels read them: grad_o in ``dtype`` and o with unit channel stride (any other strides,
    0 included: .sum().backward() sends a stride-0 expand), lse contiguous."""
    B, TQ, N, H, D = sizes
    if tuple(grad_o.shape) != (B, TQ, N, H * D) or tuple(o.shape) != (B, TQ, N, H * D):
        raise ValueError(
            f"{op}: expected grad_o and o of shape {(B, TQ, N, H * D)}, got {tuple(grad_o.shape)} and {tuple(o.shape)}"
        )
    if tuple(lse.shape) != (B, N, H, TQ) or lse.dtype != torch.float32:
        raise ValueError(f"{op}: expected lse of shape {(B, N, H, TQ)} float32, got {tuple(lse.shape)} {lse.dtype}")
    return unit_channel_stride(grad_o.to(dtype)), unit_channel_stride(o), lse.contiguous()


def _refusals(qkv: torch.Tensor, num_heads: int, backward: bool) -> tuple[tuple[int, ...], list[Refusal]]:
    """Input checks (raise), then every reason the kernels cannot run this valid input (any T, N: machine only)."""
    B, T, N, H, D = sizes = check_qkv(qkv, num_heads, _OP)
    return sizes, support_refusals(qkv.dtype, D) + device_refusals(qkv)


def unsupported_reasons(qkv: torch.Tensor, num_heads: int, backward: bool | None = None) -> list[str]:
    """Why ``temporal_attention(qkv, num_heads)`` cannot run here (empty list when it can); never raises.

    ``backward`` defaults to whether autograd will need the backward (grad enabled and qkv requires grad).
    A meta tensor asks about the shape and dtype alone (dispatch probes with one).
    """
    backward = needs_backward(qkv) if backward is None else backward
    return _common.unsupported_reasons(_refusals, qkv, num_heads, backward)


def _split(t: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Views of the [q | k | v] channel slices: the kernels read (and write) them through qkv's own strides.
    return t[..., :C], t[..., C : 2 * C], t[..., 2 * C :]


def temporal_attn_fwd(qkv: torch.Tensor, num_heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, 3*C) qkv -> o (B, T, N, C) in qkv's dtype and lse (B, N, H, T) fp32 (natural log)."""
    B, T, N, H, D = check(_OP, _refusals, qkv, num_heads, False)
    o = _common.new_buffer((B, T, N, H * D), qkv)
    lse = _common.new_buffer((B, N, H, T), qkv, torch.float32)
    run_forward(launch_plan(tuple(qkv.shape), H, qkv.dtype, backward=False), *_split(qkv, H * D), o, lse, H, scale)
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
    B, T, N, H, D = check(_OP, _refusals, qkv, num_heads, True)
    C = H * D
    grad_o, o, lse = backward_inputs(_OP, grad_o, o, lse, (B, T, N, H, D), qkv.dtype)
    dqkv = _common.new_buffer(qkv.shape, qkv)
    plan = launch_plan(tuple(qkv.shape), H, qkv.dtype, backward=True)
    run_backward(plan, grad_o, *_split(qkv, C), o, lse, *_split(dqkv, C), H, scale)
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
    B, T, N, H, D = check(_OP, _refusals, qkv, num_heads, needs_backward(qkv))
    o, _ = torch.ops.fastmixste.temporal_attention(qkv, num_heads, resolve_scale(_OP, scale, D))
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
