"""PNG plots of the benchmark results: modelled speedup and memory per provider, measured speedup, measured vs
modelled. Every title says MODELLED or MEASURED."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._results import COLORS, PEERS, PROVIDER_ORDER, SCOPE_LABEL  # noqa: E402
from benchmarks._tables import index  # noqa: E402


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


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
        idx = {k: v for k, v in index(proxies["results"]).items() if k[1] == mode and v["eager"]["full_scale"]}
        keys = sorted(idx, key=lambda k: (list(SCOPE_LABEL).index(k[0]), k[3]))
        groups = [f"{SCOPE_LABEL[k[0]]}\nT={k[3]}" for k in keys]
        series = {}
        for p in (*PEERS[1:], "triton"):  # speedup over eager
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
    _save(fig, out)


def plot_modelled_memory(proxies: dict, out: Path) -> None:
    """Bytes moved and bytes saved for backward per provider, training step at full scale (modelled)."""
    idx = {k: v for k, v in index(proxies["results"]).items() if k[1] == "train" and v["eager"]["full_scale"]}
    keys = sorted(idx, key=lambda k: (list(SCOPE_LABEL).index(k[0]), k[3]))
    T = max(k[3] for k in keys)  # the longest sequence present
    keys = [k for k in keys if k[3] == T]
    groups = [SCOPE_LABEL[k[0]] for k in keys]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, field, label in ((axes[0], "saved_bytes", "saved for backward"), (axes[1], "bytes", "bytes moved")):
        series = {
            p: [idx[k][p][field] / idx[k]["eager"][field] for k in keys]
            for p in (*PEERS, "triton")
        }
        _bars(
            ax,
            groups,
            series,
            f"{label}, relative to eager",
            f"MODELLED (meta device) {label}: training step, B={keys[0][2]}, T={T}, bf16",
        )
    _save(fig, out)


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
    _save(fig, out)


def plot_modelled_vs_measured(run: dict, proxies: dict, device: str, out: Path) -> bool:
    """Scatter of measured median vs modelled time for the same shapes (GPU runs only). False if nothing matches."""
    idx = index(proxies["results"])
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
    _save(fig, out)
    return True
