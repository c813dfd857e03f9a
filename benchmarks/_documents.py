"""The Markdown documents of the benchmark report: PERFORMANCE.md (the README's Performance section in full) and
report.md (every table). Every number in their prose is computed from the loaded results, none is typed in."""

from __future__ import annotations

from typing import Any

from benchmarks._results import PEERS, TIE
from benchmarks._tables import (
    bytes_table,
    index,
    kernel_table,
    longest_full_scale_T,
    measured_table,
    memory_block,
    modelled_table,
    skipped_table,
    targets_block,
)

#: The kernel table of PERFORMANCE.md: the model's head size in the dtype the modelled figures use.
KERNEL_VIEW = {"dtype": "bf16", "D": 64}


def device_line(proxies: dict) -> str:
    """'RTX 4090 = 165 TFLOPS / 1008 GB/s, H100 = ...' from the modelled device specs."""

    def bandwidth(b: float) -> str:
        return f"{b / 1e12:.2f} TB/s" if b >= 2e12 else f"{b / 1e9:.0f} GB/s"

    return ", ".join(f"{d['name']} = {d['peak_flops'] / 1e12:.0f} TFLOPS / {bandwidth(d['bandwidth'])}"
                     for d in proxies["devices"].values())


def launch_us(proxies: dict) -> str:
    return f"{proxies['launch_overhead_variant_s'] * 1e6:g} us"


def gpu_timing_batch(proxies: dict, T: int) -> int | None:
    """The batch the GPU timing suite uses for a whole-model training step at sequence length T."""
    rows = [r for r in proxies["results"] if r["gpu_timing_shape"] and r["mode"] == "train" and r["T"] == T]
    return rows[0]["B"] if rows else None


def occupancy_range(kernels: list[dict], part: str = "bwd") -> tuple[float, float, str] | None:
    """Lowest and highest estimated occupancy of the kernels named ``*{part}*`` in PERFORMANCE.md's kernel view,
    and what limits them."""
    rows = [r for r in kernels if part in r["kernel"] and r["dtype"] == KERNEL_VIEW["dtype"]
            and f"D={KERNEL_VIEW['D']}" in r["config"]]
    if not rows:
        return None
    occ = [r["occupancy"] for r in rows]
    return min(occ), max(occ), " or ".join(sorted({r["limited_by"] for r in rows}))


def ties(proxies: dict, scope: str, mode: str, device: str) -> tuple[list[str], int, int]:
    """Peers that triton ties with (within TIE, modelled on ``device``) for ``scope``/``mode``, and on how many of
    how many full-scale shapes at least one of them does."""
    peers: set[str] = set()
    hits = total = 0
    for (s, m, _, _), row in index([r for r in proxies["results"] if r["full_scale"]]).items():
        if s != scope or m != mode or "triton" not in row:
            continue
        total += 1
        tt = row["triton"]["modelled"][device]["seconds"]
        close = {p for p, r in row.items() if p != "triton" and abs(tt / r["modelled"][device]["seconds"] - 1) <= TIE}
        peers |= close
        hits += bool(close)
    return sorted(peers), hits, total


def headline_section(head: dict[str, Any], proxies: dict) -> list[str]:
    """Markdown lines of the headline table (whole model, training step, longest T); [] without those rows."""
    if not head:
        return []
    lines = [
        f"## Headline (MODELLED, whole MixSTE, training step, B = {head['B']}, T = {head['T']}, bf16)",
        "",
        "| | " + " | ".join(f"vs {p}" for p in PEERS) + " |",
        "|---|---|---|---|",
    ]
    for dev, spec in proxies["devices"].items():
        for prefix, label in (("", "fused speedup"), ("launch_", f"same, + {launch_us(proxies)} per launch"),
                              ("padded_", "same, padded-tile FLOPs")):
            cells = " | ".join(f"{head[f'{dev}_{prefix}speedup_vs_{p}']:.2f}x" for p in PEERS)
            lines.append(f"| {label}, {spec['name']} | {cells} |")
    for key, label in (("bytes_ratio", "bytes moved"), ("saved_ratio", "saved for backward"),
                       ("launch_ratio", "kernel launches")):
        cells = " | ".join(f"{head[f'{key}_{p}']:.2f}x" for p in PEERS)
        lines.append(f"| {label}, peer / fused | {cells} |")
    first = next(iter(proxies["devices"]))
    saved = head["saved_gb"].values()
    timing_b = gpu_timing_batch(proxies, head["T"])
    lines += [
        "",
        f"Modelled {proxies['devices'][first]['name']} time per step (ms): "
        + ", ".join(f"{p} {v:.0f}" for p, v in head[f"{first}_ms"].items())
        + "; bytes moved (GB): " + ", ".join(f"{p} {v:.0f}" for p, v in head["bytes_gb"].items())
        + "; saved for backward (GB): " + ", ".join(f"{p} {v:.1f}" for p, v in head["saved_gb"].items())
        + f". At this batch every path keeps {min(saved):.0f}-{max(saved):.0f} GB of activations for backward"
        + (f" (the GPU timing suite uses B = {timing_b} at T = {head['T']})." if timing_b else "."),
        "",
    ]
    return lines


