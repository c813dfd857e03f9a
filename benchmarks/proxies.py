"""Full-scale, hardware-independent proxies for every (scope, provider, mode, shape), computed on the meta device.

``python -m benchmarks.proxies [--out benchmarks/results/proxies.json]`` writes, per case: bytes read + written,
FLOPs, kernel launches (fastmixste.perf.profiling.OpCounter), saved bytes (perf.memory.MemoryTracker, parameters
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

Three models per case: the peak model (``seconds``: every kernel at 100% of peak, useful FLOPs), and the expected
and pessimistic models (``seconds_expected``, ``seconds_pessimistic``): per-kernel-class efficiencies from published
measurements (benchmarks/efficiency.py), attention kernels charged on their padded tiles, launch overhead; the
expected one scaled by a GPU calibration when results/calibration.json exists (benchmarks/calibration.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fastmixste import RECOMPUTE_POLICIES
from fastmixste.perf import memory as perf_memory
from fastmixste.perf import profiling
from fastmixste.perf.memory import MemoryTracker
from fastmixste.perf.profiling import OpRecord

from . import cases
from .cases import Shape
from .cuda_counting import FLASH_BWD, FLASH_FWD, GEMM_OPS, CudaCounter, cuda_like_attention
from .machine import environment

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
    # dQ and dK/dV kernels; a broadcast q adds the sum of its per-chunk dQ partials and the cast (cuda_counting).
    "fastmixste.cross_attention_backward.default": 2,
    # FA2 backward: dot(dO, O) + dQaccum clear, the main kernel, the dQ fp32 -> bf16 conversion.
    "aten._scaled_dot_product_flash_attention_backward.default": 3,
}

# ----------------------------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------------------------


#: The calibration applied to the expected model (benchmarks/calibration.py), None when there is none. Set by
#: :func:`set_calibration`; ``main`` loads results/calibration.json (or --calibration PATH) when present.
_CALIBRATION: dict | None = None
_CALIBRATION_SOURCE: str | None = None


def set_calibration(data: dict | None, source: str | None = None) -> None:
    """Use ``data`` (a calibration document, see benchmarks/calibration.py) for the expected model; None: none."""
    global _CALIBRATION, _CALIBRATION_SOURCE
    _CALIBRATION, _CALIBRATION_SOURCE = data, (source or "given") if data else None


def calibration_note() -> str | None:
    """What the expected model is calibrated with, None when it is not."""
    if _CALIBRATION is None:
        return None
    return f"expected model scaled by measured/modelled per kernel class for {_CALIBRATION['device']} from " \
        f"{_CALIBRATION_SOURCE} ({_CALIBRATION.get('gpu', 'GPU unnamed')}, B = {_CALIBRATION.get('B')})"


def level_seconds(records: list[OpRecord], device: str, level: str, provider: str | None = None) -> dict[str, Any]:
    """Seconds of ``records`` on ``device`` under the efficiency ``level`` (benchmarks/efficiency.py); the expected
    level is scaled by the calibration for ``provider`` where one is set (:func:`set_calibration`)."""
    from . import calibration, efficiency

    scale = calibration.scale_for(_CALIBRATION, device, provider or "") if level == "expected" else None
    return profiling.efficient_seconds(records, profiling.DEVICES[device], efficiency.table(device, level), scale)


def _modelled(records: list[OpRecord], provider: str | None = None) -> dict[str, Any]:
    modelled: dict[str, Any] = {}
    for key, spec in profiling.DEVICES.items():
        base = profiling.roofline_seconds(records, spec)
        with_launch = profiling.roofline_seconds(records, spec, LAUNCH_OVERHEAD_S)
        padded = profiling.roofline_seconds(records, spec, padded=True)
        expected = level_seconds(records, key, "expected", provider)
        modelled[key] = {
            **base,
            "bytes": sum(r.bytes_on(spec) for r in records),
            "seconds_with_launch_overhead": with_launch["seconds"],
            "seconds_padded_tiles": padded["seconds"],
            "seconds_expected": expected["seconds"],
            "seconds_pessimistic": level_seconds(records, key, "pessimistic")["seconds"],
            "expected_by_class": {c: round(t, 9) for c, t in sorted(expected["by_class"].items())},
        }
    return modelled


def count_case(
    scope: str,
    provider: str,
    mode: str,
    shape: Shape,
    precision: str = PRECISION,
    policy: str = "none",
) -> tuple[CudaCounter, MemoryTracker]:
    """Run one case on meta as CUDA would run it; returns (op counter, memory tracker).

    Raises ValueError when ``policy`` is not available on this model (see :func:`perf_memory.set_recompute`).
    """
    if provider not in COUNTED_PROVIDERS:
        raise ValueError(f"provider {provider!r} is not counted on meta; expected one of {COUNTED_PROVIDERS}")
    with cuda_like_attention(precision):
        work = cases.build(scope, provider, shape, "meta", profiling.parameter_dtype(precision))
        if scope == "model":
            # Backend resolution is for real devices (it asks about autocast, which has no meta device type, and
            # refuses xformers off CUDA); the attention code that runs is the backend's own.
            work.module.resolved_backend = lambda x, _p=provider: _p
            why = perf_memory.set_recompute(work.module, policy)
            if why:
                raise ValueError(f"recompute policy {policy!r}: {why}")
        elif policy != "none":
            raise ValueError(f"recompute policies apply to the whole model, not to scope {scope!r}")
        step = cases.step_fn(work, mode)
        params = list(work.module.parameters())
        tracker = MemoryTracker(exclude=params)
        counter = CudaCounter(LAUNCHES, tracker)
        with tracker, counter:
            if mode == "train":
                # cases.step_fn's training step, split to read what is alive between forward and backward
                work.module.zero_grad(set_to_none=True)
                out = work.call(work.x)
                tracker.keep_for_backward(out)
                out.backward(torch.ones(out.shape, device=out.device, dtype=work.x.dtype))
            else:
                step()
    return counter, tracker


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
        counter, tracker = count_case(scope, provider, mode, shape, precision, policy)
        records, saved_bytes, saved_count = counter.records, tracker.saved_bytes, tracker.saved_count
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
        "modelled": _modelled(records, provider),
        # The ops that move the most bytes, kept for the full-scale shapes only (files stay small).
        "top_ops_by_bytes": top_ops if full else {},
    }




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
    counter, _ = count_case("model", "sdpa", mode, shape, precision)
    records = [r for r in counter.records if r.op in GEMM_OPS or r.op in (FLASH_FWD, FLASH_BWD)]
    small = data["tokens"]
    full = shape.B * shape.T * cases.JOINTS
    one, two = data["modes"][mode]["1"], data["modes"][mode]["2"]

    def total(entry: dict) -> tuple[float, float, float, int, int]:
        read = written = column = 0.0
        count = 0
        for k in entry["kernels"]:
            args = [inductor_kernels.Arg("", role, numel, size) for role, numel, size in k["args"]]
            r, w = inductor_kernels.scale_bytes(args, small, full)
            read, written = read + r, written + w
            call = inductor_kernels.KernelCall(k["name"], "fused", args)
            passes = inductor_kernels.column_reduction_passes(call, small, mix_order=True)
            if passes:
                biggest = max(a.bytes for a in args if a.role != "out" and a.numel % small == 0)
                column += passes * biggest * full / small
                count += passes
        return read, written, column, len(entry["kernels"]), count

    r1, w1, c1, n1, p1 = total(one)
    r2, w2, c2, n2, p2 = total(two)
    more = cases.DEPTH - 1
    records.append(OpRecord("inductor.generated (depth-1 model)", round(r1), round(w1), 0, n1))
    records.append(
        OpRecord(f"inductor.generated ({more} more block pairs)", round(more * (r2 - r1)), round(more * (w2 - w1)),
                 0, more * (n2 - n1))
    )  # fmt: skip
    if mode == "train":
        records.append(
            OpRecord("inductor.column_reductions_on_gpu (modelled)", round(c1 + more * (c2 - c1)), 0, 0,
                     p1 + more * (p2 - p1))
        )  # fmt: skip

    def saved(entry: dict) -> tuple[float, int]:
        b = sum(n * size * (full / small if n % small == 0 else 1.0) for n, size in entry.get("saved", []))
        return b, len(entry.get("saved", []))

    (s1, k1), (s2, k2) = saved(one), saved(two)
    return records, round(s1 + more * (s2 - s1)), k1 + more * (k2 - k1)


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
    "GEMMs: cuBLAS; the bias add is inside the GEMM (addmm); bias gradients are separate sum kernels.",
    "Expected and pessimistic models (seconds_expected / seconds_pessimistic, ratios_expected / ratios_pessimistic): "
    "per kernel class an efficiency from published measurements (benchmarks/efficiency.py, results/efficiency.json: "
    "cuBLAS GEMMs, weight-gradient GEMMs, flash-style forward and backward, streaming bandwidth, launch overhead); "
    "time per kernel = max(issued FLOPs / (peak x MMA efficiency), bytes / (bandwidth x streaming efficiency)) + "
    "launches x launch overhead. Attention kernels, FlashAttention-2 and ours alike, are charged on their padded "
    "tiles (FA2: 128 x 128 forward, kBlockM x 128 backward; ours: their launch plans) at the same efficiency. A "
    "calibration file (results/calibration.json, written by benchmarks.gpu_check on a GPU) scales the expected "
    "model per class when present; the headline says so.",
    "compile: torch.compile (Inductor, default mode, no max-autotune) of the sdpa model; its fused kernels and what "
    "they read and write are taken from the C++ kernels Inductor generates for this model on the CPU backend "
    "(same scheduler and fusion decisions as its GPU backend for pointwise chains), scaled from a small batch to the "
    "full one by element count; GEMMs and attention as the sdpa path's. Each column reduction (bias, LayerNorm-"
    "weight, position-embedding gradients: fp32 outputs that do not grow with the tokens, casts of weight-sized "
    "inputs excluded) is a GPU pass re-reading the kernel's largest per-token input, except a LayerNorm backward's "
    "dgamma/dbeta, which the GPU backend's mix-order reduction (torch._inductor.config.triton.mix_order_reduction, "
    "default on in torch 2.13) fuses into the dX pass. max-autotune is not modelled: its Triton GEMM templates "
    "only replace cuBLAS where faster (the same GEMM efficiency here) and its CUDA graphs remove launch overhead; "
    "the headline gives that bound under estimates.",
    "triton: what the triton backend runs on meta, custom ops counting their own inputs and outputs once.",
    "Memory: peak = live bytes of the storages created in one training step (MemoryTracker on meta: kept "
    "activations, transients, the new fp32 grads; FA2's dQ accumulator added as a transient) + parameters x 16 B "
    "(fp32 weights, Adam's two fp32 moments, the previous step's grads, which train.run frees only after the next "
    "forward), on a card with 1 GiB taken by the CUDA context and workspaces and 10% of the rest kept as allocator "
    "headroom. 'Kept for backward' = bytes alive between forward and backward (saved tensors, checkpoint caches, "
    "the weights' bf16 copies), fitted per sequence through B = 2 and 4.",
]


def policy_table(
    providers: tuple[str, ...] = COUNTED_PROVIDERS,
    policies: tuple[str, ...] = RECOMPUTE_POLICIES,
    T: int = 243,
    precision: str = PRECISION,
    budget: perf_memory.MemoryBudget | None = None,
    timing_batch: int = cases.TRAIN_BATCH,
    include_compile: bool = True,
) -> list[dict]:
    """Per provider x recompute policy, whole MixSTE at T frames, a training step:
    saved-for-backward bytes and peak live bytes per sequence (fit through B = 2 and 4), the modelled step time at
    ``timing_batch`` and its cost against policy ``none``, and the largest batch that fits each card."""
    budget = budget or perf_memory.MemoryBudget()
    params = cases.build("model", "eager", Shape(1, T), "meta").module.num_parameters()
    rows = []
    base_ms: dict[tuple[str, str], float] = {}
    for provider in providers:
        for policy in policies:
            row: dict[str, Any] = {"provider": provider, "recompute": policy, "T": T, "precision": precision}
            try:
                mem = []
                for B in (2, 4):
                    _, tracker = count_case("model", provider, "train", Shape(B, T), precision, policy)
                    # kept for backward = alive between forward and backward (saved tensors, checkpoint caches,
                    # the bf16 weight copies); the saved-tensor hook misses what selective checkpointing caches itself
                    mem.append(perf_memory.StepMemory(B, tracker.kept_for_backward, tracker.peak))
                fit = perf_memory.linear_in_batch(*mem)
                counter, _ = count_case("model", provider, "train", Shape(timing_batch, T), precision, policy)
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
                exp = level_seconds(counter.records, key, "expected", provider)["seconds"] * 1e3
                if policy == "none":
                    base_ms[(provider, key)] = ms
                    base_ms[(provider, key, "expected")] = exp
                row[f"{key}_train_ms"] = ms
                row[f"{key}_train_ms_expected"] = exp
                ref = base_ms.get((provider, key))
                row[f"{key}_time_cost"] = ms / ref - 1.0 if ref else None
                ref = base_ms.get((provider, key, "expected"))
                row[f"{key}_time_cost_expected"] = exp / ref - 1.0 if ref else None
                row[f"{key}_max_batch"] = budget.max_batch(
                    spec, params, fit["peak_fixed"], fit["peak_per_sequence"]
                )
            rows.append(row)
    sdpa = next((r for r in rows if r["provider"] == "sdpa" and r["recompute"] == "none" and r["available"]), None)
    if include_compile and sdpa is not None:
        rows.append(_compile_memory_row(sdpa, T, precision, budget, params, timing_batch))
    return rows


def _compile_memory_row(
    sdpa: dict, T: int, precision: str, budget: perf_memory.MemoryBudget, params: int, timing_batch: int
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
        row[f"{key}_train_ms_expected"] = level_seconds(records, key, "expected", "compile")["seconds"] * 1e3
        row[f"{key}_time_cost"] = 0.0
        row[f"{key}_time_cost_expected"] = 0.0
        row[f"{key}_max_batch"] = budget.max_batch(spec, params, row["peak_fixed"], row["peak_per_sequence"])
    return row


#: The headline's columns: (JSON suffix, label, what is read from each case's "modelled" entry). "" is the peak
#: model (every kernel at 100%, useful FLOPs), kept as ``ratios``.
LEVEL_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("", "optimistic (peak)", "seconds"),
    ("_expected", "expected", "seconds_expected"),
    ("_pessimistic", "pessimistic", "seconds_pessimistic"),
    ("_padded_tiles", "peak, padded tiles", "seconds_padded_tiles"),
    ("_with_launch_overhead", "peak + 3 us/launch", "seconds_with_launch_overhead"),
)


def ratios_from(train_ms: dict[str, float], forward_ms: dict[str, float]) -> dict[str, float]:
    """``train_triton_vs_<peer>`` and ``forward_triton_vs_<peer>``: peer time over triton time (> 1: triton faster)."""
    ratios = {f"train_triton_vs_{p}": round(train_ms[p] / train_ms["triton"], 3) for p in train_ms if p != "triton"}
    ratios.update({f"forward_triton_vs_{p}": round(forward_ms[p] / forward_ms["triton"], 3)
                   for p in forward_ms if p != "triton"})  # fmt: skip
    return ratios


def headline_entry(train: dict[str, dict], forward: dict[str, dict], device: str) -> dict[str, Any]:
    """One device's headline from proxy cases ({provider: proxy_case result} per mode): per level
    (:data:`LEVEL_FIELDS`) the ms per provider and the ratios, plus the labelled triton+compile estimate."""
    entry: dict[str, Any] = {}
    for suffix, _, field_ in LEVEL_FIELDS:
        tr = {p: round(r["modelled"][device][field_] * 1e3, 1) for p, r in train.items()}
        fw = {p: round(r["modelled"][device][field_] * 1e3, 1) for p, r in forward.items()}
        entry[f"train{suffix}"], entry[f"forward{suffix}"], entry[f"ratios{suffix}"] = tr, fw, ratios_from(tr, fw)
    # A labelled estimate, not a count: Inductor's fusion around the fused attention cores, taken as compile's
    # time plus what the fused cores save over FA2 and its layout copies in the counted (uncompiled) paths.
    entry["estimates"] = {}
    if "compile" in train and "sdpa" in train:
        entry["estimates"]["triton+compile ~= compile + (triton - sdpa)"] = {
            m: round(entry[m]["compile"] + entry[m]["triton"] - entry[m]["sdpa"], 1) for m in ("train", "forward")
        }
        from . import efficiency

        by_class = train["compile"]["modelled"][device]["expected_by_class"]
        graphs = by_class.get("launch", 0.0) * 1e3
        c = train["compile"]
        # GEMM epilogue fusion at most saves one read of each fc1 output (the GELU kernel's; backward still needs it)
        fc1 = c["B"] * c["T"] * cases.JOINTS * int(cases.EMBED * cases.MLP_RATIO) * 2 * 2 * cases.DEPTH
        spec = profiling.DEVICES[device]
        epilogue = fc1 / (spec.bandwidth * efficiency.table(device, "expected")["streaming"]) * 1e3
        bound = entry["train_expected"]["compile"] - graphs - epilogue
        entry["estimates"]["compile max-autotune bound, expected, train"] = {
            "ms": round(bound, 1),
            "triton_vs": round(bound / entry["train_expected"]["triton"], 3),
            "note": f"what mode='max-autotune' could add to the expected model at most: CUDA graphs remove the "
            f"launch overhead ({graphs:.1f} ms); Triton GEMM templates replace cuBLAS only where faster (the same "
            f"GEMM efficiency here: no gain); GEMM epilogue fusion of bias + GELU saves at most one read of each "
            f"fc1 output ({epilogue:.1f} ms)",
        }
    return entry


def headline(precision: str = PRECISION, T: int = 243) -> dict:
    """Whole MixSTE at T frames: modelled ms of a training step (B = 128) and a forward (B = 32) per provider and
    device, under the peak model and the expected and pessimistic efficiency models, and the ratios triton vs every
    other provider (> 1: triton is faster)."""
    train = {p: proxy_case("model", p, "train", Shape(cases.TRAIN_BATCH, T), precision) for p in MODELLED_PROVIDERS}
    fwd = {p: proxy_case("model", p, "forward", Shape(cases.INFER_BATCH, T), precision) for p in MODELLED_PROVIDERS}
    out: dict[str, Any] = {key: headline_entry(train, fwd, key) for key in profiling.DEVICES}
    out["precision"] = precision
    out["T"] = T
    out["train_batch"] = cases.TRAIN_BATCH
    out["forward_batch"] = cases.INFER_BATCH
    out["levels"] = {label: f"ratios{suffix}" for suffix, label, _ in LEVEL_FIELDS}
    out["calibration"] = calibration_note()
    out["targets"] = TARGETS
    out["targets_met_expected"] = {
        key: {name: out[key]["ratios_expected"][name] >= goal for name, goal in TARGETS.items()}
        for key in profiling.DEVICES
    }
    out["targets_met_expected"]["rtx4090"]["train_triton_vs_compile_pessimistic>=1.15"] = (
        out["rtx4090"]["ratios_pessimistic"]["train_triton_vs_compile"] >= 1.15
    )
    return out


def headline_table(head: dict) -> str:
    """The headline as text: per device and mode, ms per provider at each level, and triton's ratios."""
    lines = []
    if head.get("calibration"):
        lines.append(f"calibrated: {head['calibration']}")
    for key, spec in profiling.DEVICES.items():
        entry = head[key]
        providers = list(entry["train"])
        for mode in ("train", "forward"):
            lines.append(f"{spec.name}, {mode} (ms; ratio = peer / triton):")
            lines.append(f"  {'level':20s}" + "".join(f"{p:>10s}" for p in providers)
                         + "".join(f"{'vs ' + p:>14s}" for p in providers if p != "triton"))  # fmt: skip
            for suffix, label, _ in LEVEL_FIELDS[:3]:
                ms_ = entry[f"{mode}{suffix}"]
                rat = entry[f"ratios{suffix}"]
                lines.append(f"  {label:20s}" + "".join(f"{ms_[p]:10.1f}" for p in providers)
                             + "".join(f"{rat[f'{mode}_triton_vs_{p}']:13.2f}x" for p in providers
                                       if p != "triton"))  # fmt: skip
    return "\n".join(lines)


