"""The GPU check's plan: what a run is made of (steps with estimates), the budget that admits them, the context the
steps share (device profile, modelled numbers, chosen batches), and the loop that runs them.

Pure bookkeeping: nothing here touches a GPU, and a fake clock drives all of it in tests
(tests/benchmarks/test_gpu_check.py). The steps themselves live in gpu_checks (parity, determinism, smoke runs) and
gpu_speed (timings, batch search); gpu_steps lists them in priority order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import cases, fused_ops
from .machine import Device

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent
T_FULL = 243
BATCHES: tuple[int, ...] = (4, 8, 16, 32)
#: Every attention backend is timed (fastmixste.BACKENDS, xformers last where it is installed).
SPEED_PROVIDERS: tuple[str, ...] = cases.ATTN_BACKENDS
SCOPES: tuple[str, ...] = ("spatial_attention", "temporal_attention")
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}

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


@dataclass
class Profile:
    """The GPU the plan is for: its name, the modelled device spec that matches it, memory, GPU count."""

    name: str
    spec: str | None
    memory_bytes: int
    gpus: int
    xformers: bool
    assumed: bool = False


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


@dataclass(frozen=True)
class ModelShape:
    """The MixSTE every model-level step builds: full scale by default; the CPU rehearsal passes a tiny one."""

    T: int = T_FULL
    embed: int = cases.EMBED
    heads: int = cases.HEADS
    depth: int = cases.DEPTH
    joints: int = cases.JOINTS


FULL_MODEL = ModelShape()


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
