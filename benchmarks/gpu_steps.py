"""The GPU check's step list, in priority order with an estimate each, and the dry run's checks: every import the
run needs, every case built and run at its shapes on the meta device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import cases, fused_ops
from .cases import Shape
from .gpu_checks import (
    build_model,
    compile_parity,
    float_tensors,
    kernel_parity,
    model_determinism,
    model_parity,
    step_smoke,
)
from .gpu_plan import (
    BATCHES,
    CHECK,
    DTYPE_NAMES,
    EST_BUILD_S,
    EST_COMPILE_FORWARD_S,
    EST_COMPILE_SMALL_S,
    EST_COMPILE_TRAIN_S,
    EST_CUDA_INIT_S,
    EST_DDP_S,
    EST_FP64_FLOPS,
    EST_SMOKE_S,
    ITERS_MODEL,
    MEASURE,
    SCOPES,
    SPEED_PROVIDERS,
    T_FULL,
    WARMUP_MODEL,
    Context,
    Step,
    estimate_parity,
    estimate_speed,
    planned_batch,
)
from .gpu_speed import step_batch, step_calibration, step_speed_model, step_speed_scope
from .machine import environment


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
            EST_BUILD_S
            + sum(
                3 * estimate_speed(ctx, "model", "train", p, planned_batch(ctx, "train")) / (WARMUP_MODEL + ITERS_MODEL)
                for p in ("triton", "sdpa")
            ),  # fmt: skip
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
        model = build_model()
    x = torch.empty(B, T_FULL, cases.JOINTS, 2, device="meta")
    # Backend resolution asks about real devices; on meta the eager math is what a reference runs.
    model.resolved_backend = lambda _x: "eager"

    def run() -> None:
        out = model(x)
        out.backward(torch.empty_like(out))

    return _count_flops(run)


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
        outs = float_tensors(case.ref(*args, **kwargs))
        torch.autograd.backward(outs, [torch.empty_like(o) for o in outs])

    return _count_flops(run)


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
                outs = float_tensors(case.fn(*a, **kwargs))
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
            build_model(depth=2, backend="triton")
    except Exception as err:
        failures.append(f"compile parity model: {type(err).__name__}: {err}")
    return failures


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
