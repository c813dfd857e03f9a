"""What dispatch on the meta device cannot see, added as the CUDA kernels do it: the peers routed to the kernels
they use on CUDA (FlashAttention-2 for sdpa), tile-padded FLOPs and workspaces of FA2 per architecture and of the
fused attention ops, LayerNorm backward's second pass, the GEMM kernel classes. Used by :mod:`benchmarks.proxies`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from fastmixste.perf import profiling
from fastmixste.perf.memory import MemoryTracker
from fastmixste.perf.profiling import OpCounter, OpRecord

GEMM_OPS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default"}
FLASH_FWD = "aten._scaled_dot_product_flash_attention.default"
FLASH_BWD = "aten._scaled_dot_product_flash_attention_backward.default"
_LN_BWD = "aten.native_layer_norm_backward.default"
_TEMPORAL_BWD = "fastmixste.temporal_attention_backward.default"


def fa2_tiles(sm: int, smem_per_block: int, head_dim: int = 64) -> dict[str, int]:
    """FlashAttention-2's tiles for ``head_dim`` 64 (flash_fwd/bwd_launch_template.h, as vendored in PyTorch):
    forward 128 x 128; backward kBlockM = 128 where the opt-in shared memory per block is >= 144 KB (sm_80, sm_90),
    else 64 (sm_86, sm_89), kBlockN = 128."""
    if head_dim != 64:
        raise ValueError(f"FA2 tiles are tabulated for head_dim 64 only, got {head_dim}")
    del sm  # the launch template decides on shared memory, not on the architecture number
    return {"fwd_m": 128, "fwd_n": 128, "bwd_m": 128 if smem_per_block >= 144 * 1024 else 64, "bwd_n": 128}


# ----------------------------------------------------------------------------------------------------------------
# Routing the peers to the kernels they use on CUDA
# ----------------------------------------------------------------------------------------------------------------


class _FlashRouting(TorchFunctionMode):
    """SDPA on 4-D meta tensors without a mask calls the FlashAttention-2 op, as CUDA's dispatcher would."""

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        handled, result = profiling.backward_under(self, func, args, kwargs)
        if handled:  # a checkpoint's recompute inside backward is routed as the forward was
            return result
        if getattr(func, "__name__", "") == "scaled_dot_product_attention":
            q, k, v = args[:3]
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            if q.device.type == "meta" and q.dim() == k.dim() == v.dim() == 4 and mask is None:
                dropout_p = args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0)
                is_causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
                return torch.ops.aten._scaled_dot_product_flash_attention(
                    q, k, v, dropout_p, is_causal, False, scale=kwargs.get("scale")
                )[0]
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_like_attention(precision: str | None = None) -> Iterator[None]:
    """Inside: SDPA on 4-D meta tensors calls the FlashAttention-2 op (as CUDA would), and, where xformers is not
    installed, ``xformers.ops.memory_efficient_attention`` is a stand-in calling SDPA (xformers dispatches to the
    same FlashAttention-2 kernels on sm80+). ``precision`` also applies its casting rules
    (:func:`fastmixste.perf.profiling.precision_context`)."""

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
        # xformers layout (batch, seq, heads, D) -> SDPA layout (batch, heads, seq, D): views only.
        if attn_bias is not None:
            raise NotImplementedError("the xformers stand-in takes no attn_bias")
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=p, scale=scale
        )
        return out.transpose(1, 2)

    saved_modules = {name: sys.modules.get(name) for name in ("xformers", "xformers.ops")}
    stub = saved_modules["xformers"] is None
    if stub:
        pkg = types.ModuleType("xformers")
        ops = types.ModuleType("xformers.ops")
        ops.memory_efficient_attention = memory_efficient_attention
        pkg.ops = ops
        sys.modules["xformers"], sys.modules["xformers.ops"] = pkg, ops
    cast = profiling.precision_context(precision) if precision else contextlib.nullcontext()
    try:
        with _FlashRouting(), cast:  # casts first (innermost mode runs first), then the routing
            yield
    finally:
        if stub:
            for name, mod in saved_modules.items():
                if mod is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = mod


def _pad(n: int, tile: int) -> int:
    return math.ceil(n / tile) * tile


def _fa2_records(name: str, args: tuple) -> dict[int, dict[str, int]]:
    """Per architecture: FA2's issued FLOPs on its padded tiles, and for the backward the bytes it really moves."""
    backward = name == FLASH_BWD
    q = args[1] if backward else args[0]  # (B, H, L, D)
    B, H, L, D = q.shape
    out: dict[int, dict[str, int]] = {}
    for spec in profiling.DEVICES.values():
        tiles = fa2_tiles(spec.sm, spec.smem_per_block, D)
        if not backward:
            out[spec.sm] = {"issued_flops": 2 * 2 * B * H * _pad(L, tiles["fwd_m"]) * _pad(L, tiles["fwd_n"]) * D}
            continue
        m, n = tiles["bwd_m"], tiles["bwd_n"]
        seq_bf16 = B * H * L * D * q.element_size()
        accum_pass = B * H * _pad(L, m) * D * 4  # fp32 rows touched, kBlockM-row tiles
        key_blocks = math.ceil(L / n)
        # aten counts dO, q, k, v, o, lse read and dq, dk, dv written once. The kernels also: write + read the
        # softmax_d rows (dot(dO, O)), read dO again in the main kernel, clear the dQ accumulator, read + write it
        # once per key block (atomics), read it in the conversion kernel.
        extra = 2 * B * H * _pad(L, 128) * 4 + seq_bf16 + accum_pass * (1 + 2 * key_blocks + 1)
        out[spec.sm] = {"extra_bytes": extra, "issued_flops": 5 * 2 * B * H * _pad(L, m) * _pad(L, n) * D}
    return out


