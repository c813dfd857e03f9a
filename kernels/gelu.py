"""Fused bias + GELU between fc1 and fc2 of a MixSTE block's MLP: g = gelu(u + b), forward and backward.

``bias_gelu(u, b)``: the exact erf GELU of the fc1 output computed without its bias (``F.linear(x, W)``), plus the
bias, in one pass; the backward writes du and the bias gradient (per-program partial sums over row tiles, then one
small sum: deterministic, no atomics). cuBLASLt's GELU epilogue is the tanh approximation, not upstream's erf
(DESIGN.md section 6), hence this kernel. The model's other op between the GEMMs, residual + DropPath +
LayerNorm(s), is ``block.py``; ``fastmixste.model.fused`` composes the two with the GEMMs.

Recompute ``lean``: the backward can also write the forward's output g (constexpr ``WRITE_G``, launcher ``write_g``,
the backward op's trailing ``write_g``; default off), the forward's arithmetic on the same values, bitwise its
output, so a caller need not keep g for fc2's weight gradient.

Element types: u, g and du in u's dtype; the bias and its partial sums float32 (a lossless cast of a 16-bit bias);
the incoming gradient in u's dtype (what autograd gives) or else float32. Every typing is in ``report_cases()``.

Split (the template of ``_common.py``): ``_bias_gelu_fwd_kernel`` / ``_bias_gelu_bwd_kernel`` (jit) ->
:func:`launch_plan` -> launchers :func:`bias_gelu_fwd` / :func:`bias_gelu_bwd` -> the custom ops
``fastmixste::bias_gelu(_backward)`` with autograd -> :func:`bias_gelu`. Reference:
:func:`fastmixste.kernels.reference.bias_gelu_ref`. No FLOP formula: no matmul (FlopCounterMode counts matmuls only).
"""

from __future__ import annotations

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
    tensor_arg,
    typed_config,
    typed_report_cases_from,
    unit_channel_stride,
)
from .reference import bias_gelu_ref

__all__ = [
    "bias_gelu",
    "bias_gelu_bwd",
    "bias_gelu_fwd",
    "bias_gelu_ref",
    "check_gelu",
    "launch_plan",
    "report_cases",
]

_OP = "bias_gelu"
_F32 = torch.float32

# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------


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
    g_ptr,
    M,
    H,
    G,
    stride_u_m,
    stride_dg_m,
    stride_dg_n,
    WRITE_G: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Program (pid_g, pid_n) walks row tiles pid_g, pid_g + G, ... of one column block and sums the bias gradient
    # for it in registers, written once to row pid_g of the (G, H) partial buffer. WRITE_G: also write the forward's
    # g = gelu(u + b), the same arithmetic on the same values as the forward kernel (bitwise its output).
    pid_g = tl.program_id(0)
    pid_n = tl.program_id(1)
    o_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < H
    b_b = tl.load(b_ptr + o_n, mask=m_n, other=0.0).to(tl.float32)
    acc_db = tl.zeros([BLOCK_N], dtype=tl.float32)
    for i_tile in range(pid_g, tl.cdiv(M, BLOCK_M), G):
        o_m = i_tile * BLOCK_M + tl.arange(0, BLOCK_M)
        m_mn = (o_m < M)[:, None] & m_n[None, :]
        o_m64 = o_m.to(tl.int64)[:, None]
        b_z = tl.load(u_ptr + o_m64 * stride_u_m + o_n[None, :], mask=m_mn, other=0.0).to(tl.float32) + b_b[None, :]
        # dg may be a broadcast (stride-0) view: both strides honoured.
        p_dg = dg_ptr + o_m64 * stride_dg_m + o_n[None, :].to(tl.int64) * stride_dg_n
        b_dg = tl.load(p_dg, mask=m_mn, other=0.0).to(tl.float32)
        # d/dz [z Phi(z)] = Phi(z) + z phi(z)
        b_phi = _gelu_parts(b_z)
        b_dz = b_dg * (b_phi + b_z * tl.exp(-0.5 * b_z * b_z) * 0.3989422804014327)
        tl.store(du_ptr + o_m64 * H + o_n[None, :], b_dz.to(du_ptr.dtype.element_ty), mask=m_mn)
        if WRITE_G:
            tl.store(g_ptr + o_m64 * H + o_n[None, :], (b_z * b_phi).to(g_ptr.dtype.element_ty), mask=m_mn)
        acc_db += tl.sum(b_dz, 0)
    tl.store(db_ptr + pid_g.to(tl.int64) * H + o_n, acc_db, mask=m_n)


