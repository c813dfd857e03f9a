"""Full-scale, hardware-independent proxies for every (scope, provider, mode, shape), computed on the meta device.

``python -m benchmarks.proxies [--out benchmarks/results/proxies.json]`` writes, per case: bytes read + written,
FLOPs, kernel launches (fastmixste.profiling.OpCounter), bytes saved for backward (SavedTensorCounter, parameters
excluded) and the roofline-modelled time on an RTX 4090 and an H100, in bf16. These are MODELLED numbers.

How each provider is modelled on meta (where the real dispatch cannot be observed without a GPU):
- ``eager``: the aten ops the eager path dispatches, each one launch.
- ``sdpa``: on CUDA, SDPA picks FlashAttention-2 for 4-D bf16 inputs without mask or dropout; on meta its
  dispatcher would pick the math fallback, so 4-D calls are routed to ``aten._scaled_dot_product_flash_attention``
  (one op forward, one backward; FA2's backward launches 3 kernels and accumulates dQ in an fp32 workspace padded to
  128 query rows, which dispatch cannot see and the model adds: 4 passes over it). Calls with other ranks keep
  the math path, as on CUDA, where the fused SDPA kernels take 4-D inputs only.
- ``xformers``: modelled as PyTorch's memory-efficient kernel (the same CUTLASS kernel family), called through
  the backend's own layout code; its backward's own workspace is not modelled (optimistic for xformers).
- ``triton``: the fused ops are opaque custom ops; each counts its inputs and outputs once. The temporal backward
  launches 2 kernels (dQ, then dK/dV).
- ``compile``: not modelled (Inductor cannot run on meta); only measured.
bf16 end to end (parameters and activations): a bf16-autocast run keeps LayerNorm/softmax outputs in fp32 and
re-casts weights every step, which adds bytes to every provider (most to eager, whose softmax inputs are the
largest tensors), so pure bf16 is the conservative choice for the fused path.
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

from fastmixste import profiling
from fastmixste.profiling import OpCounter, OpRecord, SavedTensorCounter

from . import cases
from .cases import Shape

RESULTS = Path(__file__).resolve().parent / "results"
MODELLED_PROVIDERS: tuple[str, ...] = ("eager", "sdpa", "triton", "xformers")
NOT_MODELLED = {"compile": "torch.compile (Inductor) cannot run on the meta device: measured only, not modelled"}
LAUNCH_OVERHEAD_S = 3e-6

LAUNCHES = {
    "fastmixste.temporal_attention_backward.default": 2,
    # FA2 backward: dot(dO, O) pre-kernel, the main kernel, the dQ fp32 -> bf16 conversion.
    "aten._scaled_dot_product_flash_attention_backward.default": 3,
}
_FLASH_BWD = "aten._scaled_dot_product_flash_attention_backward.default"
_FA2_ROWS = 128


# ----------------------------------------------------------------------------------------------------------------
# Routing the peers to the kernels they use on CUDA
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def cuda_like_attention() -> Iterator[None]:
    """Inside: SDPA on 4-D meta tensors calls the FlashAttention-2 op (as CUDA would), and, where xformers is not
    installed, ``xformers.ops.memory_efficient_attention`` is a stand-in calling PyTorch's memory-efficient op."""
    original = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if q.device.type == "meta" and q.dim() == k.dim() == v.dim() == 4 and attn_mask is None:
            return torch.ops.aten._scaled_dot_product_flash_attention(
                q, k, v, dropout_p, is_causal, False, scale=scale
            )[0]
        return original(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
        # xformers layout (batch, seq, heads, D) -> SDPA layout (batch, heads, seq, D): views only.
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        needs_lse = torch.is_grad_enabled() and q.requires_grad
        out = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, needs_lse, p, False, scale=scale)
        return out[0].transpose(1, 2)

    saved_modules = {name: sys.modules.get(name) for name in ("xformers", "xformers.ops")}
    stub = saved_modules["xformers"] is None
    if stub:
        pkg = types.ModuleType("xformers")
        ops = types.ModuleType("xformers.ops")
        ops.memory_efficient_attention = memory_efficient_attention
        pkg.ops = ops
        sys.modules["xformers"], sys.modules["xformers.ops"] = pkg, ops
    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
        if stub:
            for name, mod in saved_modules.items():
                if mod is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = mod


def _pad(n: int, tile: int) -> int:
    return math.ceil(n / tile) * tile


