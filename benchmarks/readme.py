"""Fill README.md's generated blocks from the committed results, so its numbers are never copied by hand.

    python -m benchmarks.readme                      # refresh the blocks made from benchmarks/results/*.json
    python -m benchmarks.readme --run runs/default   # ... and the default-run block from that run's results.json
    python -m benchmarks.readme --check              # exit 1, naming them, if blocks differ from the files

A block is ``<!-- generated:NAME -->...<!-- /generated:NAME -->``; everything between the markers is replaced.
Blocks: ``kernel-resources`` (kernel_resources.json), ``performance-status``, ``performance-devices``,
``performance-headline``, ``performance-modelled``, ``performance-limits``, ``performance-targets``, ``memory``,
``glance``
(proxies.json, the measured runs and the kernel table), and ``default-run`` (a training run's results.json; only
with ``--run``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from benchmarks._documents import KERNEL_VIEW, device_line, gpu_timing_batch, launch_us, occupancy_range, ties
from benchmarks._results import PEERS, RESULTS, SCOPE_LABEL, TIE, load_measured, load_proxies, ms
from benchmarks._tables import glance_block, headline, index, longest_full_scale_T, memory_block, targets_block

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- generated:(?P<name>[\w-]+) -->(?P<body>.*?)<!-- /generated:(?P=name) -->", re.S)


def _target(target: str) -> str:
    return target.split(" ")[0]


def kernel_block(rows: list[dict]) -> str:
    """The configurations the model launches (head_dim 64, bf16; the long-window attention tiles; the block kernels
    at C = 512 with a 16-bit branch input, two norms where both exist), then a summary of every row."""

    def model_row(r: dict) -> bool:
        if r["dtype"] != KERNEL_VIEW["dtype"]:
            return False
        if r["kernel"].startswith("_residual_norm"):
            return "BLOCK_C=512" in r["config"] and "y," in r["config"] and "TWO_NORMS=True" in r["config"]
        if r["kernel"].startswith("_bias_gelu"):
            return True
        return f"D={KERNEL_VIEW['D']}" in r["config"]

    def tile(r: dict) -> int:  # the largest tile a kernel is compiled with is what long windows launch
        return math.prod(int(v) for v in re.findall(r"\bBLOCK_\w+=(\d+)", r["config"])) or 0

    longest = {}
    for r in rows:
        key = (r["kernel"], r["target"])
        if model_row(r) and (key not in longest or tile(r) > tile(longest[key])):
            longest[key] = r
    lines = ["| kernel | target | warps | registers | spills (B) | shared (B) | occupancy (est.) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| `{r['kernel']}` | {r['target']} | {r['num_warps']} | {r['registers']} | {r['spill_bytes']} "
              f"| {r['shared_bytes']:,} | {r['occupancy']:.0%} |" for r in longest.values()]
    spills = sum(r["spill_bytes"] > 0 for r in rows)
    shared = []
    for target in sorted({r["target"] for r in rows}):
        worst = max((r for r in rows if r["target"] == target), key=lambda r: r["shared_bytes"] / r["shared_limit"])
        shared.append(f"{worst['shared_bytes']:,} B on {_target(target)} (limit {worst['shared_limit']:,} B)")
    kernels = sorted({r["kernel"] for r in rows})
    dims = sorted({int(m.group(1)) for r in rows if (m := re.search(r"\bD=(\d+)", r["config"]))})
    summary = (f"All {len(rows)} configurations ({len(kernels)} kernels; head dims {', '.join(map(str, dims))}; "
               f"dtypes {', '.join(sorted({r['dtype'] for r in rows}))}; targets "
               f"{', '.join(sorted({_target(r['target']) for r in rows}))}): "
               + ("no spills" if not spills else f"{spills} with spills")
               + "; largest shared memory per block " + ", ".join(shared) + ". Full table: "
               "[benchmarks/results/report.md](benchmarks/results/report.md).")
    return "\n".join(lines) + "\n\n" + summary


def _date(proxies: dict) -> str:
    return proxies["environment"]["date"][:10]


def status_block(proxies: dict, runs: list[dict]) -> str:
    gpu = [r for r in runs if "CPU" not in r["info"]["device"]]
    if gpu:
        where = "; ".join(sorted({r["info"]["device"] for r in gpu}))
        return (f"**What is measured and what is modelled (proxies of {_date(proxies)}).** GPU timings are recorded "
                f"for {where} ([full report](benchmarks/results/PERFORMANCE.md)); the tables below are **modelled** "
                "from counted bytes and FLOPs, not timed.")
    cpus = "; ".join(sorted({r["info"]["device"] for r in runs})) or "none"
    dtypes = ", ".join(sorted({row["dtype"] for r in runs for row in r["rows"]})) or "-"
    return (f"**What is measured and what is modelled (proxies of {_date(proxies)}).** No GPU run has been recorded "
            "yet. Everything below for GPUs is **modelled** from counted bytes and FLOPs, not timed; the only "
            f"measured timings are CPU ones ({cpus}; {dtypes}, reduced sizes), where the fused kernels cannot be "
            "timed at all.")


def headline_block(proxies: dict) -> str:
    head = headline(proxies)
    lines = [f"Modelled whole-model training step, B = {head['B']} sequences, T = {head['T']}, bf16:", "",
             "| | " + " | ".join(f"vs {p}" for p in PEERS) + " |", "|---|---|---|---|"]
    for dev, spec in proxies["devices"].items():
        levels = (("peak", "speedup"), ("expected", "expected_speedup"), ("pessimistic", "pessimistic_speedup"))
        for level, key in levels:
            if f"{dev}_{key}_vs_eager" in head:
                lines.append(f"| fused speedup, {spec['name']}, {level} | "
                             + " | ".join(f"{head[f'{dev}_{key}_vs_{p}']:.2f}x" for p in PEERS) + " |")
    for key, label in (("bytes_ratio", "bytes moved"), ("saved_ratio", "saved for backward"),
                       ("launch_ratio", "kernel launches")):
        lines.append(f"| {label}, peer / fused | " + " | ".join(f"{head[f'{key}_{p}']:.2f}x" for p in PEERS) + " |")
    return "\n".join(lines)


def modelled_block(proxies: dict) -> str:
    """Per case at the longest full-scale T, on the first modelled device; speedups within TIE of 1 in bold."""
    dev = next(iter(proxies["devices"]))
    T = longest_full_scale_T(proxies)
    providers = (*PEERS, "triton")
    lines = [f"Modelled {proxies['devices'][dev]['name']}, T = {T} (ms):", "",
             "| scope | mode | B × T | " + " | ".join(providers) + " | triton vs eager | triton vs sdpa |",
             "|" + "---|" * (len(providers) + 5)]
    idx = index([r for r in proxies["results"] if r["full_scale"] and r["T"] == T])
    for (scope, mode, B, _), row in sorted(idx.items(), key=lambda kv: (kv[0][1], list(SCOPE_LABEL).index(kv[0][0]))):
        t = {p: row[p]["modelled"][dev]["seconds"] for p in providers if p in row}
        cells = []
        for peer in ("eager", "sdpa"):
            x = t[peer] / t["triton"]
            cells.append(f"**{x:.2f}x**" if x <= 1 + TIE else f"{x:.2f}x")
        lines.append(f"| {SCOPE_LABEL[scope]} | {mode} | {B} × {T} | " + " | ".join(ms(t.get(p)) for p in providers)
                     + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def limits_block(proxies: dict, kernels: list[dict] | None) -> str:
    T = longest_full_scale_T(proxies)
    head = headline(proxies, T)
    first = next(iter(proxies["devices"]))
    lines = ["**Where the fused path does not win, or may not:**"]
    per_device = {spec["name"]: ties(proxies, "spatial_attention", "forward", dev)
                  for dev, spec in proxies["devices"].items()}
    tied = {name: t for name, t in per_device.items() if t[0]}
    if tied:
        peers = sorted({p for t in tied.values() for p in t[0]})
        where = "; ".join(f"{name}: {hits} of {total} shapes" for name, (_, hits, total) in tied.items())
        lines.append(f"- The spatial attention forward **ties** (within {TIE:.0%}) with {' and '.join(peers)} in "
                     f"the model ({where}): all of them read qkv once and write o once. Only a GPU measurement can "
                     "separate them.")
    fwd = index(proxies["results"]).get(("model", "forward", proxies["infer_batch"], T), {})
    if "sdpa" in fwd and "triton" in fwd:
        x = fwd["sdpa"]["modelled"][first]["seconds"] / fwd["triton"]["modelled"][first]["seconds"]
        lines.append(f"- Inference gains over sdpa are small in the model ({x:.2f}x for the whole model, "
                     f"{proxies['devices'][first]['name']}, T = {T}): the forward is dominated by the Linear/MLP "
                     "layers, which are the same on every path.")
    lines.append("- fp32 is not modelled. In fp32 the fused kernels use IEEE / 3xTF32 dots, not plain TF32, and the "
                 "spatial fp32 backward takes only the smaller head sizes; cuBLAS/SDPA in TF32 mode could be faster "
                 "there.")
    occ = occupancy_range(kernels) if kernels else None
    if occ:
        lines.append(f"- Occupancy: the fused backward kernels run at {occ[0]:.0%}–{occ[1]:.0%} estimated occupancy "
                     f"(limited by {occ[2]}). The roofline grants every op full DRAM bandwidth, which they may not "
                     "reach.")
    lines.append("- Small batches: launch latency and tail effects dominate and are modelled only roughly "
                 f"(+{launch_us(proxies)} per launch variant).")
    saved = head["saved_gb"].values()
    timing_b = gpu_timing_batch(proxies, T)
    lines.append(f"- At B = {head['B']}, T = {T} every path keeps {min(saved):.0f}–{max(saved):.0f} GB of "
                 "activations for backward" + (f"; the GPU timing suite uses B = {timing_b} at T = {T}." if timing_b
                                               else "."))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def run_block(results: dict[str, Any]) -> str:
    """The default-run paragraph and per-action table from a training run's results.json."""
    from fastmixste.eval.evaluation import ACTION_ABBREVIATIONS

    p1, p2 = results["protocol1"], results["protocol2"]
    data = results.get("data", {}).get("description", "the data of the run")
    env = results.get("environment")
    where = ""
    if env:
        threads = f"{env['threads']} training thread" + ("s" if env["threads"] != 1 else "")
        where = f" ({env['device']}, {threads}, {env['cpu_count']} CPU cores)"
    text = (f"The run on {data} ends at **{p1['Avg']:.1f} mm MPJPE / {p2['Avg']:.1f} mm P-MPJPE** (N-MPJPE "
            f"{results['n_mpjpe']:.1f} mm, MPJVE {results['mpjve']:.2f} mm/frame) against "
            f"{results['baseline_mpjpe']:.1f} / {results['baseline_p_mpjpe']:.1f} mm for the mean training pose, in "
            f"{_duration(results['total_seconds'])}{where}.")
    if "scratch" in results:
        s1, s2 = results["scratch"]["protocol1"]["Avg"], results["scratch"]["protocol2"]["Avg"]
        text += (f" With `--compare-scratch`, the same fine-tuning budget from random weights gives {s1:.1f} / "
                 f"{s2:.1f} mm, against {p1['Avg']:.1f} / {p2['Avg']:.1f} mm with pretraining.")
    held = results.get("heldout")
    if held:
        text += (f" On the held-out motion set (patterns and subjects outside the fine-tuning data; mean-pose baseline "
                 f"{held['baseline_mpjpe']:.1f} mm) it scores {held['protocol1']['Avg']:.1f} / "
                 f"{held['protocol2']['Avg']:.1f} mm with a speed ratio of {held['speed_ratio']:.2f} (predicted over "
                 f"true median joint speed; {_slow_ratio(held)} over 5 frames)")
        scratch_held = results.get("scratch", {}).get("heldout")
        if scratch_held:
            text += (f", from scratch {scratch_held['protocol1']['Avg']:.1f} / {scratch_held['protocol2']['Avg']:.1f}"
                     f" mm with {scratch_held['speed_ratio']:.2f} ({_slow_ratio(scratch_held)})")
        text += "."
    actions = [a for a in p1 if a != "Avg"]
    head = "| P#1 / P#2 (mm) | " + " | ".join(ACTION_ABBREVIATIONS.get(a, a) for a in actions) + " | **Avg** |"
    rows = [f"| {name} | " + " | ".join(f"{v[a]:.1f}" for a in actions) + f" | **{v['Avg']:.1f}** |"
            for name, v in (("MPJPE", p1), ("P-MPJPE", p2))]
    return "\n".join([text, "", head, "|" + "---|" * (len(actions) + 2), *rows])


