"""Turn the benchmark JSON into Markdown tables and PNG plots under benchmarks/results/.

    python -m benchmarks.report [--results DIR] [--kernels]

Reads ``proxies.json`` (MODELLED, meta device, full scale), every pytest-benchmark JSON in the folder (MEASURED,
one per run, device recorded) and ``kernel_resources.json`` (the AOT table of ``python -m fastmixste.kernels.report``;
generated when absent or with ``--kernels``). Writes ``report.md`` (everything), ``PERFORMANCE.md`` (the README's
Performance section) and the plots. Every number is labelled measured or modelled.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROVIDER_ORDER = ("eager", "sdpa", "xformers", "compile", "triton")
COLORS = {"eager": "#7f7f7f", "sdpa": "#1f77b4", "xformers": "#9467bd", "compile": "#ff7f0e", "triton": "#2ca02c"}
SCOPE_LABEL = {
    "spatial_attention": "spatial attention",
    "temporal_attention": "temporal attention",
    "layer_pair": "STE+TTE pair",
    "model": "whole MixSTE",
}
#: A fused case counts as "not winning" when it is not at least this much faster than the best other provider.
TIE = 0.02


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.2f}"


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def load_proxies(folder: Path) -> dict | None:
    path = folder / "proxies.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_measured(folder: Path) -> list[dict]:
    """Every pytest-benchmark JSON in ``folder`` with its fastmixste machine info, oldest first."""
    runs = []
    for path in sorted(folder.glob("*.json")):
        if path.name in ("proxies.json", "kernel_resources.json"):
            continue
        data = json.loads(path.read_text())
        info = data.get("machine_info", {}).get("fastmixste")
        if not info or "benchmarks" not in data:
            continue
        rows = []
        for b in data["benchmarks"]:
            extra = b.get("extra_info", {})
            samples = sorted(b["stats"].get("data") or [b["stats"]["median"]])
            rows.append(
                {
                    **{k: extra.get(k) for k in ("scope", "mode", "provider", "B", "T", "dtype", "peak_memory_bytes")},
                    "median": b["stats"]["median"],
                    "p20": float(np.percentile(samples, 20)),
                    "p80": float(np.percentile(samples, 80)),
                    "rounds": b["stats"]["rounds"],
                }
            )
        runs.append({"file": path.name, "info": info, "rows": rows, "skipped": data.get("fastmixste_skipped", [])})
    return runs


def load_kernels(folder: Path, regenerate: bool) -> tuple[list[dict] | None, str]:
    """The AOT kernel resource rows and a note; runs the kernel report when asked or when its JSON is missing."""
    path = folder / "kernel_resources.json"
    note = ""
    if regenerate or not path.exists():
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "fastmixste.kernels.report", "--json", str(path)],
                capture_output=True,
                text=True,
                timeout=1200,
                env=env,
            )
            if not path.exists():
                note = f"kernel report failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
        except (OSError, subprocess.TimeoutExpired) as err:
            note = f"kernel report could not run: {err}"
    if path.exists():
        return json.loads(path.read_text()), note
    return None, note or "kernel_resources.json not found"


# ----------------------------------------------------------------------------------------------------------------
# Modelled tables
# ----------------------------------------------------------------------------------------------------------------


def _index(results: list[dict]) -> dict[tuple, dict[str, dict]]:
    table: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in results:
        table[(r["scope"], r["mode"], r["B"], r["T"])][r["provider"]] = r
    return table


def modelled_table(proxies: dict, device: str, full_only: bool = True, T: int | None = None) -> str:
    """Markdown: per case, modelled time per provider on ``device`` and triton's speedup over each peer."""
    idx = _index([r for r in proxies["results"] if r["full_scale"] or not full_only])
    providers = [p for p in PROVIDER_ORDER if p in {r["provider"] for r in proxies["results"]}]
    head = "| scope | mode | B x T | " + " | ".join(f"{p} (ms)" for p in providers)
    head += " | triton vs eager | triton vs sdpa | triton vs xformers |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (scope, mode, B, Tc), row in sorted(
        idx.items(), key=lambda kv: (kv[0][1], list(SCOPE_LABEL).index(kv[0][0]), kv[0][3])
    ):
        if T is not None and Tc != T:
            continue
        t = {p: row[p]["modelled"][device]["seconds"] for p in providers if p in row}
        sp = [f"{t[p] / t['triton']:.2f}x" if "triton" in t and p in t else "-" for p in ("eager", "sdpa", "xformers")]
        lines.append(
            f"| {SCOPE_LABEL[scope]} | {mode} | {B} x {Tc} | "
            + " | ".join(_ms(t.get(p)) for p in providers)
            + " | "
            + " | ".join(sp)
            + " |"
        )
    return "\n".join(lines)


