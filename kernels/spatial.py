"""Fused spatial attention: softmax attention over the N joints of every (batch, frame, head).

Layout: the qkv Linear's output ``qkv`` (B, T, N, 3*C) with channels [q | k | v], each H heads x D, goes in;
``o`` (B, T, N, C), the proj Linear's input, comes out. The kernels read q, k, v through strides and write
``o`` in place, so no permute/contiguous copy surrounds the call, and scores/probabilities never leave the
chip. The sequences are tiny (N = 17 at full scale), so the op is memory-bound: the one thing that matters is
reading qkv once and writing o (or dqkv) once.

Packing. A program owns one head and ``FRAMES = BLOCK_R // N`` consecutive frames, packed densely into
BLOCK_R = 64 rows (row r -> frame r // N, joint r % N). S = Q K^T is a 64 x 64 tile masked to its
block-diagonal (same-frame) part. For N = 17 that is 3 frames = 51 of 64 rows in use, where padding every
frame to 32 rows would use 17 of 32; the extra (masked) FLOPs are free in a memory-bound kernel, and every
tl.dot sees 64 x 64 x D tiles (all dims >= 16, as the compiler requires). 64 rows keep the fp32 S, P, dP, dS
tiles at 32 registers/thread each with 4 warps; ``python -m fastmixste.kernels.report`` shows the result
(no spills). Program id 0 enumerates (frame block, head) with the head fastest, so neighbouring programs read
neighbouring channels of the same qkv rows; everything is on grid axis 0 (limit 2^31 - 1), so B*T*H may
exceed 65,535.

Backward recomputes S and P in the tile and takes delta = rowsum(P * dP) there, so it needs neither ``o``
nor an fp32 dq accumulator: only ``qkv`` is saved for backward.

Split (the template of ``_common.py``): ``_spatial_attn_fwd_kernel`` / ``_spatial_attn_bwd_kernel`` (jit) ->
``launch_plan`` -> ``spatial_attn_fwd`` / ``spatial_attn_bwd`` (launchers) -> ``fastmixste::spatial_attention``
(+ ``_backward``, registered ops with autograd) -> :func:`spatial_attention`. Reference:
:func:`fastmixste.kernels.reference.spatial_attention_ref`.
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
    launch,
    needs_backward,
    report_cases_from,
    resolve_scale,
    support_refusals,
)
from .reference import spatial_attention_ref

__all__ = [
    "MAX_SEQ_LEN",
    "launch_plan",
    "report_cases",
    "spatial_attention",
    "spatial_attention_ref",
    "spatial_attn_bwd",
    "spatial_attn_fwd",
    "unsupported_reasons",
]

#: Rows per program; frames are packed densely into them, so N may not exceed it.
BLOCK_R = 64
#: Longest sequence (joints per frame) the kernels accept.
MAX_SEQ_LEN = BLOCK_R

_OP = "spatial_attention"


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------

# Sizes that vary per call (B*T, T, N, frames per program, heads) are not specialised, so one compiled kernel per
# (D, dtype) serves every shape: exactly the set ``report_cases`` compiles. Strides stay specialised (divisible
# by 16 lets the loads vectorise).
_NO_SPECIALIZE = ["BT", "T", "N", "FRAMES", "H"]


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    # fp32 inputs: plain "tf32" would miss the 1e-4 parity bound; "tf32x3" (three TF32 MMAs, ~fp32 accuracy) keeps
    # the tensor-core register layout, where "ieee" lowers to FMA loops that spill on these tiles (see the report).
    # fp16/bf16 ignore the setting.
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _rows(BT, T, N, FRAMES, i_blk, BLOCK_R: tl.constexpr):
    """Row r of the tile is joint j of frame bt; returns (b, t, j) as int64 and the mask of real rows."""
    o_r = tl.arange(0, BLOCK_R)
    f_r = o_r // N
    j_r = o_r - f_r * N
    bt_r = i_blk * FRAMES + f_r
    # Rows past the last whole frame of the tile, or past B*T, are padding.
    m_r = (f_r < FRAMES) & (bt_r < BT)
    return (bt_r // T).to(tl.int64), (bt_r % T).to(tl.int64), j_r.to(tl.int64), f_r, m_r


@triton.jit
def _probabilities(b_s, f_r, m_r, scale):
    """Softmax over same-frame, real columns of the (R, R) score tile; fp32 and unnormalised, with row sums."""
    # Scalar args arrive as fp32 from eager Triton and Python floats from the interpreter: pin to fp32.
    qk_scale = tl.cast(scale, tl.float32) * 1.4426950408889634  # log2(e): softmax via exp2
    m_s = (f_r[:, None] == f_r[None, :]) & m_r[None, :]
    # A finite fill keeps padding rows (every column masked) NaN-free; they are never stored.
    b_s = tl.where(m_s, b_s * qk_scale, -1.0e30)
    b_p = tl.exp2(b_s - tl.max(b_s, 1)[:, None])
    return b_p, tl.sum(b_p, 1)


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _spatial_attn_fwd_kernel(
    qkv_ptr,
    o_ptr,
    scale,
    BT,
    T,
    N,
    FRAMES,
    H,
    stride_qkv_b,
    stride_qkv_t,
    stride_qkv_n,
    stride_o_b,
    stride_o_t,
    stride_o_n,
    D: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tl.static_assert(BLOCK_D >= 16 and BLOCK_R >= 16, "tl.dot needs every dim >= 16")
    tl.static_assert(D % BLOCK_D == 0, "BLOCK_D must divide D")
    pid = tl.program_id(0)
    i_h = pid % H
    i_blk = pid // H
    C = H * D

    b_r, t_r, j_r, f_r, m_r = _rows(BT, T, N, FRAMES, i_blk, BLOCK_R)
    # int64 row offsets: b * stride_b overflows int32 for large batches.
    p_row = qkv_ptr + (b_r * stride_qkv_b + t_r * stride_qkv_t + j_r * stride_qkv_n)[:, None]
    p_row_o = o_ptr + (b_r * stride_o_b + t_r * stride_o_t + j_r * stride_o_n)[:, None]
    o_d = tl.arange(0, BLOCK_D)

    # S = Q K^T, accumulated over D in BLOCK_D slices so only a slice of q and k is live at a time.
    b_s = tl.zeros([BLOCK_R, BLOCK_R], dtype=tl.float32)
    for i_d in tl.static_range(D // BLOCK_D):
        p_q = p_row + (i_h * D + i_d * BLOCK_D + o_d)[None, :]
        b_q = tl.load(p_q, mask=m_r[:, None], other=0.0)
        b_k = tl.load(p_q + C, mask=m_r[:, None], other=0.0)
        b_s += _dot(b_q, tl.trans(b_k), PRECISION)
    b_p, b_l = _probabilities(b_s, f_r, m_r, scale)
    b_p = b_p.to(qkv_ptr.dtype.element_ty)

    # O = P V / l, slice by slice; normalising after P V costs R*D divisions instead of R*R.
    for i_d in tl.static_range(D // BLOCK_D):
        o_c = i_h * D + i_d * BLOCK_D + o_d
        b_v = tl.load(p_row + 2 * C + o_c[None, :], mask=m_r[:, None], other=0.0)
        b_o = _dot(b_p, b_v, PRECISION) / b_l[:, None]
        tl.store(p_row_o + o_c[None, :], b_o.to(o_ptr.dtype.element_ty), mask=m_r[:, None])


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def _spatial_attn_bwd_kernel(
    qkv_ptr,
    do_ptr,
    dqkv_ptr,
    scale,
    BT,
    T,
    N,
    FRAMES,
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
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    tl.static_assert(BLOCK_D >= 16 and BLOCK_R >= 16, "tl.dot needs every dim >= 16")
    tl.static_assert(D % BLOCK_D == 0, "BLOCK_D must divide D")
    pid = tl.program_id(0)
    i_h = pid % H
    i_blk = pid // H
    C = H * D
    dtype = dqkv_ptr.dtype.element_ty

    b_r, t_r, j_r, f_r, m_r = _rows(BT, T, N, FRAMES, i_blk, BLOCK_R)
    p_row = qkv_ptr + (b_r * stride_qkv_b + t_r * stride_qkv_t + j_r * stride_qkv_n)[:, None]
    # dO may be a broadcast (stride-0) or otherwise strided view: its strides are honoured.
    p_row_do = do_ptr + (b_r * stride_do_b + t_r * stride_do_t + j_r * stride_do_n)[:, None]
    p_row_d = dqkv_ptr + (b_r * stride_dqkv_b + t_r * stride_dqkv_t + j_r * stride_dqkv_n)[:, None]
    o_d = tl.arange(0, BLOCK_D)

    # Recompute P exactly as the forward does (then normalise: dV and delta need the true probabilities).
    b_s = tl.zeros([BLOCK_R, BLOCK_R], dtype=tl.float32)
    for i_d in tl.static_range(D // BLOCK_D):
        p_q = p_row + (i_h * D + i_d * BLOCK_D + o_d)[None, :]
        b_q = tl.load(p_q, mask=m_r[:, None], other=0.0)
        b_k = tl.load(p_q + C, mask=m_r[:, None], other=0.0)
        b_s += _dot(b_q, tl.trans(b_k), PRECISION)
    b_p, b_l = _probabilities(b_s, f_r, m_r, scale)
    b_p = b_p / b_l[:, None]
    b_pt = tl.trans(b_p.to(qkv_ptr.dtype.element_ty))

    # dP = dO V^T and dV = P^T dO share the dO slice. Padding rows of dO load as zeros, so they add nothing.
    b_dp = tl.zeros([BLOCK_R, BLOCK_R], dtype=tl.float32)
    for i_d in tl.static_range(D // BLOCK_D):
        o_c = i_h * D + i_d * BLOCK_D + o_d
        b_do = tl.load(p_row_do + o_c[None, :], mask=m_r[:, None], other=0.0).to(qkv_ptr.dtype.element_ty)
        b_v = tl.load(p_row + 2 * C + o_c[None, :], mask=m_r[:, None], other=0.0)
        b_dp += _dot(b_do, tl.trans(b_v), PRECISION)
        tl.store(p_row_d + 2 * C + o_c[None, :], _dot(b_pt, b_do, PRECISION).to(dtype), mask=m_r[:, None])

    # delta = rowsum(P * dP) equals rowsum(dO * O): no need to keep O. dS = P (dP - delta).
    b_delta = tl.sum(b_p * b_dp, 1)
    b_ds = b_p * (b_dp - b_delta[:, None])
    b_ds = (b_ds * tl.cast(scale, tl.float32)).to(qkv_ptr.dtype.element_ty)
    b_dst = tl.trans(b_ds)

    # dQ = dS K scale, dK = dS^T Q scale. q and k are read a second time, from L1/L2 (this program just read
    # them): cheaper than keeping every slice live in registers through the dP loop.
    for i_d in tl.static_range(D // BLOCK_D):
        o_c = i_h * D + i_d * BLOCK_D + o_d
        p_q = p_row + o_c[None, :]
        b_q = tl.load(p_q, mask=m_r[:, None], other=0.0)
        b_k = tl.load(p_q + C, mask=m_r[:, None], other=0.0)
        tl.store(p_row_d + o_c[None, :], _dot(b_ds, b_k, PRECISION).to(dtype), mask=m_r[:, None])
        tl.store(p_row_d + C + o_c[None, :], _dot(b_dst, b_q, PRECISION).to(dtype), mask=m_r[:, None])


# ----------------------------------------------------------------------------------------------------------------
# Launch configuration: the single source of truth for the launchers and for report_cases().
# ----------------------------------------------------------------------------------------------------------------

# (backward, fp32, BLOCK_R, D) -> (BLOCK_D, num_warps). Chosen from the AOT report (registers, spills) on sm_89 and
# sm_90. fp16/bf16 use 64-row tiles for every N. fp32 (tf32x3 dots split every operand in two) needs 32-row tiles
# for N <= 32; its backward spills on one target or the other (whatever the warps) for D = 128, and for D >= 32
# once N > 32 forces 64-row tiles: those fp32 backward classes are not offered (see _FP32_BWD_LIMIT).
_CONFIGS: dict[tuple[bool, bool, int, int], tuple[int, int]] = {
    **{(False, False, 64, D): (min(D, 32), 8 if D >= 128 else 4) for D in (16, 32, 64, 128)},
    **{(True, False, 64, D): (min(D, 32), 8 if D >= 128 else 4) for D in (16, 32, 64, 128)},
    **{(False, True, 32, D): (16, 4) for D in (16, 32, 64, 128)},
    **{(True, True, 32, D): (16, 4) for D in (16, 32, 64)},
    **{(False, True, 64, D): (16, 4) for D in (16, 32, 64, 128)},
    (True, True, 64, 16): (16, 4),
}
_FP32_BWD_LIMIT = "the float32 backward supports head_dim <= 64 for N <= 32 and head_dim 16 for N > 32"


def _precision(dtype: torch.dtype) -> str:
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _block_r(N: int, dtype: torch.dtype) -> int:
    return 32 if dtype == torch.float32 and N <= 32 else BLOCK_R


def _config(N: int, D: int, dtype: torch.dtype, backward: bool) -> LaunchConfig | None:
    """The launch configuration of one problem class, None for the classes no configuration covers.

    One tile per program and no loop over keys: num_stages has nothing to pipeline and stays 1.
    """
    block_r = _block_r(N, dtype)
    entry = _CONFIGS.get((backward, dtype == torch.float32, block_r, D))
    if entry is None:
        return None
    block_d, num_warps = entry
    fn = _spatial_attn_bwd_kernel if backward else _spatial_attn_fwd_kernel
    constexprs = (("D", D), ("BLOCK_R", block_r), ("BLOCK_D", block_d), ("PRECISION", _precision(dtype)))
    return LaunchConfig(fn, constexprs, num_warps=num_warps, num_stages=1)


def launch_plan(
    shape: tuple[int, ...], num_heads: int, dtype: torch.dtype, backward: bool
) -> list[tuple[LaunchConfig, tuple[int]]]:
    """Every (configuration, grid) the forward (or backward) launcher runs for a (B, T, N, 3*C) qkv, in order.

    Empty for empty input; raises ValueError for a class no configuration covers (see :func:`unsupported_reasons`).
    """
    B, T, N, C3 = shape
    D = C3 // (3 * num_heads)
    if B * T == 0 or N == 0:
        return []
    cfg = _config(N, D, dtype, backward)
    if cfg is None:
        raise ValueError(f"{_OP}: {_FP32_BWD_LIMIT} (larger tiles spill registers), got N={N}, head_dim={D}")
    frames = cfg.constexpr("BLOCK_R") // N
    return [(cfg, (triton.cdiv(B * T, frames) * num_heads,))]


# ----------------------------------------------------------------------------------------------------------------
# Checks and launchers
# ----------------------------------------------------------------------------------------------------------------


def _refusals(qkv: torch.Tensor, num_heads: int, backward: bool) -> tuple[tuple[int, ...], list[Refusal]]:
    """Input checks (raise), then every reason the kernels cannot run this valid input."""
    B, T, N, H, D = sizes = check_qkv(qkv, num_heads, _OP)
    refusals = support_refusals(qkv.dtype, D)
    if N > MAX_SEQ_LEN:
        refusals.append(Refusal(f"at most {MAX_SEQ_LEN} joints per frame are supported (dim 2 of qkv), got N={N}"))
    elif not refusals and N > 0 and _config(N, D, qkv.dtype, backward) is None:
        # The forward covers every supported (N, D, dtype); some float32 backward classes are not offered.
        refusals.append(
            Refusal(
                f"{_FP32_BWD_LIMIT} (larger tiles spill registers), got N={N}, head_dim={D}; "
                "use float16/bfloat16 or another attention backend"
            )
        )
    return sizes, refusals + device_refusals(qkv)


def unsupported_reasons(qkv: torch.Tensor, num_heads: int, backward: bool | None = None) -> list[str]:
    """Why ``spatial_attention(qkv, num_heads)`` cannot run here (empty list when it can); never raises.

    ``backward`` defaults to whether autograd will need the backward (grad enabled and qkv requires grad).
    A meta tensor asks about the shape and dtype alone (dispatch probes with one).
    """
    backward = needs_backward(qkv) if backward is None else backward
    return _common.unsupported_reasons(_refusals, qkv, num_heads, backward)


def spatial_attn_fwd(qkv: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    """(B, T, N, 3*C) qkv -> (B, T, N, C) attention output; launches ``_spatial_attn_fwd_kernel``."""
    B, T, N, H, D = check(_OP, _refusals, qkv, num_heads, False)
    o = _common.new_buffer((B, T, N, H * D), qkv)
    plan = launch_plan(tuple(qkv.shape), H, qkv.dtype, backward=False)
    with device_guard(qkv):
        for cfg, grid in plan:
            launch(cfg, grid, qkv, o, scale, B * T, T, N, cfg.constexpr("BLOCK_R") // N, H,
                   *qkv.stride()[:3], *o.stride()[:3])  # fmt: skip
    return o


def spatial_attn_bwd(grad_o: torch.Tensor, qkv: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    """(B, T, N, C) grad of o, (B, T, N, 3*C) qkv -> (B, T, N, 3*C) grad of qkv; launches the backward kernel.

    ``grad_o`` may have any strides on B, T, N (0 included); a channel dim without unit stride is copied.
    """
    B, T, N, H, D = check(_OP, _refusals, qkv, num_heads, True)
    if grad_o.shape != (B, T, N, H * D):
        raise ValueError(f"{_OP}: grad_o must have shape {(B, T, N, H * D)}, got {tuple(grad_o.shape)}")
    if grad_o.device != qkv.device:
        raise ValueError(f"{_OP}: grad_o is on {grad_o.device}, qkv on {qkv.device}")
    grad_o = grad_o.to(qkv.dtype)
    if grad_o.stride(-1) != 1:
        grad_o = grad_o.contiguous()
    dqkv = _common.new_buffer(qkv.shape, qkv)
    plan = launch_plan(tuple(qkv.shape), H, qkv.dtype, backward=True)
    with device_guard(qkv):
        for cfg, grid in plan:
            launch(cfg, grid, qkv, grad_o, dqkv, scale, B * T, T, N, cfg.constexpr("BLOCK_R") // N, H,
                   *qkv.stride()[:3], *grad_o.stride()[:3], *dqkv.stride()[:3])  # fmt: skip
    return dqkv


# ----------------------------------------------------------------------------------------------------------------
# Registered torch operators (custom_op: the reason is in _common.py)
# ----------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastmixste::spatial_attention", mutates_args=())
def _spatial_attention_op(qkv: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    return spatial_attn_fwd(qkv, num_heads, scale)


@_spatial_attention_op.register_fake
def _(qkv: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    B, T, N, H, D = check_qkv(qkv, num_heads, _OP)
    return qkv.new_empty((B, T, N, H * D))


@torch.library.custom_op("fastmixste::spatial_attention_backward", mutates_args=())
def _spatial_attention_backward_op(
    grad_o: torch.Tensor, qkv: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    return spatial_attn_bwd(grad_o, qkv, num_heads, scale)


@_spatial_attention_backward_op.register_fake
def _(grad_o: torch.Tensor, qkv: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    check_qkv(qkv, num_heads, _OP)
    return torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)


def _setup_context(ctx, inputs, output) -> None:
    qkv, num_heads, scale = inputs
    # Only qkv: P is recomputed in the backward tile, and delta comes from P * dP, not from o.
    ctx.save_for_backward(qkv)
    ctx.num_heads = num_heads
    ctx.scale = scale


def _backward(ctx, grad_o: torch.Tensor):
    (qkv,) = ctx.saved_tensors
    dqkv = torch.ops.fastmixste.spatial_attention_backward(grad_o, qkv, ctx.num_heads, ctx.scale)
    return dqkv, None, None


_spatial_attention_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.fastmixste.spatial_attention)
def _spatial_attention_flop(qkv_shape, num_heads: int, scale: float, *args, out_shape=None, **kwargs) -> int:
    """Forward: S = Q K^T and O = P V, 2 N^2 D multiply-adds each per (b, t, head)."""
    B, T, N, C3 = qkv_shape
    D = C3 // (3 * num_heads)
    return 4 * B * T * num_heads * N * N * D


@register_flop_formula(torch.ops.fastmixste.spatial_attention_backward)
def _spatial_attention_backward_flop(
    grad_o_shape, qkv_shape, num_heads: int, scale: float, *args, out_shape=None, **kwargs
) -> int:
    """Backward: recompute S, then dV, dP, dQ, dK: five N x N x D matmuls per (b, t, head)."""
    B, T, N, C3 = qkv_shape
    D = C3 // (3 * num_heads)
    return 10 * B * T * num_heads * N * N * D


# ----------------------------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------------------------


def spatial_attention(qkv: torch.Tensor, num_heads: int, scale: float | None = None) -> torch.Tensor:
    """(B, T, N, 3*C) qkv -> (B, T, N, C): softmax attention over N for every (b, t, head), fused in Triton.

    ``qkv`` is the qkv Linear's output, channels [q | k | v], each ``num_heads`` heads x D (C = H * D), with
    D in {16, 32, 64, 128}, 1 <= N <= 64, dtype float32/float16/bfloat16; unit stride on the channel dim, any
    other strides. ``scale`` defaults to D ** -0.5. Differentiable with respect to ``qkv``. Equivalent to::

        B, T, N, C3 = qkv.shape
        q, k, v = qkv.view(B, T, N, 3, H, C3 // (3 * H)).permute(3, 0, 1, 4, 2, 5)  # (B, T, H, N, D) each
        o = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v
        o = o.transpose(2, 3).reshape(B, T, N, C3 // 3)

    Accumulation and softmax are fp32 whatever the input dtype. Raises ValueError/TypeError for an unsupported
    shape or dtype and RuntimeError where the kernels cannot run (CPU without TRITON_INTERPRET=1), before launch
    (the backward's limits too, when autograd will need it). Empty input gives an empty output (and gradient).
    """
    B, T, N, H, D = check(_OP, _refusals, qkv, num_heads, needs_backward(qkv))
    return torch.ops.fastmixste.spatial_attention(qkv, num_heads, resolve_scale(_OP, scale, D))


# ----------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile cases for ``python -m fastmixste.kernels.report``
# ----------------------------------------------------------------------------------------------------------------


def report_cases() -> list[KernelCase]:
    """Every configuration the launchers can pick, for any B, T, N, D and dtype, one case each.

    The configuration depends on N (1..MAX_SEQ_LEN), D, dtype and direction only, so enumerating those reaches
    every one (tests/kernels/test_report.py checks the launchers against this list over a wider grid).
    """
    plans = []
    for dtype in SUPPORTED_DTYPES:
        for D in SUPPORTED_HEAD_DIMS:
            for N in range(1, MAX_SEQ_LEN + 1):
                for backward in (False, True):
                    if _config(N, D, dtype, backward) is not None:
                        plans.append((dtype, launch_plan((1, 1, N, 3 * D), 1, dtype, backward), ()))
    return report_cases_from(plans)