def _slow_ratio(held: dict) -> str:
    value = held.get("speed_ratio_5f")
    return "n/a" if value is None else f"{value:.2f}"


def blocks(folder: Path = RESULTS, run: Path | None = None) -> dict[str, str]:
    """Every block this command can make: from the committed results in ``folder`` and, given one, a run folder."""
    out: dict[str, str] = {}
    kernels_path = folder / "kernel_resources.json"
    kernels = json.loads(kernels_path.read_text()) if kernels_path.exists() else None
    if kernels:
        out["kernel-resources"] = kernel_block(kernels)
    proxies = load_proxies(folder)
    if proxies:
        out["performance-status"] = status_block(proxies, load_measured(folder))
        out["performance-devices"] = device_line(proxies)
        out["performance-headline"] = headline_block(proxies)
        out["performance-modelled"] = modelled_block(proxies)
        out["performance-limits"] = limits_block(proxies, kernels)
        out["performance-targets"] = targets_block(proxies)
        out["memory"] = memory_block(proxies)
        out["glance"] = glance_block(proxies)
    if run is not None:
        path = run / "results.json" if run.is_dir() else run
        if not path.is_file():
            raise FileNotFoundError(f"--run: no results.json at {path}")
        out["default-run"] = run_block(json.loads(path.read_text()))
    return out