def _fused_issued_flops(name: str, args: tuple) -> int | None:
    """FLOPs the fused attention kernels issue on their padded tiles, read off their launch plans
    (kernels/spatial.py and kernels/temporal.py ``launch_plan``, bf16): per program, every tile pair it visits
    times the matmuls it runs there. Spatial: one BLOCK_R-row tile per program packing floor(BLOCK_R / N) frames,
    S = Q K^T and O = P V forward (2 matmuls), S, dP, dV, dQ, dK backward (5). Temporal: forward programs own
    BLOCK_Q query rows and visit ceil(T / BLOCK_K) key blocks (2 matmuls each); the dQ kernel 3 matmuls per key
    block (S, dP, dQ), the dK/dV kernel owns BLOCK_K key rows and runs 4 per query block (S^T, dV, dP^T, dK)."""
    from fastmixste.kernels import spatial, temporal

    backward = "backward" in name
    if not name.startswith(("fastmixste.spatial_attention", "fastmixste.temporal_attention")):
        return None
    qkv = args[1] if backward else args[0]
    if name.startswith("fastmixste.spatial_attention"):
        H = args[2 if backward else 1]
        B, T, N, C3 = qkv.shape
        D = C3 // 3 // H
        total = 0
        for cfg, grid in spatial.launch_plan(tuple(qkv.shape), H, torch.bfloat16, backward):
            r = cfg.constexpr("BLOCK_R")
            total += (5 if backward else 2) * 2 * grid[0] * r * r * D
        return total
    H = args[4 if backward else 1]
    B, T, N, C3 = qkv.shape
    D = C3 // 3 // H
    matmuls = {"fwd": 2, "bwd_dq": 3, "bwd_dkdv": 4}
    total = 0
    for cfg, grid in temporal.launch_plan(tuple(qkv.shape), H, torch.bfloat16, backward):
        bq, bk = cfg.constexpr("BLOCK_Q"), cfg.constexpr("BLOCK_K")
        kernel = next(k for k, fn in temporal._KERNELS.items() if fn is cfg.fn)
        visits = math.ceil(T / (bq if kernel == "bwd_dkdv" else bk))
        programs = grid[0] * cfg.constexpr("G")  # G sequences per program under the interpreter, 1 on a GPU
        total += matmuls[kernel] * 2 * programs * visits * bq * bk * D
    return total


def _gemm_class(name: str, args: tuple) -> str | None:
    """"gemm_wgrad" for a GEMM whose reduction dimension is the token count (a weight gradient: K much larger than
    the M x N output's sides), "gemm" for the other aten GEMMs, None for other ops."""
    if name not in GEMM_OPS:
        return None
    a, b = (args[1], args[2]) if name in ("aten.addmm.default", "aten.baddbmm.default") else (args[0], args[1])
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    return "gemm_wgrad" if K >= 8 * max(M, N) else "gemm"


class CudaCounter(OpCounter):
    """OpCounter plus what the CUDA kernels behind some ops do that dispatch cannot see: tile-padded FLOPs and
    workspaces (FlashAttention-2, per architecture), LayerNorm backward's second pass, the fused temporal
    backward's second kernel's reads. ``tracker`` (optional) is told about the workspaces' transient memory."""

    def __init__(self, launches_per_op: dict[str, int] | None = None, tracker: MemoryTracker | None = None):
        super().__init__(launches_per_op)
        self.tracker = tracker

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        n = len(self.records)
        out = super().__torch_dispatch__(func, types_, args, kwargs)
        if len(self.records) == n:
            return out
        name = str(func)
        rec = self.records[-1]
        if name in (FLASH_FWD, FLASH_BWD):
            per_sm = _fa2_records(name, args)
            rec.by_sm = {}
            for sm, d in per_sm.items():
                rec.by_sm[sm] = {"issued_flops": d["issued_flops"]}
                if "extra_bytes" in d:
                    rec.by_sm[sm]["bytes"] = rec.bytes + d["extra_bytes"]
            rec.issued_flops = per_sm[profiling.RTX_4090.sm]["issued_flops"]
            if name == FLASH_BWD and self.tracker is not None:
                q = args[1]
                B, H, L, D = q.shape
                # allocated with the query rows rounded up to 128, whatever the tile (flash_api.cpp mha_bwd)
                self.tracker.transient(B * H * _pad(L, 128) * (D + 1) * 4)
        elif name == _LN_BWD:
            grad, x, _shape, mean, rstd = args[:5]
            again = sum(profiling.tensor_bytes(t) for t in (grad, x, mean, rstd))
            self.records.append(OpRecord("layer_norm_backward.dgamma_dbeta_pass (modelled)", again, 0, 0, 1))
        elif name == _TEMPORAL_BWD:
            grad_o, qkv, _o, lse = args[:4]
            delta = profiling.tensor_bytes(lse)
            # the dK/dV kernel reads qkv, dO, lse and the delta rows the dQ kernel wrote (delta: written + read)
            again = profiling.tensor_bytes(qkv) + profiling.tensor_bytes(grad_o) + profiling.tensor_bytes(lse)
            rec.bytes_read += again + delta
            rec.bytes_written += delta
        issued = _fused_issued_flops(name, args)
        if issued is not None:
            rec.issued_flops = issued
        if name.startswith(("fastmixste.spatial_attention", "fastmixste.temporal_attention")) or name in (
            FLASH_FWD, FLASH_BWD
        ):
            rec.kernel_class = "flash_bwd" if "backward" in name else "flash_fwd"
        rec.kernel_class = _gemm_class(name, args) or rec.kernel_class
        return out
