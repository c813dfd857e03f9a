"""The fused (``triton``) path of MixSTE: the block pairs with the fused attention cores and the block kernels
between the GEMMs, and the ``lean`` recompute composites.

:func:`forward_features_fused` is what ``MixSTE.forward_features`` runs when the backend resolves to ``triton``: same
parameters and math as the eager path, only the passes between the GEMMs change (see its docstring). Importing this
module imports triton (``fastmixste.kernels.block`` and ``fastmixste.kernels.gelu``); the model imports it only when
the fused path runs.

Recompute ``lean`` on the fused backend: the GEMM inputs that the block kernels rebuild in backward.

Under ``lean`` a block keeps neither the LayerNorm outputs h that feed the qkv and fc1 Linears nor the GELU output
g that feeds fc2. Where torch's selective checkpointing would replay the forward ops to rebuild them, here the
backward kernels that run anyway rebuild them in the same pass: ``fastmixste::residual_layernorm_backward`` with
``write_h`` writes h beside dr, dy and the LayerNorm weight gradients (it recomputes the normalisation from the
saved rows regardless), and ``fastmixste::bias_gelu_backward`` with ``write_g`` writes g beside du and the bias
gradient. Two autograd Functions pair each op with the Linear that consumes its output:

- :func:`norm_linear`: ``residual_layernorm`` -> ``F.linear(h, W, b)``; keeps what the norm op keeps (the fp32
  residual rows, the DropPath mask, the LayerNorm parameters) and the Linear's weight, not h.
- :func:`gelu_linear`: ``bias_gelu`` -> ``F.linear(g, W, b)``; keeps u (the fc1 output without its bias), not g.

Their backward computes the Linear's input gradient first (dh = grad_out @ W), runs the fused backward with the
rebuild flag, then the weight gradient from the rebuilt input (dW = grad_out^T @ h). The GEMMs are aten matmuls
(visible to FLOP and byte counters), the same ones autograd would run for ``F.linear``.

Precision. Under autocast the Linear computes in the autocast dtype: the weight (and bias) are cast to h's dtype
here, as autocast would cast them, and the gradients are returned in the parameters' own dtype (fp32 master
weights), as autocast's cast backward does. Without autocast, h comes in the parameters' dtype (fp32, or a .half()
model's fp16) and nothing is cast. The rebuilt h and g are what the forward wrote: the same arithmetic on the same
saved values (bitwise in the Triton interpreter; on a GPU wherever the forward and backward kernels reduce a row in
the same order, see ``kernels/block.py`` and ``kernels/gelu.py``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import block as _block
from ..kernels import gelu as _gelu
from ..kernels.block import residual_layernorm
from ..kernels.gelu import bias_gelu
from .mixste import _autocast_dtype
from .recompute import run_checkpointed

if TYPE_CHECKING:
    from .mixste import MixSTE

__all__ = ["forward_features_fused", "fused_block_pair", "gelu_linear", "norm_linear"]


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None or t.dtype == dtype else t.to(dtype)


def _weight_grads(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, needs: tuple[bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(..., O) grad_out, (..., I) Linear input -> (O, I) dW, (O,) db in the parameters' dtypes (None if unneeded)."""
    g2 = grad_out.reshape(-1, grad_out.shape[-1])
    dw = (g2.t() @ x.reshape(-1, x.shape[-1])).to(weight.dtype) if needs[0] else None
    # The aten sum itself, as autograd's Linear backward runs it (in grad_out's dtype): autocast is off in backward.
    db = torch.ops.aten.sum.dim_IntList(g2, [0]).to(bias.dtype) if bias is not None and needs[1] else None
    return dw, db