#: Targets (expected model, whole MixSTE, T = 243): triton's speed-up over each peer.
TARGETS = {
    "train_triton_vs_eager": 2.2,
    "train_triton_vs_sdpa": 1.5,
    "train_triton_vs_compile": 1.3,
    "forward_triton_vs_sdpa": 1.3,
}


def compute(scopes: tuple[str, ...] = cases.SCOPES, verbose: bool = False, memory: bool = True) -> dict:
    """Every case of ``all_cases`` plus the device specs and how each provider was modelled."""
    from . import efficiency

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
        "memory_budget": perf_memory.MemoryBudget().__dict__,
        "efficiency": efficiency.document(),
        "calibration": calibration_note(),
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


def retained_cpu(T: int = 243, embed: int = 512, depth: int = 2, backends: tuple[str, ...] = ("sdpa", "eager"),
                 seed: int = 0) -> dict[str, Any]:
    """MEASURED on the CPU, real tensors: bytes a training forward keeps for backward (``retained_bytes``: the
    storages alive after it, output excluded) per backend and recompute policy, fp32, batch 1, and each policy's
    ratio to ``none``."""
    from fastmixste import MixSTE
    from fastmixste.perf.memory import retained_bytes

    x = torch.randn(1, T, cases.JOINTS, 2, generator=torch.Generator().manual_seed(seed))
    out: dict[str, Any] = {"T": T, "embed": embed, "depth": depth, "dtype": "float32", "device": "cpu"}
    for backend in backends:
        kept = {}
        for policy in RECOMPUTE_POLICIES:
            model = MixSTE(num_frame=T, embed_dim_ratio=embed, depth=depth, attn_backend=backend, recompute=policy)
            model.train()
            kept[policy] = retained_bytes(lambda m=model: m(x))
        out[backend] = {"bytes": kept, "over_none": {p: round(kept[p] / kept["none"], 3) for p in kept}}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "proxies.json")
    parser.add_argument("--scopes", nargs="*", default=list(cases.SCOPES), choices=cases.SCOPES)
    parser.add_argument("--headline", action="store_true", help="print the whole-model headline JSON and exit")
    parser.add_argument("--memory", action="store_true", help="print the provider x recompute memory table and exit")
    parser.add_argument("--retained-cpu", action="store_true",
                        help="measure, on the CPU, what a forward keeps for backward per recompute policy (embed 512, "
                        "depth 2, T = 243, fp32, sdpa and eager) and exit")  # fmt: skip
    parser.add_argument("--calibration", type=Path, default=None,
                        help="measured/modelled per kernel class from a GPU run (default: results/calibration.json "
                        "when present)")  # fmt: skip
    args = parser.parse_args(argv)
    from . import calibration

    path = args.calibration or calibration.DEFAULT
    if args.calibration is not None and not path.exists():
        raise SystemExit(f"--calibration: expected an existing calibration file, got {path}")
    try:
        data = calibration.load(path)
    except ValueError as err:
        print(f"proxies: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    set_calibration(data, str(path))
    print(f"proxies: {calibration_note() or 'no calibration file (' + str(path) + '): expected model uncalibrated'}",
          file=sys.stderr)  # fmt: skip
    if args.headline:
        head = headline()
        print(headline_table(head), file=sys.stderr)
        print(json.dumps(head, indent=1))
        return
    if args.memory:
        print(json.dumps(policy_table(), indent=1))
        return
    if args.retained_cpu:
        print(json.dumps(retained_cpu(), indent=1))
        return
    data = compute(tuple(args.scopes), verbose=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from fastmixste.io.files import atomic_write

    with atomic_write(args.out, "w") as fh:
        fh.write(dumps(data))
    print(f"wrote {args.out} ({len(data['results'])} cases, {len(data['skipped'])} skipped)")


if __name__ == "__main__":
    main()