def bytes_table(proxies: dict, T: int = 243) -> str:
    """Markdown: bytes moved, FLOPs, launches and saved bytes per provider at full scale, sequence length T."""
    head = "| scope | mode | B x T | provider | bytes moved (GB) | GFLOP | launches | saved for backward (GB) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = [r for r in proxies["results"] if r["full_scale"] and r["T"] == T]
    rows.sort(key=lambda r: (r["mode"], list(SCOPE_LABEL).index(r["scope"]), PROVIDER_ORDER.index(r["provider"])))
    for r in rows:
        saved = _gb(r["saved_bytes"]) if r["mode"] == "train" else "-"
        lines.append(
            f"| {SCOPE_LABEL[r['scope']]} | {r['mode']} | {r['B']} x {r['T']} | {r['provider']} | {_gb(r['bytes'])} "
            f"| {r['flops'] / 1e9:.0f} | {r['launches']} | {saved} |"
        )
    return "\n".join(lines)


def headline(proxies: dict, T: int = 243) -> dict[str, float]:
    """The whole-model training step at full scale: modelled speedups and bytes/saved ratios of triton."""
    idx = _index(proxies["results"])
    keys = [
        k
        for k in idx
        if k[0] == "model" and k[1] == "train" and k[3] == T and "eager" in idx[k] and idx[k]["eager"]["full_scale"]
    ]
    if not keys or not all(p in idx[keys[0]] for p in ("eager", "sdpa", "xformers", "triton")):
        return {}
    key = keys[0]
    row = idx[key]
    out: dict[str, float] = {"B": key[2], "T": T}
    for dev in ("rtx4090", "h100"):
        for peer in ("eager", "sdpa", "xformers"):
            out[f"{dev}_speedup_vs_{peer}"] = (
                row[peer]["modelled"][dev]["seconds"] / row["triton"]["modelled"][dev]["seconds"]
            )
            out[f"{dev}_padded_speedup_vs_{peer}"] = (
                row[peer]["modelled"][dev]["seconds_padded_tiles"]
                / row["triton"]["modelled"][dev]["seconds_padded_tiles"]
            )
            out[f"{dev}_launch_speedup_vs_{peer}"] = (
                row[peer]["modelled"][dev]["seconds_with_launch_overhead"]
                / row["triton"]["modelled"][dev]["seconds_with_launch_overhead"]
            )
    for peer in ("eager", "sdpa", "xformers"):
        out[f"bytes_ratio_{peer}"] = row[peer]["bytes"] / row["triton"]["bytes"]
        out[f"saved_ratio_{peer}"] = row[peer]["saved_bytes"] / row["triton"]["saved_bytes"]
        out[f"launch_ratio_{peer}"] = row[peer]["launches"] / row["triton"]["launches"]
    out["rtx4090_ms"] = {p: row[p]["modelled"]["rtx4090"]["seconds"] * 1e3 for p in row}
    out["bytes_gb"] = {p: row[p]["bytes"] / 1e9 for p in row}
    out["saved_gb"] = {p: row[p]["saved_bytes"] / 1e9 for p in row}
    return out