class _NormLinear(torch.autograd.Function):
    """(res, out) = (residual_layernorm(...)[0], F.linear(residual_layernorm(...)[1], weight, bias)); h not kept."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, bias: torch.Tensor | None, *norm: Any) -> tuple[torch.Tensor, ...]:
        # norm: the arguments of fastmixste::residual_layernorm (r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, yb)
        h_dtype = norm[9]
        res, h = torch.ops.fastmixste.residual_layernorm(*norm)
        out = F.linear(h, weight.to(h_dtype), None if bias is None else bias.to(h_dtype))
        # What the norm op keeps (kernels/block.py), and the Linear's parameters; not h.
        ctx.save_for_backward(*_block.norm_saved(ctx, norm, res), weight, bias)
        return res, out

    @staticmethod
    def backward(ctx: Any, grad_res: torch.Tensor | None, grad_out: torch.Tensor | None) -> tuple:
        *saved, weight, bias = ctx.saved_tensors
        x = saved[0]
        if grad_out is None:
            grad_out = torch.zeros((), dtype=ctx.h_dtype, device=x.device).expand(*x.shape[:-1], weight.shape[0])
        grad_out = grad_out.to(ctx.h_dtype)
        grad_h = grad_out @ weight.to(ctx.h_dtype)  # (B, T, N, O) @ (O, C): the Linear's input gradient
        norm_grads, h = _block.norm_grads(ctx, tuple(saved), grad_res, grad_h, write_h=True)
        dw, db = _weight_grads(grad_out, h, weight, bias, ctx.needs_input_grad[:2])
        return (dw, db, *norm_grads)


class _GeluLinear(torch.autograd.Function):
    """out = F.linear(bias_gelu(u, b), weight, bias); g not kept."""

    @staticmethod
    def forward(
        ctx: Any, u: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        g = torch.ops.fastmixste.bias_gelu(u, b)
        out = F.linear(g, weight.to(g.dtype), None if bias is None else bias.to(g.dtype))
        ctx.save_for_backward(u, b, weight, bias)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        u, b, weight, bias = ctx.saved_tensors
        grad_out = grad_out.to(u.dtype)
        grad_g = grad_out @ weight.to(u.dtype)  # (..., O) @ (O, H)
        du, db, g = torch.ops.fastmixste.bias_gelu_backward(grad_g, u, b, True)
        dw, dbias = _weight_grads(grad_out, g, weight, bias, ctx.needs_input_grad[2:4])
        return du, db, dw, dbias


def norm_linear(
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
    *,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    y_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, C) r, y -> (res (B, T, N, C) float32, out (B, T, N, O) in ``h_dtype``), h not kept for backward.

    Arguments as :func:`fastmixste.kernels.block.residual_layernorm` (mask broadcastable to (B, T, N, 1); h_dtype
    defaults to w1's dtype, ``y_bias`` the bias of the Linear that made y), plus the consuming Linear's (O, C)
    ``weight`` and (O,) ``bias`` (or None). Equivalent to::

        res, h = residual_layernorm(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, y_bias=y_bias)
        return res, F.linear(h, weight.to(h_dtype), bias.to(h_dtype))  # what autocast runs

    with the gradients of the parameters in their own dtypes.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != r.shape[-1]:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"norm_linear: weight must be (out_features, {r.shape[-1]}), got {got}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"norm_linear: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    norm = _block.norm_arguments(r, y, mask, keep, w1, b1, w2, b2, eps, h_dtype, op="norm_linear", y_bias=y_bias)
    return _NormLinear.apply(weight, bias, *norm)


def gelu_linear(u: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(..., H) u (fc1's output without its bias), (H,) b -> (..., O) ``F.linear(gelu(u + b), weight, bias)``, in
    u's dtype, g not kept for backward. ``weight`` (O, H) and ``bias`` are cast to u's dtype as autocast would; their
    gradients come back in their own dtypes."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != u.shape[-1]:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"gelu_linear: weight must be (out_features, {u.shape[-1]}), got {got}")
    _gelu.check_gelu(u, b)
    return _GeluLinear.apply(u, b, weight, bias)


# ------------------------------------------------------------------------------------------------------------------
# The fused block path
# ------------------------------------------------------------------------------------------------------------------

def forward_features_fused(model: MixSTE, x: torch.Tensor) -> torch.Tensor:
    """(B, F, J, in_chans) -> (B, F, J, C): forward_features with the fused block (the ``triton`` backend).

    Same parameters and math as the eager path; only the passes between the GEMMs change. Per block: qkv Linear,
    attention core, proj Linear; one ``residual_layernorm`` (residual add + DropPath + norm2); fc1 without bias,
    ``bias_gelu``, fc2; one ``residual_layernorm`` with two norms (add + DropPath + the shared post-norm folded into
    the next block's norm1). The residual stream stays float32; GEMM inputs come out in the autocast dtype (the
    parameters' dtype without autocast). DropPath masks come from the blocks' own ``draw_mask``, in eager's order,
    so one seed gives both paths the same masks. Dropout (drop_rate, attn_drop_rate) is not implemented here:
    ``resolve_backend`` refuses the triton backend in training when either is non-zero.

    Recompute. ``none``: every op keeps what its autograd needs. ``lean``: no replay; each LayerNorm and the
    Linear it feeds (norm1 -> qkv, norm2 -> fc1) and bias + GELU with fc2 run as one autograd Function of
    :mod:`fastmixste.model.fused` that keeps neither h nor g: the fused backward kernels rebuild them in the pass
    they run anyway. ``full``: each block pair is checkpointed with only its fp32 residual input kept (torch
    checkpoint, the pair replayed in backward, with the lean composites inside). Pairs carry (r, qkv) between them: the
    residual stream and the next block's qkv projection. On the meta device (counting at full scale) an active
    ``profiling.AutocastEmulation`` sets the GEMM dtype, as CUDA autocast does on a GPU.
    """
    autocast = _autocast_dtype(x.device.type)
    # GEMM inputs in the dtype the Linears compute in; the features leave as eager's final LayerNorm's would.
    h_dtype = autocast or model.Spatial_norm.weight.dtype
    out_dtype = torch.float32 if autocast else model.Temporal_norm.weight.dtype
    policy = model.config.recompute if model.training else "none"
    lean = policy == "lean"
    e = model.Spatial_patch_to_embedding(x)  # (B, F, J, C)
    B, F_, J, C = e.shape
    blk0 = model.STEblocks[0]
    # r: the fp32 residual stream, qkv: the next block's qkv projection. First: embedding + spatial positions,
    # STE0.norm1, STE0's qkv (under full the first pair rebuilds it from r: not computed here).
    pos = model.Spatial_pos_embed.unsqueeze(1).expand(B, F_, J, C)  # (1, J, C) -> (B, F, J, C) view
    norm1 = blk0.norm1
    linear = blk0.attn.qkv if policy != "full" else None
    r, qkv = _norm_linear(model, lean, linear, e, pos, None, 1.0, norm1.weight, norm1.bias, h_dtype=h_dtype)
    prune_at = model.config.prune_at if model.config.token_num is not None else None
    for i in range(model.block_depth):
        if i == prune_at:
            # HoT's pruning between pairs: the previous pair ended at its post-norm output (fp32, no next qkv). The
            # kept frames are gathered in one pass over a third of an activation (the fused LayerNorm kernel reads
            # contiguous rows; an index-aware load would save that pass only), and their positions are added as the
            # residual branch of the next norm1, in the LayerNorm's own pass.
            a = model._select(qkv)
            K = a.shape[1]
            tok = model.pos_embed_token[:, :K].unsqueeze(2).expand(B, K, J, C)  # (1, K, 1, C) view
            blk = model.STEblocks[i]
            if policy != "full":
                r, qkv = _norm_linear(model, lean, blk.attn.qkv, a, tok, None, 1.0, blk.norm1.weight, blk.norm1.bias,
                                      h_dtype=h_dtype)  # fmt: skip
            else:
                r = a + tok
        prune_next = i + 1 == prune_at
        if policy != "full":
            r, qkv = fused_block_pair(model, i, r, qkv, h_dtype=h_dtype, out_dtype=out_dtype, lean=lean,
                                      prune_next=prune_next)  # fmt: skip
        else:
            # Only the fp32 residual enters the checkpoint: the pair rebuilds its first GEMM input from it by one
            # LayerNorm pass (the qkv projection runs inside), so a pair keeps one activation-sized tensor. The
            # replayed pair runs the lean composites: while one pair's backward runs, its h and g are not held
            # (modelled: peak per 243-frame sequence 216 MB instead of 250 MB, step time +3 points).
            pair = partial(fused_block_pair, model, i, qkv=None, h_dtype=h_dtype, out_dtype=out_dtype, lean=True,
                           prune_next=prune_next)
            r, qkv = run_checkpointed(pair, r, policy=policy)
    return qkv  # after the last pair: the features (the shared Temporal_norm's output; the kept frames under HoT)


def _norm_linear(
    model: MixSTE,
    lean: bool,
    linear: nn.Linear | None,
    *norm: object,
    h_dtype: torch.dtype,
    with_bias: bool = True,
    y_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, C) -> (res, linear(h)): ``residual_layernorm(*norm, y_bias=y_bias)`` (r, y, mask, keep, w1, b1,
    w2, b2) and the Linear that reads h (its bias unless ``with_bias`` is False); h itself when ``linear`` is None.
    ``lean``: h is not kept for backward."""
    eps = model.Spatial_norm.eps
    bias = linear.bias if linear is not None and with_bias else None
    if lean and linear is not None:
        return norm_linear(*norm, eps=eps, h_dtype=h_dtype, weight=linear.weight, bias=bias, y_bias=y_bias)
    res, h = residual_layernorm(*norm, eps=eps, h_dtype=h_dtype, y_bias=y_bias)
    return res, (h if linear is None else F.linear(h, linear.weight, bias))


def fused_block_pair(
    model: MixSTE,
    i: int,
    r: torch.Tensor,
    qkv: torch.Tensor | None,
    h_dtype: torch.dtype,
    out_dtype: torch.dtype,
    lean: bool = False,
    prune_next: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, qkv) -> (r, qkv) through STE_i and TTE_i with the fused block; after the last pair, (r, features).

    ``qkv`` None: STE_i's qkv projection is rebuilt from r (the ``full`` checkpoint keeps r alone) and the residual
    goes on from that LayerNorm op's ``res`` (equal to r), so the gradients of r's two readers are summed inside the
    op's backward kernel rather than by an add; the pair ends at the next block's norm1 output h, without the next
    qkv projection (the next pair rebuilds it too).
    ``prune_next``: the next pair starts with HoT's pruning; this one ends at (r, its post-norm output in fp32).
    """
    eps = model.Spatial_norm.eps
    carry = qkv is not None
    if qkv is None:
        norm1 = model.STEblocks[i].norm1
        linear = model.STEblocks[i].attn.qkv
        r, qkv = _norm_linear(model, lean, linear, r, None, None, 1.0, norm1.weight, norm1.bias, h_dtype=h_dtype)
    last = 2 * model.block_depth - 1
    for k, blk, post in ((2 * i, model.STEblocks[i], model.Spatial_norm),
                         (2 * i + 1, model.TTEblocks[i], model.Temporal_norm)):  # fmt: skip
        keep = 1.0 - blk.drop_path.drop_prob
        # The biases of proj and fc2 are added in the next residual_layernorm (y_bias), whose backward sums their
        # gradients in its own pass: no pass over dy for them.
        y = blk.attn.attend(qkv, "triton", with_bias=False)  # fused core, proj Linear without its bias
        mask = blk.drop_path.draw_mask(y)
        n2, mlp = blk.norm2, blk.mlp
        r, u = _norm_linear(model, lean, mlp.fc1, r, y, mask, keep, n2.weight, n2.bias, h_dtype=h_dtype,
                            with_bias=False, y_bias=blk.attn.proj.bias)  # fmt: skip
        if lean:
            y = gelu_linear(u, mlp.fc1.bias, mlp.fc2.weight, None)
        else:
            y = F.linear(bias_gelu(u, mlp.fc1.bias), mlp.fc2.weight)
        mask = blk.drop_path.draw_mask(y)
        yb = mlp.fc2.bias
        if k == last:  # the last post-norm gives the features
            return residual_layernorm(r, y, mask, keep, post.weight, post.bias, eps=eps, h_dtype=out_dtype, y_bias=yb)
        if prune_next and k == 2 * i + 1:  # the features that the pruning clusters and gathers
            return residual_layernorm(r, y, mask, keep, post.weight, post.bias, eps=eps, h_dtype=torch.float32,
                                      y_bias=yb)  # fmt: skip
        nxt = model.TTEblocks[i] if k == 2 * i else model.STEblocks[i + 1]
        # The next qkv projection, except at the end of a pair that the next one rebuilds from r.
        linear = nxt.attn.qkv if carry or k == 2 * i else None
        if k == 0:
            # STE0 -> TTE0: the temporal positions are added between Spatial_norm and TTE0.norm1.
            _, a = residual_layernorm(r, y, mask, keep, post.weight, post.bias, eps=eps, h_dtype=torch.float32,
                                      y_bias=yb)  # fmt: skip
            B, F_, J, C = a.shape
            tpos = model.Temporal_pos_embed[:, :F_].unsqueeze(2).expand(B, F_, J, C)  # (1, F, 1, C) view
            r, qkv = _norm_linear(model, lean, linear, a, tpos, None, 1.0, nxt.norm1.weight, nxt.norm1.bias,
                                       h_dtype=h_dtype)  # fmt: skip
        else:
            r, qkv = _norm_linear(model, lean, linear, r, y, mask, keep, post.weight, post.bias, nxt.norm1.weight,
                                  nxt.norm1.bias, h_dtype=h_dtype, y_bias=yb)  # fmt: skip
    return r, qkv

