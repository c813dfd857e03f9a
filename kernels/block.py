"""Fused kernels for everything between the GEMMs of a MixSTE block: residual + DropPath + LayerNorm(s), bias + GELU.

MixSTE's block is x = x + dp(attn(norm1(x))); x = x + dp(mlp(norm2(x))), and the model applies a shared post-norm
(Spatial_norm / Temporal_norm) after every block. Outside the GEMMs (cuBLAS) and the attention cores the eager step
spends its time in memory-bound passes: LayerNorm, DropPath (``div`` then ``*mask``), residual adds, casts, GELU and
bias-gradient sums. Two ops remove most of that traffic:

``residual_layernorm(r, y, mask, keep, w1, b1, w2, b2)``, one pass over a (B, T, N, C) tile of rows::

    s = r + y / keep * mask          # residual add + DropPath (mask: one draw per frame or per joint)
    a = LN_1(s)                      # norm2 inside the block, or the post-norm after it
    one norm:   res, h = s, a        # s is the next residual, a the next GEMM input
    two norms:  res, h = a, LN_2(a)  # post-norm folded into the next block's norm1

``res`` (the residual stream) is float32 whatever the inputs; ``h`` (a GEMM input) comes out in ``h_dtype``
(bf16/fp16 under autocast), so no cast kernel runs before the next Linear. The backward takes the gradients of both
outputs and writes dr (= ds: the residual gradient accumulation is the add of grad_res inside the kernel), dy (the
DropPath backward) and the LayerNorm weight/bias gradients as per-program partial sums, reduced by one small sum.
Mean and rstd are recomputed from the saved rows (compute is free in a memory-bound kernel), so the forward writes
nothing but ``res`` and ``h``; backward keeps ``s`` (one norm: the ``res`` output itself) or ``r`` and ``y`` (two
norms: ``r`` is the previous op's saved ``s``, the same storage).

``bias_gelu(u, b)``: gelu(u + b) with the exact erf GELU for the fc1 output computed without its bias; the backward
writes du and the bias gradient (partial sums per program, then one small sum). cuBLASLt's GELU epilogue is the
tanh approximation, not upstream's erf (DESIGN.md section 6), hence this kernel.

Split (STYLE.md habit 1): ``_residual_norm_fwd_kernel`` / ``_residual_norm_bwd_kernel`` and
``_bias_gelu_fwd_kernel`` / ``_bias_gelu_bwd_kernel`` (jit) -> launchers -> the custom ops
``fastmixste::residual_layernorm(_backward)`` / ``fastmixste::bias_gelu(_backward)`` with autograd -> the functions
:func:`residual_layernorm`, :func:`bias_gelu`. :func:`residual_layernorm_ref` and :func:`bias_gelu_ref` are the
eager references. No FLOP formulas: these ops have no matmul, and FlopCounterMode counts matmul FLOPs only (it
ignores aten LayerNorm and GELU too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import KernelCase, device_guard, triton_unavailable_reasons

__all__ = [
    "MAX_CHANNELS",
    "bias_gelu",
    "bias_gelu_bwd",
    "bias_gelu_fwd",
    "bias_gelu_ref",
    "report_cases",
    "residual_layernorm",
    "residual_layernorm_ref",
    "residual_norm_bwd",
    "residual_norm_fwd",
    "unsupported_reasons",
]

#: Widest LayerNorm row the kernels hold in registers (one row per tile at this width; 4096-wide rows spilled in the
#: backward on sm_90 even at 16 warps, where 512 threads cap a thread at 128 registers).
MAX_CHANNELS = 2048

_OP = "residual_layernorm"
_OP_GELU = "bias_gelu"
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------

# Row counts and (B, T, N) sizes vary per call: not specialised, so one compiled kernel per (flags, C tile, dtypes).
_NO_SPECIALIZE_ROWS = ["M", "T", "N", "C", "G"]


@triton.jit
def _row_index(o_m, T, N):
    """Rows m of the flattened (B, T, N) -> their (b, t, n) as int64; each tensor's offset is b*sb + t*st + n*sn.

    The divisions run in int32 (the launcher checks B*T*N < 2**31): int64 division is a called subroutine, whose stack
    frame the report counts as spill bytes. Only the products with the strides need int64.
    """
    i_bt = o_m // N
    return (i_bt // T).to(tl.int64), (i_bt % T).to(tl.int64), (o_m % N).to(tl.int64)


@triton.jit
def _normalize(b_x, m_c, inv_c, eps):
    """(BLOCK_M, BLOCK_C) fp32 rows, zero in padded columns -> (x - mean) * rstd (zero in padding), rstd.

    No division anywhere in these kernels: IEEE fp32 division compiles to a called slow path whose stack frame the
    report counts as spill bytes (8 B per kernel); the host passes 1/C and 1/keep, and rsqrt gives rstd.
    """
    mean = tl.sum(b_x, 1) * inv_c
    b_xc = tl.where(m_c[None, :], b_x - mean[:, None], 0.0)
    rstd = tl.math.rsqrt(tl.sum(b_xc * b_xc, 1) * inv_c + eps)
    return b_xc * rstd[:, None], rstd


@triton.jit
def _normalize_bwd(b_gx, b_xhat, rstd, m_c, inv_c):
    """LayerNorm input gradient from gx = grad_out * weight: rstd * (gx - mean(gx) - xhat * mean(gx * xhat))."""
    c1 = tl.sum(b_gx * b_xhat, 1) * inv_c
    c2 = tl.sum(b_gx, 1) * inv_c
    return tl.where(m_c[None, :], (b_gx - b_xhat * c1[:, None] - c2[:, None]) * rstd[:, None], 0.0)


@triton.jit(do_not_specialize=_NO_SPECIALIZE_ROWS)
def _residual_norm_fwd_kernel(
    r_ptr,
    y_ptr,
    mask_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    res_ptr,
    h_ptr,
    inv_keep,
    eps,
    inv_c,
    M,
    T,
    N,
    C,
    stride_r_b,
    stride_r_t,
    stride_r_n,
    stride_y_b,
    stride_y_t,
    stride_y_n,
    stride_m_b,
    stride_m_t,
    stride_m_n,
    HAS_Y: tl.constexpr,
    HAS_MASK: tl.constexpr,
    TWO_NORMS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    # Scalar args arrive as fp32 from eager Triton and Python floats from the interpreter: pin to fp32.
    eps = tl.cast(eps, tl.float32)
    inv_c = tl.cast(inv_c, tl.float32)
    o_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    o_c = tl.arange(0, BLOCK_C)
    m_m = o_m < M
    m_c = o_c < C
    m_mc = m_m[:, None] & m_c[None, :]
    # One index computation per tile, shared by every tensor's strides (the interpreter pays for each nested jit call).
    i_b, i_t, i_n = _row_index(o_m, T, N)

    p_r = r_ptr + (i_b * stride_r_b + i_t * stride_r_t + i_n * stride_r_n)[:, None] + o_c[None, :]
    b_s = tl.load(p_r, mask=m_mc, other=0.0).to(tl.float32)
    if HAS_Y:
        # y may be a broadcast view (a positional embedding expanded over B and N): its strides are honoured.
        p_y = y_ptr + (i_b * stride_y_b + i_t * stride_y_t + i_n * stride_y_n)[:, None] + o_c[None, :]
        b_y = tl.load(p_y, mask=m_mc, other=0.0).to(tl.float32)
        if HAS_MASK:
            # DropPath as eager computes it, y / keep * mask (times 1/keep: within an ulp), mask 0 or 1 per row group.
            p_k = mask_ptr + i_b * stride_m_b + i_t * stride_m_t + i_n * stride_m_n
            b_k = tl.load(p_k, mask=m_m, other=0.0).to(tl.float32)
            b_y = b_y * tl.cast(inv_keep, tl.float32) * b_k[:, None]
        b_s += b_y

    b_w1 = tl.load(w1_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_b1 = tl.load(b1_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_xhat, _ = _normalize(b_s, m_c, inv_c, eps)
    b_a = b_xhat * b_w1[None, :] + b_b1[None, :]  # zero in padded columns (w1, b1 load as 0 there)

    # Outputs are fresh contiguous (M, C) tensors.
    o_out = o_m.to(tl.int64)[:, None] * C + o_c[None, :]
    if TWO_NORMS:
        tl.store(res_ptr + o_out, b_a, mask=m_mc)
        b_w2 = tl.load(w2_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
        b_b2 = tl.load(b2_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
        b_xhat2, _ = _normalize(b_a, m_c, inv_c, eps)
        b_h = b_xhat2 * b_w2[None, :] + b_b2[None, :]
    else:
        tl.store(res_ptr + o_out, b_s, mask=m_mc)
        b_h = b_a
    tl.store(h_ptr + o_out, b_h.to(h_ptr.dtype.element_ty), mask=m_mc)


@triton.jit(do_not_specialize=_NO_SPECIALIZE_ROWS)
def _residual_norm_bwd_kernel(
    x_ptr,
    y_ptr,
    mask_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    gres_ptr,
    gh_ptr,
    dx_ptr,
    dy_ptr,
    dw1_ptr,
    db1_ptr,
    dw2_ptr,
    db2_ptr,
    inv_keep,
    eps,
    inv_c,
    M,
    T,
    N,
    C,
    G,
    stride_x_b,
    stride_x_t,
    stride_x_n,
    stride_y_b,
    stride_y_t,
    stride_y_n,
    stride_m_b,
    stride_m_t,
    stride_m_n,
    stride_gr_b,
    stride_gr_t,
    stride_gr_n,
    stride_gh_b,
    stride_gh_t,
    stride_gh_n,
    ADD_Y: tl.constexpr,
    HAS_DY: tl.constexpr,
    HAS_MASK: tl.constexpr,
    TWO_NORMS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # x is s itself (ADD_Y=False: the saved one-norm output) or r, with s = r + y / keep * mask rebuilt here.
    # Each of the G programs walks row tiles pid, pid + G, ... and keeps its LayerNorm weight/bias gradient sums in
    # registers; it writes them once to row pid of the (G, C) partial buffers, which the launcher sums.
    pid = tl.program_id(0)
    eps = tl.cast(eps, tl.float32)
    inv_c = tl.cast(inv_c, tl.float32)
    o_c = tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_w1 = tl.load(w1_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
    acc_dw1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    acc_db1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    if TWO_NORMS:
        b_b1 = tl.load(b1_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
        b_w2 = tl.load(w2_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
        acc_dw2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        acc_db2 = tl.zeros([BLOCK_C], dtype=tl.float32)

    for i_t in range(pid, tl.cdiv(M, BLOCK_M), G):
        o_m = i_t * BLOCK_M + tl.arange(0, BLOCK_M)
        m_m = o_m < M
        m_mc = m_m[:, None] & m_c[None, :]
        i_b, i_t, i_n = _row_index(o_m, T, N)
        p_x = x_ptr + (i_b * stride_x_b + i_t * stride_x_t + i_n * stride_x_n)[:, None] + o_c[None, :]
        b_s = tl.load(p_x, mask=m_mc, other=0.0).to(tl.float32)
        if HAS_MASK:
            p_k = mask_ptr + i_b * stride_m_b + i_t * stride_m_t + i_n * stride_m_n
            b_k = tl.load(p_k, mask=m_m, other=0.0).to(tl.float32)
        if ADD_Y:
            p_y = y_ptr + (i_b * stride_y_b + i_t * stride_y_t + i_n * stride_y_n)[:, None] + o_c[None, :]
            b_y = tl.load(p_y, mask=m_mc, other=0.0).to(tl.float32)
            if HAS_MASK:
                b_y = b_y * tl.cast(inv_keep, tl.float32) * b_k[:, None]
            b_s += b_y
        b_xhat1, b_rstd1 = _normalize(b_s, m_c, inv_c, eps)

        # Incoming gradients may be broadcast (stride-0) views: strides honoured; padded rows/columns load as 0.
        p_gr = gres_ptr + (i_b * stride_gr_b + i_t * stride_gr_t + i_n * stride_gr_n)[:, None] + o_c[None, :]
        p_gh = gh_ptr + (i_b * stride_gh_b + i_t * stride_gh_t + i_n * stride_gh_n)[:, None] + o_c[None, :]
        b_gres = tl.load(p_gr, mask=m_mc, other=0.0).to(tl.float32)
        b_gh = tl.load(p_gh, mask=m_mc, other=0.0).to(tl.float32)

        if TWO_NORMS:
            # h = LN_2(a), res = a: da = LN_2 backward + grad_res.
            b_a = b_xhat1 * b_w1[None, :] + b_b1[None, :]
            b_xhat2, b_rstd2 = _normalize(b_a, m_c, inv_c, eps)
            acc_dw2 += tl.sum(b_gh * b_xhat2, 0)
            acc_db2 += tl.sum(b_gh, 0)
            b_ga = _normalize_bwd(b_gh * b_w2[None, :], b_xhat2, b_rstd2, m_c, inv_c) + b_gres
            acc_dw1 += tl.sum(b_ga * b_xhat1, 0)
            acc_db1 += tl.sum(b_ga, 0)
            b_ds = _normalize_bwd(b_ga * b_w1[None, :], b_xhat1, b_rstd1, m_c, inv_c)
        else:
            # h = LN_1(s), res = s: ds = LN_1 backward + grad_res (the residual gradient accumulation).
            acc_dw1 += tl.sum(b_gh * b_xhat1, 0)
            acc_db1 += tl.sum(b_gh, 0)
            b_ds = _normalize_bwd(b_gh * b_w1[None, :], b_xhat1, b_rstd1, m_c, inv_c) + b_gres

        o_out = o_m.to(tl.int64)[:, None] * C + o_c[None, :]
        tl.store(dx_ptr + o_out, b_ds.to(dx_ptr.dtype.element_ty), mask=m_mc)
        if HAS_DY:
            b_dy = b_ds
            if HAS_MASK:
                b_dy = b_ds * b_k[:, None] * tl.cast(inv_keep, tl.float32)
            tl.store(dy_ptr + o_out, b_dy.to(dy_ptr.dtype.element_ty), mask=m_mc)

    o_p = pid.to(tl.int64) * C + o_c
    tl.store(dw1_ptr + o_p, acc_dw1, mask=m_c)
    tl.store(db1_ptr + o_p, acc_db1, mask=m_c)
    if TWO_NORMS:
        tl.store(dw2_ptr + o_p, acc_dw2, mask=m_c)
        tl.store(db2_ptr + o_p, acc_db2, mask=m_c)


@triton.jit
def _gelu_parts(b_z):
    """Phi(z) = 0.5 (1 + erf(z / sqrt 2)), the normal CDF: exact GELU is z Phi(z)."""
    return 0.5 * (1.0 + tl.math.erf(b_z * 0.7071067811865476))


@triton.jit(do_not_specialize=["M", "H"])
def _bias_gelu_fwd_kernel(
    u_ptr,
    b_ptr,
    g_ptr,
    M,
    H,
    stride_u_m,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    o_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < H
    m_mn = (o_m < M)[:, None] & m_n[None, :]
    p_u = u_ptr + o_m.to(tl.int64)[:, None] * stride_u_m + o_n[None, :]
    b_z = tl.load(p_u, mask=m_mn, other=0.0).to(tl.float32)
    b_z += tl.load(b_ptr + o_n, mask=m_n, other=0.0).to(tl.float32)[None, :]
    b_g = b_z * _gelu_parts(b_z)
    tl.store(g_ptr + o_m.to(tl.int64)[:, None] * H + o_n[None, :], b_g.to(g_ptr.dtype.element_ty), mask=m_mn)


@triton.jit(do_not_specialize=["M", "H", "G"])
def _bias_gelu_bwd_kernel(
    u_ptr,
    b_ptr,
    dg_ptr,
    du_ptr,
    db_ptr,
    M,
    H,
    G,
    stride_u_m,
    stride_dg_m,
    stride_dg_n,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Program (pid_g, pid_n) walks row tiles pid_g, pid_g + G, ... of one column block and sums the bias gradient
    # for it in registers, written once to row pid_g of the (G, H) partial buffer.
    pid_g = tl.program_id(0)
    pid_n = tl.program_id(1)
    o_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < H
    b_b = tl.load(b_ptr + o_n, mask=m_n, other=0.0).to(tl.float32)
    acc_db = tl.zeros([BLOCK_N], dtype=tl.float32)
    for i_t in range(pid_g, tl.cdiv(M, BLOCK_M), G):
        o_m = i_t * BLOCK_M + tl.arange(0, BLOCK_M)
        m_mn = (o_m < M)[:, None] & m_n[None, :]
        o_m64 = o_m.to(tl.int64)[:, None]
        b_z = tl.load(u_ptr + o_m64 * stride_u_m + o_n[None, :], mask=m_mn, other=0.0).to(tl.float32) + b_b[None, :]
        # dg may be a broadcast (stride-0) view: both strides honoured.
        p_dg = dg_ptr + o_m64 * stride_dg_m + o_n[None, :].to(tl.int64) * stride_dg_n
        b_dg = tl.load(p_dg, mask=m_mn, other=0.0).to(tl.float32)
        # d/dz [z Phi(z)] = Phi(z) + z phi(z)
        b_dz = b_dg * (_gelu_parts(b_z) + b_z * tl.exp(-0.5 * b_z * b_z) * 0.3989422804014327)
        tl.store(du_ptr + o_m64 * H + o_n[None, :], b_dz.to(du_ptr.dtype.element_ty), mask=m_mn)
        acc_db += tl.sum(b_dz, 0)
    tl.store(db_ptr + pid_g.to(tl.int64) * H + o_n, acc_db, mask=m_n)


# ----------------------------------------------------------------------------------------------------------------
# Launch configuration: the single source of truth for the launchers and for report_cases().
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowConfig:
    block_m: int
    block_c: int
    num_warps_fwd: int
    num_warps_bwd: int


def _norm_config(C: int) -> RowConfig:
    """One (BLOCK_M, BLOCK_C) tile of 2048 fp32 values per program (at most 64 rows, so narrow rows still give many
    tiles), 8 warps: 8 values per thread and live tensor. From the report: at 4 warps the two-norm backward needed
    ~180 registers at C = 512 (114 at 8 warps), and narrow tiles (32 x 64) of the forward hit the 255 cap and spilled
    (the per-row index and statistics vectors are replicated across a row's threads). 2048-wide rows: see below."""
    block_c = max(16, triton.next_power_of_2(C))
    block_m = max(1, min(64, 2048 // block_c))
    # The backward's per-column vectors (weights, four gradient accumulators) grow with BLOCK_C: at 2048 wide, 8 warps
    # sat at 128 registers with an 8 B spill on sm_90; 16 warps halve them.
    return RowConfig(block_m=block_m, block_c=block_c, num_warps_fwd=8, num_warps_bwd=16 if block_c >= 2048 else 8)


#: Every BLOCK_C the launchers can pick (C from 1 to MAX_CHANNELS).
_NORM_BLOCK_CS = tuple(2**k for k in range(4, 12))
#: bias + GELU tile: elementwise, 16 values per thread at 4 warps.
_GELU_BLOCK_M, _GELU_BLOCK_N, _GELU_WARPS = 16, 128, 4


def _partial_programs(device: torch.device, tiles: int) -> int:
    """Programs of a backward that reduces per-program partial sums: a few per SM on a GPU (enough to fill it, few
    enough that the (G, C) partial buffer stays small), a handful in the interpreter (it runs programs one by one; >1
    tile per program keeps the tile loop exercised)."""
    if device.type == "cuda":
        per = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        per = 4
    return max(1, min(tiles, per))


# ----------------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------------


def _check_float(t: torch.Tensor, what: str, op: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: {what} dtype must be float32, float16 or bfloat16, got {t.dtype}")


def _check_norm_args(
    r: torch.Tensor,
    y: torch.Tensor | None,
    mask: torch.Tensor | None,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor | None,
    b2: torch.Tensor | None,
    h_dtype: torch.dtype,
) -> tuple[int, int, int, int]:
    """Validate before launch; returns (B, T, N, C). Errors say what was expected and what came."""
    _check_float(r, "r", _OP)
    if r.dim() != 4:
        raise ValueError(f"{_OP}: r must be 4-D (B, T, N, C), got shape {tuple(r.shape)}")
    B, T, N, C = r.shape
    if not 1 <= C <= MAX_CHANNELS:
        raise ValueError(f"{_OP}: at most {MAX_CHANNELS} channels are supported (dim 3 of r), got C={C}")
    if y is not None:
        _check_float(y, "y", _OP)
        if y.shape != r.shape:
            raise ValueError(f"{_OP}: y must have r's shape {tuple(r.shape)}, got {tuple(y.shape)}")
    if mask is not None:
        if y is None:
            raise ValueError(f"{_OP}: a DropPath mask needs a branch output y to scale")
        if not isinstance(mask, torch.Tensor) or mask.shape != (B, T, N):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{_OP}: mask must be a (B, T, N) = {(B, T, N)} tensor (any strides), got {got}")
        _check_float(mask, "mask", _OP)
    if (w2 is None) != (b2 is None):
        raise ValueError(f"{_OP}: the second LayerNorm needs both w2 and b2 (or neither)")
    for name, p in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        if p is None:
            continue
        _check_float(p, name, _OP)
        if p.shape != (C,):
            raise ValueError(f"{_OP}: {name} must have shape ({C},), got {tuple(p.shape)}")
    if h_dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{_OP}: h_dtype must be float32, float16 or bfloat16, got {h_dtype}")
    tensors = [t for t in (r, y, mask, w1, b1, w2, b2) if t is not None]
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{_OP}: all tensors must be on one device, got {sorted(str(d) for d in devices)}")
    return B, T, N, C


def _runtime_reasons(device: torch.device, dtypes: list[torch.dtype], op: str) -> list[str]:
    reasons: list[str] = []
    for dtype in dict.fromkeys(dtypes):
        reasons += [f"{op}: cannot run the Triton kernel here: {r}" for r in triton_unavailable_reasons(device, dtype)]
    return list(dict.fromkeys(reasons))


def unsupported_reasons(x: torch.Tensor, h_dtype: torch.dtype | None = None) -> list[str]:
    """Why the block kernels cannot run on (B, T, N, C) activations like ``x`` here (empty list when they can).

    ``h_dtype`` is the GEMM-input dtype the block would emit (default ``x.dtype``). Checks the channel count, the
    dtypes and the device (meta tensors are fine: only shape, dtype and device are read).
    """
    h_dtype = x.dtype if h_dtype is None else h_dtype
    try:
        w = torch.empty(x.shape[-1], device=x.device, dtype=x.dtype)
        _check_norm_args(x, None, None, w, w, None, None, h_dtype)
    except (TypeError, ValueError) as exc:
        return [str(exc)]
    return _runtime_reasons(x.device, [x.dtype, h_dtype], "block kernels")


def _raise_if_cannot_run(tensors: list[torch.Tensor], op: str) -> None:
    reasons = _runtime_reasons(tensors[0].device, [t.dtype for t in tensors], op)
    if reasons:
        raise RuntimeError("; ".join(reasons))


def _check_rows(M: int) -> None:
    # Row indices are decomposed into (b, t, n) in int32 inside the kernels.
    if M >= 2**31:
        raise ValueError(f"{_OP}: B*T*N must be below 2**31 rows, got {M}")


def _unit_channel_stride(t: torch.Tensor) -> torch.Tensor:
    # The kernels honour any strides on B, T, N (0 included); a channel dim without unit stride is copied.
    return t if t.stride(-1) == 1 else t.contiguous()


# ----------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------


def residual_norm_fwd(
    r: torch.Tensor,
    y: torch.Tensor | None,
    mask: torch.Tensor | None,
    keep: float,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor | None,
    b2: torch.Tensor | None,
    eps: float,
    h_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, C) r, y, (B, T, N) mask -> (res fp32, h in h_dtype), both (B, T, N, C); launches the forward kernel.

    One norm: res = s = r + y / keep * mask, h = LN_1(s). Two norms: res = LN_1(s), h = LN_2(res).
    """
    B, T, N, C = _check_norm_args(r, y, mask, w1, b1, w2, b2, h_dtype)
    _raise_if_cannot_run([r, w1] + ([y] if y is not None else []) + [torch.empty(0, dtype=h_dtype)], _OP)
    r = _unit_channel_stride(r)
    y = None if y is None else _unit_channel_stride(y)
    res = torch.empty((B, T, N, C), dtype=torch.float32, device=r.device)
    h = torch.empty((B, T, N, C), dtype=h_dtype, device=r.device)
    M = B * T * N
    _check_rows(M)
    if M == 0:
        return res, h
    cfg = _norm_config(C)
    ys = y.stride()[:3] if y is not None else (0, 0, 0)
    ms = mask.stride() if mask is not None else (0, 0, 0)
    with device_guard(r):
        _residual_norm_fwd_kernel[(triton.cdiv(M, cfg.block_m),)](
            r,
            y if y is not None else r,
            mask if mask is not None else r,
            w1,
            b1,
            w2 if w2 is not None else w1,
            b2 if b2 is not None else b1,
            res,
            h,
            1.0 / keep,
            float(eps),
            1.0 / C,
            M,
            T,
            N,
            C,
            *r.stride()[:3],
            *ys,
            *ms,
            HAS_Y=y is not None,
            HAS_MASK=mask is not None,
            TWO_NORMS=w2 is not None,
            BLOCK_M=cfg.block_m,
            BLOCK_C=cfg.block_c,
            num_warps=cfg.num_warps_fwd,
            num_stages=1,
        )
    return res, h


def residual_norm_bwd(
    grad_res: torch.Tensor,
    grad_h: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor | None,
    mask: torch.Tensor | None,
    keep: float,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor | None,
    eps: float,
    add_y: bool,
    r_dtype: torch.dtype,
    y_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`residual_norm_fwd` -> (dr, dy or None, dw1, db1, dw2 or None, db2 or None).

    ``x`` is s (``add_y`` False) or r (``add_y`` True: s = r + y / keep * mask is rebuilt). ``y`` is read only when
    ``add_y``; with ``add_y`` False a non-None ``y`` only asks for dy. dr is ``r_dtype``, dy ``y_dtype``, the weight
    gradients take the weights' dtype. ``grad_res``/``grad_h`` may have any strides on B, T, N (0 included).
    """
    B, T, N, C = x.shape
    dev = x.device
    want_dy = y is not None
    grad_res = _unit_channel_stride(grad_res.expand(B, T, N, C))
    grad_h = _unit_channel_stride(grad_h.expand(B, T, N, C))
    x = _unit_channel_stride(x)
    y_in = _unit_channel_stride(y) if (y is not None and add_y) else None
    M = B * T * N
    _check_rows(M)
    cfg = _norm_config(C)
    tiles = triton.cdiv(M, cfg.block_m)
    G = _partial_programs(dev, tiles) if M else 1
    dx = torch.empty((B, T, N, C), dtype=r_dtype, device=dev)
    dy = torch.empty((B, T, N, C), dtype=y_dtype, device=dev) if want_dy else None
    two = w2 is not None
    parts = torch.empty((4 if two else 2, G, C), dtype=torch.float32, device=dev)  # every row written
    if M:
        ms = mask.stride() if mask is not None else (0, 0, 0)
        ys = y_in.stride()[:3] if y_in is not None else (0, 0, 0)
        with device_guard(x):
            _residual_norm_bwd_kernel[(G,)](
                x,
                y_in if y_in is not None else x,
                mask if mask is not None else x,
                w1,
                b1,
                w2 if two else w1,
                grad_res,
                grad_h,
                dx,
                dy if dy is not None else dx,
                parts[0],
                parts[1],
                parts[2] if two else parts[0],
                parts[3] if two else parts[1],
                1.0 / keep,
                float(eps),
                1.0 / C,
                M,
                T,
                N,
                C,
                G,
                *x.stride()[:3],
                *ys,
                *ms,
                *grad_res.stride()[:3],
                *grad_h.stride()[:3],
                ADD_Y=y_in is not None,
                HAS_DY=want_dy,
                HAS_MASK=mask is not None,
                TWO_NORMS=two,
                BLOCK_M=cfg.block_m,
                BLOCK_C=cfg.block_c,
                num_warps=cfg.num_warps_bwd,
                num_stages=1,
            )
    # The small reduction over programs; one fresh tensor per gradient (views of one sum would alias).
    dw1, db1 = parts[0].sum(0).to(w1.dtype), parts[1].sum(0).to(b1.dtype)
    dw2, db2 = (parts[2].sum(0).to(w2.dtype), parts[3].sum(0).to(w2.dtype)) if two else (None, None)
    return dx, dy, dw1, db1, dw2, db2


def _check_gelu_args(u: torch.Tensor, b: torch.Tensor) -> int:
    _check_float(u, "u", _OP_GELU)
    _check_float(b, "b", _OP_GELU)
    if u.dim() < 1 or b.dim() != 1 or b.shape[0] != u.shape[-1]:
        raise ValueError(f"{_OP_GELU}: b must be 1-D with u's last dim, got u {tuple(u.shape)} and b {tuple(b.shape)}")
    if u.device != b.device:
        raise ValueError(f"{_OP_GELU}: u is on {u.device}, b on {b.device}")
    return u.shape[-1]


def bias_gelu_fwd(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., H) u, (H,) b -> (..., H) gelu(u + b) (exact erf, fp32 math) in u's dtype; launches the forward kernel."""
    H = _check_gelu_args(u, b)
    _raise_if_cannot_run([u, b], _OP_GELU)
    u2 = _unit_channel_stride(u).reshape(-1, H)
    g = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    M = u2.shape[0]
    if M == 0 or H == 0:
        return g
    grid = (triton.cdiv(M, _GELU_BLOCK_M), triton.cdiv(H, _GELU_BLOCK_N))
    with device_guard(u):
        _bias_gelu_fwd_kernel[grid](
            u2, b, g, M, H, u2.stride(0), BLOCK_M=_GELU_BLOCK_M, BLOCK_N=_GELU_BLOCK_N, num_warps=_GELU_WARPS
        )
    return g


def bias_gelu_bwd(grad_g: torch.Tensor, u: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H) grad of g, u, (H,) b -> (du in u's dtype, db in b's dtype); launches the backward kernel.

    ``grad_g`` may have any strides (0 included).
    """
    H = _check_gelu_args(u, b)
    u2 = _unit_channel_stride(u).reshape(-1, H)
    M = u2.shape[0]
    dg = grad_g.expand(u.shape).reshape(-1, H)  # a view where the strides allow it (stride-0 stays stride-0)
    du = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    tiles = triton.cdiv(M, _GELU_BLOCK_M)
    G = _partial_programs(u.device, tiles) if M else 1
    part = torch.empty((G, H), dtype=torch.float32, device=u.device)  # every row written
    if M and H:
        with device_guard(u):
            _bias_gelu_bwd_kernel[(G, triton.cdiv(H, _GELU_BLOCK_N))](
                u2,
                b,
                dg,
                du,
                part,
                M,
                H,
                G,
                u2.stride(0),
                dg.stride(0),
                dg.stride(1),
                BLOCK_M=_GELU_BLOCK_M,
                BLOCK_N=_GELU_BLOCK_N,
                num_warps=_GELU_WARPS,
            )
    return du, part.sum(0).to(b.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Registered torch operators (custom_op, as kernels/spatial.py explains: checkable under the interpreter, and
# torch.compile/export see them through their fake impls).
# ----------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastmixste::residual_layernorm", mutates_args=())
def _residual_layernorm_op(
    r: torch.Tensor,
    y: torch.Tensor | None,
    mask: torch.Tensor | None,
    keep: float,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor | None,
    b2: torch.Tensor | None,
    eps: float,
    h_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    return residual_norm_fwd(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype)


@_residual_layernorm_op.register_fake
def _(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype):
    _check_norm_args(r, y, mask, w1, b1, w2, b2, h_dtype)
    return r.new_empty(r.shape, dtype=torch.float32), r.new_empty(r.shape, dtype=h_dtype)


@torch.library.custom_op("fastmixste::residual_layernorm_backward", mutates_args=())
def _residual_layernorm_backward_op(
    grad_res: torch.Tensor,
    grad_h: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor | None,
    mask: torch.Tensor | None,
    keep: float,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor | None,
    eps: float,
    add_y: bool,
    r_dtype: torch.dtype,
    y_dtype: torch.dtype,
) -> list[torch.Tensor]:
    dx, dy, dw1, db1, dw2, db2 = residual_norm_bwd(
        grad_res, grad_h, x, y, mask, keep, w1, b1, w2, eps, add_y, r_dtype, y_dtype
    )
    # Absent gradients come back as distinct empty placeholders (an op's outputs can be neither None nor aliases).
    return [dx] + [x.new_empty(0) if t is None else t for t in (dy, dw1, db1, dw2, db2)]


@_residual_layernorm_backward_op.register_fake
def _(grad_res, grad_h, x, y, mask, keep, w1, b1, w2, eps, add_y, r_dtype, y_dtype):
    two = w2 is not None
    return [
        x.new_empty(x.shape, dtype=r_dtype),
        x.new_empty(x.shape, dtype=y_dtype) if y is not None else x.new_empty(0),
        w1.new_empty(w1.shape),
        b1.new_empty(b1.shape),
        w2.new_empty(w2.shape) if two else x.new_empty(0),
        w2.new_empty(w2.shape) if two else x.new_empty(0),
    ]


def _norm_setup_context(ctx, inputs, output) -> None:
    r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype = inputs
    res, _ = output
    two = w2 is not None
    # One norm: res is s itself, keep it (it is the next op's r, so the storage is shared). Two norms: keep r and y
    # and rebuild s in the backward (r is the previous one-norm op's saved s).
    x = r if two else res
    ctx.save_for_backward(x, y if two else None, mask, w1, b1, w2)
    ctx.add_y = two and y is not None
    ctx.has_y = y is not None
    ctx.keep, ctx.eps = keep, eps
    ctx.r_dtype, ctx.y_dtype = r.dtype, (y.dtype if y is not None else r.dtype)
    ctx.two = two


def _norm_backward(ctx, grad_res: torch.Tensor | None, grad_h: torch.Tensor | None):
    x, y, mask, w1, b1, w2 = ctx.saved_tensors
    if grad_res is None:
        grad_res = torch.zeros((), dtype=torch.float32, device=x.device).expand(x.shape)
    if grad_h is None:
        grad_h = torch.zeros((), dtype=torch.float32, device=x.device).expand(x.shape)
    # The y argument tells the op both "rebuild s" (add_y) and "write dy": pass a stand-in when only dy is wanted.
    y_arg = y if ctx.add_y else (x if ctx.has_y else None)
    dx, dy, dw1, db1, dw2, db2 = torch.ops.fastmixste.residual_layernorm_backward(
        grad_res, grad_h, x, y_arg, mask, ctx.keep, w1, b1, w2, ctx.eps, ctx.add_y, ctx.r_dtype, ctx.y_dtype
    )
    return (
        dx,
        dy if ctx.has_y else None,
        None,
        None,
        dw1,
        db1,
        dw2 if ctx.two else None,
        db2 if ctx.two else None,
        None,
        None,
    )


_residual_layernorm_op.register_autograd(_norm_backward, setup_context=_norm_setup_context)


@torch.library.custom_op("fastmixste::bias_gelu", mutates_args=())
def _bias_gelu_op(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return bias_gelu_fwd(u, b)


@_bias_gelu_op.register_fake
def _(u, b):
    _check_gelu_args(u, b)
    return torch.empty(u.shape, dtype=u.dtype, device=u.device)


@torch.library.custom_op("fastmixste::bias_gelu_backward", mutates_args=())
def _bias_gelu_backward_op(grad_g: torch.Tensor, u: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return bias_gelu_bwd(grad_g, u, b)


@_bias_gelu_backward_op.register_fake
def _(grad_g, u, b):
    return torch.empty(u.shape, dtype=u.dtype, device=u.device), b.new_empty(b.shape)


def _gelu_setup_context(ctx, inputs, output) -> None:
    u, b = inputs
    ctx.save_for_backward(u, b)  # u: the pre-activation, what eager GELU saves too


def _gelu_backward(ctx, grad_g: torch.Tensor):
    u, b = ctx.saved_tensors
    du, db = torch.ops.fastmixste.bias_gelu_backward(grad_g, u, b)
    return du, db


_bias_gelu_op.register_autograd(_gelu_backward, setup_context=_gelu_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# Public functions and eager references
# ----------------------------------------------------------------------------------------------------------------


def _expand_mask(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """A DropPath mask broadcastable to (B, T, N, 1), e.g. (B, T, 1, 1) or (B, 1, N, 1) -> a (B, T, N) view."""
    if mask is None:
        return None
    B, T, N, _ = shape
    try:
        return mask.expand(B, T, N, 1)[..., 0]
    except RuntimeError as exc:
        raise ValueError(
            f"{_OP}: mask must broadcast to (B, T, N, 1) = {(B, T, N, 1)}, got {tuple(mask.shape)}"
        ) from exc


def residual_layernorm(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, C) residual r, branch output y -> (res, h), both (B, T, N, C), in one fused pass.

    ``mask`` (optional) is the DropPath draw, broadcastable to (B, T, N, 1) ((B, T, 1, 1) per frame, (B, 1, N, 1)
    per joint), values 0 or 1; ``keep`` = 1 - drop_prob. ``y`` may be None (s = r) and may be a broadcast view.
    ``res`` is float32, ``h`` is ``h_dtype`` (default: w1's dtype). Differentiable in r, y, w1, b1, w2, b2.
    C <= 2048, dtypes float32/float16/bfloat16. Equivalent to::

        s = r.float() + (y if mask is None else y.div(keep) * mask)
        a = F.layer_norm(s, (C,), w1, b1, eps)
        res, h = (s, a) if w2 is None else (a, F.layer_norm(a, (C,), w2, b2, eps))
        return res, h.to(h_dtype)
    """
    h_dtype = w1.dtype if h_dtype is None else h_dtype
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"{_OP}: keep (1 - drop_prob) must be in (0, 1], got {keep}")
    if not isinstance(r, torch.Tensor) or r.dim() != 4:
        got = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
        raise ValueError(f"{_OP}: r must be a 4-D (B, T, N, C) tensor, got {got}")
    m = _expand_mask(mask, r.shape)
    _check_norm_args(r, y, m, w1, b1, w2, b2, h_dtype)
    _raise_if_cannot_run([r, w1] + ([y] if y is not None else []) + [torch.empty(0, dtype=h_dtype)], _OP)
    return torch.ops.fastmixste.residual_layernorm(r, y, m, float(keep), w1, b1, w2, b2, float(eps), h_dtype)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """The eager computation :func:`residual_layernorm` fuses, as the MixSTE block and DropPath do it (any device).

    ``res`` comes out in r's dtype promoted with float32 (float64 in stays float64, for references).
    """
    h_dtype = w1.dtype if h_dtype is None else h_dtype
    C = r.shape[-1]
    s = r.to(torch.promote_types(r.dtype, torch.float32))
    if y is not None:
        s = s + (y if mask is None else y.div(keep) * mask)
    a = F.layer_norm(s, (C,), w1.to(s.dtype), b1.to(s.dtype), eps)
    if w2 is None:
        return s, a.to(h_dtype)
    return a, F.layer_norm(a, (C,), w2.to(s.dtype), b2.to(s.dtype), eps).to(h_dtype)


def bias_gelu(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., H) u (a Linear output without its bias), (H,) b -> (..., H) exact-erf GELU of u + b, fused in Triton.

    Math in fp32, output in u's dtype; differentiable in u and b. Equivalent to ``F.gelu(u + b)``.
    """
    _check_gelu_args(u, b)
    _raise_if_cannot_run([u, b], _OP_GELU)
    return torch.ops.fastmixste.bias_gelu(u, b)


def bias_gelu_ref(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The eager ``gelu(u + b)`` (exact erf) that :func:`bias_gelu` fuses (any device and dtype)."""
    return F.gelu(u + b)


# ----------------------------------------------------------------------------------------------------------------
# Ahead-of-time resource report
# ----------------------------------------------------------------------------------------------------------------

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# (HAS_Y, HAS_MASK, TWO_NORMS) of the forward and (ADD_Y, HAS_DY, HAS_MASK, TWO_NORMS) of the backward that the
# fused model launches: first input (r + pos embedding, one norm), after attention (one norm, DropPath), after the
# MLP (two norms, DropPath), and the same without a mask (eval, or drop_path 0). The heaviest variant of each is
# compiled for every BLOCK_C; all variants at the model's C = 512.
_FWD_VARIANTS = [(True, False, False), (True, True, False), (True, True, True), (True, False, True)]
_BWD_VARIANTS = [
    (False, True, False, False),
    (False, True, True, False),
    (True, True, True, True),
    (True, True, False, True),
]


def _norm_case(backward: bool, flags: tuple, block_c: int, act: torch.dtype) -> KernelCase:
    cfg = _norm_config(block_c)
    assert cfg.block_c == block_c
    ty = _TRITON_DTYPE[act]
    # The precision scheme train.run uses: fp32 residual and LayerNorm parameters, activations (y, h, mask, grad_h,
    # dy) in the autocast dtype; fp32 throughout for fp32.
    if backward:
        fn = _residual_norm_bwd_kernel
        names = ["ADD_Y", "HAS_DY", "HAS_MASK", "TWO_NORMS"]
        ptr_ty = {"x_ptr": "fp32", "y_ptr": ty, "mask_ptr": ty, "gh_ptr": ty, "dy_ptr": ty}
    else:
        fn = _residual_norm_fwd_kernel
        names = ["HAS_Y", "HAS_MASK", "TWO_NORMS"]
        ptr_ty = {"y_ptr": ty, "mask_ptr": ty, "h_ptr": ty}
    constexprs = dict(zip(names, flags)) | {"BLOCK_M": cfg.block_m, "BLOCK_C": block_c}
    signature: dict[str, str] = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + ptr_ty.get(name, "fp32")
        elif name in ("inv_keep", "eps", "inv_c"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    ptrs = [n for n in fn.arg_names if n.endswith("_ptr")]
    flag_text = " ".join(f"{k}={int(v)}" for k, v in zip(names, flags))
    return KernelCase(
        name=fn.__name__,
        fn=fn,
        signature=signature,
        constexprs=constexprs,
        num_warps=cfg.num_warps_bwd if backward else cfg.num_warps_fwd,
        num_stages=1,
        dtype=ty,
        label=f"BLOCK_M={cfg.block_m} BLOCK_C={block_c} {flag_text}",
        extra={"divisible_by_16": ptrs},
    )


def _gelu_case(backward: bool, act: torch.dtype) -> KernelCase:
    ty = _TRITON_DTYPE[act]
    fn = _bias_gelu_bwd_kernel if backward else _bias_gelu_fwd_kernel
    constexprs = {"BLOCK_M": _GELU_BLOCK_M, "BLOCK_N": _GELU_BLOCK_N}
    signature: dict[str, str] = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in ("b_ptr", "db_ptr") else f"*{ty}"
        else:
            signature[name] = "i32"
    ptrs = [n for n in fn.arg_names if n.endswith("_ptr")]
    return KernelCase(
        name=fn.__name__,
        fn=fn,
        signature=signature,
        constexprs=constexprs,
        num_warps=_GELU_WARPS,
        num_stages=1,
        dtype=ty,
        label=f"BLOCK_M={_GELU_BLOCK_M} BLOCK_N={_GELU_BLOCK_N}",
        extra={"divisible_by_16": ptrs + ["stride_u_m"]},
    )


def report_cases() -> list[KernelCase]:
    """The block kernels' configurations for ``python -m fastmixste.kernels.report``.

    Every tile the launchers can pick (each BLOCK_C, with its BLOCK_M and warps) with the heaviest flag variant
    (two norms, y, mask: the most live tensors), in bf16 (what train.run's autocast feeds) and fp32; every variant
    the model launches at its C = 512 in bf16, fp16 and fp32; bias + GELU in all three. fp16 and bf16 compile to the
    same register allocation apart from the conversions, so fp16 is compiled at C = 512 only.
    """
    cases: list[KernelCase] = []
    for act in (torch.bfloat16, torch.float32):
        for block_c in _NORM_BLOCK_CS:
            cases.append(_norm_case(False, _FWD_VARIANTS[2], block_c, act))
            cases.append(_norm_case(True, _BWD_VARIANTS[2], block_c, act))
    for act in (torch.bfloat16, torch.float16, torch.float32):
        others = [(False, f) for f in _FWD_VARIANTS if f != _FWD_VARIANTS[2]]
        others += [(True, f) for f in _BWD_VARIANTS if f != _BWD_VARIANTS[2]]
        if act == torch.float16:
            others += [(False, _FWD_VARIANTS[2]), (True, _BWD_VARIANTS[2])]
        cases += [_norm_case(backward, flags, 512, act) for backward, flags in others]
        cases.append(_gelu_case(False, act))
        cases.append(_gelu_case(True, act))
    return cases