def _issued_flops(name: str, args: tuple) -> int | None:
    """FLOPs an attention kernel issues on its padded tiles (the 'padded' variant), or None for other ops.

    Tiles: FA2 (hdim 64, sm8x/sm90) 128 x 128 forward and backward; PyTorch's memory-efficient kernel 64 x 64;
    the fused spatial kernel packs floor(64 / N) frames into one 64 x 64 tile; the fused temporal kernel uses
    64 x 64 tiles (T = 243 -> 256) and recomputes Q K^T and dO V^T in its dK/dV pass (7 matmuls backward).
    """
    if name.startswith("aten._scaled_dot_product_flash_attention") or name.startswith(
        "aten._scaled_dot_product_efficient_attention"
    ):
        q = args[1] if name.endswith("backward.default") else args[0]  # (B, H, L, D)
        B, H, L, D = q.shape
        tile = 128 if "flash" in name else 64
        mm = 5 if name.endswith("backward.default") else 2
        return mm * 2 * B * H * _pad(L, tile) ** 2 * D
    if name.startswith("fastmixste.spatial_attention"):
        qkv = args[1] if "backward" in name else args[0]
        B, T, N, C3 = qkv.shape
        programs = math.ceil(B * T / max(1, 64 // N)) * args[2 if "backward" in name else 1]
        mm = 5 if "backward" in name else 2
        return mm * 2 * programs * 64 * 64 * (C3 // 3 // args[2 if "backward" in name else 1])
    if name.startswith("fastmixste.temporal_attention"):
        qkv = args[1] if "backward" in name else args[0]
        H = args[4] if "backward" in name else args[1]
        B, T, N, C3 = qkv.shape
        mm = 7 if "backward" in name else 2
        return mm * 2 * B * N * H * _pad(T, 64) ** 2 * (C3 // 3 // H)
    return None


class _Counter(OpCounter):
    """OpCounter plus the attention kernels' padded-tile FLOPs and the FA2 backward workspace dispatch cannot see."""

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        n = len(self.records)
        out = super().__torch_dispatch__(func, types_, args, kwargs)
        if len(self.records) > n:
            self.records[-1].issued_flops = _issued_flops(str(func), args)
        if str(func) == _FLASH_BWD:
            q = args[1]  # (B, H, L, D)
            B, H, L, D = q.shape
            accum = B * H * math.ceil(L / _FA2_ROWS) * _FA2_ROWS * D * 4
            # zeroed by the kernel, atomically accumulated (read + write), read by the conversion kernel
            self.records.append(OpRecord("fa2.dq_accum_workspace (modelled)", 2 * accum, 2 * accum, 0, 0))
        return out


# ----------------------------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------------------------


def proxy_case(scope: str, provider: str, mode: str, shape: Shape, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Proxies of one case at ``shape`` on the meta device: bytes, FLOPs, launches, saved bytes, modelled times."""
    if provider not in MODELLED_PROVIDERS:
        raise ValueError(f"provider {provider!r} is not modelled: {NOT_MODELLED.get(provider, 'unknown provider')}")
    with cuda_like_attention():
        work = cases.build(scope, provider, shape, "meta", dtype)
        if scope == "model":
            # Backend resolution is for real devices (it asks about autocast, which has no meta device type, and
            # refuses xformers off CUDA); the attention code that runs is the backend's own.
            work.module.resolved_backend = lambda x, _p=provider: _p
        step = cases.step_fn(work, mode)
        params = list(work.module.parameters())
        counter = _Counter(LAUNCHES)
        saved = SavedTensorCounter(exclude=params)
        with counter, saved:
            step()
    totals = counter.totals()
    modelled: dict[str, Any] = {}
    for key, spec in profiling.DEVICES.items():
        base = profiling.roofline_seconds(counter.records, spec)
        with_launch = profiling.roofline_seconds(counter.records, spec, LAUNCH_OVERHEAD_S)
        padded = profiling.roofline_seconds(counter.records, spec, padded=True)
        modelled[key] = {
            **base,
            "seconds_with_launch_overhead": with_launch["seconds"],
            "seconds_padded_tiles": padded["seconds"],
        }
    # The ops that move the most bytes, kept for the full-scale shapes only (files stay small).
    top = (
        sorted(counter.by_op().items(), key=lambda kv: -kv[1]["bytes"])[:8] if shape in cases.full_shapes(mode) else []
    )
    return {
        "scope": scope,
        "provider": provider,
        "mode": mode,
        "B": shape.B,
        "T": shape.T,
        "frames": shape.frames,
        "full_scale": shape in cases.full_shapes(mode),
        "gpu_timing_shape": shape in cases.gpu_shapes(mode),
        "dtype": str(dtype).removeprefix("torch."),
        **totals,
        "issued_flops": sum(r.issued_flops if r.issued_flops is not None else r.flops for r in counter.records),
        "saved_bytes": saved.bytes if mode == "train" else 0,
        "saved_storages": saved.count if mode == "train" else 0,
        "modelled": modelled,
        "top_ops_by_bytes": dict(top),
    }


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


def compute(scopes: tuple[str, ...] = cases.SCOPES, verbose: bool = False) -> dict:
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
            "bf16 end to end. Not a measurement."
        ),
        "environment": environment(),
        "devices": profiling.device_table(),
        "launch_overhead_variant_s": LAUNCH_OVERHEAD_S,
        "providers": {
            "eager": "aten ops of the upstream math, one launch each",
            "sdpa": "4-D calls as FlashAttention-2 (+ its fp32 dQ workspace); other ranks as the math fallback",
            "xformers": "PyTorch's memory-efficient attention op (same kernel family); workspace not modelled",
            "triton": "fused custom ops, inputs + outputs once; temporal backward = 2 launches",
            **NOT_MODELLED,
        },
        "train_batch": cases.TRAIN_BATCH,
        "infer_batch": cases.INFER_BATCH,
        "results": results,
        "skipped": skipped,
    }


def dumps(data: dict) -> str:
    """JSON with one case per line: small, and diffs read case by case."""
    head = {k: v for k, v in data.items() if k not in ("results", "skipped")}
    lines = json.dumps(head, indent=1)[:-2] + ",\n"
    for key in ("results", "skipped"):
        rows = ",\n".join("  " + json.dumps(r) for r in data[key])
        lines += f' "{key}": [\n{rows}\n ]' + (",\n" if key == "results" else "\n")
    return lines + "}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "proxies.json")
    parser.add_argument("--scopes", nargs="*", default=list(cases.SCOPES), choices=cases.SCOPES)
    args = parser.parse_args(argv)
    data = compute(tuple(args.scopes), verbose=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(data))
    print(f"wrote {args.out} ({len(data['results'])} cases, {len(data['skipped'])} skipped)")


if __name__ == "__main__":
    main()
