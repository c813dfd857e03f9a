"""The GPU check's speed and memory steps (MEASURED, bf16 autocast): the batch search, whole-model training steps and
inference forwards per attention provider, each attention scope alone, and the per-kernel-class calibration.

The timing code takes a ``Device`` (machine.py): CUDA events on a GPU; the tests drive the same code with the wall
clock on a CPU and with fakes.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import cases
from .cases import Shape
from .gpu_checks import build_model, model_io
from .gpu_plan import (
    BATCHES,
    FULL_MODEL,
    MEMORY_HEADROOM,
    MIN_SAMPLES,
    SPEED_PROVIDERS,
    Context,
    ModelShape,
    estimate_speed,
    planned_batch,
)
from .machine import Device


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
        module = build_model(shape).to(dev)
        x, grad = model_io(shape, B, dev)
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
