"""Fused residual + DropPath + LayerNorm(s) between the GEMMs of a MixSTE block, forward and backward.

MixSTE's block is x = x + dp(attn(norm1(x))); x = x + dp(mlp(norm2(x))), and the model applies a shared post-norm
(Spatial_norm / Temporal_norm) after every block. Outside the GEMMs (cuBLAS) and the attention cores the eager step
spends its time in memory-bound passes: LayerNorm, DropPath (``div`` then ``*mask``), residual adds, casts, GELU and
bias-gradient sums. Two ops remove most of that traffic: this module's, and bias + GELU (``gelu.py``).

``residual_layernorm(r, y, mask, keep, w1, b1, w2, b2)``, one pass over a (B, T, N, C) tile of rows::

    s = r + (y + yb) / keep * mask   # residual add + DropPath (mask: one draw per frame or per joint)
    a = LN_1(s)                      # norm2 inside the block, or the post-norm after it
    one norm:   res, h = s, a        # s is the next residual, a the next GEMM input
    two norms:  res, h = a, LN_2(a)  # post-norm folded into the next block's norm1

``yb`` (optional, ``y_bias``) is the bias of the Linear that made y: added here rather than in that GEMM, its
gradient (the column sum of dy) comes out of the backward pass, as the LayerNorm's do, instead of a pass of its own
that re-reads dy (what autograd's Linear backward runs). ``res`` (the residual stream) is float32 whatever the
inputs; ``h`` (a GEMM input) comes out in ``h_dtype`` (bf16/fp16 under autocast), so no cast kernel runs before the
next Linear. The backward takes the gradients of both outputs and writes dr (= ds: the residual gradient
accumulation is the add of grad_res inside the kernel), dy (the DropPath backward) and the LayerNorm weight/bias
gradients (and y_bias's) as per-program partial sums, reduced by one small sum.
Mean and rstd are recomputed from the saved rows (compute is free in a memory-bound kernel), so the forward writes
nothing but ``res`` and ``h``; backward keeps ``s`` (one norm: the ``res`` output itself) or ``r`` and ``y`` (two
norms: ``r`` is the previous op's saved ``s``, the same storage).

Recompute ``lean`` (``fastmixste.model.fused``): the backward kernel can also write the forward's output h (the GEMM
input, from the normalisation it recomputes anyway), so a caller need not keep it for the weight gradient of the
Linear that read it. A constexpr flag (``WRITE_H``; launcher ``write_h``, the backward op's trailing ``write_h``,
default off, so the default binaries do not change). The rebuilt values are the forward's arithmetic on the same
fp32 values: bitwise the forward's in the interpreter; on a GPU the backward with the flag runs 16 warps (8 spilled,
see ``launch_plan``) where the forward runs 8, so a row's sums may be reduced in another order and h may differ from
the stored one in the last bit.

Split (the template of ``_common.py``): ``_residual_norm_fwd_kernel`` / ``_residual_norm_bwd_kernel`` (jit) ->
``launch_plan`` -> launchers ``residual_norm_fwd`` / ``residual_norm_bwd`` -> the custom ops
``fastmixste::residual_layernorm(_backward)`` with autograd -> :func:`residual_layernorm`. Reference:
:func:`fastmixste.kernels.reference.residual_layernorm_ref`. No FLOP formula: no matmul, and FlopCounterMode counts
matmul FLOPs only (it ignores aten LayerNorm too). ``norm_saved`` / ``norm_grads`` / ``norm_arguments`` are the
public pieces ``fastmixste.model.fused`` composes with a GEMM.

Element types. The kernels compute in fp32 whatever they load, so the launchers pass the residual stream (r, res,
grad_res, dr), the DropPath mask and the LayerNorm parameters as fp32 (a lossless cast where they are not: the
first block's input, a .half() model's parameters, the small mask), and only the activations in their own dtypes:
h (and grad_h) in ``h_dtype``, y (and dy) in y's dtype when that is float32 or ``h_dtype`` or ``h_dtype`` is
float32, else float32. That bounds the binaries the launchers can pick (every one is in ``report_cases()``) without
a lossy cast anywhere.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import triton
import triton.language as tl

from . import _common
from ._common import (
    CPU_PROGRAMS,
    SUPPORTED_DTYPES,
    KernelCase,
    Refusal,
    TypedLaunchConfig,
    as_dtype,
    backward_programs,
    device_guard,
    dtype_refusals,
    launch,
    machine_refusals,
    raise_refusals,
    reasons_of,
    tensor_arg,
    typed_config,
    typed_report_cases_from,
    unit_channel_stride,
)
from .reference import residual_layernorm_ref

__all__ = [
    "MAX_CHANNELS",
    "launch_plan",
    "norm_arguments",
    "norm_grads",
    "norm_saved",
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

# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------

# Row counts and (B, T, N) sizes vary per call: not specialised, so one compiled kernel per (flags, C tile, dtypes).
_NO_SPECIALIZE_ROWS = ["M", "T", "N", "C", "G"]


@triton.jit
def _row_index(o_m, T, N):
    """Rows m of the flattened (B, T, N) -> their (b, t, n) as int64; each tensor's offset is b*sb + t*st + n*sn.

    The divisions run in int32 (the checks refuse B*T*N >= 2**31): int64 division is a called subroutine, whose stack
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
    yb_ptr,
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
    TWO_NORMS: tl.constexpr,
    Y_BIAS: tl.constexpr,
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
    # y may be a broadcast view (a positional embedding expanded over B and N): its strides are honoured. Without
    # y the launcher passes a stride-0 view of zeros (s = r + 0).
    p_y = y_ptr + (i_b * stride_y_b + i_t * stride_y_t + i_n * stride_y_n)[:, None] + o_c[None, :]
    b_y = tl.load(p_y, mask=m_mc, other=0.0).to(tl.float32)
    if Y_BIAS:  # the bias of the Linear that made y, added here rather than in the GEMM (its gradient: sum of dy)
        b_y += tl.load(yb_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)[None, :]
    # DropPath as eager computes it, y / keep * mask (times 1/keep: within an ulp), mask 0 or 1 per row group.
    # Without a DropPath the launcher passes a stride-0 mask of ones and keep = 1: y * 1 * 1 is y exactly.
    p_k = mask_ptr + i_b * stride_m_b + i_t * stride_m_t + i_n * stride_m_n
    b_k = tl.load(p_k, mask=m_m, other=0.0).to(tl.float32)
    b_s += b_y * tl.cast(inv_keep, tl.float32) * b_k[:, None]

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
    b2_ptr,
    yb_ptr,
    gres_ptr,
    gh_ptr,
    dx_ptr,
    dy_ptr,
    dw1_ptr,
    db1_ptr,
    dw2_ptr,
    db2_ptr,
    dyb_ptr,
    h_ptr,
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
    TWO_NORMS: tl.constexpr,
    WRITE_H: tl.constexpr,
    Y_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # x is s itself (one norm: the saved output) or r (two norms), with s = r + y / keep * mask rebuilt here.
    # Each of the G programs walks row tiles pid, pid + G, ... and keeps its LayerNorm weight/bias gradient sums in
    # registers; it writes them once to row pid of the (G, C) partial buffers, which the launcher sums.
    # WRITE_H: also write the forward's h, rebuilt by the forward's own arithmetic from the same fp32 values (bitwise
    # what the forward stored wherever the row reductions run in the same order), so a caller need not keep it.
    # Y_BIAS: y had the bias of the Linear that made it added in the forward (added again where s is rebuilt); its
    # gradient, the column sum of dy, is summed here like the LayerNorm's, so no pass re-reads dy for it.
    pid = tl.program_id(0)
    eps = tl.cast(eps, tl.float32)
    inv_c = tl.cast(inv_c, tl.float32)
    o_c = tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_w1 = tl.load(w1_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
    acc_dw1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    acc_db1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    if TWO_NORMS or WRITE_H:
        b_b1 = tl.load(b1_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
    if TWO_NORMS:
        b_w2 = tl.load(w2_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
        if WRITE_H:
            b_b2 = tl.load(b2_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)
        acc_dw2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        acc_db2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    if Y_BIAS:
        acc_dyb = tl.zeros([BLOCK_C], dtype=tl.float32)
        if TWO_NORMS:
            b_yb = tl.load(yb_ptr + o_c, mask=m_c, other=0.0).to(tl.float32)

    for i_tile in range(pid, tl.cdiv(M, BLOCK_M), G):
        o_m = i_tile * BLOCK_M + tl.arange(0, BLOCK_M)
        m_m = o_m < M
        m_mc = m_m[:, None] & m_c[None, :]
        i_b, i_t, i_n = _row_index(o_m, T, N)
        p_x = x_ptr + (i_b * stride_x_b + i_t * stride_x_t + i_n * stride_x_n)[:, None] + o_c[None, :]
        b_s = tl.load(p_x, mask=m_mc, other=0.0).to(tl.float32)
        # The DropPath mask (ones, stride 0, keep = 1 without one).
        p_k = mask_ptr + i_b * stride_m_b + i_t * stride_m_t + i_n * stride_m_n
        b_k = tl.load(p_k, mask=m_m, other=0.0).to(tl.float32)
        if TWO_NORMS:
            p_y = y_ptr + (i_b * stride_y_b + i_t * stride_y_t + i_n * stride_y_n)[:, None] + o_c[None, :]
            b_y = tl.load(p_y, mask=m_mc, other=0.0).to(tl.float32)
            if Y_BIAS:
                b_y += b_yb[None, :]
            b_s += b_y * tl.cast(inv_keep, tl.float32) * b_k[:, None]
        b_xhat1, b_rstd1 = _normalize(b_s, m_c, inv_c, eps)
        o_out = o_m.to(tl.int64)[:, None] * C + o_c[None, :]

        # Incoming gradients may be broadcast (stride-0) views: strides honoured; padded rows/columns load as 0.
        p_gr = gres_ptr + (i_b * stride_gr_b + i_t * stride_gr_t + i_n * stride_gr_n)[:, None] + o_c[None, :]
        p_gh = gh_ptr + (i_b * stride_gh_b + i_t * stride_gh_t + i_n * stride_gh_n)[:, None] + o_c[None, :]
        b_gres = tl.load(p_gr, mask=m_mc, other=0.0).to(tl.float32)
        b_gh = tl.load(p_gh, mask=m_mc, other=0.0).to(tl.float32)

        if TWO_NORMS:
            # h = LN_2(a), res = a: da = LN_2 backward + grad_res.
            b_a = b_xhat1 * b_w1[None, :] + b_b1[None, :]
            b_xhat2, b_rstd2 = _normalize(b_a, m_c, inv_c, eps)
            if WRITE_H:  # stored at once: a tile kept live through the gradient math costs registers
                tl.store(h_ptr + o_out, (b_xhat2 * b_w2[None, :] + b_b2[None, :]).to(h_ptr.dtype.element_ty), mask=m_mc)
            acc_dw2 += tl.sum(b_gh * b_xhat2, 0)
            acc_db2 += tl.sum(b_gh, 0)
            b_ga = _normalize_bwd(b_gh * b_w2[None, :], b_xhat2, b_rstd2, m_c, inv_c) + b_gres
            acc_dw1 += tl.sum(b_ga * b_xhat1, 0)
            acc_db1 += tl.sum(b_ga, 0)
            b_ds = _normalize_bwd(b_ga * b_w1[None, :], b_xhat1, b_rstd1, m_c, inv_c)
        else:
            # h = LN_1(s), res = s: ds = LN_1 backward + grad_res (the residual gradient accumulation).
            if WRITE_H:  # stored last: stored here, the fp32 2048-wide variant kept an 8 B stack frame on sm_90
                b_h = b_xhat1 * b_w1[None, :] + b_b1[None, :]
            acc_dw1 += tl.sum(b_gh * b_xhat1, 0)
            acc_db1 += tl.sum(b_gh, 0)
            b_ds = _normalize_bwd(b_gh * b_w1[None, :], b_xhat1, b_rstd1, m_c, inv_c) + b_gres

        # dy, the DropPath backward (written to a scratch buffer when the op had no y).
        b_dy = b_ds * b_k[:, None] * tl.cast(inv_keep, tl.float32)
        if Y_BIAS:  # padded rows and columns are zero in dy (their loads are)
            acc_dyb += tl.sum(b_dy, 0)
        tl.store(dx_ptr + o_out, b_ds.to(dx_ptr.dtype.element_ty), mask=m_mc)
        tl.store(dy_ptr + o_out, b_dy.to(dy_ptr.dtype.element_ty), mask=m_mc)
        if WRITE_H and not TWO_NORMS:
            tl.store(h_ptr + o_out, b_h.to(h_ptr.dtype.element_ty), mask=m_mc)

    o_p = pid.to(tl.int64) * C + o_c
    if Y_BIAS:
        tl.store(dyb_ptr + o_p, acc_dyb, mask=m_c)
    tl.store(dw1_ptr + o_p, acc_dw1, mask=m_c)
    tl.store(db1_ptr + o_p, acc_db1, mask=m_c)
    if TWO_NORMS:
        tl.store(dw2_ptr + o_p, acc_dw2, mask=m_c)
        tl.store(db2_ptr + o_p, acc_db2, mask=m_c)


# ----------------------------------------------------------------------------------------------------------------
# Launch configurations: the single source of truth for the launchers and for report_cases()
# ----------------------------------------------------------------------------------------------------------------

#: Widths of the LayerNorm tiles (BLOCK_C), each with BLOCK_M = 2048 // BLOCK_C rows: the narrowest that holds C.
#: Three widths keep the compiled variety small (every one is compiled twice per typing); the model's C = 512 fills
#: its tile, and narrower rows only leave masked lanes idle (no extra memory traffic).
_NORM_BLOCK_CS: tuple[int, ...] = (128, 512, MAX_CHANNELS)

_F32 = torch.float32
#: (write_h, BLOCK_C) of the one-norm backward with a y bias that run 8 warps (see launch_plan; from kernels.report).
_Y_BIAS_EIGHT_WARPS = {(False, 2048), (True, 512)}


def _norm_tile(C: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_C): one tile of 2048 fp32 values per program, 8 warps (16 for the 2048-wide backward, see
    launch_plan): 8 values per thread and live tensor.
    From the report: at 4 warps the two-norm backward needed ~180 registers at C = 512 (114 at 8 warps), and narrow
    tiles (32 x 64) of the forward hit the 255 cap and spilled (the per-row index and statistics vectors are
    replicated across a row's threads)."""
    block_c = next(w for w in _NORM_BLOCK_CS if w >= C)
    return 2048 // block_c, block_c


def _y_dtype(h_dtype: torch.dtype, y_dtype: torch.dtype | None) -> torch.dtype:
    """The type the kernels read y (and write dy) in: h's, or float32 (a lossless cast where y is another 16-bit
    type, or 16-bit beside a float32 h). Without y: h's (the stand-in of zeros)."""
    return h_dtype if y_dtype in (None, h_dtype) else _F32


def _norm_types(h_dtype: torch.dtype, y_dtype: torch.dtype | None, backward: bool) -> dict[str, torch.dtype]:
    """Element type of every pointer argument of the residual-norm kernel: activations (y, h, their gradients) in
    their own types (see _y_dtype), everything else float32."""
    y = _y_dtype(h_dtype, y_dtype)
    fn = _residual_norm_bwd_kernel if backward else _residual_norm_fwd_kernel
    types = {name: _F32 for name in fn.arg_names if name.endswith("_ptr")}
    if backward:
        types.update(y_ptr=y, dy_ptr=y, gh_ptr=h_dtype, h_ptr=h_dtype)
    else:
        types.update(y_ptr=y, h_ptr=h_dtype)
    return types


def launch_plan(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    backward: bool,
    *,
    y_dtype: torch.dtype | None = None,
    two_norms: bool = False,
    write_h: bool = False,
    y_bias: bool = False,
    programs: int = CPU_PROGRAMS,
) -> list[tuple[TypedLaunchConfig, tuple[int, ...]]]:
    """Every (configuration, grid) a launcher runs for (B, T, N, C) rows of ``shape``, in launch order; empty for
    empty input.

    ``dtype`` is the h (and grad_h) dtype, ``y_dtype`` y's (None without y: the launchers then pass a stride-0 y of
    zeros, and dy goes to a scratch buffer, so y is no variant; the DropPath mask is a runtime operand too). The
    backward runs at most ``programs`` persistent programs (4 per SM on a GPU), each summing its own rows of the
    weight/bias gradients. ``write_h`` (backward only): the backward also writes the forward's h, for callers that
    did not keep it. ``y_bias``: y comes with the bias of the Linear that made it (added in the kernels; the backward
    sums its gradient).
    """
    if write_h and not backward:
        raise ValueError("write_h asks a backward kernel to rebuild the forward's output; the forward writes it anyway")
    B, T, N, C = shape
    M = B * T * N
    if M == 0 or C == 0:
        return []
    block_m, block_c = _norm_tile(C)
    types = _norm_types(dtype, y_dtype, backward)
    tiles = triton.cdiv(M, block_m)
    flags = {"TWO_NORMS": two_norms, "Y_BIAS": y_bias, "BLOCK_M": block_m, "BLOCK_C": block_c}
    if backward:
        flags = {"TWO_NORMS": two_norms, "WRITE_H": write_h, "Y_BIAS": y_bias, "BLOCK_M": block_m, "BLOCK_C": block_c}
    fn = _residual_norm_bwd_kernel if backward else _residual_norm_fwd_kernel
    # The backward's per-column vectors (weights, four gradient accumulators) grow with BLOCK_C: at 2048 wide,
    # 8 warps sat at 128 registers with an 8 B spill on sm_90; 16 warps halve them. The fp32 two-norm backward
    # of the 16 x 128 tile did the same on sm_90 (128 registers, 8 B) once the strides are known multiples of
    # 16, as on a GPU for C = 128: 16 warps, 98 registers (kernels.report).
    # Writing h as well (write_h) took 128-221 registers at 8 warps, with 8 B spills in some typings (sm_89 and
    # sm_90): 16 warps for every such variant.
    wide = block_c >= 2048 or (two_norms and dtype == _F32 and block_c == 128) or write_h
    # With the y bias's accumulator, two one-norm backward variants at 16 warps settled on 64 registers with an 8 B
    # spill (2048 wide without write_h on sm_90, 512 wide with write_h on sm_89); at 8 warps they take 113-152
    # registers, no spill, on both targets (the 128-wide write_h one is the other way round: it stays at 16).
    if y_bias and not two_norms and (write_h, block_c) in _Y_BIAS_EIGHT_WARPS:
        wide = False
    num_warps = 16 if backward and wide else 8
    cfg = typed_config(fn, flags, num_warps, types, ("inv_keep", "eps", "inv_c"))
    return [(cfg, (max(1, min(tiles, programs)) if backward else tiles,))]


# ----------------------------------------------------------------------------------------------------------------
# Checks and refusals
# ----------------------------------------------------------------------------------------------------------------


def _norm_refusals(
    r: torch.Tensor,
    y: torch.Tensor | None,
    mask: torch.Tensor | None,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor | None,
    b2: torch.Tensor | None,
    h_dtype: torch.dtype,
) -> list[Refusal]:
    """Input checks of residual_layernorm's structure (raise TypeError/ValueError), then every reason the kernels
    cannot run this valid input: element types, the channel limit, the machine."""
    tensor_arg(r, "r", _OP)
    if r.dim() != 4:
        raise ValueError(f"{_OP}: r must be 4-D (B, T, N, C), got shape {tuple(r.shape)}")
    B, T, N, C = r.shape
    if y is not None and tensor_arg(y, "y", _OP).shape != r.shape:
        raise ValueError(f"{_OP}: y must have r's shape {tuple(r.shape)}, got {tuple(y.shape)}")
    if mask is not None:
        if y is None:
            raise ValueError(f"{_OP}: a DropPath mask needs a branch output y to scale")
        if tensor_arg(mask, "mask", _OP).shape != (B, T, N):
            raise ValueError(f"{_OP}: mask must be a (B, T, N) = {(B, T, N)} tensor (any strides), got {mask.shape}")
    if (w2 is None) != (b2 is None):
        raise ValueError(f"{_OP}: the second LayerNorm needs both w2 and b2 (or neither)")
    named = [("r", r), ("y", y), ("mask", mask), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]
    for name, p in named[3:]:
        if p is not None and tensor_arg(p, name, _OP).shape != (C,):
            raise ValueError(f"{_OP}: {name} must have shape ({C},), got {tuple(p.shape)}")
    if not isinstance(h_dtype, torch.dtype):
        raise TypeError(f"{_OP}: h_dtype must be a torch.dtype, got {type(h_dtype).__name__}")
    devices = {t.device for _, t in named if t is not None}
    if len(devices) != 1:
        raise ValueError(f"{_OP}: all tensors must be on one device, got {sorted(str(d) for d in devices)}")
    dtypes = [(name, t.dtype) for name, t in named if t is not None] + [("h_dtype", h_dtype)]
    refusals = dtype_refusals(dtypes)
    if C > MAX_CHANNELS:
        refusals.append(Refusal(f"at most {MAX_CHANNELS} channels are supported (dim 3 of r), got C={C}"))
    if B * T * N >= 2**31:  # row indices are decomposed into (b, t, n) in int32 inside the kernels
        refusals.append(Refusal(f"B*T*N must be below 2**31 rows, got {B * T * N}"))
    kernel_dtypes = [_F32, h_dtype] + ([_y_dtype(h_dtype, y.dtype)] if y is not None else [])
    return refusals + machine_refusals(r, kernel_dtypes)


def _check_norm(*args) -> tuple[int, int, int, int]:
    raise_refusals(_OP, _norm_refusals(*args))
    return args[0].shape


def _check_y_bias(yb: torch.Tensor | None, y: torch.Tensor | None, x: torch.Tensor, op: str = _OP) -> None:
    """``yb``, the bias of the Linear that made y: None, or a (C,) float tensor on x's device beside a y."""
    if yb is None:
        return
    C = x.shape[-1]
    tensor_arg(yb, "y_bias", op)
    if y is None:
        raise ValueError(f"{op}: y_bias is the bias of the Linear that made y; it needs a y")
    if yb.shape != (C,) or yb.device != x.device or yb.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"{op}: y_bias must be a ({C},) float32/float16/bfloat16 tensor on {x.device}, got "
            f"{tuple(yb.shape)} {yb.dtype} on {yb.device}"
        )


def unsupported_reasons(x: torch.Tensor, h_dtype: torch.dtype | None = None) -> list[str]:
    """Why the block kernels cannot run on (B, T, N, C) activations like ``x`` here (empty list when they can).

    ``h_dtype`` is the GEMM-input dtype the block would emit (default ``x.dtype``). Checks the channel count, the
    dtypes and the device (a meta tensor asks about shape and dtype alone). bias + GELU (``gelu.py``) has no limit
    of its own beyond dtype and device, which these cover. Never raises.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return reasons_of(_norm_refusals, x, None, None, None, None, None, None, h_dtype)
    w = x.new_empty(x.shape[-1], dtype=_F32)
    return reasons_of(_norm_refusals, x, None, None, w, w, None, None, x.dtype if h_dtype is None else h_dtype)


def _zeros_y(like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The branch output of "no y": zeros, a (B, T, N, C) view of one (C,) row (s = r + 0 = r); the kernels read
    channels at unit stride."""
    return torch.zeros(like.shape[-1], dtype=dtype, device=like.device).expand(like.shape)


def _ones_mask(like: torch.Tensor, B: int, T: int, N: int) -> torch.Tensor:
    """The mask of "no DropPath": ones, a stride-0 (B, T, N) float32 view of one element."""
    return torch.ones((), dtype=_F32, device=like.device).expand(B, T, N)


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
    yb: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, C) r, y, (B, T, N) mask -> (res fp32, h in h_dtype), both (B, T, N, C); launches the forward kernel.

    One norm: res = s = r + (y + yb) / keep * mask, h = LN_1(s). Two norms: res = LN_1(s), h = LN_2(res). ``yb``
    (C,): the bias of the Linear that made y, or None.
    """
    B, T, N, C = _check_norm(r, y, mask, w1, b1, w2, b2, h_dtype)
    _check_y_bias(yb, y, r)
    res = _common.new_buffer((B, T, N, C), r, _F32)
    h = _common.new_buffer((B, T, N, C), r, h_dtype)
    two = w2 is not None
    plan = launch_plan((B, T, N, C), h_dtype, False, y_dtype=None if y is None else y.dtype, two_norms=two,
                       y_bias=yb is not None)  # fmt: skip
    if not plan:
        return res, h
    types = _norm_types(h_dtype, None if y is None else y.dtype, backward=False)
    r = unit_channel_stride(as_dtype(r, _F32))
    y = unit_channel_stride(as_dtype(y, types["y_ptr"])) if y is not None else _zeros_y(r, h_dtype)
    inv_keep = 1.0 / keep if mask is not None else 1.0
    mask = as_dtype(mask, _F32) if mask is not None else _ones_mask(r, B, T, N)
    w1, b1 = as_dtype(w1, _F32), as_dtype(b1, _F32)
    w2, b2 = (as_dtype(w2, _F32), as_dtype(b2, _F32)) if two else (w1, b1)
    yb = as_dtype(yb, _F32) if yb is not None else b1  # read only with Y_BIAS
    with device_guard(r):
        for cfg, grid in plan:
            launch(cfg, grid, r, y, mask, w1, b1, w2, b2, yb, res, h, inv_keep, float(eps), 1.0 / C, B * T * N, T, N, C,
                   *r.stride()[:3], *y.stride()[:3], *mask.stride())  # fmt: skip
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
    b2: torch.Tensor | None = None,
    write_h: bool = False,
    yb: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gradients of :func:`residual_norm_fwd` -> (dr, dy or None, dw1, db1, dw2 or None, db2 or None, h or None,
    dyb or None).

    ``x`` is s (one norm) or r (two norms: s = r + y / keep * mask is rebuilt when ``add_y``, s = r without y).
    ``y`` is read only when ``add_y``; with ``add_y`` False a non-None ``y`` only asks for dy. dr is ``r_dtype``,
    dy ``y_dtype``, the weight gradients take the weights' dtype; grad_h's dtype is the forward's h dtype.
    ``grad_res``/``grad_h`` may
    have any strides on B, T, N (0 included). ``write_h``: also return the forward's h (grad_h's dtype), rebuilt in
    the same pass for callers that did not keep it; two norms need ``b2`` for it. ``yb``: the forward's y bias (added
    where s is rebuilt); its gradient dyb, the column sum of dy in yb's dtype, is summed in the same pass.
    """
    two = w2 is not None
    B, T, N, C = _check_norm(x, y, mask, w1, b1, w2, w2, tensor_arg(grad_h, "grad_h", _OP).dtype)
    if write_h and two and b2 is None:
        raise ValueError(f"{_OP}: write_h with two norms needs b2 (h = LN_2(a) uses it)")
    if b2 is not None and (not two or tensor_arg(b2, "b2", _OP).shape != (C,) or b2.device != x.device):
        got = f"{tuple(b2.shape)} on {b2.device}" + ("" if two else " without w2")
        raise ValueError(f"{_OP}: b2 must be a ({C},) tensor on {x.device} beside w2, got {got}")
    if add_y and not two:
        raise ValueError(f"{_OP}: add_y (rebuild s = r + y / keep * mask) needs two norms; one norm saves s itself")
    for name, g in (("grad_res", grad_res), ("grad_h", grad_h)):
        if tensor_arg(g, name, _OP).shape != x.shape:
            raise ValueError(f"{_OP}: {name} must have shape {tuple(x.shape)}, got {tuple(g.shape)}")
    _check_y_bias(yb, y, x)
    want_dy = y is not None
    h_dtype = grad_h.dtype
    k_y = None if y is None else y_dtype
    types = _norm_types(h_dtype, k_y, backward=True)
    plan = launch_plan((B, T, N, C), h_dtype, True, y_dtype=k_y, two_norms=two, write_h=write_h,
                       y_bias=yb is not None, programs=backward_programs(x.device))  # fmt: skip
    G = plan[0][1][0] if plan else 1
    h = _common.new_buffer((B, T, N, C), x, h_dtype) if write_h else None
    dx = _common.new_buffer((B, T, N, C), x, _F32)
    dy = _common.new_buffer((B, T, N, C), x, types["dy_ptr"])  # scratch without y
    n_parts = (4 if two else 2) + (yb is not None)
    parts = _common.new_buffer((n_parts, G, C), x, _F32)  # every row written
    if plan:
        grad_res = unit_channel_stride(as_dtype(grad_res, _F32))
        grad_h = unit_channel_stride(grad_h)
        x = unit_channel_stride(as_dtype(x, _F32))
        # Two norms without y (add_y False) rebuild s = r + 0; one norm reads no y (x is s).
        y_in = unit_channel_stride(as_dtype(y, types["y_ptr"])) if add_y else _zeros_y(x, types["y_ptr"])
        inv_keep = 1.0 / keep if mask is not None else 1.0
        mask = as_dtype(mask, _F32) if mask is not None else _ones_mask(x, B, T, N)
        w1f, b1f = as_dtype(w1, _F32), as_dtype(b1, _F32)
        w2f = as_dtype(w2, _F32) if two else w1f
        b2f = as_dtype(b2, _F32) if two and b2 is not None else b1f  # read only with two norms and write_h
        ybf = as_dtype(yb, _F32) if yb is not None else b1f  # read only with Y_BIAS
        with device_guard(x):
            for cfg, grid in plan:
                # Without write_h, h points at grad_h (h's type, never written).
                launch(cfg, grid, x, y_in, mask, w1f, b1f, w2f, b2f, ybf, grad_res, grad_h, dx, dy,
                       parts[0], parts[1], parts[2 if two else 0], parts[3 if two else 1], parts[n_parts - 1],
                       grad_h if h is None else h,
                       inv_keep, float(eps),
                       1.0 / C, B * T * N, T, N, C, G, *x.stride()[:3], *y_in.stride()[:3], *mask.stride(),
                       *grad_res.stride()[:3],
                       *grad_h.stride()[:3])  # fmt: skip
    else:
        parts.zero_()  # no rows: zero gradients of the weights
    # The small reduction over programs; one fresh tensor per gradient (views of one sum would alias).
    dw1, db1 = parts[0].sum(0).to(w1.dtype), parts[1].sum(0).to(b1.dtype)
    dw2, db2 = (parts[2].sum(0).to(w2.dtype), parts[3].sum(0).to(w2.dtype)) if two else (None, None)
    dyb = parts[n_parts - 1].sum(0).to(yb.dtype) if yb is not None else None
    return dx.to(r_dtype), (dy.to(y_dtype) if want_dy else None), dw1, db1, dw2, db2, h, dyb


# ----------------------------------------------------------------------------------------------------------------
# Registered torch operators (custom_op: the reason is in _common.py)
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
    yb: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return residual_norm_fwd(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, yb)


@_residual_layernorm_op.register_fake
def _(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, yb=None):
    _check_norm(r, y, mask, w1, b1, w2, b2, h_dtype)
    _check_y_bias(yb, y, r)
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
    b2: torch.Tensor | None = None,
    write_h: bool = False,
    yb: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    outs = residual_norm_bwd(grad_res, grad_h, x, y, mask, keep, w1, b1, w2, eps, add_y, r_dtype, y_dtype, b2, write_h,
                             yb)  # fmt: skip
    # Absent outputs come back as distinct empty placeholders (an op's outputs can be neither None nor aliases):
    # [dr, dy, dw1, db1, dw2, db2, h, dyb].
    return [outs[0]] + [x.new_empty(0) if t is None else t for t in outs[1:]]


@_residual_layernorm_backward_op.register_fake
def _(grad_res, grad_h, x, y, mask, keep, w1, b1, w2, eps, add_y, r_dtype, y_dtype, b2=None, write_h=False, yb=None):
    two = w2 is not None
    if write_h and two and b2 is None:
        raise ValueError(f"{_OP}: write_h with two norms needs b2 (h = LN_2(a) uses it)")
    _check_y_bias(yb, y, x)
    return [
        x.new_empty(x.shape, dtype=r_dtype),
        x.new_empty(x.shape, dtype=y_dtype) if y is not None else x.new_empty(0),
        w1.new_empty(w1.shape),
        b1.new_empty(b1.shape),
        w2.new_empty(w2.shape) if two else x.new_empty(0),
        w2.new_empty(w2.shape) if two else x.new_empty(0),
        x.new_empty(x.shape, dtype=grad_h.dtype) if write_h else x.new_empty(0),
        yb.new_empty(yb.shape) if yb is not None else x.new_empty(0),
    ]


def norm_saved(ctx, inputs: tuple, res: torch.Tensor) -> tuple:
    """The op's arguments and its ``res`` output -> the tensors its backward needs, (x, y, mask, w1, b1, w2, b2, yb);
    records the backward's flags on ``ctx``. Shared with the composites of ``fastmixste.model.fused``, which save these
    plus their Linear's parameters."""
    r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, yb = inputs
    two = w2 is not None
    # One norm: res is s itself, keep it (it is the next op's r, so the storage is shared). Two norms: keep r and y
    # and rebuild s in the backward (r is the previous one-norm op's saved s).
    ctx.add_y = two and y is not None
    ctx.has_y = y is not None
    ctx.keep, ctx.eps = keep, eps
    ctx.r_dtype, ctx.y_dtype, ctx.h_dtype = r.dtype, (y.dtype if y is not None else r.dtype), h_dtype
    ctx.two = two
    # Unused outputs (the res of a last post-norm, the h of an op whose h is not read) get None, not a zero-filled
    # activation: the backward treats a None gradient as zeros through a stride-0 view.
    ctx.set_materialize_grads(False)
    return (r if two else res, y if two else None, mask, w1, b1, w2, b2, yb)


def norm_grads(
    ctx, saved: tuple, grad_res: torch.Tensor | None, grad_h: torch.Tensor | None, write_h: bool = False
) -> tuple[tuple, torch.Tensor | None]:
    """:func:`norm_saved`'s tensors and the output gradients -> (the gradients of the op's 10 arguments, the
    forward's h rebuilt when ``write_h``, else None)."""
    x, y, mask, w1, b1, w2, b2, yb = saved
    if grad_res is None:
        grad_res = torch.zeros((), dtype=torch.float32, device=x.device).expand(x.shape)
    if grad_h is None:
        grad_h = torch.zeros((), dtype=ctx.h_dtype, device=x.device).expand(x.shape)
    # The y argument tells the op both "rebuild s" (add_y) and "write dy": pass a stand-in when only dy is wanted.
    y_arg = y if ctx.add_y else (x if ctx.has_y else None)
    dx, dy, dw1, db1, dw2, db2, h, dyb = torch.ops.fastmixste.residual_layernorm_backward(
        grad_res, grad_h, x, y_arg, mask, ctx.keep, w1, b1, w2, ctx.eps, ctx.add_y, ctx.r_dtype, ctx.y_dtype,
        b2 if write_h and ctx.two else None, write_h, yb,
    )  # fmt: skip
    two = ctx.two
    grads = (dx, dy if ctx.has_y else None, None, None, dw1, db1, dw2 if two else None, db2 if two else None,
             None, None, dyb if yb is not None else None)  # fmt: skip
    return grads, (h if write_h else None)


def _norm_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*norm_saved(ctx, inputs, output[0]))


def _norm_backward(ctx, grad_res: torch.Tensor | None, grad_h: torch.Tensor | None):
    return norm_grads(ctx, ctx.saved_tensors, grad_res, grad_h)[0]


_residual_layernorm_op.register_autograd(_norm_backward, setup_context=_norm_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------------------


def _expand_mask(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """A DropPath mask broadcastable to (B, T, N, 1), e.g. (B, T, 1, 1) or (B, 1, N, 1) -> a (B, T, N) view."""
    if mask is None:
        return None
    B, T, N, _ = shape
    if tensor_arg(mask, "mask", _OP).dtype in SUPPORTED_DTYPES:
        mask = mask.to(_F32)  # the kernels' mask type, cast while it is small (B, T, 1, 1) or (B, 1, N, 1)
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
    y_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, C) residual r, branch output y -> (res, h), both (B, T, N, C), in one fused pass.

    ``mask`` (optional) is the DropPath draw, broadcastable to (B, T, N, 1) ((B, T, 1, 1) per frame, (B, 1, N, 1)
    per joint), values 0 or 1; ``keep`` = 1 - drop_prob. ``y`` may be None (s = r) and may be a broadcast view.
    ``res`` is float32, ``h`` is ``h_dtype`` (default: w1's dtype). ``y_bias`` (C,): the bias of the Linear that
    made y, added here instead of in that Linear, so that its gradient (the column sum of dy) comes out of this op's
    backward pass instead of a pass of its own over dy. Differentiable in r, y, w1, b1, w2, b2, y_bias.
    C <= 2048, dtypes float32/float16/bfloat16. Raises TypeError/ValueError for an unsupported input and
    RuntimeError where the kernels cannot run, before launch; empty input gives empty outputs. Equivalent to::

        y = y + y_bias  # with a y_bias
        s = r.float() + (y if mask is None else y.div(keep) * mask)
        a = F.layer_norm(s, (C,), w1, b1, eps)
        res, h = (s, a) if w2 is None else (a, F.layer_norm(a, (C,), w2, b2, eps))
        return res, h.to(h_dtype)
    """
    args = norm_arguments(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, y_bias=y_bias)
    return torch.ops.fastmixste.residual_layernorm(*args)


def norm_arguments(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, op: str = _OP, y_bias=None) -> tuple:
    """:func:`residual_layernorm`'s arguments, checked -> the op's (mask as a (B, T, N) view, h_dtype filled in).

    ``op`` names the caller in the messages of its own checks (``fastmixste.model.fused.norm_linear`` passes its name).
    """
    h_dtype = tensor_arg(w1, "w1", op).dtype if h_dtype is None else h_dtype
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"{op}: keep (1 - drop_prob) must be in (0, 1], got {keep}")
    if not isinstance(r, torch.Tensor) or r.dim() != 4:
        got = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
        raise ValueError(f"{op}: r must be a 4-D (B, T, N, C) tensor, got {got}")
    m = _expand_mask(mask, r.shape)
    # Forward and backward check the same things (the backward's types are the forward's).
    _check_norm(r, y, m, w1, b1, w2, b2, h_dtype)
    _check_y_bias(y_bias, y, r, op)
    return r, y, m, float(keep), w1, b1, w2, b2, float(eps), h_dtype, y_bias


# ----------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile cases for ``python -m fastmixste.kernels.report``
# ----------------------------------------------------------------------------------------------------------------

#: One channel count per tile width (C = BLOCK_C): nothing else in a configuration depends on the shape.
REPORT_CHANNELS: tuple[int, ...] = _NORM_BLOCK_CS


def report_cases() -> list[KernelCase]:
    """Every configuration the launchers can pick, for any shape, dtypes and flags, one case each: each BLOCK_C
    x one/two norms x with/without a y bias x the (h, y) element typings (h's type for y, or float32), forward and
    backward (with and without writing h)."""
    plans = []
    for h, y in ((h, y) for h in SUPPORTED_DTYPES for y in SUPPORTED_DTYPES):
        for C, two, yb in ((C, two, yb) for C in REPORT_CHANNELS for two in (False, True) for yb in (False, True)):
            plans.append((h, launch_plan((1, 1, 1, C), h, False, y_dtype=y, two_norms=two, y_bias=yb)))
            for write_h in (False, True):
                plan = launch_plan((1, 1, 1, C), h, True, y_dtype=y, two_norms=two, write_h=write_h, y_bias=yb)
                plans.append((h, plan))
    return typed_report_cases_from(plans)


#: bias + GELU lived here in release 0.1.0; it is ``gelu.py`` now. The old names resolve for one more release, with a
#: DeprecationWarning.
_MOVED_TO_GELU = ("bias_gelu", "bias_gelu_bwd", "bias_gelu_fwd", "bias_gelu_ref", "check_gelu")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_GELU:
        msg = (f"fastmixste.kernels.block.{name} moved to fastmixste.kernels.gelu.{name}; the old path goes away "
               "in the next release")
        warnings.warn(msg, DeprecationWarning, stacklevel=2)
        from . import gelu

        return getattr(gelu, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