def _wrap(content: str, width: int = 120) -> str:
    """Paragraphs and bullets wrapped at the README's line length; tables, headings and blank lines kept."""
    out = []
    for line in content.split("\n"):
        if line.startswith(("|", "#")) or len(line) <= width:
            out.append(line)
        else:
            bullet = line.startswith("- ")
            out += textwrap.wrap(line, width, subsequent_indent="  " if bullet else "", break_long_words=False,
                                 break_on_hyphens=False)
    return "\n".join(out)


def _body(content: str) -> str:
    content = _wrap(content)
    return f"\n{content}\n" if "\n" in content else content


def fill(text: str, made: dict[str, str]) -> str:
    """``text`` with the body of every block named in ``made`` replaced; a block missing from ``text`` is an error."""
    missing = sorted(set(made) - {m.group("name") for m in BLOCK.finditer(text)})
    if missing:
        raise ValueError(f"README has no generated block named {missing}; add <!-- generated:NAME -->"
                         f"<!-- /generated:NAME --> where it belongs")

    def replace(m: re.Match) -> str:
        name = m.group("name")
        body = _body(made[name]) if name in made else m.group("body")
        return f"<!-- generated:{name} -->{body}<!-- /generated:{name} -->"

    return BLOCK.sub(replace, text)


def stale(text: str, made: dict[str, str]) -> list[str]:
    """Names of the blocks whose text differs from what ``made`` holds for them."""
    current = {m.group("name"): m.group("body") for m in BLOCK.finditer(text)}
    return sorted(name for name, content in made.items() if current.get(name) != _body(content))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS, help="benchmark results folder")
    parser.add_argument("--run", type=Path, help="a run folder (or its results.json) for the default-run block")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a block is out of date")
    args = parser.parse_args(argv)
    try:
        made = blocks(args.results, args.run)
        text = args.readme.read_text(encoding="utf-8")
        new = fill(text, made)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        old = stale(text, made)
        if old:
            print(f"{args.readme}: out of date: {', '.join(old)} (run python -m benchmarks.readme)", file=sys.stderr)
            return 1
        print(f"{args.readme}: {len(made)} generated blocks up to date")
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: filled {', '.join(sorted(made))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
