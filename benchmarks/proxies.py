"""Full-scale, hardware-independent proxies for every (scope, provider, mode, shape), computed on the meta device.

``python -m benchmarks.proxies [--out benchmarks/results/proxies.json]`` writes, per case: bytes read + written,
FLOPs, kernel launches (fastmixste.profiling.OpCounter), bytes saved for backward (SavedTensorCounter, parameters
excluded) and the roofline-modelled time on an RTX 4090 and an H100, plus the memory table (saved bytes and peak per
243-frame sequence per provider x recompute policy, largest batch per card) and the list of assumptions.
``python -m benchmarks.proxies --headline`` prints the whole-model headline as one JSON object. MODELLED numbers.

Precision: what ``train.run`` and the GPU benchmarks run, bf16 autocast with fp32 parameters and an fp32 residual
stream (``profiling.AutocastEmulation`` applies CUDA autocast's casting rules on meta: the casts, the fp32
LayerNorms and residual adds, the weight casts and the gradients' casts back are all counted).

How each provider is modelled on meta (where the real dispatch cannot be observed without a GPU):
- ``eager``: the aten ops the eager path dispatches, each one launch.
- ``sdpa``: on CUDA, SDPA picks FlashAttention-2 for 4-D bf16 inputs without mask or dropout; on meta its
  dispatcher would pick the math fallback, so 4-D calls are routed to ``aten._scaled_dot_product_flash_attention``.
  FA2's real tiles (head dim 64, from its launch templates): forward 128 x 128 on sm_89 and sm_90; backward
  kBlockM x kBlockN = 64 x 128 where the opt-in shared memory per block is < 144 KB (sm_89) and 128 x 128 on sm_90.
  Its backward launches 3 kernels (dot(dO, O) + dQ-accumulator clear, the main kernel, the dQ conversion) and
  accumulates dQ in an fp32 workspace allocated with the query rows rounded up to 128 (memory) and touched in
  kBlockM-row tiles (traffic): cleared once, read + written once per key block (atomics), read once.
- ``xformers``: on sm80+ with bf16 and no bias, xformers dispatches to the same FlashAttention-2 kernels: modelled
  as those (workspace included), called through the backend's own layout code.
- ``triton``: whatever the triton backend runs, counted on meta: custom ops (attention cores, fused block kernels
  when present) count their own inputs and outputs once. The temporal backward's two kernels each read what they
  need (the dK/dV kernel reads qkv, dO, lse and delta again): that is added.
- ``compile``: torch.compile of the sdpa model. Inductor cannot run on meta: its fusions come from the kernels it
  generates for this model on the CPU backend (benchmarks/inductor_kernels.py, results/inductor_kernels.json),
  scaled to the full batch; GEMMs and attention are the sdpa path's (cuBLAS, FlashAttention-2).
Every aten ``native_layer_norm_backward`` is charged as CUDA runs it: the dX kernel, then a dgamma/dbeta pass that
reads dY and X (and the row statistics) again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from fastmixste import profiling
from fastmixste.profiling import LiveBytesTracker, OpCounter, OpRecord, SavedTensorCounter

from . import cases
from .cases import Shape

RESULTS = Path(__file__).resolve().parent / "results"
MODELLED_PROVIDERS: tuple[str, ...] = ("eager", "sdpa", "triton", "xformers", "compile")
#: Providers counted by running them on meta (compile is derived from sdpa + Inductor's kernels).
COUNTED_PROVIDERS: tuple[str, ...] = ("eager", "sdpa", "triton", "xformers")
NOT_MODELLED: dict[str, str] = {
    "triton+compile": "not modelled: Inductor's CPU backend cannot compile around the fused Triton ops (they need a "
    "GPU target), so there is no generated code to read; measured on CUDA only"
}
LAUNCH_OVERHEAD_S = 3e-6
#: The precision train.run uses on CUDA (``--amp auto`` -> bf16 autocast, fp32 parameters).
PRECISION = "bf16-autocast"

LAUNCHES = {
    "fastmixste.temporal_attention_backward.default": 2,
    # FA2 backward: dot(dO, O) + dQaccum clear, the main kernel, the dQ fp32 -> bf16 conversion.
    "aten._scaled_dot_product_flash_attention_backward.default": 3,
}
_FLASH_FWD = "aten._scaled_dot_product_flash_attention.default"
_FLASH_BWD = "aten._scaled_dot_product_flash_attention_backward.default"
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
    (:func:`fastmixste.profiling.precision_context`)."""

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
    backward = name == _FLASH_BWD
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
    """FLOPs the fused attention kernels issue on their padded tiles: the spatial kernel packs floor(64 / N)
    frames into one 64 x 64 tile; the temporal kernel uses 64 x 64 tiles (T = 243 -> 256) and recomputes Q K^T and
    dO V^T in its dK/dV pass (7 matmuls backward)."""
    if name.startswith("fastmixste.spatial_attention"):
        qkv = args[1] if "backward" in name else args[0]
        B, T, N, C3 = qkv.shape
        H = args[2 if "backward" in name else 1]
        programs = math.ceil(B * T / max(1, 64 // N)) * H
        mm = 5 if "backward" in name else 2
        return mm * 2 * programs * 64 * 64 * (C3 // 3 // H)
    if name.startswith("fastmixste.temporal_attention"):
        qkv = args[1] if "backward" in name else args[0]
        H = args[4] if "backward" in name else args[1]
        B, T, N, C3 = qkv.shape
        mm = 7 if "backward" in name else 2
        return mm * 2 * B * N * H * _pad(T, 64) ** 2 * (C3 // 3 // H)
    return None


class _Counter(OpCounter):
    """OpCounter plus what the CUDA kernels behind some ops do that dispatch cannot see: tile-padded FLOPs and
    workspaces (FlashAttention-2, per architecture), LayerNorm backward's second pass, the fused temporal
    backward's second kernel's reads. ``tracker`` (optional) is told about the workspaces' transient memory."""

    def __init__(self, launches_per_op: dict[str, int] | None = None, tracker: LiveBytesTracker | None = None):
        super().__init__(launches_per_op)
        self.tracker = tracker

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        n = len(self.records)
        out = super().__torch_dispatch__(func, types_, args, kwargs)
        if len(self.records) == n:
            return out
        name = str(func)
        rec = self.records[-1]
        if name in (_FLASH_FWD, _FLASH_BWD):
            per_sm = _fa2_records(name, args)
            rec.by_sm = {}
            for sm, d in per_sm.items():
                rec.by_sm[sm] = {"issued_flops": d["issued_flops"]}
                if "extra_bytes" in d:
                    rec.by_sm[sm]["bytes"] = rec.bytes + d["extra_bytes"]
            rec.issued_flops = per_sm[profiling.RTX_4090.sm]["issued_flops"]
            if name == _FLASH_BWD and self.tracker is not None:
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
        return out


# ----------------------------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------------------------


def _modelled(records: list[OpRecord]) -> dict[str, Any]:
    modelled: dict[str, Any] = {}
    for key, spec in profiling.DEVICES.items():
        base = profiling.roofline_seconds(records, spec)
        with_launch = profiling.roofline_seconds(records, spec, LAUNCH_OVERHEAD_S)
        padded = profiling.roofline_seconds(records, spec, padded=True)
        modelled[key] = {
            **base,
            "bytes": sum(r.bytes_on(spec) for r in records),
            "seconds_with_launch_overhead": with_launch["seconds"],
            "seconds_padded_tiles": padded["seconds"],
        }
    return modelled


def count_case(
    scope: str,
    provider: str,
    mode: str,
    shape: Shape,
    precision: str = PRECISION,
    policy: str = "none",
) -> tuple[_Counter, SavedTensorCounter, LiveBytesTracker]:
    """Run one case on meta as CUDA would run it; returns (op counter, saved-bytes counter, live-bytes tracker).

    Raises ValueError when ``policy`` is not available on this model (see :func:`profiling.set_recompute`).
    """
    if provider not in COUNTED_PROVIDERS:
        raise ValueError(f"provider {provider!r} is not counted on meta; expected one of {COUNTED_PROVIDERS}")
    with cuda_like_attention(precision):
        work = cases.build(scope, provider, shape, "meta", profiling.parameter_dtype(precision))
        if scope == "model":
            # Backend resolution is for real devices (it asks about autocast, which has no meta device type, and
            # refuses xformers off CUDA); the attention code that runs is the backend's own.
            work.module.resolved_backend = lambda x, _p=provider: _p
            why = profiling.set_recompute(work.module, policy)
            if why:
                raise ValueError(f"recompute policy {policy!r}: {why}")
        elif policy != "none":
            raise ValueError(f"recompute policies apply to the whole model, not to scope {scope!r}")
        step = cases.step_fn(work, mode)
        params = list(work.module.parameters())
        tracker = LiveBytesTracker()
        counter = _Counter(LAUNCHES, tracker)
        saved = SavedTensorCounter(exclude=params)
        with tracker, counter, saved:
            if mode == "train":
                # cases.step_fn's training step, split to read what is alive between forward and backward
                work.module.zero_grad(set_to_none=True)
                out = work.call(work.x)
                tracker.kept_for_backward = tracker.live - out.untyped_storage().nbytes()
                out.backward(torch.ones(out.shape, device=out.device, dtype=work.x.dtype))
            else:
                step()
    return counter, saved, tracker


def proxy_case(
    scope: str, provider: str, mode: str, shape: Shape, precision: str = PRECISION, policy: str = "none"
) -> dict:
    """Proxies of one case at ``shape`` on the meta device: bytes, FLOPs, launches, saved bytes, modelled times."""
    if provider not in MODELLED_PROVIDERS:
        raise ValueError(f"provider {provider!r} is not modelled: {NOT_MODELLED.get(provider, 'unknown provider')}")
    if provider == "compile":
        if policy != "none":
            raise ValueError(f"recompute policy {policy!r}: not modelled for compile (Inductor's own partitioner)")
        records, saved_bytes, saved_count = compile_records(scope, mode, shape, precision)
        top_ops = _top_ops(records)
        peak = None
    else:
        counter, saved, tracker = count_case(scope, provider, mode, shape, precision, policy)
        records, saved_bytes, saved_count = counter.records, saved.bytes, saved.count
        top_ops = _top_ops(records)
        peak = tracker.peak
    totals = profiling.summarize(records)
    full = shape in cases.full_shapes(mode)
    return {
        "scope": scope,
        "provider": provider,
        "mode": mode,
        "B": shape.B,
        "T": shape.T,
        "frames": shape.frames,
        "full_scale": full,
        "gpu_timing_shape": shape in cases.gpu_shapes(mode),
        "dtype": precision,
        "recompute": policy,
        **totals,
        "issued_flops": sum(r.issued_flops if r.issued_flops is not None else r.flops for r in records),
        "saved_bytes": saved_bytes if mode == "train" else 0,
        "saved_storages": saved_count if mode == "train" else 0,
        "peak_live_bytes": peak,
        "modelled": _modelled(records),
        # The ops that move the most bytes, kept for the full-scale shapes only (files stay small).
        "top_ops_by_bytes": top_ops if full else {},
    }


_GEMMS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default"}


def compile_records(
    scope: str, mode: str, shape: Shape, precision: str = PRECISION, kernels: dict | None = None
) -> tuple[list[OpRecord], int, int]:
    """Modelled kernels of torch.compile (Inductor) of the sdpa model: (records, saved bytes, saved storages).

    GEMMs and FlashAttention-2 are the sdpa path's, counted on meta (Inductor leaves them to cuBLAS and FA2 without
    max-autotune). Everything else is what Inductor generated for this model on the CPU backend
    (``benchmarks/inductor_kernels.py``): the depth-1 model's kernels plus (depth - 1) times the kernels one more
    block pair adds, their bytes scaled from the small batch to ``shape`` by element count; each column reduction the
    CPU backend folds into a row kernel is charged, on the GPU, as its own kernel re-reading that kernel's largest
    per-token input. Saved bytes: what Inductor's forward graph returns for backward, scaled the same way.
    """
    from . import inductor_kernels

    if scope != "model":
        raise ValueError(f"compile is modelled for the whole model only (Inductor's kernels), not {scope!r}")
    if precision != PRECISION:
        raise ValueError(f"compile is modelled under {PRECISION} only (its kernels were generated so), not {precision}")
    data = kernels if kernels is not None else inductor_kernels.load()
    if data is None:
        raise ValueError("no Inductor kernel table: run `python -m benchmarks.inductor_kernels` first")
    counter, _, _ = count_case("model", "sdpa", mode, shape, precision)
    records = [r for r in counter.records if r.op in _GEMMS or r.op in (_FLASH_FWD, _FLASH_BWD)]
    small = data["tokens"]
    full = shape.B * shape.T * cases.JOINTS
    one, two = data["modes"][mode]["1"], data["modes"][mode]["2"]

    def total(entry: dict) -> tuple[float, float, float, int]:
        read = written = column = 0.0
        for k in entry["kernels"]:
            args = [inductor_kernels.Arg("", role, numel, size) for role, numel, size in k["args"]]
            r, w = inductor_kernels.scale_bytes(args, small, full)
            read, written = read + r, written + w
            call = inductor_kernels.KernelCall(k["name"], "fused", args)
            passes = inductor_kernels.column_reduction_passes(call, small)
            if passes:
                biggest = max(a.bytes for a in args if a.role != "out" and a.numel % small == 0)
                column += passes * biggest * full / small
        return read, written, column, len(entry["kernels"])

    r1, w1, c1, n1 = total(one)
    r2, w2, c2, n2 = total(two)
    more = cases.DEPTH - 1
    records.append(OpRecord("inductor.generated (depth-1 model)", round(r1), round(w1), 0, n1))
    records.append(
        OpRecord(f"inductor.generated ({more} more block pairs)", round(more * (r2 - r1)), round(more * (w2 - w1)),
                 0, more * (n2 - n1))
    )  # fmt: skip
    if mode == "train":
        p1, p2 = one["column_reduction_passes"], two["column_reduction_passes"]
        records.append(
            OpRecord("inductor.column_reductions_on_gpu (modelled)", round(c1 + more * (c2 - c1)), 0, 0,
                     p1 + more * (p2 - p1))
        )  # fmt: skip

    def saved(entry: dict) -> tuple[float, int]:
        b = sum(n * size * (full / small if n % small == 0 else 1.0) for n, size in entry.get("saved", []))
        return b, len(entry.get("saved", []))

    (s1, k1), (s2, k2) = saved(one), saved(two)
    return records, round(s1 + more * (s2 - s1)), k1 + more * (k2 - k1)


#: Analytic estimate of the fused block's traffic outside GEMMs and attention, per block, in units of one bf16
#: activation A = tokens x 512 x 2 bytes (an fp32 residual-stream tensor is 2A), fp32 residual stream, bf16 GEMM
#: inputs, bias in the GEMM epilogues, gamma/beta/bias gradient partial sums inside the kernels:
#: forward 16A = [residual + DropPath + post-norm + next pre-norm: read x 2A + branch A, write x 2A + LN out A]
#:             + [residual + DropPath + LN2: same, 6A] + [GELU: read fc1 out 2A, write 2A];
#: backward 31A = [post-norm + residual backward: 7A] + [GELU backward: read dgelu 2A + fc1 out 2A, write 2A]
#:              + [LN2 backward + residual gradient: read dLN A + x1 2A + dx 2A, write dx 2A + branch grad A]
#:              + [LN1 backward + residual gradient: 7A] + [re-read of the pre-norm sum: 3A].
FUSED_BLOCK_A = {"forward": 16, "train": 16 + 31}


def fused_block_estimate(mode: str, shape: Shape, precision: str = PRECISION) -> list[OpRecord]:
    """A LABELLED ANALYTIC ESTIMATE, not a count: the triton model's GEMMs and fused attention ops as counted on
    meta, plus the fused block kernels' traffic from :data:`FUSED_BLOCK_A` and the weights' casts (fp32 -> bf16
    each forward, bf16 -> fp32 gradients in backward). The triton backend now runs the block kernels and the
    ``triton`` provider counts them; this hand estimate stays as a cross-check of that count (the counted block
    ops are replaced by it here)."""
    counter, _, _ = count_case("model", "triton", mode, shape, precision)
    attention = ("fastmixste.spatial_attention", "fastmixste.temporal_attention")
    records = [r for r in counter.records if r.op in _GEMMS or r.op.startswith(attention)]
    blocks = 2 * cases.DEPTH
    a = shape.B * shape.T * cases.JOINTS * cases.EMBED * 2
    kernels = 3 if mode == "forward" else 7
    records.append(OpRecord("fused block kernels (analytic estimate)", FUSED_BLOCK_A[mode] * a * blocks, 0, 0,
                            kernels * blocks))  # fmt: skip
    params = sum(p.numel() for p in cases.build("model", "eager", Shape(1, shape.T), "meta").module.parameters())
    records.append(OpRecord("weight casts (analytic estimate)", params * 6 * (1 if mode == "forward" else 2), 0, 0,
                            0))  # fmt: skip
    return records


def _top_ops(records: list[OpRecord], n: int = 8) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for r in records:
        row = table.setdefault(r.op, {"count": 0, "bytes": 0, "flops": 0, "launches": 0})
        row["count"] += 1
        row["bytes"] += r.bytes
        row["flops"] += r.flops
        row["launches"] += r.launches
    return dict(sorted(table.items(), key=lambda kv: -kv[1]["bytes"])[:n])


def all_cases(scopes: tuple[str, ...] = cases.SCOPES) -> list[tuple[str, str, str, Shape]]:
    """Full-scale shapes (training batch 128, inference batch 32) and the shapes a GPU run times, per scope/mode."""
    out = []
    for scope in scopes:
        for mode in cases.MODES:
            shapes = list(dict.fromkeys(cases.full_shapes(mode) + cases.gpu_shapes(mode)))
            for shape in shapes:
                for provider in MODELLED_PROVIDERS:
                    out.append((scope, provider, mode, shape))
    return out


def environment() -> dict[str, str]:
    """torch/triton versions, git commit, date: recorded with every result file."""
    import datetime
    import subprocess

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=RESULTS.parent
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=RESULTS.parent,
        ).stdout.strip()
        if dirty:
            commit += " (working tree modified)"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "torch": torch.__version__,
        "triton": triton_version,
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


ASSUMPTIONS: list[str] = [
    "Time = sum over kernels of max(bytes / DRAM bandwidth, FLOPs / dense bf16 tensor peak): every kernel moves its "
    "inputs and outputs through DRAM once (no L2 reuse across kernels, perfect reuse inside one), runs at peak, and "
    "kernels do not overlap. Launch overhead is 0 in the headline ('with_launch_overhead': 3 us per launch).",
    "Precision: bf16 autocast with fp32 parameters, as train.run (--amp auto on a bf16 GPU) and the GPU benchmarks run "
    "it: CUDA autocast's casting rules applied on meta (GEMM/SDPA inputs cast to bf16, weights cast once per forward, "
    "LayerNorm and softmax in fp32, residual stream fp32 by type promotion, every cast's backward cast counted).",
    "FlashAttention-2 (sdpa and xformers; xformers dispatches to FA2 on sm80+): forward tiles 128 x 128 on sm_89 and "
    "sm_90; backward kBlockM x kBlockN = 64 x 128 on sm_89 (opt-in smem < 144 KB) and 128 x 128 on sm_90; 3 backward "
    "launches; fp32 dQ accumulator allocated with query rows rounded up to 128 (peak memory) and touched in "
    "kBlockM-row tiles: cleared once, read + written once per key block, read once by the conversion kernel; "
    "softmax_d rows written and read; dO read twice. PyTorch's SDPA uses FA2 (not FA3) on H100 by default.",
    "LayerNorm backward as CUDA launches it: dX kernel, then a dgamma/dbeta pass re-reading dY, X, mean and rstd "
    "(its small partial-sum buffers are not counted).",
    "Fused temporal attention backward: two kernels; the dK/dV kernel re-reads qkv, dO, lse and the delta rows.",
    "GEMMs: cuBLAS at peak; the bias add is inside the GEMM (addmm); bias gradients are separate sum kernels.",
    "compile: torch.compile (Inductor, default mode, no max-autotune) of the sdpa model; its fused kernels and what "
    "they read and write are taken from the C++ kernels Inductor generates for this model on the CPU backend "
    "(same scheduler and fusion decisions as its GPU backend; the CPU backend has no split reductions, which adds "
    "no bytes), scaled from a small batch to the full one by element count; GEMMs and attention as the sdpa path's.",
    "triton: what the triton backend runs on meta, custom ops counting their own inputs and outputs once.",
    "Memory: peak = live bytes of the storages created in one training step (LiveBytesTracker on meta: kept "
    "activations, transients, the new fp32 grads; FA2's dQ accumulator added as a transient) + parameters x 16 B "
    "(fp32 weights, Adam's two fp32 moments, the previous step's grads, which train.run frees only after the next "
    "forward), on a card with 1 GiB taken by the CUDA context and workspaces and 10% of the rest kept as allocator "
    "headroom. 'Kept for backward' = bytes alive between forward and backward (saved tensors, checkpoint caches, "
    "the weights' bf16 copies), fitted per sequence through B = 2 and 4.",
]


def policy_table(
    providers: tuple[str, ...] = COUNTED_PROVIDERS,
    policies: tuple[str, ...] = profiling.RECOMPUTE_POLICIES,
    T: int = 243,
    precision: str = PRECISION,
    budget: profiling.MemoryBudget | None = None,
    timing_batch: int = cases.TRAIN_BATCH,
    include_compile: bool = True,
) -> list[dict]:
    """Per provider x recompute policy, whole MixSTE at T frames, a training step:
    saved-for-backward bytes and peak live bytes per sequence (fit through B = 2 and 4), the modelled step time at
    ``timing_batch`` and its cost against policy ``none``, and the largest batch that fits each card."""
    budget = budget or profiling.MemoryBudget()
    params = cases.build("model", "eager", Shape(1, T), "meta").module.num_parameters()
    rows = []
    base_ms: dict[tuple[str, str], float] = {}
    for provider in providers:
        for policy in policies:
            row: dict[str, Any] = {"provider": provider, "recompute": policy, "T": T, "precision": precision}
            try:
                mem = []
                for B in (2, 4):
                    _, _, tracker = count_case("model", provider, "train", Shape(B, T), precision, policy)
                    # kept for backward = alive between forward and backward (saved tensors, checkpoint caches,
                    # the bf16 weight copies); SavedTensorCounter misses what selective checkpointing caches itself
                    mem.append(profiling.StepMemory(B, tracker.kept_for_backward, tracker.peak))
                fit = profiling.linear_in_batch(*mem)
                counter, _, _ = count_case("model", provider, "train", Shape(timing_batch, T), precision, policy)
            except ValueError as err:
                row["available"] = False
                row["reason"] = str(err)
                rows.append(row)
                continue
            row["available"] = True
            row.update({k: round(v) for k, v in fit.items()})
            row["parameters"] = params
            row["timing_batch"] = timing_batch
            for key, spec in profiling.DEVICES.items():
                ms = profiling.roofline_seconds(counter.records, spec)["seconds"] * 1e3
                if policy == "none":
                    base_ms[(provider, key)] = ms
                row[f"{key}_train_ms"] = ms
                ref = base_ms.get((provider, key))
                row[f"{key}_time_cost"] = ms / ref - 1.0 if ref else None
                row[f"{key}_max_batch"] = budget.max_batch(
                    spec, params, fit["peak_fixed"], fit["peak_per_sequence"]
                )
            rows.append(row)
    sdpa = next((r for r in rows if r["provider"] == "sdpa" and r["recompute"] == "none" and r["available"]), None)
    if include_compile and sdpa is not None:
        rows.append(_compile_memory_row(sdpa, T, precision, budget, params, timing_batch))
    return rows


def _compile_memory_row(
    sdpa: dict, T: int, precision: str, budget: profiling.MemoryBudget, params: int, timing_batch: int
) -> dict:
    """compile, policy none: saved bytes from Inductor's forward graph; its peak is estimated as those plus the
    sdpa path's transient share per sequence (peak - saved), Inductor's buffer reuse not modelled."""
    row: dict[str, Any] = {"provider": "compile", "recompute": "none", "T": T, "precision": precision}
    try:
        saved = [compile_records("model", "train", Shape(B, T), precision)[1] for B in (2, 4)]
        records = compile_records("model", "train", Shape(timing_batch, T), precision)[0]
    except ValueError as err:
        return {**row, "available": False, "reason": str(err)}
    per = (saved[1] - saved[0]) / 2
    transient = sdpa["peak_per_sequence"] - sdpa["saved_per_sequence"]
    row.update(
        available=True,
        saved_per_sequence=round(per),
        saved_fixed=round(saved[0] - 2 * per),
        peak_per_sequence=round(per + transient),
        peak_fixed=sdpa["peak_fixed"],
        peak_note="estimate: Inductor's saved bytes + the sdpa path's transient bytes per sequence",
        parameters=params,
        timing_batch=timing_batch,
    )
    for key, spec in profiling.DEVICES.items():
        row[f"{key}_train_ms"] = profiling.roofline_seconds(records, spec)["seconds"] * 1e3
        row[f"{key}_time_cost"] = 0.0
        row[f"{key}_max_batch"] = budget.max_batch(spec, params, row["peak_fixed"], row["peak_per_sequence"])
    return row


def headline(precision: str = PRECISION, T: int = 243) -> dict:
    """Whole MixSTE at T frames: modelled ms of a training step (B = 128) and a forward (B = 32) per provider and
    device, and the ratios triton vs every other provider (> 1: triton is faster)."""
    train = {p: proxy_case("model", p, "train", Shape(cases.TRAIN_BATCH, T), precision) for p in MODELLED_PROVIDERS}
    fwd = {p: proxy_case("model", p, "forward", Shape(cases.INFER_BATCH, T), precision) for p in MODELLED_PROVIDERS}
    block_estimate = {
        "train": fused_block_estimate("train", Shape(cases.TRAIN_BATCH, T), precision),
        "forward": fused_block_estimate("forward", Shape(cases.INFER_BATCH, T), precision),
    }
    out: dict[str, Any] = {}
    for key in profiling.DEVICES:
        entry: dict[str, Any] = {}
        for variant, field_ in (("", "seconds"), ("_padded_tiles", "seconds_padded_tiles"),
                                ("_with_launch_overhead", "seconds_with_launch_overhead")):  # fmt: skip
            tr = {p: round(r["modelled"][key][field_] * 1e3, 1) for p, r in train.items()}
            fw = {p: round(r["modelled"][key][field_] * 1e3, 1) for p, r in fwd.items()}
            ratios = {f"train_triton_vs_{p}": round(tr[p] / tr["triton"], 3) for p in tr if p != "triton"}
            ratios.update({f"forward_triton_vs_{p}": round(fw[p] / fw["triton"], 3) for p in fw if p != "triton"})
            entry[f"train{variant}"], entry[f"forward{variant}"], entry[f"ratios{variant}"] = tr, fw, ratios
        # Labelled estimates, not counts: Inductor's fusion around the fused attention cores, taken as compile's
        # time plus what the fused cores save over FA2 and its layout copies in the counted (uncompiled) paths;
        # and the fused block kernels' traffic written out by hand (FUSED_BLOCK_A).
        spec = profiling.DEVICES[key]
        est = {m: profiling.roofline_seconds(recs, spec)["seconds"] * 1e3 for m, recs in block_estimate.items()}
        entry["estimates_fused_block_analytic"] = {
            "train": round(est["train"], 1),
            "forward": round(est["forward"], 1),
            **{f"train_vs_{p}": round(entry["train"][p] / est["train"], 3) for p in entry["train"] if p != "triton"},
            **{f"forward_vs_{p}": round(entry["forward"][p] / est["forward"], 3)
               for p in entry["forward"] if p != "triton"},
        }  # fmt: skip
        entry["estimates"] = {
            "triton+compile ~= compile + (triton - sdpa)": {
                "train": round(entry["train"]["compile"] + entry["train"]["triton"] - entry["train"]["sdpa"], 1),
                "forward": round(
                    entry["forward"]["compile"] + entry["forward"]["triton"] - entry["forward"]["sdpa"], 1
                ),
            }
        }
        out[key] = entry
    out["precision"] = precision
    out["T"] = T
    out["train_batch"] = cases.TRAIN_BATCH
    out["forward_batch"] = cases.INFER_BATCH
    out["targets"] = TARGETS
    return out


#: Issue targets (modelled, whole MixSTE, T = 243): triton's speed-up over each peer.
TARGETS = {
    "train_triton_vs_eager": 2.0,
    "train_triton_vs_sdpa": 1.5,
    "train_triton_vs_compile": 1.25,
    "forward_triton_vs_sdpa": 1.3,
}


def compute(scopes: tuple[str, ...] = cases.SCOPES, verbose: bool = False, memory: bool = True) -> dict:
    """Every case of ``all_cases`` plus the device specs and how each provider was modelled."""
    results = []
    skipped = []
    t0 = time.perf_counter()
    for scope, provider, mode, shape in all_cases(scopes):
        try:
            results.append(proxy_case(scope, provider, mode, shape))
        except Exception as err:  # a provider that cannot even be traced on meta is reported, not hidden
            skipped.append(
                {
                    "scope": scope,
                    "provider": provider,
                    "mode": mode,
                    "B": shape.B,
                    "T": shape.T,
                    "reason": f"{type(err).__name__}: {err}",
                }
            )
        if verbose:
            print(f"{scope:20s} {provider:9s} {mode:8s} {shape}  {time.perf_counter() - t0:6.1f}s", flush=True)
    return {
        "kind": "modelled",
        "note": (
            "MODELLED on the meta device (no GPU): bytes = inputs + outputs of every non-view op, FLOPs from "
            "torch.utils.flop_counter formulas, time = sum over ops of max(bytes/bandwidth, flops/peak). "
            f"Precision: {PRECISION} (fp32 parameters). Not a measurement."
        ),
        "precision": PRECISION,
        "assumptions": ASSUMPTIONS,
        "environment": environment(),
        "devices": profiling.device_table(),
        "launch_overhead_variant_s": LAUNCH_OVERHEAD_S,
        "providers": {
            "eager": "aten ops of the upstream math, one launch each",
            "sdpa": "4-D calls as FlashAttention-2 with its real tiles per architecture and its fp32 dQ workspace",
            "xformers": "FlashAttention-2 (what xformers dispatches to on sm80+), workspace included",
            "triton": "what the triton backend runs on meta: custom ops count their inputs + outputs once",
            "compile": "Inductor's fused kernels (from its CPU-backend code for this model) + the sdpa path's "
            "GEMMs and FlashAttention-2",
            **NOT_MODELLED,
        },
        "train_batch": cases.TRAIN_BATCH,
        "infer_batch": cases.INFER_BATCH,
        "memory": policy_table() if memory and "model" in scopes else [],
        "memory_budget": profiling.MemoryBudget().__dict__,
        "results": results,
        "skipped": skipped,
    }


def dumps(data: dict) -> str:
    """JSON with one case per line: small, and diffs read case by case."""
    head = {k: v for k, v in data.items() if k not in ("results", "skipped", "memory")}
    lines = json.dumps(head, indent=1)[:-2] + ",\n"
    rows = ",\n".join("  " + json.dumps(r) for r in data.get("memory", []))
    lines += f' "memory": [\n{rows}\n ],\n'
    for key in ("results", "skipped"):
        rows = ",\n".join("  " + json.dumps(r) for r in data[key])
        lines += f' "{key}": [\n{rows}\n ]' + (",\n" if key == "results" else "\n")
    return lines + "}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "proxies.json")
    parser.add_argument("--scopes", nargs="*", default=list(cases.SCOPES), choices=cases.SCOPES)
    parser.add_argument("--headline", action="store_true", help="print the whole-model headline JSON and exit")
    parser.add_argument("--memory", action="store_true", help="print the provider x recompute memory table and exit")
    args = parser.parse_args(argv)
    if args.headline:
        print(json.dumps(headline(), indent=1))
        return
    if args.memory:
        print(json.dumps(policy_table(), indent=1))
        return
    data = compute(tuple(args.scopes), verbose=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from fastmixste._io import atomic_write

    with atomic_write(args.out, "w") as fh:
        fh.write(dumps(data))
    print(f"wrote {args.out} ({len(data['results'])} cases, {len(data['skipped'])} skipped)")


if __name__ == "__main__":
    main()
