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

Memory: the saved ``o`` is the very tensor the proj Linear saves for its weight gradient, so inside a block the
op adds only qkv and the lse rows to what backward keeps (``python -m fastmixste.kernels.memory`` measures it).

Registration uses ``torch.library.triton_op``, so torch.compile/export see the kernels on a GPU. Under
TRITON_INTERPRET=1, wrap_triton hands back the interpreted kernel itself, which cannot run on fake tensors: the
launchers then skip the launch (shapes are all a fake pass needs), and compiled execution needs a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake
from torch.library import triton_op, wrap_triton
from torch.utils.flop_counter import register_flop_formula

from ._common import (
    SUPPORTED_HEAD_DIMS,
    KernelCase,
    check_qkv,
    device_guard,
    interpreter_active,
    triton_unavailable_reasons,
)

__all__ = [
    "temporal_attention",
    "temporal_attention_ref",
    "temporal_attn_fwd",
    "temporal_attn_bwd",
    "report_cases",
]

_OP = "temporal_attention"
_LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------------------------------------------
# Kernels
#
# Sequences are the B*N*H (batch, joint, head) triples, flattened as s = (b*N + n)*H + h (the row order of the
# (B, N, H, T) lse). A program handles G sequences and one block of rows. On a GPU G = 1. Under the Triton
# interpreter, which pays per program and per op but almost nothing per element, G > 1 stacks G sequences into
# one tile (rows sequence-major) and masks the cross-sequence scores: the same arithmetic, G times fewer programs.
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
    G: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Every dot has M, N, K >= 16: the interpreter accepts less, the GPU compiler does not.
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and D >= 16)
    # Grid axis 0 = flattened (sequence group, query block); its limit is 2^31 - 1 (axes 1 and 2 stop at 65535).
    pid = tl.program_id(0)
    num_m = (T + BLOCK_M - 1) // BLOCK_M
    i_m = pid % num_m
    i_sg = pid // num_m
    C = H * D
    o_r = tl.arange(0, G * BLOCK_M)  # query rows, sequence-major
    o_c = tl.arange(0, G * BLOCK_N)  # key rows, sequence-major
    o_m = i_m * BLOCK_M + o_r % BLOCK_M
    o_d = tl.arange(0, D)
    m_m = o_m < T
    if G == 1:
        s_r = i_sg
        s_c = i_sg
    else:
        s_r = i_sg * G + o_r // BLOCK_M
        s_c = i_sg * G + o_c // BLOCK_N
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

    b_q = tl.load(QKV + off_q + o_m[:, None] * stride_qkv_t + o_d[None, :], mask=m_m[:, None], other=0.0)
    b_m = tl.full([G * BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (log2 units)
    b_l = tl.zeros([G * BLOCK_M], dtype=tl.float32)  # running row sum of exp2
    b_acc = tl.zeros([G * BLOCK_M, D], dtype=tl.float32)
    for start_n in range(0, T, BLOCK_N):
        o_n = start_n + o_c % BLOCK_N
        m_n = o_n < T
        p_k = QKV + off_k + o_n[:, None] * stride_qkv_t + o_d[None, :]
        b_k = tl.load(p_k, mask=m_n[:, None], other=0.0)
        b_v = tl.load(p_k + C, mask=m_n[:, None], other=0.0)
        # Scores in log2 units so the softmax uses exp2; keys past T (and other sequences' keys) get -inf.
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION) * scale_log2e
        m_s = m_n[None, :]
        if G > 1:
            m_s = m_s & (s_r[:, None] == s_c[None, :])
        b_s = tl.where(m_s, b_s, float("-inf"))
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
    p_o = O + off_o + o_m[:, None] * stride_o_t + o_d[None, :]
    tl.store(p_o, b_o.to(O.dtype.element_ty), mask=m_m[:, None])
    # Natural-log lse per row, (B, N, H, T) contiguous: row s*T + t.
    b_lse = (b_m + tl.log2(b_l_safe)) * 0.6931471805599453
    tl.store(LSE + s_r.to(tl.int64) * T + o_m, b_lse, mask=m_m)


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
    G: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One program per (sequence group, query block): delta = rowsum(dO * O), then dQ looping over key blocks."""
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and D >= 16)
    pid = tl.program_id(0)
    num_m = (T + BLOCK_M - 1) // BLOCK_M
    i_m = pid % num_m
    i_sg = pid // num_m
    C = H * D
    o_r = tl.arange(0, G * BLOCK_M)
    o_c = tl.arange(0, G * BLOCK_N)
    o_m = i_m * BLOCK_M + o_r % BLOCK_M
    o_d = tl.arange(0, D)
    m_m = o_m < T
    if G == 1:
        s_r = i_sg
        s_c = i_sg
    else:
        s_r = i_sg * G + o_r // BLOCK_M
        s_c = i_sg * G + o_c // BLOCK_N
    b_r = (s_r // H // N).to(tl.int64)
    b_c = (s_c // H // N).to(tl.int64)
    off_q = b_r * stride_qkv_b + (s_r // H % N) * stride_qkv_n + (s_r % H) * D
    off_k = b_c * stride_qkv_b + (s_c // H % N) * stride_qkv_n + (s_c % H) * D + C
    off_o = b_r * stride_o_b + (s_r // H % N) * stride_o_n + (s_r % H) * D
    # dO may be any strided view (a stride-0 expand from .sum().backward()): all four strides are honoured.
    off_do = b_r * stride_do_b + (s_r // H % N) * stride_do_n + (s_r % H) * D * stride_do_d
    off_dq = b_r * stride_dqkv_b + (s_r // H % N) * stride_dqkv_n + (s_r % H) * D
    if G > 1:
        off_q = off_q[:, None]
        off_k = off_k[:, None]
        off_o = off_o[:, None]
        off_do = off_do[:, None]
        off_dq = off_dq[:, None]

    b_q = tl.load(QKV + off_q + o_m[:, None] * stride_qkv_t + o_d[None, :], mask=m_m[:, None], other=0.0)
    p_do = DO + off_do + o_m[:, None] * stride_do_t + o_d[None, :] * stride_do_d
    b_do = tl.load(p_do, mask=m_m[:, None], other=0.0)
    b_o = tl.load(O + off_o + o_m[:, None] * stride_o_t + o_d[None, :], mask=m_m[:, None], other=0.0)
    # delta_i = sum_j P_ij dP_ij = rowsum(dO * O): computed once here, read by every key block of the dK/dV kernel.
    b_delta = tl.sum(b_do.to(tl.float32) * b_o.to(tl.float32), 1)
    o_row = s_r.to(tl.int64) * T + o_m  # index into the (B, N, H, T) rows
    tl.store(DELTA + o_row, b_delta, mask=m_m)
    b_lse2 = tl.load(LSE + o_row, mask=m_m, other=0.0) * 1.4426950408889634

    b_dq = tl.zeros([G * BLOCK_M, D], dtype=tl.float32)
    for start_n in range(0, T, BLOCK_N):
        o_n = start_n + o_c % BLOCK_N
        m_n = o_n < T
        p_k = QKV + off_k + o_n[:, None] * stride_qkv_t + o_d[None, :]
        b_k = tl.load(p_k, mask=m_n[:, None], other=0.0)
        b_v = tl.load(p_k + C, mask=m_n[:, None], other=0.0)
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION) * scale_log2e
        m_s = m_n[None, :]
        if G > 1:
            m_s = m_s & (s_r[:, None] == s_c[None, :])
        b_p = tl.where(m_s, tl.exp2(b_s - b_lse2[:, None]), 0.0)
        b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=DOT_PRECISION)
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=DOT_PRECISION)
    b_dq = b_dq * scale

    p_dq = DQKV + off_dq + o_m[:, None] * stride_dqkv_t + o_d[None, :]
    tl.store(p_dq, b_dq.to(DQKV.dtype.element_ty), mask=m_m[:, None])


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
    G: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One program per (sequence group, key block): dK and dV accumulated in registers over every query block."""
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and D >= 16)
    pid = tl.program_id(0)
    num_n = (T + BLOCK_N - 1) // BLOCK_N
    i_kb = pid % num_n
    i_sg = pid // num_n
    C = H * D
    o_r = tl.arange(0, G * BLOCK_N)  # key rows of this program, sequence-major
    o_c = tl.arange(0, G * BLOCK_M)  # query rows of each step
    o_n = i_kb * BLOCK_N + o_r % BLOCK_N
    o_d = tl.arange(0, D)
    m_n = o_n < T
    if G == 1:
        s_r = i_sg
        s_c = i_sg
    else:
        s_r = i_sg * G + o_r // BLOCK_N
        s_c = i_sg * G + o_c // BLOCK_M
    b_r = (s_r // H // N).to(tl.int64)
    b_c = (s_c // H // N).to(tl.int64)
    off_k = b_r * stride_qkv_b + (s_r // H % N) * stride_qkv_n + (s_r % H) * D + C
    off_dk = b_r * stride_dqkv_b + (s_r // H % N) * stride_dqkv_n + (s_r % H) * D + C
    off_q = b_c * stride_qkv_b + (s_c // H % N) * stride_qkv_n + (s_c % H) * D
    off_do = b_c * stride_do_b + (s_c // H % N) * stride_do_n + (s_c % H) * D * stride_do_d
    o_rows = s_c.to(tl.int64) * T  # first (B, N, H, T) row of each query's sequence
    if G > 1:
        off_k = off_k[:, None]
        off_dk = off_dk[:, None]
        off_q = off_q[:, None]
        off_do = off_do[:, None]

    p_k = QKV + off_k + o_n[:, None] * stride_qkv_t + o_d[None, :]
    b_k = tl.load(p_k, mask=m_n[:, None], other=0.0)
    b_v = tl.load(p_k + C, mask=m_n[:, None], other=0.0)
    b_dk = tl.zeros([G * BLOCK_N, D], dtype=tl.float32)
    b_dv = tl.zeros([G * BLOCK_N, D], dtype=tl.float32)
    for start_m in range(0, T, BLOCK_M):
        o_m = start_m + o_c % BLOCK_M
        m_m = o_m < T
        b_q = tl.load(QKV + off_q + o_m[:, None] * stride_qkv_t + o_d[None, :], mask=m_m[:, None], other=0.0)
        p_do = DO + off_do + o_m[:, None] * stride_do_t + o_d[None, :] * stride_do_d
        b_do = tl.load(p_do, mask=m_m[:, None], other=0.0)
        b_lse2 = tl.load(LSE + o_rows + o_m, mask=m_m, other=0.0) * 1.4426950408889634
        b_delta = tl.load(DELTA + o_rows + o_m, mask=m_m, other=0.0)
        # Transposed tiles (keys x queries) so dV = P^T dO and dK = dS^T Q need no transposes of P or dS.
        b_st = tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PRECISION) * scale_log2e
        m_st = m_m[None, :]
        if G > 1:
            m_st = m_st & (s_r[:, None] == s_c[None, :])
        b_pt = tl.where(m_st, tl.exp2(b_st - b_lse2[None, :]), 0.0)
        b_dv += tl.dot(b_pt.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
        b_dpt = tl.dot(b_v, tl.trans(b_do), input_precision=DOT_PRECISION)
        b_dst = b_pt * (b_dpt - b_delta[None, :])
        b_dk += tl.dot(b_dst.to(b_q.dtype), b_q, input_precision=DOT_PRECISION)
    b_dk = b_dk * scale

    p_dk = DQKV + off_dk + o_n[:, None] * stride_dqkv_t + o_d[None, :]
    tl.store(p_dk, b_dk.to(DQKV.dtype.element_ty), mask=m_n[:, None])
    tl.store(p_dk + C, b_dv.to(DQKV.dtype.element_ty), mask=m_n[:, None])


# ----------------------------------------------------------------------------------------------------------------
# Configuration (shared by the launchers and report_cases)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    block_m: int  # query rows per tile
    block_n: int  # key rows per tile
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class _Configs:
    fwd: _Config
    bwd_dq: _Config
    bwd_dkdv: _Config


# (block_m, block_n, num_warps) caps per (kernel, fp32?, D), chosen with ``python -m fastmixste.kernels.report``:
# the largest tiles that compile for sm_89 and sm_90 with no register spills and shared memory <= 101,376 B.
# fp32 uses IEEE (non-tensor-core) dots whose operands live in registers, hence the smaller tiles.
_CAPS: dict[tuple[str, bool, int], tuple[int, int, int]] = {
    # kernel, fp32, D: block_m, block_n, num_warps
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


def _block(T: int, cap: int) -> int:
    # Power of two >= 16 (tl.dot minimum), no larger than needed for short sequences, at most ``cap``.
    return max(16, min(cap, triton.next_power_of_2(T)))


def _select_config(T: int, D: int, dtype: torch.dtype) -> _Configs:
    """Tile sizes, warps and stages of the three kernels at sequence length T, head dim D, element type dtype."""
    fp32 = dtype == torch.float32

    def pick(kernel: str) -> _Config:
        bm, bn, warps = _CAPS[(kernel, fp32, D)]
        return _Config(block_m=_block(T, bm), block_n=_block(T, bn), num_warps=warps, num_stages=2)

    return _Configs(fwd=pick("fwd"), bwd_dq=pick("bwd_dq"), bwd_dkdv=pick("bwd_dkdv"))


def _seqs_per_program(S: int, cfg: _Config) -> int:
    """G, the (batch, joint, head) sequences one program handles: 1 on a GPU. Under the interpreter, which pays per
    program, the most sequences (a power of two dividing S = B*N*H) that keep a tile within 128 rows (its dots
    run without BLAS and cost G^2 times the per-sequence work)."""
    if not interpreter_active():
        return 1
    G = 1
    while S % (2 * G) == 0 and 2 * G * max(cfg.block_m, cfg.block_n) <= 128:
        G *= 2
    return G


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


def _shape_only(t: torch.Tensor) -> bool:
    """True when ``t`` carries no data and the launch must be skipped (shapes are all the caller needs).

    Meta tensors never run a kernel. Fake tensors are handled by wrap_triton (traced, not run) except under
    TRITON_INTERPRET=1, where wrap_triton hands back the interpreted kernel itself, which would try to run.
    """
    return t.device.type == "meta" or (interpreter_active() and is_fake(t))


def _empty(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Every buffer the launchers hand to a kernel comes from here, so tests can prefill them with NaN.
    return torch.empty(shape, device=device, dtype=dtype)


def temporal_attn_fwd(qkv: torch.Tensor, num_heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, 3*C) qkv -> o (B, T, N, C) in qkv's dtype and lse (B, N, H, T) fp32 (natural log).

    Launches ``_temporal_attn_fwd_kernel`` on B*N*H*cdiv(T, BLOCK_M) programs (grid axis 0; / G sequences per
    program under the interpreter).
    """
    B, T, N, H, D = _check(qkv, num_heads)
    C = H * D
    o = _empty((B, T, N, C), qkv.device, qkv.dtype)
    lse = _empty((B, N, H, T), qkv.device, torch.float32)
    if _shape_only(qkv):
        return o, lse
    cfg = _select_config(T, D, qkv.dtype).fwd
    G = _seqs_per_program(B * N * H, cfg)
    grid = (B * N * H // G * triton.cdiv(T, cfg.block_m),)
    with device_guard(qkv):
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
            G=G,
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
    dqkv = _empty((B, T, N, 3 * C), qkv.device, qkv.dtype)
    delta = _empty((B, N, H, T), qkv.device, torch.float32)
    if _shape_only(qkv):
        return dqkv
    cfgs = _select_config(T, D, qkv.dtype)
    precision = _dot_precision(qkv.dtype)
    s_qkv = (qkv.stride(0), qkv.stride(1), qkv.stride(2))
    s_do = (do.stride(0), do.stride(1), do.stride(2), do.stride(3))
    s_dqkv = (dqkv.stride(0), dqkv.stride(1), dqkv.stride(2))
    with device_guard(qkv):
        cfg = cfgs.bwd_dq
        G = _seqs_per_program(B * N * H, cfg)
        wrap_triton(_temporal_attn_bwd_dq_kernel)[(B * N * H // G * triton.cdiv(T, cfg.block_m),)](
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
            D=D,
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            G=G,
            DOT_PRECISION=precision,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
        # Launched after the dQ kernel on the same stream: it reads the delta rows that kernel wrote.
        cfg = cfgs.bwd_dkdv
        G = _seqs_per_program(B * N * H, cfg)
        wrap_triton(_temporal_attn_bwd_dkdv_kernel)[(B * N * H // G * triton.cdiv(T, cfg.block_n),)](
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
            D=D,
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            G=G,
            DOT_PRECISION=precision,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
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
    from fastmixste.attention import eager_attention_core

    return eager_attention_core(qkv, num_heads, D**-0.5 if scale is None else scale, "temporal")


# ----------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile cases for ``python -m fastmixste.kernels.report``
# ----------------------------------------------------------------------------------------------------------------

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def report_cases(T: int = 243) -> list[KernelCase]:
    """Every (kernel, dtype, head dim) configuration the launchers pick at sequence length ``T``."""
    cases: list[KernelCase] = []
    for dtype, tname in _TRITON_DTYPE.items():
        for D in SUPPORTED_HEAD_DIMS:
            cfgs = _select_config(T, D, dtype)
            ptr = f"*{tname}"
            common_c = {"D": D, "G": 1, "DOT_PRECISION": _dot_precision(dtype)}
            specs = (
                (
                    "fwd",
                    _temporal_attn_fwd_kernel,
                    cfgs.fwd,
                    {"QKV": ptr, "O": ptr, "LSE": "*fp32"},
                    ["stride_qkv_b", "stride_qkv_t", "stride_qkv_n", "stride_o_b", "stride_o_t", "stride_o_n"],
                    ["scale_log2e"],
                ),
                (
                    "bwd_dq",
                    _temporal_attn_bwd_dq_kernel,
                    cfgs.bwd_dq,
                    {"QKV": ptr, "O": ptr, "DO": ptr, "LSE": "*fp32", "DELTA": "*fp32", "DQKV": ptr},
                    ["stride_qkv_b", "stride_qkv_t", "stride_qkv_n", "stride_o_b", "stride_o_t", "stride_o_n"]
                    + ["stride_do_b", "stride_do_t", "stride_do_n", "stride_do_d"]
                    + ["stride_dqkv_b", "stride_dqkv_t", "stride_dqkv_n"],
                    ["scale", "scale_log2e"],
                ),
                (
                    "bwd_dkdv",
                    _temporal_attn_bwd_dkdv_kernel,
                    cfgs.bwd_dkdv,
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
                if "stride_do_d" in strides:
                    # Launches with a contiguous dO see stride 1, which Triton specialises to a constant.
                    constexprs["stride_do_d"] = 1
                signature.update({c: "constexpr" for c in constexprs})
                signature = {name: signature[name] for name in fn.arg_names}  # the kernel's argument order
                # Pointers and strides of contiguous (B, T, N, 3C) / (B, T, N, C) tensors are multiples of 16.
                aligned = list(ptrs) + [s for s in strides if s not in constexprs]
                cases.append(
                    KernelCase(
                        name=f"_temporal_attn_{kind}_kernel",
                        fn=fn,
                        signature=signature,
                        constexprs=constexprs,
                        num_warps=cfg.num_warps,
                        num_stages=cfg.num_stages,
                        dtype=tname,
                        label=f"D={D} T={T} BLOCK_M={cfg.block_m} BLOCK_N={cfg.block_n}",
                        extra={"divisible_by_16": aligned, "block": {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n}},
                    )
                )
    return cases