def fused_not_winning(proxies: dict | None, runs: list[dict]) -> list[str]:
    """Every modelled or measured case where triton is not at least TIE faster than the best other provider.

    Modelled cases are grouped per (scope, mode, B, T): one line lists the devices/variants and the peers that
    tie with (within TIE) or beat triton.
    """
    out = []
    if proxies:
        for (scope, mode, B, T), row in sorted(
            _index(proxies["results"]).items(), key=lambda kv: (kv[0][1], list(SCOPE_LABEL).index(kv[0][0]), kv[0][3])
        ):
            if "triton" not in row:
                continue
            hits = []
            for dev in ("rtx4090", "h100"):
                for variant, label in (
                    ("seconds", "roofline"),
                    ("seconds_with_launch_overhead", "+3 us/launch"),
                    ("seconds_padded_tiles", "padded tiles"),
                ):
                    tt = row["triton"]["modelled"][dev][variant]
                    peers = {p: r["modelled"][dev][variant] for p, r in row.items() if p != "triton"}
                    close = {p: t for p, t in peers.items() if tt > t * (1 - TIE)}
                    if close:
                        verdict = "loses to" if any(tt > t * (1 + TIE) for t in close.values()) else "ties with"
                        peer_text = ", ".join(f"{p} {_ms(t)} ms" for p, t in sorted(close.items()))
                        hits.append(f"{dev} {label}: triton {_ms(tt)} ms {verdict} {peer_text}")
            if hits:
                out.append(f"MODELLED {SCOPE_LABEL[scope]} {mode} B={B} T={T}: " + "; ".join(hits))
    for run in runs:
        idx: dict[tuple, dict[str, dict]] = defaultdict(dict)
        for r in run["rows"]:
            idx[(r["scope"], r["mode"], r["B"], r["T"], r["dtype"])][r["provider"]] = r
        for (scope, mode, B, T, dtype), row in sorted(idx.items()):
            if "triton" not in row or len(row) < 2:
                continue
            tt = row["triton"]["median"]
            peers = {p: r["median"] for p, r in row.items() if p != "triton"}
            best = min(peers, key=peers.get)
            if tt > peers[best] * (1 - TIE):
                out.append(
                    f"MEASURED {run['info']['device']} ({run['file']}): {SCOPE_LABEL[scope]} {mode} B={B} T={T} "
                    f"{dtype}: triton {_ms(tt)} ms vs {best} {_ms(peers[best])} ms"
                )
    return out


# ----------------------------------------------------------------------------------------------------------------
# Measured tables
# ----------------------------------------------------------------------------------------------------------------


