"""One command that turns a short GPU lease into evidence: parity, speed and memory, a training smoke run.

    python -m benchmarks.gpu_check [--budget-s 420] [--out benchmarks/results] [--dry-run]

Steps, in priority order (each with an estimated cost; a step that does not fit the time left is listed as
"not run" with the reason, and the run ends cleanly with the results it has):

1. environment: GPU, SM count, memory, driver, torch/triton/CUDA versions, the project's commit;
2. correctness of the compiled kernels: every fused op found by ``benchmarks.fused_ops`` in bf16, fp16 and fp32 at
   full scale (more than 65,535 programs) against a float64 reference (fp32 within 1e-4; bf16/fp16 within 2x the
   eager error in the same dtype), backward run twice and compared bit for bit; the whole model, triton vs eager,
   forward and every gradient in bf16 autocast; whole-model backward determinism;
3. a training smoke run: ``train.run --fused --amp bf16`` for a few steps on the built-in data;
4. speed and memory (MEASURED, CUDA events, bf16 autocast, T = 243): whole-MixSTE training step (forward, backward,
   AdamW) and inference forward for eager, sdpa, triton and xformers (if installed) at the largest batch of
   {4, 8, 16, 32} that fits every provider; median, p20/p80 and peak memory, side by side with the MODELLED time
   of the same case (benchmarks/results/proxies.json) as a measured/modelled ratio; the same per attention scope;
5. torch.compile: the fused model compiled matches the uncompiled one; compile (of the eager model) timed;
6. a 2-process DDP smoke run when the machine has 2 GPUs.

Writes ``<gpu>-<date>.json`` and ``<gpu>-<date>.md`` into ``--out`` (after every step, atomically, so a run cut
short still leaves its results) and prints a table. The JSON has the pytest-benchmark shape that
``python -m benchmarks.report`` reads, so the report lists the run beside the modelled numbers.
Exit status: 0 when every check that ran passed, 1 when one failed, 2 without CUDA (and without --dry-run).
``--dry-run`` (CPU is enough): imports everything, builds every case at its shapes on the meta device, prints the
plan with estimated seconds per step, and exits 0 when the plan fits the budget (1 when not).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import inspect
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastmixste.io.files import atomic_write

from . import cases, fused_ops
from .cases import Shape

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent
T_FULL = 243
BATCHES: tuple[int, ...] = (4, 8, 16, 32)
SPEED_PROVIDERS: tuple[str, ...] = ("eager", "sdpa", "triton", "xformers")
SCOPES: tuple[str, ...] = ("spatial_attention", "temporal_attention")
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}

# --- tolerances (the CPU tests' rules) ---------------------------------------------------------------------------
#: fp32 fused vs float64, unit-scale inputs (tests/kernels).
FP32_ATOL = 1e-4
#: bf16/fp16: the fused error may be at most this multiple of the eager error in the same dtype.
LOW_PRECISION_FACTOR = 2.0
#: Compiled vs uncompiled fused model, fp32 (tests/kernels/test_model_fused.py, GPU test).
COMPILE_ATOL = 1e-4

# --- timing ------------------------------------------------------------------------------------------------------
WARMUP_MODEL, ITERS_MODEL = 3, 15
WARMUP_SCOPE, ITERS_SCOPE = 5, 30
MIN_SAMPLES = 3

# --- estimates: the fixed overheads the plan adds to the modelled times (stated, not measured) ---------------------
#: Python + CUDA context + first cuBLAS call.
EST_CUDA_INIT_S = 8.0
#: One Triton kernel compiled with a cold cache (one dtype, one configuration).
EST_TRITON_COMPILE_S = 3.0
#: Building a full-size MixSTE on the GPU and its optimizer.
EST_BUILD_S = 2.0
#: Fixed cost of one parity case beyond compiles and FLOPs (allocation, comparisons, transfers of results).
EST_PARITY_FIXED_S = 2.0
#: float64 throughput assumed for the references (RTX 4090: ~1.3 TFLOPS; H100: ~67); the slower one plans.
EST_FP64_FLOPS = 1.0e12
#: Measured over modelled time assumed for the plan (real kernels reach about half the roofline).
EST_SLOWDOWN = 2.0
#: torch.compile (Inductor, cold cache) of the full model: training graph (forward + backward), inference graph,
#: and the depth-2 fused model of the compile parity check.
EST_COMPILE_TRAIN_S = 75.0
EST_COMPILE_FORWARD_S = 35.0
EST_COMPILE_SMALL_S = 30.0
#: train.run smoke: interpreter start, built-in data, a few steps per stage, evaluation.
EST_SMOKE_S = 45.0
EST_DDP_S = 60.0
#: What the plan assumes about a GPU it has not seen (dry run): the smaller, slower of the two the lease gives.
PLAN_GPU = ("RTX 4090 (assumed for the plan)", "rtx4090", 24 * 1024**3)

# --- memory model used to pick the first batch to try ---------------------------------------------------------------
#: Autocast keeps fp32 LayerNorm outputs and residuals beside the bf16 copies: saved bytes vs the pure-bf16 model.
AUTOCAST_SAVED_FACTOR = 1.75
#: Bytes per parameter held through a training step: fp32 weight, grad, two AdamW moments, a bf16 copy.
TRAIN_BYTES_PER_PARAM = 18
#: AdamW (fused) per step: reads param, grad, two moments (16 B), writes param and moments (12 B).
ADAMW_BYTES_PER_PARAM = 28
MEMORY_HEADROOM = 0.9

CHECK, MEASURE = "check", "measure"
#: Oldest Triton the kernels compile with (keep in step with setup.py): 3.2 and 3.3 reject chained boolean
#: operators (``a and b and c``), which kernels/temporal.py uses in tl.static_assert; 3.2 also aborts (an assertion
#: in LinearLayout) compiling the spatial backward for head_dim 128 on sm_90.
MIN_TRITON: tuple[int, int] = (3, 4)


# ==================================================================================================================
# Devices, timers, statistics
# ==================================================================================================================


class Device:
    """What the measurement code needs from a device: a timer, synchronisation, peak memory, OOM detection.

    ``CudaDevice`` is the real one; the tests drive the same measurement code with a CPU ``Device`` (wall clock,
    no memory figures) and with fakes, so the first GPU run does not meet that code for the first time.
    """

    type = "cpu"

    def __init__(self) -> None:
        self.torch_device = torch.device("cpu")

    def synchronize(self) -> None:
        pass

    def time_call(self, fn: Callable[[], Any]) -> float:
        """Seconds one call of ``fn`` takes (synchronised)."""
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def reset_peak(self) -> None:
        pass

    def peak_bytes(self) -> int | None:
        return None

    def free(self) -> None:
        gc.collect()

    def is_oom(self, err: BaseException) -> bool:
        return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError))

    def autocast(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=dtype)


class CudaDevice(Device):
    """CUDA events around every call, torch.cuda memory statistics."""

    type = "cuda"

    def __init__(self, index: int = 0) -> None:
        self.torch_device = torch.device("cuda", index)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.torch_device)

    def time_call(self, fn: Callable[[], Any]) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        self.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def reset_peak(self) -> None:
        self.synchronize()
        torch.cuda.reset_peak_memory_stats(self.torch_device)

    def peak_bytes(self) -> int | None:
        self.synchronize()
        return int(torch.cuda.max_memory_allocated(self.torch_device))

    def free(self) -> None:
        gc.collect()
        torch.cuda.empty_cache()


def summarize(samples: list[float]) -> dict[str, float | int]:
    """Median, p20 and p80 (linear interpolation) of timing samples in seconds."""
    if not samples:
        raise ValueError("summarize: no samples")
    s = sorted(samples)

    def pct(q: float) -> float:
        pos = (len(s) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {"median": statistics.median(s), "p20": pct(0.2), "p80": pct(0.8), "n": len(s)}


def time_step(
    step: Callable[[], Any],
    device: Device,
    warmup: int,
    iters: int,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run ``step`` ``warmup`` times untimed, then time up to ``iters`` calls; peak memory over the timed calls.

    Stops early (after at least MIN_SAMPLES) once ``clock()`` passes ``deadline``. Returns the summary, the samples,
    the seconds of the first warm-up call (compilation shows there) and the peak bytes (None off CUDA).
    """
    first = None
    for i in range(warmup):
        t = device.time_call(step)
        if i == 0:
            first = t
    device.reset_peak()
    samples: list[float] = []
    for _ in range(iters):
        samples.append(device.time_call(step))
        if deadline is not None and len(samples) >= MIN_SAMPLES and clock() > deadline:
            break
    return {**summarize(samples), "samples": samples, "first_call_s": first, "peak_memory_bytes": device.peak_bytes()}


