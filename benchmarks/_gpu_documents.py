"""The GPU check's result files: ``<gpu>-<date>.json`` (pytest-benchmark's shape, which ``benchmarks.report`` reads,
plus the run's own record) and ``<gpu>-<date>.md`` (steps, speed beside the modelled numbers, the fused ops found),
written atomically after every step."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from pathlib import Path
from typing import Any

import torch

from fastmixste.io.files import atomic_write

from ._results import gb, ms
from .gpu_checks import FP32_ATOL, LOW_PRECISION_FACTOR
from .gpu_plan import Context, StepResult, exit_status


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


def speed_table(rows: list[dict[str, Any]]) -> str:
    head = "| scope | mode | B | provider | median ms | p20-p80 ms | peak GB | modelled ms | measured/modelled |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ratio = "-" if r.get("measured_over_modelled") is None else f"{r['measured_over_modelled']:.2f}"
        out.append(
            f"| {r['scope']} | {r['mode']} | {r['B']} | {r['provider']} | {ms(r['median_s'])} "
            f"| {ms(r['p20_s'])}-{ms(r['p80_s'])} | {gb(r['peak_memory_bytes'])} | {ms(r.get('modelled_s'))} "
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
        f"{gb(env.get('gpu_memory_bytes'))} GB, driver {env.get('driver', '?')}); torch {info['torch']}, "
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
