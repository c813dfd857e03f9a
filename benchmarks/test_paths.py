"""Eager vs fused vs the peers: ``pytest benchmarks/ --benchmark-only`` (measured timings).

Cases: scope (spatial attention, temporal attention, one STE+TTE pair, the whole MixSTE) x mode (forward without
grad, training step = forward + backward) x provider (eager, sdpa, triton, xformers, compile = torch.compile of the
sdpa model, triton+compile) x shape.

On CUDA: bf16 autocast, the GPU shapes of ``cases.gpu_shapes`` (T in {27, 81, 243}), torch.cuda.synchronize()
inside the timed function, warm-up rounds, peak memory per case in ``extra_info``.
On CPU: fp32 at the reduced sizes of ``cases.cpu_shapes`` (real width, B = 1, T = 27/81), few rounds; the providers
that cannot run or cannot be timed meaningfully on a CPU are skipped with the reason. CPU numbers are a smoke-level
timing on a shared machine, not a proxy for the GPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import pytest
import torch

from fastmixste import RECOMPUTE_POLICIES

from . import cases
from .cases import Shape

CUDA = torch.cuda.is_available()
#: On a CPU, Inductor compiles take 15-220 s per case on 2 cores: compile is timed on the spatial module only,
#: unless FASTMIXSTE_BENCH_CPU_COMPILE=all.
CPU_COMPILE_SCOPES = cases.SCOPES if os.environ.get("FASTMIXSTE_BENCH_CPU_COMPILE") == "all" else ("spatial_attention",)


def _params() -> list:
    out = []
    for scope in cases.SCOPES:
        for mode in cases.MODES:
            shapes = cases.gpu_shapes(mode) if CUDA else cases.cpu_shapes(scope)
            for shape in shapes:
                for provider in cases.PROVIDERS:
                    out.append(pytest.param(scope, mode, provider, shape, id=f"{scope}-{mode}-{shape}-{provider}"))
    return out


def skip_reason(scope: str, mode: str, provider: str, shape: Shape) -> str | None:
    """Why a case is not timed here, or None."""
    if provider in ("triton", "triton+compile"):
        if not CUDA:
            return "triton on CPU would run in the Triton interpreter, which is not a speed test"
        from fastmixste import available_backends

        reasons = available_backends("cuda", torch.bfloat16, mode == "train", head_dim=64, num_joints=17)["triton"]
        if reasons:
            return "; ".join(reasons)
    if provider == "xformers":
        if importlib.util.find_spec("xformers") is None:
            return "xformers is not installed (it has no CPU build here): modelled only, see proxies.json"
        if not CUDA:
            return "xformers needs a CUDA device"
    if provider in cases.COMPILED and not CUDA and scope not in CPU_COMPILE_SCOPES:
        return (
            "torch.compile on 2 CPU cores takes 20-220 s per case (measured), beyond the CPU budget; "
            "set FASTMIXSTE_BENCH_CPU_COMPILE=all to time it"
        )
    return None


def _rounds(scope: str, mode: str) -> tuple[int, int]:
    """(rounds, warm-up rounds)."""
    if CUDA:
        return (10, 3) if scope == "model" else (20, 5)
    if scope == "model":
        return (1, 0) if mode == "train" else (2, 1)
    return (3, 1)


@pytest.mark.parametrize("scope, mode, provider, shape", _params())
def test_path(benchmark, scope: str, mode: str, provider: str, shape: Shape) -> None:
    reason = skip_reason(scope, mode, provider, shape)
    if reason:
        pytest.skip(reason)
    device = "cuda" if CUDA else "cpu"
    dtype_label = "bf16-autocast" if CUDA else "fp32"
    work = cases.build(scope, provider, shape, device, torch.float32)
    step = cases.step_fn(work, mode)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else contextlib.nullcontext()

    def timed() -> None:
        with autocast:
            step()
        if CUDA:
            torch.cuda.synchronize()

    try:
        timed()  # first call: compiles (compile/triton), lets cuBLAS pick its kernels
    except torch.OutOfMemoryError as err:
        pytest.skip(f"out of GPU memory at {shape}: {err}".splitlines()[0])
    except Exception as err:
        if provider in cases.COMPILED:
            pytest.skip(f"torch.compile failed here: {type(err).__name__}: {err}".splitlines()[0])
        raise

    peak = None
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        timed()
        peak = torch.cuda.max_memory_allocated() - base
    rounds, warmup = _rounds(scope, mode)
    benchmark.group = f"{scope} {mode} {shape}"
    benchmark.extra_info.update(
        scope=scope,
        mode=mode,
        provider=provider,
        B=shape.B,
        T=shape.T,
        frames=shape.frames,
        dtype=dtype_label,
        device=torch.cuda.get_device_name(0) if CUDA else "cpu",
        peak_memory_bytes=peak,
        kind="measured",
    )
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=warmup, iterations=1)


RECOMPUTE_SHAPE = Shape(8, 243)


@pytest.mark.parametrize("policy", RECOMPUTE_POLICIES)
@pytest.mark.parametrize("provider", ["eager", "sdpa", "triton"])
def test_recompute_policy(benchmark, provider: str, policy: str) -> None:
    """Whole MixSTE training step per recompute policy: time and the real peak memory (CUDA only)."""
    if not CUDA:
        pytest.skip("peak memory per recompute policy is recorded on CUDA; on a CPU see python -m benchmarks.proxies "
                    "--memory (modelled)")
    reason = skip_reason("model", "train", provider, RECOMPUTE_SHAPE)
    if reason:
        pytest.skip(reason)
    work = cases.build("model", provider, RECOMPUTE_SHAPE, "cuda", torch.float32)
    work.module.set_recompute(policy)
    step = cases.step_fn(work, "train")

    def timed() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            step()
        torch.cuda.synchronize()

    try:
        timed()
    except torch.OutOfMemoryError as err:
        pytest.skip(f"out of GPU memory at {RECOMPUTE_SHAPE}: {err}".splitlines()[0])
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    timed()
    peak = torch.cuda.max_memory_allocated() - base
    benchmark.group = f"recompute model train {RECOMPUTE_SHAPE}"
    benchmark.extra_info.update(scope="model", mode="train", provider=provider, recompute=policy,
                                B=RECOMPUTE_SHAPE.B, T=RECOMPUTE_SHAPE.T, dtype="bf16-autocast",
                                device=torch.cuda.get_device_name(0), peak_memory_bytes=peak,
                                peak_memory_per_sequence_bytes=peak / RECOMPUTE_SHAPE.B, kind="measured")
    benchmark.pedantic(timed, rounds=5, warmup_rounds=1, iterations=1)