# ==================================================================================================================
# Budget and plan
# ==================================================================================================================


class Budget:
    """Seconds left of ``total_s``; ``admit(estimate)`` says why a step cannot start (None when it can)."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not total_s > 0:
            raise ValueError(f"budget must be positive seconds, got {total_s}")
        self.total_s = float(total_s)
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.total_s - self.elapsed()

    def deadline(self) -> float:
        return self.start + self.total_s

    def admit(self, estimate_s: float) -> str | None:
        left = self.left()
        if estimate_s <= left:
            return None
        return f"budget: needs ~{estimate_s:.0f} s, {max(left, 0):.0f} s of {self.total_s:.0f} s left"


@dataclass
class Step:
    """One unit of the plan. ``run(ctx)`` returns a detail dict (checks include ``passed``)."""

    name: str
    group: str
    kind: str  # CHECK (pass/fail, counts for the exit status) or MEASURE
    estimate_s: float
    run: Callable[[Context], dict[str, Any]]
    requires: Callable[[Context], str | None] = lambda ctx: None  # reason it cannot run, decided at run time
    note: str = ""


@dataclass
class StepResult:
    name: str
    group: str
    kind: str
    status: str  # passed | failed | measured | error | not run
    estimate_s: float
    seconds: float = 0.0
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def plan_table(steps: list[Step], budget_s: float, ctx: Context | None = None) -> tuple[list[dict[str, Any]], float]:
    """Rows (name, estimate, cumulative, fits, note) of the plan in order, and the total estimate of what fits."""
    rows = []
    total = 0.0
    for s in steps:
        why = s.requires(ctx) if ctx is not None else None
        if why and not why.startswith("after:"):
            rows.append(
                {"step": s.name, "estimate_s": 0.0, "cumulative_s": total, "fits": None, "note": f"not run: {why}"}
            )
            continue
        total += s.estimate_s
        rows.append(
            {
                "step": s.name,
                "estimate_s": s.estimate_s,
                "cumulative_s": total,
                "fits": total <= budget_s,
                "note": s.note,
            }
        )
    return rows, total


def format_plan(rows: list[dict[str, Any]], total: float, budget_s: float) -> str:
    lines = [f"{'step':44s} {'est. s':>7s} {'cum. s':>7s}  note"]
    for r in rows:
        mark = "" if r["fits"] in (True, None) else "  [over budget: would not run]"
        lines.append(f"{r['step']:44s} {r['estimate_s']:7.1f} {r['cumulative_s']:7.1f}  {r['note']}{mark}")
    verdict = "fits" if total <= budget_s else "does NOT fit"
    lines.append(f"estimated total {total:.0f} s; budget {budget_s:.0f} s: the plan {verdict}")
    return "\n".join(lines)


# ==================================================================================================================
# Context: device profile, modelled numbers, chosen batches
# ==================================================================================================================


@dataclass
class Profile:
    """The GPU the plan is for: its name, the modelled device spec that matches it, memory, GPU count."""

    name: str
    spec: str | None
    memory_bytes: int
    gpus: int
    xformers: bool
    assumed: bool = False


def spec_for(name: str) -> str | None:
    """proxies.json device key for a GPU name: 'rtx4090', 'h100', or None (no modelled numbers for it)."""
    low = name.lower()
    if "4090" in low:
        return "rtx4090"
    if "h100" in low:
        return "h100"
    return None


class Modelled:
    """MODELLED rows of benchmarks/results/proxies.json (meta device, pure bf16) for the measured cases."""

    def __init__(self, data: dict | None, source: str) -> None:
        self.data = data
        self.source = source
        self._rows: dict[tuple, dict] = {}
        for r in (data or {}).get("results", []):
            self._rows[(r["scope"], r["provider"], r["mode"], r["B"], r["T"])] = r

    @classmethod
    def load(cls, path: Path = RESULTS / "proxies.json") -> Modelled:
        if not path.exists():
            return cls(None, f"{path} not found (run python -m benchmarks.proxies)")
        return cls(json.loads(path.read_text()), str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))

    def row(self, scope: str, provider: str, mode: str, B: int, T: int) -> tuple[dict | None, int | None]:
        """The row of the nearest batch for (scope, provider, mode, T), and that batch (None when absent)."""
        batches = [k[3] for k in self._rows if k[:3] == (scope, provider, mode) and k[4] == T]
        if not batches:
            return None, None
        nearest = min(batches, key=lambda b: (abs(math.log(b / B)), b))
        return self._rows[(scope, provider, mode, nearest, T)], nearest

    def seconds(self, scope: str, provider: str, mode: str, B: int, T: int, spec: str) -> tuple[float | None, str]:
        """Modelled seconds at batch B (scaled linearly from the nearest modelled batch) and how it was obtained.

        The model's time is a sum over ops of bytes/bandwidth or FLOPs/peak, all linear in B, so the scaling is
        what the model itself would give. Whole-model training steps add AdamW (ADAMW_BYTES_PER_PARAM at DRAM
        bandwidth), which the proxies leave out.
        """
        if self.data is None:
            return None, self.source
        if provider == "compile":
            return None, "compile is not modelled (Inductor cannot run on the meta device)"
        row, nearest = self.row(scope, provider, mode, B, T)
        if row is None:
            return None, f"no modelled row for {scope}/{provider}/{mode} T={T}"
        if spec not in row["modelled"]:
            return None, f"no modelled device {spec!r}"
        sec = row["modelled"][spec]["seconds"] * B / nearest
        how = f"proxies B={nearest}" + (f" x {B}/{nearest}" if nearest != B else "")
        if scope == "model" and mode == "train":
            params = 33_783_811
            sec += params * ADAMW_BYTES_PER_PARAM / self.data["devices"][spec]["bandwidth"]
            how += " + AdamW"
        return sec, how

    def saved_bytes(self, provider: str, B: int, T: int = T_FULL) -> int | None:
        row, nearest = self.row("model", provider, "train", B, T)
        return None if row is None else int(row["saved_bytes"] * B / nearest)


@dataclass
class Context:
    args: argparse.Namespace
    profile: Profile
    modelled: Modelled
    discovery: fused_ops.Discovery
    device: Device | None = None
    budget: Budget | None = None
    batch: dict[str, int] = field(default_factory=dict)
    batch_reason: dict[str, str] = field(default_factory=dict)
    speed_rows: list[dict[str, Any]] = field(default_factory=list)
    results: list[StepResult] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    # What a real run uses; the CPU rehearsal (tests) shrinks them.
    model_shape: ModelShape = field(default_factory=lambda: FULL_MODEL)
    amp: torch.dtype = torch.bfloat16
    batches: tuple[int, ...] = BATCHES
    timing: tuple[int, int, int, int] = (WARMUP_MODEL, ITERS_MODEL, WARMUP_SCOPE, ITERS_SCOPE)

    @property
    def plan_spec(self) -> str:
        return self.profile.spec or "rtx4090"


def predicted_train_peak(ctx: Context, provider: str, B: int) -> float:
    """Modelled peak bytes of a bf16-autocast training step: saved activations (scaled) + parameter state."""
    saved = ctx.modelled.saved_bytes(provider if provider != "compile" else "eager", B)
    if saved is None:
        saved = ctx.modelled.saved_bytes("eager", B) or 0
    return saved * AUTOCAST_SAVED_FACTOR + 33_783_811 * TRAIN_BYTES_PER_PARAM


def planned_batch(ctx: Context, mode: str) -> int:
    """First batch to try: the largest of BATCHES whose modelled peak fits MEMORY_HEADROOM of the GPU."""
    if mode == "forward":
        return ctx.batches[-1]
    providers = [p for p in SPEED_PROVIDERS if p != "xformers" or ctx.profile.xformers]
    fitting = [
        B
        for B in ctx.batches
        if max(predicted_train_peak(ctx, p, B) for p in providers) <= MEMORY_HEADROOM * ctx.profile.memory_bytes
    ]
    return fitting[-1] if fitting else ctx.batches[0]


# ==================================================================================================================
# Estimates
# ==================================================================================================================


def _count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def reference_flops(case: fused_ops.ParityCase) -> int:
    """FLOPs of the reference forward + backward at the case's full shape, counted on the meta device."""
    args, kwargs = case.make_inputs(torch.device("meta"), torch.float64, None)
    args = tuple(
        a.requires_grad_(True) if i in case.grad_args and isinstance(a, torch.Tensor) else a for i, a in enumerate(args)
    )

    def run() -> None:
        outs = _tensors(case.ref(*args, **kwargs))
        torch.autograd.backward(outs, [torch.empty_like(o) for o in outs])

    return _count_flops(run)


