"""Fused cross-attention over T: Tq queries attend to Tk keys for every (batch, joint, head), forward and backward.

HoT (Hourglass Tokenizer) prunes a MixSTE's frames (243 -> 81) after a few blocks and recovers every frame at the
end with one cross-attention per joint: the queries are a learnable (Tq, C) token set, the same for every batch
element and joint, the keys and values the Tk kept frames. This op is that attention core, in the layout of the
rest of the model (STYLE.md habit 3): q (B, Tq, N, C), k and v (B, Tk, N, C) -> o (B, Tq, N, C), channels H heads
x D; the q/k/v Linears before it and the proj Linear after it are the caller's.

Inputs are read through their strides (unit channel stride required, anything else allowed): k and v may be two
column slices of one packed (B, Tk, N, 2C) GEMM output, and q may be broadcast:

- q of shape (1, Tq, 1, C) (or size 1 in just one of dims 0 and 2) is broadcast over the batch and/or the joints.
  The kernels read the one query set for every sequence, and the dQ kernel sums its gradient over the sequences
  sharing it: one program per (query set, chunk of sequences, query block) loops over its chunk, writing an fp32
  partial sum per chunk, which the launcher adds up (no atomics: bit-identical run to run). dq comes back in q's
  shape. At HoT's full scale (B = 128, N = 17, Tq = 243, C = 512) the partial sums are 32 x 243 x 512 fp32 =
  16 MB, where a full-shaped dq would be 128 x 17 times q's size (541 MB in bf16) for expand's backward to sum.
- q of the full shape (B, Tq, N, C) with stride 0 over B and N (``x_token.expand(...)``) is read through those
  strides too, nothing materialised; its gradient is then full-shaped, as autograd's expand backward expects, and
  summed there. Passing the unexpanded (1, Tq, 1, C) tensor avoids that gradient's traffic.

Kernels: the temporal kernels (temporal.py), generalised to separate q, k, v pointers and strides, Tq != Tk and
the broadcast sum in the dQ kernel, so both ops run one flash-attention implementation and share its tuned tiles.
Split (the template of ``_common.py``): those jit kernels -> :func:`launch_plan` -> :func:`cross_attn_fwd` /
:func:`cross_attn_bwd` (launchers) -> ``fastmixste::cross_attention`` / ``fastmixste::cross_attention_backward``
(registered ops, autograd) -> :func:`cross_attention` (functional). Reference:
:func:`fastmixste.kernels.reference.cross_attention_ref`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
from torch.utils.flop_counter import register_flop_formula

from . import _common
from ._common import (
    SUPPORTED_DTYPES,
    SUPPORTED_HEAD_DIMS,
    TRITON_DTYPES,
    KernelCase,
    LaunchConfig,
    Refusal,
    TypedLaunchConfig,
    check,
    check_4d,
    check_heads,
    device_refusals,
    needs_backward,
    resolve_scale,
    support_refusals,
    typed_report_cases_from,
)
from .reference import cross_attention_ref
from .temporal import REPORT_LENGTHS, attention_plan, backward_inputs, run_backward, run_forward

__all__ = [
    "cross_attention",
    "cross_attention_ref",
    "cross_attn_bwd",
    "cross_attn_fwd",
    "launch_plan",
    "report_cases",
    "unsupported_reasons",
]

_OP = "cross_attention"

#: Programs the broadcast dQ kernel aims for: about 8 per SM of a 132-SM H100, so its waves balance, while the
#: fp32 partial sums (one (Tq, C) set per chunk) stay a few percent of a full-shaped dq.
DQ_PROGRAMS = 1024


# ----------------------------------------------------------------------------------------------------------------
# Launch configuration: the single source of truth for the launchers and for report_cases().
# ----------------------------------------------------------------------------------------------------------------


class Reduction(NamedTuple):
    """How the dQ kernel sums over a broadcast q (see ``_temporal_attn_bwd_dq_kernel``): NQ joints of q, R sequences
    per query set (RN of them joints), CHUNK sequences per program, ``chunks`` partial sums."""

    NQ: int
    R: int
    RN: int
    CHUNK: int
    chunks: int


def _sizes(q_shape: tuple[int, ...], kv_shape: tuple[int, ...], num_heads: int) -> tuple[int, ...]:
    Bq, TQ, Nq, C = q_shape
    B, TK, N, _ = kv_shape
    return B, TQ, TK, N, num_heads, C // num_heads, Bq, Nq


def reduction(
    q_shape: tuple[int, ...], kv_shape: tuple[int, ...], num_heads: int, dtype: torch.dtype
) -> Reduction | None:
    """The dQ reduction of a broadcast q (size 1 in dim 0 and/or 2 where k has more), None when there is none.

    Chunks: the fewest that give about :data:`DQ_PROGRAMS` programs, each a whole number of sequences."""
    B, TQ, TK, N, H, D, Bq, Nq = _sizes(q_shape, kv_shape, num_heads)
    R = (B // Bq) * (N // Nq) if B * N else 1
    if R == 1 or TQ == 0:
        return None
    one_chunk = attention_plan(B * N * H, TQ, TK, D, dtype, True, QS=Bq * Nq * H)[0][1][0]
    chunk = triton.cdiv(R, max(1, min(R, DQ_PROGRAMS // one_chunk)))
    return Reduction(Nq, R, N // Nq, chunk, triton.cdiv(R, chunk))


def _typed(cfg: LaunchConfig, dtype: torch.dtype, dq_fp32: bool) -> TypedLaunchConfig:
    # lse and delta rows are fp32; so are the per-chunk dQ sums of a broadcast q (a binary of its own in 16 bits).
    fp32 = {"lse_ptr", "delta_ptr"} | ({"dq_ptr"} if dq_fp32 else set())
    ty = TRITON_DTYPES[dtype]
    ptr_types = tuple((n, "fp32" if n in fp32 else ty) for n in cfg.fn.arg_names if n.endswith("_ptr"))
    return TypedLaunchConfig(cfg.fn, cfg.constexprs, cfg.num_warps, cfg.num_stages, ptr_types=ptr_types)


def launch_plan(
    q_shape: tuple[int, ...], kv_shape: tuple[int, ...], num_heads: int, dtype: torch.dtype, backward: bool
) -> list[tuple[TypedLaunchConfig, tuple[int]]]:
    """Every (configuration, grid) the forward (or backward) launcher runs for q of ``q_shape`` (B or 1, Tq, N or
    1, C) and k, v of ``kv_shape`` (B, Tk, N, C), in launch order; empty for empty input.

    The temporal kernels' plan (:func:`fastmixste.kernels.temporal.attention_plan`) with query tiles sized by Tq and
    key tiles by Tk; a broadcast q's dQ kernel runs over query sets x chunks (:func:`reduction`).
    """
    B, TQ, TK, N, H, D, Bq, Nq = _sizes(q_shape, kv_shape, num_heads)
    red = reduction(q_shape, kv_shape, num_heads, dtype) if backward else None
    QS, chunks = (Bq * Nq * H, red.chunks) if red else (None, 1)
    plan = attention_plan(B * N * H, TQ, TK, D, dtype, backward, QS=QS, chunks=chunks)
    return [(_typed(cfg, dtype, red is not None), grid) for cfg, grid in plan]


# ----------------------------------------------------------------------------------------------------------------
# Checks and launchers
# ----------------------------------------------------------------------------------------------------------------


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> tuple[int, ...]:
    """Input checks of the op's structure; returns (B, Tq, Tk, N, H, D). Raises TypeError/ValueError that say what
    was expected and what came. Size-0 dims are valid (empty input)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_4d(t, name, "(B, T, N, C)", _OP)
    check_heads(num_heads, _OP)
    B, TK, N, C = k.shape
    if v.shape != k.shape:
        raise ValueError(f"{_OP}: v must have k's shape (B, Tk, N, C) = {tuple(k.shape)}, got {tuple(v.shape)}")
    Bq, TQ, Nq, Cq = q.shape
    if Cq != C or Bq not in (1, B) or Nq not in (1, N):
        raise ValueError(
            f"{_OP}: q must be (B, Tq, N, C) with k's B={B}, N={N}, C={C}, or size 1 in dim 0 and/or 2 "
            f"(broadcast over the batch and/or the joints); got q {tuple(q.shape)}"
        )
    if C % num_heads != 0:
        raise ValueError(f"{_OP}: channels C={C} must be num_heads * head_dim, got num_heads={num_heads}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"{_OP}: q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if not q.device == k.device == v.device:
        raise ValueError(f"{_OP}: q, k and v must be on one device, got {q.device}, {k.device} and {v.device}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1 and t.numel() > 0:
            raise ValueError(f"{_OP}: {name} must be contiguous in its last dim, got strides {t.stride()}")
    return B, TQ, TK, N, num_heads, C // num_heads


def _refusals(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, backward: bool
) -> tuple[tuple[int, ...], list[Refusal]]:
    """Input checks (raise), then every reason the kernels cannot run this valid input (any lengths and N: dtype,
    head dim and machine only)."""
    sizes = check_inputs(q, k, v, num_heads)
    return sizes, support_refusals(q.dtype, sizes[-1], "q, k, v") + device_refusals(q)


def unsupported_reasons(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, backward: bool | None = None
) -> list[str]:
    """Why ``cross_attention(q, k, v, num_heads)`` cannot run here (empty list when it can); never raises.

    ``backward`` defaults to whether autograd will need the backward. Meta tensors ask about shapes and dtype alone.
    """
    backward = needs_backward(q, k, v) if backward is None else backward
    return _common.unsupported_reasons(_refusals, q, k, v, num_heads, backward)


def cross_attn_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B or 1, Tq, N or 1, C), k, v (B, Tk, N, C) -> o (B, Tq, N, C) in their dtype and lse (B, N, H, Tq) fp32
    (natural log)."""
    B, TQ, TK, N, H, D = check(_OP, _refusals, q, k, v, num_heads, False)
    o = _common.new_buffer((B, TQ, N, H * D), k)
    lse = _common.new_buffer((B, N, H, TQ), k, torch.float32)
    plan = launch_plan(tuple(q.shape), tuple(k.shape), H, k.dtype, backward=False)
    # A broadcast q is read through stride-0 dims: one query set for every sequence, nothing copied.
    run_forward(plan, q.expand(B, TQ, N, H * D), k, v, o, lse, H, scale)
    return o, lse


def cross_attn_bwd(
    grad_o: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dO and o (B, Tq, N, C), q, k, v as in :func:`cross_attn_fwd`, lse (B, N, H, Tq) -> dq (q's shape), dk, dv.

    ``grad_o`` may have any strides on B, T, N (0 included); a channel dim without unit stride is copied. A
    broadcast q's gradient is summed over the sequences sharing it (per-chunk fp32 sums, then their total).
    """
    B, TQ, TK, N, H, D = check(_OP, _refusals, q, k, v, num_heads, True)
    C = H * D
    grad_o, o, lse = backward_inputs(_OP, grad_o, o, lse, (B, TQ, N, H, D), k.dtype)
    dk = _common.new_buffer(k.shape, k)
    dv = _common.new_buffer(v.shape, v)
    red = reduction(tuple(q.shape), tuple(k.shape), H, k.dtype)
    if B * N == 0:
        return torch.zeros_like(q), dk, dv  # no sequences: a broadcast q's gradient is a sum over none
    if red is None:
        dq = _common.new_buffer((B, TQ, N, C), q)
    else:
        dq = _common.new_buffer((red.chunks, *q.shape), q, torch.float32)
    plan = launch_plan(tuple(q.shape), tuple(k.shape), H, k.dtype, backward=True)
    reduce_args = None if red is None else red[:4]
    run_backward(plan, grad_o, q.expand(B, TQ, N, C), k, v, o, lse, dq, dk, dv, H, scale, reduce_args)
    if red is not None:
        dq = dq.sum(0).to(q.dtype)
    return dq, dk, dv


# ----------------------------------------------------------------------------------------------------------------
# Registered torch operators (custom_op: the reason is in _common.py)
# ----------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastmixste::cross_attention", mutates_args=())
def _cross_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return cross_attn_fwd(q, k, v, num_heads, scale)


@_cross_attention_op.register_fake
def _(q, k, v, num_heads, scale):
    B, TQ, TK, N, H, D = check_inputs(q, k, v, num_heads)
    return k.new_empty((B, TQ, N, H * D)), k.new_empty((B, N, H, TQ), dtype=torch.float32)


@torch.library.custom_op("fastmixste::cross_attention_backward", mutates_args=())
def _cross_attention_backward_op(
    grad_o: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return cross_attn_bwd(grad_o, q, k, v, o, lse, num_heads, scale)


@_cross_attention_backward_op.register_fake
def _(grad_o, q, k, v, o, lse, num_heads, scale):
    check_inputs(q, k, v, num_heads)
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, num_heads, scale = inputs
    o, lse = output
    # o is also the proj Linear's saved input; a broadcast q is saved at its own (1, Tq, 1, C) size.
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.num_heads = num_heads
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)
    # lse gets no gradient: without this autograd would fill a zero (B, N, H, Tq) fp32 tensor for it (17 MB at
    # HoT's full scale) only for the backward to ignore it.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_o: torch.Tensor, grad_lse: torch.Tensor | None):
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.fastmixste.cross_attention_backward(grad_o, q, k, v, o, lse, ctx.num_heads, ctx.scale)
    return dq, dk, dv, None, None


_cross_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _matmul_flops(kv_shape: torch.Size, TQ: int) -> int:
    # One (Tq x Tk x D) matmul for every (b, n, h): 2*Tq*Tk*D each, H*D = C.
    B, TK, N, C = kv_shape
    return 2 * B * N * TQ * TK * C


@register_flop_formula(torch.ops.fastmixste.cross_attention)
def _cross_attention_flop(q_shape, k_shape, v_shape, num_heads, scale, *args, out_shape=None, **kwargs) -> int:
    # Q K^T and P V, as PyTorch counts scaled_dot_product_attention.
    return 2 * _matmul_flops(k_shape, q_shape[1])


@register_flop_formula(torch.ops.fastmixste.cross_attention_backward)
def _cross_attention_backward_flop(
    grad_o_shape, q_shape, k_shape, v_shape, o_shape, lse_shape, num_heads, scale, *args, out_shape=None, **kwargs
) -> int:
    # Q K^T recomputed, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q: PyTorch's count for the SDPA backward.
    return 5 * _matmul_flops(k_shape, q_shape[1])


# ----------------------------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------------------------


def cross_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float | None = None
) -> torch.Tensor:
    """q (B, Tq, N, C), k and v (B, Tk, N, C) -> (B, Tq, N, C): multi-head attention of Tq queries over Tk keys
    along T for every (batch, joint, head), fused (HoT's frame-recovery cross-attention).

    C = num_heads * D with D in {16, 32, 64, 128}; any Tq, Tk, N; dtype float32, float16 or bfloat16 (one for all
    three); unit stride on the channel dim, any other strides. q may have size 1 in dim 0 and/or 2 (broadcast over
    the batch and/or joints; its gradient is then summed in the kernels) or stride 0 there (an expand: read in
    place, its full-shaped gradient summed by autograd). ``scale`` defaults to D**-0.5. Differentiable with respect
    to q, k and v. CUDA, or CPU under TRITON_INTERPRET=1 (not bf16). Equivalent PyTorch code::

        B, Tk, N, C = k.shape
        H, D, Tq = num_heads, C // num_heads, q.shape[1]
        heads = lambda t, L: t.expand(B, L, N, C).reshape(B, L, N, H, D).permute(0, 2, 3, 1, 4)
        attn = (heads(q, Tq) @ heads(k, Tk).transpose(-2, -1) * scale).softmax(-1)  # (B, N, H, Tq, Tk)
        o = (attn @ heads(v, Tk)).permute(0, 3, 1, 2, 4).reshape(B, Tq, N, C)

    Unlike that code nothing is permuted, copied or expanded in memory: the kernels read q, k, v through strides,
    write ``o`` in (B, Tq, N, C) and keep an fp32 log-sum-exp per query row for the backward. Raises ValueError/
    TypeError for an unsupported input and RuntimeError where the kernels cannot run, before launch. Empty input
    gives an empty output (and gradients); Tk = 0 gives zeros, as the code above does.
    """
    B, TQ, TK, N, H, D = check(_OP, _refusals, q, k, v, num_heads, needs_backward(q, k, v))
    o, _ = torch.ops.fastmixste.cross_attention(q, k, v, num_heads, resolve_scale(_OP, scale, D))
    return o


# ----------------------------------------------------------------------------------------------------------------
# Ahead-of-time compile cases for ``python -m fastmixste.kernels.report``
# ----------------------------------------------------------------------------------------------------------------


def report_cases() -> list[KernelCase]:
    """Every configuration the launchers can pick on a GPU, for any shapes, dtype and broadcast, one case each.

    Query and key tiles are sized independently (Tq and Tk each in one of the temporal op's length classes,
    REPORT_LENGTHS), and a broadcast q's dQ kernel writes fp32 sums: both with and without broadcast.
    """
    plans = []
    for dtype in SUPPORTED_DTYPES:
        for D in SUPPORTED_HEAD_DIMS:
            for TQ in REPORT_LENGTHS:
                for TK in REPORT_LENGTHS:
                    for Bq in (2, 1):  # q per batch element, and broadcast over the batch
                        for backward in (False, True):
                            plans.append((dtype, launch_plan((Bq, TQ, 1, D), (2, TK, 1, D), 1, dtype, backward)))
    return typed_report_cases_from(plans)