# ----------------------------------------------------------------------------------------------------------------
# Launch configurations: the single source of truth for the launchers and for report_cases()
# ----------------------------------------------------------------------------------------------------------------

#: The tile: elementwise, 16 values per thread at 4 warps.
_BLOCK_M, _BLOCK_N, _WARPS = 16, 128, 4


def _types(u_dtype: torch.dtype, grad_dtype: torch.dtype | None, backward: bool) -> dict[str, torch.dtype]:
    """Element types of bias + GELU's pointers: u, g, du in u's dtype, the bias and its partial sums float32, the
    incoming gradient in u's dtype (what autograd gives) or else float32 (a lossless cast)."""
    fn = _bias_gelu_bwd_kernel if backward else _bias_gelu_fwd_kernel
    types = {name: u_dtype for name in fn.arg_names if name.endswith("_ptr")}
    types.update(b_ptr=_F32)
    if backward:
        types.update(db_ptr=_F32, dg_ptr=u_dtype if grad_dtype == u_dtype else _F32)
    return types



def launch_plan(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    backward: bool,
    *,
    grad_dtype: torch.dtype | None = None,
    write_g: bool = False,
    programs: int = CPU_PROGRAMS,
) -> list[tuple[TypedLaunchConfig, tuple[int, ...]]]:
    """Every (configuration, grid) a launcher runs for u of ``shape`` (..., H) and ``dtype``, in launch order; empty
    for empty input. ``grad_dtype``: the incoming gradient's type (backward). The backward runs at most ``programs``
    persistent programs per column block (4 per SM on a GPU), each summing its rows' bias gradient. ``write_g``
    (backward only): also rebuild the forward's g."""
    if write_g and not backward:
        raise ValueError("write_g asks the backward kernel to rebuild the forward's output; the forward writes it")
    H = shape[-1]
    M = 1
    for n in shape[:-1]:
        M *= n
    if M == 0 or H == 0:
        return []
    types = _types(dtype, grad_dtype, backward)
    tile = {"BLOCK_M": _BLOCK_M, "BLOCK_N": _BLOCK_N}
    cols = triton.cdiv(H, _BLOCK_N)
    if backward:
        grid = (max(1, min(triton.cdiv(M, _BLOCK_M), programs)), cols)
        return [(typed_config(_bias_gelu_bwd_kernel, {"WRITE_G": write_g} | tile, _WARPS, types), grid)]
    return [(typed_config(_bias_gelu_fwd_kernel, tile, _WARPS, types), (triton.cdiv(M, _BLOCK_M), cols))]


# ----------------------------------------------------------------------------------------------------------------
# Checks and refusals
# ----------------------------------------------------------------------------------------------------------------


def _refusals(u: torch.Tensor, b: torch.Tensor) -> list[Refusal]:
    """Input checks of bias_gelu's structure (raise), then every reason the kernels cannot run this valid input."""
    tensor_arg(u, "u", _OP)
    tensor_arg(b, "b", _OP)
    if u.dim() < 1 or b.dim() != 1 or b.shape[0] != u.shape[-1]:
        raise ValueError(f"{_OP}: b must be 1-D with u's last dim, got u {tuple(u.shape)} and b {tuple(b.shape)}")
    if u.device != b.device:
        raise ValueError(f"{_OP}: u is on {u.device}, b on {b.device}")
    refusals = dtype_refusals([("u", u.dtype), ("b", b.dtype)])
    return refusals + machine_refusals(u, [u.dtype, _F32])


def check_gelu(u: torch.Tensor, b: torch.Tensor) -> int:
    """Raise for an input :func:`bias_gelu` cannot run (TypeError/ValueError/RuntimeError, every reason), else
    return H (u's last dim)."""
    raise_refusals(_OP, _refusals(u, b))
    return u.shape[-1]


# ----------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------


def bias_gelu_fwd(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., H) u, (H,) b -> (..., H) gelu(u + b) (exact erf, fp32 math) in u's dtype; launches the forward kernel."""
    H = check_gelu(u, b)
    g = _common.new_buffer(u.shape, u)
    plan = launch_plan(tuple(u.shape), u.dtype, False)
    if not plan:
        return g
    u2 = unit_channel_stride(u).reshape(-1, H)
    with device_guard(u):
        for cfg, grid in plan:
            launch(cfg, grid, u2, as_dtype(b, _F32), g, u2.shape[0], H, u2.stride(0))
    return g