def estimate_parity(case: fused_ops.ParityCase, flops: int) -> float:
    # Kernels compile once per dtype; the float64 reference dominates the arithmetic (eager in the same dtype and the
    # fused path twice are far cheaper).
    return case.kernels * EST_TRITON_COMPILE_S + flops / EST_FP64_FLOPS + EST_PARITY_FIXED_S


def estimate_speed(ctx: Context, scope: str, mode: str, provider: str, B: int) -> float:
    base = "eager" if provider == "compile" else provider
    sec, _ = ctx.modelled.seconds(scope, base, mode, B, T_FULL, ctx.plan_spec)
    if sec is None:
        sec = 0.5  # no modelled row: a pessimistic half second per call
    warm, iters = (WARMUP_MODEL, ITERS_MODEL) if scope == "model" else (WARMUP_SCOPE, ITERS_SCOPE)
    return (warm + iters) * sec * EST_SLOWDOWN


# ==================================================================================================================
# Helpers shared by the steps
# ==================================================================================================================


def _tensors(out: Any) -> list[torch.Tensor]:
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max().item()) if a.numel() else 0.0


def _arg_name(fn: Callable[..., Any], i: int) -> str:
    try:
        return list(inspect.signature(fn).parameters)[i]
    except (TypeError, ValueError, IndexError):
        return f"arg{i}"


def _nan_count(t: torch.Tensor) -> int:
    return int(torch.isnan(t).sum().item())


