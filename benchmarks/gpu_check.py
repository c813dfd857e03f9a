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

The parts: gpu_plan (budget, steps, context, the run loop), gpu_checks (parity, determinism, smoke runs), gpu_speed
(timings, batch search, calibration), gpu_steps (the step list, the dry run's builds), _gpu_documents (the JSON and
Markdown files), machine (devices, environment record).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from . import fused_ops
from ._gpu_documents import result_stem, speed_table, steps_table, write_outputs
from .gpu_plan import (
    EST_COMPILE_FORWARD_S,
    EST_COMPILE_SMALL_S,
    EST_COMPILE_TRAIN_S,
    EST_CUDA_INIT_S,
    EST_FP64_FLOPS,
    EST_SLOWDOWN,
    EST_SMOKE_S,
    EST_TRITON_COMPILE_S,
    PLAN_GPU,
    RESULTS,
    Budget,
    Context,
    Modelled,
    Profile,
    exit_status,
    format_plan,
    plan_table,
    run_plan,
)
from .gpu_steps import build_on_meta, build_steps, check_imports
from .machine import CudaDevice, Device, spec_for, triton_floor_problem


def _profile(device: Device | None) -> Profile:
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