def _limits(proxies: dict | None, kernels: list[dict] | None) -> list[str]:
    """The paragraph on what the model cannot see; its numbers come from the proxies and the kernel table."""
    occ = occupancy_range(kernels) if kernels else None
    occ_text = "the fused kernels' occupancy is unknown here (no kernel table)"
    if occ:
        occ_text = (f"the kernel table below shows the fused backward kernels at {occ[0]:.0%}-{occ[1]:.0%} estimated "
                    f"occupancy (limited by {occ[2]}), which may not saturate bandwidth")
    launch = f"the +{launch_us(proxies)} per launch variant" if proxies else "a per-launch variant"
    text = ("What the model cannot see, so where the fused path may still lose on a GPU: (1) fp32 - only bf16 is "
            "modelled, and in fp32 the fused kernels use IEEE (temporal) or 3xTF32 (spatial) dots, not plain TF32, "
            "while cuBLAS/SDPA may use TF32; (2) occupancy - the roofline grants every op the full DRAM bandwidth, "
            f"but {occ_text}; (3) small batches, where launch latency and tail effects dominate ({launch} is a "
            "first-order estimate only).")
    if proxies:
        first = next(iter(proxies["devices"]))
        peers, hits, total = ties(proxies, "spatial_attention", "forward", first)
        if peers:
            text += (f" The spatial forward ties (within {TIE:.0%}) with {' and '.join(peers)} at {hits} of {total} "
                     f"full-scale shapes in the model ({proxies['devices'][first]['name']}): they all read qkv once "
                     "and write o once; only a measurement can separate them.")
    return [text, ""]