def poison_allocator(device: Device, nbytes: int) -> None:
    """Fill ``nbytes`` of the caching allocator's free memory with NaN (CUDA only): a kernel that leaves an output
    row unwritten then shows NaN there instead of a stale, possibly correct, earlier result."""
    if device.type != "cuda" or nbytes <= 0:
        return
    with contextlib.suppress(RuntimeError):
        buf = torch.full((nbytes // 4,), float("nan"), dtype=torch.float32, device=device.torch_device)
        del buf


def _slice_args(args: tuple, batch_args: tuple[int, ...], sl: slice, dtype: torch.dtype, grad_args: tuple[int, ...]):
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            a = a[sl] if i in batch_args else a
            a = a.detach().to(dtype) if a.is_floating_point() else a.detach()
            if i in grad_args:
                a.requires_grad_(True)
        out.append(a)
    return tuple(out)


def kernel_parity(case: fused_ops.ParityCase, dtype: torch.dtype, device: Device, seed: int = 0) -> dict[str, Any]:
    """Fused op vs float64 reference and vs eager in ``dtype``, outputs and gradients; backward run twice.

    The fused op runs once on the whole batch (its full launch grid); the references run in batch chunks of
    ``case.ref_chunk`` (errors are per element, so chunking changes nothing but memory). Pass rule: fp32 within
    FP32_ATOL of float64; bf16/fp16 within LOW_PRECISION_FACTOR x the eager error in the same dtype; no NaN; the
    second fused run bit-identical to the first.
    """
    dev = device.torch_device
    gen = torch.Generator(device=dev).manual_seed(seed)
    args, kwargs = case.make_inputs(dev, dtype, gen)
    grads_out: list[torch.Tensor] | None = None

    def fused_run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        nonlocal grads_out
        a = _slice_args(args, (), slice(None), dtype, case.grad_args)
        poison_allocator(device, 2 * sum(t.numel() * t.element_size() for t in a if isinstance(t, torch.Tensor)))
        outs = _tensors(case.fn(*a, **kwargs))
        if grads_out is None:
            grads_out = [torch.randn(o.shape, device=dev, generator=gen, dtype=torch.float32).to(o.dtype) for o in outs]
        torch.autograd.backward(outs, grads_out)
        return [o.detach() for o in outs], [a[i].grad for i in case.grad_args]

    outs1, g1 = fused_run()
    outs2, g2 = fused_run()
    deterministic = all(torch.equal(x, y) for x, y in zip(outs1 + g1, outs2 + g2))
    del outs2, g2
    nans = sum(_nan_count(t) for t in outs1 + g1)

    names = [f"out{i}" if len(outs1) > 1 else "out" for i in range(len(outs1))]
    grad_names = {i: f"d{_arg_name(case.fn, i)}" for i in case.grad_args}
    names += [grad_names[i] for i in case.grad_args]
    fused_all = outs1 + g1
    err_fused = dict.fromkeys(names, 0.0)
    err_eager = dict.fromkeys(names, 0.0)
    B = next(a.shape[0] for i, a in enumerate(args) if i in case.batch_args and isinstance(a, torch.Tensor))
    chunk = case.ref_chunk or B
    unbatched = {i for i in case.grad_args if i not in case.batch_args}
    sums: dict[str, dict[int, torch.Tensor]] = {"ref": {}, "eager": {}}
    for start in range(0, B, chunk):
        sl = slice(start, min(B, start + chunk))
        got: dict[str, list[torch.Tensor]] = {}
        for label, dt in (("ref", torch.float64), ("eager", dtype)):
            a = _slice_args(args, case.batch_args, sl, dt, case.grad_args)
            outs = _tensors(case.ref(*a, **kwargs))
            torch.autograd.backward(outs, [g[sl].to(dt) for g in grads_out])
            grads = []
            for i in case.grad_args:
                if i in unbatched:
                    sums[label][i] = sums[label].get(i, 0) + a[i].grad.double()
                    grads.append(None)
                else:
                    grads.append(a[i].grad.detach())
            got[label] = [o.detach() for o in outs] + grads
        for k, name in enumerate(names):
            ref = got["ref"][k]
            if ref is None:
                continue
            err_fused[name] = max(err_fused[name], _max_abs(fused_all[k][sl], ref))
            err_eager[name] = max(err_eager[name], _max_abs(got["eager"][k], ref))
        del got
    for k, i in enumerate(case.grad_args):
        if i in unbatched:
            name = grad_names[i]
            err_fused[name] = _max_abs(g1[k], sums["ref"][i])
            err_eager[name] = _max_abs(sums["eager"][i], sums["ref"][i])

    failures = []
    for name in names:
        if dtype == torch.float32:
            if not err_fused[name] <= FP32_ATOL:
                failures.append(f"{name}: fp32 error {err_fused[name]:.3g} > {FP32_ATOL}")
        elif not err_fused[name] <= LOW_PRECISION_FACTOR * err_eager[name]:
            failures.append(
                f"{name}: error {err_fused[name]:.3g} > {LOW_PRECISION_FACTOR:g} x eager {err_eager[name]:.3g}"
            )
    if nans:
        failures.append(f"{nans} NaN elements in the fused outputs/gradients (unwritten rows?)")
    if not deterministic:
        failures.append("backward not bit-identical across two runs")
    programs = case.programs_for(dtype)
    return {
        "passed": not failures,
        "failures": failures,
        "op": case.op,
        "module": case.module,
        "dtype": DTYPE_NAMES.get(dtype, str(dtype)),
        "shape": case.label,
        "programs": programs,
        "beyond_grid_yz_limit": None if programs is None else programs > fused_ops.GRID_YZ_LIMIT,
        "rule": f"<= {FP32_ATOL} vs float64"
        if dtype == torch.float32
        else f"<= {LOW_PRECISION_FACTOR:g} x eager error",
        "max_abs_error_fused": err_fused,
        "max_abs_error_eager": err_eager,
        "deterministic_backward": deterministic,
    }


@dataclass(frozen=True)
class ModelShape:
    """The MixSTE every model-level step builds: full scale by default; the CPU rehearsal passes a tiny one."""

    T: int = T_FULL
    embed: int = cases.EMBED
    heads: int = cases.HEADS
    depth: int = cases.DEPTH
    joints: int = cases.JOINTS


FULL_MODEL = ModelShape()


def _full_model(shape: ModelShape = FULL_MODEL, depth: int | None = None, backend: str = "eager") -> torch.nn.Module:
    from fastmixste import MixSTE

    return MixSTE(
        num_frame=shape.T,
        num_joints=shape.joints,
        embed_dim_ratio=shape.embed,
        depth=shape.depth if depth is None else depth,
        num_heads=shape.heads,
        drop_path_rate=0.0,
        attn_backend=backend,
    )


def _model_io(shape: ModelShape, B: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (B, T, J, 2) input and (B, T, J, 3) output gradient."""
    return torch.randn(B, shape.T, shape.joints, 2, device=dev), torch.randn(B, shape.T, shape.joints, 3, device=dev)


def _fwd_bwd(model: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, device: Device, amp: torch.dtype | None):
    model.zero_grad(set_to_none=True)
    with device.autocast(amp):
        out = model(x)
    out.backward(g.to(out.dtype))
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def model_parity(
    device: Device, shape: ModelShape = FULL_MODEL, B: int = 2, amp: torch.dtype = torch.bfloat16, seed: int = 0
) -> dict[str, Any]:
    """Whole MixSTE, triton vs eager in ``amp`` autocast, against the same model in float64 (eager): output and every
    parameter gradient; the fused error must stay within LOW_PRECISION_FACTOR x the eager error for each."""
    dev = device.torch_device
    torch.manual_seed(seed)
    model = _full_model(shape).to(dev).train()
    x, g = _model_io(shape, B, dev)
    ref = copy.deepcopy(model).double()
    out64, grads64 = _fwd_bwd(ref, x.double(), g.double(), device, None)
    del ref
    device.free()
    out_e, grads_e = _fwd_bwd(model.set_attn_backend("eager"), x, g, device, amp)
    out_f, grads_f = _fwd_bwd(model.set_attn_backend("triton"), x, g, device, amp)
    rows = {"output": (_max_abs(out_f, out64), _max_abs(out_e, out64))}
    for name in grads64:
        rows[name] = (_max_abs(grads_f[name], grads64[name]), _max_abs(grads_e[name], grads64[name]))
    failures = [
        f"{name}: fused error {ef:.3g} > {LOW_PRECISION_FACTOR:g} x eager {ee:.3g}"
        for name, (ef, ee) in rows.items()
        if not ef <= LOW_PRECISION_FACTOR * ee
    ]
    ratios = {name: (ef / ee if ee > 0 else math.inf if ef > 0 else 0.0) for name, (ef, ee) in rows.items()}
    worst = max(ratios, key=ratios.get)
    return {
        "passed": not failures,
        "failures": failures,
        "shape": f"B{B}-T{shape.T}, depth {shape.depth}, C {shape.embed}, {DTYPE_NAMES[amp]} autocast, train mode",
        "rule": f"fused error <= {LOW_PRECISION_FACTOR:g} x eager error vs float64, output and every gradient",
        "output_error": {"fused": rows["output"][0], "eager": rows["output"][1]},
        "tensors_compared": len(rows),
        "worst": {"tensor": worst, "ratio": ratios[worst], "fused": rows[worst][0], "eager": rows[worst][1]},
    }


def model_determinism(
    device: Device, shape: ModelShape = FULL_MODEL, B: int = 2, amp: torch.dtype = torch.bfloat16, seed: int = 0
) -> dict[str, Any]:
    """Two forward+backward passes of the fused model (bf16 autocast) must give bit-identical outputs and gradients.

    The eager model runs twice as a control: when it differs too, the nondeterminism lies outside the fused kernels
    (cuBLAS/LayerNorm), which the note says; the kernels' own bit-identity is checked per op in the parity steps.
    """
    dev = device.torch_device
    torch.manual_seed(seed)
    model = _full_model(shape).to(dev).train()
    x, g = _model_io(shape, B, dev)
    same = {}
    for backend in ("triton", "eager"):
        o1, g1 = _fwd_bwd(model.set_attn_backend(backend), x, g, device, amp)
        o2, g2 = _fwd_bwd(model, x, g, device, amp)
        differ = [n for n in g1 if not torch.equal(g1[n], g2[n])]
        same[backend] = {"output_identical": bool(torch.equal(o1, o2)), "gradients_differing": differ}
    fused_ok = same["triton"]["output_identical"] and not same["triton"]["gradients_differing"]
    eager_ok = same["eager"]["output_identical"] and not same["eager"]["gradients_differing"]
    # Fails only when the fused model is nondeterministic where the eager one is not.
    passed = fused_ok or not eager_ok
    note = "" if fused_ok else "the eager model differs run to run too: the nondeterminism is outside the fused kernels"
    return {
        "passed": passed,
        "failures": [] if passed else ["fused model backward is not bit-identical"],
        "triton": same["triton"],
        "eager": same["eager"],
        "note": note,
    }


def compile_parity(
    device: Device, shape: ModelShape = FULL_MODEL, B: int = 2, depth: int = 2, backend: str = "inductor", seed: int = 0
) -> dict[str, Any]:
    """torch.compile of the fused model (depth 2, full width, T = 243, fp32) against the same model uncompiled."""
    dev = device.torch_device
    torch.manual_seed(seed)
    model = _full_model(shape, depth, backend="triton").to(dev).train()
    x, g = _model_io(shape, B, dev)
    out_e, grads_e = _fwd_bwd(model, x, g, device, None)
    compiled = torch.compile(model, backend=backend)
    t0 = time.perf_counter()
    out_c, grads_c = _fwd_bwd(compiled, x, g, device, None)
    first = time.perf_counter() - t0
    failures = []
    err_out = _max_abs(out_c, out_e)
    if not err_out <= COMPILE_ATOL:
        failures.append(f"output: error {err_out:.3g} > {COMPILE_ATOL}")
    grads_c = {name.removeprefix("_orig_mod."): g for name, g in grads_c.items()}
    worst = 0.0
    for name, ge in grads_e.items():
        gc_ = grads_c[name]
        scale = float(ge.abs().max().item())
        err = _max_abs(gc_, ge)
        worst = max(worst, err / scale if scale else err)
        if not err <= COMPILE_ATOL * scale + 1e-12:
            failures.append(f"{name}: gradient error {err:.3g} > {COMPILE_ATOL} x {scale:.3g}")
    return {
        "passed": not failures,
        "failures": failures,
        "shape": f"B{B}-T{shape.T}, depth {depth}, fp32, torch.compile(backend={backend!r})",
        "output_error": err_out,
        "worst_relative_gradient_error": worst,
        "first_call_s": first,
    }


# ==================================================================================================================
# Speed
# ==================================================================================================================


def _speed_row(ctx: Context, scope: str, mode: str, provider: str, B: int, timing: dict[str, Any], **extra) -> dict:
    spec = ctx.profile.spec
    T = ctx.model_shape.T
    modelled, how = (None, f"no modelled device for {ctx.profile.name}")
    if spec:
        modelled, how = ctx.modelled.seconds(scope, provider, mode, B, T, spec)
    ratio = timing["median"] / modelled if modelled else None
    return {
        "scope": scope,
        "mode": mode,
        "provider": provider,
        "B": B,
        "T": T,
        "dtype": "bf16-autocast",
        "median_s": timing["median"],
        "p20_s": timing["p20"],
        "p80_s": timing["p80"],
        "rounds": timing["n"],
        "samples_s": timing["samples"],
        "first_call_s": timing["first_call_s"],
        "peak_memory_bytes": timing["peak_memory_bytes"],
        "modelled_s": modelled,
        "modelled_device": spec,
        "modelled_how": how,
        "measured_over_modelled": ratio,
        **extra,
    }


@dataclass
class ModelBench:
    """One full-size MixSTE (fp32 weights, bf16 autocast) shared by the providers: only the attention backend
    changes between them, so each provider times the same weights and the same AdamW."""

    module: torch.nn.Module
    x: torch.Tensor
    grad: torch.Tensor
    opt: torch.optim.Optimizer | None
    device: Device
    amp: torch.dtype = torch.bfloat16

    @classmethod
    def build(
        cls,
        device: Device,
        B: int,
        mode: str,
        shape: ModelShape = FULL_MODEL,
        amp: torch.dtype = torch.bfloat16,
        seed: int = 0,
    ) -> ModelBench:
        dev = device.torch_device
        torch.manual_seed(seed)
        module = _full_model(shape).to(dev)
        x, grad = _model_io(shape, B, dev)
        opt = None
        if mode == "train":
            kw = {"fused": True} if device.type == "cuda" else {}
            opt = torch.optim.AdamW(module.parameters(), lr=1e-5, **kw)
        return cls(module, x, grad, opt, device, amp)

    def step(self, provider: str, mode: str) -> Callable[[], Any]:
        """A no-argument call: training step (zero grads, forward, backward, AdamW) or an inference forward."""
        if provider == "compile":
            self.module.set_attn_backend("eager")
            fn = torch.compile(self.module)
        else:
            self.module.set_attn_backend(provider)
            fn = self.module
        if mode == "forward":
            self.module.eval()

            def forward() -> Any:
                with torch.no_grad(), self.device.autocast(self.amp):
                    return fn(self.x)

            return forward
        self.module.train()

        def train() -> Any:
            self.opt.zero_grad(set_to_none=True)
            with self.device.autocast(self.amp):
                out = fn(self.x)
            out.backward(self.grad.to(out.dtype))
            self.opt.step()
            return out

        return train


def choose_batch(
    probe: Callable[[int], dict[str, int | None]],
    start: int,
    memory_bytes: int,
    candidates: tuple[int, ...] = BATCHES,
) -> tuple[int | None, list[dict[str, Any]]]:
    """The largest candidate batch at which every provider runs, searching from ``start``.

    ``probe(B)`` runs one step of every provider at batch B and returns {provider: peak bytes, None if unknown},
    raising MemoryError when one does not fit. Going down on failure; going up while the
    measured peaks, extrapolated linearly in B, stay within MEMORY_HEADROOM of ``memory_bytes``. Returns the batch
    (None when even the smallest does not fit) and the probe log.
    """
    log: list[dict[str, Any]] = []
    order = sorted(candidates)
    idx = order.index(start)
    best: int | None = None
    peaks: dict[str, int | None] = {}

    def fits(B: int) -> bool:
        nonlocal peaks
        try:
            peaks = probe(B)
        except MemoryError as err:
            log.append({"B": B, "fits": False, "reason": str(err)})
            return False
        log.append({"B": B, "fits": True, "peak_bytes": peaks})
        return True

    if fits(order[idx]):
        best = order[idx]
        while idx + 1 < len(order):
            nxt = order[idx + 1]
            known = [v for v in peaks.values() if v is not None]
            if known and max(known) * nxt / order[idx] > MEMORY_HEADROOM * memory_bytes:
                log.append({"B": nxt, "fits": None, "reason": "extrapolated peak exceeds memory: not tried"})
                break
            if not fits(nxt):
                break
            idx += 1
            best = nxt
    else:
        while idx > 0:
            idx -= 1
            if fits(order[idx]):
                best = order[idx]
                break
    return best, log


def _probe_providers(ctx: Context, mode: str) -> list[str]:
    return [p for p in SPEED_PROVIDERS if p != "xformers" or ctx.profile.xformers]


def step_batch(ctx: Context, mode: str) -> dict[str, Any]:
    device = ctx.device
    providers = _probe_providers(ctx, mode)

    def probe(B: int) -> dict[str, int | None]:
        peaks: dict[str, int | None] = {}
        bench = None
        current = "building the model"
        try:
            bench = ModelBench.build(device, B, mode, ctx.model_shape, ctx.amp)
            for p in providers:
                current = p
                step = bench.step(p, mode)
                device.reset_peak()
                step()
                device.synchronize()
                peaks[p] = device.peak_bytes()
        except Exception as err:
            if device.is_oom(err):
                raise MemoryError(f"{mode} B={B}: out of memory ({current})") from None
            raise
        finally:
            bench = step = None
            device.free()
        return peaks

    start = planned_batch(ctx, mode)
    B, log = choose_batch(probe, start, ctx.profile.memory_bytes, ctx.batches)
    if B is None:
        ctx.batch_reason[mode] = f"even B={ctx.batches[0]} does not fit every provider"
        return {"oom": True, "reason": ctx.batch_reason[mode], "start": start, "log": log}
    ctx.batch[mode] = B
    return {"batch": B, "start": start, "providers": providers, "log": log}


def step_speed_model(ctx: Context, mode: str, provider: str) -> dict[str, Any]:
    B = ctx.batch[mode]
    device = ctx.device
    bench = ModelBench.build(device, B, mode, ctx.model_shape, ctx.amp)
    try:
        step = bench.step(provider, mode)
        t_end = min(ctx.budget.deadline(), ctx.budget.clock() + 3 * _speed_estimate(ctx, "model", mode, provider))
        warmup, iters = ctx.timing[:2]
        timing = time_step(step, device, warmup, iters, deadline=t_end, clock=ctx.budget.clock)
    except Exception as err:
        if device.is_oom(err):
            return {"oom": True, "reason": f"out of memory at B={B}"}
        raise
    finally:
        del bench
        device.free()
    row = _speed_row(
        ctx, "model", mode, provider, B, timing, step="forward+backward+AdamW" if mode == "train" else "forward"
    )
    ctx.speed_rows.append(row)
    return {k: v for k, v in row.items() if k != "samples_s"}


def step_speed_scope(ctx: Context, scope: str) -> dict[str, Any]:
    """One attention module (qkv Linear, core, proj) per provider, forward and training (fwd+bwd), in autocast.

    The module has MixSTE's width (cases.build); a provider that runs out of memory is listed with ``oom``.
    """
    device = ctx.device
    out = []
    for mode in ("forward", "train"):
        B = ctx.batch.get(mode, ctx.batches[0])
        for provider in _probe_providers(ctx, mode):
            try:
                work = cases.build(scope, provider, Shape(B, ctx.model_shape.T), device.torch_device, torch.float32)
                inner = cases.step_fn(work, mode)

                def step(_inner: Callable[[], Any] = inner) -> Any:
                    with device.autocast(ctx.amp):
                        return _inner()

                timing = time_step(
                    step,
                    device,
                    *ctx.timing[2:],
                    clock=ctx.budget.clock,
                    deadline=min(ctx.budget.deadline(), ctx.budget.clock() + 30),
                )
            except Exception as err:
                if not device.is_oom(err):
                    raise
                out.append({"mode": mode, "provider": provider, "oom": True})
                continue
            finally:
                work = inner = None
                device.free()
            row = _speed_row(
                ctx, scope, mode, provider, B, timing, step="forward+backward" if mode == "train" else "forward"
            )
            ctx.speed_rows.append(row)
            out.append({k: v for k, v in row.items() if k != "samples_s"})
    return {"rows": out}


def _speed_estimate(ctx: Context, scope: str, mode: str, provider: str) -> float:
    B = ctx.batch.get(mode) or planned_batch(ctx, mode)
    return estimate_speed(ctx, scope, mode, provider, B)


# ==================================================================================================================
# Environment and smoke runs
# ==================================================================================================================


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: Device | None) -> dict[str, Any]:
    """GPU name, SMs, memory, driver, torch/triton/CUDA versions, the commit (with a dirty flag), date, host."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        import xformers

        xformers_version = xformers.__version__
    except ImportError:
        xformers_version = "not installed"
    env_floor = triton_floor_problem(triton_version) if triton_version != "not installed" else None
    commit = _git("rev-parse", "HEAD")
    if commit != "unknown" and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (working tree modified)"
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "triton": triton_version,
        "xformers": xformers_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host": platform.node(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "triton_floor_problem": env_floor,
    }
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device.torch_device)
        env.update(
            device=props.name,
            capability=f"sm_{props.major}{props.minor}",
            sm_count=props.multi_processor_count,
            gpu_memory_bytes=props.total_memory,
            gpu_count=torch.cuda.device_count(),
            driver=_driver_version(),
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env.update(device=f"CPU {platform.machine()}", gpu_count=0)
    return env


def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (nvidia-smi not available)"


def smoke_command(out_dir: str, max_steps: int = 5, nproc: int = 1) -> list[str]:
    """The train.run command of the smoke run (torchrun with ``nproc`` processes when > 1)."""
    args = [
        "-m",
        "train.run",
        "--fused",
        "--amp",
        "bf16",
        "--device",
        "cuda",
        "--epochs",
        "1",
        "--max-steps",
        str(max_steps),
        "--out",
        out_dir,
        "--no-progress",
        "--set",
        "eval.max_frames=486",
    ]
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return [sys.executable, *args]


def check_smoke_output(rc: int, log: str, out_dir: Path) -> dict[str, Any]:
    """Judge a smoke run: exit 0, the fused backend on CUDA with bf16 autocast, finite losses, results.json."""
    failures = []
    if rc != 0:
        failures.append(f"exit status {rc}")
    if not re.search(r"attention backend 'triton'", log):
        failures.append("the log does not show attention backend 'triton'")
    if not re.search(r"device cuda\S*, amp torch\.bfloat16", log):
        failures.append("the log does not show device cuda with amp torch.bfloat16")
    losses = [float(v) for v in re.findall(r"\| loss ([-+0-9.eEinfa]+) \|", log)]
    if not losses:
        failures.append("no training loss in the log")
    elif not all(math.isfinite(v) for v in losses):
        failures.append(f"non-finite loss: {losses}")
    results = out_dir / "results.json"
    if not results.exists():
        failures.append(f"{results.name} was not written")
    mpjpe = None
    if results.exists():
        with contextlib.suppress(ValueError, OSError):
            mpjpe = json.loads(results.read_text()).get("mpjpe_mm")
    return {
        "passed": not failures,
        "failures": failures,
        "losses": losses,
        "results_json": results.exists(),
        "log_tail": log[-2000:],
        "mpjpe_mm": mpjpe,
    }


def step_smoke(ctx: Context, nproc: int = 1) -> dict[str, Any]:
    if ctx.device is not None:
        ctx.device.free()  # hand the cached GPU memory back: the smoke run is another process
    with tempfile.TemporaryDirectory(prefix="gpu_check_smoke_") as tmp:
        cmd = smoke_command(tmp, nproc=nproc)
        timeout = max(30.0, ctx.budget.left() - 5)
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)
            rc, log = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as err:
            rc, log = -1, f"timed out after {timeout:.0f} s\n{err.stdout or ''}{err.stderr or ''}"
        res = check_smoke_output(rc, log, Path(tmp))
    res["command"] = " ".join(c if c != tmp else "<tmp>" for c in cmd)
    return res


# ==================================================================================================================
# Steps
# ==================================================================================================================


def build_steps(ctx: Context) -> list[Step]:
    """The plan, in priority order, with estimates (see the EST_* constants for what is assumed)."""
    steps: list[Step] = [Step("environment", "environment", MEASURE, 1.0, lambda c: environment(c.device))]
    steps[0].estimate_s += EST_CUDA_INIT_S
    for case in ctx.discovery.cases:
        flops = reference_flops(case)
        for dtype in case.dtypes:
            steps.append(
                Step(
                    f"parity:{case.op}:{DTYPE_NAMES[dtype]}",
                    "correctness",
                    CHECK,
                    estimate_parity(case, flops),
                    lambda c, _case=case, _dt=dtype: kernel_parity(_case, _dt, c.device),
                    note=f"{case.label}, {case.programs_for(dtype) or '?'} programs",
                )
            )
    model_flops = _model_flops(2)
    steps += [
        Step(
            "parity:model:bf16-autocast",
            "correctness",
            CHECK,
            EST_BUILD_S * 2 + model_flops / EST_FP64_FLOPS + 3,
            lambda c: model_parity(c.device, c.model_shape, amp=c.amp),
            note="B2-T243 full model vs float64",
        ),
        Step(
            "determinism:model-backward",
            "correctness",
            CHECK,
            EST_BUILD_S + 4,
            lambda c: model_determinism(c.device, c.model_shape, amp=c.amp),
            note="2 runs each, triton and eager",
        ),
        Step(
            "smoke:train.run --fused (1 GPU)",
            "training",
            CHECK,
            EST_SMOKE_S,
            lambda c: step_smoke(c),
            note="5 steps per stage, bf16 AMP, built-in data",
        ),
    ]
    providers = [p for p in SPEED_PROVIDERS]
    for mode in ("train", "forward"):
        B = planned_batch(ctx, mode)
        probes = len([p for p in providers if p != "xformers" or ctx.profile.xformers])
        probe_est = EST_BUILD_S + sum(
            2 * estimate_speed(ctx, "model", mode, p, B) / (WARMUP_MODEL + ITERS_MODEL) for p in providers
        )
        steps.append(
            Step(
                f"batch:{mode}",
                "speed",
                MEASURE,
                probe_est + EST_BUILD_S,
                lambda c, _m=mode: step_batch(c, _m),
                note=f"largest of {BATCHES} fitting {probes} providers (plan: B={B})",
            )
        )
        for p in providers:
            steps.append(
                Step(
                    f"speed:model:{mode}:{p}",
                    "speed",
                    MEASURE,
                    EST_BUILD_S + estimate_speed(ctx, "model", mode, p, B),
                    lambda c, _m=mode, _p=p: step_speed_model(c, _m, _p),
                    requires=_speed_requires(mode, p),
                    note=f"B={B} T={T_FULL}",
                )
            )
    for scope in SCOPES:
        est = sum(
            estimate_speed(ctx, scope, m, p, planned_batch(ctx, m)) + 1.0
            for m in ("forward", "train")
            for p in providers
        )
        steps.append(
            Step(
                f"speed:{scope}",
                "speed",
                MEASURE,
                est,
                lambda c, _s=scope: step_speed_scope(c, _s),
                requires=lambda c: None if c.batch else "after: batch:train / batch:forward",
                note="forward and fwd+bwd, every provider",
            )
        )
    steps.append(
        Step(
            "parity:compile:fused-model",
            "correctness",
            CHECK,
            EST_COMPILE_SMALL_S + EST_BUILD_S,
            lambda c: compile_parity(c.device, c.model_shape),
            note="depth 2, B2-T243, fp32",
        )
    )
    for mode, est in (("train", EST_COMPILE_TRAIN_S), ("forward", EST_COMPILE_FORWARD_S)):
        B = planned_batch(ctx, mode)
        steps.append(
            Step(
                f"speed:model:{mode}:compile",
                "speed",
                MEASURE,
                est + EST_BUILD_S + estimate_speed(ctx, "model", mode, "compile", B),
                lambda c, _m=mode: step_speed_model(c, _m, "compile"),
                requires=_speed_requires(mode, "compile"),
                note=f"torch.compile of the eager model, B={B}",
            )
        )
    steps.append(
        Step(
            "calibration:model:train",
            "speed",
            MEASURE,
            EST_BUILD_S + sum(3 * estimate_speed(ctx, "model", "train", p, planned_batch(ctx, "train"))
                              / (WARMUP_MODEL + ITERS_MODEL) for p in ("triton", "sdpa")),  # fmt: skip
            lambda c: step_calibration(c),
            requires=_calibration_requires,
            note="kernel time per class vs the expected model -> calibration.json (benchmarks/calibration.py)",
        )
    )
    steps.append(
        Step(
            "smoke:train.run --fused (2-GPU DDP)",
            "training",
            CHECK,
            EST_DDP_S,
            lambda c: step_smoke(c, nproc=2),
            requires=lambda c: None if c.profile.gpus >= 2 else f"{c.profile.gpus} GPU(s): DDP needs 2",
            note="torchrun, 2 processes, nccl",
        )
    )
    return steps


def _calibration_requires(ctx: Context) -> str | None:
    if ctx.device is not None and ctx.device.type != "cuda":
        return "needs CUDA (kernel times come from the CUDA profiler)"
    if not ctx.profile.spec:
        return f"no modelled device for {ctx.profile.name}"
    return None if ctx.batch.get("train") else "after: batch:train"


def step_calibration(ctx: Context) -> dict[str, Any]:
    """Measured over modelled (expected model) time per kernel class, triton and sdpa, whole-model forward +
    backward (no optimizer) at batch:train's batch; writes calibration.json beside the results."""
    from . import calibration

    B = ctx.batch["train"]
    holder = [ModelBench.build(ctx.device, B, "forward", ctx.model_shape, ctx.amp)]

    def make_step(provider: str) -> Callable[[], Any]:
        bench = holder[0]
        bench.module.set_attn_backend(provider)
        bench.module.train()

        def step() -> None:
            bench.module.zero_grad(set_to_none=True)
            with ctx.device.autocast(ctx.amp):
                out = bench.module(bench.x)
            out.backward(bench.grad.to(out.dtype))

        return step

    def modelled(provider: str) -> dict[str, float]:  # proxies.json's expected model, scaled to batch B
        row, nearest = ctx.modelled.row("model", provider, "train", B, ctx.model_shape.T)
        if row is None or "expected_by_class" not in row["modelled"].get(ctx.profile.spec, {}):
            raise ValueError(f"no expected-model row for model/{provider}/train in {ctx.modelled.source}")
        return {c: t * B / nearest for c, t in row["modelled"][ctx.profile.spec]["expected_by_class"].items()}

    try:
        return calibration.run(make_step, ctx.device.synchronize, B, ctx.model_shape.T, ctx.profile.spec,
                               ctx.profile.name, ctx.args.out / "calibration.json", modelled=modelled)  # fmt: skip
    finally:
        holder.clear()
        ctx.device.free()


def _speed_requires(mode: str, provider: str) -> Callable[[Context], str | None]:
    def why(ctx: Context) -> str | None:
        if provider == "xformers" and not ctx.profile.xformers:
            return "xformers is not installed"
        if mode not in ctx.batch:
            return ctx.batch_reason.get(mode) or f"after: batch:{mode} (no batch chosen)"
        return None

    return why


def _model_flops(B: int) -> int:
    with torch.device("meta"):
        model = _full_model()
    x = torch.empty(B, T_FULL, cases.JOINTS, 2, device="meta")
    # Backend resolution asks about real devices; on meta the eager math is what a reference runs.
    model.resolved_backend = lambda _x: "eager"

    def run() -> None:
        out = model(x)
        out.backward(torch.empty_like(out))

    return _count_flops(run)


# ==================================================================================================================
# Running, writing, printing
# ==================================================================================================================


def run_plan(ctx: Context, steps: list[Step], on_step: Callable[[], None] | None = None) -> list[StepResult]:
    """Run the steps in order within the budget; every step ends as passed/failed/measured/error/not run."""
    for s in steps:
        res = StepResult(s.name, s.group, s.kind, "not run", s.estimate_s)
        why = s.requires(ctx)
        if why:
            res.reason = why.removeprefix("after: ")
        else:
            over = ctx.budget.admit(s.estimate_s)
            if over:
                res.reason = over
            else:
                print(f"[{ctx.budget.elapsed():6.1f} s] {s.name} (est. {s.estimate_s:.0f} s) ...", flush=True)
                t0 = ctx.budget.clock()
                try:
                    res.detail = s.run(ctx) or {}
                    if s.kind == CHECK:
                        res.status = "passed" if res.detail.get("passed") else "failed"
                        if res.status == "failed":
                            res.reason = "; ".join(res.detail.get("failures", []))[:500]
                    elif res.detail.get("oom"):
                        res.status, res.reason = "not run", res.detail.get("reason", "out of memory")
                    else:
                        res.status = "measured"
                    if s.name == "environment":
                        ctx.environment = res.detail
                except Exception as err:
                    res.status = "error"
                    res.reason = f"{type(err).__name__}: {err}"[:500]
                    res.detail = {"traceback": traceback.format_exc()[-4000:]}
                    if ctx.device is not None:
                        with contextlib.suppress(Exception):
                            ctx.device.free()
                res.seconds = ctx.budget.clock() - t0
                print(f"           -> {res.status} in {res.seconds:.1f} s {res.reason}", flush=True)
        ctx.results.append(res)
        if on_step:
            on_step()
    return ctx.results


def exit_status(results: list[StepResult]) -> int:
    """1 when a check failed or errored (or a parity step errored), else 0."""
    return 1 if any(r.kind == CHECK and r.status in ("failed", "error") for r in results) else 0


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def result_stem(device_name: str, when: datetime.datetime) -> str:
    """``<gpu>-<date>``: e.g. nvidia-geforce-rtx-4090-20261127-1405."""
    return f"{slug(device_name)}-{when.strftime('%Y%m%d-%H%M')}"


def build_report(ctx: Context, budget_s: float, elapsed_s: float) -> dict[str, Any]:
    """The JSON document. ``machine_info`` and ``benchmarks`` follow pytest-benchmark's shape, which
    ``benchmarks.report`` reads; the rest is this tool's own record."""
    env = ctx.environment or {}
    info = {
        "device": env.get("device", ctx.profile.name),
        "torch": env.get("torch", torch.__version__),
        "triton": env.get("triton", "unknown"),
        "commit": env.get("commit", "unknown"),
        "date": env.get("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
        "kind": "measured",
        "tool": "benchmarks.gpu_check",
    }
    for key in ("cuda", "capability", "gpu_memory_bytes", "sm_count", "driver"):
        if key in env:
            info[key] = env[key]
    benchmarks = [
        {
            "name": f"gpu_check[{r['scope']}-{r['mode']}-B{r['B']}-T{r['T']}-{r['provider']}]",
            "extra_info": {
                "scope": r["scope"],
                "mode": r["mode"],
                "provider": r["provider"],
                "B": r["B"],
                "T": r["T"],
                "dtype": r["dtype"],
                "peak_memory_bytes": r["peak_memory_bytes"],
                "step": r.get("step"),
                "modelled_s": r["modelled_s"],
                "measured_over_modelled": r["measured_over_modelled"],
            },
            "stats": {"median": r["median_s"], "data": r["samples_s"], "rounds": r["rounds"]},
        }
        for r in ctx.speed_rows
    ]
    skipped = [{"case": r.name, "reason": r.reason} for r in ctx.results if r.status == "not run"]
    return {
        "kind": "gpu_check",
        "machine_info": {"fastmixste": info},
        "environment": env,
        "budget_s": budget_s,
        "elapsed_s": elapsed_s,
        "exit_status": exit_status(ctx.results),
        "notes": {
            "measured": "CUDA events around each call after warm-up; bf16 autocast with fp32 weights (as train.run)",
            "model_train_step": "forward + backward (fixed output gradient) + fused AdamW step",
            "scope_train_step": "forward + backward (as the pytest-benchmark suite)",
            "modelled": "benchmarks/results/proxies.json: roofline on the meta device, pure bf16, scaled linearly "
            "to the measured batch; whole-model training adds AdamW at DRAM bandwidth",
            "parity_rules": f"fp32 <= {FP32_ATOL} vs float64; bf16/fp16 <= {LOW_PRECISION_FACTOR:g} x eager error",
        },
        "modelled_source": ctx.modelled.source,
        "discovery": ctx.discovery.lines(),
        "batch": ctx.batch,
        "steps": [dataclasses.asdict(r) for r in ctx.results],
        "benchmarks": benchmarks,
        "fastmixste_skipped": skipped,
    }


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.2f}"


def _gb(x: int | None) -> str:
    return "-" if x is None else f"{x / 1e9:.2f}"


def speed_table(rows: list[dict[str, Any]]) -> str:
    head = "| scope | mode | B | provider | median ms | p20-p80 ms | peak GB | modelled ms | measured/modelled |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ratio = "-" if r.get("measured_over_modelled") is None else f"{r['measured_over_modelled']:.2f}"
        out.append(
            f"| {r['scope']} | {r['mode']} | {r['B']} | {r['provider']} | {_ms(r['median_s'])} "
            f"| {_ms(r['p20_s'])}-{_ms(r['p80_s'])} | {_gb(r['peak_memory_bytes'])} | {_ms(r.get('modelled_s'))} "
            f"| {ratio} |"
        )
    return "\n".join(out)


def steps_table(results: list[StepResult]) -> str:
    head = "| step | status | seconds (est.) | reason / detail |"
    out = [head, "|---|---|---|---|"]
    for r in results:
        detail = r.reason
        if r.status == "passed" and r.name.startswith("parity:") and "max_abs_error_fused" in r.detail:
            d = r.detail
            errs = ", ".join(
                f"{k} {d['max_abs_error_fused'][k]:.2e} (eager {d['max_abs_error_eager'][k]:.2e})"
                for k in d["max_abs_error_fused"]
            )
            detail = f"{d['programs']} programs; {errs}"
        elif r.status == "passed" and "worst" in r.detail:
            w = r.detail["worst"]
            detail = f"{r.detail['tensors_compared']} tensors; worst {w['tensor']} ratio {w['ratio']:.2f}"
        elif r.name.startswith("batch:") and r.detail.get("batch"):
            detail = f"B={r.detail['batch']}"
        out.append(f"| {r.name} | {r.status} | {r.seconds:.1f} ({r.estimate_s:.0f}) | {detail.replace('|', '/')} |")
    return "\n".join(out)


def markdown(report: dict[str, Any], results: list[StepResult], speed_rows: list[dict[str, Any]]) -> str:
    info = report["machine_info"]["fastmixste"]
    env = report["environment"]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [
        f"# gpu_check: {info['device']}, {info['date'][:10]}",
        "",
        f"MEASURED on {info['device']} ({env.get('capability', '?')}, {env.get('sm_count', '?')} SMs, "
        f"{_gb(env.get('gpu_memory_bytes'))} GB, driver {env.get('driver', '?')}); torch {info['torch']}, "
        f"triton {info['triton']}, CUDA {env.get('cuda', '?')}, xformers {env.get('xformers', '?')}; "
        f"commit {info['commit']}.",
        "",
        f"Budget {report['budget_s']:.0f} s, used {report['elapsed_s']:.0f} s; exit status {report['exit_status']}; "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + ".",
        "",
        "## Steps",
        "",
        steps_table(results),
        "",
        "## Speed and memory (MEASURED, bf16 autocast, T = 243) beside MODELLED (proxies.json)",
        "",
        speed_table(speed_rows) if speed_rows else "No speed step ran.",
        "",
        "Whole-model `train` = forward + backward + AdamW; attention-scope `train` = forward + backward. "
        + report["notes"]["modelled"]
        + ".",
        "",
        "## Fused ops found",
        "",
        *[f"- {line}" for line in report["discovery"]],
        "",
    ]
    return "\n".join(lines)


def write_outputs(ctx: Context, out_dir: Path, stem: str, budget_s: float) -> tuple[Path, Path]:
    report = build_report(ctx, budget_s, ctx.budget.elapsed() if ctx.budget else 0.0)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    with atomic_write(json_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(report, indent=1, default=str) + "\n")
    with atomic_write(md_path, "w", encoding="utf-8") as f:
        f.write(markdown(report, ctx.results, ctx.speed_rows))
    return json_path, md_path


# ==================================================================================================================
# Dry run
# ==================================================================================================================


def build_on_meta(ctx: Context) -> list[str]:
    """Build every case at its shapes on the meta device and run it there; returns the failures.

    Parity cases: the fused op forward and backward at full scale in every dtype. Speed cases: each (scope,
    provider) module is built once and given an input of every batch; forward and forward+backward run at the
    largest batch (the code path does not depend on the batch; xformers and compile are built, not run: they
    cannot run on meta).
    """
    failures = []
    meta = torch.device("meta")
    for case in ctx.discovery.cases:
        for dtype in case.dtypes:
            try:
                args, kwargs = case.make_inputs(meta, dtype, None)
                a = tuple(t.requires_grad_(True) if i in case.grad_args else t for i, t in enumerate(args))
                outs = _tensors(case.fn(*a, **kwargs))
                torch.autograd.backward(outs, [torch.empty_like(o) for o in outs])
            except Exception as err:
                failures.append(f"parity {case.op} {DTYPE_NAMES[dtype]}: {type(err).__name__}: {err}")
    for scope in ("model", *SCOPES):
        for provider in (*SPEED_PROVIDERS, "compile"):
            runnable = provider not in ("xformers", "compile")
            backend = provider if runnable else "eager"
            try:
                work = cases.build(scope, backend, Shape(BATCHES[-1], T_FULL), meta)
                if scope == "model":
                    # Backend resolution asks about real devices; on meta the provider's own attention code runs.
                    work.module.resolved_backend = lambda _x, _p=backend: _p
                inputs = [torch.empty((B, *work.x.shape[1:]), device=meta) for B in BATCHES]
                if not runnable:
                    continue
                with torch.no_grad():
                    work.call(inputs[-1])
                x = inputs[-1].requires_grad_(scope != "model")
                out = work.call(x)
                out.backward(torch.empty_like(out))
            except Exception as err:
                failures.append(f"{scope}/{provider} B<={BATCHES[-1]}: {type(err).__name__}: {err}")
    try:
        with meta:
            _full_model(depth=2, backend="triton")
    except Exception as err:
        failures.append(f"compile parity model: {type(err).__name__}: {err}")
    return failures


def triton_floor_problem(version: str | None = None) -> str | None:
    """Why the installed Triton is older than the kernels need (None when it is recent enough or absent)."""
    if version is None:
        try:
            import triton

            version = triton.__version__
        except ImportError:
            return None
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if parts < MIN_TRITON:
        need = ".".join(map(str, MIN_TRITON))
        return (
            f"triton {version} is older than {need}, the oldest the kernels compile with (setup.py): "
            "the parity steps will fail to compile"
        )
    return None


def check_imports() -> list[str]:
    failures = []
    for name in (
        "triton",
        "fastmixste.kernels.spatial",
        "fastmixste.kernels.temporal",
        "train.run",
        "benchmarks.proxies",
        "torch.distributed.run",
    ):
        try:
            __import__(name)
        except Exception as err:
            failures.append(f"import {name}: {type(err).__name__}: {err}")
    return failures


# ==================================================================================================================
# CLI
# ==================================================================================================================


def _profile(device: Device | None) -> Profile:
    import importlib.util

    xformers = importlib.util.find_spec("xformers") is not None
    if device is None or device.type != "cuda":
        name, spec, mem = PLAN_GPU
        # The plan assumes the worst case: xformers present (its steps cost time where it is installed).
        return Profile(name, spec, mem, 1, xformers=True, assumed=True)
    props = torch.cuda.get_device_properties(device.torch_device)
    return Profile(props.name, spec_for(props.name), props.total_memory, torch.cuda.device_count(), xformers)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock seconds for every step (default 420)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for <gpu>-<date>.json/.md (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="check imports, build every case on meta, print the plan")
    args = p.parse_args(argv)
    if not args.budget_s > 0:
        p.error(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    return args


def main(argv: list[str] | None = None, device: Device | None = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run and device is None:
        print(
            "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing can be measured.\n"
            "Run it on a CUDA machine, or rehearse the plan on this one with: python -m benchmarks.gpu_check --dry-run",
            file=sys.stderr,
        )
        return 2
    if device is None and cuda:
        device = CudaDevice(0)  # a dry run on a GPU machine plans for that GPU (and runs nothing on it)
    # The Triton interpreter would replace the compiled kernels: never what this tool is for.
    if (
        not args.dry_run
        and os.environ.get("TRITON_INTERPRET", "0") == "1"
        and (device is None or device.type == "cuda")
    ):
        print("gpu_check: unset TRITON_INTERPRET (the interpreter is not what a GPU run measures)", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    profile = _profile(device)
    if args.dry_run:
        device = None
    ctx = Context(args, profile, Modelled.load(), fused_ops.discover(), device=device, budget=budget)
    print(
        f"gpu_check: {'dry run, ' if args.dry_run else ''}device {ctx.profile.name}; modelled numbers from "
        f"{ctx.modelled.source}"
    )
    for line in ctx.discovery.lines():
        print(f"  {line}")
    floor = triton_floor_problem()
    if floor:
        print(f"  WARNING: {floor}")
    steps = build_steps(ctx)
    # Imports, discovery and the FLOP counts on meta have already spent part of the budget: the plan gets the rest.
    planning_s = budget.elapsed()
    rows, total = plan_table(steps, args.budget_s - planning_s, ctx)
    print(f"planning took {planning_s:.1f} s of the budget; the steps get the remaining {budget.left():.0f} s")
    print(format_plan(rows, total, args.budget_s - planning_s))
    print(
        f"assumptions: measured = {EST_SLOWDOWN:g} x modelled; Triton compile {EST_TRITON_COMPILE_S:g} s/kernel; "
        f"float64 {EST_FP64_FLOPS / 1e12:g} TFLOPS; torch.compile {EST_COMPILE_TRAIN_S:g}/{EST_COMPILE_FORWARD_S:g}/"
        f"{EST_COMPILE_SMALL_S:g} s (train/forward/parity); CUDA init {EST_CUDA_INIT_S:g} s; smoke {EST_SMOKE_S:g} s"
    )
    if args.dry_run:
        failures = check_imports() + build_on_meta(ctx)
        for f in failures:
            print(f"FAILED: {f}")
        ok = not failures and total <= args.budget_s - planning_s
        print(
            f"dry run: {'OK' if ok else 'FAILED'} ({len(failures)} build failures; plan {total:.0f} s of the "
            f"{args.budget_s - planning_s:.0f} s planning left of {args.budget_s:.0f} s)"
        )
        return 0 if ok else 1

    when = datetime.datetime.now(datetime.timezone.utc)
    stem = result_stem(ctx.profile.name, when)
    paths: list[Path] = []

    def save() -> None:
        paths[:] = write_outputs(ctx, args.out, stem, args.budget_s)

    run_plan(ctx, steps, on_step=save)
    save()
    print()
    print(steps_table(ctx.results))
    if ctx.speed_rows:
        print()
        print(speed_table(ctx.speed_rows))
    status = exit_status(ctx.results)
    print(f"\nwrote {paths[0]} and {paths[1]}; exit status {status}")
    return status


@contextlib.contextmanager
def _no_traceback() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        print("gpu_check: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    with _no_traceback():
        sys.exit(main())