def measured_table(run: dict) -> str:
    head = (
        "| scope | mode | B x T | dtype | provider | median (ms) | p20-p80 (ms) | vs eager | peak memory (GB) "
        "| rounds |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    eager = {(r["scope"], r["mode"], r["B"], r["T"]): r["median"] for r in run["rows"] if r["provider"] == "eager"}
    rows = sorted(
        run["rows"],
        key=lambda r: (r["mode"], list(SCOPE_LABEL).index(r["scope"]), r["T"], PROVIDER_ORDER.index(r["provider"])),
    )
    for r in rows:
        e = eager.get((r["scope"], r["mode"], r["B"], r["T"]))
        vs = f"{e / r['median']:.2f}x" if e else "-"
        mem = _gb(r["peak_memory_bytes"]) if r["peak_memory_bytes"] is not None else "n/a (CPU)"
        lines.append(
            f"| {SCOPE_LABEL[r['scope']]} | {r['mode']} | {r['B']} x {r['T']} | {r['dtype']} | {r['provider']} "
            f"| {_ms(r['median'])} | {_ms(r['p20'])}-{_ms(r['p80'])} | {vs} | {mem} | {r['rounds']} |"
        )
    return "\n".join(lines)


def skipped_table(run: dict) -> str:
    """Markdown: the skip reasons of a run, one line per distinct reason with the cases it covers."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for item in run["skipped"]:
        by_reason[item["reason"]].append(item["case"])
    lines = []
    for reason, names in by_reason.items():
        providers = sorted({n.rsplit("-", 1)[-1] for n in names})
        lines.append(f"- not timed ({len(names)} cases; {', '.join(providers)}): {reason}")
    return "\n".join(lines)


def kernel_table(rows: list[dict], dtype: str | None = "bf16", D: int | None = 64) -> str:
    head = (
        "| kernel | target | dtype | config | warps | registers | spills (B) | shared (B) | shared limit (B) "
        "| blocks/SM | occupancy | limited by |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if dtype and r["dtype"] != dtype:
            continue
        if D is not None and f"D={D}" not in r["config"]:
            continue
        lines.append(
            f"| {r['kernel']} | {r['target']} | {r['dtype']} | {r['config']} | {r['num_warps']} | {r['registers']} "
            f"| {r['spill_bytes']} | {r['shared_bytes']} | {r['shared_limit']} | {r['blocks_per_sm']} "
            f"| {r['occupancy']:.0%} | {r['limited_by']} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------------


def _bars(ax, groups: list[str], series: dict[str, list[float]], ylabel: str, title: str) -> None:
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name, color=COLORS.get(name))
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if groups and series:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no cases", ha="center", va="center", transform=ax.transAxes)
    ax.grid(axis="y", alpha=0.3)


def plot_modelled_speedup(proxies: dict, device: str, out: Path) -> None:
    """Speedup over eager (modelled) per provider, every full-scale case."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for ax, mode in zip(axes, ("forward", "train")):
        idx = {k: v for k, v in _index(proxies["results"]).items() if k[1] == mode and v["eager"]["full_scale"]}
        keys = sorted(idx, key=lambda k: (list(SCOPE_LABEL).index(k[0]), k[3]))
        groups = [f"{SCOPE_LABEL[k[0]]}\nT={k[3]}" for k in keys]
        series = {}
        for p in ("sdpa", "xformers", "triton"):
            series[p] = [
                idx[k]["eager"]["modelled"][device]["seconds"] / idx[k][p]["modelled"][device]["seconds"] for k in keys
            ]
        _bars(
            ax,
            groups,
            series,
            "speedup over eager (modelled)",
            f"MODELLED {proxies['devices'][device]['name']}, bf16, {mode} (B={keys[0][2]})",
        )
        ax.axhline(1.0, color="k", lw=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_modelled_memory(proxies: dict, out: Path) -> None:
    """Bytes moved and bytes saved for backward per provider, training step at full scale (modelled)."""
    idx = {k: v for k, v in _index(proxies["results"]).items() if k[1] == "train" and v["eager"]["full_scale"]}
    keys = sorted(idx, key=lambda k: (list(SCOPE_LABEL).index(k[0]), k[3]))
    T = max(k[3] for k in keys)  # the longest sequence present (243 at full scale)
    keys = [k for k in keys if k[3] == T]
    groups = [SCOPE_LABEL[k[0]] for k in keys]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, field, label in ((axes[0], "saved_bytes", "saved for backward"), (axes[1], "bytes", "bytes moved")):
        series = {
            p: [idx[k][p][field] / idx[k]["eager"][field] for k in keys]
            for p in ("eager", "sdpa", "xformers", "triton")
        }
        _bars(
            ax,
            groups,
            series,
            f"{label}, relative to eager",
            f"MODELLED (meta device) {label}: training step, B={keys[0][2]}, T={T}, bf16",
        )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_measured(run: dict, out: Path) -> None:
    """Measured speedup over eager per provider and case."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for ax, mode in zip(axes, ("forward", "train")):
        idx: dict[tuple, dict[str, float]] = defaultdict(dict)
        for r in run["rows"]:
            if r["mode"] == mode:
                idx[(r["scope"], r["B"], r["T"])][r["provider"]] = r["median"]
        keys = sorted((k for k in idx if "eager" in idx[k]), key=lambda k: (list(SCOPE_LABEL).index(k[0]), k[2]))
        groups = [f"{SCOPE_LABEL[k[0]]}\n{k[1]}x{k[2]}" for k in keys]
        providers = [p for p in PROVIDER_ORDER if p != "eager" and any(p in idx[k] for k in keys)]
        series = {p: [idx[k]["eager"] / idx[k][p] if p in idx[k] else 0.0 for k in keys] for p in providers}
        _bars(
            ax,
            groups,
            series,
            "speedup over eager (measured)",
            f"MEASURED {run['info']['device']}, {mode} ({run['info']['date'][:10]})",
        )
        ax.axhline(1.0, color="k", lw=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _spec_for(device_name: str) -> str | None:
    name = device_name.lower()
    if "4090" in name:
        return "rtx4090"
    if "h100" in name:
        return "h100"
    return None


def plot_modelled_vs_measured(run: dict, proxies: dict, device: str, out: Path) -> bool:
    """Scatter of measured median vs modelled time for the same shapes (GPU runs only). False if nothing matches."""
    idx = _index(proxies["results"])
    pts = defaultdict(list)
    for r in run["rows"]:
        row = idx.get((r["scope"], r["mode"], r["B"], r["T"]), {})
        if r["provider"] in row:
            pts[r["provider"]].append((row[r["provider"]]["modelled"][device]["seconds"], r["median"]))
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(6, 6))
    for p, xy in pts.items():
        xs, ys = zip(*xy)
        ax.scatter(np.array(xs) * 1e3, np.array(ys) * 1e3, label=p, color=COLORS.get(p))
    lim = [
        min(min(x for x, _ in v) for v in pts.values()) * 1e3 / 2,
        max(max(y for _, y in v) for v in pts.values()) * 1e3 * 2,
    ]
    ax.plot(lim, lim, "k--", lw=0.8, label="measured = modelled")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("modelled (ms, roofline, bf16)")
    ax.set_ylabel("measured median (ms, bf16 autocast)")
    ax.set_title(f"{run['info']['device']}: measured vs modelled", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------------------------------------------


def headline_section(head: dict[str, Any]) -> list[str]:
    """Markdown lines of the headline table (whole model, training step, T = 243); [] without those rows."""
    if not head:
        return []
    lines = [
        f"## Headline (MODELLED, whole MixSTE, training step, B = {head['B']}, T = {head['T']}, bf16)",
        "",
        "| | vs eager | vs sdpa | vs xformers |",
        "|---|---|---|---|",
    ]
    for dev, name in (("rtx4090", "RTX 4090"), ("h100", "H100")):
        for prefix, label in (
            ("", "fused speedup"),
            ("launch_", "same, + 3 us per launch"),
            ("padded_", "same, padded-tile FLOPs"),
        ):
            cells = " | ".join(f"{head[f'{dev}_{prefix}speedup_vs_{p}']:.2f}x" for p in ("eager", "sdpa", "xformers"))
            lines.append(f"| {label}, {name} | {cells} |")
    for key, label in (
        ("bytes_ratio", "bytes moved"),
        ("saved_ratio", "saved for backward"),
        ("launch_ratio", "kernel launches"),
    ):
        cells = " | ".join(f"{head[f'{key}_{p}']:.2f}x" for p in ("eager", "sdpa", "xformers"))
        lines.append(f"| {label}, peer / fused | {cells} |")
    lines += [
        "",
        "Modelled RTX 4090 time per step (ms): "
        + ", ".join(f"{p} {v:.0f}" for p, v in head["rtx4090_ms"].items())
        + "; bytes moved (GB): "
        + ", ".join(f"{p} {v:.0f}" for p, v in head["bytes_gb"].items())
        + "; saved for backward (GB): "
        + ", ".join(f"{p} {v:.1f}" for p, v in head["saved_gb"].items())
        + ". At this batch every path keeps 100+ GB for backward: it fits no single GPU (the GPU timing suite "
        "uses B = 16 at T = 243).",
        "",
    ]
    return lines


def build(folder: Path = RESULTS, regenerate_kernels: bool = False) -> dict[str, Any]:
    """Write report.md, PERFORMANCE.md and the PNGs into ``folder``; returns the headline numbers."""
    proxies = load_proxies(folder)
    runs = load_measured(folder)
    kernels, kernel_note = load_kernels(folder, regenerate_kernels)
    images: list[tuple[str, str]] = []
    head: dict[str, Any] = {}
    if proxies:
        for dev in ("rtx4090", "h100"):
            plot_modelled_speedup(proxies, dev, folder / f"modelled_speedup_{dev}.png")
            images.append(
                (f"Modelled speedup over eager, {proxies['devices'][dev]['name']}", f"modelled_speedup_{dev}.png")
            )
        plot_modelled_memory(proxies, folder / "modelled_memory.png")
        images.append(("Modelled bytes saved for backward and bytes moved", "modelled_memory.png"))
        head = headline(proxies)
    measured_imgs = []
    for run in runs:
        stem = Path(run["file"]).stem
        plot_measured(run, folder / f"measured_{stem}.png")
        measured_imgs.append((f"Measured speedup over eager, {run['info']['device']}", f"measured_{stem}.png"))
        spec = _spec_for(run["info"]["device"])
        if proxies and spec and plot_modelled_vs_measured(run, proxies, spec, folder / f"modelled_vs_{stem}.png"):
            measured_imgs.append((f"Measured vs modelled, {run['info']['device']}", f"modelled_vs_{stem}.png"))
    losses = fused_not_winning(proxies, runs)
    gpu_runs = [r for r in runs if "CPU" not in r["info"]["device"]]

    perf = ["# Performance", ""]
    perf += [
        "Two kinds of numbers, always labelled: **MEASURED** timings (pytest-benchmark, `pytest benchmarks/ "
        "--benchmark-only`) and **MODELLED** figures (bytes, FLOPs, launches and saved activations counted on the "
        "meta device at full scale, turned into time by a per-op roofline; `python -m benchmarks.proxies`). "
        "The model is a model: it counts each op's inputs and outputs once through DRAM and charges "
        "max(bytes / bandwidth, FLOPs / peak); it ignores caches across ops, launch latency (unless stated), "
        "occupancy and tail effects.",
        "",
    ]
    if proxies:
        env = proxies["environment"]
        perf += [
            f"Modelled: bf16 end to end; RTX 4090 = 165 TFLOPS / 1008 GB/s, H100 = 989 TFLOPS / 3.35 TB/s; "
            f"training batch {proxies['train_batch']} x T, inference batch {proxies['infer_batch']} x T; "
            f"torch {env['torch']}, commit {env['commit']}, {env['date'][:10]}.",
            "",
        ]
        perf += headline_section(head)
        perf += [
            "## Modelled time, RTX 4090, T = 243 (ms)",
            "",
            modelled_table(proxies, "rtx4090", T=243),
            "",
        ]
        for title, img in images:
            perf += [f"![{title}]({img})", ""]
    perf += ["## Measured", ""]
    if not gpu_runs:
        perf += [
            "No GPU run is recorded yet: every timing below is from a CPU (fp32, reduced sizes, a shared 2-core "
            "machine), where the fused kernels cannot be timed (the Triton interpreter is not a speed test). "
            "They compare eager, sdpa and compile only. Run `pytest benchmarks/ --benchmark-only` on a GPU and "
            "`python -m benchmarks.report` to add the measured GPU tables and the measured-vs-modelled plot.",
            "",
        ]
    for run in runs:
        info = run["info"]
        perf += [
            f"### MEASURED: {info['device']}, {info['date'][:10]} (torch {info['torch']}, triton {info['triton']}, "
            f"commit {info['commit'][:12]}; `{run['file']}`)",
            "",
            measured_table(run),
            "",
        ]
        if run["skipped"]:
            perf += [skipped_table(run), ""]
    for title, img in measured_imgs:
        perf += [f"![{title}]({img})", ""]
    perf += ["## Where the fused path does not win", ""]
    if losses:
        perf += [
            f"Every case (modelled or measured) where triton is not at least {TIE:.0%} faster than the best other "
            "provider, listed without filtering:",
            "",
        ]
        perf += [f"- {line}" for line in losses]
    else:
        perf += ["None among the recorded cases."]
    perf += [
        "",
        "Known limits of these figures: the modelled sdpa runs FlashAttention-2 (its inputs are 4-D: the temporal "
        "sdpa backend copies q, k, v to (B*N, H, T, D), and those copies are counted); the modelled xformers "
        "leaves out its backward workspace (optimistic for xformers); compile is measured only.",
        "",
        "What the model cannot see, so where the fused path may still lose on a GPU: (1) fp32 - only bf16 is "
        "modelled, and in fp32 the fused kernels use IEEE (temporal) or 3xTF32 (spatial) dots, not plain TF32, while "
        "cuBLAS/SDPA may use TF32; (2) occupancy - the roofline grants every op the full DRAM bandwidth, but the "
        "kernel table below shows the fused backward kernels at 17-25% occupancy (register-limited), which may "
        "not saturate bandwidth; (3) small batches, where launch latency and tail effects dominate (the +3 us per "
        "launch variant is a first-order estimate only). The spatial forward ties with sdpa/xformers in the model "
        "because all three read qkv once and write o once; only a measurement can separate them.",
        "",
        "## Kernel resources (AOT, no GPU needed; bf16, D = 64)",
        "",
    ]
    if kernels:
        perf += [kernel_table(kernels), "", "All dtypes and head sizes: [report.md](report.md)."]
    else:
        perf += [f"Not available: {kernel_note}."]
    (folder / "PERFORMANCE.md").write_text("\n".join(perf) + "\n")

    rep = ["# fastmixste benchmark report", "", "Generated by `python -m benchmarks.report`.", ""]
    if proxies:
        for dev in ("rtx4090", "h100"):
            rep += [
                f"## MODELLED time, {proxies['devices'][dev]['name']} (all full-scale shapes, ms)",
                "",
                modelled_table(proxies, dev),
                "",
            ]
        rep += [
            "## MODELLED GPU-timing shapes, RTX 4090 (ms)",
            "",
            modelled_table(
                {**proxies, "results": [r for r in proxies["results"] if r["gpu_timing_shape"]]},
                "rtx4090",
                full_only=False,
            ),
            "",
        ]
        for T in (27, 81, 243):
            rep += [
                f"## MODELLED bytes, FLOPs, launches, saved for backward (full scale, T = {T})",
                "",
                bytes_table(proxies, T),
                "",
            ]
        rep += ["## How each provider is modelled", ""]
        rep += [f"- {k}: {v}" for k, v in proxies["providers"].items()]
        rep += ["", proxies["note"], ""]
    for run in runs:
        rep += [f"## MEASURED {run['info']['device']} ({run['file']})", "", measured_table(run), ""]
    rep += ["## Where the fused path does not win", ""] + [f"- {line}" for line in losses] + [""]
    rep += ["## Kernel resources (all configurations)", ""]
    rep += [kernel_table(kernels, dtype=None, D=None) if kernels else f"Not available: {kernel_note}.", ""]
    (folder / "report.md").write_text("\n".join(rep) + "\n")
    return head


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--kernels", action="store_true", help="re-run the AOT kernel resource report")
    args = parser.parse_args(argv)
    head = build(args.results, args.kernels)
    print(f"wrote {args.results / 'PERFORMANCE.md'} and {args.results / 'report.md'}")
    if head:
        print(json.dumps({k: v for k, v in head.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