def performance_document(proxies: dict | None, runs: list[dict], kernels: list[dict] | None, kernel_note: str,
                         head: dict[str, Any], images: list[tuple[str, str]],
                         measured_images: list[tuple[str, str]], losses: list[str]) -> str:
    """PERFORMANCE.md: method, headline, modelled table, measured runs, every case the fused path does not win,
    the model's blind spots, kernel resources."""
    perf = ["# Performance", "",
            "Two kinds of numbers, always labelled: **MEASURED** timings (pytest-benchmark, `pytest benchmarks/ "
            "--benchmark-only`) and **MODELLED** figures (bytes, FLOPs, launches and saved activations counted on the "
            "meta device at full scale, turned into time by a per-op roofline; `python -m benchmarks.proxies`). "
            "The model is a model: it counts each op's inputs and outputs once through DRAM and charges "
            "max(bytes / bandwidth, FLOPs / peak); it ignores caches across ops, launch latency (unless stated), "
            "occupancy and tail effects.", ""]  # fmt: skip
    if proxies:
        env, T = proxies["environment"], longest_full_scale_T(proxies)
        first = next(iter(proxies["devices"]))
        precision = proxies.get("precision", "bf16")
        perf += [f"Modelled: {precision}; {device_line(proxies)}; training batch {proxies['train_batch']} x T, "
                 f"inference batch {proxies['infer_batch']} x T; torch {env['torch']}, commit {env['commit']}, "
                 f"{env['date'][:10]}.", ""]
        perf += headline_section(head, proxies)
        perf += ["## The fused model against its targets", "", targets_block(proxies), ""]
        perf += ["## Memory per recompute policy (modelled, per 243-frame sequence)", "", memory_block(proxies), ""]
        perf += [f"## Modelled time, {proxies['devices'][first]['name']}, T = {T} (ms)", "",
                 modelled_table(proxies, first, T=T), ""]
        perf += [line for title, img in images for line in (f"![{title}]({img})", "")]
    perf += ["## Measured", ""]
    if not [r for r in runs if "CPU" not in r["info"]["device"]]:
        where = "; ".join(sorted({r["info"]["device"] for r in runs})) or "none recorded"
        dtypes = ", ".join(sorted({row["dtype"] for r in runs for row in r["rows"]})) or "-"
        perf += [f"No GPU run is recorded yet: every timing below is from a CPU ({where}; {dtypes}, reduced sizes), "
                 "where the fused kernels cannot be timed (the Triton interpreter is not a speed test). They compare "
                 "eager, sdpa and compile only. Run `pytest benchmarks/ --benchmark-only` on a GPU and `python -m "
                 "benchmarks.report` to add the measured GPU tables and the measured-vs-modelled plot.", ""]
    for run in runs:
        info = run["info"]
        perf += [f"### MEASURED: {info['device']}, {info['date'][:10]} (torch {info['torch']}, "
                 f"triton {info['triton']}, commit {info['commit'][:12]}; `{run['file']}`)", "",
                 measured_table(run), ""]
        if run["skipped"]:
            perf += [skipped_table(run), ""]
    perf += [line for title, img in measured_images for line in (f"![{title}]({img})", "")]
    perf += ["## Where the fused path does not win", ""]
    if losses:
        perf += [f"Every case (modelled or measured) where triton is not at least {TIE:.0%} faster than the best other "
                 "provider, listed without filtering:", ""] + [f"- {line}" for line in losses]
    else:
        perf += ["None among the recorded cases."]
    perf += ["", "Assumptions of the modelled figures (from proxies.json):", ""]
    perf += [f"- {a}" for a in (proxies or {}).get("assumptions", [])] + [""]
    perf += _limits(proxies, kernels)
    perf += [f"## Kernel resources (AOT, no GPU needed; {KERNEL_VIEW['dtype']}, D = {KERNEL_VIEW['D']})", ""]
    if kernels:
        perf += [kernel_table(kernels, **KERNEL_VIEW), "", "All dtypes and head sizes: [report.md](report.md)."]
    else:
        perf += [f"Not available: {kernel_note}."]
    return "\n".join(perf) + "\n"


def report_document(proxies: dict | None, runs: list[dict], kernels: list[dict] | None, kernel_note: str,
                    losses: list[str]) -> str:
    """report.md: every modelled table (all devices, all full-scale lengths, the GPU timing shapes), every measured
    run, every case the fused path does not win, and every kernel configuration."""
    rep = ["# fastmixste benchmark report", "", "Generated by `python -m benchmarks.report`.", ""]
    if proxies:
        for dev, spec in proxies["devices"].items():
            rep += [f"## MODELLED time, {spec['name']} (all full-scale shapes, ms)", "", modelled_table(proxies, dev),
                    ""]
        first = next(iter(proxies["devices"]))
        timing = {**proxies, "results": [r for r in proxies["results"] if r["gpu_timing_shape"]]}
        rep += [f"## MODELLED GPU-timing shapes, {proxies['devices'][first]['name']} (ms)", "",
                modelled_table(timing, first, full_only=False), ""]
        for T in sorted({r["T"] for r in proxies["results"] if r["full_scale"]}):
            rep += [f"## MODELLED bytes, FLOPs, launches, saved for backward (full scale, T = {T})", "",
                    bytes_table(proxies, T), ""]
        rep += ["## How each provider is modelled", ""]
        rep += [f"- {k}: {v}" for k, v in proxies["providers"].items()]
        rep += ["", proxies["note"], ""]
    for run in runs:
        rep += [f"## MEASURED {run['info']['device']} ({run['file']})", "", measured_table(run), ""]
    rep += ["## Where the fused path does not win", ""] + [f"- {line}" for line in losses] + [""]
    rep += ["## Kernel resources (all configurations)", ""]
    rep += [kernel_table(kernels, dtype=None, D=None) if kernels else f"Not available: {kernel_note}.", ""]
    return "\n".join(rep) + "\n"