def bias_gelu_bwd(
    grad_g: torch.Tensor, u: torch.Tensor, b: torch.Tensor, write_g: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(..., H) grad of g, u, (H,) b -> (du in u's dtype, db in b's dtype, g or None); launches the backward kernel.

    ``grad_g`` may have any strides (0 included) and broadcast to u's shape. ``write_g``: also return the forward's
    g = gelu(u + b) in u's dtype, rebuilt in the same pass for callers that did not keep it.
    """
    H = check_gelu(u, b)
    grad_g = tensor_arg(grad_g, "grad_g", _OP)
    types = _types(u.dtype, grad_g.dtype, backward=True)
    plan = launch_plan(tuple(u.shape), u.dtype, True, grad_dtype=grad_g.dtype, write_g=write_g,
                       programs=backward_programs(u.device))  # fmt: skip
    G = plan[0][1][0] if plan else 1
    g = _common.new_buffer(u.shape, u) if write_g else None
    du = _common.new_buffer(u.shape, u)
    part = _common.new_buffer((G, H), u, _F32)  # every row written
    if plan:
        u2 = unit_channel_stride(u).reshape(-1, H)
        dg = as_dtype(grad_g, types["dg_ptr"]).expand(u.shape).reshape(-1, H)  # a view where strides allow (0 stays 0)
        with device_guard(u):
            for cfg, grid in plan:
                # Without write_g, g points at du (u's type, never written by the kernel).
                launch(cfg, grid, u2, as_dtype(b, _F32), dg, du, part, du if g is None else g, u2.shape[0], H, G,
                       u2.stride(0), *dg.stride())  # fmt: skip
    else:
        part.zero_()
    return du, part.sum(0).to(b.dtype), g


# ----------------------------------------------------------------------------------------------------------------
# Registered torch operators (custom_op: the reason is in _common.py)
# ----------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastmixste::bias_gelu", mutates_args=())
def _bias_gelu_op(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return bias_gelu_fwd(u, b)


@_bias_gelu_op.register_fake
def _(u, b):
    check_gelu(u, b)
    return torch.empty(u.shape, dtype=u.dtype, device=u.device)


@torch.library.custom_op("fastmixste::bias_gelu_backward", mutates_args=())
def _bias_gelu_backward_op(
    grad_g: torch.Tensor, u: torch.Tensor, b: torch.Tensor, write_g: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    du, db, g = bias_gelu_bwd(grad_g, u, b, write_g)
    return du, db, u.new_empty(0) if g is None else g  # (du, db, g or an empty placeholder)


@_bias_gelu_backward_op.register_fake
def _(grad_g, u, b, write_g=False):
    g = torch.empty(u.shape, dtype=u.dtype, device=u.device) if write_g else u.new_empty(0)
    return torch.empty(u.shape, dtype=u.dtype, device=u.device), b.new_empty(b.shape), g


def _gelu_setup_context(ctx, inputs, output) -> None:
    u, b = inputs
    ctx.save_for_backward(u, b)  # u: the pre-activation, what eager GELU saves too


def _gelu_backward(ctx, grad_g: torch.Tensor):
    u, b = ctx.saved_tensors
    du, db, _ = torch.ops.fastmixste.bias_gelu_backward(grad_g, u, b)
    return du, db


_bias_gelu_op.register_autograd(_gelu_backward, setup_context=_gelu_setup_context)


# ----------------------------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------------------------


def bias_gelu(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., H) u (a Linear output without its bias), (H,) b -> (..., H) exact-erf GELU of u + b, fused in Triton.

    Math in fp32, output in u's dtype; differentiable in u and b. Equivalent to ``F.gelu(u + b)``. Raises as
    :func:`fastmixste.kernels.block.residual_layernorm` does (TypeError/ValueError for an unsupported input,
    RuntimeError where the kernels cannot run, before launch); empty input gives an empty output.
    """
    check_gelu(u, b)
    return torch.ops.fastmixste.bias_gelu(u, b)


# ----------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile cases for ``python -m fastmixste.kernels.report``
# ----------------------------------------------------------------------------------------------------------------


def report_cases() -> list[KernelCase]:
    """Every configuration the launchers can pick, for any shape: one per u dtype, forward and (for each incoming
    gradient typing, with and without writing g) backward."""
    plans = []
    for u in SUPPORTED_DTYPES:
        for grad in SUPPORTED_DTYPES:
            plans.append((u, launch_plan((1, 1), u, False)))
            for write_g in (False, True):
                plans.append((u, launch_plan((1, 1), u, True, grad_dtype=grad, write_g=write_g)))
    return typed_report_cases_from(plans)
