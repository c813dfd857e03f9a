"""Benchmark results as the report reads them: the modelled proxies, the measured pytest-benchmark runs, the AOT
kernel resource table; and the labels every table and plot shares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from fastmixste import BACKENDS

RESULTS = Path(__file__).resolve().parent / "results"
#: What the fused backend is compared with: every other attention backend (fastmixste.BACKENDS).
PEERS: tuple[str, ...] = tuple(b for b in BACKENDS if b != "triton")
PROVIDER_ORDER = (*PEERS, "compile", "triton")
COLORS = {"eager": "#7f7f7f", "sdpa": "#1f77b4", "xformers": "#9467bd", "compile": "#ff7f0e", "triton": "#2ca02c"}
SCOPE_LABEL = {
    "spatial_attention": "spatial attention",
    "temporal_attention": "temporal attention",
    "layer_pair": "STE+TTE pair",
    "model": "whole MixSTE",
}
#: A fused case counts as "not winning" when it is not at least this much faster than the best other provider.
TIE = 0.02


def gb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e9:.2f}"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.2f}"



def load_proxies(folder: Path) -> dict | None:
    path = folder / "proxies.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_measured(folder: Path) -> list[dict]:
    """Every pytest-benchmark JSON in ``folder`` with its fastmixste machine info, oldest first."""
    runs = []
    for path in sorted(folder.glob("*.json")):
        if path.name in ("proxies.json", "kernel_resources.json"):
            continue
        text = path.read_text()
        if not text.strip():
            continue  # a benchmark session that timed nothing (every case skipped) leaves an empty file
        data = json.loads(text)
        info = data.get("machine_info", {}).get("fastmixste")
        if not info or "benchmarks" not in data:
            continue
        rows = []
        for b in data["benchmarks"]:
            extra = b.get("extra_info", {})
            if extra.get("recompute") is not None:
                continue  # test_recompute_policy's rows (per-policy peak memory) are not timing-table rows
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
